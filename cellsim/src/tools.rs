//! The fake vendor tools the wrapper scripts in DIR/bin exec: `cell-management-tool`,
//! `vmware-vcd-cell`, a `systemctl` stand-in, `vcd-version` and the database `upgrade` tool; and
//! the fake installers made by `cellsim package` (see `install.rs`). Every call is logged to
//! invocations.jsonl.

use crate::install;
use crate::model::{FaultKind, Knobs, Op, Phase, State, now_ms, rfc3339_ms, rfc3339_s};
use crate::store::CellDir;
use crate::tty;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

/// The tools `create` makes a DIR/bin wrapper for.
pub const TOOLS: &[&str] = &[
    "cell-management-tool",
    "vmware-vcd-cell",
    "systemctl",
    "vcd-version",
    "upgrade",
];

/// The appliance's update tool: a DIR/bin wrapper only for `create --appliance`.
pub const VAMICLI: &str = "vamicli";

/// The tool name the package scripts use (no wrapper in DIR/bin).
pub const INSTALLER: &str = "installer";

pub const NO_CONSOLE: &str = "Error: no console available to read the password; use -p";
pub const LOGIN_FAILED: &str = "Login failed: invalid username or password";
pub const CONNECT_REFUSED: &str = "Error: could not connect to the cell at localhost:8999 (Connection refused)";

/// Exit status for the simulator's own failures (EX_SOFTWARE), distinct from the tools' 1.
pub const INTERNAL_ERROR: i32 = 70;

const USAGE: &str = "\
usage: cell-management-tool cell [options]
 -h,--help                  print this message
 -m,--maintenance <arg>     true|false: turn maintenance mode on or off
 -p,--password <arg>        password of the system administrator
 -q,--quiesce <arg>         true|false: stop or resume starting new jobs
 -s,--shutdown              shut the cell down
 -t,--status                print the job count and whether the cell is active
    --status-verbose        print the status and the running jobs
 -u,--username <arg>        system administrator user name
";

const JVM_WARNINGS: &str = "\
OpenJDK 64-Bit Server VM warning: Options -Xverify:none and -noverify were deprecated in JDK 13 and will likely be removed in a future release.
OpenJDK 64-Bit Server VM warning: Sharing is only supported for boot loader classes because bootstrap classpath has been appended
WARNING: An illegal reflective access operation has occurred
WARNING: Illegal reflective access by org.springframework.cglib.core.ReflectUtils (file:/opt/vmware/vcloud-director/system/spring-core.jar) to method java.lang.ClassLoader.defineClass(java.lang.String,byte[],int,int,java.security.ProtectionDomain)
WARNING: All illegal access operations will be denied in a future release
";

const STACK_TRACE: &str = "\
Exception in thread \"main\" java.lang.IllegalStateException: Unexpected response from the cell management endpoint
\tat com.vmware.vcloud.cell.management.CellManagementClient.invoke(CellManagementClient.java:211)
\tat com.vmware.vcloud.cell.management.commands.CellCommand.execute(CellCommand.java:97)
\tat com.vmware.vcloud.cell.management.CellManagementTool.run(CellManagementTool.java:142)
\tat com.vmware.vcloud.cell.management.CellManagementTool.main(CellManagementTool.java:63)
Caused by: java.lang.NullPointerException
\tat com.vmware.vcloud.cell.management.CellManagementClient.readStatus(CellManagementClient.java:305)
\t... 3 more
";

/// One line of invocations.jsonl.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Record {
    pub at: String,
    pub tool: String,
    /// Arguments after the tool name, the configured password replaced by `***`.
    pub argv: Vec<String>,
    pub password_in_argv: bool,
    pub password_in_env: bool,
    pub had_tty: bool,
    /// Whether standard input was a terminal (records written before this field: false).
    #[serde(default)]
    pub stdin_tty: bool,
    /// None: the call hung (the record is written before hanging).
    pub exit_code: Option<i32>,
    pub pid: u32,
    /// `at` in milliseconds since the epoch (records written before this field: 0).
    #[serde(default)]
    pub at_ms: u64,
    /// When the call ended (when the record was written); None: it hung (or older records).
    #[serde(default)]
    pub ended_ms: Option<u64>,
}

