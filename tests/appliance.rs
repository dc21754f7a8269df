//! `cellctl upgrade` of a simulated VCD appliance (`cellsim create --appliance`): the package
//! unpacked, vamicli's repository set and checked, the drain, `vamicli update --install` in a
//! transient unit, the reboot through the service manager, and after the boot the test plays
//! (`cellsim boot`) the continuation the shipped unit runs (`maintain --continue --at-boot`):
//! the cell waited for, its health and version checked, the unpacked folder removed. What
//! happened to the cell is read from the simulator's records (`cellsim show`, the group
//! timeline, invocations), not from cellctl's report.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::appliance::*;
use common::*;
use serde_json::Value;

const OLD: &str = APPLIANCE_OLD;
const NEW: &str = APPLIANCE_NEW;

fn appliance() -> Cell {
    appliance_cell(&[])
}

fn update(c: &Cell, version: &str, extra: &[&str]) -> std::path::PathBuf {
    update_package(c, version, extra)
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

fn reboot_calls(c: &Cell) -> usize {
    calls(c)
        .iter()
        .filter(|(t, a, _)| t == "systemctl" && a == "reboot")
        .count()
}

/// The first run ended with the reboot requested: the update installed once on a stopped
/// service, the appliance rebooting (the simulator's host is down until the test boots it),
/// the run kept for its continuation, the unpacked folder kept until the version is seen again.
fn assert_rebooting(c: &Cell, r: &Run) {
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "rebooting", "{doc}");
    assert_eq!(doc["cell_left"], "rebooting", "{doc}");
    assert_eq!(step_status(&doc, "reboot").as_deref(), Some("done"), "{doc}");
    assert!(
        step_status(&doc, "start_service").is_none(),
        "an appliance is not started: it reboots"
    );
    let show = c.show();
    assert_eq!(show["version"], NEW);
    assert_eq!(show["service"], "stopped");
    assert_eq!(show["rebooting"], true, "{show}");
    assert_eq!(show["appliance"]["installs"].as_array().unwrap().len(), 1);
    assert_eq!(show["appliance"]["reboot_required"], true);
    let rec = c.current().expect("the run is kept for the continuation");
    assert_eq!(rec["upgrade"]["stage"], "rebooting", "{rec}");
    assert_eq!(
        folders(&unpack_dir(c)).len(),
        1,
        "the unpacked folder is kept until the version is verified"
    );
}

/// The continuation after the boot finished the upgrade; its report covers every step of the
/// run, across the reboot.
fn assert_continued(c: &Cell, r: &Run) {
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["command"], "upgrade", "{doc}");
    assert_eq!(doc["outcome"], "upgraded", "{doc}");
    assert_eq!(doc["cell_left"], "running", "{doc}");
    for s in [
        "unpack",
        "set_repo",
        "check_update",
        "quiesce",
        "shutdown",
        "stop_service",
        "install",
        "reboot",
        "continue_after_boot",
        "health",
        "verify_version",
    ] {
        assert_eq!(step_status(&doc, s).as_deref(), Some("done"), "step {s}: {doc}");
    }
    assert_eq!(doc["upgrade"]["stage"], "done");
    assert_appliance_updated(c);
}

/// Boot, and the shipped unit's continuation finishes the upgrade.
fn boot_and_continue(c: &Cell, served: &Served) {
    play_boot(c);
    let r = continue_at_boot(c, served);
    assert_continued(c, &r);
}

