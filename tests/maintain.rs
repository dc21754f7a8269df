//! `cellctl maintain` against a simulated cell: the COMMAND in a transient unit (the simulator's
//! systemd-run stand-in), the start and health check, the reboot through the simulator's
//! `systemctl reboot` and the continuation after the boot the test plays (`cellsim boot`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use common::*;

fn cell() -> Cell {
    Cell::new(&["--quiesce-delay", "200ms", "--jobs", "1", "--job-duration", "1s"])
}

fn script(c: &Cell, name: &str, body: &str) -> PathBuf {
    let p = c.tmp.path().join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// The systemd-run stand-in's log: one line per unit started (`UNIT PROGRAM ARGS`).
fn units_log(c: &Cell) -> PathBuf {
    c.tmp.path().join("systemd-run.log")
}

/// cellctl wired for `maintain`: the sim's systemd-run, reboot command and boot id, a
/// reboot-required file that does not exist yet, and a needs-restarting that says "no".
fn maint_cmd(c: &Cell, served: &Served) -> Command {
    let mut cmd = c.upgrade_cmd(served);
    let no = script(c, "needs-restarting", "exit 0");
    cmd.env("CELLCTL_BOOT_ID_FILE", c.dir.join("sim/boot_id"))
        .env(
            "CELLCTL_REBOOT_COMMAND",
            format!("{} reboot", c.dir.join("bin/systemctl").display()),
        )
        .env("CELLCTL_REBOOT_REQUIRED_FILES", c.tmp.path().join("reboot-required"))
        .env("CELLCTL_NEEDS_RESTARTING", format!("{} -r", no.display()))
        .env("CELLCTL_SERVICE_WAIT", "20s")
        .env("FAKE_SYSTEMD_RUN_LOG", units_log(c));
    cmd
}

fn run(cmd: &mut Command) -> Run {
    Run::from(cmd.output().unwrap())
}

fn reboots(c: &Cell) -> usize {
    c.invocations()
        .iter()
        .filter(|i| i["tool"] == "systemctl" && i["argv"].as_array().unwrap().iter().any(|a| a == "reboot"))
        .count()
}

fn boot_id(c: &Cell) -> String {
    std::fs::read_to_string(c.dir.join("sim/boot_id"))
        .unwrap()
        .trim()
        .to_string()
}

/// Now, in the simulator's clock (ms since the epoch; the same machine's clock).
fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A COMMAND that records when it ran (ms since the epoch) in `stamp`, then runs `rest`.
fn stamping(c: &Cell, stamp: &std::path::Path, rest: &str) -> PathBuf {
    script(c, "patch", &format!("date +%s%3N > {}; {rest}", stamp.display()))
}

fn stamp(p: &std::path::Path) -> u64 {
    std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
}

/// When the events called `name` happened.
fn times(t: &Timeline, name: &str) -> Vec<u64> {
    t.named(name).iter().map(|e| e.at_ms).collect()
}

/// The cell served at no moment in [from, to) (by the simulator's timeline).
fn assert_not_serving_between(t: &Timeline, from: u64, to: u64) {
    assert!(t.serving_at(from).is_empty(), "serving at {from}: {:#?}", t.events);
    for e in t.iter().filter(|e| (from..to).contains(&e.at_ms)) {
        assert!(
            t.serving_at(e.at_ms).is_empty(),
            "serving at {} ({}), between {from} and {to}: {:#?}",
            e.at_ms,
            e.event,
            t.events
        );
    }
}

/// The drain began: the first quiesce or maintenance message.
fn drain_began(t: &Timeline) -> u64 {
    t.iter()
        .find(|e| matches!(e.event.as_str(), "quiesced" | "maintenance_on"))
        .map(|e| e.at_ms)
        .expect("the drain is on the timeline")
}

fn assert_serving(c: &Cell) {
    let show = c.show();
    assert_eq!(show["service"], "running", "{show}");
    assert_eq!(show["cell"], "up", "{show}");
    assert_eq!(show["in_maintenance"], false, "{show}");
    assert_eq!(show["quiesced"], false, "{show}");
}

#[test]
fn maintain_runs_the_command_in_a_unit_and_brings_the_cell_back() {
    let c = cell();
    let served = c.serve();
    let marker = c.tmp.path().join("ran");
    let cmd = stamping(
        &c,
        &marker,
        &format!(
            "echo patching now; echo \"service: $({}/bin/systemctl is-active vmware-vcd)\"",
            c.dir.display(),
        ),
    );
    let r = run(maint_cmd(&c, &served)
        .args(["--json", "maintain", "--poll-interval", "100ms", "--"])
        .arg(&cmd));
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["command"], "maintain");
    assert_eq!(doc["outcome"], "maintained");
    assert_eq!(doc["cell_left"], "running");
    assert_eq!(doc["maintain"]["exit_code"], 0);
    let tail = doc["maintain"]["output_tail"].as_str().unwrap();
    assert!(tail.contains("patching now"), "{tail}");
    // The COMMAND ran with the cell's service stopped (the drain shut it down).
    assert!(tail.contains("service: inactive"), "{tail}");
    for s in [
        "quiesce",
        "shutdown",
        "stop_service",
        "command",
        "start_service",
        "health",
    ] {
        assert_eq!(step_status(&doc, s).as_deref(), Some("done"), "step {s}: {doc}");
    }
    assert!(step_status(&doc, "reboot").is_none());
    assert!(marker.exists(), "the command ran");
    // In a transient unit of its own (the systemd-run stand-in started it).
    let units = std::fs::read_to_string(units_log(&c)).unwrap();
    let unit = doc["maintain"]["unit"].as_str().unwrap();
    assert!(
        units.lines().any(|l| l.starts_with(unit) && l.contains("run-logged")),
        "{units}"
    );
    assert_eq!(reboots(&c), 0);
    assert_serving(&c);
    // The simulator's timeline: not serving from the drain through the COMMAND until cellctl
    // started the service again; serving at the end; no reboot.
    let t = Timeline::of_cell(&c.dir);
    let started = times(&t, "service_started");
    assert_eq!(started.len(), 1, "{:#?}", t.events);
    assert!(stamp(&marker) < started[0]);
    assert_not_serving_between(&t, drain_began(&t), started[0]);
    assert!(times(&t, "reboot").is_empty() && times(&t, "boot").is_empty());
    assert!(!t.serving_at(now_ms()).is_empty(), "{:#?}", t.events);
    assert!(c.current().is_none(), "a finished run is archived");
    c.assert_no_leak_to_tools();
}

