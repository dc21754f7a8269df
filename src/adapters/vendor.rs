//! Driver for the vendor tools: `bin/cell-management-tool` and `bin/vmware-vcd-cell`.
//!
//! The password is given to cell-management-tool only by answering its own prompt on a
//! pseudo-terminal: never `-p`, never an environment variable. Everything captured from the
//! tool is redacted before anyone (logs, errors, reports) sees it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::adapters::credentials::Secret;
use crate::adapters::exec::{self, ExecError, Output, Respond};

/// The status the tool prints: `Job count = N`, `Is Active = b`, and on newer cells
/// `In Maintenance Mode = b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CellStatus {
    pub job_count: u64,
    pub is_active: bool,
    /// None on cells too old to print the line.
    pub in_maintenance: Option<bool>,
}

impl CellStatus {
    /// The documented condition for a safe shutdown.
    pub fn is_drained(&self) -> bool {
        self.job_count == 0 && !self.is_active
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("`{call}` hung for {}; its process group was killed. Raise tool_timeout if the cell is just slow", humantime::format_duration(*.after))]
    Hung { call: String, after: Duration },
    #[error(
        "the cell rejected the credentials of user {user} (`{call}`): {detail}; check the password and that {user} is a system administrator"
    )]
    Rejected { call: String, user: String, detail: String },
    #[error("`{call}` found no terminal to prompt on: {detail}")]
    NoTerminal { call: String, detail: String },
    #[error("`{call}` could not reach the cell (is it running?): {detail}")]
    CellDown { call: String, detail: String },
    #[error(
        "`{call}` printed no status lines (expected `Job count = N` and `Is Active = true|false`); it printed: {output}"
    )]
    Garbled { call: String, output: String },
    #[error("`{call}` failed with {status}: {detail}")]
    Failed {
        call: String,
        status: String,
        detail: String,
    },
    #[error("cannot run {program}: {detail}; check --vcd-home")]
    Missing { program: String, detail: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("missing `{0}` line")]
    Missing(&'static str),
    #[error("`{key}` has value `{value}`, not {expected}")]
    BadValue {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("`{0}` appears twice with different values")]
    Conflict(&'static str),
}

/// Of tool output quoted in an error message, at most this many bytes (its end): a message is
/// logged, reported and sent whole, and a tool can print megabytes.
const MAX_QUOTED: usize = 4096;
/// Of a status value or a line quoted in a parse error, at most this many bytes.
const MAX_VALUE: usize = 200;

/// The end of `text`, at most `max` bytes cut on a char boundary, saying how much came before.
/// Redact before: a password cut in half here would no longer be found.
fn tail_of(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = text.len() - max;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…({cut} bytes before){}", &text[cut..])
}

fn norm_key(k: &str) -> String {
    k.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase()
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, ParseError> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ParseError::BadValue {
            key,
            value: tail_of(v, MAX_VALUE),
            expected: "true or false",
        }),
    }
}

fn set_once<T: PartialEq>(slot: &mut Option<T>, v: T, key: &'static str) -> Result<(), ParseError> {
    match slot {
        Some(old) if *old != v => Err(ParseError::Conflict(key)),
        _ => {
            *slot = Some(v);
            Ok(())
        }
    }
}

/// Parse `--status` output. Other lines (JVM warnings, banners, the prompt) are ignored; CR
/// from the terminal and spacing differences are tolerated.
pub fn parse_status(text: &str) -> Result<CellStatus, ParseError> {
    let mut jobs = None;
    let mut active = None;
    let mut maint = None;
    for line in text.lines() {
        let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\r');
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim();
        match norm_key(k).as_str() {
            "job count" => {
                let n = v.parse::<u64>().map_err(|_| ParseError::BadValue {
                    key: "Job count",
                    value: tail_of(v, MAX_VALUE),
                    expected: "a number",
                })?;
                set_once(&mut jobs, n, "Job count")?;
            }
            "is active" => set_once(&mut active, parse_bool("Is Active", v)?, "Is Active")?,
            "in maintenance mode" => {
                set_once(&mut maint, parse_bool("In Maintenance Mode", v)?, "In Maintenance Mode")?;
            }
            _ => {}
        }
    }
    Ok(CellStatus {
        job_count: jobs.ok_or(ParseError::Missing("Job count"))?,
        is_active: active.ok_or(ParseError::Missing("Is Active"))?,
        in_maintenance: maint,
    })
}

