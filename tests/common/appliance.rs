//! Simulated VCD appliances (`cellsim create --appliance`) and cellctl wired for them: the
//! sim's vamicli, an unpack dir of the test's own, the sim's reboot and boot id; the boot the
//! test plays and the continuation the shipped unit runs after it. Shared by tests/appliance.rs
//! and the fault matrix's appliance column.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{Cell, Run, Served, Timeline, cellsim_bin};

pub const APPLIANCE_OLD: &str = "10.5.1";
pub const APPLIANCE_NEW: &str = "10.6.0";

pub fn appliance_cell(extra: &[&str]) -> Cell {
    let mut args = vec!["--appliance", "--quiesce-delay", "200ms", "--version", APPLIANCE_OLD];
    args.extend_from_slice(extra);
    Cell::new(&args)
}

/// An appliance update package (and its .sha256, written by cellsim) for `c`.
pub fn update_package(c: &Cell, version: &str, extra: &[&str]) -> PathBuf {
    let out = Command::new(cellsim_bin())
        .arg("package")
        .arg("--appliance")
        .arg("--cell")
        .arg(&c.dir)
        .args(["--version", version])
        .args(if extra.contains(&"--install-time") {
            &[][..]
        } else {
            &["--install-time", "200ms"][..]
        })
        .args(extra)
        .arg(c.tmp.path().join("pkgs"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

pub fn unpack_dir(c: &Cell) -> PathBuf {
    c.tmp.path().join("updates")
}

/// cellctl wired for an appliance (no command yet): `upgrade_cmd`'s wiring, the sim's vamicli,
/// its own unpack dir, the sim's `systemctl reboot` and boot id.
pub fn appliance_cmd(c: &Cell, served: &Served) -> Command {
    std::fs::create_dir_all(unpack_dir(c)).unwrap();
    let mut cmd = c.upgrade_cmd(served);
    cmd.arg("--vamicli")
        .arg(c.dir.join("bin/vamicli"))
        .arg("--unpack-dir")
        .arg(unpack_dir(c))
        .env("CELLCTL_BOOT_ID_FILE", c.dir.join("sim/boot_id"))
        .env(
            "CELLCTL_REBOOT_COMMAND",
            format!("{} reboot", c.dir.join("bin/systemctl").display()),
        )
        .env("CELLCTL_SERVICE_WAIT", "20s");
    cmd
}

/// `cellctl --json upgrade [extra] [PKG]`.
pub fn appliance_upgrade(c: &Cell, served: &Served, pkg: Option<&Path>, extra: &[&str]) -> Run {
    let out = appliance_cmd(c, served)
        .args(["--json", "upgrade", "--poll-interval", "100ms"])
        .args(extra)
        .args(pkg)
        .output()
        .unwrap();
    Run::from(out)
}

/// The boot, as the test plays it: a new boot id, the service started by the service manager.
pub fn play_boot(c: &Cell) {
    let out = c.sim(&["boot"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// What `cellctl-continue.service` runs at boot: `cellctl --json maintain --continue --at-boot`.
pub fn continue_at_boot(c: &Cell, served: &Served) -> Run {
    let out = appliance_cmd(c, served)
        .args(["--json", "maintain", "--continue", "--at-boot"])
        .output()
        .unwrap();
    Run::from(out)
}

/// Folders in `dir` (none when it is missing).
pub fn folders(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Times of the appliance's `event`s in its timeline.
pub fn event_times(c: &Cell, event: &str) -> Vec<u64> {
    Timeline::of_cell(&c.dir).named(event).iter().map(|e| e.at_ms).collect()
}

/// The appliance is updated for good, read from the simulator: the package's version installed
/// once from the old one, the reboot done (a reboot requested after the install, a boot after
/// it, no start of the service in between: it came up by the boot), the service running, the
/// unpacked folder gone and no run recorded.
pub fn assert_appliance_updated(c: &Cell) {
    let show = c.show();
    assert_eq!(show["version"], APPLIANCE_NEW, "{show}");
    assert_eq!(show["service"], "running", "{show}");
    let a: &Value = &show["appliance"];
    assert_eq!(a["installs"].as_array().unwrap().len(), 1, "one install: {a}");
    assert_eq!(a["installs"][0]["from"], APPLIANCE_OLD);
    assert_eq!(a["reboot_required"], false, "rebooted since the install: {a}");
    assert!(folders(&unpack_dir(c)).is_empty(), "the unpacked folder is removed");
    assert!(c.current().is_none(), "a finished run leaves no record");
    let t = Timeline::of_cell(&c.dir);
    let installed = t.named("installed").last().expect("an install on the timeline").at_ms;
    let reboot = t
        .named("reboot")
        .iter()
        .map(|e| e.at_ms)
        .find(|at| *at >= installed)
        .expect("a reboot after the install");
    let boot = t
        .named("boot")
        .iter()
        .map(|e| e.at_ms)
        .find(|at| *at >= reboot)
        .expect("a boot after the reboot");
    let started_between = t
        .named("service_started")
        .iter()
        .any(|e| e.at_ms >= installed && e.at_ms < boot);
    assert!(
        !started_between,
        "the service was started before the reboot: {:?}",
        t.events
    );
    assert!(
        t.named("service_stopped").iter().any(|e| e.at_ms <= installed),
        "installed on a stopped service"
    );
    assert!(
        t.named("cell_up").iter().any(|e| e.at_ms >= boot),
        "the cell came up after the boot: {:?}",
        t.events
    );
}
