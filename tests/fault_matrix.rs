//! The fault matrix (issue 8): every fault we can inject, at every step of `cellctl drain` and
//! `cellctl upgrade`, against simulated cells. For each cell of the table it checks the documented
//! exit code, that the cell's real state (`cellsim show`) agrees with the journal
//! (`STATE_DIR/current.json`) and with the report's `cell_left`, that a report exists, that no
//! secret leaked, and that the documented recovery (a rerun, or `cellctl resume`) converges to a
//! clean cell. It prints the matrix at the end (stderr, and `<target dir>/fault-matrix.txt`) and
//! fails if any cell failed; cells are not stopped at the first failure, so the matrix is complete.
//!
//! `expect()` is the documented behaviour of each cell, `trigger()` how its fault is put "at the
//! step", the legend printed with the matrix says how each fault is injected. Cells that fail
//! because of a bug reported in cellctl are listed in `KNOWN_BUGS` (shown as `FAIL (bug N)`): they
//! still fail the test.
//!
//! The appliance column (issue 16, at the end of this file) runs the appliance upgrade's own
//! steps (unpack, the vamicli calls, the install through vamicli, the reboot, after the boot)
//! against the faults that apply there; its labels start with `appliance ×`.
//!
//! `FAULT_MATRIX_ONLY=substring` runs only the cells whose label contains it (e.g. `upgrade × SIGTERM`,
//! `appliance`);
//! a filter that selects no cell fails the test. `FAULT_MATRIX_JOBS=N` sets how many cells run at
//! once (default: one per two cores, at least one: the injection windows are timed, and a loaded
//! machine stretches them). A cell whose fault cannot be injected on this machine (`n/a`) fails
//! the test unless `FAULT_MATRIX_ALLOW_UNAVAILABLE=1`: a matrix that silently shrinks proves
//! nothing. The summary line `N passed, 0 failed, 0 unavailable` is what CI (`.ci/run`) checks.
// Harness code: pedantic style lints on helpers (ownership of small arguments, local items)
// say nothing about what is tested.
#![allow(
    clippy::needless_pass_by_value,
    clippy::items_after_statements,
    clippy::match_wild_err_arm
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::appliance::{APPLIANCE_NEW, APPLIANCE_OLD};
use common::*;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value;

const OLD: &str = "10.5.1";
const NEW: &str = "10.6.0";
/// What the cell's password is changed to for "password rejected" (cellctl keeps the old one).
const WRONG: &str = "Changed-Elsewhere-0042";
/// The webhook signing secret (receiver rows): must not leak either.
const SECRET: &str = "whsec-FaultMatrix-0815";

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cmd {
    Drain,
    Upgrade,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Drain => "drain",
            Cmd::Upgrade => "upgrade",
        }
    }
    fn steps(self) -> &'static [Step] {
        use Step::*;
        match self {
            Cmd::Drain => &[Preflight, MaintenanceOn, Quiesce, Wait, Shutdown, StopService],
            Cmd::Upgrade => &[
                Preflight,
                MaintenanceOn,
                Quiesce,
                Wait,
                Shutdown,
                StopService,
                Install,
                Start,
            ],
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Step {
    Preflight,
    MaintenanceOn,
    Quiesce,
    Wait,
    Shutdown,
    StopService,
    Install,
    Start,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::MaintenanceOn => "maintenance_on",
            Step::Quiesce => "quiesce",
            Step::Wait => "wait",
            Step::Shutdown => "shutdown",
            Step::StopService => "stop_service",
            Step::Install => "install",
            Step::Start => "start/health",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    Hang,
    Crash,
    Garbage,
    Password,
    Sigterm,
    HangSigterm,
    Kill9,
    Full,
    ReadOnly,
    Unhealthy,
    ReceiverDown,
    Noise,
}

const FAULTS: &[Fault] = &[
    Fault::Hang,
    Fault::Crash,
    Fault::Garbage,
    Fault::Password,
    Fault::Sigterm,
    Fault::HangSigterm,
    Fault::Kill9,
    Fault::Full,
    Fault::ReadOnly,
    Fault::Unhealthy,
    Fault::ReceiverDown,
    Fault::Noise,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Hang => "tool hang",
            Fault::Crash => "tool crash",
            Fault::Garbage => "tool garbage",
            Fault::Password => "password rejected",
            Fault::Sigterm => "SIGTERM",
            Fault::HangSigterm => "tool hang + SIGTERM",
            Fault::Kill9 => "kill -9 + rerun",
            Fault::Full => "state dir full",
            Fault::ReadOnly => "state dir read-only",
            Fault::Unhealthy => "health never healthy",
            Fault::ReceiverDown => "receiver down",
            Fault::Noise => "huge tool output",
        }
    }
    /// The simulator's fault kind for the vendor-tool faults.
    fn sim_kind(self) -> &'static str {
        match self {
            Fault::Hang | Fault::HangSigterm => "hang",
            Fault::Crash => "crash",
            _ => "garble",
        }
    }
    /// The kind written to our own one-shot fault hooks (vmware-vcd-cell, the installer).
    fn hook_kind(self) -> &'static str {
        match self {
            Fault::Hang | Fault::HangSigterm => "hang",
            Fault::Crash => "crash",
            _ => "garbage",
        }
    }
    fn injection(self) -> &'static str {
        match self {
            Fault::Hang => {
                "`cellsim fault hang --op status|quiesce|shutdown` (--times 1, or until cleared while waiting), --tool-timeout 1s; maintenance_on and install: one-shot hooks that `sleep 3600` (install: [install] timeout 2s). start/health (all tool faults): the cell comes up showing the maintenance message (set in cellsim's state while it starts), so cellctl must ask the tool"
            }
            Fault::Crash => {
                "`cellsim fault crash --op ...` (Java stack trace, exit 1); maintenance_on and install: one-shot hooks that print a stack trace and exit 1"
            }
            Fault::Garbage => {
                "`cellsim fault garble --op ...` (the action happens, stdout is junk, exit 0); maintenance_on and install: hooks that run the real tool with its output replaced by junk"
            }
            Fault::Password => {
                "`cellsim set password=...` before the run (preflight) or once the step is recorded as started (its tool call held by a gate until then); cellctl keeps the old password; start/health: --health-deadline 3s"
            }
            Fault::Sigterm => {
                "SIGTERM to cellctl once the step is recorded as started (lock file for preflight); stop_service: while `systemctl stop` is held by a gate"
            }
            Fault::HangSigterm => {
                "the step's tool call hangs as for tool hang, but under the default 5m --tool-timeout and `[drain] rollback_budget = \"2s\"`, so only the signal can end it; SIGTERM once the hung call is under way (its invocation record has no exit code; maintenance_on: the hook's `sleep 3600` has started); the hung process must be gone afterwards"
            }
            Fault::Kill9 => {
                "SIGKILL to cellctl once the step is recorded as started (stop_service: `systemctl stop` held by a gate), then the same command again"
            }
            Fault::Full => {
                "RLIMIT_FSIZE: `ulimit -f 0` from the start (preflight), else `prlimit --pid <cellctl> --fsize=0:unlimited` once the step has started (EFBIG on every later file write; SIGXFSZ ignored). The cell's tools and the transient unit lift the limit (they would not share cellctl's limit)"
            }
            Fault::ReadOnly => {
                "`chattr +i` on the state dir and its subdirectories (not units/, which the transient unit writes), from the start (preflight) or once the step has started: root gets EPERM on every create/rename/unlink there (where `chattr` is unusable: a read-only bind mount of the state dir, units/ bound writable inside; not root: chmod 0555)"
            }
            Fault::Unhealthy => "`cellsim set startup_delay=10m` before the run, --health-deadline 1s",
            Fault::ReceiverDown => {
                "report webhook (with step events) on a loopback receiver that stops listening once the step has started (before the run for preflight); recovery adds `cellctl report flush` with the receiver back"
            }
            Fault::Noise => {
                "a one-shot hook in front of both vendor tools: the step's call (by its argv word; wait: set once waiting) first prints 12 MB on stdout and 12 MB on stderr (half random bytes, half long text lines), then the real tool answers; the run must go on as without it, its printed output and saved report bounded (< 1 MiB)"
            }
        }
    }
}

/// Where the run's journal should be after the faulty run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Jr {
    /// No `current.json`: the run finished or never recorded anything.
    Absent,
    /// `current.json` holds the run, and agrees with the cell exactly.
    Kept,
    /// `current.json` is the last record the full/read-only state dir took: it may claim a change
    /// the run later undid (safe: `resume`/rerun repeat idempotent steps), never miss one.
    Stale,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rp {
    /// Saved in STATE_DIR/reports/ (and printed).
    Saved,
    /// The state dir cannot take it: only the JSON document on stdout.
    StdoutOnly,
    /// The process was killed: no report of its own (the rerun's is checked).
    Killed,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Recovery {
    /// The same command again (drain: shut down; upgrade: upgraded and healthy).
    Rerun,
    /// The same upgrade again with `--retry-install` (a failed install is not retried silently).
    RetryInstall,
    /// `cellctl resume`: the cell as found.
    Resume,
    /// Nothing to recover: `cellctl resume` finds no recorded run; the cell is already final.
    NothingLeft,
}

#[derive(Clone, Copy, Debug)]
struct Expect {
    /// The documented exit code (None: killed).
    code: Option<i32>,
    /// The report's `cell_left`.
    left: &'static str,
    journal: Jr,
    report: Rp,
    recovery: Recovery,
}

const NA_HEALTH: &str = "health never healthy: the health endpoint is polled only in upgrade's start/health step";
const NA_MAINT_PW: &str = "password rejected at maintenance_on: `vmware-vcd-cell maintenance` takes no credentials";
const NA_INSTALL_PW: &str = "password rejected at install: the installer is not given the administrator password";
const NA_STOP_TOOL: &str = "tool faults at stop_service: `systemctl stop` is the service manager, not a vendor tool call (a signal there is the SIGTERM and kill -9 cells)";
const NA_STOP_PW: &str = "password rejected at stop_service: `systemctl stop` takes no credentials";
const NA_STOP_STATE: &str =
    "state dir full/read-only at stop_service: the step writes the same records as shutdown, whose column covers them";
const NA_NOISE: &str = "huge tool output at stop_service, install and start/health: not a vendor tool step (systemctl, the installer in its unit, health polls); exec's bounded capture is shared by all, tested in src/adapters/exec.rs";
const NA_HANG_SIG_INSTALL: &str = "tool hang + SIGTERM at install: the installer is not a tool call (it runs in a transient unit with its own [install] timeout, which a signal does not end: the SIGTERM and tool hang cells)";
const NA_HANG_SIG_START: &str = "tool hang + SIGTERM at start/health: a hung tool call there is one health poll's (the tool hang cell), and a signal during the health wait is the SIGTERM cell";

/// The documented behaviour of each cell (README: exit codes, Signals, Upgrading, Reporting back).
fn expect(cmd: Cmd, fault: Fault, step: Step) -> Result<Expect, &'static str> {
    use Fault::*;
    use Step::*;
    let up = cmd == Cmd::Upgrade;
    let finished = if up { "running" } else { "shut_down" };
    let e = |code: i32, left: &'static str, journal: Jr, recovery: Recovery| {
        Ok(Expect {
            code: Some(code),
            left,
            journal,
            report: Rp::Saved,
            recovery,
        })
    };
    let state = |left: &'static str, journal: Jr| {
        Ok(Expect {
            code: Some(9),
            left,
            journal,
            report: Rp::StdoutOnly,
            recovery: Recovery::Rerun,
        })
    };
    match (fault, step) {
        (Unhealthy, Start) => e(22, "changed", Jr::Kept, Recovery::Rerun),
        (Unhealthy, _) => Err(NA_HEALTH),
        (Password, MaintenanceOn) => Err(NA_MAINT_PW),
        // Output is bounded and the answer found in the noise: as if there were none.
        (Noise, Preflight | MaintenanceOn | Quiesce | Wait | Shutdown) => {
            e(0, finished, Jr::Absent, Recovery::NothingLeft)
        }
        (Noise, _) => Err(NA_NOISE),
        (Password, StopService) => Err(NA_STOP_PW),
        (Hang | Crash | Garbage | HangSigterm, StopService) => Err(NA_STOP_TOOL),
        (Full | ReadOnly, StopService) => Err(NA_STOP_STATE),
        (HangSigterm, Install) => Err(NA_HANG_SIG_INSTALL),
        (HangSigterm, Start) => Err(NA_HANG_SIG_START),
        // The hung call is abandoned at once (nothing of it is waited out) and what the run
        // changed is undone within the rollback budget.
        (HangSigterm, Preflight | MaintenanceOn | Quiesce | Wait) => e(143, "unchanged", Jr::Absent, Recovery::Rerun),
        // Past the point of no return: the hung `--shutdown` gets the rollback budget, then is
        // abandoned with its step left `started`; the journal says a rerun finishes it.
        (HangSigterm, Shutdown) => e(143, "changed", Jr::Kept, Recovery::Rerun),
        (Password, Install) => Err(NA_INSTALL_PW),
        // After the start the tool is needed only if the started cell shows the maintenance
        // message (the cell here does): a failed call is retried on the next health poll...
        (Hang | Crash | Garbage, Start) => e(0, "running", Jr::Absent, Recovery::NothingLeft),
        // ...but with the password rejected the message stays on and the cell never gets healthy.
        // A refused password is said as such (exit 6), not hidden behind "never healthy".
        (Password, Start) => e(6, "changed", Jr::Kept, Recovery::Rerun),
        (Hang | Crash, Install) => e(21, "shut_down", Jr::Kept, Recovery::RetryInstall),
        (Garbage, Install) => e(0, "running", Jr::Absent, Recovery::NothingLeft),
        // Once shutdown has begun there is no rollback: the journal says where to pick up.
        (Hang | Crash, Shutdown) => e(7, "changed", Jr::Kept, Recovery::Rerun),
        (Hang | Crash, _) => e(7, "unchanged", Jr::Absent, Recovery::Rerun),
        (Garbage, Preflight | Wait) => e(7, "unchanged", Jr::Absent, Recovery::Rerun),
        // Quiet-success calls: their output is not parsed, the action happened.
        (Garbage, _) => e(0, finished, Jr::Absent, Recovery::NothingLeft),
        (Password, Preflight) => e(6, "unchanged", Jr::Absent, Recovery::Rerun),
        // The undo needs the password too: rollback incomplete, journal kept, `resume`.
        (Password, Quiesce | Wait) => e(11, "changed", Jr::Kept, Recovery::Resume),
        (Password, Shutdown) => e(6, "changed", Jr::Kept, Recovery::Rerun),
        (Sigterm, Preflight | MaintenanceOn | Quiesce | Wait) => e(143, "unchanged", Jr::Absent, Recovery::Rerun),
        // "once shutdown has begun it is finished and recorded"
        (Sigterm, Shutdown | StopService) if !up => e(143, "shut_down", Jr::Absent, Recovery::NothingLeft),
        // The upgrade stops there (or at the install, which runs on): a rerun continues it.
        (Sigterm, Shutdown | StopService | Install) => e(143, "shut_down", Jr::Kept, Recovery::Rerun),
        (Sigterm, Start) => e(143, "changed", Jr::Kept, Recovery::Rerun),
        (Kill9, _) => Ok(Expect {
            code: None,
            left: "",
            journal: if step == Preflight { Jr::Absent } else { Jr::Kept },
            report: Rp::Killed,
            recovery: Recovery::Rerun,
        }),
        (Full | ReadOnly, Preflight) => state("unchanged", Jr::Absent),
        (Full | ReadOnly, MaintenanceOn | Quiesce | Wait) => state("unchanged", Jr::Stale),
        (Full | ReadOnly, Shutdown | Start) => state("changed", Jr::Stale),
        (Full | ReadOnly, Install) => state("shut_down", Jr::Stale),
        // "Delivery never changes a run's outcome or exit code."
        (ReceiverDown, _) => e(0, finished, Jr::Absent, Recovery::NothingLeft),
    }
}

