//! The one document each command ends with: JSON on stdout with `--json`, a summary on stderr.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::adapters::api::TaskInfo;
use crate::adapters::host::hostname;
use crate::adapters::vendor::CellStatus;
use crate::adapters::webhook::Summary;
use crate::error::Error;
use crate::model::outcome::{CellLeft, CommandName, Outcome};
use crate::model::phase::Phase;
use crate::model::step::{Before, ServiceState, StepRecord};
use crate::model::time::{Timestamp, new_run_id};
use crate::store::atomic::WriteError;
use crate::store::journal::LockHolder;
use crate::store::record::{MaintainRecord, RunRecord, UpgradeRecord};

pub const SCHEMA_VERSION: u32 = 1;

/// The fleet-wide slot of a run: held or released, and why not when it should have been.
#[derive(Debug, Clone, Serialize)]
pub struct SlotDoc {
    pub backend: String,
    pub group: String,
    pub id: String,
    pub taken_at: Option<Timestamp>,
    pub released: bool,
    /// The release's (or take's) failure.
    pub error: Option<String>,
    /// Why it is kept and how to free it (absent when released).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `cellctl lock status` / `cellctl lock release`.
#[derive(Debug, Clone, Serialize)]
pub struct LockDoc {
    pub action: &'static str,
    pub backend: crate::adapters::lock::Backend,
    pub url: String,
    pub group: String,
    /// This cell's id.
    pub id: String,
    /// false for FleetLock: the protocol cannot list holders.
    pub listable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_slots: Option<u32>,
    pub holders: Vec<crate::adapters::lock::Holder>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<crate::adapters::lock::HistoryEntry>,
    /// The slot recorded in this cell's state directory.
    pub local: Option<crate::store::slot::SlotRecord>,
    /// `release`: the id freed, whether it held a slot, and who freed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was_held: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CellDoc {
    pub host: String,
    pub vcd_home: String,
    pub service: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorDoc {
    pub kind: &'static str,
    pub message: String,
}

impl From<&Error> for ErrorDoc {
    fn from(e: &Error) -> Self {
        ErrorDoc {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// How a preflight check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

impl CheckStatus {
    /// As the human lines show it.
    pub fn label(self) -> &'static str {
        match self {
            CheckStatus::Pass => "PASS",
            CheckStatus::Warn => "WARN",
            CheckStatus::Fail => "FAIL",
        }
    }
}

/// One preflight check: its stable name, how it came out, and what was seen.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: CheckStatus,
    pub detail: String,
}

/// The package a preflight checked.
#[derive(Debug, Clone, Serialize)]
pub struct PackageDoc {
    pub path: String,
    /// The version it installs (from its name or `--package-version`); null when unknown.
    pub version: Option<String>,
    /// The build number, when the version carries one (`10.6.1-24300000` → `24300000`).
    pub build: Option<String>,
}

/// A cell of the group as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupCell {
    pub name: String,
    pub product_version: Option<String>,
    pub active: Option<bool>,
}

/// A summary of a recorded run (for `status`).
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRun {
    pub run_id: String,
    pub command: CommandName,
    pub phase: Phase,
    pub outcome: Option<Outcome>,
    pub started_at: Timestamp,
    pub pid: u32,
    /// The one right next step (human text only).
    #[serde(skip)]
    pub advice: String,
}

impl From<&RunRecord> for RecordedRun {
    fn from(r: &RunRecord) -> Self {
        RecordedRun {
            run_id: r.run_id.clone(),
            command: r.command,
            phase: r.phase,
            outcome: r.outcome,
            started_at: r.started_at,
            pid: r.pid,
            advice: r.advice(),
        }
    }
}

// The JSON names are a contract (`report_id`); the double options tell "not asked" (absent)
// from "asked, cell could not say" (null).
#[allow(clippy::struct_field_names, clippy::option_option)]
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub command: CommandName,
    pub outcome: Outcome,
    pub exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Unique per invocation (a continued run's later invocations get their own): names the
    /// saved report and keys its webhook delivery. Equal to `run_id` for the invocation that
    /// started the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// What state the cell was left in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_left: Option<CellLeft>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Before>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs_remaining: Option<Vec<String>>,
    /// With `--on-deadline cancel`: tasks still running when the grace period ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_not_canceled: Option<Vec<String>>,
    /// `status`: this cell's running tasks from the API (operation, owner, started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<TaskInfo>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_error: Option<String>,
    // `status` fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_count: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_active: Option<Option<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_maintenance: Option<Option<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_run: Option<Option<RecordedRun>>,
    /// `status`: the run under way now (it holds the lock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_run: Option<LockHolder>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<String>,
    /// The cell this run was about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<CellDoc>,
    /// Webhook delivery of this report (and of older queued ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Summary>,
    /// Package, versions before/after, installer output tail (install/upgrade).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeRecord>,
    /// The fleet-wide slot this run took or held (with `[lock]` configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotDoc>,
    /// `lock status` / `lock release`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockDoc>,
    /// `status`, `preflight`: the version the configured version command prints (null: unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_version: Option<Option<String>>,
    /// `preflight`: every check passed (warnings allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// `preflight`: one entry per check, in the order made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<Check>>,
    /// `preflight`: the package checked (null: none given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<Option<PackageDoc>>,
    /// `preflight`: the cell already runs the package's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up_to_date: Option<bool>,
    /// `preflight`: the cells of the group as the API lists them (null: the API was not asked
    /// or could not answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<Option<Vec<GroupCell>>>,
    /// `maintain`: its COMMAND, exit code, output tail and reboot (the whole run, across it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintain: Option<MaintainRecord>,
    pub error: Option<ErrorDoc>,
    /// Where the report was saved (for the closing line; not part of the document).
    #[serde(skip)]
    pub saved_as: Option<PathBuf>,
}

/// Set once the final document is on stdout, so an emergency exit (a second signal) does not
/// print a second one.
static PRINTED: AtomicBool = AtomicBool::new(false);

/// Print a JSON document on stdout unless one was printed already: `--json` promises one.
fn print_once(doc: &impl Serialize) {
    if !PRINTED.swap(true, Ordering::SeqCst) {
        println!("{}", serde_json::to_string(doc).expect("report serializes"));
    }
}

impl Report {
    pub fn new(command: CommandName) -> Self {
        Report {
            schema_version: SCHEMA_VERSION,
            command,
            outcome: Outcome::Ok,
            exit_code: 0,
            run_id: None,
            report_id: None,
            host: hostname(),
            started_at: None,
            ended_at: None,
            cell_left: None,
            before: None,
            steps: vec![],
            jobs_remaining: None,
            tasks_not_canceled: None,
            tasks: None,
            tasks_error: None,
            job_count: None,
            is_active: None,
            in_maintenance: None,
            service: None,
            recorded_run: None,
            live_run: None,
            journal: None,
            cell: None,
            delivery: None,
            upgrade: None,
            slot: None,
            lock: None,
            installed_version: None,
            ok: None,
            checks: None,
            package: None,
            up_to_date: None,
            group: None,
            maintain: None,
            error: None,
            saved_as: None,
        }
    }

