//! What cellctl tells people and machines: the report (JSON and text), live events, metrics
//! and the progress line. Depends on `model`, `store`, `adapters` and the error type.

pub(crate) mod events;
pub(crate) mod human;
pub(crate) mod metrics;
pub(crate) mod progress;
pub(crate) mod report;
