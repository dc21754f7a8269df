//! The stages of `install` and `upgrade` after the drain, with checked transitions: the drain
//! (whose progress is the phase) must have shut the cell down before anything is installed,
//! the database upgrade comes only after the install and only when asked, and the start only
//! after both.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Drain,
    Install,
    DbUpgrade,
    Start,
    Done,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Drain => "drain",
            Stage::Install => "install",
            Stage::DbUpgrade => "db_upgrade",
            Stage::Start => "start",
            Stage::Done => "done",
        }
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
}

/// A stage finished (each names what completed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageEvent {
    /// The drain shut the cell down (checked against the phase by `machine`).
    Drained,
    Installed,
    DbUpgraded,
    Started,
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
            } else if plan.start {
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
        ]
    }

    #[test]
    fn full_upgrade_order() {
        let plan = Plan {
            db_upgrade: true,
            start: true,
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
        };
        assert_eq!(Stage::Install.next(StageEvent::Installed, plan).unwrap(), Stage::Done);
        assert!(Stage::Install.next(StageEvent::Started, plan).is_err());
    }

    proptest! {
        /// Whatever events arrive, stages only move forward in the vendor's order: the
        /// database upgrade only when planned and after the install, the start only when
        /// planned and after the install (and the database upgrade, when planned), and Done
        /// only once every planned stage completed.
        #[test]
        fn stages_follow_the_plan(
            db_upgrade in any::<bool>(),
            start in any::<bool>(),
            events in proptest::collection::vec(any_event(), 0..20),
        ) {
            let plan = Plan { db_upgrade, start };
            let mut s = Stage::Drain;
            let mut completed = vec![];
            for e in events {
                let Ok(n) = s.next(e, plan) else { continue };
                prop_assert!(n as u8 > s as u8, "{:?} -> {:?} went backwards", s, n);
                completed.push(e);
                match n {
                    Stage::DbUpgrade => {
                        prop_assert!(plan.db_upgrade);
                        prop_assert!(completed.contains(&StageEvent::Installed));
                    }
                    Stage::Start => {
                        prop_assert!(plan.start);
                        prop_assert!(completed.contains(&StageEvent::Installed));
                        prop_assert_eq!(plan.db_upgrade, completed.contains(&StageEvent::DbUpgraded));
                    }
                    Stage::Done => {
                        prop_assert!(completed.contains(&StageEvent::Installed));
                        prop_assert_eq!(plan.db_upgrade, completed.contains(&StageEvent::DbUpgraded));
                        prop_assert_eq!(plan.start, completed.contains(&StageEvent::Started));
                    }
                    Stage::Install => prop_assert_eq!(e, StageEvent::Drained),
                    Stage::Drain => prop_assert!(false, "nothing returns to the drain"),
                }
                s = n;
            }
        }
    }
}
