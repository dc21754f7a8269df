//! The Cloud Director API against the simulated API over TLS: the redundancy guard, this cell's
//! tasks, the `cancel` deadline action, token expiry, and where the password may travel.

mod common;

use common::*;
use serde_json::Value;

struct Group {
    // Kept alive: the cells' group directory.
    _dir: tempfile::TempDir,
    cells: Vec<Cell>,
}

impl Group {
    /// Cells a, b, c (…) of one group, each running.
    fn new(names: &[&str]) -> Group {
        let dir = tempfile::tempdir().unwrap();
        let cells = names
            .iter()
            .map(|n| Cell::in_group(dir.path(), n, &["--quiesce-delay", "200ms"]))
            .collect();
        Group { _dir: dir, cells }
    }

    fn cell(&self, name: &str) -> &Cell {
        self.cells.iter().find(|c| c.show()["name"] == name).unwrap()
    }
}

fn systemctl(c: &Cell, verb: &str) {
    let st = std::process::Command::new(c.dir.join("bin/systemctl"))
        .args([verb, "vmware-vcd"])
        .status()
        .unwrap();
    assert!(st.success());
}

fn maintenance_on(c: &Cell) {
    let st = std::process::Command::new(c.dir.join("bin/vmware-vcd-cell"))
        .arg("maintenance")
        .status()
        .unwrap();
    assert!(st.success());
}

fn run(cmd: &mut std::process::Command) -> Run {
    Run::from(cmd.output().unwrap())
}

#[test]
fn guard_refuses_taking_down_the_last_active_cell() {
    let g = Group::new(&["a", "b", "c"]);
    let (a, b, c) = (g.cell("a"), g.cell("b"), g.cell("c"));
    // a is down, c is in maintenance (being drained): b is the last cell serving.
    systemctl(a, "stop");
    maintenance_on(c);
    let served = b.serve();
    let r = run(b
        .api_cmd(&served, "b")
        .args(["--json", "drain", "--poll-interval", "100ms"]));
    r.assert_code(13).assert_no_secret();
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("only 0 other active cell") && msg.contains("--allow-last-cell"),
        "{msg}"
    );
    assert!(msg.contains("a INACTIVE") && msg.contains("c MAINTENANCE"), "{msg}");
    assert_eq!(b.calls_with(&["--quiesce", "true"]), 0, "nothing may change");
    assert_eq!(b.show()["in_maintenance"], false);
    // The full-outage upgrade says so explicitly.
    let r = run(b
        .api_cmd(&served, "b")
        .args(["--json", "drain", "--allow-last-cell", "--poll-interval", "100ms"]));
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "shut_down");
    assert!(
        r.json()["steps"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("last cell allowed")
    );
}

#[test]
fn guard_allows_a_drain_while_another_cell_serves() {
    let g = Group::new(&["a", "b", "c"]);
    systemctl(g.cell("a"), "stop");
    let b = g.cell("b");
    let served = b.serve();
    let r = run(b
        .api_cmd(&served, "b")
        .args(["--json", "drain", "--poll-interval", "100ms"]));
    r.assert_code(0);
    assert!(
        r.json()["steps"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("1 other active cell")
    );
    // The guard let it through, and the drain really happened.
    assert_eq!(b.calls_with(&["--quiesce", "true"]), 1);
    assert_eq!(b.show()["service"], "stopped");
    assert_eq!(
        g.cell("c").show()["service"],
        "running",
        "the serving peer is untouched"
    );
}

#[test]
fn guard_reads_every_page_of_cells() {
    let g = Group::new(&["a", "b", "c", "d", "e"]);
    // Sorted by name, two a page: the one serving peer, e, is alone on page 3.
    for n in ["b", "c", "d"] {
        systemctl(g.cell(n), "stop");
    }
    let a = g.cell("a");
    let served = a.serve();
    std::fs::write(&a.config, "[api]\npage_size = 2\n").unwrap();
    let r = run(a
        .api_cmd(&served, "a")
        .args(["--json", "drain", "--no-shutdown", "--poll-interval", "100ms"]));
    r.assert_code(0);
    let cell_pages: Vec<String> = a
        .http_log()
        .iter()
        .filter_map(|l| l["path"].as_str())
        .filter(|p| p.starts_with("/cloudapi/1.0.0/cells"))
        .map(str::to_string)
        .collect();
    assert!(
        cell_pages.iter().any(|p| p.contains("page=3")),
        "pages read: {cell_pages:?}"
    );
    // Without page 3 the guard would have seen no serving peer.
    assert_eq!(a.show()["quiesced"], true, "the guard let the drain through");
    systemctl(g.cell("e"), "stop");
    run(a.api_cmd(&served, "a").arg("resume")).assert_code(0);
    assert_eq!(a.show()["quiesced"], false);
    let quiesced = a.calls_with(&["--quiesce", "true"]);
    run(a.api_cmd(&served, "a").args(["--json", "drain"])).assert_code(13);
    assert_eq!(
        a.calls_with(&["--quiesce", "true"]),
        quiesced,
        "the refused drain quiesced"
    );
    assert_eq!(a.show()["quiesced"], false);
    assert_eq!(a.show()["service"], "running");
}

#[test]
fn api_down_fails_closed_unless_skipped() {
    let c = Cell::new(&["--quiesce-delay", "200ms"]);
    let mut cmd = c.cellctl();
    cmd.env_remove("CELLCTL_SKIP_REDUNDANCY_GUARD")
        .env("CELLCTL_API_URL", "https://127.0.0.1:9");
    let r = run(cmd.args(["--json", "drain"]));
    r.assert_code(13);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("fails closed") && msg.contains("--skip-redundancy-guard"),
        "{msg}"
    );
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 0);
    // Explicitly skipped: the drain goes ahead.
    let mut cmd = c.cellctl();
    cmd.env("CELLCTL_API_URL", "https://127.0.0.1:9");
    run(cmd.args(["--json", "drain", "--poll-interval", "100ms"])).assert_code(0);
}

