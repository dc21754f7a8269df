//! Every error cellctl can end with, and the one place where errors become exit codes.
//!
//! Exit codes are a public contract (orchestrators branch on them): never renumber, only add.

use std::time::Duration;

use crate::config::ConfigError;
use crate::credentials::CredentialError;
use crate::health::HealthError;
use crate::install::InstallError;
use crate::journal::JournalError;
use crate::package::PackageError;
use crate::service::ServiceError;
use crate::vendor::ToolError;

/// Exit codes, stable. Rendered into `--help` and mirrored in README.md.
pub mod code {
    pub const OK: i32 = 0;
    pub const INTERNAL: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const CONFIG: i32 = 3;
    pub const LOCKED: i32 = 4;
    pub const PRECHECK: i32 = 5;
    pub const CREDENTIALS: i32 = 6;
    pub const VENDOR_TOOL: i32 = 7;
    pub const SERVICE: i32 = 8;
    pub const STATE: i32 = 9;
    pub const DEADLINE: i32 = 10;
    pub const ROLLBACK_INCOMPLETE: i32 = 11;
    pub const CONFLICT: i32 = 12;
    pub const LAST_CELL: i32 = 13;
    pub const PACKAGE: i32 = 20;
    pub const INSTALL: i32 = 21;
    pub const UNHEALTHY: i32 = 22;
    pub const DB_UPGRADE: i32 = 23;
    pub const UNDELIVERED: i32 = 24;
    pub const SIGHUP: i32 = 129;
    pub const SIGINT: i32 = 130;
    pub const SIGTERM: i32 = 143;
}

/// (code, name, meaning): the documented table.
pub const EXIT_CODES: &[(i32, &str, &str)] = &[
    (
        code::OK,
        "ok",
        "done: drained/shut down/resumed as asked (also `forced`)",
    ),
    (
        code::INTERNAL,
        "internal",
        "unexpected internal error (a bug): see the message",
    ),
    (code::USAGE, "usage", "bad command line"),
    (
        code::CONFIG,
        "config",
        "bad or unsafe config file, URL or CELLCTL_* value",
    ),
    (code::LOCKED, "locked", "another cellctl run holds this cell's lock"),
    (code::PRECHECK, "precheck", "preflight failed; nothing was changed"),
    (
        code::CREDENTIALS,
        "credentials",
        "password missing, unsafe or unusable file, or rejected",
    ),
    (
        code::VENDOR_TOOL,
        "vendor-tool",
        "cell-management-tool failed, hung or printed no status",
    ),
    (
        code::SERVICE,
        "service",
        "the service manager failed or the service did not stop",
    ),
    (
        code::STATE,
        "state",
        "state directory unsafe or unwritable, or journal corrupt",
    ),
    (
        code::DEADLINE,
        "deadline",
        "deadline reached; this run's changes were undone",
    ),
    (
        code::ROLLBACK_INCOMPLETE,
        "rollback-incomplete",
        "could not undo this run's changes; journal kept, run `cellctl resume`",
    ),
    (
        code::CONFLICT,
        "conflict",
        "a recorded run or the cell's state does not allow this command now",
    ),
    (
        code::LAST_CELL,
        "last-cell",
        "redundancy guard: too few other active cells, or the API could not tell (fails closed)",
    ),
    (
        code::PACKAGE,
        "package",
        "package refused before anything changed: file, mode, checksum, type or version",
    ),
    (
        code::INSTALL,
        "install",
        "the installer failed, hung, or the installed version did not change",
    ),
    (
        code::UNHEALTHY,
        "unhealthy",
        "the cell did not answer healthy by the deadline after start",
    ),
    (code::DB_UPGRADE, "db-upgrade", "the database upgrade tool failed"),
    (
        code::UNDELIVERED,
        "undelivered",
        "report flush: some reports are still queued or were rejected by the receiver",
    ),
    (
        code::SIGHUP,
        "hangup",
        "SIGHUP (terminal gone); changes undone unless shutdown had begun",
    ),
    (
        code::SIGINT,
        "interrupted",
        "SIGINT; changes undone unless shutdown had begun",
    ),
    (
        code::SIGTERM,
        "terminated",
        "SIGTERM; changes undone unless shutdown had begun",
    ),
];