/// Is the unfinished last line (or a line just ended) a password prompt? Loose on purpose: the
/// exact text is not documented, so any line that mentions a password and ends like a prompt.
pub fn is_password_prompt(line: &str) -> bool {
    let t = line.trim_end_matches(['\r', '\n']).trim_end();
    t.to_ascii_lowercase().contains("password") && (t.ends_with(':') || t.ends_with('?') || t.ends_with('>'))
}

/// Password prompts on one stream, counted as output arrives: `exec::run_pty` shows each
/// finished line once, then the unfinished one until it ends.
#[derive(Default)]
struct Prompts {
    in_finished_lines: usize,
    /// The unfinished line is a prompt (the tool waits on it).
    pending: bool,
}

impl Prompts {
    /// Take in what `exec::run_pty` shows; the prompts so far.
    fn see(&mut self, shown: &str) -> usize {
        // A prompt may be followed by our (unechoed) answer's newline, so split on line ends.
        let (finished, unfinished) = match shown.rfind(['\n', '\r']) {
            Some(i) => (&shown[..i], &shown[i + 1..]),
            None => ("", shown),
        };
        self.in_finished_lines += finished.split(['\n', '\r']).filter(|l| is_password_prompt(l)).count();
        self.pending = is_password_prompt(unfinished);
        self.in_finished_lines + usize::from(self.pending)
    }
}

/// Lines from the tool's error output that say what went wrong: known noise (JVM warnings)
/// dropped, the last few kept, and of those at most the last [`MAX_QUOTED`] bytes. `o` is
/// redacted already.
fn error_detail(o: &Output) -> String {
    let combined = format!("{}\n{}", o.stderr, o.stdout);
    let lines: Vec<&str> = combined
        .lines()
        .map(|l| l.trim_matches(|c: char| c.is_whitespace() || c == '\r'))
        .filter(|l| !l.is_empty() && !is_password_prompt(l) && !l.contains("VM warning"))
        .collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    if tail.is_empty() {
        "no output".into()
    } else {
        tail_of(&tail.join(" | "), MAX_QUOTED)
    }
}

/// `raw` decides the kind (a redacted text can hide the words, e.g. a password "a" inside
/// "failed"); the message quotes only `shown`, the redacted output.
fn classify_failure(call: &str, user: &str, shown: &Output, raw: &Output) -> ToolError {
    let o = shown;
    let detail = error_detail(o);
    let low = format!("{}\n{}", raw.stderr, raw.stdout).to_ascii_lowercase();
    let status = match o.code {
        Some(c) => format!("exit status {c}"),
        None => "a signal".to_string(),
    };
    if [
        "login failed",
        "invalid username",
        "invalid credentials",
        "authentication failed",
        "bad credentials",
        "unauthorized",
    ]
    .iter()
    .any(|p| low.contains(p))
    {
        ToolError::Rejected {
            call: call.into(),
            user: user.into(),
            detail,
        }
    } else if low.contains("console") && (low.contains("no ") || low.contains("not available"))
        || low.contains("/dev/tty")
    {
        ToolError::NoTerminal {
            call: call.into(),
            detail,
        }
    } else if low.contains("connect")
        && (low.contains("refused") || low.contains("could not") || low.contains("unable"))
    {
        ToolError::CellDown {
            call: call.into(),
            detail,
        }
    } else {
        ToolError::Failed {
            call: call.into(),
            status,
            detail,
        }
    }
}

/// A call that did not run to an answer: hung, missing, or an I/O error.
fn not_run(call: String, e: ExecError) -> ToolError {
    match e {
        ExecError::TimedOut { after, .. } => ToolError::Hung { call, after },
        ExecError::Spawn { program, source } => ToolError::Missing {
            program,
            detail: source.to_string(),
        },
        e => ToolError::Failed {
            call,
            status: "an I/O error".into(),
            detail: e.to_string(),
        },
    }
}

