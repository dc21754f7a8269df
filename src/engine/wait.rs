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
/// Tool polls while waiting, while the API's task list answers in between: the tool (a JVM
/// start each time) is asked 30 s after its last call ended, so at most twice a minute however
/// long it takes to start (issue 8's load target), and the task list brings the call forward.
const TOOL_POLL_WITH_SIGNALS: Duration = Duration::from_secs(30);
/// Without the API's task list the tool is the only signal, and the reference is the manual
/// procedure (VMware's "Job count = 0 and Is Active = false", scripted in
/// `benches/manual-drain.sh` as runbooks do): `cell --status`, then `sleep 10`, again. Its polls
/// are therefore 10 s plus one call apart. cellctl polls at the same cycle: the next call starts
/// this long after the start of the last one plus that call's own duration. Why exactly that:
/// with a call of c seconds and a cycle of p, the wait for the first sighting after the last
/// job's end is p/2 on average, then cellctl spends one confirming call (c) and the shutdown
/// call (c), the script only the shutdown call. cellctl is expected to be no slower than the
/// script plus one tool call iff p <= 10 s + c; it makes at most one tool call more over the
/// same drain (the confirming one) iff p >= 10 s + c. A fixed 10 s from the start would be 1 s
/// quicker on average (with a 2 s tool) at 20 % more calls on the cell (every call a JVM
/// start); a fixed 12 s would assume the tool's start-up time. `--poll-interval` sets a fixed
/// period from the start of each call instead.
const SCRIPT_SLEEP: Duration = Duration::from_secs(10);
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

