//! The stages of `maintain` after the drain, with checked transitions: the COMMAND runs only
//! on a drained, shut-down cell (checked with the phase by `machine`); then either the start
//! and health check, or a reboot recorded before it is requested and continued after the boot.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintStage {
    Drain,
    /// The maintenance COMMAND (in a transient unit).
    Command,
    /// A reboot was decided; not yet requested from the service manager.
    Reboot,
    /// The reboot was requested: the continuation after the boot picks the run up.
    Rebooting,
    /// Start the cell (after a reboot: wait for its service first) and check its health.
    Start,
    Done,
    /// `cellctl resume` brought the cell back without finishing the maintenance.
    Undone,
}

impl MaintStage {
    pub fn as_str(self) -> &'static str {
        match self {
            MaintStage::Drain => "drain",
            MaintStage::Command => "command",
            MaintStage::Reboot => "reboot",
            MaintStage::Rebooting => "rebooting",
            MaintStage::Start => "start",
            MaintStage::Done => "done",
            MaintStage::Undone => "undone",
        }
    }

    /// Recorded as rebooting: the continuation at boot has work to do.
    pub fn rebooting(self) -> bool {
        matches!(self, MaintStage::Reboot | MaintStage::Rebooting)
    }
}

impl std::fmt::Display for MaintStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a `maintain` run reboots after its COMMAND.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootPolicy {
    #[default]
    Never,
    Always,
    /// Only when the system says so (reboot-required file, `needs-restarting -r`).
    IfRequired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintEvent {
    /// The drain shut the cell down (checked against the phase by `machine`).
    Drained,
    /// The COMMAND succeeded; `reboot`: a reboot follows (decided from the policy).
    CommandSucceeded {
        reboot: bool,
    },
    /// The service manager accepted the reboot request.
    RebootRequested,
    /// A new boot was seen (the boot id changed since the reboot was decided).
    Booted,
    Started,
    /// `cellctl resume`: the cell was started and is healthy without the maintenance finished.
    Undone,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid maintain transition: {event:?} in stage {stage:?} (reboot {policy:?})")]
pub struct InvalidMaint {
    pub stage: MaintStage,
    pub event: MaintEvent,
    pub policy: RebootPolicy,
}

impl MaintStage {
    pub fn next(self, event: MaintEvent, policy: RebootPolicy) -> Result<MaintStage, InvalidMaint> {
        use MaintEvent as E;
        use MaintStage as S;
        let next = match (self, event) {
            (S::Drain, E::Drained) => S::Command,
            (S::Command, E::CommandSucceeded { reboot: false }) if policy != RebootPolicy::Always => S::Start,
            (S::Command, E::CommandSucceeded { reboot: true }) if policy != RebootPolicy::Never => S::Reboot,
            // Requested again when a continuation finds the same boot: the reboot did not happen.
            (S::Reboot | S::Rebooting, E::RebootRequested) => S::Rebooting,
            // A process killed by the reboot may not have recorded its request: the new boot says it.
            (S::Reboot | S::Rebooting, E::Booted) => S::Start,
            (S::Start, E::Started) => S::Done,
            (S::Command | S::Start, E::Undone) => S::Undone,
            (stage, event) => return Err(InvalidMaint { stage, event, policy }),
        };
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_event() -> impl Strategy<Value = MaintEvent> {
        prop_oneof![
            Just(MaintEvent::Drained),
            any::<bool>().prop_map(|reboot| MaintEvent::CommandSucceeded { reboot }),
            Just(MaintEvent::RebootRequested),
            Just(MaintEvent::Booted),
            Just(MaintEvent::Started),
            Just(MaintEvent::Undone),
        ]
    }

    fn any_policy() -> impl Strategy<Value = RebootPolicy> {
        prop_oneof![
            Just(RebootPolicy::Never),
            Just(RebootPolicy::Always),
            Just(RebootPolicy::IfRequired)
        ]
    }

    #[test]
    fn reboot_path() {
        let p = RebootPolicy::Always;
        let mut s = MaintStage::Drain;
        for (e, want) in [
            (MaintEvent::Drained, MaintStage::Command),
            (MaintEvent::CommandSucceeded { reboot: true }, MaintStage::Reboot),
            (MaintEvent::RebootRequested, MaintStage::Rebooting),
            (MaintEvent::RebootRequested, MaintStage::Rebooting),
            (MaintEvent::Booted, MaintStage::Start),
            (MaintEvent::Started, MaintStage::Done),
        ] {
            s = s.next(e, p).unwrap();
            assert_eq!(s, want);
        }
        assert!(s.next(MaintEvent::Booted, p).is_err(), "nothing leaves Done");
    }

    #[test]
    fn the_policy_decides_the_reboot() {
        let cmd = MaintStage::Command;
        assert!(
            cmd.next(MaintEvent::CommandSucceeded { reboot: true }, RebootPolicy::Never)
                .is_err()
        );
        assert!(
            cmd.next(MaintEvent::CommandSucceeded { reboot: false }, RebootPolicy::Always)
                .is_err()
        );
        for reboot in [true, false] {
            assert!(
                cmd.next(MaintEvent::CommandSucceeded { reboot }, RebootPolicy::IfRequired)
                    .is_ok()
            );
        }
    }

    proptest! {
        /// Whatever events arrive: the start comes only after the COMMAND succeeded (and, on
        /// the reboot path, after a boot), a reboot only when the policy allows it, Done only
        /// after the start, and nothing leaves a final stage or returns to the drain.
        #[test]
        fn maint_stages_follow_the_plan(policy in any_policy(), events in proptest::collection::vec(any_event(), 0..30)) {
            let mut s = MaintStage::Drain;
            let mut seen = vec![];
            let reboot_ok = MaintEvent::CommandSucceeded { reboot: true };
            for e in events {
                let Ok(n) = s.next(e, policy) else { continue };
                prop_assert!(!matches!(s, MaintStage::Done | MaintStage::Undone), "{:?} left final {:?}", e, s);
                prop_assert!(n != MaintStage::Drain);
                seen.push(e);
                let succeeded = seen.iter().any(|e| matches!(e, MaintEvent::CommandSucceeded { .. }));
                match n {
                    MaintStage::Command => prop_assert_eq!(e, MaintEvent::Drained),
                    MaintStage::Reboot | MaintStage::Rebooting => {
                        prop_assert!(policy != RebootPolicy::Never);
                        prop_assert!(seen.contains(&reboot_ok));
                    }
                    MaintStage::Start => {
                        prop_assert!(succeeded);
                        if seen.contains(&reboot_ok) {
                            prop_assert!(seen.contains(&MaintEvent::Booted), "started without a boot");
                        }
                        prop_assert!(policy != RebootPolicy::Always || seen.contains(&MaintEvent::Booted));
                    }
                    MaintStage::Done => {
                        prop_assert_eq!(s, MaintStage::Start);
                        prop_assert!(succeeded);
                    }
                    MaintStage::Undone => prop_assert!(matches!(s, MaintStage::Command | MaintStage::Start)),
                    MaintStage::Drain => {}
                }
                s = n;
            }
        }
    }
}
