//! `cellctl install` and `cellctl upgrade`: verify the package before the cell is touched,
//! drain (upgrade), install in a transient unit, optionally upgrade the database, start and
//! wait until healthy (upgrade). The record's stage says where a rerun picks up.

use std::cmp::Ordering;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::adapters::install::{InstallError, UnitSpec};
use crate::adapters::package::{self, Kind, Package, compare_versions};
use crate::cli::PackageArgs;
use crate::config::{DrainSettings, RebootSettings, Settings};
use crate::engine::context::Ctx;
use crate::engine::lifecycle::Procedure;
use crate::engine::preflight::installed_version;
use crate::engine::run::{Recorder, Run};
use crate::engine::units::{self, Effect, NoWitness, Recovery, UnitStep, Witness};
use crate::engine::{drain, health, preflight, signals};
use crate::error::Error;

use super::appliance;
use crate::model::outcome::{CommandName, Outcome};
use crate::model::phase::{Event, Phase};
use crate::model::stage::{Stage, StageEvent};
use crate::model::step::{Before, ServiceState, Step, StepStatus};
use crate::model::time::{new_run_id, unix_now};
use crate::output::report::Report;
use crate::store::record::{RunRecord, UpgradeRecord};

/// What `install` and `upgrade` were asked to do.
#[derive(Debug, Clone)]
pub(crate) struct UpgradeOptions {
    pub command: CommandName,
    pub package: Option<PathBuf>,
    pub pkg: PackageArgs,
    pub db_upgrade: bool,
    /// Drain first (upgrade); None for `install`, which needs a stopped cell.
    pub drain: Option<DrainSettings>,
    /// Start and health-check afterwards (upgrade); an appliance reboots instead.
    pub start: bool,
    pub health_deadline: Duration,
    /// How an appliance's upgrade reboots and waits after the boot.
    pub reboot: RebootSettings,
}

pub(crate) struct Upgrade<'a>(pub &'a UpgradeOptions);

const INSTALL: UnitStep = UnitStep {
    step: Step::Install,
    what: "the installer",
};
const DB_UPGRADE: UnitStep = UnitStep {
    step: Step::DbUpgrade,
    what: "the database upgrade",
};

/// The program, arguments, answers and environment that install a package.
fn install_spec(s: &Settings, pkg: &Package, unit: &str, allow_downgrade: bool) -> Result<UnitSpec, Error> {
    let path = pkg.path.display().to_string();
    let mut spec = UnitSpec {
        unit: unit.to_string(),
        description: format!("cellctl install {}", pkg.path.display()),
        program: pkg.path.clone(),
        args: vec![],
        answers: vec![],
        env: vec![],
        timeout: s.install.timeout,
    };
    match pkg.kind {
        // VMware's scripted installs answer: y = proceed, n = do not run the configure step.
        Kind::VmwareBin => spec.answers = vec!["y".into(), "n".into()],
        Kind::Rpm => {
            spec.program = "rpm".into();
            spec.args.push("-Uvh".into());
            if allow_downgrade {
                spec.args.push("--oldpackage".into());
            }
            spec.args.push(path);
        }
        Kind::Deb => {
            spec.program = "dpkg".into();
            spec.args = vec!["-i".into(), path];
            spec.env.push(("DEBIAN_FRONTEND".into(), "noninteractive".into()));
        }
        Kind::ApplianceUpdate => spec = appliance::install_spec(s, unit, pkg),
        Kind::Custom => {
            let cmd = s
                .install
                .command
                .as_ref()
                .ok_or_else(|| Error::Internal("custom kind without a command".into()))?;
            let argv: Vec<String> = cmd.iter().map(|a| a.replace("{package}", &path)).collect();
            spec.program = argv[0].clone().into();
            spec.args = argv[1..].to_vec();
        }
    }
    Ok(spec)
}

/// An install/upgrade record always names its package; one that does not was not written by
/// `install` or `upgrade`.
fn no_package(run_id: &str) -> Error {
    Error::Internal(format!("run {run_id} records an install without its package"))
}