/// When to ask the tool next, counted from the start of the last call (`call_started`; it
/// answered at `polled_at`). The confirming poll (or, as Is Active lags the count, the one after
/// a zero count) is spaced `confirm_interval` from that start, so after a call at least that
/// slow (a JVM start) it follows at once. `signals`: the API's task list answers between polls.
pub(crate) fn next_tool_poll(
    d: &DrainSettings,
    confirming: bool,
    signals: bool,
    call_started: Instant,
    polled_at: Instant,
    left: Duration,
) -> Instant {
    let took = polled_at.saturating_duration_since(call_started);
    let next = if confirming {
        call_started + d.confirm_interval
    } else {
        let period = match d.poll_interval {
            Some(p) => p,
            // Both paces count from the end of the last call (its duration added to a period
            // counted from its start): a slow JVM start costs time, never extra calls.
            None if signals => TOOL_POLL_WITH_SIGNALS + took,
            // The manual procedure's cycle: its sleep plus the call (see SCRIPT_SLEEP).
            None => SCRIPT_SLEEP + took,
        };
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
        let polled_at = Instant::now();
        let confirming = seen_drained(run.rec.phase) > 0 || run.last_job_count == Some(0);
        let left = Duration::from_secs_f64(left.max(0.0));
        // Without an API client (it could not be set up) there is no task list to wait for:
        // the tool alone, at the manual procedure's pace, not the pace meant for when the task
        // list answers (a client whose reads fail falls back after its first failed read).
        let signals = w.api_ok && ctx.api.is_some();
        let next_tool = next_tool_poll(d, confirming, signals, call_started, polled_at, left);
        let fallback = next_tool_poll(d, confirming, false, call_started, polled_at, left);
        if hint_window(ctx, run, (d, deadline_at), w, &mut progress, (next_tool, fallback)).await? {
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
/// `signal_interval`; when it cannot answer, the tool poll is due at `fallback` (the pace
/// without signals). When it shows no task on this cell, that is a first sighting and the
/// tool is asked at once: the tool's answer alone can complete "drained". The progress line
/// ticks every second meanwhile. Returns true if a signal ended the wait.
async fn hint_window(
    ctx: &Ctx<'_>,
    run: &mut Run,
    (d, deadline_at): (&DrainSettings, f64),
    w: &mut Waiter,
    progress: &mut Progress,
    (mut next_tool, fallback): (Instant, Instant),
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
            None => next_tool = next_tool.min(fallback),
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
        assert_eq!(next_tool_poll(&d, false, false, t, t, left), t + SCRIPT_SLEEP);
        // A 2 s JVM start: 30 s (with the task list) or 10 s (without) after it ended.
        let answered = t + Duration::from_secs(2);
        assert_eq!(
            next_tool_poll(&d, false, true, t, answered, left),
            answered + TOOL_POLL_WITH_SIGNALS
        );
        assert_eq!(
            next_tool_poll(&d, false, false, t, answered, left),
            answered + SCRIPT_SLEEP
        );
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
        let d = settings(Some(10));
        let started = Instant::now();
        let answered = started + Duration::from_secs(3);
        let left = Duration::from_secs(600);
        // An explicit period: every 10 s from the start of the last call, not 10 s after a 3 s call.
        assert_eq!(
            next_tool_poll(&d, false, false, started, answered, left),
            started + Duration::from_secs(10)
        );
        // A call slower than the period still leaves a gap before the next.
        let slow = started + Duration::from_secs(12);
        assert_eq!(next_tool_poll(&d, false, false, started, slow, left), slow + MIN_GAP);
    }

    #[test]
    fn without_signals_the_cycle_is_the_manual_procedures() {
        let d = settings(None);
        let started = Instant::now();
        let left = Duration::from_secs(600);
        // The script sleeps 10 s after each call: with a 3 s call, its polls start 13 s apart.
        let answered = started + Duration::from_secs(3);
        assert_eq!(
            next_tool_poll(&d, false, false, started, answered, left),
            started + Duration::from_secs(13)
        );
    }

    /// One drain against a model of the tool whose calls take `c` and read the cell at their
    /// end; the last job ends at `end` after the first poll's start. Returns (status calls,
    /// reaction from the end to the end of the shutdown call). `cellctl`: two sightings in a
    /// row, timed by `next_tool_poll` without signals; else the script: one sighting, then
    /// the shutdown call, `sleep 10` after each call.
    fn drain_model(d: &DrainSettings, c: Duration, end: Duration, cellctl: bool) -> (u32, Duration) {
        let t0 = Instant::now();
        let (mut t, mut calls, mut seen) = (t0, 0u32, 0u8);
        loop {
            calls += 1;
            let answered = t + c;
            let drained = answered >= t0 + end;
            seen = if drained { seen + 1 } else { 0 };
            if seen >= if cellctl { DRAINED_CONFIRMATIONS } else { 1 } {
                return (calls, answered + c - (t0 + end));
            }
            t = if cellctl {
                let at = next_tool_poll(d, seen > 0, false, t, answered, Duration::from_secs(86_400));
                at.max(answered)
            } else {
                answered + SCRIPT_SLEEP
            };
        }
    }

    proptest::proptest! {
        /// Issue 17: without the API, cellctl is no slower than the manual procedure plus one
        /// tool call (the confirming one), and makes at most that one call more, wherever the
        /// last job's end falls and whatever the tool's start-up (a JVM: at least the 2 s
        /// confirm spacing).
        #[test]
        fn without_the_api_no_slower_than_the_script_plus_one_call(
            c_ms in 2_000u64..30_000,
            end_ms in 0u64..1_200_000,
        ) {
            let d = settings(None);
            let (c, end) = (Duration::from_millis(c_ms), Duration::from_millis(end_ms));
            let (calls, reaction) = drain_model(&d, c, end, true);
            let (script_calls, script_reaction) = drain_model(&d, c, end, false);
            proptest::prop_assert!(reaction <= script_reaction + c, "{reaction:?} vs {script_reaction:?} + {c:?}");
            proptest::prop_assert!(calls <= script_calls + 1, "{calls} vs {script_calls}");
        }

        /// Whatever the inputs: never past the deadline, the confirming poll never later than
        /// its spacing from the call's start (at once after a slow call), an ordinary poll never
        /// sooner than a breath after the answer unless the deadline comes first.
        #[test]
        fn next_poll_bounds(
            poll in proptest::option::of(1u64..120),
            confirming: bool,
            signals: bool,
            took_ms in 0u64..60_000,
            left_ms in 0u64..1_000_000,
        ) {
            let d = settings(poll);
            let started = Instant::now();
            let answered = started + Duration::from_millis(took_ms);
            let left = Duration::from_millis(left_ms);
            let next = next_tool_poll(&d, confirming, signals, started, answered, left);
            proptest::prop_assert!(next <= answered + left);
            if confirming {
                proptest::prop_assert!(next <= (started + d.confirm_interval).max(answered));
            } else {
                proptest::prop_assert!(next >= (answered + MIN_GAP).min(answered + left));
                let period = d.poll_interval.unwrap_or(if signals { TOOL_POLL_WITH_SIGNALS } else { SCRIPT_SLEEP });
                proptest::prop_assert!(next >= (started + period).min(answered + left));
            }
        }
    }

    #[test]
    fn one_sighting_at_the_deadline_earns_its_confirmation() {
        assert!(deadline_applies(0.0, 0));
        assert!(deadline_applies(-5.0, 0));
        assert!(!deadline_applies(-5.0, 1));
        assert!(!deadline_applies(0.1, 0));
    }
}
