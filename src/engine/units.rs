//! A step that runs in a transient systemd unit (the installer, the database upgrade), never
//! in cellctl's own cgroup. Recorded before it starts; a rerun after a crash picks up the
//! unit's result instead of starting it again. Without a result, what the unit left tells
//! whether it never started (start it: no flag needed), and else the step's own witness (the
//! installed version) whether it did its work; only what neither can tell needs
//! `--retry-install`.

use std::time::Duration;

use crate::adapters::install::{InstallError, Learned, Transient, UnitSpec, UnitStatus};
use crate::config::Settings;
use crate::error::Error;
use crate::model::outcome::CommandName;
use crate::model::step::{Step, StepStatus};
use crate::model::time::Timestamp;

use super::context::Ctx;
use super::run::{Recorder, Run};
use super::signals;

/// The transient-unit runner of these settings.
pub(crate) fn transient(s: &Settings) -> Transient {
    Transient {
        systemd_run: s.install.systemd_run.clone(),
        self_exe: std::env::current_exe().unwrap_or_else(|_| "/usr/bin/cellctl".into()),
        dir: s.state_dir.join("units"),
    }
}

/// A unit step: what it is called in messages and how its failures are classed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnitStep {
    pub step: Step,
    pub what: &'static str,
}

impl UnitStep {
    pub fn error(&self, e: InstallError) -> Error {
        if self.step == Step::DbUpgrade {
            Error::DbUpgrade(e)
        } else if self.step == Step::Command {
            Error::Maintenance(e)
        } else {
            Error::Install(e)
        }
    }
}

/// A unit step's result, and how it was had when not from the unit's own record.
#[derive(Debug)]
pub(crate) struct UnitResult {
    pub status: UnitStatus,
    /// Set when the unit ended without a result and the step's own effect told it: how.
    pub learned: Option<String>,
}

impl UnitResult {
    pub fn describe(&self) -> String {
        self.learned.clone().unwrap_or_else(|| self.status.describe())
    }
}

/// What the system shows of a step's effect, for a unit that ended without a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// It happened, certainly: how that is known.
    Happened(String),
    /// It cannot be told: what was seen.
    Uncertain(String),
}

/// A step's own sign of what its unit did (an installer's: the installed version). Asked only
/// when the unit's own record is lost, so running the unit again is never guessed.
pub(crate) trait Witness {
    async fn effect(&self) -> Effect;
}

/// A step that leaves no sign of its own to check.
pub(crate) struct NoWitness(pub &'static str);

impl Witness for NoWitness {
    async fn effect(&self) -> Effect {
        Effect::Uncertain(self.0.into())
    }
}

/// What a rerun may do with a unit step recorded before.
pub(crate) struct Recovery<'a, W> {
    /// `--retry-install`: run the unit again after a failure or an unknown end.
    pub retry: bool,
    /// Asked when the unit ended without a result.
    pub witness: &'a W,
}

/// Picking up a unit step recorded before: its result, or start the unit (reusing the step's
/// record when the unit never started).
enum Next {
    Have(UnitResult),
    Start { reuse: bool },
}

/// The first signal stops the waiting, not the unit: a rerun learns its result.
async fn interruptible<T>(
    ctx: &Ctx<'_>,
    (us, command): (UnitStep, CommandName),
    unit: &str,
    fut: impl Future<Output = Result<T, InstallError>>,
) -> Result<T, Error> {
    let mut sig = ctx.sig.clone();
    tokio::select! {
        biased;
        s = sig.received() => Err(Error::Interrupted {
            signal: s,
            name: signals::name(s),
            state: format!("{} runs on in unit {unit}: rerun `cellctl {command}` to pick up its result", us.what),
        }),
        r = fut => r.map_err(|e| us.error(e)),
    }
}

/// What became of a unit step recorded before (as the journal says): learned from every trace
/// the unit left, waiting for it if it runs on.
async fn pick_up<W: Witness>(
    ctx: &Ctx<'_>,
    run: &Run,
    us: UnitStep,
    spec: &UnitSpec,
    tr: &Transient,
    rec: &Recovery<'_, W>,
) -> Result<Next, Error> {
    let unit = spec.unit.as_str();
    match run.rec.last(us.step).map(|s| s.status) {
        Some(StepStatus::Started) => {}
        Some(StepStatus::Failed) if !rec.retry => {
            return Err(Error::Conflict(format!(
                "{} failed earlier in run {}; fix the cause, then rerun with --retry-install (or undo nothing: the cell is stopped)",
                us.what, run.rec.run_id
            )));
        }
        _ => return Ok(Next::Start { reuse: false }),
    }
    let learned = match tr.learn(unit).await {
        Learned::Running(pid) => {
            tracing::info!(unit, pid, "{} is still running; waiting for it", us.what);
            interruptible(
                ctx,
                (us, run.rec.command),
                unit,
                tr.wait_for(unit, spec.timeout, us.what),
            )
            .await?
        }
        other => other,
    };
    match learned {
        Learned::Finished(st) => {
            tracing::info!(unit, "{} finished while cellctl was away: {}", us.what, st.describe());
            Ok(Next::Have(UnitResult {
                status: st,
                learned: None,
            }))
        }
        Learned::NeverStarted => {
            tracing::info!(
                unit,
                "{} never started (no trace of its unit): starting it now",
                us.what
            );
            Ok(Next::Start { reuse: true })
        }
        Learned::Unknown { why } => lost(us, unit, why, rec).await,
        Learned::Running(_) => Err(Error::Internal("a unit waited for is still running".into())),
    }
}

