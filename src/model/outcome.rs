//! Names that reports and journals carry as strings, as enums: compared in code, serialized
//! exactly as before.

use serde::{Deserialize, Serialize};

/// The command a report or run record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandName {
    Status,
    Drain,
    Resume,
    Install,
    Start,
    Upgrade,
    Report,
    /// `lock status` / `lock release`.
    Lock,
    Preflight,
    /// Named as on the command line.
    #[serde(rename = "db-upgrade")]
    DbUpgrade,
    Maintain,
    /// A refused command line that named no command.
    Unknown,
}

impl CommandName {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Status => "status",
            CommandName::Drain => "drain",
            CommandName::Resume => "resume",
            CommandName::Install => "install",
            CommandName::Start => "start",
            CommandName::Upgrade => "upgrade",
            CommandName::Report => "report",
            CommandName::Lock => "lock",
            CommandName::Preflight => "preflight",
            CommandName::DbUpgrade => "db-upgrade",
            CommandName::Maintain => "maintain",
            CommandName::Unknown => "unknown",
        }
    }

    /// Commands that may change the cell (and so leave a run record and a saved report).
    pub fn changes_the_cell(self) -> bool {
        !matches!(
            self,
            CommandName::Status
                | CommandName::Report
                | CommandName::Lock
                | CommandName::Preflight
                | CommandName::Unknown
        )
    }
}

impl std::fmt::Display for CommandName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a command ended: the drain's ends (also the phase machine's `Done`), the upgrade's,
/// and those of the read-only commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A read-only command that succeeded (`status`); replaced on failure.
    Ok,
    ShutDown,
    Drained,
    Aborted,
    Forced,
    Interrupted,
    Failed,
    Resumed,
    Installed,
    Upgraded,
    Started,
    NothingToDo,
    Flushed,
    /// `db-upgrade`: the database is at the installed version (upgraded now or already).
    DbUpgraded,
    /// `maintain`: the COMMAND ran, the cell is back and healthy.
    Maintained,
    /// `maintain --continue`: no run recorded that it could continue.
    NothingToContinue,
    /// `maintain --reboot`: recorded, reboot requested; the continuation after boot finishes.
    Rebooting,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ShutDown => "shut_down",
            Outcome::Drained => "drained",
            Outcome::Aborted => "aborted",
            Outcome::Forced => "forced",
            Outcome::Interrupted => "interrupted",
            Outcome::Failed => "failed",
            Outcome::Resumed => "resumed",
            Outcome::Installed => "installed",
            Outcome::Upgraded => "upgraded",
            Outcome::Started => "started",
            Outcome::NothingToDo => "nothing_to_do",
            Outcome::Flushed => "flushed",
            Outcome::DbUpgraded => "db_upgraded",
            Outcome::Maintained => "maintained",
            Outcome::Rebooting => "rebooting",
            Outcome::NothingToContinue => "nothing_to_continue",
        }
    }
}

impl Outcome {
    /// The outcome in an operator's words (the closing line).
    pub fn words(self) -> &'static str {
        match self {
            Outcome::Ok => "done",
            Outcome::ShutDown => "done: drained and shut down",
            Outcome::Drained => "done: drained, left running (--no-shutdown)",
            Outcome::Aborted => "aborted at the deadline",
            Outcome::Forced => "done: shut down at the deadline with jobs still running",
            Outcome::Interrupted => "interrupted",
            Outcome::Failed => "failed",
            Outcome::Resumed => "done: this run's changes were undone",
            Outcome::Installed => "done: installed",
            Outcome::Upgraded => "done: upgraded and healthy",
            Outcome::Started => "done: started and healthy",
            Outcome::NothingToDo => "done: nothing to undo",
            Outcome::Flushed => "done",
            Outcome::DbUpgraded => "done: the database is at the installed version",
            Outcome::Maintained => "done: maintained, started and healthy",
            Outcome::Rebooting => "rebooting: `cellctl maintain --continue` finishes after the boot",
            Outcome::NothingToContinue => "done: nothing left to continue",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What state a run left the cell in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellLeft {
    Unchanged,
    Drained,
    ShutDown,
    /// Changed and not yet back: the journal says what is held.
    Changed,
    Running,
    /// A second signal ended the process before it could tell.
    Unknown,
    /// An appliance updated and stopped: it must be rebooted to finish the update.
    RebootRequired,
    /// Drained and shut down; the host's reboot was requested.
    Rebooting,
}

impl CellLeft {
    pub fn as_str(self) -> &'static str {
        match self {
            CellLeft::Unchanged => "unchanged",
            CellLeft::Drained => "drained",
            CellLeft::ShutDown => "shut_down",
            CellLeft::Changed => "changed",
            CellLeft::Running => "running",
            CellLeft::Unknown => "unknown",
            CellLeft::RebootRequired => "reboot_required",
            CellLeft::Rebooting => "rebooting",
        }
    }
}

impl CellLeft {
    /// What a run left the cell as, in an operator's words.
    pub fn words(self) -> &'static str {
        match self {
            CellLeft::Unchanged => "the cell is as it was found",
            CellLeft::Drained => "the cell is drained and still running",
            CellLeft::ShutDown => "the cell is shut down and its service stopped",
            CellLeft::Changed => "the cell is changed and the run is kept: `cellctl status` says what next",
            CellLeft::Running => "the cell is running",
            CellLeft::Unknown => "the cell's state is unknown: `cellctl status` says what next",
            CellLeft::RebootRequired => {
                "the appliance is updated and its service stopped: reboot it to finish the update"
            }
            CellLeft::Rebooting => "the cell is shut down and the host is rebooting",
        }
    }
}

impl std::fmt::Display for CellLeft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_serialize_as_their_strings() {
        for o in [Outcome::ShutDown, Outcome::NothingToDo, Outcome::Upgraded, Outcome::Ok] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        for c in [CellLeft::ShutDown, CellLeft::Unknown] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        for c in [CommandName::Upgrade, CommandName::DbUpgrade, CommandName::Preflight] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}
