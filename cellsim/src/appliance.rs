//! Appliance mode: the `vamicli` stand-in of a VCD appliance (Photon OS, updated through VAMI)
//! and the builder of its update packages (`VMware_Cloud_Director_V-BUILD_update.tar.gz`).
//!
//! The command syntax follows `../shared/research/vcd.md` section 3, "Appliance" (`vamicli update
//! --repo file:///DIR`, `--check`, `--install latest [--accepteula]`, `vamicli version
//! --appliance`). The exact output texts of the real tool are not in the research notes: the
//! ones here are modelled on VAMI's style and documented as invented in README.md.

use crate::model::{FaultKind, Op, State, compare_versions, now_ms, parse_duration, rfc3339_ms};
use crate::store::{CellDir, Error, Result, io_err, write_atomic};
use crate::tools::{INTERNAL_ERROR, Invocation, hang};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::fs;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The manifest inside an update package, where `vamicli` looks for it in the repository.
pub const MANIFEST: &str = "manifest/manifest-latest.xml";
pub const CHECKING: &str = "Checking for available updates, this process can take a few minutes....";
pub const NO_UPDATES: &str = "No available updates found.";
pub const NO_MANIFEST: &str = "Failure: Error downloading manifest. Please contact your vendor.";
pub const SERVICE_RUNNING: &str =
    "Failure: the vmware-vcd service is running. Shut the cell down and stop the service before installing the update.";
pub const REBOOT_REQUIRED: &str = "Installation complete. A reboot is required to complete the update.";

const USAGE: &str = "\
usage: vamicli update --repo URL | --check | --install latest [--accepteula]
       vamicli version --appliance
";

/// What the stand-in keeps between calls (DIR/sim/appliance.json, written under the cell lock).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ApplianceState {
    /// The repository URL last set with `update --repo`.
    pub repo: Option<String>,
    /// Every completed `update --install`, oldest first.
    pub installs: Vec<InstallRecord>,
    /// An update was installed and the appliance has not rebooted since.
    pub reboot_required: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct InstallRecord {
    pub at: String,
    pub from: String,
    pub version: String,
    pub build: String,
}

fn state_path(cell: &CellDir) -> PathBuf {
    cell.sim().join("appliance.json")
}

/// Whether the cell was created with `--appliance`.
pub fn is_appliance(cell: &CellDir) -> bool {
    state_path(cell).exists()
}

pub fn load(cell: &CellDir) -> Result<ApplianceState> {
    let path = state_path(cell);
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    serde_json::from_str(&text).map_err(|source| Error::Json { path, source })
}

fn save(cell: &CellDir, a: &ApplianceState) -> Result<()> {
    let text = serde_json::to_string_pretty(a).expect("appliance state serializes");
    write_atomic(&state_path(cell), text.as_bytes(), 0o644)
}

/// `cellsim create --appliance`: the appliance's state (the wrapper is made with the others).
pub fn create(cell: &CellDir) -> Result<()> {
    save(cell, &ApplianceState::default())
}

/// The host booted (under the cell lock): an installed update no longer waits for its reboot.
pub fn booted(cell: &CellDir) -> Result<()> {
    if !is_appliance(cell) {
        return Ok(());
    }
    let mut a = load(cell)?;
    if a.reboot_required {
        a.reboot_required = false;
        save(cell, &a)?;
    }
    Ok(())
}

/// What an update package offers.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub version: String,
    pub build: String,
    pub install_time: Duration,
}

impl Manifest {
    fn xml(&self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <update>\n  <product>VMware Cloud Director</product>\n  <vendor>VMware, Inc.</vendor>\n  \
             <version>{v}</version>\n  <build>{b}</build>\n  <fullVersion>{v} Build {b}</fullVersion>\n  \
             <installTime>{t}</installTime>\n</update>\n",
            v = self.version,
            b = self.build,
            t = humantime::format_duration(self.install_time),
        )
    }

    fn parse(xml: &str) -> std::result::Result<Manifest, String> {
        let tag = |name: &str| -> Option<String> {
            let open = format!("<{name}>");
            let start = xml.find(&open)? + open.len();
            let end = xml[start..].find(&format!("</{name}>"))?;
            Some(xml[start..start + end].trim().to_string())
        };
        Ok(Manifest {
            version: tag("version").ok_or("the manifest names no version")?,
            build: tag("build").ok_or("the manifest names no build")?,
            install_time: match tag("installTime") {
                Some(t) => parse_duration(&t)?,
                None => Duration::from_secs(1),
            },
        })
    }

    fn offered(&self) -> String {
        format!("{} Build {}", self.version, self.build)
    }
}

