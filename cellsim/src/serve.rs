//! `cellsim serve DIR`: the cell's HTTP face on loopback, for now only the load balancer's health
//! check `GET|HEAD /cloud/server_status` (vcd.md section 4).
//!
//! std::net and a thread per connection: no async runtime for a test double. Requests are
//! bounded (head size, read and write timeouts, concurrent connections) and answered with
//! `Connection: close`. Routing ([`route`]) and the connection handler ([`handle`]) work on any
//! `Read + Write` stream, so a TLS listener and REST API routes can be added to this command
//! later; `serve.json` names each listener by scheme (`http` now, `https` then).

use crate::model::{now_ms, rfc3339_ms};
use crate::store::{CellDir, Error, Result, io_err};
use nix::sys::signal::{SigSet, Signal};
use serde::Serialize;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub const HEALTH_PATH: &str = "/cloud/server_status";
pub const HEALTHY_BODY: &str = "Service is up.";
pub const UNHEALTHY_BODY: &str = "Service Unavailable";

/// Largest request head (request line and headers) read.
const MAX_HEAD: usize = 16 * 1024;
/// Request bodies are not used; up to this much is drained so the close is clean.
const MAX_DRAIN: u64 = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 64;
/// How often the server checks that its cell still exists.
const WATCH_EVERY: Duration = Duration::from_millis(250);

pub struct Request {
    pub method: String,
    /// As sent: path and query.
    pub target: String,
    pub authorization: bool,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or("")
    }
}

pub struct Response {
    pub status: u16,
    pub reason: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Response {
        Response {
            status,
            reason,
            headers: vec![("Content-Type", "text/plain;charset=UTF-8".into())],
            body: body.into(),
        }
    }
}

/// The one place that maps requests to answers; REST API routes join here later.
pub fn route(cell: &CellDir, req: &Request) -> Response {
    match req.path() {
        HEALTH_PATH if matches!(req.method.as_str(), "GET" | "HEAD") => {
            // A cell that cannot be read (e.g. being deleted) is not healthy.
            let healthy = cell.with_state(|s, _| Ok(s.is_healthy())).unwrap_or(false);
            if healthy {
                Response::text(200, "OK", HEALTHY_BODY)
            } else {
                Response::text(503, "Service Unavailable", UNHEALTHY_BODY)
            }
        }
        HEALTH_PATH => {
            let mut r = Response::text(405, "Method Not Allowed", "Method Not Allowed");
            r.headers.push(("Allow", "GET, HEAD".into()));
            r
        }
        _ => Response::text(404, "Not Found", "Not Found"),
    }
}

/// Reads the request head: up to the blank line, at most [`MAX_HEAD`] bytes.
fn read_head(stream: &mut impl Read) -> io::Result<std::result::Result<Vec<u8>, Response>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = find_blank_line(&head) {
            head.truncate(end);
            return Ok(Ok(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(Err(Response::text(
                431,
                "Request Header Fields Too Large",
                "Request Header Fields Too Large",
            )));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
}

fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut words = lines.next()?.split(' ');
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if words.next().is_some() || !method_ok || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut authorization = false;
    for line in lines {
        let (name, _) = line.split_once(':')?;
        authorization |= name.trim().eq_ignore_ascii_case("authorization");
    }
    Some(Request {
        method: method.into(),
        target: target.into(),
        authorization,
    })
}

/// Serves one request on `stream`; returns what was asked and answered, for the log.
pub fn handle(cell: &CellDir, stream: &mut (impl Read + Write)) -> io::Result<(Option<Request>, u16)> {
    let (req, resp) = match read_head(stream)? {
        Err(too_large) => (None, too_large),
        Ok(head) => match parse_head(&head) {
            Some(req) => {
                let resp = route(cell, &req);
                (Some(req), resp)
            }
            None => (None, Response::text(400, "Bad Request", "Bad Request")),
        },
    };
    let head_only = req.as_ref().is_some_and(|r| r.method == "HEAD");
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, resp.reason);
    for (name, value) in &resp.headers {
        out += &format!("{name}: {value}\r\n");
    }
    out += &format!("Content-Length: {}\r\nConnection: close\r\n\r\n", resp.body.len());
    if !head_only {
        out += &resp.body;
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()?;
    Ok((req, resp.status))
}

#[derive(Serialize)]
struct LogLine<'a> {
    at: String,
    method: &'a str,
    path: &'a str,
    status: u16,
    authorization_present: bool,
}

