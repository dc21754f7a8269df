//! The fleet, end to end: three cells of one simulated group, each patched by the real
//! `cellctl maintain` (as each cell's own timer would start it), with the redundancy guard on
//! (the group's simulated API), slots on a real etcd, the reboot through the simulator's
//! service manager and the boot played by a watcher that then runs the continuation as the
//! boot unit does (`cellctl maintain --continue --at-boot`). Cross-cell properties come from
//! the group's timeline (the simulator's records), not from cellctl's output.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::etcd::Etcd;
use common::*;
use serde_json::Value;

const NAMES: [&str; 3] = ["c1", "c2", "c3"];
const GROUP: &str = "fleet";

struct Fleet {
    group: tempfile::TempDir,
    cells: Vec<Cell>,
    served: Vec<Served>,
    /// etcd URL, or None: no `[lock]`.
    lock: Option<String>,
}

impl Fleet {
    fn new(lock: Option<String>) -> Fleet {
        let group = tempfile::tempdir().unwrap();
        let cells: Vec<Cell> = NAMES
            .iter()
            .map(|n| Cell::in_group(group.path(), n, &["--quiesce-delay", "100ms"]))
            .collect();
        let served = cells.iter().map(Cell::serve).collect();
        Fleet {
            group,
            cells,
            served,
            lock,
        }
    }

    /// cellctl for cell `i` as its timer's unit would run it: the guard on (the group's API,
    /// this cell by name), the simulator's service manager, reboot and boot id, the slot (the
    /// lock id is the default: the cell's name).
    fn cmd(&self, i: usize) -> Command {
        let (c, s) = (&self.cells[i], &self.served[i]);
        let mut cmd = c.upgrade_cmd(s);
        cmd.env_remove("CELLCTL_SKIP_REDUNDANCY_GUARD")
            .env("CELLCTL_API_URL", &s.https)
            .env("CELLCTL_API_CA_FILE", &s.ca)
            .env("CELLCTL_CELL_NAME", NAMES[i])
            .env("CELLCTL_BOOT_ID_FILE", c.dir.join("sim/boot_id"))
            .env(
                "CELLCTL_REBOOT_COMMAND",
                format!("{} reboot", c.dir.join("bin/systemctl").display()),
            )
            .env("CELLCTL_REBOOT_REQUIRED_FILES", c.tmp.path().join("reboot-required"))
            .env("CELLCTL_SERVICE_WAIT", "30s");
        if let Some(url) = &self.lock {
            cmd.env("CELLCTL_LOCK_ETCD", url).env("CELLCTL_LOCK_GROUP", GROUP);
        }
        cmd
    }

    fn run(&self, i: usize, args: &[&str]) -> Run {
        Run::from(self.cmd(i).args(args).output().unwrap())
    }

