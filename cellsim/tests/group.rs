//! A server group's shared database and timeline: one schema record for the group, the database
//! tool refusing while any cell of the group runs and upgrading once, a cell whose version does
//! not match the schema refusing to start (log, health endpoint, timeline), the API's
//! `productVersion`, and `systemctl reboot`.

mod support;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

struct Group {
    dir: tempfile::TempDir,
    cells: Vec<Cell>,
}

impl Group {
    fn new(names: &[&str], extra: &[&str]) -> Group {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("group");
        let cells = names
            .iter()
            .map(|name| {
                let mut args = vec!["--group", g.to_str().unwrap(), "--name", name];
                args.extend_from_slice(extra);
                Cell::create(&args)
            })
            .collect();
        Group { dir, cells }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("group")
    }

    /// `cellsim timeline --group GROUPDIR`, parsed.
    fn timeline(&self) -> Vec<Value> {
        let out = run({
            let mut c = Command::new(SIM);
            c.arg("timeline").arg("--group").arg(self.path());
            c
        });
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn events<'a>(timeline: &'a [Value], event: &str) -> Vec<&'a Value> {
    timeline.iter().filter(|e| e["event"] == event).collect()
}

fn systemctl(cell: &Cell, verb: &str) {
    let out = cell.tool("systemctl", &[verb, "vmware-vcd"]);
    assert!(out.status.success(), "systemctl {verb}: {}", text(&out.stderr));
}

