//! Installers run in a transient systemd unit (`systemd-run --wait --collect`), never in
//! cellctl's own cgroup: they survive a dropped SSH session, cellctl being killed, and the
//! restart of the service they upgrade.
//!
//! Inside the unit a small wrapper (`cellctl run-logged`) runs the installer, feeds its
//! prompts' answers on stdin, copies its output to the journal (its stdout) and to a log file,
//! and writes a pid file at start and a status file at the end. `--collect` unloads the unit
//! when it ends, so those files are how a rerun after `kill -9` learns what happened.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::adapters::exec::{self, ExecError};
use crate::model::time::Timestamp;
use crate::store::atomic::write_atomic;

/// Lines of installer output kept for the report.
pub const TAIL_LINES: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot start transient unit {unit} with {systemd_run}: {detail}; check --systemd-run")]
    Start {
        unit: String,
        systemd_run: String,
        detail: String,
    },
    #[error("{what} in unit {unit} failed ({result}); last output: {tail}")]
    Failed {
        what: String,
        unit: String,
        result: String,
        tail: String,
    },
    #[error("{what} in unit {unit} did not finish within {} ([install] timeout); the unit was stopped", humantime::format_duration(*.after))]
    Hung {
        what: String,
        unit: String,
        after: Duration,
    },
    #[error(
        "unit {unit} ended without recording a result, and what it did cannot be told: {why}; check `journalctl -u {unit}` and the installed version, then rerun with --retry-install to run it again"
    )]
    Unknown { unit: String, why: String },
    #[error(
        "{what} ran in unit {unit} ({exit}), but its result could not be recorded in {dir}: {cause}; make room there or make it writable, then rerun the same command: it learns the result from what the unit left (an install, from the installed version)"
    )]
    Unrecorded {
        what: String,
        unit: String,
        /// What systemd-run said of the unit's end.
        exit: String,
        dir: String,
        cause: String,
    },
    #[error(
        "{what} could not run in unit {unit}: its log cannot be written in {dir}: {cause}; make room there or make it writable, then rerun the same command"
    )]
    Unlogged {
        what: String,
        unit: String,
        dir: String,
        cause: String,
    },
    #[error("{0}")]
    Io(String),
}

impl InstallError {
    /// The unit's files could not be written: a fault of the state directory, not of the
    /// installer or of systemd-run.
    pub fn is_state_dir(&self) -> bool {
        matches!(self, InstallError::Unrecorded { .. } | InstallError::Unlogged { .. })
    }
}

/// What the wrapper wrote when the installer ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub ended_at: Timestamp,
}

impl UnitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "no status".into(),
        }
    }
}

/// What to run in a unit.
#[derive(Debug, Clone)]
pub struct UnitSpec {
    pub unit: String,
    pub description: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Lines written to the program's stdin (answers to its prompts), then EOF.
    pub answers: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Transient {
    pub systemd_run: PathBuf,
    /// The cellctl binary (the wrapper inside the unit).
    pub self_exe: PathBuf,
    /// Where logs, pid and status files live (under the state dir).
    pub dir: PathBuf,
}

/// What a rerun learns of a unit recorded as started.
#[derive(Debug)]
pub enum Learned {
    Finished(UnitStatus),
    /// A process of the unit lives (its pid; 0 when only systemd says so).
    Running(i32),
    /// No trace of the unit: systemd does not know it, no process carries it, and the wrapper
    /// left no pid, status or log file (it opens its log before it runs anything). Starting the
    /// unit now runs its program once.
    NeverStarted,
    /// It started, or may have, and ended without a result: `why` says what was seen.
    Unknown {
        why: String,
    },
}

/// What systemd says of a unit (`systemctl show`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum SystemdView {
    /// Starting, running or stopping.
    Active,
    /// Loaded and ended (not collected yet): its main process's end, as systemd saw it.
    Ended(UnitStatus),
    /// systemd does not know it: never started, or collected after it ended.
    NotFound,
    /// Anything else, or systemd could not be asked: what was seen.
    Unclear(String),
}