pub struct Invocation {
    pub cell: CellDir,
    pub tool: String,
    /// The arguments as recorded (for an installer: the user's, not the package's settings).
    pub args: Vec<String>,
    pub at_ms: u64,
    pub tty: Option<File>,
    pub knobs: Knobs,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

impl Invocation {
    pub fn record(&self, exit_code: Option<i32>) {
        let password = self.knobs.password.as_str();
        let record = Record {
            at: rfc3339_ms(self.at_ms),
            tool: self.tool.clone(),
            argv: self
                .args
                .iter()
                .map(|a| {
                    if password.is_empty() {
                        a.clone()
                    } else {
                        a.replace(password, "***")
                    }
                })
                .collect(),
            password_in_argv: self.args.iter().any(|a| contains(a.as_bytes(), password.as_bytes())),
            password_in_env: std::env::vars_os().any(|(k, v)| {
                contains(k.as_encoded_bytes(), password.as_bytes())
                    || contains(v.as_encoded_bytes(), password.as_bytes())
            }),
            had_tty: self.tty.is_some(),
            stdin_tty: std::io::stdin().is_terminal(),
            exit_code,
            pid: std::process::id(),
            at_ms: self.at_ms,
            ended_ms: exit_code.map(|_| now_ms()),
        };
        let mut line = serde_json::to_string(&record).expect("record serializes");
        line.push('\n');
        let path = self.cell.invocations_path();
        // O_APPEND and a single write: concurrent calls append whole lines.
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write(line.as_bytes()));
        match written {
            Ok(n) if n == line.len() => {}
            Ok(_) => eprintln!("cellsim: {}: short write", path.display()),
            Err(e) => eprintln!("cellsim: {}: {e}", path.display()),
        }
        // The installer and the database tool also go to the group's timeline, so tests can
        // order them against the other cells' events.
        if matches!(self.tool.as_str(), INSTALLER | "upgrade") {
            let detail = serde_json::json!({
                "tool": self.tool,
                "started_ms": self.at_ms,
                "exit_code": exit_code,
            });
            if let Err(e) = crate::timeline::record(&self.cell, "call", now_ms(), detail) {
                eprintln!("cellsim: the timeline lost a call record: {e}");
            }
        }
    }
}

/// Entry point of `cellsim tool --cell DIR TOOL ARGS...`; returns the exit status.
pub fn run(dir: &Path, tool: &str, args: Vec<OsString>) -> i32 {
    let at_ms = now_ms();
    let tty = tty::open_tty();
    let cell = CellDir::new(dir);
    let knobs = match cell.with_state(|s, _| Ok(s.knobs.clone())) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("cellsim: {e}");
            return INTERNAL_ERROR;
        }
    };
    let mut args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    // A package script passes its settings, then `--`, then the user's arguments.
    let mut package = Vec::new();
    if tool == INSTALLER {
        match args.iter().position(|a| a == "--") {
            Some(end) => {
                package = args.drain(..=end).collect();
                package.pop();
            }
            None => {
                eprintln!("cellsim: installer: expected package settings, then `--`");
                return INTERNAL_ERROR;
            }
        }
    }
    let mut inv = Invocation {
        cell,
        tool: tool.to_string(),
        args,
        at_ms,
        tty,
        knobs,
    };
    let code = match tool {
        "cell-management-tool" => cell_management_tool(&mut inv),
        "vmware-vcd-cell" => vmware_vcd_cell(&inv),
        "systemctl" => systemctl(&inv),
        "vcd-version" => install::vcd_version(&inv),
        "upgrade" => install::db_upgrade(&inv),
        VAMICLI => crate::appliance::vamicli(&inv),
        INSTALLER => install::installer(&inv, &package),
        other => {
            eprintln!(
                "cellsim: unknown tool `{other}` (known: {}, {INSTALLER})",
                TOOLS.join(", ")
            );
            INTERNAL_ERROR
        }
    };
    let _ = std::io::stdout().flush();
    inv.record(Some(code));
    code
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmtOption {
    Status,
    StatusVerbose,
    Quiesce(bool),
    Shutdown,
    Maintenance(bool),
}

