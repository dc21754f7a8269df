//! The drain's phases with checked transitions (as zincati's update agent). Together with the
//! upgrade's stages (`stage.rs`) this is the one state machine of a run; `machine.rs` is its
//! single entry point.
//!
//! The engine does the I/O and feeds events here; a transition the table does not allow is a
//! bug and is refused, so the cell can never be shut down on a path that skipped the double
//! observation of "drained" or an explicit `force`.

use serde::{Deserialize, Serialize};

use super::outcome::Outcome;

/// What to do when the drain's deadline passes with jobs still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineAction {
    #[default]
    Abort,
    Force,
    /// Cancel this cell's running tasks through the API, wait a grace period, then `after_cancel`.
    Cancel,
}

impl DeadlineAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineAction::Abort => "abort",
            DeadlineAction::Force => "force",
            DeadlineAction::Cancel => "cancel",
        }
    }
}

/// How many consecutive polls must show `Job count = 0` and `Is Active = false`.
pub const DRAINED_CONFIRMATIONS: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Deadline,
    Signal,
    Failure,
    /// `cellctl resume`: the operator asked to undo the recorded run.
    Operator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Start,
    Preflighted,
    /// Maintenance message on (or deliberately left alone).
    Prepared,
    Waiting {
        seen_drained: u8,
    },
    /// The deadline passed with `cancel`: tasks were cancelled; waiting out the grace period.
    Canceling {
        seen_drained: u8,
    },
    Drained,
    ShuttingDown {
        forced: bool,
    },
    StoppingService {
        forced: bool,
    },
    RollingBack {
        cause: Cause,
    },
    Done {
        outcome: Outcome,
    },
}

