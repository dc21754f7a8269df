//! `cellctl resume`: undo what a recorded (interrupted or `--no-shutdown`) run changed on a
//! running cell.

use crate::engine::context::Ctx;
use crate::engine::lifecycle::Procedure;
use crate::engine::run::Run;
use crate::engine::{drain, health, preflight};
use crate::error::Error;
use crate::model::machine::Transition;
use crate::model::maintain::{MaintEvent, MaintStage};
use crate::model::outcome::{CellLeft, CommandName, Outcome};
use crate::model::phase::Event;
use crate::model::step::ServiceState;
use crate::output::report::Report;
use crate::store::record::RunRecord;

pub(crate) struct Resume;

impl Procedure for Resume {
    fn command(&self) -> CommandName {
        CommandName::Resume
    }

    /// A refused `resume` says nothing of a cell another run changed.
    const LEFT_ON_FAILURE: Option<CellLeft> = None;

    /// Any command's run may be undone while it is in its drain.
    fn takes_over(&self, _rec: &RunRecord) -> bool {
        true
    }

    async fn start(&self, _ctx: &Ctx<'_>, report: &mut Report) -> Result<Option<RunRecord>, Error> {
        tracing::info!("no recorded run holds changes: nothing to undo");
        report.outcome = Outcome::NothingToDo;
        Ok(None)
    }

    async fn continue_record(&self, ctx: &Ctx<'_>, rec: &mut RunRecord) -> Result<(), Error> {
        if let Some(m) = maint_past_drain(rec) {
            if !matches!(m, MaintStage::Command | MaintStage::Start) {
                return Err(Error::Conflict(format!("run {}: {}", rec.run_id, rec.advice())));
            }
            tracing::info!(run_id = %rec.run_id, stage = %m, "bringing the cell back without finishing the maintenance");
            return Ok(());
        }
        if let Some(up) = rec.upgrade.as_ref().filter(|_| rec.past_drain()) {
            return Err(Error::Conflict(format!(
                "run {} is past its drain (stage {}): the cell is being upgraded; `cellctl {}` continues it",
                rec.run_id, up.stage, rec.command
            )));
        }
        if let Some(up) = rec.upgrade.as_ref().filter(|u| u.stage.before_drain()) {
            return Err(Error::Conflict(format!(
                "run {} is in stage {}, before its drain: nothing of the cell was changed, so there is nothing to undo; `cellctl {}` continues it",
                rec.run_id, up.stage, rec.command
            )));
        }
        if rec.phase.shutdown_begun() {
            return Err(Error::Conflict(format!("run {}: {}", rec.run_id, rec.advice())));
        }
        let svc = preflight::service_state(&ctx.service).await?;
        if svc != ServiceState::Running {
            return Err(Error::Conflict(format!(
                "service {} is {svc}: `resume` undoes quiesce and maintenance on a running cell; start it first (systemctl start {}); for the recorded run {}: {}",
                ctx.s.service,
                ctx.s.service,
                rec.run_id,
                rec.advice()
            )));
        }
        tracing::info!(run_id = %rec.run_id, phase = %rec.phase, "undoing the recorded run");
        Ok(())
    }

    /// `resume` releases the slot once the undo is done; it never waits for one.
    fn takes_slot(&self) -> bool {
        false
    }

    async fn enter(&self, _ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
        if maint_past_drain(&run.rec).is_some() {
            return run.save();
        }
        run.drain_event(Event::UndoRequested)
    }

    async fn drive(&self, ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
        if maint_past_drain(&run.rec).is_some() {
            // A `maintain` run holds a drained, shut-down cell: undoing it is starting it.
            let deadline = ctx.s.health_deadline;
            health::start_and_wait(run, &ctx.tool, &ctx.service, ctx.s, deadline, ctx.sig.clone()).await?;
            return run.apply(Transition::Maint(MaintEvent::Undone));
        }
        if let Err(e) = drain::rollback(ctx, run).await {
            run.rollback_error = Some(e);
        }
        Ok(())
    }
}

/// The stage of a `maintain` run past its drain (its cell is shut down), if this is one.
fn maint_past_drain(rec: &RunRecord) -> Option<MaintStage> {
    rec.maintain.as_ref().filter(|_| rec.past_drain()).map(|m| m.stage)
}
