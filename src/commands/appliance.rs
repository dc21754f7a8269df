//! The VCD appliance's steps of `install` and `upgrade` (`../shared/research/vcd.md` §3,
//! "Appliance"): before the drain, unpack the `_update.tar.gz` into a fresh folder of its own,
//! `vamicli update --repo file:///FOLDER`, and `vamicli update --check` must offer the
//! package's version, newer than the installed one; after the drain `vamicli update --install
//! latest --accepteula` runs in a transient unit (the install stage shared with Linux cells),
//! the unpacked folder is removed once the installed version is verified, and the appliance is
//! left stopped for the reboot the vendor requires.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use crate::adapters::appliance::{self as vami, ApplianceError};
use crate::adapters::exec;
use crate::adapters::install::UnitSpec;
use crate::adapters::package::{Kind, Package, compare_versions};
use crate::config::{CellKind, DrainSettings, Settings};
use crate::engine::context::Ctx;
use crate::engine::drain;
use crate::engine::run::{Recorder, Run};
use crate::engine::signals;
use crate::error::Error;
use crate::model::phase::{Event, Phase};
use crate::model::stage::StageEvent;
use crate::model::step::{ServiceState, Step, StepStatus};
use crate::store::record::{ApplianceRecord, UpgradeRecord};

/// Room asked for beyond the unpacked size (the file system's own overhead, logs).
const SPACE_MARGIN: f64 = 1.1;

/// Is this cell an appliance? As configured, else whether vamicli is found.
pub(crate) fn is_appliance(s: &Settings) -> bool {
    match s.install.kind {
        Some(k) => k == CellKind::Appliance,
        None => exec::resolvable(&s.install.vamicli),
    }
}

/// Does the package fit the cell? An appliance takes only its `_update.tar.gz` (or a
/// configured command); a Linux cell never takes one.
pub(crate) fn check_fits(s: &Settings, pkg: &Package) -> Result<(), Error> {
    let appliance = is_appliance(s);
    match (pkg.kind, appliance) {
        (Kind::ApplianceUpdate, true) | (Kind::Custom, _) => Ok(()),
        (Kind::ApplianceUpdate, false) if s.install.kind == Some(CellKind::Linux) => {
            Err(ApplianceError::Setup(format!(
                "{} is an appliance update (_update.tar.gz), but the cell kind is set to linux (--cell-kind, CELLCTL_CELL_KIND or [install] kind): give the Linux installer (.bin), or set the kind to appliance",
                pkg.path.display()
            ))
            .into())
        }
        (Kind::ApplianceUpdate, false) => Err(ApplianceError::Setup(format!(
            "{} is an appliance update (_update.tar.gz), but vamicli is not found at {}: on an appliance set its path (--vamicli, CELLCTL_VAMICLI or [install] vamicli)",
            pkg.path.display(),
            s.install.vamicli.display()
        ))
        .into()),
        (_, true) => Err(ApplianceError::Setup(format!(
            "{} is not an appliance update: this cell is an appliance (vamicli {}), updated with VMware_Cloud_Director_V-BUILD_update.tar.gz; set --cell-kind linux if it is not",
            pkg.path.display(),
            s.install.vamicli.display()
        ))
        .into()),
        (_, false) => Ok(()),
    }
}

/// The parent of the unpacked folders.
pub(crate) fn unpack_parent(s: &Settings) -> PathBuf {
    s.install
        .unpack_dir
        .clone()
        .unwrap_or_else(|| s.state_dir.join("updates"))
}

/// The appliance part of a new run's record: its own folder, named by the run.
pub(crate) fn new_record(s: &Settings, run_id: &str) -> ApplianceRecord {
    let folder = unpack_parent(s).join(format!("cellctl-update-{run_id}"));
    ApplianceRecord {
        repo: vami::repo_url(&folder),
        folder,
        offered: None,
        folder_removed: false,
    }
}

