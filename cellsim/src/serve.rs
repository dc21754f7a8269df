//! `cellsim serve DIR`: the cell's HTTP face on loopback: the load balancer's health check
//! `GET|HEAD /cloud/server_status` and the REST API (api.rs), on a plain-HTTP and an HTTPS
//! listener (vcd.md section 4).
//!
//! std::net, rustls' `StreamOwned` and a thread per connection: no async runtime for a test
//! double. Requests are bounded (head and body size, read and write timeouts, concurrent
//! connections) and answered with `Connection: close`. Routing ([`route`]) and the connection
//! handler ([`exchange`]) work on any `Read + Write` stream; `serve.json` names each listener by
//! scheme (`http`, `https`) and the CA that signed the HTTPS certificate (`ca`).

use crate::api;
use crate::model::{Phase, now_ms, rfc3339_ms};
use crate::store::{CellDir, Error, Result, io_err, write_atomic};
use crate::tls;
use nix::sys::signal::{SigSet, Signal};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
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
/// Largest request body read (a larger one is answered 413).
pub const MAX_BODY: usize = 64 * 1024;
/// After the answer, up to this much that the client still sends is drained so the close is clean.
const MAX_DRAIN: u64 = 256 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 64;
/// How often the server checks that its cell still exists.
const WATCH_EVERY: Duration = Duration::from_millis(250);

pub struct Request {
    pub method: String,
    /// As sent: path and query.
    pub target: String,
    pub authorization: bool,
    /// Header lines as sent (name, value trimmed), in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked), at most [`MAX_BODY`] bytes.
    pub body: Vec<u8>,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or("")
    }
    /// What follows `?` (without any `#` fragment); empty if none.
    pub fn query(&self) -> &str {
        let no_fragment = self.target.split('#').next().unwrap_or("");
        no_fragment.split_once('?').map_or("", |(_, q)| q)
    }
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub reason: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
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
    fn plain(status: u16) -> Response {
        Response::text(status, reason(status), reason(status))
    }
    /// A JSON answer; `version` goes into the Content-Type (`application/json;version=38.1`).
    pub fn json(status: u16, body: String, version: &str) -> Response {
        Response {
            status,
            reason: reason(status),
            headers: vec![("Content-Type", format!("application/json;version={version}"))],
            body,
        }
    }
    /// No body, no Content-Type (204).
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            reason: reason(status),
            headers: Vec::new(),
            body: String::new(),
        }
    }
    /// Puts the negotiated API version into a JSON Content-Type.
    pub fn set_version(&mut self, version: &str) {
        for (name, value) in &mut self.headers {
            if *name == "Content-Type" && value.starts_with("application/json") {
                *value = format!("application/json;version={version}");
            }
        }
    }
}

/// The listener a request arrived on.
pub struct Listener {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `scheme://addr`, the base of hrefs in API answers.
    pub base: String,
}

/// The one place that maps requests to answers: the health check and the REST API (api.rs).
pub fn route(cell: &CellDir, listener: &Listener, req: &Request) -> Response {
    match req.path() {
        HEALTH_PATH if matches!(req.method.as_str(), "GET" | "HEAD") => {
            // A cell that cannot be read (e.g. being deleted) is not healthy.
            let health = cell.with_state(|s, _| {
                let refused = s
                    .start_refused
                    .clone()
                    .filter(|_| s.service_running && s.cell == Phase::Down);
                Ok((s.is_healthy(), refused))
            });
            match health.unwrap_or((false, None)) {
                (true, _) => Response::text(200, "OK", HEALTHY_BODY),
                // The cell did not start: the reason its log gives, as the status page would.
                (false, Some(reason)) => Response::text(503, "Service Unavailable", &reason),
                (false, None) => Response::text(503, "Service Unavailable", UNHEALTHY_BODY),
            }
        }
        HEALTH_PATH => {
            let mut r = Response::text(405, "Method Not Allowed", "Method Not Allowed");
            r.headers.push(("Allow", "GET, HEAD".into()));
            r
        }
        path if api::is_api_path(path) => api::route(cell, &listener.base, req),
        _ => Response::text(404, "Not Found", "Not Found"),
    }
}

