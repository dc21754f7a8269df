//! Waiting for the cell to drain: poll the tool, read the API's task list between polls as a
//! hint, and apply the deadline policy. Each part is a function of its own; the timing rules
//! are pure functions with unit tests.

use std::time::Duration;

use tokio::time::Instant;

use crate::adapters::api::{ApiError, TaskInfo, cancel_all};
use crate::adapters::vendor::{CellStatus, ToolError};
use crate::config::DrainSettings;
use crate::error::Error;
use crate::model::phase::{DRAINED_CONFIRMATIONS, DeadlineAction, Event, Phase};
use crate::model::step::{Step, StepStatus};
use crate::model::time::unix_now;
use crate::output::progress::Progress;

use super::context::Ctx;
use super::run::{Recorder, Run};
use super::signals;

/// Consecutive failed status polls tolerated while waiting (a JVM hiccup is not a reason to
/// give up a long drain; a cell that stopped answering is).
const MAX_POLL_FAILURES: u32 = 3;
/// Tool polls while waiting: while the API's task list answers in between, the tool (a JVM
/// start each time) is asked twice a minute; without that signal, every 10 seconds.
const TOOL_POLL_WITH_SIGNALS: Duration = Duration::from_secs(30);
const TOOL_POLL_ALONE: Duration = Duration::from_secs(10);
/// The least time between the end of one ordinary poll and the start of the next.
const MIN_GAP: Duration = Duration::from_secs(1);

/// What the wait learns across its calls within one process.
#[derive(Debug)]
pub(crate) struct Waiter {
    /// The API's task list answered; false: fall back to polling the tool alone.
    api_ok: bool,
    api_warned: bool,
    /// The last tool poll was brought forward by a hint.
    hint_pending: bool,
    /// The job count at which the tool last contradicted a hint.
    hint_refuted_at: Option<u64>,
    /// How many tasks the API listed last (to log the list when it changes).
    listed: Option<usize>,
}

impl Default for Waiter {
    fn default() -> Self {
        Waiter {
            api_ok: true,
            api_warned: false,
            hint_pending: false,
            hint_refuted_at: None,
            listed: None,
        }
    }
}

/// When to ask the tool next, counted from the start of the last call: a tool that takes
/// seconds to start (a JVM) then polls at the period asked, as a runbook's `sleep` loop would
/// not (it sleeps after each slow call). The confirming poll (or, as Is Active lags the count,
/// the one after a zero count) is spaced `confirm_interval` from that start, so after a slow
/// call it follows at once.
pub(crate) fn next_tool_poll(
    d: &DrainSettings,
    confirming: bool,
    api_ok: bool,
    call_started: Instant,
    polled_at: Instant,
    left: Duration,
) -> Instant {
    let next = if confirming {
        call_started + d.confirm_interval
    } else {
        let period = d.poll_interval.unwrap_or(if api_ok {
            TOOL_POLL_WITH_SIGNALS
        } else {
            TOOL_POLL_ALONE
        });
        // A call slower than the period is not followed back to back: a struggling cell
        // gets a breath between two JVM starts.
        (call_started + period).max(polled_at + MIN_GAP)
    };
    next.min(polled_at + left)
}

/// The deadline applies when it has passed and no "drained" sighting awaits its confirmation
/// (one sighting at the deadline still earns its confirming poll).
pub(crate) fn deadline_applies(left_secs: f64, seen_drained: u8) -> bool {
    left_secs <= 0.0 && seen_drained == 0
}

fn seen_drained(phase: Phase) -> u8 {
    match phase {
        Phase::Waiting { seen_drained } | Phase::Canceling { seen_drained } => seen_drained,
        _ => 0,
    }
}

