//! The VCD appliance's steps of `install` and `upgrade` (`../shared/research/vcd.md` §3,
//! "Appliance"): before the drain, unpack the `_update.tar.gz` into a fresh folder of its own,
//! `vamicli update --repo file:///FOLDER`, and `vamicli update --check` must offer the
//! package's version, newer than the installed one; after the drain `vamicli update --install
//! latest --accepteula` runs in a transient unit (the install stage shared with Linux cells),
//! then (`upgrade`) the reboot the vendor requires, recorded before it is requested
//! (`engine::reboot`, as `maintain --reboot`), and after the boot the continuation waits for the
//! cell, checks its health and that the installed version is the package's, and only then
//! removes the unpacked folder. `install` (which never starts the cell) removes the folder once
//! the install's version is verified and leaves the reboot to the operator.

use crate::adapters::appliance::{self as vami, ApplianceError};
use crate::adapters::exec;
use crate::adapters::install::UnitSpec;
use std::cmp::Ordering;

use crate::adapters::package::{Package, compare_versions};
use crate::config::{DrainSettings, RebootSettings, Settings};
use crate::engine::context::Ctx;
use crate::engine::preflight::installed_version;
use crate::engine::reboot::{self, Reboot};
use crate::engine::run::{Recorder, Run};
use crate::engine::{drain, health, preflight, signals};
use crate::error::Error;
use crate::model::outcome::{CommandName, Outcome};
use crate::model::phase::{Event, Phase};
use crate::model::stage::{Stage, StageEvent};
use crate::model::step::Before;
use crate::model::step::{ServiceState, Step, StepStatus};
use crate::model::time::new_run_id;
use crate::store::journal::Journal;
use crate::store::record::{ApplianceRecord, BootIds, RunRecord, UpgradeRecord};

/// The appliance part of a new run's record: its own folder in the unpack dir, named by the run.
pub(crate) fn new_record(s: &Settings, run_id: &str) -> ApplianceRecord {
    let folder = s.install.unpack_dir.join(format!("cellctl-update-{run_id}"));
    ApplianceRecord {
        repo: vami::repo_url(&folder),
        folder,
        offered: None,
        folder_removed: false,
        boot: BootIds::default(),
    }
}

fn up(run: &Run) -> &UpgradeRecord {
    run.rec.upgrade.as_ref().expect("an install/upgrade record")
}

fn package(run: &Run) -> &Package {
    up(run).package.as_ref().expect("an appliance update names its package")
}

fn appl(run: &Run) -> &ApplianceRecord {
    up(run).appliance.as_ref().expect("an appliance record")
}

fn appl_mut(run: &mut Run) -> &mut ApplianceRecord {
    run.rec
        .upgrade
        .as_mut()
        .and_then(|u| u.appliance.as_mut())
        .expect("an appliance record")
}

/// Stage unpack: the package into its fresh folder. A rerun after a crash mid-unpack finds
/// a partial folder: it is removed and the package unpacked again.
pub(crate) fn unpack_stage(s: &Settings, run: &mut Run) -> Result<(), Error> {
    let pkg = package(run).clone();
    let folder = appl(run).folder.clone();
    let idx = run.begin(Step::Unpack)?;
    if folder.exists() {
        std::fs::remove_dir_all(&folder).map_err(|e| {
            run.fail_step(
                idx,
                Error::Internal(format!("cannot remove the partial {}: {e}", folder.display())),
            )
        })?;
    }
    // The room was checked before the run began; a rerun checks again (with the same code).
    let room = match preflight::space_needed(s, Some(&pkg)) {
        Some(needed) => preflight::check_space(s, needed).map(|_| ()),
        None => Ok(()),
    };
    if let Err(e) = room {
        return Err(run.fail_step(idx, e));
    }
    match vami::unpack(&pkg.path, &folder) {
        Ok(n) => {
            run.end(
                idx,
                StepStatus::Done,
                Some(format!("{n} bytes into {}", folder.display())),
            )?;
            run.stage_event(StageEvent::Unpacked)
        }
        Err(e) => Err(run.fail_step(idx, e.into())),
    }
}

