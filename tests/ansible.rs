//! The Ansible collection (ansible/) run by real ansible-core against three simulated cells of
//! one group, one inventory host per cell (`ansible_connection: local`). Everything asserted about
//! the order of the upgrade comes from the simulator's group timeline, not from Ansible's output.
//!
//! ansible-playbook is found in `$CELLCTL_ANSIBLE_VENV/bin`, else on PATH; without it the tests
//! are skipped with a message, unless `CELLCTL_REQUIRE_ANSIBLE=1` (CI: `.ci/run` makes the venv).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Cell, Served, Timeline, assert_no_password_in};

const OLD: &str = "10.5.1";
const NEW: &str = "10.6.0";
const NAMES: [&str; 3] = ["cell1", "cell2", "cell3"];

/// The directory holding ansible-playbook and ansible-galaxy, or None (skip) when absent.
fn ansible_bin() -> Option<PathBuf> {
    let required = std::env::var("CELLCTL_REQUIRE_ANSIBLE").is_ok_and(|v| v == "1");
    let found = match std::env::var_os("CELLCTL_ANSIBLE_VENV") {
        Some(venv) => Some(PathBuf::from(venv).join("bin")).filter(|b| b.join("ansible-playbook").is_file()),
        None => std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).find(|d| d.join("ansible-playbook").is_file())),
    };
    if found.is_none() {
        assert!(
            !required,
            "CELLCTL_REQUIRE_ANSIBLE=1 but no ansible-playbook in $CELLCTL_ANSIBLE_VENV/bin or on PATH \
             (make one: export CELLCTL_ANSIBLE_VENV=$(scripts/ansible-venv))"
        );
        eprintln!(
            "SKIPPED: no ansible-playbook ($CELLCTL_ANSIBLE_VENV/bin or PATH); \
             `export CELLCTL_ANSIBLE_VENV=$(scripts/ansible-venv)` to run these tests"
        );
    }
    found
}

struct Group {
    ansible: PathBuf,
    tmp: tempfile::TempDir,
    groupdir: PathBuf,
    cells: Vec<(Cell, Served)>,
    inventory: PathBuf,
    appliance: bool,
}

struct Played {
    code: i32,
    out: String,
}

impl Group {
    /// Three cells at the given versions, each with a package for NEW and its own cellctl config.
    fn new(ansible: PathBuf, versions: [&str; 3]) -> Group {
        Self::make(ansible, versions, false)
    }

    /// Three VCD appliances (`cellsim create --appliance`) at OLD, each with an update package
    /// for NEW; cellctl's config names the sim's vamicli, reboot command and boot id.
    fn appliances(ansible: PathBuf) -> Group {
        Self::make(ansible, [OLD; 3], true)
    }

    fn make(ansible: PathBuf, versions: [&str; 3], appliance: bool) -> Group {
        let tmp = tempfile::tempdir().unwrap();
        let group = tmp.path().join("group");
        let cells: Vec<(Cell, Served)> = NAMES
            .iter()
            .zip(versions)
            .map(|(name, v)| {
                let mut extra = vec!["--version", v, "--quiesce-delay", "300ms"];
                if appliance {
                    extra.push("--appliance");
                }
                let c = Cell::in_group(&group, name, &extra);
                let s = c.serve();
                (c, s)
            })
            .collect();
        let mut g = Group {
            ansible,
            tmp,
            groupdir: group,
            cells,
            inventory: PathBuf::new(),
            appliance,
        };
        g.write_inventory();
        g.install_collection();
        g
    }