/// Reads the request head: up to the blank line, at most [`MAX_HEAD`] bytes. Returns everything
/// read (head, then the start of any body) and where the head ends; None: too large.
fn read_head(stream: &mut impl Read) -> io::Result<(Vec<u8>, Option<usize>)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = find_blank_line(&head) {
            return Ok((head, Some(end)));
        }
        if head.len() > MAX_HEAD {
            return Ok((head, None));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// Where the head ends (the blank line) and the body starts.
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn body_start(bytes: &[u8], end: usize) -> usize {
    if bytes[end..].starts_with(b"\r\n\r\n") {
        end + 4
    } else {
        end + 2
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
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Some(Request {
        method: method.into(),
        target: target.into(),
        authorization: headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("authorization")),
        headers,
        body: Vec::new(),
    })
}

/// The body's bytes: what came with the head, then the stream.
struct BodyReader<'a, S> {
    pre: &'a [u8],
    inner: &'a mut S,
}

impl<S: Read> Read for BodyReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.len());
            buf[..n].copy_from_slice(&self.pre[..n]);
            self.pre = &self.pre[n..];
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

/// One line (without CR LF) of at most 1 KiB.
fn read_line(r: &mut impl Read) -> io::Result<std::result::Result<Vec<u8>, u16>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if r.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match byte[0] {
            b'\n' => {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Ok(line));
            }
            b if line.len() < 1024 => line.push(b),
            _ => return Ok(Err(400)),
        }
    }
}