#[test]
fn an_appliance_is_updated_through_vamicli_reboots_and_finishes_after_the_boot() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    let r = appliance_upgrade(&c, &served, Some(&pkg), &[]);
    assert_rebooting(&c, &r);
    let tail = r.json()["upgrade"]["installer_tail"].as_str().unwrap().to_string();
    assert!(tail.contains("reboot is required"), "{tail}");
    // The vendor's order, from the simulator's log: repo, check, then quiesce, shutdown, the
    // install only after the service stopped, then the reboot.
    let repo = position(&c, "vamicli", "update --repo file://").unwrap();
    let check = position(&c, "vamicli", "update --check").unwrap();
    let quiesce = position(&c, "cell-management-tool", "--quiesce true").unwrap();
    let stop = position(&c, "systemctl", "stop").unwrap();
    let install = position(&c, "vamicli", "update --install latest --accepteula").unwrap();
    let reboot = position(&c, "systemctl", "reboot").unwrap();
    assert!(
        repo < check && check < quiesce && quiesce < stop && stop < install && install < reboot,
        "{:?}",
        calls(&c)
    );
    let repo_url = c.show()["appliance"]["repo"].as_str().unwrap().to_string();
    assert!(
        repo_url.starts_with(&format!("file://{}/", unpack_dir(&c).display())),
        "{repo_url}"
    );
    // The boot unit on a boot with nothing to do for it (none yet: the host is still down) is
    // not run here; after the boot it finishes the run.
    boot_and_continue(&c, &served);
    assert_eq!(reboot_calls(&c), 1, "one reboot");
    // Once finished, the boot unit has nothing left to do.
    play_boot(&c);
    let r = continue_at_boot(&c, &served);
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "nothing_to_continue");
    c.assert_no_leak_to_tools();
}

#[test]
fn a_plain_rerun_also_continues_after_the_boot_and_the_database_step_comes_before_the_reboot() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    let r = appliance_upgrade(&c, &served, Some(&pkg), &["--db-upgrade"]);
    assert_rebooting(&c, &r);
    assert_eq!(step_status(&r.json(), "db_upgrade").as_deref(), Some("done"));
    let t = Timeline::of_cell(&c.dir);
    let db = t.named("db_upgrade")[0].at_ms;
    assert!(
        t.named("reboot").iter().all(|e| e.at_ms >= db),
        "the schema changed before the reboot"
    );
    play_boot(&c);
    // `cellctl upgrade` with no package continues the recorded run as the unit would.
    let r = appliance_upgrade(&c, &served, None, &[]);
    assert_continued(&c, &r);
}

#[test]
fn the_installed_version_is_checked_after_the_boot_and_the_folder_kept_when_it_is_wrong() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    assert_rebooting(&c, &appliance_upgrade(&c, &served, Some(&pkg), &[]));
    play_boot(&c);
    // The update did not take (the appliance came back on the old version).
    c.sim(&["set", &format!("version={OLD}")]);
    let r = continue_at_boot(&c, &served);
    r.assert_code(21);
    let doc = r.json();
    assert_eq!(step_status(&doc, "verify_version").as_deref(), Some("failed"), "{doc}");
    assert!(
        doc["error"]["message"].as_str().unwrap().contains("not the package's"),
        "{doc}"
    );
    assert_eq!(folders(&unpack_dir(&c)).len(), 1, "the unpacked update is kept");
    assert!(c.current().is_some(), "the run is kept");
}

/// `cellctl install PKG` on the appliance, its service stopped first.
fn install_stopped(c: &Cell, served: &Served, pkg: &Path) -> Run {
    let ok = Command::new(c.dir.join("bin/systemctl"))
        .args(["stop", "vmware-vcd"])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    Run::from(
        appliance_cmd(c, served)
            .args(["--json", "install"])
            .arg(pkg)
            .output()
            .unwrap(),
    )
}

/// `cellctl --json start`, wired as for the appliance's other commands.
fn start(c: &Cell, served: &Served) -> Run {
    Run::from(appliance_cmd(c, served).args(["--json", "start"]).output().unwrap())
}

#[test]
fn install_on_a_stopped_appliance_neither_starts_nor_reboots() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    let r = install_stopped(&c, &served, &pkg);
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "installed", "{doc}");
    assert_eq!(doc["cell_left"], "reboot_required", "{doc}");
    let show = c.show();
    assert_eq!(show["version"], NEW);
    assert_eq!(show["service"], "stopped");
    assert_eq!(show["appliance"]["reboot_required"], true);
    assert_eq!(reboot_calls(&c), 0, "install leaves the reboot to the operator");
    assert!(
        folders(&unpack_dir(&c)).is_empty(),
        "the folder goes once the version is verified"
    );
    assert!(c.current().is_none());
}