fn up(run: &Run) -> &UpgradeRecord {
    run.rec.upgrade.as_ref().expect("an install/upgrade record")
}

fn up_mut(run: &mut Run) -> &mut UpgradeRecord {
    run.rec.upgrade.as_mut().expect("an install/upgrade record")
}

impl Upgrade<'_> {
    /// The package, before anything else: verified, newer than what is installed, its
    /// installer there and room to unpack it (the same checks `cellctl preflight` reports).
    async fn verified_package(&self, s: &Settings) -> Result<(Package, Option<String>), Error> {
        let o = self.0;
        let path = o.package.clone().ok_or_else(|| {
            Error::Usage(format!(
                "no package: give `cellctl {} PACKAGE` (or [upgrade] package in the config)",
                o.command
            ))
        })?;
        let pkg = preflight::verified_package(s, &path, o.pkg.sha256.as_deref(), o.pkg.package_version.as_deref())?;
        preflight::check_fits(s, &pkg)?;
        let before = installed_version(s).await;
        package::check_versions(before.as_deref(), pkg.version.as_deref(), o.pkg.allow_downgrade)?;
        preflight::check_systemd_run(s)?;
        preflight::check_installer(s, &pkg)?;
        if let Some(needed) = preflight::space_needed(s, Some(&pkg)) {
            preflight::check_space(s, needed)?;
        }
        if o.db_upgrade {
            preflight::check_executable(&preflight::db_tool(s))?;
        }
        Ok((pkg, before))
    }

    /// The cell: drained by `upgrade`, found stopped by `install`.
    async fn cell(&self, ctx: &Ctx<'_>) -> Result<(Option<crate::adapters::vendor::CellStatus>, ServiceState), Error> {
        if self.0.drain.is_some() {
            return preflight::cell(&ctx.tool, &ctx.service).await;
        }
        let svc = preflight::service_state(&ctx.service).await?;
        if svc != ServiceState::Stopped {
            return Err(Error::Conflict(format!(
                "service {} is {svc}: installing under a running cell would break it; drain first (`cellctl drain`), or use `cellctl upgrade`",
                ctx.service.name
            )));
        }
        Ok((None, svc))
    }
}