#[test]
fn untrusted_certificate_is_a_clear_failure() {
    let g = Group::new(&["a", "b"]);
    let a = g.cell("a");
    let served = a.serve();
    let mut cmd = a.api_cmd(&served, "a");
    cmd.env_remove("CELLCTL_API_CA_FILE");
    let r = run(cmd.args(["--json", "drain"]));
    r.assert_code(13);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(msg.contains("certificate"), "{msg}");
    assert_eq!(a.calls_with(&["--quiesce", "true"]), 0);
    assert_eq!(a.show()["in_maintenance"], false);
    assert!(a.current().is_none());
}

#[test]
fn status_lists_this_cells_tasks() {
    let g = Group::new(&["a", "b"]);
    let (a, b) = (g.cell("a"), g.cell("b"));
    a.sim(&["jobs", "add", "--never", "--operation", "vappDeploy"]);
    b.sim(&["jobs", "add", "--never", "--operation", "vmSnapshot"]);
    let served = a.serve();
    let r = run(a.api_cmd(&served, "a").args(["--json", "status"]));
    r.assert_code(0);
    let tasks = r.json()["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), 1, "only this cell's tasks: {tasks:?}");
    assert_eq!(tasks[0]["operation"], "vappDeploy");
    let human = run(a.api_cmd(&served, "a").arg("status"));
    assert!(
        human.stdout.contains("1 running on this cell") && human.stdout.contains("vappDeploy"),
        "{}",
        human.stdout
    );
}

#[test]
fn cancel_at_the_deadline_ends_a_stuck_task_then_shuts_down() {
    let g = Group::new(&["a", "b"]);
    let b = g.cell("b");
    b.sim(&["jobs", "add", "--never", "--operation", "vappDeploy"]);
    // The group's API through a peer: b's own answers 503 once its maintenance message is on.
    let served = g.cell("a").serve();
    let r = run(b.api_cmd(&served, "b").args([
        "--json",
        "drain",
        "--poll-interval",
        "100ms",
        "--deadline",
        "1s",
        "--on-deadline",
        "cancel",
        "--cancel-grace",
        "30s",
    ]));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "shut_down");
    let cancel = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "cancel_tasks")
        .unwrap()
        .clone();
    assert_eq!(cancel["status"], "done");
    assert!(cancel["detail"].as_str().unwrap().contains("1 of 1"), "{cancel}");
    let show = b.show();
    assert_eq!(show["canceled_count"], 1);
    assert_eq!(show["service"], "stopped");
}

#[test]
fn task_that_refuses_to_cancel_is_reported_then_abort_or_force() {
    let g = Group::new(&["a", "b"]);
    let b = g.cell("b");
    b.sim(&["jobs", "add", "--never", "--uncancellable", "--operation", "vappClone"]);
    let served = g.cell("a").serve();
    let args = [
        "--json",
        "drain",
        "--poll-interval",
        "100ms",
        "--deadline",
        "1s",
        "--on-deadline",
        "cancel",
        "--cancel-grace",
        "1s",
    ];
    let r = run(b.api_cmd(&served, "b").args(args));
    r.assert_code(10);
    let doc = r.json();
    assert_eq!(doc["outcome"], "aborted");
    let left = doc["tasks_not_canceled"].as_array().unwrap();
    assert!(left[0].as_str().unwrap().contains("vappClone"), "{left:?}");
    assert_eq!(b.show()["quiesced"], false, "abort undoes the quiesce");
    let r = run(b.api_cmd(&served, "b").args(args).args(["--after-cancel", "force"]));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "forced");
    assert!(doc["tasks_not_canceled"][0].as_str().unwrap().contains("vappClone"));
    assert_eq!(b.show()["service"], "stopped");
}

