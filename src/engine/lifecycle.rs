//! The one lifecycle of every command that may change the cell:
//!
//! 1. open the state directory and take the one-run lock;
//! 2. continue the recorded run (if the command may) or start a new one after its preflight;
//! 3. enter the run (its first journal write), then drive its steps;
//! 4. conclude: outcome and `cell_left` from where the state machine stands, the record
//!    archived (finished) or kept (to continue or undo), the report filled.
//!
//! A command is a [`Procedure`]: it says how to start, how to continue, and its steps.

use crate::error::Error;
use crate::model::outcome::{CellLeft, CommandName, Outcome};
use crate::model::phase::Phase;
use crate::model::stage::Stage;
use crate::model::step::Step;
use crate::model::time::Timestamp;
use crate::output::report::Report;
use crate::store::journal::Journal;
use crate::store::record::RunRecord;

use super::context::{Ctx, cell_tool, tool_without_password};
use super::run::Run;
use super::signals::{self, SignalWatch};
use super::slot;
use crate::config::Settings;

pub(crate) trait Procedure {
    /// What a failed report says of the cell when the run did not say: `resume` says nothing.
    const LEFT_ON_FAILURE: Option<CellLeft> = Some(CellLeft::Unchanged);

    /// The command the lock, the record and the report name.
    fn command(&self) -> CommandName;

    /// Whether the vendor tool (and so the password) is needed.
    fn needs_password(&self) -> bool {
        true
    }

    /// May this command take over a recorded run? (Default: a run of the same command.)
    fn takes_over(&self, rec: &RunRecord) -> bool {
        rec.command == self.command()
    }

