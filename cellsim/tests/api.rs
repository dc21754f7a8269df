//! The REST API of `cellsim serve` over real TLS (trusting the generated CA), groups of cells,
//! API faults and the request log's password flags, all through the real binary.

mod support;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

const CELLS: &str = "/cloudapi/1.0.0/cells";

fn versions(api: &Api) -> ApiReply {
    api.request(
        "GET",
        "/api/versions",
        &[("Accept", "application/*+json;version=38.1")],
        b"",
    )
}

fn version_list(reply: &ApiReply) -> Vec<String> {
    reply.json()["versionInfo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert_eq!(v["deprecated"], false);
            v["version"].as_str().unwrap().to_string()
        })
        .collect()
}

fn cells_page(api: &Api, token: &str, query: &str) -> Value {
    let reply = api.get(&format!("{CELLS}?{query}"), token);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn tasks(api: &Api, token: &str, query: &str) -> ApiReply {
    api.get(&format!("/api/query?type=adminTask&format=records&{query}"), token)
}

/// Percent-encodes a FIQL filter for a query string.
fn enc(filter: &str) -> String {
    filter.replace('=', "%3D").replace(';', "%3B").replace(' ', "%20")
}

fn tls_file_mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Three cells in one group (names a, b, c), each in its own temp dir.
struct Group {
    dir: tempfile::TempDir,
    cells: Vec<Cell>,
}

fn group_of_three(extra: &[&str]) -> Group {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("group");
    let cells = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let mut args = vec!["--group", g.to_str().unwrap(), "--name", name];
            args.extend_from_slice(extra);
            Cell::create(&args)
        })
        .collect();
    Group { dir, cells }
}

// ---- TLS, serve.json, identity ----