/// A vamicli call that a signal abandons (the call is killed with its future).
async fn vamicli(ctx: &Ctx<'_>, args: &[&str]) -> Result<exec::Output, Error> {
    let mut sig = ctx.sig.clone();
    tokio::select! {
        r = vami::call(&ctx.s.install.vamicli, args, ctx.s.tool_timeout) => r.map_err(Error::from),
        s = sig.received() => Err(Error::Interrupted {
            signal: s,
            name: signals::name(s),
            state: format!("`vamicli {}` was stopped; nothing of the cell was changed", args.join(" ")),
        }),
    }
}

/// Stage set_repo: `vamicli update --repo file:///FOLDER` (setting it again is harmless).
pub(crate) async fn repo_stage(ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
    let repo = appl(run).repo.clone();
    let idx = run.begin(Step::SetRepo)?;
    match vamicli(ctx, &["update", "--repo", &repo]).await {
        Ok(_) => {
            run.end(idx, StepStatus::Done, Some(repo))?;
            run.stage_event(StageEvent::RepoSet)
        }
        Err(e) => Err(run.fail_step(idx, e)),
    }
}

/// Stage check_update: vamicli must offer the package's version.
pub(crate) async fn check_stage(ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
    let idx = run.begin(Step::CheckUpdate)?;
    let out = match vamicli(ctx, &["update", "--check"]).await {
        Ok(o) => o,
        Err(e) => return Err(run.fail_step(idx, e)),
    };
    let offered = match vami::parse_check(&out.stdout) {
        Ok(o) => o,
        Err(why) => {
            let e = ApplianceError::Vamicli {
                args: "update --check".into(),
                result: "unreadable output".into(),
                output: why,
            };
            return Err(run.fail_step(idx, e.into()));
        }
    };
    let u = up(run);
    if let Some(why) = preflight::offer_problem(
        "vamicli",
        offered.as_deref(),
        package(run).version.as_deref(),
        u.version_before.as_deref(),
        u.allow_downgrade,
    ) {
        return Err(run.fail_step(idx, ApplianceError::NotOffered(why).into()));
    }
    appl_mut(run).offered.clone_from(&offered);
    run.end(idx, StepStatus::Done, offered.map(|o| format!("vamicli offers {o}")))?;
    run.stage_event(StageEvent::UpdateOffered)
}

/// The drain begins (or is continued) once the checks passed: a cell found stopped has
/// nothing to drain.
pub(crate) async fn begin_drain(ctx: &Ctx<'_>, run: &mut Run, d: Option<&DrainSettings>) -> Result<(), Error> {
    let found_stopped = run
        .rec
        .before
        .as_ref()
        .is_some_and(|b| b.service == ServiceState::Stopped);
    if run.rec.phase == Phase::Start && found_stopped {
        run.drain_event(Event::AlreadyStopped)?;
        return run.stage_event(StageEvent::Drained);
    }
    match d {
        Some(d) => drain::enter(ctx, run, d.maintenance).await,
        None => Err(Error::Internal("drain stage without drain settings".into())),
    }
}

/// The unit that installs the update: vamicli, the EULA accepted on the command line (as the
/// vendor's scripted updates do), nothing on stdin.
pub(crate) fn install_spec(s: &Settings, unit: &str, pkg: &Package) -> UnitSpec {
    UnitSpec {
        unit: unit.to_string(),
        description: format!("cellctl appliance update {}", pkg.path.display()),
        program: s.install.vamicli.clone(),
        args: ["update", "--install", "latest", "--accepteula"]
            .map(String::from)
            .to_vec(),
        answers: vec![],
        env: vec![],
        timeout: s.install.timeout,
    }
}

/// What an operator runs to go on with an appliance's upgrade after (or without) its reboot;
/// `cellctl-continue.service` runs the first at boot.
const CONTINUE: &str = "`cellctl maintain --continue` (or `cellctl upgrade`)";

