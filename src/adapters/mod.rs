//! Everything outside the process, each behind one small client: the vendor tool, the API,
//! the service manager, the health endpoint, transient install units, packages, credentials,
//! the webhook, child processes. Depends on `model` and `store` only.

pub(crate) mod api;
pub(crate) mod appliance;
pub(crate) mod credentials;
pub(crate) mod exec;
pub(crate) mod health;
pub(crate) mod host;
pub(crate) mod http;
pub(crate) mod install;
pub(crate) mod lock;
pub(crate) mod package;
pub(crate) mod pin;
pub(crate) mod service;
pub(crate) mod vendor;
pub(crate) mod webhook;