/// `cellsim package --appliance`: VMware_Cloud_Director_V-BUILD_update.tar.gz in `out_dir`, and
/// its `.sha256` beside it; returns the package's path. `offer` puts another version into the
/// manifest than the file name says (a package whose version vamicli does not offer); `pad`
/// bytes of zeros in `package-pool/padding.bin` make it slow to unpack.
pub fn write_package(
    out_dir: &Path,
    version: &str,
    build: &str,
    offer: Option<&str>,
    install_time: Duration,
    pad: u64,
) -> Result<PathBuf> {
    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let out_dir = out_dir.canonicalize().map_err(io_err(out_dir))?;
    let manifest = Manifest {
        version: offer.unwrap_or(version).to_string(),
        build: build.to_string(),
        install_time,
    };
    let name = format!("VMware_Cloud_Director_{version}-{build}_update.tar.gz");
    let path = out_dir.join(&name);
    let tmp = out_dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let pool = format!("package-pool/vmware-vcloud-director-distribution-{version}-{build}.x86_64.rpm");
    let entries: [(&str, Vec<u8>); 2] = [
        (MANIFEST, manifest.xml().into_bytes()),
        (
            &pool,
            format!("simulated rpm of {version} build {build}\n").into_bytes(),
        ),
    ];
    for (entry, body) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(now_ms() / 1000);
        tar.append_data(&mut h, entry, body.as_slice()).map_err(io_err(&tmp))?;
    }
    if pad > 0 {
        let mut h = tar::Header::new_gnu();
        h.set_size(pad);
        h.set_mode(0o644);
        h.set_mtime(now_ms() / 1000);
        tar.append_data(&mut h, "package-pool/padding.bin", std::io::repeat(0).take(pad))
            .map_err(io_err(&tmp))?;
    }
    let gz = tar.into_inner().map_err(io_err(&tmp))?;
    gz.finish().map_err(io_err(&tmp))?.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    let sum = crate::store::hex(&sha2::Sha256::digest(&bytes));
    let side = out_dir.join(format!("{name}.sha256"));
    fs::write(&side, format!("{sum}  {name}\n")).map_err(io_err(&side))?;
    Ok(path)
}

#[derive(Debug, PartialEq)]
enum Cmd {
    Repo(String),
    Check,
    Install { accept_eula: bool },
    Version,
}

fn parse(args: &[String]) -> std::result::Result<Cmd, String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["update", "--repo", url] => Ok(Cmd::Repo((*url).to_string())),
        ["update", "--check"] => Ok(Cmd::Check),
        ["update", "--install", "latest"] => Ok(Cmd::Install { accept_eula: false }),
        ["update", "--install", "latest", "--accepteula"] | ["update", "--accepteula", "--install", "latest"] => {
            Ok(Cmd::Install { accept_eula: true })
        }
        ["version", "--appliance"] => Ok(Cmd::Version),
        ["update", "--install", other, ..] => Err(format!("Failure: unknown version `{other}`: use `latest`")),
        _ => Err(format!("Failure: invalid arguments: {}", words.join(" "))),
    }
}

fn op_of(cmd: &Cmd) -> Op {
    match cmd {
        Cmd::Repo(_) => Op::VamicliRepo,
        Cmd::Check | Cmd::Version => Op::VamicliCheck,
        Cmd::Install { .. } => Op::VamicliInstall,
    }
}

/// The repository's manifest, or why there is none (the text vamicli prints).
fn read_manifest(repo: Option<&str>) -> std::result::Result<Manifest, String> {
    let dir = repo.and_then(|r| r.strip_prefix("file://")).ok_or(NO_MANIFEST)?;
    let text = fs::read_to_string(Path::new(dir).join(MANIFEST)).map_err(|_| NO_MANIFEST.to_string())?;
    Manifest::parse(&text).map_err(|e| format!("Failure: invalid manifest: {e}"))
}

/// The update the repository offers over the installed version, if any.
fn available(s: &State, a: &ApplianceState) -> std::result::Result<Option<Manifest>, String> {
    let m = read_manifest(a.repo.as_deref())?;
    Ok((compare_versions(&m.version, &s.knobs.version) == std::cmp::Ordering::Greater).then_some(m))
}

enum Step {
    Print(String, i32),
    Fault(FaultKind),
    Install(Manifest),
}

