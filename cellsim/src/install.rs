//! Upgrades: the fake installer packages made by `cellsim package`, what they do when run, the
//! `vcd-version` tool that reports the installed version, and the database `upgrade` tool.
//!
//! Texts follow `../shared/research/vcd.md` section 3 where it quotes VMware; the rest is
//! invented and documented in README.md.

use crate::model::{FaultKind, Op, Phase, compare_versions, now_ms, parse_duration};
use crate::store::{CellDir, Error, Result, io_err};
use crate::tools::{INSTALLER, INTERNAL_ERROR, Invocation, hang};
use crate::{db, group, timeline};
use std::fs;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const PROCEED_PROMPT: &str = "Would you like to proceed with the upgrade? [y/n]";
pub const CONFIGURE_PROMPT: &str = "Would you like to run the configuration script now? [y/n]";
pub const SERVICE_RUNNING: &str = "The VMware Cloud Director service is running. Stop it before upgrading.";
pub const CONFIGURE_LATER: &str =
    "You can run the configuration script later: /opt/vmware/vcloud-director/bin/configure";

pub const DB_BANNER: &str = "\
Welcome to the vCloud Director upgrade utility
Verify that you have a valid license key to use the version of the
VMware Cloud Director software to which you are upgrading.
This utility will apply several updates to the database. Please
ensure you have created a backup of your database prior to continuing.
";
pub const DB_UPGRADE_PROMPT: &str = "Do you want to upgrade the database? [y/n]";
pub const DB_BACKUP_PROMPT: &str = "Have you backed up your database? [y/n]";

const INSTALLER_USAGE: &str = "\
usage: vmware-vcloud-director-distribution-<version>-<build>.bin [options]
  -h,--help                      print this message
  --private-key-path <file>      (accepted; the orchestrated multi-cell upgrade is not simulated)
  --maintenance-cell <ip>        (accepted; needs --private-key-path)
";

const DB_USAGE: &str = "\
usage: upgrade [options]
  -h,--help                      print this message
  --backup-completed             the database has been backed up: skip the backup prompt
  --enable-ceip <true|false>     join the Customer Experience Improvement Program
  --ceip-user <name>             user for CEIP data collection
  --multisite-user <name>        user for multisite associations
  --private-key-path <file>      private key for the orchestrated upgrade of the other cells
  --installer-path <file>        installer for the other cells (needs --private-key-path)
  --maintenance-cell <ip>        cell kept in maintenance, upgraded last (needs --private-key-path)
";

/// What a package does when run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Installs its version.
    Ok,
    /// Fails part-way (exit 1); the version is unchanged.
    Fail,
    /// Hangs after the first prompt is answered.
    Hang,
    /// Claims success but changes nothing.
    NoChange,
}

impl Kind {
    pub const NAMES: &'static [&'static str] = &["ok", "fail", "hang", "nochange"];

    pub fn parse(text: &str) -> Option<Kind> {
        Some(match text {
            "ok" => Kind::Ok,
            "fail" => Kind::Fail,
            "hang" => Kind::Hang,
            "nochange" => Kind::NoChange,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Fail => "fail",
            Kind::Hang => "hang",
            Kind::NoChange => "nochange",
        }
    }
}

/// The settings baked into a package script (`KEY=VALUE` words before `--`).
#[derive(Clone, Debug, PartialEq)]
pub struct PackageSpec {
    pub kind: Kind,
    pub version: String,
    pub build: String,
    pub install_time: Duration,
}

impl PackageSpec {
    fn words(&self) -> Vec<String> {
        vec![
            format!("kind={}", self.kind.name()),
            format!("version={}", self.version),
            format!("build={}", self.build),
            format!("install_time={}", humantime::format_duration(self.install_time)),
        ]
    }

