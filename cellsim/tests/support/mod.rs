//! Helpers that drive the real cellsim binary and the wrapper scripts it lays out.
//!
//! Timing: tests wait on conditions by polling with a generous limit, never on a sleep that
//! assumes the machine is fast. The only sleeps check that something does *not* happen, which
//! a slow machine cannot turn into a false failure.

#![allow(dead_code)]

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, setsid};
use serde_json::Value;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub const SIM: &str = env!("CARGO_BIN_EXE_cellsim");
pub const PW: &str = "vcd-sim-password";
pub const USER: &str = "administrator";
/// Long enough for a loaded 2-core CI machine; only reached when something is broken.
pub const LIMIT: Duration = Duration::from_secs(60);

pub struct Cell {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Cell {
    pub fn create(args: &[&str]) -> Cell {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cell");
        let mut cmd = Command::new(SIM);
        cmd.arg("create").arg(&dir).args(args);
        let out = run(cmd);
        assert!(out.status.success(), "create failed: {}", text(&out.stderr));
        Cell { _tmp: tmp, dir }
    }

    /// `cellsim CMD DIR ARGS...`
    pub fn sim(&self, cmd: &str, args: &[&str]) -> Output {
        let mut c = Command::new(SIM);
        let words: Vec<&str> = cmd.split_whitespace().collect();
        c.args(&words).arg(&self.dir).args(args);
        run(c)
    }

    pub fn sim_ok(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.sim(cmd, args);
        assert!(
            out.status.success(),
            "cellsim {cmd} {args:?} failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub fn show(&self) -> Value {
        serde_json::from_str(&self.sim_ok("show", &["--json"])).unwrap()
    }

    pub fn bin(&self, tool: &str) -> PathBuf {
        self.dir.join("bin").join(tool)
    }

    /// A tool command detached from any terminal the test runner may have (new session),
    /// so a missing `-p` can never block on the developer's terminal.
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin(tool));
        cmd.stdin(Stdio::null());
        detach(&mut cmd);
        cmd
    }

    pub fn tool(&self, tool: &str, args: &[&str]) -> Output {
        let mut cmd = self.command(tool);
        cmd.args(args);
        run(cmd)
    }

    /// `cell-management-tool ARGS...`
    pub fn cmt(&self, args: &[&str]) -> Output {
        self.tool("cell-management-tool", args)
    }

    /// `cell-management-tool -u administrator -p PW cell ARGS...`
    pub fn cell(&self, args: &[&str]) -> Output {
        let mut all = vec!["-u", USER, "-p", PW, "cell"];
        all.extend_from_slice(args);
        self.cmt(&all)
    }

    pub fn cell_ok(&self, args: &[&str]) -> String {
        let out = self.cell(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "cell {args:?} failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub fn status(&self) -> String {
        self.cell_ok(&["--status"])
    }

    pub fn invocations(&self) -> Vec<Value> {
        serde_json::from_str(&self.sim_ok("invocations", &["--json"])).unwrap()
    }

    pub fn last_invocation(&self) -> Value {
        self.invocations().pop().expect("an invocation record")
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn detach(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            setsid()?;
            Ok(())
        });
    }
}

/// Runs to completion, with a limit so a broken simulator fails the test instead of hanging it.
pub fn run(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            panic!("{cmd:?} did not finish within {LIMIT:?}");
        }
    }
}

/// Polls `f` until it returns Some, or fails the test after [`LIMIT`].
pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child if the test fails before it is reaped.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32)
    }

    pub fn running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    pub fn wait(&mut self) -> ExitStatus {
        wait_until("the child to exit", || self.0.try_wait().unwrap())
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct PtyRun {
    /// Everything the terminal showed (prompt, echo if any, stdout).
    pub screen: String,
    pub stderr: String,
    pub status: ExitStatus,
}

/// Runs `cmd` with a pseudo-terminal as its controlling terminal, stdin and stdout; waits for
/// `prompt` on the screen, then types `answer` and Enter.
pub fn run_on_pty(mut cmd: Command, prompt: &str, answer: &str) -> PtyRun {
    let pty = nix::pty::openpty(None, None).unwrap();
    let master = File::from(pty.master);
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave))
        .stderr(Stdio::piped());
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            setsid()?;
            if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn on pty");
    // The parent's copies of the slave live in `cmd`: close them, so the master reports EOF
    // (EIO) once the child exits.
    drop(cmd);
    let mut child = KillOnDrop(child);

    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut reader = master.try_clone().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });

    let mut screen = Vec::new();
    let start = Instant::now();
    while !text(&screen).contains(prompt) {
        let left = LIMIT.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(chunk) => screen.extend(chunk),
            Err(_) => panic!("no prompt {prompt:?}; the terminal showed {:?}", text(&screen)),
        }
    }
    let mut writer = master;
    writer.write_all(format!("{answer}\n").as_bytes()).unwrap();
    // The reader ends when the child has exited and closed the terminal.
    loop {
        let left = LIMIT.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(chunk) => screen.extend(chunk),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the tool did not finish; screen {:?}", text(&screen))
            }
        }
    }
    let status = child.wait();
    let mut stderr = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    PtyRun {
        screen: text(&screen),
        stderr,
        status,
    }
}

/// Runs to completion with `input` on stdin (a pipe). Detach `cmd` from the terminal first
/// ([`detach`]; [`Cell::command`] does).
pub fn run_input(mut cmd: Command, input: &[u8]) -> Output {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // The tool may exit without reading everything: a broken pipe is fine.
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(LIMIT) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            panic!("{cmd:?} did not finish within {LIMIT:?}");
        }
    };
    writer.join().unwrap();
    out
}

