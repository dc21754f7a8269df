//! Write, fsync, rename, fsync the directory: a file is either old or new, never torn.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source} (disk full or read-only?)")]
pub struct WriteError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write a file only we may read (mode 0600): the journal, reports and the outbox hold
/// what the cell said and where reports go.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_mode(path, bytes, 0o600)
}

/// Write a file with this mode, whatever the umask (the service runs with 0077): for files
/// other users must read, such as the metrics a node_exporter reads as its own user.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(err)?;
    // Set on the open file (fchmod), so the umask does not apply and the file appears whole
    // with its final mode.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    fsync_dir(dir).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_are_private_unless_a_mode_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        write_atomic(&private, b"x").unwrap();
        assert_eq!(mode(&private), 0o600);
        let shared = dir.path().join("shared");
        write_atomic_mode(&shared, b"x", 0o644).unwrap();
        assert_eq!(mode(&shared), 0o644);
        // Rewriting keeps each file's own mode.
        write_atomic_mode(&shared, b"y", 0o644).unwrap();
        assert_eq!((mode(&shared), std::fs::read(&shared).unwrap()), (0o644, b"y".to_vec()));
    }
}