impl Procedure for Upgrade<'_> {
    /// `install` shares the procedure.
    fn command(&self) -> CommandName {
        self.0.command
    }

    /// `install` on a stopped cell never calls the vendor tool, so it needs no password.
    fn needs_password(&self) -> bool {
        self.0.drain.is_some() || self.0.start
    }

    fn takes_over(&self, rec: &RunRecord) -> bool {
        rec.command == self.0.command && rec.upgrade.is_some()
    }

    async fn start(&self, ctx: &Ctx<'_>, report: &mut Report) -> Result<Option<RunRecord>, Error> {
        let o = self.0;
        if o.command == CommandName::Start {
            // `start` on an appliance whose install awaits its reboot.
            let rec = appliance::reboot_record(ctx, &o.reboot).await?;
            report.run_id = Some(rec.run_id.clone());
            return Ok(Some(rec));
        }
        let (pkg, version_before) = self.verified_package(ctx.s).await?;
        let run_id = new_run_id();
        report.run_id = Some(run_id.clone());
        let (st, svc) = self.cell(ctx).await?;
        let guard = match (&o.drain, st) {
            (Some(d), Some(_)) => Some(preflight::redundancy_guard(ctx.s, d.allow_last_cell, &ctx.tool).await?),
            _ => None,
        };
        tracing::info!(
            package = %pkg.path.display(),
            version = pkg.version.as_deref().unwrap_or("?"),
            installed = version_before.as_deref().unwrap_or("?"),
            "package verified (sha256 {})",
            &pkg.sha256[..12]
        );
        let before = Before {
            job_count: st.map_or(0, |s| s.job_count),
            is_active: st.is_some_and(|s| s.is_active),
            in_maintenance: st.and_then(|s| s.in_maintenance),
            service: svc,
        };
        let detail = if st.is_none() {
            Some(format!("service {} already stopped", ctx.service.name))
        } else {
            guard
        };
        let mut rec = super::drain::new_record(ctx, o.command, run_id.clone(), o.drain.as_ref(), before, detail);
        let appliance = (pkg.kind == Kind::ApplianceUpdate).then(|| appliance::new_record(ctx.s, &run_id));
        rec.upgrade = Some(UpgradeRecord {
            package: Some(pkg),
            // A stopped cell has nothing to drain (`enter` records that in its phase); an
            // appliance checks its update first.
            stage: match (&appliance, st) {
                (Some(_), _) => Stage::Unpack,
                (None, Some(_)) => Stage::Drain,
                (None, None) => Stage::Install,
            },
            db_upgrade: o.db_upgrade,
            start: o.start,
            allow_downgrade: o.pkg.allow_downgrade,
            version_before,
            version_after: None,
            install_unit: format!("cellctl-install-{run_id}"),
            db_unit: o.db_upgrade.then(|| format!("cellctl-dbupgrade-{run_id}")),
            installer_tail: None,
            appliance,
        });
        Ok(Some(rec))
    }

    async fn continue_record(&self, _ctx: &Ctx<'_>, rec: &mut RunRecord) -> Result<(), Error> {
        let o = self.0;
        let up = rec.upgrade.as_ref().expect("takes_over checked");
        let recorded = up.package.as_ref().ok_or_else(|| no_package(&rec.run_id))?;
        if let Some(p) = &o.package
            && p != &recorded.path
        {
            return Err(Error::Conflict(format!(
                "run {} is upgrading with {}, not {}: finish it first (`cellctl {}` with no package or the same one)",
                rec.run_id,
                recorded.path.display(),
                p.display(),
                o.command
            )));
        }
        if up.stage.before_drain() || matches!(up.stage, Stage::Drain | Stage::Install) {
            // The file could have changed while we were away: verify it again.
            package::verify(&recorded.path, Some(&recorded.sha256), recorded.kind == Kind::Custom)?;
        }
        tracing::info!(run_id = %rec.run_id, stage = %up.stage, "continuing the recorded run from {}", rec.started_at);
        if let Some(d) = &o.drain
            && d.deadline_explicit
        {
            rec.deadline_unix = unix_now() + d.deadline.as_secs_f64();
            rec.options.deadline_secs = d.deadline.as_secs();
        }
        Ok(())
    }

    async fn enter(&self, ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
        // A stopped cell: an install, or an installed appliance's reboot (`start`).
        if run.rec.phase == Phase::Start && matches!(up(run).stage, Stage::Install | Stage::Reboot) {
            run.drain_event(Event::AlreadyStopped)?;
        }
        run.save()?;
        match (up(run).stage, &self.0.drain) {
            (Stage::Drain, d) if up(run).appliance.is_some() => appliance::begin_drain(ctx, run, d.as_ref()).await,
            (Stage::Drain, Some(d)) => drain::enter(ctx, run, d.maintenance).await,
            (Stage::Drain, None) => Err(Error::Internal("drain stage without drain settings".into())),
            _ => Ok(()),
        }
    }

    /// A new run that drains a running cell checks the guard again, now that it holds the slot.
    async fn after_slot(&self, ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
        if let (Some(d), Stage::Drain) = (&self.0.drain, up(run).stage) {
            let line = preflight::redundancy_guard(ctx.s, d.allow_last_cell, &ctx.tool).await?;
            tracing::info!("slot taken; {line}");
        }
        Ok(())
    }

    async fn drive(&self, ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
        let o = self.0;
        let tr = units::transient(ctx.s);
        loop {
            let stage = up(run).stage;
            let r = match stage {
                Stage::Drain => {
                    let d = o.drain.as_ref().expect("checked when entering");
                    drain::drive(ctx, run, d).await;
                    if !matches!(
                        run.rec.phase,
                        Phase::Done {
                            outcome: Outcome::ShutDown | Outcome::Forced
                        }
                    ) {
                        // Aborted, interrupted, failed: the drain's own conclusion says it all.
                        return Ok(());
                    }
                    run.stage_event(StageEvent::Drained)
                }
                Stage::Done => return Ok(()),
                // A signal that came during the drain's shutdown (which was finished) ends the
                // run here: no new stage is begun, and the journal says where a rerun picks up.
                _ if ctx.sig.pending().is_some() => {
                    let sg = ctx.sig.pending().expect("checked");
                    let state = if stage.before_drain() {
                        format!("nothing of the cell was changed (stage {stage} was not begun)")
                    } else {
                        format!(
                            "the cell was shut down; nothing of stage {stage} was begun: rerun `cellctl {}` to continue",
                            o.command
                        )
                    };
                    Err(Error::Interrupted {
                        signal: sg,
                        name: signals::name(sg),
                        state,
                    })
                }
                Stage::Unpack => appliance::unpack_stage(ctx.s, run),
                Stage::SetRepo => appliance::repo_stage(ctx, run).await,
                Stage::CheckUpdate => match appliance::check_stage(ctx, run).await {
                    Ok(()) => appliance::begin_drain(ctx, run, o.drain.as_ref()).await,
                    Err(e) => Err(e),
                },
                Stage::Install => install_stage(ctx, run, o, &tr).await,
                Stage::DbUpgrade => db_stage(ctx, run, o, &tr).await,
                Stage::Reboot | Stage::Rebooting => match appliance::reboot_stage(ctx, run, &o.reboot).await {
                    Ok(true) => continue,
                    Ok(false) => return Ok(()),
                    Err(e) => Err(e),
                },
                Stage::Start if up(run).appliance.is_some() => {
                    appliance::after_boot(ctx, run, &o.reboot, o.health_deadline).await
                }
                Stage::Start => start_stage(ctx, run, o).await,
            };
            if let Err(e) = r {
                tracing::error!("{e}");
                if up(run).stage.before_drain() {
                    appliance::discard(run);
                }
                return Err(e);
            }
        }
    }
}