/// Render the exit-code table for `--help` and the man page.
pub fn exit_code_help() -> String {
    let mut s = String::from("Exit codes:\n");
    for (c, name, what) in EXIT_CODES {
        s.push_str(&format!("  {c:>3}  {name:<20} {what}\n"));
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("preflight failed, nothing changed: {0}")]
    Precheck(String),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("deadline of {} reached with {jobs} job(s) still running; this run's changes were undone", humantime::format_duration(*.deadline))]
    Deadline { deadline: Duration, jobs: u64 },
    #[error("could not undo this run's changes ({0}); the journal is kept: fix the cause, then run `cellctl resume`")]
    RollbackIncomplete(String),
    #[error("{0}")]
    Conflict(String),
    #[error("interrupted by {name}; {state}")]
    Interrupted {
        signal: i32,
        name: &'static str,
        /// What is true of the cell now, and what to do about it.
        state: String,
    },
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("database upgrade: {0}")]
    DbUpgrade(InstallError),
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error("redundancy guard: {0}")]
    LastCell(String),
    #[error("{0}")]
    Undelivered(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The one mapping from errors to exit codes.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => code::USAGE,
            Error::Config(_) => code::CONFIG,
            Error::Precheck(_) => code::PRECHECK,
            Error::Credentials(_) => code::CREDENTIALS,
            Error::Tool(ToolError::Rejected { .. }) => code::CREDENTIALS,
            Error::Tool(ToolError::NoTerminal { .. }) => code::CREDENTIALS,
            Error::Tool(_) => code::VENDOR_TOOL,
            Error::Service(_) => code::SERVICE,
            Error::Journal(JournalError::Locked { .. }) => code::LOCKED,
            Error::Journal(_) => code::STATE,
            Error::Deadline { .. } => code::DEADLINE,
            Error::RollbackIncomplete(_) => code::ROLLBACK_INCOMPLETE,
            Error::Conflict(_) => code::CONFLICT,
            Error::Interrupted { signal, .. } => 128 + signal,
            Error::Package(_) => code::PACKAGE,
            Error::Install(_) => code::INSTALL,
            Error::DbUpgrade(_) => code::DB_UPGRADE,
            Error::Health(HealthError::Setup(_)) => code::CONFIG,
            Error::Health(_) => code::UNHEALTHY,
            Error::LastCell(_) => code::LAST_CELL,
            Error::Undelivered(_) => code::UNDELIVERED,
            Error::Internal(_) => code::INTERNAL,
        }
    }

    /// A short stable name for the error class, used in JSON output.
    pub fn kind(&self) -> &'static str {
        let c = self.exit_code();
        EXIT_CODES
            .iter()
            .find(|(k, _, _)| *k == c)
            .map(|(_, n, _)| *n)
            .unwrap_or("internal")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let mut codes: Vec<i32> = EXIT_CODES.iter().map(|(c, _, _)| *c).collect();
        codes.sort();
        let n = codes.len();
        codes.dedup();
        assert_eq!(n, codes.len(), "duplicate exit code in the table");
    }

    #[test]
    fn refused_state_dir_and_planted_symlink_are_state_errors() {
        let dir = Error::from(JournalError::UnsafeDir {
            path: "/s".into(),
            problem: "is group- or world-writable (mode 770)".into(),
            fix: "chmod 700 /s".into(),
        });
        let link = Error::from(JournalError::Symlink { path: "/s/lock".into() });
        for e in [dir, link] {
            assert_eq!((e.exit_code(), e.kind()), (code::STATE, "state"), "{e}");
        }
    }

    #[test]
    fn signal_exit_codes_follow_shell_convention() {
        let e = Error::Interrupted {
            signal: 15,
            name: "SIGTERM",
            state: "this run's changes were undone".into(),
        };
        assert_eq!(e.exit_code(), code::SIGTERM);
        assert_eq!(e.kind(), "terminated");
    }
}