#[test]
fn serve_json_names_the_https_listener_and_its_ca() {
    let cell = Cell::create(&[]);
    let server = cell.serve();
    let info = &server.info;
    assert!(
        info["https"].as_str().unwrap().starts_with("https://127.0.0.1:"),
        "{info}"
    );
    let ca = Path::new(info["ca"].as_str().unwrap());
    assert!(ca.is_absolute());
    assert_eq!(ca, cell.dir.join("sim/tls/ca.pem").canonicalize().unwrap());
    assert!(
        std::fs::read_to_string(ca)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert_eq!(tls_file_mode(&cell.dir.join("sim/tls/server.key")), 0o600);
    assert_eq!(tls_file_mode(&cell.dir.join("sim/tls/ca.key")), 0o600);

    // Verified TLS with the CA, for 127.0.0.1 (the client's server name).
    let api = server.api();
    let reply = versions(&api);
    assert_eq!(reply.status, 200);
    assert!(reply.header("Content-Type").unwrap().starts_with("application/json"));
    assert_eq!(version_list(&reply).last().unwrap(), "38.1");
    assert_eq!(version_list(&reply)[0], "37.0");

    // A client that trusts another CA refuses the server.
    let other = Cell::create(&[]);
    let stranger = Api {
        config: client_config(&other.dir.join("sim/tls/ca.pem")),
        ..server.api()
    };
    let err = stranger
        .try_request("GET", "/api/versions", &[], b"")
        .err()
        .expect("a TLS failure");
    assert!(err.to_string().contains("certificate"), "{err}");

    // The plain listener serves the same routes.
    let (status, body) = server.get("/api/versions");
    assert_eq!(status, 200);
    assert!(body.contains("versionInfo"), "{body}");
}

#[test]
fn cells_have_a_name_an_id_and_a_group() {
    let cell = Cell::create(&[]);
    let show = cell.show();
    assert_eq!(show["name"], "cell");
    assert_eq!(show["group"], Value::Null);
    assert_eq!(show["primary_ip"], "127.0.0.1");
    let id = show["id"].as_str().unwrap();
    assert!(id.starts_with("urn:vcloud:cell:") && id.len() == 16 + 36, "{id}");
    assert_eq!(cell.show()["id"], id, "the id is stable");

    let g = group_of_three(&[]);
    let group_dir = g.dir.path().join("group").canonicalize().unwrap();
    let shows: Vec<Value> = g.cells.iter().map(Cell::show).collect();
    for (show, (name, ip)) in shows
        .iter()
        .zip([("a", "127.0.0.1"), ("b", "127.0.0.2"), ("c", "127.0.0.3")])
    {
        assert_eq!(show["name"], name);
        assert_eq!(show["primary_ip"], ip);
        assert_eq!(show["group"], group_dir.to_str().unwrap());
        let entry = std::fs::read_to_string(group_dir.join("cells").join(name)).unwrap();
        assert_eq!(entry.trim_end(), show["dir"].as_str().unwrap());
    }
    assert_ne!(shows[0]["id"], shows[1]["id"]);
    // One CA for the group.
    let ca = |c: &Cell| std::fs::read_to_string(c.dir.join("sim/tls/ca.pem")).unwrap();
    assert_eq!(ca(&g.cells[0]), ca(&g.cells[2]));
    // A second cell may not take a name of the group.
    let g_arg = group_dir.to_str().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(SIM);
    cmd.arg("create")
        .arg(tmp.path().join("x"))
        .args(["--group", &g_arg, "--name", "b"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already has a cell named `b`"),
        "{}",
        text(&out.stderr)
    );
}

// ---- versions and sessions ----

#[test]
fn versions_answer_in_maintenance_but_nothing_else_does() {
    let cell = Cell::create(&[]);
    let server = cell.serve();
    let api = server.api();
    let token = api.login();
    assert!(cell.tool("vmware-vcd-cell", &["maintenance"]).status.success());
    assert_eq!(versions(&api).status, 200);
    assert_eq!(server.health().0, 503);
    for reply in [
        api.get(CELLS, &token),
        api.get("/api/query?type=adminTask", &token),
        api.login_as(BASIC_OK),
        api.post("/api/task/x/action/cancel", &token),
    ] {
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.json()["minorErrorCode"], "SERVICE_UNAVAILABLE");
    }
    // Out of maintenance, the same token works again.
    assert!(cell.tool("vmware-vcd-cell", &["stop"]).status.success());
    assert_eq!(api.get(CELLS, &token).status, 200);
    // A stopped service answers 503 even to /api/versions.
    assert!(cell.tool("systemctl", &["stop", "vmware-vcd"]).status.success());
    assert_eq!(versions(&api).status, 503);
    assert_eq!(api.get(CELLS, &token).status, 503);
}

#[test]
fn login_gives_a_token_and_bad_credentials_get_401() {
    let cell = Cell::create(&[]);
    let server = cell.serve();
    let api = server.api();
    let reply = api.login_as(BASIC_OK);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.header("X-VMWARE-VCLOUD-ACCESS-TOKEN").unwrap();
    assert!(token.len() >= 32);
    let body = reply.json();
    assert!(body["id"].as_str().unwrap().starts_with("urn:vcloud:session:"));
    assert_eq!(body["user"]["name"], "administrator");
    assert!(body["user"]["id"].as_str().unwrap().starts_with("urn:vcloud:user:"));
    assert_eq!(body["org"]["name"], "System");
    assert_eq!(body["roles"][0], "System Administrator");
    assert_eq!(body["sessionIdleTimeoutMinutes"], 30);
    assert!(body["site"]["id"].is_string());
    assert_eq!(api.get(CELLS, token).status, 200);
    assert_eq!(
        api.get("/cloudapi/1.0.0/sessions/current", token).json()["id"],
        body["id"]
    );

    for bad in [
        "administrator@System:wrong",
        "root@System:vcd-sim-password",
        "administrator@acme:vcd-sim-password",
        "administrator:vcd-sim-password",
    ] {
        let reply = api.login_as(bad);
        assert_eq!(reply.status, 401, "{bad}");
        assert_eq!(reply.json()["minorErrorCode"], "UNAUTHORIZED");
        assert!(reply.json()["message"].is_string());
        assert!(reply.header("X-VMWARE-VCLOUD-ACCESS-TOKEN").is_none());
    }
    let no_header = api.request("POST", "/cloudapi/1.0.0/sessions/provider", &[], b"");
    assert_eq!(no_header.status, 401);
    let garbage = api.request(
        "POST",
        "/cloudapi/1.0.0/sessions/provider",
        &[("Authorization", "Basic !!!")],
        b"",
    );
    assert_eq!(garbage.status, 401);
    // Bearer calls need a known token.
    assert_eq!(api.get(CELLS, "not-a-token").status, 401);
    assert_eq!(api.request("GET", CELLS, &[], b"").status, 401);
    // A changed password applies at once.
    cell.sim_ok("set", &["password=n3w"]);
    assert_eq!(api.login_as(BASIC_OK).status, 401);
    assert_eq!(api.login_as("administrator@System:n3w").status, 200);
}

#[test]
fn tokens_expire_with_the_knob_and_logout_revokes_them() {
    let cell = Cell::create(&[]);
    let server = cell.serve();
    let api = server.api();
    let token = api.login();
    assert_eq!(api.get(CELLS, &token).status, 200);
    // Lowering the TTL expires existing tokens.
    cell.sim_ok("set", &["api_token_ttl=1ms"]);
    wait_until("the token to expire", || {
        (api.get(CELLS, &token).status == 401).then_some(())
    });
    let reply = api.get(CELLS, &token);
    assert_eq!(reply.json()["minorErrorCode"], "UNAUTHORIZED");
    // An expired token is gone for good.
    cell.sim_ok("set", &["api_token_ttl=1h"]);
    assert_eq!(api.get(CELLS, &token).status, 401);

    // Logout: 204, and the token no longer works; another session is untouched.
    let token = api.login();
    let other = api.login();
    let bearer = format!("Bearer {token}");
    let reply = api.request(
        "DELETE",
        "/cloudapi/1.0.0/sessions/current",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(reply.status, 204);
    assert_eq!(reply.body, "");
    assert_eq!(api.get(CELLS, &token).status, 401);
    assert_eq!(api.get(CELLS, &other).status, 200);
}

// ---- cells of a group ----

#[test]
fn cells_page_over_the_group_with_their_statuses() {
    let g = group_of_three(&[]);
    let [a, b, c] = [&g.cells[0], &g.cells[1], &g.cells[2]];
    assert!(a.tool("vmware-vcd-cell", &["maintenance"]).status.success());
    assert!(b.tool("systemctl", &["stop", "vmware-vcd"]).status.success());
    c.cell_ok(&["--quiesce", "true"]);
    // c still serves (a quiesced cell does), and lists every cell of the group.
    let server = c.serve();
    let api = server.api();
    let token = api.login();

    let page1 = cells_page(&api, &token, "page=1&pageSize=2");
    assert_eq!(page1["resultTotal"], 3);
    assert_eq!(page1["pageCount"], 2);
    assert_eq!(page1["page"], 1);
    assert_eq!(page1["pageSize"], 2);
    assert_eq!(page1["associations"], serde_json::json!([]));
    let page2 = cells_page(&api, &token, "page=2&pageSize=2");
    assert_eq!(page2["page"], 2);
    let values: Vec<&Value> = page1["values"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["values"].as_array().unwrap())
        .collect();
    let summary: Vec<(&str, bool, &str, &str)> = values
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["isActive"].as_bool().unwrap(),
                v["status"].as_str().unwrap(),
                v["primaryIP"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("a", true, "MAINTENANCE", "127.0.0.1"),
            ("b", false, "INACTIVE", "127.0.0.2"),
            ("c", true, "QUIESCED", "127.0.0.3"),
        ]
    );
    for (v, cell) in values.iter().zip([a, b, c]) {
        assert_eq!(v["id"], cell.show()["id"]);
        assert_eq!(v["productVersion"], "10.6.1");
        humantime::parse_rfc3339(v["productBuildDate"].as_str().unwrap()).unwrap();
    }
    // Defaults and the end of the list.
    let all = cells_page(&api, &token, "");
    assert_eq!((all["page"].as_u64(), all["pageSize"].as_u64()), (Some(1), Some(25)));
    assert_eq!(all["values"].as_array().unwrap().len(), 3);
    assert_eq!(
        cells_page(&api, &token, "page=3&pageSize=2")["values"],
        serde_json::json!([])
    );
    assert_eq!(cells_page(&api, &token, "pageSize=1000")["pageSize"], 128);
    assert_eq!(api.get(&format!("{CELLS}?page=0"), &token).status, 400);
    let filtered = cells_page(&api, &token, &format!("filter={}", enc("status==QUIESCED")));
    assert_eq!(filtered["resultTotal"], 1);

    // A cell back in service shows ACTIVE; a token from one cell works on another of the group.
    assert!(b.tool("systemctl", &["start", "vmware-vcd"]).status.success());
    let b_server = b.serve();
    let b_api = b_server.api();
    let listed = cells_page(&b_api, &token, "pageSize=128");
    assert_eq!(listed["values"][1]["status"], "ACTIVE");
    assert_eq!(listed["values"][1]["isActive"], true);

    // Without the status field (API 38.0), clients have isActive only.
    c.sim_ok("set", &["api_status_field=false"]);
    let listed = cells_page(&api, &token, "");
    for v in listed["values"].as_array().unwrap() {
        assert!(v.get("status").is_none(), "{v}");
        assert!(v["isActive"].is_boolean());
    }
    assert_eq!(version_list(&versions(&api)).last().unwrap(), "38.0");
}

// ---- tasks ----

#[test]
fn the_task_query_lists_running_jobs_filtered_on_the_cell() {
    let g = group_of_three(&[]);
    let [a, b] = [&g.cells[0], &g.cells[1]];
    let a_ids = a.sim_ok(
        "jobs add",
        &["--count", "3", "--never", "--operation", "vdcCopyTemplate"],
    );
    let b_ids = b.sim_ok("jobs add", &["--count", "2", "--never"]);
    let a_ids: Vec<&str> = a_ids.lines().collect();
    let b_ids: Vec<&str> = b_ids.lines().collect();
    let server = a.serve();
    let api = server.api();
    let token = api.login();

    let all = tasks(&api, &token, "").json();
    assert_eq!(all["total"], 5);
    let reply = tasks(&api, &token, &format!("filter={}", enc("status==running;cellName==a")));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["total"], 3);
    assert_eq!((body["page"].as_u64(), body["pageSize"].as_u64()), (Some(1), Some(25)));
    let records = body["record"].as_array().unwrap();
    let base = server.info["https"].as_str().unwrap();
    for (r, id) in records.iter().zip(&a_ids) {
        assert_eq!(r["_type"], "AdminTaskRecord");
        assert_eq!(r["href"], format!("{base}/api/task/{id}"));
        assert_eq!(r["name"], "vdcCopyTemplate");
        assert_eq!(r["operationFull"], "vdcCopyTemplate (simulated)");
        assert_eq!(r["status"], "running");
        assert_eq!(r["cellName"], "a");
        assert_eq!(r["ownerName"], "administrator");
        assert_eq!(r["orgName"], "System");
        assert!(r["objectName"].is_string());
        humantime::parse_rfc3339(r["startDate"].as_str().unwrap()).unwrap();
    }
    let on_b = tasks(&api, &token, &format!("filter={}", enc("cellName==b"))).json();
    let hrefs: Vec<&str> = on_b["record"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["href"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(hrefs, b_ids);
    // Job ids are unique in the group.
    assert!(a_ids.iter().all(|id| !b_ids.contains(id)));
    // Paging, other statuses, unknown keys and types.
    let page = tasks(
        &api,
        &token,
        &format!("filter={}&page=2&pageSize=2", enc("cellName==a")),
    )
    .json();
    assert_eq!(
        (page["total"].as_u64(), page["record"].as_array().unwrap().len()),
        (Some(3), 1)
    );
    assert_eq!(
        tasks(&api, &token, &format!("filter={}", enc("status==success"))).json()["total"],
        0
    );
    let bad = tasks(&api, &token, &format!("filter={}", enc("color==red")));
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["minorErrorCode"], "BAD_REQUEST");
    assert_eq!(api.get("/api/query?type=vApp", &token).status, 400);
}

#[test]
fn cancel_ends_a_job_on_any_cell_of_the_group_unless_it_is_uncancellable() {
    let g = group_of_three(&[]);
    let [a, b] = [&g.cells[0], &g.cells[1]];
    let id = b.sim_ok("jobs add", &["--never", "--operation", "vdcCopyTemplate"]);
    let id = id.trim();
    let stuck = b.sim_ok("jobs add", &["--never", "--uncancellable"]);
    let stuck = stuck.trim();
    let server = a.serve();
    let api = server.api();
    let token = api.login();

    let reply = api.post(&format!("/api/task/{id}/action/cancel"), &token);
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(reply.body, "");
    let show = b.show();
    assert_eq!(show["job_count"], 1);
    assert_eq!(show["canceled_count"], 1);
    assert_eq!(show["canceled_jobs"][0]["id"], id);
    assert_eq!(show["canceled_jobs"][0]["operation"], "vdcCopyTemplate");
    assert_eq!(api.get(&format!("/api/task/{id}"), &token).json()["status"], "canceled");

    // The uncancellable job: 204, but it keeps running with the request recorded.
    assert_eq!(
        api.post(&format!("/api/task/{stuck}/action/cancel"), &token).status,
        204
    );
    let show = b.show();
    assert_eq!(show["job_count"], 1);
    assert_eq!(show["canceled_count"], 1);
    assert_eq!(show["jobs"][0]["id"], stuck);
    assert_eq!(show["jobs"][0]["cancel_requested"], true);
    assert_eq!(show["jobs"][0]["cancellable"], false);
    let task = api.get(&format!("/api/task/{stuck}"), &token).json();
    assert_eq!(
        (task["status"].as_str(), task["cancelRequested"].as_bool()),
        (Some("running"), Some(true))
    );
    assert_eq!(tasks(&api, &token, "").json()["total"], 1);

    // Unknown (or already canceled) ids: 404.
    let reply = api.post("/api/task/no-such-task/action/cancel", &token);
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["minorErrorCode"], "NOT_FOUND");
    assert_eq!(api.post(&format!("/api/task/{id}/action/cancel"), &token).status, 404);
    // Cancel needs a session.
    assert_eq!(
        api.post(&format!("/api/task/{stuck}/action/cancel"), "nope").status,
        401
    );
}