/// Cells that fail because of a bug in cellctl reported to the maintainers (the test still
/// fails on them): (command, fault, step, tag shown in the matrix, explanation).
// The three bugs this matrix found (a stale journal trusted by a rerun; SIGTERM during an
// upgrade's shutdown beginning the install stage; a false "changes were undone" when interrupted
// while waiting for health) are fixed; new ones are listed here, with the reason, until fixed.
const KNOWN_BUGS: &[(Cmd, Fault, Step, &str, &str)] = &[];

fn known_bug(cmd: Cmd, fault: Fault, step: Step) -> Option<(&'static str, &'static str)> {
    KNOWN_BUGS
        .iter()
        .find(|(c, f, s, _, _)| *c == cmd && *f == fault && *s == step)
        .map(|(_, _, _, tag, why)| (*tag, *why))
}

// ---------------------------------------------------------------------------------------------
// How a fault is put "at a step"
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Trigger {
    /// Injected before the run starts (targeted with --op/--times, or a one-shot hook).
    Pre,
    /// cellctl holds the lock (its signal handler is installed; preflight is under way).
    Lock,
    /// The journal records the step (it is recorded as `started` before it is taken).
    StepStarted(&'static str),
    /// The journal's phase is `waiting`.
    Waiting,
    /// The journal's upgrade stage.
    Stage(&'static str),
    /// The transient install unit's wrapper has written its pid file.
    UnitRunning,
    /// The step's tool call hangs (`Ctx::hung_pid` finds it).
    HungCall,
}

fn trigger(fault: Fault, step: Step) -> Trigger {
    use Fault::*;
    use Step::*;
    match (fault, step) {
        (Unhealthy, _) => Trigger::Pre,
        (Hang | Crash | Garbage | HangSigterm | Noise, Wait) => Trigger::Waiting,
        (Noise, _) => Trigger::Pre,
        (HangSigterm, _) => Trigger::HungCall,
        // The start step's tool faults must be in place before the start: set during the install.
        (Hang | Crash | Garbage | Password, Start) => Trigger::Stage("install"),
        (Hang | Crash | Garbage, _) => Trigger::Pre,
        (Password | Full | ReadOnly | ReceiverDown, Preflight) => Trigger::Pre,
        (_, Preflight) => Trigger::Lock,
        (_, MaintenanceOn) => Trigger::StepStarted("maintenance_on"),
        (_, Quiesce) => Trigger::StepStarted("quiesce"),
        (_, Wait) => Trigger::Waiting,
        (_, Shutdown) => Trigger::StepStarted("shutdown"),
        (_, StopService) => Trigger::StepStarted("stop_service"),
        (_, Install) => Trigger::UnitRunning,
        (_, Start) => Trigger::Stage("start"),
    }
}

// ---------------------------------------------------------------------------------------------
// Results and the printed matrix
// ---------------------------------------------------------------------------------------------

enum Verdict {
    Pass { shown: String },
    Fail { shown: String, failures: Vec<String> },
    NotApplicable(&'static str),
    Unavailable(String),
}

struct CellResult {
    cmd: Cmd,
    fault: Fault,
    step: Step,
    verdict: Verdict,
    secs: f64,
}

fn label(cmd: Cmd, fault: Fault, step: Step) -> String {
    format!("{} × {} @ {}", cmd.name(), fault.name(), step.name())
}

fn render(results: &[CellResult], appliance: &[AResult], env: &Env, elapsed: Duration, jobs: usize) -> String {
    let mut out = String::new();
    out.push_str("FAULT MATRIX (issue 8): each fault injected at each step of `cellctl drain` and `cellctl upgrade`\n");
    out.push_str(
        "cell: \"ok N\" = passed, exit code N as documented (\"ok -9\": killed, checked through its rerun; \
         \"*\": report only on stdout, the state dir could not take it);\n      \"FAIL ...\" = failed (details below); \
         \"-\" = not applicable (legend); \"n/a\" = cannot be injected on this machine; \" \" = not run (filtered)\n",
    );
    for cmd in [Cmd::Drain, Cmd::Upgrade] {
        let steps = cmd.steps();
        let width = 16;
        out.push('\n');
        out.push_str(&format!("{:<22}", cmd.name()));
        for s in steps {
            out.push_str(&format!("{:<width$}", s.name()));
        }
        out.push('\n');
        for &fault in FAULTS {
            out.push_str(&format!("{:<22}", fault.name()));
            for &step in steps {
                let shown = results
                    .iter()
                    .find(|r| r.cmd == cmd && r.fault == fault && r.step == step)
                    .map(|r| match &r.verdict {
                        Verdict::Pass { shown } => format!("ok {shown}"),
                        Verdict::Fail { shown, .. } => match known_bug(cmd, fault, step) {
                            Some((tag, _)) => format!("FAIL ({tag})"),
                            None => format!("FAIL {shown}"),
                        },
                        Verdict::NotApplicable(_) => "-".into(),
                        Verdict::Unavailable(_) => "n/a".into(),
                    })
                    .unwrap_or_default();
                out.push_str(&format!("{shown:<width$}"));
            }
            out.push('\n');
        }
    }
    out.push_str(&render_appliance(appliance));
    out.push('\n');
    out.push_str(&summary_line(
        results
            .iter()
            .map(|r| &r.verdict)
            .chain(appliance.iter().map(|r| &r.verdict)),
    ));
    out.push_str(&format!(
        "; {} not applicable; {:.1}s wall time, {} cells at a time\n",
        results
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::NotApplicable(_)))
            .count()
            + appliance
                .iter()
                .filter(|r| matches!(r.verdict, Verdict::NotApplicable(_)))
                .count(),
        elapsed.as_secs_f64(),
        jobs
    ));
    out.push_str("\nLegend: not applicable (-)\n");
    let mut reasons: Vec<&str> = results
        .iter()
        .filter_map(|r| match r.verdict {
            Verdict::NotApplicable(why) => Some(why),
            _ => None,
        })
        .collect();
    reasons.sort_unstable();
    reasons.dedup();
    for why in reasons {
        out.push_str(&format!("  - {why}\n"));
    }
    out.push_str("  - drain has no install and start/health steps (upgrade only)\n");
    out.push_str(
        "  - hostile config files, state dirs and password files (owned or writable by others) are refused before any \
         step: tests/security.rs covers them\n",
    );
    let mut unavailable: Vec<String> = results
        .iter()
        .filter_map(|r| match &r.verdict {
            Verdict::Unavailable(why) => Some(format!("{}: {why}", r.fault.name())),
            _ => None,
        })
        .collect();
    unavailable.sort();
    unavailable.dedup();
    if !unavailable.is_empty() {
        out.push_str("Unavailable here (n/a):\n");
        for u in unavailable {
            out.push_str(&format!("  - {u}\n"));
        }
    }
    out.push_str(&format!(
        "Injection (read-only here by {}; mid-run RLIMIT_FSIZE {}). A mid-run fault goes in while its step is held in flight \
         (a gate file the step's tool call or installer waits on, the start by a 10m startup delay; released once the fault is in), \
         and the journal must show that step in flight then:\n",
        match &env.read_only {
            Ok(RoMethod::Chattr) => "`chattr +i`".to_string(),
            Ok(RoMethod::Chmod) => "chmod 0555".to_string(),
            Ok(RoMethod::BindReadOnly) => "a read-only bind mount (`chattr +i` unusable)".to_string(),
            Err(e) => format!("nothing: {e}"),
        },
        match &env.prlimit {
            Ok(()) => "by `prlimit --pid`".to_string(),
            Err(e) => format!("unavailable: {e}"),
        }
    ));
    for &f in FAULTS {
        out.push_str(&format!("  - {}: {}\n", f.name(), f.injection()));
    }
    out.push_str(
        "Per cell: the exit code and the report's exit_code; cell_left against `cellsim show` (service, cell, quiesced, \
         maintenance, version, health);\n  current.json present or not, and every change the cell shows held by it \
         (and, unless the state dir was the fault, every change it holds shown by the cell);\n  the report in \
         STATE_DIR/reports/; no password (or webhook secret) on stdout/stderr, in the state dir, in tool argv/env or \
         webhook bodies;\n  then the fault is cleared and the recovery (rerun, --retry-install, resume) must exit 0 \
         with a clean cell and no recorded run.\n",
    );
    let mut bugs: Vec<&CellResult> = results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Fail { .. }) && known_bug(r.cmd, r.fault, r.step).is_some())
        .collect();
    bugs.sort_by_key(|r| known_bug(r.cmd, r.fault, r.step).map(|(tag, _)| tag));
    if !bugs.is_empty() {
        out.push_str("Known bugs (reported; the cells still fail):\n");
        let mut seen = vec![];
        for r in bugs {
            let (tag, why) = known_bug(r.cmd, r.fault, r.step).expect("filtered");
            if !seen.contains(&tag) {
                seen.push(tag);
                out.push_str(&format!("  - {tag}: {why}\n"));
            }
        }
    }
    let fixed: Vec<String> = results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Pass { .. }) && known_bug(r.cmd, r.fault, r.step).is_some())
        .map(|r| label(r.cmd, r.fault, r.step))
        .collect();
    if !fixed.is_empty() {
        out.push_str(&format!(
            "Listed as known bugs but passing now (remove them from KNOWN_BUGS): {}\n",
            fixed.join("; ")
        ));
    }
    let failed: Vec<&CellResult> = results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Fail { .. }))
        .collect();
    if !failed.is_empty() {
        out.push_str("Failures:\n");
        for r in failed {
            if let Verdict::Fail { failures, .. } = &r.verdict {
                out.push_str(&format!("  {} ({:.1}s):\n", label(r.cmd, r.fault, r.step), r.secs));
                for f in failures {
                    out.push_str(&format!("    - {f}\n"));
                }
            }
        }
    }
    let mut slow: Vec<&CellResult> = results.iter().filter(|r| r.secs > 0.0).collect();
    slow.sort_by(|a, b| b.secs.total_cmp(&a.secs));
    out.push_str("Slowest cells: ");
    out.push_str(
        &slow
            .iter()
            .take(5)
            .map(|r| format!("{} {:.1}s", label(r.cmd, r.fault, r.step), r.secs))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out.push('\n');
    out
}

/// `fault matrix: N passed, F failed, U unavailable`, the line `.ci/run` checks (F and U must be 0).
fn summary_line<'a>(verdicts: impl Iterator<Item = &'a Verdict>) -> String {
    let verdicts: Vec<&Verdict> = verdicts.collect();
    let count = |f: &dyn Fn(&Verdict) -> bool| verdicts.iter().filter(|v| f(v)).count();
    format!(
        "fault matrix: {} passed, {} failed, {} unavailable",
        count(&|v| matches!(v, Verdict::Pass { .. })),
        count(&|v| matches!(v, Verdict::Fail { .. })),
        count(&|v| matches!(v, Verdict::Unavailable(_))),
    )
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[test]
fn fault_matrix() {
    let t0 = Instant::now();
    let env = Env::probe();
    let only = std::env::var("FAULT_MATRIX_ONLY").unwrap_or_default();
    let jobs: usize = std::env::var("FAULT_MATRIX_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .filter(|j| *j > 0)
        .unwrap_or_else(default_jobs);
    // Upgrades first: they are the slow ones, so the pool ends with short cells.
    let mut cells = vec![];
    for cmd in [Cmd::Upgrade, Cmd::Drain] {
        for &fault in FAULTS {
            for &step in cmd.steps() {
                if label(cmd, fault, step).contains(&only) {
                    cells.push((cmd, fault, step));
                }
            }
        }
    }
    // The appliance column first: its cells are the slowest (a reboot and a boot each).
    let a_cells = appliance_cells(&only);
    assert!(
        !cells.is_empty() || !a_cells.is_empty(),
        "FAULT_MATRIX_ONLY={only:?} selects no cell of the fault matrix: nothing would be checked"
    );
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let a_results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if let Some(&(fault, step)) = a_cells.get(i) {
                        let r = run_appliance_cell(fault, step, &env);
                        a_results.lock().unwrap().push(r);
                        continue;
                    }
                    let Some(&(cmd, fault, step)) = cells.get(i - a_cells.len()) else {
                        break;
                    };
                    let r = run_cell(cmd, fault, step, &env);
                    results.lock().unwrap().push(r);
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    let a_results = a_results.into_inner().unwrap();
    let text = render(&results, &a_results, &env, t0.elapsed(), jobs);
    eprintln!("\n{text}");
    let path = target_dir().join("fault-matrix.txt");
    if let Err(e) = std::fs::write(&path, &text) {
        eprintln!("could not write {}: {e}", path.display());
    } else {
        eprintln!("(also written to {})", path.display());
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Fail { .. }))
        .map(|r| label(r.cmd, r.fault, r.step))
        .chain(
            a_results
                .iter()
                .filter(|r| matches!(r.verdict, Verdict::Fail { .. }))
                .map(|r| a_label(r.fault, r.step)),
        )
        .collect();
    assert!(
        failed.is_empty(),
        "{} fault-matrix cell(s) failed: {}",
        failed.len(),
        failed.join("; ")
    );
    let unavailable: Vec<String> = results
        .iter()
        .filter_map(|r| match &r.verdict {
            Verdict::Unavailable(why) => Some(format!("{} ({why})", label(r.cmd, r.fault, r.step))),
            _ => None,
        })
        .chain(a_results.iter().filter_map(|r| match &r.verdict {
            Verdict::Unavailable(why) => Some(format!("{} ({why})", a_label(r.fault, r.step))),
            _ => None,
        }))
        .collect();
    assert!(
        unavailable.is_empty() || allow_unavailable(),
        "{} fault-matrix cell(s) could not be injected on this machine, so they checked nothing \
         (set {ALLOW_UNAVAILABLE}=1 to accept a partial matrix): {}",
        unavailable.len(),
        unavailable.join("; ")
    );
}

/// Accept cells that cannot be injected here (a developer's machine without root or `prlimit`).
const ALLOW_UNAVAILABLE: &str = "FAULT_MATRIX_ALLOW_UNAVAILABLE";

fn allow_unavailable() -> bool {
    std::env::var(ALLOW_UNAVAILABLE).is_ok_and(|v| v == "1")
}

/// One cell per two cores: each cell runs cellctl, the simulator's tools and often a health
/// server at once, and its injection windows are timed; more cells than that on a loaded
/// machine stretch a step past its window.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// `<target dir>/fault-matrix.txt`: the test binary is `<target dir>/<profile>/deps/fault_matrix-*`.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(Path::to_path_buf))
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
}

