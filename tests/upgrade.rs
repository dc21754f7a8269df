//! `cellctl install`, `start` and `upgrade` against simulated cells and packages. The install
//! runs through a fake systemd-run here; tests/systemd_upgrade.rs uses a real systemd.

mod common;

use common::*;
use serde_json::Value;

const OLD: &str = "10.5.1";
const NEW: &str = "10.6.0";

fn cell(extra: &[&str]) -> Cell {
    let mut args = vec!["--quiesce-delay", "200ms", "--version", OLD];
    args.extend_from_slice(extra);
    Cell::new(&args)
}

fn step_status(doc: &Value, step: &str) -> Option<String> {
    doc["steps"]
        .as_array()?
        .iter()
        .rev()
        .find(|s| s["step"] == step)
        .map(|s| s["status"].as_str().unwrap().to_string())
}

fn run(cmd: &mut std::process::Command) -> Run {
    Run::from(cmd.output().unwrap())
}

#[test]
fn upgrade_takes_a_busy_cell_to_the_new_version_and_healthy() {
    let c = cell(&["--jobs", "2", "--job-duration", "1s", "--startup-delay", "500ms"]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    let r = run(c
        .upgrade_cmd(&served)
        .args(["--json", "upgrade", "--poll-interval", "100ms"])
        .arg(&pkg));
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "upgraded");
    assert_eq!(doc["cell_left"], "running");
    assert_eq!(doc["upgrade"]["version_before"], OLD);
    assert_eq!(doc["upgrade"]["version_after"], NEW);
    for s in [
        "quiesce",
        "shutdown",
        "stop_service",
        "install",
        "start_service",
        "health",
    ] {
        assert_eq!(step_status(&doc, s).as_deref(), Some("done"), "step {s}");
    }
    assert!(
        doc["upgrade"]["installer_tail"].as_str().unwrap().contains("configur"),
        "{}",
        doc["upgrade"]["installer_tail"]
    );
    let show = c.show();
    assert_eq!(show["version"], NEW);
    assert_eq!(show["service"], "running");
    assert_eq!(show["cell"], "up");
    assert_eq!(show["in_maintenance"], false);
    assert!(c.current().is_none(), "a finished upgrade leaves no recorded run");
    c.assert_no_leak_to_tools();
}

#[test]
fn bad_checksum_is_refused_before_the_cell_is_touched() {
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    let r = run(c
        .upgrade_cmd(&served)
        .args(["--json", "upgrade", "--sha256", &"ab".repeat(32)])
        .arg(&pkg));
    r.assert_code(20);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch")
    );
    assert_untouched(&c);
}

#[test]
fn group_writable_package_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    std::fs::set_permissions(&pkg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = run(c.upgrade_cmd(&served).args(["upgrade"]).arg(&pkg));
    r.assert_code(20);
    assert!(r.stderr.contains("chmod go-w"), "{}", r.stderr);
    assert_untouched(&c);
}

/// A refused upgrade changed nothing: no quiesce, no maintenance message, no installer, the
/// old version running, no recorded run.
fn assert_untouched(c: &Cell) {
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 0);
    assert_eq!(c.invocations().iter().filter(|i| i["tool"] == "installer").count(), 0);
    let show = c.show();
    assert_eq!(show["version"], OLD);
    assert_eq!(show["service"], "running");
    assert_eq!(show["cell"], "up");
    assert_eq!(show["in_maintenance"], false);
    assert_eq!(show["quiesced"], false);
    assert!(c.current().is_none(), "a refused upgrade records no run");
}

#[test]
fn downgrade_is_refused_unless_allowed() {
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package("10.4.0", "ok", &[]);
    let r = run(c.upgrade_cmd(&served).args(["--json", "upgrade"]).arg(&pkg));
    r.assert_code(20);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("downgrade"));
    assert_untouched(&c);
}