fn up(run: &Run) -> &UpgradeRecord {
    run.rec.upgrade.as_ref().expect("an install/upgrade record")
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

/// Enough room for the unpacked update where it will be unpacked?
fn room_for(pkg: &Path, parent: &Path) -> Result<(u64, u64), String> {
    let need = vami::unpacked_size(pkg)?;
    let free = vami::free_space(parent)?;
    if (free as f64) < need as f64 * SPACE_MARGIN {
        return Err(format!(
            "{} unpacks to {need} bytes, but {} has only {free} bytes free: make room, or set another parent (--unpack-dir, CELLCTL_UNPACK_DIR or [install] unpack_dir)",
            pkg.display(),
            parent.display()
        ));
    }
    Ok((need, free))
}

/// Stage unpack: the package into its fresh folder. A rerun after a crash mid-unpack finds
/// a partial folder: it is removed and the package unpacked again.
pub(crate) fn unpack_stage(s: &Settings, run: &mut Run) -> Result<(), Error> {
    let pkg = up(run).package.path.clone();
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
    let unpacked = room_for(&pkg, &unpack_parent(s))
        .map_err(|detail| ApplianceError::Unpack {
            package: pkg.display().to_string(),
            folder: folder.display().to_string(),
            detail,
        })
        .and_then(|_| vami::unpack(&pkg, &folder));
    match unpacked {
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

/// Is what vamicli offers the package's version, and newer than the installed one?
fn offer_problem(
    offered: Option<&str>,
    package: Option<&str>,
    installed: Option<&str>,
    allow_downgrade: bool,
) -> Option<String> {
    let pv = package.unwrap_or("unknown");
    let Some(o) = offered else {
        return Some(format!(
            "vamicli offers no update from this package (it says none is newer than the installed {}): the package's {pv} is already installed or older; nothing was changed",
            installed.unwrap_or("version")
        ));
    };
    if package.is_none_or(|p| compare_versions(o, p) != Ordering::Equal) {
        return Some(format!(
            "vamicli offers {o}, not the package's {pv}: the package's name and its content disagree, or vamicli reads another repository; nothing was changed"
        ));
    }
    match installed.map(|i| compare_versions(o, i)) {
        Some(Ordering::Greater) | None => None,
        Some(_) if allow_downgrade => None,
        Some(_) => Some(format!(
            "vamicli offers {o}, not newer than the installed {}: refusing a downgrade or reinstall",
            installed.unwrap_or_default()
        )),
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
    if let Some(why) = offer_problem(
        offered.as_deref(),
        u.package.version.as_deref(),
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

/// One appliance check for `preflight`; until the preflight command merges, only the unit
/// tests call [`appliance_checks`].: (name, "pass" | "warn" | "fail", detail).
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "plugged into `cellctl preflight` when that branch merges")
)]
pub(crate) type Check = (&'static str, &'static str, String);

/// The appliance checks `preflight` runs: vamicli answers, the package's version is offered
/// (checked against a scratch unpack, removed again), and room for the unpacked update.
/// Nothing of the cell changes, but vamicli's repository is left pointing at the scratch
/// folder's URL (the upgrade sets its own).
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "plugged into `cellctl preflight` when that branch merges")
)]
pub(crate) async fn appliance_checks(s: &Settings, pkg: Option<&Package>, installed: Option<&str>) -> Vec<Check> {
    let mut checks = vec![];
    let answers = vami::call(&s.install.vamicli, &["version", "--appliance"], s.tool_timeout).await;
    checks.push(match &answers {
        Ok(out) => ("vamicli", "pass", vami::last_lines(out)),
        Err(e) => ("vamicli", "fail", e.to_string()),
    });
    let Some(pkg) = pkg else { return checks };
    let parent = unpack_parent(s);
    checks.push(match room_for(&pkg.path, &parent) {
        Ok((need, free)) => (
            "unpack_space",
            "pass",
            format!("{need} bytes needed, {free} free in {}", parent.display()),
        ),
        Err(why) => ("unpack_space", "fail", why),
    });
    if answers.is_err() || checks.iter().any(|c| c.1 == "fail") {
        return checks;
    }
    let folder = parent.join(format!("cellctl-preflight-{}", std::process::id()));
    let offered = offered_by(s, pkg, &folder).await;
    let _ = std::fs::remove_dir_all(&folder);
    checks.push(match offered {
        Err(e) => ("update_offered", "fail", e.to_string()),
        Ok(o) => match offer_problem(o.as_deref(), pkg.version.as_deref(), installed, false) {
            Some(why) => ("update_offered", "fail", why),
            None => (
                "update_offered",
                "pass",
                format!("vamicli offers {}", o.unwrap_or_default()),
            ),
        },
    });
    checks
}