impl CmtOption {
    fn op(self) -> Op {
        match self {
            CmtOption::Status => Op::Status,
            CmtOption::StatusVerbose => Op::StatusVerbose,
            CmtOption::Quiesce(_) => Op::Quiesce,
            CmtOption::Shutdown => Op::Shutdown,
            CmtOption::Maintenance(_) => Op::Maintenance,
        }
    }
}

#[derive(Debug, PartialEq)]
struct CmtArgs {
    user: String,
    password: Option<String>,
    option: CmtOption,
}

#[derive(Debug, PartialEq)]
enum Parsed {
    Run(CmtArgs),
    Help,
}

/// `-u USER [-p PASSWORD] cell OPTION`, with `-u`/`-p` also accepted after `cell`
/// (VMware's own automation puts `-p` last). Errors read like Apache commons-cli's.
fn parse_cmt(args: &[String]) -> Result<Parsed, String> {
    let mut user = None;
    let mut password = None;
    let mut seen_cell = false;
    let mut option = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("Missing argument for option: {name}"))
        };
        let found = match arg.as_str() {
            "-u" | "--username" => {
                user = Some(value("u")?);
                None
            }
            "-p" | "--password" => {
                password = Some(value("p")?);
                None
            }
            "-h" | "--help" => return Ok(Parsed::Help),
            "cell" if !seen_cell => {
                seen_cell = true;
                None
            }
            other if !seen_cell => {
                return Err(if other.starts_with('-') {
                    format!("Unrecognized option: {other}")
                } else {
                    format!("Unknown command: {other} (the simulator supports only `cell`)")
                });
            }
            "-t" | "--status" => Some(CmtOption::Status),
            "--status-verbose" => Some(CmtOption::StatusVerbose),
            "-s" | "--shutdown" => Some(CmtOption::Shutdown),
            "-q" | "--quiesce" => Some(CmtOption::Quiesce(parse_flag("q", &value("q")?)?)),
            "-m" | "--maintenance" => Some(CmtOption::Maintenance(parse_flag("m", &value("m")?)?)),
            other if other.starts_with('-') => return Err(format!("Unrecognized option: {other}")),
            other => return Err(format!("Unexpected argument: {other}")),
        };
        if let Some(found) = found {
            if option.is_some() {
                return Err("Only one cell option may be given".into());
            }
            option = Some(found);
        }
    }
    if !seen_cell {
        return Err("Missing command: cell".into());
    }
    let user = user.ok_or("Missing required option: u")?;
    let option = option.ok_or("Missing cell option: one of -t, --status-verbose, -q, -s, -m")?;
    Ok(Parsed::Run(CmtArgs { user, password, option }))
}

fn parse_flag(name: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "Invalid value for option {name}: {value} (expected true or false)"
        )),
    }
}

enum Outcome {
    Hang,
    Crash,
    Refused,
    LoginFailed,
    Garbled,
    Done(String),
}

