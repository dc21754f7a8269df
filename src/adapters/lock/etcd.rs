//! The etcd backend: one JSON value per group at airlock's key, changed only by a `/v3/kv/txn`
//! compare-and-swap on the key's version (version 0 = absent: the first taker creates it).
//! Keys and values travel base64-encoded; etcd's int64s travel as JSON strings.
//!
//! The value (airlock's `semaphore` object, cellctl's beside it; unknown fields are kept):
//! ```json
//! {"semaphore": {"total_slots": 1, "holders": ["cell-a"]},
//!  "cellctl": {"holders": {"cell-a": {"since": "2025-01-01T10:00:00.000Z", "host": "vcd-a"}},
//!              "history": [{"at": "...", "action": "take", "id": "cell-a", "by": "cell-a@vcd-a"}]}}
//! ```

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Backend, Holder, LockClient, LockError, LockStatus};
use crate::model::time::Timestamp;

/// The history kept in the value (newest last).
pub const HISTORY_MAX: usize = 32;
/// Compare-and-swap attempts before giving up (each lost race means another client wrote).
const CAS_ATTEMPTS: usize = 50;

/// airlock's key for a group's semaphore.
pub fn semaphore_key(group: &str) -> String {
    format!("com.coreos.airlock/groups/{group}/v1/semaphore")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Semaphore {
    pub total_slots: u64,
    /// Go's nil slice is `null`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub holders: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HolderInfo {
    pub since: Timestamp,
    #[serde(default)]
    pub host: Option<String>,
}

/// One take or release, and who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: Timestamp,
    pub action: String,
    pub id: String,
    pub by: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Extra {
    #[serde(default)]
    pub holders: BTreeMap<String, HolderInfo>,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

/// The stored value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SemValue {
    pub semaphore: Semaphore,
    #[serde(default)]
    pub cellctl: Extra,
    /// Fields written by others, kept as they were.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl SemValue {
    pub fn new(slots: u32) -> SemValue {
        SemValue {
            semaphore: Semaphore {
                total_slots: u64::from(slots),
                holders: vec![],
            },
            ..SemValue::default()
        }
    }

    pub fn holders(&self) -> Vec<Holder> {
        self.semaphore
            .holders
            .iter()
            .map(|id| {
                let info = self.cellctl.holders.get(id);
                Holder {
                    id: id.clone(),
                    since: info.map(|i| i.since),
                    host: info.and_then(|i| i.host.clone()),
                }
            })
            .collect()
    }

    fn log(&mut self, action: &str, id: &str, by: &str, at: Timestamp) {
        self.cellctl.history.push(HistoryEntry {
            at,
            action: action.into(),
            id: id.into(),
            by: by.into(),
        });
        let n = self.cellctl.history.len();
        if n > HISTORY_MAX {
            self.cellctl.history.drain(..n - HISTORY_MAX);
        }
    }

    /// Take a slot for `id`: Ok(true) when it already held one (nothing to write), Err with the
    /// holders when all slots are held. `slots` (this cell's `[lock] slots`) sets the size.
    pub fn take(&mut self, id: &str, host: &str, slots: u32, now: Timestamp) -> Result<bool, Vec<Holder>> {
        if self.semaphore.holders.iter().any(|h| h == id) {
            return Ok(true);
        }
        self.semaphore.total_slots = u64::from(slots);
        if self.semaphore.holders.len() as u64 >= self.semaphore.total_slots {
            return Err(self.holders());
        }
        self.semaphore.holders.push(id.into());
        self.cellctl.holders.insert(
            id.into(),
            HolderInfo {
                since: now,
                host: Some(host.into()),
            },
        );
        self.log("take", id, &format!("{id}@{host}"), now);
        Ok(false)
    }

    /// Free the slot of `id`: whether it held one (false: nothing to write).
    pub fn free(&mut self, id: &str, by: &str, now: Timestamp) -> bool {
        let before = self.semaphore.holders.len();
        self.semaphore.holders.retain(|h| h != id);
        self.cellctl.holders.remove(id);
        if self.semaphore.holders.len() == before {
            return false;
        }
        self.log("release", id, by, now);
        true
    }
}

/// The value and the key's version (0: absent).
async fn read(c: &LockClient) -> Result<(Option<SemValue>, u64), LockError> {
    let key = semaphore_key(&c.settings.group);
    let doc = call(c, "v3/kv/range", &json!({ "key": B64.encode(&key) })).await?;
    let Some(kv) = doc.get("kvs").and_then(|k| k.get(0)) else {
        return Ok((None, 0));
    };
    let version = int(kv.get("version")).ok_or_else(|| c.protocol(format!("no version in {kv}")))?;
    let raw = kv.get("value").and_then(Value::as_str).unwrap_or("");
    let bytes = B64
        .decode(raw)
        .map_err(|e| c.protocol(format!("value of {key} is not base64: {e}")))?;
    let v: SemValue = serde_json::from_slice(&bytes).map_err(|e| {
        c.protocol(format!(
            "value of {key} is not a semaphore ({e}): {}",
            String::from_utf8_lossy(&bytes)
        ))
    })?;
    Ok((Some(v), version))
}

/// Write `v` if the key is still at `version`: whether the swap happened.
async fn swap(c: &LockClient, v: &SemValue, version: u64) -> Result<bool, LockError> {
    let key = B64.encode(semaphore_key(&c.settings.group));
    let value = B64.encode(serde_json::to_vec(v).expect("semaphore serializes"));
    let body = json!({
        "compare": [{"key": key, "result": "EQUAL", "target": "VERSION", "version": version.to_string()}],
        "success": [{"request_put": {"key": key, "value": value}}],
    });
    let doc = call(c, "v3/kv/txn", &body).await?;
    // A failed compare omits `succeeded`.
    Ok(doc.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
}

/// etcd's int64 in JSON: a string (or absent for 0).
fn int(v: Option<&Value>) -> Option<u64> {
    match v {
        None => Some(0),
        Some(Value::String(s)) => s.parse().ok(),
        Some(n) => n.as_u64(),
    }
}

async fn call(c: &LockClient, path: &str, body: &Value) -> Result<Value, LockError> {
    let resp = c
        .http
        .post(c.endpoint(path))
        .json(body)
        .send()
        .await
        .map_err(|e| c.unreachable(&e))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| c.unreachable(&e))?;
    if !status.is_success() {
        let cut: String = text.chars().take(300).collect();
        return Err(c.protocol(format!("{path}: HTTP {status}: {cut}")));
    }
    serde_json::from_str(&text).map_err(|e| c.protocol(format!("{path}: not JSON ({e})")))
}

/// Read, change, compare-and-swap, until the swap lands or nothing needs writing.
async fn update<T>(
    c: &LockClient,
    mut change: impl FnMut(&mut SemValue) -> Result<(bool, T), LockError>,
) -> Result<T, LockError> {
    for _ in 0..CAS_ATTEMPTS {
        let (v, version) = read(c).await?;
        let mut v = v.unwrap_or_else(|| SemValue::new(c.settings.slots));
        let (write, out) = change(&mut v)?;
        if !write || swap(c, &v, version).await? {
            return Ok(out);
        }
        tracing::debug!("lost a compare-and-swap race on the semaphore; reading again");
    }
    Err(c.protocol(format!(
        "the semaphore kept changing under {CAS_ATTEMPTS} compare-and-swap attempts"
    )))
}

pub async fn acquire(c: &LockClient, host: &str) -> Result<bool, LockError> {
    let (id, slots, group) = (c.id.clone(), c.settings.slots, c.settings.group.clone());
    update(c, |v| match v.take(&id, host, slots, Timestamp::now()) {
        Ok(already) => Ok((!already, already)),
        Err(holders) => Err(LockError::Full {
            group: group.clone(),
            total: slots,
            holders,
        }),
    })
    .await
}

pub async fn release(c: &LockClient, id: &str, by: &str) -> Result<bool, LockError> {
    update(c, |v| {
        let held = v.free(id, by, Timestamp::now());
        Ok((held, held))
    })
    .await
}

pub async fn status(c: &LockClient) -> Result<LockStatus, LockError> {
    let (v, _) = read(c).await?;
    let v = v.unwrap_or_else(|| SemValue::new(c.settings.slots));
    Ok(LockStatus {
        backend: Backend::Etcd,
        group: c.settings.group.clone(),
        listable: true,
        total_slots: u32::try_from(v.semaphore.total_slots).ok(),
        holders: v.holders(),
        history: v.cellctl.history.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn airlock_values_are_read_and_their_fields_kept() {
        let v: SemValue = serde_json::from_str(r#"{"semaphore":{"total_slots":2,"holders":null},"extra":1}"#).unwrap();
        assert!(v.semaphore.holders.is_empty());
        let out = serde_json::to_value(&v).unwrap();
        assert_eq!(out["extra"], 1);
        assert_eq!(out["semaphore"]["total_slots"], 2);
    }

    #[test]
    fn take_is_recursive_and_free_of_a_non_holder_is_a_no_op() {
        let now = Timestamp::now();
        let mut v = SemValue::new(1);
        assert_eq!(v.take("a", "ha", 1, now), Ok(false));
        assert_eq!(v.take("a", "ha", 1, now), Ok(true));
        let full = v.take("b", "hb", 1, now).unwrap_err();
        assert_eq!(full[0].id, "a");
        assert_eq!(full[0].host.as_deref(), Some("ha"));
        assert!(!v.free("b", "op", now));
        assert!(v.free("a", "op@x", now));
        assert_eq!(v.cellctl.history.last().unwrap().by, "op@x");
        assert_eq!(v.take("b", "hb", 1, now), Ok(false));
    }

    proptest! {
        /// Whatever the order of takes and frees, holders never exceed the slots, are unique,
        /// and each has its `since`; the history stays bounded.
        #[test]
        fn holders_never_exceed_slots(slots in 1u32..4, ops in proptest::collection::vec((any::<bool>(), 0u8..6), 0..80)) {
            let mut v = SemValue::new(slots);
            for (take, who) in ops {
                let id = format!("c{who}");
                if take { let _ = v.take(&id, "h", slots, Timestamp::now()); } else { v.free(&id, "op", Timestamp::now()); }
                prop_assert!(v.semaphore.holders.len() <= slots as usize);
                let mut ids = v.semaphore.holders.clone();
                ids.sort();
                ids.dedup();
                prop_assert_eq!(ids.len(), v.semaphore.holders.len());
                prop_assert!(v.holders().iter().all(|h| h.since.is_some()));
                prop_assert!(v.cellctl.history.len() <= HISTORY_MAX);
            }
        }
    }
}