/// What vamicli offers from the package unpacked in `folder`.
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "plugged into `cellctl preflight` when that branch merges")
)]
async fn offered_by(s: &Settings, pkg: &Package, folder: &Path) -> Result<Option<String>, ApplianceError> {
    vami::unpack(&pkg.path, folder)?;
    let t = s.tool_timeout;
    vami::call(&s.install.vamicli, &["update", "--repo", &vami::repo_url(folder)], t).await?;
    let out = vami::call(&s.install.vamicli, &["update", "--check"], t).await?;
    vami::parse_check(&out.stdout).map_err(|why| ApplianceError::Vamicli {
        args: "update --check".into(),
        result: "unreadable output".into(),
        output: why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vamicli that offers `offer` from any repository, as a shell script.
    fn settings_with_vamicli(dir: &Path, offer: &str) -> Settings {
        use clap::Parser;
        use std::os::unix::fs::PermissionsExt;
        let vamicli = dir.join("vamicli");
        let script = format!(
            "#!/bin/sh\ncase \"$*\" in\n  'version --appliance') echo 'Version - 10.5.1' ;;\n  'update --check') printf 'Available Updates -\\n\\t{offer} Build 1\\n' ;;\n  update\\ --repo\\ file://*) test -f \"${{3#file://}}/manifest.xml\" || exit 1 ;;\n  *) exit 2 ;;\nesac\n"
        );
        std::fs::write(&vamicli, script).unwrap();
        std::fs::set_permissions(&vamicli, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cli = crate::cli::Cli::try_parse_from([
            "cellctl",
            "--vamicli",
            vamicli.to_str().unwrap(),
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "status",
        ])
        .unwrap();
        crate::config::resolve(&cli.global).unwrap().0
    }

    fn package(dir: &Path) -> Package {
        let path = dir.join("VMware_Cloud_Director_10.6.0-1_update.tar.gz");
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        t.append_data(&mut h, "manifest.xml", &b"<x>"[..]).unwrap();
        t.into_inner().unwrap().finish().unwrap();
        Package {
            path,
            sha256: String::new(),
            kind: Kind::ApplianceUpdate,
            version: Some("10.6.0-1".into()),
        }
    }

    fn status_of(checks: &[Check], name: &str) -> &'static str {
        checks.iter().find(|c| c.0 == name).map_or("absent", |c| c.1)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn preflight_checks_ask_vamicli_about_the_unpacked_package() {
        let d = tempfile::tempdir().unwrap();
        let pkg = package(d.path());
        let s = settings_with_vamicli(d.path(), "10.6.0");
        let checks = appliance_checks(&s, Some(&pkg), Some("10.5.1")).await;
        for name in ["vamicli", "unpack_space", "update_offered"] {
            assert_eq!(status_of(&checks, name), "pass", "{name}: {checks:?}");
        }
        assert!(
            std::fs::read_dir(unpack_parent(&s)).unwrap().next().is_none(),
            "the scratch folder is removed"
        );
        let s = settings_with_vamicli(d.path(), "10.7.0");
        let checks = appliance_checks(&s, Some(&pkg), Some("10.5.1")).await;
        assert_eq!(status_of(&checks, "update_offered"), "fail", "{checks:?}");
        assert_eq!(appliance_checks(&s, None, None).await.len(), 1);
    }

    #[test]
    fn only_the_packages_newer_version_passes() {
        let ok = |o, p, i| offer_problem(o, p, i, false).is_none();
        assert!(ok(Some("10.6.0"), Some("10.6.0-24135488"), Some("10.5.1")));
        assert!(ok(Some("10.6.0.1"), Some("10.6.0.1-24135488"), None));
        // Not offered, another version offered, not newer.
        assert!(!ok(None, Some("10.6.0-1"), Some("10.5.1")));
        assert!(!ok(Some("10.6.1"), Some("10.6.0-1"), Some("10.5.1")));
        assert!(!ok(Some("10.6.0"), None, Some("10.5.1")));
        assert!(!ok(Some("10.5.1"), Some("10.5.1-1"), Some("10.5.1")));
        assert!(!ok(Some("10.4.0"), Some("10.4.0-1"), Some("10.5.1")));
        assert!(offer_problem(Some("10.4.0"), Some("10.4.0-1"), Some("10.5.1"), true).is_none());
        let why = offer_problem(Some("10.6.1"), Some("10.6.0-1"), Some("10.5.1"), false).unwrap();
        assert!(why.contains("not the package's 10.6.0-1"), "{why}");
    }
}
