//! The one document each command ends with: JSON on stdout with `--json`, a summary on stderr.

use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::error::Error;
use crate::journal::{Before, RunRecord, StepRecord};
use crate::service::ServiceState;
use crate::signals::REPORT_PRINTED;
use crate::vendor::CellStatus;

pub const SCHEMA_VERSION: u32 = 1;

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
            host: hostname(),
            started_at: None,
            ended_at: None,
            cell_left: None,
            before: None,
            steps: vec![],
            jobs_remaining: None,
            job_count: None,
            is_active: None,
            in_maintenance: None,
            service: None,
            recorded_run: None,
            journal: None,
            upgrade: None,
            error: None,
        }
    }

    pub fn failed(command: &str, e: &Error) -> Self {
        let mut r = Report::new(command);
        r.fail(e);
        r
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
