//! Checks made before a run changes anything: the tools exist, the service has settled, the
//! package is the one expected and newer, there is room to unpack it, and enough other cells
//! serve (the redundancy guard, which fails closed). `upgrade`, `install`, `db-upgrade` and
//! `preflight` all call these, so `preflight` checks exactly what a run would. The appliance's
//! own (is it one, does its package fit, does `vamicli` answer, what the package offers) are
//! here too, for the same reason.

use std::cmp::Ordering;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::adapters::api::{Api, GuardRefusal, guard_verdict};
use crate::adapters::appliance::{self as vami, ApplianceError};
use crate::adapters::exec;
use crate::adapters::package::{self, Kind, Package, compare_versions};
use crate::adapters::service::Service;
use crate::adapters::vendor::{CellStatus, CellTool};
use crate::config::{CellKind, SPACE_FACTOR, Settings};
use crate::error::{Error, Precheck};
use crate::model::step::ServiceState;

/// Read the installed version with the configured command (None if it cannot be told).
pub(crate) async fn installed_version(s: &Settings) -> Option<String> {
    let (prog, args) = s.install.version_command.split_first()?;
    let out = exec::run(Path::new(prog), args, s.tool_timeout).await.ok()?;
    if !out.success() {
        return None;
    }
    out.stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// Is `cmd` runnable (an executable path, or a name found on PATH)?
pub(crate) fn resolvable(cmd: &Path) -> bool {
    let exec_ok = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if cmd.components().count() > 1 {
        return exec_ok(cmd);
    }
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| exec_ok(&d.join(cmd))))
}

/// Installers run in a transient unit: systemd-run must be there.
pub(crate) fn check_systemd_run(s: &Settings) -> Result<(), Error> {
    if resolvable(&s.install.systemd_run) {
        return Ok(());
    }
    Err(Precheck::NoSystemdRun {
        path: s.install.systemd_run.display().to_string(),
    }
    .into())
}

/// The database upgrade tool.
pub(crate) fn db_tool(s: &Settings) -> PathBuf {
    s.vcd_home.join("bin/upgrade")
}

/// The program that installs a package of this kind (the `.bin` installer is the package).
pub(crate) fn installer_program(s: &Settings, pkg: &Package) -> PathBuf {
    match pkg.kind {
        Kind::VmwareBin => pkg.path.clone(),
        Kind::Rpm => "rpm".into(),
        Kind::Deb => "dpkg".into(),
        Kind::ApplianceUpdate => s.install.vamicli.clone(),
        Kind::Custom => s
            .install
            .command
            .as_ref()
            .and_then(|c| c.first())
            .map_or_else(PathBuf::new, PathBuf::from),
    }
}

/// The program that installs the package can be run (the `.bin` installer is made runnable
/// just before it runs, so only its presence counts).
pub(crate) fn check_installer(s: &Settings, pkg: &Package) -> Result<(), Error> {
    let program = installer_program(s, pkg);
    if pkg.kind == Kind::VmwareBin || resolvable(&program) {
        return Ok(());
    }
    Err(Precheck::NoInstaller {
        program: program.display().to_string(),
        kind: match pkg.kind {
            Kind::VmwareBin => ".bin",
            Kind::Rpm => ".rpm",
            Kind::Deb => ".deb",
            Kind::ApplianceUpdate => "appliance's _update.tar.gz",
            Kind::Custom => "[install] command's",
        },
    }
    .into())
}

/// The package verified before anything else: file, mode, checksum, kind, and its version
/// (from its name, or `--package-version`). Nothing is changed.
pub(crate) fn verified_package(
    s: &Settings,
    path: &Path,
    sha256: Option<&str>,
    package_version: Option<&str>,
) -> Result<Package, Error> {
    let mut pkg = package::verify(path, sha256, s.install.command.is_some())?;
    if let Some(v) = package_version {
        pkg.version = Some(v.to_string());
    }
    Ok(pkg)
}

/// Free space where the installer unpacks, and how much the install needs there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Space {
    pub free: u64,
    pub needed: u64,
}

/// The space an install needs: `min_free` when set, else for an appliance update the size it
/// unpacks to (read from its entries' headers) and a tenth more for the file system's own
/// overhead, else the package's size × `SPACE_FACTOR`.
pub(crate) fn space_needed(s: &Settings, pkg: Option<&Package>) -> Option<u64> {
    s.install.min_free.or_else(|| {
        let pkg = pkg?;
        if pkg.kind == Kind::ApplianceUpdate
            && let Ok(n) = vami::unpacked_size(&pkg.path)
        {
            return Some(n.saturating_add(n / 10));
        }
        let size = std::fs::metadata(&pkg.path).ok()?.len();
        Some(size.saturating_mul(SPACE_FACTOR))
    })
}