/// The cell's vendor tools under one VCD home.
#[derive(Debug, Clone)]
pub struct CellTool {
    pub cmt: PathBuf,
    pub vcd_cell: PathBuf,
    pub user: String,
    pub password: Secret,
    pub timeout: Duration,
}

impl CellTool {
    pub fn new(vcd_home: &Path, user: &str, password: Secret, timeout: Duration) -> Self {
        CellTool {
            cmt: vcd_home.join("bin/cell-management-tool"),
            vcd_cell: vcd_home.join("bin/vmware-vcd-cell"),
            user: user.to_string(),
            password,
            timeout,
        }
    }

    /// Run `cell-management-tool -u USER cell OPTION...`, answering the password prompt.
    async fn cmt(&self, opts: &[&str]) -> Result<Output, ToolError> {
        let call = format!("cell-management-tool cell {}", opts.join(" "));
        let mut args = vec!["-u", self.user.as_str(), "cell"];
        args.extend_from_slice(opts);
        let secret = self.password.clone();
        let answer = {
            let mut v = secret.expose().as_bytes().to_vec();
            v.push(b'\n');
            v
        };
        let mut answered = 0usize;
        let (mut on_out, mut on_err) = (Prompts::default(), Prompts::default());
        let res = exec::run_pty(&self.cmt, &args, self.timeout, |out, err| {
            let prompts = on_out.see(out) + on_err.see(err);
            if prompts > answered {
                if answered >= 1 {
                    // A second prompt means the first answer was refused; never loop on it.
                    return Respond::Abort("the tool asked for the password again".into());
                }
                answered = prompts;
                return Respond::Write(answer.clone());
            }
            Respond::Nothing
        })
        .await;
        let redact = |o: Output| Output {
            code: o.code,
            stdout: secret.redact(&o.stdout),
            stderr: secret.redact(&o.stderr),
        };
        match res {
            Ok(raw) => {
                let o = redact(raw.clone());
                if o.success() {
                    Ok(o)
                } else {
                    Err(classify_failure(&call, &self.user, &o, &raw))
                }
            }
            Err(ExecError::Aborted { reason, partial }) => Err(ToolError::Rejected {
                call,
                user: self.user.clone(),
                detail: format!("{reason}: {}", error_detail(&redact(*partial))),
            }),
            Err(e) => Err(not_run(call, e)),
        }
    }

    pub async fn status(&self) -> Result<CellStatus, ToolError> {
        let o = self.cmt(&["--status"]).await?;
        parse_status(&o.stdout).map_err(|e| ToolError::Garbled {
            call: "cell-management-tool cell --status".into(),
            output: format!("{e}; output: {}", quote_tail(&o.stdout)),
        })
    }

    /// Status plus the lines describing each running job (for reports when forcing).
    pub async fn status_verbose(&self) -> Result<(CellStatus, Vec<String>), ToolError> {
        let o = self.cmt(&["--status-verbose"]).await?;
        let st = parse_status(&o.stdout).map_err(|e| ToolError::Garbled {
            call: "cell-management-tool cell --status-verbose".into(),
            output: format!("{e}; output: {}", quote_tail(&o.stdout)),
        })?;
        let jobs = o
            .stdout
            .lines()
            .map(|l| l.trim_matches(|c: char| c.is_whitespace() || c == '\r'))
            .filter(|l| !l.is_empty() && !l.contains('=') || l.to_ascii_lowercase().starts_with("job "))
            .filter(|l| !is_password_prompt(l) && !l.contains("VM warning"))
            .map(str::to_string)
            .collect();
        Ok((st, jobs))
    }

    pub async fn quiesce(&self, on: bool) -> Result<(), ToolError> {
        self.cmt(&["--quiesce", if on { "true" } else { "false" }])
            .await
            .map(|_| ())
    }

    pub async fn shutdown(&self) -> Result<(), ToolError> {
        self.cmt(&["--shutdown"]).await.map(|_| ())
    }

    /// Maintenance message off. (On is `vmware-vcd-cell maintenance`, as the procedure says.)
    pub async fn maintenance_off(&self) -> Result<(), ToolError> {
        self.cmt(&["--maintenance", "false"]).await.map(|_| ())
    }

