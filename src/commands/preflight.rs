//! `cellctl preflight [PACKAGE]`: every check `upgrade` makes before it changes anything, made
//! with the same code (`engine::preflight`), and nothing changed: no journal, no lock taken, no
//! report saved. Each check is reported, not only the first failure.

use std::cmp::Ordering;
use std::path::PathBuf;

use crate::adapters::api::{Api, ApiError, CellInfo, guard_verdict};
use crate::adapters::credentials::{self, Secret};
use crate::adapters::package::{self, Kind, Package, compare_versions};
use crate::adapters::service::Service;
use crate::adapters::vendor::{CellTool, ToolError};
use crate::cli::PackageArgs;
use crate::config::Settings;
use crate::engine::context::{service_of, tool_without_password};
use crate::engine::preflight::{self, Space, human_bytes, installed_version};
use crate::error::Error;
use crate::model::outcome::CommandName;
use crate::model::step::ServiceState;
use crate::model::time::Timestamp;
use crate::output::report::{Check, CheckStatus, GroupCell, PackageDoc, Report};
use crate::store::journal::Journal;

/// What `preflight` was asked to check.
#[derive(Debug, Clone)]
pub(crate) struct PreflightOptions {
    pub package: Option<PathBuf>,
    pub pkg: PackageArgs,
}

/// The checks, in the order made.
#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self, name: &'static str, status: CheckStatus, detail: impl Into<String>) {
        self.0.push(Check {
            name,
            status,
            detail: detail.into(),
        });
    }

    fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        self.add(name, CheckStatus::Pass, detail);
    }

    fn warn(&mut self, name: &'static str, detail: impl Into<String>) {
        self.add(name, CheckStatus::Warn, detail);
    }

    fn fail(&mut self, name: &'static str, detail: impl Into<String>) {
        self.add(name, CheckStatus::Fail, detail);
    }

    /// Pass with `ok`'s detail, or fail with the error's own words.
    fn result<T, E: Into<Error>>(&mut self, name: &'static str, r: Result<T, E>, ok: impl FnOnce(T) -> String) {
        match r {
            Ok(v) => self.pass(name, ok(v)),
            Err(e) => self.fail(name, e.into().detail()),
        }
    }

    fn failed(&self) -> Vec<&'static str> {
        self.0
            .iter()
            .filter(|c| c.status == CheckStatus::Fail)
            .map(|c| c.name)
            .collect()
    }
}

/// Run every check; the report carries them, the error names the failed ones.
pub(crate) async fn preflight(s: &Settings, o: &PreflightOptions) -> (Report, Result<(), Error>) {
    let mut rep = Report::new(CommandName::Preflight);
    rep.started_at = Some(Timestamp::now());
    let mut c = Checks::default();
    tools(s, &mut c);
    let service = service_of(s);
    let svc = service_check(&service, &mut c).await;
    state_dir(s, &mut c);
    let installed = installed_version(s).await;
    match &installed {
        Some(v) => c.pass(
            "installed_version",
            format!("{v} (from {})", s.install.version_command.join(" ")),
        ),
        None => c.warn(
            "installed_version",
            format!(
                "`{}` printed no version: see [install] version_command (--version-command)",
                s.install.version_command.join(" ")
            ),
        ),
    }
    let pkg = package_checks(s, o, installed.as_deref(), &mut c, &mut rep);
    let appliance = preflight::is_appliance(s);
    space_check(s, pkg.as_ref(), appliance, &mut c);
    if appliance {
        appliance_checks(s, pkg.as_ref(), &mut c).await;
    }
    let password = credentials(s, svc, &mut c).await;
    let pkg_version = pkg.as_ref().and_then(|p| p.version.clone());
    rep.group = Some(group(s, password, pkg_version.as_deref(), &mut c).await);
    rep.installed_version = Some(installed);
    let failed = c.failed();
    rep.ok = Some(failed.is_empty());
    rep.checks = Some(c.0);
    rep.ended_at = Some(Timestamp::now());
    if failed.is_empty() {
        return (rep, Ok(()));
    }
    let e = Error::PreflightFailed(format!(
        "{} check(s) failed ({}); nothing was changed",
        failed.len(),
        failed.join(", ")
    ));
    rep.fail(&e);
    (rep, Err(e))
}

