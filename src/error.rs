//! Every error cellctl can end with, and the one place where errors become exit codes.
//!
//! Exit codes are a public contract (orchestrators branch on them): never renumber, only add.

use std::time::Duration;

use crate::adapters::api::GuardRefusal;
use crate::adapters::appliance::ApplianceError;
use crate::adapters::credentials::CredentialError;
use crate::adapters::health::HealthError;
use crate::adapters::install::InstallError;
use crate::adapters::lock::LockError;
use crate::adapters::package::PackageError;
use crate::adapters::service::ServiceError;
use crate::adapters::vendor::ToolError;
use crate::config::ConfigError;
use crate::store::journal::JournalError;

pub use crate::model::exit::{EXIT_CODES, code};

/// Why a preflight refused, before anything was changed.
#[derive(Debug, thiserror::Error)]
pub enum Precheck {
    #[error("{path} is not an executable file; check --vcd-home")]
    NotExecutable { path: String },
    #[error("{path} is missing ({source}); check --vcd-home")]
    Missing {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("service {service} is starting or stopping; wait until it settles")]
    Changing { service: String },
    #[error("{path} not found: installers run in a transient systemd unit; check --systemd-run")]
    NoSystemdRun { path: String },
    #[error("{program} not found: it installs the {kind} package; install it, or set [install] command")]
    NoInstaller { program: String, kind: &'static str },
    #[error(
        "cannot tell the free space of the unpack dir {dir}: {detail}; check --unpack-dir (CELLCTL_UNPACK_DIR, [install] unpack_dir)"
    )]
    UnpackDir { dir: String, detail: String },
    #[error(
        "{dir} has {free} free, the install needs {needed} there: free some space, or point --unpack-dir elsewhere (--min-free sets the need)"
    )]
    NoSpace { dir: String, free: String, needed: String },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("preflight failed, nothing changed: {0}")]
    Precheck(#[from] Precheck),
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
    #[error("appliance: {0}")]
    Appliance(#[from] ApplianceError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("database upgrade: {0}")]
    DbUpgrade(InstallError),
    #[error(
        "maintenance command: {0}; the cell is left drained and shut down: fix the cause, then `cellctl maintain --continue` runs the recorded COMMAND again and goes on, or `cellctl resume` brings the cell back without it"
    )]
    Maintenance(InstallError),
    #[error("{0}")]
    Reboot(String),
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error("redundancy guard: {0}")]
    LastCell(#[from] GuardRefusal),
    #[error("no VCD cell here: {0}")]
    NotACell(String),
    #[error("{0}")]
    Undelivered(String),
    /// No fleet-wide slot: the lock service is unreachable or the slot stayed full (nothing
    /// was changed); the message names the holders.
    #[error("no slot, nothing changed: {0}")]
    Slot(LockError),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{0}")]
    PreflightFailed(String),
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
            Error::Appliance(ApplianceError::Unpack { .. } | ApplianceError::NotOffered(_)) => code::PACKAGE,
            Error::Appliance(ApplianceError::Vamicli { .. } | ApplianceError::Version(_)) => code::INSTALL,
            Error::Appliance(ApplianceError::Setup(_)) => code::PRECHECK,
            // A unit whose result could not be written: the state dir's fault, not the program's.
            Error::Install(e) | Error::DbUpgrade(e) | Error::Maintenance(e) if e.is_state_dir() => code::STATE,
            Error::Maintenance(_) => code::MAINTENANCE_COMMAND,
            Error::Reboot(_) => code::SERVICE,
            Error::Install(_) => code::INSTALL,
            Error::DbUpgrade(_) => code::DB_UPGRADE,
            Error::Health(HealthError::Setup(_)) => code::CONFIG,
            Error::Health(_) => code::UNHEALTHY,
            Error::LastCell(_) => code::LAST_CELL,
            Error::NotACell(_) => code::NOT_A_CELL,
            Error::Undelivered(_) => code::UNDELIVERED,
            Error::Slot(LockError::Setup(_)) => code::CONFIG,
            Error::Slot(_) => code::SLOT,
            Error::Internal(_) => code::INTERNAL,
            Error::PreflightFailed(_) => code::PREFLIGHT_FAILED,
        }
    }

    /// What went wrong in its own words, without the class's prefix (a preflight check's
    /// detail: the check's name says the rest).
    pub fn detail(&self) -> String {
        match self {
            Error::Precheck(p) => p.to_string(),
            other => other.to_string(),
        }
    }

    /// A short stable name for the error class, used in JSON output.
    pub fn kind(&self) -> &'static str {
        crate::model::exit::name_of(self.exit_code())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

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