/// The server-group order (the playbook's): install on the stopped appliance, then `start`,
/// which reboots it (a journaled run of its own) instead of starting the service; after the
/// boot the shipped unit's continuation waits for the cell, checks its health and version.
#[test]
fn start_after_an_install_reboots_the_appliance_and_the_continuation_finishes() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    let r = install_stopped(&c, &served, &pkg);
    r.assert_code(0);
    assert_eq!(r.json()["cell_left"], "reboot_required");

    let r = start(&c, &served);
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["command"], "start", "{doc}");
    assert_eq!(doc["outcome"], "rebooting", "{doc}");
    assert_eq!(doc["cell_left"], "rebooting", "{doc}");
    assert_eq!(step_status(&doc, "reboot").as_deref(), Some("done"), "{doc}");
    assert!(step_status(&doc, "start_service").is_none(), "not started: rebooted");
    assert_eq!(reboot_calls(&c), 1);
    let show = c.show();
    assert_eq!(show["rebooting"], true, "{show}");
    assert_eq!(show["service"], "stopped", "{show}");
    let rec = c.current().expect("the reboot run is kept for its continuation");
    assert_eq!(rec["command"], "start", "{rec}");
    assert_eq!(rec["upgrade"]["stage"], "rebooting", "{rec}");
    // Journaled before it was taken: the reboot step is in the record.
    assert!(
        rec["steps"].as_array().unwrap().iter().any(|s| s["step"] == "reboot"),
        "{rec}"
    );

    play_boot(&c);
    let r = continue_at_boot(&c, &served);
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["command"], "start", "{doc}");
    assert_eq!(doc["outcome"], "started", "{doc}");
    assert_eq!(doc["cell_left"], "running", "{doc}");
    for s in ["reboot", "continue_after_boot", "health", "verify_version"] {
        assert_eq!(step_status(&doc, s).as_deref(), Some("done"), "step {s}: {doc}");
    }
    assert_appliance_updated(&c);
    assert_eq!(Timeline::of_cell(&c.dir).named("reboot").len(), 1, "rebooted once");

    // Done: another `start` starts (here: finds running) without a second reboot.
    let again = start(&c, &served);
    again.assert_code(0);
    assert_eq!(again.json()["outcome"], "started", "{}", again.json());
    assert_eq!(reboot_calls(&c), 1, "no second reboot");
    assert!(c.current().is_none());
}

/// A rerun of `start` (the playbook's, after the boot, before or instead of the unit) goes on
/// with the recorded reboot run: the new boot says the reboot happened; no second reboot.
#[test]
fn start_again_after_the_boot_finishes_the_recorded_reboot_run() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    install_stopped(&c, &served, &pkg).assert_code(0);
    assert_eq!(start(&c, &served).json()["outcome"], "rebooting");
    play_boot(&c);
    let r = start(&c, &served);
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "started", "{doc}");
    assert_eq!(doc["cell_left"], "running", "{doc}");
    assert_eq!(step_status(&doc, "verify_version").as_deref(), Some("done"), "{doc}");
    assert_appliance_updated(&c);
    assert_eq!(reboot_calls(&c), 1, "no second reboot");
    // The unit at the next boot finds nothing to do.
    let r = continue_at_boot(&c, &served);
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "nothing_to_continue");
}

/// An appliance the operator rebooted by hand after its install is not rebooted again by
/// `start`: its boot id changed since the install ended.
#[test]
fn start_after_a_reboot_by_hand_does_not_reboot_again() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    install_stopped(&c, &served, &pkg).assert_code(0);
    play_boot(&c);
    let r = start(&c, &served);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "started", "{doc}");
    assert_eq!(reboot_calls(&c), 0, "{:?}", calls(&c));
    assert!(c.current().is_none(), "a plain start records no run");
    assert_eq!(c.show()["service"], "running");
}

/// A running appliance whose install awaits its reboot is not rebooted from under its users.
#[test]
fn start_refuses_to_reboot_a_running_appliance_whose_install_awaits_the_reboot() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    install_stopped(&c, &served, &pkg).assert_code(0);
    let ok = Command::new(c.dir.join("bin/systemctl"))
        .args(["start", "vmware-vcd"])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(c.show()["service"], "running");
    let r = start(&c, &served);
    assert_ne!(r.code, 0, "{}", r.json());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("drain the cell first"), "{msg}");
    assert_eq!(reboot_calls(&c), 0);
    assert!(c.current().is_none(), "nothing recorded");
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

