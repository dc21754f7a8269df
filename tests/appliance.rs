//! `cellctl upgrade` of a simulated VCD appliance (`cellsim create --appliance`): the package
//! unpacked, vamicli's repository set and checked, the drain, `vamicli update --install` in a
//! transient unit, and the appliance left stopped for its reboot. What happened to the cell is
//! read from the simulator's records (`cellsim show`, invocations), not from cellctl's report.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const OLD: &str = "10.5.1";
const NEW: &str = "10.6.0";

fn appliance() -> Cell {
    Cell::new(&["--appliance", "--quiesce-delay", "200ms", "--version", OLD])
}

/// An appliance update package (and its .sha256, written by cellsim) for `c`.
fn update(c: &Cell, version: &str, extra: &[&str]) -> PathBuf {
    let out = Command::new(cellsim_bin())
        .arg("package")
        .arg("--appliance")
        .arg("--cell")
        .arg(&c.dir)
        .args(["--version", version, "--install-time", "200ms"])
        .args(extra)
        .arg(c.tmp.path().join("pkgs"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn unpack_dir(c: &Cell) -> PathBuf {
    c.tmp.path().join("updates")
}

fn cmd(c: &Cell, served: &Served) -> Command {
    std::fs::create_dir_all(unpack_dir(c)).unwrap();
    let mut cmd = c.upgrade_cmd(served);
    cmd.arg("--vamicli")
        .arg(c.dir.join("bin/vamicli"))
        .arg("--unpack-dir")
        .arg(unpack_dir(c));
    cmd
}

fn run(cmd: &mut Command) -> Run {
    Run::from(cmd.output().unwrap())
}

fn step_status(doc: &Value, step: &str) -> Option<String> {
    doc["steps"]
        .as_array()?
        .iter()
        .rev()
        .find(|s| s["step"] == step)
        .map(|s| s["status"].as_str().unwrap().to_string())
}

/// Calls of one tool with its argv, in order.
fn calls(c: &Cell) -> Vec<(String, String, Option<i64>)> {
    c.invocations()
        .iter()
        .map(|i| {
            let argv: Vec<&str> = i["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            (
                i["tool"].as_str().unwrap().to_string(),
                argv.join(" "),
                i["exit_code"].as_i64(),
            )
        })
        .collect()
}

fn position(c: &Cell, tool: &str, argv_part: &str) -> Option<usize> {
    calls(c).iter().position(|(t, a, _)| t == tool && a.contains(argv_part))
}

fn folders(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The upgrade finished: the simulator installed the package's version once, on a stopped
/// service, after the drain; the appliance waits for its reboot; the folder is gone.
fn assert_installed_once(c: &Cell) {
    let show = c.show();
    assert_eq!(show["version"], NEW);
    assert_eq!(show["service"], "stopped");
    let a = &show["appliance"];
    assert_eq!(a["installs"].as_array().unwrap().len(), 1, "{a}");
    assert_eq!(a["installs"][0]["from"], OLD);
    assert_eq!(a["reboot_required"], true);
    assert!(folders(&unpack_dir(c)).is_empty(), "the unpacked folder is removed");
    assert!(c.current().is_none(), "a finished run leaves no record");
}

#[test]
fn an_appliance_is_updated_through_vamicli_and_left_for_its_reboot() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    let r = run(cmd(&c, &served)
        .args(["--json", "upgrade", "--poll-interval", "100ms"])
        .arg(&pkg));
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "installed");
    assert_eq!(doc["cell_left"], "reboot_required");
    for s in [
        "unpack",
        "set_repo",
        "check_update",
        "quiesce",
        "shutdown",
        "stop_service",
        "install",
    ] {
        assert_eq!(step_status(&doc, s).as_deref(), Some("done"), "step {s}: {doc}");
    }
    assert!(
        step_status(&doc, "start_service").is_none(),
        "an appliance is not started: it reboots"
    );
    let tail = doc["upgrade"]["installer_tail"].as_str().unwrap();
    assert!(tail.contains("reboot is required"), "{tail}");
    assert_installed_once(&c);
    // The vendor's order, from the simulator's log: repo, check, then quiesce, shutdown, and
    // the install only after the service stopped.
    let repo = position(&c, "vamicli", "update --repo file://").unwrap();
    let check = position(&c, "vamicli", "update --check").unwrap();
    let quiesce = position(&c, "cell-management-tool", "--quiesce true").unwrap();
    let stop = position(&c, "systemctl", "stop").unwrap();
    let install = position(&c, "vamicli", "update --install latest --accepteula").unwrap();
    assert!(
        repo < check && check < quiesce && quiesce < stop && stop < install,
        "{:?}",
        calls(&c)
    );
    let repo_url = c.show()["appliance"]["repo"].as_str().unwrap().to_string();
    assert!(
        repo_url.starts_with(&format!("file://{}/", unpack_dir(&c).display())),
        "{repo_url}"
    );
    c.assert_no_leak_to_tools();
}

/// A refused appliance update changed nothing: no quiesce, no install, the old version running.
fn assert_untouched(c: &Cell) {
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 0);
    assert!(position(c, "vamicli", "--install").is_none(), "{:?}", calls(c));
    let show = c.show();
    assert_eq!(show["version"], OLD);
    assert_eq!(show["service"], "running");
    assert_eq!(show["quiesced"], false);
    assert_eq!(show["appliance"]["installs"].as_array().unwrap().len(), 0);
    assert!(c.current().is_none(), "nothing to continue");
    assert!(folders(&unpack_dir(c)).is_empty(), "the unpacked folder is removed");
}

#[test]
fn vamicli_failing_at_check_changes_nothing() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    c.sim(&["fault", "crash", "--op", "vamicli-check"]);
    let r = run(cmd(&c, &served).args(["--json", "upgrade"]).arg(&pkg));
    r.assert_code(21);
    let doc = r.json();
    assert_eq!(doc["cell_left"], "unchanged");
    assert_eq!(step_status(&doc, "check_update").as_deref(), Some("failed"));
    assert!(
        doc["error"]["message"].as_str().unwrap().contains("update --check"),
        "{doc}"
    );
    assert_untouched(&c);
    // Fixed, the same command goes through.
    c.sim(&["fault", "clear"]);
    run(cmd(&c, &served).args(["--json", "upgrade"]).arg(&pkg)).assert_code(0);
    assert_installed_once(&c);
}

