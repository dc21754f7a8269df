//! Reporting back: signed webhook deliveries through a durable outbox.
//!
//! Every delivery is written to `STATE_DIR/outbox/` (atomically) *before* it is attempted and
//! removed only after a 2xx, so a crash or `kill -9` loses nothing; the `Idempotency-Key`
//! makes a repeated delivery harmless. Connection errors, 5xx and 429 are retried with
//! exponential backoff and jitter until the run's reporting budget is spent; any other status
//! is final: the entry is kept, marked rejected, and reported, never resent.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::adapters::credentials::Secret;
use crate::adapters::http::error_chain;
use crate::model::time::Timestamp;
use crate::store::atomic::write_atomic;

/// One flush at a time: the background event flusher and the end-of-run flush share the outbox.
pub static FLUSH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const SIGNATURE_HEADER: &str = "X-Cellctl-Signature";
pub const EVENT_HEADER: &str = "X-Cellctl-Event";
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Webhook {
    pub urls: Vec<String>,
    pub ca_file: Option<PathBuf>,
    /// Trust exactly the certificate with this thumbprint (instead of the CA file).
    pub pin: Option<crate::adapters::pin::Pin>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Total time a run may spend reporting: never holds a cell in maintenance for longer.
    pub budget: Duration,
    pub secret: Option<Secret>,
    pub events: bool,
    pub outbox_max: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("report delivery setup: {0}")]
    Setup(#[from] crate::adapters::http::ClientError),
    #[error(
        "outbox {dir} is full ({max} entries): {id} was not queued; run `cellctl report flush` or clear old entries"
    )]
    Full { dir: String, max: usize, id: String },
    #[error("outbox: {0}")]
    Io(String),
}

/// One delivery of one document to one URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The Idempotency-Key: the same for every attempt and every resend of this delivery.
    pub id: String,
    pub url: String,
    pub kind: String,
    pub run_id: String,
    pub body: String,
    pub created_at: Timestamp,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// A final non-retryable status: kept for inspection, never resent.
    #[serde(default)]
    pub rejected: Option<u16>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rejected {
    pub id: String,
    pub url: String,
    pub status: u16,
}

/// What a flush achieved (also the report's `delivery` field).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub delivered: Vec<String>,
    /// Entries still waiting in the outbox (will be sent by the next run or `report flush`).
    pub queued: usize,
    pub rejected: Vec<Rejected>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
}

impl Summary {
    pub fn complete(&self) -> bool {
        self.queued == 0 && self.rejected.is_empty() && self.warnings.is_empty()
    }
}

/// `X-Cellctl-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &Secret, ts: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={ts},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct Outbox {
    pub dir: PathBuf,
    pub max: usize,
}

fn file_name(id: &str, url: &str) -> String {
    let h = hex::encode(Sha256::digest(format!("{id}\n{url}").as_bytes()));
    let safe: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    format!("{safe}-{}.json", &h[..12])
}

impl Outbox {
    pub fn new(state_dir: &Path, max: usize) -> Self {
        Outbox {
            dir: state_dir.join("outbox"),
            max,
        }
    }

    fn path(&self, e: &Entry) -> PathBuf {
        self.dir.join(file_name(&e.id, &e.url))
    }

    pub fn entries(&self) -> Vec<(PathBuf, Entry)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        let mut v: Vec<(PathBuf, Entry)> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| {
                let e = serde_json::from_str::<Entry>(&std::fs::read_to_string(&p).ok()?).ok()?;
                Some((p, e))
            })
            .collect();
        v.sort_by(|a, b| a.1.created_at.cmp(&b.1.created_at).then(a.1.id.cmp(&b.1.id)));
        v
    }

    pub fn size(&self) -> (usize, usize) {
        let all = self.entries();
        let rejected = all.iter().filter(|(_, e)| e.rejected.is_some()).count();
        (all.len() - rejected, rejected)
    }

    /// Queue a delivery durably, before it is attempted.
    pub fn push(&self, e: &Entry) -> Result<(), DeliverError> {
        std::fs::create_dir_all(&self.dir).map_err(|err| DeliverError::Io(format!("{}: {err}", self.dir.display())))?;
        let path = self.path(e);
        if !path.exists() && self.entries().len() >= self.max {
            return Err(DeliverError::Full {
                dir: self.dir.display().to_string(),
                max: self.max,
                id: e.id.clone(),
            });
        }
        let bytes = serde_json::to_vec(e).expect("entry serializes");
        write_atomic(&path, &bytes).map_err(|err| DeliverError::Io(err.to_string()))
    }

    fn update(path: &Path, e: &Entry) {
        let _ = write_atomic(path, &serde_json::to_vec(e).expect("entry serializes"));
    }
}

enum Attempt {
    Delivered,
    Retry(String),
    Reject(u16, String),
}

fn jitter(d: Duration) -> Duration {
    // Full jitter in [d/2, d]: spreads retries of many cells hitting one receiver.
    let n = u64::from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |x| x.subsec_nanos()),
    );
    let half = u64::try_from(d.as_millis()).unwrap_or(u64::MAX) / 2;
    Duration::from_millis(half + if half > 0 { n % (half + 1) } else { 0 })
}