    fn spawn(&self, i: usize, args: &[&str]) -> Child {
        self.cmd(i)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn timeline(&self) -> Timeline {
        Timeline::of_group(self.group.path())
    }

    fn holders(&self) -> Vec<String> {
        let r = self.run(0, &["--json", "lock", "status"]);
        r.assert_code(0);
        r.json()["lock"]["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.group.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// A COMMAND that marks its arrival, then waits (up to 15s) until at least two cells'
    /// COMMANDs have arrived: without a lock two drained cells meet here, so the race is seen
    /// whatever the machine's load; with one slot only the first waits, alone, the 15s.
    fn meeting_command(&self) -> PathBuf {
        let arrived = self.group.path().join("arrived");
        std::fs::create_dir_all(&arrived).unwrap();
        let a = arrived.display();
        self.script(
            "patch",
            &format!(
                "mktemp -p {a} >/dev/null; i=0\n\
                 while [ \"$(ls {a} | wc -l)\" -lt 2 ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done\n\
                 echo patched"
            ),
        )
    }
}

fn assert_steps_done(doc: &Value, want: &[&str]) {
    let got = steps(doc);
    for w in want {
        assert!(
            got.iter().any(|(s, st)| s == w && st == "done"),
            "step {w} not done in {got:?}"
        );
    }
}

fn count(t: &Timeline, cell: &str, event: &str) -> usize {
    t.of(cell).iter().filter(|e| e.event == event).count()
}

/// One cell's life under its timer, in a watcher thread of its own: the maintain run; when it
/// ends rebooting, the boot is played once the simulator recorded the reboot, then the
/// continuation (`cont`) runs as the boot unit runs it. The exit code and the continuation.
fn timer_and_boot(group: &Path, dir: &Path, name: &str, child: Child, mut cont: Command) -> (i32, Option<Run>) {
    let first = wait_child(child);
    if first.code != 0 {
        return (first.code, None);
    }
    assert_eq!(first.json()["outcome"], "rebooting", "{}", first.stdout);
    wait_for("the simulator to record the reboot", || {
        count(&Timeline::of_group(group), name, "reboot") == 1
    });
    let out = Command::new(cellsim_bin()).arg("boot").arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (0, Some(Run::from(cont.output().unwrap())))
}

/// Three cells' timers fire together: `maintain --reboot` with one slot and `--lock-wait`.
/// They take turns: at no moment two cells out of service, each rebooted once and back by
/// itself, every step in its report, the slot free at the end. The same without a lock: two
/// cells are down at once (the guard alone cannot prevent it), so the lock is what matters.
#[test]
fn three_timers_with_one_slot_take_turns_through_their_reboots_and_without_a_lock_race() {
    let Some(etcd) = Etcd::start() else { return };
    for locked in [true, false] {
        let f = Fleet::new(locked.then(|| etcd.url()));
        let cmd = f.meeting_command();
        let args = [
            "--json",
            "maintain",
            "--reboot",
            "--poll-interval",
            "100ms",
            "--lock-wait",
            "300s",
            "--",
            cmd.to_str().unwrap(),
        ];
        let children: Vec<Child> = (0..3).map(|i| f.spawn(i, &args)).collect();
        let watchers: Vec<_> = children
            .into_iter()
            .enumerate()
            .map(|(i, ch)| {
                let mut cont = f.cmd(i);
                cont.args(["--json", "maintain", "--continue", "--at-boot"]);
                let (group, dir) = (f.group.path().to_path_buf(), f.cells[i].dir.clone());
                std::thread::spawn(move || timer_and_boot(&group, &dir, NAMES[i], ch, cont))
            })
            .collect();
        let results: Vec<(i32, Option<Run>)> = watchers.into_iter().map(|h| h.join().unwrap()).collect();
        let t = f.timeline();
        if !locked {
            assert!(
                t.max_down() >= 2,
                "without a lock two cells are down at once: {:#?}",
                t.events
            );
            continue;
        }
        for (i, (code, cont)) in results.iter().enumerate() {
            assert_eq!(*code, 0, "cell {}", NAMES[i]);
            let cont = cont.as_ref().unwrap();
            cont.assert_code(0).assert_no_secret();
            let doc = cont.json();
            assert_eq!(doc["outcome"], "maintained", "{doc}");
            assert_eq!(doc["slot"]["released"], true, "released by the continuation: {doc}");
            // The saved report (what `report --last` shows) holds every step of the run.
            let last = f.run(i, &["--json", "report", "--last"]);
            last.assert_code(0);
            let rep = last.json();
            assert_eq!(rep["outcome"], "maintained");
            assert_eq!(rep["run_id"], doc["run_id"]);
            assert_steps_done(
                &rep,
                &[
                    "take_slot",
                    "quiesce",
                    "shutdown",
                    "command",
                    "reboot",
                    "continue_after_boot",
                    "health",
                    "release_slot",
                ],
            );
            assert_eq!(rep["slot"]["released"], true, "{rep}");
            assert!(f.cells[i].current().is_none());
        }
        assert!(f.holders().is_empty(), "the slot is free at the end");
        assert_eq!(t.max_down(), 1, "one cell at a time: {:#?}", t.events);
        for n in NAMES {
            assert_eq!(
                (count(&t, n, "reboot"), count(&t, n, "boot")),
                (1, 1),
                "{n}: {:#?}",
                t.events
            );
        }
        let end = t.events.last().unwrap().at_ms;
        assert_eq!(t.serving_at(end), NAMES, "all serving at the end");
    }
}

/// Without a reboot: the slot goes once the cell is started and healthy; no two cells down.
#[test]
fn three_timers_without_reboot_take_turns() {
    let Some(etcd) = Etcd::start() else { return };
    let f = Fleet::new(Some(etcd.url()));
    let cmd = f.meeting_command();
    let args = [
        "--json",
        "maintain",
        "--poll-interval",
        "100ms",
        "--lock-wait",
        "300s",
        "--",
        cmd.to_str().unwrap(),
    ];
    let children: Vec<Child> = (0..3).map(|i| f.spawn(i, &args)).collect();
    for ch in children {
        let r = wait_child(ch);
        r.assert_code(0);
        let doc = r.json();
        assert_eq!(doc["outcome"], "maintained", "{doc}");
        assert_eq!(doc["slot"]["released"], true, "{doc}");
        assert_steps_done(
            &doc,
            &["take_slot", "command", "start_service", "health", "release_slot"],
        );
    }
    let t = f.timeline();
    assert_eq!(t.max_down(), 1, "{:#?}", t.events);
    assert!(t.named("reboot").is_empty());
    assert!(f.holders().is_empty());
}

/// A COMMAND that fails keeps the slot (the cell is drained): another cell's maintain is
/// refused with exit 15 naming the holder, until `maintain --continue` (fixed) or `resume`.
#[test]
fn a_failing_command_keeps_the_slot_until_continue_or_resume() {
    let Some(etcd) = Etcd::start() else { return };
    let f = Fleet::new(Some(etcd.url()));
    let fixed = f.group.path().join("fixed");
    let cmd = f.script(
        "patch",
        &format!(
            "[ -e {} ] && exit 0; echo 'E: mirror unreachable' >&2; exit 4",
            fixed.display()
        ),
    );
    let cmd = cmd.to_str().unwrap();
    let maintain = ["--json", "maintain", "--poll-interval", "100ms", "--", cmd];
    let r = f.run(0, &maintain);
    r.assert_code(26);
    let doc = r.json();
    assert_eq!(doc["slot"]["released"], false, "{doc}");
    assert!(
        doc["slot"]["note"].as_str().unwrap().contains("lock release c1"),
        "{doc}"
    );
    assert_eq!(f.holders(), ["c1"]);
    let refused = |f: &Fleet| {
        let before = f.cells[1].calls_with(&["--quiesce", "true"]);
        let r = f.run(1, &maintain);
        r.assert_code(15);
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains("c1 (since "), "{msg}");
        assert_eq!(f.cells[1].calls_with(&["--quiesce", "true"]), before, "nothing changed");
    };
    refused(&f);
    // Fixed: --continue runs it again, the cell comes back, the slot goes.
    std::fs::write(&fixed, "").unwrap();
    let r = f.run(0, &["--json", "maintain", "--continue"]);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "maintained", "{doc}");
    assert_eq!(doc["slot"]["released"], true, "{doc}");
    assert!(f.holders().is_empty());
    f.run(1, &maintain).assert_code(0);
    // Failing again, then undone: resume releases it.
    std::fs::remove_file(&fixed).unwrap();
    f.run(0, &maintain).assert_code(26);
    refused(&f);
    let r = f.run(0, &["--json", "resume"]);
    r.assert_code(0);
    assert_eq!(r.json()["slot"]["released"], true, "{}", r.stdout);
    assert!(f.holders().is_empty());
    let t = f.timeline();
    assert_eq!(t.max_down(), 1, "{:#?}", t.events);
}

fn waiting_command(f: &Fleet, go: &Path, ran: &Path) -> PathBuf {
    f.script(
        "patch",
        &format!(
            "echo x >> {}; while [ ! -e {} ]; do sleep 0.05; done; echo patched",
            ran.display(),
            go.display()
        ),
    )
}

/// etcd goes down while the COMMAND runs: the run goes on to the end, the failed release is
/// retried and reported, kept recorded, and the next command releases it first.
#[test]
fn etcd_down_during_maintain_the_run_goes_on_and_the_release_is_retried_later() {
    let Some(mut etcd) = Etcd::start() else { return };
    let f = Fleet::new(Some(etcd.url()));
    let (go, ran) = (f.group.path().join("go"), f.group.path().join("ran"));
    let cmd = waiting_command(&f, &go, &ran);
    let child = f.spawn(
        0,
        &[
            "--json",
            "maintain",
            "--poll-interval",
            "100ms",
            "--",
            cmd.to_str().unwrap(),
        ],
    );
    wait_for("the command to run", || ran.exists());
    etcd.stop();
    std::fs::write(&go, "").unwrap();
    let r = wait_child(child);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "maintained", "{doc}");
    assert_eq!(doc["cell_left"], "running");
    assert_eq!(doc["slot"]["released"], false, "{doc}");
    assert!(doc["slot"]["error"].as_str().unwrap().contains("unreachable"), "{doc}");
    assert!(
        steps(&doc).contains(&("release_slot".into(), "failed".into())),
        "{:?}",
        steps(&doc)
    );
    let rec: Value = serde_json::from_slice(&std::fs::read(f.cells[0].state.join("slot.json")).unwrap()).unwrap();
    assert_eq!(rec["state"], "releasing");
    etcd.resume();
    assert_eq!(f.holders(), ["c1"], "still held in etcd");
    // The next command (another maintain) releases it first, then runs as usual.
    let r = f.run(
        0,
        &["--json", "maintain", "--poll-interval", "100ms", "--", "/bin/true"],
    );
    r.assert_code(0);
    assert!(f.holders().is_empty());
    let history: Vec<String> = etcd.semaphore(GROUP)["cellctl"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(history, ["take", "release", "take", "release"]);
    assert!(!f.cells[0].state.join("slot.json").exists());
}

/// etcd is down when the host comes back from its reboot: the continuation still brings the
/// cell back (it holds the slot, recorded), and the release waits for the next command.
#[test]
fn etcd_down_at_boot_the_continuation_finishes_and_the_release_is_kept_due() {
    let Some(mut etcd) = Etcd::start() else { return };
    let f = Fleet::new(Some(etcd.url()));
    let r = f.run(
        0,
        &[
            "--json",
            "maintain",
            "--reboot",
            "--poll-interval",
            "100ms",
            "--",
            "/bin/true",
        ],
    );
    r.assert_code(0);
    assert_eq!(r.json()["outcome"], "rebooting");
    etcd.stop();
    f.cells[0].sim(&["boot"]);
    let r = f.run(0, &["--json", "maintain", "--continue", "--at-boot"]);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "maintained", "{doc}");
    assert_eq!(doc["slot"]["released"], false, "{doc}");
    etcd.resume();
    assert_eq!(f.holders(), ["c1"]);
    let r = f.run(0, &["--json", "start"]);
    r.assert_code(0);
    assert_eq!(r.json()["slot"]["released"], true, "{}", r.stdout);
    assert!(f.holders().is_empty());
}

