//! The run record: `STATE_DIR/current.json` while a run's changes are not finished or undone,
//! `STATE_DIR/runs/<run id>.json` after. Its JSON layout is a compatibility contract with runs
//! recorded by earlier versions (`SCHEMA`).

use serde::{Deserialize, Serialize};

use crate::model::machine::Position;
use crate::model::maintain::{MaintStage, RebootPolicy};
use crate::model::outcome::{CommandName, Outcome};
use crate::model::package::Package;
use crate::model::phase::{DeadlineAction, Phase};
use crate::model::stage::{Plan, Stage};
use crate::model::step::{Before, Step, StepRecord, StepStatus};
use crate::model::time::Timestamp;

pub const SCHEMA: u32 = 1;

fn default_after_cancel() -> DeadlineAction {
    DeadlineAction::Abort
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOptions {
    pub deadline_secs: u64,
    pub on_deadline: DeadlineAction,
    /// With `cancel`: abort or force when the grace period ends with jobs still running.
    #[serde(default = "default_after_cancel")]
    pub after_cancel: DeadlineAction,
    pub maintenance: bool,
    pub shutdown: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema: u32,
    pub run_id: String,
    pub command: CommandName,
    pub pid: u32,
    pub host: String,
    pub vcd_home: String,
    pub started_at: Timestamp,
    /// Absolute deadline (unix seconds): a continued run keeps the original one.
    pub deadline_unix: f64,
    /// End of the grace period after cancelling tasks (unix seconds).
    #[serde(default)]
    pub cancel_deadline_unix: Option<f64>,
    pub options: RunOptions,
    #[serde(default)]
    pub before: Option<Before>,
    /// Assigned only through `engine::Run::apply` (the checked state machine).
    pub phase: Phase,
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    #[serde(default)]
    pub outcome: Option<Outcome>,
    #[serde(default)]
    pub ended_at: Option<Timestamp>,
    /// For `install` and `upgrade` runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeRecord>,
    /// For `maintain` runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintain: Option<MaintainRecord>,
}

/// A `maintain` run: its COMMAND, what became of it, and the reboot (recorded before it is
/// requested, with the boot id it must change).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintainRecord {
    /// Assigned only through `engine::Run::apply` (the checked state machine).
    pub stage: MaintStage,
    pub reboot: RebootPolicy,
    /// The COMMAND and its arguments.
    pub command: Vec<String>,
    /// Its transient unit.
    pub unit: String,
    /// How many times the COMMAND was started (a `--continue` after a failure runs it again).
    #[serde(default)]
    pub attempts: u32,
    /// The COMMAND's last exit code (None: killed by a signal, or no result yet).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Its result in words (exit status N, killed by signal N).
    #[serde(default)]
    pub result: Option<String>,
    /// The last lines of its output, redacted.
    #[serde(default)]
    pub output_tail: Option<String>,
    /// Why the run reboots (or why `--reboot-if-required` did not).
    #[serde(default)]
    pub reboot_reason: Option<String>,
    /// The boot ids around its reboot.
    #[serde(flatten)]
    pub boot: BootIds,
}

/// The boot ids around a run's reboot (`engine::reboot`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BootIds {
    /// The boot id when the reboot was decided: a continuation that sees it again knows the
    /// reboot did not happen.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// The boot id the continuation found (the new boot).
    #[serde(default)]
    pub booted_id: Option<String>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeRecord {
    /// None for `db-upgrade`, which installs nothing.
    #[serde(default)]
    pub package: Option<Package>,
    /// Assigned only through `engine::Run::apply` (the checked state machine).
    pub stage: Stage,
    pub db_upgrade: bool,
    /// false for `cellctl install` (no start afterwards).
    pub start: bool,
    pub allow_downgrade: bool,
    pub version_before: Option<String>,
    #[serde(default)]
    pub version_after: Option<String>,
    /// The transient unit of the install (empty for `db-upgrade`, which installs nothing).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub install_unit: String,
    /// Only when the run upgrades the database (`--db-upgrade`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_unit: Option<String>,
    #[serde(default)]
    pub installer_tail: Option<String>,
    /// An appliance update through vamicli (absent for Linux cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appliance: Option<ApplianceRecord>,
}

/// What an appliance update works with: the package's own folder and what vamicli said.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplianceRecord {
    /// The fresh folder the package is unpacked into (removed once the version is verified).
    pub folder: std::path::PathBuf,
    /// `file:///FOLDER`, as given to `vamicli update --repo`.
    pub repo: String,
    /// The version `vamicli update --check` offered.
    #[serde(default)]
    pub offered: Option<String>,
    /// The folder was removed (after the installed version was verified).
    #[serde(default)]
    pub folder_removed: bool,
    /// The boot ids around the reboot that finishes the update (`upgrade`).
    #[serde(flatten, default)]
    pub boot: BootIds,
}

impl UpgradeRecord {
    pub fn plan(&self) -> Plan {
        Plan {
            db_upgrade: self.db_upgrade,
            start: self.start,
            appliance: self.appliance.is_some(),
        }
    }
}

impl RunRecord {
    /// The last record of a step, if any.
    pub fn last(&self, step: Step) -> Option<&StepRecord> {
        self.steps.iter().rev().find(|s| s.step == step)
    }

    /// The step was finished (or deliberately skipped) by this run.
    pub fn step_complete(&self, step: Step) -> bool {
        self.last(step).is_some_and(|s| s.status.is_complete())
    }