/// The programs a run calls: the cell's tools, the service manager, systemd-run, the database
/// upgrade tool.
fn tools(s: &Settings, c: &mut Checks) {
    let tool = tool_without_password(s);
    let cell_tools = preflight::check_executable(&tool.cmt).and_then(|()| preflight::check_executable(&tool.vcd_cell));
    c.result("cell_tools", cell_tools, |()| {
        format!("{} and {}", tool.cmt.display(), tool.vcd_cell.display())
    });
    if preflight::resolvable(&s.systemctl) {
        c.pass("service_tool", s.systemctl.display().to_string());
    } else {
        c.fail(
            "service_tool",
            format!("{} not found: check --systemctl", s.systemctl.display()),
        );
    }
    c.result("systemd_run", preflight::check_systemd_run(s), |()| {
        s.install.systemd_run.display().to_string()
    });
    let db = preflight::db_tool(s);
    c.result("db_tool", preflight::check_executable(&db), |()| {
        db.display().to_string()
    });
}

/// The service manager answers, and the service has settled.
async fn service_check(service: &Service, c: &mut Checks) -> Option<ServiceState> {
    match preflight::service_state(service).await {
        Ok(ServiceState::Changing) => {
            c.fail(
                "service",
                format!(
                    "service {} is starting or stopping; wait until it settles",
                    service.name
                ),
            );
            Some(ServiceState::Changing)
        }
        Ok(st) => {
            c.pass("service", format!("service {} is {st}", service.name));
            Some(st)
        }
        Err(e) => {
            c.fail("service", e.detail());
            None
        }
    }
}

/// The state directory takes files, no run holds the lock, and no run is recorded.
fn state_dir(s: &Settings, c: &mut Checks) {
    c.result("state_dir", Journal::probe(&s.state_dir), |d| d);
    let journal = Journal {
        dir: s.state_dir.clone(),
    };
    match journal.holder() {
        Some(h) => c.fail(
            "lock",
            format!(
                "another run holds the lock: pid {} ({}) since {}; let it finish",
                h.pid, h.command, h.started_at
            ),
        ),
        None => c.pass("lock", "no other run holds the lock"),
    }
    match journal.current() {
        Ok(None) => c.pass("journal", "no recorded run"),
        Ok(Some(rec)) => c.fail(
            "journal",
            format!(
                "a `{}` run ({}) is recorded in {}: {}",
                rec.command,
                rec.run_id,
                journal.current_path().display(),
                rec.advice()
            ),
        ),
        Err(e) => c.fail("journal", e.to_string()),
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::VmwareBin => "VMware installer",
        Kind::Rpm => "rpm",
        Kind::Deb => "deb",
        Kind::ApplianceUpdate => "appliance update",
        Kind::Custom => "[install] command",
    }
}

/// `10.6.1-24300000` → (`10.6.1`, `24300000`).
fn version_and_build(v: &str) -> (String, Option<String>) {
    match v.split_once('-') {
        Some((ver, build)) => (ver.to_string(), Some(build.to_string())),
        None => (v.to_string(), None),
    }
}

/// The package: verified, newer than what is installed (a reinstall of the same version is a
/// warning and `up_to_date`; a downgrade fails), its installer there.
fn package_checks(
    s: &Settings,
    o: &PreflightOptions,
    installed: Option<&str>,
    c: &mut Checks,
    rep: &mut Report,
) -> Option<Package> {
    rep.up_to_date = Some(false);
    let Some(path) = &o.package else {
        rep.package = Some(None);
        c.warn(
            "package",
            "skipped: no PACKAGE given, so the package, its checksum, its version and its installer were not checked",
        );
        return None;
    };
    let verified = preflight::verified_package(s, path, o.pkg.sha256.as_deref(), o.pkg.package_version.as_deref())
        .and_then(|p| preflight::check_fits(s, &p).map(|()| p));
    let pkg = match verified {
        Ok(p) => p,
        Err(e) => {
            rep.package = Some(Some(PackageDoc {
                path: path.display().to_string(),
                version: None,
                build: None,
            }));
            c.fail("package", e.detail());
            return None;
        }
    };
    let (version, build) = pkg.version.as_deref().map(version_and_build).unzip();
    rep.package = Some(Some(PackageDoc {
        path: pkg.path.display().to_string(),
        version,
        build: build.flatten(),
    }));
    c.pass(
        "package",
        format!(
            "{} ({}, sha256 {} verified)",
            pkg.path.display(),
            kind_name(pkg.kind),
            &pkg.sha256[..12]
        ),
    );
    let (status, detail, up_to_date) = version_verdict(installed, pkg.version.as_deref(), o.pkg.allow_downgrade);
    rep.up_to_date = Some(up_to_date);
    c.add("package_version", status, detail);
    c.result("installer", preflight::check_installer(s, &pkg), |()| {
        preflight::installer_program(s, &pkg).display().to_string()
    });
    Some(pkg)
}