    /// Each cell's config names all its paths; the API is asked through the cell that serves
    /// while the others are drained (the last), as a load balancer in front of the group would
    /// answer (the last cell's own drain passes --allow-last-cell).
    fn write_inventory(&mut self) {
        let python = self.ansible.join("python");
        let mut inv = String::from("vcd_cells:\n  hosts:\n");
        for (i, (c, s)) in self.cells.iter().enumerate() {
            let api = &self.cells[NAMES.len() - 1].1;
            let pkg = if self.appliance {
                common::appliance::update_package(c, NEW, &["--install-time", "300ms"])
            } else {
                c.package(NEW, "ok", &["--install-time", "300ms"])
            };
            let d = c.dir.display();
            let mut config = format!(
                "vcd_home = \"{d}\"\npassword_file = \"{pw}\"\nstate_dir = \"{st}\"\nsystemctl = \"{d}/bin/systemctl\"\n\
                 [drain]\npoll_interval = \"1s\"\n\
                 [install]\nsystemd_run = \"{d}/bin/systemd-run\"\nversion_command = [\"{d}/bin/vcd-version\"]\ntimeout = \"60s\"\n\
                 [health]\nurl = \"{health}\"\nca_file = \"{ca}\"\ninterval = \"100ms\"\nrequest_timeout = \"2s\"\ndeadline = \"60s\"\n\
                 [api]\nurl = \"{api}\"\nca_file = \"{apica}\"\ncell_name = \"{name}\"\n",
                pw = c.pwfile.display(),
                st = c.state.display(),
                health = s.health_url(),
                ca = s.ca.display(),
                api = api.https,
                apica = api.ca.display(),
                name = NAMES[i],
            );
            if self.appliance {
                let unpack = common::appliance::unpack_dir(c);
                std::fs::create_dir_all(&unpack).unwrap();
                config = config.replace(
                    "[install]\n",
                    &format!(
                        "[install]\nkind = \"appliance\"\nvamicli = \"{d}/bin/vamicli\"\nunpack_dir = \"{}\"\n",
                        unpack.display()
                    ),
                );
                config.push_str(&format!(
                    "[maintain]\nreboot_command = [\"{d}/bin/systemctl\", \"reboot\"]\nboot_id_file = \"{d}/sim/boot_id\"\nservice_wait = \"20s\"\n"
                ));
            }
            std::fs::write(&c.config, config).unwrap();
            inv.push_str(&format!(
                "    {name}:\n      ansible_connection: local\n      ansible_python_interpreter: {py}\n      \
                 cellctl_binary: {bin}\n      cellctl_config: {cfg}\n      cellctl_package: {pkg}\n",
                name = NAMES[i],
                py = python.display(),
                bin = common::cellctl_bin().display(),
                cfg = c.config.display(),
                pkg = pkg.display(),
            ));
        }
        self.inventory = self.tmp.path().join("inventory.yml");
        std::fs::write(&self.inventory, inv).unwrap();
    }

    fn collections(&self) -> PathBuf {
        self.tmp.path().join("collections")
    }

    /// As README says: `ansible-galaxy collection install ./ansible`.
    fn install_collection(&self) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible");
        let out = self
            .ansible_cmd("ansible-galaxy")
            .args(["collection", "install", "--force", "-p"])
            .arg(self.collections())
            .arg(src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ansible-galaxy collection install: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn log_path(&self) -> PathBuf {
        self.tmp.path().join("ansible.log")
    }

    fn ansible_cmd(&self, program: &str) -> Command {
        let mut c = Command::new(self.ansible.join(program));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CELLCTL_") || k.to_string_lossy().starts_with("ANSIBLE_") {
                c.env_remove(k);
            }
        }
        let home = self.tmp.path().join("ansible-home");
        c.env("ANSIBLE_HOME", &home)
            .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
            .env("ANSIBLE_REMOTE_TEMP", home.join("remote-tmp"))
            .env("ANSIBLE_COLLECTIONS_PATH", self.collections())
            .env("ANSIBLE_LOG_PATH", self.log_path())
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_LOCALHOST_WARNING", "false")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "false")
            .stdin(std::process::Stdio::null());
        c
    }

    /// `ansible-playbook -v -i inventory.yml cellctl.vcd.upgrade_group [extra]`.
    fn play(&self, extra: &[&str]) -> Played {
        let out = self
            .ansible_cmd("ansible-playbook")
            .arg("-v")
            .arg("-i")
            .arg(&self.inventory)
            .arg("cellctl.vcd.upgrade_group")
            .args(extra)
            .output()
            .unwrap();
        let text = format!(
            "--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The password appears nowhere: not in Ansible's output, not in its log.
        assert_no_password_in(&text, "ansible-playbook's output");
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        assert!(!log.is_empty(), "ANSIBLE_LOG_PATH was not written");
        assert_no_password_in(&log, "ANSIBLE_LOG_PATH");
        for (c, _) in &self.cells {
            assert_no_password_in(&c.state_files_text(), "a cell's cellctl state directory");
            c.assert_no_leak_to_tools();
        }
        Played {
            code: out.status.code().unwrap_or(-1),
            out: text,
        }
    }

    fn timeline(&self) -> Timeline {
        Timeline::of_group(&self.groupdir)
    }

    fn cell(&self, name: &str) -> &Cell {
        &self.cells[NAMES.iter().position(|n| *n == name).unwrap()].0
    }
}

/// What each appliance's host and its shipped unit do after its reboot, played from a thread
/// while the playbook runs: when the simulator's timeline records a cell's reboot (requested
/// through the service manager stand-in), the host boots (`cellsim boot DIR`: a new boot id,
/// the service started by the service manager) and cellctl-continue.service runs
/// `cellctl maintain --continue --at-boot`. On a real appliance both happen by themselves.
struct Boots {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Continued>>>,
}

