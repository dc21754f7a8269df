//! `cellctl maintain --reboot` and the shipped `cellctl-continue.service` against a REAL systemd:
//! PID 1 of private namespaces (tests/support/systemd_ns.rs). The COMMAND runs in a real
//! transient unit; the "host" reboots by shutting one namespace down, the test plays the boot in
//! the simulator (`cellsim boot`: a new boot id, the cell's service up) and boots a second
//! namespace, in which systemd itself starts the enabled continuation unit at boot. The cell and
//! its service are simulated by cellsim; tests/maintain.rs runs the same procedure against the
//! simulator's systemd-run stand-in.
//!
//! Where the namespace cannot be made, every test prints `SKIPPED: ...` and returns;
//! `CELLCTL_REQUIRE_SYSTEMD=1` makes that a failure.

#[path = "support/systemd_ns.rs"]
mod systemd_ns;

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Cell, Run, Served, Timeline, cellctl_bin, step_status};
use serde_json::Value;
use systemd_ns::{Options, SystemdNs, wait_for};

const UNIT: &str = "cellctl-continue.service";
/// Deadline for anything awaited (a loaded 2-core CI machine runs several namespaces at once).
const WAIT: Duration = Duration::from_secs(120);

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

fn journal(ns: &SystemdNs, args: &[&str]) -> String {
    let out = ns.output("journalctl", [&["--no-pager", "-o", "cat"][..], args].concat());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

/// The options `Cell::cellctl` gives cellctl, with the real `systemd-run` (on PATH inside) and
/// the simulator's service-manager stand-in for `vmware-vcd`; no password source.
fn cellctl_args(c: &Cell, served: &Served) -> Vec<OsString> {
    vec![
        "--vcd-home".into(),
        c.dir.clone().into(),
        "--systemctl".into(),
        c.dir.join("bin/systemctl").into(),
        "--state-dir".into(),
        c.state.clone().into(),
        "--config".into(),
        c.config.clone().into(),
        "--systemd-run".into(),
        "systemd-run".into(),
        "--health-url".into(),
        served.health_url().into(),
        "--health-ca-file".into(),
        served.ca.clone().into(),
    ]
}

/// The settings the continuation reads from the config file ([maintain], as the unit's comment
/// says), with fast health polling.
fn write_config(c: &Cell) {
    fs::write(
        &c.config,
        format!(
            "[health]\ninterval = \"100ms\"\nrequest_timeout = \"2s\"\n[drain]\npoll_interval = \"100ms\"\n\
             [maintain]\nboot_id_file = \"{}\"\nservice_wait = \"30s\"\ntimeout = \"60s\"\n",
            c.dir.join("sim/boot_id").display()
        ),
    )
    .unwrap();
}

/// The drop-in adapting the shipped unit to the test cell, as tests/systemd_upgrade.rs adapts
/// cellctl-upgrade.service: ExecStart, LoadCredential and the condition's path replaced,
/// StateDirectory cleared, the temp dir and the binaries bound back into the private /tmp; all
/// else as shipped.
fn test_drop_in(c: &Cell, served: &Served) -> String {
    let args: Vec<String> = cellctl_args(c, served)
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    for a in &args {
        assert!(
            !a.contains(['%', '$', ' ', '"', '\'', '\\']),
            "{a:?} needs quoting in a unit file"
        );
    }
    format!(
        "# Test adaptations of the shipped cellctl-continue.service (tests/systemd_maintain.rs).
[Unit]
# The test's state directory instead of /var/lib/cellctl.
ConditionPathExists=
ConditionPathExists={state}/current.json
[Service]
ExecStart=
ExecStart={bin} --json --skip-redundancy-guard --api-url https://127.0.0.1:9 {args} maintain --continue --at-boot
LoadCredential=
LoadCredential=vcd-password:{pw}
StateDirectory=
BindPaths={tmp}
BindPaths={bin_dir}
",
        state = c.state.display(),
        bin = cellctl_bin().display(),
        bin_dir = cellctl_bin().parent().expect("binary dir").display(),
        args = args.join(" "),
        pw = c.pwfile.display(),
        tmp = c.tmp.path().display(),
    )
}

/// A units dir with the shipped unit, the test drop-in, and the unit enabled as the package
/// enables it (a link in multi-user.target.wants), with default.target pulling in
/// multi-user.target as on a host (the harness's default.target is an empty stub).
fn units_dir(c: &Cell, served: &Served) -> PathBuf {
    let units = c.tmp.path().join("units");
    fs::create_dir_all(units.join(format!("{UNIT}.d"))).unwrap();
    fs::create_dir_all(units.join("multi-user.target.wants")).unwrap();
    fs::copy(shipped_dir().join(UNIT), units.join(UNIT)).unwrap();
    fs::write(units.join(format!("{UNIT}.d/test.conf")), test_drop_in(c, served)).unwrap();
    std::os::unix::fs::symlink(units.join(UNIT), units.join("multi-user.target.wants").join(UNIT)).unwrap();
    fs::write(
        units.join("default.target"),
        "[Unit]\nDescription=default.target (test: as on a host)\nRequires=basic.target\nWants=multi-user.target\nAfter=basic.target multi-user.target\n",
    )
    .unwrap();
    units
}

fn boot(c: &Cell, units: &Path) -> Option<SystemdNs> {
    let mut options = Options::new().share(c.tmp.path()).units_dir(units);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    options = options.share(repo);
    let bin_dir = cellctl_bin().parent().expect("binary dir").to_path_buf();
    if !bin_dir.starts_with(repo) {
        options = options.share(bin_dir);
    }
    let ns = options.boot_or_skip()?;
    eprintln!("systemd namespace booted in {:?}", ns.boot_time());
    Some(ns)
}

/// cellctl inside the namespace, wired to the cell, with the password from its file.
fn cellctl_in(ns: &SystemdNs, c: &Cell, served: &Served) -> Command {
    let mut cmd = ns.command(cellctl_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CELLCTL_") || k == "CREDENTIALS_DIRECTORY" || k == "JOURNAL_STREAM" {
            cmd.env_remove(k);
        }
    }
    cmd.env("CELLCTL_SKIP_REDUNDANCY_GUARD", "1")
        .env("CELLCTL_API_URL", "https://127.0.0.1:9")
        .args(cellctl_args(c, served))
        .arg("--password-file")
        .arg(&c.pwfile)
        .stdin(Stdio::null());
    cmd
}

