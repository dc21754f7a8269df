//! `cellctl preflight`, `cellctl db-upgrade` and `status`'s installed version against simulated
//! cells: every check made to fail for real, and what preflight leaves behind (nothing) read
//! from the simulator's own records.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const OLD: &str = "10.5.1";
const NEW: &str = "10.6.0";

/// cellctl wired for package checks: the sim's systemd-run stand-in and version command.
fn wired(c: &Cell) -> Command {
    wired_with(c, &c.dir.join("bin/systemd-run"))
}

fn wired_with(c: &Cell, systemd_run: &Path) -> Command {
    let mut cmd = c.cellctl();
    cmd.arg("--systemd-run")
        .arg(systemd_run)
        .arg("--version-command")
        .arg(c.dir.join("bin/vcd-version"));
    cmd
}

/// As [`wired`], asking the served group's API as cell `name`.
fn wired_api(c: &Cell, served: &Served, name: &str) -> Command {
    let mut cmd = wired(c);
    cmd.env_remove("CELLCTL_SKIP_REDUNDANCY_GUARD")
        .env("CELLCTL_API_URL", &served.https)
        .env("CELLCTL_API_CA_FILE", &served.ca)
        .env("CELLCTL_CELL_NAME", name);
    cmd
}

fn run(cmd: &mut Command) -> Run {
    Run::from(cmd.output().unwrap())
}

/// A preflight's document (of PACKAGE when given), checked for its fixed shape; exit 0 or 25
/// as its `ok` says.
fn preflight(cmd: &mut Command, package: Option<&Path>) -> Value {
    let r = run(cmd.args(["--json", "preflight"]).args(package));
    r.assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["command"], "preflight");
    let ok = doc["ok"].as_bool().unwrap_or_else(|| panic!("ok is not a bool: {doc}"));
    r.assert_code(if ok { 0 } else { 25 });
    assert!(doc["checks"].is_array(), "{doc}");
    assert!(doc["up_to_date"].is_boolean(), "{doc}");
    for k in ["installed_version", "package", "group"] {
        assert!(doc.get(k).is_some(), "{k} missing: {doc}");
    }
    if ok {
        assert!(doc.get("error").is_none(), "a passed preflight has no `error`: {doc}");
    } else {
        assert_eq!(doc["error"]["kind"], "preflight-failed", "{doc}");
    }
    doc
}

/// (status, detail) of the check `name`.
fn check(doc: &Value, name: &str) -> (String, String) {
    let c = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {doc}"));
    (
        c["status"].as_str().unwrap().to_string(),
        c["detail"].as_str().unwrap().to_string(),
    )
}

fn failing(doc: &Value) -> Vec<String> {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// Every file under `dir` with its size, mode and modification time (nothing when missing).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u32, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.insert(e.path(), (m.len(), m.mode(), m.mtime(), m.mtime_nsec()));
        }
    }
    out
}

/// Tool calls that change a cell (anything but reading its state or version), of those made
/// after the first `from`.
fn changing_calls(c: &Cell, from: usize) -> Vec<Value> {
    c.invocations()
        .into_iter()
        .skip(from)
        .filter(|i| {
            let argv: Vec<&str> = i["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let reads = match i["tool"].as_str().unwrap() {
                "systemctl" => matches!(argv.first(), Some(&("is-active" | "show" | "status"))),
                "cell-management-tool" => argv.contains(&"--status"),
                "vcd-version" => true,
                _ => false,
            };
            !reads
        })
        .collect()
}