/// Before the installer runs (or is picked up): the service must be stopped; installers do not
/// start it, so this holds whenever the install is legitimately under way. A continued run checks
/// it again (its record may be stale: a watchdog or an operator could have started the cell
/// while cellctl was away), and installing under a running cell would break it.
async fn ensure_stopped(ctx: &Ctx<'_>, run: &Run) -> Result<(), Error> {
    let svc = preflight::service_state(&ctx.service).await?;
    if svc == ServiceState::Stopped {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "service {} is {svc} although run {} recorded it stopped: nothing was installed; stop it (systemctl stop {}) and rerun `cellctl {}`",
        ctx.service.name, run.rec.run_id, ctx.service.name, run.rec.command
    )))
}

/// The vendor's instructions: chmod u+x before running the `.bin` installer.
fn make_runnable(pkg: &Package) -> Result<(), Error> {
    if pkg.kind != Kind::VmwareBin {
        return Ok(());
    }
    let mode = std::fs::metadata(&pkg.path).map_or(0o644, |m| m.permissions().mode());
    if mode & 0o100 == 0 {
        std::fs::set_permissions(&pkg.path, std::fs::Permissions::from_mode(mode | 0o100))
            .map_err(|e| Error::Install(InstallError::Io(format!("chmod u+x {}: {e}", pkg.path.display()))))?;
    }
    Ok(())
}

/// Why the installed version after a "successful" install does not show an install.
fn version_problem(before: Option<&str>, after: Option<&str>, allow_downgrade: bool) -> Option<String> {
    match (before, after) {
        (_, None) => Some("success reported, but the installed version cannot be read afterwards".to_string()),
        (Some(b), Some(a)) if compare_versions(a, b) == Ordering::Equal => {
            Some(format!("success reported, but the installed version is still {a}"))
        }
        (Some(b), Some(a)) if compare_versions(a, b) == Ordering::Less && !allow_downgrade => {
            Some(format!("installed version went down from {b} to {a}"))
        }
        _ => None,
    }
}

