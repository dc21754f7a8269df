//! The one document each command ends with: JSON on stdout with `--json`, a summary on stderr.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::journal::{Before, RunRecord, StepRecord};
use crate::service::ServiceState;
use crate::signals::REPORT_PRINTED;
use crate::vendor::CellStatus;

pub const SCHEMA_VERSION: u32 = 1;

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

/// A summary of a recorded run (for `status`).
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRun {
    pub run_id: String,
    pub command: String,
    pub phase: crate::procedure::Phase,
    pub outcome: Option<String>,
    pub started_at: String,
    pub pid: u32,
}

impl From<&RunRecord> for RecordedRun {
    fn from(r: &RunRecord) -> Self {
        RecordedRun {
            run_id: r.run_id.clone(),
            command: r.command.clone(),
            phase: r.phase,
            outcome: r.outcome.clone(),
            started_at: r.started_at.clone(),
            pid: r.pid,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub command: String,
    pub outcome: String,
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
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// What state the cell was left in: unchanged, drained, shut_down, changed, unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_left: Option<String>,
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
    pub tasks: Option<Vec<crate::api::TaskInfo>>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<String>,
    /// The cell this run was about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<CellDoc>,
    /// Webhook delivery of this report (and of older queued ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<crate::deliver::Summary>,
    /// Package, versions before/after, installer output tail (install/upgrade).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<crate::journal::UpgradeRecord>,
    pub error: Option<ErrorDoc>,
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

impl Report {
    pub fn new(command: &str) -> Self {
        Report {
            schema_version: SCHEMA_VERSION,
            command: command.into(),
            outcome: "ok".into(),
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
            journal: None,
            cell: None,
            delivery: None,
            upgrade: None,
            error: None,
        }
    }

    pub fn failed(command: &str, e: &Error) -> Self {
        let mut r = Report::new(command);
        r.fail(e);
        r
    }

    /// End a run that may have changed the cell: on failure, record the error, and unless the
    /// run said otherwise, the cell was left as found.
    pub fn settle(&mut self, r: &Result<(), Error>) {
        if let Err(e) = r {
            self.fail(e);
            if self.cell_left.is_none() {
                self.cell_left = Some("unchanged".into());
            }
        }
    }

    pub fn fail(&mut self, e: &Error) {
        if self.outcome == "ok" {
            self.outcome = "failed".into();
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
            eprintln!("cellctl: {} {}: {}", self.command, self.outcome, e.message);
        } else if self.command != "status" {
            let left = self
                .cell_left
                .as_deref()
                .map(|c| format!(" (cell left {c})"))
                .unwrap_or_default();
            eprintln!("cellctl: {} {}{left}", self.command, self.outcome);
        }
        if let Some(jobs) = &self.jobs_remaining
            && !jobs.is_empty()
        {
            eprintln!("cellctl: jobs still running at shutdown:");
            for j in jobs {
                eprintln!("  {j}");
            }
        }
        if json && !REPORT_PRINTED.swap(true, Ordering::SeqCst) {
            println!("{}", serde_json::to_string(self).expect("report serializes"));
        }
    }

    /// Human text for `status` (stdout: it is the product of the command).
    pub fn status_text(&self) -> String {
        let opt = |v: Option<Option<String>>| v.flatten().unwrap_or_else(|| "-".into());
        let mut s = String::new();
        s.push_str(&format!(
            "service:      {}\n",
            self.service
                .map(|x| format!("{x:?}").to_lowercase())
                .unwrap_or("-".into())
        ));
        s.push_str(&format!(
            "job count:    {}\n",
            opt(self.job_count.map(|v| v.map(|n| n.to_string())))
        ));
        s.push_str(&format!(
            "active:       {}\n",
            opt(self.is_active.map(|v| v.map(|b| b.to_string())))
        ));
        s.push_str(&format!(
            "maintenance:  {}\n",
            opt(self.in_maintenance.map(|v| v.map(|b| b.to_string())))
        ));
        match (&self.tasks, &self.tasks_error) {
            (Some(t), _) if t.is_empty() => s.push_str("tasks:        none running on this cell\n"),
            (Some(t), _) => {
                s.push_str(&format!("tasks:        {} running on this cell\n", t.len()));
                for task in t {
                    s.push_str(&format!("  {}\n", task.describe()));
                }
            }
            (None, Some(e)) => s.push_str(&format!("tasks:        unknown ({e})\n")),
            (None, None) => {}
        }
        match self.recorded_run.as_ref().and_then(|r| r.as_ref()) {
            Some(r) => s.push_str(&format!(
                "recorded run: {} ({}, phase {:?}, started {}, pid {}): `cellctl drain` continues it, `cellctl resume` undoes it\n",
                r.run_id, r.command, r.phase, r.started_at, r.pid
            )),
            None => s.push_str("recorded run: none\n"),
        }
        s
    }
}

pub fn reports_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("reports")
}

/// Write `reports/<run id>.json` atomically and keep the newest `keep`.
pub fn save(state_dir: &Path, r: &Report, keep: usize) -> Result<PathBuf, crate::journal::JournalError> {
    let dir = reports_dir(state_dir);
    std::fs::create_dir_all(&dir).map_err(|source| crate::journal::JournalError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let id = r
        .report_id
        .clone()
        .or(r.run_id.clone())
        .unwrap_or_else(crate::journal::new_run_id);
    let path = dir.join(format!("{id}.json"));
    crate::journal::write_atomic(&path, &serde_json::to_vec_pretty(r).expect("report serializes"))?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    if names.len() > keep {
        // Run ids sort by time.
        names.sort();
        for p in &names[..names.len() - keep] {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(path)
}

/// A stored report: by run id, or the newest.
pub fn load(state_dir: &Path, run_id: Option<&str>) -> Result<Value, String> {
    let dir = reports_dir(state_dir);
    let path = match run_id {
        Some(id) => {
            if id.contains('/') || id.contains("..") {
                return Err(format!("{id:?} is not a run id"));
            }
            let direct = dir.join(format!("{id}.json"));
            if direct.exists() {
                direct
            } else {
                // A continued run's later reports: the newest whose run_id matches.
                let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .map_err(|e| format!("no reports in {}: {e}", dir.display()))?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        std::fs::read_to_string(p)
                            .ok()
                            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                            .is_some_and(|v| v["run_id"] == id)
                    })
                    .collect();
                names.sort();
                names
                    .pop()
                    .ok_or_else(|| format!("no report for run {id} in {}", dir.display()))?
            }
        }
        None => {
            // Newest written, then newest id: ids alone tie within a millisecond.
            let mut names: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
                .map_err(|e| format!("no reports in {}: {e}", dir.display()))?
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect();
            names.sort();
            names
                .pop()
                .map(|(_, p)| p)
                .ok_or_else(|| format!("no reports in {}", dir.display()))?
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A stored report for people.
pub fn human(v: &Value) -> String {
    let g = |k: &str| v[k].as_str().map(str::to_string).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "run {}  {} on {}\noutcome: {} (exit {}), cell left {}\nstarted {}  ended {}\n",
        g("run_id"),
        g("command"),
        g("host"),
        g("outcome"),
        v["exit_code"],
        g("cell_left"),
        g("started_at"),
        g("ended_at")
    );
    if let Some(up) = v.get("upgrade").filter(|u| u.is_object()) {
        s.push_str(&format!(
            "package {}\nversion {} -> {}\n",
            up["package"]["path"].as_str().unwrap_or("-"),
            up["version_before"].as_str().unwrap_or("?"),
            up["version_after"].as_str().unwrap_or("?")
        ));
    }
    if let Some(steps) = v["steps"].as_array() {
        s.push_str("steps:\n");
        for st in steps {
            s.push_str(&format!(
                "  {:<17} {:<8} {}  jobs {}{}\n",
                st["step"].as_str().unwrap_or("?"),
                st["status"].as_str().unwrap_or("?"),
                st["started_at"].as_str().unwrap_or(""),
                st["job_count"]
                    .as_u64()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                st["detail"].as_str().map(|d| format!("  ({d})")).unwrap_or_default()
            ));
        }
    }
    if let Some(e) = v["error"].as_object() {
        s.push_str(&format!(
            "error ({}): {}\n",
            e["kind"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        ));
    }
    if let Some(d) = v["delivery"].as_object() {
        s.push_str(&format!(
            "delivery: {} delivered, {} queued, {} rejected\n",
            d["delivered"].as_array().map_or(0, |a| a.len()),
            d["queued"],
            d["rejected"].as_array().map_or(0, |a| a.len())
        ));
    }
    s
}
