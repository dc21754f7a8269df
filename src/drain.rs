//! The drain and resume procedures: the I/O around the state machine in `procedure.rs`.
//!
//! Order of every change: record the step as `started` in the journal, act, record the result.
//! A failure or first signal before shutdown undoes exactly what this run recorded.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::config::{DrainSettings, Settings};
use crate::credentials;
use crate::error::Error;
use crate::journal::{
    Before, DeadlineAction, Journal, LockGuard, RunOptions, RunRecord, SCHEMA, Step, StepRecord, StepStatus,
    new_run_id, now_rfc3339, unix_now,
};
use crate::procedure::{Event, Outcome, Phase};
use crate::progress::Progress;
use crate::report::{Report, hostname};
use crate::service::{Service, ServiceState};
use crate::signals::{self, SignalWatch};
use crate::vendor::{CellStatus, CellTool, ToolError};

/// Consecutive failed status polls tolerated while waiting (a JVM hiccup is not a reason to
/// give up a long drain; a cell that stopped answering is).
const MAX_POLL_FAILURES: u32 = 3;
/// Tool polls while waiting: while the API's task list answers in between, the tool (a JVM
/// start each time) is asked twice a minute; without that signal, every 10 seconds.
const TOOL_POLL_WITH_SIGNALS: Duration = Duration::from_secs(30);
const TOOL_POLL_ALONE: Duration = Duration::from_secs(10);
/// How long the service may take to report stopped after `systemctl stop`.
const STOP_SETTLE: Duration = Duration::from_secs(60);

pub fn service_of(s: &Settings) -> Service {
    Service {
        systemctl: s.systemctl.clone(),
        name: s.service.clone(),
        timeout: s.tool_timeout,
    }
}

pub(crate) fn check_executable(p: &Path) -> Result<(), Error> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(Error::Precheck(format!(
            "{} is not an executable file; check --vcd-home",
            p.display()
        ))),
        Err(e) => Err(Error::Precheck(format!(
            "{} is missing ({e}); check --vcd-home",
            p.display()
        ))),
    }
}

/// Open the state dir and take the lock: the common start of commands that may change the cell.
pub(crate) fn open_journal(s: &Settings, command: &str) -> Result<(Journal, LockGuard), Error> {
    let journal = Journal::open(&s.state_dir)?;
    let lock = journal.lock(command)?;
    Ok((journal, lock))
}

/// Read the password and build the vendor-tool driver.
pub(crate) fn cell_tool(s: &Settings) -> Result<CellTool, Error> {
    let (password, _source) = credentials::load(s.password_file.as_deref(), s.credentials_dir.clone(), &s.user)?;
    Ok(CellTool::new(&s.vcd_home, &s.user, password, s.tool_timeout))
}

fn open(s: &Settings, command: &str) -> Result<(Journal, LockGuard, CellTool), Error> {
    let (journal, lock) = open_journal(s, command)?;
    Ok((journal, lock, cell_tool(s)?))
}

pub(crate) struct Runner {
    pub(crate) journal: Journal,
    pub(crate) tool: CellTool,
    pub(crate) service: Service,
    pub(crate) rec: RunRecord,
    pub(crate) sig: SignalWatch,
    /// The group's API (guard, tasks, cancel); None when it cannot be set up.
    pub(crate) api: Option<std::sync::Arc<crate::api::Api>>,
    pub(crate) api_settings: crate::api::ApiSettings,
    api_warned: bool,
    /// The API's task list answered; false: fall back to polling the tool alone.
    api_ok: bool,
    /// The last tool poll was brought forward by a hint.
    hint_pending: bool,
    tasks_not_canceled: Option<Vec<String>>,
    /// The first error, reported at the end even after a successful rollback.
    pub(crate) failure: Option<Error>,
    /// Rollback could not undo everything.
    rollback_error: Option<String>,
    /// A signal arrived after shutdown had begun (the step was finished regardless).
    late_signal: Option<i32>,
    last_job_count: Option<u64>,
    jobs_remaining: Option<Vec<String>>,
}

impl Runner {
    pub(crate) fn new(
        journal: Journal,
        tool: CellTool,
        service: Service,
        rec: RunRecord,
        sig: SignalWatch,
        api_settings: &crate::api::ApiSettings,
    ) -> Self {
        // Steps record the job count last seen, starting from what the recorded run saw.
        let last_job_count = rec.steps.iter().rev().find_map(|s| s.job_count);
        crate::events::set_run_id(&rec.run_id);
        let api = crate::api::Api::new(api_settings, &tool.user, tool.password.clone())
            .ok()
            .map(std::sync::Arc::new);
        Runner {
            journal,
            tool,
            service,
            rec,
            sig,
            api,
            api_settings: api_settings.clone(),
            api_warned: false,
            api_ok: true,
            hint_pending: false,
            tasks_not_canceled: None,
            failure: None,
            rollback_error: None,
            late_signal: None,
            last_job_count,
            jobs_remaining: None,
        }
    }