    fn parse(words: &[String]) -> std::result::Result<PackageSpec, String> {
        let (mut kind, mut version, mut build, mut install_time) = (None, None, None, None);
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("bad package setting `{word}`"))?;
            match key {
                "kind" => kind = Some(Kind::parse(value).ok_or_else(|| format!("bad kind `{value}`"))?),
                "version" => version = Some(value.to_string()),
                "build" => build = Some(value.to_string()),
                "install_time" => install_time = Some(parse_duration(value)?),
                _ => return Err(format!("unknown package setting `{key}`")),
            }
        }
        Ok(PackageSpec {
            kind: kind.ok_or("the package names no kind")?,
            version: version.ok_or("the package names no version")?,
            build: build.ok_or("the package names no build")?,
            install_time: install_time.unwrap_or(Duration::from_secs(1)),
        })
    }

    pub fn file_name(&self) -> String {
        format!(
            "vmware-vcloud-director-distribution-{}-{}.bin",
            self.version, self.build
        )
    }
}

fn check_version(version: &str) -> Result<()> {
    let ok = !version.is_empty()
        && version.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+'));
    if ok {
        Ok(())
    } else {
        Err(Error::Msg(format!(
            "bad version `{version}`: use letters, digits, `.`, `_` and `+` (it goes into a file name)"
        )))
    }
}

/// A stable build number for a version, so the same command makes the same file name.
fn default_build(version: &str) -> String {
    // FNV-1a, folded into eight digits like VMware's build numbers.
    let hash = version.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (10_000_000 + hash % 90_000_000).to_string()
}

/// `cellsim package`: writes the script (mode 0644) and returns its path.
pub fn write_package(
    exe: &Path,
    cell: &Path,
    out_dir: &Path,
    version: &str,
    kind: Kind,
    build: Option<String>,
    install_time: Duration,
) -> Result<PathBuf> {
    check_version(version)?;
    let build = build.unwrap_or_else(|| default_build(version));
    if build.is_empty() || !build.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Msg(format!("bad build `{build}`: digits only")));
    }
    let cell = cell.canonicalize().map_err(io_err(cell))?;
    if !CellDir::new(&cell).state_path().exists() {
        return Err(Error::Msg(format!(
            "{}: not a cell (create one with `cellsim create DIR`)",
            cell.display()
        )));
    }
    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let out_dir = out_dir.canonicalize().map_err(io_err(out_dir))?;
    let spec = PackageSpec {
        kind,
        version: version.to_string(),
        build,
        install_time,
    };
    let words: Vec<String> = spec.words().iter().map(|w| sh_quote(w)).collect();
    let script = format!(
        "#!/bin/sh\n\
         # A fake VMware Cloud Director installer made by `cellsim package` (kind: {kind}).\n\
         # It \"installs\" version {version} build {build} into the simulated cell in {cell}.\n\
         exec {exe} tool --cell {cell_q} {INSTALLER} {words} -- \"$@\"\n",
        kind = kind.name(),
        version = spec.version,
        build = spec.build,
        cell = cell.display(),
        exe = sh_quote(&exe.to_string_lossy()),
        cell_q = sh_quote(&cell.to_string_lossy()),
        words = words.join(" "),
    );
    let path = out_dir.join(spec.file_name());
    let tmp = out_dir.join(format!(".{}.tmp.{}", spec.file_name(), std::process::id()));
    fs::write(&tmp, script).map_err(io_err(&tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    Ok(path)
}

/// `cellsim package --appliance`: the same checks of the version, build and cell as a `.bin`.
pub fn write_appliance_package(
    cell: &Path,
    out_dir: &Path,
    version: &str,
    build: Option<String>,
    offer: Option<&str>,
    install_time: Duration,
    pad: u64,
) -> Result<PathBuf> {
    check_version(version)?;
    if let Some(v) = offer {
        check_version(v)?;
    }
    let build = build.unwrap_or_else(|| default_build(version));
    if build.is_empty() || !build.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Msg(format!("bad build `{build}`: digits only")));
    }
    let cell = cell.canonicalize().map_err(io_err(cell))?;
    if !crate::appliance::is_appliance(&CellDir::new(&cell)) {
        return Err(Error::Msg(format!(
            "{}: not an appliance cell (create one with `cellsim create --appliance DIR`)",
            cell.display()
        )));
    }
    crate::appliance::write_package(out_dir, version, &build, offer, install_time, pad)
}