/// `kill -9` of the holder while its COMMAND runs: the slot stays held (no TTL) and the other
/// cells are refused, until the rerun finishes; or until an operator frees it by hand, after
/// which the rerun takes it again before it goes on.
#[test]
fn kill_9_during_the_command_keeps_the_slot_until_the_rerun_or_lock_release() {
    let Some(etcd) = Etcd::start() else { return };
    let f = Fleet::new(Some(etcd.url()));
    let (go, ran) = (f.group.path().join("go"), f.group.path().join("ran"));
    let cmd = waiting_command(&f, &go, &ran);
    let cmd = cmd.to_str().unwrap();
    let maintain = ["--json", "maintain", "--poll-interval", "100ms", "--", cmd];
    for by_hand in [false, true] {
        let _ = std::fs::remove_file(&go);
        let _ = std::fs::remove_file(&ran);
        let mut child = f.spawn(0, &maintain);
        wait_for("the command to run", || ran.exists());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(f.holders(), ["c1"], "the dead holder keeps its slot");
        let r = f.run(1, &["--json", "maintain", "--", "/bin/true"]);
        r.assert_code(15);
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("c1 (since "));
        if by_hand {
            let r = f.run(1, &["--json", "lock", "release", "c1"]);
            r.assert_code(0);
            assert_eq!(r.json()["lock"]["was_held"], true);
            assert!(f.holders().is_empty());
        }
        std::fs::write(&go, "").unwrap();
        let r = f.run(0, &["--json", "maintain", "--continue"]);
        r.assert_code(0);
        let doc = r.json();
        assert_eq!(doc["outcome"], "maintained", "{doc}");
        assert_eq!(doc["slot"]["released"], true, "{doc}");
        let take = steps(&doc).into_iter().rev().find(|(s, _)| s == "take_slot").unwrap();
        assert_eq!(take.1, "done");
        let detail = doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s["step"] == "take_slot")
            .unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_string();
        let want = if by_hand { "taken" } else { "already held" };
        assert!(detail.starts_with(want), "{detail}");
        assert!(f.holders().is_empty());
    }
    let t = f.timeline();
    assert_eq!(t.max_down(), 1, "{:#?}", t.events);
}

