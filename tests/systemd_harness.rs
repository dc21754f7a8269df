//! Proves the systemd test namespace (`tests/support/systemd_ns.rs`): real transient units, exit
//! statuses, collection, units outliving the process that started them, unit output in the
//! journal, and a host left untouched with nothing of the namespace surviving it.
//!
//! Where the namespace cannot be made, every test prints `SKIPPED: ...` and returns;
//! `CELLCTL_REQUIRE_SYSTEMD=1` makes that a failure.

#[path = "support/systemd_ns.rs"]
mod systemd_ns;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use systemd_ns::{Options, Skip, SystemdNs, boot_or_skip, processes_in_pid_ns, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn describe(o: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `systemctl show -p <props> <unit>` as `Key=value` lines.
fn show(ns: &SystemdNs, unit: &str, props: &str) -> String {
    let out = ns.output("systemctl", ["show", "-p", props, unit]);
    assert!(out.status.success(), "systemctl show {unit}: {}", describe(&out));
    stdout(&out)
}

fn prop(ns: &SystemdNs, unit: &str, name: &str) -> String {
    show(ns, unit, name)
        .strip_prefix(&format!("{name}="))
        .unwrap_or_default()
        .to_string()
}

fn is_active(ns: &SystemdNs, unit: &str) -> String {
    stdout(&ns.output("systemctl", ["is-active", unit]))
}

#[test]
fn transient_unit_runs_under_the_namespace_pid1_and_succeeds() {
    let Some(ns) = boot_or_skip(None) else { return };
    eprintln!("systemd namespace booted in {:?}", ns.boot_time());

    let out = ns.output(
        "systemd-run",
        [
            "--wait",
            "--collect",
            "--quiet",
            "--unit=t-1",
            "--service-type=exec",
            "-p",
            "TimeoutStartSec=30",
            "-p",
            "TimeoutStopSec=10",
            "/bin/true",
        ],
    );
    assert!(out.status.success(), "systemd-run t-1: {}", describe(&out));
    // Collection happens in systemd's event loop, just after systemd-run returns.
    wait_for(WAIT, "t-1 collected", || {
        prop(&ns, "t-1.service", "LoadState") == "not-found"
    });

    // The unit's process is a child of the namespace's PID 1, not of the caller.
    let out = ns.output(
        "systemd-run",
        [
            "--wait",
            "--collect",
            "--pipe",
            "--quiet",
            "--unit=t-1b",
            "sh",
            "-c",
            "echo $PPID",
        ],
    );
    assert!(out.status.success(), "systemd-run t-1b: {}", describe(&out));
    assert_eq!(stdout(&out), "1");
}

#[test]
fn failing_unit_exit_status_propagates_and_the_unit_is_collected() {
    let Some(ns) = boot_or_skip(None) else { return };

    let out = ns.output(
        "systemd-run",
        ["--wait", "--collect", "--unit=t-2", "sh", "-c", "exit 3"],
    );
    assert_eq!(out.status.code(), Some(3), "systemd-run t-2: {}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("status=3"),
        "{}",
        describe(&out)
    );

    wait_for(WAIT, "t-2 collected", || {
        prop(&ns, "t-2.service", "LoadState") == "not-found"
    });
    let status = ns.output("systemctl", ["status", "t-2"]);
    assert_eq!(
        status.status.code(),
        Some(4),
        "systemctl status t-2: {}",
        describe(&status)
    );
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("could not be found"),
        "{}",
        describe(&status)
    );

    // The name is free again: a collected failure does not block a rerun.
    let out = ns.output(
        "systemd-run",
        ["--wait", "--collect", "--quiet", "--unit=t-2", "/bin/true"],
    );
    assert!(out.status.success(), "rerun t-2: {}", describe(&out));
}

#[test]
fn unit_outlives_the_process_that_started_it_and_reports_its_result() {
    let Some(ns) = boot_or_skip(None) else { return };

    // The starter starts t-3 (no --wait) and then stays around as `sleep 601` until killed.
    let mut starter = ns
        .sh("systemd-run --quiet --unit=t-3 sleep 600 && exec sleep 601")
        .stdin(Stdio::null())
        .spawn()
        .expect("starting the starter");
    wait_for(WAIT, "t-3 active", || is_active(&ns, "t-3") == "active");
    let victim = ns
        .processes()
        .into_iter()
        .find(|p| p.cmdline == "sleep 601")
        .expect("the starter inside the namespace");
    kill(Pid::from_raw(victim.host_pid), Signal::SIGKILL).unwrap();
    let _ = starter.kill();
    let _ = starter.wait();

    for _ in 0..10 {
        assert_eq!(is_active(&ns, "t-3"), "active", "t-3 must survive its starter");
        std::thread::sleep(Duration::from_millis(100));
    }
    let main_pid = prop(&ns, "t-3.service", "MainPID");
    let stat = fs::read_to_string(ns.path(format!("/proc/{main_pid}/stat"))).unwrap();
    let ppid = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert_eq!(ppid, "1", "t-3's main process is a child of systemd");

    // It ends; without --collect the unit stays loaded and keeps its result.
    let out = ns.output("systemctl", ["kill", "--signal=KILL", "t-3"]);
    assert!(out.status.success(), "systemctl kill: {}", describe(&out));
    wait_for(WAIT, "t-3 failed", || {
        prop(&ns, "t-3.service", "ActiveState") == "failed"
    });
    assert_eq!(
        show(&ns, "t-3.service", "ExecMainStatus,ExecMainCode,Result"),
        "Result=signal\nExecMainCode=2\nExecMainStatus=9"
    );

    // A unit that exits with a code reports it the same way.
    let out = ns.output("systemd-run", ["--quiet", "--unit=t-3b", "sh", "-c", "exit 7"]);
    assert!(out.status.success(), "systemd-run t-3b: {}", describe(&out));
    wait_for(WAIT, "t-3b failed", || {
        prop(&ns, "t-3b.service", "ActiveState") == "failed"
    });
    assert_eq!(
        show(&ns, "t-3b.service", "ExecMainStatus,Result"),
        "Result=exit-code\nExecMainStatus=7"
    );
}

#[test]
fn killing_a_waiting_systemd_run_leaves_the_unit_running() {
    let Some(ns) = boot_or_skip(None) else { return };

    let mut caller = ns
        .command("systemd-run")
        .args(["--wait", "--collect", "--quiet", "--unit=t-4", "sleep", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-run t-4");
    wait_for(WAIT, "t-4 active", || is_active(&ns, "t-4") == "active");
    let client = ns
        .processes()
        .into_iter()
        .find(|p| p.cmdline.starts_with("systemd-run ") && p.cmdline.contains("--unit=t-4"))
        .expect("systemd-run inside the namespace");
    kill(Pid::from_raw(client.host_pid), Signal::SIGKILL).unwrap();
    let status = caller.wait().unwrap();
    assert!(!status.success(), "the killed caller does not report success");

    for _ in 0..10 {
        assert_eq!(is_active(&ns, "t-4"), "active", "t-4 must survive its waiting caller");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = ns.output("systemctl", ["stop", "t-4"]);
    assert!(out.status.success(), "systemctl stop t-4: {}", describe(&out));
    wait_for(WAIT, "t-4 collected", || {
        prop(&ns, "t-4.service", "LoadState") == "not-found"
    });
}

#[test]
fn unit_output_reaches_the_journal_and_the_pipe() {
    let Some(ns) = boot_or_skip(None) else { return };

    let out = ns.output(
        "systemd-run",
        [
            "--wait",
            "--collect",
            "--quiet",
            "--unit=t-5",
            "sh",
            "-c",
            "echo out-of-t5; echo err-of-t5 >&2",
        ],
    );
    assert!(out.status.success(), "systemd-run t-5: {}", describe(&out));
    let mut journal = String::new();
    wait_for(WAIT, "t-5's output in the journal", || {
        journal = stdout(&ns.output("journalctl", ["-u", "t-5", "-o", "cat", "--no-pager"]));
        journal.contains("out-of-t5") && journal.contains("err-of-t5")
    });

    // --pipe hands the caller's stdout to the unit; the exit status still propagates.
    let out = ns.output(
        "systemd-run",
        [
            "--wait",
            "--collect",
            "--pipe",
            "--quiet",
            "--unit=t-6",
            "sh",
            "-c",
            "echo piped-t6; exit 4",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "systemd-run t-6: {}", describe(&out));
    assert_eq!(stdout(&out), "piped-t6");
}

#[test]
fn test_units_and_shared_tempdir_are_visible_inside() {
    // A tempdir under the host's /tmp: hidden inside unless shared.
    let tmp = tempfile::tempdir().unwrap();
    let units = tmp.path().join("units");
    fs::create_dir(&units).unwrap();
    fs::write(tmp.path().join("input"), "from-the-host\n").unwrap();
    let output = tmp.path().join("output");
    fs::write(
        units.join("hello-t7.service"),
        format!(
            "[Unit]\nDescription=test unit from the test's units dir\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
             ExecStart=/bin/sh -c 'cat {} > {}'\n",
            tmp.path().join("input").display(),
            output.display()
        ),
    )
    .unwrap();
    // The test's default.target replaces the harness's stub and starts a unit at boot.
    fs::write(
        units.join("default.target"),
        "[Unit]\nRequires=basic.target\nWants=boot-t12.service\nAfter=basic.target boot-t12.service\n",
    )
    .unwrap();
    fs::write(
        units.join("boot-t12.service"),
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/echo started-at-boot\n",
    )
    .unwrap();

    let Some(ns) = Options::new().units_dir(&units).share(tmp.path()).boot_or_skip() else {
        return;
    };
    assert!(ns.unit_path().contains(units.to_str().unwrap()));
    assert_eq!(
        is_active(&ns, "boot-t12"),
        "active",
        "started by the test's default.target"
    );

    let out = ns.output("systemctl", ["start", "hello-t7"]);
    assert!(
        out.status.success(),
        "systemctl start hello-t7: {}\n{}",
        describe(&out),
        ns.log()
    );
    assert_eq!(is_active(&ns, "hello-t7"), "active");
    assert_eq!(
        fs::read_to_string(&output).unwrap(),
        "from-the-host\n",
        "written through the share"
    );
    let cat = ns.output("systemctl", ["cat", "hello-t7"]);
    assert!(
        stdout(&cat).contains("test unit from the test's units dir"),
        "{}",
        describe(&cat)
    );

    // Units can also be added while it runs.
    ns.add_unit("late-t8.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n");
    let out = ns.output("systemctl", ["start", "late-t8"]);
    assert!(out.status.success(), "systemctl start late-t8: {}", describe(&out));
}

/// Host state systemd as PID 1 would like to change.
#[derive(Debug, PartialEq)]
struct HostState {
    sysctls: Vec<(String, String)>,
    hostname: String,
    mount_points: BTreeSet<String>,
    dev_log: bool,
    machine_id: String,
}

impl HostState {
    fn read() -> HostState {
        let sysctls = [
            "kernel/core_pattern",
            "fs/nr_open",
            "fs/file-max",
            "net/unix/max_dgram_qlen",
        ]
        .iter()
        .map(|k| {
            (
                k.to_string(),
                fs::read_to_string(Path::new("/proc/sys").join(k)).unwrap_or_default(),
            )
        })
        .collect();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        HostState {
            sysctls,
            hostname: fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
            mount_points: mountinfo
                .lines()
                .filter_map(|l| l.split_whitespace().nth(4))
                .map(String::from)
                .collect(),
            dev_log: fs::symlink_metadata("/dev/log").is_ok(),
            machine_id: fs::read_to_string("/etc/machine-id").unwrap_or_default(),
        }
    }
}

/// Entries of a cgroup directory, without the harness's own cgroups.
fn foreign_cgroups(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("cellctl-systemd-ns."))
        .collect()
}

/// Host /tmp entries untouched for 10 minutes: what an age-based tmpfiles clean would remove.
fn old_tmp_entries() -> Vec<PathBuf> {
    let cutoff = SystemTime::now() - Duration::from_secs(600);
    fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < cutoff))
        .map(|e| e.path())
        .collect()
}

#[test]
fn host_is_left_alone_and_nothing_survives_shutdown() {
    let marker = tempfile::Builder::new()
        .prefix("systemd-ns-marker.")
        .tempfile_in("/tmp")
        .unwrap();
    let var_marker = tempfile::Builder::new()
        .prefix("systemd-ns-marker.")
        .tempfile_in("/var/tmp")
        .unwrap();
    let old = old_tmp_entries();
    let before = HostState::read();

    let Some(ns) = boot_or_skip(None) else { return };
    let host_cgroups = ns.cgroup().unwrap().parent().unwrap().to_path_buf();
    let cgroups_before = foreign_cgroups(&host_cgroups);

    // /tmp is private both ways.
    let inside_only = format!("/tmp/inside-only.{}", std::process::id());
    let out = ns
        .sh(&format!(
            "test ! -e {0} && test ! -e {1} && echo x > {2} && test -e {2}",
            marker.path().display(),
            var_marker.path().display(),
            inside_only
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "host markers visible inside, or inside /tmp not writable: {}",
        describe(&out)
    );
    assert!(
        !Path::new(&inside_only).exists(),
        "the namespace's /tmp reached the host"
    );

    // systemd runs in its own cgroup subtree and without the dropped capabilities.
    let cg = ns.cgroup().unwrap();
    assert!(
        cg.join("init.scope").is_dir() && cg.join("system.slice").is_dir(),
        "systemd's cgroups in {}",
        cg.display()
    );
    let status = fs::read_to_string(ns.path("/proc/1/status")).unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string();
    let bounding = u64::from_str_radix(&bounding, 16).unwrap();
    assert_eq!(bounding & (1 << 16), 0, "CAP_SYS_MODULE dropped");
    assert_eq!(bounding & (1 << 25), 0, "CAP_SYS_TIME dropped");

    let out = ns.output(
        "systemd-run",
        ["--wait", "--collect", "--quiet", "--unit=t-9", "/bin/true"],
    );
    assert!(out.status.success(), "systemd-run t-9: {}", describe(&out));
    assert_eq!(HostState::read(), before, "host state changed while the namespace runs");
    assert_eq!(
        foreign_cgroups(&host_cgroups),
        cgroups_before,
        "cgroups appeared outside the harness's cgroup"
    );

    let pid_ns = ns.pid_ns().to_string();
    let cgroup = cg.to_path_buf();
    let state_dir = ns.state_dir().to_path_buf();
    let init = ns.init_pid();
    let pid_ns_handle = ns.pid_ns_handle(); // keeps the inode number from being reused meanwhile
    ns.shutdown().expect("clean shutdown");

    assert!(processes_in_pid_ns(&pid_ns).is_empty(), "processes left in {pid_ns}");
    assert_ne!(
        systemd_ns_pid_ns(init).as_deref(),
        Some(pid_ns.as_str()),
        "PID 1 of the namespace survived"
    );
    assert!(!cgroup.exists(), "cgroup {} left", cgroup.display());
    assert!(!state_dir.exists(), "state dir {} left", state_dir.display());
    assert!(
        marker.path().exists() && var_marker.path().exists(),
        "host /tmp or /var/tmp marker removed"
    );
    for p in &old {
        assert!(
            fs::symlink_metadata(p).is_ok(),
            "{} disappeared from the host's /tmp",
            p.display()
        );
    }
    assert_eq!(HostState::read(), before, "host state changed after shutdown");
    drop(pid_ns_handle);
}

fn systemd_ns_pid_ns(pid: i32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

#[test]
fn a_panicking_test_still_kills_its_namespace() {
    let seen: Arc<Mutex<Option<(String, fs::File, PathBuf)>>> = Arc::default();
    let inner = Arc::clone(&seen);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let Some(ns) = boot_or_skip(None) else { return };
        let _ = ns.command("sleep").arg("600").stdin(Stdio::null()).spawn();
        *inner.lock().unwrap() = Some((
            ns.pid_ns().to_string(),
            ns.pid_ns_handle(),
            ns.cgroup().unwrap().to_path_buf(),
        ));
        panic!("deliberate panic with a live namespace");
    }));
    let Some((pid_ns, _pid_ns_handle, cgroup)) = seen.lock().unwrap().take() else {
        // Skipped inside the closure; with CELLCTL_REQUIRE_SYSTEMD=1 that skip was a panic: pass it on.
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
        return;
    };
    assert!(result.is_err());
    assert!(
        processes_in_pid_ns(&pid_ns).is_empty(),
        "processes left in {pid_ns} after a panic"
    );
    assert!(!cgroup.exists(), "cgroup {} left after a panic", cgroup.display());
}

#[test]
fn a_skip_is_a_failure_when_systemd_is_required() {
    let skip = Skip {
        reason: "example".into(),
    };
    let result = std::panic::catch_unwind(|| skip.report_with(true));
    let message = result.expect_err("must panic").downcast::<String>().unwrap();
    assert!(
        message.contains("CELLCTL_REQUIRE_SYSTEMD=1") && message.contains("example"),
        "{message}"
    );
}

#[test]
fn units_reach_the_hosts_loopback_by_default() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(b"hello-from-host\n").unwrap();
    });
    let Some(ns) = boot_or_skip(None) else { return };
    let out = ns.output(
        "systemd-run",
        ["--wait", "--collect", "--pipe", "--quiet", "--unit=t-10", "bash", "-c"]
            .into_iter()
            .map(String::from)
            .chain([format!("exec 3<>/dev/tcp/127.0.0.1/{port} && cat <&3")]),
    );
    assert!(out.status.success(), "t-10: {}", describe(&out));
    assert_eq!(stdout(&out), "hello-from-host");
    server.join().unwrap();
}