#[test]
fn reboot_is_recorded_then_the_continuation_after_the_boot_finishes() {
    let c = cell();
    let served = c.serve();
    let ran = c.tmp.path().join("ran");
    let cmd = stamping(&c, &ran, "echo kernel updated");
    let first_boot = boot_id(&c);
    let r = run(maint_cmd(&c, &served)
        .args(["--json", "maintain", "--reboot", "--poll-interval", "100ms", "--"])
        .arg(&cmd));
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "rebooting", "{doc}");
    assert_eq!(doc["cell_left"], "rebooting");
    assert_eq!(doc["maintain"]["boot_id"], first_boot.as_str());
    assert_eq!(step_status(&doc, "reboot").as_deref(), Some("done"));
    assert!(
        step_status(&doc, "start_service").is_none(),
        "no start before the reboot"
    );
    // The simulator saw the reboot request, and the host is rebooting.
    assert_eq!(reboots(&c), 1);
    assert_eq!(c.show()["service"], "stopped");
    let rec = c.current().expect("the run is kept across the reboot");
    assert_eq!(rec["maintain"]["stage"], "rebooting");
    let run_id = rec["run_id"].as_str().unwrap().to_string();

    // The simulator saw one reboot, after the COMMAND, with the cell down since the drain.
    let t = Timeline::of_cell(&c.dir);
    let reboot_at = times(&t, "reboot");
    assert_eq!(reboot_at.len(), 1, "{:#?}", t.events);
    assert!(stamp(&ran) < reboot_at[0]);
    assert!(times(&t, "boot").is_empty());
    assert_not_serving_between(&t, drain_began(&t), now_ms());

    // The boot: a new boot id, the service comes up (enabled); the boot unit's command runs.
    c.sim(&["boot"]);
    assert_ne!(boot_id(&c), first_boot);
    let r = run(maint_cmd(&c, &served).args(["--json", "maintain", "--continue", "--at-boot"]));
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "maintained", "{doc}");
    assert_eq!(doc["run_id"], run_id.as_str());
    // The report covers the whole run, across the reboot.
    for s in [
        "quiesce",
        "shutdown",
        "command",
        "reboot",
        "continue_after_boot",
        "health",
    ] {
        assert_eq!(step_status(&doc, s).as_deref(), Some("done"), "step {s}: {doc}");
    }
    assert_eq!(doc["maintain"]["booted_id"], boot_id(&c).as_str());
    assert_serving(&c);
    assert!(c.current().is_none());
    assert_eq!(reboots(&c), 1, "one reboot");
    // The timeline: down from the drain until the boot the test played; the service started by
    // the boot, and the continuation neither stopped nor restarted it.
    let t = Timeline::of_cell(&c.dir);
    let boot_at = times(&t, "boot");
    assert_eq!((times(&t, "reboot").len(), boot_at.len()), (1, 1), "{:#?}", t.events);
    assert_not_serving_between(&t, drain_began(&t), boot_at[0]);
    let after_boot: Vec<(&str, &serde_json::Value)> = t
        .iter()
        .filter(|e| e.at_ms >= boot_at[0])
        .map(|e| (e.event.as_str(), &e.detail))
        .collect();
    assert_eq!(after_boot[0].0, "boot");
    assert_eq!(after_boot[1], ("service_started", &serde_json::json!({"by": "boot"})));
    assert!(
        after_boot
            .iter()
            .all(|(e, _)| !matches!(*e, "service_stopped" | "shut_down" | "reboot")),
        "{after_boot:?}"
    );
    assert!(!t.serving_at(now_ms()).is_empty(), "{:#?}", t.events);

    // A second boot (or a manual --continue) finds nothing left to do.
    c.sim(&["boot"]);
    for args in [
        &["--json", "maintain", "--continue", "--at-boot"][..],
        &["--json", "maintain", "--continue"][..],
    ] {
        let r = run(maint_cmd(&c, &served).args(args));
        r.assert_code(0);
        assert_eq!(r.json()["outcome"], "nothing_to_continue");
        assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
    }
    assert_eq!(reboots(&c), 1);
    assert_serving(&c);
}

