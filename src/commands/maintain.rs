//! `cellctl maintain`: drain, run COMMAND in a transient unit (as the installer runs), then
//! either start the cell and check its health, or record "rebooting" with the boot id and
//! reboot through the service manager; `--continue` picks the run up after the boot (or after
//! a failed COMMAND) and finishes it. The record's stage says where a rerun picks up.

use std::path::Path;
use std::time::Duration;

use crate::adapters::exec;
use crate::adapters::install::UnitSpec;
use crate::config::{DrainSettings, MaintainSettings, Settings};
use crate::engine::context::Ctx;
use crate::engine::lifecycle::Procedure;
use crate::engine::reboot::{self, Reboot};
use crate::engine::run::{Recorder, Run};
use crate::engine::units::{self, NoWitness, Recovery, UnitStep};
use crate::engine::{drain, health, preflight, signals};
use crate::error::{Error, Precheck};
use crate::model::machine::Transition;
use crate::model::maintain::{MaintEvent, MaintStage, RebootPolicy};
use crate::model::outcome::{CommandName, Outcome};
use crate::model::phase::Phase;
use crate::model::step::{Before, Step, StepStatus};
use crate::model::time::{new_run_id, unix_now};
use crate::output::report::Report;
use crate::store::journal::Journal;
use crate::store::record::{BootIds, MaintainRecord, RunRecord};

/// What `maintain` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct MaintainOptions {
    /// The COMMAND (empty with `--continue`: the recorded one).
    pub command: Vec<String>,
    pub reboot: RebootPolicy,
    pub continue_run: bool,
    pub drain: DrainSettings,
    pub health_deadline: Duration,
    pub m: MaintainSettings,
}

pub(crate) struct Maintain<'a>(pub &'a MaintainOptions);

const COMMAND: UnitStep = UnitStep {
    step: Step::Command,
    what: "the maintenance command",
};

fn maint(run: &Run) -> &MaintainRecord {
    run.rec.maintain.as_ref().expect("a maintain record")
}

fn maint_mut(run: &mut Run) -> &mut MaintainRecord {
    run.rec.maintain.as_mut().expect("a maintain record")
}

fn event(run: &mut Run, ev: MaintEvent) -> Result<(), Error> {
    run.apply(Transition::Maint(ev))
}

/// What `maintain --continue` continues.
#[derive(Debug)]
pub(crate) enum Continuation {
    /// Nothing, and why (said before any lock, password or cell is touched).
    Nothing(String),
    /// The recorded run is this command's (or one it refuses with its own words).
    Maintain,
    /// An appliance's `upgrade` (or `install`) after its reboot: the same continuation finishes
    /// it, through its own procedure.
    Appliance {
        command: CommandName,
        db_upgrade: bool,
        start: bool,
    },
}

/// What `maintain --continue [--at-boot]` has to do: `--at-boot` (the boot unit, every boot)
/// only continues a run recorded as rebooting.
pub(crate) fn continuation(s: &Settings, at_boot: bool) -> Result<Continuation, Error> {
    if at_boot && !s.state_dir.exists() {
        return Ok(Continuation::Nothing("no run is recorded".into()));
    }
    let Some(r) = Journal::open(&s.state_dir)?.current()? else {
        return Ok(Continuation::Nothing("no run is recorded".into()));
    };
    if let Some(up) = r.upgrade.as_ref().filter(|u| u.appliance.is_some()) {
        if at_boot && !up.stage.rebooting() {
            return Ok(Continuation::Nothing(format!(
                "appliance {} run {} is at stage {}, not rebooting: nothing to do at boot; {}",
                r.command,
                r.run_id,
                up.stage,
                r.advice()
            )));
        }
        return Ok(Continuation::Appliance {
            command: r.command,
            db_upgrade: up.db_upgrade,
            start: up.start,
        });
    }
    Ok(match &r.maintain {
        Some(m) if at_boot && !m.stage.rebooting() => Continuation::Nothing(format!(
            "maintain run {} is at stage {}, not rebooting: nothing to do at boot; {}",
            r.run_id,
            m.stage,
            r.advice()
        )),
        None if at_boot => Continuation::Nothing(format!(
            "a `{}` run ({}) is recorded, not a rebooting one: nothing to do at boot",
            r.command, r.run_id
        )),
        _ => Continuation::Maintain,
    })
}