/// The phase in an operator's words (status, logs).
impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let confirming = |n: u8| if n > 0 { ", drained once: confirming" } else { "" };
        match *self {
            Phase::Start => f.write_str("starting"),
            Phase::Preflighted => f.write_str("preflight passed"),
            Phase::Prepared => f.write_str("maintenance message handled, quiescing next"),
            Phase::Waiting { seen_drained } => write!(f, "waiting for jobs to end{}", confirming(seen_drained)),
            Phase::Canceling { seen_drained } => {
                write!(
                    f,
                    "tasks cancelled after the deadline, grace period{}",
                    confirming(seen_drained)
                )
            }
            Phase::Drained => f.write_str("drained"),
            Phase::ShuttingDown { forced } => {
                write!(f, "shutting the cell down{}", if forced { " (forced)" } else { "" })
            }
            Phase::StoppingService { .. } => f.write_str("cell shut down, stopping its service"),
            Phase::RollingBack { cause } => write!(
                f,
                "undoing its changes ({})",
                match cause {
                    Cause::Deadline => "the deadline passed",
                    Cause::Signal => "a stop signal came",
                    Cause::Failure => "a step failed",
                    Cause::Operator => "cellctl resume",
                }
            ),
            Phase::Done { outcome } => write!(f, "ended: {}", outcome.as_str().replace('_', " ")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    PreflightPassed,
    /// The service was already stopped when the run began (install on a stopped cell): there
    /// is nothing to drain.
    AlreadyStopped,
    Prepared,
    Quiesced,
    Observed {
        drained: bool,
    },
    DeadlineReached(DeadlineAction),
    /// A cheap signal (the API's task list for this cell) between tool polls. It may count as
    /// the first "drained" sighting, never the last: only the tool shows `Is Active`.
    Hint {
        drained: bool,
    },
    /// The grace period after cancelling ended with jobs left: abort or force.
    GraceExpired(DeadlineAction),
    /// `--no-shutdown`: stop once drained.
    StopHere,
    BeginShutdown,
    CellShutDown,
    ServiceStopped,
    Interrupt,
    Failure,
    RolledBack,
    /// A new process picked up a recorded run: what it believed in memory is gone.
    Continued,
    /// `cellctl resume` on a recorded run.
    UndoRequested,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transition: {event:?} in phase {phase:?}")]
pub struct InvalidTransition {
    pub phase: Phase,
    pub event: Event,
}

impl Phase {
    pub fn is_done(self) -> bool {
        matches!(self, Phase::Done { .. })
    }

    /// Phases in which the cell may already have been changed but not yet taken down: a
    /// failure or signal here means rolling back.
    pub fn before_shutdown(self) -> bool {
        matches!(
            self,
            Phase::Preflighted | Phase::Prepared | Phase::Waiting { .. } | Phase::Canceling { .. } | Phase::Drained
        )
    }

    /// Whether shutdown of the cell has begun: signals no longer roll back.
    pub fn shutdown_begun(self) -> bool {
        matches!(self, Phase::ShuttingDown { .. } | Phase::StoppingService { .. })
    }

    /// Transitions while watching the cell drain (waiting, or canceling after the deadline):
    /// the count of consecutive "drained" sightings, and the deadline's actions.
    fn watching(self, event: Event) -> Option<Phase> {
        use Event as E;
        use Phase as P;
        let next = match (self, event) {
            (P::Waiting { seen_drained }, E::Observed { drained: true }) => {
                if seen_drained + 1 >= DRAINED_CONFIRMATIONS {
                    P::Drained
                } else {
                    P::Waiting {
                        seen_drained: seen_drained + 1,
                    }
                }
            }
            (P::Waiting { .. }, E::Observed { drained: false }) => P::Waiting { seen_drained: 0 },
            (P::Canceling { seen_drained }, E::Observed { drained: true }) => {
                if seen_drained + 1 >= DRAINED_CONFIRMATIONS {
                    P::Drained
                } else {
                    P::Canceling {
                        seen_drained: seen_drained + 1,
                    }
                }
            }
            (P::Canceling { .. }, E::Observed { drained: false }) => P::Canceling { seen_drained: 0 },
            (P::Waiting { seen_drained }, E::Hint { drained: true }) => P::Waiting {
                seen_drained: seen_drained.max(1),
            },
            (P::Canceling { seen_drained }, E::Hint { drained: true }) => P::Canceling {
                seen_drained: seen_drained.max(1),
            },
            (P::Waiting { .. }, E::Hint { drained: false }) => P::Waiting { seen_drained: 0 },
            (P::Canceling { .. }, E::Hint { drained: false }) => P::Canceling { seen_drained: 0 },
            (P::Waiting { .. }, E::DeadlineReached(DeadlineAction::Cancel)) => P::Canceling { seen_drained: 0 },
            (P::Canceling { .. }, E::GraceExpired(DeadlineAction::Abort)) => P::RollingBack { cause: Cause::Deadline },
            (P::Canceling { .. }, E::GraceExpired(DeadlineAction::Force)) => P::ShuttingDown { forced: true },
            (P::Waiting { .. }, E::DeadlineReached(DeadlineAction::Abort)) => P::RollingBack { cause: Cause::Deadline },
            (P::Waiting { .. }, E::DeadlineReached(DeadlineAction::Force)) => P::ShuttingDown { forced: true },
            _ => return None,
        };
        Some(next)
    }

    pub fn next(self, event: Event) -> Result<Phase, InvalidTransition> {
        use Event as E;
        use Phase as P;
        let next = match (self, event) {
            (P::Start, E::PreflightPassed) => P::Preflighted,
            (P::Start, E::AlreadyStopped) => P::Done {
                outcome: Outcome::ShutDown,
            },
            (P::Start, E::Failure) => P::Done {
                outcome: Outcome::Failed,
            },
            (P::Start, E::Interrupt) => P::Done {
                outcome: Outcome::Interrupted,
            },
            (P::Preflighted, E::Prepared) => P::Prepared,
            (P::Prepared, E::Quiesced) => P::Waiting { seen_drained: 0 },
            (P::Waiting { .. } | P::Canceling { .. }, _) if self.watching(event).is_some() => {
                self.watching(event).expect("checked")
            }
            (P::Drained, E::StopHere) => P::Done {
                outcome: Outcome::Drained,
            },
            (P::Drained, E::BeginShutdown) => P::ShuttingDown { forced: false },
            (P::ShuttingDown { forced }, E::CellShutDown) => P::StoppingService { forced },
            (P::StoppingService { forced }, E::ServiceStopped) => P::Done {
                outcome: if forced { Outcome::Forced } else { Outcome::ShutDown },
            },
            (p, E::Interrupt) if p.before_shutdown() => P::RollingBack { cause: Cause::Signal },
            (p, E::Failure) if p.before_shutdown() => P::RollingBack { cause: Cause::Failure },
            // Once shutdown has begun the step is finished, not abandoned half-way. A failure
            // there (or in a rollback) keeps the phase: the journal says where to pick up.
            (p, E::Interrupt) if p.shutdown_begun() => p,
            (P::RollingBack { cause }, E::RolledBack) => P::Done {
                outcome: match cause {
                    Cause::Deadline => Outcome::Aborted,
                    Cause::Signal => Outcome::Interrupted,
                    Cause::Failure => Outcome::Failed,
                    Cause::Operator => Outcome::Resumed,
                },
            },
            (P::RollingBack { cause }, E::Interrupt) => P::RollingBack { cause },
            // A run parked by --no-shutdown, or one a new process picks up, must see "drained"
            // twice again: what the old process saw is gone.
            (
                P::Waiting { .. }
                | P::Done {
                    outcome: Outcome::Drained,
                },
                E::Continued,
            ) => P::Waiting { seen_drained: 0 },
            (p, E::Continued) if !p.is_done() => p,
            (p, E::UndoRequested)
                if !p.is_done()
                    || p == P::Done {
                        outcome: Outcome::Drained,
                    } =>
            {
                P::RollingBack { cause: Cause::Operator }
            }
            (phase, event) => return Err(InvalidTransition { phase, event }),
        };
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(events: &[Event]) -> Phase {
        events.iter().fold(Phase::Start, |p, e| p.next(*e).unwrap())
    }

    #[test]
    fn happy_path() {
        use Event::*;
        let p = run(&[
            PreflightPassed,
            Prepared,
            Quiesced,
            Observed { drained: false },
            Observed { drained: true },
            Observed { drained: true },
            BeginShutdown,
            CellShutDown,
            ServiceStopped,
        ]);
        assert_eq!(
            p,
            Phase::Done {
                outcome: Outcome::ShutDown
            }
        );
    }

    #[test]
    fn one_drained_poll_is_not_enough() {
        use Event::*;
        let p = run(&[PreflightPassed, Prepared, Quiesced, Observed { drained: true }]);
        assert_eq!(
            p.next(BeginShutdown).unwrap_err().phase,
            Phase::Waiting { seen_drained: 1 }
        );
        // A busy poll in between starts the count again.
        let p = p
            .next(Observed { drained: false })
            .unwrap()
            .next(Observed { drained: true })
            .unwrap();
        assert_eq!(p, Phase::Waiting { seen_drained: 1 });
    }

    #[test]
    fn deadline_actions() {
        use Event::*;
        let w = run(&[PreflightPassed, Prepared, Quiesced]);
        let abort = w
            .next(DeadlineReached(DeadlineAction::Abort))
            .unwrap()
            .next(RolledBack)
            .unwrap();
        assert_eq!(
            abort,
            Phase::Done {
                outcome: Outcome::Aborted
            }
        );
        let force = w
            .next(DeadlineReached(DeadlineAction::Force))
            .unwrap()
            .next(CellShutDown)
            .unwrap()
            .next(ServiceStopped)
            .unwrap();
        assert_eq!(
            force,
            Phase::Done {
                outcome: Outcome::Forced
            }
        );
    }

    #[test]
    fn a_hint_is_a_first_sighting_never_the_last() {
        use Event::*;
        let w = run(&[PreflightPassed, Prepared, Quiesced]);
        let h = w
            .next(Hint { drained: true })
            .unwrap()
            .next(Hint { drained: true })
            .unwrap();
        assert_eq!(
            h,
            Phase::Waiting { seen_drained: 1 },
            "hints alone never complete a drain"
        );
        assert_eq!(h.next(Observed { drained: true }).unwrap(), Phase::Drained);
        assert_eq!(
            h.next(Hint { drained: false }).unwrap(),
            Phase::Waiting { seen_drained: 0 }
        );
    }

    #[test]
    fn cancel_then_grace() {
        use Event::*;
        let w = run(&[PreflightPassed, Prepared, Quiesced]);
        let c = w.next(DeadlineReached(DeadlineAction::Cancel)).unwrap();
        assert_eq!(c, Phase::Canceling { seen_drained: 0 });
        let d = c
            .next(Observed { drained: true })
            .unwrap()
            .next(Observed { drained: true })
            .unwrap();
        assert_eq!(d, Phase::Drained);
        assert_eq!(
            c.next(GraceExpired(DeadlineAction::Abort)).unwrap(),
            Phase::RollingBack { cause: Cause::Deadline }
        );
        assert_eq!(
            c.next(GraceExpired(DeadlineAction::Force)).unwrap(),
            Phase::ShuttingDown { forced: true }
        );
        // Only from Canceling.
        assert!(w.next(GraceExpired(DeadlineAction::Force)).is_err());
    }

    #[test]
    fn signal_during_shutdown_finishes_the_step() {
        use Event::*;
        let p = run(&[
            PreflightPassed,
            Prepared,
            Quiesced,
            Observed { drained: true },
            Observed { drained: true },
            BeginShutdown,
        ]);
        assert_eq!(p.next(Interrupt).unwrap(), p);
    }

    #[test]
    fn a_signal_or_failure_while_canceling_rolls_back() {
        let c = Phase::Canceling { seen_drained: 1 };
        assert_eq!(
            c.next(Event::Interrupt).unwrap(),
            Phase::RollingBack { cause: Cause::Signal }
        );
        assert_eq!(
            c.next(Event::Failure).unwrap(),
            Phase::RollingBack { cause: Cause::Failure }
        );
    }

    #[test]
    fn continued_run_must_see_drained_twice_again() {
        let p = Phase::Waiting { seen_drained: 1 }.next(Event::Continued).unwrap();
        assert_eq!(p, Phase::Waiting { seen_drained: 0 });
    }

    fn any_event() -> impl Strategy<Value = Event> {
        use Event::*;
        prop_oneof![
            Just(PreflightPassed),
            Just(AlreadyStopped),
            Just(Prepared),
            Just(Quiesced),
            any::<bool>().prop_map(|d| Observed { drained: d }),
            any::<bool>().prop_map(|d| Hint { drained: d }),
            Just(DeadlineReached(DeadlineAction::Abort)),
            Just(DeadlineReached(DeadlineAction::Force)),
            Just(DeadlineReached(DeadlineAction::Cancel)),
            Just(GraceExpired(DeadlineAction::Abort)),
            Just(GraceExpired(DeadlineAction::Force)),
            Just(StopHere),
            Just(BeginShutdown),
            Just(CellShutDown),
            Just(ServiceStopped),
            Just(Interrupt),
            Just(Failure),
            Just(RolledBack),
            Just(Continued),
            Just(UndoRequested),
        ]
    }

    proptest! {
        /// Whatever happens, an unforced shutdown is entered only right after two consecutive
        /// drained observations in this process, a forced one only on a `force` deadline, and
        /// nothing leaves a finished run.
        #[test]
        fn shutdown_only_when_safe(events in proptest::collection::vec(any_event(), 0..60)) {
            let mut p = Phase::Start;
            let mut consecutive = 0u8;
            for e in events {
                let Ok(n) = p.next(e) else {
                    let observed_in_wait = matches!(p, Phase::Waiting { .. } | Phase::Canceling { .. }) && matches!(e, Event::Observed { .. });
                    prop_assert!(!observed_in_wait, "a poll result was refused while waiting");
                    continue;
                };
                // Only a parked (drained, not shut down) run may be picked up again.
                if p.is_done() {
                    prop_assert_eq!(p, Phase::Done { outcome: Outcome::Drained });
                    let picked_up = matches!(n, Phase::Waiting { seen_drained: 0 } | Phase::RollingBack { .. });
                    prop_assert!(picked_up, "parked run went to {:?}", n);
                }
                // Drained is reached only on the tool's own observation.
                if n == Phase::Drained && !matches!(p, Phase::Drained | Phase::Done { .. }) {
                    prop_assert_eq!(e, Event::Observed { drained: true });
                }
                match (p, e) {
                    (Phase::Waiting{..} | Phase::Canceling{..}, Event::Observed{drained: true} | Event::Hint{drained: true}) => consecutive += 1,
                    (Phase::Waiting{..} | Phase::Canceling{..}, Event::Hint{drained: false}) => consecutive = 0,
                    (Phase::Waiting{..} | Phase::Canceling{..}, Event::Observed{drained: false} | Event::Continued) => consecutive = 0,
                    (_, Event::DeadlineReached(DeadlineAction::Cancel)) => consecutive = 0,
                    _ => {}
                }
                if let Phase::ShuttingDown { forced } = n && !p.shutdown_begun() {
                    if forced {
                        let forced_by_choice = e == Event::DeadlineReached(DeadlineAction::Force)
                            || (matches!(p, Phase::Canceling { .. }) && e == Event::GraceExpired(DeadlineAction::Force));
                        prop_assert!(forced_by_choice, "forced shutdown on {:?} in {:?}", e, p);
                    } else {
                        prop_assert_eq!(p, Phase::Drained);
                        prop_assert!(consecutive >= DRAINED_CONFIRMATIONS);
                    }
                }
                if matches!(p, Phase::RollingBack{..}) {
                    let to_shutdown = matches!(n, Phase::ShuttingDown { .. } | Phase::StoppingService { .. });
                    prop_assert!(!to_shutdown, "rollback went to shutdown");
                }
                p = n;
            }
        }
    }
}