#[test]
fn a_continuation_in_the_same_boot_says_so_and_asks_again() {
    let c = cell();
    let served = c.serve();
    let cmd = script(&c, "patch", "true");
    run(maint_cmd(&c, &served)
        .args(["maintain", "--reboot", "--poll-interval", "100ms", "--"])
        .arg(&cmd))
    .assert_code(0);
    assert_eq!(reboots(&c), 1);
    // No boot played: the reboot did not happen.
    let r = run(maint_cmd(&c, &served).args(["--json", "maintain", "--continue"]));
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "rebooting");
    assert!(r.stderr.contains("did not happen"), "{}", r.stderr);
    assert_eq!(reboots(&c), 2, "requested again");
    c.sim(&["boot", "--no-service"]);
    // The service manager did not start the service: the continuation starts it. Until then
    // the cell served at no moment since the drain (one reboot on the timeline: the second
    // request came while the host was already going down).
    let continued = now_ms();
    let r = run(maint_cmd(&c, &served).env("CELLCTL_SERVICE_WAIT", "1s").args([
        "--json",
        "maintain",
        "--continue",
        "--at-boot",
    ]));
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "maintained");
    assert_serving(&c);
    let t = Timeline::of_cell(&c.dir);
    assert_eq!(
        (times(&t, "reboot").len(), times(&t, "boot").len()),
        (1, 1),
        "{:#?}",
        t.events
    );
    assert_not_serving_between(&t, drain_began(&t), continued);
    let started: Vec<&common::Event> = t.named("service_started");
    assert_eq!(started.len(), 1, "{:#?}", t.events);
    assert!(
        started[0].at_ms >= continued && started[0].detail.is_null(),
        "started by cellctl: {:#?}",
        t.events
    );
    assert!(!t.serving_at(now_ms()).is_empty());
}