impl SystemdView {
    /// From `systemctl show` output (`KEY=VALUE` lines).
    fn parse(text: &str) -> SystemdView {
        let props: std::collections::HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| props.get(k).copied().unwrap_or("");
        let ended = |code: Option<i32>, signal: Option<i32>| {
            SystemdView::Ended(UnitStatus {
                code,
                signal,
                ended_at: Timestamp::now(),
            })
        };
        match (get("LoadState"), get("ActiveState")) {
            (_, "active" | "activating" | "deactivating" | "reloading" | "refreshing") => SystemdView::Active,
            ("not-found", _) => SystemdView::NotFound,
            // ExecMainCode is the waitid() code: 1 exited, 2 killed, 3 dumped core.
            ("loaded", active @ ("inactive" | "failed")) => {
                match (get("ExecMainCode"), get("ExecMainStatus").parse().ok()) {
                    ("1", Some(c)) => ended(Some(c), None),
                    ("2" | "3", Some(sig)) => ended(None, Some(sig)),
                    _ => SystemdView::Unclear(format!(
                        "systemd knows the unit ({active}, result {}) but saw no end of its process",
                        get("Result")
                    )),
                }
            }
            ("", _) => SystemdView::Unclear(format!("systemctl show said no LoadState: {:?}", text.trim())),
            (load, active) => SystemdView::Unclear(format!("systemd shows the unit {load}, {active}")),
        }
    }
}

/// What a unit left behind, once nothing of it runs.
#[derive(Debug)]
struct Traces {
    pid_file: bool,
    log_file: bool,
    systemd: SystemdView,
}

impl Traces {
    fn judge(self) -> Learned {
        let files = match (self.pid_file, self.log_file) {
            (true, _) => "its wrapper started (pid file) and is gone without a status file",
            (false, true) => "its log exists (the wrapper started) but no pid or status file",
            (false, false) => "it left no pid, status or log file",
        };
        let systemd = match self.systemd {
            SystemdView::Ended(st) => return Learned::Finished(st),
            SystemdView::NotFound if !self.pid_file && !self.log_file => return Learned::NeverStarted,
            SystemdView::NotFound => "systemd no longer knows the unit".to_string(),
            SystemdView::Unclear(seen) => seen,
            SystemdView::Active => "systemd shows it active".to_string(),
        };
        Learned::Unknown {
            why: format!("{files}, and {systemd}"),
        }
    }
}