/// What the installed version says of an installer that ended without a result: the install
/// happened only if the version is now the package's (and was not before).
fn fate_by_version(before: Option<&str>, package: Option<&str>, now: Option<&str>) -> Effect {
    let same = |a: &str, b: &str| compare_versions(a, b) == Ordering::Equal;
    let was = before.unwrap_or("not known");
    match (now, package) {
        (None, _) => Effect::Uncertain("the installed version cannot be read".into()),
        (Some(n), Some(p)) if same(n, p) && !before.is_some_and(|b| same(b, p)) => Effect::Happened(format!(
            "learned from the installed version: it is now {n}, the package's (it was {was})"
        )),
        (Some(n), _) if before.is_some_and(|b| same(b, n)) => Effect::Uncertain(format!(
            "the installed version is still {n}: the installer may have stopped part-way or failed"
        )),
        (Some(n), Some(p)) => Effect::Uncertain(format!(
            "the installed version is {n}: neither the version before ({was}) nor the package's ({p})"
        )),
        (Some(n), None) => Effect::Uncertain(format!(
            "the installed version is {n} (it was {was}), and the package's version is not known"
        )),
    }
}

/// The installer's witness: the installed version, read when asked.
struct InstalledVersion<'a> {
    s: &'a Settings,
    before: Option<String>,
    package: Option<String>,
}

impl Witness for InstalledVersion<'_> {
    async fn effect(&self) -> Effect {
        let now = installed_version(self.s).await;
        fate_by_version(self.before.as_deref(), self.package.as_deref(), now.as_deref())
    }
}

async fn install_stage(
    ctx: &Ctx<'_>,
    run: &mut Run,
    o: &UpgradeOptions,
    tr: &crate::adapters::install::Transient,
) -> Result<(), Error> {
    let s = ctx.s;
    let pkg = up(run).package.clone().ok_or_else(|| no_package(&run.rec.run_id))?;
    ensure_stopped(ctx, run).await?;
    make_runnable(&pkg)?;
    let unit = up(run).install_unit.clone();
    let spec = install_spec(s, &pkg, &unit, up(run).allow_downgrade)?;
    let keep = |run: &mut Run, tail| up_mut(run).installer_tail = Some(tail);
    let witness = InstalledVersion {
        s,
        before: up(run).version_before.clone(),
        package: pkg.version.clone(),
    };
    let rec = Recovery {
        retry: o.pkg.retry_install,
        witness: &witness,
    };
    let (res, idx) = units::run_step(ctx, run, INSTALL, spec, tr, &rec, keep).await?;
    let after = installed_version(s).await;
    up_mut(run).version_after.clone_from(&after);
    let before = up(run).version_before.clone();
    if let Some(result) = version_problem(before.as_deref(), after.as_deref(), up(run).allow_downgrade) {
        let e = InstallError::Failed {
            what: INSTALL.what.into(),
            unit,
            result,
            tail: "see installer_tail".into(),
        };
        return Err(run.fail_step(idx, e.into()));
    }
    tracing::info!(
        "installed: {} -> {}",
        before.as_deref().unwrap_or("?"),
        after.as_deref().unwrap_or("?")
    );
    // The version is verified: an appliance's unpacked update is no longer needed, unless a
    // reboot follows (its folder goes once the version is seen again after the boot).
    if !up(run).plan().reboots() {
        appliance::remove_folder(run)?;
        appliance::note_boot(run, &o.reboot);
    }
    run.end(idx, StepStatus::Done, Some(format!("unit {unit}: {}", res.describe())))?;
    run.stage_event(StageEvent::Installed)
}