fn run_cell(cmd: Cmd, fault: Fault, step: Step, env: &Env) -> CellResult {
    let t0 = Instant::now();
    let verdict = match expect(cmd, fault, step) {
        Err(why) => Verdict::NotApplicable(why),
        Ok(exp) => {
            if let Some(why) = env.unavailable(fault, step) {
                Verdict::Unavailable(why)
            } else {
                let mut x = None;
                let r = catch_unwind(AssertUnwindSafe(|| {
                    let ro = env.read_only.clone().unwrap_or(RoMethod::Chattr);
                    let ctx = Ctx::new(cmd, fault, step, exp, ro, env.setsid.is_ok());
                    let ctx = x.insert(ctx);
                    ctx.drive();
                }));
                let mut failures = x.as_ref().map(|c| c.failures.clone()).unwrap_or_default();
                if let Err(p) = r {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(std::string::ToString::to_string))
                        .unwrap_or_else(|| "panic".into());
                    failures.push(format!("panicked: {msg}"));
                }
                let shown = x.as_ref().map(|c| c.shown.clone()).unwrap_or_default();
                drop(x);
                if failures.is_empty() {
                    Verdict::Pass { shown }
                } else {
                    Verdict::Fail { shown, failures }
                }
            }
        }
    };
    CellResult {
        cmd,
        fault,
        step,
        verdict,
        secs: t0.elapsed().as_secs_f64(),
    }
}

// ---------------------------------------------------------------------------------------------
// The machine: what can be injected here
// ---------------------------------------------------------------------------------------------

struct Env {
    read_only: Result<RoMethod, String>,
    prlimit: Result<(), String>,
    /// `setsid -w`, to run the simulated transient unit outside cellctl's process group.
    setsid: Result<(), String>,
}

/// How a directory is made read-only: root ignores permissions, so it takes the immutable
/// attribute, or where that is not supported a read-only bind mount; anyone else, `chmod a-w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RoMethod {
    Chattr,
    BindReadOnly,
    Chmod,
}

impl Env {
    fn probe() -> Env {
        Env {
            read_only: probe_read_only(),
            prlimit: probe_prlimit(),
            setsid: Command::new("setsid")
                .args(["-w", "true"])
                .status()
                .ok()
                .filter(std::process::ExitStatus::success)
                .map(|_| ())
                .ok_or_else(|| {
                    "`setsid -w` (util-linux) is missing: the simulated unit would die with cellctl's process group"
                        .into()
                }),
        }
    }

    fn unavailable(&self, fault: Fault, step: Step) -> Option<String> {
        match fault {
            Fault::ReadOnly => self.read_only.clone().err(),
            Fault::Full if step != Step::Preflight => self.prlimit.clone().err(),
            Fault::Sigterm if step == Step::Install => self.setsid.clone().err(),
            _ => None,
        }
    }
}

/// The first method that works here. `FAULT_MATRIX_READ_ONLY=chattr|bind|chmod` forces one (to
/// check a fallback on a machine where the first choice works).
fn probe_read_only() -> Result<RoMethod, String> {
    let d = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = std::fs::metadata(d.path()).map_or(true, |m| m.uid() == 0);
    let candidates = match std::env::var("FAULT_MATRIX_READ_ONLY").as_deref() {
        Ok("chattr") => vec![RoMethod::Chattr],
        Ok("bind") => vec![RoMethod::BindReadOnly],
        Ok("chmod") => vec![RoMethod::Chmod],
        Ok(other) if !other.is_empty() => {
            return Err(format!("FAULT_MATRIX_READ_ONLY={other}: not chattr, bind or chmod"));
        }
        _ if root => vec![RoMethod::Chattr, RoMethod::BindReadOnly],
        _ => vec![RoMethod::Chmod],
    };
    let mut why = vec![];
    for method in candidates {
        match Immutable::apply(d.path(), method) {
            Ok(guard) => {
                let blocked = std::fs::write(d.path().join("x"), "x").is_err();
                drop(guard);
                if blocked {
                    return Ok(method);
                }
                why.push(format!("{method:?}: a read-only directory still took a new file"));
            }
            Err(e) => why.push(e),
        }
    }
    Err(why.join("; "))
}

fn probe_prlimit() -> Result<(), String> {
    let mut sleeper = Command::new("sleep")
        .arg("5")
        .spawn()
        .map_err(|e| format!("cannot spawn sleep: {e}"))?;
    let ok = Command::new("prlimit")
        .arg("--pid")
        .arg(sleeper.id().to_string())
        .arg("--fsize=0:unlimited")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    if ok {
        Ok(())
    } else {
        Err("`prlimit --pid` is missing or not permitted (util-linux)".into())
    }
}

// ---------------------------------------------------------------------------------------------
// One cell
// ---------------------------------------------------------------------------------------------

struct Ctx {
    cmd: Cmd,
    fault: Fault,
    step: Step,
    exp: Expect,
    ro_method: RoMethod,
    failures: Vec<String>,
    /// What the matrix shows on success (e.g. "7", "9*").
    shown: String,
    /// Everything cellctl printed, for the leak check.
    printed: String,
    // Declared before `c` so they go first (the receiver, the guard, then the served endpoint).
    rx: Option<Receiver>,
    immutable: Option<Immutable>,
    served: Option<Served>,
    pkg: Option<PathBuf>,
    /// The journal when a mid-run fault was injected, and (kill -9) right after.
    at_injection: Option<Value>,
    after_injection: Option<Value>,
    /// The webhook bodies the receiver had taken when it went down.
    delivered_before_down: Option<Vec<String>>,
    /// tool hang + SIGTERM: the pid of the hung tool call, which must not outlive the run.
    hung: Option<i32>,
    c: Cell,
}

impl Ctx {
    fn new(cmd: Cmd, fault: Fault, step: Step, exp: Expect, ro_method: RoMethod, setsid: bool) -> Ctx {
        let c = Cell::new(&["--quiesce-delay", "100ms", "--version", OLD]);
        let mut x = Ctx {
            cmd,
            fault,
            step,
            exp,
            ro_method,
            failures: vec![],
            shown: String::new(),
            printed: String::new(),
            rx: None,
            immutable: None,
            served: None,
            pkg: None,
            at_injection: None,
            after_injection: None,
            delivered_before_down: None,
            hung: None,
            c,
        };
        x.install_vcd_cell_hook();
        for tool in ["cell-management-tool", "vmware-vcd-cell"] {
            gate_tool(&x.c.dir.join("bin").join(tool), &x.marker("gate"));
        }
        if fault == Fault::Noise {
            for tool in ["cell-management-tool", "vmware-vcd-cell"] {
                noise_tool(&x.c.dir.join("bin").join(tool), &x.marker("noise"));
            }
        }
        if step == Step::StopService {
            // `systemctl stop` held in flight (as `slow_stop` in tests/hardening.rs, but by a gate).
            gate_tool(&x.c.dir.join("bin/systemctl"), &x.marker("gate"));
        }
        if cmd == Cmd::Upgrade {
            x.served = Some(x.c.serve());
            x.pkg = Some(x.hooked_package());
            // cellctl kills its child's process group when it stops waiting (SIGTERM): a real
            // transient unit runs on in systemd, so the stand-in's unit leaves that group too.
            let bin = x.c.dir.join("bin");
            write_executable(
                &bin.join("systemd-run-detached"),
                &format!(
                    "#!/bin/sh\n# As a real transient unit, the install runs outside the caller's process group.\nexec {}'{}' \"$@\"\n",
                    if setsid { "setsid -w " } else { "" },
                    bin.join("systemd-run").display()
                ),
                0o755,
            );
        }
        if fault == Fault::ReceiverDown {
            x.rx = Some(Receiver::start(0));
        }
        if fault == Fault::Full {
            lift_fsize_limit_in_tools(&x.c.dir.join("bin"));
        }
        if fault == Fault::Password {
            guard_tools_against_password(&x.c.dir.join("bin"), &x.marker("leaks"));
        }
        x.write_config(if fault == Fault::Hang && step == Step::Install {
            "2s"
        } else {
            "60s"
        });
        x
    }

    fn fail(&mut self, msg: impl Into<String>) {
        self.failures.push(msg.into());
    }

    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            let m = msg();
            self.fail(m);
        }
    }

    // --- fixtures -----------------------------------------------------------------------------

    fn marker(&self, name: &str) -> PathBuf {
        self.c.tmp.path().join(format!("fault-{name}"))
    }

    /// `bin/vmware-vcd-cell` behind a one-shot hook: cellsim's faults target only
    /// cell-management-tool, so hang/crash/garbage for `maintenance` come from here (and `gate_tool` holds it).
    fn install_vcd_cell_hook(&self) {
        let bin = self.c.dir.join("bin");
        let real = bin.join("vmware-vcd-cell.real");
        std::fs::rename(bin.join("vmware-vcd-cell"), &real).unwrap();
        let script = format!(
            r#"#!/bin/sh
# fault-matrix hook: a one-shot fault from the marker file, else the simulated tool.
m='{marker}'
if [ "${{1:-}}" = maintenance ] && [ -f "$m" ]; then
    k=$(cat "$m"); rm -f "$m"
    case "$k" in
        hang) echo $$ > '{hung}'; exec sleep 3600 ;;
        crash) printf '%s\n' 'Exception in thread "main" java.lang.IllegalStateException: simulated crash' '	at com.vmware.vcloud.cell.Main.main(Main.java:42)' >&2; exit 1 ;;
        garbage) '{real}' "$@" >/dev/null 2>&1; rc=$?; printf '%s\n' '#@&%$ ~~ !!x0x0 ^^^' '|||{{}}[]~~'; exit $rc ;;
    esac
fi
exec '{real}' "$@"
"#,
            marker = self.marker("vcd-cell").display(),
            hung = self.marker("hung").display(),
            real = real.display()
        );
        write_executable(&bin.join("vmware-vcd-cell"), &script, 0o755);
    }

    /// A simulated installer behind a one-shot hook (hang, crash, garbage, gate), with its
    /// `.sha256`. The hook is part of the package file, so its checksum holds across reruns.
    fn hooked_package(&self) -> PathBuf {
        let pkg = self.c.package(NEW, "ok", &["--install-time", "300ms"]);
        let real_dir = self.c.tmp.path().join("real-pkg");
        std::fs::create_dir_all(&real_dir).unwrap();
        let real = real_dir.join(pkg.file_name().unwrap());
        std::fs::rename(&pkg, &real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = format!(
            r#"#!/bin/sh
# fault-matrix hook: a one-shot fault from the marker file, else the simulated installer.
m='{marker}'
if [ -f "$m" ]; then
    k=$(cat "$m"); rm -f "$m"
    case "$k" in
        hang) echo 'Installing VMware Cloud Director...'; exec sleep 3600 ;;
        crash) printf '%s\n' 'Exception in thread "main" java.lang.IllegalStateException: simulated installer crash' '	at com.vmware.installer.Main.main(Main.java:42)' >&2; exit 1 ;;
        garbage) '{real}' "$@" >/dev/null 2>&1; rc=$?; printf '%s\n' '#@&%$ ~~ !!x0x0 ^^^' '|||{{}}[]~~'; exit $rc ;;
        gate) while [ -f '{gate}' ]; do sleep 0.02; done ;;
    esac
