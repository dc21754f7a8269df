//! Start the cell and wait until it answers healthy: used by `start` and by `upgrade`'s last
//! stage. Each step is recorded before it is taken.

use std::time::Duration;

use tokio::time::Instant;

use crate::adapters::health::{HealthError, NotUp, UP_BODY};
use crate::adapters::service::Service;
use crate::adapters::vendor::{CellTool, ToolError};
use crate::config::Settings;
use crate::error::Error;
use crate::model::step::{Step, StepStatus};

use super::run::Recorder;
use super::signals::{self, SignalWatch};

/// Take one recorded step: begin, act, end with the result.
async fn step<R, Fut>(rec: &mut R, step: Step, done_detail: Option<String>, act: Fut) -> Result<(), Error>
where
    R: Recorder,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let idx = rec.begin(step)?;
    match act.await {
        Ok(()) => rec.end(idx, StepStatus::Done, done_detail),
        Err(e) => {
            let _ = rec.end(idx, StepStatus::Failed, Some(e.to_string()));
            Err(e)
        }
    }
}

/// Start the service, wait for health, and turn the maintenance message off if the started
/// cell shows it.
pub(crate) async fn start_and_wait<R: Recorder>(
    rec: &mut R,
    tool: &CellTool,
    service: &Service,
    s: &Settings,
    deadline: Duration,
    sig: SignalWatch,
) -> Result<(), Error> {
    tracing::info!("starting service {}", service.name);
    step(rec, Step::StartService, None, async { Ok(service.start().await?) }).await?;
    let idx = rec.begin(Step::Health)?;
    let r = until_healthy(rec, tool, s, deadline, sig).await;
    match &r {
        Ok(()) => {
            tracing::info!("healthy: {} answers \"{UP_BODY}\"", s.health.url);
            rec.end(idx, StepStatus::Done, Some(s.health.url.clone()))?;
        }
        Err(e) => {
            let _ = rec.end(idx, StepStatus::Failed, Some(e.to_string()));
        }
    }
    r
}

/// A signal before the started cell was seen healthy; `rerun` finishes the run.
fn interrupted(sg: i32, rerun: &str) -> Error {
    Error::Interrupted {
        signal: sg,
        name: signals::name(sg),
        state: format!("the cell was started but not yet seen healthy: rerun {rerun} to finish"),
    }
}

async fn until_healthy<R: Recorder>(
    rec: &mut R,
    tool: &CellTool,
    s: &Settings,
    deadline: Duration,
    mut sig: SignalWatch,
) -> Result<(), Error> {
    let client = s.health.client()?;
    let until = Instant::now() + deadline;
    let mut maintenance_checked = false;
    loop {
        // A signal ends the wait, even if the cell would have answered healthy just after.
        if let Some(sg) = sig.pending() {
            return Err(interrupted(sg, &rec.finish_with()));
        }
        let last: NotUp = match s.health.probe(&client).await {
            // A signal during the probe still ends the run as interrupted, as documented.
            Ok(()) => {
                return sig
                    .pending()
                    .map_or(Ok(()), |sg| Err(interrupted(sg, &rec.finish_with())));
            }
            Err(e) => e,
        };
        // A cell that came up showing the maintenance message answers 503 for ever: once it
        // answers the tool, check and turn the message off.
        if !maintenance_checked {
            match tool.status().await {
                Err(e @ ToolError::Rejected { .. }) => return Err(e.into()),
                Ok(st) => {
                    maintenance_checked = true;
                    if st.in_maintenance == Some(true) {
                        tracing::info!("maintenance message is on after start: turning it off");
                        step(rec, Step::MaintenanceOff, None, async {
                            Ok(tool.maintenance_off().await?)
                        })
                        .await?;
                    }
                }
                Err(_) => {}
            }
        }
        let now = Instant::now();
        if now >= until {
            return Err(HealthError::NotHealthy {
                url: s.health.url.clone(),
                after: deadline,
                last: last.0,
            }
            .into());
        }
        tokio::select! {
            biased;
            sg = sig.received() => return Err(interrupted(sg, &rec.finish_with())),
            () = tokio::time::sleep(s.health.interval.min(until - now)) => {}
        }
    }
}
