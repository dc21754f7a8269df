//! Running external commands: every call has a timeout, runs in its own process group, and the
//! whole group is killed on timeout or when the caller gives up (the future is dropped).
//!
//! The vendor tool is run on a pseudo-terminal so that it can ask for the password on its own
//! controlling terminal, the only place we ever write the password.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep_until};

/// After the main child exits, how long to keep reading output still buffered in pipes/pty.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// Between SIGTERM and SIGKILL for a hung group.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Of each stream, at most this much of the start is kept: status output is short and comes
/// first, so it is whole here.
const KEEP_HEAD: usize = 512 * 1024;
/// ... and at most this much of the end (what a failure says last). A tool printing without end
/// costs bounded memory; the middle is dropped and counted.
const KEEP_TAIL: usize = 512 * 1024;
/// Of an unfinished line, at most this much is shown to `respond` again: a prompt is short.
const LINE_SHOWN: usize = 4096;

#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code, or None if killed by a signal.
    pub code: Option<i32>,
    /// Standard output (or the terminal's output, for pty runs): at most its first and last
    /// 512 KiB (KEEP_HEAD, KEEP_TAIL) in whole lines, with a line saying how much of the middle
    /// was dropped when it was longer.
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// How the process ended, in words ("exit status 1", "killed by a signal").
    pub fn describe_exit(&self) -> String {
        match self.code {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {}; the process group was killed", humantime::format_duration(*.after))]
    TimedOut { after: Duration, partial: Box<Output> },
    #[error("the command was stopped: {reason}")]
    Aborted { reason: String, partial: Box<Output> },
    #[error("I/O error talking to the command: {0}")]
    Io(#[from] std::io::Error),
}

/// What the responder wants done after seeing new output.
pub enum Respond {
    Nothing,
    /// Write these bytes to the terminal (the password answer).
    Write(Vec<u8>),
    /// Kill the command and fail with this reason (e.g. asked for the password twice).
    Abort(String),
}

/// Kills the process group on drop unless disarmed: a cancelled future leaves no orphan.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&self, sig: Signal) {
        if let Some(pid) = self.0 {
            let _ = killpg(pid, sig);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill(Signal::SIGKILL);
    }
}

/// Run a plain command (no terminal), stdin closed, output captured.
pub async fn run<S: AsRef<OsStr>>(program: &Path, args: &[S], timeout: Duration) -> Result<Output, ExecError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own group: a terminal Ctrl-C reaches only us, and a timeout kills helpers too.
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| ExecError::Spawn {
        program: program.display().to_string(),
        source,
    })?;
    drive(child, None, timeout, |_, _| Respond::Nothing).await
}

/// Run a command with a pseudo-terminal as its stdin, stdout and controlling terminal (stderr
/// piped apart). After each read `respond` sees what is new on (terminal output, stderr), each
/// from the start of its unfinished line (lines end at `\n` or `\r`): every finished line once,
/// and a prompt split across reads whole. Never the whole output again: that was quadratic.
pub async fn run_pty<S, F>(program: &Path, args: &[S], timeout: Duration, respond: F) -> Result<Output, ExecError>
where
    S: AsRef<OsStr>,
    F: FnMut(&str, &str) -> Respond,
{
    let spawn_err = |e: pty_process::Error| ExecError::Spawn {
        program: program.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    };
    let (pty, pts) = pty_process::open().map_err(spawn_err)?;
    // Echo off before the tool starts: our answer must not be echoed back even if the tool
    // turns echo off only after printing its prompt.
    if let Ok(mut t) = nix::sys::termios::tcgetattr(&pts) {
        t.local_flags.remove(nix::sys::termios::LocalFlags::ECHO);
        let _ = nix::sys::termios::tcsetattr(&pts, nix::sys::termios::SetArg::TCSANOW, &t);
    }
    let child = pty_process::Command::new(program)
        .args(args)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn(pts)
        .map_err(spawn_err)?;
    drive(child, Some(pty), timeout, respond).await
}

async fn read_some<R: AsyncRead + Unpin>(r: &mut Option<R>, buf: &mut [u8]) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

