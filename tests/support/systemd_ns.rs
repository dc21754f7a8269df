//! A throwaway systemd booted as PID 1 in private namespaces, so integration tests can run real
//! `systemd-run` transient units without touching the host.
//!
//! ```ignore
//! #[path = "support/systemd_ns.rs"]
//! mod systemd_ns;
//! let Some(ns) = systemd_ns::boot_or_skip(None) else { return }; // prints "SKIPPED: ..." if impossible
//! let out = ns.output("systemd-run", ["--wait", "--collect", "--unit=t-1", "/bin/true"]);
//! ```
//!
//! # How it works
//! - `unshare --pid --fork --kill-child=SIGKILL --mount --propagation=private --mount-proc --cgroup
//!   --uts --ipc [--net]`, started from a dedicated cgroup `cellctl-systemd-ns.<pid>.<n>` (created
//!   beside the test's own cgroup2 cgroup), so the cgroup namespace is rooted there; `unshare` itself
//!   is moved back out before systemd starts. `PR_SET_PDEATHSIG` ties `unshare` to this process.
//! - PID 1 first runs [`BOOT_SH`] (under `setpriv --bounding-set=-sys_module,-sys_time`): tmpfs over
//!   `/run`, `/tmp`, `/var/tmp`, `/var/log/journal`, `/var/lib/systemd` (+ [`Options::tmpfs`]); a
//!   private `/dev` whose `/dev/console` is a pty read by the harness into `systemd.log`; `/etc`
//!   read-only with a private machine-id; `/sys`, `/proc/sys` read-only; a fresh cgroup2 at
//!   `/sys/fs/cgroup`; [`Options::share`]d host paths bound back at their own path. Then, on the
//!   harness's "go", it execs systemd with `container=cellctl-systemd-ns`, generators disabled and
//!   `SYSTEMD_UNIT_PATH` = `/run/systemd/{system.control,transient,system}`, the test's units dir and
//!   the harness's units: stub targets, journald, and dbus-daemon with a private configuration (no
//!   service directories). D-Bus is required: `systemd-run --wait`/`--pipe` will not use
//!   `/run/systemd/private` ("Failed to connect to bus"). Boot takes ~0.2-0.5 s.
//! - Ready = `systemctl is-system-running` is `running`/`degraded` and `org.freedesktop.systemd1` is
//!   on the bus. [`SystemdNs::command`] runs `nsenter --target=<init> --pid --mount --uts --ipc
//!   [--net] --wd=<cwd or />` with host systemd/D-Bus variables removed and the same
//!   `SYSTEMD_UNIT_PATH`. (`Command::current_dir` is lost on entering the mount namespace: use
//!   [`SystemdNs::command_in`].)
//! - [`SystemdNs::shutdown`]/`Drop` SIGKILL the namespace's PID 1 (the kernel kills the rest of the
//!   PID namespace), wait for `unshare`, check that no process is left and remove the cgroup. If this
//!   process dies, pdeathsig + `--kill-child` kill the namespace; the empty cgroup left behind is
//!   removed by the next boot, the state dir stays in `target/tmp`.
//!
//! # Hazards (what each protection is for)
//! - Booting systemd empties `/tmp` (tmp.mount, tmpfiles): no such unit is in the unit path, and
//!   `/tmp`, `/var/tmp`, `/run`, journal dirs are private tmpfs anyway. A test's tempdir under `/tmp`
//!   is invisible inside unless passed to [`Options::share`].
//! - PID 1 writes `kernel.core_pattern`, `fs.file-max`, `fs.nr_open`, `net.unix.max_dgram_qlen`:
//!   host-global, hence read-only `/proc/sys`. Without `container=` it would also set the clock,
//!   load modules and log to kmsg.
//! - Without a cgroup namespace, systemd would adopt the host's root cgroup and move every host
//!   process into `init.scope` (this machine's hierarchy is hybrid; inside it sees pure cgroup2 with
//!   no controllers, which is fine for tests).
//! - It resets `/dev/console` (the VM's serial console) and creates `/dev/log`: private `/dev`.
//!   `/etc` read-only: no machine-id, preset or `systemctl enable` writes. Hostname: UTS namespace.
//! - No poweroff/reboot targets exist, so `systemctl poweroff` inside fails harmlessly.
//! - Units the tests start run as root on the host's file system: what they write outside the
//!   private mounts (e.g. `StateDirectory=` in `/var/lib`) reaches the host; use [`Options::tmpfs`].
//! - The network namespace is shared by default (host loopback services stay reachable);
//!   [`Options::private_network`] gives one with only `lo`.
//!
//! # Debugging
//! - `CELLCTL_SYSTEMD_NS_DEBUG=1`: systemd logs at debug level and the state dir
//!   (`target/tmp/systemd-ns.*`: `boot.sh`, units, `systemd.log`) is kept and its path printed.
//! - A failed boot panics with the tail of `systemd.log` and keeps the state dir; [`SystemdNs::log`]
//!   returns the log any time.
//! - Live: `nsenter --target=<SystemdNs::init_pid> --pid --mount --uts --ipc -- systemctl status`
//!   or `journalctl -b`; `/proc/<init pid>/root/` is the namespace's file system seen from the host.
//! - `CELLCTL_REQUIRE_SYSTEMD=1` turns a skip into a failure.
// Harness code: pedantic style lints on helpers (ownership of small arguments, local items)
// say nothing about what is tested.
#![allow(
    clippy::needless_pass_by_value,
    clippy::items_after_statements,
    clippy::match_wild_err_arm
)]
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, open};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

