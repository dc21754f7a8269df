//! The cell directory on disk: state read-modify-written under an exclusive flock.

use crate::model::{State, now_ms};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid cell state: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{0}")]
    Msg(String),
}

impl From<String> for Error {
    fn from(msg: String) -> Self {
        Error::Msg(msg)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct CellDir {
    pub root: PathBuf,
}

impl CellDir {
    pub fn new(root: &Path) -> CellDir {
        CellDir {
            root: root.to_path_buf(),
        }
    }
    pub fn bin(&self) -> PathBuf {
        self.root.join("bin")
    }
    pub fn sim(&self) -> PathBuf {
        self.root.join("sim")
    }
    pub fn state_path(&self) -> PathBuf {
        self.sim().join("state.json")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.sim().join("lock")
    }
    pub fn invocations_path(&self) -> PathBuf {
        self.sim().join("invocations.jsonl")
    }

    /// Runs `f` on the state advanced to now, and saves it if `f` succeeds.
    /// The lock is held only for this: never across a sleep or a password prompt.
    pub fn with_state<T>(&self, f: impl FnOnce(&mut State, u64) -> Result<T>) -> Result<T> {
        let lock_path = self.lock_path();
        if !self.state_path().exists() {
            return Err(Error::Msg(format!(
                "{}: not a cell (create one with `cellsim create DIR`)",
                self.root.display()
            )));
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let _lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| io_err(&lock_path)(errno.into()))?;
        let mut state = self.load()?;
        let now = now_ms().max(state.last_advanced_ms);
        state.advance(now);
        let out = f(&mut state, now)?;
        self.save(&state)?;
        Ok(out)
    }

    fn load(&self) -> Result<State> {
        let path = self.state_path();
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str(&text).map_err(|source| Error::Json { path, source })
    }

    /// Write to a temporary file and rename, so a reader never sees half a state. No fsync:
    /// the state only has to survive between processes, not a power cut.
    pub fn save(&self, state: &State) -> Result<()> {
        let path = self.state_path();
        let tmp = self.sim().join(format!("state.json.tmp.{}", std::process::id()));
        let mut text = serde_json::to_string_pretty(state).expect("state serializes");
        text.push('\n');
        let mut file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(())
    }
}
