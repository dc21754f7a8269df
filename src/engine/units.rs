//! A step that runs in a transient systemd unit (the installer, the database upgrade), never
//! in cellctl's own cgroup. Recorded before it starts; a rerun after a crash picks up the
//! unit's result instead of starting it again.

use std::time::Duration;

use crate::adapters::install::{InstallError, Learned, Transient, UnitSpec, UnitStatus};
use crate::config::Settings;
use crate::error::Error;
use crate::model::step::{Step, StepStatus};

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
    /// The command a rerun uses to continue.
    pub rerun: &'static str,
}

impl UnitStep {
    pub fn error(&self, e: InstallError) -> Error {
        if self.step == Step::DbUpgrade {
            Error::DbUpgrade(e)
        } else {
            Error::Install(e)
        }
    }
}

/// Run a unit (or pick up the one a previous process started) and wait for its result.
/// The first signal stops the waiting, not the unit: a rerun learns its result.
pub(crate) async fn unit_result(
    ctx: &Ctx<'_>,
    run: &mut Run,
    us: UnitStep,
    spec: UnitSpec,
    tr: &Transient,
    retry: bool,
) -> Result<UnitStatus, Error> {
    let pending = match run.rec.last(us.step).map(|s| s.status) {
        Some(StepStatus::Started) => match tr.learn(&spec.unit).await {
            Learned::Finished(st) => {
                tracing::info!(unit = %spec.unit, "{} finished while cellctl was away: {}", us.what, st.describe());
                return Ok(st);
            }
            Learned::Running(pid) => {
                tracing::info!(unit = %spec.unit, pid, "{} is still running; waiting for it", us.what);
                true
            }
            Learned::Unknown if retry => false,
            Learned::Unknown => {
                return Err(us.error(InstallError::Unknown {
                    unit: spec.unit.clone(),
                }));
            }
        },
        Some(StepStatus::Failed) if !retry => {
            return Err(Error::Conflict(format!(
                "{} failed earlier in run {}; fix the cause, then rerun with --retry-install (or undo nothing: the cell is stopped)",
                us.what, run.rec.run_id
            )));
        }
        _ => false,
    };
    if !pending {
        let idx = run.begin(us.step)?;
        run.rec.steps[idx].detail = Some(format!("unit {}", spec.unit));
        run.save()?;
        tracing::info!(unit = %spec.unit, "running {} in a transient unit: {} {}", us.what, spec.program.display(), spec.args.join(" "));
    }
    let fut = async {
        if pending {
            tr.wait_for(&spec.unit, spec.timeout, us.what).await
        } else {
            tr.run(&spec, us.what).await
        }
    };
    let mut sig = ctx.sig.clone();
    tokio::select! {
        biased;
        s = sig.received() => Err(Error::Interrupted {
            signal: s,
            name: signals::name(s),
            state: format!("{} runs on in unit {}: rerun `cellctl {}` to pick up its result", us.what, spec.unit, us.rerun),
        }),
        r = fut => r.map_err(|e| us.error(e)),
    }
}

/// Run (or pick up) a unit step and judge its result: Ok with the step's index when the unit
/// succeeded (the caller ends the step), else the step is recorded failed. `keep_tail` stores
/// the unit's redacted output tail first, whatever the result.
pub(crate) async fn run_step(
    ctx: &Ctx<'_>,
    run: &mut Run,
    us: UnitStep,
    spec: UnitSpec,
    tr: &Transient,
    retry: bool,
    keep_tail: fn(&mut Run, String),
) -> Result<(UnitStatus, usize), Error> {
    let unit = spec.unit.clone();
    let limit = spec.timeout;
    let st = unit_result(ctx, run, us, spec, tr, retry).await?;
    let tail = ctx.tool.password.redact(&tr.tail(&unit));
    keep_tail(run, tail.clone());
    let idx = judge(run, us, &unit, &st, limit, &tail)?;
    Ok((st, idx))
}

/// Judge a unit's result: a unit killed by a signal after running for its whole limit was
/// stopped by systemd at RuntimeMaxSec (the configured timeout) and is reported as such. On
/// failure the step is recorded failed and the error returned.
fn judge(
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