    pub fn failed(command: CommandName, e: &Error) -> Self {
        let mut r = Report::new(command);
        r.fail(e);
        r
    }

    pub fn fail(&mut self, e: &Error) {
        if self.outcome == Outcome::Ok {
            self.outcome = Outcome::Failed;
        }
        self.exit_code = e.exit_code();
        self.error = Some(e.into());
    }

    pub fn with_status(mut self, st: Option<CellStatus>, service: ServiceState) -> Self {
        self.job_count = Some(st.map(|s| s.job_count));
        self.is_active = Some(st.map(|s| s.is_active));
        self.in_maintenance = Some(st.and_then(|s| s.in_maintenance));
        self.service = Some(service);
        self
    }

    /// Print the document (JSON on stdout with `json`) and the human summary (stderr).
    pub fn emit(&self, json: bool) {
        // The human summary goes to stderr in both modes (an operator watching a --json run sees
        // it too), before the document, so that the document is the last line of a journal.
        if let Some(e) = &self.error {
            eprintln!("cellctl: {} {}: {}", self.command, self.outcome.words(), e.message);
        } else if self.command != CommandName::Status {
            let left = self.cell_left.map(|c| format!("; {}", c.words())).unwrap_or_default();
            eprintln!("cellctl: {} {}{left}", self.command, self.outcome.words());
        }
        // A refusal before any step stays one line; a run that took steps says where it is.
        if let Some(run) = self.run_id.as_ref().filter(|_| !self.steps.is_empty()) {
            let took = match (self.started_at, self.ended_at) {
                (Some(a), Some(b)) => format!(", took {}", humantime::format_duration(b.since(a))),
                _ => String::new(),
            };
            let saved = self
                .saved_as
                .as_ref()
                .map(|p| format!("; report: {}", p.display()))
                .unwrap_or_default();
            eprintln!("cellctl: run {run}{took}{saved}");
        }
        if let Some(jobs) = &self.jobs_remaining
            && !jobs.is_empty()
        {
            eprintln!("cellctl: jobs still running at shutdown:");
            for j in jobs {
                eprintln!("  {j}");
            }
        }
        if json && self.command == CommandName::Preflight && self.error.is_none() {
            // The preflight contract (Ansible collection): `error` is absent when it passed.
            let mut doc = serde_json::to_value(self).expect("report serializes");
            if let Some(m) = doc.as_object_mut() {
                m.remove("error");
            }
            print_once(&doc);
        } else if json {
            print_once(self);
        }
    }

    /// The document of a process that must exit at once (a second signal): what is known.
    pub fn emit_emergency(command: CommandName, signal: i32, name: &'static str, journal_hint: &str, json: bool) {
        let e = Error::Interrupted {
            signal,
            name,
            state: format!("exited at once on a second signal; journal kept in {journal_hint}"),
        };
        let mut r = Report::failed(command, &e);
        r.outcome = Outcome::Interrupted;
        r.cell_left = Some(CellLeft::Unknown);
        if json {
            print_once(&r);
        }
    }

    /// Save the report as `reports/<report id>.json` (the run id when there is no report id).
    pub fn save(&self, state_dir: &Path, keep: usize) -> Result<PathBuf, WriteError> {
        let id = self
            .report_id
            .clone()
            .or_else(|| self.run_id.clone())
            .unwrap_or_else(new_run_id);
        let doc = serde_json::to_vec_pretty(self).expect("report serializes");
        crate::store::reports::save(state_dir, &id, &doc, keep)
    }
}