impl Procedure for Maintain<'_> {
    fn command(&self) -> CommandName {
        CommandName::Maintain
    }

    fn takes_over(&self, rec: &RunRecord) -> bool {
        rec.command == CommandName::Maintain && rec.maintain.is_some()
    }

    async fn start(&self, ctx: &Ctx<'_>, report: &mut Report) -> Result<Option<RunRecord>, Error> {
        let o = self.0;
        if o.continue_run {
            report.outcome = Outcome::NothingToContinue;
            return Ok(None);
        }
        if !crate::engine::preflight::resolvable(&ctx.s.install.systemd_run) {
            return Err(Precheck::NoSystemdRun {
                path: ctx.s.install.systemd_run.display().to_string(),
            }
            .into());
        }
        let run_id = new_run_id();
        report.run_id = Some(run_id.clone());
        let (st, svc) = preflight::cell(&ctx.tool, &ctx.service).await?;
        let Some(st) = st else {
            return Err(Error::Conflict(format!(
                "service {} is {svc}: `maintain` drains a running cell; start it first (`cellctl start`), or run the command yourself",
                ctx.service.name
            )));
        };
        let guard = preflight::redundancy_guard(ctx.s, o.drain.allow_last_cell, &ctx.tool).await?;
        let before = Before {
            job_count: st.job_count,
            is_active: st.is_active,
            in_maintenance: st.in_maintenance,
            service: svc,
        };
        let mut rec = super::drain::new_record(
            ctx,
            CommandName::Maintain,
            run_id.clone(),
            Some(&o.drain),
            before,
            Some(guard),
        );
        rec.maintain = Some(MaintainRecord {
            stage: MaintStage::Drain,
            reboot: o.reboot,
            command: o.command.clone(),
            unit: format!("cellctl-maintain-{run_id}"),
            attempts: 0,
            exit_code: None,
            result: None,
            output_tail: None,
            reboot_reason: None,
            boot: BootIds::default(),
        });
        tracing::info!(command = %o.command.join(" "), reboot = ?o.reboot, "preflight passed");
        Ok(Some(rec))
    }

    async fn continue_record(&self, _ctx: &Ctx<'_>, rec: &mut RunRecord) -> Result<(), Error> {
        let o = self.0;
        let m = rec.maintain.as_ref().expect("takes_over checked");
        if !o.command.is_empty() && o.command != m.command {
            return Err(Error::Conflict(format!(
                "maintain run {} runs `{}`, not `{}`: finish it first (`cellctl maintain --continue`) or undo it (`cellctl resume`)",
                rec.run_id,
                m.command.join(" "),
                o.command.join(" ")
            )));
        }
        tracing::info!(run_id = %rec.run_id, stage = %m.stage, "continuing the recorded maintain run from {}", rec.started_at);
        if o.drain.deadline_explicit {
            rec.deadline_unix = unix_now() + o.drain.deadline.as_secs_f64();
            rec.options.deadline_secs = o.drain.deadline.as_secs();
        }
        Ok(())
    }

    /// The guard again, now that the slot keeps other cells from starting: two timers that
    /// fired together each saw the other serving.
    async fn after_slot(&self, ctx: &Ctx<'_>, _run: &mut Run) -> Result<(), Error> {
        let line = preflight::redundancy_guard(ctx.s, self.0.drain.allow_last_cell, &ctx.tool).await?;
        tracing::info!("slot taken; {line}");
        Ok(())
    }

    async fn enter(&self, ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
        run.save()?;
        if maint(run).stage == MaintStage::Drain {
            return drain::enter(ctx, run, self.0.drain.maintenance).await;
        }
        Ok(())
    }

    async fn drive(&self, ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
        let o = self.0;
        let tr = units::transient(ctx.s);
        loop {
            let stage = maint(run).stage;
            let r = match stage {
                MaintStage::Drain => {
                    drain::drive(ctx, run, &o.drain).await;
                    let down = matches!(
                        run.rec.phase,
                        Phase::Done {
                            outcome: Outcome::ShutDown | Outcome::Forced
                        }
                    );
                    if !down {
                        // Aborted, interrupted, failed: the drain's own conclusion says it all.
                        return Ok(());
                    }
                    event(run, MaintEvent::Drained)
                }
                MaintStage::Done | MaintStage::Undone => return Ok(()),
                _ if ctx.sig.pending().is_some() => Err(interrupted(ctx, stage)),
                MaintStage::Command => command_stage(ctx, run, o, &tr).await,
                MaintStage::Reboot | MaintStage::Rebooting => match reboot_stage(ctx, run, o).await {
                    Ok(true) => continue,
                    Ok(false) => return Ok(()),
                    Err(e) => Err(e),
                },
                MaintStage::Start => start_stage(ctx, run, o).await,
            };
            if let Err(e) = r {
                tracing::error!("{e}");
                return Err(e);
            }
        }
    }
}