impl Cell {
    /// `cellsim package --cell DIR --version V OUT ARGS...`; the package's path.
    pub fn package(&self, version: &str, args: &[&str]) -> PathBuf {
        let out_dir = self.dir.parent().unwrap().join("packages");
        let mut cmd = Command::new(SIM);
        cmd.arg("package")
            .arg("--cell")
            .arg(&self.dir)
            .args(["--version", version])
            .arg(&out_dir)
            .args(args);
        let out = run(cmd);
        assert!(out.status.success(), "package failed: {}", text(&out.stderr));
        PathBuf::from(text(&out.stdout).trim())
    }

    /// Starts `cellsim serve DIR` and waits for its serve.json.
    pub fn serve(&self) -> Server {
        let mut cmd = Command::new(SIM);
        cmd.arg("serve")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = KillOnDrop(cmd.spawn().expect("spawn serve"));
        let path = self.dir.join("sim/serve.json");
        let info: Value = wait_until("serve.json", || {
            assert!(child.running(), "cellsim serve exited");
            let text = std::fs::read_to_string(&path).ok()?;
            let info: Value = serde_json::from_str(&text).expect("serve.json is whole JSON");
            (info["pid"] == child.0.id()).then_some(info)
        });
        let url = info["http"].as_str().unwrap();
        let addr = url.strip_prefix("http://").expect("an http URL").parse().unwrap();
        Server { child, addr, info }
    }

    pub fn http_log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("sim/http.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

pub struct Server {
    pub child: KillOnDrop,
    pub addr: std::net::SocketAddr,
    /// serve.json as the server wrote it.
    pub info: Value,
}

pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Server {
    /// One request with `extra` header lines; reads the whole answer (the server closes).
    pub fn request(&self, method: &str, path: &str, extra: &[&str]) -> HttpReply {
        let mut stream = std::net::TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for line in extra {
            req += &format!("{line}\r\n");
        }
        req += "\r\n";
        stream.write_all(req.as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        HttpReply {
            status,
            head: head.to_string(),
            body: body.to_string(),
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let r = self.request("GET", path, &[]);
        (r.status, r.body)
    }

    pub fn health(&self) -> (u16, String) {
        self.get("/cloud/server_status")
    }
}

// ---- the REST API over TLS ----

pub struct ApiReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl ApiReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// A client of one server's HTTPS listener that trusts the CA named in serve.json.
pub struct Api {
    pub addr: std::net::SocketAddr,
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// Read timeout for the answer of each request (once the request is sent).
    pub timeout: Duration,
}

pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration trusting the certificates in `ca` (PEM).
pub fn client_config(ca: &std::path::Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

pub const BASIC_OK: &str = "administrator@System:vcd-sim-password";

pub fn basic(credentials: &str) -> String {
    format!("Basic {}", base64(credentials.as_bytes()))
}

pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Server {
    pub fn api(&self) -> Api {
        let url = self.info["https"].as_str().expect("serve.json has https");
        let addr = url.strip_prefix("https://").expect("an https URL").parse().unwrap();
        let ca = std::path::PathBuf::from(self.info["ca"].as_str().expect("serve.json has ca"));
        Api {
            addr,
            config: client_config(&ca),
            timeout: LIMIT,
        }
    }
}

impl Api {
    /// One request over TLS; reads the whole answer (the server closes the connection).
    pub fn try_request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<ApiReply> {
        let tcp = std::net::TcpStream::connect(self.addr)?;
        // The handshake and the request get the generous limit; `timeout` is for the answer.
        tcp.set_read_timeout(Some(LIMIT))?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(self.config.clone(), name).map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (name, value) in headers {
            req += &format!("{name}: {value}\r\n");
        }
        if !body.is_empty() {
            req += &format!("Content-Length: {}\r\n", body.len());
        }
        req += "\r\n";
        let mut raw = req.into_bytes();
        raw.extend_from_slice(body);
        tls.write_all(&raw)?;
        tls.flush()?;
        tls.sock.set_read_timeout(Some(self.timeout))?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer)?;
        let answer = text(&answer);
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .ok_or_else(|| io::Error::other(format!("incomplete answer {answer:?}")))?;
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        Ok(ApiReply {
            status,
            headers,
            body: body.to_string(),
        })
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> ApiReply {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str, token: &str) -> ApiReply {
        let bearer = format!("Bearer {token}");
        self.request(
            "GET",
            path,
            &[("Accept", "application/json;version=38.1"), ("Authorization", &bearer)],
            b"",
        )
    }

    pub fn post(&self, path: &str, token: &str) -> ApiReply {
        let bearer = format!("Bearer {token}");
        self.request(
            "POST",
            path,
            &[
                ("Accept", "application/*+json;version=38.1"),
                ("Authorization", &bearer),
            ],
            b"",
        )
    }

    pub fn login_as(&self, credentials: &str) -> ApiReply {
        let auth = basic(credentials);
        self.request(
            "POST",
            "/cloudapi/1.0.0/sessions/provider",
            &[("Accept", "application/json;version=38.1"), ("Authorization", &auth)],
            b"",
        )
    }

    /// Logs in as the default administrator; the token.
    pub fn login(&self) -> String {
        let reply = self.login_as(BASIC_OK);
        assert_eq!(reply.status, 200, "login: {}", reply.body);
        reply
            .header("X-VMWARE-VCLOUD-ACCESS-TOKEN")
            .expect("a token header")
            .to_string()
    }
}