pub(crate) async fn wait(ctx: &Ctx<'_>, run: &mut Run, d: &DrainSettings, w: &mut Waiter) -> Result<(), Error> {
    let canceling = matches!(run.rec.phase, Phase::Canceling { .. });
    if canceling {
        cancel_tasks(ctx, run, d, w).await?;
    }
    let idx = match run.rec.steps.last() {
        Some(s) if s.step == Step::Wait && s.status == StepStatus::Started => run.rec.steps.len() - 1,
        _ => run.begin(Step::Wait)?,
    };
    let deadline_at = if canceling {
        run.rec.cancel_deadline_unix.unwrap_or_else(unix_now)
    } else {
        run.rec.deadline_unix
    };
    let mut progress = Progress::new();
    let mut failures = 0u32;
    let mut sig = ctx.sig.clone();
    loop {
        let call_started = Instant::now();
        let polled = tokio::select! {
            biased;
            s = sig.received() => {
                progress.finish();
                signals::log_undo(s);
                return run.drain_event(Event::Interrupt);
            }
            r = ctx.tool.status() => r,
        };
        let left = deadline_at - unix_now();
        match polled {
            Ok(st) => {
                failures = 0;
                if observed(run, idx, w, &mut progress, st, left)? {
                    return Ok(());
                }
            }
            Err(e) => {
                progress.finish();
                failures += 1;
                poll_failed(run, idx, e, failures)?;
            }
        }
        if deadline_applies(left, seen_drained(run.rec.phase)) {
            progress.finish();
            return at_deadline(ctx, run, idx, canceling, w).await;
        }
        let next_tool = next_tool_poll(
            d,
            seen_drained(run.rec.phase) > 0 || run.last_job_count == Some(0),
            w.api_ok,
            call_started,
            Instant::now(),
            Duration::from_secs_f64(left.max(0.0)),
        );
        if hint_window(ctx, run, (d, deadline_at), w, &mut progress, next_tool).await? {
            return Ok(());
        }
    }
}

/// A tool poll answered: feed it to the state machine. True when the cell is drained.
fn observed(
    run: &mut Run,
    idx: usize,
    w: &mut Waiter,
    progress: &mut Progress,
    st: CellStatus,
    left: f64,
) -> Result<bool, Error> {
    run.last_job_count = Some(st.job_count);
    run.rec.steps[idx].job_count = Some(st.job_count);
    progress.update(st.job_count, st.is_active, Duration::from_secs_f64(left.max(0.0)));
    if w.hint_pending && !st.is_drained() {
        w.hint_refuted_at = Some(st.job_count);
    }
    w.hint_pending = false;
    run.drain_event(Event::Observed {
        drained: st.is_drained(),
    })?;
    if run.rec.phase != Phase::Drained {
        return Ok(false);
    }
    progress.finish();
    tracing::info!("drained: Job count = 0 and Is Active = false on {DRAINED_CONFIRMATIONS} consecutive polls");
    run.end(idx, StepStatus::Done, None)?;
    Ok(true)
}

/// A refused password ends the wait at once; other failures only after several in a row.
fn poll_failed(run: &mut Run, idx: usize, e: ToolError, failures: u32) -> Result<(), Error> {
    if matches!(e, ToolError::Rejected { .. }) {
        return Err(run.fail_step(idx, e.into()));
    }
    tracing::warn!("status poll failed ({failures}/{MAX_POLL_FAILURES}): {e}");
    if failures >= MAX_POLL_FAILURES {
        return Err(run.fail_step(idx, e.into()));
    }
    Ok(())
}

/// The deadline (or the grace period after cancelling) passed with jobs running: record it,
/// gather what the report must name, and take the chosen action.
async fn at_deadline(ctx: &Ctx<'_>, run: &mut Run, idx: usize, canceling: bool, w: &mut Waiter) -> Result<(), Error> {
    let jobs = run.last_job_count.unwrap_or(0);
    let (action, what) = if canceling {
        (run.rec.options.after_cancel, "grace period after cancelling ended")
    } else {
        (run.rec.options.on_deadline, "deadline reached")
    };
    let action_name = action.as_str();
    let _ = run.end(
        idx,
        StepStatus::Failed,
        Some(format!("{what} with {jobs} job(s) running; action: {action_name}")),
    );
    tracing::warn!("{what} with {jobs} job(s) still running: {action_name}");
    if canceling {
        run.tasks_not_canceled = tasks(ctx, w).await.map(|t| t.iter().map(TaskInfo::describe).collect());
    }
    if action == DeadlineAction::Force {
        run.jobs_remaining = Some(match ctx.tool.status_verbose().await {
            Ok((_, jobs)) => jobs,
            Err(e) => vec![format!("(could not list them: {e})")],
        });
    }
    run.drain_event(if canceling {
        Event::GraceExpired(action)
    } else {
        Event::DeadlineReached(action)
    })
}

