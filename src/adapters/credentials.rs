//! The administrator password: where it comes from, and a type that never prints it.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{IsTerminal, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroize;

/// The systemd credential name read from `$CREDENTIALS_DIRECTORY` (`LoadCredential=vcd-password:...`).
pub const CREDENTIAL_NAME: &str = "vcd-password";

/// A password or signing secret is one short line: a bigger file is the wrong file (or one that
/// never ends), and is refused before it can fill memory.
pub const MAX_SECRET_FILE: u64 = 4096;

/// A secret string: redacted in Debug/Display, zeroed on drop.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Replace every occurrence of the secret in `text` (tool output may echo it).
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_string();
        }
        text.replace(&self.0, "********")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("secret file {path} is readable by group or others (mode {mode:o}); fix with: chmod 600 {path}")]
    UnsafeMode { path: String, mode: u32 },
    #[error("cannot read secret file {path}: {source}; check the path")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {path} is empty; put the secret on its first line")]
    Empty { path: String },
    #[error(
        "secret file {path} is a {kind}, not a regular file; point to a regular file (mode 0600) holding the secret"
    )]
    NotRegular { path: String, kind: &'static str },
    #[error(
        "secret file {path} is larger than 4 KiB, too big for a secret of one line; point to the file holding only the secret"
    )]
    TooLarge { path: String },
    #[error(
        "no password: not on a terminal, no --password-file and no systemd credential; give --password-file FILE (mode 0600) or LoadCredential={CREDENTIAL_NAME}:FILE"
    )]
    NoSource,
    #[error("could not read the password from the terminal: {0}")]
    Prompt(String),
}

/// Where the password came from (recorded, never the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    File,
    SystemdCredential,
    Prompt,
}

/// Find the password: `--password-file`, else `$CREDENTIALS_DIRECTORY/vcd-password`, else a
/// prompt on our terminal, else a clear error.
pub fn load(
    password_file: Option<&Path>,
    credentials_dir: Option<PathBuf>,
    user: &str,
) -> Result<(Secret, Source), CredentialError> {
    if let Some(p) = password_file {
        return read_file(p, true).map(|s| (s, Source::File));
    }
    if let Some(dir) = credentials_dir {
        let p = dir.join(CREDENTIAL_NAME);
        if p.exists() {
            // systemd owns the mode of credential files, so it is not checked here.
            return read_file(&p, false).map(|s| (s, Source::SystemdCredential));
        }
    }
    if std::io::stdin().is_terminal() {
        return prompt(user).map(|s| (s, Source::Prompt));
    }
    Err(CredentialError::NoSource)
}

/// Ask on the terminal; an empty answer (Enter pressed by mistake) is asked again, up to three
/// times, before any cell is contacted.
pub fn prompt(user: &str) -> Result<Secret, CredentialError> {
    for _ in 0..PROMPT_TRIES {
        let pw = rpassword::prompt_password(format!("Password for VCD user {user}: "))
            .map_err(|e| CredentialError::Prompt(e.to_string()))?;
        if !pw.is_empty() {
            return Ok(Secret::new(pw));
        }
        eprintln!("cellctl: the password is empty; type it again");
    }
    Err(CredentialError::Prompt(format!(
        "no password after {PROMPT_TRIES} empty answers"
    )))
}

/// How often a terminal is asked for the password (empty or rejected answers).
pub const PROMPT_TRIES: usize = 3;

/// Read a secret from a file (first line), refusing group/world access when `check_mode`.
pub fn read_secret_file(path: &Path, check_mode: bool) -> Result<Secret, CredentialError> {
    read_file(path, check_mode)
}

fn read_file(path: &Path, check_mode: bool) -> Result<Secret, CredentialError> {
    let display = path.display().to_string();
    let unreadable = |source| CredentialError::Unreadable {
        path: display.clone(),
        source,
    };
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever; it is refused below.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(unreadable)?;
    // Type and mode of the handle that is read, not of the path: nothing can be swapped in between.
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(CredentialError::NotRegular {
            path: display,
            kind: kind_of(meta.file_type()),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if check_mode && mode & 0o077 != 0 {
        return Err(CredentialError::UnsafeMode { path: display, mode });
    }
    // One byte past the limit tells "too large" from "exactly the limit".
    let mut raw = Vec::new();
    (&file)
        .take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut raw)
        .map_err(unreadable)?;
    if raw.len() as u64 > MAX_SECRET_FILE {
        raw.zeroize();
        return Err(CredentialError::TooLarge { path: display });
    }
    // Only the first line counts; a trailing newline from `echo` is not part of the password.
    let Ok(pw) = std::str::from_utf8(&raw).map(|text| text.lines().next().unwrap_or("").to_string()) else {
        raw.zeroize();
        return Err(unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        )));
    };
    raw.zeroize();
    if pw.is_empty() {
        return Err(CredentialError::Empty { path: display });
    }
    Ok(Secret::new(pw))
}

fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(mode: u32, content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn refuses_group_readable_file_with_the_fix() {
        let f = file_with(0o640, "pw\n");
        let err = load(Some(f.path()), None, "administrator").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(!msg.contains("pw\n"));
    }

    #[test]
    fn reads_first_line_only() {
        let f = file_with(0o600, "s3cret\nignored\n");
        let (s, src) = load(Some(f.path()), None, "administrator").unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(src, Source::File);
        assert_eq!(format!("{s:?}"), "Secret(********)");
    }

    #[test]
    fn systemd_credential_is_used_when_no_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CREDENTIAL_NAME), "fromcred").unwrap();
        let (s, src) = load(None, Some(dir.path().to_path_buf()), "administrator").unwrap();
        assert_eq!(s.expose(), "fromcred");
        assert_eq!(src, Source::SystemdCredential);
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pw");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read_secret_file(&fifo, true).unwrap_err();
        assert!(matches!(err, CredentialError::NotRegular { .. }), "{err}");
        assert!(err.to_string().contains("FIFO"), "{err}");
    }

    #[test]
    fn directory_and_device_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_secret_file(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("is a directory, not a regular file"), "{err}");
        // Unchecked mode (as for a systemd credential): /dev/zero would otherwise never end.
        let err = read_secret_file(Path::new("/dev/zero"), false).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
    }

    #[test]
    fn at_most_4_kib_is_read() {
        let at_limit = file_with(0o600, &format!("s3cret\n{}", "x".repeat(4096 - 7)));
        assert_eq!(read_secret_file(at_limit.path(), true).unwrap().expose(), "s3cret");
        let over = file_with(0o600, &format!("s3cret\n{}", "x".repeat(4096 - 6)));
        let err = read_secret_file(over.path(), true).unwrap_err();
        assert!(matches!(err, CredentialError::TooLarge { .. }), "{err}");
        assert!(!err.to_string().contains("s3cret"));
    }

    #[test]
    fn redact_replaces_every_occurrence() {
        let s = Secret::new("hunter2".into());
        assert_eq!(s.redact("a hunter2 b hunter2"), "a ******** b ********");
    }
}