/// The same command again, then the boot and the continuation: the upgrade converges.
fn rerun_converges(c: &Cell, served: &Served, pkg: Option<&Path>, extra: &[&str]) {
    let r = appliance_upgrade(c, served, pkg, extra);
    assert_rebooting(c, &r);
    boot_and_continue(c, served);
}

#[test]
fn vamicli_failing_at_check_changes_nothing() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    c.sim(&["fault", "crash", "--op", "vamicli-check"]);
    let r = appliance_upgrade(&c, &served, Some(&pkg), &[]);
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
    rerun_converges(&c, &served, Some(&pkg), &[]);
}

#[test]
fn a_package_whose_version_vamicli_does_not_offer_is_refused() {
    let c = appliance();
    let served = c.serve();
    // The file says 10.6.0; its manifest offers 10.6.1.
    let pkg = update(&c, NEW, &["--offer", "10.6.1"]);
    let r = appliance_upgrade(&c, &served, Some(&pkg), &[]);
    r.assert_code(20);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("vamicli offers 10.6.1") && msg.contains(NEW), "{msg}");
    assert!(position(&c, "vamicli", "update --check").is_some(), "vamicli was asked");
    assert_untouched(&c);
    // The right package goes through.
    let good = update(&c, NEW, &["--build", "7"]);
    rerun_converges(&c, &served, Some(&good), &[]);
}

#[test]
fn a_downgrade_is_refused_before_anything_is_unpacked() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, "10.4.0", &[]);
    let r = appliance_upgrade(&c, &served, Some(&pkg), &[]);
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
    let r = appliance_upgrade(&c, &served, Some(&pkg), &[]);
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
    let r = appliance_upgrade(&c, &served, Some(&pkg), &[]);
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
    assert_eq!(reboot_calls(&c), 0, "no reboot after a failed install");
    assert!(c.current().is_some(), "the run is kept");
    // A failed install is not silently retried; asked to, it finishes.
    appliance_upgrade(&c, &served, None, &[]).assert_code(12);
    rerun_converges(&c, &served, None, &["--retry-install"]);
}

/// kill -9 while vamicli hangs at `op`, then the rerun converges: one install, the reboot, the
/// continuation, the folder gone. `rerun` is what the operator adds to the final rerun.
fn killed_at(op: &str, rerun: &[&str]) {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    c.sim(&["fault", "hang", "--op", op, "--times", "1"]);
    let child = appliance_cmd(&c, &served)
        .args(["--json", "upgrade", "--poll-interval", "100ms"])
        .arg(&pkg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
        let r = appliance_upgrade(&c, &served, None, &[]);
        r.assert_code(21);
        assert_eq!(r.json()["cell_left"], "shut_down");
        assert_eq!(c.show()["version"], OLD);
    }
    rerun_converges(&c, &served, None, rerun);
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

/// The journal's last step, (name, status).
fn last_step(c: &Cell) -> Option<(String, String)> {
    let rec = c.current()?;
    let s = rec["steps"].as_array()?.last()?.clone();
    Some((s["step"].as_str()?.to_string(), s["status"].as_str()?.to_string()))
}

/// Spawn `cellctl upgrade PKG`, kill -9 it once the journal shows `step` started.
fn kill_when_started(c: &Cell, served: &Served, pkg: Option<&Path>, step: &str) {
    let child = appliance_cmd(c, served)
        .args(["--json", "upgrade", "--poll-interval", "100ms"])
        .args(pkg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&format!("step {step} started"), || {
        last_step(c) == Some((step.to_string(), "started".to_string()))
    });
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    let _ = wait_child(child);
}

#[test]
fn killed_while_unpacking_a_rerun_unpacks_again_and_converges() {
    let c = appliance();
    let served = c.serve();
    // 96 MiB of zeros: the unpack takes long enough to be caught in flight.
    let pkg = update(&c, NEW, &["--pad", "100663296"]);
    kill_when_started(&c, &served, Some(&pkg), "unpack");
    assert_eq!(c.current().unwrap()["upgrade"]["stage"], "unpack");
    assert!(position(&c, "vamicli", "").is_none(), "vamicli not yet asked");
    rerun_converges(&c, &served, None, &[]);
    assert_eq!(
        c.invocations()
            .iter()
            .filter(|i| i["tool"] == "vamicli" && i["argv"][1] == "--repo")
            .count(),
        1
    );
}

#[test]
fn killed_by_the_reboot_itself_the_continuation_after_the_boot_finishes() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    // As a real reboot ends every process: the sim's `systemctl reboot` kills its caller
    // (cellctl) before answering, so the request is never recorded as done.
    c.sim(&["set", "reboot_kills=true"]);
    let r = appliance_upgrade(&c, &served, Some(&pkg), &[]);
    assert_eq!(r.code, 128 + 9, "killed by the reboot");
    let rec = c.current().expect("recorded");
    assert_eq!(rec["upgrade"]["stage"], "reboot", "{rec}");
    assert_eq!(last_step(&c), Some(("reboot".into(), "started".into())));
    assert_eq!(c.show()["rebooting"], true);
    c.sim(&["set", "reboot_kills=false"]);
    boot_and_continue(&c, &served);
    assert_eq!(reboot_calls(&c), 1, "the reboot happened once: the new boot said so");
}

