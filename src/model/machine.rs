//! The one state machine of a run: every phase and stage change goes through [`Position::next`],
//! which checks the drain's transitions (`phase.rs`), the upgrade's (`stage.rs`) and the rule
//! that binds them: nothing is installed before the drain has shut the cell down.

use super::maintain::{InvalidMaint, MaintEvent, MaintStage, RebootPolicy};
use super::outcome::Outcome;
use super::phase::{Event, InvalidTransition, Phase};
use super::stage::{InvalidStage, Plan, Stage, StageEvent};

/// Where a run is: the drain's phase and, for `install`/`upgrade`, the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub phase: Phase,
    /// With the plan it follows; None for a plain drain or resume.
    pub stage: Option<(Stage, Plan)>,
    /// For `maintain`: its stage and reboot policy.
    pub maint: Option<(MaintStage, RebootPolicy)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Drain(Event),
    Stage(StageEvent),
    Maint(MaintEvent),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Phase(#[from] InvalidTransition),
    #[error(transparent)]
    Stage(#[from] InvalidStage),
    #[error(transparent)]
    Maint(#[from] InvalidMaint),
    #[error("{event:?} needs a `maintain` run")]
    NoMaint { event: MaintEvent },
    #[error("{event:?} needs a run with stages (install or upgrade)")]
    NoStages { event: StageEvent },
    #[error("the drain has not shut the cell down (phase {phase:?}): nothing may be installed")]
    NotShutDown { phase: Phase },
    #[error("phase {phase:?} cannot change in stage {stage:?}: the drain is over")]
    DrainOver { phase: Phase, stage: Stage },
    #[error(
        "phase {phase:?} cannot change in stage {stage:?}: the drain has not begun (the appliance's checks come first)"
    )]
    DrainNotBegun { phase: Phase, stage: Stage },
    #[error("phase {phase:?} cannot change in maintain stage {stage:?}: the drain is over")]
    MaintDrainOver { phase: Phase, stage: MaintStage },
}

impl Position {
    pub fn next(self, t: Transition) -> Result<Position, Refused> {
        match t {
            Transition::Drain(ev) => {
                // Past its drain a run's phase is final; the one exception is the start of a run
                // on a cell found stopped, which had nothing to drain: an install, the
                // database upgrade alone (`db-upgrade`), or an installed appliance's reboot
                // (`start`).
                let fresh = self.phase == Phase::Start && ev == Event::AlreadyStopped;
                if let Some((stage, _)) = self.stage
                    && stage.before_drain()
                {
                    return Err(Refused::DrainNotBegun {
                        phase: self.phase,
                        stage,
                    });
                }
                if let Some((stage, _)) = self.stage
                    && stage != Stage::Drain
                    && !(matches!(stage, Stage::Install | Stage::DbUpgrade | Stage::Reboot) && fresh)
                {
                    return Err(Refused::DrainOver {
                        phase: self.phase,
                        stage,
                    });
                }
                if let Some((m, _)) = self.maint
                    && m != MaintStage::Drain
                {
                    return Err(Refused::MaintDrainOver {
                        phase: self.phase,
                        stage: m,
                    });
                }
                Ok(Position {
                    phase: self.phase.next(ev)?,
                    ..self
                })
            }
            Transition::Stage(ev) => {
                let Some((stage, plan)) = self.stage else {
                    return Err(Refused::NoStages { event: ev });
                };
                if stage == Stage::Drain && !self.shut_down() {
                    return Err(Refused::NotShutDown { phase: self.phase });
                }
                Ok(Position {
                    stage: Some((stage.next(ev, plan)?, plan)),
                    ..self
                })
            }
            Transition::Maint(ev) => {
                let Some((stage, policy)) = self.maint else {
                    return Err(Refused::NoMaint { event: ev });
                };
                if stage == MaintStage::Drain && !self.shut_down() {
                    return Err(Refused::NotShutDown { phase: self.phase });
                }
                Ok(Position {
                    maint: Some((stage.next(ev, policy)?, policy)),
                    ..self
                })
            }
        }
    }