#[test]
fn a_package_whose_version_vamicli_does_not_offer_is_refused() {
    let c = appliance();
    let served = c.serve();
    // The file says 10.6.0; its manifest offers 10.6.1.
    let pkg = update(&c, NEW, &["--offer", "10.6.1"]);
    let r = run(cmd(&c, &served).args(["--json", "upgrade"]).arg(&pkg));
    r.assert_code(20);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("vamicli offers 10.6.1") && msg.contains(NEW), "{msg}");
    assert_untouched(&c);
}

#[test]
fn a_downgrade_is_refused_before_anything_is_unpacked() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, "10.4.0", &[]);
    let r = run(cmd(&c, &served).args(["--json", "upgrade"]).arg(&pkg));
    r.assert_code(20);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("downgrade"));
    assert!(position(&c, "vamicli", "").is_none(), "vamicli not even asked");
    assert_untouched(&c);
}

#[test]
fn a_linux_installer_is_refused_on_an_appliance() {
    let c = appliance();
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    let r = run(cmd(&c, &served).args(["--json", "upgrade"]).arg(&pkg));
    r.assert_code(5);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not an appliance update")
    );
    assert_untouched(&c);
}

#[test]
fn vamicli_failing_at_install_leaves_the_appliance_stopped_and_a_rerun_finishes() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    c.sim(&["fault", "crash", "--op", "vamicli-install", "--times", "1"]);
    let r = run(cmd(&c, &served)
        .args(["--json", "upgrade", "--poll-interval", "100ms"])
        .arg(&pkg));
    r.assert_code(21);
    let doc = r.json();
    assert_eq!(doc["cell_left"], "shut_down");
    assert_eq!(step_status(&doc, "install").as_deref(), Some("failed"));
    assert!(
        doc["upgrade"]["installer_tail"].as_str().unwrap().contains("Failure"),
        "{doc}"
    );
    let show = c.show();
    assert_eq!(show["version"], OLD);
    assert_eq!(show["service"], "stopped");
    assert!(c.current().is_some(), "the run is kept");
    // A failed install is not silently retried; asked to, it finishes.
    run(cmd(&c, &served).args(["--json", "upgrade"])).assert_code(12);
    run(cmd(&c, &served).args(["--json", "upgrade", "--retry-install"])).assert_code(0);
    assert_installed_once(&c);
}

