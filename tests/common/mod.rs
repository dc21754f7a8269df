//! Test harness: a simulated cell (cellsim) in a temp dir and the real `cellctl` binary.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod appliance;
pub mod etcd;

pub const PASSWORD: &str = "Sim-Secret-4711";

/// The password in every form that would be a leak: as is, and as the API login sends it
/// (HTTP Basic: base64 of `administrator@System:PASSWORD`), which a plain search misses.
pub fn password_forms() -> Vec<String> {
    vec![
        PASSWORD.to_string(),
        base64(format!("administrator@System:{PASSWORD}").as_bytes()),
    ]
}

/// Fails when `text` (from `what`) holds the password in any of its forms.
pub fn assert_no_password_in(text: &str, what: &str) {
    for form in password_forms() {
        assert!(!text.contains(&form), "the password ({form}) appears in {what}");
    }
}

/// Standard base64 with padding (RFC 4648), enough for the leak checks.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn cellctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cellctl"))
}

/// cellsim is another workspace member: `cargo test --workspace` builds it beside cellctl.
pub fn cellsim_bin() -> PathBuf {
    let p = cellctl_bin().parent().unwrap().join("cellsim");
    assert!(
        p.exists(),
        "{} not built: run the tests with `cargo test --workspace` (README)",
        p.display()
    );
    p
}

pub struct Cell {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub state: PathBuf,
    pub pwfile: PathBuf,
    pub config: PathBuf,
    /// Pass `--insecure-allow-http` (see [`Cell::allow_plain_http`]).
    plain_http: std::cell::Cell<bool>,
}

impl Cell {
    /// A running cell; `extra` are `cellsim create` options.
    pub fn new(extra: &[&str]) -> Cell {
        let tmp = tempfile::tempdir().unwrap();
        Self::create(tmp, extra)
    }

    /// A cell of a group (cells sharing `group` see each other through the API).
    pub fn in_group(group: &Path, name: &str, extra: &[&str]) -> Cell {
        let mut args = vec!["--group", group.to_str().unwrap(), "--name", name];
        args.extend_from_slice(extra);
        Self::create(tempfile::tempdir().unwrap(), &args)
    }

    fn create(tmp: tempfile::TempDir, extra: &[&str]) -> Cell {
        let dir = tmp.path().join("vcd");
        let out = Command::new(cellsim_bin())
            .arg("create")
            .arg(&dir)
            .args(["--password", PASSWORD])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cellsim create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pwfile = tmp.path().join("vcd-password");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = tmp.path().join("config.toml");
        std::fs::write(&config, "").unwrap();
        // cellctl refuses a config others can write, whatever the umask; rewrites keep this mode.
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        let state = tmp.path().join("state");
        Cell {
            tmp,
            dir,
            state,
            pwfile,
            config,
            plain_http: std::cell::Cell::new(false),
        }
    }

    /// From now on, cellctl is run with `--insecure-allow-http`: for tests whose webhook
    /// receiver speaks plain HTTP on loopback (cellctl refuses http:// URLs otherwise).
    pub fn allow_plain_http(&self) {
        self.plain_http.set(true);
    }

    pub fn sim(&self, args: &[&str]) -> Output {
        let mut c = Command::new(cellsim_bin());
        // Subcommand first, then the cell dir, then the rest (`jobs add DIR ...`).
        let (head, tail) = if args.first() == Some(&"jobs") {
            args.split_at(2)
        } else {
            args.split_at(1)
        };
        c.args(head).arg(&self.dir).args(tail);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "cellsim {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn show(&self) -> Value {
        let out = self.sim(&["show", "--json"]);
        serde_json::from_slice(&out.stdout).expect("cellsim show --json is JSON")
    }