/// Stop the cell's service through the simulator's own systemctl.
fn stop_service(c: &Cell) {
    let ok = Command::new(c.dir.join("bin/systemctl"))
        .args(["stop", "vmware-vcd"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "systemctl stop failed");
    assert_eq!(c.show()["service"], "stopped");
}

#[test]
fn a_healthy_group_passes_every_check_and_nothing_is_changed() {
    let g = tempfile::tempdir().unwrap();
    let a = Cell::in_group(g.path(), "a", &["--version", OLD]);
    let b = Cell::in_group(g.path(), "b", &["--version", OLD]);
    let served = a.serve();
    let pkg = a.package(NEW, "ok", &[]);
    // A state dir from earlier runs, with a file in it: preflight must leave it as it is.
    std::fs::create_dir(&a.state).unwrap();
    std::fs::set_permissions(&a.state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(a.state.join("keep"), "x").unwrap();
    let before = snapshot(&a.state);
    let calls_before = (a.invocations().len(), b.invocations().len());
    let http_before = a.http_log().len();

    let doc = preflight(&mut wired_api(&a, &served, "a"), Some(&pkg));
    assert_eq!(doc["ok"], true, "{doc}");
    for c in doc["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "pass", "{c}");
    }
    for name in [
        "cell_tools",
        "service_tool",
        "systemd_run",
        "db_tool",
        "service",
        "state_dir",
        "lock",
        "journal",
        "installed_version",
        "package",
        "package_version",
        "installer",
        "free_space",
        "credentials",
        "group",
        "group_active",
        "group_versions",
        "redundancy",
    ] {
        check(&doc, name);
    }
    assert_eq!(doc["installed_version"], OLD);
    assert_eq!(doc["up_to_date"], false);
    assert_eq!(doc["package"]["version"], NEW);
    assert!(doc["package"]["build"].as_str().is_some_and(|b| !b.is_empty()), "{doc}");
    assert_eq!(doc["package"]["path"], pkg.display().to_string());
    let group = doc["group"].as_array().unwrap();
    assert_eq!(group.len(), 2);
    for cell in group {
        assert_eq!(cell["product_version"], OLD, "{cell}");
        assert_eq!(cell["active"], true, "{cell}");
    }

    // Nothing changed: the state dir, the cells (their own records), the API.
    assert_eq!(snapshot(&a.state), before, "the state dir changed");
    for (c, n) in [(&a, calls_before.0), (&b, calls_before.1)] {
        let changing = changing_calls(c, n);
        assert!(changing.is_empty(), "changing tool calls: {changing:?}");
    }
    assert!(
        a.invocations().len() > calls_before.0,
        "preflight made no tool call at all"
    );
    for req in &a.http_log()[http_before..] {
        let (m, p) = (req["method"].as_str().unwrap(), req["path"].as_str().unwrap());
        let reads = m == "GET" || (p.contains("/sessions") && matches!(m, "POST" | "DELETE"));
        assert!(reads, "preflight changed something through the API: {req}");
    }
    let show = a.show();
    assert_eq!(
        (show["service"].as_str(), show["in_maintenance"].as_bool()),
        (Some("running"), Some(false))
    );
    assert_eq!(show["quiesced"], false);
    a.assert_no_leak_to_tools();

    // For people: one line per check.
    let r = run(wired_api(&a, &served, "a").arg("preflight").arg(&pkg));
    r.assert_code(0);
    let lines: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("PASS ")).collect();
    assert_eq!(lines.len(), doc["checks"].as_array().unwrap().len(), "{}", r.stdout);
    assert!(r.stdout.contains("PASS package_version: "), "{}", r.stdout);
}

#[test]
fn a_missing_tool_fails_its_check() {
    let c = Cell::new(&["--version", OLD]);
    std::fs::remove_file(c.dir.join("bin/upgrade")).unwrap();
    let doc = preflight(&mut wired(&c), None);
    assert_eq!(failing(&doc), ["db_tool"], "{doc}");
    assert!(check(&doc, "db_tool").1.contains("bin/upgrade"), "{doc}");

    let doc = preflight(&mut wired_with(&c, &c.dir.join("bin/no-such-systemd-run")), None);
    assert!(failing(&doc).contains(&"systemd_run".to_string()), "{doc}");
    assert!(check(&doc, "systemd_run").1.contains("no-such-systemd-run"), "{doc}");

    std::fs::rename(
        c.dir.join("bin/cell-management-tool"),
        c.dir.join("bin/cell-management-tool.away"),
    )
    .unwrap();
    let doc = preflight(&mut wired(&c), None);
    assert!(failing(&doc).contains(&"cell_tools".to_string()), "{doc}");
    assert!(check(&doc, "cell_tools").1.contains("cell-management-tool"), "{doc}");
}

#[test]
fn a_bad_password_fails_the_credentials_check() {
    let c = Cell::new(&["--version", OLD]);
    std::fs::write(&c.pwfile, "not-the-password\n").unwrap();
    let doc = preflight(&mut wired(&c), None);
    assert_eq!(failing(&doc), ["credentials"], "{doc}");
    assert!(check(&doc, "credentials").1.contains("rejected"), "{doc}");
}

/// The state dir made read-only for this user (root ignores modes: the immutable attribute),
/// undone on drop.
struct ReadOnly(PathBuf, bool);

impl ReadOnly {
    fn new(dir: &Path) -> ReadOnly {
        let root = nix::unistd::geteuid().is_root();
        if root {
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "`chattr +i` failed: this test needs e2fsprogs and an ext4/xfs temp dir as root"
            );
        } else {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        }
        assert!(
            std::fs::write(dir.join("probe"), "x").is_err(),
            "the read-only state dir still took a file"
        );
        ReadOnly(dir.to_path_buf(), root)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.1 {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        } else {
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700));
        }
    }
}

