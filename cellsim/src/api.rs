//! The cell's REST API as `cellsim serve` answers it (vcd.md section 4): version discovery,
//! provider sessions, the paged cells list of the group, the admin task query and task cancel.
//! JSON only. Routes and shapes are the contract in README.md ("REST API").

use crate::group::{self, Session, with_api_store};
use crate::model::{FaultKind, Op, Phase, State, rfc3339_ms};
use crate::serve::{Request, Response};
use crate::store::{CellDir, hex, random_bytes, uuid_v4};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// What `/api/versions` lists, oldest first.
pub const VERSIONS: &[&str] = &["37.0", "37.1", "37.2", "37.3", "38.0", "38.1"];
/// The newest version without the cells' `status` (listed last when `api_status_field=false`).
const NO_STATUS_NEWEST: &str = "38.0";
pub const TOKEN_HEADER: &str = "X-VMWARE-VCLOUD-ACCESS-TOKEN";
pub const LOGIN_PATH: &str = "/cloudapi/1.0.0/sessions/provider";
const PAGE_SIZE_DEFAULT: usize = 25;
const PAGE_SIZE_MAX: usize = 128;
/// The body the `api-malformed` fault sends: JSON cut short.
pub const MALFORMED_BODY: &str = r#"{"resultTotal":1,"values":[{"name":"cel"#;
const ORG: &str = "System";
const ROLE: &str = "System Administrator";

/// Paths the API owns (the rest of the server's routes are the health check).
pub fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || path == "/cloudapi" || path.starts_with("/cloudapi/")
}

/// Whether a request is a provider login (its Basic header is where the password belongs).
pub fn is_login(req: &Request) -> bool {
    req.method == "POST" && normalize(req.path()) == LOGIN_PATH
}

fn normalize(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    }
}

enum Route {
    Versions,
    Login,
    Logout,
    CurrentSession,
    Cells,
    Query,
    Task(String),
    Cancel(String),
}

pub fn error(status: u16, code: &str, message: &str) -> Response {
    let body = json!({"minorErrorCode": code, "message": message}).to_string();
    Response::json(status, body, NEWEST)
}

const NEWEST: &str = "38.1";

fn not_found(what: &str) -> Response {
    error(404, "NOT_FOUND", what)
}

fn match_route(method: &str, path: &str) -> Result<Route, Response> {
    let path = normalize(path);
    // HEAD is a GET without the body (the connection handler drops it).
    let method = if method == "HEAD" { "GET" } else { method };
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let (route, allow) = match segments.as_slice() {
        ["api", "versions"] => (matches!(method, "GET").then_some(Route::Versions), "GET"),
        ["cloudapi", "1.0.0", "sessions", "provider"] => (matches!(method, "POST").then_some(Route::Login), "POST"),
        ["cloudapi", "1.0.0", "sessions", "current"] => (
            match method {
                "GET" => Some(Route::CurrentSession),
                "DELETE" => Some(Route::Logout),
                _ => None,
            },
            "GET, DELETE",
        ),
        ["cloudapi", "1.0.0", "cells"] => (matches!(method, "GET").then_some(Route::Cells), "GET"),
        ["api", "query"] => (matches!(method, "GET").then_some(Route::Query), "GET"),
        ["api", "task", id] if !id.is_empty() => (matches!(method, "GET").then(|| Route::Task(task_id(id))), "GET"),
        ["api", "task", id, "action", "cancel"] if !id.is_empty() => {
            (matches!(method, "POST").then(|| Route::Cancel(task_id(id))), "POST")
        }
        _ => return Err(not_found(&format!("No resource at {path}"))),
    };
    route.ok_or_else(|| {
        let mut r = error(
            405,
            "METHOD_NOT_ALLOWED",
            &format!("{method} is not supported on {path} (allowed: {allow})"),
        );
        r.headers.push(("Allow", allow.into()));
        r
    })
}

/// Task ids are the jobs' ids; a `urn:vcloud:task:` prefix is accepted too.
fn task_id(segment: &str) -> String {
    let id = percent_decode(segment);
    id.strip_prefix("urn:vcloud:task:").map(String::from).unwrap_or(id)
}