fn cell_management_tool(inv: &mut Invocation) -> i32 {
    let parsed = parse_cmt(&inv.args);
    let warnings = match &parsed {
        Ok(Parsed::Run(a)) => inv
            .cell
            .with_state(|s, _| Ok(s.take_fault(a.option.op(), &[FaultKind::JvmWarnings])))
            .ok()
            .flatten()
            .is_some(),
        _ => false,
    };
    // The real tool is a JVM: it is slow to start whatever it is asked.
    std::thread::sleep(inv.knobs.latency);
    if warnings {
        eprint!("{JVM_WARNINGS}");
    }
    let args = match parsed {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return 0;
        }
        Err(msg) => {
            eprintln!("{msg}");
            eprint!("{USAGE}");
            return 1;
        }
    };
    let password = match (&args.password, inv.tty.as_mut()) {
        (Some(p), _) => p.clone(),
        (None, Some(tty)) => {
            let prompt = inv.knobs.prompt.replace("{user}", &args.user);
            match tty::read_password(tty, &prompt) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("Error: could not read the password from the console: {e}");
                    return 1;
                }
            }
        }
        (None, None) => {
            eprintln!("{NO_CONSOLE}");
            return 1;
        }
    };
    let op = args.option.op();
    let outcome = inv.cell.with_state(|s, now| {
        if let Some(kind) = s.take_fault(op, &[FaultKind::Hang, FaultKind::Crash, FaultKind::ConnectRefused]) {
            return Ok(match kind {
                FaultKind::Hang => Outcome::Hang,
                FaultKind::Crash => Outcome::Crash,
                _ => Outcome::Refused,
            });
        }
        // Authentication needs the cell, so a down cell fails before the password is checked.
        if s.cell != Phase::Up {
            return Ok(Outcome::Refused);
        }
        if args.user != s.knobs.user || password != s.knobs.password {
            return Ok(Outcome::LoginFailed);
        }
        let garble = s.take_fault(op, &[FaultKind::Garble]).is_some();
        let out = match args.option {
            CmtOption::Status => status_text(s, false),
            CmtOption::StatusVerbose => status_text(s, true),
            CmtOption::Quiesce(on) => {
                s.set_quiesce(now, on);
                String::new()
            }
            CmtOption::Shutdown => {
                s.shutdown_cell(now);
                String::new()
            }
            CmtOption::Maintenance(on) => {
                s.set_maintenance(now, on);
                String::new()
            }
        };
        Ok(if garble { Outcome::Garbled } else { Outcome::Done(out) })
    });
    match outcome {
        Err(e) => {
            eprintln!("cellsim: {e}");
            INTERNAL_ERROR
        }
        Ok(Outcome::Hang) => hang(inv),
        Ok(Outcome::Crash) => {
            eprint!("{STACK_TRACE}");
            1
        }
        Ok(Outcome::Refused) => {
            eprintln!("{CONNECT_REFUSED}");
            1
        }
        Ok(Outcome::LoginFailed) => {
            eprintln!("{LOGIN_FAILED}");
            1
        }
        Ok(Outcome::Garbled) => {
            print!("{}", garbage(now_ms() ^ u64::from(std::process::id())));
            0
        }
        Ok(Outcome::Done(out)) => {
            print!("{out}");
            0
        }
    }
}

fn status_text(s: &State, verbose: bool) -> String {
    let mut out = format!("Job count = {}\nIs Active = {}\n", s.jobs.len(), s.is_active());
    if s.knobs.maintenance_line {
        out += &format!("In Maintenance Mode = {}\n", s.in_maintenance);
    }
    if verbose {
        for job in &s.jobs {
            out += &format!(
                "Job id={} operation={} started={}\n",
                job.id,
                job.operation,
                rfc3339_s(job.started_at_ms)
            );
        }
    }
    out
}

/// Never returns: writes the record (exit code null) and sleeps until killed.
pub fn hang(inv: &Invocation) -> ! {
    // Ignore SIGTERM before the record is written: a caller that sees the record
    // and sends SIGTERM must find it ignored.
    if inv.knobs.hang_ignores_term {
        ignore_sigterm();
    }
    let _ = std::io::stdout().flush();
    inv.record(None);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn ignore_sigterm() {
    // SAFETY: installing SIG_IGN runs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGTERM, nix::sys::signal::SigHandler::SigIgn);
    }
}

/// Junk that no status parser may accept: no `=`, so no `Key = value` line.
fn garbage(seed: u64) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789#$%&*+/<>?@[]^_{}|~ ";
    let mut x = seed | 1;
    let mut next = move || {
        // xorshift64: random-looking, and no dependency for it.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = String::new();
    for line in 0..4 {
        let len = 20 + (next() % 40) as usize;
        for _ in 0..len {
            out.push(CHARS[(next() % CHARS.len() as u64) as usize] as char);
        }
        // The last line is cut short without a newline, like output torn mid-write.
        if line < 3 {
            out.push('\n');
        }
    }
    out
}