    pub fn invocations(&self) -> Vec<Value> {
        let out = self.sim(&["invocations", "--json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(v)) => v,
            _ => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        }
    }

    /// Invocations whose argv contains all of `words`.
    pub fn calls_with(&self, words: &[&str]) -> usize {
        self.invocations()
            .iter()
            .filter(|i| {
                let argv: Vec<String> = i["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap_or("").to_string())
                    .collect();
                words.iter().all(|w| argv.iter().any(|a| a == w))
            })
            .count()
    }

    /// A `cellctl` command wired to this cell, isolated from the host's config and environment.
    pub fn cellctl(&self) -> Command {
        let mut c = self.cellctl_without_password();
        c.arg("--password-file").arg(&self.pwfile);
        c
    }

    /// As [`Cell::cellctl`], but with no password source at all (credential tests).
    pub fn cellctl_without_password(&self) -> Command {
        let mut c = Command::new(cellctl_bin());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CELLCTL_") || k == "CREDENTIALS_DIRECTORY" || k == "JOURNAL_STREAM" {
                c.env_remove(k);
            }
        }
        // Most tests have no API: skip the guard, and point task listing at a closed port so it
        // fails at once (https: cellctl refuses plain http). tests/api.rs sets up the simulated API.
        c.env("CELLCTL_SKIP_REDUNDANCY_GUARD", "1")
            .env("CELLCTL_API_URL", "https://127.0.0.1:9");
        if self.plain_http.get() {
            c.arg("--insecure-allow-http");
        }
        c.arg("--vcd-home")
            .arg(&self.dir)
            .arg("--systemctl")
            .arg(self.dir.join("bin/systemctl"))
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.cellctl().args(args).output().unwrap();
        Run::from(out)
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cellctl()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn current(&self) -> Option<Value> {
        let p = self.state.join("current.json");
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
    }

    /// Wait until the recorded run is in the given phase (e.g. "waiting").
    pub fn wait_phase(&self, phase: &str) {
        wait_for(&format!("recorded phase {phase}"), || {
            self.current().is_some_and(|c| {
                let p = &c["phase"];
                p.as_str() == Some(phase) || p.get(phase).is_some()
            })
        });
    }

    /// Every file under the state dir, concatenated (for leak checks).
    pub fn state_files_text(&self) -> String {
        let mut s = String::new();
        visit(&self.state, &mut |p| {
            s.push_str(&String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()));
        });
        s
    }

    /// The secret must be in no argv and no environment of any tool call.
    pub fn assert_no_leak_to_tools(&self) {
        let inv = self.invocations();
        assert!(!inv.is_empty(), "no invocations recorded");
        for i in &inv {
            assert_eq!(i["password_in_argv"], Value::Bool(false), "password in argv: {i}");
            assert_eq!(i["password_in_env"], Value::Bool(false), "password in environment: {i}");
        }
    }
}

fn visit(p: &Path, f: &mut dyn FnMut(&Path)) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            visit(&e.path(), f);
        }
    } else if p.is_file() {
        f(p);
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        use std::os::unix::process::ExitStatusExt;
        Run {
            code: o.status.code().unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// stdout must hold exactly one JSON document.
    pub fn json(&self) -> Value {
        let mut it = serde_json::Deserializer::from_str(&self.stdout).into_iter::<Value>();
        let doc = it
            .next()
            .unwrap_or_else(|| panic!("no JSON on stdout; stderr: {}", self.stderr))
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.stdout));
        assert!(it.next().is_none(), "more than one JSON document: {}", self.stdout);
        doc
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code; stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn assert_no_secret(&self) -> &Self {
        assert_no_password_in(&self.stdout, "stdout");
        assert_no_password_in(&self.stderr, "stderr");
        self
    }
}

pub fn wait_child(child: Child) -> Run {
    Run::from(child.wait_with_output().unwrap())
}

/// Poll a condition; generous limit because CI machines are slow, never a bare sleep.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()), sig).unwrap();
}