/// The Accept header, loosely: absent, `*/*` or anything JSON is fine; a `version=` parameter
/// must look like a version (`38.1`) and is echoed in the answer's Content-Type.
fn negotiate(req: &Request) -> Result<String, Response> {
    let Some(accept) = req.header("accept") else {
        return Ok(NEWEST.into());
    };
    let lower = accept.to_ascii_lowercase();
    if !(lower.trim().is_empty() || lower.contains("json") || lower.contains("*/*")) {
        return Err(error(
            406,
            "NOT_ACCEPTABLE",
            &format!("cellsim answers JSON only (Accept: application/json;version=X), not `{accept}`"),
        ));
    }
    let version = lower
        .split([';', ','])
        .filter_map(|p| p.trim().strip_prefix("version="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next();
    match version {
        None => Ok(NEWEST.into()),
        Some(v)
            if !v.is_empty()
                && v.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            Ok(v)
        }
        Some(v) => Err(error(406, "NOT_ACCEPTABLE", &format!("bad API version `{v}`"))),
    }
}

/// The serving cell as one request sees it, with the API faults this request uses up.
struct Serving {
    state: State,
    now: u64,
    slow: bool,
    fault: Option<FaultKind>,
}

pub fn route(cell: &CellDir, base: &str, req: &Request) -> Response {
    let route = match match_route(&req.method, req.path()) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let version = match negotiate(req) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let is_versions = matches!(route, Route::Versions);
    let serving = cell.with_state(|s, now| {
        let available = s.service_running && s.cell == Phase::Up && !s.in_maintenance;
        let (mut slow, mut fault) = (false, None);
        if available && !is_versions {
            slow = s.take_fault(Op::Any, &[FaultKind::ApiSlow]).is_some();
            fault = s.take_fault(
                Op::Any,
                &[FaultKind::Api401, FaultKind::Api500, FaultKind::ApiMalformed],
            );
        }
        Ok(Serving {
            state: s.clone(),
            now,
            slow,
            fault,
        })
    });
    let Ok(serving) = serving else {
        return unavailable("The cell's state cannot be read");
    };
    let s = &serving.state;
    if !s.service_running || s.cell != Phase::Up {
        return unavailable("The cell is not running");
    }
    let mut resp = if is_versions {
        versions(s)
    } else if s.in_maintenance {
        unavailable("The cell is in maintenance mode")
    } else {
        if serving.slow {
            std::thread::sleep(s.knobs.api_slow_delay);
        }
        match serving.fault {
            Some(FaultKind::Api401) => error(401, "UNAUTHORIZED", "Simulated fault api-401: not authorized"),
            Some(FaultKind::Api500) => error(500, "INTERNAL_SERVER_ERROR", "Simulated fault api-500"),
            Some(_) => Response::json(200, MALFORMED_BODY.into(), NEWEST),
            None => dispatch(cell, base, req, route, &serving),
        }
    };
    resp.set_version(&version);
    resp
}

fn unavailable(message: &str) -> Response {
    error(503, "SERVICE_UNAVAILABLE", message)
}

fn dispatch(cell: &CellDir, base: &str, req: &Request, route: Route, serving: &Serving) -> Response {
    let (s, now) = (&serving.state, serving.now);
    let shared = group::shared_dir(cell, s.group.as_deref());
    if let Route::Login = route {
        return login(req, s, &shared, now);
    }
    let session = match authenticate(req, s.knobs.api_token_ttl, &shared, now) {
        Ok(session) => session,
        Err(resp) => return resp,
    };
    let members = group::members(cell, s);
    match route {
        Route::Versions | Route::Login => unreachable!("handled above"),
        Route::Logout => {
            let token = session.token.clone();
            match with_api_store(&shared, now, |st| st.sessions.retain(|x| x.token != token)) {
                Ok(()) => Response::empty(204),
                Err(e) => error(500, "INTERNAL_SERVER_ERROR", &e.to_string()),
            }
        }
        Route::CurrentSession => match with_api_store(&shared, now, |st| session_body(st, &session, s)) {
            Ok(body) => Response::json(200, body.to_string(), NEWEST),
            Err(e) => error(500, "INTERNAL_SERVER_ERROR", &e.to_string()),
        },
        Route::Cells => cells(req, &members, s.knobs.api_status_field),
        Route::Query => task_query(req, base, &members),
        Route::Task(id) => task(base, &id, &members),
        Route::Cancel(id) => cancel(&id, &members),
    }
}

fn versions(s: &State) -> Response {
    let newest = if s.knobs.api_status_field {
        NEWEST
    } else {
        NO_STATUS_NEWEST
    };
    let end = VERSIONS.iter().position(|v| *v == newest).unwrap_or(VERSIONS.len() - 1);
    let info: Vec<Value> = VERSIONS[..=end]
        .iter()
        .map(|v| json!({"version": v, "deprecated": false}))
        .collect();
    Response::json(200, json!({ "versionInfo": info }).to_string(), NEWEST)
}

// ---- sessions ----

fn unauthorized(message: &str) -> Response {
    error(401, "UNAUTHORIZED", message)
}

/// `Authorization: Basic ...` decoded to (user@org, password), if that is what the header holds.
pub fn basic_credentials(req: &Request) -> Option<(String, String)> {
    let value = req.header("authorization")?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(rest.trim())?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn bearer_token(req: &Request) -> Option<&str> {
    let value = req.header("authorization")?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn login(req: &Request, s: &State, shared: &std::path::Path, now: u64) -> Response {
    if req.header("authorization").is_none() {
        return unauthorized("Missing Authorization header: use Basic base64(user@System:password)");
    }
    let Some((login, password)) = basic_credentials(req) else {
        return unauthorized("Bad Authorization header: use Basic base64(user@System:password)");
    };
    let Some((user, org)) = login.rsplit_once('@') else {
        return unauthorized("The user must be given as user@System");
    };
    if !org.eq_ignore_ascii_case(ORG) {
        return unauthorized("Provider sessions are for the System organization (user@System)");
    }
    if user != s.knobs.user || password != s.knobs.password {
        return unauthorized("Invalid username or password");
    }
    let session = Session {
        token: hex(&random_bytes::<32>()),
        id: uuid_v4(),
        user: user.to_string(),
        created_ms: now,
    };
    let stored = with_api_store(shared, now, |st| {
        st.sessions.push(session.clone());
        session_body(st, &session, s)
    });
    match stored {
        Ok(body) => {
            let mut resp = Response::json(200, body.to_string(), NEWEST);
            resp.headers.push((TOKEN_HEADER, session.token));
            resp.headers.push(("X-VMWARE-VCLOUD-TOKEN-TYPE", "Bearer".into()));
            resp
        }
        Err(e) => error(500, "INTERNAL_SERVER_ERROR", &e.to_string()),
    }
}

fn session_body(st: &group::ApiStore, session: &Session, s: &State) -> Value {
    let site = json!({"name": "cellsim", "id": format!("urn:vcloud:site:{}", st.site_id)});
    let org = json!({"name": ORG, "id": format!("urn:vcloud:org:{}", st.org_id)});
    let ttl_minutes = s.knobs.api_token_ttl.as_secs().div_ceil(60).max(1);
    json!({
        "id": format!("urn:vcloud:session:{}", session.id),
        "site": site,
        "user": {"name": session.user, "id": format!("urn:vcloud:user:{}", st.user_id)},
        "org": org,
        "operatingOrg": org,
        "location": format!("urn:vcloud:site:{}", st.site_id),
        "roles": [ROLE],
        "roleRefs": [{"name": ROLE, "id": format!("urn:vcloud:role:{}", st.role_id)}],
        "sessionIdleTimeoutMinutes": ttl_minutes,
    })
}

/// The session of a valid bearer token: known, and younger than `ttl`.
fn authenticate(req: &Request, ttl: Duration, shared: &std::path::Path, now: u64) -> Result<Session, Response> {
    let Some(token) = bearer_token(req) else {
        return Err(unauthorized(
            "Missing bearer token: log in at POST /cloudapi/1.0.0/sessions/provider and send Authorization: Bearer <token>",
        ));
    };
    let ttl_ms = ttl.as_millis().min(u64::MAX as u128) as u64;
    let found = with_api_store(shared, now, |st| {
        let idx = st.sessions.iter().position(|x| x.token == token)?;
        if now.saturating_sub(st.sessions[idx].created_ms) >= ttl_ms {
            st.sessions.remove(idx);
            return Some(Err(()));
        }
        Some(Ok(st.sessions[idx].clone()))
    });
    match found {
        Ok(Some(Ok(session))) => Ok(session),
        Ok(Some(Err(()))) => Err(unauthorized("The session has expired: log in again")),
        Ok(None) => Err(unauthorized("Unknown or revoked token: log in again")),
        Err(e) => Err(error(500, "INTERNAL_SERVER_ERROR", &e.to_string())),
    }
}

// ---- paging and filters ----

struct Paging {
    page: usize,
    page_size: usize,
}

fn paging(query: &[(String, String)]) -> Result<Paging, Response> {
    let number = |key: &str, default: usize| -> Result<usize, Response> {
        match query.iter().rev().find(|(k, _)| k == key) {
            None => Ok(default),
            Some((_, v)) => v.trim().parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                error(
                    400,
                    "BAD_REQUEST",
                    &format!("{key} must be a number of at least 1, not `{v}`"),
                )
            }),
        }
    };
    Ok(Paging {
        page: number("page", 1)?,
        page_size: number("pageSize", PAGE_SIZE_DEFAULT)?.min(PAGE_SIZE_MAX),
    })
}

impl Paging {
    fn slice<T: Clone>(&self, all: &[T]) -> Vec<T> {
        all.iter()
            .skip((self.page - 1).saturating_mul(self.page_size))
            .take(self.page_size)
            .cloned()
            .collect()
    }
}

/// A FIQL filter: `;` is AND, `,` is OR (binding looser), `==` equality, `*` a wildcard.
/// Returns the OR-list of AND-lists of (key, value).
type Filter = Vec<Vec<(String, String)>>;

fn parse_filter(text: &str, keys: &[&str]) -> Result<Filter, Response> {
    let bad = |m: String| error(400, "BAD_REQUEST", &m);
    text.split(',')
        .map(|conj| {
            conj.split(';')
                .map(|term| {
                    let (key, value) = term
                        .split_once("==")
                        .ok_or_else(|| bad(format!("bad filter term `{term}`: cellsim supports KEY==VALUE only")))?;
                    let key = key.trim();
                    if !keys.contains(&key) {
                        return Err(bad(format!(
                            "unknown filter key `{key}` (cellsim supports: {})",
                            keys.join(", ")
                        )));
                    }
                    Ok((key.to_string(), value.to_string()))
                })
                .collect()
        })
        .collect()
}

fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

fn filter_matches(filter: &Filter, get: impl Fn(&str) -> String) -> bool {
    filter.is_empty() || filter.iter().any(|conj| conj.iter().all(|(k, v)| glob(v, &get(k))))
}

fn get_filter(query: &[(String, String)], keys: &[&str]) -> Result<Filter, Response> {
    match query.iter().rev().find(|(k, _)| k == "filter") {
        Some((_, f)) if !f.trim().is_empty() => parse_filter(f, keys),
        _ => Ok(Vec::new()),
    }
}

// ---- cells ----

/// `status_field`: the serving cell's `api_status_field` (it answers for the group).
fn cells(req: &Request, members: &[(String, PathBuf)], status_field: bool) -> Response {
    let query = query_pairs(req.query());
    let (paging, filter) = match (paging(&query), get_filter(&query, &["name", "status", "isActive"])) {
        (Ok(p), Ok(f)) => (p, f),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let mut values: Vec<Value> = members
        .iter()
        .filter_map(|(_, dir)| {
            CellDir::new(dir)
                .with_state(|s, _| Ok(cell_value(s, &CellDir::new(dir).default_name(), status_field)))
                .ok()
        })
        .filter(|v| {
            filter_matches(&filter, |k| match &v[k] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(), // `status` omitted by the knob: matches no value
                other => other.to_string(),
            })
        })
        .collect();
    values.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let total = values.len();
    let body = json!({
        "resultTotal": total,
        "pageCount": total.div_ceil(paging.page_size),
        "page": paging.page,
        "pageSize": paging.page_size,
        "associations": [],
        "values": paging.slice(&values),
    });
    Response::json(200, body.to_string(), NEWEST)
}

fn cell_value(s: &State, default_name: &str, status_field: bool) -> Value {
    let status = s.api_status();
    let mut v = json!({
        "id": format!("urn:vcloud:cell:{}", s.cell_id),
        "name": s.name.as_deref().unwrap_or(default_name),
        "isActive": status != "INACTIVE",
        "primaryIP": s.primary_ip.as_deref().unwrap_or("127.0.0.1"),
        "productVersion": s.knobs.version,
        "productBuildDate": build_date(&s.knobs.version),
    });
    if status_field {
        v["status"] = status.into();
    }
    v
}

/// A stable build date for a version (like `package`'s build numbers): a day of 2024.
fn build_date(version: &str) -> String {
    let hash = version.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    const JAN_1_2024_MS: u64 = 1_704_067_200_000;
    rfc3339_ms(JAN_1_2024_MS + (hash % 365) * 86_400_000)
}

// ---- tasks ----

/// A running job as the task query shows it.
#[derive(Clone)]
struct TaskRow {
    id: String,
    operation: String,
    started_at_ms: u64,
    cell_name: String,
}

fn running_tasks(members: &[(String, PathBuf)]) -> Vec<TaskRow> {
    let mut rows: Vec<TaskRow> = members
        .iter()
        .filter_map(|(_, dir)| {
            let cell = CellDir::new(dir);
            cell.with_state(|s, _| {
                let name = s.name.clone().unwrap_or_else(|| cell.default_name());
                Ok(s.jobs
                    .iter()
                    .map(|j| TaskRow {
                        id: j.id.clone(),
                        operation: j.operation.clone(),
                        started_at_ms: j.started_at_ms,
                        cell_name: name.clone(),
                    })
                    .collect::<Vec<_>>())
            })
            .ok()
        })
        .flatten()
        .collect();
    rows.sort_by(|a, b| (a.started_at_ms, &a.cell_name, &a.id).cmp(&(b.started_at_ms, &b.cell_name, &b.id)));
    rows
}

fn object_name(id: &str, operation: &str) -> String {
    let seq = id.rsplit('-').next().unwrap_or(id).trim_start_matches('0');
    format!("{operation}-object-{seq}")
}

fn task_query(req: &Request, base: &str, members: &[(String, PathBuf)]) -> Response {
    let query = query_pairs(req.query());
    let param = |key: &str| query.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    match param("type") {
        Some("adminTask") => {}
        Some(other) => {
            return error(
                400,
                "BAD_REQUEST",
                &format!("query type `{other}` is not simulated (cellsim supports type=adminTask)"),
            );
        }
        None => return error(400, "BAD_REQUEST", "missing query type (type=adminTask)"),
    }
    if let Some(format) = param("format").filter(|f| !matches!(*f, "records" | "idrecords")) {
        return error(
            400,
            "BAD_REQUEST",
            &format!("format `{format}` is not simulated (cellsim supports format=records)"),
        );
    }
    let keys = ["status", "cellName", "name", "ownerName", "orgName", "objectName"];
    let (paging, filter) = match (paging(&query), get_filter(&query, &keys)) {
        (Ok(p), Ok(f)) => (p, f),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let records: Vec<Value> = running_tasks(members)
        .into_iter()
        .map(|t| {
            json!({
                "_type": "AdminTaskRecord",
                "href": format!("{base}/api/task/{}", t.id),
                "id": format!("urn:vcloud:task:{}", t.id),
                "name": t.operation,
                "operationFull": format!("{} (simulated)", t.operation),
                "status": "running",
                "startDate": rfc3339_ms(t.started_at_ms),
                "cellName": t.cell_name,
                "ownerName": "administrator",
                "orgName": ORG,
                "objectName": object_name(&t.id, &t.operation),
                "link": [],
            })
        })
        .filter(|r| filter_matches(&filter, |k| r[k].as_str().unwrap_or_default().to_string()))
        .collect();
    let body = json!({
        "name": "adminTask",
        "total": records.len(),
        "page": paging.page,
        "pageSize": paging.page_size,
        "record": paging.slice(&records),
    });
    Response::json(200, body.to_string(), NEWEST)
}

/// `GET /api/task/{id}`: a running, canceled or failed job of the group, as a task.
fn task(base: &str, id: &str, members: &[(String, PathBuf)]) -> Response {
    for (_, dir) in members {
        let cell = CellDir::new(dir);
        let found = cell.with_state(|s, _| {
            let name = s.name.clone().unwrap_or_else(|| cell.default_name());
            let found = if let Some(j) = s.jobs.iter().find(|j| j.id == id) {
                Some((&j.operation, j.started_at_ms, "running", j.cancel_requested, None))
            } else if let Some(j) = s.canceled_jobs.iter().find(|j| j.id == id) {
                Some((&j.operation, j.started_at_ms, "canceled", true, Some(j.canceled_at_ms)))
            } else {
                s.failed_jobs
                    .iter()
                    .find(|j| j.id == id)
                    .map(|j| (&j.operation, j.started_at_ms, "error", false, Some(j.failed_at_ms)))
            };
            Ok(found.map(|(op, started, status, cancel_requested, ended)| {
                json!({
                    "id": format!("urn:vcloud:task:{id}"),
                    "href": format!("{base}/api/task/{id}"),
                    "name": "task",
                    "operationName": op,
                    "operation": format!("{op} (simulated)"),
                    "status": status,
                    "startTime": rfc3339_ms(started),
                    "endTime": ended.map(rfc3339_ms),
                    "cancelRequested": cancel_requested,
                    "cellName": name,
                })
            }))
        });
        if let Ok(Some(body)) = found {
            return Response::json(200, body.to_string(), NEWEST);
        }
    }
    not_found(&format!("No task with id {id}"))
}

/// `POST /api/task/{id}/action/cancel`: 204 whether the job ends or (uncancellable) only records
/// the request.
fn cancel(id: &str, members: &[(String, PathBuf)]) -> Response {
    for (_, dir) in members {
        if let Ok(Some(_)) = CellDir::new(dir).with_state(|s, now| Ok(s.cancel_job(now, id))) {
            return Response::empty(204);
        }
    }
    not_found(&format!("No running task with id {id}"))
}

// ---- encodings ----

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_at = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex_at(i + 1), hex_at(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&b=x%3Dy` as decoded pairs (`+` is a space).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// Standard base64 (padding optional); None for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding of a valid length.
    (bits < 6 && acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_basic_credentials() {
        assert_eq!(base64_decode("YWRtaW5AU3lzdGVtOnB3").unwrap(), b"admin@System:pw");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI").unwrap(), b"ab");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a b").is_none());
        assert!(base64_decode("YR").is_none());
    }

    #[test]
    fn queries_and_filters_parse() {
        let q = query_pairs("type=adminTask&filter=status%3D%3Drunning%3BcellName%3D%3Dcell+2&page=2");
        assert_eq!(q[1], ("filter".into(), "status==running;cellName==cell 2".into()));
        let f = parse_filter(&q[1].1, &["status", "cellName"]).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].len(), 2);
        assert!(parse_filter("owner==x", &["status"]).is_err());
        assert!(parse_filter("status!=x", &["status"]).is_err());
        let f = parse_filter("name==a*;status==running,name==zz", &["name", "status"]).unwrap();
        assert!(filter_matches(&f, |k| if k == "name" {
            "abc".into()
        } else {
            "running".into()
        }));
        assert!(!filter_matches(&f, |k| if k == "name" {
            "bc".into()
        } else {
            "running".into()
        }));
    }

    #[test]
    fn globs() {
        assert!(glob("a*c", "abc"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "a-b-c"));
        assert!(!glob("a*c", "ab"));
        assert!(!glob("abc", "abcd"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn routes() {
        assert!(matches!(match_route("GET", "/api/versions"), Ok(Route::Versions)));
        assert!(matches!(match_route("GET", "/cloudapi/1.0.0/cells/"), Ok(Route::Cells)));
        assert!(
            matches!(match_route("POST", "/api/task/urn:vcloud:task:abc/action/cancel"), Ok(Route::Cancel(id)) if id == "abc")
        );
        assert_eq!(match_route("PUT", "/api/versions").err().unwrap().status, 405);
        assert_eq!(match_route("GET", "/api/nope").err().unwrap().status, 404);
    }
}
