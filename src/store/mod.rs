//! What cellctl keeps on disk under the state directory: the run journal and its lock, saved
//! reports, and the atomic write they all use. Depends on `model` only.

pub(crate) mod atomic;
pub(crate) mod journal;
pub(crate) mod record;
pub(crate) mod reports;
pub(crate) mod slot;
pub(crate) mod trust;
