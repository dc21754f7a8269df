//! `cellctl install` and `upgrade` against a REAL systemd: PID 1 of private namespaces
//! (tests/support/systemd_ns.rs). cellctl runs inside the namespace, so its `systemd-run`
//! reaches that systemd; the cell and its service (`vmware-vcd`, driven through the simulator's
//! `bin/systemctl`) are simulated by cellsim, while the installer's transient unit and, in the
//! `shipped_*` tests, `systemd/cellctl-upgrade.service` itself (plus a test drop-in) are real.
//! tests/upgrade.rs runs the same scenarios against the simulator's systemd-run stand-in.
//!
//! Where the namespace cannot be made, every test prints `SKIPPED: ...` and returns;
//! `CELLCTL_REQUIRE_SYSTEMD=1` makes that a failure.

#[path = "support/systemd_ns.rs"]
mod systemd_ns;

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Cell, Run, Served, cellctl_bin, step_status};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use systemd_ns::{Options, SystemdNs, wait_for};

const OLD: &str = "10.5.1";
const NEW: &str = "10.6.0";
/// Deadline for anything awaited (a loaded 2-core CI machine runs several namespaces at once).
const WAIT: Duration = Duration::from_secs(120);
/// Deadline for a whole cellctl run or `systemctl start`, so a hang fails the test instead of
/// blocking it forever.
const RUN_LIMIT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A simulated cell at version OLD (running unless `--stopped` is among `extra`).
fn cell(extra: &[&str]) -> Cell {
    let mut args = vec!["--quiesce-delay", "200ms", "--version", OLD];
    args.extend_from_slice(extra);
    Cell::new(&args)
}

/// Boot systemd with the cell's temp dir (cell, packages, state, config) visible inside, or
/// report the skip.
fn boot(c: &Cell, units: Option<&Path>) -> Option<SystemdNs> {
    let mut options = Options::new().share(c.tmp.path());
    // The checkout (shipped units, README) and the built binaries may themselves lie under /tmp
    // (a CI clone, say), which is private inside: make them visible wherever they are.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    options = options.share(repo);
    let bin_dir = cellctl_bin().parent().expect("binary dir").to_path_buf();
    if !bin_dir.starts_with(repo) {
        options = options.share(bin_dir);
    }
    if let Some(dir) = units {
        options = options.units_dir(dir);
    }
    let ns = options.boot_or_skip()?;
    eprintln!("systemd namespace booted in {:?}", ns.boot_time());
    Some(ns)
}

/// The config `Cell::upgrade_cmd` writes (fast health polling), with this install timeout.
fn write_config(c: &Cell, install_timeout: &str, extra: &str) {
    fs::write(
        &c.config,
        format!(
            "[health]\ninterval = \"100ms\"\nrequest_timeout = \"2s\"\n[install]\ntimeout = \"{install_timeout}\"\n{extra}"
        ),
    )
    .unwrap();
}

/// The environment `Cell::cellctl` gives cellctl: nothing of the host's `CELLCTL_*` or systemd
/// credentials, no redundancy guard, task listing pointed at a closed port (https: cellctl
/// refuses plain http).
fn isolate_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CELLCTL_") || k == "CREDENTIALS_DIRECTORY" || k == "JOURNAL_STREAM" {
            cmd.env_remove(k);
        }
    }
    cmd.env("CELLCTL_SKIP_REDUNDANCY_GUARD", "1")
        .env("CELLCTL_API_URL", "https://127.0.0.1:9");
}

/// The global options `Cell::upgrade_cmd` gives cellctl, with the real `systemd-run` (found on
/// PATH inside the namespace) and the simulator's service-manager stand-in for `vmware-vcd`.
fn cellctl_args(c: &Cell, served: Option<&Served>) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--vcd-home".into(),
        c.dir.clone().into(),
        "--systemctl".into(),
        c.dir.join("bin/systemctl").into(),
        "--password-file".into(),
        c.pwfile.clone().into(),
        "--state-dir".into(),
        c.state.clone().into(),
        "--config".into(),
        c.config.clone().into(),
        "--systemd-run".into(),
        "systemd-run".into(),
        "--version-command".into(),
        c.dir.join("bin/vcd-version").into(),
    ];
    if let Some(s) = served {
        a.push("--health-url".into());
        a.push(s.health_url().into());
        a.push("--health-ca-file".into());
        a.push(s.ca.clone().into());
    }
    a
}

/// `cellctl` run inside the namespace, wired to the cell.
fn cellctl_in(ns: &SystemdNs, c: &Cell, served: Option<&Served>) -> Command {
    let mut cmd = ns.command(cellctl_bin());
    isolate_env(&mut cmd);
    cmd.args(cellctl_args(c, served)).stdin(Stdio::null());
    cmd
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning a command inside the namespace")
}