/// Single-quotes a word for /bin/sh.
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Answers read from standard input, one line per prompt, as scripted installs pipe them in
/// (`printf 'y\nn\n' | ./installer.bin`). When stdin is not a terminal the answer is echoed
/// after the prompt, so a log reads like the screen would have.
struct Answers {
    stdin: io::StdinLock<'static>,
    echo: bool,
}

impl Answers {
    fn new() -> Answers {
        let stdin = io::stdin();
        Answers {
            echo: !stdin.is_terminal(),
            stdin: stdin.lock(),
        }
    }

    /// Prints `prompt` and reads a line; None at the end of input.
    fn ask(&mut self, prompt: &str) -> Option<String> {
        print!("{prompt} ");
        let _ = io::stdout().flush();
        let mut line = Vec::new();
        let read = (&mut self.stdin).take(4096).read_until(b'\n', &mut line);
        let answer = match read {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(String::from_utf8_lossy(&line).trim().to_string()),
        };
        if self.echo {
            println!("{}", answer.as_deref().unwrap_or(""));
        }
        answer
    }
}

fn is_yes(answer: &Option<String>) -> bool {
    matches!(answer.as_deref(), Some("y" | "Y"))
}

fn internal(e: Error) -> i32 {
    eprintln!("cellsim: {e}");
    INTERNAL_ERROR
}

/// A fake installer run: see README.md, "Upgrades".
pub fn installer(inv: &Invocation, package: &[String]) -> i32 {
    let spec = match PackageSpec::parse(package) {
        Ok(spec) => spec,
        Err(e) => return internal(Error::Msg(format!("installer: {e}"))),
    };
    let mut args = inv.args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{INSTALLER_USAGE}");
                return 0;
            }
            "--private-key-path" | "--maintenance-cell" if args.next().is_some() => {}
            other => {
                eprintln!("Invalid option or missing argument: {other}");
                eprint!("{INSTALLER_USAGE}");
                return 1;
            }
        }
    }
    let (v, b) = (&spec.version, &spec.build);
    let installed = inv.knobs.version.clone();
    println!("VMware Cloud Director {v} build {b} installer (simulated by cellsim)");
    println!("Checking the installation environment...");
    println!(
        "VMware Cloud Director {installed} is installed in /opt/vmware/vcloud-director; it will be upgraded to {v}."
    );
    let mut answers = Answers::new();
    match answers.ask(PROCEED_PROMPT) {
        None => {
            eprintln!("No answer on standard input: upgrade aborted.");
            return 1;
        }
        answer if !is_yes(&answer) => {
            eprintln!("Upgrade aborted.");
            return 1;
        }
        _ => {}
    }
    // The service check, and whether an `installer-fail` fault takes this run.
    let disk_full = match inv.cell.with_state(|s, _| {
        Ok((
            s.service_running,
            !s.service_running && s.take_fault(Op::Any, &[FaultKind::InstallerFail]).is_some(),
        ))
    }) {
        Err(e) => return internal(e),
        Ok((true, _)) => {
            eprintln!("{SERVICE_RUNNING}");
            return 1;
        }
        Ok((false, fault)) => fault,
    };
    println!("Installing VMware Cloud Director {v} build {b}...");
    if spec.kind == Kind::Hang {
        hang(inv);
    }
    let steps = [
        "Extracting the installation files".to_string(),
        "Verifying the package signatures".to_string(),
        format!("Upgrading vmware-vcloud-director-distribution {installed} -> {v}-{b}"),
        "Updating the system files in /opt/vmware/vcloud-director".to_string(),
        "Cleaning up".to_string(),
    ];
    let pause = spec.install_time / steps.len() as u32;
    for (i, step) in steps.iter().enumerate() {
        std::thread::sleep(pause);
        println!("[{:>3}%] {step}", (i + 1) * 100 / steps.len());
        let _ = io::stdout().flush();
        if spec.kind == Kind::Fail && i == 1 {
            eprintln!(
                "Error: unpacking of archive failed on file /opt/vmware/vcloud-director/system/vcloud-director.jar: cpio: Digest mismatch"
            );
            eprintln!("The upgrade did not complete; VMware Cloud Director {installed} is still installed.");
            return 1;
        }
        if disk_full && i == 2 {
            eprintln!("Error: cannot write /opt/vmware/vcloud-director/system: No space left on device");
            eprintln!("The upgrade did not complete; VMware Cloud Director {installed} is still installed.");
            return 1;
        }
    }
    if spec.kind == Kind::Ok
        && let Err(e) = inv.cell.with_state(|s, now| {
            let from = std::mem::replace(&mut s.knobs.version, spec.version.clone());
            s.emit(
                now,
                "installed",
                serde_json::json!({"version": spec.version, "from": from}),
            );
            Ok(())
        })
    {
        return internal(e);
    }
    println!("VMware Cloud Director {v} build {b} has been installed.");
    if is_yes(&answers.ask(CONFIGURE_PROMPT)) {
        println!("The configuration script is not simulated by cellsim: nothing was configured.");
    }
    println!("{CONFIGURE_LATER}");
    0
}