/// The arguments of a process (empty when it is gone, a zombie, or not ours to read).
fn cmdline(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

impl Transient {
    pub fn log_path(&self, unit: &str) -> PathBuf {
        self.dir.join(format!("{unit}.log"))
    }
    fn status_path(&self, unit: &str) -> PathBuf {
        self.dir.join(format!("{unit}.status"))
    }
    fn pid_path(&self, unit: &str) -> PathBuf {
        self.dir.join(format!("{unit}.pid"))
    }

    /// Before a new attempt: an earlier attempt's files must not be taken for this one's (a
    /// stale status for its result, a stale log for a sign that it started). The earlier log is
    /// kept as `<unit>.log.1`.
    pub fn clear(&self, unit: &str) -> Result<(), InstallError> {
        let io = |p: &Path, e: std::io::Error| InstallError::Io(format!("cannot clear {}: {e}", p.display()));
        for p in [self.status_path(unit), self.pid_path(unit)] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&p, e)),
                _ => {}
            }
        }
        let log = self.log_path(unit);
        if log.exists() {
            std::fs::rename(&log, self.dir.join(format!("{unit}.log.1"))).map_err(|e| io(&log, e))?;
        }
        Ok(())
    }

    /// The systemd-run argv for a spec (a function of its own so tests can check it).
    pub fn argv(&self, spec: &UnitSpec) -> Vec<String> {
        let secs = spec.timeout.as_secs().max(1);
        let mut v = vec![
            format!("--unit={}", spec.unit),
            format!("--description={}", spec.description),
            "--wait".into(),
            "--collect".into(),
            "--quiet".into(),
            "--service-type=exec".into(),
            // The installer may not run forever: systemd stops it at this limit.
            format!("--property=RuntimeMaxSec={secs}"),
            // SIGTERM reaches the wrapper only, which passes it on and records the result.
            "--property=KillMode=mixed".into(),
            "--property=TimeoutStopSec=60".into(),
            "--property=StandardOutput=journal".into(),
            "--property=StandardError=journal".into(),
        ];
        for (k, val) in &spec.env {
            v.push(format!("--setenv={k}={val}"));
        }
        v.push("--".into());
        v.push(self.self_exe.display().to_string());
        v.push("run-logged".into());
        v.push("--log".into());
        v.push(self.log_path(&spec.unit).display().to_string());
        v.push("--status".into());
        v.push(self.status_path(&spec.unit).display().to_string());
        v.push("--pid-file".into());
        v.push(self.pid_path(&spec.unit).display().to_string());
        for a in &spec.answers {
            v.push("--answer".into());
            v.push(a.clone());
        }
        v.push("--".into());
        v.push(spec.program.display().to_string());
        v.extend(spec.args.iter().cloned());
        v
    }

    /// Run the spec in a transient unit and wait for it.
    pub async fn run(&self, spec: &UnitSpec, what: &str) -> Result<UnitStatus, InstallError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| InstallError::Io(format!("{}: {e}", self.dir.display())))?;
        for p in [self.status_path(&spec.unit), self.pid_path(&spec.unit)] {
            let _ = std::fs::remove_file(p);
        }
        let argv = self.argv(spec);
        // Our own limit sits beyond the unit's, so systemd's stop (and the wrapper's record) comes first.
        let limit = spec.timeout + Duration::from_secs(90);
        let res = exec::run(&self.systemd_run, &argv, limit).await;
        let out = match res {
            Ok(o) => o,
            Err(ExecError::TimedOut { .. }) => {
                return Err(InstallError::Hung {
                    what: what.into(),
                    unit: spec.unit.clone(),
                    after: limit,
                });
            }
            Err(e) => {
                return Err(InstallError::Start {
                    unit: spec.unit.clone(),
                    systemd_run: self.systemd_run.display().to_string(),
                    detail: e.to_string(),
                });
            }
        };
        match self.read_status(&spec.unit) {
            Some(st) => Ok(st),
            None => Err(self.no_status(spec, what, &out)),
        }
    }

    /// Why a unit that systemd-run waited for left no readable status. The wrapper writes it in
    /// the units dir, so a full or read-only state dir loses the result of an installer that
    /// ran: that must be said, not blamed on systemd-run.
    fn no_status(&self, spec: &UnitSpec, what: &str, out: &exec::Output) -> InstallError {
        let unit = &spec.unit;
        // The wrapper opens its log before anything else and exits 125 if it cannot; exit 0
        // from `systemd-run --wait` is the unit's own success.
        let ran = self.log_path(unit).exists() || self.pid_path(unit).exists() || out.success();
        // `systemd-run --wait` exits with the unit's exit status.
        let exit = match (out.code, out.stderr.trim()) {
            (Some(c), "") => format!("exit status {c}"),
            (Some(c), err) => format!("exit status {c}: {err}"),
            (None, _) => "its end unknown: systemd-run was killed".to_string(),
        };
        let dir = self.dir.display().to_string();
        match (ran, self.recording_problem(unit)) {
            (true, cause) => InstallError::Unrecorded {
                what: what.into(),
                unit: unit.clone(),
                exit,
                dir,
                cause: cause.unwrap_or_else(|| {
                    "no status file was written, though the directory takes files now (disk full for a while, or the wrapper killed?)".into()
                }),
            },
            (false, Some(cause)) => InstallError::Unlogged {
                what: what.into(),
                unit: unit.clone(),
                dir,
                cause,
            },
            // No trace of the wrapper, and nothing stopped it from leaving one: the unit did
            // not start.
            (false, None) => InstallError::Start {
                unit: unit.clone(),
                systemd_run: self.systemd_run.display().to_string(),
                detail: format!("{}: {}", out.describe_exit(), out.stderr.trim()),
            },
        }
    }

    /// Why the units dir cannot take the wrapper's status file (None: it can now).
    fn recording_problem(&self, unit: &str) -> Option<String> {
        let status = self.status_path(unit);
        match std::fs::symlink_metadata(&status) {
            Ok(m) if !m.is_file() => return Some(format!("{} is in the way: not a file", status.display())),
            Ok(_) => return Some(format!("{} cannot be read as a status", status.display())),
            Err(_) => {}
        }
        // The wrapper's own way of writing: a temporary file, fsync, rename.
        let probe = self.dir.join(format!(".{unit}.probe"));
        let res = write_atomic(&probe, b"probe\n");
        let _ = std::fs::remove_file(&probe);
        res.err().map(|e| format!("{} (disk full or read-only?)", e.source))
    }

    pub fn read_status(&self, unit: &str) -> Option<UnitStatus> {
        let t = std::fs::read_to_string(self.status_path(unit)).ok()?;
        serde_json::from_str(&t).ok()
    }

    /// The systemctl that goes with our systemd-run (beside it, or on PATH): the one that knows
    /// our transient units, which need not be the cell service's (settable) systemctl.
    fn unit_systemctl(&self) -> PathBuf {
        match self.systemd_run.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) if dir.join("systemctl").exists() => dir.join("systemctl"),
            _ => PathBuf::from("systemctl"),
        }
    }

    /// What systemd says of the unit. Its units are what `systemd-run` started; a stand-in
    /// that knows none answers "not-found", as systemd does for a unit it never had.
    async fn unit_state(&self, unit: &str) -> SystemdView {
        let args = [
            "show",
            "--property=LoadState",
            "--property=ActiveState",
            "--property=Result",
            "--property=ExecMainCode",
            "--property=ExecMainStatus",
            unit,
        ];
        let systemctl = self.unit_systemctl();
        match exec::run(&systemctl, &args, Duration::from_secs(15)).await {
            Ok(o) if o.success() => SystemdView::parse(&o.stdout),
            Ok(o) => SystemdView::Unclear(format!(
                "`{} show {unit}` failed ({}: {})",
                systemctl.display(),
                o.describe_exit(),
                o.stderr.trim()
            )),
            Err(e) => SystemdView::Unclear(format!("`{} show {unit}`: {e}", systemctl.display())),
        }
    }

    /// A live process of the unit: its wrapper (pid file), or any process carrying the unit on
    /// its command line: a `systemd-run --unit=...` still on its way (the one a killed cellctl
    /// started lives on), or a wrapper that has not written its pid file yet.
    fn unit_process(&self, unit: &str) -> Option<i32> {
        let pid = std::fs::read_to_string(self.pid_path(unit))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        // The pid must still be our wrapper, not a reused number.
        if let Some(pid) = pid
            && cmdline(pid).iter().any(|a| a == "run-logged")
        {
            return Some(pid);
        }
        let flag = format!("--unit={unit}");
        let log = self.log_path(unit).display().to_string();
        let starter = |a: &String| {
            let name = Path::new(a).file_name().unwrap_or_default();
            name.to_string_lossy().starts_with("systemd-run") || Some(name) == self.systemd_run.file_name()
        };
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok().filter(|p| *p != me)?;
            let args = cmdline(pid);
            let has = |x: &str| args.iter().any(|a| a == x);
            let ours = (has(&flag) && args.iter().any(starter)) || (has("run-logged") && has(&log));
            ours.then_some(pid)
        })
    }

    /// After a crash: did the unit finish, is it still running, did it never start, or is its
    /// fate unknown? Every source is asked: the status file, the pid file and /proc, systemd,
    /// the log file.
    pub async fn learn(&self, unit: &str) -> Learned {
        if let Some(st) = self.read_status(unit) {
            return Learned::Finished(st);
        }
        if let Some(pid) = self.unit_process(unit) {
            return Learned::Running(pid);
        }
        let systemd = self.unit_state(unit).await;
        if systemd == SystemdView::Active {
            return Learned::Running(0);
        }
        // The wrapper may have ended between the first look and systemd's answer.
        if let Some(st) = self.read_status(unit) {
            return Learned::Finished(st);
        }
        Traces {
            pid_file: self.pid_path(unit).exists(),
            log_file: self.log_path(unit).exists(),
            systemd,
        }
        .judge()
    }

    /// Wait for a unit found running after a crash, until `learn` says something else of it.
    pub async fn wait_for(&self, unit: &str, timeout: Duration, what: &str) -> Result<Learned, InstallError> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            match self.learn(unit).await {
                Learned::Running(_) if tokio::time::Instant::now() >= until => {
                    return Err(InstallError::Hung {
                        what: what.into(),
                        unit: unit.into(),
                        after: timeout,
                    });
                }
                Learned::Running(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                other => return Ok(other),
            }
        }
    }

    /// The last lines of the unit's output, for the report.
    pub fn tail(&self, unit: &str) -> String {
        let text = std::fs::read(self.log_path(unit)).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}

