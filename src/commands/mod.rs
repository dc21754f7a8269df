//! One module per command: each lists its steps on the engine (`crate::engine`) and nothing
//! else. A new command that changes the cell is a `lifecycle::Procedure` here.

pub(crate) mod appliance;
pub(crate) mod db_upgrade;
pub(crate) mod drain;
pub(crate) mod lock;
pub(crate) mod maintain;
pub(crate) mod preflight;
pub(crate) mod report;
pub(crate) mod resume;
pub(crate) mod start;
pub(crate) mod status;
pub(crate) mod upgrade;