/// Entry point of the `vamicli` wrapper.
pub fn vamicli(inv: &Invocation) -> i32 {
    if !is_appliance(&inv.cell) {
        eprintln!("vamicli: command not found (this cell was not created with --appliance)");
        return 127;
    }
    let cmd = match parse(&inv.args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            eprint!("{USAGE}");
            return 1;
        }
    };
    let step = inv.cell.with_state(|s, _| {
        if let Some(kind) = s.take_fault(op_of(&cmd), &[FaultKind::Hang, FaultKind::Crash]) {
            return Ok(Step::Fault(kind));
        }
        let mut a = load(&inv.cell)?;
        Ok(match &cmd {
            Cmd::Repo(url) => {
                if !url.starts_with("file://") && !url.starts_with("https://") {
                    return Ok(Step::Print(format!("Failure: invalid repository URL {url}"), 1));
                }
                a.repo = Some(url.clone());
                save(&inv.cell, &a)?;
                Step::Print(format!("Repository URL set to {url}"), 0)
            }
            Cmd::Version => Step::Print(format!("Version - {}", s.knobs.version), 0),
            Cmd::Check => match available(s, &a) {
                Err(msg) => Step::Print(format!("{CHECKING}\n{msg}"), 1),
                Ok(None) => Step::Print(format!("{CHECKING}\n{NO_UPDATES}"), 0),
                Ok(Some(m)) => Step::Print(format!("{CHECKING}\nAvailable Updates -\n\t{}", m.offered()), 0),
            },
            Cmd::Install { .. } if s.service_running => Step::Print(SERVICE_RUNNING.into(), 1),
            Cmd::Install { .. } => match available(s, &a) {
                Err(msg) => Step::Print(msg, 1),
                Ok(None) => Step::Print(format!("Failure: {NO_UPDATES}"), 1),
                Ok(Some(m)) => Step::Install(m),
            },
        })
    });
    match step {
        Err(e) => {
            eprintln!("cellsim: {e}");
            INTERNAL_ERROR
        }
        Ok(Step::Print(text, 0)) => {
            println!("{text}");
            0
        }
        Ok(Step::Print(text, code)) => {
            eprintln!("{text}");
            code
        }
        Ok(Step::Fault(FaultKind::Hang)) => {
            println!("{CHECKING}");
            hang(inv)
        }
        Ok(Step::Fault(_)) => {
            eprintln!(
                "Failure: Error executing the update. Internal error (see /opt/vmware/var/log/vami/updatecli.log)"
            );
            1
        }
        Ok(Step::Install(m)) => install(inv, &cmd, &m),
    }
}

fn install(inv: &Invocation, cmd: &Cmd, m: &Manifest) -> i32 {
    if *cmd == (Cmd::Install { accept_eula: false }) {
        print!("Do you accept the End User License Agreement? [y/n] ");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            eprintln!("Failure: the EULA was not accepted (pass --accepteula)");
            return 1;
        }
    }
    println!("Installing version - {}", m.offered());
    let steps = [
        "Downloading the update",
        "Verifying the packages",
        "Installing the packages",
        "Running post-install scripts",
    ];
    let pause = m.install_time / steps.len() as u32;
    for step in steps {
        std::thread::sleep(pause);
        println!("{step}...");
        let _ = std::io::stdout().flush();
    }
    let done = inv.cell.with_state(|s, now| {
        // The service may have been started meanwhile: VAMI's scripts would fail then too.
        if s.service_running {
            return Ok(false);
        }
        let mut a = load(&inv.cell)?;
        a.installs.push(InstallRecord {
            at: rfc3339_ms(now),
            from: s.knobs.version.clone(),
            version: m.version.clone(),
            build: m.build.clone(),
        });
        a.reboot_required = true;
        s.emit(
            now,
            "installed",
            serde_json::json!({"version": m.version, "from": s.knobs.version, "by": "vamicli"}),
        );
        s.knobs.version = m.version.clone();
        save(&inv.cell, &a)?;
        Ok(true)
    });
    match done {
        Ok(true) => {
            println!("{REBOOT_REQUIRED}");
            0
        }
        Ok(false) => {
            eprintln!("{SERVICE_RUNNING}");
            1
        }
        Err(e) => {
            eprintln!("cellsim: {e}");
            INTERNAL_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_vendors_syntax_parses() {
        assert_eq!(
            parse(&args("update --repo file:///tmp/x")),
            Ok(Cmd::Repo("file:///tmp/x".into()))
        );
        assert_eq!(parse(&args("update --check")), Ok(Cmd::Check));
        assert_eq!(
            parse(&args("update --install latest --accepteula")),
            Ok(Cmd::Install { accept_eula: true })
        );
        assert_eq!(
            parse(&args("update --install latest")),
            Ok(Cmd::Install { accept_eula: false })
        );
        for bad in [
            "update",
            "update --install 10.6",
            "update --repo",
            "check",
            "update --check --x",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn manifests_round_trip() {
        let m = Manifest {
            version: "10.6.0".into(),
            build: "24135488".into(),
            install_time: Duration::from_millis(300),
        };
        assert_eq!(Manifest::parse(&m.xml()), Ok(m.clone()));
        assert!(Manifest::parse("<update></update>").is_err());
    }
}