/// The wrapper inside the unit (`cellctl run-logged`): returns the exit code to use.
pub fn run_logged(
    log: &Path,
    status: &Path,
    pid_file: &Path,
    answers: &[String],
    program: &str,
    args: &[String],
) -> i32 {
    use std::process::{Command, Stdio};
    let mut logf = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cellctl run-logged: cannot open {}: {e}", log.display());
            return 125;
        }
    };
    let _ = write_atomic(pid_file, std::process::id().to_string().as_bytes());
    let (mut reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cellctl run-logged: pipe: {e}");
            return 125;
        }
    };
    let child = Command::new(program)
        .args(args)
        .stdin(if answers.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(writer.try_clone().map_or(Stdio::null(), Stdio::from))
        .stderr(Stdio::from(writer))
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("cellctl run-logged: cannot run {program}: {e}\n");
            let _ = logf.write_all(msg.as_bytes());
            eprint!("{msg}");
            record(status, Some(127), None);
            return 127;
        }
    };
    pass_signals_to(child.id());
    if let Some(mut stdin) = child.stdin.take() {
        let text: String = answers.iter().flat_map(|a| [a.as_str(), "\n"]).collect();
        // An installer that exits before reading all answers closes the pipe: not an error.
        let _ = stdin.write_all(text.as_bytes());
    }
    copy_output(&mut reader, &mut logf);
    let st = child.wait();
    let _ = logf.sync_all();
    let (code, signal) = match st {
        Ok(s) => (s.code(), s.signal()),
        Err(_) => (None, None),
    };
    record(status, code, signal);
    code.unwrap_or_else(|| 128 + signal.unwrap_or(0))
}

