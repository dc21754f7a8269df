//! The drain: maintenance message on, quiesce, wait (see `wait.rs`), shut down and keep the
//! service stopped; or, on a deadline, signal or failure before shutdown, undo exactly what
//! this run recorded. Shared by `drain`, `upgrade` (its first stage) and `resume` (the undo).

use std::time::Duration;

use crate::adapters::vendor::ToolError;
use crate::config::DrainSettings;
use crate::error::Error;
use crate::model::outcome::Outcome;
use crate::model::phase::{Event, Phase};
use crate::model::step::{Step, StepStatus};

use super::context::Ctx;
use super::run::{Recorder, Run};
use super::signals;
use super::wait::{self, Waiter};

/// How long the service may take to report stopped after `systemctl stop`.
const STOP_SETTLE: Duration = Duration::from_secs(60);

/// Enter the drain's state machine: a new run passes its preflight, a recorded one is
/// continued (and what it holds re-applied). This is the first write of a new run's journal,
/// before any change is made.
pub(crate) async fn enter(ctx: &Ctx<'_>, run: &mut Run, maintenance: bool) -> Result<(), Error> {
    if run.rec.phase == Phase::Start {
        run.drain_event(Event::PreflightPassed)?;
    } else if !run.rec.phase.is_done() || run.rec.phase == parked() {
        run.drain_event(Event::Continued)?;
        reassert(ctx, run).await?;
    }
    if run.rec.in_maintenance_unknown() && maintenance {
        tracing::warn!(
            "this cell does not report its maintenance state; the message will be left on if the run is undone"
        );
    }
    Ok(())
}

/// A drain stopped by `--no-shutdown`: drained, still serving nothing, not shut down.
pub(crate) fn parked() -> Phase {
    Phase::Done {
        outcome: Outcome::Drained,
    }
}

/// Drive the recorded run from its phase to an end (or to a failure that keeps its phase).
pub(crate) async fn drive(ctx: &Ctx<'_>, run: &mut Run, d: &DrainSettings) {
    let mut waiter = Waiter::default();
    loop {
        // A signal that arrived during a step (not while waiting) is acted on here.
        if let Some(s) = ctx.sig.pending()
            && run.rec.phase.before_shutdown()
        {
            signals::log_undo(s);
            if let Err(e) = run.drain_event(Event::Interrupt) {
                run.on_error(e);
            }
        }
        let phase = run.rec.phase;
        let r = match phase {
            Phase::Start | Phase::Preflighted => prepare(ctx, run, d).await,
            Phase::Prepared => quiesce(ctx, run).await,
            Phase::Waiting { .. } | Phase::Canceling { .. } => wait::wait(ctx, run, d, &mut waiter).await,
            Phase::Drained if d.shutdown => run.drain_event(Event::BeginShutdown),
            Phase::Drained => run.drain_event(Event::StopHere),
            Phase::ShuttingDown { .. } => shutdown(ctx, run).await,
            Phase::StoppingService { .. } => stop_service(ctx, run).await,
            Phase::RollingBack { .. } => rollback(ctx, run).await,
            Phase::Done { .. } => break,
        };
        if let Err(e) = r {
            if matches!(e, Error::RollbackIncomplete(_)) {
                run.rollback_error = Some(e);
                break;
            }
            run.on_error(e);
            if !phase.before_shutdown() {
                // Shutdown or rollback failed: keep the phase for the next run.
                break;
            }
        }
        // A signal during a shutdown step (the last one included) does not stop the step, but
        // the run ends as interrupted, and nothing further (an upgrade's install) is begun.
        if (phase.shutdown_begun() || run.rec.phase.shutdown_begun())
            && let Some(s) = ctx.sig.pending()
            && run.late_signal.is_none()
        {
            tracing::warn!(
                "{}: the shutdown had begun; it was finished, nothing is undone",
                signals::name(s)
            );
            run.late_signal = Some(s);
        }
    }
}

