//! `cellctl drain`, `resume` and `status` driven as a binary against simulated cells.

mod common;

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

const FAST: &[&str] = &["--quiesce-delay", "200ms"];

fn cell(extra: &[&str]) -> Cell {
    let mut args = FAST.to_vec();
    args.extend_from_slice(extra);
    Cell::new(&args)
}

fn has_step(doc: &Value, step: &str, status: &str) -> bool {
    steps(doc).iter().any(|(s, st)| s == step && st == status)
}

#[test]
fn happy_path_drains_and_shuts_down() {
    let c = cell(&["--jobs", "2", "--job-duration", "1s", "--arrival-every", "300ms"]);
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "shut_down");
    assert_eq!(doc["cell_left"], "shut_down");
    assert_eq!(doc["exit_code"], 0);
    assert!(doc["run_id"].is_string());
    for s in [
        "preflight",
        "maintenance_on",
        "quiesce",
        "wait",
        "shutdown",
        "stop_service",
    ] {
        assert!(has_step(&doc, s, "done"), "step {s} not done: {:?}", steps(&doc));
    }
    assert!(doc["steps"][0]["started_at"].is_string());
    let show = c.show();
    assert_eq!(show["service"], "stopped");
    assert_eq!(show["cell"], "down");
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 1);
    assert_eq!(c.calls_with(&["--shutdown"]), 1);
    // The run is over: its record is archived, nothing is left to resume.
    assert!(c.current().is_none());
    c.assert_no_leak_to_tools();
    assert_no_password_in(&c.state_files_text(), "the state dir");
}

#[test]
fn late_jobs_are_waited_for_and_drained_is_confirmed_twice() {
    let c = cell(&["--jobs", "3", "--job-duration", "2s"]);
    let r = c.run(&["--json", "drain", "--poll-interval", "200ms", "--deadline", "2m"]);
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "shut_down");
    // At least: preflight, several busy polls, two drained polls.
    assert!(
        c.calls_with(&["--status"]) >= 4,
        "status calls: {}",
        c.calls_with(&["--status"])
    );
}

#[test]
fn never_ending_job_aborts_at_deadline_and_undoes_changes() {
    let c = cell(&[]);
    c.sim(&["jobs", "add", "--never"]);
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms", "--deadline", "1s"]);
    r.assert_code(10).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "aborted");
    assert_eq!(doc["cell_left"], "unchanged");
    assert_eq!(doc["error"]["kind"], "deadline");
    assert!(has_step(&doc, "undo_quiesce", "done") && has_step(&doc, "undo_maintenance", "done"));
    let show = c.show();
    assert_eq!(show["service"], "running");
    assert_eq!(show["quiesced"], false);
    assert_eq!(show["in_maintenance"], false);
    assert_eq!(c.calls_with(&["--shutdown"]), 0);
    assert!(c.current().is_none());
}

#[test]
fn never_ending_job_with_force_shuts_down_and_lists_jobs() {
    let c = cell(&[]);
    c.sim(&["jobs", "add", "--never", "--operation", "vappDeploy"]);
    let r = c.run(&[
        "--json",
        "drain",
        "--poll-interval",
        "100ms",
        "--deadline",
        "1s",
        "--on-deadline",
        "force",
    ]);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "forced");
    let jobs = doc["jobs_remaining"].as_array().expect("jobs_remaining listed");
    assert!(
        jobs.iter().any(|j| j.as_str().unwrap().contains("vappDeploy")),
        "{jobs:?}"
    );
    assert_eq!(c.show()["service"], "stopped");
}

#[test]
fn maintenance_already_on_is_left_on() {
    let c = cell(&[]);
    let out = std::process::Command::new(c.dir.join("bin/vmware-vcd-cell"))
        .arg("maintenance")
        .output()
        .unwrap();
    assert!(out.status.success());
    c.sim(&["jobs", "add", "--never"]);
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms", "--deadline", "1s"]);
    r.assert_code(10);
    let doc = r.json();
    assert!(has_step(&doc, "maintenance_on", "skipped"));
    assert!(!steps(&doc).iter().any(|(s, _)| s == "undo_maintenance"));
    let show = c.show();
    assert_eq!(
        show["in_maintenance"], true,
        "maintenance was on before the run and must stay on"
    );
    assert_eq!(show["quiesced"], false);
}

#[test]
fn no_maintenance_flag_never_touches_the_message() {
    let c = cell(&["--jobs", "1", "--job-duration", "300ms"]);
    let r = c.run(&[
        "--json",
        "drain",
        "--no-maintenance",
        "--no-shutdown",
        "--poll-interval",
        "100ms",
    ]);
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "drained");
    assert_eq!(c.show()["in_maintenance"], false);
}