/// A signal between stages: nothing of the next stage is begun.
fn interrupted(ctx: &Ctx<'_>, stage: MaintStage) -> Error {
    let sg = ctx.sig.pending().unwrap_or(signal_hook::consts::SIGTERM);
    Error::Interrupted {
        signal: sg,
        name: signals::name(sg),
        state: format!(
            "the cell is drained and shut down; nothing of stage {stage} was begun: `cellctl maintain --continue` goes on, `cellctl resume` brings the cell back"
        ),
    }
}

/// Run (or pick up) the COMMAND in its unit; its exit code and output tail go into the record
/// whatever its result. A failure leaves the cell drained (exit 26).
async fn command_stage(
    ctx: &Ctx<'_>,
    run: &mut Run,
    o: &MaintainOptions,
    tr: &crate::adapters::install::Transient,
) -> Result<(), Error> {
    let m = maint(run).clone();
    let (program, args) = m
        .command
        .split_first()
        .ok_or_else(|| Error::Internal("a maintain record without its command".into()))?;
    let spec = UnitSpec {
        unit: m.unit.clone(),
        description: format!("cellctl maintain: {}", m.command.join(" ")),
        program: program.into(),
        args: args.to_vec(),
        answers: vec![],
        env: vec![],
        timeout: o.m.timeout,
    };
    if run
        .rec
        .last(Step::Command)
        .is_none_or(|s| s.status != StepStatus::Started)
    {
        maint_mut(run).attempts += 1;
    }
    // Asked again (a rerun, `--continue`): a failed or lost COMMAND runs again.
    let recovery = Recovery {
        retry: true,
        witness: &NoWitness("a maintenance command leaves no sign that cellctl can read"),
    };
    let res = units::unit_result(ctx, run, COMMAND, spec, tr, &recovery).await?;
    let tail = ctx.tool.password.redact(&tr.tail(&m.unit));
    let mr = maint_mut(run);
    mr.output_tail = Some(tail.clone());
    mr.exit_code = res.status.code;
    mr.result = Some(res.describe());
    let idx = units::judge(run, COMMAND, &m.unit, &res.status, o.m.timeout, &tail)?;
    run.end(
        idx,
        StepStatus::Done,
        Some(format!("unit {}: {}", m.unit, res.describe())),
    )?;
    tracing::info!("the maintenance command succeeded ({})", res.describe());
    let reboot = match m.reboot {
        RebootPolicy::Never => false,
        RebootPolicy::Always => {
            maint_mut(run).reboot_reason = Some("--reboot".into());
            true
        }
        RebootPolicy::IfRequired => {
            let (yes, why) = reboot_required(&o.m, ctx.s.tool_timeout).await;
            tracing::info!("--reboot-if-required: {why}");
            maint_mut(run).reboot_reason = Some(why);
            yes
        }
    };
    event(run, MaintEvent::CommandSucceeded { reboot })
}