    /// `bin/vmware-vcd-cell maintenance`: needs no credentials.
    pub async fn maintenance_on(&self) -> Result<(), ToolError> {
        let call = "vmware-vcd-cell maintenance".to_string();
        match exec::run(&self.vcd_cell, &["maintenance"], self.timeout).await {
            Ok(o) if o.success() => Ok(()),
            Ok(o) => Err(classify_failure(&call, &self.user, &o, &o)),
            Err(e) => Err(not_run(call, e)),
        }
    }
}

/// The end of some (redacted) output, quoted on one line, for error messages.
fn quote_tail(s: &str) -> String {
    let flat: String = s
        .replace('\r', "")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    format!("{:?}", tail_of(&flat, MAX_VALUE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_documented_formats() {
        let s = parse_status("Job count = 3\nIs Active = true\n").unwrap();
        assert_eq!(
            s,
            CellStatus {
                job_count: 3,
                is_active: true,
                in_maintenance: None
            }
        );
        let s = parse_status("Job count = 0\r\nIs Active = false\r\nIn Maintenance Mode = true\r\n").unwrap();
        assert_eq!(
            s,
            CellStatus {
                job_count: 0,
                is_active: false,
                in_maintenance: Some(true)
            }
        );
        assert!(s.is_drained());
    }

    #[test]
    fn ignores_noise_and_prompt() {
        let out = "Please enter the password for user administrator: \r\n\
                   OpenJDK 64-Bit Server VM warning: Sharing is only supported for boot loader classes\r\n\
                   Job count = 1\r\nIs Active = true\r\n";
        assert_eq!(parse_status(out).unwrap().job_count, 1);
    }

    #[test]
    fn rejects_missing_or_bad_lines() {
        assert_eq!(parse_status("garbage\n"), Err(ParseError::Missing("Job count")));
        assert_eq!(parse_status("Job count = 2\n"), Err(ParseError::Missing("Is Active")));
        assert!(matches!(
            parse_status("Job count = x\nIs Active = true"),
            Err(ParseError::BadValue { .. })
        ));
        assert!(matches!(
            parse_status("Job count = 1\nIs Active = maybe"),
            Err(ParseError::BadValue { .. })
        ));
        assert_eq!(
            parse_status("Job count = 1\nJob count = 2\nIs Active = true"),
            Err(ParseError::Conflict("Job count"))
        );
    }

    #[test]
    fn prompt_detection_is_loose_but_not_silly() {
        assert!(is_password_prompt("Password: "));
        assert!(is_password_prompt("Please enter the password for user administrator:"));
        assert!(is_password_prompt("Enter Password for administrator?"));
        assert!(!is_password_prompt("Login failed: invalid username or password"));
        assert!(!is_password_prompt("Job count = 0"));
    }

    #[test]
    fn a_prompt_shown_in_pieces_counts_once() {
        let mut p = Prompts::default();
        assert_eq!(p.see("JVM warning: x\nPlease enter the pass"), 0);
        assert_eq!(p.see("Please enter the password for user administrator: "), 1);
        // Our answer's newline ends the line: still the one prompt.
        assert_eq!(p.see("Please enter the password for user administrator: \r\n"), 1);
        assert_eq!(p.see("Job count = 0\r\nPassword: "), 2);
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    const FAKE_PASSWORD: &str = "Fake-Secret-0815";

    /// A CellTool whose cell-management-tool is `body` after the usual password prompt (the
    /// answer is in `$pw`; the newline after it is the tool's, as echo is off).
    fn fake_tool(body: &str) -> (tempfile::TempDir, CellTool) {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let bin = home.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let script = format!(
            "#!/bin/sh\nprintf 'Please enter the password for user administrator: ' > /dev/tty\n\
             read pw < /dev/tty\necho > /dev/tty\n{body}\n"
        );
        let path = bin.join("cell-management-tool");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tool = CellTool::new(
            home.path(),
            "administrator",
            Secret::new(FAKE_PASSWORD.into()),
            Duration::from_secs(60),
        );
        (home, tool)
    }

    // 20 MB of noise around the status lines (one before it, one after): read in about a second
    // (re-scanning everything after each read ran into the timeout), the status still found.
    #[test]
    fn status_is_found_in_tens_of_megabytes_of_noise() {
        let (_home, tool) = fake_tool(
            "echo 'Job count = 2'\n\
             yes 'OpenJDK 64-Bit Server VM warning: filler filler filler' | head -n 200000\n\
             yes 'log4j:WARN filler on the error stream, filler filler' | head -n 200000 >&2\n\
             echo 'Is Active = true'",
        );
        let started = std::time::Instant::now();
        let st = rt().block_on(tool.status()).unwrap();
        assert_eq!((st.job_count, st.is_active), (2, true));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn quoted_tails_are_cut_on_a_char_boundary_and_say_so() {
        assert_eq!(tail_of("short", 10), "short");
        let t = tail_of(&"é".repeat(10), 5);
        // 20 bytes; the last 5 start inside an é, so only the last 2 (4 bytes) are kept.
        assert_eq!(t, "…(16 bytes before)éé");
    }

    // 2 MB on stderr, in long lines: the error keeps a few KiB of its end. The password, echoed
    // across where the message is cut, is redacted before the cut, so no piece of it is left.
    #[test]
    fn a_failing_tools_megabytes_make_a_short_redacted_message() {
        let end = " the end";
        let pad = format!("{}{end}", "z".repeat(MAX_QUOTED + 3 - FAKE_PASSWORD.len() - end.len()));
        let (_home, tool) = fake_tool(&format!(
            "i=0; while [ $i -lt 20 ]; do head -c 100000 /dev/zero | tr '\\0' e; echo; i=$((i+1)); done >&2\n\
             printf '%s{pad}\\n' \"$pw\" >&2\n\
             exit 1"
        ));
        let e = rt().block_on(tool.status()).unwrap_err();
        assert!(matches!(e, ToolError::Failed { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.len() < 8 * 1024, "message of {} bytes", msg.len());
        assert!(msg.ends_with(&pad) && msg.contains("bytes before)"), "{msg}");
        assert!(msg.contains("********"), "{msg}");
        for piece in FAKE_PASSWORD.as_bytes().windows(4) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(!msg.contains(piece), "{piece:?} of the password in {msg}");
        }
    }

    #[test]
    fn a_huge_status_value_makes_a_short_message() {
        let (_home, tool) = fake_tool(&format!(
            "echo 'Job count = 1'\necho 'Is Active = {}'",
            "y".repeat(100_000)
        ));
        let e = rt().block_on(tool.status()).unwrap_err();
        assert!(matches!(e, ToolError::Garbled { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.len() < 8 * 1024, "message of {} bytes", msg.len());
        assert!(msg.contains("`Is Active` has value `…(99800 bytes before)yyy"), "{msg}");
    }

    proptest! {
        // Whatever noise surrounds them and however they are spaced, the status lines are found.
        #[test]
        fn status_lines_survive_noise(
            jobs in 0u64..1_000_000,
            active: bool,
            maint in proptest::option::of(any::<bool>()),
            noise in proptest::collection::vec("[a-zA-Z :.,-]{0,40}", 0..5),
            sp1 in " {0,3}", sp2 in " {0,3}", crlf: bool,
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut lines: Vec<String> = noise.clone();
            lines.push(format!("Job count{sp1}={sp2}{jobs}"));
            lines.push(format!("{sp2}Is Active{sp1}= {active}"));
            if let Some(m) = maint { lines.push(format!("In Maintenance Mode = {m}")); }
            lines.extend(noise);
            let text = lines.join(nl);
            let s = parse_status(&text).unwrap();
            prop_assert_eq!(s, CellStatus { job_count: jobs, is_active: active, in_maintenance: maint });
        }

        // Arbitrary text never panics the parser, and anything it accepts has both lines.
        #[test]
        fn parser_total(text in ".{0,400}") {
            if let Ok(s) = parse_status(&text) {
                let low = text.to_ascii_lowercase();
                prop_assert!(low.contains("job") && low.contains("active"));
                let _ = s;
            }
        }
    }
}