#[test]
fn sigterm_while_waiting_unquiesces() {
    let c = cell(&[]);
    c.sim(&["jobs", "add", "--never"]);
    let child = c.spawn(&["--json", "drain", "--poll-interval", "100ms"]);
    c.wait_phase("waiting");
    wait_for("quiesced", || c.show()["quiesced"] == true);
    signal(&child, Signal::SIGTERM);
    let r = wait_child(child);
    r.assert_code(143);
    let doc = r.json();
    assert_eq!(doc["outcome"], "interrupted");
    assert_eq!(doc["cell_left"], "unchanged");
    let show = c.show();
    assert_eq!(show["quiesced"], false);
    assert_eq!(show["in_maintenance"], false);
    assert!(c.current().is_none());
}

#[test]
fn kill_9_then_resume_undoes_the_recorded_run() {
    let c = cell(&[]);
    c.sim(&["jobs", "add", "--never"]);
    let mut child = c.spawn(&["drain", "--poll-interval", "100ms"]);
    c.wait_phase("waiting");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(c.show()["quiesced"], true);
    let st = c.run(&["--json", "status"]);
    st.assert_code(0);
    assert!(st.json()["recorded_run"]["run_id"].is_string());
    let r = c.run(&["--json", "resume"]);
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "resumed");
    let show = c.show();
    assert_eq!(show["quiesced"], false);
    assert_eq!(show["in_maintenance"], false);
    assert!(c.current().is_none());
    // Nothing left: a second resume is a no-op.
    let again = c.run(&["--json", "resume"]);
    again.assert_code(0);
    assert_eq!(again.json()["outcome"], "nothing_to_do");
}

#[test]
fn kill_9_then_drain_continues_the_same_run() {
    let c = cell(&[]);
    c.sim(&["jobs", "add", "--never"]);
    let mut child = c.spawn(&["drain", "--poll-interval", "100ms"]);
    c.wait_phase("waiting");
    let run_id = c.current().unwrap()["run_id"].as_str().unwrap().to_string();
    child.kill().unwrap();
    child.wait().unwrap();
    c.sim(&["jobs", "finish", "--all"]);
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "shut_down");
    assert_eq!(
        doc["run_id"],
        run_id.as_str(),
        "the recorded run is continued, not restarted"
    );
    // Continued, not restarted: one quiesce step in the record. The continued run re-applies
    // the recorded quiesce (idempotent) rather than trusting a record that may have gone stale.
    let quiesce_steps = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == "quiesce")
        .count();
    assert_eq!(quiesce_steps, 1);
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 2);
    assert_eq!(c.show()["service"], "stopped");
}

#[test]
fn wrong_password_changes_nothing() {
    let c = cell(&[]);
    std::fs::write(&c.pwfile, "not-the-password\n").unwrap();
    let r = c.run(&["--json", "drain"]);
    r.assert_code(6);
    let doc = r.json();
    assert_eq!(doc["error"]["kind"], "credentials");
    assert!(!doc["error"]["message"].as_str().unwrap().contains("not-the-password"));
    assert_not_drained(&c);
}

#[test]
fn no_password_and_no_terminal_is_a_clear_error() {
    let c = cell(&[]);
    let out = c.cellctl_without_password().arg("drain").output().unwrap();
    let r = Run::from(out);
    r.assert_code(6);
    assert!(r.stderr.contains("--password-file"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "one-line error: {}", r.stderr);
    assert_not_drained(&c);
}

/// A refused drain changed nothing: no quiesce, no maintenance message, the cell up, no run.
fn assert_not_drained(c: &Cell) {
    assert_eq!(
        c.calls_with(&["--quiesce", "true"]),
        0,
        "a refused drain quiesced the cell"
    );
    let show = c.show();
    assert_eq!(show["quiesced"], false);
    assert_eq!(show["in_maintenance"], false);
    assert_eq!(show["service"], "running");
    assert_eq!(show["cell"], "up");
    assert!(c.current().is_none(), "a refused drain records no run");
}

#[test]
fn unsafe_password_file_mode_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let c = cell(&[]);
    std::fs::set_permissions(&c.pwfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = c.run(&["drain"]);
    r.assert_code(6);
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
    assert_not_drained(&c);
}

#[test]
fn systemd_credential_is_accepted() {
    let c = cell(&["--jobs", "0"]);
    let creds = c.tmp.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("vcd-password"), PASSWORD).unwrap();
    let mut cmd = c.cellctl_without_password();
    cmd.args(["--json", "status"]).env("CREDENTIALS_DIRECTORY", &creds);
    let r = Run::from(cmd.output().unwrap());
    r.assert_code(0);
    assert_eq!(r.json()["job_count"], 0);
}

