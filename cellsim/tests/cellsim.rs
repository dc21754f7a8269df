//! Drives the real `cellsim` binary and the wrapper scripts of a simulated cell.

mod support;

use nix::sys::signal::{Signal, kill};
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};
use support::*;

const PROMPT: &str = "Please enter the password for user administrator: ";
const USAGE: &str = "usage: cell-management-tool cell [options]";

fn status_of(cell: &Cell) -> Vec<String> {
    cell.status().lines().map(String::from).collect()
}

fn is_active(cell: &Cell) -> bool {
    let lines = status_of(cell);
    match lines[1].as_str() {
        "Is Active = true" => true,
        "Is Active = false" => false,
        other => panic!("bad status line {other:?}"),
    }
}

fn job_ids(show: &Value) -> Vec<String> {
    show["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

// ---- status format ----

#[test]
fn status_prints_exactly_the_documented_lines() {
    let cell = Cell::create(&["--jobs", "2", "--job-duration", "1h"]);
    let out = cell.cell(&["--status"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "Job count = 2\nIs Active = true\nIn Maintenance Mode = false\n"
    );
    assert_eq!(text(&out.stderr), "");
    // Short option.
    assert_eq!(cell.cell_ok(&["-t"]), text(&out.stdout));
}

#[test]
fn status_has_two_lines_without_the_maintenance_line() {
    let cell = Cell::create(&["--no-maintenance-line"]);
    assert_eq!(cell.status(), "Job count = 0\nIs Active = true\n");
}

#[test]
fn status_verbose_lists_the_running_jobs() {
    let cell = Cell::create(&[]);
    let ids = cell.sim_ok(
        "jobs add",
        &["--count", "2", "--never", "--operation", "vdcComposeVapp"],
    );
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 2);
    let out = cell.cell_ok(&["--status-verbose"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        ["Job count = 2", "Is Active = true", "In Maintenance Mode = false"]
    );
    assert_eq!(lines.len(), 5, "{out}");
    for (line, id) in lines[3..].iter().zip(&ids) {
        let prefix = format!("Job id={id} operation=vdcComposeVapp started=");
        let started = line.strip_prefix(&prefix).unwrap_or_else(|| panic!("{line:?}"));
        humantime::parse_rfc3339(started).unwrap();
    }
}

// ---- syntax and passwords ----

#[test]
fn password_is_accepted_before_and_after_cell() {
    let cell = Cell::create(&[]);
    let before = cell.cmt(&["-u", USER, "-p", PW, "cell", "--status"]);
    let after = cell.cmt(&["-u", USER, "cell", "--status", "-p", PW]);
    assert_eq!(before.status.code(), Some(0));
    assert_eq!(after.status.code(), Some(0));
    assert_eq!(before.stdout, after.stdout);
    // VMware's own automation: `-u USER cell --quiesce true -p PW`.
    let quiesce = cell.cmt(&["-u", USER, "cell", "--quiesce", "true", "-p", PW]);
    assert_eq!(quiesce.status.code(), Some(0));
    assert_eq!(text(&quiesce.stdout), "");
    assert!(cell.show()["quiesced"].as_bool().unwrap());
}

#[test]
fn bad_syntax_prints_usage_and_exits_1() {
    let cell = Cell::create(&[]);
    for args in [
        &["cell", "--status", "-p", PW][..],
        &["-u", USER, "-p", PW, "--status"],
        &["-u", USER, "-p", PW, "cell"],
        &["-u", USER, "-p", PW, "cell", "--quiesce"],
        &["-u", USER, "-p", PW, "cell", "--quiesce", "maybe"],
        &["-u", USER, "-p", PW, "cell", "--frobnicate"],
        &["-u", USER, "-p", PW, "cell", "--status", "--shutdown"],
        &["-u", USER, "cell", "--status", "-p"],
    ] {
        let out = cell.cmt(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out.stderr).contains(USAGE), "{args:?}");
        assert_eq!(text(&out.stdout), "", "{args:?}");
    }
    let help = cell.cmt(&["cell", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).starts_with(USAGE));
}

#[test]
fn wrong_password_or_user_fails() {
    let cell = Cell::create(&[]);
    for (user, pw) in [(USER, "wrong"), ("root", PW)] {
        let out = cell.cmt(&["-u", user, "-p", pw, "cell", "--quiesce", "true"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(text(&out.stderr), "Login failed: invalid username or password\n");
        assert_eq!(text(&out.stdout), "");
    }
    assert!(!cell.show()["quiesced"].as_bool().unwrap());
}

#[test]
fn password_prompt_on_the_controlling_terminal_with_echo_off() {
    let cell = Cell::create(&["--jobs", "1", "--job-duration", "1h"]);
    let mut cmd = std::process::Command::new(cell.bin("cell-management-tool"));
    cmd.args(["-u", USER, "cell", "--status"]);
    let run = run_on_pty(cmd, PROMPT, PW);
    assert_eq!(run.status.code(), Some(0), "stderr: {}", run.stderr);
    assert!(run.screen.starts_with(PROMPT), "screen: {:?}", run.screen);
    assert!(!run.screen.contains(PW), "password echoed: {:?}", run.screen);
    // The terminal turns \n into \r\n.
    let after_prompt = &run.screen[PROMPT.len()..];
    assert_eq!(
        after_prompt.replace("\r\n", "\n"),
        "\nJob count = 1\nIs Active = true\nIn Maintenance Mode = false\n"
    );
    let rec = cell.last_invocation();
    assert_eq!(rec["had_tty"], true);
    assert_eq!(rec["stdin_tty"], true);
    assert_eq!(rec["password_in_argv"], false);
    assert_eq!(rec["password_in_env"], false);
    assert_eq!(rec["exit_code"], 0);
}

#[test]
fn wrong_password_on_the_terminal_and_a_custom_prompt() {
    let cell = Cell::create(&["--prompt", "Password for {user}> ", "--user", "ops"]);
    let mut cmd = std::process::Command::new(cell.bin("cell-management-tool"));
    cmd.args(["-u", "ops", "cell", "--quiesce", "true"]);
    let run = run_on_pty(cmd, "Password for ops> ", "not-it");
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(run.stderr, "Login failed: invalid username or password\n");
    assert!(!run.screen.contains("not-it"), "echoed: {:?}", run.screen);
    assert!(!cell.show()["quiesced"].as_bool().unwrap());
}

#[test]
fn without_a_terminal_and_without_p_it_fails() {
    let cell = Cell::create(&[]);
    let out = cell.cmt(&["-u", USER, "cell", "--status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error: no console available to read the password; use -p\n"
    );
    assert_eq!(text(&out.stdout), "");
    let rec = cell.last_invocation();
    assert_eq!(rec["had_tty"], false);
    assert_eq!(rec["exit_code"], 1);
}

// ---- jobs, quiesce, drain ----

#[test]
fn quiesce_stops_arrivals_and_deactivates_after_the_delay() {
    let cell = Cell::create(&[
        "--arrival-every",
        "100ms",
        "--job-duration",
        "1h",
        "--quiesce-delay",
        "1h",
    ]);
    // Jobs arrive while the cell is active.
    wait_until("two arrivals", || {
        (cell.show()["arrived_count"].as_u64().unwrap() >= 2).then_some(())
    });
    assert_eq!(cell.cell_ok(&["--quiesce", "true"]), "");
    let arrived = cell.show()["arrived_count"].as_u64().unwrap();
    // The delay has not passed: still active, but nothing new starts.
    assert!(is_active(&cell));
    thread::sleep(Duration::from_millis(500));
    let show = cell.show();
    assert_eq!(show["arrived_count"].as_u64().unwrap(), arrived);
    assert_eq!(show["job_count"].as_u64().unwrap(), arrived);
    assert_eq!(show["quiesced"], true);
    // Shorten the delay: it is now over.
    cell.sim_ok("set", &["quiesce_delay=200ms"]);
    wait_until("Is Active = false", || (!is_active(&cell)).then_some(()));
    // Running jobs carry on.
    assert_eq!(status_of(&cell)[0], format!("Job count = {arrived}"));

    // Resume: active again and jobs arrive again.
    assert_eq!(cell.cell_ok(&["--quiesce", "false"]), "");
    assert!(is_active(&cell));
    wait_until("arrivals after resuming", || {
        (cell.show()["arrived_count"].as_u64().unwrap() > arrived).then_some(())
    });
}

#[test]
fn quiesced_cell_drains_to_the_safe_state() {
    let cell = Cell::create(&[
        "--arrival-every",
        "100ms",
        "--job-duration",
        "300ms",
        "--quiesce-delay",
        "300ms",
    ]);
    wait_until("an arrival", || {
        (cell.show()["arrived_count"].as_u64().unwrap() >= 1).then_some(())
    });
    cell.cell_ok(&["-q", "true"]);
    // "When the Job count value is 0 and the Is Active value is false, it is safe to shut
    // down the cell."
    wait_until("Job count = 0 and Is Active = false", || {
        (status_of(&cell)[..2] == ["Job count = 0", "Is Active = false"]).then_some(())
    });
    let show = cell.show();
    assert_eq!(show["completed_count"], show["arrived_count"]);
}

#[test]
fn jobs_drain_over_time_except_a_never_ending_one() {
    let cell = Cell::create(&["--jobs", "3", "--job-duration", "300ms"]);
    let stuck = cell.sim_ok("jobs add", &["--never"]).trim().to_string();
    let show = wait_until("the finite jobs to end", || {
        let show = cell.show();
        (show["job_count"] == 1).then_some(show)
    });
    assert_eq!(job_ids(&show), std::slice::from_ref(&stuck));
    assert_eq!(show["jobs"][0]["ends_at"], Value::Null);
    assert_eq!(show["completed_count"], 3);
    assert_eq!(status_of(&cell)[0], "Job count = 1");

    cell.sim_ok("jobs finish", &[&stuck]);
    assert_eq!(status_of(&cell)[0], "Job count = 0");
    assert_eq!(cell.show()["completed_count"], 4);

    // Unknown ids are refused; --all ends everything.
    assert!(!cell.sim("jobs finish", &["no-such-job"]).status.success());
    cell.sim_ok("jobs add", &["--count", "3", "--never"]);
    cell.sim_ok("jobs finish", &["--all"]);
    assert_eq!(cell.show()["job_count"], 0);
}

// ---- shutdown, service, watchdog ----

#[test]
fn shutdown_fails_jobs_and_the_service_must_be_restarted() {
    let cell = Cell::create(&["--jobs", "2", "--job-duration", "1h"]);
    cell.cell_ok(&["--quiesce", "true"]);
    assert_eq!(cell.cell_ok(&["--shutdown"]), "");

    let out = cell.cell(&["--status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error: could not connect to the cell at localhost:8999 (Connection refused)\n"
    );
    let show = cell.show();
    assert_eq!(show["cell"], "down");
    assert_eq!(show["service"], "running");
    assert_eq!(show["failed_jobs"].as_array().unwrap().len(), 2);
    assert_eq!(show["failed_jobs"][0]["reason"], "cell shut down");

    // The watchdog keeps the service "active"; a start on an active unit does nothing.
    let active = cell.tool("systemctl", &["is-active", "vmware-vcd"]);
    assert_eq!(
        (text(&active.stdout).as_str(), active.status.code()),
        ("active\n", Some(0))
    );
    assert!(cell.tool("systemctl", &["start", "vmware-vcd"]).status.success());
    assert_eq!(cell.show()["cell"], "down");

    assert!(cell.tool("systemctl", &["stop", "vmware-vcd"]).status.success());
    let inactive = cell.tool("systemctl", &["is-active", "vmware-vcd.service"]);
    assert_eq!(
        (text(&inactive.stdout).as_str(), inactive.status.code()),
        ("inactive\n", Some(3))
    );

    assert!(cell.tool("systemctl", &["start", "vmware-vcd"]).status.success());
    let show = cell.show();
    assert_eq!(show["cell"], "up");
    assert_eq!(show["quiesced"], false);
    assert_eq!(
        cell.status(),
        "Job count = 0\nIs Active = true\nIn Maintenance Mode = false\n"
    );
}

#[test]
fn the_cell_is_unreachable_while_it_starts() {
    let cell = Cell::create(&["--stopped", "--startup-delay", "1h"]);
    assert_eq!(cell.show()["cell"], "down");
    assert_eq!(cell.cell(&["--status"]).status.code(), Some(1));
    assert!(cell.tool("systemctl", &["start", "vmware-vcd"]).status.success());
    assert_eq!(cell.show()["cell"], "starting");
    let out = cell.cell(&["--status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("could not connect"));
    cell.sim_ok("set", &["startup_delay=0s"]);
    assert_eq!(cell.show()["cell"], "up");
    assert_eq!(status_of(&cell)[1], "Is Active = true");
}

#[test]
fn restart_brings_a_shut_down_cell_back() {
    let cell = Cell::create(&[]);
    cell.cell_ok(&["--shutdown"]);
    assert!(cell.tool("systemctl", &["restart", "vmware-vcd"]).status.success());
    assert_eq!(cell.show()["cell"], "up");
}

#[test]
fn watchdog_restarts_a_shut_down_cell() {
    let cell = Cell::create(&["--watchdog-restart", "300ms", "--jobs", "1", "--job-duration", "1h"]);
    cell.cell_ok(&["--quiesce", "true"]);
    cell.cell_ok(&["--maintenance", "true"]);
    cell.cell_ok(&["--shutdown"]);
    let show = wait_until("the watchdog restart", || {
        let show = cell.show();
        (show["cell"] == "up").then_some(show)
    });
    assert_eq!(show["watchdog_restarts"], 1);
    assert_eq!(show["failed_jobs"].as_array().unwrap().len(), 1);
    // A fresh cell: not quiesced, not in maintenance.
    assert_eq!(
        cell.status(),
        "Job count = 0\nIs Active = true\nIn Maintenance Mode = false\n"
    );
}

#[test]
fn a_stopped_service_is_not_restarted_by_the_watchdog() {
    let cell = Cell::create(&["--watchdog-restart", "1h"]);
    cell.cell_ok(&["--shutdown"]);
    assert!(cell.tool("systemctl", &["stop", "vmware-vcd"]).status.success());
    cell.sim_ok("set", &["watchdog_restart=1ms"]);
    thread::sleep(Duration::from_millis(100));
    let show = cell.show();
    assert_eq!(show["cell"], "down");
    assert_eq!(show["service"], "stopped");
}

#[test]
fn stopping_the_service_fails_running_jobs() {
    let cell = Cell::create(&["--jobs", "2", "--job-duration", "1h"]);
    assert!(cell.tool("systemctl", &["stop", "vmware-vcd"]).status.success());
    let show = cell.show();
    assert_eq!(show["job_count"], 0);
    let failed = show["failed_jobs"].as_array().unwrap();
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0]["reason"], "service stopped");
}

#[test]
fn systemctl_status_and_unknown_units() {
    let cell = Cell::create(&["--service-name", "vcd"]);
    let status = cell.tool("systemctl", &["status", "vcd"]);
    assert_eq!(status.status.code(), Some(0));
    let out = text(&status.stdout);
    assert!(out.contains("Active: active (running)"), "{out}");
    assert!(out.contains("vmware-vcd-watchdog is running"), "{out}");
    assert!(out.contains("vmware-vcd-cell is running"), "{out}");

    let unknown = cell.tool("systemctl", &["is-active", "vmware-vcd"]);
    assert_eq!(unknown.status.code(), Some(4));
    assert_eq!(text(&unknown.stderr), "Unit vmware-vcd.service could not be found.\n");
    let quiet = cell.tool("systemctl", &["is-active", "--quiet", "vcd"]);
    assert_eq!((quiet.status.code(), text(&quiet.stdout)), (Some(0), String::new()));

    cell.tool("systemctl", &["stop", "vcd"]);
    let status = cell.tool("systemctl", &["status", "vcd"]);
    assert_eq!(status.status.code(), Some(3));
    assert!(text(&status.stdout).contains("Active: inactive (dead)"));
}

#[test]
fn systemctl_show_answers_as_systemd_does() {
    let cell = Cell::create(&[]);
    // A unit systemd does not know is not an error for `show`: cellctl learns "never started" from it.
    let unknown = cell.tool(
        "systemctl",
        &[
            "show",
            "-p",
            "LoadState,ActiveState",
            "--property=ExecMainCode",
            "cellctl-install-1",
        ],
    );
    assert_eq!(unknown.status.code(), Some(0));
    assert_eq!(
        text(&unknown.stdout),
        "LoadState=not-found\nActiveState=inactive\nExecMainCode=0\n"
    );
    let value = cell.tool(
        "systemctl",
        &["show", "--property=ActiveState", "--value", "vmware-vcd"],
    );
    assert_eq!(text(&value.stdout), "active\n");
    cell.tool("systemctl", &["stop", "vmware-vcd"]);
    let stopped = cell.tool(
        "systemctl",
        &["show", "-p", "LoadState", "-p", "ActiveState", "vmware-vcd.service"],
    );
    assert_eq!(text(&stopped.stdout), "LoadState=loaded\nActiveState=inactive\n");
}

// ---- maintenance ----

#[test]
fn maintenance_message_via_vmware_vcd_cell_and_the_tool() {
    let cell = Cell::create(&[]);
    let out = cell.tool("vmware-vcd-cell", &["maintenance"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(status_of(&cell)[2], "In Maintenance Mode = true");
    let rec = cell.last_invocation();
    assert_eq!(rec["tool"], "cell-management-tool");
    let vcd_cell = &cell.invocations()[0];
    assert_eq!(vcd_cell["tool"], "vmware-vcd-cell");
    assert_eq!(vcd_cell["argv"], serde_json::json!(["maintenance"]));

    let status = cell.tool("vmware-vcd-cell", &["status"]);
    assert!(text(&status.stdout).contains("maintenance mode"));

    cell.cell_ok(&["-m", "false"]);
    assert_eq!(status_of(&cell)[2], "In Maintenance Mode = false");
    cell.cell_ok(&["--maintenance", "true"]);
    assert!(cell.show()["in_maintenance"].as_bool().unwrap());

    cell.tool("systemctl", &["stop", "vmware-vcd"]);
    let down = cell.tool("vmware-vcd-cell", &["maintenance"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(!text(&down.stderr).is_empty());
    assert_eq!(cell.tool("vmware-vcd-cell", &["status"]).status.code(), Some(3));
}

// ---- faults ----

#[test]
fn fault_crash_prints_a_java_stack_trace() {
    let cell = Cell::create(&[]);
    cell.sim_ok("fault", &["crash"]);
    let out = cell.cell(&["--status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("Exception in thread \"main\" java."), "{err}");
    assert!(err.contains("\n\tat com.vmware."), "{err}");
    assert_eq!(text(&out.stdout), "");
    // Not applied.
    cell.cell(&["--quiesce", "true"]);
    assert_eq!(cell.show()["quiesced"], false);
    cell.sim_ok("fault", &["clear"]);
    cell.status();
}

#[test]
fn fault_garble_prints_junk_and_exits_0() {
    let cell = Cell::create(&[]);
    cell.sim_ok("fault", &["garble"]);
    let out = cell.cell(&["--status"]);
    assert_eq!(out.status.code(), Some(0));
    let junk = text(&out.stdout);
    assert!(!junk.trim().is_empty());
    assert!(!junk.contains("Job count") && !junk.contains('='), "{junk}");
}

#[test]
fn fault_jvm_warnings_go_to_stderr_and_the_call_succeeds() {
    let cell = Cell::create(&[]);
    cell.sim_ok("fault", &["jvm-warnings"]);
    let out = cell.cell(&["--status"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).starts_with("OpenJDK 64-Bit Server VM warning: "));
    assert_eq!(
        text(&out.stdout),
        "Job count = 0\nIs Active = true\nIn Maintenance Mode = false\n"
    );
}

#[test]
fn fault_connect_refused_looks_like_a_down_cell() {
    let cell = Cell::create(&[]);
    cell.sim_ok("fault", &["connect-refused", "--op", "shutdown"]);
    cell.status();
    let out = cell.cell(&["--shutdown"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("(Connection refused)"));
    assert_eq!(cell.show()["cell"], "up");
}

#[test]
fn fault_times_counts_down_and_op_selects_calls() {
    let cell = Cell::create(&[]);
    cell.sim_ok("fault", &["crash", "--op", "status", "--times", "2"]);
    assert_eq!(cell.cell_ok(&["--quiesce", "true"]), "");
    assert_eq!(cell.show()["faults"][0]["remaining"], 2);
    assert_eq!(cell.cell(&["--status"]).status.code(), Some(1));
    assert_eq!(cell.cell(&["-t"]).status.code(), Some(1));
    cell.status();
    assert_eq!(cell.show()["faults"], serde_json::json!([]));
}

#[test]
fn fault_hang_never_returns_and_dies_on_sigterm() {
    let cell = Cell::create(&[]);
    cell.sim_ok("fault", &["hang", "--times", "1"]);
    let mut cmd = cell.command("cell-management-tool");
    cmd.args(["-u", USER, "-p", PW, "cell", "--status"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    let rec = wait_until("the hang's record", || {
        cell.invocations()
            .into_iter()
            .find(|r| r["tool"] == "cell-management-tool")
    });
    assert_eq!(rec["exit_code"], Value::Null);
    assert!(child.running());
    kill(child.pid(), Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().signal(), Some(Signal::SIGTERM as i32));
    // --times 1: the next call works.
    cell.status();
}

#[test]
fn fault_hang_can_ignore_sigterm() {
    let cell = Cell::create(&["--hang-ignores-term"]);
    cell.sim_ok("fault", &["hang", "--op", "quiesce"]);
    let mut cmd = cell.command("cell-management-tool");
    cmd.args(["-u", USER, "-p", PW, "cell", "-q", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    wait_until("the hang's record", || {
        cell.invocations()
            .into_iter()
            .find(|r| r["tool"] == "cell-management-tool")
    });
    kill(child.pid(), Signal::SIGTERM).unwrap();
    thread::sleep(Duration::from_millis(300));
    assert!(child.running(), "SIGTERM should be ignored");
    kill(child.pid(), Signal::SIGKILL).unwrap();
    assert_eq!(child.wait().signal(), Some(Signal::SIGKILL as i32));
}

// ---- realism and bookkeeping ----

#[test]
fn latency_delays_every_call() {
    let cell = Cell::create(&["--latency", "400ms"]);
    let start = Instant::now();
    cell.status();
    assert!(start.elapsed() >= Duration::from_millis(400));
    cell.sim_ok("set", &["latency=0s"]);
    assert_eq!(cell.show()["knobs"]["latency"], "0s");
}

#[test]
fn invocation_records_show_where_the_password_went() {
    let cell = Cell::create(&[]);
    cell.status();
    let rec = cell.last_invocation();
    assert_eq!(rec["tool"], "cell-management-tool");
    assert_eq!(
        rec["argv"],
        serde_json::json!(["-u", USER, "-p", "***", "cell", "--status"])
    );
    assert_eq!(rec["password_in_argv"], true);
    assert_eq!(rec["password_in_env"], false);
    assert_eq!(rec["had_tty"], false);
    assert_eq!(rec["stdin_tty"], false);
    assert_eq!(rec["exit_code"], 0);
    humantime::parse_rfc3339(rec["at"].as_str().unwrap()).unwrap();
    let raw = std::fs::read_to_string(cell.dir.join("sim/invocations.jsonl")).unwrap();
    assert!(!raw.contains(PW));

    let mut cmd = cell.command("systemctl");
    cmd.args(["is-active", "vmware-vcd"])
        .env("SOME_SECRET", format!("x{PW}x"));
    assert!(run(cmd).status.success());
    let rec = cell.last_invocation();
    assert_eq!(rec["tool"], "systemctl");
    assert_eq!(rec["password_in_argv"], false);
    assert_eq!(rec["password_in_env"], true);

    let human = cell.sim_ok("invocations", &[]);
    assert_eq!(human.lines().count(), 2);
    assert!(human.contains("PASSWORD-IN-ARGV") && human.contains("PASSWORD-IN-ENV"));
}

#[test]
fn concurrent_calls_share_one_cell_and_log_whole_lines() {
    let cell = Cell::create(&["--jobs", "3", "--job-duration", "1h"]);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let mut cmd = cell.command("cell-management-tool");
            cmd.args(["-u", USER, "-p", PW, "cell", "--status"]);
            thread::spawn(move || run(cmd))
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).starts_with("Job count = 3\n"));
    }
    let records = cell.invocations();
    assert_eq!(records.len(), 8);
}

#[test]
fn create_refuses_an_existing_cell_and_set_refuses_unknown_knobs() {
    let cell = Cell::create(&[]);
    // Through `run`: a simulator that hung here would fail the test at its limit, not block it.
    let mut create = std::process::Command::new(SIM);
    create.arg("create").arg(&cell.dir);
    let again = run(create);
    assert!(!again.status.success());
    assert!(!cell.sim("set", &["no_such_knob=1"]).status.success());
    assert!(!cell.sim("set", &["arrival_every=0s"]).status.success());
    cell.sim_ok("set", &["arrival_every=none", "password=new-pw", "version=10.5.0"]);
    let show = cell.show();
    assert_eq!(show["knobs"]["arrival_every"], Value::Null);
    assert_eq!(show["version"], "10.5.0");
    let old = cell.cell(&["--status"]);
    assert_eq!(old.status.code(), Some(1));
    let new = cell.cmt(&["-u", USER, "-p", "new-pw", "cell", "--status"]);
    assert_eq!(new.status.code(), Some(0));
    let mode = std::fs::metadata(cell.bin("systemctl")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o755
    );
}
