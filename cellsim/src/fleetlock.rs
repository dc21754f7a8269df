//! `cellsim fleetlock`: a small FleetLock server (the protocol of coreos/zincati's
//! `docs/development/fleetlock/protocol.md`) with airlock's semantics: each group's semaphore
//! is one JSON value in etcd at `com.coreos.airlock/groups/<group>/v1/semaphore`, changed by a
//! compare-and-swap on the key's version; no TTL. A full semaphore answers 500 `failed_lock`,
//! a bad request 400 (`missing_header`, `invalid_body`, `invalid_client_identity`,
//! `invalid_client_group`). It speaks plain HTTP/1.1 to etcd's v3 JSON gateway with std alone.
//! Holders it adds carry cellctl's `since` and `host`, so `cellctl lock status` lists them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::model::{now_ms, rfc3339_ms};
use crate::store::{Error, Result, io_err};

pub fn serve(listen: SocketAddr, etcd: &str, slots: u64, port_file: Option<&Path>) -> Result<()> {
    let etcd = etcd
        .strip_prefix("http://")
        .ok_or_else(|| Error::Msg(format!("--etcd {etcd:?}: give http://HOST:PORT")))?
        .trim_end_matches('/')
        .to_string();
    let l = TcpListener::bind(listen).map_err(io_err(Path::new("listen address")))?;
    let port = l.local_addr().map_err(io_err(Path::new("listen address")))?.port();
    if let Some(p) = port_file {
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, format!("{port}\n")).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, p).map_err(io_err(p))?;
    }
    eprintln!("cellsim fleetlock: listening on port {port}, semaphores in etcd {etcd}");
    for conn in l.incoming().flatten() {
        let etcd = etcd.clone();
        std::thread::spawn(move || {
            if let Err(e) = handle(conn, &etcd, slots) {
                eprintln!("cellsim fleetlock: {e}");
            }
        });
    }
    Ok(())
}

/// One request: method, path, headers (names lower-cased), body.
type Request = (String, String, Vec<(String, String)>, Vec<u8>);

fn read_request(r: &mut BufReader<&TcpStream>) -> std::io::Result<Request> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = vec![];
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0usize)
        .min(1 << 16);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((method, path, headers, body))
}

fn handle(conn: TcpStream, etcd: &str, slots: u64) -> std::io::Result<()> {
    let (method, path, headers, body) = read_request(&mut BufReader::new(&conn))?;
    let (status, doc) = answer(&method, &path, &headers, &body, etcd, slots);
    let text = doc.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let mut w = &conn;
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
}

fn err(status: u16, kind: &str, value: impl Into<String>) -> (u16, Value) {
    (status, json!({"kind": kind, "value": value.into()}))
}

fn answer(method: &str, path: &str, headers: &[(String, String)], body: &[u8], etcd: &str, slots: u64) -> (u16, Value) {
    let take = match (method, path) {
        ("POST", "/v1/pre-reboot") => true,
        ("POST", "/v1/steady-state") => false,
        _ => return err(404, "not_found", format!("{method} {path}")),
    };
    if !headers.iter().any(|(k, v)| k == "fleet-lock-protocol" && v == "true") {
        return err(400, "missing_header", "fleet-lock-protocol: true is required");
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return err(400, "invalid_body", "not JSON");
    };
    let id = req["client_params"]["id"].as_str().unwrap_or("");
    let group = req["client_params"]["group"].as_str().unwrap_or("");
    if id.is_empty() {
        return err(400, "invalid_client_identity", "client_params.id must be non-empty");
    }
    if group.is_empty() || !group.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
        return err(
            400,
            "invalid_client_group",
            format!("{group:?} does not match [a-zA-Z0-9.-]+"),
        );
    }
    match update(etcd, group, id, take, slots) {
        Ok(true) => (200, json!({})),
        Ok(false) => err(
            500,
            "failed_lock",
            format!("all {slots} slot(s) of group {group} are held"),
        ),
        Err(e) => err(500, "etcd_error", e),
    }
}

/// Compare-and-swap until it lands: Ok(false) when the semaphore is full.
fn update(etcd: &str, group: &str, id: &str, take: bool, slots: u64) -> std::result::Result<bool, String> {
    let key = B64.encode(format!("com.coreos.airlock/groups/{group}/v1/semaphore"));
    for _ in 0..50 {
        let doc = post(etcd, "/v3/kv/range", &json!({"key": key}))?;
        let kv = doc.get("kvs").and_then(|k| k.get(0));
        let version = kv.and_then(|k| k["version"].as_str()).unwrap_or("0").to_string();
        let mut v: Value = match kv.and_then(|k| k["value"].as_str()) {
            Some(b) => serde_json::from_slice(&B64.decode(b).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?,
            None => json!({"semaphore": {"total_slots": slots, "holders": []}}),
        };
        v["semaphore"]["total_slots"] = json!(slots);
        let mut holders: Vec<String> = v["semaphore"]["holders"]
            .as_array()
            .map(|a| a.iter().filter_map(|h| h.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let held = holders.iter().any(|h| h == id);
        match (take, held) {
            (true, true) | (false, false) => return Ok(true),
            (true, false) if holders.len() as u64 >= slots => return Ok(false),
            (true, false) => {
                holders.push(id.into());
                if !v["cellctl"]["holders"].is_object() {
                    v["cellctl"] = json!({"holders": {}, "history": []});
                }
                v["cellctl"]["holders"][id] = json!({"since": rfc3339_ms(now_ms()), "host": "fleetlock"});
            }
            (false, true) => {
                holders.retain(|h| h != id);
                if let Some(m) = v["cellctl"]["holders"].as_object_mut() {
                    m.remove(id);
                }
            }
        }
        v["semaphore"]["holders"] = json!(holders);
        let value = B64.encode(v.to_string());
        let txn = json!({
            "compare": [{"key": key, "result": "EQUAL", "target": "VERSION", "version": version}],
            "success": [{"request_put": {"key": key, "value": value}}],
        });
        if post(etcd, "/v3/kv/txn", &txn)?["succeeded"].as_bool() == Some(true) {
            return Ok(true);
        }
    }
    Err("the semaphore kept changing under 50 compare-and-swap attempts".into())
}

/// A plain HTTP/1.1 POST of JSON to etcd's gateway.
fn post(etcd: &str, path: &str, body: &Value) -> std::result::Result<Value, String> {
    let text = body.to_string();
    let mut s = TcpStream::connect(etcd).map_err(|e| format!("etcd {etcd}: {e}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {etcd}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let (head, body) = resp.split_once("\r\n\r\n").ok_or("no HTTP answer from etcd")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("etcd {path}: {}", head.lines().next().unwrap_or("")));
    }
    // Chunked or not: the JSON object is between the first `{` and the last `}`.
    let (a, b) = (body.find('{').ok_or("no JSON")?, body.rfind('}').ok_or("no JSON")?);
    serde_json::from_str(&body[a..=b]).map_err(|e| e.to_string())
}