/// Set to `1` to make a skip a test failure.
pub const REQUIRE_ENV: &str = "CELLCTL_REQUIRE_SYSTEMD";
/// Set to `1` for debug logging from systemd and to keep the state directory.
pub const DEBUG_ENV: &str = "CELLCTL_SYSTEMD_NS_DEBUG";

/// Host paths covered by private mounts inside the namespace (besides [`Options::tmpfs`]).
const PRIVATE_PATHS: &[&str] = &[
    "/run",
    "/tmp",
    "/var/tmp",
    "/dev",
    "/var/log/journal",
    "/var/lib/systemd",
];
/// The harness's own directory inside the namespace (on the private `/run`).
const INSIDE_DIR: &str = "/run/cellctl-ns";
const CGROUP_PREFIX: &str = "cellctl-systemd-ns.";
/// The unit PID 1 starts; it pulls in `default.target`, which the test's units may replace.
const BOOT_TARGET: &str = "cellctl-ns.target";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Environment variables of the host that must not leak into commands run inside.
const UNSAFE_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "MANAGERPID",
    "DBUS_SYSTEM_BUS_ADDRESS",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
];

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Why the namespace could not be made; the test must report itself as skipped.
#[derive(Debug, Clone)]
pub struct Skip {
    pub reason: String,
}

impl Skip {
    fn new(reason: impl Into<String>) -> Skip {
        Skip { reason: reason.into() }
    }

    /// Print `SKIPPED: <test>: <reason>` to the real stderr (not captured by the test harness), or
    /// panic when `CELLCTL_REQUIRE_SYSTEMD=1`.
    pub fn report(&self) {
        self.report_with(require_systemd());
    }

    pub fn report_with(&self, require: bool) {
        let test = thread::current().name().unwrap_or("?").to_string();
        assert!(
            !require,
            "{REQUIRE_ENV}=1 but the systemd test namespace is unavailable ({test}): {}",
            self.reason
        );
        // Written to the fd, not with eprintln!, so that libtest's output capture cannot hide it.
        let _ = writeln!(io::stderr().lock(), "SKIPPED: {test}: {}", self.reason);
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// `CELLCTL_REQUIRE_SYSTEMD=1`?
pub fn require_systemd() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

fn debug() -> bool {
    std::env::var(DEBUG_ENV).is_ok_and(|v| v == "1")
}

/// Boot with the default options (and `units_dir` in the unit path), or report the skip and return
/// `None`: `let Some(ns) = boot_or_skip(None) else { return };`
pub fn boot_or_skip(units_dir: Option<&Path>) -> Option<SystemdNs> {
    let mut options = Options::new();
    if let Some(dir) = units_dir {
        options = options.units_dir(dir);
    }
    options.boot_or_skip()
}

/// How to boot the namespace.
#[derive(Debug, Clone)]
pub struct Options {
    units_dir: Option<PathBuf>,
    shared: Vec<PathBuf>,
    tmpfs: Vec<PathBuf>,
    private_network: bool,
    boot_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    pub fn new() -> Options {
        Options {
            units_dir: None,
            shared: Vec::new(),
            tmpfs: Vec::new(),
            private_network: false,
            boot_timeout: Duration::from_secs(90),
        }
    }

    /// A directory of the test's own unit files, searched before the harness's units (so it may
    /// override `default.target`). It is shared automatically if it lies under a private path.
    pub fn units_dir(mut self, dir: impl Into<PathBuf>) -> Options {
        self.units_dir = Some(dir.into());
        self
    }

    /// Make a host directory or file visible inside at the same path, even under `/tmp` or
    /// `/var/tmp` (e.g. a tempdir holding a simulated cell). Paths outside the private mounts are
    /// visible anyway; paths under `/run` and `/dev` are not supported.
    pub fn share(mut self, path: impl Into<PathBuf>) -> Options {
        self.shared.push(path.into());
        self
    }

    /// Another private tmpfs, e.g. `/var/lib/cellctl` for a unit with `StateDirectory=cellctl`.
    /// A missing mount point is created on the host (an empty directory).
    pub fn tmpfs(mut self, path: impl Into<PathBuf>) -> Options {
        self.tmpfs.push(path.into());
        self
    }

    /// A private network namespace with only `lo`; commands from [`SystemdNs::command`] join it.
    pub fn private_network(mut self, yes: bool) -> Options {
        self.private_network = yes;
        self
    }

    /// Deadline for systemd to become ready (default 90 s).
    pub fn boot_timeout(mut self, timeout: Duration) -> Options {
        self.boot_timeout = timeout;
        self
    }

    pub fn boot_or_skip(self) -> Option<SystemdNs> {
        match self.boot() {
            Ok(ns) => Some(ns),
            Err(skip) => {
                skip.report();
                None
            }
        }
    }

    /// Boot systemd and wait until it is ready. `Err` when the namespaces cannot be made here (not
    /// root, no systemd, `unshare` refused, ...); panics, with the log, when they could be made but
    /// systemd does not come up.
    pub fn boot(self) -> Result<SystemdNs, Skip> {
        SystemdNs::boot_with(self)
    }
}

/// Host binaries the harness needs.
#[derive(Debug, Clone)]
struct Tools {
    systemd: PathBuf,
    journald: PathBuf,
    sh: PathBuf,
    unshare: PathBuf,
    nsenter: PathBuf,
    setpriv: PathBuf,
    dbus_daemon: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools, Skip> {
        let systemd = ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
            .iter()
            .map(PathBuf::from)
            .find(|p| is_executable(p))
            .ok_or_else(|| Skip::new("no systemd binary (/lib/systemd/systemd)"))?;
        let journald = systemd.with_file_name("systemd-journald");
        if !is_executable(&journald) {
            return Err(Skip::new(format!("no {}", journald.display())));
        }
        for tool in [
            "mount",
            "mknod",
            "cp",
            "env",
            "systemctl",
            "systemd-run",
            "journalctl",
            "busctl",
        ] {
            which(tool)?;
        }
        Ok(Tools {
            systemd,
            journald,
            sh: which("sh")?,
            unshare: which("unshare")?,
            nsenter: which("nsenter")?,
            setpriv: which("setpriv")?,
            dbus_daemon: which("dbus-daemon")?,
        })
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn which(tool: &str) -> Result<PathBuf, Skip> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(PATH.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(tool))
        .find(|p| is_executable(p))
        .ok_or_else(|| Skip::new(format!("`{tool}` not found")))
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// `(mount point of cgroup2, our own cgroup path)`.
fn cgroup2_location() -> Result<(PathBuf, String), Skip> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| Skip::new(format!("mountinfo: {e}")))?;
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next() == Some("cgroup2"))
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .ok_or_else(|| Skip::new("no cgroup2 hierarchy mounted"))?;
    let own = fs::read_to_string("/proc/self/cgroup").map_err(|e| Skip::new(format!("/proc/self/cgroup: {e}")))?;
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| Skip::new("this process has no cgroup2 membership"))?
        .to_string();
    Ok((mount, own))
}

