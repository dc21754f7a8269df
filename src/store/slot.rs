//! The fleet-wide slot this cell holds, as a small file in the state directory (`slot.json`,
//! written atomically), and this cell's persisted lock id (`lock-id`). The file is written
//! before the lock service is asked, so a crash between the two is never a slot forgotten:
//! `cellctl lock status` shows it and `cellctl lock release` frees it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::{WriteError, write_atomic};
use crate::model::outcome::CommandName;
use crate::model::time::Timestamp;

const SLOT: &str = "slot.json";
const LOCK_ID: &str = "lock-id";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// The request was (or is being) sent: the slot may be held.
    Taking,
    /// The lock service granted it.
    Held,
    /// Its release is due (the run is over and the cell serves) and was not confirmed: the next
    /// command, or `cellctl lock release`, retries.
    Releasing,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotRecord {
    /// `etcd` or `fleetlock`.
    pub backend: String,
    pub url: String,
    pub group: String,
    pub id: String,
    pub state: SlotState,
    /// When the slot was first granted (None while taking).
    #[serde(default)]
    pub taken_at: Option<Timestamp>,
    /// The run that took it.
    #[serde(default)]
    pub run_id: Option<String>,
    pub command: CommandName,
    /// The last release attempt's failure.
    #[serde(default)]
    pub release_error: Option<String>,
}

pub fn slot_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SLOT)
}

/// The recorded slot (None: no file; a file that cannot be read is said, not ignored).
pub fn load(state_dir: &Path) -> Result<Option<SlotRecord>, String> {
    let p = slot_path(state_dir);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            format!(
                "{} is not a slot record ({e}); remove it after checking `cellctl lock status`",
                p.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

pub fn save(state_dir: &Path, rec: &SlotRecord) -> Result<(), WriteError> {
    write_atomic(
        &slot_path(state_dir),
        &serde_json::to_vec_pretty(rec).expect("slot record serializes"),
    )
}

/// The slot is no longer held: the file goes (fsync'd directory, so it stays gone).
pub fn clear(state_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(slot_path(state_dir)) {
        Ok(()) => super::atomic::fsync_dir(state_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// This cell's lock id: the one persisted on first use, else `default` (then persisted), so a
/// renamed host keeps its id and its slot.
pub fn lock_id(state_dir: &Path, default: &str) -> Result<String, WriteError> {
    let p = state_dir.join(LOCK_ID);
    if let Ok(t) = std::fs::read_to_string(&p)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    write_atomic(&p, format!("{default}\n").as_bytes())?;
    Ok(default.to_string())
}