/// The guard is asked again once the slot is taken: a cell that waited for the slot while the
/// group changed (another cell stopped, the holder's slot freed by hand while it is still
/// drained) is refused then, with nothing changed and the slot given back.
#[test]
fn the_guard_is_checked_again_after_the_wait_for_the_slot() {
    let Some(etcd) = Etcd::start() else { return };
    let f = Fleet::new(Some(etcd.url()));
    let fail = f.script("patch", "exit 4");
    let fail = fail.to_str().unwrap();
    f.run(0, &["--json", "maintain", "--poll-interval", "100ms", "--", fail])
        .assert_code(26);
    let waiting = f.spawn(
        1,
        &[
            "--json",
            "maintain",
            "--lock-wait",
            "120s",
            "--poll-interval",
            "100ms",
            "--",
            "/bin/true",
        ],
    );
    // Its first guard passed (c3 serves): it waits for the slot.
    wait_for("c2 waiting for the slot", || {
        f.cells[1].current().is_some_and(|r| {
            r["steps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["step"] == "take_slot" && s["status"] == "started")
        })
    });
    let st = Command::new(f.cells[2].dir.join("bin/systemctl"))
        .args(["stop", "vmware-vcd"])
        .status()
        .unwrap();
    assert!(st.success());
    f.run(1, &["--json", "lock", "release", "c1"]).assert_code(0);
    let r = wait_child(waiting);
    r.assert_code(13);
    let doc = r.json();
    assert_eq!(doc["cell_left"], "unchanged", "{doc}");
    assert_eq!(f.cells[1].calls_with(&["--quiesce", "true"]), 0, "nothing changed");
    assert!(f.holders().is_empty(), "the slot it took is given back");
}
