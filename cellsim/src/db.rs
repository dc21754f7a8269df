//! The group's shared database: one record with the schema version, `db.json` in the group's
//! shared directory (GROUPDIR, or DIR/sim for a group of one), written atomically under
//! `db.lock`. Readers need no lock (the file is replaced whole).
//!
//! Cells made before the record existed kept `db_version` in their own state: the first access
//! to such a cell writes the record from it (see `CellDir::with_state`).

use crate::store::{Error, Result, io_err, lock_file, write_atomic};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

pub const FILE: &str = "db.json";

/// `db.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Record {
    /// The schema version: the product version that last upgraded (or created) the database.
    pub schema_version: String,
    /// When the schema last changed (ms since the epoch).
    #[serde(default)]
    pub changed_ms: u64,
}

pub fn path_in(shared: &Path) -> PathBuf {
    shared.join(FILE)
}

/// The record, if any. A missing file is None (a cell made before the record existed and not
/// yet accessed since).
pub fn read(shared: &Path) -> Result<Option<Record>> {
    let path = path_in(shared);
    match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| Error::Json { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// The schema version, if the group has a record.
pub fn schema(shared: &Path) -> Result<Option<String>> {
    Ok(read(shared)?.map(|r| r.schema_version))
}

/// Runs `f` on the record under the database lock and saves what it returns (None: unchanged).
/// `f` must not take `db.lock` again (a second flock in the same process would wait forever).
pub fn update<T>(shared: &Path, f: impl FnOnce(Option<&Record>) -> (Option<Record>, T)) -> Result<T> {
    let _lock = lock_file(&shared.join("db.lock"))?;
    let current = read(shared)?;
    let (next, out) = f(current.as_ref());
    if let Some(next) = next {
        let text = serde_json::to_string_pretty(&next).expect("db record serializes") + "\n";
        write_atomic(&path_in(shared), text.as_bytes(), 0o644)?;
    }
    Ok(out)
}

/// Sets the schema version (create of a group of one, `cellsim set db_version=V`).
pub fn set(shared: &Path, version: &str, now: u64) -> Result<()> {
    update(shared, |_| {
        let record = Record {
            schema_version: version.to_string(),
            changed_ms: now,
        };
        (Some(record), ())
    })
}

/// Writes the record only if the group has none (a group's first member, an older cell).
pub fn init(shared: &Path, version: &str, now: u64) -> Result<()> {
    update(shared, |current| {
        let record = current.is_none().then(|| Record {
            schema_version: version.to_string(),
            changed_ms: now,
        });
        (record, ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_keeps_an_existing_record_and_set_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(schema(dir.path()).unwrap(), None);
        init(dir.path(), "10.5.1", 1).unwrap();
        init(dir.path(), "10.6.1", 2).unwrap();
        assert_eq!(schema(dir.path()).unwrap().as_deref(), Some("10.5.1"));
        set(dir.path(), "10.6.1", 3).unwrap();
        let r = read(dir.path()).unwrap().unwrap();
        assert_eq!((r.schema_version.as_str(), r.changed_ms), ("10.6.1", 3));
    }
}
