//! The cell directory on disk: state read-modify-written under an exclusive flock.

use crate::model::{State, now_ms};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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
    /// The HTTPS listener's files: ca.pem, server.pem, server.key (and ca.key when the cell is
    /// a group of one).
    pub fn tls_dir(&self) -> PathBuf {
        self.sim().join("tls")
    }
    /// DIR's file name: the default cell name.
    pub fn default_name(&self) -> String {
        self.root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cell".into())
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
        // States written before cells had an identity get one, kept from then on.
        if state.cell_id.is_empty() {
            state.cell_id = uuid_v4();
        }
        if state.name.is_none() {
            state.name = Some(self.default_name());
        }
        let now = now_ms().max(state.last_advanced_ms);
        let shared = crate::group::shared_dir(self, state.group.as_deref());
        // A state from before the shared record: its database version becomes the record.
        if let Some(legacy) = state.db_version.take() {
            crate::db::init(&shared, &legacy, now)?;
        }
        state.db_schema = crate::db::schema(&shared)?;
        state.advance(now);
        let out = f(&mut state, now)?;
        self.save(&state)?;
        // Under the cell's lock, so one cell's events are written in the order they happened.
        let events = std::mem::take(&mut state.events);
        let name = state.name.as_deref().unwrap_or_default();
        let path = crate::timeline::path_of(self, state.group.as_deref());
        if let Err(e) = crate::timeline::append(&path, name, &events) {
            eprintln!("cellsim: the timeline lost {} event(s): {e}", events.len());
        }
        if let Err(e) = self.log_events(&state, &events) {
            eprintln!("cellsim: {e}");
        }
        Ok(out)
    }

    /// DIR/logs/cell.log, as VCD_HOME/logs/cell.log (vcd.md section 2).
    pub fn cell_log_path(&self) -> PathBuf {
        self.root.join("logs").join("cell.log")
    }

    /// Appends the cell's log lines for `events` (start-up, a refused start, shutdowns).
    fn log_events(&self, state: &State, events: &[crate::model::Pending]) -> Result<()> {
        let mut text = String::new();
        for e in events {
            let line = match e.event {
                "service_started" | "watchdog_restart" => "INFO  | Application startup begins".to_string(),
                "cell_up" => format!(
                    "INFO  | Cell startup completed in {}",
                    humantime::format_duration(state.knobs.startup_delay)
                ),
                "start_refused" => format!("ERROR | {}", e.detail["reason"].as_str().unwrap_or_default()),
                "shut_down" | "service_stopped" => "INFO  | Cell shutdown completed".to_string(),
                _ => continue,
            };
            text += &format!("{} | {line}\n", crate::model::rfc3339_ms(e.at_ms));
        }
        if text.is_empty() {
            return Ok(());
        }
        let path = self.cell_log_path();
        let dir = self.root.join("logs");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(text.as_bytes()).map_err(io_err(&path))
    }

    /// Reads the state without the lock or advancing it (state.json is replaced atomically, so a
    /// reader sees a whole one).
    pub fn peek(&self) -> Result<State> {
        self.load()
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

/// An exclusive flock on `path` (created if missing), held until the value is dropped.
pub fn lock_file(path: &Path) -> Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| io_err(path)(errno.into()))
}

/// Writes `bytes` to a temporary file beside `path` (created with `mode`) and renames it over
/// `path`, so a reader sees the old or the new content, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Cryptographically random bytes (aws-lc-rs, the TLS provider's generator).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut buf)
        .expect("the system random generator works");
    buf
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random (version 4) UUID, lower-case.
pub fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!("89ab".contains(&u[19..20]), "{u}");
        assert_ne!(u, uuid_v4());
    }
}