fn cgroup_dir(mount: &Path, cgroup: &str) -> PathBuf {
    mount.join(cgroup.trim_start_matches('/'))
}

/// Remove a cgroup and its children (deepest first), retrying while the last processes exit.
fn remove_cgroup_tree(root: &Path, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut dirs = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
            dirs.push(d);
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        let mut last_err = None;
        for d in &dirs {
            if let Err(e) = fs::remove_dir(d)
                && e.kind() != io::ErrorKind::NotFound
            {
                last_err = Some(format!("rmdir {}: {e}", d.display()));
            }
        }
        match last_err {
            None => return Ok(()),
            Some(e) if Instant::now() > deadline => return Err(e),
            Some(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Remove cgroups left by test processes that died without cleaning up (only empty ones can go).
fn remove_stale_cgroups(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(CGROUP_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Err(err) = remove_cgroup_tree(&e.path(), Duration::ZERO) {
            eprintln!("systemd_ns: stale cgroup {} not removed: {err}", e.path().display());
        }
    }
}

/// Is `path` covered by one of the private mounts?
fn is_private(path: &Path, extra: &[PathBuf]) -> bool {
    PRIVATE_PATHS
        .iter()
        .map(Path::new)
        .chain(extra.iter().map(PathBuf::as_path))
        .any(|p| path.starts_with(p))
}

/// A host path to bind-mount at the same path inside.
struct Share {
    host: PathBuf,
    is_dir: bool,
}

/// The `pid:[inode]` of a process's PID namespace.
fn pid_ns_of(pid: i32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// A process of the namespace, as seen from the host.
#[derive(Debug, Clone)]
pub struct NsProcess {
    pub host_pid: i32,
    /// Arguments joined with spaces.
    pub cmdline: String,
}

/// Host PIDs of all processes in the PID namespace `pid_ns` (`pid:[inode]`), zombies included.
/// Inode numbers are reused once a namespace is gone: hold an open `/proc/<pid>/ns/pid` of the
/// namespace (see [`SystemdNs::pid_ns_handle`]) for as long as the answer must be about it.
pub fn processes_in_pid_ns(pid_ns: &str) -> Vec<NsProcess> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid_ns_of(pid).as_deref() == Some(pid_ns) {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            found.push(NsProcess { host_pid: pid, cmdline });
        }
    }
    found
}

/// Poll `check` every 50 ms until it returns true; panic with `what` after `timeout`.
pub fn wait_for(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Exit status of `unshare`, set by the keeper thread.
#[derive(Default)]
struct ExitSlot {
    status: Mutex<Option<String>>,
    cond: Condvar,
}

impl ExitSlot {
    fn set(&self, status: io::Result<ExitStatus>) {
        let text = match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait failed: {e}"),
        };
        *self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(text);
        self.cond.notify_all();
    }

    fn get(&self) -> Option<String> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn wait(&self, timeout: Duration) -> Option<String> {
        let guard = self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (guard, _) = self
            .cond
            .wait_timeout_while(guard, timeout, |s| s.is_none())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.clone()
    }
}

/// Kills `unshare` (and so the namespace) and removes the cgroup if boot fails before
/// [`SystemdNs`] exists.
struct UnshareGuard {
    pid: i32,
    exit: Arc<ExitSlot>,
    cgroup: PathBuf,
    armed: bool,
}

impl Drop for UnshareGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The keeper thread has not reaped unshare unless `exit` is set, so the PID is still ours.
        if self.exit.get().is_none() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        let _ = self.exit.wait(Duration::from_secs(30));
        let _ = remove_cgroup_tree(&self.cgroup, Duration::from_secs(5));
    }
}

/// A running systemd in private namespaces. Dropping it kills everything inside.
pub struct SystemdNs {
    tools: Tools,
    init_pid: i32,
    unshare_pid: i32,
    pid_ns: String,
    /// An open `/proc/<init>/ns/pid`: keeps the namespace's inode number from being reused by a
    /// later namespace while we still look for its processes.
    pid_ns_ref: Option<File>,
    unit_path: String,
    private_network: bool,
    visible_extra: Vec<PathBuf>,
    private_extra: Vec<PathBuf>,
    state: Option<tempfile::TempDir>,
    state_path: PathBuf,
    log_path: PathBuf,
    cgroup: Option<PathBuf>,
    exit: Arc<ExitSlot>,
    console: Option<OwnedFd>,
    boot_time: Duration,
    /// Keep the state dir (debug mode, or a failed boot whose log the panic message names).
    keep_state: bool,
    torn_down: bool,
}

