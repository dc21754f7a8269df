//! `cellctl start`: start the service and wait until healthy. Idempotent, so not journaled.

use std::time::Duration;

use crate::config::Settings;
use crate::engine::context::{cell_tool, service_of};
use crate::engine::signals::SignalWatch;
use crate::engine::{health, slot};
use crate::error::Error;
use crate::model::outcome::{CellLeft, CommandName, Outcome};
use crate::model::time::Timestamp;
use crate::output::report::Report;

pub(crate) async fn start(s: &Settings, deadline: Duration, sig: SignalWatch) -> (Report, Result<(), Error>) {
    let mut report = Report::new(CommandName::Start);
    report.started_at = Some(Timestamp::now());
    report.slot = slot::retry_pending(s).await;
    let r = async {
        let tool = cell_tool(s).await?;
        health::start_and_wait(&mut report.steps, &tool, &service_of(s), s, deadline, sig).await
    }
    .await;
    report.ended_at = Some(Timestamp::now());
    match &r {
        Ok(()) => {
            report.outcome = Outcome::Started;
            report.cell_left = Some(CellLeft::Running);
            // Healthy: this cell's slot, if it holds one, goes.
            slot::release_after_start(s, &mut report).await;
        }
        Err(e) => report.fail(e),
    }
    (report, r)
}