#[test]
fn hung_tool_is_killed_and_named() {
    let c = cell(&[]);
    c.sim(&["fault", "hang", "--op", "status"]);
    let r = c.run(&["--json", "--tool-timeout", "1s", "drain"]);
    r.assert_code(7);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("hung") && msg.contains("--status"), "{msg}");
    assert_not_drained(&c);
}

#[test]
fn hang_while_waiting_rolls_back() {
    let c = cell(&[]);
    c.sim(&["jobs", "add", "--never"]);
    let child = c.spawn(&["--json", "--tool-timeout", "1s", "drain", "--poll-interval", "100ms"]);
    c.wait_phase("waiting");
    c.sim(&["fault", "hang", "--op", "status"]);
    let r = wait_child(child);
    r.assert_code(7);
    let doc = r.json();
    assert_eq!(doc["outcome"], "failed");
    assert_eq!(doc["cell_left"], "unchanged");
    assert_eq!(c.show()["quiesced"], false);
}

#[test]
fn garbled_output_is_quoted() {
    let c = cell(&[]);
    c.sim(&["fault", "garble", "--op", "status"]);
    let r = c.run(&["--json", "drain"]);
    r.assert_code(7);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("printed no status lines") && msg.contains("it printed"),
        "{msg}"
    );
    assert_not_drained(&c);
}

#[test]
fn jvm_warnings_do_not_matter() {
    let c = cell(&["--jobs", "1", "--job-duration", "300ms"]);
    c.sim(&["fault", "jvm-warnings"]);
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "shut_down");
}

#[test]
fn second_run_is_refused_naming_the_holder() {
    let c = cell(&[]);
    c.sim(&["jobs", "add", "--never"]);
    let first = c.spawn(&["drain", "--poll-interval", "100ms"]);
    c.wait_phase("waiting");
    let r = c.run(&["--json", "drain"]);
    r.assert_code(4);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains(&format!("pid {}", first.id())), "{msg}");
    // The refused run quiesced nothing of its own: only the first run's quiesce happened.
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 1);
    signal(&first, Signal::SIGTERM);
    wait_child(first).assert_code(143);
}

#[test]
fn bad_config_file_is_one_line_and_changes_nothing() {
    let c = cell(&[]);
    std::fs::write(&c.config, "user = \"administrator\"\ndeadline = \"5m\"\n").unwrap();
    let r = c.run(&["drain"]);
    r.assert_code(3);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("line 2") && r.stderr.contains("deadline"),
        "{}",
        r.stderr
    );
    assert!(c.invocations().is_empty());
    assert_not_drained(&c);
}

#[test]
fn no_shutdown_parks_the_run_then_drain_finishes_it() {
    let c = cell(&["--jobs", "1", "--job-duration", "300ms"]);
    let r = c.run(&["--json", "drain", "--no-shutdown", "--poll-interval", "100ms"]);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "drained");
    assert_eq!(doc["cell_left"], "drained");
    assert!(c.current().is_some(), "a drained run keeps its record for resume");
    assert_eq!(c.show()["service"], "running");
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "shut_down");
    assert_eq!(c.show()["service"], "stopped");
}

#[test]
fn watchdog_cannot_bring_the_cell_back() {
    let c = cell(&["--watchdog-restart", "200ms"]);
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    r.assert_code(0);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let show = c.show();
    assert_eq!(show["service"], "stopped");
    assert_eq!(show["cell"], "down");
}

#[test]
fn status_reports_the_cell() {
    let c = cell(&["--jobs", "2", "--job-duration", "10m"]);
    let r = c.run(&["--json", "status"]);
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["job_count"], 2);
    assert_eq!(doc["is_active"], true);
    assert_eq!(doc["in_maintenance"], false);
    assert_eq!(doc["service"], "running");
    let human = c.run(&["status"]);
    human.assert_code(0);
    assert!(human.stdout.contains("job count:    2"), "{}", human.stdout);
    c.sim(&["jobs", "finish", "--all"]);
    c.run(&["drain", "--poll-interval", "100ms"]).assert_code(0);
    let doc = c.run(&["--json", "status"]).json();
    assert_eq!(doc["service"], "stopped");
    assert_eq!(doc["job_count"], Value::Null);
}