impl fmt::Debug for SystemdNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemdNs")
            .field("init_pid", &self.init_pid)
            .field("pid_ns", &self.pid_ns)
            .field("state", &self.state_path)
            .finish_non_exhaustive()
    }
}

/// Write a file, creating its directory.
fn put(path: &Path, contents: &str) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, contents)
}

/// The harness's units. `@JOURNALD@` and `@DBUS_DAEMON@` are replaced by binary paths.
const HARNESS_UNITS: &[(&str, &str)] = &[
    (
        // What PID 1 starts: default.target (a stub the test's units may replace) and the system bus.
        "cellctl-ns.target",
        "[Unit]
Description=cellctl systemd test namespace
Requires=basic.target
Wants=dbus.service default.target
After=basic.target dbus.service default.target
",
    ),
    (
        "default.target",
        "[Unit]
Description=default.target (test stub)
Requires=basic.target
After=basic.target
",
    ),
    (
        "multi-user.target",
        "[Unit]
Description=multi-user.target (test stub)
Requires=basic.target
After=basic.target
",
    ),
    (
        "basic.target",
        "[Unit]
Description=basic.target (test stub)
Requires=sysinit.target
Wants=sockets.target timers.target paths.target slices.target
After=sysinit.target sockets.target timers.target paths.target slices.target
",
    ),
    (
        "sysinit.target",
        "[Unit]
Description=sysinit.target (test stub)
Wants=systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket local-fs.target
After=local-fs.target
",
    ),
    (
        "sockets.target",
        "[Unit]
Description=sockets.target (test stub)
Wants=dbus.socket
",
    ),
    (
        "slices.target",
        "[Unit]
Description=slices.target (test stub)
Wants=system.slice
",
    ),
    (
        "system.slice",
        "[Unit]
Description=System Slice
",
    ),
    (
        "systemd-journald.socket",
        "[Unit]
Description=Journal Socket
DefaultDependencies=no
Before=sockets.target
IgnoreOnIsolate=yes

[Socket]
ListenDatagram=/run/systemd/journal/socket
ListenStream=/run/systemd/journal/stdout
PassCredentials=yes
PassSecurity=yes
ReceiveBuffer=8M
Service=systemd-journald.service
SocketMode=0666
Timestamping=us
",
    ),
    (
        "systemd-journald-dev-log.socket",
        "[Unit]
Description=Journal Socket (/dev/log)
DefaultDependencies=no
Before=sockets.target
IgnoreOnIsolate=yes

[Socket]
ListenDatagram=/run/systemd/journal/dev-log
PassCredentials=yes
PassSecurity=yes
Service=systemd-journald.service
SocketMode=0666
Symlinks=/dev/log
Timestamping=us
ReceiveBuffer=8M
SendBuffer=8M
",
    ),
    (
        "systemd-journald.service",
        "[Unit]
Description=Journal Service
DefaultDependencies=no
Requires=systemd-journald.socket
After=systemd-journald.socket systemd-journald-dev-log.socket
Before=sysinit.target
IgnoreOnIsolate=yes

[Service]
Type=notify
Sockets=systemd-journald.socket systemd-journald-dev-log.socket
ExecStart=@JOURNALD@
Restart=always
RestartSec=0
StandardOutput=null
FileDescriptorStoreMax=4224
RuntimeDirectory=systemd/journal
RuntimeDirectoryPreserve=yes
",
    ),
    (
        "dbus.socket",
        "[Unit]
Description=D-Bus System Message Bus Socket

[Socket]
ListenStream=/run/dbus/system_bus_socket
",
    ),
    (
        "dbus.service",
        "[Unit]
Description=D-Bus System Message Bus (private configuration)
Requires=dbus.socket
After=dbus.socket

[Service]
Type=notify
NotifyAccess=main
ExecStart=@DBUS_DAEMON@ --config-file=/run/cellctl-ns/dbus-system.conf --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only
",
    ),
];

/// Empty stand-ins for targets that units (transient ones included) order themselves against or
/// are wanted by. There are deliberately no poweroff/reboot/halt targets: `systemctl poweroff`
/// inside fails instead of starting a shutdown.
const STUB_TARGETS: &[&str] = &[
    "timers.target",
    "paths.target",
    "local-fs.target",
    "local-fs-pre.target",
    "swap.target",
    "network.target",
    "network-pre.target",
    "network-online.target",
    "nss-lookup.target",
    "remote-fs.target",
    "time-set.target",
    "time-sync.target",
    "graphical.target",
    "getty.target",
];
const STUB_TARGETS_NO_DEPS: &[&str] = &[
    "shutdown.target",
    "final.target",
    "umount.target",
    "emergency.target",
    "rescue.target",
];

fn harness_units(tools: &Tools) -> Vec<(String, String)> {
    let mut units: Vec<(String, String)> = HARNESS_UNITS
        .iter()
        .map(|(name, text)| {
            let text = text
                .replace("@JOURNALD@", &tools.journald.display().to_string())
                .replace("@DBUS_DAEMON@", &tools.dbus_daemon.display().to_string());
            (name.to_string(), text)
        })
        .collect();
    for name in STUB_TARGETS {
        units.push((name.to_string(), format!("[Unit]\nDescription={name} (test stub)\n")));
    }
    for name in STUB_TARGETS_NO_DEPS {
        units.push((
            name.to_string(),
            format!("[Unit]\nDescription={name} (test stub)\nDefaultDependencies=no\n"),
        ));
    }
    units
}