/// Is there room to unpack? (statvfs of the unpack dir: the blocks an unprivileged user may
/// take, the stricter count.)
pub(crate) fn check_space(s: &Settings, needed: u64) -> Result<Space, Error> {
    let dir = &s.install.unpack_dir;
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| Precheck::UnpackDir {
        dir: dir.display().to_string(),
        detail: e.desc().to_string(),
    })?;
    // fsblkcnt_t and c_ulong are u32 on some targets.
    #[allow(clippy::useless_conversion)]
    let free = u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
    if free < needed {
        return Err(Precheck::NoSpace {
            dir: dir.display().to_string(),
            free: human_bytes(free),
            needed: human_bytes(needed),
        }
        .into());
    }
    Ok(Space { free, needed })
}

/// Bytes in binary units, one decimal: "1.5 GiB".
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Is this cell an appliance? As configured, else whether vamicli is found.
pub(crate) fn is_appliance(s: &Settings) -> bool {
    match s.install.kind {
        Some(k) => k == CellKind::Appliance,
        None => resolvable(&s.install.vamicli),
    }
}

/// Does the package fit the cell? An appliance takes only its `_update.tar.gz` (or a
/// configured command); a Linux cell never takes one.
pub(crate) fn check_fits(s: &Settings, pkg: &Package) -> Result<(), Error> {
    let appliance = is_appliance(s);
    let why = match (pkg.kind, appliance) {
        (Kind::ApplianceUpdate, true) | (Kind::Custom, _) => return Ok(()),
        (Kind::ApplianceUpdate, false) if s.install.kind == Some(CellKind::Linux) => format!(
            "{} is an appliance update (_update.tar.gz), but the cell kind is set to linux (--cell-kind, CELLCTL_CELL_KIND or [install] kind): give the Linux installer (.bin), or set the kind to appliance",
            pkg.path.display()
        ),
        (Kind::ApplianceUpdate, false) => format!(
            "{} is an appliance update (_update.tar.gz), but vamicli is not found at {}: on an appliance set its path (--vamicli, CELLCTL_VAMICLI or [install] vamicli)",
            pkg.path.display(),
            s.install.vamicli.display()
        ),
        (_, true) => format!(
            "{} is not an appliance update: this cell is an appliance (vamicli {}), updated with VMware_Cloud_Director_V-BUILD_update.tar.gz; set --cell-kind linux if it is not",
            pkg.path.display(),
            s.install.vamicli.display()
        ),
        (_, false) => return Ok(()),
    };
    Err(ApplianceError::Setup(why).into())
}

/// Does vamicli answer? `vamicli version --appliance` only reads: the appliance's version line.
pub(crate) async fn vamicli_answers(s: &Settings) -> Result<String, Error> {
    let out = vami::call(&s.install.vamicli, &["version", "--appliance"], s.tool_timeout).await?;
    Ok(vami::last_lines(&out))
}

/// What an appliance update offers, read from the manifest inside the package (the file
/// `vamicli update --check` reads from the repository), without unpacking it or touching
/// vamicli's repository.
pub(crate) fn manifest_offer(pkg: &Package) -> Result<vami::Offer, Error> {
    vami::manifest_offer(&pkg.path).map_err(|detail| {
        ApplianceError::Unpack {
            package: pkg.path.display().to_string(),
            folder: vami::MANIFEST.into(),
            detail,
        }
        .into()
    })
}

/// Is the `offered` version (by `source`: vamicli, or the package's manifest) the package's,
/// and newer than the installed one? The reason when not.
pub(crate) fn offer_problem(
    source: &str,
    offered: Option<&str>,
    package: Option<&str>,
    installed: Option<&str>,
    allow_downgrade: bool,
) -> Option<String> {
    let pv = package.unwrap_or("unknown");
    let Some(o) = offered else {
        return Some(format!(
            "{source} offers no update from this package (none is newer than the installed {}): the package's {pv} is already installed or older; nothing was changed",
            installed.unwrap_or("version")
        ));
    };
    if package.is_none_or(|p| compare_versions(o, p) != Ordering::Equal) {
        return Some(format!(
            "{source} offers {o}, not the package's {pv}: the package's name and its content disagree, or vamicli reads another repository; nothing was changed"
        ));
    }
    match installed.map(|i| compare_versions(o, i)) {
        Some(Ordering::Greater) | None => None,
        Some(_) if allow_downgrade => None,
        Some(_) => Some(format!(
            "{source} offers {o}, not newer than the installed {}: refusing a downgrade or reinstall",
            installed.unwrap_or_default()
        )),
    }
}