/// Does the system say it needs a reboot? A reboot-required file, or `needs-restarting -r`
/// (where present) exiting 1. With the reason in words.
async fn reboot_required(m: &MaintainSettings, timeout: Duration) -> (bool, String) {
    if let Some(f) = m.reboot_required_files.iter().find(|f| f.exists()) {
        return (true, format!("{} exists", f.display()));
    }
    let files = m
        .reboot_required_files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let Some((prog, args)) = m.needs_restarting.split_first() else {
        return (false, format!("no reboot required: none of {files} exists"));
    };
    let cmd = m.needs_restarting.join(" ");
    if !crate::engine::preflight::resolvable(Path::new(prog)) {
        return (
            false,
            format!("no reboot required: none of {files} exists ({prog} is not here)"),
        );
    }
    match exec::run(Path::new(prog), args, timeout).await {
        Ok(out) if out.code == Some(1) => (true, format!("`{cmd}` exited 1: a reboot is required")),
        Ok(out) if out.success() => (
            false,
            format!("no reboot required: none of {files} exists and `{cmd}` exited 0"),
        ),
        Ok(out) => (
            false,
            format!(
                "no reboot: none of {files} exists and `{cmd}` could not tell ({})",
                out.describe_exit()
            ),
        ),
        Err(e) => (
            false,
            format!("no reboot: none of {files} exists and `{cmd}` failed: {e}"),
        ),
    }
}

/// What an operator runs to go on with a `maintain` run.
const CONTINUE: &str = "`cellctl maintain --continue`";

fn boot_ids(run: &mut Run) -> &mut BootIds {
    &mut maint_mut(run).boot
}

/// Stage reboot/rebooting (`engine::reboot`): a new boot moves on to the start (true); else
/// the reboot is requested (false: this process ends, the run recorded as rebooting).
async fn reboot_stage(ctx: &Ctx<'_>, run: &mut Run, o: &MaintainOptions) -> Result<bool, Error> {
    let before = maint(run).stage == MaintStage::Rebooting;
    match reboot::reboot_or_booted(ctx, run, &o.m.reboot, boot_ids, before, CONTINUE).await? {
        Reboot::Booted => {
            event(run, MaintEvent::Booted)?;
            Ok(true)
        }
        Reboot::Requested => {
            event(run, MaintEvent::RebootRequested)?;
            Ok(false)
        }
    }
}

/// Start the cell and check its health; after a reboot, first wait (with a deadline) for the
/// service manager to bring the cell's service up.
async fn start_stage(ctx: &Ctx<'_>, run: &mut Run, o: &MaintainOptions) -> Result<(), Error> {
    if maint(run).boot.booted_id.is_some() {
        reboot::wait_for_service(ctx, run, o.m.reboot.service_wait, CONTINUE).await?;
    }
    health::start_and_wait(run, &ctx.tool, &ctx.service, ctx.s, o.health_deadline, ctx.sig.clone()).await?;
    restore_maintenance(ctx, run).await?;
    event(run, MaintEvent::Started)
}

/// The maintenance message is turned off only if this run set it (as `resume` undoes only
/// what its run did): when it was on before the run (the drain left it as found), the health
/// check needed it off, and it goes back on once the cell is seen healthy.
async fn restore_maintenance(ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
    let was_on = run.rec.before.as_ref().is_some_and(|b| b.in_maintenance == Some(true));
    if !was_on {
        return Ok(());
    }
    let idx = run.begin(Step::MaintenanceOn)?;
    tracing::info!("maintenance message back on: it was on before this run");
    match ctx.tool.maintenance_on().await {
        Ok(()) => run.end(
            idx,
            StepStatus::Done,
            Some("restored: the message was on before this run; the cell was seen healthy first".into()),
        ),
        Err(e) => Err(run.fail_step(idx, e.into())),
    }
}