// ---- faults ----

#[test]
fn api_faults_401_500_and_malformed_count_down() {
    let cell = Cell::create(&[]);
    let server = cell.serve();
    let api = server.api();
    let token = api.login();

    cell.sim_ok("fault", &["api-401", "--times", "2"]);
    assert_eq!(versions(&api).status, 200, "versions are not affected");
    let reply = api.get(CELLS, &token);
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["minorErrorCode"], "UNAUTHORIZED");
    assert_eq!(api.login_as(BASIC_OK).status, 401, "logins are authenticated calls too");
    assert_eq!(api.get(CELLS, &token).status, 200, "used up");
    assert_eq!(server.health().0, 200, "health is not an API route");

    cell.sim_ok("fault", &["api-500", "--times", "1"]);
    let reply = api.get(CELLS, &token);
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json()["minorErrorCode"], "INTERNAL_SERVER_ERROR");
    assert_eq!(api.get(CELLS, &token).status, 200);

    cell.sim_ok("fault", &["api-malformed"]);
    for _ in 0..2 {
        let reply = api.get(CELLS, &token);
        assert_eq!(reply.status, 200);
        assert!(serde_json::from_str::<Value>(&reply.body).is_err(), "{}", reply.body);
        assert!(!reply.body.is_empty());
    }
    assert_eq!(cell.show()["faults"][0]["kind"], "api-malformed");
    cell.sim_ok("fault", &["clear"]);
    assert_eq!(api.get(CELLS, &token).json()["resultTotal"], 1);

    // API faults take no --op.
    let out = cell.sim("fault", &["api-500", "--op", "status"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn api_slow_delays_answers_past_a_client_timeout() {
    let cell = Cell::create(&[]);
    let server = cell.serve();
    let mut api = server.api();
    let token = api.login();

    // With the default 5 s delay, a client giving up after 300 ms times out.
    cell.sim_ok("fault", &["api-slow", "--times", "1"]);
    api.timeout = Duration::from_millis(300);
    let bearer = format!("Bearer {token}");
    let err = api
        .try_request("GET", CELLS, &[("Authorization", &bearer)], b"")
        .err()
        .expect("a timeout");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err:?}"
    );
    api.timeout = LIMIT;
    // The fault was used up by that call; versions are never slowed.
    wait_until("the slow fault to be used up", || {
        cell.show()["faults"].as_array().unwrap().is_empty().then_some(())
    });

    // A patient client gets the answer, no sooner than the delay.
    cell.sim_ok("set", &["api_slow_delay=600ms"]);
    cell.sim_ok("fault", &["api-slow", "--times", "1"]);
    let start = Instant::now();
    assert_eq!(api.get(CELLS, &token).status, 200);
    assert!(start.elapsed() >= Duration::from_millis(600), "{:?}", start.elapsed());
}