#[test]
fn a_read_only_state_dir_fails_its_check() {
    let c = Cell::new(&["--version", OLD]);
    std::fs::create_dir(&c.state).unwrap();
    std::fs::set_permissions(&c.state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let _ro = ReadOnly::new(&c.state);
    let doc = preflight(&mut wired(&c), None);
    assert_eq!(failing(&doc), ["state_dir"], "{doc}");
    assert!(
        check(&doc, "state_dir").1.contains(&c.state.display().to_string()),
        "{doc}"
    );
}

#[test]
fn a_recorded_run_fails_the_journal_check_and_a_live_one_the_lock() {
    let c = Cell::new(&[
        "--version",
        OLD,
        "--quiesce-delay",
        "200ms",
        "--jobs",
        "1",
        "--job-duration",
        "1h",
    ]);
    // A live run: it holds the lock while it waits for the job.
    let child = c.spawn(&["drain", "--deadline", "10m", "--poll-interval", "100ms"]);
    c.wait_phase("waiting");
    let doc = preflight(&mut wired(&c), None);
    let (status, detail) = check(&doc, "lock");
    assert_eq!(status, "fail", "{doc}");
    assert!(detail.contains(&format!("pid {}", child.id())), "{detail}");
    assert_eq!(check(&doc, "journal").0, "fail", "{doc}");
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    wait_child(child);

    // A run recorded and left (drained, --no-shutdown): no lock, but the journal holds it.
    c.sim(&["jobs", "finish", "--all"]);
    run(wired(&c).args(["drain", "--no-shutdown", "--poll-interval", "100ms"])).assert_code(0);
    assert!(c.current().is_some(), "drain --no-shutdown keeps its record");
    let doc = preflight(&mut wired(&c), None);
    assert_eq!(failing(&doc), ["journal"], "{doc}");
    assert!(check(&doc, "journal").1.contains("cellctl resume"), "{doc}");
}

#[test]
fn package_checks_fail_for_a_bad_checksum_and_a_downgrade_and_warn_for_the_same_version() {
    let c = Cell::new(&["--version", NEW]);
    let newer = c.package("10.6.1", "ok", &[]);
    std::fs::write(
        format!("{}.sha256", newer.display()),
        format!("{}  x.bin\n", "0".repeat(64)),
    )
    .unwrap();
    let doc = preflight(&mut wired(&c), Some(&newer));
    assert_eq!(failing(&doc), ["package"], "{doc}");
    assert!(check(&doc, "package").1.contains("checksum mismatch"), "{doc}");

    let older = c.package(OLD, "ok", &[]);
    let doc = preflight(&mut wired(&c), Some(&older));
    assert_eq!(failing(&doc), ["package_version"], "{doc}");
    assert!(check(&doc, "package_version").1.contains("downgrade"), "{doc}");
    assert_eq!(doc["up_to_date"], false);

    let same = c.package(NEW, "ok", &[]);
    let doc = preflight(&mut wired(&c), Some(&same));
    assert_eq!(doc["ok"], true, "{doc}");
    let (status, detail) = check(&doc, "package_version");
    assert_eq!(status, "warn");
    assert!(detail.contains("same-version reinstall"), "{detail}");
    assert_eq!(doc["up_to_date"], true);
    assert_eq!(doc["installed_version"], NEW);
}

#[test]
fn too_little_free_space_fails_and_no_package_skips_the_package_checks() {
    let c = Cell::new(&["--version", OLD]);
    let pkg = c.package(NEW, "ok", &[]);
    let unpack = c.tmp.path().join("unpack");
    std::fs::create_dir(&unpack).unwrap();
    let doc = preflight(
        wired(&c)
            .arg("--unpack-dir")
            .arg(&unpack)
            .arg("--min-free")
            .arg("1000T"),
        Some(&pkg),
    );
    assert_eq!(failing(&doc), ["free_space"], "{doc}");
    assert!(
        check(&doc, "free_space").1.contains(&unpack.display().to_string()),
        "{doc}"
    );
    // The need comes from the config file too, and a small one passes.
    std::fs::write(&c.config, "[install]\nmin_free = \"1M\"\n").unwrap();
    let doc = preflight(&mut wired(&c), Some(&pkg));
    assert_eq!(check(&doc, "free_space").0, "pass", "{doc}");

    let doc = preflight(&mut wired(&c), None);
    assert_eq!(doc["ok"], true, "{doc}");
    let (status, detail) = check(&doc, "package");
    assert_eq!(status, "warn");
    assert!(detail.starts_with("skipped"), "{detail}");
    assert!(doc["package"].is_null(), "{doc}");
    assert!(
        !doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "package_version"),
        "{doc}"
    );
}