#[test]
fn failing_installer_is_reported_with_its_output_and_kept_for_retry() {
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "fail", &[]);
    let r = run(c
        .upgrade_cmd(&served)
        .args(["--json", "upgrade", "--poll-interval", "100ms"])
        .arg(&pkg));
    r.assert_code(21);
    let doc = r.json();
    assert_eq!(doc["outcome"], "failed");
    assert_eq!(doc["cell_left"], "shut_down");
    assert_eq!(step_status(&doc, "install").as_deref(), Some("failed"));
    assert!(!doc["upgrade"]["installer_tail"].as_str().unwrap().is_empty());
    assert_eq!(c.show()["version"], OLD);
    assert!(c.current().is_some(), "the failed run stays recorded");
    // Rerunning does not silently retry a failed installer.
    let again = run(c.upgrade_cmd(&served).args(["--json", "upgrade"]));
    again.assert_code(12);
    assert!(
        again.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--retry-install")
    );
}

#[test]
fn hanging_installer_is_stopped_at_its_limit() {
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "hang", &[]);
    let mut cmd = c.upgrade_cmd(&served);
    std::fs::write(
        &c.config,
        "[health]\ninterval = \"100ms\"\n[install]\ntimeout = \"2s\"\n",
    )
    .unwrap();
    let r = run(cmd.args(["--json", "upgrade", "--poll-interval", "100ms"]).arg(&pkg));
    r.assert_code(21);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("did not finish within 2s") && msg.contains("[install] timeout"),
        "{msg}"
    );
    assert_eq!(c.show()["version"], OLD);
}

#[test]
fn installer_that_changes_nothing_is_a_failure() {
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "nochange", &[]);
    let r = run(c
        .upgrade_cmd(&served)
        .args(["--json", "upgrade", "--poll-interval", "100ms"])
        .arg(&pkg));
    r.assert_code(21);
    let doc = r.json();
    assert!(doc["error"]["message"].as_str().unwrap().contains("still"));
    // The cell really is on the old version, down (the install stage), and the run is kept.
    let show = c.show();
    assert_eq!(show["version"], OLD);
    assert_eq!(show["service"], "stopped");
    assert_eq!(doc["cell_left"], "shut_down");
    assert_eq!(c.invocations().iter().filter(|i| i["tool"] == "installer").count(), 1);
    assert!(c.current().is_some(), "the failed run stays recorded");
}

#[test]
fn cell_that_never_gets_healthy_is_a_distinct_failure() {
    let c = cell(&["--startup-delay", "10m"]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    let r = run(c
        .upgrade_cmd(&served)
        .args([
            "--json",
            "upgrade",
            "--poll-interval",
            "100ms",
            "--health-deadline",
            "1s",
        ])
        .arg(&pkg));
    r.assert_code(22);
    let doc = r.json();
    assert_eq!(step_status(&doc, "health").as_deref(), Some("failed"));
    assert_eq!(doc["upgrade"]["version_after"], NEW);
    // Installed and started, but still starting: not healthy, and the run is kept for a rerun.
    let show = c.show();
    assert_eq!(show["version"], NEW);
    assert_eq!(show["service"], "running");
    assert_eq!(show["cell"], "starting");
    assert_eq!(show["healthy"], false);
    assert_eq!(doc["cell_left"], "changed");
    assert!(c.current().is_some(), "the unhealthy run stays recorded");
}

#[test]
fn install_refuses_a_running_cell() {
    let c = cell(&[]);
    let pkg = c.package(NEW, "ok", &[]);
    let served = c.serve();
    let r = run(c.upgrade_cmd(&served).args(["--json", "install"]).arg(&pkg));
    r.assert_code(12);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("drain first"));
    assert_untouched(&c);
}

#[test]
fn install_then_start_on_a_drained_cell() {
    let c = cell(&[]);
    let served = c.serve();
    c.run(&["drain", "--poll-interval", "100ms"]).assert_code(0);
    let pkg = c.package(NEW, "ok", &[]);
    // No password needed to install on a stopped cell.
    let mut cmd = c.upgrade_cmd(&served);
    let r = run(cmd.args(["--json", "install"]).arg(&pkg));
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "installed");
    assert_eq!(c.show()["version"], NEW);
    assert_eq!(c.show()["service"], "stopped");
    let r = run(c
        .upgrade_cmd(&served)
        .args(["--json", "start", "--health-deadline", "30s"]));
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "started");
    assert_eq!(c.show()["cell"], "up");
    assert_eq!(c.show()["version"], NEW);
}