/// Until the next tool poll, read the API's task list (cheap for the cell: no JVM) every
/// `signal_interval`. When it shows no task on this cell, that is a first sighting and the
/// tool is asked at once: the tool's answer alone can complete "drained". The progress line
/// ticks every second meanwhile. Returns true if a signal ended the wait.
async fn hint_window(
    ctx: &Ctx<'_>,
    run: &mut Run,
    (d, deadline_at): (&DrainSettings, f64),
    w: &mut Waiter,
    progress: &mut Progress,
    mut next_tool: Instant,
) -> Result<bool, Error> {
    const TICK: Duration = Duration::from_secs(1);
    let polled_at = Instant::now();
    let left = || Duration::from_secs_f64((deadline_at - unix_now()).max(0.0));
    // A hint the tool contradicted is not believed again until the count moves.
    let armed = run.last_job_count.is_some_and(|n| n > 0) && w.hint_refuted_at != run.last_job_count;
    let mut sig = ctx.sig.clone();
    let mut hinted = false;
    let mut next_api = polled_at + d.signal_interval;
    loop {
        let now = Instant::now();
        if now >= next_tool {
            break;
        }
        let use_api = armed && w.api_ok && ctx.api.is_some();
        let mut wake = next_tool.min(now + TICK);
        if use_api {
            wake = wake.min(next_api);
        }
        tokio::select! {
            biased;
            s = sig.received() => {
                progress.finish();
                signals::log_undo(s);
                run.drain_event(Event::Interrupt)?;
                return Ok(true);
            }
            () = tokio::time::sleep_until(wake) => {}
        }
        progress.tick(left());
        let now = Instant::now();
        if !use_api || now < next_api || now >= next_tool {
            continue;
        }
        next_api = now + d.signal_interval;
        match tasks(ctx, w).await {
            Some(t) => {
                progress.tasks(t.len() as u64, left());
                log_tasks(w, progress, &t);
                if t.is_empty() {
                    run.drain_event(Event::Hint { drained: true })?;
                    hinted = true;
                    break;
                }
            }
            // No signal: fall back to polling the tool alone, at its own pace.
            None => next_tool = next_tool.min(polled_at + d.poll_interval.unwrap_or(TOOL_POLL_ALONE)),
        }
    }
    w.hint_pending = hinted;
    Ok(false)
}

fn log_tasks(w: &mut Waiter, progress: &mut Progress, t: &[TaskInfo]) {
    if w.listed == Some(t.len()) {
        return;
    }
    w.listed = Some(t.len());
    if !t.is_empty() {
        progress.finish();
        tracing::info!("{}", summarise_tasks(t));
    }
}

/// A task list for a log line: the count and the first few, not a 300-character line.
fn summarise_tasks(t: &[TaskInfo]) -> String {
    const SHOWN: usize = 3;
    let first: Vec<String> = t.iter().take(SHOWN).map(TaskInfo::describe).collect();
    let more = t.len().saturating_sub(SHOWN);
    let tail = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    format!("{} task(s) running on this cell: {}{tail}", t.len(), first.join("; "))
}

/// The tasks running on this cell, from the API (None when it cannot say).
async fn tasks(ctx: &Ctx<'_>, w: &mut Waiter) -> Option<Vec<TaskInfo>> {
    let api = ctx.api.clone()?;
    match api.running_tasks().await {
        Ok(t) => Some(t),
        Err(e) => {
            w.api_ok = false;
            if !w.api_warned {
                let hint = match &e {
                    ApiError::Status { status: 503, .. } => {
                        " (a cell answers 503 while its maintenance message is on: point [api] url at the group's load balancer or another cell)"
                    }
                    _ => "",
                };
                tracing::warn!("cannot list this cell's tasks: {e}{hint}");
                w.api_warned = true;
            }
            None
        }
    }
}

