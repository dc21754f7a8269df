//! The host's reboots, as far as cellctl can see them. `systemctl reboot` (the stand-in) goes
//! through the model (`State::reboot`: the service stops, `reboot` on the timeline) and leaves
//! the host rebooting: the service manager then refuses to start units, as systemd does during
//! a shutdown, until the test plays the boot with `cellsim boot DIR`: a new boot id in
//! DIR/sim/boot_id (the file cellctl is pointed at) and `State::boot` (`boot`, and the service
//! started if it is enabled). Nothing boots by itself: the test decides when the host is back.

use crate::store::{CellDir, Result, io_err, uuid_v4};
use crate::tools::{INTERNAL_ERROR, Invocation};
use std::fs;
use std::path::{Path, PathBuf};

pub fn boot_id_path(cell: &CellDir) -> PathBuf {
    cell.sim().join("boot_id")
}

/// A new boot id (`create`: the first).
pub fn new_boot_id(cell: &CellDir) -> Result<()> {
    let p = boot_id_path(cell);
    fs::write(&p, format!("{}\n", uuid_v4())).map_err(io_err(&p))
}

/// `systemctl reboot`: accepted (exit 0, as systemd answers before the reboot). With the
/// `reboot_kills` knob the caller is killed first, as a real reboot ends every process: it may
/// not record that it asked.
pub fn reboot(inv: &Invocation) -> i32 {
    match inv.cell.with_state(|s, now| {
        s.reboot(now);
        Ok(s.knobs.reboot_kills)
    }) {
        Ok(kill) => {
            if kill {
                let _ = nix::sys::signal::kill(nix::unistd::getppid(), nix::sys::signal::Signal::SIGKILL);
            }
            0
        }
        Err(e) => {
            eprintln!("cellsim: {e}");
            INTERNAL_ERROR
        }
    }
}

/// `cellsim boot DIR [--no-service]`: the boot id changes first (the kernel boots before any
/// service), then the model boots the host and starts the service when `service`.
pub fn boot(dir: &Path, service: bool) -> Result<()> {
    let cell = CellDir::new(dir);
    new_boot_id(&cell)?;
    cell.with_state(|s, now| {
        s.boot(now, service);
        // An appliance's update is complete once it has rebooted.
        crate::appliance::booted(&cell)
    })?;
    println!(
        "booted: boot id {}",
        fs::read_to_string(boot_id_path(&cell)).unwrap_or_default().trim()
    );
    Ok(())
}