#[test]
fn private_network_has_only_loopback() {
    let Some(ns) = Options::new().private_network(true).boot_or_skip() else {
        return;
    };
    let interfaces = |out: Output| -> Vec<String> {
        assert!(out.status.success(), "{}", describe(&out));
        stdout(&out)
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|i| i.trim().to_string())
            .collect()
    };
    assert_eq!(interfaces(ns.output("cat", ["/proc/net/dev"])), ["lo"]);
    let out = ns.output(
        "systemd-run",
        [
            "--wait",
            "--collect",
            "--pipe",
            "--quiet",
            "--unit=t-11",
            "cat",
            "/proc/net/dev",
        ],
    );
    assert_eq!(interfaces(out), ["lo"]);
}

#[test]
fn extra_tmpfs_and_a_shared_file() {
    let file = tempfile::NamedTempFile::new().unwrap(); // under the host's /tmp
    fs::write(file.path(), "shared-file\n").unwrap();
    let Some(ns) = Options::new().share(file.path()).tmpfs("/var/cache").boot_or_skip() else {
        return;
    };
    let out = ns.output("cat", [file.path()]);
    assert_eq!(stdout(&out), "shared-file", "{}", describe(&out));

    let name = format!("/var/cache/systemd-ns-t13.{}", std::process::id());
    let out = ns.output(
        "systemd-run",
        ["--wait", "--collect", "--quiet", "--unit=t-13", "touch", &name],
    );
    assert!(out.status.success(), "t-13: {}", describe(&out));
    assert!(ns.path(&name).exists(), "written inside");
    assert!(!Path::new(&name).exists(), "the private /var/cache reached the host");
}
