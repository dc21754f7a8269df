//! Fleet-wide slots against a real etcd (and the FleetLock server of cellsim, whose semaphore
//! lives in that same etcd). Cross-cell properties come from the simulator's records (each
//! cell's invocations.jsonl: when it was quiesced and released), not from cellctl's output.

mod common;

use std::process::{Child, Command, Stdio};

use common::etcd::Etcd;
use common::{Cell, Run, cellsim_bin, wait_child, wait_for};
use serde_json::Value;

/// A cell of its own with this lock id, slots on `lock` (flags: `--lock-etcd URL` etc.).
fn cell(id: &str) -> Cell {
    let c = Cell::new(&["--name", id]);
    std::fs::write(&c.config, format!("[lock]\nid = \"{id}\"\n")).unwrap();
    c
}

fn run(c: &Cell, lock: &[&str], args: &[&str]) -> Run {
    let out = c.cellctl().args(lock).args(args).output().unwrap();
    Run::from(out)
}

fn spawn(c: &Cell, lock: &[&str], args: &[&str]) -> Child {
    c.cellctl()
        .args(lock)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

const DRAIN: &[&str] = &[
    "--json",
    "drain",
    "--no-maintenance",
    "--no-shutdown",
    "--poll-interval",
    "100ms",
];

fn ms(at: &str) -> u128 {
    let t = humantime::parse_rfc3339(at).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
}

/// When the simulator saw the cell quiesced and released again: [quiesce true, quiesce false]
/// (end None: still quiesced).
fn quiesced_intervals(c: &Cell) -> Vec<(u128, Option<u128>)> {
    let mut out: Vec<(u128, Option<u128>)> = vec![];
    for i in c.invocations() {
        let argv: Vec<&str> = i["argv"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        let Some(p) = argv.iter().position(|a| *a == "--quiesce") else {
            continue;
        };
        let at = ms(i["at"].as_str().unwrap());
        match argv.get(p + 1) {
            Some(&"true") if out.last().is_none_or(|l| l.1.is_some()) => out.push((at, None)),
            Some(&"false") => {
                if let Some(l) = out.last_mut().filter(|l| l.1.is_none()) {
                    l.1 = Some(at);
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether any two cells' quiesced intervals overlap.
fn overlap(cells: &[&Cell]) -> bool {
    let iv: Vec<Vec<(u128, Option<u128>)>> = cells.iter().map(|c| quiesced_intervals(c)).collect();
    for (i, a) in iv.iter().enumerate() {
        for b in &iv[i + 1..] {
            for &(s1, e1) in a {
                for &(s2, e2) in b {
                    if s1 < e2.unwrap_or(u128::MAX) && s2 < e1.unwrap_or(u128::MAX) {
                        return true;
                    }
                }
            }
        }
    }
    false
}

fn quiesce_calls(c: &Cell) -> usize {
    c.calls_with(&["--quiesce", "true"])
}

fn lock_status(c: &Cell, lock: &[&str]) -> Value {
    let r = run(c, lock, &["--json", "lock", "status"]);
    r.assert_code(0);
    r.json()
}

fn holder_ids(status: &Value) -> Vec<String> {
    status["lock"]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn acquire_is_recursive_a_full_slot_exits_15_naming_the_holder_and_release_frees_it() {
    let Some(etcd) = Etcd::start() else { return };
    let url = etcd.url();
    let lock = ["--lock-etcd", url.as_str()];
    let (a, b) = (cell("cell-a"), cell("cell-b"));

    let r = run(&a, &lock, DRAIN);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["slot"]["released"], false, "a drained cell keeps its slot: {doc}");
    assert!(
        doc["slot"]["note"].as_str().unwrap().contains("lock release cell-a"),
        "{doc}"
    );
    let take = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "take_slot")
        .unwrap();
    assert!(take["detail"].as_str().unwrap().starts_with("taken"), "{take}");
    let st = lock_status(&a, &lock);
    assert_eq!(holder_ids(&st), ["cell-a"]);
    assert!(st["lock"]["holders"][0]["since"].is_string(), "{st}");
    assert_eq!(
        etcd.semaphore("default")["semaphore"]["holders"],
        serde_json::json!(["cell-a"])
    );

    // Recursive: the parked run continued takes the slot it holds again.
    let r = run(&a, &lock, DRAIN);
    r.assert_code(0);
    let steps = r.json()["steps"].clone();
    let last_take = steps
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|s| s["step"] == "take_slot")
        .unwrap()
        .clone();
    assert!(
        last_take["detail"].as_str().unwrap().starts_with("already held"),
        "{last_take}"
    );

    // Full: exit 15 at once, the holder named, nothing changed on b.
    let r = run(&b, &lock, DRAIN);
    r.assert_code(15);
    let doc = r.json();
    let msg = doc["error"]["message"].as_str().unwrap();
    assert!(msg.contains("cell-a (since "), "{msg}");
    assert_eq!(doc["error"]["kind"], "slot");
    assert_eq!(doc["cell_left"], "unchanged");
    assert_eq!(quiesce_calls(&b), 0, "b was not touched");
    assert!(b.current().is_none(), "no run of b is left recorded");
    assert!(!b.state.join("slot.json").exists());

    // Waiting: b waits while a holds it, and goes once a's drain is undone.
    let waiting = spawn(&b, &lock, &[DRAIN, &["--lock-wait", "60s"]].concat());
    wait_for("b waiting for the slot", || b.current().is_some());
    assert_eq!(quiesce_calls(&b), 0);
    let r = run(&a, &lock, &["--json", "resume"]);
    r.assert_code(0);
    assert_eq!(r.json()["slot"]["released"], true, "{}", r.stdout);
    let r = wait_child(waiting);
    r.assert_code(0);
    assert_eq!(quiesce_calls(&b), 1);
    assert!(!overlap(&[&a, &b]), "a and b were quiesced at the same time");

    // An operator frees b's slot from a (a stuck holder): recorded with who did it.
    let r = run(&a, &lock, &["--json", "lock", "release", "cell-b"]);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["lock"]["was_held"], true);
    assert!(holder_ids(&doc).is_empty(), "{doc}");
    let last = etcd.semaphore("default")["cellctl"]["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["action"].as_str(), last["id"].as_str()),
        (Some("release"), Some("cell-b"))
    );
    assert_eq!(last["by"], doc["lock"]["by"]);
    // Releasing an id that holds nothing succeeds.
    let r = run(&a, &lock, &["--json", "lock", "release", "nobody"]);
    r.assert_code(0);
    assert_eq!(r.json()["lock"]["was_held"], false);
}

/// Three cells' drains started together: with one slot they take turns; without a lock, they
/// are quiesced at the same time (so the first half proves the lock is what kept them apart).
#[test]
fn with_one_slot_no_two_cells_are_quiesced_at_once_and_without_a_lock_they_are() {
    let Some(etcd) = Etcd::start() else { return };
    let url = etcd.url();
    for locked in [true, false] {
        let lock: Vec<&str> = if locked {
            vec!["--lock-etcd", url.as_str(), "--lock-group", "g1"]
        } else {
            vec![]
        };
        let group = tempfile::tempdir().unwrap();
        let cells: Vec<Cell> = ["c1", "c2", "c3"]
            .iter()
            .map(|n| {
                let c = Cell::in_group(group.path(), n, &[]);
                std::fs::write(&c.config, format!("[lock]\nid = \"{n}\"\n")).unwrap();
                c
            })
            .collect();
        for c in &cells {
            c.sim(&["jobs", "add", "--duration", "1s"]);
        }
        let mut children: Vec<Option<Child>> = cells
            .iter()
            .map(|c| Some(spawn(c, &lock, &[DRAIN, &["--lock-wait", "120s"]].concat())))
            .collect();
        // Each drain that ends leaves its cell drained; undoing it (resume) lets the next go.
        let mut left = cells.len();
        while left > 0 {
            let mut done = None;
            wait_for("a drain to end", || {
                done = children
                    .iter_mut()
                    .position(|ch| ch.as_mut().is_some_and(|c| c.try_wait().unwrap().is_some()));
                done.is_some()
            });
            let i = done.unwrap();
            wait_child(children[i].take().unwrap()).assert_code(0);
            if locked {
                // Still held while drained: the others are still waiting.
                assert!(
                    cells
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| children[*j].is_some())
                        .all(|(_, c)| quiesce_calls(c) == 0),
                    "a cell quiesced while another held the slot"
                );
            }
            run(&cells[i], &lock, &["--json", "resume"]).assert_code(0);
            left -= 1;
        }
        let refs: Vec<&Cell> = cells.iter().collect();
        for c in &refs {
            assert_eq!(quiesced_intervals(c).len(), 1, "each cell was drained once");
        }
        assert_eq!(
            overlap(&refs),
            !locked,
            "locked={locked}: {:?}",
            refs.iter().map(|c| quiesced_intervals(c)).collect::<Vec<_>>()
        );
        // The group's own timeline says the same: how many cells were out of service at once.
        let down = common::Timeline::of_group(group.path()).max_down();
        if locked {
            assert_eq!(down, 1, "with one slot, one cell at a time");
        } else {
            assert!(down >= 2, "without a lock the drains overlap (max down {down})");
        }
    }
}

#[test]
fn a_killed_holder_keeps_its_slot_until_resume() {
    let Some(etcd) = Etcd::start() else { return };
    let url = etcd.url();
    let lock = ["--lock-etcd", url.as_str()];
    let (a, b) = (cell("cell-a"), cell("cell-b"));
    a.sim(&["jobs", "add", "--never"]);
    let child = spawn(&a, &lock, DRAIN);
    a.wait_phase("waiting");
    common::signal(&child, nix::sys::signal::Signal::SIGKILL);
    let _ = wait_child(child);
    assert_eq!(
        holder_ids(&lock_status(&b, &lock)),
        ["cell-a"],
        "the dead holder keeps its slot"
    );
    run(&b, &lock, DRAIN).assert_code(15);
    assert_eq!(quiesce_calls(&b), 0);
    // `cellctl status` on a says it holds the slot and how to free it.
    let st = run(&a, &lock, &["--json", "status"]);
    assert!(
        st.json()["slot"]["note"]
            .as_str()
            .unwrap()
            .contains("lock release cell-a"),
        "{}",
        st.stdout
    );
    let r = run(&a, &lock, &["--json", "resume"]);
    r.assert_code(0);
    assert_eq!(r.json()["slot"]["released"], true, "{}", r.stdout);
    run(&b, &lock, DRAIN).assert_code(0);
}

#[test]
fn etcd_down_mid_run_the_run_goes_on_and_the_failed_release_is_reported_then_retried() {
    let Some(mut etcd) = Etcd::start() else { return };
    let url = etcd.url();
    let lock = ["--lock-etcd", url.as_str()];
    let a = cell("cell-a");
    a.sim(&["jobs", "add", "--never"]);
    let child = spawn(&a, &lock, DRAIN);
    a.wait_phase("waiting");
    etcd.stop();
    a.sim(&["jobs", "finish", "--all"]);
    let r = wait_child(child);
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "drained");
    // The undo is done with etcd still down: its outcome stands, the release failure is said.
    let r = run(&a, &lock, &["--json", "resume"]);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["slot"]["released"], false, "{doc}");
    assert!(doc["slot"]["error"].as_str().unwrap().contains("unreachable"), "{doc}");
    let rec: Value = serde_json::from_slice(&std::fs::read(a.state.join("slot.json")).unwrap()).unwrap();
    assert_eq!(rec["state"], "releasing");
    // etcd back: the next command retries the release first.
    etcd.resume();
    assert_eq!(holder_ids(&lock_status(&a, &lock)), ["cell-a"]);
    let r = run(&a, &lock, DRAIN);
    r.assert_code(0);
    let last = etcd.semaphore("default")["cellctl"]["history"]
        .as_array()
        .unwrap()
        .clone();
    let actions: Vec<&str> = last.iter().map(|h| h["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["take", "release", "take"], "{last:?}");
}

#[test]
fn lock_service_unreachable_exits_15_with_nothing_changed() {
    let a = cell("cell-a");
    let port = common::PortHold::new(0);
    let url = format!("http://127.0.0.1:{}", port.port);
    let r = run(&a, &["--lock-etcd", &url], DRAIN);
    r.assert_code(15);
    assert!(
        r.json()["error"]["message"].as_str().unwrap().contains("unreachable"),
        "{}",
        r.stdout
    );
    assert_eq!(quiesce_calls(&a), 0);
    assert!(a.current().is_none());
}

#[test]
fn both_backends_configured_is_a_config_error_naming_the_line() {
    let a = cell("cell-a");
    std::fs::write(
        &a.config,
        "[lock]\netcd = \"http://127.0.0.1:1\"\nfleetlock = \"http://127.0.0.1:2\"\n",
    )
    .unwrap();
    let r = run(&a, &[], DRAIN);
    r.assert_code(3);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("line 2") && msg.contains("line 3") && msg.contains("keep one"),
        "{msg}"
    );
    std::fs::write(
        &a.config,
        "[lock]\nfleetlock = \"http://127.0.0.1:2\"\ngroup = \"bad group\"\n",
    )
    .unwrap();
    let r = run(&a, &[], DRAIN);
    r.assert_code(3);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[a-zA-Z0-9.-]+"),
        "{}",
        r.stdout
    );
}

struct FleetLockServer(Child, u16);

impl Drop for FleetLockServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fleetlock_server(etcd: &Etcd) -> FleetLockServer {
    let dir = tempfile::tempdir().unwrap();
    let pf = dir.path().join("port");
    let child = Command::new(cellsim_bin())
        .args(["fleetlock", "--etcd", &etcd.url(), "--port-file"])
        .arg(&pf)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the FleetLock server's port", || pf.exists());
    let port = std::fs::read_to_string(&pf).unwrap().trim().parse().unwrap();
    FleetLockServer(child, port)
}

/// A raw protocol request: (status, body).
fn fleetlock_post(port: u16, path: &str, header: bool, body: &str) -> (u16, Value) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, urllib.request, urllib.error\n\
             h = {'fleet-lock-protocol': 'true'} if sys.argv[3] == '1' else {}\n\
             r = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), headers=h, method='POST')\n\
             try:\n    resp = urllib.request.urlopen(r); print(resp.status); print(resp.read().decode())\n\
             except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n",
        )
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .arg(body)
        .arg(if header { "1" } else { "0" })
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (code, body) = text.split_once('\n').unwrap();
    (code.parse().unwrap(), serde_json::from_str(body.trim()).unwrap())
}