#[test]
fn a_group_of_mixed_versions_fails_and_one_half_way_through_passes() {
    let g = tempfile::tempdir().unwrap();
    let a = Cell::in_group(g.path(), "a", &["--version", OLD]);
    let b = Cell::in_group(g.path(), "b", &["--version", "10.4.2"]);
    let _c = Cell::in_group(g.path(), "c", &["--version", OLD, "--stopped"]);
    let served = a.serve();
    let pkg = a.package(NEW, "ok", &[]);
    let doc = preflight(&mut wired_api(&a, &served, "a"), Some(&pkg));
    assert_eq!(failing(&doc), ["group_versions"], "{doc}");
    let detail = check(&doc, "group_versions").1;
    assert!(detail.contains("10.4.2") && detail.contains(OLD), "{detail}");
    let (status, detail) = check(&doc, "group_active");
    assert_eq!(status, "warn");
    assert_eq!(detail, "not active: c");
    let versions: BTreeMap<String, (Value, Value)> = doc["group"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap().to_string(),
                (x["product_version"].clone(), x["active"].clone()),
            )
        })
        .collect();
    assert_eq!(versions["b"], (Value::from("10.4.2"), Value::Bool(true)));
    assert_eq!(versions["c"], (Value::from(OLD), Value::Bool(false)));

    // b on the package's version: the group is half way through this upgrade.
    b.sim(&["set", &format!("version={NEW}")]);
    let doc = preflight(&mut wired_api(&a, &served, "a"), Some(&pkg));
    assert_eq!(doc["ok"], true, "{doc}");
    let (status, detail) = check(&doc, "group_versions");
    assert_eq!(status, "pass");
    assert!(detail.contains("half way"), "{detail}");
}