/// Take a step that changes the cell (before shutdown), unless a previous attempt already
/// finished it. A signal abandons the call (its process group is killed): the step stays
/// recorded as possibly made, so the rollback that follows undoes it.
async fn act<Fut>(ctx: &Ctx<'_>, run: &mut Run, step: Step, what: &str, f: Fut) -> Result<(), Error>
where
    Fut: std::future::Future<Output = Result<(), ToolError>>,
{
    if run.step_done(step) {
        return Ok(());
    }
    let idx = run.begin(step)?;
    tracing::info!("{what}");
    let mut sig = ctx.sig.clone();
    let r = tokio::select! {
        biased;
        s = sig.received() => {
            signals::log_undo(s);
            // Left `started`: the abandoned call may have taken effect, so the undo covers it.
            run.rec.steps[idx].detail = Some(format!("abandoned: {} received during the call", signals::name(s)));
            return run.drain_event(Event::Interrupt);
        }
        r = f => r,
    };
    match r {
        Ok(()) => run.end(idx, StepStatus::Done, None),
        Err(e) => Err(run.fail_step(idx, e.into())),
    }
}

fn before_active(run: &Run) -> (bool, Option<bool>) {
    let b = run.rec.before.as_ref().expect("a recorded run has its before-state");
    (b.is_active, b.in_maintenance)
}

async fn prepare(ctx: &Ctx<'_>, run: &mut Run, d: &DrainSettings) -> Result<(), Error> {
    if !run.step_done(Step::MaintenanceOn) {
        if !d.maintenance {
            run.skip(Step::MaintenanceOn, "--no-maintenance: a load balancer drains the cell")?;
        } else if before_active(run).1 == Some(true) {
            run.skip(
                Step::MaintenanceOn,
                "maintenance message was already on before this run; left as found",
            )?;
        } else {
            let what = "maintenance message on (vmware-vcd-cell maintenance)";
            act(ctx, run, Step::MaintenanceOn, what, ctx.tool.maintenance_on()).await?;
        }
    }
    if matches!(run.rec.phase, Phase::RollingBack { .. }) {
        // A signal abandoned the step: the run is rolling back.
        return Ok(());
    }
    run.drain_event(Event::Prepared)
}

async fn quiesce(ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
    if !run.step_done(Step::Quiesce) {
        if before_active(run).0 {
            act(
                ctx,
                run,
                Step::Quiesce,
                "quiescing: cell --quiesce true",
                ctx.tool.quiesce(true),
            )
            .await?;
        } else {
            run.skip(
                Step::Quiesce,
                "cell was already inactive (quiesced) before this run; left as found",
            )?;
        }
    }
    if matches!(run.rec.phase, Phase::RollingBack { .. }) {
        return Ok(());
    }
    run.drain_event(Event::Quiesced)
}

async fn shutdown(ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
    if !run.step_done(Step::Shutdown) {
        let idx = run.begin(Step::Shutdown)?;
        tracing::info!("shutting the cell down: cell --shutdown");
        let call = finish_or_abandon(ctx, "the shutdown call", ctx.tool.shutdown()).await;
        let Some(r) = call else {
            return Err(abandoned(ctx, run, idx));
        };
        match r {
            Ok(()) => run.end(idx, StepStatus::Done, None)?,
            // Already down (a previous attempt got through before dying): that is the goal.
            Err(ToolError::CellDown { .. }) => run.end(idx, StepStatus::Done, Some("cell was already down".into()))?,
            Err(e) => return Err(run.fail_step(idx, e.into())),
        }
    }
    run.drain_event(Event::CellShutDown)
}

async fn stop_service(ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
    let idx = run.begin(Step::StopService)?;
    tracing::info!("stopping service {} so the cell stays down", ctx.service.name);
    let call = finish_or_abandon(ctx, "the service stop", ctx.service.stop_and_confirm(STOP_SETTLE)).await;
    let Some(r) = call else {
        return Err(abandoned(ctx, run, idx));
    };
    match r {
        Ok(()) => run.end(idx, StepStatus::Done, None)?,
        Err(e) => return Err(run.fail_step(idx, e.into())),
    }
    run.drain_event(Event::ServiceStopped)
}

/// A shutdown step under way when a signal comes is finished, not abandoned half-way (the cell
/// is going down), but within the budget after a signal (`[drain] rollback_budget`): a call
/// that hangs does not hold a stop request for its whole tool timeout. None: abandoned.
async fn finish_or_abandon<T>(ctx: &Ctx<'_>, what: &str, call: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::pin!(call);
    let mut sig = ctx.sig.clone();
    tokio::select! {
        biased;
        r = &mut call => return Some(r),
        s = sig.received() => {
            tracing::warn!(
                "{}: the shutdown had begun; finishing {what} (at most {})",
                signals::name(s),
                humantime::format_duration(ctx.s.rollback_budget)
            );
        }
    }
    tokio::time::timeout(ctx.s.rollback_budget, call).await.ok()
}

/// The step stays recorded as started (it may have taken effect): a rerun finishes it.
fn abandoned(ctx: &Ctx<'_>, run: &mut Run, idx: usize) -> Error {
    let s = ctx.sig.pending().unwrap_or(signal_hook::consts::SIGTERM);
    run.rec.steps[idx].detail = Some(format!(
        "abandoned: {} received and the step did not end within the budget",
        signals::name(s)
    ));
    let _ = run.save();
    Error::Interrupted {
        signal: s,
        name: signals::name(s),
        state: format!(
            "the shutdown had begun and its step did not end within [drain] rollback_budget: rerun `cellctl {}` to finish it",
            run.rec.command
        ),
    }
}

/// Undo what this run changed, newest first. Journal write failures do not stop an undo. After
/// a signal the whole undo has a budget (`[drain] rollback_budget`): a stop request ends the run
/// in bounded time, and what could not be undone is recorded with the command that finishes it.
pub(crate) async fn rollback(ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
    let budget = ctx
        .sig
        .pending()
        .map(|_| tokio::time::Instant::now() + ctx.s.rollback_budget);
    let mut errors = vec![];
    let undos: [(Step, Step, &str); 2] = [
        (Step::Quiesce, Step::UndoQuiesce, "undo: cell --quiesce false"),
        (
            Step::MaintenanceOn,
            Step::UndoMaintenance,
            "undo: maintenance message off (cell --maintenance false)",
        ),
    ];
    for (made, undo, what) in undos {
        if !run.rec.holds_change(made, undo) {
            continue;
        }
        let idx = run.begin(undo).map_err(|e| tracing::error!("{e}; undoing anyway")).ok();
        tracing::info!("{what}");
        let call = async {
            match undo {
                Step::UndoQuiesce => ctx.tool.quiesce(false).await.map_err(|e| e.to_string()),
                _ => ctx.tool.maintenance_off().await.map_err(|e| e.to_string()),
            }
        };
        let r = match budget {
            Some(until) => tokio::time::timeout_at(until, call).await.unwrap_or_else(|_| {
                Err(format!(
                    "the undo's budget of {} after the signal ran out ([drain] rollback_budget); `cellctl resume` finishes it",
                    humantime::format_duration(ctx.s.rollback_budget)
                ))
            }),
            None => call.await,
        };
        let (status, detail) = match r {
            Ok(()) => (StepStatus::Done, None),
            Err(e) => {
                errors.push(format!("{what}: {e}"));
                (StepStatus::Failed, Some(e))
            }
        };
        if let Some(i) = idx
            && let Err(e) = run.end(i, status, detail)
        {
            tracing::error!("{e}");
        }
    }
    if !errors.is_empty() {
        return Err(Error::RollbackIncomplete(errors.join("; ")));
    }
    run.drain_event(Event::RolledBack)
}

/// A continued run re-applies the changes its record says it made, before trusting them: if
/// the state directory failed during a rollback, the record may say "quiesced" of a cell
/// that was quiesced and then released. Both changes are idempotent.
async fn reassert(ctx: &Ctx<'_>, run: &Run) -> Result<(), Error> {
    if !run.rec.phase.before_shutdown() && run.rec.phase != parked() {
        return Ok(());
    }
    let done = |step| matches!(run.rec.last(step).map(|s| s.status), Some(StepStatus::Done));
    if done(Step::MaintenanceOn) && run.rec.holds_change(Step::MaintenanceOn, Step::UndoMaintenance) {
        tracing::info!("continuing: re-applying the recorded maintenance message");
        ctx.tool.maintenance_on().await?;
    }
    if done(Step::Quiesce) && run.rec.holds_change(Step::Quiesce, Step::UndoQuiesce) {
        tracing::info!("continuing: re-applying the recorded quiesce");
        ctx.tool.quiesce(true).await?;
    }
    Ok(())
}