/// Reads a chunked body; Err(status) for a malformed or oversized one.
fn read_chunked(r: &mut impl Read) -> io::Result<std::result::Result<Vec<u8>, u16>> {
    let mut body = Vec::new();
    loop {
        let line = match read_line(r)? {
            Ok(l) => l,
            Err(status) => return Ok(Err(status)),
        };
        let size_text = String::from_utf8_lossy(&line);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else {
            return Ok(Err(400));
        };
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                match read_line(r)? {
                    Ok(l) if l.is_empty() => return Ok(Ok(body)),
                    Ok(_) => {}
                    Err(status) => return Ok(Err(status)),
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Ok(Err(413));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        match read_line(r)? {
            Ok(l) if l.is_empty() => {}
            _ => return Ok(Err(400)),
        }
    }
}

/// Reads the body the head announces (Content-Length or chunked), at most [`MAX_BODY`].
fn read_body(req: &Request, pre: &[u8], stream: &mut impl Read) -> std::result::Result<Vec<u8>, u16> {
    let mut reader = BodyReader { pre, inner: stream };
    if let Some(te) = req.header("transfer-encoding") {
        if !te.to_ascii_lowercase().trim().ends_with("chunked") {
            return Err(501);
        }
        return read_chunked(&mut reader).unwrap_or(Err(400));
    }
    let length = match req.header("content-length") {
        None => return Ok(Vec::new()),
        Some(v) => v.trim().parse::<usize>().map_err(|_| 400u16)?,
    };
    if length > MAX_BODY {
        return Err(413);
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).map_err(|_| 400u16)?;
    Ok(body)
}

/// Serves one request on `stream`: reads it, answers it, and logs it (before the answer is
/// written, so a client that has the answer finds the log line).
pub fn exchange(cell: &CellDir, listener: &Listener, stream: &mut (impl Read + Write)) -> io::Result<()> {
    let at = now_ms();
    let (raw, end) = read_head(stream)?;
    let (req, resp) = match end {
        None => (None, Response::plain(431)),
        Some(end) => match parse_head(&raw[..end]) {
            None => (None, Response::plain(400)),
            Some(mut req) => {
                let pre = &raw[body_start(&raw, end).min(raw.len())..];
                // Only API requests have their body read (the health check ignores it, as it
                // always did; the linger drains it).
                let body = if api::is_api_path(req.path()) {
                    read_body(&req, pre, stream)
                } else {
                    Ok(pre.to_vec())
                };
                match body {
                    Ok(body) => {
                        req.body = body;
                        let resp = route(cell, listener, &req);
                        (Some(req), resp)
                    }
                    Err(status) => {
                        req.body = pre.to_vec();
                        (Some(req), Response::plain(status))
                    }
                }
            }
        },
    };
    let head_end = end.unwrap_or(raw.len());
    log_request(cell, listener, at, &raw[..head_end], req.as_ref(), resp.status);

    let head_only = req.as_ref().is_some_and(|r| r.method == "HEAD");
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, resp.reason);
    for (name, value) in &resp.headers {
        out += &format!("{name}: {value}\r\n");
    }
    if resp.status != 204 {
        out += &format!("Content-Length: {}\r\n", resp.body.len());
    }
    out += "Connection: close\r\n\r\n";
    if !head_only {
        out += &resp.body;
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

#[derive(Serialize)]
struct LogLine<'a> {
    at: String,
    method: &'a str,
    path: &'a str,
    status: u16,
    authorization_present: bool,
    scheme: &'a str,
    auth_kind: &'a str,
    password_elsewhere: bool,
    password_in_login_header: bool,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `basic`, `bearer`, `none` or `other`: the scheme of the Authorization header.
fn auth_kind(req: Option<&Request>) -> &'static str {
    let Some(value) = req.and_then(|r| r.header("authorization")) else {
        return "none";
    };
    let scheme = value.split(' ').next().unwrap_or("");
    if scheme.eq_ignore_ascii_case("basic") {
        "basic"
    } else if scheme.eq_ignore_ascii_case("bearer") {
        "bearer"
    } else {
        "other"
    }
}

/// Where the password showed up: (anywhere but the login's Basic header, in the login's Basic
/// header). Looks at the raw head (request line and every header line), the percent-decoded
/// target, every decoded Basic header and the body.
fn password_flags(raw_head: &[u8], req: Option<&Request>, password: &str) -> (bool, bool) {
    let pw = password.as_bytes();
    if pw.is_empty() {
        return (false, false);
    }
    let login = req.is_some_and(api::is_login);
    let (mut elsewhere, mut in_login_header, mut login_header_seen) = (false, false, false);
    for line in raw_head.split(|b| *b == b'\n') {
        let text = String::from_utf8_lossy(line);
        if let Some((name, value)) = text.split_once(':')
            && name.trim().eq_ignore_ascii_case("authorization")
        {
            let decoded = value
                .trim()
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
                .and_then(|(_, b64)| api::base64_decode(b64.trim()));
            if let Some(decoded) = decoded {
                if login && !login_header_seen {
                    login_header_seen = true;
                    in_login_header = contains(&decoded, pw);
                    continue;
                }
                elsewhere |= contains(&decoded, pw);
            }
        }
        elsewhere |= contains(line, pw);
    }
    if let Some(req) = req {
        elsewhere |= contains(api::percent_decode(&req.target).as_bytes(), pw);
        elsewhere |= contains(api::percent_decode(&req.target.replace('+', " ")).as_bytes(), pw);
        elsewhere |= contains(&req.body, pw);
    }
    (elsewhere, in_login_header)
}

fn log_request(cell: &CellDir, listener: &Listener, at_ms: u64, raw_head: &[u8], req: Option<&Request>, status: u16) {
    // The password configured now; knobs need no advancing, so no lock either.
    let password = cell.peek().map(|s| s.knobs.password).unwrap_or_default();
    let (password_elsewhere, password_in_login_header) = password_flags(raw_head, req, &password);
    let mut path = req.map_or(String::new(), |r| r.target.clone());
    if !password.is_empty() {
        path = path.replace(&password, "***");
    }
    let line = LogLine {
        at: rfc3339_ms(at_ms),
        method: req.map_or("", |r| &r.method),
        path: &path,
        status,
        authorization_present: req.is_some_and(|r| r.authorization),
        scheme: listener.scheme,
        auth_kind: auth_kind(req),
        password_elsewhere,
        password_in_login_header,
    };
    let mut text = serde_json::to_string(&line).expect("log line serializes");
    text.push('\n');
    // O_APPEND and one write: concurrent requests append whole lines.
    let path = cell.sim().join("http.jsonl");
    let _ = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
}

/// Lingering close: drain what the client still sends, so closing with unread data does not
/// reset the connection before the client reads the answer.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = io::copy(&mut stream.take(MAX_DRAIN), &mut io::sink());
}

fn serve_tcp(cell: &CellDir, listener: &Listener, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    if exchange(cell, listener, &mut stream).is_ok() {
        linger(&mut stream);
    }
}

/// The same over TLS: the handshake happens on the first read, under the same timeouts.
fn serve_tls(cell: &CellDir, listener: &Listener, config: &Arc<ServerConfig>, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(conn) = ServerConnection::new(Arc::clone(config)) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, stream);
    if exchange(cell, listener, &mut tls).is_ok() {
        tls.conn.send_close_notify();
        let _ = tls.flush();
        linger(&mut tls.sock);
    }
}