    pub(crate) fn save(&self) -> Result<(), Error> {
        self.journal.save(&self.rec).map_err(Error::from)
    }

    /// Apply an event; persist if the phase changed.
    pub(crate) fn advance(&mut self, ev: Event) -> Result<(), Error> {
        let next = self.rec.phase.next(ev).map_err(|e| Error::Internal(e.to_string()))?;
        if next != self.rec.phase {
            tracing::debug!(from = ?self.rec.phase, to = ?next, "phase");
            self.rec.phase = next;
            self.save()?;
        }
        Ok(())
    }

    /// Record a step as started (durably) before it is taken.
    pub(crate) fn begin(&mut self, step: Step) -> Result<usize, Error> {
        self.rec.steps.push(StepRecord {
            step,
            status: StepStatus::Started,
            started_at: now_rfc3339(),
            ended_at: None,
            job_count: self.last_job_count,
            detail: None,
        });
        if let Err(e) = self.save() {
            // Not recorded, so not taken.
            self.rec.steps.pop();
            return Err(e);
        }
        crate::events::step(self.rec.steps.last().expect("just pushed"));
        Ok(self.rec.steps.len() - 1)
    }

    pub(crate) fn end(&mut self, idx: usize, status: StepStatus, detail: Option<String>) -> Result<(), Error> {
        let st = &mut self.rec.steps[idx];
        st.status = status;
        st.ended_at = Some(now_rfc3339());
        if self.last_job_count.is_some() {
            st.job_count = self.last_job_count;
        }
        if detail.is_some() {
            st.detail = detail;
        }
        crate::events::step(st);
        self.save()
    }

    fn skip(&mut self, step: Step, why: &str) -> Result<(), Error> {
        let idx = self.begin(step)?;
        tracing::info!(step = ?step, "skipped: {why}");
        self.end(idx, StepStatus::Skipped, Some(why.into()))
    }

    pub(crate) fn step_done(&self, step: Step) -> bool {
        matches!(
            self.rec.last(step).map(|s| s.status),
            Some(StepStatus::Done | StepStatus::Skipped)
        )
    }

    /// Take a step that changes the cell, unless a previous attempt already finished it.
    async fn act<F, Fut>(&mut self, step: Step, what: &str, f: F) -> Result<(), Error>
    where
        F: FnOnce(CellTool) -> Fut,
        Fut: std::future::Future<Output = Result<(), ToolError>>,
    {
        if self.step_done(step) {
            return Ok(());
        }
        let idx = self.begin(step)?;
        tracing::info!("{what}");
        match f(self.tool.clone()).await {
            Ok(()) => self.end(idx, StepStatus::Done, None),
            Err(e) => {
                let _ = self.end(idx, StepStatus::Failed, Some(e.to_string()));
                Err(e.into())
            }
        }
    }

    fn before(&self) -> Before {
        self.rec.before.clone().expect("a recorded run has its before-state")
    }

    async fn prepare(&mut self, d: &DrainSettings) -> Result<(), Error> {
        if !self.step_done(Step::MaintenanceOn) {
            if !d.maintenance {
                self.skip(Step::MaintenanceOn, "--no-maintenance: a load balancer drains the cell")?;
            } else if self.before().in_maintenance == Some(true) {
                self.skip(
                    Step::MaintenanceOn,
                    "maintenance message was already on before this run; left as found",
                )?;
            } else {
                self.act(
                    Step::MaintenanceOn,
                    "maintenance message on (vmware-vcd-cell maintenance)",
                    |t| async move { t.maintenance_on().await },
                )
                .await?;
            }
        }
        self.advance(Event::Prepared)
    }

    async fn quiesce(&mut self) -> Result<(), Error> {
        if !self.step_done(Step::Quiesce) {
            if !self.before().is_active {
                self.skip(
                    Step::Quiesce,
                    "cell was already inactive (quiesced) before this run; left as found",
                )?;
            } else {
                self.act(Step::Quiesce, "quiescing: cell --quiesce true", |t| async move {
                    t.quiesce(true).await
                })
                .await?;
            }
        }
        self.advance(Event::Quiesced)
    }