async fn db_stage(
    ctx: &Ctx<'_>,
    run: &mut Run,
    o: &UpgradeOptions,
    tr: &crate::adapters::install::Transient,
) -> Result<(), Error> {
    db_upgrade_step(ctx, run, o.pkg.retry_install, tr).await
}

/// The database upgrade in its transient unit, then the stage's end: the step of `upgrade
/// --db-upgrade` and of `cellctl db-upgrade`. `retry`: run it again after a failure or an
/// unknown end recorded earlier (`--retry-install`).
pub(crate) async fn db_upgrade_step(
    ctx: &Ctx<'_>,
    run: &mut Run,
    retry: bool,
    tr: &crate::adapters::install::Transient,
) -> Result<(), Error> {
    let s = ctx.s;
    let unit = up(run)
        .db_unit
        .clone()
        .ok_or_else(|| Error::Internal("a database upgrade stage without its unit name".into()))?;
    let spec = UnitSpec {
        unit: unit.clone(),
        description: "cellctl database upgrade".into(),
        program: preflight::db_tool(s),
        args: vec!["--backup-completed".into()],
        // Yes to "upgrade the database?" and nothing more: any further question (an active
        // cell found, say) reads end-of-input, which the tool takes as no.
        answers: vec!["y".into()],
        env: vec![],
        timeout: s.install.timeout,
    };
    let rec = Recovery {
        retry,
        witness: &NoWitness("the database upgrade leaves no version that cellctl can read"),
    };
    let (_, idx) = units::run_step(ctx, run, DB_UPGRADE, spec, tr, &rec, |_, _| {}).await?;
    // What the tool said last: "upgrade complete", or "already at version" on a rerun.
    let said = units::last_lines(&ctx.tool.password.redact(&tr.tail(&unit)), 1);
    run.end(idx, StepStatus::Done, Some(said).filter(|l| !l.trim().is_empty()))?;
    run.stage_event(StageEvent::DbUpgraded)
}

async fn start_stage(ctx: &Ctx<'_>, run: &mut Run, o: &UpgradeOptions) -> Result<(), Error> {
    health::start_and_wait(run, &ctx.tool, &ctx.service, ctx.s, o.health_deadline, ctx.sig.clone()).await?;
    run.stage_event(StageEvent::Started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_install_must_show_in_the_version() {
        assert!(version_problem(Some("10.5"), None, false).is_some());
        assert!(version_problem(Some("10.5"), Some("10.5"), false).is_some());
        assert!(version_problem(Some("10.6"), Some("10.5"), false).is_some());
        assert!(version_problem(Some("10.6"), Some("10.5"), true).is_none());
        assert!(version_problem(Some("10.5"), Some("10.6"), false).is_none());
        assert!(version_problem(None, Some("10.6"), false).is_none());
    }

    #[test]
    fn a_lost_install_result_is_certain_only_at_the_package_version() {
        let happened = |e: Effect| matches!(e, Effect::Happened(_));
        assert!(happened(fate_by_version(
            Some("10.5.1"),
            Some("10.6.0"),
            Some("10.6.0")
        )));
        // The version before could not be read: the package's version now still says it.
        assert!(happened(fate_by_version(None, Some("10.6.0"), Some("10.6.0"))));
        for (before, package, now) in [
            (Some("10.5.1"), Some("10.6.0"), Some("10.5.1")),
            (Some("10.5.1"), Some("10.6.0"), None),
            (Some("10.5.1"), Some("10.6.0"), Some("10.5.9")),
            (Some("10.5.1"), None, Some("10.6.0")),
            // A reinstall of the same version shows nothing.
            (Some("10.6.0"), Some("10.6.0"), Some("10.6.0")),
        ] {
            let e = fate_by_version(before, package, now);
            assert!(!happened(e.clone()), "{before:?} {package:?} {now:?}: {e:?}");
        }
        let Effect::Uncertain(why) = fate_by_version(Some("10.5.1"), Some("10.6.0"), Some("10.5.1")) else {
            unreachable!()
        };
        assert!(why.contains("still 10.5.1"), "{why}");
    }
}