#[derive(Serialize)]
struct ServeInfo {
    pid: u32,
    http: String,
    https: String,
    /// Absolute path of the CA certificate (PEM) that signed the HTTPS listener's certificate
    /// (with `--self-signed`: that certificate itself, which is what an operator would try).
    ca: String,
    /// SHA-256 of the HTTPS listener's certificate (DER), colon-separated upper case: the value
    /// a client pins.
    cert_sha256: String,
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

fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| Error::Msg(format!("{addr}: {e}")))
}

/// Accepts connections for ever, one thread each, at most [`MAX_CONNECTIONS`] open in all.
fn accept_loop(
    cell: Arc<CellDir>,
    socket: TcpListener,
    listener: Arc<Listener>,
    tls: Option<Arc<ServerConfig>>,
    open: Arc<AtomicUsize>,
) {
    for stream in socket.incoming() {
        let Ok(stream) = stream else { continue };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            continue; // dropped: the client sees the connection closed
        }
        let (cell, listener, tls, counter) = (Arc::clone(&cell), Arc::clone(&listener), tls.clone(), Arc::clone(&open));
        let spawned = std::thread::Builder::new().spawn(move || {
            match &tls {
                Some(config) => serve_tls(&cell, &listener, config, stream),
                None => serve_tcp(&cell, &listener, stream),
            }
            counter.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// `cellsim serve DIR`: runs until SIGTERM/SIGINT, or until DIR stops being a cell.
pub fn serve(root: &Path, listen: SocketAddr, https: SocketAddr, self_signed: bool) -> Result<()> {
    for addr in [listen, https] {
        if !addr.ip().is_loopback() {
            return Err(Error::Msg(format!(
                "{addr}: cellsim serves on loopback only (e.g. 127.0.0.1:0)"
            )));
        }
    }
    let root = root.canonicalize().map_err(io_err(root))?;
    let cell = Arc::new(CellDir::new(&root));
    if !cell.state_path().exists() {
        return Err(Error::Msg(format!(
            "{}: not a cell (create one with `cellsim create DIR`)",
            root.display()
        )));
    }
    // Cells made before the HTTPS listener existed get their certificates now.
    let group = cell.with_state(|s, _| Ok(s.group.clone()))?;
    let ca = tls::ensure(&cell, group.as_deref(), false)?;
    let (ca, cert, key) = if self_signed {
        let cert = tls::ensure_self_signed(&cell)?;
        (cert.clone(), cert, cell.tls_dir().join("self-signed.key"))
    } else {
        (ca, cell.tls_dir().join("server.pem"), cell.tls_dir().join("server.key"))
    };
    let config = tls::server_config(&cert, &key)?;
    let cert_sha256 = tls::thumbprint(&cert)?;

    // Blocked in every thread (threads inherit the mask), taken by the signal thread only.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .map_err(|e| Error::Msg(format!("blocking signals: {e}")))?;

    let plain = bind(listen)?;
    let secure = bind(https)?;
    let http_addr = plain.local_addr().map_err(io_err(&root))?;
    let https_addr = secure.local_addr().map_err(io_err(&root))?;
    let (http_url, https_url) = (format!("http://{http_addr}"), format!("https://{https_addr}"));
    let info = ServeInfo {
        pid: std::process::id(),
        http: http_url.clone(),
        https: https_url.clone(),
        ca: ca.display().to_string(),
        cert_sha256: cert_sha256.clone(),
    };
    let text = serde_json::to_string(&info).expect("serve info serializes") + "\n";
    write_atomic(&serve_json_path(&cell), text.as_bytes(), 0o644)?;
    let mut stdout = io::stdout();
    let _ = writeln!(
        stdout,
        "Serving the cell in {} at {http_url}{HEALTH_PATH}",
        root.display()
    );
    let _ = writeln!(
        stdout,
        "REST API at {https_url}/api/versions (CA certificate {}, certificate SHA-256 {cert_sha256})",
        ca.display()
    );
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
    {
        let listener = Arc::new(Listener {
            scheme: "https",
            base: https_url,
        });
        let (cell, open) = (Arc::clone(&cell), Arc::clone(&open));
        std::thread::spawn(move || accept_loop(cell, secure, listener, Some(config), open));
    }
    let listener = Arc::new(Listener {
        scheme: "http",
        base: http_url,
    });
    accept_loop(cell, plain, listener, None, open);
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