pub(crate) fn check_executable(p: &Path) -> Result<(), Error> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(Precheck::NotExecutable {
            path: p.display().to_string(),
        }
        .into()),
        Err(source) => Err(Precheck::Missing {
            path: p.display().to_string(),
            source,
        }
        .into()),
    }
}

/// The tools are there and the service has settled: its state, and the cell's status if it runs.
pub(crate) async fn cell(tool: &CellTool, service: &Service) -> Result<(Option<CellStatus>, ServiceState), Error> {
    check_executable(&tool.cmt)?;
    check_executable(&tool.vcd_cell)?;
    let svc = service_state(service).await?;
    match svc {
        ServiceState::Running => Ok((Some(tool.status().await?), svc)),
        ServiceState::Stopped => Ok((None, svc)),
        ServiceState::Changing => Err(Precheck::Changing {
            service: service.name.clone(),
        }
        .into()),
    }
}

/// The service's state, as a precheck (nothing changed yet when it cannot be told).
pub(crate) async fn service_state(service: &Service) -> Result<ServiceState, Error> {
    service.state().await.map_err(|e| Precheck::Service(e).into())
}

/// Before any change: are enough other cells serving? Fails closed when the API cannot tell,
/// unless the operator skipped the guard or allowed taking the last cell. Returns the line
/// the preflight step records.
pub(crate) async fn redundancy_guard(s: &Settings, allow_last_cell: bool, tool: &CellTool) -> Result<String, Error> {
    if !s.redundancy_guard {
        tracing::warn!("redundancy guard skipped: other cells were not checked");
        return Ok("redundancy guard skipped".into());
    }
    let verdict = match Api::new(&s.api, &s.user, tool.password.clone()) {
        Err(e) => Err(GuardRefusal(e.to_string())),
        Ok(api) => {
            let r = api.cells().await;
            api.logout().await;
            match r {
                Ok(cells) => guard_verdict(&cells, &s.api.cell_name, s.api.min_active_peers),
                Err(e) => Err(GuardRefusal(format!(
                    "cannot list the cells ({e}); the guard fails closed: fix [api] url/ca_file/cert_sha256, or pass --skip-redundancy-guard"
                ))),
            }
        }
    };
    match verdict {
        Ok(n) => {
            tracing::info!("redundancy guard: {n} other active cell(s)");
            Ok(format!("redundancy guard: {n} other active cell(s)"))
        }
        Err(refusal) if allow_last_cell => {
            tracing::warn!("--allow-last-cell: going ahead although {refusal}");
            Ok(format!("last cell allowed: {refusal}"))
        }
        Err(refusal) => Err(refusal.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn only_the_packages_newer_version_passes() {
        let ok = |o, p, i| offer_problem("vamicli", o, p, i, false).is_none();
        assert!(ok(Some("10.6.0"), Some("10.6.0-24135488"), Some("10.5.1")));
        assert!(ok(Some("10.6.0.1"), Some("10.6.0.1-24135488"), None));
        // Not offered, another version offered, not newer.
        assert!(!ok(None, Some("10.6.0-1"), Some("10.5.1")));
        assert!(!ok(Some("10.6.1"), Some("10.6.0-1"), Some("10.5.1")));
        assert!(!ok(Some("10.6.0"), None, Some("10.5.1")));
        assert!(!ok(Some("10.5.1"), Some("10.5.1-1"), Some("10.5.1")));
        assert!(!ok(Some("10.4.0"), Some("10.4.0-1"), Some("10.5.1")));
        assert!(offer_problem("vamicli", Some("10.4.0"), Some("10.4.0-1"), Some("10.5.1"), true).is_none());
        let why = offer_problem("the manifest", Some("10.6.1"), Some("10.6.0-1"), Some("10.5.1"), false).unwrap();
        assert!(
            why.contains("the manifest offers 10.6.1, not the package's 10.6.0-1"),
            "{why}"
        );
    }
}