/// `bin/vcd-version`: the installed version on one line.
pub fn vcd_version(inv: &Invocation) -> i32 {
    if !inv.args.is_empty() {
        eprintln!("usage: vcd-version (prints the installed VMware Cloud Director version)");
        return 1;
    }
    println!("{}", inv.knobs.version);
    0
}

/// `bin/upgrade`: the database upgrade tool. See README.md, "Upgrades".
pub fn db_upgrade(inv: &Invocation) -> i32 {
    let mut backup_completed = false;
    let mut private_key = false;
    let mut needs_key = None;
    let mut args = inv.args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("Missing argument for option: {arg}"));
        let checked = match arg.as_str() {
            "-h" | "--help" => {
                print!("{DB_USAGE}");
                return 0;
            }
            "--backup-completed" => {
                backup_completed = true;
                Ok(())
            }
            "--enable-ceip" => value().and_then(|v| match v.as_str() {
                "true" | "false" => Ok(()),
                other => Err(format!(
                    "Invalid value for --enable-ceip: {other} (expected true or false)"
                )),
            }),
            "--ceip-user" | "--multisite-user" => value().map(|_| ()),
            "--private-key-path" => value().map(|_| private_key = true),
            "--installer-path" | "--maintenance-cell" => value().map(|_| needs_key = Some(arg.clone())),
            other => Err(format!("Unrecognized option: {other}")),
        };
        if let Err(msg) = checked {
            eprintln!("{msg}");
            eprint!("{DB_USAGE}");
            return 1;
        }
    }
    if let (Some(option), false) = (&needs_key, private_key) {
        eprintln!("{option} requires --private-key-path");
        eprint!("{DB_USAGE}");
        return 1;
    }

    print!("{DB_BANNER}");
    println!();
    let mut answers = Answers::new();
    if !is_yes(&answers.ask(DB_UPGRADE_PROMPT)) {
        eprintln!("Upgrade canceled.");
        return 1;
    }
    if !backup_completed && !is_yes(&answers.ask(DB_BACKUP_PROMPT)) {
        eprintln!("Back up the database before upgrading it. Upgrade canceled.");
        return 1;
    }
    match upgrade_schema(&inv.cell) {
        Ok(code) => code,
        Err(e) => internal(e),
    }
}

/// What the database tool says about each active cell of `cell`'s group: a cell whose service
/// runs (even with the cell shut down by the tool) or that is not down. `fresh`: bring each
/// cell up to now first (its lock); otherwise read the states as they are (no lock).
fn active_cells(cell: &CellDir, fresh: bool) -> Result<Vec<String>> {
    let own = cell.peek()?;
    let mut lines = Vec::new();
    for (name, dir) in group::members(cell, &own) {
        let member = CellDir::new(&dir);
        let read = if fresh {
            member.with_state(|s, _| Ok(s.clone()))
        } else {
            member.peek()
        };
        // A member being deleted is not a cell any more.
        let Ok(s) = read else { continue };
        if !s.service_running && s.cell == Phase::Down {
            continue;
        }
        let host = if dir == cell.root {
            "on this host".to_string()
        } else {
            format!("on cell {name} ({})", s.primary_ip.as_deref().unwrap_or("127.0.0.1"))
        };
        let state = if s.service_running { "running" } else { "stopped" };
        lines.push(format!(
            "The upgrade utility detected an active cell: the {} service {host} is {state} (cell {}).",
            s.knobs.service_name,
            s.cell.name()
        ));
    }
    Ok(lines)
}

