//! Issue 15's reliability defects, each driven through the real binary against a simulated cell:
//! a signal always ends a run (a hung tool call included, the undo on a budget), a signal during
//! the last shutdown step is not dropped, a cut-short undo is finished before the asked command
//! runs, a run refused by the lock leaves shared state alone, and the guidance after `kill -9`
//! names one next step.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

fn cell() -> Cell {
    Cell::new(&["--quiesce-delay", "200ms"])
}

fn step_statuses(doc: &Value, step: &str) -> Vec<String> {
    doc["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["step"] == step)
                .map(|s| s["status"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The pid of a simulated tool call that hangs (its invocation record has no exit code yet).
fn hung_call(c: &Cell, words: &[&str]) -> Option<i32> {
    c.invocations().iter().find_map(|r| {
        let argv: Vec<&str> = r["argv"].as_array()?.iter().filter_map(Value::as_str).collect();
        let all = words.iter().all(|w| argv.contains(w));
        (all && r["exit_code"].is_null()).then(|| r["pid"].as_i64().and_then(|p| i32::try_from(p).ok()))?
    })
}

/// A process that exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|rest| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

fn kill_pid(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
}

/// Put a hook in front of the cell's `systemctl` stand-in: `stop` writes `marker` and takes
/// `secs` before it acts, so a test can hit cellctl during `stop_service`.
fn slow_stop(c: &Cell, secs: u32) -> PathBuf {
    let bin = c.dir.join("bin/systemctl");
    let real = c.dir.join("bin/systemctl.real");
    std::fs::rename(&bin, &real).unwrap();
    let marker = c.tmp.path().join("stop-started");
    let script = format!(
        "#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = stop ]; then : > '{}'; sleep {secs}; fi; done\nexec '{}' \"$@\"\n",
        marker.display(),
        real.display()
    );
    std::fs::write(&bin, script).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    marker
}

fn exists(p: &Path) -> bool {
    p.exists()
}

/// Item 5: the first signal ends the run while a tool call hangs (no waiting out the 5-minute
/// tool timeout); the abandoned quiesce is undone.
#[test]
fn first_signal_ends_a_run_while_a_tool_call_hangs() {
    let c = cell();
    c.sim(&["fault", "hang", "--op", "quiesce", "--times", "1"]);
    let child = c.spawn(&["--json", "drain", "--poll-interval", "100ms"]);
    wait_for("the quiesce call to hang", || {
        hung_call(&c, &["--quiesce", "true"]).is_some()
    });
    let tool = hung_call(&c, &["--quiesce", "true"]).unwrap();
    let t0 = Instant::now();
    signal(&child, Signal::SIGTERM);
    let r = wait_child(child);
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "the run outlived its signal by {:?}",
        t0.elapsed()
    );
    r.assert_code(143);
    let doc = r.json();
    assert_eq!(doc["outcome"], "interrupted");
    assert_eq!(doc["cell_left"], "unchanged");
    // Left `started` (the call may have taken effect), so the undo covers it.
    assert_eq!(step_statuses(&doc, "quiesce"), ["started"]);
    assert_eq!(step_statuses(&doc, "undo_quiesce"), ["done"]);
    let show = c.show();
    assert_eq!(show["quiesced"], false);
    assert_eq!(show["in_maintenance"], false);
    assert!(c.current().is_none());
    wait_for("the hung call to be killed", || !alive(tool));
}

/// Item 5: the undo after a signal has a budget; what it could not undo is recorded, and
/// `resume` finishes it.
#[test]
fn undo_after_a_signal_is_bounded_and_resume_finishes_it() {
    let c = cell();
    std::fs::write(&c.config, "[drain]\nrollback_budget = \"2s\"\n").unwrap();
    c.sim(&["jobs", "add", "--never"]);
    let child = c.spawn(&["--json", "drain", "--poll-interval", "100ms"]);
    c.wait_phase("waiting");
    wait_for("quiesced", || c.show()["quiesced"] == true);
    c.sim(&["fault", "hang", "--op", "quiesce"]);
    signal(&child, Signal::SIGTERM);
    let r = wait_child(child);
    r.assert_code(11);
    let doc = r.json();
    let msg = doc["error"]["message"].as_str().unwrap_or("").to_string();
    assert!(
        msg.contains("rollback_budget") && msg.contains("cellctl resume"),
        "{msg}"
    );
    assert_eq!(step_statuses(&doc, "undo_quiesce"), ["failed"]);
    assert!(c.current().is_some(), "the run must stay recorded");
    if let Some(pid) = hung_call(&c, &["--quiesce", "false"]) {
        kill_pid(pid);
    }
    c.sim(&["fault", "clear"]);
    let again = c.run(&["--json", "resume"]);
    again.assert_code(0);
    assert_eq!(again.json()["outcome"], "resumed");
    assert_eq!(c.show()["quiesced"], false);
    assert!(c.current().is_none());
}

/// Item 6: a signal during `stop_service` finishes the step and ends the run as interrupted
/// (128+n), and nothing claims changes are being undone.
#[test]
fn signal_during_stop_service_is_not_dropped() {
    let c = cell();
    let marker = slow_stop(&c, 2);
    let child = c.spawn(&["--json", "drain", "--poll-interval", "100ms"]);
    wait_for("systemctl stop to start", || exists(&marker));
    signal(&child, Signal::SIGTERM);
    let r = wait_child(child);
    r.assert_code(143);
    let doc = r.json();
    assert_eq!(doc["outcome"], "interrupted");
    assert_eq!(doc["cell_left"], "shut_down");
    assert_eq!(step_statuses(&doc, "stop_service"), ["done"]);
    assert_eq!(c.show()["service"], "stopped");
    assert!(!r.stderr.contains("undoing"), "claims an undo: {}", r.stderr);
    assert!(c.current().is_none(), "a finished shutdown is archived");
}

/// Item 9: SIGTERM while waiting, kill -9 during the undo; a plain rerun finishes the undo,
/// then does what was asked as a run of its own, and reports no signal it never received.
#[test]
fn rerun_after_an_undo_cut_short_finishes_it_then_does_its_own_work() {
    let c = cell();
    c.sim(&["jobs", "add", "--never"]);
    let mut child = c.spawn(&["--json", "drain", "--poll-interval", "100ms"]);
    c.wait_phase("waiting");
    wait_for("quiesced", || c.show()["quiesced"] == true);
    let first = c.current().unwrap()["run_id"].as_str().unwrap().to_string();
    c.sim(&["fault", "hang", "--op", "quiesce"]);
    signal(&child, Signal::SIGTERM);
    wait_for("the undo call to hang", || {
        hung_call(&c, &["--quiesce", "false"]).is_some()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    kill_pid(hung_call(&c, &["--quiesce", "false"]).unwrap());
    c.wait_phase("rolling_back");
    c.sim(&["fault", "clear"]);
    c.sim(&["jobs", "finish", "--all"]);
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "shut_down");
    assert_ne!(doc["run_id"], first.as_str(), "the asked drain is a run of its own");
    assert!(
        !r.stderr.contains("SIGTERM"),
        "reports a signal it never received: {}",
        r.stderr
    );
    let archived: Value =
        serde_json::from_str(&std::fs::read_to_string(c.state.join(format!("runs/{first}.json"))).unwrap()).unwrap();
    assert_eq!(archived["outcome"], "interrupted");
    assert_eq!(
        step_statuses(&archived, "undo_quiesce").last().map(String::as_str),
        Some("done")
    );
    assert_eq!(c.show()["service"], "stopped");
}

/// Item 10: a run refused by the lock writes no metrics and is not the last run.
#[test]
fn a_run_refused_by_the_lock_leaves_shared_state_alone() {
    let c = cell();
    let metrics = c.tmp.path().join("cellctl.prom");
    c.sim(&["jobs", "add", "--never"]);
    let m = metrics.to_str().unwrap();
    let first = c.spawn(&["--json", "--metrics-file", m, "drain", "--poll-interval", "100ms"]);
    c.wait_phase("waiting");
    let run_id = c.current().unwrap()["run_id"].as_str().unwrap().to_string();
    let before = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        before.contains(&format!(
            "cellctl_run_in_progress{{command=\"drain\",run_id=\"{run_id}\"}} 1"
        )),
        "{before}"
    );
    let refused = c.run(&["--json", "--metrics-file", m, "drain"]);
    refused.assert_code(4);
    assert_eq!(
        std::fs::read_to_string(&metrics).unwrap(),
        before,
        "the refused run rewrote the metrics"
    );
    let reports = std::fs::read_dir(c.state.join("reports")).map_or(0, Iterator::count);
    assert_eq!(reports, 0, "the refused run saved a report");
    signal(&first, Signal::SIGTERM);
    wait_child(first).assert_code(143);
    let last = c.run(&["--json", "report", "--last"]);
    last.assert_code(0);
    assert_eq!(last.json()["run_id"], run_id.as_str());
}

/// Item 11: after kill -9 in `stopping_service`, status, resume and another command all name
/// the same next step, and it works.
#[test]
fn guidance_after_kill_9_in_stopping_service_names_one_next_step() {
    let c = cell();
    let marker = slow_stop(&c, 3);
    let mut child = c.spawn(&["--json", "drain", "--poll-interval", "100ms"]);
    wait_for("systemctl stop to start", || exists(&marker));
    child.kill().unwrap();
    child.wait().unwrap();
    c.wait_phase("stopping_service");
    let next = "`cellctl drain` finishes it";
    let st = c.cellctl().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout).to_string();
    assert!(
        text.contains(next),
        "status: {text} {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let resume = c.run(&["--json", "resume"]);
    resume.assert_code(12);
    let msg = resume.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains(next), "resume: {msg}");
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "shut_down");
    assert_eq!(c.show()["service"], "stopped");
    assert!(c.current().is_none());
}

/// Item 5, past the point of no return: a shutdown call that hangs when the signal comes is
/// given the budget to finish, then abandoned; the run is kept and a rerun finishes it.
#[test]
fn a_hung_shutdown_call_does_not_hold_a_stop_request() {
    let c = cell();
    std::fs::write(&c.config, "[drain]\nrollback_budget = \"2s\"\n").unwrap();
    c.sim(&["fault", "hang", "--op", "shutdown", "--times", "1"]);
    let child = c.spawn(&["--json", "drain", "--poll-interval", "100ms"]);
    wait_for("the shutdown call to hang", || hung_call(&c, &["--shutdown"]).is_some());
    let tool = hung_call(&c, &["--shutdown"]).unwrap();
    let t0 = Instant::now();
    signal(&child, Signal::SIGTERM);
    let r = wait_child(child);
    assert!(t0.elapsed() < Duration::from_secs(60), "held for {:?}", t0.elapsed());
    r.assert_code(143);
    let doc = r.json();
    assert_eq!(doc["outcome"], "interrupted");
    assert_eq!(doc["cell_left"], "changed");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rerun `cellctl drain`"),
        "{doc}"
    );
    c.wait_phase("shutting_down");
    wait_for("the hung call to be killed", || !alive(tool));
    let again = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    again.assert_code(0);
    assert_eq!(again.json()["outcome"], "shut_down");
    assert_eq!(c.show()["service"], "stopped");
}