/// A unit that ended without a result: the step's own effect may tell it; else only
/// `--retry-install` runs it again.
async fn lost<W: Witness>(us: UnitStep, unit: &str, why: String, rec: &Recovery<'_, W>) -> Result<Next, Error> {
    match rec.witness.effect().await {
        Effect::Happened(how) => {
            tracing::info!(
                unit,
                "{} ended without a result ({why}), but it did its work: {how}",
                us.what
            );
            Ok(Next::Have(UnitResult {
                status: UnitStatus {
                    code: Some(0),
                    signal: None,
                    ended_at: Timestamp::now(),
                },
                learned: Some(format!("no result recorded ({why}); {how}")),
            }))
        }
        Effect::Uncertain(seen) if rec.retry => {
            tracing::warn!(
                unit,
                "{} ended without a result ({why}; {seen}): running it again (--retry-install)",
                us.what
            );
            Ok(Next::Start { reuse: false })
        }
        Effect::Uncertain(seen) => Err(us.error(InstallError::Unknown {
            unit: unit.into(),
            why: format!("{why}; {seen}"),
        })),
    }
}

/// Run a unit (or pick up the one a previous process started) and wait for its result.
pub(crate) async fn unit_result<W: Witness>(
    ctx: &Ctx<'_>,
    run: &mut Run,
    us: UnitStep,
    spec: UnitSpec,
    tr: &Transient,
    rec: &Recovery<'_, W>,
) -> Result<UnitResult, Error> {
    let reuse = match pick_up(ctx, run, us, &spec, tr, rec).await? {
        Next::Have(r) => return Ok(r),
        Next::Start { reuse } => reuse,
    };
    // Before the step is recorded: files seen after a crash are then this attempt's.
    tr.clear(&spec.unit).map_err(|e| us.error(e))?;
    let idx = match run.last_idx(us.step) {
        Some(idx) if reuse => idx,
        _ => run.begin(us.step)?,
    };
    let step = &mut run.rec.steps[idx];
    if reuse {
        // The unit starts now: its time limit counts from here.
        step.started_at = Timestamp::now();
    }
    step.detail = Some(format!("unit {}", spec.unit));
    run.save()?;
    tracing::info!(unit = %spec.unit, "running {} in a transient unit: {} {}", us.what, spec.program.display(), spec.args.join(" "));
    let status = interruptible(ctx, (us, run.rec.command), &spec.unit, tr.run(&spec, us.what)).await?;
    Ok(UnitResult { status, learned: None })
}

/// Run (or pick up) a unit step and judge its result: Ok with the step's index when the unit
/// succeeded (the caller ends the step), else the step is recorded failed. `keep_tail` stores
/// the unit's redacted output tail first, whatever the result.
pub(crate) async fn run_step<W: Witness>(
    ctx: &Ctx<'_>,
    run: &mut Run,
    us: UnitStep,
    spec: UnitSpec,
    tr: &Transient,
    rec: &Recovery<'_, W>,
    keep_tail: fn(&mut Run, String),
) -> Result<(UnitResult, usize), Error> {
    let unit = spec.unit.clone();
    let limit = spec.timeout;
    let res = unit_result(ctx, run, us, spec, tr, rec).await?;
    let tail = ctx.tool.password.redact(&tr.tail(&unit));
    keep_tail(run, tail.clone());
    let idx = judge(run, us, &unit, &res.status, limit, &tail)?;
    Ok((res, idx))
}

/// Judge a unit's result: a unit killed by a signal after running for its whole limit was
/// stopped by systemd at RuntimeMaxSec (the configured timeout) and is reported as such. On
/// failure the step is recorded failed and the error returned.
pub(crate) fn judge(
    run: &mut Run,
    us: UnitStep,
    unit: &str,
    st: &UnitStatus,
    limit: Duration,
    tail: &str,
) -> Result<usize, Error> {
    let idx = run.last_idx(us.step).expect("a unit step was begun");
    let ran = run.rec.steps[idx].started_at.elapsed();
    if st.signal.is_some() && ran >= limit {
        let e = InstallError::Hung {
            what: us.what.into(),
            unit: unit.into(),
            after: limit,
        };
        return Err(run.fail_step(idx, us.error(e)));
    }
    if !st.success() {
        let e = InstallError::Failed {
            what: us.what.into(),
            unit: unit.into(),
            result: st.describe(),
            tail: last_lines(tail, 3),
        };
        return Err(run.fail_step(idx, us.error(e)));
    }
    Ok(idx)
}

/// The last `n` lines of a unit's output, on one line (for error messages).
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