enum Schema {
    Active(Vec<String>),
    Current(String),
    Newer { db: String, installed: String },
    Upgraded { from: String, to: String, at: u64 },
}

/// Checks the group and upgrades the shared schema to this cell's installed version once.
fn upgrade_schema(cell: &CellDir) -> Result<i32> {
    let active = active_cells(cell, true)?;
    let own = cell.peek()?;
    let installed = own.knobs.version.clone();
    let shared = group::shared_dir(cell, own.group.as_deref());
    // Under the database lock: looked at again (without advancing) so a cell started since the
    // first look is seen, and the schema read and changed at once.
    let outcome = db::update(&shared, |record| {
        let active = if active.is_empty() {
            active_cells(cell, false).unwrap_or_default()
        } else {
            active
        };
        if !active.is_empty() {
            return (None, Schema::Active(active));
        }
        let from = record.map(|r| r.schema_version.clone());
        match from.as_deref().map(|db| compare_versions(db, &installed)) {
            Some(std::cmp::Ordering::Equal) => (None, Schema::Current(installed.clone())),
            Some(std::cmp::Ordering::Greater) => {
                let db = from.unwrap_or_default();
                let installed = installed.clone();
                (None, Schema::Newer { db, installed })
            }
            _ => {
                let at = now_ms();
                let next = db::Record {
                    schema_version: installed.clone(),
                    changed_ms: at,
                };
                let from = from.unwrap_or_else(|| "unknown".into());
                let to = installed.clone();
                (Some(next), Schema::Upgraded { from, to, at })
            }
        }
    })?;
    Ok(match outcome {
        Schema::Active(lines) => {
            for line in lines {
                eprintln!("{line}");
            }
            eprintln!(
                "Stop the VMware Cloud Director service on every cell before upgrading the database. Upgrade canceled."
            );
            1
        }
        Schema::Current(v) => {
            println!("The database is already at version {v}; no updates were needed.");
            0
        }
        Schema::Newer { db, installed } => {
            eprintln!(
                "Error: the database is at version {db}, newer than the installed version {installed}. Upgrade canceled."
            );
            1
        }
        Schema::Upgraded { from, to, at } => {
            println!("Upgrading the database from version {from} to {to}...");
            println!("[1/3] Checking that no tasks are running");
            println!("[2/3] Applying the schema updates");
            println!("[3/3] Recording the new database version");
            let detail = serde_json::json!({"from": from, "to": to});
            if let Err(e) = timeline::record(cell, "db_upgrade", at, detail) {
                eprintln!("cellsim: the timeline lost the database upgrade: {e}");
            }
            println!("Database upgrade complete: the database is at version {to}.");
            0
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_settings_round_trip() {
        let spec = PackageSpec {
            kind: Kind::NoChange,
            version: "10.6.1".into(),
            build: "24300000".into(),
            install_time: Duration::from_millis(1500),
        };
        assert_eq!(PackageSpec::parse(&spec.words()), Ok(spec.clone()));
        assert_eq!(
            spec.file_name(),
            "vmware-vcloud-director-distribution-10.6.1-24300000.bin"
        );
    }

    #[test]
    fn default_builds_are_stable_eight_digit_numbers() {
        assert_eq!(default_build("10.6.1"), default_build("10.6.1"));
        assert_ne!(default_build("10.6.1"), default_build("10.6.0"));
        assert_eq!(default_build("10.6.1").len(), 8);
    }

    #[test]
    fn versions_must_fit_a_file_name() {
        assert!(check_version("10.6.1").is_ok());
        for bad in ["", "-1", "10.6/1", "10 6", "../x"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }
}