fn boot_ids(run: &mut Run) -> &mut BootIds {
    &mut appl_mut(run).boot
}

/// Stage reboot/rebooting (`engine::reboot`, the code `maintain --reboot` uses): true when a
/// new boot was seen (the run goes on), false when the reboot was requested (this process
/// ends, the run recorded as rebooting).
pub(crate) async fn reboot_stage(ctx: &Ctx<'_>, run: &mut Run, r: &RebootSettings) -> Result<bool, Error> {
    let before = up(run).stage == Stage::Rebooting;
    match reboot::reboot_or_booted(ctx, run, r, boot_ids, before, CONTINUE).await? {
        Reboot::Booted => {
            run.stage_event(StageEvent::Booted)?;
            Ok(true)
        }
        Reboot::Requested => {
            run.stage_event(StageEvent::RebootRequested)?;
            Ok(false)
        }
    }
}

/// Stage start of an appliance's upgrade, after the boot: wait (with a deadline) for the
/// service manager to bring the cell's service up, start it if it did not and wait until the
/// cell is healthy, check that the installed version is the package's, and only then remove
/// the unpacked folder.
pub(crate) async fn after_boot(
    ctx: &Ctx<'_>,
    run: &mut Run,
    r: &RebootSettings,
    health_deadline: std::time::Duration,
) -> Result<(), Error> {
    reboot::wait_for_service(ctx, run, r.service_wait, CONTINUE).await?;
    health::start_and_wait(run, &ctx.tool, &ctx.service, ctx.s, health_deadline, ctx.sig.clone()).await?;
    verify_version(ctx.s, run).await?;
    remove_folder(run)?;
    run.stage_event(StageEvent::Started)
}

/// Step verify_version: after the boot the installed version must be the package's.
async fn verify_version(s: &Settings, run: &mut Run) -> Result<(), Error> {
    let idx = run.begin(Step::VerifyVersion)?;
    let now = installed_version(s).await;
    let want = package(run).version.clone();
    let same = matches!((&now, &want), (Some(n), Some(p)) if compare_versions(n, p) == Ordering::Equal);
    if same {
        let detail = format!(
            "installed {} after the boot: the package's {}",
            now.unwrap_or_default(),
            want.unwrap_or_default()
        );
        return run.end(idx, StepStatus::Done, Some(detail));
    }
    let e = ApplianceError::Version(format!(
        "after the boot the installed version is {}, not the package's {}: the update did not take; the unpacked update is kept in {} (`vamicli update --check` and the appliance's update log tell why)",
        now.as_deref().unwrap_or("unreadable"),
        want.as_deref().unwrap_or("unknown"),
        appl(run).folder.display()
    ));
    Err(run.fail_step(idx, e.into()))
}

/// After the installed version was verified: the unpacked folder is no longer needed.
pub(crate) fn remove_folder(run: &mut Run) -> Result<(), Error> {
    let Some(a) = up(run).appliance.as_ref() else {
        return Ok(());
    };
    match std::fs::remove_dir_all(&a.folder) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}; remove it by hand", a.folder.display()),
    }
    appl_mut(run).folder_removed = true;
    run.save()
}

/// A run that ended before its drain changed nothing of the cell: its folder goes.
pub(crate) fn discard(run: &Run) {
    if let Some(a) = up(run).appliance.as_ref()
        && let Err(e) = std::fs::remove_dir_all(&a.folder)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", a.folder.display());
    }
}

/// The end of an appliance's `install` (no reboot in its plan): the boot it ends in, so that
/// `cellctl start` can tell whether the appliance has rebooted since. Unreadable, none is
/// recorded, and `start` reboots (it cannot tell).
pub(crate) fn note_boot(run: &mut Run, r: &RebootSettings) {
    if up(run).appliance.is_none() {
        return;
    }
    match reboot::read_boot_id(r) {
        Ok(id) => boot_ids(run).boot_id = Some(id),
        Err(e) => tracing::warn!("{e}: `cellctl start` will reboot the appliance whether or not it has rebooted"),
    }
}