#[test]
fn killed_before_the_reboot_was_requested_the_continuation_asks_again() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    // A reboot command held before it reaches the service manager.
    let gate = c.tmp.path().join("reboot-gate");
    std::fs::write(&gate, "").unwrap();
    let held = c.tmp.path().join("held-reboot");
    let pidfile = c.tmp.path().join("held-reboot.pid");
    std::fs::write(
        &held,
        format!(
            "#!/bin/sh\necho $$ > '{}'\nwhile [ -f '{}' ]; do sleep 0.05; done\nexec '{}' reboot\n",
            pidfile.display(),
            gate.display(),
            c.dir.join("bin/systemctl").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&held, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let child = appliance_cmd(&c, &served)
        .env("CELLCTL_REBOOT_COMMAND", &held)
        .args(["--json", "upgrade", "--poll-interval", "100ms"])
        .arg(&pkg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("step reboot started", || {
        last_step(&c) == Some(("reboot".into(), "started".into()))
    });
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    let _ = wait_child(child);
    // The held command dies with its gate never opened (a crash before the request reached
    // the service manager): no reboot happened.
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    std::fs::remove_file(&gate).unwrap();
    assert_eq!(reboot_calls(&c), 0);
    assert_eq!(c.show()["rebooting"], false);
    // At boot the unit would go on; by hand on the same boot, the continuation sees the boot
    // id unchanged and asks for the reboot again.
    let r = Run::from(
        appliance_cmd(&c, &served)
            .args(["--json", "maintain", "--continue"])
            .output()
            .unwrap(),
    );
    assert_rebooting(&c, &r);
    boot_and_continue(&c, &served);
    assert_eq!(reboot_calls(&c), 1);
}

#[test]
fn killed_while_waiting_for_the_cell_after_the_boot_a_rerun_finishes() {
    let c = appliance();
    let served = c.serve();
    let pkg = update(&c, NEW, &[]);
    assert_rebooting(&c, &appliance_upgrade(&c, &served, Some(&pkg), &[]));
    // The cell comes up slowly after the boot: the continuation waits for its health.
    c.sim(&["set", "startup_delay=10m"]);
    play_boot(&c);
    let child = appliance_cmd(&c, &served)
        .args(["--json", "maintain", "--continue", "--at-boot"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the health wait", || {
        last_step(&c).is_some_and(|(s, st)| s == "health" && st == "started")
    });
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    let _ = wait_child(child);
    assert_eq!(c.current().unwrap()["upgrade"]["stage"], "start");
    c.sim(&["set", "startup_delay=0s"]);
    // The boot unit is for runs recorded as rebooting; by hand, the continuation finishes.
    let r = Run::from(
        appliance_cmd(&c, &served)
            .args(["--json", "maintain", "--continue"])
            .output()
            .unwrap(),
    );
    assert_continued(&c, &r);
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