    /// The drain shut the cell down (confirmed, or forced by choice).
    fn shut_down(self) -> bool {
        matches!(
            self.phase,
            Phase::Done {
                outcome: Outcome::ShutDown | Outcome::Forced
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::phase::DeadlineAction;
    use proptest::prelude::*;

    fn any_transition() -> impl Strategy<Value = Transition> {
        use Event::*;
        prop_oneof![
            Just(Transition::Drain(PreflightPassed)),
            Just(Transition::Drain(AlreadyStopped)),
            Just(Transition::Drain(Prepared)),
            Just(Transition::Drain(Quiesced)),
            any::<bool>().prop_map(|d| Transition::Drain(Observed { drained: d })),
            Just(Transition::Drain(DeadlineReached(DeadlineAction::Abort))),
            Just(Transition::Drain(DeadlineReached(DeadlineAction::Force))),
            Just(Transition::Drain(BeginShutdown)),
            Just(Transition::Drain(CellShutDown)),
            Just(Transition::Drain(ServiceStopped)),
            Just(Transition::Drain(Interrupt)),
            Just(Transition::Drain(Failure)),
            Just(Transition::Drain(RolledBack)),
            Just(Transition::Stage(StageEvent::Drained)),
            Just(Transition::Stage(StageEvent::Installed)),
            Just(Transition::Stage(StageEvent::DbUpgraded)),
            Just(Transition::Stage(StageEvent::Started)),
            Just(Transition::Stage(StageEvent::Unpacked)),
            Just(Transition::Stage(StageEvent::RepoSet)),
            Just(Transition::Stage(StageEvent::UpdateOffered)),
        ]
    }

    proptest! {
        /// Whatever happens, an upgrade reaches its install only with the cell shut down (by
        /// a confirmed drain, a chosen force, or because it was already stopped), and once it
        /// is installing the drain's phase never moves again.
        #[test]
        fn nothing_is_installed_on_a_serving_cell(
            db_upgrade in any::<bool>(),
            start in any::<bool>(),
            appliance in any::<bool>(),
            ts in proptest::collection::vec(any_transition(), 0..80),
        ) {
            let plan = Plan { db_upgrade, start, appliance };
            let first = if appliance { Stage::Unpack } else { Stage::Drain };
            let mut p = Position { phase: Phase::Start, stage: Some((first, plan)), maint: None };
            for t in ts {
                let Ok(n) = p.next(t) else { continue };
                let (stage, _) = n.stage.expect("keeps its stages");
                if stage.before_drain() {
                    prop_assert_eq!(n.phase, Phase::Start, "the drain began in stage {:?}", stage);
                }
                if stage.after_drain() {
                    let down = matches!(n.phase, Phase::Done { outcome: Outcome::ShutDown | Outcome::Forced });
                    prop_assert!(down, "stage {:?} with phase {:?}", stage, n.phase);
                }
                if let Some((s0, _)) = p.stage && s0.after_drain() {
                    prop_assert_eq!(p.phase, n.phase);
                }
                p = n;
            }
        }
    }

    fn any_maint_transition() -> impl Strategy<Value = Transition> {
        prop_oneof![
            any_transition(),
            Just(Transition::Maint(MaintEvent::Drained)),
            any::<bool>().prop_map(|reboot| Transition::Maint(MaintEvent::CommandSucceeded { reboot })),
            Just(Transition::Maint(MaintEvent::RebootRequested)),
            Just(Transition::Maint(MaintEvent::Booted)),
            Just(Transition::Maint(MaintEvent::Started)),
            Just(Transition::Maint(MaintEvent::Undone)),
        ]
    }

    proptest! {
        /// Whatever happens, a `maintain` run's COMMAND (and anything after it) comes only with
        /// the cell shut down by its drain, the drain's phase never moves once it is over, and
        /// upgrade stages never apply to it.
        #[test]
        fn the_command_runs_only_on_a_shut_down_cell(
            policy in prop_oneof![Just(RebootPolicy::Never), Just(RebootPolicy::Always), Just(RebootPolicy::IfRequired)],
            ts in proptest::collection::vec(any_maint_transition(), 0..80),
        ) {
            let mut p = Position { phase: Phase::Start, stage: None, maint: Some((MaintStage::Drain, policy)) };
            for t in ts {
                let Ok(n) = p.next(t) else { continue };
                prop_assert!(n.stage.is_none());
                let (m, _) = n.maint.expect("keeps its stages");
                if m != MaintStage::Drain {
                    prop_assert!(n.shut_down(), "stage {:?} with phase {:?}", m, n.phase);
                }
                if let Some((m0, _)) = p.maint && m0 != MaintStage::Drain {
                    prop_assert_eq!(p.phase, n.phase);
                }
                p = n;
            }
        }
    }

    #[test]
    fn a_database_upgrade_alone_starts_on_a_stopped_cell_and_ends_done() {
        let plan = Plan {
            db_upgrade: true,
            start: false,
            appliance: false,
        };
        let p = Position {
            phase: Phase::Start,
            stage: Some((Stage::DbUpgrade, plan)),
            maint: None,
        };
        let p = p.next(Transition::Drain(Event::AlreadyStopped)).unwrap();
        assert_eq!(
            p.phase,
            Phase::Done {
                outcome: Outcome::ShutDown
            }
        );
        // Once begun, the drain's phase never moves again.
        assert!(p.next(Transition::Drain(Event::AlreadyStopped)).is_err());
        assert!(p.next(Transition::Drain(Event::Failure)).is_err());
        let p = p.next(Transition::Stage(StageEvent::DbUpgraded)).unwrap();
        assert_eq!(p.stage.map(|(s, _)| s), Some(Stage::Done));
    }

    /// `start` on an installed appliance: a run that begins at its reboot on the stopped cell,
    /// goes through the reboot and the boot, and ends at its start.
    #[test]
    fn an_installed_appliances_reboot_starts_on_a_stopped_cell_and_ends_done() {
        let plan = Plan {
            db_upgrade: false,
            start: true,
            appliance: true,
        };
        let p = Position {
            phase: Phase::Start,
            stage: Some((Stage::Reboot, plan)),
            maint: None,
        };
        let p = p.next(Transition::Drain(Event::AlreadyStopped)).unwrap();
        assert!(p.shut_down());
        assert!(p.next(Transition::Drain(Event::AlreadyStopped)).is_err());
        // Nothing is installed or upgraded again in this run.
        assert!(p.next(Transition::Stage(StageEvent::Installed)).is_err());
        assert!(p.next(Transition::Stage(StageEvent::DbUpgraded)).is_err());
        assert!(
            p.next(Transition::Stage(StageEvent::Started)).is_err(),
            "no start before the boot"
        );
        let p = p.next(Transition::Stage(StageEvent::RebootRequested)).unwrap();
        assert_eq!(p.stage.map(|(s, _)| s), Some(Stage::Rebooting));
        let p = p.next(Transition::Stage(StageEvent::Booted)).unwrap();
        assert_eq!(p.stage.map(|(s, _)| s), Some(Stage::Start));
        let p = p.next(Transition::Stage(StageEvent::Started)).unwrap();
        assert_eq!(p.stage.map(|(s, _)| s), Some(Stage::Done));
        // A run that did not reboot (a Linux cell's) cannot begin there.
        let linux = Position {
            phase: Phase::Start,
            stage: Some((
                Stage::Reboot,
                Plan {
                    appliance: false,
                    ..plan
                },
            )),
            maint: None,
        };
        assert!(linux.next(Transition::Stage(StageEvent::RebootRequested)).is_err());
    }

    #[test]
    fn a_drain_has_no_stages() {
        let p = Position {
            phase: Phase::Start,
            stage: None,
            maint: None,
        };
        assert!(matches!(
            p.next(Transition::Stage(StageEvent::Installed)),
            Err(Refused::NoStages { .. })
        ));
    }
}
