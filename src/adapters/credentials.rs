//! The administrator password: where it comes from, and a type that never prints it.

use std::fmt;
use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroize;

/// The systemd credential name read from `$CREDENTIALS_DIRECTORY` (`LoadCredential=vcd-password:...`).
pub const CREDENTIAL_NAME: &str = "vcd-password";

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
        let pw = rpassword::prompt_password(format!("Password for VCD user {user}: "))
            .map_err(|e| CredentialError::Prompt(e.to_string()))?;
        return Ok((Secret::new(pw), Source::Prompt));
    }
    Err(CredentialError::NoSource)
}

/// Read a secret from a file (first line), refusing group/world access when `check_mode`.
pub fn read_secret_file(path: &Path, check_mode: bool) -> Result<Secret, CredentialError> {
    read_file(path, check_mode)
}

fn read_file(path: &Path, check_mode: bool) -> Result<Secret, CredentialError> {
    let display = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| CredentialError::Unreadable {
        path: display.clone(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if check_mode && mode & 0o077 != 0 {
        return Err(CredentialError::UnsafeMode { path: display, mode });
    }
    let mut raw = std::fs::read_to_string(path).map_err(|source| CredentialError::Unreadable {
        path: display.clone(),
        source,
    })?;
    // Only the first line counts; a trailing newline from `echo` is not part of the password.
    let pw = raw.lines().next().unwrap_or("").to_string();
    raw.zeroize();
    if pw.is_empty() {
        return Err(CredentialError::Empty { path: display });
    }
    Ok(Secret::new(pw))
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
    fn redact_replaces_every_occurrence() {
        let s = Secret::new("hunter2".into());
        assert_eq!(s.redact("a hunter2 b hunter2"), "a ******** b ********");
    }
}