#[test]
fn reboot_if_required_reboots_only_when_the_system_says_so() {
    // Nothing says so: no reboot.
    let c = cell();
    let served = c.serve();
    let cmd = script(&c, "patch", "true");
    let r = run(maint_cmd(&c, &served)
        .args([
            "--json",
            "maintain",
            "--reboot-if-required",
            "--poll-interval",
            "100ms",
            "--",
        ])
        .arg(&cmd));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "maintained");
    assert!(
        doc["maintain"]["reboot_reason"]
            .as_str()
            .unwrap()
            .contains("no reboot required"),
        "{doc}"
    );
    assert_eq!(reboots(&c), 0);

    // The reboot-required file exists: a reboot.
    std::fs::write(
        c.tmp.path().join("reboot-required"),
        "*** System restart required ***\n",
    )
    .unwrap();
    let r = run(maint_cmd(&c, &served)
        .args([
            "--json",
            "maintain",
            "--reboot-if-required",
            "--poll-interval",
            "100ms",
            "--",
        ])
        .arg(&cmd));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "rebooting");
    assert!(
        doc["maintain"]["reboot_reason"]
            .as_str()
            .unwrap()
            .contains("reboot-required exists"),
        "{doc}"
    );
    assert_eq!(reboots(&c), 1);
    c.sim(&["boot"]);
    run(maint_cmd(&c, &served).args(["maintain", "--continue", "--at-boot"])).assert_code(0);
    assert_serving(&c);

    // needs-restarting -r exits 1: a reboot.
    std::fs::remove_file(c.tmp.path().join("reboot-required")).unwrap();
    let yes = script(&c, "needs-restarting-yes", "echo 'Reboot is required'; exit 1");
    let r = run(maint_cmd(&c, &served)
        .env("CELLCTL_NEEDS_RESTARTING", format!("{} -r", yes.display()))
        .args([
            "--json",
            "maintain",
            "--reboot-if-required",
            "--poll-interval",
            "100ms",
            "--",
        ])
        .arg(&cmd));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "rebooting");
    assert!(
        doc["maintain"]["reboot_reason"].as_str().unwrap().contains("exited 1"),
        "{doc}"
    );
    assert_eq!(reboots(&c), 2);
}

#[test]
fn a_failing_command_leaves_the_cell_drained_until_continue_or_resume() {
    let c = cell();
    let served = c.serve();
    let fixed = c.tmp.path().join("fixed");
    let cmd = script(
        &c,
        "patch",
        &format!(
            "if [ -e {} ]; then echo fixed run; exit 0; fi; echo 'E: repository not reachable' >&2; exit 3",
            fixed.display()
        ),
    );
    let r = run(maint_cmd(&c, &served)
        .args(["--json", "maintain", "--poll-interval", "100ms", "--"])
        .arg(&cmd));
    r.assert_code(26).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "failed");
    assert_eq!(doc["cell_left"], "shut_down");
    assert_eq!(doc["error"]["kind"], "maintenance-command");
    assert_eq!(doc["maintain"]["exit_code"], 3);
    assert!(
        doc["maintain"]["output_tail"]
            .as_str()
            .unwrap()
            .contains("repository not reachable")
    );
    let msg = doc["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("cellctl maintain --continue") && msg.contains("cellctl resume"),
        "{msg}"
    );
    // Drained: the service stays stopped, nothing was started.
    assert_eq!(c.show()["service"], "stopped");
    assert_eq!(c.current().unwrap()["maintain"]["stage"], "command");
    // At boot nothing happens to a run that is not rebooting.
    let r = run(maint_cmd(&c, &served).args(["--json", "maintain", "--continue", "--at-boot"]));
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "nothing_to_continue");
    assert_eq!(c.show()["service"], "stopped");

    // Fixed: --continue runs the recorded COMMAND again and goes on.
    std::fs::write(&fixed, "").unwrap();
    let r = run(maint_cmd(&c, &served).args(["--json", "maintain", "--continue"]));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "maintained", "{doc}");
    assert_eq!(doc["maintain"]["attempts"], 2);
    assert_eq!(doc["maintain"]["exit_code"], 0);
    assert_serving(&c);

    // Again failing, then undone by resume: the cell comes back without the maintenance.
    std::fs::remove_file(&fixed).unwrap();
    run(maint_cmd(&c, &served)
        .args(["maintain", "--poll-interval", "100ms", "--"])
        .arg(&cmd))
    .assert_code(26);
    assert_eq!(c.show()["service"], "stopped");
    let r = run(maint_cmd(&c, &served).args(["--json", "resume"]));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "resumed", "{doc}");
    assert_eq!(doc["cell_left"], "running");
    assert_serving(&c);
    assert!(c.current().is_none());
}

#[test]
fn kill_9_during_the_command_then_rerun_picks_it_up() {
    let c = cell();
    let served = c.serve();
    let go = c.tmp.path().join("go");
    let count = c.tmp.path().join("count");
    let cmd = script(
        &c,
        "patch",
        &format!(
            "echo x >> {}; while [ ! -e {} ]; do sleep 0.05; done; echo patched",
            count.display(),
            go.display()
        ),
    );
    let mut child = maint_cmd(&c, &served)
        .args(["maintain", "--poll-interval", "100ms", "--"])
        .arg(&cmd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the command to run", || count.exists());
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(c.current().unwrap()["maintain"]["stage"], "command");
    std::fs::write(&go, "").unwrap();
    let r = run(maint_cmd(&c, &served).args(["--json", "maintain", "--continue"]));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "maintained", "{doc}");
    assert!(doc["maintain"]["output_tail"].as_str().unwrap().contains("patched"));
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        1,
        "the command ran once"
    );
    assert_serving(&c);
}