#[test]
fn fleetlock_client_against_the_simulated_server() {
    let Some(etcd) = Etcd::start() else { return };
    let server = fleetlock_server(&etcd);
    let url = format!("http://127.0.0.1:{}", server.1);
    let lock = ["--lock-fleetlock", url.as_str(), "--lock-group", "vcd.prod-1"];
    let (a, b) = (cell("cell-a"), cell("cell-b"));

    // The server follows the protocol.
    let (code, body) = fleetlock_post(
        server.1,
        "/v1/pre-reboot",
        false,
        r#"{"client_params":{"id":"x","group":"g"}}"#,
    );
    assert_eq!((code, body["kind"].as_str()), (400, Some("missing_header")));
    let (code, body) = fleetlock_post(
        server.1,
        "/v1/pre-reboot",
        true,
        r#"{"client_params":{"id":"","group":"g"}}"#,
    );
    assert_eq!((code, body["kind"].as_str()), (400, Some("invalid_client_identity")));

    run(&a, &lock, DRAIN).assert_code(0);
    assert_eq!(
        etcd.semaphore("vcd.prod-1")["semaphore"]["holders"],
        serde_json::json!(["cell-a"])
    );
    let r = run(&b, &lock, DRAIN);
    r.assert_code(15);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("500") && msg.contains("failed_lock"),
        "the server's error as it came: {msg}"
    );
    assert_eq!(quiesce_calls(&b), 0);
    let st = lock_status(&a, &lock);
    assert_eq!(st["lock"]["listable"], false);
    let r = run(&a, &lock, &["lock", "status"]);
    assert!(r.stdout.contains("cannot list"), "{}", r.stdout);
    // The etcd client sees the FleetLock server's holder in the same semaphore.
    let etcd_lock = ["--lock-etcd", etcd.url().leak(), "--lock-group", "vcd.prod-1"];
    assert_eq!(holder_ids(&lock_status(&a, &etcd_lock)), ["cell-a"]);

    let r = run(&a, &lock, &["--json", "resume"]);
    r.assert_code(0);
    assert_eq!(r.json()["slot"]["released"], true, "{}", r.stdout);
    run(&b, &lock, DRAIN).assert_code(0);
    assert_eq!(
        etcd.semaphore("vcd.prod-1")["semaphore"]["holders"],
        serde_json::json!(["cell-b"])
    );
}
