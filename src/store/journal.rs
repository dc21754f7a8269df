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

use serde::{Deserialize, Serialize};

use super::atomic::{WriteError, fsync_dir, write_atomic};
use super::record::{RunRecord, SCHEMA};
use crate::model::outcome::CommandName;
use crate::model::time::Timestamp;

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

impl From<WriteError> for JournalError {
    fn from(e: WriteError) -> Self {
        JournalError::Write {
            path: e.path,
            source: e.source,
        }
    }
}

/// What the lock file says of the run holding it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockHolder {
    pub pid: u32,
    pub command: CommandName,
    pub started_at: Timestamp,
}

#[derive(Debug, Clone)]
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
    use super::trust::{Exposure, Owners};
    let Some(x) = super::trust::exposure(meta, Owners::Me) else {
        return Ok(());
    };
    let p = dir.display().to_string();
    let fix = match x {
        Exposure::Writable { .. } => format!("chmod 700 {p}"),
        Exposure::Owner { .. } => format!("chown {} {p}", super::trust::euid()),
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

    /// What [`Journal::open`] would find, changing nothing that stays: an existing state
    /// directory must be trusted and take a new file (a temp file, created and removed); a
    /// missing one is made by the first run, so its nearest existing parent must take one.
    /// Says what was found.
    pub fn probe(dir: &Path) -> Result<String, JournalError> {
        let (target, exists) = match std::fs::metadata(dir) {
            Ok(meta) => {
                check_dir(dir, &meta)?;
                (dir.to_path_buf(), true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = dir.ancestors().skip(1).find(|p| p.is_dir()).unwrap_or(Path::new("/"));
                (parent.to_path_buf(), false)
            }
            Err(e) => return Err(dir_err(dir)(e)),
        };
        let probe = tempfile::Builder::new()
            .prefix(".cellctl-probe-")
            .tempfile_in(&target)
            .map_err(dir_err(dir))?;
        probe.close().map_err(dir_err(dir))?;
        Ok(if exists {
            format!("{} is writable", dir.display())
        } else {
            format!(
                "{} does not exist yet; the first run makes it in {}, which is writable",
                dir.display(),
                target.display()
            )
        })
    }

    pub fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    /// Take the one-run lock, or say who holds it.
    pub fn lock(&self, command: CommandName) -> Result<LockGuard, JournalError> {
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
                let holder = match serde_json::from_str::<LockHolder>(&holder) {
                    Ok(h) => format!("pid {} ({}) since {}", h.pid, h.command, h.started_at),
                    Err(_) => "a process that has not yet written its pid".to_string(),
                };
                return Err(JournalError::Locked {
                    path: path.display().to_string(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(dir_err(&self.dir)(e)),
        }
        let info = LockHolder {
            pid: std::process::id(),
            command,
            started_at: Timestamp::now(),
        };
        let info = serde_json::to_vec(&info).expect("lock holder serializes");
        f.set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(&info))
            .map_err(dir_err(&self.dir))?;
        Ok(LockGuard { _file: f })
    }

    /// The live run holding the lock, if one does (read-only: the lock is not taken).
    pub fn holder(&self) -> Option<LockHolder> {
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(self.dir.join(LOCK))
            .ok()?;
        if f.try_lock_shared().is_ok() {
            // Nobody holds it: released when `f` closes.
            return None;
        }
        let mut text = String::new();
        f.read_to_string(&mut text).ok()?;
        serde_json::from_str(&text).ok()
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
        Ok(write_atomic(&self.current_path(), &bytes)?)
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

    /// The newest finished (archived) run that `keep` accepts; unreadable archives are passed over.
    pub fn newest_finished(&self, keep: impl Fn(&RunRecord) -> bool) -> Option<RunRecord> {
        let rd = std::fs::read_dir(self.dir.join(RUNS)).ok()?;
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        // Run ids sort by time.
        names.sort();
        names.iter().rev().find_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            serde_json::from_str::<RunRecord>(&text).ok().filter(|r| keep(r))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::record::tests::rec;

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
        let _g = j.lock(CommandName::Drain).unwrap();
        let e = j.lock(CommandName::Drain).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        assert!(msg.contains("drain"), "{msg}");
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
        let e = j.lock(CommandName::Drain).unwrap_err();
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