/// `cellsim serve` for a cell: the health endpoint, stopped on drop.
pub struct Served {
    child: Child,
    pub url: String,
    /// The TLS listener (REST API) and the CA that signs its certificate.
    pub https: String,
    pub ca: PathBuf,
    /// SHA-256 of the HTTPS listener's certificate, colon-separated upper case (as vCenter shows it).
    pub cert_sha256: String,
}

impl Served {
    /// The health endpoint over TLS (cellctl refuses plain http); pair it with `--health-ca-file`.
    pub fn health_url(&self) -> String {
        format!("{}/cloud/server_status", self.https)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cell {
    pub fn serve(&self) -> Served {
        self.serve_with(&[])
    }

    /// Serving a self-signed certificate marked as a CA (as `openssl req -x509` makes): `ca` is
    /// that certificate itself.
    pub fn serve_self_signed(&self) -> Served {
        self.serve_with(&["--self-signed"])
    }

    fn serve_with(&self, extra: &[&str]) -> Served {
        let _ = std::fs::remove_file(self.dir.join("sim/serve.json"));
        let child = Command::new(cellsim_bin())
            .arg("serve")
            .arg(&self.dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut v = Value::Null;
        wait_for("cellsim serve to listen", || {
            let Ok(t) = std::fs::read_to_string(self.dir.join("sim/serve.json")) else {
                return false;
            };
            v = serde_json::from_str::<Value>(&t).unwrap_or(Value::Null);
            v["http"].is_string() && v["https"].is_string()
        });
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        Served {
            child,
            url: s("http"),
            https: s("https"),
            ca: PathBuf::from(s("ca")),
            cert_sha256: s("cert_sha256"),
        }
    }

    /// A simulated installer for this cell, with its `.sha256` beside it.
    pub fn package(&self, version: &str, kind: &str, extra: &[&str]) -> PathBuf {
        let out_dir = self.tmp.path().join("pkgs");
        std::fs::create_dir_all(&out_dir).unwrap();
        let out = Command::new(cellsim_bin())
            .arg("package")
            .arg("--cell")
            .arg(&self.dir)
            .args(["--version", version, "--kind", kind])
            .args(extra)
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cellsim package: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
        let sum = sha256_hex(&std::fs::read(&path).unwrap());
        std::fs::write(
            format!("{}.sha256", path.display()),
            format!("{sum}  {}\n", path.file_name().unwrap().to_string_lossy()),
        )
        .unwrap();
        path
    }

    /// cellctl wired to the simulated API (guard on), as `name` in the group.
    pub fn api_cmd(&self, served: &Served, name: &str) -> Command {
        let mut c = self.cellctl();
        c.env_remove("CELLCTL_SKIP_REDUNDANCY_GUARD")
            .env("CELLCTL_API_URL", &served.https)
            .env("CELLCTL_API_CA_FILE", &served.ca)
            .env("CELLCTL_CELL_NAME", name);
        c
    }

    /// The API request log of the served cell.
    pub fn http_log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("sim/http.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// cellctl wired for install/upgrade: the sim's systemd-run stand-in and version command, the
    /// served health URL, and fast health polling.
    pub fn upgrade_cmd(&self, served: &Served) -> Command {
        std::fs::write(
            &self.config,
            "[health]\ninterval = \"100ms\"\nrequest_timeout = \"2s\"\n[install]\ntimeout = \"60s\"\n",
        )
        .unwrap();
        let mut c = self.cellctl();
        c.arg("--systemd-run")
            .arg(self.dir.join("bin/systemd-run"))
            .arg("--version-command")
            .arg(self.dir.join("bin/vcd-version"))
            .arg("--health-url")
            .arg(served.health_url())
            .arg("--health-ca-file")
            .arg(&served.ca);
        c
    }
}

/// SHA-256 via the system's sha256sum (keeps the test crate free of hashing code of its own).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A loopback TCP port held closed: bound but not listening (by a small python3 process, as std
/// has no bind without listen), so connections to it are refused and the kernel gives it to no
/// one else as an ephemeral port. A test receiver can listen on it meanwhile and stop again
/// (both sockets set SO_REUSEADDR, which Linux allows beside a socket that does not listen):
/// a receiver that goes down and comes back never gives its port away.
pub struct PortHold {
    child: Child,
    pub port: u16,
}

impl PortHold {
    /// Hold `port`, or a free one for 0.
    pub fn new(port: u16) -> PortHold {
        use std::io::BufRead;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(
                "import socket, sys\n\
                 s = socket.socket()\n\
                 s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('127.0.0.1', int(sys.argv[1])))\n\
                 print(s.getsockname()[1], flush=True)\n\
                 sys.stdin.read()\n",
            )
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (a CI prerequisite) holds a test port");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the port holder could not bind port {port}"));
        PortHold { child, port }
    }
}

impl Drop for PortHold {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the group timeline (cellsim's timeline.jsonl) ----

/// One line of a group's `timeline.jsonl` (see cellsim/README.md, "Timeline").
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[allow(clippy::struct_field_names)] // `event` is the JSON key
pub struct Event {
    pub at_ms: u64,
    pub cell: String,
    pub event: String,
    #[serde(default)]
    pub detail: Value,
}

/// What the timeline says of one cell at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellAt {
    pub service_running: bool,
    /// The cell JVM is up (not starting, not down).
    pub up: bool,
    pub quiesced: bool,
    pub maintenance: bool,
}

impl CellAt {
    /// A cell before any event of its own: as `cellsim create` makes one by default.
    const CREATED: CellAt = CellAt {
        service_running: true,
        up: true,
        quiesced: false,
        maintenance: false,
    };

    /// Serving users: the service runs, the cell is up, neither quiesced nor in maintenance.
    pub fn serving(self) -> bool {
        self.service_running && self.up && !self.quiesced && !self.maintenance
    }

    /// The state after `e`, an event of this cell.
    fn apply(mut self, e: &Event) -> CellAt {
        match e.event.as_str() {
            "created" => {
                self.service_running = e.detail["service"] != "stopped";
                self.up = e.detail["cell"] == "up";
                self.quiesced = false;
                self.maintenance = false;
            }
            "quiesced" => self.quiesced = true,
            "unquiesced" => self.quiesced = false,
            "maintenance_on" => self.maintenance = true,
            "maintenance_off" => self.maintenance = false,
            "shut_down" | "start_refused" => self.up = false,
            "service_stopped" | "reboot" => {
                self.service_running = false;
                self.up = false;
            }
            // A (re)started cell is a fresh JVM: starting, quiesce and maintenance gone.
            "service_started" | "watchdog_restart" | "boot" => {
                self.service_running |= e.event != "watchdog_restart";
                self.up = false;
                self.quiesced = false;
                self.maintenance = false;
            }
            "cell_up" => self.up = true,
            _ => {}
        }
        self
    }
}

/// A group's timeline, sorted by time (stable), with helpers that replay it.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub events: Vec<Event>,
}

impl std::ops::Deref for Timeline {
    type Target = [Event];
    fn deref(&self) -> &[Event] {
        &self.events
    }
}

impl Timeline {
    /// Reads a `timeline.jsonl` as it is (a missing file is empty). Transitions the simulator
    /// has not yet observed (a cell whose start-up delay ran out unseen) are missing: prefer
    /// [`Timeline::of_group`] / [`Timeline::of_cell`], which bring every cell up to now first.
    pub fn read(path: &Path) -> Timeline {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("{}: {e}", path.display()),
        };
        Timeline::parse(&text)
    }

    /// JSON lines, in any order.
    pub fn parse(text: &str) -> Timeline {
        let mut events: Vec<Event> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad timeline line {l}: {e}")))
            .collect();
        events.sort_by_key(|e| e.at_ms);
        Timeline { events }
    }

    /// `cellsim timeline --group GROUPDIR`.
    pub fn of_group(group: &Path) -> Timeline {
        Self::from_cellsim(&["timeline".as_ref(), "--group".as_ref(), group.as_os_str()])
    }

    /// `cellsim timeline DIR`: the timeline of DIR's group (its own for a group of one).
    pub fn of_cell(dir: &Path) -> Timeline {
        Self::from_cellsim(&["timeline".as_ref(), dir.as_os_str()])
    }

    fn from_cellsim(args: &[&std::ffi::OsStr]) -> Timeline {
        let out = Command::new(cellsim_bin()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "cellsim {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Timeline::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// The cells named in the timeline, sorted.
    pub fn cells(&self) -> Vec<String> {
        let mut cells: Vec<String> = self.events.iter().map(|e| e.cell.clone()).collect();
        cells.sort();
        cells.dedup();
        cells
    }

    /// Events called `event` (of any cell), in time order.
    pub fn named(&self, event: &str) -> Vec<&Event> {
        self.events.iter().filter(|e| e.event == event).collect()
    }

    /// Events of `cell`, in time order.
    pub fn of(&self, cell: &str) -> Vec<&Event> {
        self.events.iter().filter(|e| e.cell == cell).collect()
    }

    /// Runs of `tool` (`installer` or `upgrade`) recorded as `call` events, in time order.
    pub fn calls(&self, tool: &str) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|e| e.event == "call" && e.detail["tool"] == tool)
            .collect()
    }

    /// The state of `cell` after every event at or before `t`.
    pub fn cell_at(&self, cell: &str, t: u64) -> CellAt {
        self.events
            .iter()
            .filter(|e| e.cell == cell && e.at_ms <= t)
            .fold(CellAt::CREATED, CellAt::apply)
    }

    /// The cells serving at `t` (after every event at or before `t`), sorted.
    pub fn serving_at(&self, t: u64) -> Vec<String> {
        self.cells()
            .into_iter()
            .filter(|c| self.cell_at(c, t).serving())
            .collect()
    }

    /// The cells whose service runs at `t`, sorted.
    pub fn running_at(&self, t: u64) -> Vec<String> {
        self.cells()
            .into_iter()
            .filter(|c| self.cell_at(c, t).service_running)
            .collect()
    }

    /// Every moment an event happened, each with the cells serving once all of that moment's
    /// events are applied: (t, serving cells).
    pub fn serving_history(&self) -> Vec<(u64, Vec<String>)> {
        let mut moments: Vec<u64> = self.events.iter().map(|e| e.at_ms).collect();
        moments.dedup();
        moments.into_iter().map(|t| (t, self.serving_at(t))).collect()
    }

    /// The most cells not serving at any one moment.
    pub fn max_down(&self) -> usize {
        let n = self.cells().len();
        self.serving_history()
            .iter()
            .map(|(_, serving)| n - serving.len())
            .max()
            .unwrap_or(0)
    }

    /// The spans (from, to) during which no cell served; `to` is None for one still going.
    pub fn outages(&self) -> Vec<(u64, Option<u64>)> {
        let mut out = Vec::new();
        let mut since = None;
        for (t, serving) in self.serving_history() {
            match (serving.is_empty(), since) {
                (true, None) => since = Some(t),
                (false, Some(from)) => {
                    out.push((from, Some(t)));
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(from) = since {
            out.push((from, None));
        }
        out
    }
}

/// The status of the last record of `step` in a report's `steps` (None: never taken).
pub fn step_status(doc: &Value, step: &str) -> Option<String> {
    doc["steps"]
        .as_array()?
        .iter()
        .rev()
        .find(|s| s["step"] == step)
        .map(|s| s["status"].as_str().unwrap_or_default().to_string())
}

/// Every record of a report's `steps` as (step, status), in order.
pub fn steps(doc: &Value) -> Vec<(String, String)> {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