/// `systemd-analyze verify` inside the namespace (its unit path has the standard targets),
/// with the man page on MANPATH and `/usr/bin/cellctl` present in a mount namespace of this one
/// command (an overlay over /usr/bin), so the shipped file is verified as it is installed.
/// Returns verify's output; `Ok` only when it exits 0 and says nothing.
fn verify(ns: &SystemdNs, files: &[PathBuf]) -> Result<(), String> {
    let scratch = "/run/cellctl-test";
    let bin = cellctl_bin().display().to_string();
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
    let harness_units = ns.unit_path().rsplit(':').next().unwrap().to_string();
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let script = format!(
        "mount -t overlay overlay -o lowerdir={scratch}/bin:/usr/bin /usr/bin && exec systemd-analyze verify {}",
        files.join(" ")
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
        !ns.path("/usr/bin/cellctl").exists(),
        "the overlay stayed in its own mount namespace"
    );
    if out.status.success() && text(&out.stderr).is_empty() {
        Ok(())
    } else {
        Err(describe(&out))
    }
}

/// The shipped units verify cleanly; the same check fails on broken copies (so it can fail).
fn verify_shipped_and_broken(ns: &SystemdNs, c: &Cell) {
    let overlay = ns
        .output("grep", ["-qw", "overlay", "/proc/filesystems"])
        .status
        .success();
    if !overlay {
        assert!(
            !systemd_ns::require_systemd(),
            "{}=1 but the kernel has no overlayfs: the shipped units would not be verified",
            systemd_ns::REQUIRE_ENV
        );
        eprintln!("NOTE: no overlayfs: the shipped units are not verified");
        return;
    }
    let shipped: Vec<PathBuf> = [
        UNIT,
        "cellctl-upgrade.service",
        "cellctl-upgrade.timer",
        "cellctl-maintain.service",
        "cellctl-maintain.timer",
    ]
    .iter()
    .map(|u| shipped_dir().join(u))
    .collect();
    verify(ns, &shipped).unwrap_or_else(|e| panic!("systemd-analyze verify on the shipped units: {e}"));
    let original = fs::read_to_string(shipped_dir().join(UNIT)).unwrap();
    let broken = c.tmp.path().join("broken");
    fs::create_dir_all(&broken).unwrap();
    for (what, from, to) in [
        (
            "a missing binary",
            "ExecStart=/usr/bin/cellctl ",
            "ExecStart=/usr/bin/cellctl-gone ",
        ),
        ("a misspelt directive", "TimeoutStartSec=1h", "TimeoutStartSecs=1h"),
        ("an invalid value", "Type=oneshot", "Type=oneshots"),
    ] {
        assert!(original.contains(from), "{UNIT} no longer has {from:?}");
        let f = broken.join(UNIT);
        fs::write(&f, original.replace(from, to)).unwrap();
        let err = verify(ns, &[f]).expect_err(what);
        let why = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default();
        eprintln!("verify refuses {what}: {why}");
    }
}