// ---- the request log ----

#[test]
fn the_request_log_shows_where_the_password_went() {
    let cell = Cell::create(&[]);
    let server = cell.serve();
    let api = server.api();
    let token = api.login();
    assert_eq!(api.get(CELLS, &token).status, 200);
    assert_eq!(versions(&api).status, 200);
    assert_eq!(api.login_as("administrator@System:wrong").status, 401);
    // Leaks: in the query, in another header, in a body, in a Basic header elsewhere.
    api.get("/api/versions?pw=vcd-sim-password", &token);
    api.request("GET", "/api/versions", &[("X-Debug", "vcd-sim-password")], b"");
    api.request(
        "POST",
        "/cloudapi/1.0.0/sessions/provider",
        &[("Authorization", &basic(BASIC_OK))],
        b"{\"password\":\"vcd-sim-password\"}",
    );
    api.request("GET", CELLS, &[("Authorization", &basic(BASIC_OK))], b"");
    assert_eq!(server.get("/cloud/server_status").0, 200);

    let log = cell.http_log();
    let flags: Vec<(&str, &str, bool, bool)> = log
        .iter()
        .map(|l| {
            (
                l["scheme"].as_str().unwrap(),
                l["auth_kind"].as_str().unwrap(),
                l["password_elsewhere"].as_bool().unwrap(),
                l["password_in_login_header"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            ("https", "basic", false, true),   // the login
            ("https", "bearer", false, false), // cells
            ("https", "none", false, false),   // versions
            ("https", "basic", false, false),  // a wrong password
            ("https", "bearer", true, false),  // in the query
            ("https", "none", true, false),    // in a header
            ("https", "basic", true, true),    // in the login's body
            ("https", "basic", true, false),   // Basic on another route
            ("http", "none", false, false),    // health
        ]
    );
    assert_eq!(log[0]["path"], "/cloudapi/1.0.0/sessions/provider");
    assert_eq!(log[0]["status"], 200);
    assert_eq!(log[1]["status"], 200);
    assert_eq!(log[7]["status"], 401);
    // The token itself is not logged; neither is the password.
    let raw = std::fs::read_to_string(cell.dir.join("sim/http.jsonl")).unwrap();
    assert!(!raw.contains(&token));
    assert!(!raw.contains("vcd-sim-password"), "the password is redacted: {raw}");
    assert_eq!(log[4]["path"], "/api/versions?pw=***");
}

#[test]
fn bad_requests_get_json_errors() {
    let cell = Cell::create(&[]);
    let server = cell.serve();
    let api = server.api();
    let token = api.login();
    let reply = api.get("/cloudapi/1.0.0/nothing", &token);
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["minorErrorCode"], "NOT_FOUND");
    let reply = api.request("PUT", "/api/versions", &[], b"");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("Allow"), Some("GET"));
    let reply = api.request(
        "GET",
        "/api/versions",
        &[("Accept", "application/*+xml;version=38.1")],
        b"",
    );
    assert_eq!(reply.status, 406);
    // The requested version is echoed.
    let reply = api.request(
        "GET",
        "/api/versions",
        &[("Accept", "application/json;version=37.2")],
        b"",
    );
    assert_eq!(reply.header("Content-Type"), Some("application/json;version=37.2"));
    // HEAD is a GET without the body.
    let reply = api.request("HEAD", "/api/versions", &[], b"");
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));
    // A body over 64 KiB is refused.
    let big = vec![b'x'; 64 * 1024 + 1];
    assert_eq!(
        api.request("POST", "/cloudapi/1.0.0/sessions/provider", &[], &big)
            .status,
        413
    );
}