/// `--on-deadline cancel`: cancel this cell's running tasks (once per run), then grant grace.
async fn cancel_tasks(ctx: &Ctx<'_>, run: &mut Run, d: &DrainSettings, w: &mut Waiter) -> Result<(), Error> {
    if run.rec.cancel_deadline_unix.is_some() {
        return Ok(());
    }
    let idx = run.begin(Step::CancelTasks)?;
    let detail = match (ctx.api.clone(), tasks(ctx, w).await) {
        (Some(api), Some(tasks)) => {
            tracing::info!("cancelling {} task(s) on this cell", tasks.len());
            let failed = cancel_all(&api, &tasks, api.settings().cancel_concurrency).await;
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
    let grace = d.cancel_grace.unwrap_or(ctx.s.api.cancel_grace);
    run.rec.cancel_deadline_unix = Some(unix_now() + grace.as_secs_f64());
    run.end(idx, StepStatus::Done, Some(detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(poll: Option<u64>) -> DrainSettings {
        DrainSettings {
            deadline: Duration::from_secs(600),
            deadline_explicit: false,
            on_deadline: DeadlineAction::Abort,
            after_cancel: DeadlineAction::Abort,
            cancel_grace: None,
            allow_last_cell: false,
            maintenance: true,
            shutdown: true,
            poll_interval: poll.map(Duration::from_secs),
            signal_interval: Duration::from_secs(1),
            confirm_interval: Duration::from_secs(2),
        }
    }

    #[test]
    fn confirming_poll_is_spaced_from_the_start_of_the_last_call() {
        let d = settings(None);
        let started = Instant::now();
        // The tool took 3 s to answer (a JVM): the confirming poll is due at once.
        let answered = started + Duration::from_secs(3);
        let next = next_tool_poll(&d, true, true, started, answered, Duration::from_secs(600));
        assert!(next <= answered, "confirming poll waits after a slow call");
        assert_eq!(next, started + d.confirm_interval);
    }

    #[test]
    fn tool_is_asked_less_often_while_the_api_answers() {
        let d = settings(None);
        let t = Instant::now();
        let left = Duration::from_secs(600);
        assert_eq!(next_tool_poll(&d, false, true, t, t, left), t + TOOL_POLL_WITH_SIGNALS);
        assert_eq!(next_tool_poll(&d, false, false, t, t, left), t + TOOL_POLL_ALONE);
        // An explicit --poll-interval wins, and nothing waits past the deadline.
        let d = settings(Some(7));
        assert_eq!(next_tool_poll(&d, false, true, t, t, left), t + Duration::from_secs(7));
        assert_eq!(
            next_tool_poll(&d, false, true, t, t, Duration::from_secs(1)),
            t + Duration::from_secs(1)
        );
    }

    #[test]
    fn a_long_task_list_is_summarised() {
        let task = |i: usize| TaskInfo {
            id: format!("t{i}"),
            operation: "vappDeploy".into(),
            owner: "bob".into(),
            started: "2026-01-01T00:00:00Z".into(),
        };
        let many: Vec<TaskInfo> = (0..10).map(task).collect();
        let s = summarise_tasks(&many);
        assert!(s.starts_with("10 task(s)") && s.ends_with("and 7 more"), "{s}");
        assert!(!summarise_tasks(&many[..2]).contains("more"));
    }

    #[test]
    fn the_poll_period_counts_from_the_start_of_each_call() {
        let d = settings(None);
        let started = Instant::now();
        let answered = started + Duration::from_secs(3);
        let left = Duration::from_secs(600);
        // Without the API: every 10 s from the start of the last call, not 10 s after a 3 s call.
        assert_eq!(
            next_tool_poll(&d, false, false, started, answered, left),
            started + TOOL_POLL_ALONE
        );
        // A call slower than the period still leaves a gap before the next.
        let slow = started + Duration::from_secs(12);
        assert_eq!(next_tool_poll(&d, false, false, started, slow, left), slow + MIN_GAP);
    }

    #[test]
    fn one_sighting_at_the_deadline_earns_its_confirmation() {
        assert!(deadline_applies(0.0, 0));
        assert!(deadline_applies(-5.0, 0));
        assert!(!deadline_applies(-5.0, 1));
        assert!(!deadline_applies(0.1, 0));
    }
}