/// The package's version against the installed one, with the words of `upgrade`'s refusal.
fn version_verdict(installed: Option<&str>, pkg: Option<&str>, allow_downgrade: bool) -> (CheckStatus, String, bool) {
    let same = matches!((installed, pkg), (Some(i), Some(p)) if compare_versions(p, i) == Ordering::Equal);
    match package::check_versions(installed, pkg, false) {
        Ok(()) => (
            CheckStatus::Pass,
            format!(
                "package version {} is newer than the installed {}",
                pkg.unwrap_or("?"),
                installed.unwrap_or("?")
            ),
            false,
        ),
        Err(e) if same => (CheckStatus::Warn, format!("same-version reinstall: {e}"), true),
        Err(e) if allow_downgrade => (CheckStatus::Warn, format!("{e}; allowed by --allow-downgrade"), false),
        Err(e) => (CheckStatus::Fail, e.to_string(), false),
    }
}

/// Room where the installer unpacks (`unpack_space` on an appliance: where its update is
/// unpacked into a folder of its own).
fn space_check(s: &Settings, pkg: Option<&Package>, appliance: bool, c: &mut Checks) {
    let name = if appliance { "unpack_space" } else { "free_space" };
    let Some(needed) = preflight::space_needed(s, pkg) else {
        c.warn(
            name,
            format!(
                "skipped: no package to size and no --min-free, so the free space in {} was not checked",
                s.install.unpack_dir.display()
            ),
        );
        return;
    };
    c.result(name, preflight::check_space(s, needed), |Space { free, needed }| {
        format!(
            "{} has {} free, the install needs {}",
            s.install.unpack_dir.display(),
            human_bytes(free),
            human_bytes(needed)
        )
    });
}

/// The appliance's own checks. `vamicli`: it answers `vamicli version --appliance`, which only
/// prints. `update_offered`: the manifest inside the package (the file `vamicli update --check`
/// reads from its repository) names the package's version. vamicli itself is not asked what it
/// offers: that needs its repository pointed at the unpacked package, a change preflight does
/// not make (no vamicli command that prints the repository it had, to put it back, is known to
/// us: neither the vendor's procedure nor the stand-in has one). The run's
/// `check_update` stage asks it, before its drain. Whether the version is newer than the
/// installed one is `package_version`'s verdict.
async fn appliance_checks(s: &Settings, pkg: Option<&Package>, c: &mut Checks) {
    c.result("vamicli", preflight::vamicli_answers(s).await, |v| {
        format!("{} answers: {v}", s.install.vamicli.display())
    });
    let Some(pkg) = pkg.filter(|p| p.kind == Kind::ApplianceUpdate) else {
        c.warn(
            "update_offered",
            "skipped: no appliance update (_update.tar.gz) given, so what it offers was not read",
        );
        return;
    };
    let offer = match preflight::manifest_offer(pkg) {
        Ok(o) => o,
        Err(e) => return c.fail("update_offered", e.detail()),
    };
    let source = "the package's manifest";
    match preflight::offer_problem(source, Some(&offer.version), pkg.version.as_deref(), None, false) {
        Some(why) => c.fail("update_offered", why),
        None => c.pass(
            "update_offered",
            format!(
                "{source} offers {} build {} (vamicli reads it once the run points its repository at the unpacked package, and its `update --check` must agree before the drain)",
                offer.version,
                offer.build.as_deref().unwrap_or("?")
            ),
        ),
    }
}

/// The password, and one authenticated tool call when the cell runs (a stopped cell cannot
/// answer the tool: the API login tells then, see [`group`]).
async fn credentials(s: &Settings, svc: Option<ServiceState>, c: &mut Checks) -> Option<Secret> {
    let password = match credentials::load(s.password_file.as_deref(), s.credentials_dir.clone(), &s.user) {
        Ok((p, _)) => p,
        Err(e) => {
            c.fail("credentials", e.to_string());
            return None;
        }
    };
    if svc != Some(ServiceState::Running) {
        return Some(password);
    }
    let tool = CellTool::new(&s.vcd_home, &s.user, password.clone(), s.tool_timeout);
    match tool.status().await {
        Ok(st) => c.pass(
            "credentials",
            format!(
                "accepted by cell-management-tool (job count {}, active {})",
                st.job_count, st.is_active
            ),
        ),
        Err(e @ (ToolError::Rejected { .. } | ToolError::NoTerminal { .. })) => c.fail("credentials", e.to_string()),
        Err(e) => c.fail("credentials", format!("the tool could not tell: {e}")),
    }
    Some(password)
}