    fn seen_drained(&self) -> u8 {
        match self.rec.phase {
            Phase::Waiting { seen_drained } | Phase::Canceling { seen_drained } => seen_drained,
            _ => 0,
        }
    }

    /// The tasks running on this cell, from the API (None when it cannot say).
    async fn tasks(&mut self) -> Option<Vec<crate::api::TaskInfo>> {
        let api = self.api.clone()?;
        match api.running_tasks().await {
            Ok(t) => Some(t),
            Err(e) => {
                self.api_ok = false;
                if !self.api_warned {
                    let hint = match &e {
                        crate::api::ApiError::Status { status: 503, .. } => {
                            " (a cell answers 503 while its maintenance message is on: point [api] url at the group's load balancer or another cell)"
                        }
                        _ => "",
                    };
                    tracing::warn!("cannot list this cell's tasks: {e}{hint}");
                    self.api_warned = true;
                }
                None
            }
        }
    }

    /// `--on-deadline cancel`: cancel this cell's running tasks (once per run), then grant grace.
    async fn cancel_tasks(&mut self, d: &DrainSettings) -> Result<(), Error> {
        if self.rec.cancel_deadline_unix.is_some() {
            return Ok(());
        }
        let idx = self.begin(Step::CancelTasks)?;
        let detail = match (self.api.clone(), self.tasks().await) {
            (Some(api), Some(tasks)) => {
                tracing::info!("cancelling {} task(s) on this cell", tasks.len());
                let failed = crate::api::cancel_all(&api, &tasks, api.settings().cancel_concurrency).await;
                for (t, e) in &failed {
                    tracing::warn!("could not cancel {}: {e}", t.describe());
                }
                format!(
                    "cancel requested for {} of {} task(s)",
                    tasks.len() - failed.len(),
                    tasks.len()
                )
            }
            _ => "the API could not list the tasks: nothing cancelled".to_string(),
        };
        let grace = d.cancel_grace.unwrap_or(self.api_settings.cancel_grace);
        self.rec.cancel_deadline_unix = Some(unix_now() + grace.as_secs_f64());
        self.end(idx, StepStatus::Done, Some(detail))
    }