    /// No recorded run: preflight, then the new run's record (None: nothing to do, the report
    /// says why).
    async fn start(&self, ctx: &Ctx<'_>, report: &mut Report) -> Result<Option<RunRecord>, Error>;

    /// A recorded run is continued: check and adjust it before anything is done.
    async fn continue_record(&self, ctx: &Ctx<'_>, rec: &mut RunRecord) -> Result<(), Error>;

    /// The run's first transitions (errors here end the command before its conclusion: the
    /// record was not changed).
    async fn enter(&self, ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error>;

    /// The steps. Errors of the drain are kept in the run; others are returned.
    async fn drive(&self, ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error>;

    /// Whether the run takes the fleet-wide slot (with `[lock]`): `resume` only releases it.
    fn takes_slot(&self) -> bool {
        true
    }

    /// A new run has just taken its slot, before any change: checks that must be made again now
    /// that no other cell can start (the redundancy guard: two cells' guards could each have
    /// seen the other serving).
    async fn after_slot(&self, _ctx: &Ctx<'_>, _run: &mut Run) -> Result<(), Error> {
        Ok(())
    }
}

/// Run a procedure from lock to report.
pub(crate) async fn execute<P: Procedure>(s: &Settings, p: &P, sig: SignalWatch) -> (Report, Result<(), Error>) {
    let mut report = Report::new(p.command());
    let r = lifecycle(s, p, sig, &mut report).await;
    if let Err(e) = &r {
        report.fail(e);
        if report.cell_left.is_none() {
            report.cell_left = P::LEFT_ON_FAILURE;
        }
    }
    (report, r)
}

async fn lifecycle<P: Procedure>(s: &Settings, p: &P, sig: SignalWatch, report: &mut Report) -> Result<(), Error> {
    let journal = Journal::open(&s.state_dir)?;
    let _lock = journal.lock(p.command())?;
    report.slot = slot::retry_pending(s).await;
    let tool = if p.needs_password() {
        cell_tool(s).await?
    } else {
        tool_without_password(s)
    };
    let ctx = Ctx::new(s, tool, sig);
    let mut recorded = journal.current()?;
    if let Some(rec) = recorded.take_if(|r| interrupted_undo(r) && p.command() != CommandName::Resume) {
        // An earlier run's undo was cut short (kill -9, reboot): finish it first, then do what
        // was asked, as a run of its own.
        finish_undo(&ctx, &journal, rec).await?;
        // The undo is complete and the cell serves: its slot goes.
        slot::settle(s, report, true).await;
    }
    let (rec, persisted) = match recorded {
        Some(mut rec) => {
            if !p.takes_over(&rec) {
                return Err(Error::Conflict(format!(
                    "a `{}` run ({}) is recorded in {}: {}",
                    rec.command,
                    rec.run_id,
                    journal.current_path().display(),
                    rec.advice()
                )));
            }
            p.continue_record(&ctx, &mut rec).await?;
            rec.pid = std::process::id();
            rec.outcome = None;
            rec.ended_at = None;
            (rec, true)
        }
        None => match start(&ctx, p, report).await? {
            Some(rec) => (rec, false),
            None => return Ok(()),
        },
    };
    let mut run = Run::new(journal.clone(), rec, persisted);
    mark_in_progress(s, &run.rec);
    if p.takes_slot()
        && let Some(c) = slot::client(s)?
    {
        take_slot(&ctx, p, &c, &mut run, !persisted, report).await?;
    }
    p.enter(&ctx, &mut run).await?;
    let result = p.drive(&ctx, &mut run).await;
    if let Some(api) = &ctx.api {
        api.logout().await;
    }
    let r = conclude(run, report, result, &ctx.sig);
    let finished = matches!(journal.current(), Ok(None));
    slot::settle(s, report, finished).await;
    r
}

/// Take the slot before the first change; a new run then passes its after-slot checks. A new
/// run that gets no slot (or fails those checks) ends here with nothing changed: its record is
/// archived, and a slot it did take is released.
async fn take_slot<P: Procedure>(
    ctx: &Ctx<'_>,
    p: &P,
    c: &crate::adapters::lock::LockClient,
    run: &mut Run,
    fresh: bool,
    report: &mut Report,
) -> Result<(), Error> {
    let r = match slot::take(ctx, c, run).await {
        Ok(()) if fresh => p.after_slot(ctx, run).await,
        r => r,
    };
    let Err(e) = r else { return Ok(()) };
    if fresh {
        if let Ok(Some(rec)) = crate::store::slot::load(&ctx.s.state_dir)
            && rec.run_id.as_deref() == Some(run.rec.run_id.as_str())
        {
            report.slot = Some(slot::release_recorded(ctx.s, rec).await);
        }
        let interrupted = matches!(e, Error::Interrupted { .. });
        run.rec.outcome = Some(if interrupted {
            Outcome::Interrupted
        } else {
            Outcome::Failed
        });
        run.rec.ended_at = Some(Timestamp::now());
        if let Err(je) = run.journal.finish(&run.rec) {
            tracing::error!("{je}");
        }
        report.run_id = Some(run.rec.run_id.clone());
        report.steps.clone_from(&run.rec.steps);
        report.cell_left = Some(CellLeft::Unchanged);
        if interrupted {
            report.outcome = Outcome::Interrupted;
        }
    }
    Err(e)
}

/// The preflight and the new record. Nothing is changed yet, so a signal abandons it at once
/// (the call's process group is killed): a hung preflight call must not hold a stop request
/// for its whole tool timeout.
async fn start<P: Procedure>(ctx: &Ctx<'_>, p: &P, report: &mut Report) -> Result<Option<RunRecord>, Error> {
    let mut sig = ctx.sig.clone();
    let s = tokio::select! {
        r = p.start(ctx, report) => return r,
        s = sig.received() => s,
    };
    report.outcome = Outcome::Interrupted;
    report.cell_left = Some(CellLeft::Unchanged);
    Err(Error::Interrupted {
        signal: s,
        name: signals::name(s),
        state: "the preflight was abandoned; nothing was changed".into(),
    })
}

/// A recorded undo that its process did not finish (the run is not an operator's `resume`
/// being continued: that one is finished by `resume` as its own work).
fn interrupted_undo(rec: &RunRecord) -> bool {
    matches!(rec.phase, Phase::RollingBack { .. })
}

/// Finish a recorded undo and archive its run. Its own outcome (aborted, interrupted, failed)
/// is the one it was undoing for; this process reports its own run afterwards.
async fn finish_undo(ctx: &Ctx<'_>, journal: &Journal, rec: RunRecord) -> Result<(), Error> {
    tracing::info!(run_id = %rec.run_id, "finishing the undo of run {} ({}), cut short earlier", rec.run_id, rec.command);
    let mut run = Run::new(journal.clone(), rec, true);
    if let Err(e) = super::drain::rollback(ctx, &mut run).await {
        return Err(Error::RollbackIncomplete(format!(
            "run {} could not be undone ({}); it stays recorded: `cellctl resume` retries",
            run.rec.run_id,
            inner(&e)
        )));
    }
    run.rec.outcome = Some(match run.rec.phase {
        Phase::Done { outcome } => outcome,
        _ => Outcome::Failed,
    });
    run.rec.ended_at = Some(Timestamp::now());
    let archived = run.journal.finish(&run.rec)?;
    tracing::info!("run {} undone and archived in {}", run.rec.run_id, archived.display());
    Ok(())
}

/// Metrics say a run is under way, with its id, once it holds the lock (a run refused by the
/// lock must not say so).
fn mark_in_progress(s: &Settings, rec: &RunRecord) {
    if let Some(path) = &s.metrics_file {
        let outbox = crate::adapters::webhook::Outbox::new(&s.state_dir, s.webhook.outbox_max);
        let started = rec.started_at.to_string();
        crate::output::metrics::update(
            path,
            &s.state_dir,
            &outbox,
            None,
            Some((rec.command.as_str(), &rec.run_id, &started)),
        );
    }
}

/// How a run ended, from where its state machine stands.
struct Conclusion {
    /// Recorded in the journal.
    outcome: Outcome,
    /// Said in the report (differs when a signal came after shutdown had begun).
    reported: Outcome,
    cell_left: CellLeft,
    /// Nothing left to continue or undo: archive the record.
    finished: bool,
    result: Result<(), Error>,
}

fn conclude(mut run: Run, report: &mut Report, result: Result<(), Error>, sig: &SignalWatch) -> Result<(), Error> {
    let before_drain = run.rec.upgrade.as_ref().is_some_and(|u| u.stage.before_drain());
    let c = if run.rec.maintain.is_some() && run.rec.past_drain() {
        maint_conclusion(&run.rec, result)
    } else if run.rec.past_drain() || before_drain {
        stage_conclusion(&run.rec, result)
    } else {
        drain_conclusion(&mut run, result, sig)
    };
    run.rec.outcome = Some(c.outcome);
    run.rec.ended_at = Some(Timestamp::now());
    let journal = if c.finished {
        run.journal.finish(&run.rec)
    } else {
        run.journal.save(&run.rec).map(|()| run.journal.current_path())
    };
    report.run_id = Some(run.rec.run_id.clone());
    report.started_at = Some(run.rec.started_at);
    report.ended_at = run.rec.ended_at;
    report.before.clone_from(&run.rec.before);
    report.steps.clone_from(&run.rec.steps);
    report.jobs_remaining = run.jobs_remaining.take();
    report.tasks_not_canceled = run.tasks_not_canceled.take();
    report.upgrade.clone_from(&run.rec.upgrade);
    report.maintain.clone_from(&run.rec.maintain);
    report.outcome = c.reported;
    report.cell_left = Some(c.cell_left);
    if !c.finished
        && c.result.is_err()
        && let Some(up) = &run.rec.upgrade
        && up.stage != Stage::Drain
    {
        tracing::warn!(
            "the run is kept in {}: rerun `cellctl {}` to continue from stage {}",
            run.journal.current_path().display(),
            run.rec.command,
            up.stage
        );
    }
    // A run that did its job but could not write its record still says so, loudly.
    match (c.result, journal) {
        (r, Ok(p)) => {
            report.journal = Some(p.display().to_string());
            r
        }
        (Ok(()), Err(e)) => Err(e.into()),
        (Err(r), Err(e)) => {
            tracing::error!("{e}");
            Err(r)
        }
    }
}

/// The run ended in (or before the end of) its drain: the phase says how.
fn drain_conclusion(run: &mut Run, result: Result<(), Error>, sig: &SignalWatch) -> Conclusion {
    let outcome = match run.rec.phase {
        Phase::Done { outcome } => Some(outcome),
        _ => None,
    };
    let shut_down = run.step_done(Step::Shutdown) && run.step_done(Step::StopService);
    let cell_left = match outcome {
        Some(Outcome::ShutDown | Outcome::Forced) => CellLeft::ShutDown,
        Some(Outcome::Drained) => CellLeft::Drained,
        Some(_) => CellLeft::Unchanged,
        None if shut_down => CellLeft::ShutDown,
        None => CellLeft::Changed,
    };
    let recorded = outcome.unwrap_or(Outcome::Failed);
    let mut c = Conclusion {
        outcome: recorded,
        reported: recorded,
        cell_left,
        finished: outcome.is_some_and(|o| o != Outcome::Drained),
        result: Ok(()),
    };
    if let Some(s) = run.late_signal.filter(|_| outcome.is_some()) {
        c.reported = Outcome::Interrupted;
        c.result = Err(Error::Interrupted {
            signal: s,
            name: signals::name(s),
            state: "shutdown had begun and was completed".into(),
        });
        return c;
    }
    c.result = drain_result(run, outcome, result, sig);
    // A signal ended a step that had no end (a shutdown step abandoned at its budget).
    if outcome.is_none() && matches!(c.result, Err(Error::Interrupted { .. })) {
        c.outcome = Outcome::Interrupted;
        c.reported = Outcome::Interrupted;
    }
    c
}

fn drain_result(
    run: &mut Run,
    outcome: Option<Outcome>,
    result: Result<(), Error>,
    sig: &SignalWatch,
) -> Result<(), Error> {
    match outcome {
        Some(Outcome::Aborted) => Err(Error::Deadline {
            deadline: std::time::Duration::from_secs(run.rec.options.deadline_secs),
            jobs: run.last_job_count.unwrap_or(0),
        }),
        Some(Outcome::Interrupted) => {
            let s = sig.pending().unwrap_or(signal_hook::consts::SIGTERM);
            Err(Error::Interrupted {
                signal: s,
                name: signals::name(s),
                state: "this run's changes were undone".into(),
            })
        }
        Some(Outcome::Failed) => Err(run
            .failure
            .take()
            .unwrap_or_else(|| Error::Internal("failed without an error".into()))),
        Some(_) => Ok(()),
        None => match (run.rollback_error.take(), run.failure.take(), result) {
            (Some(rb), Some(first), _) => Err(Error::RollbackIncomplete(format!("{first}; then {}", inner(&rb)))),
            (Some(rb), None, _) => Err(rb),
            (None, Some(first), _) => Err(first),
            (None, None, Err(e)) => Err(e),
            (None, None, Ok(())) => Err(Error::Internal("run stopped without an outcome".into())),
        },
    }
}

/// The message of a rollback error without its own prefix (it is nested in another).
fn inner(e: &Error) -> String {
    match e {
        Error::RollbackIncomplete(m) => m.clone(),
        other => other.to_string(),
    }
}

/// The run is past its drain (or an appliance's run ended before it): the stage says how far
/// it got. An appliance's upgrade ends a first time rebooting (kept, for the continuation after
/// the boot), an appliance's install stopped for the reboot the operator makes; a run that
/// ended before its drain changed nothing of the cell and is finished.
fn stage_conclusion(rec: &RunRecord, result: Result<(), Error>) -> Conclusion {
    let up = rec.upgrade.as_ref().expect("past the drain means an upgrade record");
    let done = up.stage == Stage::Done;
    let appliance = up.appliance.is_some();
    let before_drain = up.stage.before_drain();
    let outcome = match (&result, done, up.stage) {
        (Ok(()), true, _) if rec.command == CommandName::Install => Outcome::Installed,
        (Ok(()), true, _) if rec.command == CommandName::DbUpgrade => Outcome::DbUpgraded,
        // `start` on an installed appliance: rebooted, and started by its continuation.
        (Ok(()), true, _) if rec.command == CommandName::Start => Outcome::Started,
        (Ok(()), true, _) => Outcome::Upgraded,
        // An appliance's reboot was requested: the continuation after the boot finishes.
        (Ok(()), false, Stage::Rebooting) => Outcome::Rebooting,
        (Err(Error::Interrupted { .. }), _, _) => Outcome::Interrupted,
        _ => Outcome::Failed,
    };
    let cell_left = match (done, up.start, up.stage) {
        _ if before_drain => CellLeft::Unchanged,
        // `install` on an appliance: updated, stopped; the operator reboots it.
        (true, false, _) if appliance => CellLeft::RebootRequired,
        (true, true, _) => CellLeft::Running,
        (false, _, Stage::Rebooting) => CellLeft::Rebooting,
        (false, _, Stage::Start) => CellLeft::Changed,
        _ => CellLeft::ShutDown,
    };
    Conclusion {
        outcome,
        reported: outcome,
        cell_left,
        finished: done || before_drain,
        result,
    }
}

/// A `maintain` run past its drain: its stage says how far it got.
fn maint_conclusion(rec: &RunRecord, result: Result<(), Error>) -> Conclusion {
    use crate::model::maintain::MaintStage;
    let stage = rec.maintain.as_ref().expect("checked by the caller").stage;
    let (outcome, cell_left, finished) = match (&result, stage) {
        (Ok(()), MaintStage::Done) => (Outcome::Maintained, CellLeft::Running, true),
        (Ok(()), MaintStage::Undone) => (Outcome::Resumed, CellLeft::Running, true),
        (Ok(()), MaintStage::Rebooting) => (Outcome::Rebooting, CellLeft::Rebooting, false),
        (Err(Error::Interrupted { .. }), s) => (Outcome::Interrupted, maint_left(s), false),
        (_, s) => (Outcome::Failed, maint_left(s), false),
    };
    Conclusion {
        outcome,
        reported: outcome,
        cell_left,
        finished,
        result,
    }
}

/// Where an unfinished `maintain` run leaves the cell.
fn maint_left(stage: crate::model::maintain::MaintStage) -> CellLeft {
    use crate::model::maintain::MaintStage;
    match stage {
        MaintStage::Start => CellLeft::Changed,
        MaintStage::Rebooting => CellLeft::Rebooting,
        _ => CellLeft::ShutDown,
    }
}