#[test]
fn db_upgrade_runs_once_on_a_stopped_cell() {
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    let r = run(c
        .upgrade_cmd(&served)
        .args(["--json", "upgrade", "--db-upgrade", "--poll-interval", "100ms"])
        .arg(&pkg));
    r.assert_code(0);
    assert_eq!(step_status(&r.json(), "db_upgrade").as_deref(), Some("done"));
    assert_eq!(c.show()["db_version"], NEW);
    // Once: one call of the database tool, and it succeeded (the tool refuses a running cell,
    // so a success means the cell was stopped).
    let runs: Vec<Value> = c.invocations().into_iter().filter(|i| i["tool"] == "upgrade").collect();
    assert_eq!(runs.len(), 1, "the database upgrade ran once: {runs:?}");
    assert_eq!(runs[0]["exit_code"], 0, "{}", runs[0]);
}

#[test]
fn kill_9_during_install_then_rerun_learns_the_result() {
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &["--install-time", "3s"]);
    let mut child = c
        .upgrade_cmd(&served)
        .args(["upgrade", "--poll-interval", "100ms"])
        .arg(&pkg)
        .spawn()
        .unwrap();
    wait_for("the install to be under way", || {
        c.current().is_some_and(|r| r["upgrade"]["stage"] == "install")
            && std::fs::read_dir(c.state.join("units"))
                .is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".pid")))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let run_id = c.current().unwrap()["run_id"].as_str().unwrap().to_string();
    let r = run(c.upgrade_cmd(&served).args(["--json", "upgrade"]));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "upgraded");
    assert_eq!(doc["run_id"], run_id.as_str());
    assert_eq!(c.show()["version"], NEW);
    // One installer run, not two.
    assert_eq!(c.invocations().iter().filter(|i| i["tool"] == "installer").count(), 1);
}

#[test]
fn kill_9_during_start_then_rerun_finishes() {
    let c = cell(&["--startup-delay", "2s"]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    let mut child = c
        .upgrade_cmd(&served)
        .args(["upgrade", "--poll-interval", "100ms"])
        .arg(&pkg)
        .spawn()
        .unwrap();
    wait_for("the start stage", || {
        c.current().is_some_and(|r| r["upgrade"]["stage"] == "start")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let r = run(c.upgrade_cmd(&served).args(["--json", "upgrade"]));
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "upgraded");
    let show = c.show();
    assert_eq!(show["cell"], "up");
    assert_eq!(show["version"], NEW);
    assert_eq!(show["healthy"], true);
}

#[test]
fn kill_9_during_drain_then_rerun_upgrades() {
    let c = cell(&[]);
    c.sim(&["jobs", "add", "--never"]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    let mut child = c
        .upgrade_cmd(&served)
        .args(["upgrade", "--poll-interval", "100ms"])
        .arg(&pkg)
        .spawn()
        .unwrap();
    c.wait_phase("waiting");
    child.kill().unwrap();
    child.wait().unwrap();
    c.sim(&["jobs", "finish", "--all"]);
    let r = run(c
        .upgrade_cmd(&served)
        .args(["--json", "upgrade", "--poll-interval", "100ms"]));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "upgraded");
    assert_eq!(c.show()["version"], NEW);
    let quiesce_steps = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == "quiesce")
        .count();
    assert_eq!(quiesce_steps, 1, "continued, not restarted");
}

#[test]
fn upgrade_aborted_at_drain_deadline_leaves_the_cell_as_found() {
    let c = cell(&[]);
    c.sim(&["jobs", "add", "--never"]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    let r = run(c
        .upgrade_cmd(&served)
        .args(["--json", "upgrade", "--poll-interval", "100ms", "--deadline", "1s"])
        .arg(&pkg));
    r.assert_code(10);
    let doc = r.json();
    assert_eq!(doc["command"], "upgrade");
    assert_eq!(doc["outcome"], "aborted");
    assert_eq!(c.show()["quiesced"], false);
    assert_eq!(c.show()["version"], OLD);
    assert!(c.current().is_none());
}
