//! The host's reboot through the service manager and the continuation after the boot, shared by
//! `maintain --reboot` and an appliance's upgrade (`../shared/research/vcd.md` §3: "you must
//! reboot each VMware Cloud Director appliance"). The boot id is recorded before the reboot is
//! requested, and the reboot step is journaled before it is taken: a continuation that finds
//! another boot id knows the reboot happened (even if the process was killed by it before it
//! could record the request), one that finds the same boot id knows it did not, and asks again.

use std::path::Path;
use std::time::Duration;

use crate::adapters::exec;
use crate::config::RebootSettings;
use crate::engine::context::Ctx;
use crate::engine::run::{Recorder, Run};
use crate::engine::{preflight, signals, units};
use crate::error::Error;
use crate::model::step::{ServiceState, Step, StepStatus};
use crate::store::record::BootIds;

/// What the reboot stage did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reboot {
    /// A new boot since the reboot was decided: the run goes on (its booted id recorded).
    Booted,
    /// The reboot was requested: this process ends here, the run recorded as rebooting.
    Requested,
}

pub(crate) fn read_boot_id(r: &RebootSettings) -> Result<String, Error> {
    std::fs::read_to_string(&r.boot_id_file)
        .map(|s| s.trim().to_string())
        .map_err(|e| {
            Error::Reboot(format!(
                "cannot read the boot id from {}: {e}; check --boot-id-file (CELLCTL_BOOT_ID_FILE, [maintain] boot_id_file)",
                r.boot_id_file.display()
            ))
        })
}

/// The stage reboot/rebooting of any run that reboots: its boot ids are `ids(run)`;
/// `requested_before` says the run is recorded as rebooting already (a reboot asked before).
/// `rerun` is what an operator runs to go on, for the error's words.
pub(crate) async fn reboot_or_booted(
    ctx: &Ctx<'_>,
    run: &mut Run,
    r: &RebootSettings,
    ids: fn(&mut Run) -> &mut BootIds,
    requested_before: bool,
    rerun: &str,
) -> Result<Reboot, Error> {
    let now = read_boot_id(r)?;
    match ids(run).boot_id.clone() {
        Some(b) if b != now => {
            tracing::info!("a new boot ({now}; the reboot was decided in boot {b}): continuing");
            ids(run).booted_id = Some(now.clone());
            close_request(run, &now)?;
            return Ok(Reboot::Booted);
        }
        Some(b) if requested_before => {
            tracing::warn!(
                "the reboot requested by run {} did not happen: this is still boot {b}; requesting it again",
                run.rec.run_id
            );
        }
        Some(_) => {}
        None => {
            ids(run).boot_id = Some(now);
            run.save()?;
        }
    }
    request(ctx, run, r, rerun).await?;
    Ok(Reboot::Requested)
}

/// A reboot request the reboot itself cut short (the process ended before it could record
/// the answer) is closed by the new boot, which says it happened.
fn close_request(run: &mut Run, now: &str) -> Result<(), Error> {
    let open = run
        .rec
        .steps
        .iter()
        .rposition(|s| s.step == Step::Reboot)
        .filter(|&i| run.rec.steps[i].status == StepStatus::Started);
    match open {
        Some(idx) => run.end(
            idx,
            StepStatus::Done,
            Some(format!(
                "the new boot ({now}) says it happened; the reboot ended this process before it could record so"
            )),
        ),
        None => run.save(),
    }
}

/// Ask the service manager to reboot (step `reboot`, recorded before it is taken).
async fn request(ctx: &Ctx<'_>, run: &mut Run, r: &RebootSettings, rerun: &str) -> Result<(), Error> {
    let idx = run.begin(Step::Reboot)?;
    let cmd = r.reboot_command.join(" ");
    tracing::info!("rebooting through the service manager: {cmd}");
    let (prog, args) = r.reboot_command.split_first().expect("checked non-empty");
    let res = match exec::run(Path::new(prog), args, ctx.s.tool_timeout).await {
        Ok(out) if out.success() => Ok(()),
        Ok(out) => Err(format!(
            "{} ({}): {}",
            cmd,
            out.describe_exit(),
            units::last_lines(&out.stderr, 3)
        )),
        Err(e) => Err(format!("{cmd}: {e}")),
    };
    if let Err(why) = res {
        let e = Error::Reboot(format!(
            "the reboot could not be requested: {why}; the cell stays drained and shut down: fix it and rerun {rerun}, or reboot yourself (the continuation finishes after the boot)"
        ));
        return Err(run.fail_step(idx, e));
    }
    run.end(idx, StepStatus::Done, Some(format!("`{cmd}` accepted")))
}

/// After the boot (once per run: step `continue_after_boot`): wait for the cell's service to
/// run; at the deadline go on (the start that follows starts it). A signal ends the wait.
pub(crate) async fn wait_for_service(ctx: &Ctx<'_>, run: &mut Run, wait: Duration, rerun: &str) -> Result<(), Error> {
    if run.step_done(Step::ContinueAfterBoot) {
        return Ok(());
    }
    let idx = run.begin(Step::ContinueAfterBoot)?;
    let name = ctx.service.name.clone();
    let began = tokio::time::Instant::now();
    let until = began + wait;
    let mut sig = ctx.sig.clone();
    loop {
        if preflight::service_state(&ctx.service).await.ok() == Some(ServiceState::Running) {
            let took = humantime::format_duration(Duration::from_secs(began.elapsed().as_secs()));
            return run.end(
                idx,
                StepStatus::Done,
                Some(format!("service {name} running after the boot (waited {took})")),
            );
        }
        if tokio::time::Instant::now() >= until {
            let w = humantime::format_duration(wait);
            tracing::warn!("service {name} did not start within {w} after the boot: starting it");
            return run.end(
                idx,
                StepStatus::Done,
                Some(format!(
                    "service {name} not started by the service manager within {w}: cellctl starts it"
                )),
            );
        }
        tokio::select! {
            biased;
            s = sig.received() => {
                let e = Error::Interrupted {
                    signal: s,
                    name: signals::name(s),
                    state: format!("the cell's service was not yet seen after the boot: {rerun} goes on"),
                };
                return Err(run.fail_step(idx, e));
            }
            () = tokio::time::sleep(Duration::from_secs(1).min(until.saturating_duration_since(tokio::time::Instant::now()))) => {}
        }
    }
}