/// The group through the API: every cell with its version and state. Also the credentials'
/// check of a stopped cell (the API login).
async fn group(s: &Settings, password: Option<Secret>, pkg: Option<&str>, c: &mut Checks) -> Option<Vec<GroupCell>> {
    let tool_checked = c.0.iter().any(|x| x.name == "credentials");
    if !s.redundancy_guard {
        c.warn(
            "group",
            "skipped: the redundancy guard is off (--skip-redundancy-guard or [api] redundancy_guard = false), so the group's API was not asked",
        );
        if !tool_checked {
            c.warn(
                "credentials",
                "not checked: the cell is not running, and the API was not asked",
            );
        }
        return None;
    }
    let Some(password) = password else {
        c.fail("group", "not asked: no password to log in to the API (see credentials)");
        return None;
    };
    let listed = match Api::new(&s.api, &s.user, password) {
        Ok(api) => {
            let r = api.cells().await;
            api.logout().await;
            r
        }
        Err(e) => Err(e),
    };
    if !tool_checked {
        match &listed {
            Ok(_) => c.pass("credentials", "accepted by the API (the cell is not running)"),
            Err(e @ ApiError::Unauthorized { .. }) => c.fail("credentials", e.to_string()),
            Err(_) => c.warn(
                "credentials",
                "not checked: the cell is not running and the API did not answer",
            ),
        }
    }
    let cells = match listed {
        Ok(cells) => cells,
        Err(e) => {
            c.fail(
                "group",
                format!(
                    "cannot list the cells ({e}): fix [api] url/ca_file/cert_sha256, or pass --skip-redundancy-guard"
                ),
            );
            return None;
        }
    };
    group_checks(s, &cells, pkg, c);
    Some(
        cells
            .iter()
            .map(|x| GroupCell {
                name: x.name.clone(),
                product_version: x.product_version.clone(),
                active: Some(x.serving()),
            })
            .collect(),
    )
}

/// What the group's cells say: all listed, which do not serve, versions, redundancy.
fn group_checks(s: &Settings, cells: &[CellInfo], pkg: Option<&str>, c: &mut Checks) {
    let listing: Vec<String> = cells
        .iter()
        .map(|x| {
            format!(
                "{} ({}, {})",
                x.name,
                x.product_version.as_deref().unwrap_or("version unknown"),
                x.status
                    .as_deref()
                    .unwrap_or(if x.is_active { "active" } else { "not active" })
            )
        })
        .collect();
    c.pass("group", format!("{} cell(s): {}", cells.len(), listing.join(", ")));
    let idle: Vec<&str> = cells.iter().filter(|x| !x.serving()).map(|x| x.name.as_str()).collect();
    if idle.is_empty() {
        c.pass("group_active", "every cell is active");
    } else {
        c.warn("group_active", format!("not active: {}", idle.join(", ")));
    }
    let (status, detail) = group_versions(cells, pkg);
    c.add("group_versions", status, detail);
    match guard_verdict(cells, &s.api.cell_name, s.api.min_active_peers) {
        Ok(n) => c.pass(
            "redundancy",
            format!("{n} other active cell(s) serve while this one is drained"),
        ),
        Err(refusal) => c.warn(
            "redundancy",
            format!(
                "a drain of this cell would be refused without --allow-last-cell: {}",
                refusal.0
            ),
        ),
    }
}

