//! The steps a run records, each written as `started` before it is taken, and what was true of
//! the cell before the run changed anything.

use serde::{Deserialize, Serialize};

use super::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Preflight,
    MaintenanceOn,
    Quiesce,
    Wait,
    Shutdown,
    StopService,
    UndoQuiesce,
    UndoMaintenance,
    Install,
    DbUpgrade,
    StartService,
    Health,
    MaintenanceOff,
    CancelTasks,
    TakeSlot,
    ReleaseSlot,
    /// `maintain`: the COMMAND, in a transient unit.
    Command,
    /// `maintain`: the reboot requested from the service manager.
    Reboot,
    /// `maintain`: after the boot, waiting for the cell's service.
    ContinueAfterBoot,
    /// Appliance: the update package unpacked into a folder of its own.
    Unpack,
    /// Appliance: `vamicli update --repo file:///FOLDER`.
    SetRepo,
    /// Appliance: `vamicli update --check` offers the package's version.
    CheckUpdate,
    /// Appliance `upgrade`, after the boot: the installed version is the package's.
    VerifyVersion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Recorded before the action: it may or may not have taken effect.
    Started,
    Done,
    Failed,
    Skipped,
}

impl StepStatus {
    /// Finished with its goal reached (or deliberately not needed).
    pub fn is_complete(self) -> bool {
        matches!(self, StepStatus::Done | StepStatus::Skipped)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: Step,
    pub status: StepStatus,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl StepRecord {
    /// A step recorded as begun now.
    pub fn started(step: Step, job_count: Option<u64>) -> Self {
        StepRecord {
            step,
            status: StepStatus::Started,
            started_at: Timestamp::now(),
            ended_at: None,
            job_count,
            detail: None,
        }
    }
}

/// The cell's service as the service manager reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Running,
    Stopped,
    /// activating/deactivating/reloading: in between, ask again.
    Changing,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Running => "running",
            ServiceState::Stopped => "stopped",
            ServiceState::Changing => "changing",
        }
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was true of the cell before this run changed anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Before {
    pub job_count: u64,
    pub is_active: bool,
    /// None: the cell is too old to say.
    pub in_maintenance: Option<bool>,
    pub service: ServiceState,
}
