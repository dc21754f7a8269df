//! `--events`: one JSON object per line on stdout for each step change and progress tick, so an
//! orchestrator can follow a run live; the run's report is the last line. Step events can also
//! go to the webhook (`[report] events = true`): they are queued in the durable outbox as they
//! happen and sent by a background flusher (progress ticks are not: they would flood it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};

use crate::adapters::webhook::{Outbox, Webhook};
use crate::model::step::StepRecord;
use crate::model::time::{Timestamp, new_run_id};

struct Sink {
    /// Unique per process: keys of events from a continued run's later invocations differ.
    process: String,
    stdout: bool,
    run_id: Mutex<Option<String>>,
    seq: AtomicU64,
    webhook: Option<(Webhook, Outbox)>,
    notify: tokio::sync::Notify,
}

static SINK: OnceLock<Sink> = OnceLock::new();

pub fn init(stdout: bool, webhook: Option<(Webhook, Outbox)>) {
    let _ = SINK.set(Sink {
        process: new_run_id(),
        stdout,
        run_id: Mutex::new(None),
        seq: AtomicU64::new(0),
        webhook,
        notify: tokio::sync::Notify::new(),
    });
}

pub fn stdout_enabled() -> bool {
    SINK.get().is_some_and(|s| s.stdout)
}

pub fn set_run_id(id: &str) {
    if let Some(s) = SINK.get() {
        *s.run_id.lock().expect("not poisoned") = Some(id.to_string());
    }
}

fn emit(event: &str, data: Value, to_webhook: bool) {
    let Some(s) = SINK.get() else { return };
    let seq = s.seq.fetch_add(1, Ordering::SeqCst);
    let run_id = s.run_id.lock().expect("not poisoned").clone();
    let mut doc = json!({"event": event, "seq": seq, "at": Timestamp::now(), "run_id": run_id});
    if let (Value::Object(m), Value::Object(d)) = (&mut doc, data) {
        m.extend(d);
    }
    let line = doc.to_string();
    if s.stdout {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    if to_webhook
        && let Some((w, outbox)) = &s.webhook
        && w.events
    {
        let rid = run_id.unwrap_or_else(|| "norun".into());
        for e in w.entries_for(&format!("{rid}-{}-event-{seq}", s.process), event, &rid, &line) {
            if let Err(err) = outbox.push(&e) {
                tracing::warn!("{err}");
            }
        }
        s.notify.notify_one();
    }
}

pub fn step(st: &StepRecord) {
    emit(
        "step",
        json!({"step": st.step, "status": st.status, "started_at": st.started_at, "ended_at": st.ended_at, "job_count": st.job_count, "detail": st.detail}),
        true,
    );
}

pub fn progress(job_count: u64, is_active: bool, waited_secs: u64, deadline_in_secs: u64) {
    emit(
        "progress",
        json!({"job_count": job_count, "is_active": is_active, "waited_secs": waited_secs, "deadline_in_secs": deadline_in_secs}),
        false,
    );
}

/// The final line of an events stream.
pub fn report(doc: &Value) {
    emit("report", json!({"report": doc}), false);
}

/// Live delivery of queued step events while the run goes on.
pub async fn background_flusher(budget: std::time::Duration) {
    let Some(s) = SINK.get() else { return };
    let Some((w, outbox)) = &s.webhook else { return };
    if !w.events {
        return;
    }
    loop {
        s.notify.notified().await;
        let _guard = crate::adapters::webhook::FLUSH.lock().await;
        let _ = w.flush(outbox, tokio::time::Instant::now() + budget).await;
    }
}
