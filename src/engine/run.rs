//! What a run changes (as zincati's `UpdateAgentState`): its durable record and what this
//! process learned on the way. Every phase or stage change goes through [`Run::apply`] (the
//! checked state machine), every step is recorded as started before it is taken.

use crate::error::Error;
use crate::model::machine::Transition;
use crate::model::outcome::CommandName;
use crate::model::phase::Event;
use crate::model::stage::StageEvent;
use crate::model::step::{Step, StepRecord, StepStatus};
use crate::model::time::Timestamp;
use crate::output::events;
use crate::store::journal::Journal;
use crate::store::record::RunRecord;

pub(crate) struct Run {
    pub journal: Journal,
    pub rec: RunRecord,
    /// The record is on disk (a new run's first write may fail: then nothing was changed).
    pub persisted: bool,
    /// The first error, reported at the end even after a successful rollback.
    pub failure: Option<Error>,
    /// Rollback could not undo everything.
    pub rollback_error: Option<Error>,
    /// A signal arrived after shutdown had begun (the step was finished regardless).
    pub late_signal: Option<i32>,
    pub last_job_count: Option<u64>,
    /// With `force`: the jobs still running at shutdown.
    pub jobs_remaining: Option<Vec<String>>,
    /// With `cancel`: tasks still running when the grace period ended.
    pub tasks_not_canceled: Option<Vec<String>>,
}

/// Where steps are recorded: the journal of a run, or (for `start`, which is not journaled)
/// the report's list.
pub(crate) trait Recorder {
    /// Record `step` as started; its index for [`Recorder::end`].
    fn begin(&mut self, step: Step) -> Result<usize, Error>;
    fn end(&mut self, idx: usize, status: StepStatus, detail: Option<String>) -> Result<(), Error>;
    /// The command that finishes what these steps began, for an operator (a start cut short).
    fn finish_with(&self) -> String;
}

impl Run {
    pub fn new(journal: Journal, rec: RunRecord, persisted: bool) -> Self {
        // Steps record the job count last seen, starting from what the recorded run saw.
        let last_job_count = rec.steps.iter().rev().find_map(|s| s.job_count);
        events::set_run_id(&rec.run_id);
        Run {
            journal,
            rec,
            persisted,
            failure: None,
            rollback_error: None,
            late_signal: None,
            last_job_count,
            jobs_remaining: None,
            tasks_not_canceled: None,
        }
    }

    pub fn save(&mut self) -> Result<(), Error> {
        self.journal.save(&self.rec)?;
        self.persisted = true;
        Ok(())
    }

    /// The one place a phase or stage changes: checked by the state machine, then persisted.
    pub fn apply(&mut self, t: Transition) -> Result<(), Error> {
        let from = self.rec.position();
        let to = from.next(t).map_err(|e| Error::Internal(e.to_string()))?;
        if to != from {
            tracing::debug!(from = %from.phase, to = %to.phase, "transition");
            self.rec.set_position(to);
            self.save()?;
        }
        Ok(())
    }

    pub fn drain_event(&mut self, ev: Event) -> Result<(), Error> {
        self.apply(Transition::Drain(ev))
    }

    pub fn stage_event(&mut self, ev: StageEvent) -> Result<(), Error> {
        self.apply(Transition::Stage(ev))
    }

    pub fn skip(&mut self, step: Step, why: &str) -> Result<(), Error> {
        let idx = self.begin(step)?;
        tracing::info!(step = ?step, "skipped: {why}");
        self.end(idx, StepStatus::Skipped, Some(why.into()))
    }

    pub fn step_done(&self, step: Step) -> bool {
        self.rec.step_complete(step)
    }

    /// Record a failed step and hand its error on.
    pub fn fail_step(&mut self, idx: usize, e: Error) -> Error {
        let _ = self.end(idx, StepStatus::Failed, Some(e.to_string()));
        e
    }

    /// The index of the last record of a step that was begun.
    pub fn last_idx(&self, step: Step) -> Option<usize> {
        self.rec.steps.iter().rposition(|s| s.step == step)
    }

    /// A failure during the drain: remembered, and before shutdown the run rolls back.
    pub fn on_error(&mut self, e: Error) {
        tracing::error!("{e}");
        let before = self.rec.phase.before_shutdown();
        self.failure.get_or_insert(e);
        if before && let Err(e) = self.drain_event(Event::Failure) {
            tracing::error!("{e}; rolling back anyway");
        }
    }
}

impl Recorder for Run {
    fn begin(&mut self, step: Step) -> Result<usize, Error> {
        self.rec.steps.push(StepRecord::started(step, self.last_job_count));
        if let Err(e) = self.save() {
            // Not recorded, so not taken.
            self.rec.steps.pop();
            return Err(e);
        }
        events::step(self.rec.steps.last().expect("just pushed"));
        Ok(self.rec.steps.len() - 1)
    }

    fn end(&mut self, idx: usize, status: StepStatus, detail: Option<String>) -> Result<(), Error> {
        let st = &mut self.rec.steps[idx];
        st.status = status;
        st.ended_at = Some(Timestamp::now());
        if self.last_job_count.is_some() {
            st.job_count = self.last_job_count;
        }
        if detail.is_some() {
            st.detail = detail;
        }
        events::step(st);
        self.save()
    }

    fn finish_with(&self) -> String {
        match self.rec.command {
            CommandName::Maintain => "`cellctl maintain --continue` (or `cellctl start`)".into(),
            cmd => format!("`cellctl {cmd}` (or `cellctl start`)"),
        }
    }
}

/// Steps of a command that keeps no journal (`start`): recorded for its report only.
impl Recorder for Vec<StepRecord> {
    fn begin(&mut self, step: Step) -> Result<usize, Error> {
        self.push(StepRecord::started(step, None));
        Ok(self.len() - 1)
    }

    fn end(&mut self, idx: usize, status: StepStatus, detail: Option<String>) -> Result<(), Error> {
        let st = &mut self[idx];
        st.status = status;
        st.ended_at = Some(Timestamp::now());
        st.detail = detail;
        Ok(())
    }

    fn finish_with(&self) -> String {
        "`cellctl start`".into()
    }
}
