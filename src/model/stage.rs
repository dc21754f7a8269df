//! The stages of `install` and `upgrade` after the drain, with checked transitions: the drain
//! (whose progress is the phase) must have shut the cell down before anything is installed,
//! the database upgrade comes only after the install and only when asked, and the start only
//! after both. An appliance update (`vamicli`) has three stages before the drain: unpack the
//! package, set vamicli's repository, check that it offers the package's version; nothing of
//! the cell is touched until the check passed. An appliance's `upgrade` reboots instead of
//! starting: after the install (and the database upgrade) the reboot is recorded, then
//! requested; the new boot leads to the start stage, which there waits for the cell, checks its
//! health and the installed version.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Drain,
    Install,
    DbUpgrade,
    Start,
    Done,
    /// Appliance, before the drain.
    Unpack,
    SetRepo,
    CheckUpdate,
    /// Appliance `upgrade`: the reboot is decided (boot id recorded), not yet requested.
    Reboot,
    /// Appliance `upgrade`: the reboot was requested; the continuation after the boot goes on.
    Rebooting,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Drain => "drain",
            Stage::Install => "install",
            Stage::DbUpgrade => "db_upgrade",
            Stage::Start => "start",
            Stage::Done => "done",
            Stage::Unpack => "unpack",
            Stage::SetRepo => "set_repo",
            Stage::CheckUpdate => "check_update",
            Stage::Reboot => "reboot",
            Stage::Rebooting => "rebooting",
        }
    }

    /// The position in the procedure's order (the enum's order is its history, not this).
    pub fn rank(self) -> u8 {
        match self {
            Stage::Unpack => 0,
            Stage::SetRepo => 1,
            Stage::CheckUpdate => 2,
            Stage::Drain => 3,
            Stage::Install => 4,
            Stage::DbUpgrade => 5,
            Stage::Reboot => 6,
            Stage::Rebooting => 7,
            Stage::Start => 8,
            Stage::Done => 9,
        }
    }

    /// Recorded as rebooting: the continuation at boot has work to do.
    pub fn rebooting(self) -> bool {
        matches!(self, Stage::Reboot | Stage::Rebooting)
    }

    /// Before the drain: nothing of the cell has been changed.
    pub fn before_drain(self) -> bool {
        self.rank() < Stage::Drain.rank()
    }

    /// Past the drain (the cell shut down or found stopped).
    pub fn after_drain(self) -> bool {
        self.rank() > Stage::Drain.rank()
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an `install`/`upgrade` run was asked to do after the install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub db_upgrade: bool,
    pub start: bool,
    /// An appliance update: the vamicli stages before the drain, and a reboot in place of the
    /// start (`upgrade`; `install` neither starts nor reboots).
    pub appliance: bool,
}

impl Plan {
    /// The run reboots the host after the install (an appliance's `upgrade`).
    pub fn reboots(self) -> bool {
        self.appliance && self.start
    }
}

/// A stage finished (each names what completed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageEvent {
    /// The drain shut the cell down (checked against the phase by `machine`).
    Drained,
    Installed,
    DbUpgraded,
    Started,
    /// Appliance: the package is unpacked in its folder.
    Unpacked,
    /// Appliance: vamicli's repository is the folder.
    RepoSet,
    /// Appliance: vamicli offers the package's version, newer than the installed one.
    UpdateOffered,
    /// Appliance `upgrade`: the service manager accepted the reboot request.
    RebootRequested,
    /// Appliance `upgrade`: a new boot was seen (the boot id changed since the reboot was decided).
    Booted,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stage transition: {event:?} in stage {stage:?}")]
pub struct InvalidStage {
    pub stage: Stage,
    pub event: StageEvent,
}