fn log_request(path: &Path, at_ms: u64, req: Option<&Request>, status: u16) {
    let line = LogLine {
        at: rfc3339_ms(at_ms),
        method: req.map_or("", |r| &r.method),
        path: req.map_or("", |r| &r.target),
        status,
        authorization_present: req.is_some_and(|r| r.authorization),
    };
    let mut text = serde_json::to_string(&line).expect("log line serializes");
    text.push('\n');
    // O_APPEND and one write: concurrent requests append whole lines.
    let _ = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
}

fn serve_tcp(cell: &CellDir, mut stream: TcpStream) {
    let at = now_ms();
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    if let Ok((req, status)) = handle(cell, &mut stream) {
        log_request(&cell.sim().join("http.jsonl"), at, req.as_ref(), status);
        // Lingering close: drain what the client still sends (a body we ignore), so closing
        // with unread data does not reset the connection before the client reads the answer.
        let _ = stream.shutdown(Shutdown::Write);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = io::copy(&mut (&mut stream).take(MAX_DRAIN), &mut io::sink());
    }
}

#[derive(Serialize)]
struct ServeInfo {
    pid: u32,
    http: String,
}

pub fn serve_json_path(cell: &CellDir) -> PathBuf {
    cell.sim().join("serve.json")
}

/// Removes serve.json if it still describes this process (a later server may have replaced it).
fn remove_serve_json(cell: &CellDir) {
    let path = serve_json_path(cell);
    let ours = fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["pid"] == std::process::id());
    if ours {
        let _ = fs::remove_file(&path);
    }
}

/// `cellsim serve DIR`: runs until SIGTERM/SIGINT, or until DIR stops being a cell.
pub fn serve(root: &Path, listen: SocketAddr) -> Result<()> {
    if !listen.ip().is_loopback() {
        return Err(Error::Msg(format!(
            "{listen}: cellsim serves on loopback only (e.g. 127.0.0.1:0)"
        )));
    }
    let root = root.canonicalize().map_err(io_err(root))?;
    let cell = Arc::new(CellDir::new(&root));
    if !cell.state_path().exists() {
        return Err(Error::Msg(format!(
            "{}: not a cell (create one with `cellsim create DIR`)",
            root.display()
        )));
    }
    // Blocked in every thread (threads inherit the mask), taken by the signal thread only.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .map_err(|e| Error::Msg(format!("blocking signals: {e}")))?;

    let listener = TcpListener::bind(listen).map_err(|e| Error::Msg(format!("{listen}: {e}")))?;
    let addr = listener.local_addr().map_err(io_err(&root))?;
    let url = format!("http://{addr}");
    let info = ServeInfo {
        pid: std::process::id(),
        http: url.clone(),
    };
    let path = serve_json_path(&cell);
    let tmp = cell.sim().join(format!("serve.json.tmp.{}", std::process::id()));
    let text = serde_json::to_string(&info).expect("serve info serializes") + "\n";
    fs::write(&tmp, text).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    let mut stdout = io::stdout();
    let _ = writeln!(stdout, "Serving the cell in {} at {url}{HEALTH_PATH}", root.display());
    let _ = stdout.flush();

    {
        let cell = Arc::clone(&cell);
        std::thread::spawn(move || {
            if signals.wait().is_ok() {
                remove_serve_json(&cell);
                std::process::exit(0);
            }
        });
    }
    {
        let cell = Arc::clone(&cell);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(WATCH_EVERY);
                if !cell.state_path().exists() {
                    remove_serve_json(&cell);
                    std::process::exit(0);
                }
            }
        });
    }

    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            continue; // dropped: the client sees the connection closed
        }
        let (cell, counter) = (Arc::clone(&cell), Arc::clone(&open));
        let spawned = std::thread::Builder::new().spawn(move || {
            serve_tcp(&cell, stream);
            counter.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_parse() {
        let req = parse_head(b"GET /cloud/server_status?x=1 HTTP/1.0\r\nHost: a\r\nauthorization: Basic eA==").unwrap();
        assert_eq!((req.method.as_str(), req.path()), ("GET", HEALTH_PATH));
        assert!(req.authorization);
        let req = parse_head(b"HEAD / HTTP/1.1\nHost: a").unwrap();
        assert!(!req.authorization);
        for bad in [
            &b"GET /x"[..],
            b"GET x HTTP/1.1",
            b"get / HTTP/1.1",
            b"GET / HTTP/2",
            b"GET / HTTP/1.1\r\nno colon",
            b"GET  / HTTP/1.1",
        ] {
            assert!(parse_head(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn blank_line_ends_the_head() {
        assert_eq!(find_blank_line(b"GET / HTTP/1.1\r\n\r\nbody"), Some(14));
        assert_eq!(find_blank_line(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(find_blank_line(b"GET / HTTP/1.1\r\n"), None);
    }
}