/// One continuation after a boot: the cell, cellctl's exit code and its JSON document.
#[derive(Debug)]
struct Continued {
    cell: String,
    code: i32,
    doc: serde_json::Value,
}

impl Group {
    fn play_boots(&self) -> Boots {
        let cells: Vec<(String, PathBuf, PathBuf)> = NAMES
            .iter()
            .zip(&self.cells)
            .map(|(n, (c, _))| (n.to_string(), c.dir.clone(), c.config.clone()))
            .collect();
        let groupdir = self.groupdir.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        // Reboots already on the timeline (an earlier play's) were played then.
        let before = Timeline::of_group(&groupdir);
        let mut played: Vec<usize> = cells
            .iter()
            .map(|(name, _, _)| before.of(name).iter().filter(|e| e.event == "reboot").count())
            .collect();
        let thread = std::thread::spawn(move || {
            let mut done = vec![];
            loop {
                // Read before the stop flag: a reboot recorded before the play ended is played.
                let last_round = stopped.load(Ordering::SeqCst);
                let t = Timeline::of_group(&groupdir);
                for (i, (name, dir, config)) in cells.iter().enumerate() {
                    let reboots = t.of(name).iter().filter(|e| e.event == "reboot").count();
                    if reboots <= played[i] {
                        continue;
                    }
                    played[i] = reboots;
                    let out = Command::new(common::cellsim_bin())
                        .arg("boot")
                        .arg(dir)
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "cellsim boot: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let mut c = Command::new(common::cellctl_bin());
                    for (k, _) in std::env::vars_os() {
                        if k.to_string_lossy().starts_with("CELLCTL_") {
                            c.env_remove(k);
                        }
                    }
                    let out = c
                        .arg("--config")
                        .arg(config)
                        .args(["--json", "maintain", "--continue", "--at-boot"])
                        .output()
                        .unwrap();
                    done.push(Continued {
                        cell: name.clone(),
                        code: out.status.code().unwrap_or(-1),
                        doc: serde_json::from_slice(&out.stdout).unwrap_or_default(),
                    });
                }
                if last_round {
                    return done;
                }
                // The next look at the timeline; the play's own waits have deadlines.
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Boots {
            stop,
            thread: Some(thread),
        }
    }
}

impl Boots {
    /// The continuations played, once the play has ended.
    fn finish(mut self) -> Vec<Continued> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("the boot player failed")
    }
}

impl Drop for Boots {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The vendor's order, from the simulator's records of the whole group.
fn assert_vendor_order(t: &Timeline) {
    // The database tool ran exactly once, and changed the schema once.
    let calls = t.calls("upgrade");
    assert_eq!(calls.len(), 1, "database tool runs: {calls:#?}");
    assert_eq!(
        t.named("db_upgrade").len(),
        1,
        "schema changes: {:#?}",
        t.named("db_upgrade")
    );
    let call = calls[0];
    let (from, to) = (call.detail["started_ms"].as_u64().unwrap(), call.at_ms);
    assert_eq!(call.detail["exit_code"], 0, "the database tool failed: {call:?}");
    // At a moment no cell's service ran: at its start and at every event while it ran.
    for at in std::iter::once(from).chain(t.iter().filter(|e| e.at_ms >= from && e.at_ms <= to).map(|e| e.at_ms)) {
        assert!(
            t.running_at(at).is_empty(),
            "cells running at {at} during the database upgrade: {:?}",
            t.running_at(at)
        );
    }
    // No cell started between its install and the database upgrade.
    for cell in t.cells() {
        let installed: Vec<u64> = t
            .of(&cell)
            .iter()
            .filter(|e| e.event == "installed")
            .map(|e| e.at_ms)
            .collect();
        assert_eq!(installed.len(), 1, "{cell}: installs {installed:?}");
        let early = t
            .of(&cell)
            .into_iter()
            .find(|e| e.event == "service_started" && e.at_ms > installed[0] && e.at_ms < from);
        assert!(
            early.is_none(),
            "{cell} started after its install, before the database upgrade: {early:?}"
        );
    }
    // Until the last cell was drained, at least one cell served: the one outage of the group
    // begins only once every cell has been taken out of service (its first quiesce), and ends.
    let last_drain = t
        .cells()
        .iter()
        .map(|c| {
            t.of(c)
                .iter()
                .find(|e| e.event == "quiesced" || e.event == "maintenance_on")
                .map(|e| e.at_ms)
        })
        .map(|at| at.expect("every cell was drained"))
        .max()
        .unwrap();
    let outages = t.outages();
    assert_eq!(outages.len(), 1, "outages: {outages:?}");
    assert!(
        outages[0].0 >= last_drain,
        "no cell served from {} before the last drain at {last_drain}",
        outages[0].0
    );
    assert!(
        outages[0].1.is_some_and(|end| end > to),
        "the outage ends after the database upgrade: {outages:?}"
    );
}

/// Every cell healthy on the new version, as the simulator sees it.
fn assert_all_upgraded(g: &Group) {
    for (c, s) in &g.cells {
        let show = c.show();
        assert_eq!(show["version"], NEW, "{show}");
        assert_eq!(show["service"], "running", "{show}");
        assert_eq!(show["cell"], "up", "{show}");
        let health = std::process::Command::new("curl")
            .args(["-fsS", "--cacert"])
            .arg(&s.ca)
            .arg(s.health_url())
            .output();
        if let Ok(h) = health {
            assert_eq!(
                String::from_utf8_lossy(&h.stdout).trim(),
                "Service is up.",
                "{}",
                s.health_url()
            );
        }
    }
}

#[test]
fn a_three_cell_group_is_upgraded_in_the_vendors_order() {
    let Some(ansible) = ansible_bin() else { return };
    let g = Group::new(ansible, [OLD; 3]);
    let p = g.play(&[]);
    assert_eq!(p.code, 0, "{}", p.out);
    assert_vendor_order(&g.timeline());
    assert_all_upgraded(&g);
    assert!(p.out.contains("\"outage\""), "the summary names the outage: {}", p.out);
    // Rerunning on the upgraded group converges: nothing is drained, installed or upgraded again.
    let again = g.play(&[]);
    assert_eq!(again.code, 0, "{}", again.out);
    let t = g.timeline();
    for (event, n) in [("quiesced", 3), ("installed", 3), ("db_upgrade", 1), ("shut_down", 3)] {
        assert_eq!(
            t.named(event).len(),
            n,
            "a rerun on the upgraded group: {event}: {t:#?}"
        );
    }
    assert_eq!(t.calls("upgrade").len(), 1);
    assert_all_upgraded(&g);
}

#[test]
fn a_failed_install_stops_the_play_and_a_rerun_after_the_fix_converges() {
    let Some(ansible) = ansible_bin() else { return };
    let g = Group::new(ansible, [OLD; 3]);
    g.cell("cell2").sim(&["fault", "installer-fail"]);
    let p = g.play(&[]);
    assert_ne!(p.code, 0, "{}", p.out);
    assert!(
        p.out.contains("No space left on device"),
        "the installer's error is shown: {}",
        p.out
    );
    let t = g.timeline();
    // Stopped where it failed: cell1 installed, cell2's installer failed, cell3 still serving,
    // no database upgrade, no start.
    assert_eq!(
        t.named("installed").iter().map(|e| e.cell.as_str()).collect::<Vec<_>>(),
        ["cell1"]
    );
    assert!(
        t.calls("installer")
            .iter()
            .any(|e| e.cell == "cell2" && e.detail["exit_code"] == 1)
    );
    assert!(
        t.calls("upgrade").is_empty() && t.named("service_started").is_empty(),
        "{t:#?}"
    );
    assert_eq!(t.serving_at(u64::MAX), ["cell3"]);
    // The play printed every cell's state.
    for name in NAMES {
        assert!(
            p.out.contains(&format!("\"cell\": \"{name}\"")),
            "{name}'s state: {}",
            p.out
        );
    }
    // The cause fixed, the rerun (consenting to run the failed installer again) converges.
    g.cell("cell2").sim(&["fault", "clear"]);
    let again = g.play(&["-e", "cellctl_retry_install=true"]);
    assert_eq!(again.code, 0, "{}", again.out);
    let t = g.timeline();
    assert_vendor_order(&t);
    assert_eq!(
        t.calls("installer").iter().filter(|e| e.cell == "cell1").count(),
        1,
        "cell1 installed once"
    );
    assert_all_upgraded(&g);
}

#[test]
fn a_group_of_mixed_versions_is_refused_before_any_change() {
    let Some(ansible) = ansible_bin() else { return };
    let g = Group::new(ansible, ["10.4.0", OLD, OLD]);
    let p = g.play(&[]);
    assert_ne!(p.code, 0, "{}", p.out);
    assert!(
        p.out.contains("group_versions") || p.out.contains("preflight refused"),
        "{}",
        p.out
    );
    // Nothing changed on any cell: the timeline holds only their creation, and no tool call
    // that changes a cell was made.
    let t = g.timeline();
    let changes: Vec<_> = t.iter().filter(|e| e.event != "created").collect();
    assert!(changes.is_empty(), "changes: {changes:#?}");
    for (c, _) in &g.cells {
        for i in c.invocations() {
            let argv = i["argv"].to_string();
            for word in ["--quiesce", "--shutdown", "maintenance", "\"stop\"", "\"start\"", "-m"] {
                assert!(!argv.contains(word), "a changing call: {i}");
            }
            assert!(
                i["tool"] != "installer" && i["tool"] != "upgrade",
                "a changing call: {i}"
            );
        }
    }
}

/// The appliances' order, from the simulator's group timeline: besides the vendor's order,
/// no appliance's service came up (its boot included) before the database upgrade ended,
/// none was refused a start, and each was rebooted exactly once, after the database upgrade,
/// and booted once after that.
fn assert_appliance_order(t: &Timeline) {
    assert_vendor_order(t);
    let db_end = t.calls("upgrade")[0].at_ms;
    let first_install = t.named("installed").iter().map(|e| e.at_ms).min().unwrap();
    for e in t.iter().filter(|e| e.at_ms >= first_install) {
        if ["service_started", "boot", "cell_up"].contains(&e.event.as_str()) {
            assert!(
                e.at_ms > db_end,
                "{} before the database upgrade ended at {db_end}: {e:?}",
                e.event
            );
        }
    }
    assert!(t.named("start_refused").is_empty(), "{:#?}", t.named("start_refused"));
    for cell in NAMES {
        let of = t.of(cell);
        let reboots: Vec<u64> = of.iter().filter(|e| e.event == "reboot").map(|e| e.at_ms).collect();
        let boots: Vec<u64> = of.iter().filter(|e| e.event == "boot").map(|e| e.at_ms).collect();
        assert_eq!(reboots.len(), 1, "{cell} rebooted once: {of:#?}");
        assert_eq!(boots.len(), 1, "{cell} booted once: {of:#?}");
        assert!(db_end < reboots[0] && reboots[0] <= boots[0], "{cell}: {of:#?}");
    }
}

#[test]
fn a_group_of_three_appliances_is_upgraded_with_a_reboot_in_place_of_the_start() {
    let Some(ansible) = ansible_bin() else { return };
    let g = Group::appliances(ansible);
    let fast = [
        "-e",
        "cellctl_boot_delay=1",
        "-e",
        "cellctl_boot_retries=120",
        "-e",
        "cellctl_boot_timeout=120",
    ];
    let boots = g.play_boots();
    let p = g.play(&fast);
    let continued = boots.finish();
    assert_eq!(p.code, 0, "{}\ncontinuations: {continued:#?}", p.out);
    // One continuation per appliance, each finishing its run: started, healthy, version checked.
    let mut cells: Vec<&str> = continued.iter().map(|c| c.cell.as_str()).collect();
    cells.sort_unstable();
    assert_eq!(cells, NAMES, "{continued:#?}");
    for c in &continued {
        assert_eq!(c.code, 0, "{c:#?}");
        assert_eq!(c.doc["command"], "start", "{c:#?}");
        assert_eq!(c.doc["outcome"], "started", "{c:#?}");
        assert_eq!(c.doc["cell_left"], "running", "{c:#?}");
    }
    let t = g.timeline();
    assert_appliance_order(&t);
    assert_all_upgraded(&g);
    for (c, _) in &g.cells {
        let show = c.show();
        assert_eq!(show["appliance"]["reboot_required"], false, "{show}");
        assert_eq!(show["appliance"]["installs"].as_array().unwrap().len(), 1, "{show}");
        assert!(
            common::appliance::folders(&common::appliance::unpack_dir(c)).is_empty(),
            "the unpacked update is removed"
        );
        assert!(c.current().is_none(), "no run left recorded");
    }
    assert!(p.out.contains("\"outage\""), "the summary names the outage: {}", p.out);
    // A rerun on the upgraded group converges: no drain, install, database upgrade or reboot.
    let boots = g.play_boots();
    let again = g.play(&fast);
    let continued = boots.finish();
    assert_eq!(again.code, 0, "{}", again.out);
    assert!(continued.is_empty(), "{continued:#?}");
    let t = g.timeline();
    for (event, n) in [
        ("quiesced", 3),
        ("installed", 3),
        ("db_upgrade", 1),
        ("reboot", 3),
        ("boot", 3),
    ] {
        assert_eq!(
            t.named(event).len(),
            n,
            "a rerun on the upgraded group: {event}: {t:#?}"
        );
    }
    assert_all_upgraded(&g);
}