fn read_all(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Wait for a spawned command, at most `limit` (then panic: dropping the namespace kills what
/// is left inside).
fn finish(mut child: Child, limit: Duration, what: &str) -> Output {
    let out = read_all(child.stdout.take().expect("piped stdout"));
    let err = read_all(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not end within {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn run_within(cmd: &mut Command, what: &str) -> Output {
    finish(spawn(cmd), RUN_LIMIT, what)
}

fn run_cellctl(cmd: &mut Command) -> Run {
    Run::from(run_within(cmd, "cellctl"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

fn describe(o: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn describe_run(r: &Run) -> String {
    format!("exit {}\n--- stdout\n{}\n--- stderr\n{}", r.code, r.stdout, r.stderr)
}

/// `systemctl show -p <props> <unit>` inside, as a map.
fn show(ns: &SystemdNs, unit: &str, props: &str) -> BTreeMap<String, String> {
    let out = ns.output("systemctl", ["show", "-p", props, unit]);
    assert!(out.status.success(), "systemctl show {unit}: {}", describe(&out));
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn prop(ns: &SystemdNs, unit: &str, name: &str) -> String {
    show(ns, unit, name).remove(name).unwrap_or_default()
}

/// `--collect` unloads the unit in systemd's event loop, just after `systemd-run --wait` returns.
fn wait_collected(ns: &SystemdNs, unit: &str) {
    wait_for(WAIT, &format!("{unit} to be collected (LoadState=not-found)"), || {
        prop(ns, unit, "LoadState") == "not-found"
    });
    let listed = ns.output("systemctl", ["list-units", "--all", "--no-legend", "--plain", unit]);
    assert_eq!(text(&listed.stdout), "", "{unit} still listed: {}", describe(&listed));
}

/// Is journald running in the namespace (the harness starts it)? Journal checks need it; when
/// systemd is required (`CELLCTL_REQUIRE_SYSTEMD=1`, CI as root) their skip is a failure.
fn journald_runs(ns: &SystemdNs) -> bool {
    let active = text(&ns.output("systemctl", ["is-active", "systemd-journald.service"]).stdout) == "active";
    if !active {
        assert!(
            !systemd_ns::require_systemd(),
            "{}=1 but journald is not running in the namespace: the journal checks would be skipped\n{}",
            systemd_ns::REQUIRE_ENV,
            ns.log()
        );
        eprintln!("NOTE: journald is not running in the namespace: journal checks skipped");
    }
    active
}

/// Everything in the namespace's journal, every field of every entry: the password (in either
/// form) must be in none of it. The tests strip `JOURNAL_STREAM` elsewhere, so only these
/// real-systemd tests see what cellctl and its units log there.
fn assert_journal_has_no_password(ns: &SystemdNs) {
    let out = ns.output("journalctl", ["--no-pager", "-o", "verbose"]);
    assert!(out.status.success(), "journalctl -o verbose: {}", describe(&out));
    let all = String::from_utf8_lossy(&out.stdout);
    assert!(!all.trim().is_empty(), "the journal is empty: nothing was scanned");
    common::assert_no_password_in(&all, "the journal");
}

/// README's command for the run's JSON document (`journalctl -u cellctl-upgrade.service ...`),
/// without its comment.
fn readme_journalctl_command() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    readme
        .lines()
        .find(|l| l.starts_with("journalctl -u cellctl-upgrade.service"))
        .expect("README documents a journalctl command")
        .split(" #")
        .next()
        .unwrap()
        .trim()
        .to_string()
}

fn journal(ns: &SystemdNs, args: &[&str]) -> String {
    let out = ns.output("journalctl", [&["--no-pager", "-o", "cat"][..], args].concat());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Poll the journal of `unit` until it holds every one of `needles`.
fn wait_journal_has(ns: &SystemdNs, unit: &str, needles: &[&str]) {
    let mut seen = String::new();
    let found = poll(WAIT, || {
        seen = journal(ns, &["-u", unit]);
        needles.iter().all(|n| seen.contains(n))
    });
    assert!(
        found,
        "journalctl -u {unit} lacks one of {needles:?} after {WAIT:?}:\n{seen}"
    );
}

/// Poll `check` every 50 ms until it is true (true) or `timeout` passes (false).
fn poll(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The recorded run's install unit (`cellctl-install-<run id>.service`), once recorded.
fn recorded_unit(c: &Cell) -> Option<String> {
    let cur = c.current()?;
    let unit = cur["upgrade"]["install_unit"].as_str()?;
    Some(format!("{unit}.service"))
}

/// Wait until the recorded run's install unit is active, failing early if cellctl ends first.
/// Returns the unit (with `.service`).
fn wait_unit_active(ns: &SystemdNs, c: &Cell, cellctl: &mut Child) -> String {
    let mut unit = String::new();
    wait_for(WAIT, "the install's transient unit to be active", || {
        if let Some(st) = cellctl.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = cellctl.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("cellctl ended ({st}) before its install unit was seen active:\n{err}");
        }
        match recorded_unit(c) {
            Some(u) => {
                unit = u;
                prop(ns, &unit, "ActiveState") == "active"
            }
            None => false,
        }
    });
    unit
}

/// The cellctl process inside the namespace (not the `run-logged` wrapper in the unit).
fn cellctl_process(ns: &SystemdNs, subcommand: &str) -> Vec<systemd_ns::NsProcess> {
    let bin = cellctl_bin().display().to_string();
    ns.processes()
        .into_iter()
        .filter(|p| {
            p.cmdline.starts_with(&format!("{bin} "))
                && !p.cmdline.contains(" run-logged ")
                && p.cmdline.split(' ').any(|a| a == subcommand)
        })
        .collect()
}

/// What the wrapper recorded when the installer ended (`STATE_DIR/units/<unit>.status`).
fn unit_status(c: &Cell, unit: &str) -> Option<Value> {
    let name = unit.trim_end_matches(".service");
    let t = fs::read_to_string(c.state.join("units").join(format!("{name}.status"))).ok()?;
    serde_json::from_str(&t).ok()
}

fn installer_runs(c: &Cell) -> Vec<Value> {
    c.invocations()
        .into_iter()
        .filter(|i| i["tool"] == "installer")
        .collect()
}

fn str_of<'a>(doc: &'a Value, ptr: &str) -> &'a str {
    doc.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{ptr} missing or not a string in {doc}"))
}

/// The `0::/path` line of a host process's `/proc/<pid>/cgroup` (seen from the host).
fn cgroup_of(host_pid: i32) -> String {
    fs::read_to_string(format!("/proc/{host_pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_string()
}

/// Parent PID (inside the namespace) of a process given by its PID inside.
fn ppid_inside(ns: &SystemdNs, pid: &str) -> String {
    let stat = fs::read_to_string(ns.path(format!("/proc/{pid}/stat"))).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string()
}

/// The host's mount points (this process's mount namespace).
fn host_mount_points() -> BTreeSet<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(String::from)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn install_runs_in_a_real_transient_unit() {
    let started = Instant::now();
    let c = cell(&["--stopped"]);
    let pkg = c.package(NEW, "ok", &["--install-time", "3s"]);
    write_config(&c, "60s", "");
    let Some(ns) = boot(&c, None) else { return };

    let mut child = spawn(cellctl_in(&ns, &c, None).args(["--json", "install"]).arg(&pkg));
    let unit = wait_unit_active(&ns, &c, &mut child);

    // While it runs: a real unit of the namespace's PID 1, in its own cgroup, not cellctl's.
    let props = show(&ns, &unit, "ActiveState,LoadState,ControlGroup,MainPID,Description");
    assert_eq!(props["ActiveState"], "active", "{props:?}");
    assert_eq!(props["LoadState"], "loaded", "{props:?}");
    assert_eq!(props["ControlGroup"], format!("/system.slice/{unit}"), "{props:?}");
    assert!(props["Description"].contains("cellctl install"), "{props:?}");
    let main_pid = &props["MainPID"];
    let main_cmdline = fs::read(ns.path(format!("/proc/{main_pid}/cmdline"))).unwrap_or_default();
    let main_cmdline = String::from_utf8_lossy(&main_cmdline).replace('\0', " ");
    assert!(
        main_cmdline.contains("run-logged") && main_cmdline.contains(&pkg.display().to_string()),
        "the unit's main process is cellctl's wrapper running the package: {main_cmdline}"
    );
    assert_eq!(
        ppid_inside(&ns, main_pid),
        "1",
        "the wrapper is a child of PID 1, not of cellctl"
    );

    let cellctl = cellctl_process(&ns, "install");
    assert_eq!(cellctl.len(), 1, "one cellctl process inside: {cellctl:?}");
    // The wrapper starts the installer just after the unit became active.
    let mut installer = None;
    wait_for(WAIT, "the installer process", || {
        installer = ns
            .processes()
            .into_iter()
            .find(|p| p.cmdline.contains(" installer kind=ok"));
        installer.is_some()
    });
    let installer = installer.unwrap();
    let unit_procs: Vec<i32> = fs::read_to_string(
        ns.cgroup()
            .unwrap()
            .join("system.slice")
            .join(&unit)
            .join("cgroup.procs"),
    )
    .unwrap_or_else(|e| panic!("the unit's cgroup.procs: {e}"))
    .split_whitespace()
    .map(|p| p.parse().unwrap())
    .collect();
    assert!(
        unit_procs.len() >= 2,
        "the wrapper and the installer run in the unit's cgroup: {unit_procs:?}"
    );
    assert!(
        !unit_procs.contains(&cellctl[0].host_pid),
        "cellctl itself is not in the unit's cgroup"
    );
    assert!(
        unit_procs.contains(&installer.host_pid),
        "the installer {installer:?} is in the unit's cgroup {unit_procs:?}"
    );
    assert!(
        cgroup_of(installer.host_pid).ends_with(&format!("/system.slice/{unit}")),
        "installer cgroup: {}",
        cgroup_of(installer.host_pid)
    );
    assert!(
        !cgroup_of(cellctl[0].host_pid).contains(&unit),
        "cellctl's cgroup: {}",
        cgroup_of(cellctl[0].host_pid)
    );

    let r = Run::from(finish(child, RUN_LIMIT, "cellctl install"));
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "installed", "{}", describe_run(&r));
    assert_eq!(
        format!("{}.service", str_of(&doc, "/upgrade/install_unit")),
        unit,
        "the report names the unit"
    );
    assert_eq!(
        str_of(&doc, "/upgrade/install_unit"),
        format!("cellctl-install-{}", str_of(&doc, "/run_id"))
    );
    assert_eq!(doc["upgrade"]["version_after"], NEW);
    let tail = str_of(&doc, "/upgrade/installer_tail");
    for want in [
        "Installing VMware Cloud Director",
        "[100%]",
        &format!("VMware Cloud Director {NEW} build"),
        "has been installed",
        "You can run the configuration script later",
    ] {
        assert!(tail.contains(want), "installer_tail lacks {want:?}:\n{tail}");
    }
    assert_eq!(c.show()["version"], NEW);
    assert_eq!(c.show()["service"], "stopped", "install does not start the cell");
    assert_eq!(unit_status(&c, &unit).expect("the wrapper's status file")["code"], 0);

    // The installer's output reached the journal, under the unit.
    if journald_runs(&ns) {
        wait_journal_has(
            &ns,
            &unit,
            &["Installing VMware Cloud Director", "has been installed", "[ 60%]"],
        );
        assert_journal_has_no_password(&ns);
    }
    wait_collected(&ns, &unit);
    assert_eq!(installer_runs(&c).len(), 1);
    eprintln!("install_runs_in_a_real_transient_unit: {:?}", started.elapsed());
}

#[test]
fn killing_cellctl_mid_install_does_not_stop_the_unit_and_rerun_learns_the_result() {
    let started = Instant::now();
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &["--install-time", "4s"]);
    write_config(&c, "60s", "");
    let Some(ns) = boot(&c, None) else { return };

    let mut child = spawn(
        cellctl_in(&ns, &c, Some(&served))
            .args(["upgrade", "--poll-interval", "100ms"])
            .arg(&pkg),
    );
    let unit = wait_unit_active(&ns, &c, &mut child);
    let run_id = c.current().unwrap()["run_id"].as_str().unwrap().to_string();

    let victims = cellctl_process(&ns, "upgrade");
    assert_eq!(victims.len(), 1, "one cellctl process inside: {victims:?}");
    kill(Pid::from_raw(victims[0].host_pid), Signal::SIGKILL).unwrap();
    let out = finish(child, WAIT, "the killed cellctl's nsenter");
    assert!(
        !out.status.success(),
        "the killed run does not succeed: {}",
        describe(&out)
    );
    assert!(cellctl_process(&ns, "upgrade").is_empty(), "cellctl is gone");

    // The unit runs on: still active, or (on a very slow machine) already finished by itself.
    let state = prop(&ns, &unit, "ActiveState");
    assert!(
        state == "active" || unit_status(&c, &unit).is_some_and(|s| s["code"] == 0),
        "{unit} was stopped with cellctl: ActiveState={state}, status={:?}",
        unit_status(&c, &unit)
    );
    // ... and ends on its own, successfully (a stop would have recorded signal 15).
    wait_for(WAIT, "the unit's wrapper to record the installer's result", || {
        unit_status(&c, &unit).is_some()
    });
    let status = unit_status(&c, &unit).unwrap();
    assert_eq!(status["code"], 0, "the installer finished normally: {status}");
    wait_collected(&ns, &unit);
    assert_eq!(c.show()["version"], NEW, "the unit installed the new version");
    assert_eq!(
        c.current().unwrap()["run_id"],
        run_id.as_str(),
        "the killed run stays recorded"
    );

    let r = run_cellctl(cellctl_in(&ns, &c, Some(&served)).args(["--json", "upgrade", "--poll-interval", "100ms"]));
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "upgraded", "{}", describe_run(&r));
    assert_eq!(doc["run_id"], run_id.as_str(), "the same run, resumed");
    assert_eq!(step_status(&doc, "install").as_deref(), Some("done"));
    assert!(
        str_of(&doc, "/upgrade/installer_tail").contains("has been installed"),
        "the rerun reports the installer's output: {}",
        doc["upgrade"]["installer_tail"]
    );
    let show = c.show();
    assert_eq!(show["version"], NEW);
    assert_eq!(show["cell"], "up");
    assert_eq!(show["healthy"], true);
    assert_eq!(installer_runs(&c).len(), 1, "one installer run, not two");
    assert!(c.current().is_none());
    eprintln!(
        "killing_cellctl_mid_install_does_not_stop_the_unit_and_rerun_learns_the_result: {:?}",
        started.elapsed()
    );
}

#[test]
fn failed_installer_unit_is_collected_and_reported() {
    let started = Instant::now();
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "fail", &[]);
    write_config(&c, "60s", "");
    let Some(ns) = boot(&c, None) else { return };

    let r = run_cellctl(
        cellctl_in(&ns, &c, Some(&served))
            .args(["--json", "upgrade", "--poll-interval", "100ms"])
            .arg(&pkg),
    );
    r.assert_code(21).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "failed", "{}", describe_run(&r));
    assert_eq!(doc["exit_code"], 21);
    assert_eq!(doc["cell_left"], "shut_down");
    assert_eq!(step_status(&doc, "install").as_deref(), Some("failed"));
    let unit = format!("{}.service", str_of(&doc, "/upgrade/install_unit"));
    // The exit status and the installer's own words reach the report.
    let message = str_of(&doc, "/error/message");
    for want in [
        "exit status 1",
        "cpio: Digest mismatch",
        "is still installed",
        &unit[..unit.len() - 8],
    ] {
        assert!(message.contains(want), "error message lacks {want:?}: {message}");
    }
    let tail = str_of(&doc, "/upgrade/installer_tail");
    for want in ["[ 40%]", "Error: unpacking of archive failed", "cpio: Digest mismatch"] {
        assert!(tail.contains(want), "installer_tail lacks {want:?}:\n{tail}");
    }
    assert!(!tail.contains("[ 60%]"), "{tail}");
    assert_eq!(unit_status(&c, &unit).expect("status file")["code"], 1);

    // The failed unit is collected, not left behind as "failed".
    wait_collected(&ns, &unit);
    let failed = ns.output("systemctl", ["list-units", "--failed", "--no-legend", "--plain"]);
    assert!(
        !text(&failed.stdout).contains("cellctl-install"),
        "{}",
        describe(&failed)
    );
    if journald_runs(&ns) {
        wait_journal_has(&ns, &unit, &["[ 40%]", "cpio: Digest mismatch"]);
        assert_journal_has_no_password(&ns);
    }
    assert_eq!(c.show()["version"], OLD);

    // A rerun does not retry the failed installer on its own...
    let again = run_cellctl(cellctl_in(&ns, &c, Some(&served)).args(["--json", "upgrade"]));
    again.assert_code(12);
    assert!(
        str_of(&again.json(), "/error/message").contains("--retry-install"),
        "{}",
        describe_run(&again)
    );
    assert_eq!(installer_runs(&c).len(), 1);
    // ...and with --retry-install the same unit name is free again (the failed unit was collected).
    let retry = run_cellctl(cellctl_in(&ns, &c, Some(&served)).args([
        "--json",
        "upgrade",
        "--retry-install",
        "--poll-interval",
        "100ms",
    ]));
    retry.assert_code(21);
    let doc = retry.json();
    assert!(
        str_of(&doc, "/error/message").contains("exit status 1"),
        "the retry ran the installer again rather than failing to start the unit: {}",
        describe_run(&retry)
    );
    assert_eq!(installer_runs(&c).len(), 2);
    wait_collected(&ns, &unit);
    eprintln!(
        "failed_installer_unit_is_collected_and_reported: {:?}",
        started.elapsed()
    );
}

#[test]
fn hanging_installer_is_stopped_by_runtime_max() {
    let started = Instant::now();
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "hang", &[]);
    write_config(&c, "3s", "");
    let Some(ns) = boot(&c, None) else { return };

    let t0 = Instant::now();
    let r = run_cellctl(
        cellctl_in(&ns, &c, Some(&served))
            .args(["--json", "upgrade", "--poll-interval", "100ms"])
            .arg(&pkg),
    );
    let took = t0.elapsed();
    r.assert_code(21).assert_no_secret();
    // systemd's RuntimeMaxSec=3 stopped it, not cellctl's own limit (install timeout + 90 s).
    assert!(took < Duration::from_secs(80), "the hanging install took {took:?}");
    let doc = r.json();
    assert_eq!(step_status(&doc, "install").as_deref(), Some("failed"));
    let unit = format!("{}.service", str_of(&doc, "/upgrade/install_unit"));
    let message = str_of(&doc, "/error/message");
    assert!(
        message.contains("did not finish within") && message.contains("[install] timeout"),
        "{message}"
    );
    assert!(
        str_of(&doc, "/upgrade/installer_tail").contains("Installing VMware Cloud Director"),
        "{}",
        doc["upgrade"]["installer_tail"]
    );
    let status = unit_status(&c, &unit).expect("the wrapper recorded the stop");
    assert_eq!(status["signal"], 15, "{status}");
    assert!(
        ns.log()
            .contains(&format!("{unit}: Service reached runtime time limit")),
        "PID 1 stopped the unit at RuntimeMaxSec:\n{}",
        ns.log()
    );

    wait_collected(&ns, &unit);
    assert!(
        !ns.processes()
            .iter()
            .any(|p| p.cmdline.contains(" installer kind=hang")),
        "the hanging installer is gone"
    );
    let inv = installer_runs(&c);
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0]["exit_code"], Value::Null, "it hung: {}", inv[0]);
    assert_eq!(c.show()["version"], OLD);
    eprintln!(
        "hanging_installer_is_stopped_by_runtime_max: {:?} (cellctl run {took:?})",
        started.elapsed()
    );
}

/// The drop-in adapting the shipped unit to the test cell: ExecStart and LoadCredential
/// replaced, StateDirectory cleared, one BindPaths= added (see its comment); all else as shipped.
fn test_drop_in(c: &Cell, served: &Served) -> String {
    let mut args: Vec<String> = cellctl_args(c, Some(served))
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // No `--password-file FILE`: the password comes in as the credential, as shipped.
    let i = args.iter().position(|a| a == "--password-file").unwrap();
    args.drain(i..i + 2);
    for a in &args {
        assert!(
            !a.contains(['%', '$', ' ', '"', '\'', '\\']),
            "{a:?} needs quoting in a unit file"
        );
    }
    format!(
        "# Test adaptations of the shipped cellctl-upgrade.service (tests/systemd_upgrade.rs).
[Service]
# The built binary, wired to the simulated cell (its state, config and health URL).
ExecStart=
ExecStart={bin} --json --skip-redundancy-guard --api-url https://127.0.0.1:9 {args} upgrade
# The test's password file instead of /etc/cellctl/vcd-password.
LoadCredential=
LoadCredential=vcd-password:{pw}
# No /var/lib/cellctl: the unit runs as root on the host's file system; state goes to --state-dir.
StateDirectory=
# Not a relaxation: PrivateTmp=yes stays, but the test cell lives in a temp dir under /tmp
# (a production cell is under /opt), which the private /tmp would hide; so may the built
# binaries (a checkout under /tmp). Bind them back in.
BindPaths={tmp}
BindPaths={bin_dir}
",
        bin = cellctl_bin().display(),
        bin_dir = cellctl_bin().parent().expect("binary dir").display(),
        args = args.join(" "),
        pw = c.pwfile.display(),
        tmp = c.tmp.path().display(),
    )
}

/// A cell, its health endpoint, a package, and the shipped units copied into a units dir with
/// the test drop-in; the package comes from the config, as the unit's comment says.
struct ShippedSetup {
    c: Cell,
    /// Serves the health endpoint until dropped.
    _served: Served,
    pkg: std::path::PathBuf,
    units: std::path::PathBuf,
}

fn shipped_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

fn shipped_setup(kind: &str) -> ShippedSetup {
    let c = cell(&["--jobs", "2", "--job-duration", "1s"]);
    let served = c.serve();
    let pkg = c.package(NEW, kind, &[]);
    write_config(
        &c,
        "60s",
        &format!(
            "[drain]\npoll_interval = \"100ms\"\n[upgrade]\npackage = \"{}\"\n",
            pkg.display()
        ),
    );
    let units = c.tmp.path().join("units");
    fs::create_dir_all(units.join("cellctl-upgrade.service.d")).unwrap();
    for name in ["cellctl-upgrade.service", "cellctl-upgrade.timer"] {
        fs::copy(shipped_dir().join(name), units.join(name)).unwrap();
    }
    fs::write(
        units.join("cellctl-upgrade.service.d/test.conf"),
        test_drop_in(&c, &served),
    )
    .unwrap();
    ShippedSetup {
        c,
        _served: served,
        pkg,
        units,
    }
}

/// Boot with the units dir, then make the namespace behave like a host for the shipped unit.
fn boot_for_shipped(s: &ShippedSetup) -> Option<SystemdNs> {
    let ns = boot(&s.c, Some(&s.units))?;
    // On a host PID 1 logs to the journal, where its "Starting/Finished/Deactivated" lines sit
    // beside the unit's own output (`journalctl -u`); the harness's PID 1 logs to the console.
    let out = ns.output("systemd-analyze", ["log-target", "journal"]);
    assert!(
        out.status.success(),
        "systemd-analyze log-target journal: {}",
        describe(&out)
    );
    Some(ns)
}

/// `systemctl start cellctl-upgrade.service` inside (it blocks: Type=oneshot).
fn start_shipped_unit(ns: &SystemdNs) -> (Output, Duration) {
    let t0 = Instant::now();
    let out = run_within(
        ns.command("systemctl").args(["start", "cellctl-upgrade.service"]),
        "systemctl start cellctl-upgrade.service",
    );
    (out, t0.elapsed())
}

/// The service's stdout lines in the journal (stdout carries only the JSON document; stderr
/// lines share the transport but cellctl logs natively under systemd).
fn unit_stdout_journal(ns: &SystemdNs) -> String {
    journal(ns, &["-u", "cellctl-upgrade.service", "_TRANSPORT=stdout"])
}

/// Wait until the last stdout line of the service's journal is the report `rep`.
fn assert_last_stdout_line_is(ns: &SystemdNs, rep: &Value) {
    let mut last = String::new();
    let found = poll(WAIT, || {
        last = unit_stdout_journal(ns).lines().last().unwrap_or_default().to_string();
        serde_json::from_str::<Value>(&last).is_ok_and(|v| &v == rep)
    });
    assert!(
        found,
        "the last stdout line of cellctl-upgrade.service's journal is not the run's report:\n\
         last line: {last}\nreport: {rep}\n--- journal\n{}",
        journal(ns, &["-u", "cellctl-upgrade.service"])
    );
}

/// `cellctl report --last --json` inside.
fn last_report(ns: &SystemdNs, c: &Cell) -> Value {
    let report = run_cellctl(cellctl_in(ns, c, None).args(["report", "--last", "--json"]));
    report.assert_code(0);
    report.json()
}

#[test]
fn shipped_units_load_and_run_an_upgrade() {
    let started = Instant::now();
    let shipped = shipped_dir();
    let s = shipped_setup("ok");
    let host_mounts = host_mount_points();
    let Some(ns) = boot_for_shipped(&s) else { return };
    let (c, units) = (&s.c, &s.units);

    // systemd-analyze verify, with the man page the package installs on MANPATH (verify runs
    // `man cellctl(1)` for Documentation=).
    let bin = cellctl_bin().display().to_string();
    let scratch = "/run/cellctl-test";
    let prep = ns.output(
        "sh",
        [
            "-c",
            &format!(
                "set -e; mkdir -p {scratch}/bin {scratch}/man/man1; ln -sf {bin} {scratch}/bin/cellctl; \
                 {bin} man {scratch}/man/man1"
            ),
        ],
    );
    assert!(prep.status.success(), "preparing verify: {}", describe(&prep));
    // 1. The shipped files themselves, unmodified and without the drop-in, with /usr/bin/cellctl
    //    present only in a mount namespace of this one command (an overlay over /usr/bin).
    let harness_units = ns.unit_path().rsplit(':').next().unwrap().to_string();
    let overlay = ns
        .output("grep", ["-qw", "overlay", "/proc/filesystems"])
        .status
        .success();
    if overlay {
        let script = format!(
            "mount -t overlay overlay -o lowerdir={scratch}/bin:/usr/bin /usr/bin && \
             exec systemd-analyze verify {svc} {timer}",
            svc = shipped.join("cellctl-upgrade.service").display(),
            timer = shipped.join("cellctl-upgrade.timer").display(),
        );
        let out = ns
            .command("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("SYSTEMD_UNIT_PATH", &harness_units)
            .env("MANPATH", format!("{scratch}/man"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success() && text(&out.stderr).is_empty(),
            "systemd-analyze verify on the shipped units: {}",
            describe(&out)
        );
    } else {
        assert!(
            !systemd_ns::require_systemd(),
            "{}=1 but the kernel has no overlayfs: the unmodified shipped units would not be verified",
            systemd_ns::REQUIRE_ENV
        );
        eprintln!("NOTE: no overlayfs: the shipped units are verified only with the test drop-in");
    }
    assert!(
        !ns.path("/usr/bin/cellctl").exists() && !Path::new("/usr/bin/cellctl").exists(),
        "the overlay stayed in its own mount namespace"
    );
    // 2. The units as run here: the copies plus the drop-in (ExecStart is the built binary;
    //    /usr/bin/cellctl does not exist, so this passes only with the drop-in applied).
    let out = ns
        .command("systemd-analyze")
        .args(["verify"])
        .arg(units.join("cellctl-upgrade.service"))
        .arg(units.join("cellctl-upgrade.timer"))
        .env("MANPATH", format!("{scratch}/man"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success() && text(&out.stderr).is_empty(),
        "systemd-analyze verify with the test drop-in: {}",
        describe(&out)
    );

    // Both load from the unit path; the drop-in is applied and nothing reaches /var/lib.
    let svc = show(
        &ns,
        "cellctl-upgrade.service",
        "LoadState,DropInPaths,StateDirectory,Type,PrivateTmp,ProtectSystem,NoNewPrivileges",
    );
    assert_eq!(svc["LoadState"], "loaded", "{svc:?}");
    assert!(
        svc["DropInPaths"].ends_with("cellctl-upgrade.service.d/test.conf"),
        "{svc:?}"
    );
    assert_eq!(
        svc["StateDirectory"], "",
        "no StateDirectory may reach the host: {svc:?}"
    );
    assert_eq!(svc["Type"], "oneshot");
    assert_eq!(
        (
            &svc["PrivateTmp"][..],
            &svc["ProtectSystem"][..],
            &svc["NoNewPrivileges"][..]
        ),
        ("yes", "full", "yes"),
        "hardening as shipped: {svc:?}"
    );
    let timer = show(&ns, "cellctl-upgrade.timer", "LoadState,Triggers,ActiveState");
    assert_eq!(timer["LoadState"], "loaded", "{timer:?}");
    assert_eq!(timer["Triggers"], "cellctl-upgrade.service", "{timer:?}");
    assert_eq!(timer["ActiveState"], "inactive", "not enabled or started: {timer:?}");

    // The orchestrator's view (README "From systemd, timers and orchestrators").
    let (out, took) = start_shipped_unit(&ns);
    assert!(
        out.status.success(),
        "systemctl start: {}\n--- journal\n{}\n--- systemd\n{}",
        describe(&out),
        journal(&ns, &["-u", "cellctl-upgrade.service"]),
        ns.log()
    );
    // A oneshot: `start` returned once the run was over. (After a success the inactive unit is
    // unloaded and `show` reads a fresh one: success/0 are then its defaults; a failure stays
    // loaded with the real values, see shipped_unit_failure_reaches_the_orchestrator.)
    let result = show(&ns, "cellctl-upgrade.service", "Result,ExecMainStatus,ActiveState");
    assert_eq!(result["Result"], "success", "{result:?}");
    assert_eq!(result["ExecMainStatus"], "0", "{result:?}");
    assert_eq!(result["ActiveState"], "inactive", "{result:?}");

    let show_cell = c.show();
    assert_eq!(show_cell["version"], NEW);
    assert_eq!(show_cell["service"], "running");
    assert_eq!(show_cell["cell"], "up");
    assert_eq!(show_cell["healthy"], true);
    assert_eq!(show_cell["in_maintenance"], false);
    assert_eq!(installer_runs(c).len(), 1);
    c.assert_no_leak_to_tools();

    let rep = last_report(&ns, c);
    assert_eq!(rep["command"], "upgrade", "{rep}");
    assert_eq!(rep["outcome"], "upgraded", "{rep}");
    assert_eq!(rep["exit_code"], 0);
    assert_eq!(rep["upgrade"]["version_after"], NEW);
    assert_eq!(rep["upgrade"]["package"]["path"], s.pkg.display().to_string());
    let install_unit = format!("{}.service", str_of(&rep, "/upgrade/install_unit"));
    wait_collected(&ns, &install_unit);

    if journald_runs(&ns) {
        // The installer's output is in its own unit's journal.
        wait_journal_has(&ns, &install_unit, &["has been installed"]);
        // The run's JSON document is the service's last line on stdout.
        assert_last_stdout_line_is(&ns, &rep);
        // README's command for it gives that very document (PID 1 logs to the journal here,
        // as on a host, so its lines are there too).
        let documented = readme_journalctl_command();
        let out = ns.output("sh", ["-c", documented.as_str()]);
        let readme_last = text(&out.stdout);
        assert!(
            serde_json::from_str::<Value>(&readme_last).is_ok_and(|v| v == rep),
            "README's `{documented}` gives: {readme_last}\n--- journal\n{}",
            journal(&ns, &["-u", "cellctl-upgrade.service"])
        );
        assert_journal_has_no_password(&ns);
    }
    assert_eq!(
        host_mount_points(),
        host_mounts,
        "the unit's mounts (credentials, PrivateTmp) stayed inside"
    );
    eprintln!(
        "shipped_units_load_and_run_an_upgrade: {:?} (systemctl start {took:?})",
        started.elapsed()
    );
}

/// README: "systemctl start ... non-zero if it failed; systemctl show -p Result -p
/// ExecMainStatus ... ExecMainStatus = cellctl's exit code".
#[test]
fn shipped_unit_failure_reaches_the_orchestrator() {
    let started = Instant::now();
    let s = shipped_setup("fail");
    let Some(ns) = boot_for_shipped(&s) else { return };
    let c = &s.c;

    let (out, took) = start_shipped_unit(&ns);
    assert_eq!(out.status.code(), Some(1), "systemctl start: {}", describe(&out));
    let result = show(&ns, "cellctl-upgrade.service", "Result,ExecMainStatus,ActiveState");
    assert_eq!(result["Result"], "exit-code", "{result:?}");
    assert_eq!(result["ExecMainStatus"], "21", "cellctl's exit code: {result:?}");
    assert_eq!(result["ActiveState"], "failed", "{result:?}");

    let rep = last_report(&ns, c);
    assert_eq!(rep["outcome"], "failed", "{rep}");
    assert_eq!(rep["exit_code"], 21);
    assert!(
        str_of(&rep, "/error/message").contains("cpio: Digest mismatch"),
        "{rep}"
    );
    let install_unit = format!("{}.service", str_of(&rep, "/upgrade/install_unit"));
    wait_collected(&ns, &install_unit);
    if journald_runs(&ns) {
        assert_last_stdout_line_is(&ns, &rep);
        assert_journal_has_no_password(&ns);
    }
    assert_eq!(c.show()["version"], OLD);
    eprintln!(
        "shipped_unit_failure_reaches_the_orchestrator: {:?} (systemctl start {took:?})",
        started.elapsed()
    );
}

/// README's literal command, on a namespace whose PID 1 logs to the journal as on a host.
/// README tells orchestrators a journalctl command that prints the run's JSON document: run
/// that very command (PID 1 logs to the journal here, as on a host).
#[test]
fn readme_journalctl_tail_is_the_json_document() {
    let s = shipped_setup("ok");
    let Some(ns) = boot_for_shipped(&s) else { return };
    // Without journald there is nothing to run the command against (a failure when systemd
    // is required: see journald_runs).
    if !journald_runs(&ns) {
        return;
    }
    let (out, _) = start_shipped_unit(&ns);
    assert!(out.status.success(), "systemctl start: {}", describe(&out));
    let rep = last_report(&ns, &s.c);
    let documented = readme_journalctl_command();
    let out = ns.output("sh", ["-c", documented.as_str()]);
    let last = text(&out.stdout);
    assert!(
        serde_json::from_str::<Value>(&last).is_ok_and(|v| v == rep),
        "README's command gives: {last}\n--- journal\n{}",
        journal(&ns, &["-u", "cellctl-upgrade.service"])
    );
}

/// README: "A signal during the install stops cellctl's waiting, not the installer". A SIGTERM
/// while the installer runs ends cellctl (exit 143), not the unit, and a rerun started while
/// the unit still runs waits for it (the wrapper's pid is checked inside the namespace).
#[test]
fn sigterm_mid_install_leaves_the_unit_and_a_rerun_waits_for_it() {
    let started = Instant::now();
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &["--install-time", "6s"]);
    write_config(&c, "60s", "");
    let Some(ns) = boot(&c, None) else { return };

    let mut child = spawn(
        cellctl_in(&ns, &c, Some(&served))
            .args(["--json", "upgrade", "--poll-interval", "100ms"])
            .arg(&pkg),
    );
    let unit = wait_unit_active(&ns, &c, &mut child);
    let run_id = c.current().unwrap()["run_id"].as_str().unwrap().to_string();
    let victims = cellctl_process(&ns, "upgrade");
    assert_eq!(victims.len(), 1, "{victims:?}");
    kill(Pid::from_raw(victims[0].host_pid), Signal::SIGTERM).unwrap();
    let r = Run::from(finish(child, WAIT, "cellctl after SIGTERM"));
    r.assert_code(143);
    assert_eq!(r.json()["outcome"], "interrupted", "{}", describe_run(&r));

    // Still running (6 s install), unless this machine is very slow.
    let state = prop(&ns, &unit, "ActiveState");
    let finished_ok = || unit_status(&c, &unit).is_some_and(|s| s["code"] == 0);
    assert!(
        state == "active" || finished_ok(),
        "{unit} was stopped with cellctl: ActiveState={state}"
    );
    let rerun = run_cellctl(cellctl_in(&ns, &c, Some(&served)).args(["--json", "upgrade", "--poll-interval", "100ms"]));
    rerun.assert_code(0);
    let doc = rerun.json();
    assert_eq!(doc["outcome"], "upgraded", "{}", describe_run(&rerun));
    assert_eq!(doc["run_id"], run_id.as_str());
    if state == "active" {
        assert!(
            rerun.stderr.contains("still running; waiting for it"),
            "the rerun found the unit running and waited: {}",
            rerun.stderr
        );
    }
    assert!(finished_ok(), "{:?}", unit_status(&c, &unit));
    wait_collected(&ns, &unit);
    assert_eq!(installer_runs(&c).len(), 1);
    assert_eq!(c.show()["version"], NEW);
    assert_eq!(c.show()["healthy"], true);
    eprintln!(
        "sigterm_mid_install_leaves_the_unit_and_a_rerun_waits_for_it: {:?}",
        started.elapsed()
    );
}

/// `cellctl_in` with another systemd-run: a test stand-in script written to the cell's `bin/`.
fn cellctl_in_with_systemd_run(ns: &SystemdNs, c: &Cell, served: &Served, name: &str, script: &str) -> Command {
    use std::os::unix::fs::PermissionsExt;
    let path = c.dir.join("bin").join(name);
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let mut args = cellctl_args(c, Some(served));
    let i = args.iter().position(|a| a == "--systemd-run").unwrap();
    args[i + 1] = path.into();
    let mut cmd = ns.command(cellctl_bin());
    isolate_env(&mut cmd);
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// The install step's records in a report.
fn install_steps(doc: &Value) -> Vec<&Value> {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == "install")
        .collect()
}

#[test]
fn kill_9_before_the_install_unit_starts_then_a_plain_rerun_installs_once() {
    let started = Instant::now();
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    write_config(&c, "60s", "");
    let Some(ns) = boot(&c, None) else { return };

    // cellctl dies right after journaling `install: started`, before any unit exists.
    let killer = "#!/bin/sh\nkill -9 $PPID\nexit 1\n";
    let out = run_within(
        cellctl_in_with_systemd_run(&ns, &c, &served, "systemd-run-killer", killer)
            .args(["upgrade", "--poll-interval", "100ms"])
            .arg(&pkg),
        "the killed cellctl",
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let unit = recorded_unit(&c).expect("the run is journaled");
    assert_eq!(
        step_status(&c.current().unwrap(), "install").as_deref(),
        Some("started")
    );
    assert_eq!(prop(&ns, &unit, "LoadState"), "not-found");

    // Real systemd says the unit was never there, and it left no file: run it, no flag needed.
    let r = run_cellctl(cellctl_in(&ns, &c, Some(&served)).args(["--json", "upgrade", "--poll-interval", "100ms"]));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "upgraded", "{}", describe_run(&r));
    assert!(r.stderr.contains("never started"), "{}", r.stderr);
    let steps = install_steps(&doc);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0]["status"], "done");
    assert_eq!(installer_runs(&c).len(), 1, "the installer ran exactly once");
    assert_eq!(c.show()["version"], NEW);
    eprintln!(
        "kill_9_before_the_install_unit_starts_then_a_plain_rerun_installs_once: {:?}",
        started.elapsed()
    );
}

#[test]
fn install_result_that_cannot_be_recorded_names_the_state_dir_under_systemd() {
    let started = Instant::now();
    let c = cell(&[]);
    let served = c.serve();
    let pkg = c.package(NEW, "ok", &[]);
    write_config(&c, "60s", "");
    let Some(ns) = boot(&c, None) else { return };

    // The real systemd-run, with a directory where the wrapper's status file goes: its atomic
    // rename fails, as in a full or read-only state dir.
    let blocked = "#!/bin/sh\nprev=\nfor a in \"$@\"; do [ \"$prev\" = --status ] && mkdir -p \"$a\"; prev=$a; done\nexec systemd-run \"$@\"\n";
    let r = Run::from(run_within(
        cellctl_in_with_systemd_run(&ns, &c, &served, "systemd-run-blocked", blocked)
            .args(["--json", "upgrade", "--poll-interval", "100ms"])
            .arg(&pkg),
        "cellctl",
    ));
    r.assert_code(9);
    let msg = str_of(&r.json(), "/error/message").to_string();
    let units = c.state.join("units").display().to_string();
    assert!(msg.contains(&format!("could not be recorded in {units}")), "{msg}");
    // `systemd-run --wait` passed the unit's exit status on: the installer succeeded.
    assert!(msg.contains("exit status 0") && !msg.contains("systemd-run"), "{msg}");
    assert_eq!(c.show()["version"], NEW);
    let unit = recorded_unit(&c).unwrap();
    wait_collected(&ns, &unit);

    let r = run_cellctl(cellctl_in(&ns, &c, Some(&served)).args(["--json", "upgrade", "--poll-interval", "100ms"]));
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["outcome"], "upgraded", "{}", describe_run(&r));
    let steps = install_steps(&doc);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert!(
        str_of(steps[0], "/detail").contains("learned from the installed version"),
        "{}",
        steps[0]
    );
    assert_eq!(installer_runs(&c).len(), 1);
    eprintln!(
        "install_result_that_cannot_be_recorded_names_the_state_dir_under_systemd: {:?}",
        started.elapsed()
    );
}