#[test]
fn db_upgrade_is_refused_on_a_running_cell_and_runs_once_on_a_stopped_one() {
    let c = Cell::new(&["--version", NEW]);
    c.sim(&["set", &format!("db_version={OLD}")]);
    let r = run(wired(&c).args(["--json", "db-upgrade"]));
    r.assert_code(12);
    let doc = r.json();
    assert_eq!(doc["command"], "db-upgrade");
    assert_eq!(doc["cell_left"], "unchanged");
    assert!(
        doc["error"]["message"].as_str().unwrap().contains("cellctl drain"),
        "{doc}"
    );
    assert_eq!(c.calls_with(&["--backup-completed"]), 0);
    assert_eq!(c.show()["db_version"], OLD);

    stop_service(&c);
    let r = run(wired(&c).args(["--json", "db-upgrade"]));
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "db_upgraded", "{doc}");
    assert_eq!(c.show()["db_version"], NEW);
    assert!(c.current().is_none(), "a finished db-upgrade leaves no recorded run");

    let r = run(wired(&c).args(["--json", "db-upgrade"]));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "db_upgraded");
    let step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "db_upgrade")
        .unwrap();
    assert_eq!(step["status"], "done");
    assert!(
        step["detail"].as_str().unwrap().contains("already at version"),
        "{step}"
    );
    assert_eq!(c.calls_with(&["--backup-completed"]), 2);
    assert_eq!(c.show()["db_version"], NEW);
}

#[test]
fn db_upgrade_is_refused_while_another_cell_of_the_group_runs() {
    let g = tempfile::tempdir().unwrap();
    let a = Cell::in_group(g.path(), "a", &["--version", NEW, "--stopped"]);
    let b = Cell::in_group(g.path(), "b", &["--version", NEW]);
    // The group's API as the running cell serves it (a stopped cell answers 503).
    let served = b.serve();
    let r = run(wired_api(&a, &served, "a").args(["--json", "db-upgrade"]));
    r.assert_code(12).assert_no_secret();
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("cell(s) b of the group still run"), "{msg}");
    assert_eq!(a.calls_with(&["--backup-completed"]), 0);
}

#[test]
fn status_shows_the_installed_version() {
    let c = Cell::new(&["--version", OLD]);
    let r = run(wired(&c).args(["--json", "status"]));
    r.assert_code(0);
    assert_eq!(r.json()["installed_version"], OLD);
    let r = run(wired(&c).arg("status"));
    assert!(r.stdout.contains(&format!("version:      {OLD}")), "{}", r.stdout);
    let r = run(c
        .cellctl()
        .args(["--version-command", "/bin/false", "--json", "status"]));
    r.assert_code(0);
    let doc = r.json();
    assert!(doc.get("installed_version").is_some_and(Value::is_null), "{doc}");
}

#[test]
fn db_upgrade_refused_by_the_tool_is_kept_and_retried_once_every_cell_is_stopped() {
    let g = tempfile::tempdir().unwrap();
    let a = Cell::in_group(g.path(), "a", &["--version", OLD, "--stopped"]);
    let b = Cell::in_group(g.path(), "b", &["--version", OLD]);
    a.sim(&["set", &format!("version={NEW}")]);
    // The guard is off (the harness default): only the vendor's tool sees that b runs.
    let r = run(wired(&a).args(["--json", "db-upgrade"]));
    r.assert_code(23).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["error"]["kind"], "db-upgrade", "{doc}");
    assert_eq!(a.show()["db_version"], OLD);
    assert!(a.current().is_some(), "a failed database upgrade keeps its run");

    stop_service(&b);
    // The failure is recorded: a plain rerun asks for --retry-install, and runs nothing.
    run(wired(&a).args(["--json", "db-upgrade"])).assert_code(12);
    assert_eq!(a.calls_with(&["--backup-completed"]), 1);
    let r = run(wired(&a).args(["--json", "db-upgrade", "--retry-install"]));
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "db_upgraded");
    assert_eq!(a.show()["db_version"], NEW);
    assert!(a.current().is_none());

    // From the simulator's records: the schema changed once, while no cell's service ran.
    let t = Timeline::of_group(g.path());
    let upgrades = t.named("db_upgrade");
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert!(
        t.running_at(upgrades[0].at_ms).is_empty(),
        "{:?}",
        t.running_at(upgrades[0].at_ms)
    );
}