fn vmware_vcd_cell(inv: &Invocation) -> i32 {
    let verb = inv.args.first().map(String::as_str);
    let result = inv.cell.with_state(|s, now| {
        Ok(match verb {
            Some("maintenance") if s.cell != Phase::Up => {
                eprintln!(
                    "Error: the cell is {}; cannot turn the maintenance message on",
                    s.cell.name()
                );
                1
            }
            Some("maintenance") => {
                s.set_maintenance(now, true);
                0
            }
            Some("stop") => {
                s.set_maintenance(now, false);
                0
            }
            Some("status") => {
                let code = match s.cell {
                    Phase::Up => {
                        println!("vmware-vcd-cell is running");
                        0
                    }
                    Phase::Starting => {
                        println!("vmware-vcd-cell is starting");
                        0
                    }
                    Phase::Down => {
                        println!("vmware-vcd-cell is not running");
                        3
                    }
                };
                if s.in_maintenance {
                    println!("vmware-vcd-cell is in maintenance mode");
                }
                code
            }
            _ => {
                eprintln!("Usage: vmware-vcd-cell {{maintenance|stop|status}}");
                1
            }
        })
    });
    result.unwrap_or_else(|e| {
        eprintln!("cellsim: {e}");
        INTERNAL_ERROR
    })
}

fn systemctl(inv: &Invocation) -> i32 {
    // Options such as --no-pager are accepted and ignored; --quiet silences is-active.
    let quiet = inv.args.iter().any(|a| a == "-q" || a == "--quiet");
    let words: Vec<&str> = inv
        .args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let Some(&verb) = words.first() else {
        eprintln!("Too few arguments.");
        return 1;
    };
    if verb == "show" {
        return systemctl_show(inv);
    }
    if verb == "reboot" {
        return crate::boot::reboot(inv);
    }
    if !matches!(verb, "is-active" | "start" | "stop" | "restart" | "status") {
        eprintln!("Unknown command verb {verb}.");
        return 1;
    }
    let Some(&unit) = words.get(1) else {
        eprintln!("Too few arguments.");
        return 1;
    };
    let name = unit.strip_suffix(".service").unwrap_or(unit);
    let result = inv.cell.with_state(|s, now| {
        if name != s.knobs.service_name {
            eprintln!("Unit {name}.service could not be found.");
            return Ok(4);
        }
        Ok(match verb {
            "is-active" => {
                if !quiet {
                    println!("{}", if s.service_running { "active" } else { "inactive" });
                }
                if s.service_running { 0 } else { 3 }
            }
            "start" | "restart" if s.rebooting() => {
                eprintln!("Failed to {verb} {unit}: Transaction is destructive (the system is rebooting).");
                1
            }
            "start" => {
                s.service_start(now);
                0
            }
            "stop" => {
                s.service_stop(now);
                0
            }
            "restart" => {
                s.service_stop(now);
                s.service_start(now);
                0
            }
            _ => service_status(s),
        })
    });
    result.unwrap_or_else(|e| {
        eprintln!("cellsim: {e}");
        INTERNAL_ERROR
    })
}