/// Installs `version` on the (stopped) cell with an `ok` package.
fn install(cell: &Cell, version: &str) {
    let pkg = cell.package(version, &["--install-time", "0s"]);
    std::fs::set_permissions(&pkg, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_input(Command::new(&pkg), b"y\nn\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

fn db_upgrade(cell: &Cell) -> std::process::Output {
    let mut cmd = cell.command("upgrade");
    cmd.arg("--backup-completed");
    run_input(cmd, b"y\n")
}

fn db_record(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("db.json")).unwrap()).unwrap()
}

#[test]
fn a_group_shares_one_database_record() {
    let g = Group::new(&["a", "b"], &["--version", "10.5.1"]);
    assert_eq!(db_record(&g.path())["schema_version"], "10.5.1");
    // A later member does not reset the group's database, whatever its own version.
    let g2 = g.path();
    let c = Cell::create(&["--group", g2.to_str().unwrap(), "--name", "c", "--version", "10.6.1"]);
    for cell in g.cells.iter().chain([&c]) {
        assert_eq!(cell.show()["db_version"], "10.5.1");
        assert!(!cell.dir.join("sim/db.json").exists());
    }
    g.cells[0].sim_ok("set", &["db_version=10.4.2"]);
    assert_eq!(g.cells[1].show()["db_version"], "10.4.2");
    assert_eq!(c.show()["db_version"], "10.4.2");
    assert_eq!(events(&g.timeline(), "db_set").len(), 1);

    // A group of one keeps its record in DIR/sim.
    let alone = Cell::create(&["--version", "10.6.0"]);
    assert_eq!(db_record(&alone.dir.join("sim"))["schema_version"], "10.6.0");
    assert_eq!(alone.show()["db_version"], "10.6.0");
}

#[test]
fn an_older_state_keeps_its_database_version_in_the_shared_record() {
    let cell = Cell::create(&["--version", "10.5.1"]);
    let state_path = cell.dir.join("sim/state.json");
    // As cells made before the shared record: db_version in the state, no db.json.
    std::fs::remove_file(cell.dir.join("sim/db.json")).unwrap();
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["db_version"] = "10.4.0".into();
    std::fs::write(&state_path, state.to_string()).unwrap();
    assert_eq!(cell.show()["db_version"], "10.4.0");
    assert_eq!(db_record(&cell.dir.join("sim"))["schema_version"], "10.4.0");
    let state: Value = serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    assert!(state.get("db_version").is_none(), "the truth moved to db.json");
}

#[test]
fn the_database_tool_refuses_while_any_cell_runs_and_upgrades_once() {
    let g = Group::new(&["a", "b", "c"], &["--version", "10.5.1"]);
    let [a, b, c] = [&g.cells[0], &g.cells[1], &g.cells[2]];
    systemctl(a, "stop");
    install(a, "10.6.1");
    let out = db_upgrade(a);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for cell in [
        "on cell b (127.0.0.2) is running (cell up)",
        "on cell c (127.0.0.3) is running (cell up)",
    ] {
        assert!(err.contains(cell), "{err}");
    }
    assert!(!err.contains("this host"), "a is stopped: {err}");
    assert!(err.ends_with("Upgrade canceled.\n"), "{err}");
    assert_eq!(b.show()["db_version"], "10.5.1");

    // A cell shut down by the tool still has its service (watchdog) running: still refused.
    systemctl(b, "stop");
    c.cell_ok(&["--shutdown"]);
    let out = db_upgrade(a);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("on cell c (127.0.0.3) is running (cell down)"));

    systemctl(c, "stop");
    let out = db_upgrade(a);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Upgrading the database from version 10.5.1 to 10.6.1..."));
    assert_eq!(db_record(&g.path())["schema_version"], "10.6.1");
    for cell in [a, b, c] {
        assert_eq!(cell.show()["db_version"], "10.6.1");
    }
    let out = db_upgrade(a);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("The database is already at version 10.6.1; no updates were needed."));

    // The timeline: every run of the tool, one schema change, when no service ran.
    let t = g.timeline();
    let calls: Vec<&Value> = events(&t, "call")
        .into_iter()
        .filter(|e| e["detail"]["tool"] == "upgrade")
        .collect();
    let codes: Vec<i64> = calls
        .iter()
        .map(|e| e["detail"]["exit_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [1, 1, 0, 0]);
    let upgrades = events(&t, "db_upgrade");
    assert_eq!(upgrades.len(), 1);
    assert_eq!(
        upgrades[0]["detail"],
        serde_json::json!({"from": "10.5.1", "to": "10.6.1"})
    );
    let at = upgrades[0]["at_ms"].as_u64().unwrap();
    let last_stop = events(&t, "service_stopped")
        .iter()
        .map(|e| e["at_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(last_stop <= at);
    assert_eq!(events(&t, "installed")[0]["detail"]["version"], "10.6.1");
    // The invocation records have millisecond times.
    let rec = a.invocations().into_iter().find(|r| r["tool"] == "upgrade").unwrap();
    assert!(rec["at_ms"].as_u64().unwrap() > 0 && rec["ended_ms"].as_u64().unwrap() >= rec["at_ms"].as_u64().unwrap());
    assert!(rec["at"].as_str().unwrap().contains('.'), "{}", rec["at"]);
}

#[test]
fn a_cell_whose_version_does_not_match_the_schema_refuses_to_start() {
    let g = Group::new(&["a", "b"], &["--version", "10.5.1"]);
    let [a, b] = [&g.cells[0], &g.cells[1]];
    systemctl(a, "stop");
    install(a, "10.6.1");
    let server = a.serve();
    systemctl(a, "start");
    let show = a.show();
    assert_eq!(
        (show["service"].as_str(), show["cell"].as_str()),
        (Some("running"), Some("down"))
    );
    let reason = show["start_refused"].as_str().unwrap().to_string();
    assert!(reason.contains("database schema is at version 10.5.1"), "{reason}");
    assert!(reason.contains("runs version 10.6.1"), "{reason}");
    let (status, body) = server.health();
    assert_eq!((status, body.as_str()), (503, reason.as_str()));
    let log = std::fs::read_to_string(a.dir.join("logs/cell.log")).unwrap();
    assert!(log.contains(&format!("ERROR | {reason}")), "{log}");
    assert_eq!(events(&g.timeline(), "start_refused").len(), 1);
    // The API (of b: a down cell answers no API) lists a inactive, with its installed version.
    let b_server = b.serve();
    let api = b_server.api();
    let token = api.login();
    let cells = api.get("/cloudapi/1.0.0/cells", &token).json();
    let by_name = |n: &str| {
        cells["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("a")["productVersion"], "10.6.1");
    assert_eq!(by_name("a")["isActive"], false);
    assert_eq!(by_name("b")["productVersion"], "10.5.1");
    assert_eq!(by_name("b")["isActive"], true);

    // Stopped, database upgraded once every service is stopped: a starts; b, not upgraded, cannot.
    systemctl(a, "stop");
    systemctl(b, "stop");
    assert_eq!(db_upgrade(a).status.code(), Some(0));
    systemctl(a, "start");
    assert_eq!(a.show()["cell"], "up");
    assert_eq!(a.show()["start_refused"], Value::Null);
    assert_eq!(server.health(), (200, "Service is up.".to_string()));
    assert!(
        std::fs::read_to_string(a.dir.join("logs/cell.log"))
            .unwrap()
            .contains("Cell startup completed")
    );
    systemctl(b, "start");
    let reason = b.show()["start_refused"].as_str().unwrap().to_string();
    assert!(reason.contains("this cell was not upgraded"), "{reason}");
    assert_eq!(b.show()["cell"], "down");
}

#[test]
fn a_group_of_one_does_not_check_the_schema_unless_asked() {
    let cell = Cell::create(&["--stopped", "--version", "10.5.1"]);
    install(&cell, "10.6.1");
    systemctl(&cell, "start");
    assert_eq!(cell.show()["cell"], "up");
    systemctl(&cell, "stop");
    cell.sim_ok("set", &["schema_check=true"]);
    systemctl(&cell, "start");
    assert_eq!(cell.show()["cell"], "down");
    assert!(cell.show()["start_refused"].is_string());
}

#[test]
fn reboot_stops_the_service_until_the_test_plays_the_boot() {
    let g = Group::new(&["a"], &["--startup-delay", "100ms"]);
    let a = &g.cells[0];
    let first_boot = std::fs::read_to_string(a.dir.join("sim/boot_id")).unwrap();
    let out = a.tool("systemctl", &["reboot"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let show = a.show();
    assert_eq!(
        (show["service"].as_str(), show["rebooting"].as_bool()),
        (Some("stopped"), Some(true))
    );
    // The host stays down: the service manager refuses to start units until the boot.
    let out = a.tool("systemctl", &["start", "vmware-vcd"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Transaction is destructive"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(a.show()["service"], "stopped");
    a.sim_ok("boot", &[]);
    assert_ne!(std::fs::read_to_string(a.dir.join("sim/boot_id")).unwrap(), first_boot);
    wait_until("the cell back up", || (a.show()["cell"] == "up").then_some(()));
    let show = a.show();
    assert_eq!(
        (
            show["rebooting"].as_bool(),
            show["reboots"].as_u64(),
            show["boots"].as_u64()
        ),
        (Some(false), Some(1), Some(1))
    );
    let t = g.timeline();
    let names: Vec<&str> = t.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "created",
            "reboot",
            "service_stopped",
            "boot",
            "service_started",
            "cell_up"
        ]
    );
    assert_eq!(events(&t, "service_started")[0]["detail"]["by"], "boot");
    let at = |name: &str| events(&t, name)[0]["at_ms"].as_u64().unwrap();
    assert!(at("cell_up") >= at("boot") + 100);
}

#[test]
fn a_boot_with_the_service_held_back_and_a_boot_nobody_asked_for() {
    let g = Group::new(&["a"], &[]);
    let a = &g.cells[0];
    a.tool("systemctl", &["reboot"]);
    a.sim_ok("boot", &["--no-service"]);
    assert_eq!(a.show()["service"], "stopped");
    let out = a.tool("systemctl", &["start", "vmware-vcd"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(a.show()["cell"], "up");
    // A boot without a reboot: the host went down unasked (a power loss) and came back.
    a.sim_ok("boot", &[]);
    let t = g.timeline();
    let names: Vec<&str> = t.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "created",
            "reboot",
            "service_stopped",
            "boot",
            "service_started",
            "cell_up",
            "reboot",
            "service_stopped",
            "boot",
            "service_started",
            "cell_up"
        ]
    );
    assert_eq!(events(&t, "reboot")[1]["detail"]["requested"], false);
    assert_eq!(a.show()["reboots"], 1, "only requested reboots are counted");
}