#[test]
fn cells_made_before_ids_and_tls_get_them() {
    let cell = Cell::create(&["--jobs", "1", "--job-duration", "1h"]);
    // What an older cellsim left: no identity in the state, no TLS files.
    let path = cell.dir.join("sim/state.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for key in [
        "cell_id",
        "name",
        "group",
        "primary_ip",
        "canceled_jobs",
        "canceled_count",
    ] {
        state.as_object_mut().unwrap().remove(key);
    }
    for key in ["api_token_ttl", "api_status_field", "api_slow_delay"] {
        state["knobs"].as_object_mut().unwrap().remove(key);
    }
    std::fs::write(&path, serde_json::to_string(&state).unwrap()).unwrap();
    std::fs::remove_dir_all(cell.dir.join("sim/tls")).unwrap();

    let show = cell.show();
    assert_eq!(show["name"], "cell");
    assert!(show["id"].as_str().unwrap().starts_with("urn:vcloud:cell:"));
    assert_eq!(cell.show()["id"], show["id"]);
    assert_eq!(show["knobs"]["api_token_ttl"], "30m");
    assert_eq!(show["canceled_count"], 0);
    let server = cell.serve();
    let api = server.api();
    let token = api.login();
    let listed = cells_page(&api, &token, "");
    assert_eq!(listed["values"][0]["id"], show["id"]);
    assert_eq!(tasks(&api, &token, "").json()["total"], 1);
}