/// The versions the group runs: those other than the package's own may number at most one
/// (a group half way through this upgrade runs the old one and the package's).
fn group_versions(cells: &[CellInfo], pkg: Option<&str>) -> (CheckStatus, String) {
    let mut versions: Vec<(&str, Vec<&str>)> = Vec::new();
    let mut unknown = Vec::new();
    for x in cells {
        let Some(v) = x.product_version.as_deref() else {
            unknown.push(x.name.as_str());
            continue;
        };
        match versions
            .iter_mut()
            .find(|(w, _)| compare_versions(w, v) == Ordering::Equal)
        {
            Some((_, names)) => names.push(&x.name),
            None => versions.push((v, vec![&x.name])),
        }
    }
    let is_pkg = |v: &str| pkg.is_some_and(|p| compare_versions(v, p) == Ordering::Equal);
    let say = |vs: &[&(&str, Vec<&str>)]| {
        vs.iter()
            .map(|(v, names)| format!("{v} on {}", names.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let others: Vec<&(&str, Vec<&str>)> = versions.iter().filter(|(v, _)| !is_pkg(v)).collect();
    let on_pkg: Vec<&(&str, Vec<&str>)> = versions.iter().filter(|(v, _)| is_pkg(v)).collect();
    if others.len() > 1 {
        return (
            CheckStatus::Fail,
            format!(
                "the group runs mixed versions ({}): bring every cell to one version before this upgrade",
                say(&others)
            ),
        );
    }
    if !unknown.is_empty() {
        return (
            CheckStatus::Warn,
            format!(
                "the API gives no productVersion for {}; the others: {}",
                unknown.join(", "),
                say(&versions.iter().collect::<Vec<_>>())
            ),
        );
    }
    match (others.is_empty(), on_pkg.is_empty()) {
        (false, false) => (
            CheckStatus::Pass,
            format!(
                "half way through this upgrade: {} (the package's version); {} (not yet)",
                say(&on_pkg),
                say(&others)
            ),
        ),
        (true, false) => (
            CheckStatus::Pass,
            format!("every cell runs the package's version: {}", say(&on_pkg)),
        ),
        _ => (CheckStatus::Pass, format!("one version: {}", say(&others))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(name: &str, v: Option<&str>) -> CellInfo {
        CellInfo {
            name: name.into(),
            id: name.into(),
            is_active: true,
            status: Some("ACTIVE".into()),
            product_version: v.map(Into::into),
        }
    }

    #[test]
    fn mixed_versions_fail_unless_half_way_through_this_upgrade() {
        let g = |vs: &[Option<&str>], pkg| {
            let cells: Vec<CellInfo> = vs.iter().enumerate().map(|(i, v)| cell(&format!("c{i}"), *v)).collect();
            group_versions(&cells, pkg).0
        };
        let p = Some("10.6.0-24135488");
        assert_eq!(g(&[Some("10.5.1"), Some("10.5.1")], p), CheckStatus::Pass);
        assert_eq!(g(&[Some("10.5.1"), Some("10.6.0")], p), CheckStatus::Pass);
        assert_eq!(g(&[Some("10.6.0"), Some("10.6.0")], p), CheckStatus::Pass);
        assert_eq!(g(&[Some("10.4.2"), Some("10.5.1")], p), CheckStatus::Fail);
        assert_eq!(
            g(&[Some("10.4.2"), Some("10.5.1"), Some("10.6.0")], p),
            CheckStatus::Fail
        );
        assert_eq!(g(&[Some("10.5.1"), Some("10.6.0")], None), CheckStatus::Fail);
        assert_eq!(g(&[Some("10.5.1"), None], p), CheckStatus::Warn);
        let (_, why) = group_versions(&[cell("a", Some("10.5.1")), cell("b", Some("10.6.0"))], p);
        assert!(why.contains("half way") && why.contains("10.6.0 on b"), "{why}");
    }

    #[test]
    fn versions_are_newer_same_or_a_downgrade() {
        let v = |i, p, allow| {
            let (st, _, up) = version_verdict(i, p, allow);
            (st, up)
        };
        assert_eq!(v(Some("10.5.1"), Some("10.6.0-1"), false), (CheckStatus::Pass, false));
        assert_eq!(v(Some("10.6.0"), Some("10.6.0-1"), false), (CheckStatus::Warn, true));
        assert_eq!(v(Some("10.6.1"), Some("10.6.0-1"), false), (CheckStatus::Fail, false));
        assert_eq!(v(Some("10.6.1"), Some("10.6.0-1"), true), (CheckStatus::Warn, false));
        assert_eq!(v(None, Some("10.6.0-1"), false), (CheckStatus::Fail, false));
        let (_, why, _) = version_verdict(Some("10.6.1"), Some("10.6.0-1"), false);
        assert!(why.contains("downgrade"), "{why}");
    }

    #[test]
    fn a_build_number_is_split_off() {
        assert_eq!(
            version_and_build("10.6.1-24300000"),
            ("10.6.1".into(), Some("24300000".into()))
        );
        assert_eq!(version_and_build("10.6.1"), ("10.6.1".into(), None));
    }
}