/// SIGTERM (unit stopped, RuntimeMaxSec) is passed on so the installer can stop cleanly, and
/// the result is still recorded.
fn pass_signals_to(child: u32) {
    let Ok(pid) = i32::try_from(child) else { return };
    if let Ok(mut sigs) =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
    {
        std::thread::spawn(move || {
            for s in sigs.forever() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::try_from(s).unwrap_or(nix::sys::signal::Signal::SIGTERM),
                );
            }
        });
    }
}

/// The installer's output to the journal (our stdout) and the log file, as it comes.
fn copy_output(reader: &mut impl Read, logf: &mut std::fs::File) {
    let mut buf = [0u8; 8192];
    let mut out = std::io::stdout();
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
                let _ = logf.write_all(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

fn record(status: &Path, code: Option<i32>, signal: Option<i32>) {
    let st = UnitStatus {
        code,
        signal,
        ended_at: Timestamp::now(),
    };
    let _ = write_atomic(
        status,
        serde_json::to_string(&st).expect("status serializes").as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_names_the_unit_and_collects_it() {
        let t = Transient {
            systemd_run: "systemd-run".into(),
            self_exe: "/usr/bin/cellctl".into(),
            dir: "/var/lib/cellctl/units".into(),
        };
        let spec = UnitSpec {
            unit: "cellctl-install-1".into(),
            description: "d".into(),
            program: "/tmp/x.bin".into(),
            args: vec![],
            answers: vec!["y".into(), "n".into()],
            env: vec![("DEBIAN_FRONTEND".into(), "noninteractive".into())],
            timeout: Duration::from_secs(3600),
        };
        let a = t.argv(&spec);
        for want in [
            "--unit=cellctl-install-1",
            "--wait",
            "--collect",
            "--property=RuntimeMaxSec=3600",
            "--setenv=DEBIAN_FRONTEND=noninteractive",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
        let dd = a.iter().position(|x| x == "--").unwrap();
        assert_eq!(a[dd + 1], "/usr/bin/cellctl");
        assert_eq!(a.last().unwrap(), "/tmp/x.bin");
    }

    /// Write a script; return once it can be run. A process forked by another test thread
    /// while the file was open for writing holds it open until it execs (ETXTBSY meanwhile).
    fn script(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        for _ in 0..500 {
            match std::process::Command::new(path).arg("--probe").output() {
                Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => std::thread::sleep(Duration::from_millis(10)),
                _ => return,
            }
        }
    }

    fn transient(dir: &Path, systemctl_says: &str) -> Transient {
        // A systemctl beside the systemd-run is the one asked about our units.
        script(
            &dir.join("systemctl"),
            &format!("#!/bin/sh\nprintf '{systemctl_says}'\n"),
        );
        Transient {
            systemd_run: dir.join("systemd-run"),
            self_exe: "/usr/bin/cellctl".into(),
            dir: dir.join("units"),
        }
    }

    const NOT_FOUND: &str = "LoadState=not-found\\nActiveState=inactive\\nExecMainCode=0\\n";

    #[test]
    fn systemd_show_is_read_as_systemd_means_it() {
        assert_eq!(
            SystemdView::parse("LoadState=loaded\nActiveState=activating\n"),
            SystemdView::Active
        );
        assert_eq!(
            SystemdView::parse("LoadState=not-found\nActiveState=inactive\nResult=success\n"),
            SystemdView::NotFound
        );
        let ended = SystemdView::parse("LoadState=loaded\nActiveState=failed\nExecMainCode=1\nExecMainStatus=3\n");
        assert!(
            matches!(
                ended,
                SystemdView::Ended(UnitStatus {
                    code: Some(3),
                    signal: None,
                    ..
                })
            ),
            "{ended:?}"
        );
        let killed = SystemdView::parse("LoadState=loaded\nActiveState=failed\nExecMainCode=2\nExecMainStatus=9\n");
        assert!(
            matches!(
                killed,
                SystemdView::Ended(UnitStatus {
                    code: None,
                    signal: Some(9),
                    ..
                })
            ),
            "{killed:?}"
        );
        // Loaded but its process never ended (a start job still queued): not a result.
        let queued = SystemdView::parse("LoadState=loaded\nActiveState=inactive\nExecMainCode=0\nExecMainStatus=0\n");
        assert!(matches!(queued, SystemdView::Unclear(_)), "{queued:?}");
        assert!(matches!(SystemdView::parse(""), SystemdView::Unclear(_)));
    }

    #[test]
    fn only_a_unit_without_any_trace_never_started() {
        let t = |pid_file, log_file, systemd| {
            Traces {
                pid_file,
                log_file,
                systemd,
            }
            .judge()
        };
        assert!(matches!(t(false, false, SystemdView::NotFound), Learned::NeverStarted));
        for (pid, log) in [(true, false), (false, true), (true, true)] {
            let l = t(pid, log, SystemdView::NotFound);
            assert!(
                matches!(&l, Learned::Unknown { why } if why.contains("no longer knows")),
                "{l:?}"
            );
        }
        // systemd could not be asked: a unit on its way cannot be ruled out.
        let l = t(false, false, SystemdView::Unclear("systemctl: not found".into()));
        assert!(
            matches!(&l, Learned::Unknown { why } if why.contains("systemctl: not found")),
            "{l:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn learn_asks_every_source() {
        let d = tempfile::tempdir().unwrap();
        let tr = transient(d.path(), NOT_FOUND);
        // Unique to this process: another test run on the machine must not see our child.
        let unit = &format!("cellctl-install-learn-{}", std::process::id());
        assert!(matches!(tr.learn(unit).await, Learned::NeverStarted));
        std::fs::create_dir_all(&tr.dir).unwrap();
        std::fs::write(tr.log_path(unit), "Installing...\n").unwrap();
        assert!(matches!(tr.learn(unit).await, Learned::Unknown { .. }));
        // A process still carrying the unit (a systemd-run on its way) is the unit running.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; exit 0", "systemd-run", &format!("--unit={unit}")])
            .spawn()
            .unwrap();
        // The child's command line shows in /proc once its exec is through: wait for that
        // (bounded), not for a fixed time.
        let mut seen = tr.learn(unit).await;
        for _ in 0..100 {
            if matches!(seen, Learned::Running(p) if p == i32::try_from(child.id()).unwrap()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            seen = tr.learn(unit).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            matches!(seen, Learned::Running(p) if p == i32::try_from(child.id()).unwrap()),
            "{seen:?}"
        );
        std::fs::write(
            tr.status_path(unit),
            r#"{"code":0,"signal":null,"ended_at":"2025-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert!(matches!(tr.learn(unit).await, Learned::Finished(st) if st.success()));
        // Systemd's word that the unit still runs, though no file or process shows it yet.
        let t2 = transient(d.path(), "LoadState=loaded\\nActiveState=activating\\n");
        assert!(matches!(t2.learn("cellctl-install-other").await, Learned::Running(0)));
    }

    #[test]
    fn clear_leaves_no_earlier_attempt_behind() {
        let d = tempfile::tempdir().unwrap();
        let tr = transient(d.path(), NOT_FOUND);
        let unit = "cellctl-install-clear";
        tr.clear(unit).unwrap();
        std::fs::create_dir_all(&tr.dir).unwrap();
        for p in [tr.log_path(unit), tr.status_path(unit), tr.pid_path(unit)] {
            std::fs::write(p, "x").unwrap();
        }
        tr.clear(unit).unwrap();
        let left: Vec<String> = std::fs::read_dir(&tr.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![format!("{unit}.log.1")]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_result_that_cannot_be_written_blames_the_state_dir() {
        let d = tempfile::tempdir().unwrap();
        let tr = transient(d.path(), NOT_FOUND);
        // A stand-in for systemd-run and the wrapper: the log and pid file written, the
        // installer's success, and no status file (its write failed).
        std::fs::create_dir_all(&tr.dir).unwrap();
        let body = "#!/bin/sh\nwhile [ $# -gt 0 ]; do case \"$1\" in --log|--pid-file) echo x > \"$2\";; esac; shift; done; exit 0\n";
        script(&tr.systemd_run, body);
        let spec = UnitSpec {
            unit: "cellctl-install-full".into(),
            description: "d".into(),
            program: "/bin/true".into(),
            args: vec![],
            answers: vec![],
            env: vec![],
            timeout: Duration::from_secs(60),
        };
        // The status file's rename fails, as in a full or read-only directory.
        std::fs::create_dir_all(tr.status_path(&spec.unit)).unwrap();
        let e = tr.run(&spec, "the installer").await.unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, InstallError::Unrecorded { .. }) && e.is_state_dir(),
            "{e:?}"
        );
        assert!(
            msg.contains(&tr.dir.display().to_string()) && msg.contains("exit status 0"),
            "{msg}"
        );
        assert!(!msg.contains("cannot start transient unit"), "{msg}");
    }

    #[test]
    fn wrapper_records_output_and_status() {
        let d = tempfile::tempdir().unwrap();
        let (log, st, pid) = (d.path().join("l"), d.path().join("s"), d.path().join("p"));
        let code = run_logged(
            &log,
            &st,
            &pid,
            &["y".into()],
            "/bin/sh",
            &["-c".into(), "read a; echo got $a; echo err >&2; exit 3".into()],
        );
        assert_eq!(code, 3);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("got y") && text.contains("err"), "{text}");
        let status: UnitStatus = serde_json::from_str(&std::fs::read_to_string(&st).unwrap()).unwrap();
        assert_eq!(status.code, Some(3));
        assert!(std::fs::read_to_string(&pid).unwrap().trim().parse::<u32>().is_ok());
    }
}