impl Webhook {
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }

    pub fn client(&self) -> Result<reqwest::Client, DeliverError> {
        let trust = crate::adapters::http::Trust {
            ca_file: self.ca_file.as_deref(),
            pin: self.pin.as_ref(),
        };
        crate::adapters::http::client(self.connect_timeout, self.timeout, trust).map_err(DeliverError::Setup)
    }

    /// Entries for one document, one per URL.
    pub fn entries_for(&self, id: &str, kind: &str, run_id: &str, body: &str) -> Vec<Entry> {
        self.urls
            .iter()
            .map(|u| Entry {
                id: id.to_string(),
                url: u.clone(),
                kind: kind.to_string(),
                run_id: run_id.to_string(),
                body: body.to_string(),
                created_at: Timestamp::now(),
                attempts: 0,
                last_error: None,
                rejected: None,
            })
            .collect()
    }

    async fn attempt(&self, client: &reqwest::Client, e: &Entry, remaining: Duration) -> Attempt {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut req = client
            .post(&e.url)
            .timeout(self.timeout.min(remaining))
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", &e.id)
            .header(EVENT_HEADER, &e.kind)
            .header("X-Cellctl-Run-Id", &e.run_id)
            .body(e.body.clone());
        if let Some(s) = &self.secret {
            req = req.header(SIGNATURE_HEADER, signature(s, ts, e.body.as_bytes()));
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Attempt::Delivered,
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                Attempt::Retry(format!("HTTP {}", r.status()))
            }
            Ok(r) => Attempt::Reject(r.status().as_u16(), format!("HTTP {}", r.status())),
            Err(err) => Attempt::Retry(error_chain(&err)),
        }
    }

    /// Send what is queued (oldest first) until done or the deadline; a URL that failed is not
    /// tried again in this flush, so one dead receiver does not eat the others' budget.
    pub async fn flush(&self, outbox: &Outbox, deadline: tokio::time::Instant) -> Summary {
        let mut sum = Summary::default();
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                sum.warnings.push(e.to_string());
                sum.queued = outbox.size().0;
                return sum;
            }
        };
        let mut dead: HashSet<String> = HashSet::new();
        for (path, mut e) in outbox.entries() {
            if e.rejected.is_some() {
                sum.rejected.push(Rejected {
                    id: e.id.clone(),
                    url: e.url.clone(),
                    status: e.rejected.unwrap_or(0),
                });
                continue;
            }
            if dead.contains(&e.url) {
                sum.queued += 1;
                continue;
            }
            let mut backoff = BACKOFF_BASE;
            loop {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    dead.insert(e.url.clone());
                    sum.queued += 1;
                    break;
                }
                e.attempts += 1;
                match self.attempt(&client, &e, deadline - now).await {
                    Attempt::Delivered => {
                        let _ = std::fs::remove_file(&path);
                        sum.delivered.push(e.id.clone());
                        break;
                    }
                    Attempt::Reject(status, msg) => {
                        tracing::warn!(url = %e.url, id = %e.id, "receiver rejected the delivery ({msg}): kept in the outbox, not resent");
                        e.rejected = Some(status);
                        e.last_error = Some(msg);
                        Outbox::update(&path, &e);
                        sum.rejected.push(Rejected {
                            id: e.id.clone(),
                            url: e.url.clone(),
                            status,
                        });
                        break;
                    }
                    Attempt::Retry(msg) => {
                        e.last_error = Some(msg.clone());
                        Outbox::update(&path, &e);
                        let pause = jitter(backoff);
                        if tokio::time::Instant::now() + pause >= deadline {
                            tracing::warn!(url = %e.url, id = %e.id, "delivery failed ({msg}); queued for the next run or `cellctl report flush`");
                            dead.insert(e.url.clone());
                            sum.queued += 1;
                            break;
                        }
                        tracing::debug!(url = %e.url, "delivery attempt {} failed ({msg}); retrying", e.attempts);
                        tokio::time::sleep(pause).await;
                        backoff = (backoff * 2).min(BACKOFF_CAP);
                    }
                }
            }
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_over_timestamp_and_body() {
        // Reference computed independently, with Python's hmac module:
        // hmac.new(b'k', b'1700000000.{}', hashlib.sha256).hexdigest()
        let s = signature(&Secret::new("k".into()), 1_700_000_000, b"{}");
        assert_eq!(
            s,
            "t=1700000000,v1=c6ef4734033cee2367414a0939385eca0397754aa7a59716da7463a9298b5146"
        );
    }

    #[test]
    fn outbox_is_bounded_and_durable() {
        let d = tempfile::tempdir().unwrap();
        let ob = Outbox::new(d.path(), 2);
        let w = Webhook {
            urls: vec!["http://127.0.0.1:9/a".into()],
            ca_file: None,
            pin: None,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            budget: Duration::from_secs(1),
            secret: None,
            events: false,
            outbox_max: 2,
        };
        for i in 0..2 {
            for e in w.entries_for(&format!("r{i}-report"), "report", "r", "{}") {
                ob.push(&e).unwrap();
            }
        }
        let e = w.entries_for("r3-report", "report", "r", "{}").remove(0);
        assert!(matches!(ob.push(&e), Err(DeliverError::Full { .. })));
        // Re-queuing an entry already there is not growth.
        ob.push(&w.entries_for("r0-report", "report", "r", "{}").remove(0))
            .unwrap();
        assert_eq!(ob.size(), (2, 0));
    }
}
