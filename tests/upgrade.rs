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

/// `Cell::upgrade_cmd`, with another systemd-run (a test stand-in in the cell's `bin/`, so the
/// simulator's `systemctl` beside it is the one asked about units).
fn upgrade_with_systemd_run(c: &Cell, served: &Served, name: &str, script: &str) -> std::process::Command {
    use std::os::unix::fs::PermissionsExt;
    let path = c.dir.join("bin").join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = c.cellctl();
    c.upgrade_cmd(served); // its config
    cmd.arg("--systemd-run")
        .arg(&path)
        .arg("--version-command")
        .arg(c.dir.join("bin/vcd-version"))
        .arg("--health-url")
        .arg(served.health_url())
        .arg("--health-ca-file")
        .arg(&served.ca);
    cmd
}

fn install_steps(doc: &Value) -> Vec<&Value> {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == "install")
        .collect()
}

fn installer_runs(c: &Cell) -> usize {
    c.invocations().iter().filter(|i| i["tool"] == "installer").count()
}

/// cellctl killed (-9) right after the journal recorded `install: started`, before the unit
/// started: no status, pid or log file, and systemd knows no such unit. The installer never
/// ran, so a plain rerun runs it, once, with no --retry-install.
#[test]
fn kill_9_right_after_install_started_then_a_plain_rerun_installs_once() {
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    // Called once the step is journaled: cellctl dies there, nothing is started.
    let killer = "#!/bin/sh\nkill -9 $PPID\nexit 1\n";
    let r = run(upgrade_with_systemd_run(&c, &served, "systemd-run-killer", killer)
        .args(["upgrade", "--poll-interval", "100ms"])
        .arg(&pkg));
    r.assert_code(137);
    let journal = c.current().expect("the run is journaled");
    assert_eq!(step_status(&journal, "install").as_deref(), Some("started"));
    let units: Vec<_> = std::fs::read_dir(c.state.join("units"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(units.is_empty(), "the unit left no file: {units:?}");
    assert_eq!(installer_runs(&c), 0);

    let r = run(c.upgrade_cmd(&served).args(["--json", "upgrade"]));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "upgraded");
    assert_eq!(doc["run_id"], journal["run_id"]);
    assert_eq!(c.show()["version"], NEW);
    assert_eq!(installer_runs(&c), 1, "the installer ran exactly once");
    // The step recorded before the crash is the one taken: no second, forever "started", record.
    let steps = install_steps(&doc);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0]["status"], "done");
}

/// The installer's log shows it started, but no result was recorded and the version is
/// unchanged: truly uncertain. The rerun asks for --retry-install and says why.
#[test]
fn install_started_without_result_and_version_unchanged_asks_for_retry_install() {
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    // The wrapper began its log, then cellctl and the unit died (a reboot, say).
    let dies = "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --log ] && echo 'Installing VMware Cloud Director...' > \"$2\"; shift; done\nkill -9 $PPID\nexit 1\n";
    let r = run(upgrade_with_systemd_run(&c, &served, "systemd-run-dies", dies)
        .args(["upgrade", "--poll-interval", "100ms"])
        .arg(&pkg));
    r.assert_code(137);

    let r = run(c.upgrade_cmd(&served).args(["--json", "upgrade"]));
    r.assert_code(21);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    for want in ["--retry-install", "log exists", "still 10.5.1"] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
    assert_eq!(installer_runs(&c), 0);

    let r = run(c.upgrade_cmd(&served).args(["--json", "upgrade", "--retry-install"]));
    r.assert_code(0);
    assert_eq!(c.show()["version"], NEW);
    assert_eq!(installer_runs(&c), 1);
}

/// The installer succeeds but its wrapper cannot write the status file (a full or read-only
/// state dir; here a directory stands where the file goes, so the atomic rename fails). The
/// message names the state dir, not systemd-run, and a plain rerun learns the install from the
/// installed version.
#[test]
fn install_result_that_cannot_be_recorded_names_the_state_dir_and_a_plain_rerun_finishes() {
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    let blocked = format!(
        "#!/bin/sh\nprev=\nfor a in \"$@\"; do [ \"$prev\" = --status ] && mkdir -p \"$a\"; prev=$a; done\nexec '{}' \"$@\"\n",
        c.dir.join("bin/systemd-run").display()
    );
    let r = run(upgrade_with_systemd_run(&c, &served, "systemd-run-blocked", &blocked)
        .args(["--json", "upgrade", "--poll-interval", "100ms"])
        .arg(&pkg));
    r.assert_code(9);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    let units = c.state.join("units").display().to_string();
    assert!(msg.contains(&format!("could not be recorded in {units}")), "{msg}");
    assert!(msg.contains("ran in unit") && msg.contains("exit status 0"), "{msg}");
    assert!(!msg.contains("systemd-run") && !msg.contains("cannot start"), "{msg}");
    assert_eq!(c.show()["version"], NEW, "the installer did its work");
    assert_eq!(
        step_status(&c.current().unwrap(), "install").as_deref(),
        Some("started"),
        "the journal leaves the install for a rerun to learn"
    );

    // The directory is left in the way: the rerun must not need the status file.
    let r = run(c.upgrade_cmd(&served).args(["--json", "upgrade"]));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "upgraded");
    assert_eq!(doc["upgrade"]["version_after"], NEW);
    let steps = install_steps(&doc);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0]["status"], "done");
    let detail = steps[0]["detail"].as_str().unwrap();
    assert!(detail.contains("learned from the installed version"), "{detail}");
    assert_eq!(installer_runs(&c), 1, "not installed twice");
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

/// Issue 15, item 2: a continued run checks that the service is still stopped before it
/// installs: a cell started while cellctl was away is never installed under.
#[test]
fn a_continued_upgrade_installs_only_on_a_stopped_service() {
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    let killer = "#!/bin/sh\nkill -9 $PPID\nexit 1\n";
    let r = run(upgrade_with_systemd_run(&c, &served, "systemd-run-killer", killer)
        .args(["upgrade", "--poll-interval", "100ms"])
        .arg(&pkg));
    r.assert_code(137);
    assert_eq!(c.show()["service"], "stopped");
    // Someone starts the cell while cellctl is away.
    assert!(
        std::process::Command::new(c.dir.join("bin/systemctl"))
            .args(["start", "vmware-vcd"])
            .status()
            .unwrap()
            .success()
    );
    let r = run(c.upgrade_cmd(&served).args(["--json", "upgrade"]));
    r.assert_code(12);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("recorded it stopped") && msg.contains("nothing was installed"),
        "{msg}"
    );
    assert_eq!(installer_runs(&c), 0);
    assert!(c.current().is_some(), "the run stays recorded");
    assert!(
        std::process::Command::new(c.dir.join("bin/systemctl"))
            .args(["stop", "vmware-vcd"])
            .status()
            .unwrap()
            .success()
    );
    let r = run(c.upgrade_cmd(&served).args(["--json", "upgrade"]));
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "upgraded");
    assert_eq!(installer_runs(&c), 1);
    assert_eq!(c.show()["version"], NEW);
}
