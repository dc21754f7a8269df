//! The host's reboots, as far as cellctl can see them: `systemctl reboot` (the stand-in) records
//! the request, stops the simulated service and leaves the host "rebooting" (the service manager
//! then refuses to start units, as systemd does during a shutdown); `cellsim boot DIR` plays the
//! boot: a new boot id in DIR/sim/boot_id (the file cellctl is pointed at), and the service
//! comes up if it is enabled. Kept in DIR/sim/boot.json beside the cell's state.

use crate::store::{CellDir, Error, Result, io_err, uuid_v4};
use crate::tools::Invocation;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::PathBuf;

#[derive(Serialize, Deserialize, Debug, Default)]
pub struct BootState {
    /// A reboot was requested and the boot has not been played yet.
    pub rebooting: bool,
    /// Reboots requested through `systemctl reboot`.
    pub reboots: u64,
    /// Boots played by `cellsim boot`.
    pub boots: u64,
    /// The reboot kills the process that asked for it (as a real reboot kills every process).
    #[serde(default)]
    pub kill_caller: bool,
}

fn state_path(cell: &CellDir) -> PathBuf {
    cell.sim().join("boot.json")
}

pub fn boot_id_path(cell: &CellDir) -> PathBuf {
    cell.sim().join("boot_id")
}

fn load(cell: &CellDir) -> Result<BootState> {
    let p = state_path(cell);
    match fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|source| Error::Json { path: p, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BootState::default()),
        Err(e) => Err(io_err(&p)(e)),
    }
}

fn save(cell: &CellDir, b: &BootState) -> Result<()> {
    let p = state_path(cell);
    let tmp = p.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(b).expect("serializes")).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &p).map_err(io_err(&p))
}

fn new_boot_id(cell: &CellDir) -> Result<()> {
    let p = boot_id_path(cell);
    fs::write(&p, format!("{}\n", uuid_v4())).map_err(io_err(&p))
}

/// `create`: the first boot id.
pub fn init(cell: &CellDir) -> Result<()> {
    new_boot_id(cell)?;
    save(cell, &BootState::default())
}

/// Is a reboot under way (requested, boot not yet played)?
pub fn rebooting(cell: &CellDir) -> bool {
    load(cell).is_ok_and(|b| b.rebooting)
}

/// `systemctl reboot`: recorded, the service stopped, the host left rebooting. Returns the exit
/// status (0: the request was accepted, as systemd answers before the reboot).
pub fn reboot(inv: &Invocation) -> i32 {
    let cell = &inv.cell;
    let r = (|| -> Result<bool> {
        cell.with_state(|s, now| {
            s.service_stop(now);
            Ok(())
        })?;
        let mut b = load(cell)?;
        b.rebooting = true;
        b.reboots += 1;
        save(cell, &b)?;
        Ok(b.kill_caller)
    })();
    match r {
        Ok(kill) => {
            if kill {
                // As a real reboot: every process ends; the caller may not record what it asked.
                let _ = nix::sys::signal::kill(nix::unistd::getppid(), nix::sys::signal::Signal::SIGKILL);
            }
            0
        }
        Err(e) => {
            eprintln!("cellsim: {e}");
            crate::tools::INTERNAL_ERROR
        }
    }
}

/// `cellsim boot DIR`: the boot after a reboot (or any boot): a new boot id; the service starts
/// when `service` (enabled, and not held back by the test).
pub fn boot(dir: &std::path::Path, service: bool) -> Result<()> {
    let cell = CellDir::new(dir);
    let mut b = load(&cell)?;
    new_boot_id(&cell)?;
    b.rebooting = false;
    b.boots += 1;
    save(&cell, &b)?;
    if service {
        cell.with_state(|s, now| {
            s.service_start(now);
            Ok(())
        })?;
    }
    println!(
        "booted: boot id {}",
        fs::read_to_string(boot_id_path(&cell)).unwrap_or_default().trim()
    );
    Ok(())
}

/// `cellsim reboot-kills DIR on|off`: whether `systemctl reboot` kills its caller.
pub fn set_kill_caller(dir: &std::path::Path, on: bool) -> Result<()> {
    let cell = CellDir::new(dir);
    let mut b = load(&cell)?;
    b.kill_caller = on;
    save(&cell, &b)
}