impl Stage {
    /// The checked order of stages; anything else is refused.
    pub fn next(self, event: StageEvent, plan: Plan) -> Result<Stage, InvalidStage> {
        use Stage as S;
        use StageEvent as E;
        let after_install = |db_done: bool| {
            if plan.db_upgrade && !db_done {
                S::DbUpgrade
            } else if plan.reboots() {
                S::Reboot
            } else if plan.start && !plan.appliance {
                S::Start
            } else {
                S::Done
            }
        };
        match (self, event) {
            (S::Drain, E::Drained) => Ok(S::Install),
            (S::Install, E::Installed) => Ok(after_install(false)),
            (S::DbUpgrade, E::DbUpgraded) => Ok(after_install(true)),
            (S::Start, E::Started) => Ok(S::Done),
            (S::Unpack, E::Unpacked) if plan.appliance => Ok(S::SetRepo),
            (S::SetRepo, E::RepoSet) if plan.appliance => Ok(S::CheckUpdate),
            (S::CheckUpdate, E::UpdateOffered) if plan.appliance => Ok(S::Drain),
            // Requested again when a continuation finds the same boot: the reboot did not happen.
            (S::Reboot | S::Rebooting, E::RebootRequested) if plan.reboots() => Ok(S::Rebooting),
            // A process killed by the reboot may not have recorded its request: the new boot says it.
            (S::Reboot | S::Rebooting, E::Booted) if plan.reboots() => Ok(S::Start),
            (stage, event) => Err(InvalidStage { stage, event }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_event() -> impl Strategy<Value = StageEvent> {
        prop_oneof![
            Just(StageEvent::Drained),
            Just(StageEvent::Installed),
            Just(StageEvent::DbUpgraded),
            Just(StageEvent::Started),
            Just(StageEvent::Unpacked),
            Just(StageEvent::RepoSet),
            Just(StageEvent::UpdateOffered),
            Just(StageEvent::RebootRequested),
            Just(StageEvent::Booted),
        ]
    }

    #[test]
    fn full_upgrade_order() {
        let plan = Plan {
            db_upgrade: true,
            start: true,
            appliance: false,
        };
        let mut s = Stage::Drain;
        for (e, want) in [
            (StageEvent::Drained, Stage::Install),
            (StageEvent::Installed, Stage::DbUpgrade),
            (StageEvent::DbUpgraded, Stage::Start),
            (StageEvent::Started, Stage::Done),
        ] {
            s = s.next(e, plan).unwrap();
            assert_eq!(s, want);
        }
        assert!(s.next(StageEvent::Started, plan).is_err(), "nothing leaves Done");
    }

    #[test]
    fn install_alone_ends_after_the_install() {
        let plan = Plan {
            db_upgrade: false,
            start: false,
            appliance: false,
        };
        assert_eq!(Stage::Install.next(StageEvent::Installed, plan).unwrap(), Stage::Done);
        assert!(Stage::Install.next(StageEvent::Started, plan).is_err());
    }

    #[test]
    fn an_appliance_checks_before_the_drain_and_reboots_in_place_of_the_start() {
        let plan = Plan {
            db_upgrade: true,
            start: true,
            appliance: true,
        };
        let mut s = Stage::Unpack;
        for (e, want) in [
            (StageEvent::Unpacked, Stage::SetRepo),
            (StageEvent::RepoSet, Stage::CheckUpdate),
            (StageEvent::UpdateOffered, Stage::Drain),
            (StageEvent::Drained, Stage::Install),
            (StageEvent::Installed, Stage::DbUpgrade),
            (StageEvent::DbUpgraded, Stage::Reboot),
            (StageEvent::RebootRequested, Stage::Rebooting),
            // The same boot at a continuation: requested again.
            (StageEvent::RebootRequested, Stage::Rebooting),
            (StageEvent::Booted, Stage::Start),
            (StageEvent::Started, Stage::Done),
        ] {
            s = s.next(e, plan).unwrap();
            assert_eq!(s, want);
        }
        // Killed by the reboot before its request was recorded: the new boot says it.
        assert_eq!(Stage::Reboot.next(StageEvent::Booted, plan).unwrap(), Stage::Start);
        // `install` on an appliance neither starts nor reboots.
        let install = Plan { start: false, ..plan };
        assert_eq!(
            Stage::DbUpgrade.next(StageEvent::DbUpgraded, install).unwrap(),
            Stage::Done
        );
        assert!(Stage::Reboot.next(StageEvent::RebootRequested, install).is_err());
        let linux = Plan {
            appliance: false,
            ..plan
        };
        assert!(Stage::Unpack.next(StageEvent::Unpacked, linux).is_err());
        assert!(Stage::CheckUpdate.next(StageEvent::UpdateOffered, linux).is_err());
    }

    proptest! {
        /// Whatever events arrive, stages only move forward in the vendor's order: the
        /// appliance's unpack, repository and check (only for an appliance, in that order,
        /// all before the drain), the database upgrade only when planned and after the
        /// install, the start only when planned and after the install (and the database
        /// upgrade, when planned), on an appliance only after the reboot was requested or a new
        /// boot seen, the reboot only on an appliance's upgrade, and Done only once every
        /// planned stage completed.
        #[test]
        fn stages_follow_the_plan(
            db_upgrade in any::<bool>(),
            start in any::<bool>(),
            appliance in any::<bool>(),
            events in proptest::collection::vec(any_event(), 0..24),
        ) {
            let plan = Plan { db_upgrade, start, appliance };
            let mut s = if appliance { Stage::Unpack } else { Stage::Drain };
            let mut completed = vec![];
            for e in events {
                let Ok(n) = s.next(e, plan) else { continue };
                let again = s == Stage::Rebooting && e == StageEvent::RebootRequested;
                prop_assert!(n.rank() > s.rank() || (again && n == s), "{:?} -> {:?} went backwards", s, n);
                completed.push(e);
                let had = |e: StageEvent| completed.contains(&e);
                if n.after_drain() {
                    prop_assert!(had(StageEvent::Drained));
                    prop_assert_eq!(appliance, had(StageEvent::UpdateOffered));
                }
                match n {
                    Stage::SetRepo => prop_assert!(appliance && had(StageEvent::Unpacked)),
                    Stage::CheckUpdate => prop_assert!(appliance && had(StageEvent::RepoSet)),
                    Stage::Drain => prop_assert!(appliance && had(StageEvent::UpdateOffered)),
                    Stage::DbUpgrade => {
                        prop_assert!(plan.db_upgrade);
                        prop_assert!(had(StageEvent::Installed));
                    }
                    Stage::Reboot | Stage::Rebooting => {
                        prop_assert!(plan.reboots());
                        prop_assert!(had(StageEvent::Installed));
                        prop_assert_eq!(plan.db_upgrade, had(StageEvent::DbUpgraded));
                        prop_assert_eq!(n == Stage::Rebooting, had(StageEvent::RebootRequested));
                    }
                    Stage::Start => {
                        prop_assert!(plan.start);
                        prop_assert!(had(StageEvent::Installed));
                        prop_assert_eq!(plan.db_upgrade, had(StageEvent::DbUpgraded));
                        prop_assert_eq!(appliance, had(StageEvent::Booted));
                    }
                    Stage::Done => {
                        prop_assert!(had(StageEvent::Installed));
                        prop_assert_eq!(plan.db_upgrade, had(StageEvent::DbUpgraded));
                        prop_assert_eq!(plan.start, had(StageEvent::Started));
                        prop_assert_eq!(plan.reboots(), had(StageEvent::Booted));
                    }
                    Stage::Install => prop_assert_eq!(e, StageEvent::Drained),
                    Stage::Unpack => prop_assert!(false, "nothing returns to the unpack"),
                }
                s = n;
            }
        }
    }
}
