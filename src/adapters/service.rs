//! The cell's service through the service manager (`systemctl` by default, settable).

use std::path::PathBuf;
use std::time::Duration;

use crate::adapters::exec::{self, ExecError};

pub use crate::model::step::ServiceState;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("service manager `{cmd}` did not answer: {detail}; check --systemctl and --service")]
    NoAnswer { cmd: String, detail: String },
    #[error("`{cmd}` failed: {detail}")]
    Failed { cmd: String, detail: String },
    #[error("service {service} is still {state} after stop; it must stay stopped before the upgrade")]
    StillRunning { service: String, state: String },
}

#[derive(Debug, Clone)]
pub struct Service {
    pub systemctl: PathBuf,
    pub name: String,
    pub timeout: Duration,
}

/// Map `systemctl is-active` output (exit code is not enough: 3 is inactive, 4 is unknown unit).
pub fn parse_is_active(stdout: &str) -> Option<ServiceState> {
    match stdout.lines().next().map(str::trim) {
        Some("active" | "reloading") => Some(ServiceState::Running),
        Some("inactive" | "failed" | "dead") => Some(ServiceState::Stopped),
        Some("activating" | "deactivating" | "refreshing") => Some(ServiceState::Changing),
        _ => None,
    }
}

impl Service {
    fn cmd(&self, verb: &str) -> String {
        format!("{} {verb} {}", self.systemctl.display(), self.name)
    }

    async fn call(&self, verb: &str) -> Result<exec::Output, ServiceError> {
        exec::run(&self.systemctl, &[verb, self.name.as_str()], self.timeout)
            .await
            .map_err(|e| {
                let detail = match &e {
                    ExecError::Spawn { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                ServiceError::NoAnswer {
                    cmd: self.cmd(verb),
                    detail,
                }
            })
    }

    pub async fn state(&self) -> Result<ServiceState, ServiceError> {
        let o = self.call("is-active").await?;
        parse_is_active(&o.stdout).ok_or_else(|| ServiceError::NoAnswer {
            cmd: self.cmd("is-active"),
            detail: format!(
                "unexpected answer {:?} ({}) {}",
                o.stdout.trim(),
                o.describe_exit(),
                o.stderr.trim()
            ),
        })
    }

    /// Whether the service manager knows the unit (`systemctl is-active` says "inactive" of a
    /// unit that does not exist, which reads like a stopped cell). A manager that cannot say is
    /// taken to know it: the state query then speaks for itself.
    pub async fn installed(&self) -> bool {
        let args = ["show", "--property=LoadState", "--value", self.name.as_str()];
        match exec::run(&self.systemctl, &args, self.timeout).await {
            Ok(o) if o.success() => o.stdout.trim() != "not-found",
            _ => true,
        }
    }

    async fn verb(&self, verb: &str) -> Result<(), ServiceError> {
        let o = self.call(verb).await?;
        if o.success() {
            Ok(())
        } else {
            Err(ServiceError::Failed {
                cmd: self.cmd(verb),
                detail: format!("{}: {}", o.describe_exit(), o.stderr.trim()),
            })
        }
    }

    /// Stop the service and confirm it stays stopped (a watchdog could bring the cell back).
    pub async fn stop_and_confirm(&self, settle: Duration) -> Result<(), ServiceError> {
        self.verb("stop").await?;
        let until = tokio::time::Instant::now() + settle;
        loop {
            let st = self.state().await?;
            match st {
                ServiceState::Stopped => return Ok(()),
                _ if tokio::time::Instant::now() >= until => {
                    return Err(ServiceError::StillRunning {
                        service: self.name.clone(),
                        state: format!("{st:?}").to_lowercase(),
                    });
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    pub async fn start(&self) -> Result<(), ServiceError> {
        self.verb("start").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_active_answers() {
        assert_eq!(parse_is_active("active\n"), Some(ServiceState::Running));
        assert_eq!(parse_is_active("inactive\n"), Some(ServiceState::Stopped));
        assert_eq!(parse_is_active("failed\n"), Some(ServiceState::Stopped));
        assert_eq!(parse_is_active("deactivating\n"), Some(ServiceState::Changing));
        assert_eq!(parse_is_active(""), None);
        assert_eq!(parse_is_active("Unit x.service could not be found."), None);
    }
}