#[test]
fn expired_token_mid_run_logs_in_again() {
    let g = Group::new(&["a", "b"]);
    let b = g.cell("b");
    let a = g.cell("a");
    a.sim(&["set", "api_token_ttl=1s"]);
    b.sim(&["jobs", "add", "--duration", "1500ms"]);
    b.sim(&["jobs", "add", "--duration", "3s"]);
    b.sim(&["jobs", "add", "--never"]);
    let served = a.serve();
    let r = run(b.api_cmd(&served, "b").args([
        "--json",
        "drain",
        "--deadline",
        "5s",
        "--on-deadline",
        "cancel",
        "--cancel-grace",
        "30s",
    ]));
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "shut_down");
    let log = a.http_log();
    let logins = log
        .iter()
        .filter(|l| l["path"] == "/cloudapi/1.0.0/sessions/provider")
        .count();
    let expired = log
        .iter()
        .filter(|l| l["status"] == 401 && l["auth_kind"] == "bearer")
        .count();
    assert!(expired >= 1, "no request met an expired token");
    assert!(logins >= 2, "no new login after expiry: {logins}");
    assert_eq!(
        b.show()["service"],
        "stopped",
        "the drain went through after the new login"
    );
    assert!(b.current().is_none());
}

#[test]
fn password_travels_only_in_the_login_header() {
    let g = Group::new(&["a", "b"]);
    let (a, b) = (g.cell("a"), g.cell("b"));
    b.sim(&["jobs", "add", "--never"]);
    let served = a.serve();
    let r = run(b.api_cmd(&served, "b").args([
        "--json",
        "drain",
        "--poll-interval",
        "100ms",
        "--deadline",
        "1s",
        "--on-deadline",
        "cancel",
        "--cancel-grace",
        "20s",
    ]));
    r.assert_code(0).assert_no_secret();
    let log = a.http_log();
    assert!(log.len() >= 4, "{log:?}");
    for l in &log {
        assert_eq!(
            l["password_elsewhere"],
            Value::Bool(false),
            "password outside the login header: {l}"
        );
        let is_login = l["path"] == "/cloudapi/1.0.0/sessions/provider";
        assert_eq!(l["password_in_login_header"] == true, is_login, "{l}");
    }
    assert!(
        log.iter().any(|l| l["auth_kind"] == "bearer"),
        "later calls use the token"
    );
    // Logged out at the end.
    assert!(
        log.iter()
            .any(|l| l["method"] == "DELETE" && l["path"] == "/cloudapi/1.0.0/sessions/current")
    );
    // Both forms (the login's Basic one too): nowhere in the state dir, nor on stdout/stderr
    // (`assert_no_secret` above).
    assert_no_password_in(&b.state_files_text(), "the state dir");
    assert_eq!(b.show()["service"], "stopped");
}

#[test]
fn api_faults_make_the_guard_fail_closed_with_a_clear_message() {
    let g = Group::new(&["a", "b"]);
    let (a, b) = (g.cell("a"), g.cell("b"));
    let served = a.serve();
    for (fault, says) in [
        ("api-401", "refused (401)"),
        ("api-500", "HTTP 500"),
        ("api-malformed", "unexpected answer"),
    ] {
        a.sim(&["fault", fault]);
        let r = run(b.api_cmd(&served, "b").args(["--json", "drain"]));
        r.assert_code(13).assert_no_secret();
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(says) && msg.contains("fails closed"), "{fault}: {msg}");
        a.sim(&["fault", "clear"]);
    }
    assert_eq!(b.calls_with(&["--quiesce", "true"]), 0);
}

#[test]
fn the_task_list_spares_the_tool_and_brings_the_confirming_poll_forward() {
    let g = Group::new(&["a", "b"]);
    let b = g.cell("b");
    b.sim(&["jobs", "add", "--duration", "4s"]);
    let served = g.cell("a").serve();
    // Default polling: the tool every 30 s, the API's task list every second in between.
    let r = run(b.api_cmd(&served, "b").args(["--json", "drain"]));
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "shut_down");
    // Preflight, the first poll, and the one the empty task list brought forward (which, with
    // that hint, is the second sighting): no poll every few seconds for 4 s of waiting.
    let status_calls = b.calls_with(&["--status"]);
    assert!(status_calls <= 4, "the tool was polled {status_calls} times");
    let reads = g
        .cell("a")
        .http_log()
        .iter()
        .filter(|l| l["path"].as_str().unwrap_or("").starts_with("/api/query"))
        .count();
    assert!(reads >= 2, "the task list was read {reads} times");
}