/// A system bus for root's tests: everything allowed, no service directories (nothing can be
/// bus-activated), runs as root.
const DBUS_CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
"#;

/// Runs as PID 1 of the new PID namespace, before systemd. Written to `<state>/boot.sh`.
const BOOT_SH: &str = r#"#!/bin/sh
# Written by tests/support/systemd_ns.rs; runs as PID 1 of the new PID namespace, before systemd.
# Environment: STATE (host state dir), CONSOLE (pty to become /dev/console), SYSTEMD, BOOT_TARGET,
# UNIT_PATH, LOG_LEVEL. $STATE/shares: lines "d|f PATH" to bind at the same path inside;
# $STATE/tmpfs: extra tmpfs mount points.
# Every remount below says "bind": that changes this one mount. A plain "remount,ro" would change
# the file system itself, i.e. make the host's / or /sys read-only.
set -eu
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
log() { echo "cellctl-ns boot.sh: $*" >&2; }
I=/run/cellctl-ns
log "setting up mounts"

# 1. Private /run first, with a copy of what is needed once the rest is covered.
mount -t tmpfs -o mode=0755,nosuid,nodev,size=256m tmpfs /run
mkdir -p /run/lock "$I/stage"
chmod 1777 /run/lock
cp -R "$STATE/units" "$STATE/dbus-system.conf" "$STATE/machine-id" "$STATE/shares" "$STATE/tmpfs" "$I/"

# 2. Stage what must stay reachable after /dev, /tmp, ... are covered.
touch "$I/stage/console"
mount --bind "$CONSOLE" "$I/stage/console"
n=0
while read -r kind path; do
    n=$((n + 1))
    if [ "$kind" = d ]; then mkdir "$I/stage/$n"; else touch "$I/stage/$n"; fi
    mount --rbind "$path" "$I/stage/$n"
done < "$I/shares"

# 3. Private tmpfs over what systemd or a unit would clean or write.
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=2755,nosuid,nodev tmpfs /var/log/journal; fi
if [ -d /var/lib/systemd ]; then mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /var/lib/systemd; fi
while read -r path; do
    mkdir -p "$path"
    mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$path"
done < "$I/tmpfs"

# 4. Private /dev; the harness's pty becomes the console.
mount -t tmpfs -o mode=0755,nosuid,size=4m tmpfs /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8
mknod -m 666 /dev/urandom c 1 9
mknod -m 666 /dev/tty c 5 0
mkdir -m 0755 /dev/pts
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,nosuid,noexec devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mkdir -m 1777 /dev/shm
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
touch /dev/console
mount --move "$I/stage/console" /dev/console

# 5. Shared host paths back at their own path.
n=0
while read -r kind path; do
    n=$((n + 1))
    if [ "$kind" = d ]; then mkdir -p "$path"; else mkdir -p "$(dirname "$path")" && touch "$path"; fi
    mount --move "$I/stage/$n" "$path"
done < "$I/shares"

# 6. Read-only host configuration (with a private machine-id) and kernel settings.
mount --bind /etc /etc
mount -o remount,bind,ro /etc
if [ -f /etc/machine-id ]; then mount --bind "$I/machine-id" /etc/machine-id; fi
mount -o remount,bind,ro /sys
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
if [ -e /proc/sysrq-trigger ]; then
    mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
    mount -o remount,bind,ro /proc/sysrq-trigger
fi

# 7. cgroup2, rooted at this cgroup namespace, i.e. the harness's dedicated cgroup.
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup

# 8. Shared propagation inside, as PID 1 sets up on a host: systemd mounts a unit's credentials
# in a child mount namespace, and with private mounts LoadCredential= silently yields an empty
# $CREDENTIALS_DIRECTORY. Safe: --propagation=private already cut every link to the host's mounts.
mount --make-rshared /

log "mounts ready, waiting for the harness"
echo ready
read -r go
[ "$go" = go ]
log "exec $SYSTEMD"
exec env -i container=cellctl-systemd-ns PATH="$PATH" LANG=C.UTF-8 SYSTEMD_UNIT_PATH="$UNIT_PATH" \
    SYSTEMD_GENERATOR_PATH= SYSTEMD_ENVIRONMENT_GENERATOR_PATH= \
    "$SYSTEMD" --unit="$BOOT_TARGET" --log-target=console --log-level="$LOG_LEVEL" --log-color=no \
    --show-status=no systemd.journald.storage=volatile </dev/null
"#;

/// Copy the pty's output (systemd's console) into the log until the last slave closes.
fn spawn_console_reader(master: OwnedFd, mut log: File) {
    let mut master = File::from(master);
    let _ = thread::Builder::new().name("systemd-ns-console".into()).spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match master.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let text: Vec<u8> = buf[..n].iter().copied().filter(|b| *b != b'\r').collect();
                    let _ = log.write_all(&text);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
}

