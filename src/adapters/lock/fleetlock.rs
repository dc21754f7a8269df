//! The FleetLock client, exactly per the protocol (coreos/zincati
//! `docs/development/fleetlock/protocol.md`): `POST {base}/v1/pre-reboot` takes a slot,
//! `POST {base}/v1/steady-state` releases it, header `fleet-lock-protocol: true`, body
//! `{"client_params":{"id":..,"group":..}}`; only HTTP 200 is success, and an error body
//! `{"kind":..,"value":..}` is reported as it came.

use serde::Deserialize;
use serde_json::json;

use super::{LockClient, LockError};

pub const TAKE: &str = "v1/pre-reboot";
pub const RELEASE: &str = "v1/steady-state";

#[derive(Deserialize)]
struct ErrorBody {
    kind: String,
    value: String,
}

pub async fn post(c: &LockClient, path: &str, id: &str) -> Result<(), LockError> {
    let body = json!({"client_params": {"id": id, "group": c.settings.group}});
    let resp = c
        .http
        .post(c.endpoint(path))
        .header("fleet-lock-protocol", "true")
        .json(&body)
        .send()
        .await
        .map_err(|e| c.unreachable(&e))?;
    let status = resp.status().as_u16();
    if status == 200 {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(match serde_json::from_str::<ErrorBody>(&text) {
        Ok(e) => LockError::Refused {
            status,
            kind: e.kind,
            value: e.value,
        },
        Err(_) => LockError::Refused {
            status,
            kind: String::new(),
            value: text.chars().take(300).collect(),
        },
    })
}