    async fn wait(&mut self, d: &DrainSettings) -> Result<(), Error> {
        let canceling = matches!(self.rec.phase, Phase::Canceling { .. });
        if canceling {
            self.cancel_tasks(d).await?;
        }
        let idx = match self.rec.steps.last() {
            Some(s) if s.step == Step::Wait && s.status == StepStatus::Started => self.rec.steps.len() - 1,
            _ => self.begin(Step::Wait)?,
        };
        let deadline_at = if canceling {
            self.rec.cancel_deadline_unix.unwrap_or_else(unix_now)
        } else {
            self.rec.deadline_unix
        };
        let mut progress = Progress::new();
        let mut failures = 0u32;
        let mut listed: Option<usize> = None;
        let mut hint_refuted_at: Option<u64> = None;
        let mut sig = self.sig.clone();
        loop {
            let call_started = tokio::time::Instant::now();
            let polled = tokio::select! {
                biased;
                _ = sig.received() => { progress.finish(); return self.advance(Event::Interrupt); }
                r = self.tool.status() => r,
            };
            let left = deadline_at - unix_now();
            match polled {
                Ok(st) => {
                    failures = 0;
                    self.last_job_count = Some(st.job_count);
                    self.rec.steps[idx].job_count = Some(st.job_count);
                    progress.update(st.job_count, st.is_active, Duration::from_secs_f64(left.max(0.0)));
                    if self.hint_pending && !st.is_drained() {
                        hint_refuted_at = Some(st.job_count);
                    }
                    self.hint_pending = false;
                    self.advance(Event::Observed {
                        drained: st.is_drained(),
                    })?;
                    if self.rec.phase == Phase::Drained {
                        progress.finish();
                        tracing::info!(
                            "drained: Job count = 0 and Is Active = false on {} consecutive polls",
                            crate::procedure::DRAINED_CONFIRMATIONS
                        );
                        return self.end(idx, StepStatus::Done, None);
                    }
                }
                Err(e @ ToolError::Rejected { .. }) => {
                    progress.finish();
                    let _ = self.end(idx, StepStatus::Failed, Some(e.to_string()));
                    return Err(e.into());
                }
                Err(e) => {
                    failures += 1;
                    progress.finish();
                    tracing::warn!("status poll failed ({failures}/{MAX_POLL_FAILURES}): {e}");
                    if failures >= MAX_POLL_FAILURES {
                        let _ = self.end(idx, StepStatus::Failed, Some(e.to_string()));
                        return Err(e.into());
                    }
                }
            }
            // One "drained" sighting at the deadline still earns its confirming poll.
            if left <= 0.0 && self.seen_drained() == 0 {
                progress.finish();
                let jobs = self.last_job_count.unwrap_or(0);
                let action = if canceling {
                    self.rec.options.after_cancel
                } else {
                    self.rec.options.on_deadline
                };
                let what = if canceling {
                    "grace period after cancelling ended"
                } else {
                    "deadline reached"
                };
                let _ = self.end(
                    idx,
                    StepStatus::Failed,
                    Some(format!("{what} with {jobs} job(s) running; action: {action:?}")),
                );
                tracing::warn!("{what} with {jobs} job(s) still running: {action:?}");
                if canceling {
                    self.tasks_not_canceled = self.tasks().await.map(|t| t.iter().map(|t| t.describe()).collect());
                }
                if action == DeadlineAction::Force {
                    self.jobs_remaining = Some(match self.tool.status_verbose().await {
                        Ok((_, jobs)) => jobs,
                        Err(e) => vec![format!("(could not list them: {e})")],
                    });
                }
                return self.advance(if canceling {
                    Event::GraceExpired(action)
                } else {
                    Event::DeadlineReached(action)
                });
            }
            // Until the next tool poll, read the API's task list (cheap for the cell: no JVM) every
            // signal_interval. When it shows no task on this cell, that is a first sighting, and
            // the tool is asked at once: the tool's answer alone can complete "drained".
            let polled_at = tokio::time::Instant::now();
            let next = if self.seen_drained() > 0 || self.last_job_count == Some(0) {
                // The confirming poll (or, as Is Active lags the count, the next one): the two
                // sightings are spaced from the start of the last call, so a tool that takes
                // seconds to start (a JVM) has spaced them already and is asked again at once.
                call_started + d.confirm_interval
            } else {
                polled_at
                    + d.poll_interval.unwrap_or(if self.api_ok {
                        TOOL_POLL_WITH_SIGNALS
                    } else {
                        TOOL_POLL_ALONE
                    })
            };
            let mut next_tool = next.min(polled_at + Duration::from_secs_f64(left.max(0.0)));
            // A hint the tool contradicted is not believed again until the count moves.
            let armed = self.last_job_count.is_some_and(|n| n > 0) && hint_refuted_at != self.last_job_count;
            let mut hinted = false;
            loop {
                let now = tokio::time::Instant::now();
                if now >= next_tool {
                    break;
                }
                let use_api = armed && self.api_ok && self.api.is_some();
                let nap = if use_api {
                    d.signal_interval.min(next_tool - now)
                } else {
                    next_tool - now
                };
                tokio::select! {
                    biased;
                    _ = sig.received() => { progress.finish(); return self.advance(Event::Interrupt); }
                    _ = tokio::time::sleep(nap) => {}
                }
                if !use_api || tokio::time::Instant::now() >= next_tool {
                    continue;
                }
                match self.tasks().await {
                    Some(t) => {
                        if listed != Some(t.len()) {
                            listed = Some(t.len());
                            if !t.is_empty() {
                                progress.finish();
                                let list: Vec<String> = t.iter().map(|t| t.describe()).collect();
                                tracing::info!("running on this cell: {}", list.join("; "));
                            }
                        }
                        if t.is_empty() {
                            self.advance(Event::Hint { drained: true })?;
                            hinted = true;
                            break;
                        }
                    }
                    // No signal: fall back to polling the tool alone, at its own pace.
                    None => next_tool = next_tool.min(polled_at + d.poll_interval.unwrap_or(TOOL_POLL_ALONE)),
                }
            }
            self.hint_pending = hinted;
        }
    }

    async fn shutdown(&mut self) -> Result<(), Error> {
        if !self.step_done(Step::Shutdown) {
            let idx = self.begin(Step::Shutdown)?;
            tracing::info!("shutting the cell down: cell --shutdown");
            match self.tool.shutdown().await {
                Ok(()) => self.end(idx, StepStatus::Done, None)?,
                // Already down (a previous attempt got through before dying): that is the goal.
                Err(ToolError::CellDown { .. }) => {
                    self.end(idx, StepStatus::Done, Some("cell was already down".into()))?
                }
                Err(e) => {
                    let _ = self.end(idx, StepStatus::Failed, Some(e.to_string()));
                    return Err(e.into());
                }
            }
        }
        self.advance(Event::CellShutDown)
    }

