//! `cellctl drain`: maintenance message on, quiesce, wait for jobs with a deadline, then shut
//! down (or stop once drained with `--no-shutdown`).

use crate::config::DrainSettings;
use crate::engine::context::Ctx;
use crate::engine::lifecycle::Procedure;
use crate::engine::run::Run;
use crate::engine::{drain, preflight};
use crate::error::Error;
use crate::model::outcome::{CellLeft, CommandName, Outcome};
use crate::model::phase::{DeadlineAction, Phase};
use crate::model::step::{Before, ServiceState, Step, StepRecord, StepStatus};
use crate::model::time::{Timestamp, new_run_id, unix_now};
use crate::output::report::Report;
use crate::store::record::{RunOptions, RunRecord, SCHEMA};

pub(crate) struct Drain<'a>(pub &'a DrainSettings);

/// A new run's record: the cell as found, the options, and the passed preflight as its first
/// step. Shared by `drain` and `upgrade`.
pub(crate) fn new_record(
    ctx: &Ctx<'_>,
    command: CommandName,
    run_id: String,
    d: Option<&DrainSettings>,
    before: Before,
    preflight_detail: Option<String>,
) -> RunRecord {
    let now = Timestamp::now();
    RunRecord {
        schema: SCHEMA,
        run_id,
        command,
        pid: std::process::id(),
        host: crate::adapters::host::hostname(),
        vcd_home: ctx.s.vcd_home.display().to_string(),
        started_at: now,
        deadline_unix: unix_now() + d.map_or(0.0, |d| d.deadline.as_secs_f64()),
        cancel_deadline_unix: None,
        options: RunOptions {
            deadline_secs: d.map_or(0, |d| d.deadline.as_secs()),
            on_deadline: d.map_or(DeadlineAction::default(), |d| d.on_deadline),
            after_cancel: d.map_or(DeadlineAction::default(), |d| d.after_cancel),
            maintenance: d.is_some_and(|d| d.maintenance),
            shutdown: d.is_none_or(|d| d.shutdown),
        },
        phase: Phase::Start,
        steps: vec![StepRecord {
            status: StepStatus::Done,
            ended_at: Some(Timestamp::now()),
            detail: preflight_detail,
            ..StepRecord::started(
                Step::Preflight,
                (before.service == ServiceState::Running).then_some(before.job_count),
            )
        }],
        before: Some(before),
        outcome: None,
        ended_at: None,
        upgrade: None,
        maintain: None,
    }
}

impl Procedure for Drain<'_> {
    fn command(&self) -> CommandName {
        CommandName::Drain
    }

    async fn start(&self, ctx: &Ctx<'_>, report: &mut Report) -> Result<Option<RunRecord>, Error> {
        let run_id = new_run_id();
        report.run_id = Some(run_id.clone());
        let (st, svc) = preflight::cell(&ctx.tool, &ctx.service).await?;
        let Some(st) = st else {
            tracing::info!("service {} is already stopped: nothing to drain", ctx.s.service);
            report.outcome = Outcome::ShutDown;
            report.cell_left = Some(CellLeft::ShutDown);
            report.service = Some(svc);
            return Ok(None);
        };
        let guard = preflight::redundancy_guard(ctx.s, self.0.allow_last_cell, &ctx.tool).await?;
        tracing::info!(
            job_count = st.job_count,
            is_active = st.is_active,
            in_maintenance = st.in_maintenance.map_or("unknown".to_string(), |b| b.to_string()),
            "preflight passed"
        );
        let before = Before {
            job_count: st.job_count,
            is_active: st.is_active,
            in_maintenance: st.in_maintenance,
            service: svc,
        };
        Ok(Some(new_record(
            ctx,
            self.command(),
            run_id,
            Some(self.0),
            before,
            Some(guard),
        )))
    }

    async fn continue_record(&self, ctx: &Ctx<'_>, rec: &mut RunRecord) -> Result<(), Error> {
        let d = self.0;
        preflight::check_executable(&ctx.tool.cmt)?;
        tracing::info!(run_id = %rec.run_id, phase = %rec.phase, "continuing the recorded run from {}", rec.started_at);
        if d.deadline_explicit || rec.phase == drain::parked() {
            rec.deadline_unix = unix_now() + d.deadline.as_secs_f64();
            rec.options.deadline_secs = d.deadline.as_secs();
        }
        rec.options.on_deadline = d.on_deadline;
        rec.options.shutdown = d.shutdown;
        Ok(())
    }

    async fn enter(&self, ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
        drain::enter(ctx, run, self.0.maintenance).await
    }

    async fn drive(&self, ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
        drain::drive(ctx, run, self.0).await;
        Ok(())
    }

    /// The guard again, now that the slot keeps other cells from starting.
    async fn after_slot(&self, ctx: &Ctx<'_>, _run: &mut Run) -> Result<(), Error> {
        let line = preflight::redundancy_guard(ctx.s, self.0.allow_last_cell, &ctx.tool).await?;
        tracing::info!("slot taken; {line}");
        Ok(())
    }
}
