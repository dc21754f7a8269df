//! Fleet-wide slots: one client seam, two backends (as afterburn keeps one provider trait with
//! a module per cloud).
//!
//! - **etcd** (`etcd.rs`): a counting semaphore per group, one JSON value at a key, changed only
//!   by compare-and-swap on the key's version through etcd's v3 JSON gateway. The value keeps
//!   airlock's shape (`{"semaphore":{"total_slots":N,"holders":[ids]}}`, at airlock's key) and
//!   adds cellctl's own object beside it (each holder's `since` and `host`, a bounded history of
//!   releases), so cellctl cells and an airlock server can share one group.
//! - **FleetLock** (`fleetlock.rs`): the protocol Zincati and airlock speak, exactly.
//!
//! No TTL, no lease: a dead holder keeps its slot (fails closed); `cellctl lock release` frees it.
//! Locks are owned and recursive: an id already holding takes again with success, and releasing
//! an id that holds nothing succeeds.

mod etcd;
mod fleetlock;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::adapters::http::{self, Trust};
use crate::model::time::Timestamp;

pub use etcd::HistoryEntry;

/// Each request's limits: the lock service is on the local network or it is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Etcd,
    #[serde(rename = "fleetlock")]
    FleetLock,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Etcd => "etcd",
            Backend::FleetLock => "fleetlock",
        }
    }
}

/// `[lock]` resolved (the id is settled later, in the state directory).
#[derive(Debug, Clone)]
pub struct LockSettings {
    pub backend: Backend,
    /// The etcd client URL or the FleetLock server's base URL.
    pub url: String,
    pub group: String,
    /// etcd: the semaphore's size.
    pub slots: u32,
    /// `[lock] id`; None: the cell's name, persisted in the state directory on first use.
    pub id: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// How long a full slot is waited for (0: fail at once).
    pub wait: Duration,
}

/// One holder of a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub id: String,
    /// When it took the slot (None: taken by a client that does not say, such as airlock).
    pub since: Option<Timestamp>,
    pub host: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.id)?;
        match (&self.since, &self.host) {
            (Some(s), Some(h)) => write!(f, " (since {s}, host {h})"),
            (Some(s), None) => write!(f, " (since {s})"),
            (None, Some(h)) => write!(f, " (host {h})"),
            (None, None) => write!(f, " (since unknown)"),
        }
    }
}

/// What the lock service says of the group.
#[derive(Debug, Clone, Serialize)]
pub struct LockStatus {
    pub backend: Backend,
    pub group: String,
    /// false for FleetLock: the protocol has no way to list holders.
    pub listable: bool,
    pub total_slots: Option<u32>,
    pub holders: Vec<Holder>,
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock client setup: {0}")]
    Setup(String),
    #[error("lock service {url} unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("all {total} slot(s) of group {group:?} are held: {}", list(.holders))]
    Full {
        group: String,
        total: u32,
        holders: Vec<Holder>,
    },
    /// A FleetLock server's refusal, as it came (the protocol cannot list holders).
    #[error("FleetLock server refused ({status}): kind {kind:?}, value {value:?}")]
    Refused { status: u16, kind: String, value: String },
    #[error("lock service {url}: unexpected answer: {detail}")]
    Protocol { url: String, detail: String },
}

fn list(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "no holder is listed".into();
    }
    holders.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl LockError {
    /// Worth asking again while waiting (a full slot, an unreachable or refusing service);
    /// a setup error never gets better.
    pub fn retryable(&self) -> bool {
        !matches!(self, LockError::Setup(_))
    }
}

/// The client of one group's slots.
pub struct LockClient {
    pub settings: LockSettings,
    pub id: String,
    http: reqwest::Client,
}

impl LockClient {
    pub fn new(settings: &LockSettings, id: String) -> Result<LockClient, LockError> {
        let identity = match (&settings.client_cert, &settings.client_key) {
            (Some(c), Some(k)) => Some(read_identity(c, k)?),
            (None, None) => None,
            _ => {
                return Err(LockError::Setup(
                    "client_cert and client_key go together: set both or neither".into(),
                ));
            }
        };
        let trust = Trust {
            ca_file: settings.ca_file.as_deref(),
            pin: None,
        };
        let http = http::client_with_identity(CONNECT_TIMEOUT, REQUEST_TIMEOUT, trust, identity)
            .map_err(|e| LockError::Setup(e.to_string()))?;
        Ok(LockClient {
            settings: settings.clone(),
            id,
            http,
        })
    }

    /// Take a slot for this client's id (recursive: success when it already holds one).
    /// Returns whether it already held it.
    pub async fn acquire(&self, host: &str) -> Result<bool, LockError> {
        match self.settings.backend {
            Backend::Etcd => etcd::acquire(self, host).await,
            Backend::FleetLock => fleetlock::post(self, fleetlock::TAKE, &self.id).await.map(|()| false),
        }
    }

    /// Free the slot of `id` (this cell's or another's); `by` says who, for the history.
    /// Returns whether `id` held one (FleetLock cannot say: true).
    pub async fn release(&self, id: &str, by: &str) -> Result<bool, LockError> {
        match self.settings.backend {
            Backend::Etcd => etcd::release(self, id, by).await,
            Backend::FleetLock => fleetlock::post(self, fleetlock::RELEASE, id).await.map(|()| true),
        }
    }

    pub async fn status(&self) -> Result<LockStatus, LockError> {
        match self.settings.backend {
            Backend::Etcd => etcd::status(self).await,
            Backend::FleetLock => Ok(LockStatus {
                backend: Backend::FleetLock,
                group: self.settings.group.clone(),
                listable: false,
                total_slots: None,
                holders: vec![],
                history: vec![],
            }),
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> LockError {
        LockError::Unreachable {
            url: self.settings.url.clone(),
            detail: http::error_chain(e),
        }
    }

    fn protocol(&self, detail: impl Into<String>) -> LockError {
        LockError::Protocol {
            url: self.settings.url.clone(),
            detail: detail.into(),
        }
    }

    /// `{base}/{path}` without doubling the slash.
    fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.settings.url.trim_end_matches('/'))
    }
}

fn read_identity(cert: &std::path::Path, key: &std::path::Path) -> Result<reqwest::Identity, LockError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| LockError::Setup(format!("cannot read {}: {e}", p.display())))
    };
    let mut pem = read(cert)?;
    pem.push(b'\n');
    pem.extend(read(key)?);
    reqwest::Identity::from_pem(&pem).map_err(|e| {
        LockError::Setup(format!(
            "client certificate {} / key {}: {e}",
            cert.display(),
            key.display()
        ))
    })
}
