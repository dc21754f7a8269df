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

#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code, or None if killed by a signal.
    pub code: Option<i32>,
    /// Standard output (or the terminal's output, for pty runs).
    pub stdout: String,
    pub stderr: String,
}

impl Output {
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
/// piped apart). `respond` sees (terminal output, stderr) so far after each read.
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

fn partial(out: &[u8], err: &[u8], code: Option<i32>) -> Output {
    Output {
        code,
        stdout: String::from_utf8_lossy(out).into_owned(),
        stderr: String::from_utf8_lossy(err).into_owned(),
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
    let mut out = Vec::new();
    let mut err = Vec::new();
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
        let mut got_output = false;
        tokio::select! {
            () = sleep_until(deadline) => {
                stop_group(&guard, &mut child).await;
                return Err(ExecError::TimedOut { after: timeout, partial: Box::new(partial(&out, &err, None)) });
            }
            () = async { sleep_until(drain_until.unwrap_or(deadline)).await }, if drain_until.is_some() => break,
            r = read_some(&mut pty_rd, &mut pbuf) => match r {
                // EIO on a pty master means every slave fd is closed: end of output.
                Ok(0) | Err(_) => pty_rd = None,
                Ok(n) => { out.extend_from_slice(&pbuf[..n]); got_output = true; }
            },
            r = read_some(&mut out_rd, &mut obuf) => match r {
                Ok(0) | Err(_) => out_rd = None,
                Ok(n) => { out.extend_from_slice(&obuf[..n]); got_output = true; }
            },
            r = read_some(&mut err_rd, &mut ebuf) => match r {
                Ok(0) | Err(_) => err_rd = None,
                Ok(n) => { err.extend_from_slice(&ebuf[..n]); got_output = true; }
            },
            s = child.wait(), if code.is_none() => {
                let s = s?;
                code = Some(s.code());
                drain_until = Some(Instant::now() + DRAIN_GRACE);
            }
        }
        if got_output {
            let answer = respond(&String::from_utf8_lossy(&out), &String::from_utf8_lossy(&err));
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
}
