//! The run engine: one lifecycle for every command that changes the cell (lock, continue or
//! start a run, record each step before taking it, conclude into a report), the read-only
//! context a run works with, and the building blocks commands are made of (the drain, a step in
//! a transient unit, start until healthy). Commands (`crate::commands`) list only their steps.

pub(crate) mod context;
pub(crate) mod drain;
pub(crate) mod health;
pub(crate) mod lifecycle;
pub(crate) mod preflight;
pub(crate) mod reboot;
pub(crate) mod run;
pub(crate) mod signals;
pub(crate) mod slot;
pub(crate) mod units;
pub(crate) mod wait;
