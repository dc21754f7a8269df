//! Text for people: `status`, and a stored report (`cellctl report`).

use std::fmt::Write;

use serde_json::Value;

use super::report::Report;

impl Report {
    /// Human text for `status` (stdout: it is the product of the command).
    pub fn status_text(&self) -> String {
        let opt = |v: Option<Option<String>>| v.flatten().unwrap_or_else(|| "-".into());
        let mut s = String::new();
        let service = self.service.map_or_else(|| "-".to_string(), |x| x.to_string());
        let _ = writeln!(s, "service:      {service}");
        if let Some(v) = &self.installed_version {
            let _ = writeln!(
                s,
                "version:      {}",
                v.as_deref().unwrap_or("unknown (see [install] version_command)")
            );
        }
        let _ = writeln!(
            s,
            "job count:    {}",
            opt(self.job_count.map(|v| v.map(|n| n.to_string())))
        );
        let _ = writeln!(
            s,
            "active:       {}",
            opt(self.is_active.map(|v| v.map(|b| b.to_string())))
        );
        let _ = writeln!(
            s,
            "maintenance:  {}",
            opt(self.in_maintenance.map(|v| v.map(|b| b.to_string())))
        );
        if let Some(slot) = &self.slot {
            let _ = writeln!(
                s,
                "slot:         held in group {} as {} since {}{}",
                slot.group,
                slot.id,
                slot.taken_at.map_or_else(|| "?".to_string(), |t| t.to_string()),
                slot.note.as_ref().map(|n| format!("; {n}")).unwrap_or_default()
            );
        }
        match (&self.tasks, &self.tasks_error) {
            (Some(t), _) if t.is_empty() => s.push_str("tasks:        none running on this cell\n"),
            (Some(t), _) => {
                let _ = writeln!(s, "tasks:        {} running on this cell", t.len());
                for task in t {
                    let _ = writeln!(s, "  {}", task.describe());
                }
            }
            (None, Some(e)) => {
                let _ = writeln!(s, "tasks:        unknown ({e})");
            }
            (None, None) => {}
        }
        let live = self.live_run.as_ref();
        if let Some(l) = live {
            let _ = writeln!(
                s,
                "running now:  `cellctl {}`, pid {}, since {}: wait for it, or stop it with `kill -TERM {}` (it undoes what it can)",
                l.command, l.pid, l.started_at, l.pid
            );
        }
        match self.recorded_run.as_ref().and_then(|r| r.as_ref()) {
            Some(r) if live.is_some() => {
                let _ = writeln!(
                    s,
                    "recorded run: {} ({}, {}, started {})",
                    r.run_id, r.command, r.phase, r.started_at
                );
            }
            Some(r) => {
                let _ = writeln!(
                    s,
                    "recorded run: {} ({}, {}, started {}, pid {}): {}",
                    r.run_id, r.command, r.phase, r.started_at, r.pid, r.advice
                );
            }
            None => s.push_str("recorded run: none\n"),
        }
        s
    }
}

impl Report {
    /// Human text for `preflight` (stdout): one line per check, then the verdict.
    pub fn preflight_text(&self) -> String {
        let mut s = String::new();
        for c in self.checks.iter().flatten() {
            let _ = writeln!(s, "{} {}: {}", c.status.label(), c.name, c.detail);
        }
        let failed = self
            .checks
            .iter()
            .flatten()
            .filter(|c| c.status == super::report::CheckStatus::Fail)
            .count();
        if failed == 0 {
            s.push_str("preflight passed: nothing was changed\n");
        } else {
            let _ = writeln!(s, "preflight failed: {failed} check(s) failed; nothing was changed");
        }
        s
    }
}

/// `cellctl report --list` for people: a line a report, oldest first.
pub fn report_list(all: &[crate::store::reports::Listed]) -> String {
    let dash = || "-".to_string();
    let mut s = format!(
        "{:<28} {:<8} {:<14} {:>4}  {:<24} {}\n",
        "REPORT", "COMMAND", "OUTCOME", "EXIT", "STARTED", "TOOK"
    );
    for r in all {
        let took = match (
            r.started_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok()),
            r.ended_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok()),
        ) {
            (Some(a), Some(b)) => b.duration_since(a).map_or_else(
                |_| dash(),
                |d| humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string(),
            ),
            _ => dash(),
        };
        let _ = writeln!(
            s,
            "{:<28} {:<8} {:<14} {:>4}  {:<24} {took}",
            r.report_id,
            r.command.clone().unwrap_or_else(dash),
            r.outcome.clone().unwrap_or_else(dash),
            r.exit_code.map_or_else(dash, |c| c.to_string()),
            r.started_at.clone().unwrap_or_else(dash),
        );
    }
    s
}

/// A stored report for people.
pub fn human(v: &Value) -> String {
    let g = |k: &str| v[k].as_str().map_or_else(|| "-".into(), str::to_string);
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
        let _ = write!(
            s,
            "package {}\nversion {} -> {}\n",
            up["package"]["path"].as_str().unwrap_or("-"),
            up["version_before"].as_str().unwrap_or("?"),
            up["version_after"].as_str().unwrap_or("?")
        );
    }
    if let Some(steps) = v["steps"].as_array() {
        s.push_str("steps:\n");
        for st in steps {
            let _ = writeln!(
                s,
                "  {:<17} {:<8} {}  jobs {}{}",
                st["step"].as_str().unwrap_or("?"),
                st["status"].as_str().unwrap_or("?"),
                st["started_at"].as_str().unwrap_or(""),
                st["job_count"].as_u64().map_or_else(|| "-".into(), |n| n.to_string()),
                st["detail"].as_str().map(|d| format!("  ({d})")).unwrap_or_default()
            );
        }
    }
    if let Some(e) = v["error"].as_object() {
        let _ = writeln!(
            s,
            "error ({}): {}",
            e["kind"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        );
    }
    if let Some(d) = v["delivery"].as_object() {
        let _ = writeln!(
            s,
            "delivery: {} delivered, {} queued, {} rejected",
            d["delivered"].as_array().map_or(0, std::vec::Vec::len),
            d["queued"],
            d["rejected"].as_array().map_or(0, std::vec::Vec::len)
        );
    }
    s
}