    /// Did this run (possibly) make the change that `step` makes, and has it not been undone?
    /// A `Started` step counts: the process may have died after acting, before recording.
    pub fn holds_change(&self, step: Step, undo: Step) -> bool {
        let made = self
            .steps
            .iter()
            .rposition(|s| s.step == step && matches!(s.status, StepStatus::Started | StepStatus::Done));
        let undone = self
            .steps
            .iter()
            .rposition(|s| s.step == undo && s.status == StepStatus::Done);
        match (made, undone) {
            (Some(m), Some(u)) => u < m,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Old cells print no `In Maintenance Mode` line: we cannot know it was off before.
    pub fn in_maintenance_unknown(&self) -> bool {
        self.before.as_ref().is_some_and(|b| b.in_maintenance.is_none())
    }

    /// The record's place in the state machine.
    pub fn position(&self) -> Position {
        Position {
            phase: self.phase,
            stage: self.upgrade.as_ref().map(|u| (u.stage, u.plan())),
            maint: self.maintain.as_ref().map(|m| (m.stage, m.reboot)),
        }
    }

    /// Store a position the state machine produced (see `engine::Run::apply`).
    pub(crate) fn set_position(&mut self, p: Position) {
        self.phase = p.phase;
        if let (Some(up), Some((stage, _))) = (self.upgrade.as_mut(), p.stage) {
            up.stage = stage;
        }
        if let (Some(m), Some((stage, _))) = (self.maintain.as_mut(), p.maint) {
            m.stage = stage;
        }
    }

    /// The one right next step for an operator who finds this record (status, refusals).
    pub fn advice(&self) -> String {
        let cmd = self.command;
        if let Some(m) = self.maintain.as_ref().filter(|_| self.past_drain()) {
            return match m.stage {
                MaintStage::Command | MaintStage::Start => format!(
                    "the cell is drained and shut down at stage {}: `cellctl maintain --continue` goes on (re-running the COMMAND if it did not succeed), `cellctl resume` brings the cell back without it",
                    m.stage
                ),
                s if s.rebooting() => "it is rebooting: after the boot `cellctl maintain --continue` finishes it (cellctl-continue.service does at boot)".to_string(),
                s => format!("it has ended (stage {s}): `cellctl maintain --continue` archives it"),
            };
        }
        if let Some(up) = self.upgrade.as_ref().filter(|u| u.stage.rebooting()) {
            return format!(
                "the appliance is rebooting (stage {}): after the boot `cellctl maintain --continue` (cellctl-continue.service does at boot) or `cellctl {cmd}` finishes it",
                up.stage
            );
        }
        if let Some(up) = self.upgrade.as_ref().filter(|u| u.stage != Stage::Drain) {
            return format!("`cellctl {cmd}` continues it from stage {}", up.stage);
        }
        match self.phase {
            Phase::RollingBack { .. } => format!(
                "its undo was interrupted: `cellctl resume` finishes it (`cellctl {cmd}` finishes it too, then starts afresh)"
            ),
            Phase::ShuttingDown { .. } | Phase::StoppingService { .. } => format!(
                "its shutdown had begun and cannot be undone: `cellctl {cmd}` finishes it (then `cellctl start` brings the cell back if wanted)"
            ),
            Phase::Done {
                outcome: Outcome::Drained,
            } => "the cell is drained and parked: `cellctl drain` shuts it down, `cellctl resume` undoes the drain"
                .to_string(),
            Phase::Done { .. } => format!("it has ended: `cellctl {cmd}` archives it"),
            _ => format!("`cellctl {cmd}` continues it, `cellctl resume` undoes it"),
        }
    }

    /// The drain stage is over (or there was none): an `install`/`upgrade` record past it.
    pub fn past_drain(&self) -> bool {
        self.upgrade.as_ref().is_some_and(|u| u.stage.after_drain())
            || self.maintain.as_ref().is_some_and(|m| m.stage != MaintStage::Drain)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::time::new_run_id;

    pub(crate) fn rec() -> RunRecord {
        RunRecord {
            schema: SCHEMA,
            run_id: new_run_id(),
            command: CommandName::Drain,
            pid: 1,
            host: "h".into(),
            vcd_home: "/x".into(),
            started_at: Timestamp::now(),
            deadline_unix: 0.0,
            cancel_deadline_unix: None,
            options: RunOptions {
                deadline_secs: 1,
                on_deadline: DeadlineAction::Abort,
                after_cancel: DeadlineAction::Abort,
                maintenance: true,
                shutdown: true,
            },
            before: None,
            phase: Phase::Start,
            steps: vec![],
            outcome: None,
            ended_at: None,
            upgrade: None,
            maintain: None,
        }
    }

    fn step(step: Step, status: StepStatus) -> StepRecord {
        StepRecord {
            status,
            ..StepRecord::started(step, None)
        }
    }

    #[test]
    fn started_step_counts_as_a_change_until_undone() {
        let mut r = rec();
        r.steps.push(step(Step::Quiesce, StepStatus::Started));
        assert!(r.holds_change(Step::Quiesce, Step::UndoQuiesce));
        r.steps.push(step(Step::UndoQuiesce, StepStatus::Started));
        assert!(r.holds_change(Step::Quiesce, Step::UndoQuiesce));
        r.steps.push(step(Step::UndoQuiesce, StepStatus::Done));
        assert!(!r.holds_change(Step::Quiesce, Step::UndoQuiesce));
        assert!(!r.holds_change(Step::MaintenanceOn, Step::UndoMaintenance));
    }
}
