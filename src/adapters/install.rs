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
        "unit {unit} ended without recording a result (reboot or kill during the install?); check `journalctl -u {unit}` and the installed version, then rerun with --retry-install"
    )]
    Unknown { unit: String },
    #[error("{0}")]
    Io(String),
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

#[derive(Debug)]
pub enum Learned {
    Finished(UnitStatus),
    Running(i32),
    Unknown,
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
            // No record: systemd-run could not start the unit (or stopped it before the wrapper ran).
            None => Err(InstallError::Start {
                unit: spec.unit.clone(),
                systemd_run: self.systemd_run.display().to_string(),
                detail: format!("exit {:?}: {}", out.code, out.stderr.trim()),
            }),
        }
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

    /// Is the unit still starting or running (before its wrapper wrote a pid file)?
    async fn unit_active(&self, unit: &str) -> bool {
        let args = ["show", "--property=ActiveState", "--value", unit];
        match exec::run(&self.unit_systemctl(), &args, Duration::from_secs(15)).await {
            Ok(o) if o.success() => matches!(o.stdout.trim(), "active" | "activating" | "deactivating" | "reloading"),
            _ => false,
        }
    }

    /// After a crash: did the unit finish, is it still running, or is its fate unknown?
    pub async fn learn(&self, unit: &str) -> Learned {
        if let Some(st) = self.read_status(unit) {
            return Learned::Finished(st);
        }
        let pid = std::fs::read_to_string(self.pid_path(unit))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            // The pid must still be our wrapper, not a reused number.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("run-logged") {
                return Learned::Running(pid);
            }
        }
        // Started but no pid yet: systemd knows whether the unit is still on its way.
        if self.unit_active(unit).await {
            return Learned::Running(0);
        }
        // The wrapper may have died between its last write and the checks above.
        match self.read_status(unit) {
            Some(st) => Learned::Finished(st),
            None => Learned::Unknown,
        }
    }

    /// Wait for a unit found running after a crash.
    pub async fn wait_for(&self, unit: &str, timeout: Duration, what: &str) -> Result<UnitStatus, InstallError> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            match self.learn(unit).await {
                Learned::Finished(st) => return Ok(st),
                Learned::Unknown => return Err(InstallError::Unknown { unit: unit.into() }),
                Learned::Running(_) if tokio::time::Instant::now() >= until => {
                    return Err(InstallError::Hung {
                        what: what.into(),
                        unit: unit.into(),
                        after: timeout,
                    });
                }
                Learned::Running(_) => tokio::time::sleep(Duration::from_millis(500)).await,
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
