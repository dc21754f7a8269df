//! The durable state journal and the one-run-at-a-time lock.
//!
//! `STATE_DIR/current.json` holds the run whose changes are not yet finished or undone. Every
//! step is written there (temp file, fsync, rename, fsync dir) *before* it is taken, with what
//! was true before the run, so a killed run can be continued (`drain`) or undone (`resume`).
//! Finished runs move to `STATE_DIR/runs/<run id>.json`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::procedure::Phase;
use crate::service::ServiceState;

pub const SCHEMA: u32 = 1;
const CURRENT: &str = "current.json";
const LOCK: &str = "lock";
const RUNS: &str = "runs";
/// Finished run records kept in `runs/`.
const KEEP_RUNS: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("state directory {path} is not usable: {source}; fix its permissions or give --state-dir")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the journal {path}: {source} (disk full or read-only?); nothing further was changed")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path} is unreadable or corrupt: {detail}; inspect it, then move it aside to start afresh")]
    Corrupt { path: String, detail: String },
    #[error("another cellctl run holds the lock on {path}: {holder}; let it finish, or stop that pid")]
    Locked { path: String, holder: String },
    /// Another user could plant or change the journal and the lock.
    #[error(
        "state directory {path} {problem}: another user could plant or change the journal and lock that cellctl trusts as root, so it is refused; fix with: {fix}"
    )]
    UnsafeDir { path: String, problem: String, fix: String },
    #[error(
        "{path} is a symbolic link, refused: cellctl would read or write its target as root; remove it (rm {path}) and find out who put it there"
    )]
    Symlink { path: String },
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A run id that sorts by time (to the millisecond) and is unique enough on one host.
pub fn new_run_id() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let ts = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let compact: String = ts.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let salt = (now.subsec_nanos() ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{compact}-{salt:04x}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Preflight,
    MaintenanceOn,
    Quiesce,
    Wait,
    Shutdown,
    StopService,
    UndoQuiesce,
    UndoMaintenance,
    Install,
    DbUpgrade,
    StartService,
    Health,
    MaintenanceOff,
    CancelTasks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Recorded before the action: it may or may not have taken effect.
    Started,
    Done,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: Step,
    pub status: StepStatus,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What was true of the cell before this run changed anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Before {
    pub job_count: u64,
    pub is_active: bool,
    /// None: the cell is too old to say.
    pub in_maintenance: Option<bool>,
    pub service: ServiceState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineAction {
    Abort,
    Force,
    /// Cancel this cell's running tasks through the API, wait a grace period, then `after_cancel`.
    Cancel,
}

fn default_after_cancel() -> DeadlineAction {
    DeadlineAction::Abort
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOptions {
    pub deadline_secs: u64,
    pub on_deadline: DeadlineAction,
    /// With `cancel`: abort or force when the grace period ends with jobs still running.
    #[serde(default = "default_after_cancel")]
    pub after_cancel: DeadlineAction,
    pub maintenance: bool,
    pub shutdown: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema: u32,
    pub run_id: String,
    pub command: String,
    pub pid: u32,
    pub host: String,
    pub vcd_home: String,
    pub started_at: String,
    /// Absolute deadline (unix seconds): a continued run keeps the original one.
    pub deadline_unix: f64,
    /// End of the grace period after cancelling tasks (unix seconds).
    #[serde(default)]
    pub cancel_deadline_unix: Option<f64>,
    pub options: RunOptions,
    #[serde(default)]
    pub before: Option<Before>,
    pub phase: Phase,
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub ended_at: Option<String>,
    /// For `install` and `upgrade` runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeRecord>,
}

/// Where an upgrade is, after the drain (whose progress is `RunRecord::phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Drain,
    Install,
    DbUpgrade,
    Start,
    Done,
}

impl Stage {
    /// The checked order of stages; anything else is refused.
    pub fn next(self, db_upgrade: bool, start: bool) -> Option<Stage> {
        match self {
            Stage::Drain => Some(Stage::Install),
            Stage::Install if db_upgrade => Some(Stage::DbUpgrade),
            Stage::Install | Stage::DbUpgrade if start => Some(Stage::Start),
            Stage::Install | Stage::DbUpgrade | Stage::Start => Some(Stage::Done),
            Stage::Done => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeRecord {
    pub package: crate::package::Package,
    pub stage: Stage,
    pub db_upgrade: bool,
    /// false for `cellctl install` (no start afterwards).
    pub start: bool,
    pub allow_downgrade: bool,
    pub version_before: Option<String>,
    #[serde(default)]
    pub version_after: Option<String>,
    /// The transient unit of the install (and of the database upgrade).
    pub install_unit: String,
    pub db_unit: String,
    #[serde(default)]
    pub installer_tail: Option<String>,
}

impl RunRecord {
    /// The last record of a step, if any.
    pub fn last(&self, step: Step) -> Option<&StepRecord> {
        self.steps.iter().rev().find(|s| s.step == step)
    }

    /// Did this run (possibly) make the change that `step` makes, and has it not been undone?
    /// A `Started` step counts: the process may have died after acting, before recording.
    pub fn holds_change(&self, step: Step, undo: Step) -> bool {
        let made = self
            .steps
            .iter()
            .rposition(|s| s.step == step && matches!(s.status, StepStatus::Started | StepStatus::Done));
        let undone = self
            .steps
            .iter()
            .rposition(|s| s.step == undo && s.status == StepStatus::Done);
        match (made, undone) {
            (Some(m), Some(u)) => u < m,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

#[derive(Debug)]
pub struct Journal {
    pub dir: PathBuf,
}

/// Holds the lock for the life of the run (flock is released by the kernel if we die).
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

fn dir_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Dir {
        path: path.display().to_string(),
        source,
    }
}

/// O_NOFOLLOW refuses a symlink as the last component with ELOOP: say so, not "too many levels".
fn is_symlink_refusal(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::ELOOP)
}

/// The state directory must be this user's and writable by no one else: whoever can write it
/// can plant a symlink or a journal that root then follows or acts on.
fn check_dir(dir: &Path, meta: &std::fs::Metadata) -> Result<(), JournalError> {
    use crate::trust::{Exposure, Owners};
    let Some(x) = crate::trust::exposure(meta, Owners::Me) else {
        return Ok(());
    };
    let p = dir.display().to_string();
    let fix = match x {
        Exposure::Writable { .. } => format!("chmod 700 {p}"),
        Exposure::Owner { .. } => format!("chown {} {p}", crate::trust::euid()),
    };
    Err(JournalError::UnsafeDir {
        problem: x.problem(Owners::Me),
        path: p,
        fix,
    })
}

impl Journal {
    /// Open (creating, mode 0700) the state directory and prove it writable; an existing one
    /// must be this user's and writable by no one else.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        match std::fs::metadata(dir) {
            Ok(meta) => check_dir(dir, &meta)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(dir_err(dir)(e)),
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join(RUNS))
            .map_err(dir_err(dir))?;
        let probe = dir.join(".write-probe");
        std::fs::write(&probe, b"ok").map_err(dir_err(dir))?;
        let _ = std::fs::remove_file(&probe);
        Ok(Journal { dir: dir.to_path_buf() })
    }

    pub fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    /// Take the one-run lock, or say who holds it.
    pub fn lock(&self, command: &str) -> Result<LockGuard, JournalError> {
        let path = self.dir.join(LOCK);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // A planted symlink would have root truncate and write its target.
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| {
                if is_symlink_refusal(&e) {
                    JournalError::Symlink {
                        path: path.display().to_string(),
                    }
                } else {
                    dir_err(&self.dir)(e)
                }
            })?;
        match f.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                let holder = match serde_json::from_str::<serde_json::Value>(&holder) {
                    Ok(v) => format!(
                        "pid {} ({}) since {}",
                        v["pid"],
                        v["command"].as_str().unwrap_or("?"),
                        v["started_at"].as_str().unwrap_or("?")
                    ),
                    Err(_) => "a process that has not yet written its pid".to_string(),
                };
                return Err(JournalError::Locked {
                    path: path.display().to_string(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(dir_err(&self.dir)(e)),
        }
        let info = serde_json::json!({"pid": std::process::id(), "command": command, "started_at": now_rfc3339()});
        f.set_len(0)
            .and_then(|_| f.rewind())
            .and_then(|_| f.write_all(info.to_string().as_bytes()))
            .map_err(dir_err(&self.dir))?;
        Ok(LockGuard { _file: f })
    }

    pub fn current(&self) -> Result<Option<RunRecord>, JournalError> {
        let path = self.current_path();
        // O_NOFOLLOW: a planted symlink would make root act on a run record someone else wrote.
        let read = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut f| {
                let mut t = String::new();
                f.read_to_string(&mut t).map(|_| t)
            });
        let text = match read {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if is_symlink_refusal(&e) => {
                return Err(JournalError::Symlink {
                    path: path.display().to_string(),
                });
            }
            Err(e) => {
                return Err(JournalError::Corrupt {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                });
            }
        };
        let rec: RunRecord = serde_json::from_str(&text).map_err(|e| JournalError::Corrupt {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        if rec.schema != SCHEMA {
            return Err(JournalError::Corrupt {
                path: path.display().to_string(),
                detail: format!(
                    "schema {} is not {SCHEMA} (written by another cellctl version)",
                    rec.schema
                ),
            });
        }
        Ok(Some(rec))
    }

    pub fn save(&self, rec: &RunRecord) -> Result<(), JournalError> {
        let bytes = serde_json::to_vec_pretty(rec).expect("run record serializes");
        write_atomic(&self.current_path(), &bytes)
    }

    /// The run is over: archive it and clear `current.json` (in that order, so a crash between
    /// the two leaves the run still current rather than lost).
    pub fn finish(&self, rec: &RunRecord) -> Result<PathBuf, JournalError> {
        let bytes = serde_json::to_vec_pretty(rec).expect("run record serializes");
        let dest = self.dir.join(RUNS).join(format!("{}.json", rec.run_id));
        write_atomic(&dest, &bytes)?;
        match std::fs::remove_file(self.current_path()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(JournalError::Write {
                    path: self.current_path().display().to_string(),
                    source,
                });
            }
        }
        fsync_dir(&self.dir).map_err(|source| JournalError::Write {
            path: self.dir.display().to_string(),
            source,
        })?;
        self.prune();
        Ok(dest)
    }

    fn prune(&self) {
        let Ok(rd) = std::fs::read_dir(self.dir.join(RUNS)) else {
            return;
        };
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        if names.len() <= KEEP_RUNS {
            return;
        }
        // Run ids sort by time.
        names.sort();
        for p in &names[..names.len() - KEEP_RUNS] {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write, fsync, rename, fsync the directory: the file is either old or new, never torn.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let err = |source| JournalError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    fsync_dir(dir).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> RunRecord {
        RunRecord {
            schema: SCHEMA,
            run_id: new_run_id(),
            command: "drain".into(),
            pid: 1,
            host: "h".into(),
            vcd_home: "/x".into(),
            started_at: now_rfc3339(),
            deadline_unix: 0.0,
            cancel_deadline_unix: None,
            options: RunOptions {
                deadline_secs: 1,
                on_deadline: DeadlineAction::Abort,
                after_cancel: DeadlineAction::Abort,
                maintenance: true,
                shutdown: true,
            },
            before: None,
            phase: Phase::Start,
            steps: vec![],
            outcome: None,
            ended_at: None,
            upgrade: None,
        }
    }

    fn step(step: Step, status: StepStatus) -> StepRecord {
        StepRecord {
            step,
            status,
            started_at: now_rfc3339(),
            ended_at: None,
            job_count: None,
            detail: None,
        }
    }

    #[test]
    fn save_load_finish_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        assert!(j.current().unwrap().is_none());
        let r = rec();
        j.save(&r).unwrap();
        assert_eq!(j.current().unwrap().unwrap().run_id, r.run_id);
        let archived = j.finish(&r).unwrap();
        assert!(archived.exists());
        assert!(j.current().unwrap().is_none());
    }

    #[test]
    fn second_lock_names_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        let _g = j.lock("drain").unwrap();
        let e = j.lock("drain").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        assert!(msg.contains("drain"), "{msg}");
    }

    #[test]
    fn started_step_counts_as_a_change_until_undone() {
        let mut r = rec();
        r.steps.push(step(Step::Quiesce, StepStatus::Started));
        assert!(r.holds_change(Step::Quiesce, Step::UndoQuiesce));
        r.steps.push(step(Step::UndoQuiesce, StepStatus::Started));
        assert!(r.holds_change(Step::Quiesce, Step::UndoQuiesce));
        r.steps.push(step(Step::UndoQuiesce, StepStatus::Done));
        assert!(!r.holds_change(Step::Quiesce, Step::UndoQuiesce));
        assert!(!r.holds_change(Step::MaintenanceOn, Step::UndoMaintenance));
    }

    #[test]
    fn new_state_dir_is_private_and_an_exposed_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        Journal::open(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Journal::open(&state).unwrap_err();
        assert!(matches!(e, JournalError::UnsafeDir { .. }), "{e}");
        assert!(e.to_string().contains(&format!("chmod 700 {}", state.display())), "{e}");
    }

    #[test]
    fn planted_symlinks_are_refused_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(&d.path().join("state")).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, j.dir.join(LOCK)).unwrap();
        let e = j.lock("drain").unwrap_err();
        assert!(matches!(e, JournalError::Symlink { .. }), "{e}");
        std::os::unix::fs::symlink(&victim, j.current_path()).unwrap();
        let e = j.current().unwrap_err();
        assert!(matches!(e, JournalError::Symlink { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn corrupt_journal_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        std::fs::write(j.current_path(), "{not json").unwrap();
        let e = j.current().unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
    }
}
