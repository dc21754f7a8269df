//! A node_exporter textfile (`--metrics-file`), so existing monitoring alerts on a failed or
//! stuck upgrade: written atomically (node_exporter may read it at any moment) at the start of a
//! run (in progress) and at its end (the last run's outcome).

use std::fmt::Write as _;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde_json::Value;

fn ts(v: &Value) -> Option<f64> {
    let t = humantime::parse_rfc3339_weak(v.as_str()?).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs_f64())
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus text of gauges.
struct Gauges(String);

impl Gauges {
    fn gauge(&mut self, name: &str, help: &str, lines: Vec<(String, f64)>) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in lines {
            let _ = writeln!(self.0, "{name}{labels} {v}");
        }
    }
}

/// The last finished run's gauges, from its report.
fn last_run(text: &mut Gauges, r: &Value) {
    let mut gauge = |name: &str, help: &str, lines: Vec<(String, f64)>| text.gauge(name, help, lines);
    let command = r["command"].as_str().unwrap_or("");
    let outcome = r["outcome"].as_str().unwrap_or("");
    let run_id = r["run_id"].as_str().unwrap_or("");
    let code = r["exit_code"].as_i64().unwrap_or(-1);
    gauge(
        "cellctl_last_run_info",
        "The last finished cellctl run (value 1; see the labels).",
        vec![(
            format!(
                "{{command=\"{}\",outcome=\"{}\",run_id=\"{}\"}}",
                esc(command),
                esc(outcome),
                esc(run_id)
            ),
            1.0,
        )],
    );
    gauge(
        "cellctl_last_run_success",
        "1 if the last run ended with exit code 0, else 0.",
        vec![(String::new(), if code == 0 { 1.0 } else { 0.0 })],
    );
    gauge(
        "cellctl_last_run_exit_code",
        "Exit code of the last run (see cellctl --help).",
        vec![(String::new(), code as f64)],
    );
    if let (Some(a), Some(b)) = (ts(&r["started_at"]), ts(&r["ended_at"])) {
        gauge(
            "cellctl_last_run_start_timestamp_seconds",
            "Start of the last run.",
            vec![(String::new(), a)],
        );
        gauge(
            "cellctl_last_run_end_timestamp_seconds",
            "End of the last run.",
            vec![(String::new(), b)],
        );
        gauge(
            "cellctl_last_run_duration_seconds",
            "Duration of the last run.",
            vec![(String::new(), (b - a).max(0.0))],
        );
    }
    let jobs = r["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|st| st["step"] == "quiesce"))
        .and_then(|st| st["job_count"].as_f64());
    if let Some(j) = jobs {
        gauge(
            "cellctl_last_run_jobs_at_quiesce",
            "Jobs running on the cell when it was quiesced.",
            vec![(String::new(), j)],
        );
    }
}

/// Render the textfile from the last finished report (if any), a run in progress (if any) and
/// the outbox counts.
pub fn render(last: Option<&Value>, in_progress: Option<(&str, &str, &str)>, outbox: (usize, usize)) -> String {
    let mut text = Gauges(String::new());
    if let Some(r) = last {
        last_run(&mut text, r);
    }
    let mut gauge = |name: &str, help: &str, lines: Vec<(String, f64)>| text.gauge(name, help, lines);
    let (running, since) = match in_progress.and_then(|(c, id, started)| Some((c, id, ts(&Value::from(started))?))) {
        Some((c, id, t)) => (
            vec![(format!("{{command=\"{}\",run_id=\"{}\"}}", esc(c), esc(id)), 1.0)],
            Some(t),
        ),
        None => (vec![(String::new(), 0.0)], None),
    };
    gauge(
        "cellctl_run_in_progress",
        "1 while a cellctl run is under way (alert if it stays 1 too long).",
        running,
    );
    if let Some(t) = since {
        gauge(
            "cellctl_run_in_progress_start_timestamp_seconds",
            "Start of the run under way.",
            vec![(String::new(), t)],
        );
    }
    gauge(
        "cellctl_outbox_queued",
        "Reports and events waiting in the outbox for delivery.",
        vec![(String::new(), outbox.0 as f64)],
    );
    gauge(
        "cellctl_outbox_rejected",
        "Deliveries the receiver rejected (kept, not resent).",
        vec![(String::new(), outbox.1 as f64)],
    );
    text.0
}

/// Rewrite the metrics file: `last` is the run just finished, else the newest saved report is
/// the last run. A failure is logged: metrics never change a run's outcome.
pub fn update(
    path: &Path,
    state_dir: &Path,
    outbox: &crate::adapters::webhook::Outbox,
    last: Option<&Value>,
    in_progress: Option<(&str, &str, &str)>,
) {
    let stored = if last.is_none() {
        crate::store::reports::load(state_dir, None).ok()
    } else {
        None
    };
    let text = render(last.or(stored.as_ref()), in_progress, outbox.size());
    if let Err(e) = write(path, &text) {
        tracing::warn!("could not write metrics to {}: {e}", path.display());
    }
}

/// World-readable: node_exporter reads it as its own user, and it holds no secret (run ids,
/// outcomes, counts).
const MODE: u32 = 0o644;

fn write(path: &Path, text: &str) -> Result<(), crate::store::atomic::WriteError> {
    crate::store::atomic::write_atomic_mode(path, text.as_bytes(), MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_last_run_and_progress() {
        let r = serde_json::json!({"command":"drain","outcome":"shut_down","run_id":"r1","exit_code":0,
            "started_at":"2026-01-01T00:00:00Z","ended_at":"2026-01-01T00:01:40Z",
            "steps":[{"step":"quiesce","job_count":3}]});
        let t = render(Some(&r), None, (2, 1));
        assert!(
            t.contains("cellctl_last_run_info{command=\"drain\",outcome=\"shut_down\",run_id=\"r1\"} 1"),
            "{t}"
        );
        assert!(t.contains("cellctl_last_run_duration_seconds 100"), "{t}");
        assert!(t.contains("cellctl_last_run_jobs_at_quiesce 3"));
        assert!(t.contains("cellctl_run_in_progress 0"));
        assert!(t.contains("cellctl_outbox_queued 2") && t.contains("cellctl_outbox_rejected 1"));
        let t = render(None, Some(("upgrade", "r2", "2026-01-01T00:00:00Z")), (0, 0));
        assert!(
            t.contains("cellctl_run_in_progress{command=\"upgrade\",run_id=\"r2\"} 1"),
            "{t}"
        );
    }
}