/// The newest finished run that installed a package (`install`, `upgrade`, or the reboot run of
/// `start`): an appliance's `install` whose boot is still the one it ended in (or unknown)
/// awaits its reboot; anything newer (the reboot run, an upgrade that rebooted) does not.
fn install_awaiting_reboot(j: &Journal, r: &RebootSettings) -> Result<Option<RunRecord>, Error> {
    let Some(rec) = j.newest_finished(|x| x.upgrade.as_ref().is_some_and(|u| u.package.is_some())) else {
        return Ok(None);
    };
    let awaits = rec.command == CommandName::Install
        && rec.outcome == Some(Outcome::Installed)
        && rec
            .upgrade
            .as_ref()
            .is_some_and(|u| u.appliance.is_some() && !u.start && u.stage == Stage::Done);
    if !awaits {
        return Ok(None);
    }
    let ended_in = rec
        .upgrade
        .as_ref()
        .and_then(|u| u.appliance.as_ref())
        .and_then(|a| a.boot.boot_id.clone());
    match ended_in {
        None => Ok(Some(rec)),
        Some(b) => Ok((reboot::read_boot_id(r)? == b).then_some(rec)),
    }
}

/// `cellctl start` on an appliance: true when its start is the reboot of an install (a reboot
/// run recorded, to continue, or an `install` that awaits its reboot). A Linux cell, or an
/// appliance with nothing awaiting, starts as any cell.
pub(crate) fn reboot_pending(s: &Settings, r: &RebootSettings) -> Result<bool, Error> {
    if !preflight::is_appliance(s) || !s.state_dir.exists() {
        return Ok(false);
    }
    let j = Journal::open(&s.state_dir)?;
    if let Some(cur) = j.current()? {
        return Ok(cur.command == CommandName::Start && cur.upgrade.as_ref().is_some_and(|u| u.appliance.is_some()));
    }
    Ok(install_awaiting_reboot(&j, r)?.is_some())
}

/// The record of `start`'s reboot run: the install's package and appliance record, at stage
/// reboot on the stopped cell (a running one is drained first: a reboot would cut it off).
/// From there it goes as an appliance's upgrade does: reboot, and after the boot the
/// continuation waits for the cell, checks its health and its version.
pub(crate) async fn reboot_record(ctx: &Ctx<'_>, r: &RebootSettings) -> Result<RunRecord, Error> {
    let j = Journal::open(&ctx.s.state_dir)?;
    let Some(install) = install_awaiting_reboot(&j, r)? else {
        return Err(Error::Conflict(
            "no appliance install awaits its reboot any more (the appliance rebooted meanwhile): run `cellctl start` again".into(),
        ));
    };
    let svc = preflight::service_state(&ctx.service).await?;
    if svc != ServiceState::Stopped {
        return Err(Error::Conflict(format!(
            "service {} is {svc}, and the update installed by run {} awaits the appliance's reboot: drain the cell first (`cellctl drain`), then `cellctl start` reboots it",
            ctx.service.name, install.run_id
        )));
    }
    let mut u = install.upgrade.clone().expect("checked: an install record");
    u.stage = Stage::Reboot;
    u.start = true;
    u.db_upgrade = false;
    u.db_unit = None;
    u.installer_tail = None;
    if let Some(a) = u.appliance.as_mut() {
        a.boot = BootIds::default();
    }
    let before = Before {
        job_count: 0,
        is_active: false,
        in_maintenance: None,
        service: svc,
    };
    let detail = format!(
        "run {} installed {} on this stopped appliance; its reboot finishes the update",
        install.run_id,
        u.version_after.as_deref().unwrap_or("the update")
    );
    let mut rec = super::drain::new_record(ctx, CommandName::Start, new_run_id(), None, before, Some(detail));
    rec.upgrade = Some(u);
    Ok(rec)
}
