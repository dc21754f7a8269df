//! Reporting back: saved reports, the signed webhook through the durable outbox, events and
//! metrics, with a real HTTP receiver on loopback that verifies signatures as README says.
// Harness code: pedantic style lints on helpers (ownership of small arguments, local items)
// say nothing about what is tested.
#![allow(
    clippy::needless_pass_by_value,
    clippy::items_after_statements,
    clippy::match_wild_err_arm
)]

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SECRET: &str = "whsec-Test-Secret-0815";

#[derive(Clone, Debug)]
struct Req {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// Answer after a delay.
    Slow(u64),
    /// Hold the connection until released.
    Hold,
}

/// A minimal HTTP/1.1 receiver: records each request, answers from a script (default 200).
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Req>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    release: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start(script: &[Answer]) -> Receiver {
        Self::start_on(0, script)
    }

    fn start_on(port: u16, script: &[Answer]) -> Receiver {
        // A port given back (a receiver that comes back) may be some connection's ephemeral
        // source port for a moment: wait that out.
        let until = std::time::Instant::now() + Duration::from_secs(30);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("bind the receiver on port {port}: {e}"),
            }
        };
        let port = listener.local_addr().unwrap().port();
        let r = Receiver {
            port,
            requests: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            release: Arc::default(),
            stop: Arc::default(),
        };
        let (reqs, script, release, stop) = (r.requests.clone(), r.script.clone(), r.release.clone(), r.stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (reqs, script, release) = (reqs.clone(), script.clone(), release.clone());
                std::thread::spawn(move || serve(conn, reqs, script, release));
            }
        });
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }

    fn reports(&self) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.header("X-Cellctl-Event") == Some("report"))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.release.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, reqs: Arc<Mutex<Vec<Req>>>, script: Arc<Mutex<VecDeque<Answer>>>, release: Arc<AtomicBool>) {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut rd = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if rd.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = vec![];
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if rd.read_exact(&mut body).is_err() {
        return;
    }
    reqs.lock().unwrap().push(Req { headers, body });
    let answer = script.lock().unwrap().pop_front().unwrap_or(Answer::Status(200));
    let status = match answer {
        Answer::Status(s) => s,
        Answer::Slow(secs) => {
            std::thread::sleep(Duration::from_secs(secs));
            200
        }
        Answer::Hold => {
            while !release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            200
        }
    };
    let mut w = conn;
    let _ = write!(
        w,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

/// Verify a delivery's signature by running the snippet README gives receivers.
fn readme_verifies(secret: &str, req: &Req) -> bool {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```python verify-signature\n")
        .expect("README has the verification snippet")
        + 27;
    let snippet = &readme[start..start + readme[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body"), &req.body).unwrap();
    let prog = format!(
        "{snippet}\nimport sys\nsys.exit(0 if verify(sys.argv[1].encode(), sys.argv[2], open(sys.argv[3], 'rb').read()) else 1)\n"
    );
    let st = std::process::Command::new("python3")
        .args([
            "-c",
            &prog,
            secret,
            req.header("X-Cellctl-Signature").unwrap_or("t=0,v1=none"),
        ])
        .arg(dir.path().join("body"))
        .status()
        .expect("python3 runs the README snippet");
    st.success()
}

fn secret_file(c: &Cell) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = c.tmp.path().join("report-secret");
    std::fs::write(&p, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn configure(c: &Cell, urls: &[String], extra: &str) {
    // The test receivers speak plain HTTP on loopback.
    c.allow_plain_http();
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    std::fs::write(
        &c.config,
        format!(
            "[report]\nurls = [{}]\nsecret_file = {:?}\nbudget = \"5s\"\ntimeout = \"2s\"\nconnect_timeout = \"1s\"\n{extra}",
            list.join(", "),
            secret_file(c).display().to_string()
        ),
    )
    .unwrap();
}

fn cell() -> Cell {
    Cell::new(&["--quiesce-delay", "200ms"])
}

fn outbox_files(c: &Cell) -> Vec<Value> {
    let Ok(rd) = std::fs::read_dir(c.state.join("outbox")) else {
        return vec![];
    };
    rd.flatten()
        .map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap())
        .collect()
}

/// A closed port, held for the whole test (a released one could be handed to another test's
/// receiver or connection, and a receiver started on it later might find it taken).
fn dead_port() -> PortHold {
    PortHold::new(0)
}

/// A small checker for the subset of JSON Schema our schema uses.
fn check_schema(schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    if let Some(c) = schema.get("const")
        && v != c
    {
        return Err(format!("{path}: {v} is not {c}"));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{path}: {v} not in {e:?}"));
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{path}: {v} is not {types:?}"));
        }
    }
    if let Value::Object(m) = v {
        for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !m.contains_key(r.as_str().unwrap()) {
                return Err(format!("{path}: missing required {r}"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, val) in m {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check_schema(s, val, &format!("{path}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{path}: unknown field {k}"));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(a), Some(items)) = (v, schema.get("items")) {
        for (i, x) in a.iter().enumerate() {
            check_schema(items, x, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

fn assert_reports_match_schema(c: &Cell) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/report.schema.json")).unwrap(),
    )
    .unwrap();
    let dir = c.state.join("reports");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
        check_schema(&schema, &v, "$").unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
        n += 1;
    }
    assert!(n > 0, "no reports in {}", dir.display());
}

#[test]
fn report_is_saved_delivered_signed_and_idempotent() {
    let c = cell();
    let rx = Receiver::start(&[]);
    configure(&c, &[rx.url()], "");
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    r.assert_code(0).assert_no_secret();
    let doc = r.json();
    let run_id = doc["run_id"].as_str().unwrap().to_string();
    assert_eq!(
        doc["report_id"],
        run_id.as_str(),
        "the invocation that starts a run reports under its id"
    );
    assert_eq!(doc["delivery"]["delivered"].as_array().unwrap().len(), 1);
    assert_eq!(doc["delivery"]["queued"], 0);
    let got = rx.reports();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("Idempotency-Key"),
        Some(format!("{run_id}-report").as_str())
    );
    assert_eq!(got[0].header("Content-Type"), Some("application/json"));
    assert_eq!(got[0].json()["outcome"], "shut_down");
    assert!(
        readme_verifies(SECRET, &got[0]),
        "README's verification rejects a genuine delivery"
    );
    assert!(
        !readme_verifies("another-secret", &got[0]),
        "README's verification accepts a wrong secret"
    );
    let mut forged = got[0].clone();
    forged.body = forged.body.iter().map(|b| if *b == b'0' { b'1' } else { *b }).collect();
    assert!(!readme_verifies(SECRET, &forged), "a changed body still verifies");
    // Saved, and shown by `report`.
    assert!(c.state.join(format!("reports/{run_id}.json")).exists());
    let shown = c.run(&["--json", "report", "--last"]);
    shown.assert_code(0);
    assert_eq!(shown.json()["run_id"], run_id.as_str());
    let human = c.run(&["report", &run_id]);
    human.assert_code(0);
    assert!(
        human.stdout.contains(&run_id) && human.stdout.contains("shut_down"),
        "{}",
        human.stdout
    );
    assert!(outbox_files(&c).is_empty());
    assert_reports_match_schema(&c);
}

#[test]
fn receiver_down_then_up_is_delivered_by_flush_and_by_the_next_run() {
    let c = cell();
    let hold = dead_port();
    let port = hold.port;
    let url = format!("http://127.0.0.1:{port}/hook");
    configure(&c, std::slice::from_ref(&url), "");
    let r = c.run(&["--json", "drain", "--no-shutdown", "--poll-interval", "100ms"]);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(
        doc["outcome"], "drained",
        "delivery failure must not change the outcome"
    );
    assert_eq!(doc["delivery"]["queued"], 1);
    assert!(r.stderr.contains("report delivery incomplete"), "{}", r.stderr);
    assert_eq!(outbox_files(&c).len(), 1);
    // `report flush` while still down: exit 24, still queued.
    c.run(&["report", "flush"]).assert_code(24);
    // The next run queues its own report too, then the receiver comes up.
    let r2 = c.run(&["--json", "resume"]);
    r2.assert_code(0);
    let d2 = r2.json();
    assert_eq!(d2["run_id"], doc["run_id"], "resume continues the parked run");
    assert_ne!(
        d2["report_id"], doc["report_id"],
        "but its report is a new document with its own key"
    );
    assert_eq!(outbox_files(&c).len(), 2);
    let rx = Receiver::start_on(port, &[]);
    let f = c.run(&["--json", "report", "flush"]);
    f.assert_code(0);
    assert_eq!(f.json()["delivery"]["delivered"].as_array().unwrap().len(), 2);
    assert_eq!(rx.reports().len(), 2);
    assert!(outbox_files(&c).is_empty());
    // And a queued report goes with the next run.
    drop(rx);
    c.run(&["drain", "--no-shutdown", "--poll-interval", "100ms"])
        .assert_code(0);
    let rx = Receiver::start_on(port, &[]);
    let r3 = c.run(&["--json", "resume"]);
    r3.assert_code(0);
    assert_eq!(
        r3.json()["delivery"]["delivered"].as_array().unwrap().len(),
        2,
        "the old report went first"
    );
    let outcomes: Vec<String> = rx
        .reports()
        .iter()
        .map(|q| q.json()["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outcomes, ["drained", "resumed"]);
}

#[test]
fn server_error_is_retried_with_the_same_key() {
    let c = cell();
    let rx = Receiver::start(&[Answer::Status(500), Answer::Status(503), Answer::Status(200)]);
    configure(&c, &[rx.url()], "");
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    r.assert_code(0);
    assert_eq!(r.json()["delivery"]["delivered"].as_array().unwrap().len(), 1);
    let got = rx.reports();
    assert_eq!(got.len(), 3);
    let keys: Vec<_> = got
        .iter()
        .map(|q| q.header("Idempotency-Key").unwrap().to_string())
        .collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
}

#[test]
fn client_error_is_not_retried_but_kept_and_reported() {
    let c = cell();
    let rx = Receiver::start(&[Answer::Status(400)]);
    configure(&c, &[rx.url()], "");
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(doc["delivery"]["rejected"][0]["status"], 400);
    assert_eq!(rx.reports().len(), 1, "a 400 must not be retried");
    let kept = outbox_files(&c);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["rejected"], 400);
    let f = c.run(&["--json", "report", "flush"]);
    f.assert_code(24);
    assert_eq!(rx.reports().len(), 1, "flush must not resend a rejected delivery");
}

#[test]
fn slow_receiver_is_bounded_by_the_budget() {
    let c = cell();
    let rx = Receiver::start(&[Answer::Slow(60)]);
    configure(&c, &[rx.url()], "");
    std::fs::write(
        &c.config,
        std::fs::read_to_string(&c.config)
            .unwrap()
            .replace("budget = \"5s\"", "budget = \"2s\""),
    )
    .unwrap();
    let t0 = Instant::now();
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    r.assert_code(0);
    // The receiver would take 60 s; the run must give up long before.
    assert!(
        t0.elapsed() < Duration::from_secs(45),
        "reporting was not bounded: {:?}",
        t0.elapsed()
    );
    assert_eq!(r.json()["delivery"]["queued"], 1);
}

#[test]
fn kill_9_during_delivery_loses_nothing_and_resends_with_the_same_key() {
    let c = cell();
    let rx = Receiver::start(&[Answer::Hold]);
    configure(&c, &[rx.url()], "");
    let mut child = c.spawn(&["--json", "drain", "--poll-interval", "100ms"]);
    wait_for("the report to reach the receiver", || !rx.reports().is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    let queued = outbox_files(&c);
    assert_eq!(queued.len(), 1, "the delivery under way must still be in the outbox");
    rx.release.store(true, Ordering::SeqCst);
    c.run(&["report", "flush"]).assert_code(0);
    let got = rx.reports();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].header("Idempotency-Key"), got[1].header("Idempotency-Key"));
    assert_eq!(
        got[0].body, got[1].body,
        "a resend is the same document: deduplicating on the key is safe"
    );
    assert!(outbox_files(&c).is_empty());
}

#[test]
fn every_failure_path_leaves_a_report() {
    let c = cell();
    let served = c.serve();
    // (setup, args, expected exit code)
    type Setup = fn(&Cell);
    let none: Setup = |_| {};
    let cases: Vec<(&str, Setup, Vec<String>, i32)> = vec![
        (
            "wrong password",
            |c: &Cell| std::fs::write(&c.pwfile, "nope\n").unwrap(),
            vec!["drain".into()],
            6,
        ),
        (
            "hung tool",
            |c: &Cell| {
                c.sim(&["fault", "hang", "--op", "status", "--times", "1"]);
            },
            vec!["--tool-timeout".into(), "1s".into(), "drain".into()],
            7,
        ),
        (
            "garbled",
            |c: &Cell| {
                c.sim(&["fault", "garble", "--op", "status", "--times", "1"]);
            },
            vec!["drain".into()],
            7,
        ),
        (
            "deadline",
            |c: &Cell| {
                c.sim(&["jobs", "add", "--never"]);
            },
            vec![
                "drain".into(),
                "--deadline".into(),
                "1s".into(),
                "--poll-interval".into(),
                "100ms".into(),
            ],
            10,
        ),
        (
            "bad checksum",
            none,
            vec!["upgrade".into(), "--sha256".into(), "ab".repeat(32), "PKG".into()],
            20,
        ),
        (
            "failing installer",
            |c: &Cell| {
                c.sim(&["jobs", "finish", "--all"]);
            },
            vec![
                "upgrade".into(),
                "--poll-interval".into(),
                "100ms".into(),
                "FAILPKG".into(),
            ],
            21,
        ),
        (
            "unhealthy",
            |c: &Cell| {
                let _ = std::process::Command::new(c.dir.join("bin/systemctl"))
                    .args(["stop", "vmware-vcd"])
                    .status();
                c.sim(&["set", "startup_delay=10m"]);
            },
            vec!["start".into(), "--health-deadline".into(), "1s".into()],
            22,
        ),
    ];
    let pkg = c.package("10.6.0", "ok", &[]);
    let failpkg = c.package("10.7.0", "fail", &[]);
    let mut seen = vec![];
    for (name, setup, args, code) in cases {
        std::fs::write(&c.pwfile, format!("{PASSWORD}\n")).unwrap();
        setup(&c);
        let args: Vec<String> = args
            .into_iter()
            .map(|a| match a.as_str() {
                "PKG" => pkg.display().to_string(),
                "FAILPKG" => failpkg.display().to_string(),
                _ => a,
            })
            .collect();
        let r = Run::from(c.upgrade_cmd(&served).arg("--json").args(&args).output().unwrap());
        assert_eq!(r.code, code, "{name}: {}", r.stderr);
        let doc = r.json();
        let id = doc["run_id"].as_str().unwrap_or_else(|| panic!("{name}: no run id"));
        let rid = doc["report_id"].as_str().unwrap_or(id);
        let saved: Value =
            serde_json::from_str(&std::fs::read_to_string(c.state.join(format!("reports/{rid}.json"))).unwrap())
                .unwrap();
        assert_eq!(saved["exit_code"], code, "{name}");
        assert!(saved["error"]["message"].is_string(), "{name}");
        seen.push(id.to_string());
        // Leave no recorded run behind for the next case (the failed install keeps one).
        let _ = std::fs::remove_file(c.state.join("current.json"));
        c.sim(&["fault", "clear"]);
        c.sim(&["set", "startup_delay=0s"]);
        let _ = std::process::Command::new(c.dir.join("bin/systemctl"))
            .args(["start", "vmware-vcd"])
            .status();
    }
    // A bad config file, with the state dir given on the command line.
    std::fs::write(&c.config, "bogus = 1\n").unwrap();
    let r = c.run(&["--json", "drain"]);
    r.assert_code(3);
    let id = r.json()["run_id"].as_str().unwrap().to_string();
    assert!(
        c.state.join(format!("reports/{id}.json")).exists(),
        "config errors leave a report too"
    );
    assert_reports_match_schema(&c);
    assert_no_password_in(&c.state_files_text(), "the state dir");
}

#[test]
fn events_stream_steps_and_progress_then_the_report() {
    let c = Cell::new(&["--quiesce-delay", "200ms", "--jobs", "1", "--job-duration", "500ms"]);
    let r = c.run(&["--events", "drain", "--poll-interval", "100ms"]);
    r.assert_code(0);
    let lines: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert!(lines.iter().all(|l| l["event"].is_string() && l["run_id"].is_string()));
    let steps: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["event"] == "step")
        .map(|l| (l["step"].as_str().unwrap().into(), l["status"].as_str().unwrap().into()))
        .collect();
    for want in [
        ("quiesce", "started"),
        ("quiesce", "done"),
        ("shutdown", "done"),
        ("stop_service", "done"),
    ] {
        assert!(
            steps.iter().any(|(s, st)| s == want.0 && st == want.1),
            "{want:?} not in {steps:?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "progress" && l["job_count"].is_u64())
    );
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "report");
    assert_eq!(last["report"]["outcome"], "shut_down");
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn step_events_reach_the_webhook_when_asked() {
    let c = cell();
    let rx = Receiver::start(&[]);
    configure(&c, &[rx.url()], "events = true\n");
    c.run(&["drain", "--poll-interval", "100ms"]).assert_code(0);
    let steps: Vec<Req> = rx
        .requests()
        .into_iter()
        .filter(|q| q.header("X-Cellctl-Event") == Some("step"))
        .collect();
    assert!(steps.len() >= 6, "step events delivered: {}", steps.len());
    assert!(steps.iter().all(|q| readme_verifies(SECRET, q)));
    assert_eq!(rx.reports().len(), 1);
}

#[test]
fn metrics_textfile_reflects_the_last_run() {
    let c = cell();
    let m = c.tmp.path().join("cellctl.prom");
    let ms = m.display().to_string();
    c.run(&[
        "--metrics-file",
        &ms,
        "drain",
        "--no-shutdown",
        "--poll-interval",
        "100ms",
    ])
    .assert_code(0);
    let t = std::fs::read_to_string(&m).unwrap();
    assert!(t.contains("cellctl_last_run_success 1"), "{t}");
    assert!(t.contains("outcome=\"drained\""), "{t}");
    assert!(t.contains("cellctl_run_in_progress 0"), "{t}");
    assert!(t.contains("cellctl_last_run_jobs_at_quiesce 0"), "{t}");
    c.run(&["resume"]).assert_code(0);
    c.sim(&["jobs", "add", "--never"]);
    c.run(&[
        "--metrics-file",
        &ms,
        "drain",
        "--deadline",
        "1s",
        "--poll-interval",
        "100ms",
    ])
    .assert_code(10);
    let t = std::fs::read_to_string(&m).unwrap();
    assert!(
        t.contains("cellctl_last_run_success 0") && t.contains("cellctl_last_run_exit_code 10"),
        "{t}"
    );
    assert_no_password_in(&t, "the saved reports");
    assert!(!t.contains(SECRET));
}

// node_exporter reads the textfile as its own user: it is 0644 even under the service's
// UMask=0077, while what the state directory holds stays 0600.
#[test]
fn metrics_textfile_is_readable_by_others_and_the_state_is_not() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let c = cell();
    let m = c.tmp.path().join("cellctl.prom");
    let mut cmd = c.cellctl();
    cmd.arg("--metrics-file")
        .arg(&m)
        .args(["drain", "--no-shutdown", "--poll-interval", "100ms"]);
    // SAFETY: between fork and exec only umask(2) runs, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            Ok(())
        });
    }
    Run::from(cmd.output().unwrap()).assert_code(0);
    let mode = |p: &std::path::Path| format!("{:o}", std::fs::metadata(p).unwrap().permissions().mode() & 0o777);
    assert_eq!(mode(&m), "644", "{}", m.display());
    let mut dirs = vec![c.state.clone()];
    let mut files = 0;
    while let Some(d) = dirs.pop() {
        for p in std::fs::read_dir(&d).unwrap().flatten().map(|e| e.path()) {
            if p.is_dir() {
                dirs.push(p);
            } else {
                files += 1;
                assert_eq!(mode(&p), "600", "{}", p.display());
            }
        }
    }
    assert!(files >= 2, "the run left {files} files in the state dir");
}

#[test]
fn secrets_appear_in_no_report_event_log_or_metric() {
    let c = cell();
    let rx = Receiver::start(&[Answer::Status(500)]);
    configure(&c, &[rx.url()], "events = true\n");
    let m = c.tmp.path().join("cellctl.prom");
    let mut all = String::new();
    for args in [
        vec!["--events", "drain", "--no-shutdown", "--poll-interval", "100ms"],
        vec!["--json", "resume"],
    ] {
        let out = c
            .cellctl()
            .arg("--metrics-file")
            .arg(&m)
            .args(&args)
            .env("CELLCTL_LOG", "debug")
            .output()
            .unwrap();
        let r = Run::from(out);
        r.assert_code(0);
        all.push_str(&r.stdout);
        all.push_str(&r.stderr);
    }
    all.push_str(&c.state_files_text());
    all.push_str(&std::fs::read_to_string(&m).unwrap());
    for q in rx.requests() {
        all.push_str(&String::from_utf8_lossy(&q.body));
        for (k, v) in &q.headers {
            all.push_str(&format!("{k}: {v}\n"));
        }
    }
    assert_no_password_in(&all, "the output, logs and files");
    assert!(!all.contains(SECRET), "the webhook secret leaked");
}

#[test]
fn webhook_without_a_secret_is_refused_before_anything_changes() {
    let c = cell();
    std::fs::write(&c.config, "[report]\nurls = [\"https://127.0.0.1:9/x\"]\n").unwrap();
    let r = c.run(&["drain"]);
    r.assert_code(3);
    assert!(r.stderr.contains("signing secret"), "{}", r.stderr);
    assert!(c.invocations().is_empty());
}
