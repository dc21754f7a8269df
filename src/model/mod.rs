//! The vocabulary of a run: plain data and the checked state machine. Imports nothing else of
//! the crate, so every other layer can use it (see docs/architecture.md).

pub(crate) mod exit;
pub(crate) mod machine;
pub(crate) mod maintain;
pub(crate) mod outcome;
pub(crate) mod package;
pub(crate) mod phase;
pub(crate) mod stage;
pub(crate) mod step;
pub(crate) mod time;