/// kill -9 while vamicli hangs at `op`, then the rerun converges: one install, the folder gone.
/// `rerun` is what the operator adds to the final rerun.
fn killed_at(op: &str, rerun: &[&str]) {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    c.sim(&["fault", "hang", "--op", op, "--times", "1"]);
    let child = cmd(&c, &served)
        .args(["--json", "upgrade", "--poll-interval", "100ms"])
        .arg(&pkg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut hung_pid = None;
    wait_for(&format!("vamicli to hang at {op}"), || {
        hung_pid = c
            .invocations()
            .iter()
            .find(|i| i["tool"] == "vamicli" && i["exit_code"].is_null())
            .and_then(|i| i["pid"].as_i64());
        hung_pid.is_some()
    });
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    let _ = wait_child(child);
    // The hung vamicli outlives cellctl (its own process group, or its unit): end it too, as
    // a reboot or the unit's stop would.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(hung_pid.unwrap()).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(c.current().is_some(), "the killed run is recorded");
    if !rerun.is_empty() {
        // The first rerun learns what the lost step left: the killed install failed.
        let r = run(cmd(&c, &served).args(["--json", "upgrade"]));
        r.assert_code(21);
        assert_eq!(r.json()["cell_left"], "shut_down");
        assert_eq!(c.show()["version"], OLD);
    }
    let mut args = vec!["--json", "upgrade", "--poll-interval", "100ms"];
    args.extend_from_slice(rerun);
    let r = run(cmd(&c, &served).args(&args));
    r.assert_code(0);
    assert_eq!(r.json()["cell_left"], "reboot_required");
    assert_installed_once(&c);
}

#[test]
fn killed_at_set_repo_a_rerun_converges() {
    killed_at("vamicli-repo", &[]);
}

#[test]
fn killed_at_check_a_rerun_converges() {
    killed_at("vamicli-check", &[]);
}

#[test]
fn killed_at_install_a_rerun_converges() {
    // The install was killed with cellctl: the rerun learns it failed (the version did not
    // change), and the operator says to run it again.
    killed_at("vamicli-install", &["--retry-install"]);
}

/// `cellctl preflight` on an appliance, its JSON document.
fn preflight(c: &Cell, pkg: &Path, extra: &[&str]) -> (i32, Value) {
    std::fs::create_dir_all(unpack_dir(c)).unwrap();
    let out = c
        .cellctl()
        .arg("--systemd-run")
        .arg(c.dir.join("bin/systemd-run"))
        .arg("--version-command")
        .arg(c.dir.join("bin/vcd-version"))
        .arg("--vamicli")
        .arg(c.dir.join("bin/vamicli"))
        .arg("--unpack-dir")
        .arg(unpack_dir(c))
        .args(extra)
        .args(["--json", "preflight"])
        .arg(pkg)
        .output()
        .unwrap();
    let r = Run::from(out);
    r.assert_no_secret();
    (r.code, r.json())
}

fn check_of(doc: &Value, name: &str) -> (String, String) {
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

/// What preflight may never change on the appliance: vamicli's state (its repository
/// included), the service, the unpack dir; and vamicli is only asked its version.
fn assert_preflight_changed_nothing(c: &Cell, appliance_before: &Value, calls_before: usize) {
    let show = c.show();
    assert_eq!(
        &show["appliance"], appliance_before,
        "vamicli's state (repository) unchanged"
    );
    assert_eq!(show["service"], "running");
    assert_eq!(show["quiesced"], false);
    assert!(folders(&unpack_dir(c)).is_empty(), "nothing unpacked");
    let vamicli: Vec<String> = calls(c)
        .into_iter()
        .skip(calls_before)
        .filter(|(t, _, _)| t == "vamicli")
        .map(|(_, a, _)| a)
        .collect();
    assert!(
        vamicli.iter().all(|a| a == "version --appliance"),
        "only read-only vamicli calls: {vamicli:?}"
    );
}

#[test]
fn preflight_checks_the_appliance_and_changes_nothing() {
    let c = appliance();
    // vamicli's repository set before (by an earlier operator): preflight must leave it.
    let set = Command::new(c.dir.join("bin/vamicli"))
        .args(["update", "--repo", "https://vapp-updates.example/vcd"])
        .output()
        .unwrap();
    assert!(set.status.success(), "{set:?}");
    let pkg = update(&c, NEW, &[]);
    let before = c.show()["appliance"].clone();
    assert_eq!(before["repo"], "https://vapp-updates.example/vcd");
    let calls_before = calls(&c).len();
    let (code, doc) = preflight(&c, &pkg, &[]);
    assert_eq!(code, 0, "{doc}");
    for name in [
        "vamicli",
        "update_offered",
        "unpack_space",
        "package",
        "package_version",
    ] {
        assert_eq!(check_of(&doc, name).0, "pass", "{name}: {doc}");
    }
    assert!(check_of(&doc, "update_offered").1.contains(NEW), "{doc}");
    assert_preflight_changed_nothing(&c, &before, calls_before);

    // A package whose manifest offers another version than its name says.
    let other = update(&c, NEW, &["--offer", "10.6.1"]);
    let (code, doc) = preflight(&c, &other, &[]);
    assert_eq!(code, 25, "{doc}");
    let (st, detail) = check_of(&doc, "update_offered");
    assert_eq!(st, "fail");
    assert!(detail.contains("offers 10.6.1") && detail.contains(NEW), "{detail}");

    // Too little room to unpack.
    let (code, doc) = preflight(&c, &pkg, &["--min-free", "1000TiB"]);
    assert_eq!(code, 25, "{doc}");
    assert_eq!(check_of(&doc, "unpack_space").0, "fail", "{doc}");

    // vamicli does not answer.
    c.sim(&["fault", "crash", "--op", "vamicli-check"]);
    let (code, doc) = preflight(&c, &pkg, &[]);
    assert_eq!(code, 25, "{doc}");
    assert_eq!(check_of(&doc, "vamicli").0, "fail", "{doc}");
    c.sim(&["fault", "clear"]);
    assert_preflight_changed_nothing(&c, &before, calls_before);
}