/// The COMMAND: records that it ran, and the unit it ran in.
fn patch_script(c: &Cell) -> PathBuf {
    let p = c.tmp.path().join("patch");
    fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"kernel updated in $(cat /proc/self/cgroup)\"\ndate +%s%3N > {}\n",
            c.tmp.path().join("ran").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn the_continuation_unit_finishes_a_rebooting_run_at_boot_and_is_skipped_without_one() {
    let started = Instant::now();
    let c = Cell::new(&["--quiesce-delay", "200ms", "--jobs", "1", "--job-duration", "1s"]);
    let served = c.serve();
    write_config(&c);
    let units = units_dir(&c, &served);

    // Boot 1: no run recorded. The enabled unit is pulled in at boot and skipped by its
    // condition: it never runs, and needs no credential.
    let Some(ns) = boot(&c, &units) else { return };
    verify_shipped_and_broken(&ns, &c);
    let u = show(
        &ns,
        UNIT,
        "LoadState,WantedBy,DropInPaths,ConditionResult,ConditionTimestampMonotonic,ExecMainStartTimestampMonotonic,ActiveState",
    );
    assert_eq!(u["LoadState"], "loaded", "{u:?}");
    // Enabled by the link the package makes (UnitFileState reads only the standard paths).
    assert_eq!(u["WantedBy"], "multi-user.target", "{u:?}");
    assert!(u["DropInPaths"].ends_with(&format!("{UNIT}.d/test.conf")), "{u:?}");
    assert_eq!(u["ConditionResult"], "no", "skipped by its condition: {u:?}");
    assert_ne!(u["ConditionTimestampMonotonic"], "0", "checked at boot: {u:?}");
    assert_eq!(u["ExecMainStartTimestampMonotonic"], "0", "never ran: {u:?}");
    assert!(!c.state.join("reports").exists(), "no run, no report");

    // A real maintain run in this boot: the COMMAND in a real transient unit, then the reboot
    // through the simulator's service manager.
    let first_boot = fs::read_to_string(c.dir.join("sim/boot_id")).unwrap();
    let out = cellctl_in(&ns, &c, &served)
        .args(["--json", "maintain", "--reboot", "--reboot-command"])
        .arg(format!("{} reboot", c.dir.join("bin/systemctl").display()))
        .arg("--")
        .arg(patch_script(&c))
        .output()
        .unwrap();
    let r = Run::from(out);
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    assert_eq!(doc["outcome"], "rebooting", "{doc}");
    assert_eq!(doc["maintain"]["boot_id"], first_boot.trim());
    let tail = doc["maintain"]["output_tail"].as_str().unwrap();
    let cmd_unit = doc["maintain"]["unit"].as_str().unwrap();
    assert!(
        tail.contains(&format!("{cmd_unit}.service")),
        "the COMMAND ran in its unit: {tail}"
    );
    let run_id = doc["run_id"].as_str().unwrap().to_string();
    assert_eq!(c.current().unwrap()["maintain"]["stage"], "rebooting");
    assert_eq!(c.show()["rebooting"], true);

    // The host goes down; the boot comes (a new boot id, the cell's service started by it).
    ns.shutdown().expect("the first boot's namespace is cleaned up");
    c.sim(&["boot"]);
    assert_ne!(fs::read_to_string(c.dir.join("sim/boot_id")).unwrap(), first_boot);

    // Boot 2: systemd starts the continuation at boot; ready means it has ended (a oneshot
    // holds the boot in "starting" until it is done).
    let Some(ns) = boot(&c, &units) else { return };
    let u = show(
        &ns,
        UNIT,
        "ConditionResult,ExecMainStartTimestampMonotonic,ExecMainStatus,Result,ActiveState",
    );
    assert_eq!(u["ConditionResult"], "yes", "{u:?}\n{}", ns.log());
    assert_ne!(u["ExecMainStartTimestampMonotonic"], "0", "it ran: {u:?}");
    assert_eq!(
        (&u["Result"][..], &u["ExecMainStatus"][..], &u["ActiveState"][..]),
        ("success", "0", "inactive"),
        "{u:?}\n--- journal\n{}",
        journal(&ns, &["-u", UNIT])
    );
    // The run is complete: the cell serves, the report is written, the record archived.
    let show_cell = c.show();
    assert_eq!(
        (
            show_cell["service"].as_str(),
            show_cell["cell"].as_str(),
            show_cell["healthy"].as_bool()
        ),
        (Some("running"), Some("up"), Some(true)),
        "{show_cell}"
    );
    assert!(c.current().is_none(), "the record is archived");
    let rep = c.cellctl().args(["report", "--last", "--json"]).output().unwrap();
    let rep = Run::from(rep);
    rep.assert_code(0);
    let rep = rep.json();
    assert_eq!(rep["run_id"], run_id.as_str(), "{rep}");
    assert_eq!(rep["outcome"], "maintained", "{rep}");
    for s in ["command", "reboot", "continue_after_boot", "health"] {
        assert_eq!(step_status(&rep, s).as_deref(), Some("done"), "step {s}: {rep}");
    }
    // Its JSON document is the unit's output in the journal, when journald runs.
    let active = text(&ns.output("systemctl", ["is-active", "systemd-journald.service"]).stdout) == "active";
    if active {
        let stdout_lines = journal(&ns, &["-u", UNIT, "_TRANSPORT=stdout"]);
        let last = stdout_lines.lines().last().unwrap_or_default();
        assert!(
            serde_json::from_str::<Value>(last).is_ok_and(|v| v == rep),
            "the unit's last stdout line is not the report:\n{stdout_lines}"
        );
    } else {
        assert!(
            !systemd_ns::require_systemd(),
            "journald is not running in the namespace"
        );
    }
    // The simulator's records: one reboot, then the boot; the service started by the boot was
    // neither stopped nor restarted by the continuation.
    let t = Timeline::of_cell(&c.dir);
    let boot_at = t.named("boot")[0].at_ms;
    assert_eq!(
        (t.named("reboot").len(), t.named("boot").len()),
        (1, 1),
        "{:#?}",
        t.events
    );
    assert!(
        t.iter()
            .filter(|e| e.at_ms >= boot_at)
            .all(|e| !matches!(e.event.as_str(), "service_stopped" | "shut_down" | "reboot")),
        "{:#?}",
        t.events
    );

    // Started again (a second boot, an operator): the condition skips it; nothing changes.
    let out = ns.output("systemctl", ["start", UNIT]);
    assert!(out.status.success(), "{}", describe(&out));
    wait_for(WAIT, "the condition checked again", || {
        show(&ns, UNIT, "ConditionResult")["ConditionResult"] == "no"
    });
    assert_eq!(
        show(&ns, UNIT, "ExecMainStartTimestampMonotonic")["ExecMainStartTimestampMonotonic"],
        u["ExecMainStartTimestampMonotonic"],
        "not run again"
    );
    assert_eq!(c.show()["cell"], "up");
    eprintln!(
        "the_continuation_unit_finishes_a_rebooting_run_at_boot_and_is_skipped_without_one: {:?}",
        started.elapsed()
    );
}