/// A timed-out call: SIGTERM to its whole group, a grace period, then SIGKILL.
async fn stop_group(guard: &GroupGuard, child: &mut tokio::process::Child) {
    guard.kill(Signal::SIGTERM);
    let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
    guard.kill(Signal::SIGKILL);
    let _ = child.wait().await;
}

/// Carry out the caller's answer to new output; Some(reason) to abort the call.
async fn react(answer: Respond, pty: Option<&mut pty_process::OwnedWritePty>) -> Result<Option<String>, ExecError> {
    match answer {
        Respond::Nothing => Ok(None),
        Respond::Write(bytes) => {
            if let Some(w) = pty {
                w.write_all(&bytes).await?;
                w.flush().await?;
            }
            Ok(None)
        }
        Respond::Abort(reason) => Ok(Some(reason)),
    }
}

/// One stream's output as kept: the head whole, then the latest tail; what lies between is
/// dropped and counted. Cuts fall between lines where there are any, so a kept line is whole
/// (redaction finds a password only whole) and status lines are never cut into other values.
struct Capture {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    /// Set once the head overflowed: from then on output goes to the tail.
    head_full: bool,
    tail: Vec<u8>,
    /// Bytes trimmed from the front of `tail`.
    dropped: u64,
}

impl Capture {
    fn new(head_cap: usize, tail_cap: usize) -> Self {
        Capture {
            head_cap,
            tail_cap,
            head: Vec::new(),
            head_full: false,
            tail: Vec::new(),
            dropped: 0,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        if !self.head_full {
            let room = self.head_cap - self.head.len();
            if bytes.len() <= room {
                self.head.extend_from_slice(bytes);
                return;
            }
            self.head.extend_from_slice(&bytes[..room]);
            bytes = &bytes[room..];
            self.head_full = true;
            // The head ends with its last whole line; the unfinished one starts the tail.
            let keep = self.head.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            self.tail = self.head.split_off(keep);
        }
        self.tail.extend_from_slice(bytes);
        // Trimmed only a quarter over the cap, so each byte is moved a few times at most.
        if self.tail.len() > self.tail_cap + self.tail_cap / 4 {
            let excess = self.tail.len() - self.tail_cap;
            self.tail.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    fn render(&self) -> String {
        let mut tail = &self.tail[self.tail.len().saturating_sub(self.tail_cap)..];
        let mut dropped = self.dropped + (self.tail.len() - tail.len()) as u64;
        if dropped > 0 {
            // Start at a line start. A window inside one long line keeps that line's end: the cut
            // is then a whole window away from the end, farther back than any message quotes.
            let body = &tail[..tail.len().saturating_sub(1)];
            if let Some(i) = body.iter().position(|&b| b == b'\n') {
                dropped += i as u64 + 1;
                tail = &tail[i + 1..];
            }
        }
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        if dropped > 0 {
            if !s.is_empty() && !s.ends_with('\n') {
                s.push('\n');
            }
            s.push_str(&format!("…({dropped} bytes of output dropped)…\n"));
        }
        s.push_str(&String::from_utf8_lossy(tail));
        s
    }
}

/// One output stream: what is kept of it, and its unfinished line for `respond`.
struct Stream {
    kept: Capture,
    line: Vec<u8>,
}

impl Stream {
    fn new() -> Self {
        Stream {
            kept: Capture::new(KEEP_HEAD, KEEP_TAIL),
            line: Vec::new(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.kept.push(bytes);
        self.line.extend_from_slice(bytes);
    }

    /// What `respond` is shown: the unfinished line and what came after it.
    fn shown(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.line)
    }

    /// After `respond` saw it: finished lines are done; of a line without end keep only its end.
    fn settle(&mut self) {
        if let Some(i) = self.line.iter().rposition(|&b| b == b'\n' || b == b'\r') {
            self.line.drain(..=i);
        }
        if self.line.len() > LINE_SHOWN {
            self.line.drain(..self.line.len() - LINE_SHOWN);
        }
    }
}

fn partial(out: &Stream, err: &Stream, code: Option<i32>) -> Output {
    Output {
        code,
        stdout: out.kept.render(),
        stderr: err.kept.render(),
    }
}

/// A read's result: bytes into `s` (true), or the reader closed at its end or error.
fn take<R>(r: &std::io::Result<usize>, rd: &mut Option<R>, buf: &[u8], s: &mut Stream) -> bool {
    match r {
        // EIO on a pty master means every slave fd is closed: end of output.
        Ok(0) | Err(_) => {
            *rd = None;
            false
        }
        Ok(n) => {
            s.push(&buf[..*n]);
            true
        }
    }
}

async fn drive<F>(
    mut child: tokio::process::Child,
    pty: Option<pty_process::Pty>,
    timeout: Duration,
    mut respond: F,
) -> Result<Output, ExecError>
where
    F: FnMut(&str, &str) -> Respond,
{
    // With process_group(0) or setsid the child's pid is its group id.
    let guard = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw));
    let (mut pty_rd, mut pty_wr) = match pty {
        Some(p) => {
            let (r, w) = p.into_split();
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    let mut out_rd = child.stdout.take();
    let mut err_rd = child.stderr.take();
    let (mut out, mut err) = (Stream::new(), Stream::new());
    let mut code: Option<Option<i32>> = None;
    let deadline = Instant::now() + timeout;
    let mut drain_until: Option<Instant> = None;
    let mut pbuf = [0u8; 4096];
    let mut obuf = [0u8; 4096];
    let mut ebuf = [0u8; 4096];

    loop {
        let streams_open = pty_rd.is_some() || out_rd.is_some() || err_rd.is_some();
        if code.is_some() && !streams_open {
            break;
        }
        let got_output = tokio::select! {
            () = sleep_until(deadline) => {
                stop_group(&guard, &mut child).await;
                return Err(ExecError::TimedOut { after: timeout, partial: Box::new(partial(&out, &err, None)) });
            }
            () = async { sleep_until(drain_until.unwrap_or(deadline)).await }, if drain_until.is_some() => break,
            r = read_some(&mut pty_rd, &mut pbuf) => take(&r, &mut pty_rd, &pbuf, &mut out),
            r = read_some(&mut out_rd, &mut obuf) => take(&r, &mut out_rd, &obuf, &mut out),
            r = read_some(&mut err_rd, &mut ebuf) => take(&r, &mut err_rd, &ebuf, &mut err),
            s = child.wait(), if code.is_none() => {
                code = Some(s?.code());
                drain_until = Some(Instant::now() + DRAIN_GRACE);
                false
            }
        };
        if got_output {
            let answer = respond(&out.shown(), &err.shown());
            out.settle();
            err.settle();
            if let Some(reason) = react(answer, pty_wr.as_mut()).await? {
                guard.kill(Signal::SIGKILL);
                let _ = child.wait().await;
                return Err(ExecError::Aborted {
                    reason,
                    partial: Box::new(partial(&out, &err, None)),
                });
            }
        }
    }
    // Reaped: nothing left to kill in the group's leader; helpers it left behind still die.
    guard.kill(Signal::SIGKILL);
    Ok(partial(&out, &err, code.flatten()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn captures_output_and_exit_code() {
        let o = rt()
            .block_on(run(
                Path::new("/bin/sh"),
                &["-c", "echo out; echo err >&2; exit 3"],
                Duration::from_secs(20),
            ))
            .unwrap();
        assert_eq!(o.code, Some(3));
        assert_eq!(o.stdout.trim(), "out");
        assert_eq!(o.stderr.trim(), "err");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pid");
        let script = format!("sleep 300 & echo $! > {}; wait", marker.display());
        let e = rt()
            .block_on(run(Path::new("/bin/sh"), &["-c", &script], Duration::from_millis(800)))
            .unwrap_err();
        assert!(matches!(e, ExecError::TimedOut { .. }), "{e}");
        let pid: i32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
        // The grandchild must die (gone, or a zombie awaiting its reaper); death is asynchronous.
        let alive = || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"));
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while alive() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let alive = alive();
        assert!(!alive, "grandchild {pid} survived the timeout");
    }

    #[test]
    fn answers_a_prompt_on_the_terminal_without_echo() {
        let script = "printf 'Password: ' > /dev/tty; read pw < /dev/tty; echo \"got:$pw\"";
        let mut answered = false;
        let o = rt()
            .block_on(run_pty(
                Path::new("/bin/sh"),
                &["-c", script],
                Duration::from_secs(20),
                |out, _| {
                    if !answered && out.contains("Password:") {
                        answered = true;
                        Respond::Write(b"abc\n".to_vec())
                    } else {
                        Respond::Nothing
                    }
                },
            ))
            .unwrap();
        assert!(o.stdout.contains("got:abc"), "{:?}", o.stdout);
        // Echo was off: the answer appears only where the script printed it.
        assert_eq!(o.stdout.matches("abc").count(), 1, "{:?}", o.stdout);
    }

    #[test]
    fn capture_keeps_short_output_exactly() {
        let mut c = Capture::new(64, 64);
        c.push(b"Job count = 1\n");
        c.push(b"Is Active = true\n");
        assert_eq!(c.render(), "Job count = 1\nIs Active = true\n");
    }

    #[test]
    fn capture_drops_the_middle_between_whole_lines() {
        let mut c = Capture::new(20, 20);
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("line {i:02}\n"));
        }
        // In odd pieces, as reads come.
        for piece in text.as_bytes().chunks(7) {
            c.push(piece);
        }
        let kept = c.render();
        let lines: Vec<&str> = kept.lines().collect();
        assert_eq!(lines[..2], ["line 00", "line 01"], "{kept}");
        assert_eq!(lines[lines.len() - 2..], ["line 98", "line 99"], "{kept}");
        let marker = lines[2];
        let dropped: usize = marker
            .trim_start_matches("…(")
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {marker:?}"));
        // Every byte is either kept in a whole line or counted.
        assert_eq!(dropped, text.len() - 4 * "line 00\n".len(), "{kept}");
    }

    #[test]
    fn capture_of_one_endless_line_keeps_its_end() {
        let mut c = Capture::new(8, 8);
        c.push(&[b'x'; 100]);
        c.push(b"END");
        assert_eq!(c.render(), "…(95 bytes of output dropped)…\nxxxxxEND");
    }

    // `seq 1 3000000` prints 22,888,896 bytes. Converting and re-scanning everything after each
    // read took minutes for this; it must now take about a second, and keep at most ~1 MiB.
    #[test]
    fn tens_of_megabytes_of_output_are_read_fast_and_kept_bounded() {
        let started = std::time::Instant::now();
        let o = rt()
            .block_on(run(
                Path::new("/bin/sh"),
                &["-c", "seq 1 3000000; seq 1 3000000 >&2"],
                Duration::from_secs(120),
            ))
            .unwrap();
        let took = started.elapsed();
        assert_eq!(o.code, Some(0));
        assert!(took < Duration::from_secs(60), "took {took:?}");
        for kept in [&o.stdout, &o.stderr] {
            assert!(kept.len() <= KEEP_HEAD + KEEP_TAIL + 100, "kept {} bytes", kept.len());
            assert!(kept.starts_with("1\n2\n3\n"), "{:?}", &kept[..20]);
            assert!(kept.ends_with("2999999\n3000000\n"));
            let dropped: usize = kept
                .lines()
                .find_map(|l| l.strip_prefix("…(")?.split(' ').next()?.parse().ok())
                .expect("a dropped-bytes line");
            let marker_len = kept.lines().find(|l| l.starts_with("…(")).unwrap().len() + 1;
            assert_eq!(kept.len() - marker_len + dropped, 22_888_896);
        }
    }

    // Each finished line is shown to `respond` once, and what it is shown stays small however
    // much the command prints.
    #[test]
    fn respond_sees_each_line_once_and_little_at_a_time() {
        let mut finished = 0usize;
        let mut largest = 0usize;
        let o = rt()
            .block_on(run_pty(
                Path::new("/bin/sh"),
                &["-c", "seq 1 300000"],
                Duration::from_secs(120),
                |out, _| {
                    largest = largest.max(out.len());
                    if let Some(i) = out.rfind(['\n', '\r']) {
                        finished += out[..i].split(['\n', '\r']).filter(|l| !l.is_empty()).count();
                    }
                    Respond::Nothing
                },
            ))
            .unwrap();
        assert_eq!(o.code, Some(0));
        assert_eq!(finished, 300_000);
        assert!(
            largest <= LINE_SHOWN + 4096,
            "respond was shown {largest} bytes at once"
        );
    }
}