/// A pty whose slave becomes `/dev/console` inside: `(master, slave, slave path)`.
fn open_console() -> nix::Result<(OwnedFd, OwnedFd, String)> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let path = ptsname_r(&master)?;
    let slave = open(
        path.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok((OwnedFd::from(master), slave, path))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl SystemdNs {
    /// Boot with default options and `units_dir` (if any) in the unit path.
    pub fn boot(units_dir: Option<&Path>) -> Result<SystemdNs, Skip> {
        let mut options = Options::new();
        if let Some(dir) = units_dir {
            options = options.units_dir(dir);
        }
        options.boot()
    }

    fn boot_with(options: Options) -> Result<SystemdNs, Skip> {
        let started = Instant::now();
        if effective_uid() != Some(0) {
            return Err(Skip::new("not root (systemd as PID 1 of a namespace needs root)"));
        }
        let tools = Tools::find()?;
        let (cg_mount, own_cgroup) = cgroup2_location()?;
        let own_cgroup_dir = cgroup_dir(&cg_mount, &own_cgroup);
        remove_stale_cgroups(&own_cgroup_dir);

        for p in options.shared.iter().chain(&options.tmpfs).chain(&options.units_dir) {
            let text = p.to_string_lossy();
            assert!(
                p.is_absolute() && !text.contains('\n'),
                "systemd_ns: {text:?} must be an absolute path without newlines"
            );
        }
        if let Some(dir) = &options.units_dir {
            assert!(
                !dir.to_string_lossy().contains(':'),
                "systemd_ns: a units dir cannot contain ':'"
            );
        }
        // What is shared: explicit shares and a units dir under the private paths.
        let mut shares = Vec::new();
        for p in options.shared.iter().chain(&options.units_dir) {
            if !is_private(p, &options.tmpfs) || shares.iter().any(|s: &Share| &s.host == p) {
                continue;
            }
            assert!(
                !(p.starts_with("/run") || p.starts_with("/dev")),
                "systemd_ns: cannot share {} (paths under /run and /dev are not supported)",
                p.display()
            );
            let meta = fs::metadata(p).unwrap_or_else(|e| panic!("systemd_ns: share {}: {e}", p.display()));
            shares.push(Share {
                host: p.clone(),
                is_dir: meta.is_dir(),
            });
        }
        // Outer shares first so nested ones are mounted on top.
        shares.sort_by_key(|s| s.host.components().count());

        let base = option_env!("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        fs::create_dir_all(&base).map_err(|e| Skip::new(format!("{}: {e}", base.display())))?;
        let state = tempfile::Builder::new()
            .prefix("systemd-ns.")
            .tempdir_in(&base)
            .map_err(|e| Skip::new(format!("state dir in {}: {e}", base.display())))?;
        let state_path = state.path().to_path_buf();
        let log_path = state_path.join("systemd.log");

        let mut unit_path = vec![
            "/run/systemd/system.control".to_string(),
            "/run/systemd/transient".to_string(),
            "/run/systemd/system".to_string(),
        ];
        if let Some(dir) = &options.units_dir {
            unit_path.push(dir.display().to_string());
        }
        unit_path.push(format!("{INSIDE_DIR}/units"));
        let unit_path = unit_path.join(":");

        let io_skip = |what: &str, e: io::Error| Skip::new(format!("{what}: {e}"));
        for (name, text) in harness_units(&tools) {
            put(&state_path.join("units").join(name), &text).map_err(|e| io_skip("writing units", e))?;
        }
        put(&state_path.join("dbus-system.conf"), DBUS_CONFIG).map_err(|e| io_skip("dbus config", e))?;
        let machine_id: String = {
            let mut bytes = [0u8; 16];
            File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut bytes))
                .map_err(|e| io_skip("urandom", e))?;
            bytes.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
        };
        put(&state_path.join("machine-id"), &format!("{machine_id}\n")).map_err(|e| io_skip("machine-id", e))?;

        let (master, slave, console_path) =
            open_console().map_err(|e| Skip::new(format!("cannot allocate a pty for the console: {e}")))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| io_skip("log file", e))?;
        spawn_console_reader(master, log.try_clone().map_err(|e| io_skip("log file", e))?);

        let list = |lines: Vec<String>| lines.iter().flat_map(|l| [l.as_str(), "\n"]).collect::<String>();
        let share_list = list(
            shares
                .iter()
                .map(|s| format!("{} {}", if s.is_dir { "d" } else { "f" }, s.host.display()))
                .collect(),
        );
        put(&state_path.join("shares"), &share_list).map_err(|e| io_skip("shares", e))?;
        let tmpfs_list = list(options.tmpfs.iter().map(|p| p.display().to_string()).collect());
        put(&state_path.join("tmpfs"), &tmpfs_list).map_err(|e| io_skip("tmpfs", e))?;
        let script_path = state_path.join("boot.sh");
        put(&script_path, BOOT_SH).map_err(|e| io_skip("boot.sh", e))?;

        let cgroup = own_cgroup_dir.join(format!(
            "{CGROUP_PREFIX}{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir(&cgroup).map_err(|e| Skip::new(format!("cannot create cgroup {}: {e}", cgroup.display())))?;

        // sh moves itself into the dedicated cgroup, then becomes unshare.
        let mut cmd = Command::new(&tools.sh);
        cmd.arg("-c")
            .arg(r#"echo 0 > "$1" && shift && exec "$@""#)
            .arg("sh")
            .arg(cgroup.join("cgroup.procs"))
            .arg(&tools.unshare)
            .args([
                "--pid",
                "--fork",
                "--kill-child=SIGKILL",
                "--mount",
                "--propagation=private",
                "--mount-proc",
            ])
            .args(["--cgroup", "--uts", "--ipc"]);
        if options.private_network {
            cmd.arg("--net");
        }
        cmd.arg("--")
            .arg(&tools.setpriv)
            .arg("--bounding-set=-sys_module,-sys_time")
            .arg("--")
            .arg(&tools.sh)
            .arg(&script_path)
            .env_clear()
            .env("PATH", PATH)
            .env("LANG", "C.UTF-8")
            .env("STATE", &state_path)
            .env("CONSOLE", &console_path)
            .env("SYSTEMD", &tools.systemd)
            .env("BOOT_TARGET", BOOT_TARGET)
            .env("UNIT_PATH", &unit_path)
            .env("LOG_LEVEL", if debug() { "debug" } else { "info" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().map_err(|e| io_skip("log file", e))?);
        // SAFETY: prctl is async-signal-safe. The signal comes when the thread that forked the
        // child (the keeper below, which lives as long as unshare) ends, i.e. when this process dies.
        unsafe {
            cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from));
        }

        let exit = Arc::new(ExitSlot::default());
        let (spawned_tx, spawned_rx) = mpsc::channel();
        let keeper_exit = Arc::clone(&exit);
        thread::Builder::new()
            .name("systemd-ns-keeper".into())
            .spawn(move || match cmd.spawn() {
                Err(e) => {
                    let _ = spawned_tx.send(Err(e));
                }
                Ok(mut child) => {
                    let stdio = (child.stdin.take(), child.stdout.take());
                    let _ = spawned_tx.send(Ok((child.id(), stdio)));
                    keeper_exit.set(child.wait());
                }
            })
            .map_err(|e| io_skip("keeper thread", e))?;
        let (unshare_pid, (stdin, stdout)) = match spawned_rx.recv() {
            Ok(Ok(spawned)) => spawned,
            Ok(Err(e)) => {
                let _ = remove_cgroup_tree(&cgroup, Duration::from_secs(1));
                return Err(Skip::new(format!("cannot start unshare: {e}")));
            }
            Err(_) => panic!("systemd_ns: keeper thread died"),
        };
        let unshare_pid = i32::try_from(unshare_pid).expect("pid fits i32");
        // Until SystemdNs (and its Drop) takes over: kill unshare, and with it the namespace.
        let mut guard = UnshareGuard {
            pid: unshare_pid,
            exit: Arc::clone(&exit),
            cgroup: cgroup.clone(),
            armed: true,
        };
        let (mut stdin, stdout) = (stdin.expect("piped stdin"), stdout.expect("piped stdout"));

        // boot.sh prints "ready" once the namespaces and mounts exist.
        let (line_tx, line_rx) = mpsc::channel();
        let _ = thread::Builder::new().name("systemd-ns-stdout".into()).spawn(move || {
            for l in BufReader::new(stdout).lines() {
                if line_tx.send(l).is_err() {
                    break;
                }
            }
        });
        let ready = matches!(line_rx.recv_timeout(Duration::from_secs(60)), Ok(Ok(l)) if l == "ready");
        let read_log = || fs::read_to_string(&log_path).unwrap_or_default();
        if !ready {
            drop(guard);
            let status = exit.get().unwrap_or_else(|| "still running".into());
            return Err(Skip::new(format!(
                "could not set up the namespaces (unshare {status}):\n{}",
                tail(&read_log(), 20)
            )));
        }
        let children =
            fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children")).unwrap_or_default();
        let init_pid: i32 = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("systemd_ns: cannot find the namespace's PID 1 (children: {children:?})"));
        let pid_ns = pid_ns_of(init_pid).expect("PID namespace of the namespace's PID 1");
        let pid_ns_ref = File::open(format!("/proc/{init_pid}/ns/pid")).expect("opening the namespace's PID namespace");
        guard.armed = false;
        let mut ns = SystemdNs {
            tools,
            init_pid,
            unshare_pid,
            pid_ns,
            pid_ns_ref: Some(pid_ns_ref),
            unit_path,
            private_network: options.private_network,
            visible_extra: shares.iter().map(|s| s.host.clone()).collect(),
            private_extra: options.tmpfs.clone(),
            state: Some(state),
            state_path,
            log_path: log_path.clone(),
            cgroup: Some(cgroup),
            exit,
            console: Some(slave),
            boot_time: Duration::ZERO,
            keep_state: debug(),
            torn_down: false,
        };
        // From here on, Drop cleans up when something fails.
        assert_ne!(
            pid_ns_of(i32::try_from(std::process::id()).expect("pid fits i32")).as_deref(),
            Some(ns.pid_ns.as_str()),
            "PID namespace not private"
        );
        // unshare stays outside the PID namespace: take it out of systemd's root cgroup.
        fs::write(own_cgroup_dir.join("cgroup.procs"), unshare_pid.to_string())
            .unwrap_or_else(|e| panic!("systemd_ns: moving unshare back to {}: {e}", own_cgroup_dir.display()));
        stdin.write_all(b"go\n").expect("systemd_ns: telling boot.sh to go");
        drop(stdin);

        if let Err(why) = ns.wait_ready(options.boot_timeout) {
            ns.keep_state = true;
            panic!(
                "systemd_ns: systemd did not come up: {why}\n--- {} (tail) ---\n{}",
                log_path.display(),
                tail(&ns.log(), 60)
            );
        }
        ns.boot_time = started.elapsed();
        if debug() {
            eprintln!("systemd_ns: booted in {:?}: {ns:?}", ns.boot_time);
        }
        Ok(ns)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            if let Some(status) = self.exit.get() {
                return Err(format!("the namespace ended during boot (unshare {status})"));
            }
            let state = self
                .command("systemctl")
                .arg("is-system-running")
                .stdin(Stdio::null())
                .output();
            match state {
                Ok(out) => {
                    last = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    if last == "running" || last == "degraded" {
                        let bus = self
                            .command("busctl")
                            .args(["--system", "call", "org.freedesktop.DBus", "/", "org.freedesktop.DBus"])
                            .args(["NameHasOwner", "s", "org.freedesktop.systemd1"])
                            .stdin(Stdio::null())
                            .output();
                        if bus.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "b true") {
                            if last == "degraded" {
                                let failed = self.output("systemctl", ["--failed", "--no-legend"]);
                                eprintln!("systemd_ns: degraded: {}", String::from_utf8_lossy(&failed.stdout));
                            }
                            return Ok(());
                        }
                        last.push_str(" (systemd not yet on the system bus)");
                    }
                }
                Err(e) => last = format!("nsenter failed: {e}"),
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {timeout:?}; last state: {last}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command that runs `program` inside the namespace (see the module docs for its environment
    /// and working directory).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let visible = !is_private(&cwd, &self.private_extra) || self.visible_extra.iter().any(|p| cwd.starts_with(p));
        self.command_in(if visible { &cwd } else { Path::new("/") }, program)
    }

    /// Like [`command`](Self::command), with working directory `dir` (a path inside).
    pub fn command_in(&self, dir: impl AsRef<Path>, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(&self.tools.nsenter);
        c.arg(format!("--target={}", self.init_pid))
            .args(["--pid", "--mount", "--uts", "--ipc"]);
        if self.private_network {
            c.arg("--net");
        }
        c.arg(format!("--wd={}", dir.as_ref().display())).arg("--").arg(program);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("SYSTEMD_") || UNSAFE_ENV.contains(&k.as_ref()) {
                c.env_remove(&key);
            }
        }
        c.env("SYSTEMD_UNIT_PATH", &self.unit_path)
            .env("SYSTEMD_PAGER", "cat")
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_URLIFY", "0");
        c
    }

    /// `sh -c script` inside.
    pub fn sh(&self, script: &str) -> Command {
        let mut c = self.command("sh");
        c.arg("-c").arg(script);
        c
    }

    /// Run `program args...` inside with stdin from /dev/null and return its output (panics if
    /// it cannot be started).
    pub fn output<I, S>(&self, program: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("systemd_ns: running {program}: {e}"))
    }

    /// Host path of `inside` (a path inside the namespace), through `/proc/<init>/root`.
    pub fn path(&self, inside: impl AsRef<Path>) -> PathBuf {
        let inside = inside.as_ref();
        Path::new(&format!("/proc/{}/root", self.init_pid)).join(inside.strip_prefix("/").unwrap_or(inside))
    }

    /// Write a file inside the namespace (creating its directory).
    pub fn write(&self, inside: impl AsRef<Path>, contents: &str) {
        let p = self.path(&inside);
        put(&p, contents).unwrap_or_else(|e| panic!("systemd_ns: writing {}: {e}", inside.as_ref().display()));
    }

    /// Add a unit file to `/run/systemd/system` inside and `systemctl daemon-reload`.
    pub fn add_unit(&self, name: &str, contents: &str) {
        self.write(Path::new("/run/systemd/system").join(name), contents);
        let out = self.output("systemctl", ["daemon-reload"]);
        assert!(
            out.status.success(),
            "daemon-reload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Processes currently in the namespace, with host PIDs.
    pub fn processes(&self) -> Vec<NsProcess> {
        processes_in_pid_ns(&self.pid_ns)
    }

    /// Host PID of the namespace's PID 1 (systemd).
    pub fn init_pid(&self) -> i32 {
        self.init_pid
    }

    /// `pid:[inode]` of the namespace's PID namespace.
    pub fn pid_ns(&self) -> &str {
        &self.pid_ns
    }

    /// An open handle on the PID namespace: while it is held, [`processes_in_pid_ns`] with
    /// [`pid_ns`](Self::pid_ns) is about this namespace even after shutdown.
    pub fn pid_ns_handle(&self) -> File {
        File::open(format!("/proc/{}/ns/pid", self.init_pid)).expect("opening the namespace's PID namespace")
    }

    /// The dedicated cgroup (host path).
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_deref()
    }

    /// The state directory (host path).
    pub fn state_dir(&self) -> &Path {
        &self.state_path
    }

    /// The `SYSTEMD_UNIT_PATH` inside.
    pub fn unit_path(&self) -> &str {
        &self.unit_path
    }

    /// From `boot` to ready.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// boot.sh's stderr and systemd's console output so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Kill everything and clean up; `Err` lists what could not be cleaned.
    pub fn shutdown(mut self) -> Result<(), String> {
        let problems = self.teardown();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.torn_down {
            return problems;
        }
        self.torn_down = true;
        // Only signal the PID if it still is our namespace's PID 1 (not a reused PID).
        if pid_ns_of(self.init_pid).as_deref() == Some(self.pid_ns.as_str()) {
            let _ = kill(Pid::from_raw(self.init_pid), Signal::SIGKILL);
        }
        if self.exit.wait(Duration::from_secs(30)).is_none() {
            problems.push(format!(
                "unshare (pid {}) did not exit after its child was killed",
                self.unshare_pid
            ));
            let _ = kill(Pid::from_raw(self.unshare_pid), Signal::SIGKILL);
            let _ = self.exit.wait(Duration::from_secs(5));
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for p in &left {
                    let _ = kill(Pid::from_raw(p.host_pid), Signal::SIGKILL);
                }
                problems.push(format!("processes left in {}: {left:?}", self.pid_ns));
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        if let Some(cg) = self.cgroup.take()
            && let Err(e) = remove_cgroup_tree(&cg, Duration::from_secs(10))
        {
            problems.push(e);
        }
        self.pid_ns_ref.take();
        // The last slave closes: the console reader sees EIO and ends.
        self.console.take();
        if let Some(state) = self.state.take() {
            if self.keep_state {
                eprintln!("systemd_ns: kept {}", state.keep().display());
            } else if let Err(e) = state.close() {
                problems.push(format!("removing {}: {e}", self.state_path.display()));
            }
        }
        problems
    }
}

impl Drop for SystemdNs {
    fn drop(&mut self) {
        for p in self.teardown() {
            eprintln!("systemd_ns: cleanup: {p}");
        }
    }
}