/// `systemctl show [-p P[,P...]]... [--property=P[,P...]]... [--value] UNIT`, answered as systemd
/// answers it: `KEY=VALUE` lines (or values only), exit 0, and for a unit it does not know
/// `LoadState=not-found` (not an error). The stand-in knows only the cell's service: the units of
/// the systemd-run stand-in are plain processes, so it never knows those.
fn systemctl_show(inv: &Invocation) -> i32 {
    let mut wanted: Vec<String> = vec![];
    let mut value_only = false;
    let mut unit = None;
    let mut args = inv.args.iter().skip_while(|a| *a != "show").skip(1);
    while let Some(a) = args.next() {
        let list = match a.as_str() {
            "-p" | "--property" => args.next().map(String::as_str),
            "--value" => {
                value_only = true;
                None
            }
            other if other.starts_with("--property=") => other.strip_prefix("--property="),
            other if other.starts_with('-') => None,
            other => {
                unit = Some(other.strip_suffix(".service").unwrap_or(other).to_string());
                None
            }
        };
        wanted.extend(list.into_iter().flat_map(|l| l.split(',')).map(str::to_string));
    }
    let Some(unit) = unit else {
        eprintln!("Too few arguments.");
        return 1;
    };
    let result = inv.cell.with_state(|s, _| {
        let props = if unit == s.knobs.service_name {
            let (active, sub, code) = if s.service_running {
                ("active", "running", "0")
            } else {
                ("inactive", "dead", "1")
            };
            [
                ("LoadState", "loaded"),
                ("ActiveState", active),
                ("SubState", sub),
                ("Result", "success"),
                ("ExecMainCode", code),
                ("ExecMainStatus", "0"),
            ]
        } else {
            [
                ("LoadState", "not-found"),
                ("ActiveState", "inactive"),
                ("SubState", "dead"),
                ("Result", "success"),
                ("ExecMainCode", "0"),
                ("ExecMainStatus", "0"),
            ]
        };
        for (k, v) in props {
            if !wanted.is_empty() && !wanted.iter().any(|w| w == k) {
                continue;
            }
            if value_only {
                println!("{v}");
            } else {
                println!("{k}={v}");
            }
        }
        Ok(0)
    });
    result.unwrap_or_else(|e| {
        eprintln!("cellsim: {e}");
        INTERNAL_ERROR
    })
}

/// Mimics `systemctl status`, plus the two lines the vmware-vcd init script prints.
fn service_status(s: &State) -> i32 {
    let name = &s.knobs.service_name;
    println!("● {name}.service - VMware Cloud Director");
    println!("     Loaded: loaded (/etc/systemd/system/{name}.service; enabled; vendor preset: disabled)");
    if s.service_running {
        println!("     Active: active (running) since {}", rfc3339_s(s.service_since_ms));
        println!("vmware-vcd-watchdog is running");
    } else {
        println!("     Active: inactive (dead) since {}", rfc3339_s(s.service_since_ms));
        println!("vmware-vcd-watchdog is not running");
    }
    match s.cell {
        Phase::Up => println!("vmware-vcd-cell is running"),
        Phase::Starting => println!("vmware-vcd-cell is starting"),
        Phase::Down => println!("vmware-vcd-cell is not running"),
    }
    if s.service_running { 0 } else { 3 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run(s: &str) -> CmtArgs {
        match parse_cmt(&args(s)) {
            Ok(Parsed::Run(a)) => a,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn password_before_or_after_cell() {
        let before = run("-u admin -p pw cell --status");
        let after = run("-u admin cell --quiesce true -p pw");
        assert_eq!(before.password.as_deref(), Some("pw"));
        assert_eq!(after.password.as_deref(), Some("pw"));
        assert_eq!(after.option, CmtOption::Quiesce(true));
        assert_eq!(run("-u a cell -t").option, CmtOption::Status);
        assert_eq!(run("-u a cell -m false").option, CmtOption::Maintenance(false));
        assert_eq!(run("-u a cell -s").password, None);
    }

    #[test]
    fn bad_syntax_is_refused() {
        for bad in [
            "cell --status",
            "-u a --status",
            "-u a cell",
            "-u a cell -q",
            "-u a cell -q maybe",
            "-u a cell -t -s",
            "-u a cell --bogus",
            "-u a manage-config -l",
            "-u a -p",
        ] {
            assert!(parse_cmt(&args(bad)).is_err(), "{bad}");
        }
        assert_eq!(parse_cmt(&args("cell -h")), Ok(Parsed::Help));
    }

    #[test]
    fn garbage_has_no_status_line() {
        for seed in 0..200 {
            let g = garbage(seed);
            assert!(!g.contains('=') && !g.is_empty());
        }
    }
}