#[test]
fn password_never_leaks_anywhere() {
    let c = cell(&["--jobs", "1", "--job-duration", "300ms"]);
    c.sim(&["fault", "jvm-warnings"]);
    let mut all = String::new();
    for args in [
        vec!["--json", "status"],
        vec!["--json", "drain", "--no-shutdown", "--poll-interval", "100ms"],
        vec!["--json", "resume"],
        vec!["drain", "--poll-interval", "100ms"],
    ] {
        let r = c.cellctl().args(&args).env("CELLCTL_LOG", "debug").output().unwrap();
        let r = Run::from(r);
        r.assert_code(0).assert_no_secret();
        all.push_str(&r.stdout);
        all.push_str(&r.stderr);
    }
    assert_no_password_in(&all, "the output, logs and files");
    assert_no_password_in(&c.state_files_text(), "the state dir");
    c.assert_no_leak_to_tools();
    // The tool got the password only by prompting on its terminal.
    assert!(
        c.invocations()
            .iter()
            .all(|i| i["tool"] != "cell-management-tool" || i["had_tty"] == true)
    );
}

#[test]
fn exit_codes_are_documented_in_help() {
    let out = std::process::Command::new(cellctl_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for (code, name, _) in cellctl::error::EXIT_CODES {
        assert!(
            help.contains(&format!("{code:>3}  {name} ")),
            "--help lacks exit code {code} {name}:\n{help}"
        );
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (code, name, _) in cellctl::error::EXIT_CODES {
        assert!(
            readme.contains(&format!("| {code} | `{name}` |")),
            "README lacks exit code {code} {name}"
        );
    }
}

#[test]
fn the_two_drained_sightings_are_spaced_in_time() {
    // A slow tool (1 s per call) on an idle cell: the confirming poll may follow at once in
    // wall-clock terms, but the two sightings' calls start at least the confirm interval (2 s)
    // apart, so "seen twice" never means twice in the same instant.
    let c = cell(&["--latency", "1s"]);
    let r = c.run(&["--json", "drain", "--poll-interval", "5s"]);
    r.assert_code(0);
    let starts: Vec<std::time::SystemTime> = c
        .invocations()
        .iter()
        .filter(|i| i["argv"].as_array().unwrap().iter().any(|a| a == "--status"))
        .map(|i| humantime::parse_rfc3339_weak(i["at"].as_str().unwrap()).unwrap())
        .collect();
    // Preflight, then the two sightings.
    assert!(starts.len() >= 3, "{starts:?}");
    let last_two = &starts[starts.len() - 2..];
    let gap = last_two[1].duration_since(last_two[0]).unwrap();
    // The simulator stamps a call when its process has started, not when cellctl spawned it, so
    // a loaded machine can eat into the 2 s from either end. A confirming poll asked at once
    // would start when the first call ends (~1 s after it, the tool's latency): 1.5 s tells the
    // two apart with 0.5 s to spare for the scheduler either way.
    assert!(
        gap >= std::time::Duration::from_millis(1500),
        "sightings only {gap:?} apart (a confirming poll asked at once would be ~1 s)"
    );
}

#[test]
fn without_the_api_the_tool_is_polled_at_the_manual_procedures_pace() {
    // Issue 17: with no task list to read (the API here is a closed port), a status call starts
    // 10 s after the previous one ended, as the runbook's `sleep 10` loop would: not 10 s after
    // it started (more JVM starts than the runbook), not 30 s (the pace meant for when the task
    // list answers). The confirming call follows the first sighting at once (the tool takes the
    // 2 s confirm interval to answer). The job outlives two polls, so the pace is seen twice.
    let c = cell(&["--latency", "2s", "--jobs", "1", "--job-duration", "26s"]);
    let r = c.run(&["--json", "drain"]);
    r.assert_code(0);
    let calls: Vec<(u64, u64)> = c
        .invocations()
        .iter()
        .filter(|i| i["argv"].as_array().unwrap().iter().any(|a| a == "--status"))
        .map(|i| (i["at_ms"].as_u64().unwrap(), i["ended_ms"].as_u64().unwrap()))
        .collect();
    // Preflight, two polls that see the job, the first sighting, the confirmation.
    assert!(calls.len() >= 5, "{calls:?}");
    let quiesced = c
        .invocations()
        .iter()
        .find(|i| i["argv"].as_array().unwrap().iter().any(|a| a == "--quiesce"))
        .map(|i| i["ended_ms"].as_u64().unwrap())
        .unwrap();
    let waiting: Vec<&(u64, u64)> = calls.iter().filter(|(at, _)| *at >= quiesced).collect();
    let gaps: Vec<u64> = waiting.windows(2).map(|w| w[1].0.saturating_sub(w[0].1)).collect();
    let (confirm, polls) = gaps.split_last().unwrap();
    assert!(polls.len() >= 2, "gaps {gaps:?}");
    for g in polls {
        // At least the runbook's 10 s after the end (minus the simulator's stamping slack);
        // far below the 28 s a 30 s pace would leave.
        assert!(
            (9_800..=16_000).contains(g),
            "a poll {g} ms after the previous call ended: {gaps:?}"
        );
    }
    assert!(*confirm < 1_500, "the confirming call waited {confirm} ms: {gaps:?}");
}