    async fn stop_service(&mut self) -> Result<(), Error> {
        let idx = self.begin(Step::StopService)?;
        tracing::info!("stopping service {} so the cell stays down", self.service.name);
        match self.service.stop_and_confirm(STOP_SETTLE).await {
            Ok(()) => self.end(idx, StepStatus::Done, None)?,
            Err(e) => {
                let _ = self.end(idx, StepStatus::Failed, Some(e.to_string()));
                return Err(e.into());
            }
        }
        self.advance(Event::ServiceStopped)
    }

    /// Undo what this run changed, newest first. Journal write failures do not stop an undo.
    async fn rollback(&mut self) -> Result<(), Error> {
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
            if !self.rec.holds_change(made, undo) {
                continue;
            }
            let idx = match self.begin(undo) {
                Ok(i) => Some(i),
                Err(e) => {
                    tracing::error!("{e}; undoing anyway");
                    None
                }
            };
            tracing::info!("{what}");
            let r = match undo {
                Step::UndoQuiesce => self.tool.quiesce(false).await,
                _ => self.tool.maintenance_off().await,
            };
            let (status, detail) = match r {
                Ok(()) => (StepStatus::Done, None),
                Err(e) => {
                    errors.push(format!("{what}: {e}"));
                    (StepStatus::Failed, Some(e.to_string()))
                }
            };
            if let Some(i) = idx
                && let Err(e) = self.end(i, status, detail)
            {
                tracing::error!("{e}");
            }
        }
        if !errors.is_empty() {
            return Err(Error::RollbackIncomplete(errors.join("; ")));
        }
        self.advance(Event::RolledBack)
    }

    /// A continued run re-applies the changes its record says it made, before trusting them: if
    /// the state directory failed during a rollback, the record may say "quiesced" of a cell
    /// that was quiesced and then released. Both changes are idempotent.
    pub(crate) async fn reassert(&mut self) -> Result<(), Error> {
        if !self.rec.phase.before_shutdown()
            && self.rec.phase
                != (Phase::Done {
                    outcome: Outcome::Drained,
                })
        {
            return Ok(());
        }
        let done = |r: &RunRecord, step| matches!(r.last(step).map(|s| s.status), Some(StepStatus::Done));
        if done(&self.rec, Step::MaintenanceOn) && self.rec.holds_change(Step::MaintenanceOn, Step::UndoMaintenance) {
            tracing::info!("continuing: re-applying the recorded maintenance message");
            self.tool.maintenance_on().await?;
        }
        if done(&self.rec, Step::Quiesce) && self.rec.holds_change(Step::Quiesce, Step::UndoQuiesce) {
            tracing::info!("continuing: re-applying the recorded quiesce");
            self.tool.quiesce(true).await?;
        }
        Ok(())
    }

    /// Drive the recorded run from its phase to an end (or to a failure that keeps its phase).
    pub(crate) async fn run(&mut self, d: &DrainSettings) {
        loop {
            // A signal that arrived during a step (not while waiting) is acted on here.
            if let Some(_s) = self.sig.pending()
                && self.rec.phase.before_shutdown()
                && let Err(e) = self.advance(Event::Interrupt)
            {
                self.on_error(e);
            }
            let r = match self.rec.phase {
                Phase::Start | Phase::Preflighted => self.prepare(d).await,
                Phase::Prepared => self.quiesce().await,
                Phase::Waiting { .. } | Phase::Canceling { .. } => self.wait(d).await,
                Phase::Drained if d.shutdown => self.advance(Event::BeginShutdown),
                Phase::Drained => self.advance(Event::StopHere),
                Phase::ShuttingDown { .. } => self.shutdown().await,
                Phase::StoppingService { .. } => self.stop_service().await,
                Phase::RollingBack { .. } => self.rollback().await,
                Phase::Done { .. } => break,
            };
            if let Err(e) = r {
                let phase = self.rec.phase;
                if matches!(e, Error::RollbackIncomplete(_)) {
                    self.rollback_error = Some(e.to_string());
                    break;
                }
                self.on_error(e);
                if !phase.before_shutdown() {
                    // Shutdown or rollback failed: keep the phase for the next run.
                    break;
                }
            }
            if self.rec.phase.shutdown_begun()
                && let Some(s) = self.sig.pending()
            {
                self.late_signal = Some(s);
            }
        }
    }

    fn on_error(&mut self, e: Error) {
        tracing::error!("{e}");
        let before = self.rec.phase.before_shutdown();
        if self.failure.is_none() {
            self.failure = Some(e);
        }
        if before {
            match self.rec.phase.next(Event::Failure) {
                Ok(p) => {
                    self.rec.phase = p;
                    if let Err(e) = self.save() {
                        tracing::error!("{e}; rolling back anyway");
                    }
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
    }

    /// Close the record and turn it into the final result.
    pub(crate) fn conclude(mut self, report: &mut Report) -> Result<(), Error> {
        let outcome = match self.rec.phase {
            Phase::Done { outcome } => Some(outcome),
            _ => None,
        };
        let finished = outcome.is_some() && outcome != Some(Outcome::Drained);
        self.rec.outcome = Some(outcome.map(|o| o.as_str()).unwrap_or("failed").to_string());
        self.rec.ended_at = Some(now_rfc3339());
        let journal_result = if finished {
            self.journal.finish(&self.rec).map(|p| p.display().to_string())
        } else {
            self.journal
                .save(&self.rec)
                .map(|_| self.journal.current_path().display().to_string())
        };
        report.run_id = Some(self.rec.run_id.clone());
        report.started_at = Some(self.rec.started_at.clone());
        report.ended_at = self.rec.ended_at.clone();
        report.before = self.rec.before.clone();
        report.steps = self.rec.steps.clone();
        report.jobs_remaining = self.jobs_remaining.clone();
        report.tasks_not_canceled = self.tasks_not_canceled.clone();
        report.outcome = self.rec.outcome.clone().unwrap_or_default();
        let shut_down = self.step_done(Step::Shutdown) && self.step_done(Step::StopService);
        report.cell_left = Some(
            match outcome {
                Some(Outcome::ShutDown | Outcome::Forced) => "shut_down",
                Some(Outcome::Drained) => "drained",
                Some(_) => "unchanged",
                None if shut_down => "shut_down",
                None => "changed",
            }
            .into(),
        );
        if let Ok(p) = &journal_result {
            report.journal = Some(p.clone());
        }
        if let Some(sig) = self.late_signal.filter(|_| outcome.is_some()) {
            report.outcome = "interrupted".into();
            return Err(Error::Interrupted {
                signal: sig,
                name: signals::name(sig),
                state: "shutdown had begun and was completed".into(),
            });
        }
        let result = match outcome {
            Some(Outcome::ShutDown | Outcome::Forced | Outcome::Drained | Outcome::Resumed) => Ok(()),
            Some(Outcome::Aborted) => Err(Error::Deadline {
                deadline: Duration::from_secs(self.rec.options.deadline_secs),
                jobs: self.last_job_count.unwrap_or(0),
            }),
            Some(Outcome::Interrupted) => {
                let sig = self.sig.pending().unwrap_or(signal_hook::consts::SIGTERM);
                Err(Error::Interrupted {
                    signal: sig,
                    name: signals::name(sig),
                    state: "this run's changes were undone".into(),
                })
            }
            Some(Outcome::Failed) => Err(self
                .failure
                .take()
                .unwrap_or(Error::Internal("failed without an error".into()))),
            None => match (self.rollback_error.take(), self.failure.take()) {
                (Some(rb), Some(first)) => Err(Error::RollbackIncomplete(format!("{first}; then {rb}"))),
                (Some(rb), None) => Err(Error::RollbackIncomplete(rb)),
                (None, Some(first)) => Err(first),
                (None, None) => Err(Error::Internal("run stopped without an outcome".into())),
            },
        };
        // A run that did its job but could not write its record still says so, loudly.
        match (result, journal_result) {
            (Ok(()), Err(e)) => Err(e.into()),
            (r, _) => r,
        }
    }
}

/// Before any change: are enough other cells serving? Fails closed when the API cannot tell,
/// unless the operator skipped the guard or allowed taking the last cell.
pub(crate) async fn redundancy_guard(s: &Settings, allow_last_cell: bool, tool: &CellTool) -> Result<String, Error> {
    if !s.redundancy_guard {
        tracing::warn!("redundancy guard skipped: other cells were not checked");
        return Ok("redundancy guard skipped".into());
    }
    let min = s.api.min_active_peers;
    let verdict = match crate::api::Api::new(&s.api, &s.user, tool.password.clone()) {
        Err(e) => Err(e.to_string()),
        Ok(api) => {
            let r = api.cells().await;
            api.logout().await;
            match r {
                Ok(cells) => crate::api::guard_verdict(&cells, &s.api.cell_name, min),
                Err(e) => Err(format!(
                    "cannot list the cells ({e}); the guard fails closed: fix [api] url/ca_file, or pass --skip-redundancy-guard"
                )),
            }
        }
    };
    match verdict {
        Ok(n) => {
            tracing::info!("redundancy guard: {n} other active cell(s)");
            Ok(format!("redundancy guard: {n} other active cell(s)"))
        }
        Err(msg) if allow_last_cell => {
            tracing::warn!("--allow-last-cell: going ahead although {msg}");
            Ok(format!("last cell allowed: {msg}"))
        }
        Err(msg) => Err(Error::LastCell(msg)),
    }
}

pub(crate) async fn preflight(tool: &CellTool, service: &Service) -> Result<(Option<CellStatus>, ServiceState), Error> {
    check_executable(&tool.cmt)?;
    check_executable(&tool.vcd_cell)?;
    let svc = service.state().await.map_err(|e| Error::Precheck(e.to_string()))?;
    match svc {
        ServiceState::Running => Ok((Some(tool.status().await?), svc)),
        ServiceState::Stopped => Ok((None, svc)),
        ServiceState::Changing => Err(Error::Precheck(format!(
            "service {} is starting or stopping; wait until it settles",
            service.name
        ))),
    }
}

async fn drain_inner(s: &Settings, d: &DrainSettings, sig: SignalWatch, report: &mut Report) -> Result<(), Error> {
    let (journal, _lock, tool) = open(s, "drain")?;
    let service = service_of(s);
    let rec = match journal.current()? {
        Some(mut rec) => {
            if rec.command != "drain" {
                return Err(Error::Conflict(format!(
                    "a `{}` run ({}) is recorded in {}; finish it with `cellctl {}` or undo it with `cellctl resume`",
                    rec.command,
                    rec.run_id,
                    journal.current_path().display(),
                    rec.command
                )));
            }
            check_executable(&tool.cmt)?;
            tracing::info!(run_id = %rec.run_id, phase = ?rec.phase, "continuing the recorded run from {}", rec.started_at);
            let parked = rec.phase
                == (Phase::Done {
                    outcome: Outcome::Drained,
                });
            if d.deadline_explicit || parked {
                rec.deadline_unix = unix_now() + d.deadline.as_secs_f64();
                rec.options.deadline_secs = d.deadline.as_secs();
            }
            rec.options.on_deadline = d.on_deadline;
            rec.options.shutdown = d.shutdown;
            rec.pid = std::process::id();
            rec.outcome = None;
            rec.ended_at = None;
            rec
        }
        None => {
            let run_id = new_run_id();
            report.run_id = Some(run_id.clone());
            let (st, svc) = preflight(&tool, &service).await?;
            let Some(st) = st else {
                tracing::info!("service {} is already stopped: nothing to drain", s.service);
                report.outcome = Outcome::ShutDown.as_str().into();
                report.cell_left = Some("shut_down".into());
                report.service = Some(svc);
                return Ok(());
            };
            let guard = redundancy_guard(s, d.allow_last_cell, &tool).await?;
            tracing::info!(
                job_count = st.job_count,
                is_active = st.is_active,
                in_maintenance = st.in_maintenance.map_or("unknown".to_string(), |b| b.to_string()),
                "preflight passed"
            );
            let now = now_rfc3339();
            RunRecord {
                schema: SCHEMA,
                run_id,
                command: "drain".into(),
                pid: std::process::id(),
                host: hostname(),
                vcd_home: s.vcd_home.display().to_string(),
                started_at: now.clone(),
                deadline_unix: unix_now() + d.deadline.as_secs_f64(),
                cancel_deadline_unix: None,
                options: RunOptions {
                    deadline_secs: d.deadline.as_secs(),
                    on_deadline: d.on_deadline,
                    after_cancel: d.after_cancel,
                    maintenance: d.maintenance,
                    shutdown: d.shutdown,
                },
                before: Some(Before {
                    job_count: st.job_count,
                    is_active: st.is_active,
                    in_maintenance: st.in_maintenance,
                    service: svc,
                }),
                phase: Phase::Start,
                steps: vec![StepRecord {
                    step: Step::Preflight,
                    status: StepStatus::Done,
                    started_at: now.clone(),
                    ended_at: Some(now_rfc3339()),
                    job_count: Some(st.job_count),
                    detail: Some(guard),
                }],
                outcome: None,
                ended_at: None,
                upgrade: None,
            }
        }
    };
    let mut r = Runner::new(journal, tool, service, rec, sig, &s.api);
    let first = if r.rec.phase == Phase::Start {
        Event::PreflightPassed
    } else {
        Event::Continued
    };
    // The first write of the journal: before any change is made.
    r.advance(first)?;
    if first == Event::Continued {
        r.reassert().await?;
    }
    if r.rec.in_maintenance_unknown() && d.maintenance {
        tracing::warn!(
            "this cell does not report its maintenance state; the message will be left on if the run is undone"
        );
    }
    r.run(d).await;
    if let Some(api) = &r.api {
        api.logout().await;
    }
    r.conclude(report)
}

impl RunRecord {
    /// Old cells print no `In Maintenance Mode` line: we cannot know it was off before.
    fn in_maintenance_unknown(&self) -> bool {
        self.before.as_ref().is_some_and(|b| b.in_maintenance.is_none())
    }
}

pub async fn drain(s: &Settings, d: &DrainSettings, sig: SignalWatch) -> (Report, Result<(), Error>) {
    let mut report = Report::new("drain");
    let r = drain_inner(s, d, sig, &mut report).await;
    report.settle(&r);
    (report, r)
}

async fn resume_inner(s: &Settings, sig: SignalWatch, report: &mut Report) -> Result<(), Error> {
    let (journal, _lock, tool) = open(s, "resume")?;
    let Some(rec) = journal.current()? else {
        tracing::info!("no recorded run holds changes: nothing to undo");
        report.outcome = "nothing_to_do".into();
        return Ok(());
    };
    if let Some(up) = &rec.upgrade
        && up.stage != crate::journal::Stage::Drain
    {
        return Err(Error::Conflict(format!(
            "run {} is past its drain (stage {:?}): the cell is being upgraded; `cellctl {}` continues it",
            rec.run_id, up.stage, rec.command
        )));
    }
    let service = service_of(s);
    let svc = service.state().await.map_err(|e| Error::Precheck(e.to_string()))?;
    if svc != ServiceState::Running {
        return Err(Error::Conflict(format!(
            "service {} is {:?}: `resume` undoes quiesce and maintenance on a running cell; start it first (systemctl start {}), or run `cellctl drain` to finish the recorded run {}",
            s.service, svc, s.service, rec.run_id
        )));
    }
    tracing::info!(run_id = %rec.run_id, phase = ?rec.phase, "undoing the recorded run");
    let mut r = Runner::new(journal, tool, service, rec, sig, &s.api);
    r.advance(Event::UndoRequested)?;
    match r.rollback().await {
        Ok(()) => {}
        Err(e) => r.rollback_error = Some(e.to_string()),
    }
    r.conclude(report)
}

pub async fn resume(s: &Settings, sig: SignalWatch) -> (Report, Result<(), Error>) {
    let mut report = Report::new("resume");
    let r = resume_inner(s, sig, &mut report).await;
    if let Err(e) = &r {
        report.fail(e);
    }
    (report, r)
}

/// `cellctl status`: read-only, takes no lock.
pub async fn status(s: &Settings) -> (Report, Result<(), Error>) {
    let r = status_inner(s).await;
    match r {
        Ok(rep) => (rep, Ok(())),
        Err(e) => (Report::failed("status", &e), Err(e)),
    }
}

async fn status_inner(s: &Settings) -> Result<Report, Error> {
    let service = service_of(s);
    let svc = service.state().await?;
    let st = if svc == ServiceState::Running {
        let (password, _) = credentials::load(s.password_file.as_deref(), s.credentials_dir.clone(), &s.user)?;
        let tool = CellTool::new(&s.vcd_home, &s.user, password, s.tool_timeout);
        Some(tool.status().await?)
    } else {
        None
    };
    let recorded = if s.state_dir.join("current.json").exists() {
        Journal {
            dir: s.state_dir.clone(),
        }
        .current()?
        .as_ref()
        .map(Into::into)
    } else {
        None
    };
    let mut rep = Report::new("status").with_status(st, svc);
    if svc == ServiceState::Running {
        // Best effort: status must work when the API does not.
        let tool = cell_tool(s)?;
        match crate::api::Api::new(&s.api, &s.user, tool.password.clone()) {
            Ok(api) => {
                match api.running_tasks().await {
                    Ok(t) => rep.tasks = Some(t),
                    Err(e) => rep.tasks_error = Some(e.to_string()),
                }
                api.logout().await;
            }
            Err(e) => rep.tasks_error = Some(e.to_string()),
        }
    }
    rep.recorded_run = Some(recorded);
    Ok(rep)
}