fi
exec '{real}' "$@"
"#,
            marker = self.marker("installer").display(),
            gate = self.marker("gate").display(),
            real = real.display()
        );
        write_executable(&pkg, &script, 0o644);
        let sum = sha256_hex(script.as_bytes());
        std::fs::write(
            format!("{}.sha256", pkg.display()),
            format!("{sum}  {}\n", pkg.file_name().unwrap().to_string_lossy()),
        )
        .unwrap();
        pkg
    }

    fn write_config(&self, install_timeout: &str) {
        let mut cfg = format!(
            "[health]\ninterval = \"100ms\"\nrequest_timeout = \"2s\"\n[install]\ntimeout = \"{install_timeout}\"\n"
        );
        if self.fault == Fault::HangSigterm {
            // The abandoned shutdown call and the undo get 2s after the signal, not the default.
            cfg.push_str("[drain]\nrollback_budget = \"2s\"\n");
        }
        if let Some(rx) = &self.rx {
            // The test receiver speaks plain HTTP on loopback.
            self.c.allow_plain_http();
            let secret = self.c.tmp.path().join("report-secret");
            std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
            cfg.push_str(&format!(
                "[report]\nurls = [\"{}\"]\nsecret_file = {:?}\nevents = true\nbudget = \"1s\"\ntimeout = \"1s\"\nconnect_timeout = \"500ms\"\n",
                rx.url(),
                secret.display().to_string()
            ));
        }
        std::fs::write(&self.c.config, cfg).unwrap();
    }

    /// The command under test (or its recovery rerun).
    fn command(&self, tool_timeout: &str, deadline: &str, extra: &[&str]) -> Command {
        let mut cmd = self.c.cellctl();
        cmd.arg("--json");
        // Empty: cellctl's default (5m), so that only a signal ends a hung call.
        if !tool_timeout.is_empty() {
            cmd.args(["--tool-timeout", tool_timeout]);
        }
        match self.cmd {
            Cmd::Drain => {
                cmd.args(["drain", "--poll-interval", "100ms", "--deadline", deadline]);
            }
            Cmd::Upgrade => {
                let served = self.served.as_ref().expect("upgrade cells serve the health endpoint");
                cmd.arg("--systemd-run")
                    .arg(self.c.dir.join("bin/systemd-run-detached"))
                    .arg("--version-command")
                    .arg(self.c.dir.join("bin/vcd-version"))
                    .arg("--health-url")
                    .arg(served.health_url())
                    .arg("--health-ca-file")
                    .arg(&served.ca)
                    .args([
                        "upgrade",
                        "--poll-interval",
                        "100ms",
                        "--deadline",
                        deadline,
                        "--health-deadline",
                    ])
                    .arg(match (self.fault, self.step) {
                        (Fault::Unhealthy, _) => "1s",
                        (Fault::Password, Step::Start) => "3s",
                        _ => "30s",
                    })
                    .arg(self.pkg.as_ref().expect("upgrade cells have a package"));
            }
        }
        cmd.args(extra);
        cmd
    }

    fn run_cmd(&mut self, what: &str, mut cmd: Command) -> Run {
        let run = Proc::spawn(&mut cmd).finish(Duration::from_secs(120));
        match run {
            Ok(r) => {
                self.printed.push_str(&r.stdout);
                self.printed.push_str(&r.stderr);
                r
            }
            Err(e) => {
                self.fail(format!("{what}: {e}"));
                Run {
                    code: -1,
                    stdout: String::new(),
                    stderr: String::new(),
                }
            }
        }
    }

    // --- the cell -----------------------------------------------------------------------------

    fn drive(&mut self) {
        let trig = trigger(self.fault, self.step);
        self.prepare(trig);
        let fault_run = self.fault_run(trig);
        let journal_run_id = self.c.current().and_then(|j| j["run_id"].as_str().map(str::to_string));
        if let Some(run) = &fault_run {
            self.check_fault_run(run);
        }
        self.clear_fault();
        if fault_run.is_some() {
            self.recover(journal_run_id);
        }
        self.check_no_leak();
    }

    /// Hold the target step in flight until the fault is in (`release_gates`): a gate, not a
    /// latency, so that a loaded machine cannot let the step end before the fault arrives.
    fn prepare(&mut self, trig: Trigger) {
        let gate = |word: &str| std::fs::write(self.marker("gate"), word).unwrap();
        match trig {
            Trigger::Lock => gate("--status"),
            Trigger::StepStarted("quiesce") => gate("--quiesce"),
            Trigger::StepStarted("shutdown") => gate("--shutdown"),
            Trigger::StepStarted("stop_service") => gate("stop"),
            Trigger::StepStarted(_) => gate("maintenance"),
            Trigger::Waiting => {
                self.c.sim(&["jobs", "add", "--never", "--operation", "vappDeploy"]);
            }
            Trigger::UnitRunning | Trigger::Stage("install") => {
                gate("installer");
                std::fs::write(self.marker("installer"), "gate").unwrap();
            }
            _ => {}
        }
        if self.step == Step::Start && self.fault != Fault::Unhealthy {
            // Tool faults are set during the install and take the start over from there; the
            // others are injected while the cell starts, which waits for them (released to 0s).
            let tool_fault = matches!(
                self.fault,
                Fault::Hang | Fault::Crash | Fault::Garbage | Fault::Password
            );
            self.c.sim(&[
                "set",
                if tool_fault {
                    "startup_delay=1s"
                } else {
                    "startup_delay=10m"
                },
            ]);
        }
    }

    /// Let the held step go on, the fault being in.
    fn release_gates(&mut self) {
        let _ = std::fs::remove_file(self.marker("gate"));
        // A state dir fault or a receiver down shows once the start is over (the next record,
        // the next event). A signal needs no release: the health wait honours it, and a cell
        // coming up at that very moment would race the signal instead of testing it.
        if self.step == Step::Start && matches!(self.fault, Fault::Full | Fault::ReadOnly | Fault::ReceiverDown) {
            self.c.sim(&["set", "startup_delay=0s"]);
        }
    }

    fn inject_before(&mut self) {
        use Fault::*;
        use Step::*;
        match (self.fault, self.step) {
            (Hang | Crash | Garbage | HangSigterm, Preflight | Quiesce | Shutdown) => {
                let op = match self.step {
                    Preflight => "status",
                    Quiesce => "quiesce",
                    _ => "shutdown",
                };
                self.c
                    .sim(&["fault", self.fault.sim_kind(), "--op", op, "--times", "1"]);
            }
            (Hang | Crash | Garbage | HangSigterm, MaintenanceOn) => {
                std::fs::write(self.marker("vcd-cell"), self.fault.hook_kind()).unwrap();
            }
            (Hang | Crash | Garbage, Install) => {
                std::fs::write(self.marker("installer"), self.fault.hook_kind()).unwrap();
            }
            (Password, Preflight) => {
                self.c.sim(&["set", &format!("password={WRONG}")]);
            }
            (Full, Preflight) => {} // `ulimit -f 0` in the launcher
            (ReadOnly, Preflight) => {
                std::fs::create_dir_all(&self.c.state).unwrap();
                self.immutable = Some(Immutable::apply(&self.c.state, self.ro_method).unwrap());
            }
            (ReceiverDown, Preflight) => self.rx.as_mut().unwrap().down(),
            (Noise, _) => {
                let word = match self.step {
                    MaintenanceOn => "maintenance",
                    Quiesce => "--quiesce",
                    Shutdown => "--shutdown",
                    _ => "--status",
                };
                std::fs::write(self.marker("noise"), word).unwrap();
            }
            (Unhealthy, Start) => {
                self.c.sim(&["set", "startup_delay=10m"]);
            }
            other => panic!("no pre-run injection for {other:?}"),
        }
    }

    fn inject_during(&mut self, pid: i32) {
        use Fault::*;
        match self.fault {
            Hang | Crash | Garbage if self.step == Step::Start => {
                self.c
                    .sim(&["fault", self.fault.sim_kind(), "--op", "status", "--times", "1"]);
            }
            Hang | Crash | Garbage => {
                self.c.sim(&["fault", self.fault.sim_kind(), "--op", "status"]);
            }
            Password => {
                self.c.sim(&["set", &format!("password={WRONG}")]);
            }
            Sigterm => {
                nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
            }
            HangSigterm => {
                if self.step == Step::Wait {
                    self.c.sim(&["fault", "hang", "--op", "status"]);
                }
                let until = Instant::now() + Duration::from_secs(30);
                while self.hung.is_none() && Instant::now() < until {
                    self.hung = self.hung_pid();
                    std::thread::sleep(Duration::from_millis(10));
                }
                assert!(self.hung.is_some(), "the tool call never hung");
                nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
            }
            Kill9 => {
                nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
            }
            Full => {
                let st = Command::new("prlimit")
                    .arg("--pid")
                    .arg(pid.to_string())
                    .arg("--fsize=0:unlimited")
                    .status()
                    .unwrap();
                assert!(st.success(), "prlimit failed");
            }
            ReadOnly => self.immutable = Some(Immutable::apply(&self.c.state, self.ro_method).unwrap()),
            ReceiverDown => {
                let rx = self.rx.as_mut().unwrap();
                rx.down();
                self.delivered_before_down = Some(rx.bodies.lock().unwrap().clone());
            }
            Unhealthy => panic!("health is set before the run"),
            // Wait: the next status poll is noisy.
            Noise => std::fs::write(self.marker("noise"), "--status").unwrap(),
        }
        // A fault that needs a journal write while waiting: let the jobs end.
        if self.step == Step::Wait && matches!(self.fault, Full | ReadOnly | ReceiverDown | Noise) {
            self.c.sim(&["jobs", "finish", "--all"]);
        }
        // Tool faults at start/health: hold the start until the cell can come up showing the
        // maintenance message, so that cellctl must ask the tool (and turn it off).
        if self.step == Step::Start && matches!(self.fault, Hang | Crash | Garbage | Password) {
            self.c.sim(&["set", "startup_delay=10m"]);
        }
    }

    /// The start/health tool faults, continued: once the service is starting, the cell comes
    /// up showing the maintenance message.
    fn up_in_maintenance(&mut self, p: &mut Proc) -> Result<(), String> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.c.show();
            if self.trigger_hit(Trigger::Stage("start"), p.pid) && v["service"] == "running" && v["cell"] == "starting"
            {
                break;
            }
            if p.exited() || Instant::now() > until {
                return Err("the service was never seen starting".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        set_sim_state(&self.c, "in_maintenance", Value::Bool(true));
        self.c.sim(&["set", "startup_delay=0s"]);
        Ok(())
    }

    /// tool hang + SIGTERM: the pid of the step's hung tool call (maintenance_on: the hook's
    /// `sleep`, which keeps the pid it wrote; the others: a simulator call with no exit code yet).
    fn hung_pid(&self) -> Option<i32> {
        let words: &[&str] = match self.step {
            Step::MaintenanceOn => {
                let t = std::fs::read_to_string(self.marker("hung")).ok()?;
                return t.trim().parse().ok();
            }
            Step::Quiesce => &["--quiesce", "true"],
            Step::Shutdown => &["--shutdown"],
            _ => &["--status"],
        };
        self.c.invocations().iter().find_map(|r| {
            let argv: Vec<&str> = r["argv"].as_array()?.iter().filter_map(Value::as_str).collect();
            let all = words.iter().all(|w| argv.contains(w));
            (all && r["exit_code"].is_null()).then(|| r["pid"].as_i64().and_then(|p| i32::try_from(p).ok()))?
        })
    }

    fn trigger_hit(&self, trig: Trigger, pid: i32) -> bool {
        let cur = || self.c.current();
        match trig {
            Trigger::Pre => true,
            Trigger::HungCall => self.hung_pid().is_some(),
            Trigger::Lock => {
                std::fs::read_to_string(self.c.state.join("lock")).is_ok_and(|t| t.contains(&format!("\"pid\":{pid}")))
            }
            // In flight: its record is the last one and still `started` (a step that has already
            // ended is not where the fault is aimed).
            Trigger::StepStarted(s) => {
                cur().is_some_and(|j| step_records(&j).last().is_some_and(|(n, x)| n == s && x == "started"))
            }
            Trigger::Waiting => cur().is_some_and(|j| {
                (j["phase"].get("waiting").is_some() || j["phase"] == "waiting") && step_in_flight(&j, Step::Wait)
            }),
            // The start stage is journaled before its first step: wait for that step too.
            Trigger::Stage("start") => {
                cur().is_some_and(|j| j["upgrade"]["stage"] == "start" && step_in_flight(&j, Step::Start))
            }
            Trigger::Stage(s) => cur().is_some_and(|j| j["upgrade"]["stage"] == s),
            Trigger::UnitRunning => std::fs::read_dir(self.c.state.join("units"))
                .is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".pid"))),
        }
    }

    /// Run the command with the fault injected at the step. None when it could not be run.
    fn fault_run(&mut self, trig: Trigger) -> Option<Run> {
        if matches!(trig, Trigger::Pre | Trigger::HungCall) {
            self.inject_before();
        }
        let tool_timeout = match self.fault {
            Fault::Hang => "1s",
            Fault::HangSigterm => "",
            _ => "20s",
        };
        let cmd = self.command(tool_timeout, "60s", &[]);
        let mut cmd = match (self.fault, self.step) {
            // Ignore SIGXFSZ (as a daemon would have to), so a write past the limit fails with EFBIG.
            (Fault::Full, Step::Preflight) => via_sh(&cmd, "trap '' XFSZ; ulimit -S -f 0;"),
            (Fault::Full, _) => via_sh(&cmd, "trap '' XFSZ;"),
            _ => cmd,
        };
        let mut p = Proc::spawn(&mut cmd);
        let mut around = vec![];
        if trig != Trigger::Pre {
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                if self.trigger_hit(trig, p.pid) {
                    break;
                }
                if p.exited() || Instant::now() > until {
                    let r = p.finish(Duration::from_secs(5));
                    let tail = r.map_or_else(|e| e, |r| format!("exit {}: {}", r.code, last_lines(&r.stderr, 3)));
                    self.fail(format!(
                        "the fault could not be injected: {trig:?} not seen before cellctl ended ({tail})"
                    ));
                    self.release_gates();
                    self.immutable = None;
                    return None;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // Whatever cellctl runs now (a tool, the installer) may outlive it: wait for it below.
            around = descendants(p.pid);
            // Record where the run stood when the fault went in, to assert it hit its step.
            self.at_injection = self.c.current();
            self.inject_during(p.pid);
            if self.fault == Fault::Kill9 {
                // Killed: the journal is frozen where the fault hit.
                self.after_injection = self.c.current();
            }
            self.release_gates();
            if self.step == Step::Start
                && matches!(
                    self.fault,
                    Fault::Hang | Fault::Crash | Fault::Garbage | Fault::Password
                )
                && let Err(e) = self.up_in_maintenance(&mut p)
            {
                self.fail(format!("the fault could not be injected: {e}"));
            }
        }
        let r = p.finish(Duration::from_secs(120));
        wait_gone(&around, Duration::from_secs(30));
        // The state dir is writable again for the checks and the recovery.
        self.immutable = None;
        match r {
            Ok(r) => {
                self.printed.push_str(&r.stdout);
                self.printed.push_str(&r.stderr);
                Some(r)
            }
            Err(e) => {
                self.fail(format!("the faulty run: {e}"));
                None
            }
        }
    }

    fn check_fault_run(&mut self, run: &Run) {
        let exp = self.exp;
        let doc = if exp.report == Rp::Killed {
            self.shown = "-9".into();
            self.check(run.code == 137, || {
                format!("expected to be killed (137), got exit {}", run.code)
            });
            None
        } else {
            let want = exp.code.expect("a code");
            self.shown = format!("{want}{}", if exp.report == Rp::StdoutOnly { "*" } else { "" });
            self.check(run.code == want, || {
                format!(
                    "exit code {} (documented: {want}); stderr: {}",
                    run.code,
                    last_lines(&run.stderr, 4)
                )
            });
            match stdout_doc(run) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.fail(format!("report on stdout: {e}"));
                    None
                }
            }
        };
        if let Some(doc) = &doc {
            self.check(doc["exit_code"] == run.code, || {
                format!(
                    "the report's exit_code {} is not the exit code {}",
                    doc["exit_code"], run.code
                )
            });
            self.check(doc["command"] == self.cmd.name(), || {
                format!("the report's command is {}", doc["command"])
            });
            self.check_saved_report(doc, exp.report == Rp::Saved);
            if self.fault == Fault::ReceiverDown {
                let queued = doc["delivery"]["queued"].as_u64().unwrap_or(0);
                self.check(queued >= 1, || {
                    format!("receiver down, but the report's delivery says {}", doc["delivery"])
                });
                let outbox = std::fs::read_dir(self.c.state.join("outbox")).map_or(0, std::iter::Iterator::count);
                self.check(outbox >= 1, || "receiver down, but the outbox is empty".into());
            }
            if matches!(self.fault, Fault::Full | Fault::ReadOnly) {
                self.check(doc["error"]["kind"] == "state", || {
                    format!("the report's error is {} (state dir unusable)", doc["error"])
                });
            }
            if matches!(self.fault, Fault::Sigterm | Fault::HangSigterm) {
                self.check(
                    doc["outcome"] == "interrupted" && doc["error"]["kind"] == "terminated",
                    || format!("SIGTERM: outcome {} error {}", doc["outcome"], doc["error"]),
                );
            }
            self.check_named_step(doc);
        }
        self.check_hit_step(doc.as_ref());
        self.check_fault_consumed();
        self.check_signal_specifics();
        if self.fault == Fault::Noise {
            self.check_bounded(run, doc.as_ref());
        }
        self.check_cell(doc.as_ref(), Some(exp.left), exp.journal, "after the fault");
    }

    /// A failing tool call is named in the error, and its step is recorded as failed: the fault
    /// hit the step it was aimed at.
    fn check_named_step(&mut self, doc: &Value) {
        use Step::*;
        if !matches!(
            self.fault,
            Fault::Hang | Fault::Crash | Fault::Garbage | Fault::Password
        ) || self.exp.code == Some(0)
            || self.step == Start
        {
            return;
        }
        let (call, step) = match self.step {
            Preflight => ("--status", None),
            Wait => ("--status", Some("wait")),
            Quiesce => ("--quiesce true", Some("quiesce")),
            Shutdown => ("--shutdown", Some("shutdown")),
            MaintenanceOn => ("vmware-vcd-cell maintenance", Some("maintenance_on")),
            Install => ("installer", Some("install")),
            // No tool fault is aimed at these (not applicable, or checked above).
            StopService | Start => unreachable!(),
        };
        let msg = doc["error"]["message"].as_str().unwrap_or("");
        self.check(msg.contains(call), || {
            format!("the error does not name `{call}`: {msg}")
        });
        if let Some(step) = step {
            self.check(
                step_records(doc).iter().any(|(s, x)| s == step && x == "failed"),
                || format!("the report has no failed `{step}` step: {:?}", step_records(doc)),
            );
        }
    }

    /// SIGTERM, kill -9, full, read-only and receiver down, injected mid-run: the fault hit the
    /// step it was aimed at (its record the last one, still `started`), not the one after.
    fn check_hit_step(&mut self, doc: Option<&Value>) {
        use Fault::*;
        if !matches!(
            self.fault,
            Sigterm | HangSigterm | Kill9 | Full | ReadOnly | ReceiverDown
        ) || trigger(self.fault, self.step) == Trigger::Pre
        {
            return;
        }
        let (step, cmd) = (self.step, self.cmd);
        let in_flight = |j: &Option<Value>| j.as_ref().is_some_and(|j| step_in_flight(j, step));
        let shown = |j: &Option<Value>| j.as_ref().map_or_else(|| "no journal".to_string(), brief);
        if self.step == Step::Preflight {
            // Injected once cellctl holds the lock: nothing may have been journaled yet.
            let j = self.at_injection.clone();
            self.check(j.as_ref().is_none_or(|j| step_records(j).is_empty()), || {
                format!("the fault was aimed at preflight, but the run had begun: {}", shown(&j))
            });
            return;
        }
        let at = self.at_injection.clone();
        self.check(in_flight(&at), || {
            format!(
                "the fault was injected while {}, not during {}",
                shown(&at),
                step.name()
            )
        });
        match self.fault {
            Kill9 => {
                let after = self.after_injection.clone();
                self.check(in_flight(&after), || {
                    format!(
                        "killed during {}, but the journal then said {}",
                        step.name(),
                        shown(&after)
                    )
                });
            }
            // The state dir took no record after the fault: the one it holds is where it hit.
            Full | ReadOnly => {
                let now = self.c.current();
                self.check(in_flight(&now), || {
                    format!(
                        "the state dir failed during {}, but its last record is {}",
                        step.name(),
                        shown(&now)
                    )
                });
            }
            Sigterm | HangSigterm => {
                if let Some(doc) = doc {
                    let later = began_after(doc, cmd, step);
                    self.check(later.is_none(), || {
                        format!(
                            "SIGTERM during {}, but the run went on to {later:?}: {}",
                            step.name(),
                            brief(doc)
                        )
                    });
                }
            }
            ReceiverDown => {
                // What the receiver took before it went down says how far the run was.
                let bodies = self.delivered_before_down.clone().unwrap_or_default();
                let names = journal_steps(step);
                let past: Vec<String> = bodies
                    .iter()
                    .filter_map(|b| serde_json::from_str::<Value>(b).ok())
                    .filter(|e| e["event"] == "step")
                    .filter(|e| {
                        let name = e["step"].as_str().unwrap_or("");
                        (names.contains(&name) && e["status"] != "started") || later_steps(cmd, step).contains(&name)
                    })
                    .map(|e| format!("{}:{}", e["step"], e["status"]))
                    .collect();
                self.check(past.is_empty(), || {
                    format!(
                        "the receiver went down after {} (it had taken the events {past:?})",
                        step.name()
                    )
                });
            }
            _ => {}
        }
    }

    /// One-shot faults and hooks are used up: the fault did happen.
    fn check_fault_consumed(&mut self) {
        let pending = self.c.show()["faults"].clone();
        let persistent = self.step == Step::Wait || self.fault == Fault::Password;
        if !persistent {
            self.check(pending.as_array().is_none_or(std::vec::Vec::is_empty), || {
                format!("the injected fault was never hit: still pending {pending}")
            });
        }
        // (The "gate" markers only hold a step; a run killed early may leave them.)
        if matches!(
            self.fault,
            Fault::Hang | Fault::Crash | Fault::Garbage | Fault::HangSigterm
        ) {
            for m in ["vcd-cell", "installer"] {
                let left = std::fs::read_to_string(self.marker(m)).ok();
                self.check(left.is_none(), || {
                    format!("the {m} hook was never reached (marker {left:?} left)")
                });
            }
        }
    }

    /// huge tool output: the noise was printed (the hook used up), and nothing cellctl printed
    /// or saved carries it whole.
    fn check_bounded(&mut self, run: &Run, doc: Option<&Value>) {
        const BOUND: usize = 1 << 20;
        let left = std::fs::read_to_string(self.marker("noise")).ok();
        self.check(left.is_none(), || {
            format!("the noisy call never came (marker {left:?} left)")
        });
        let printed = run.stdout.len() + run.stderr.len();
        self.check(printed < BOUND, || {
            format!("cellctl printed {printed} bytes after 24 MB of tool output")
        });
        let saved = doc
            .and_then(|d| d["report_id"].as_str())
            .and_then(|id| std::fs::metadata(self.c.state.join("reports").join(format!("{id}.json"))).ok())
            .map_or(0, |m| m.len());
        self.check(saved < BOUND as u64, || format!("the saved report is {saved} bytes"));
    }

    /// What the signal cells promise beyond the common checks: the hung tool call does not
    /// outlive the run; an abandoned shutdown is kept where a rerun picks it up; an upgrade
    /// stopped at stop_service has begun nothing of the install.
    fn check_signal_specifics(&mut self) {
        let j = self.c.current();
        if self.fault == Fault::HangSigterm {
            match self.hung {
                Some(pid) => {
                    let until = Instant::now() + Duration::from_secs(10);
                    while alive(pid) && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    self.check(!alive(pid), || {
                        format!("the hung tool call (pid {pid}) outlived the run")
                    });
                }
                None => self.fail("no hung tool call was seen"),
            }
            if self.step == Step::Shutdown {
                let phase = j.as_ref().map(|j| j["phase"].clone()).unwrap_or_default();
                self.check(phase == "shutting_down" || phase.get("shutting_down").is_some(), || {
                    format!("the abandoned shutdown is kept in phase {phase}, not shutting_down")
                });
            }
        }
        if self.fault == Fault::Sigterm && self.step == Step::StopService && self.cmd == Cmd::Upgrade {
            let ok = j
                .as_ref()
                .is_some_and(|j| j["upgrade"]["stage"] == "install" && !began(j, "install"));
            self.check(ok, || {
                format!(
                    "SIGTERM at stop_service: the kept upgrade should stand at stage install with nothing of it begun: {}",
                    j.as_ref().map_or_else(|| "no journal".to_string(), brief)
                )
            });
        }
    }

    /// The saved report: present (unless the state dir is the fault) and the same document.
    fn check_saved_report(&mut self, doc: &Value, must: bool) {
        let Some(id) = doc["report_id"].as_str() else {
            self.fail("the report has no report_id");
            return;
        };
        let path = self.c.state.join("reports").join(format!("{id}.json"));
        match std::fs::read_to_string(&path) {
            Ok(t) => match serde_json::from_str::<Value>(&t) {
                Ok(saved) => {
                    for k in ["outcome", "exit_code", "cell_left", "run_id", "error"] {
                        self.check(saved[k] == doc[k], || {
                            format!("saved report {k} = {} but printed {}", saved[k], doc[k])
                        });
                    }
                }
                Err(e) => self.fail(format!("saved report {} is not JSON: {e}", path.display())),
            },
            Err(_) if !must => {}
            Err(e) => self.fail(format!("no saved report {}: {e}", path.display())),
        }
    }

    /// The cell as `cellsim show` sees it, against the journal and the report.
    fn check_cell(&mut self, doc: Option<&Value>, left: Option<&str>, journal: Jr, when: &str) {
        let s = Seen::of(&self.c);
        let j = self.c.current();
        let final_state = match self.cmd {
            Cmd::Drain => s.stopped(),
            Cmd::Upgrade => s.upgraded(),
        };
        match (journal, &j) {
            (Jr::Absent, Some(j)) => self.fail(format!(
                "{when}: current.json still holds run {} (phase {}, stage {})",
                j["run_id"], j["phase"], j["upgrade"]["stage"]
            )),
            (Jr::Kept | Jr::Stale, None) => self.fail(format!("{when}: no current.json, but the run should be kept")),
            _ => {}
        }
        match &j {
            Some(j) => {
                // Every change the cell shows is held by the record (so `resume`/a rerun can act on it).
                if s.up() && (j["upgrade"]["stage"].is_null() || j["upgrade"]["stage"] == "drain") {
                    self.check(!s.maint || holds(j, "maintenance_on", "undo_maintenance"), || {
                        format!(
                            "{when}: maintenance is on, but the journal holds no maintenance change: {}",
                            brief(j)
                        )
                    });
                    self.check(!s.quiesced || holds(j, "quiesce", "undo_quiesce"), || {
                        format!(
                            "{when}: the cell is quiesced, but the journal holds no quiesce: {}",
                            brief(j)
                        )
                    });
                }
                if !s.up() && !s.starting() {
                    let recorded = began(j, "shutdown")
                        || began(j, "stop_service")
                        || j["upgrade"]["stage"].as_str().is_some_and(|st| st != "drain");
                    self.check(recorded, || {
                        format!(
                            "{when}: the cell is {}/{}, but the journal has no shutdown: {}",
                            s.service,
                            s.cell,
                            brief(j)
                        )
                    });
                }
                if s.version != OLD {
                    self.check(began(j, "install"), || {
                        format!(
                            "{when}: version {} installed, but the journal has no install: {}",
                            s.version,
                            brief(j)
                        )
                    });
                }
                // And, when the journal could be written, every change it holds as done is real
                // (while the drain's changes can still be live: a started cell is fresh).
                let drain_stage = j["upgrade"]["stage"].is_null() || j["upgrade"]["stage"] == "drain";
                if journal == Jr::Kept && s.up() && drain_stage {
                    self.check(!done_held(j, "maintenance_on", "undo_maintenance") || s.maint, || {
                        format!(
                            "{when}: the journal says maintenance is on, the cell says off: {}",
                            brief(j)
                        )
                    });
                    self.check(!done_held(j, "quiesce", "undo_quiesce") || s.quiesced, || {
                        format!("{when}: the journal says quiesced, the cell is not: {}", brief(j))
                    });
                }
                self.check_install_and_start(j, &s, journal, when);
            }
            None => self.check(s.unchanged() || final_state, || {
                format!("{when}: no recorded run, but the cell is neither as found nor finished: {s:?}")
            }),
        }
        let Some(doc) = doc else { return };
        if left.is_none() && doc["cell_left"].is_null() {
            // `resume` with nothing to do says nothing about the cell.
            return;
        }
        let got = doc["cell_left"].as_str().unwrap_or("(none)").to_string();
        if let Some(want) = left {
            self.check(got == want, || {
                format!("{when}: cell_left is {got}, documented: {want}")
            });
        }
        let real = match got.as_str() {
            "unchanged" => s.unchanged(),
            "shut_down" => s.stopped(),
            "running" => s.upgraded(),
            "changed" => !s.unchanged() && j.is_some(),
            "drained" => s.up() && s.quiesced,
            _ => false,
        };
        self.check(real, || {
            format!("{when}: the report says cell_left {got}, the cell is {s:?}")
        });
        if let Some(p) = doc["journal"].as_str() {
            if p.ends_with("current.json") {
                self.check(j.is_some(), || format!("{when}: the report names {p}, which is gone"));
            } else {
                self.check(Path::new(p).exists(), || {
                    format!("{when}: the report names journal {p}, which does not exist")
                });
                self.check(j.is_none(), || {
                    format!("{when}: the report says the run is archived ({p}), but current.json holds it")
                });
            }
        } else {
            self.check(journal != Jr::Kept, || {
                format!("{when}: the report does not say where the kept journal is")
            });
        }
        let msg = doc["error"]["message"].as_str().unwrap_or("");
        self.check(!msg.contains("changes were undone") || got == "unchanged", || {
            format!("{when}: the error says \"{msg}\" but cell_left is {got} ({s:?})")
        });
    }

    /// The install and start stages against the cell. An install is never undone, so even a
    /// stale record (the state dir failed later) is never wrong about it; the service's state
    /// can change after a stale record's last write, so that is checked on a kept journal only.
    fn check_install_and_start(&mut self, j: &Value, s: &Seen, journal: Jr, when: &str) {
        let stage = j["upgrade"]["stage"].as_str().unwrap_or("").to_string();
        let status = |name: &str| {
            step_records(j)
                .into_iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, x)| x)
        };
        let installed = status("install").as_deref() == Some("done") || stage == "start";
        self.check(!installed || s.version == NEW, || {
            format!(
                "{when}: the journal says installed, the cell has version {}: {}",
                s.version,
                brief(j)
            )
        });
        if journal != Jr::Kept {
            return;
        }
        let started = status("start_service");
        if stage == "install" || (status("stop_service").as_deref() == Some("done") && started.is_none()) {
            self.check(s.service == "stopped", || {
                format!(
                    "{when}: the journal says the service is stopped, the cell says {s:?}: {}",
                    brief(j)
                )
            });
        }
        if stage == "start" && started.as_deref() == Some("done") {
            self.check(s.service == "running", || {
                format!(
                    "{when}: the journal says the service was started, the cell says {s:?}: {}",
                    brief(j)
                )
            });
        }
    }

    fn clear_fault(&mut self) {
        self.immutable = None;
        let _ = std::fs::remove_file(self.marker("gate"));
        self.c.sim(&["fault", "clear"]);
        self.c
            .sim(&["set", &format!("password={PASSWORD}"), "latency=0s", "startup_delay=0s"]);
        self.c.sim(&["jobs", "finish", "--all"]);
        let _ = std::fs::remove_file(self.marker("vcd-cell"));
        let _ = std::fs::remove_file(self.marker("installer"));
        if let Some(rx) = self.rx.as_mut() {
            rx.up();
        }
    }

    fn recover(&mut self, journal_run_id: Option<String>) {
        let rec = self.exp.recovery;
        let cmd = match rec {
            // No job is left running: a drain that does not end within 20s will not end.
            Recovery::Rerun => self.command("20s", "20s", &[]),
            Recovery::RetryInstall => self.command("20s", "20s", &["--retry-install"]),
            Recovery::Resume | Recovery::NothingLeft => {
                let mut c = self.c.cellctl();
                c.args(["--json", "--tool-timeout", "20s", "resume"]);
                c
            }
        };
        let what = format!("recovery ({rec:?})");
        let run = self.run_cmd(&what, cmd);
        self.check(run.code == 0, || {
            format!(
                "{what}: exit {} (want 0); stderr: {}",
                run.code,
                last_lines(&run.stderr, 4)
            )
        });
        let doc = match stdout_doc(&run) {
            Ok(d) => d,
            Err(e) => {
                self.fail(format!("{what}: report on stdout: {e}"));
                return;
            }
        };
        self.check_saved_report(&doc, true);
        let (outcome, left) = match (rec, self.cmd) {
            (Recovery::Resume, _) => ("resumed", Some("unchanged")),
            (Recovery::NothingLeft, _) => ("nothing_to_do", None),
            (_, Cmd::Drain) => ("shut_down", Some("shut_down")),
            (_, Cmd::Upgrade) => ("upgraded", Some("running")),
        };
        self.check(doc["outcome"] == outcome, || {
            format!("{what}: outcome {} (want {outcome})", doc["outcome"])
        });
        if let (Recovery::Rerun | Recovery::RetryInstall | Recovery::Resume, Some(id)) = (rec, &journal_run_id) {
            self.check(doc["run_id"] == id.as_str(), || {
                format!(
                    "{what}: run {} instead of continuing the recorded run {id}",
                    doc["run_id"]
                )
            });
        }
        self.check_cell(Some(&doc), left, Jr::Absent, &what);
        let s = Seen::of(&self.c);
        let clean = match (rec, self.cmd) {
            (Recovery::Resume, _) => s.unchanged(),
            (_, Cmd::Drain) => s.stopped(),
            (_, Cmd::Upgrade) => s.upgraded(),
        };
        self.check(clean, || format!("{what}: the cell is not clean: {s:?}"));
        if clean && rec != Recovery::Resume {
            self.check_procedure(&what);
        }
        if self.fault == Fault::ReceiverDown {
            let mut flush = self.c.cellctl();
            flush.args(["--json", "report", "flush"]);
            let f = self.run_cmd("report flush", flush);
            self.check(f.code == 0, || {
                format!(
                    "report flush with the receiver back: exit {}: {}",
                    f.code,
                    last_lines(&f.stderr, 3)
                )
            });
            let left = std::fs::read_dir(self.c.state.join("outbox")).map_or(0, std::iter::Iterator::count);
            self.check(left == 0, || {
                format!("{left} deliveries still in the outbox after the flush")
            });
            let got = self.rx.as_ref().unwrap().reports();
            self.check(got >= 1, || "the receiver never got a report".into());
        }
    }

    /// The cell went down the documented way: its last successful `--shutdown` came after a
    /// successful `vmware-vcd-cell maintenance` and `--quiesce true`, neither undone in between
    /// (from the simulator's invocation log, in order).
    fn check_procedure(&mut self, when: &str) {
        let inv = self.c.invocations();
        let ok = |i: &Value| i["exit_code"] == 0;
        let has = |i: &Value, words: &[&str]| {
            let argv: Vec<&str> = i["argv"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            words.iter().all(|w| argv.contains(w))
        };
        let Some(down) = inv.iter().rposition(|i| ok(i) && has(i, &["--shutdown"])) else {
            self.fail(format!("{when}: the cell is down, but no `cell --shutdown` succeeded"));
            return;
        };
        let before = &inv[..down];
        let last = |pred: &dyn Fn(&Value) -> bool| before.iter().rposition(|i| ok(i) && pred(i));
        let on = last(&|i| i["tool"] == "vmware-vcd-cell" && has(i, &["maintenance"]));
        let off = last(&|i| has(i, &["--maintenance", "false"]));
        let quiesced = last(&|i| has(i, &["--quiesce", "true"]));
        let unquiesced = last(&|i| has(i, &["--quiesce", "false"]));
        let held = |made: Option<usize>, undone: Option<usize>| made.is_some_and(|m| undone.is_none_or(|u| u < m));
        self.check(held(on, off), || {
            format!("{when}: the cell was shut down without the maintenance message on (on at {on:?}, off at {off:?} of {down} calls before)")
        });
        self.check(held(quiesced, unquiesced), || {
            format!("{when}: the cell was shut down without being quiesced (quiesce at {quiesced:?}, undone at {unquiesced:?})")
        });
    }

    fn check_no_leak(&mut self) {
        let mut secrets = password_forms();
        if self.rx.is_some() {
            secrets.push(SECRET.to_string());
        }
        let state = self.c.state_files_text();
        let bodies = self
            .rx
            .as_ref()
            .map(|r| r.bodies.lock().unwrap().join("\n"))
            .unwrap_or_default();
        for secret in &secrets {
            let what = if secret == SECRET { "webhook secret" } else { "password" };
            self.check(!self.printed.contains(secret), || {
                format!("the {what} ({secret}) appears on stdout/stderr")
            });
            self.check(!state.contains(secret), || {
                format!("the {what} ({secret}) appears in the state dir")
            });
            self.check(!bodies.contains(secret), || {
                format!("the {what} ({secret}) appears in a webhook body")
            });
        }
        // The simulator compares with the password it has now, which a password cell changed:
        // the tools' own guard compared every call with the real one.
        let leaks = std::fs::read_to_string(self.marker("leaks")).unwrap_or_default();
        self.check(leaks.is_empty(), || {
            format!("a tool call got the real password in argv/env: {leaks}")
        });
        for i in self.c.invocations() {
            let argv = i["argv"].to_string();
            self.check(
                i["password_in_argv"] == false && i["password_in_env"] == false && !argv.contains(PASSWORD),
                || format!("a tool call got the password in argv/env: {i}"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cell's real state and the journal
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
#[allow(dead_code)] // the fields are read through Debug in messages
struct Seen {
    service: String,
    cell: String,
    quiesced: bool,
    maint: bool,
    version: String,
    healthy: bool,
}

impl Seen {
    fn of(c: &Cell) -> Seen {
        let v = c.show();
        let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
        Seen {
            service: s("service"),
            cell: s("cell"),
            quiesced: v["quiesced"] == true,
            maint: v["in_maintenance"] == true,
            version: s("version"),
            healthy: v["healthy"] == true,
        }
    }
    fn up(&self) -> bool {
        self.service == "running" && self.cell == "up"
    }
    fn starting(&self) -> bool {
        self.service == "running" && self.cell == "starting"
    }
    fn unchanged(&self) -> bool {
        self.up() && !self.quiesced && !self.maint && self.version == OLD
    }
    fn stopped(&self) -> bool {
        self.service == "stopped" && self.cell == "down"
    }
    fn upgraded(&self) -> bool {
        self.up() && self.healthy && !self.maint && self.version == NEW
    }
}

fn step_records(j: &Value) -> Vec<(String, String)> {
    j["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["step"].as_str().unwrap_or("").to_string(),
                        s["status"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// As `RunRecord::holds_change`: made (started or done) and not undone since.
fn holds(j: &Value, made: &str, undo: &str) -> bool {
    let st = step_records(j);
    let m = st
        .iter()
        .rposition(|(s, x)| s == made && (x == "started" || x == "done"));
    let u = st.iter().rposition(|(s, x)| s == undo && x == "done");
    match (m, u) {
        (Some(m), Some(u)) => u < m,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Made and recorded done (not merely started), not undone since.
fn done_held(j: &Value, made: &str, undo: &str) -> bool {
    let st = step_records(j);
    let last = st.iter().rposition(|(s, _)| s == made);
    let u = st
        .iter()
        .rposition(|(s, x)| s == undo && (x == "done" || x == "started"));
    match last {
        Some(m) if st[m].1 == "done" => u.is_none_or(|u| u < m),
        _ => false,
    }
}

/// The journal's records for a step of the matrix (a fault "at" it hits one of them in flight).
fn journal_steps(step: Step) -> &'static [&'static str] {
    match step {
        Step::Preflight => &[],
        Step::MaintenanceOn => &["maintenance_on"],
        Step::Quiesce => &["quiesce"],
        Step::Wait => &["wait"],
        Step::Shutdown => &["shutdown"],
        Step::StopService => &["stop_service"],
        Step::Install => &["install"],
        Step::Start => &["start_service", "health"],
    }
}

/// The journal's records of the matrix steps after `step` (the undo steps are not among them).
fn later_steps(cmd: Cmd, step: Step) -> Vec<&'static str> {
    let steps = cmd.steps();
    let i = steps.iter().position(|s| *s == step).expect("a step of the command");
    let mut names: Vec<&str> = steps[i + 1..]
        .iter()
        // A shutdown once begun is finished, its service stop included: not a step after it.
        .filter(|s| !(step == Step::Shutdown && **s == Step::StopService))
        .flat_map(|s| journal_steps(*s).iter().copied())
        .collect();
    if step < Step::Shutdown && steps.contains(&Step::Shutdown) {
        names.push("stop_service");
    }
    names
}

/// The step's record is the journal's last one, still `started` (start/health: or between
/// its two records, the service started and the health wait not yet recorded).
fn step_in_flight(j: &Value, step: Step) -> bool {
    step_records(j).last().is_some_and(|(n, x)| {
        journal_steps(step).contains(&n.as_str())
            && (x == "started" || (step == Step::Start && n == "start_service" && x == "done"))
    })
}

/// The first matrix step after `step` that the record shows begun.
fn began_after(j: &Value, cmd: Cmd, step: Step) -> Option<String> {
    let later = later_steps(cmd, step);
    step_records(j)
        .into_iter()
        .find(|(n, _)| later.contains(&n.as_str()))
        .map(|(n, x)| format!("{n}:{x}"))
}

fn began(j: &Value, step: &str) -> bool {
    step_records(j)
        .iter()
        .any(|(s, x)| s == step && (x == "started" || x == "done"))
}

fn brief(j: &Value) -> String {
    let steps: Vec<String> = step_records(j).iter().map(|(s, x)| format!("{s}:{x}")).collect();
    format!(
        "phase {} stage {} steps [{}]",
        j["phase"],
        j["upgrade"]["stage"],
        steps.join(", ")
    )
}

fn stdout_doc(run: &Run) -> Result<Value, String> {
    let mut it = serde_json::Deserializer::from_str(&run.stdout).into_iter::<Value>();
    let doc = it
        .next()
        .ok_or_else(|| format!("no JSON document (stderr: {})", last_lines(&run.stderr, 3)))?
        .map_err(|e| format!("bad JSON ({e}): {}", run.stdout))?;
    if it.next().is_some() {
        return Err(format!("more than one JSON document: {}", run.stdout));
    }
    Ok(doc)
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A spawned cellctl whose output is collected by a thread; killed if dropped unfinished.
struct Proc {
    pid: i32,
    rx: mpsc::Receiver<Run>,
    done: Option<Run>,
    finished: bool,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cellctl");
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(wait_child(child));
        });
        Proc {
            pid,
            rx,
            done: None,
            finished: false,
        }
    }

    fn exited(&mut self) -> bool {
        if self.done.is_none()
            && let Ok(r) = self.rx.try_recv()
        {
            self.done = Some(r);
        }
        self.done.is_some()
    }

    fn finish(mut self, limit: Duration) -> Result<Run, String> {
        self.finished = true;
        if let Some(r) = self.done.take() {
            return Ok(r);
        }
        if let Ok(r) = self.rx.recv_timeout(limit) {
            Ok(r)
        } else {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            let r = self.rx.recv_timeout(Duration::from_secs(10));
            Err(format!(
                "cellctl did not end within {limit:?} (killed); stderr: {}",
                r.map(|r| last_lines(&r.stderr, 4)).unwrap_or_default()
            ))
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.finished && !self.exited() {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

/// The same command through `sh -c 'PREFIX exec "$0" "$@"'` (the pid stays cellctl's).
fn via_sh(cmd: &Command, prefix: &str) -> Command {
    let mut w = Command::new("/bin/sh");
    w.arg("-c")
        .arg(format!("{prefix} exec \"$0\" \"$@\""))
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    w
}

fn parent_of(pid: i32) -> Option<(i32, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    let state = it.next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((ppid, state == "Z"))
}

/// Every live descendant of `pid`.
fn descendants(pid: i32) -> Vec<i32> {
    let all: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
                .filter_map(|p| parent_of(p).map(|(pp, _)| (p, pp)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![];
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for &(c, pp) in &all {
            if pp == p && !out.contains(&c) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// A process that exists and is not a zombie (as in tests/hardening.rs).
fn alive(pid: i32) -> bool {
    parent_of(pid).is_some_and(|(_, zombie)| !zombie)
}

fn wait_gone(pids: &[i32], limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if pids.iter().all(|&p| parent_of(p).is_none_or(|(_, zombie)| zombie)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Set one field of the simulated cell's state, under the simulator's lock (its state file is
/// replaced atomically). Used for what `cellsim set` cannot do: a cell that comes up showing the
/// maintenance message (cellsim starts cells fresh; cellctl turns the message off after start).
fn set_sim_state(c: &Cell, key: &str, value: Value) {
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(c.dir.join("sim/lock"))
        .unwrap();
    lock.lock().unwrap();
    let path = c.dir.join("sim/state.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(state.get(key).is_some(), "cellsim state has no {key}");
    state[key] = value;
    let tmp = c.dir.join("sim/state.json.fault-matrix");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    drop(lock);
}

fn write_executable(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The cell's tools run outside cellctl in real life (they would not share its file-size limit):
/// each `#!/bin/sh` wrapper lifts the soft limit it inherits from cellctl.
fn lift_fsize_limit_in_tools(bin: &Path) {
    for e in std::fs::read_dir(bin).unwrap().flatten() {
        let p = e.path();
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        if let Some(rest) = text.strip_prefix("#!/bin/sh\n") {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            write_executable(
                &p,
                &format!("#!/bin/sh\nulimit -S -f unlimited 2>/dev/null\n{rest}"),
                mode,
            );
        }
    }
}

/// A tool call whose argv holds the word in `gate` waits while that file exists: the harness
/// holds a step in flight until its fault is injected.
fn gate_tool(tool: &Path, gate: &Path) {
    let text = std::fs::read_to_string(tool).unwrap();
    let rest = text.strip_prefix("#!/bin/sh\n").expect("a shell wrapper");
    let mode = std::fs::metadata(tool).unwrap().permissions().mode();
    write_executable(
        tool,
        &format!(
            "#!/bin/sh\ng='{}'\nif [ -f \"$g\" ]; then w=$(cat \"$g\"); case \" $* \" in *\" $w \"*) while [ -f \"$g\" ]; do sleep 0.02; done ;; esac; fi\n{rest}",
            gate.display()
        ),
        mode,
    );
}

/// A tool call whose argv holds the word in `marker` (one-shot: the marker is removed) first
/// prints 12 MB on each of stdout and stderr, random bytes then long text lines, before the
/// real tool gives its normal answer.
fn noise_tool(tool: &Path, marker: &Path) {
    let text = std::fs::read_to_string(tool).unwrap();
    let rest = text.strip_prefix("#!/bin/sh\n").expect("a shell wrapper");
    let mode = std::fs::metadata(tool).unwrap().permissions().mode();
    let line = "DEBUG com.vmware.vcloud.noise 0123456789abcdefghijklmnopqrstuvwxyz ".repeat(40);
    write_executable(
        tool,
        &format!(
            "#!/bin/sh\nn='{}'\nif [ -f \"$n\" ]; then w=$(cat \"$n\"); case \" $* \" in *\" $w \"*) rm -f \"$n\"\n\
             for fd in 1 2; do {{ head -c 6000000 /dev/urandom; yes '{line}' | head -c 6000000; echo; }} >&$fd; done ;; esac; fi\n{rest}",
            marker.display()
        ),
        mode,
    );
}

/// With the cell's password changed (password cells), the simulator's own leak check compares
/// with the wrong one: each `#!/bin/sh` tool wrapper checks its argv and environment for the
/// real password (both forms) and notes a hit in `leaks`.
fn guard_tools_against_password(bin: &Path, leaks: &Path) {
    let forms = password_forms();
    let patterns = forms.iter().map(|f| format!("-e '{f}'")).collect::<Vec<_>>().join(" ");
    let guard = format!(
        "if env | grep -qF {patterns} || printf '%s\\n' \"$@\" | grep -qF {patterns}; then echo \"$0\" >> '{}'; fi\n",
        leaks.display()
    );
    for e in std::fs::read_dir(bin).unwrap().flatten() {
        let p = e.path();
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        if let Some(rest) = text.strip_prefix("#!/bin/sh\n") {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            write_executable(&p, &format!("#!/bin/sh\n{guard}{rest}"), mode);
        }
    }
}

/// The state dir and its subdirectories but `units/` (the transient unit's own files) made
/// read-only; undone on drop, so no temp dir is left undeletable.
struct Immutable {
    dirs: Vec<PathBuf>,
    method: RoMethod,
    /// Bind mounts made (innermost last), unmounted on drop.
    mounts: Vec<PathBuf>,
}

/// Run a set-up command; its stderr is the error.
fn run_checked(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Immutable {
    fn apply(state: &Path, method: RoMethod) -> Result<Immutable, String> {
        let mut dirs = vec![state.to_path_buf()];
        if let Ok(rd) = std::fs::read_dir(state) {
            for e in rd.flatten() {
                if e.path().is_dir() && e.file_name() != "units" {
                    dirs.push(e.path());
                }
            }
        }
        let mut guard = Immutable {
            dirs,
            method,
            mounts: vec![],
        };
        let ok = match method {
            RoMethod::Chattr => Command::new("chattr")
                .arg("+i")
                .args(&guard.dirs)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            RoMethod::Chmod => guard
                .dirs
                .iter()
                .all(|d| std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).is_ok()),
            RoMethod::BindReadOnly => {
                return guard
                    .bind_read_only(state)
                    .map(|()| guard)
                    .map_err(|e| format!("a read-only bind mount failed (needs CAP_SYS_ADMIN): {e}"));
            }
        };
        if ok {
            Ok(guard)
        } else {
            Err(match method {
                RoMethod::Chattr => {
                    "`chattr +i` failed (needs e2fsprogs, CAP_LINUX_IMMUTABLE and a file system with the immutable attribute)".into()
                }
                RoMethod::Chmod => "chmod a-w failed".into(),
                RoMethod::BindReadOnly => unreachable!("returned above"),
            })
        }
    }

    /// The fallback where `chattr` cannot be used (tmpfs on older kernels, no e2fsprogs): the
    /// state dir bound on itself and remounted read-only (EROFS on every write there), with
    /// `units/` first bound on itself so that it stays writable inside the read-only tree.
    fn bind_read_only(&mut self, state: &Path) -> Result<(), String> {
        let units = state.join("units");
        if units.is_dir() {
            run_checked("mount", &["--bind".as_ref(), units.as_os_str(), units.as_os_str()])?;
            self.mounts.push(units);
        }
        // --rbind carries the writable units/ mount into the new tree; the remount below
        // changes only the top mount.
        run_checked("mount", &["--rbind".as_ref(), state.as_os_str(), state.as_os_str()])?;
        self.mounts.push(state.to_path_buf());
        // The remount is refused (EBUSY) while a file is open for writing through the new
        // mount: cellctl may be writing its record at that instant. Its step is held in flight,
        // so trying again until that write is over still hits it.
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match run_checked("mount", &["-o".as_ref(), "remount,bind,ro".as_ref(), state.as_os_str()]) {
                Err(e) if e.contains("busy") && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                done => return done,
            }
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        match self.method {
            RoMethod::Chattr => {
                let _ = Command::new("chattr")
                    .arg("-i")
                    .args(&self.dirs)
                    .stderr(Stdio::null())
                    .status();
            }
            RoMethod::Chmod => {
                for d in &self.dirs {
                    let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
                }
            }
            RoMethod::BindReadOnly => {
                // The state dir's tree first (with the units/ mount it carries), then units/.
                // Lazily: a simulated unit still running there must not keep the mount alive.
                while let Some(m) = self.mounts.pop() {
                    let _ = run_checked("umount", &["-R".as_ref(), "-l".as_ref(), m.as_os_str()]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A webhook receiver that can go down and come back on the same port
// ---------------------------------------------------------------------------------------------

struct Receiver {
    port: u16,
    /// Holds the port while the receiver is down, so it comes back on it (connections are
    /// refused meanwhile, and no other process gets the port).
    _hold: PortHold,
    bodies: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16) -> Receiver {
        let hold = PortHold::new(port);
        let mut r = Receiver {
            port: hold.port,
            _hold: hold,
            bodies: Arc::default(),
            stop: Arc::default(),
            thread: None,
        };
        r.listen();
        r
    }

    fn listen(&mut self) {
        // The port is held (`_hold`), so nothing else takes it; a bind is retried only for the
        // moment the kernel may still count the last listener (it was just closed).
        let until = Instant::now() + Duration::from_secs(30);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("bind the receiver on port {}: {e}", self.port),
            }
        };
        self.port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = stop.clone();
        let bodies = self.bodies.clone();
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => serve_one(conn, &bodies),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Stop listening: connections are refused from now on.
    fn down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn up(&mut self) {
        if self.thread.is_none() {
            self.listen();
        }
    }

    fn reports(&self) -> usize {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.contains("\"schema_version\""))
            .count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

fn serve_one(conn: std::net::TcpStream, bodies: &Mutex<Vec<String>>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(clone) = conn.try_clone() else { return };
    let mut rd = BufReader::new(clone);
    let mut line = String::new();
    if rd.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    if rd.read_exact(&mut body).is_err() {
        return;
    }
    bodies.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
    let mut w = conn;
    let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

// ---------------------------------------------------------------------------------------------
// The appliance column (issue 16): the appliance upgrade's own steps × the faults that apply
// ---------------------------------------------------------------------------------------------
//
// The drain steps an appliance shares with a Linux cell are the upgrade column's. Here: the
// unpack, the two vamicli calls before the drain, the install through vamicli in its unit, the
// reboot (between its request and the boot) and the continuation after the boot. Each cell
// checks the documented exit code and `cell_left`, whether the run is kept, what the simulator
// shows, that no password leaked, then the documented recovery, the boot the test plays and the
// shipped unit's continuation, and that the appliance ends updated once (from the simulator's
// timeline: installed, reboot, boot, up; no start of the service before the boot).

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AStep {
    Unpack,
    SetRepo,
    CheckUpdate,
    Install,
    Reboot,
    AfterBoot,
}

const A_STEPS: &[AStep] = &[
    AStep::Unpack,
    AStep::SetRepo,
    AStep::CheckUpdate,
    AStep::Install,
    AStep::Reboot,
    AStep::AfterBoot,
];

impl AStep {
    fn name(self) -> &'static str {
        match self {
            AStep::Unpack => "unpack",
            AStep::SetRepo => "set_repo",
            AStep::CheckUpdate => "check_update",
            AStep::Install => "install",
            AStep::Reboot => "reboot",
            AStep::AfterBoot => "after boot",
        }
    }
    /// The simulator's fault op of a vamicli step.
    fn op(self) -> Option<&'static str> {
        match self {
            AStep::SetRepo => Some("vamicli-repo"),
            AStep::CheckUpdate => Some("vamicli-check"),
            AStep::Install => Some("vamicli-install"),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AFault {
    Kill9,
    Sigterm,
    ToolFail,
    ToolHang,
}

const A_FAULTS: &[AFault] = &[AFault::Kill9, AFault::Sigterm, AFault::ToolFail, AFault::ToolHang];

impl AFault {
    fn name(self) -> &'static str {
        match self {
            AFault::Kill9 => "kill -9 + rerun",
            AFault::Sigterm => "SIGTERM",
            AFault::ToolFail => "vamicli fail",
            AFault::ToolHang => "vamicli hang",
        }
    }
}

/// After the faulty run, what recovers it (then the boot and the continuation, when the run
/// ends rebooting).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ARecovery {
    /// `cellctl upgrade` again (with the package when the run was not kept).
    Rerun,
    /// `cellctl upgrade --retry-install`: a failed install is not retried silently.
    RetryInstall,
    /// The reboot happened: the boot, then the unit's `maintain --continue --at-boot`.
    Boot,
    /// `cellctl maintain --continue` by hand (the boot unit continues only runs recorded as
    /// rebooting).
    Continue,
}

#[derive(Clone, Copy, Debug)]
struct AExpect {
    /// None: killed.
    code: Option<i32>,
    left: &'static str,
    kept: bool,
    recovery: ARecovery,
}

const NA_NOT_VAMICLI: &str = "vamicli fail/hang at unpack, reboot and after boot: no vamicli call there (the unpack is cellctl's own, the reboot the service manager's, after the boot the health checks of the upgrade column)";

fn a_expect(fault: AFault, step: AStep) -> Result<AExpect, &'static str> {
    use AFault::*;
    use AStep::*;
    let e = |code: Option<i32>, left: &'static str, kept: bool, recovery: ARecovery| {
        Ok(AExpect {
            code,
            left,
            kept,
            recovery,
        })
    };
    match (fault, step) {
        (ToolFail | ToolHang, Unpack | Reboot | AfterBoot) => Err(NA_NOT_VAMICLI),
        // Before the drain nothing of the cell changed: the run ends, its folder removed.
        (ToolFail | ToolHang, SetRepo | CheckUpdate) => e(Some(21), "unchanged", false, ARecovery::Rerun),
        (Sigterm, Unpack | SetRepo | CheckUpdate) => e(Some(143), "unchanged", false, ARecovery::Rerun),
        (ToolFail | ToolHang, Install) => e(Some(21), "shut_down", true, ARecovery::RetryInstall),
        // The unit runs on; a rerun picks up its result.
        (Sigterm, Install) => e(Some(143), "shut_down", true, ARecovery::Rerun),
        // The request is not abandoned half-asked (the reboot's own SIGTERM comes exactly
        // then): it is made, and the run ends as it would have, rebooting (exit 0); the
        // continuation after the boot finishes it.
        (Sigterm, Reboot) => e(Some(0), "rebooting", true, ARecovery::Boot),
        (Sigterm, AfterBoot) => e(Some(143), "changed", true, ARecovery::Continue),
        (Kill9, Reboot) => e(None, "", true, ARecovery::Boot),
        (Kill9, AfterBoot) => e(None, "", true, ARecovery::Continue),
        (Kill9, _) => e(None, "", true, ARecovery::Rerun),
    }
}

fn a_label(fault: AFault, step: AStep) -> String {
    format!("appliance × {} @ {}", fault.name(), step.name())
}

struct AResult {
    fault: AFault,
    step: AStep,
    verdict: Verdict,
    secs: f64,
}

/// The appliance cells FAULT_MATRIX_ONLY selects.
fn appliance_cells(only: &str) -> Vec<(AFault, AStep)> {
    let mut cells = vec![];
    for &f in A_FAULTS {
        for &s in A_STEPS {
            if a_label(f, s).contains(only) {
                cells.push((f, s));
            }
        }
    }
    cells
}

fn run_appliance_cell(fault: AFault, step: AStep, env: &Env) -> AResult {
    let t0 = Instant::now();
    let verdict = match a_expect(fault, step) {
        Err(why) => Verdict::NotApplicable(why),
        Ok(_) if step == AStep::Install && fault == AFault::Sigterm && env.setsid.is_err() => {
            Verdict::Unavailable(env.setsid.clone().unwrap_err())
        }
        Ok(exp) => {
            let mut failures = vec![];
            let mut shown = String::new();
            let r = catch_unwind(AssertUnwindSafe(|| {
                shown = appliance_cell_run(fault, step, exp, &mut failures);
            }));
            if let Err(p) = r {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(std::string::ToString::to_string))
                    .unwrap_or_else(|| "panic".into());
                failures.push(format!("panicked: {msg}"));
            }
            if failures.is_empty() {
                Verdict::Pass { shown }
            } else {
                Verdict::Fail { shown, failures }
            }
        }
    };
    AResult {
        fault,
        step,
        verdict,
        secs: t0.elapsed().as_secs_f64(),
    }
}

/// One appliance and everything a cell needs around it.
struct ACell {
    c: Cell,
    served: Served,
    pkg: PathBuf,
    /// The reboot command's gate and pid file (SIGTERM at the reboot).
    gate: PathBuf,
    held_pid: PathBuf,
}

impl ACell {
    fn new(step: AStep, fault: AFault) -> ACell {
        let c = common::appliance::appliance_cell(&[]);
        let served = c.serve();
        let mut extra: Vec<&str> = vec![];
        match step {
            // 96 MiB of zeros: the in-process unpack takes long enough to be caught in flight.
            AStep::Unpack => extra.extend(["--pad", "100663296"]),
            // An install that runs long enough for a signal to find it in its unit.
            AStep::Install if matches!(fault, AFault::Kill9 | AFault::Sigterm) => {
                extra.extend(["--install-time", "3s"]);
            }
            _ => {}
        }
        let pkg = common::appliance::update_package(&c, APPLIANCE_NEW, &extra);
        let bin = c.dir.join("bin");
        // As a real transient unit, the install runs outside cellctl's process group (cellctl
        // kills its child's group when a signal ends its wait; systemd's unit runs on).
        std::fs::rename(bin.join("systemd-run"), bin.join("systemd-run.real")).unwrap();
        write_executable(
            &bin.join("systemd-run"),
            &format!(
                "#!/bin/sh\nexec setsid -w '{}' \"$@\"\n",
                bin.join("systemd-run.real").display()
            ),
            0o755,
        );
        let gate = c.tmp.path().join("reboot-gate");
        let held_pid = c.tmp.path().join("held-reboot.pid");
        write_executable(
            &c.tmp.path().join("held-reboot"),
            &format!(
                "#!/bin/sh\necho $$ > '{}'\nwhile [ -f '{}' ]; do sleep 0.05; done\nexec '{}' reboot\n",
                held_pid.display(),
                gate.display(),
                bin.join("systemctl").display()
            ),
            0o755,
        );
        ACell {
            c,
            served,
            pkg,
            gate,
            held_pid,
        }
    }

    /// cellctl wired for the appliance; `--tool-timeout 1s` for a hung vamicli call, `[install]
    /// timeout 2s` for a hung install.
    fn cmd(&self, fault: AFault, step: AStep) -> Command {
        let mut cmd = common::appliance::appliance_cmd(&self.c, &self.served);
        std::fs::write(
            &self.c.config,
            format!(
                "[health]\ninterval = \"100ms\"\nrequest_timeout = \"2s\"\n[install]\ntimeout = \"{}\"\n",
                if fault == AFault::ToolHang && step == AStep::Install {
                    "2s"
                } else {
                    "60s"
                }
            ),
        )
        .unwrap();
        if fault == AFault::ToolHang {
            cmd.args(["--tool-timeout", "1s"]);
        }
        if step == AStep::Reboot && fault == AFault::Sigterm {
            cmd.env("CELLCTL_REBOOT_COMMAND", self.c.tmp.path().join("held-reboot"));
        }
        cmd
    }

    fn last_step(&self) -> Option<(String, String)> {
        let rec = self.c.current()?;
        let s = rec["steps"].as_array()?.last()?.clone();
        Some((s["step"].as_str()?.to_string(), s["status"].as_str()?.to_string()))
    }

    fn hung_vamicli(&self, argv_word: &str) -> Option<i32> {
        self.c
            .invocations()
            .iter()
            .find(|i| {
                i["tool"] == "vamicli"
                    && i["exit_code"].is_null()
                    && i["argv"].as_array().is_some_and(|a| a.iter().any(|w| w == argv_word))
            })
            .and_then(|i| i["pid"].as_i64())
            .and_then(|p| i32::try_from(p).ok())
    }
}

/// The vamicli argv word of a step (`--repo`, `--check`, `--install`).
fn a_word(step: AStep) -> &'static str {
    match step {
        AStep::SetRepo => "--repo",
        AStep::CheckUpdate => "--check",
        _ => "--install",
    }
}

/// Wait (bounded) until `cond`; false when it never held.
fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// The faulty run of one cell: what it printed (None: killed), the hung vamicli to reap.
fn a_fault_run(x: &ACell, fault: AFault, step: AStep, failures: &mut Vec<String>) -> (Option<Run>, Option<i32>) {
    use AFault::*;
    use AStep::*;
    let c = &x.c;
    if let Some(op) = step.op() {
        match fault {
            ToolFail => drop(c.sim(&["fault", "crash", "--op", op, "--times", "1"])),
            ToolHang => drop(c.sim(&["fault", "hang", "--op", op, "--times", "1"])),
            // A signal at a vamicli call before the drain: the call hangs until the signal.
            Kill9 | Sigterm if step != Install => drop(c.sim(&["fault", "hang", "--op", op, "--times", "1"])),
            _ => {}
        }
    }
    if (fault, step) == (Kill9, Reboot) {
        c.sim(&["set", "reboot_kills=true"]);
    }
    if (fault, step) == (Sigterm, Reboot) {
        std::fs::write(&x.gate, "").unwrap();
    }
    if step == AfterBoot {
        // The first run ends rebooting; the continuation after the boot is the faulty one, the
        // cell slow to come up so that it is found waiting for the cell's health.
        let r = common::appliance::appliance_upgrade(c, &x.served, Some(&x.pkg), &[]);
        if r.code != 0 {
            failures.push(format!(
                "the run before the boot exited {}: {}",
                r.code,
                last_lines(&r.stderr, 4)
            ));
        }
        c.sim(&["set", "startup_delay=10m"]);
        common::appliance::play_boot(c);
    }
    let mut cmd = x.cmd(fault, step);
    if step == AfterBoot {
        cmd.args(["--json", "maintain", "--continue", "--at-boot"]);
    } else {
        cmd.args(["--json", "upgrade", "--poll-interval", "100ms"]).arg(&x.pkg);
    }
    let mut p = Proc::spawn(&mut cmd);
    if matches!(fault, ToolFail | ToolHang) {
        return (p.finish(Duration::from_secs(90)).ok(), None);
    }
    if (fault, step) == (Kill9, Reboot) {
        // Killed by the reboot itself (the sim's `systemctl reboot` SIGKILLs its caller).
        match p.finish(Duration::from_secs(90)) {
            Ok(r) if r.code == 128 + 9 => {}
            Ok(r) => failures.push(format!("not killed by the reboot: exit {}", r.code)),
            Err(e) => failures.push(e),
        }
        return (None, None);
    }
    // The trigger: the step held in flight.
    let mut hung = None;
    let hit = until(Duration::from_secs(60), || {
        if p.exited() {
            return true;
        }
        match step {
            Unpack => x.last_step() == Some(("unpack".into(), "started".into())),
            SetRepo | CheckUpdate => {
                hung = x.hung_vamicli(a_word(step));
                hung.is_some()
            }
            // The unit's wrapper has written its pid file: vamicli installs in its unit.
            Install => std::fs::read_dir(c.state.join("units"))
                .is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".pid"))),
            Reboot => x.held_pid.exists(),
            AfterBoot => x.last_step() == Some(("health".into(), "started".into())),
        }
    });
    if !hit || p.exited() {
        failures.push(format!("the step {} was never seen in flight", step.name()));
    }
    let sig = if fault == Kill9 {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    let _ = nix::sys::signal::kill(Pid::from_raw(p.pid), sig);
    if (fault, step) == (Sigterm, Reboot) {
        // The request goes on to the service manager after the signal.
        let _ = std::fs::remove_file(&x.gate);
    }
    let run = p.finish(Duration::from_secs(60));
    match (fault, run) {
        (Kill9, _) => (None, hung),
        (_, Ok(r)) => (Some(r), hung),
        (_, Err(e)) => {
            failures.push(e);
            (None, hung)
        }
    }
}

/// One appliance cell: the faulty run, its checks, the recovery; returns what the matrix shows.
fn appliance_cell_run(fault: AFault, step: AStep, exp: AExpect, failures: &mut Vec<String>) -> String {
    let x = ACell::new(step, fault);
    let c = &x.c;
    let (run, hung) = a_fault_run(&x, fault, step, failures);
    if let Some(pid) = hung {
        if fault == AFault::Sigterm {
            // A signal abandons the hung call: it must not outlive the run.
            wait_gone(&[pid], Duration::from_secs(10));
            if alive(pid) {
                failures.push(format!("the hung vamicli {pid} outlived the interrupted run"));
            }
        }
        // After kill -9 it lives on (as it would until a reboot): end it, as the host would.
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    match (&run, exp.code) {
        (Some(r), Some(code)) => {
            if r.code != code {
                failures.push(format!(
                    "exit {} (expected {code}); stderr: {}",
                    r.code,
                    last_lines(&r.stderr, 4)
                ));
            }
            for form in password_forms() {
                if r.stdout.contains(&form) || r.stderr.contains(&form) {
                    failures.push("the password was printed".into());
                }
            }
            match stdout_doc(r) {
                Ok(doc) if doc["cell_left"] != exp.left => {
                    failures.push(format!("cell_left {} (expected {})", doc["cell_left"], exp.left));
                }
                Ok(_) => {}
                Err(e) => failures.push(e),
            }
        }
        (None, None) => {}
        (Some(r), None) => failures.push(format!("expected to be killed, exited {}", r.code)),
        (None, Some(_)) => failures.push("no result of the faulty run".into()),
    }
    if c.current().is_some() != exp.kept {
        failures.push(format!(
            "the run is {}kept (expected {}kept)",
            if exp.kept { "not " } else { "" },
            if exp.kept { "" } else { "not " }
        ));
    }
    let show = c.show();
    if exp.left == "unchanged"
        && !(show["service"] == "running"
            && show["version"] == APPLIANCE_OLD
            && show["quiesced"] == false
            && common::appliance::folders(&common::appliance::unpack_dir(c)).is_empty())
    {
        failures.push(format!(
            "cell_left unchanged, but the simulator shows {show} (or an unpacked folder is left)"
        ));
    }
    if exp.left == "shut_down" && show["service"] != "stopped" {
        failures.push(format!("cell_left shut_down, but the service is {}", show["service"]));
    }
    if exp.left == "rebooting" && show["rebooting"] != true {
        failures.push(format!("cell_left rebooting, but the simulator shows {show}"));
    }
    a_recover(&x, exp.recovery, failures);
    match exp.code {
        Some(code) => code.to_string(),
        None => "-9".into(),
    }
}

/// The documented recovery, then the boot and the continuation if the run ends rebooting; the
/// appliance must end updated once.
fn a_recover(x: &ACell, recovery: ARecovery, failures: &mut Vec<String>) {
    use common::appliance::{appliance_cmd, appliance_upgrade, continue_at_boot, play_boot};
    let c = &x.c;
    c.sim(&["fault", "clear"]);
    c.sim(&["set", "reboot_kills=false", "startup_delay=0s"]);
    let pkg = c.current().is_none().then_some(x.pkg.as_path());
    let r = match recovery {
        ARecovery::Rerun => appliance_upgrade(c, &x.served, pkg, &[]),
        ARecovery::RetryInstall => appliance_upgrade(c, &x.served, None, &["--retry-install"]),
        ARecovery::Boot => {
            play_boot(c);
            continue_at_boot(c, &x.served)
        }
        ARecovery::Continue => Run::from(
            appliance_cmd(c, &x.served)
                .args(["--json", "maintain", "--continue"])
                .output()
                .unwrap(),
        ),
    };
    let doc = match stdout_doc(&r) {
        Ok(d) => d,
        Err(e) => return failures.push(format!("recovery {recovery:?}: {e}")),
    };
    let doc = if doc["outcome"] == "rebooting" {
        play_boot(c);
        let r = continue_at_boot(c, &x.served);
        match stdout_doc(&r) {
            Ok(d) => d,
            Err(e) => return failures.push(format!("continuation after the boot: {e}")),
        }
    } else {
        doc
    };
    if doc["outcome"] != "upgraded" || doc["exit_code"] != 0 {
        return failures.push(format!(
            "recovery {recovery:?} did not converge: outcome {}, exit {}, error {}",
            doc["outcome"], doc["exit_code"], doc["error"]
        ));
    }
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| common::appliance::assert_appliance_updated(c))) {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "assertion".into());
        failures.push(format!("after recovery: {msg}"));
    }
}

fn render_appliance(results: &[AResult]) -> String {
    let mut out = String::new();
    if results.is_empty() {
        return out;
    }
    let width = 16;
    out.push_str(&format!("\n{:<22}", "appliance"));
    for s in A_STEPS {
        out.push_str(&format!("{:<width$}", s.name()));
    }
    out.push('\n');
    for &fault in A_FAULTS {
        out.push_str(&format!("{:<22}", fault.name()));
        for &step in A_STEPS {
            let shown = results
                .iter()
                .find(|r| r.fault == fault && r.step == step)
                .map(|r| match &r.verdict {
                    Verdict::Pass { shown } => format!("ok {shown}"),
                    Verdict::Fail { shown, .. } => format!("FAIL {shown}"),
                    Verdict::NotApplicable(_) => "-".into(),
                    Verdict::Unavailable(_) => "n/a".into(),
                })
                .unwrap_or_default();
            out.push_str(&format!("{shown:<width$}"));
        }
        out.push('\n');
    }
    out.push_str(&format!("  - {NA_NOT_VAMICLI}\n"));
    out.push_str(
        "  Injection: vamicli fail/hang = `cellsim fault crash|hang --op vamicli-repo|check|install --times 1` (--tool-timeout 1s, \
         install: [install] timeout 2s); kill -9/SIGTERM at a vamicli call before the drain: while it hangs; at unpack: \
         once the journal shows it started (a 96 MiB package); at install: while vamicli installs in its unit (3s); \
         at reboot: kill -9 by the reboot itself (`reboot_kills`), SIGTERM while the reboot command is held; \
         after boot: the continuation waiting for the cell's health. Recovery, then `cellsim boot` and \
         `maintain --continue --at-boot`: one install, a reboot after it, a boot, the cell up, no run left.\n",
    );
    let failed: Vec<&AResult> = results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Fail { .. }))
        .collect();
    for r in failed {
        if let Verdict::Fail { failures, .. } = &r.verdict {
            out.push_str(&format!("  {} ({:.1}s):\n", a_label(r.fault, r.step), r.secs));
            for f in failures {
                out.push_str(&format!("    - {f}\n"));
            }
        }
    }
    out
}