#[test]
fn kill_9_by_the_reboot_itself_then_the_continuation_finishes() {
    let c = cell();
    let served = c.serve();
    let cmd = script(&c, "patch", "true");
    // As a real reboot: the process that asked is killed before it can record the request.
    c.sim(&["set", "reboot_kills=true"]);
    let r = run(maint_cmd(&c, &served)
        .args(["maintain", "--reboot", "--poll-interval", "100ms", "--"])
        .arg(&cmd));
    assert_eq!(r.code, 137, "killed by the reboot: {}", r.stderr);
    assert_eq!(reboots(&c), 1);
    let rec = c.current().unwrap();
    assert!(
        rec["maintain"]["stage"] == "reboot" || rec["maintain"]["stage"] == "rebooting",
        "{rec}"
    );
    c.sim(&["set", "reboot_kills=false"]);
    c.sim(&["boot"]);
    let r = run(maint_cmd(&c, &served).args(["--json", "maintain", "--continue", "--at-boot"]));
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "maintained");
    assert_eq!(reboots(&c), 1, "the new boot says the reboot happened: not asked again");
    assert_serving(&c);
}

#[test]
fn maintain_needs_a_command_or_continue() {
    let c = cell();
    let r = c.run(&["--json", "maintain"]);
    r.assert_code(2);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("no COMMAND"));
    let r = c.run(&["--json", "maintain", "--no-shutdown", "--", "true"]);
    r.assert_code(2);
    assert_eq!(c.invocations().len(), 0, "nothing touched");
}

#[test]
fn sigterm_while_waiting_for_health_names_maintain_continue() {
    let c = Cell::new(&[
        "--quiesce-delay",
        "200ms",
        "--jobs",
        "1",
        "--job-duration",
        "1s",
        "--startup-delay",
        "10m",
    ]);
    let served = c.serve();
    let cmd = script(&c, "patch", "true");
    let child = maint_cmd(&c, &served)
        .args(["--json", "maintain", "--poll-interval", "100ms", "--"])
        .arg(&cmd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The cell was started and is not up yet (its start-up takes 10 minutes).
    wait_for("the health wait", || {
        c.current()
            .is_some_and(|r| r["steps"].as_array().unwrap().iter().any(|s| s["step"] == "health"))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let r = Run::from(child.wait_with_output().unwrap());
    r.assert_code(143);
    let doc = r.json();
    let msg = doc["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("not yet seen healthy") && msg.contains("`cellctl maintain --continue`"),
        "{msg}"
    );
    assert!(!msg.contains("cellctl upgrade"), "{msg}");
    assert_eq!(c.current().unwrap()["maintain"]["stage"], "start");
    // As it says: the continuation finishes it once the cell comes up.
    c.sim(&["set", "startup_delay=0s"]);
    let r = run(maint_cmd(&c, &served).args(["--json", "maintain", "--continue"]));
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "maintained");
    assert_serving(&c);
}

#[test]
fn a_maintenance_message_that_was_on_before_the_run_is_left_on() {
    let c = cell();
    let served = c.serve();
    let out = Command::new(c.dir.join("bin/vmware-vcd-cell"))
        .arg("maintenance")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(c.show()["in_maintenance"], true);
    let cmd = script(&c, "patch", "true");
    let r = run(maint_cmd(&c, &served)
        .args(["--json", "maintain", "--poll-interval", "100ms", "--"])
        .arg(&cmd));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "maintained", "{doc}");
    // Not set by this run: the drain left it as found, and the run puts it back on after the
    // health check (which needs it off), as the operator had it.
    let steps: Vec<(&str, &str)> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .filter(|(s, _)| matches!(*s, "maintenance_on" | "maintenance_off" | "health"))
        .collect();
    assert_eq!(steps.first(), Some(&("maintenance_on", "skipped")), "{steps:?}");
    assert_eq!(steps.last(), Some(&("maintenance_on", "done")), "{steps:?}");
    assert!(steps.contains(&("health", "done")), "{steps:?}");
    assert_eq!(c.show()["in_maintenance"], true);
    // The timeline: the restart cleared the message, the cell was up, then it went back on.
    let t = Timeline::of_cell(&c.dir);
    let up = times(&t, "cell_up");
    let on = times(&t, "maintenance_on");
    assert!(
        on.len() == 2 && up.last().is_some_and(|u| *u <= on[1]),
        "{:#?}",
        t.events
    );
    assert!(c.current().is_none());
}
