//! The fleet-wide slot in a run's life: taken after the preflight and before the first change
//! (recorded in the journal and in `slot.json` before the request), retaken by a continued run
//! (locks are recursive), released only once the cell serves again (health passed, or the
//! undo completed). A release that fails is retried within a budget, then reported and kept
//! recorded so the next command or `cellctl lock release` retries; the run's outcome stands.

use std::time::Duration;

use crate::adapters::host::hostname;
use crate::adapters::lock::{LockClient, LockError, LockSettings};
use crate::config::Settings;
use crate::error::Error;
use crate::model::outcome::CellLeft;
use crate::model::step::{Step, StepStatus};
use crate::model::time::Timestamp;
use crate::output::report::{Report, SlotDoc};
use crate::store::slot::{self, SlotRecord, SlotState};

use super::context::Ctx;
use super::run::{Recorder, Run};
use super::signals;

/// Time between asks while waiting for a full slot.
const WAIT_POLL: Duration = Duration::from_secs(1);
/// Total time a release is retried before it is reported as failed.
const RELEASE_BUDGET: Duration = Duration::from_secs(8);

/// This cell's id: `[lock] id`, else the persisted one, else the cell's name (then persisted).
pub(crate) fn lock_id(s: &Settings, l: &LockSettings) -> Result<String, Error> {
    if let Some(id) = &l.id {
        return Ok(id.clone());
    }
    slot::lock_id(&s.state_dir, &s.api.cell_name).map_err(|e| Error::Journal(e.into()))
}

pub(crate) fn client(s: &Settings) -> Result<Option<LockClient>, Error> {
    let Some(l) = &s.lock else { return Ok(None) };
    let id = lock_id(s, l)?;
    LockClient::new(l, id).map(Some).map_err(Error::Slot)
}

/// Who frees a slot, for the semaphore's history: the user, this host, this process.
pub(crate) fn who() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| format!("uid {}", nix::unistd::geteuid()));
    format!("{user}@{} (cellctl pid {})", hostname(), std::process::id())
}

fn record(c: &LockClient, run: &Run, state: SlotState, taken_at: Option<Timestamp>) -> SlotRecord {
    SlotRecord {
        backend: c.settings.backend.as_str().into(),
        url: c.settings.url.clone(),
        group: c.settings.group.clone(),
        id: c.id.clone(),
        state,
        taken_at,
        run_id: Some(run.rec.run_id.clone()),
        command: run.rec.command,
        release_error: None,
    }
}

fn save(s: &Settings, rec: &SlotRecord) -> Result<(), Error> {
    slot::save(&s.state_dir, rec).map_err(|e| Error::Journal(e.into()))
}

/// Take the slot (recorded first), waiting up to `[lock] wait`; a signal abandons the wait at
/// once. Nothing of the cell is changed here.
pub(crate) async fn take(ctx: &Ctx<'_>, c: &LockClient, run: &mut Run) -> Result<(), Error> {
    let earlier = slot::load(&ctx.s.state_dir).ok().flatten();
    let taken_at = earlier.as_ref().and_then(|r| r.taken_at);
    let idx = run.begin(Step::TakeSlot)?;
    save(ctx.s, &record(c, run, SlotState::Taking, taken_at))?;
    let what = format!("group {:?} as {:?} at {}", c.settings.group, c.id, c.settings.url);
    tracing::info!("taking a slot: {what}");
    match acquire_waiting(ctx, c).await {
        Ok(already) => {
            save(
                ctx.s,
                &record(c, run, SlotState::Held, taken_at.or(Some(Timestamp::now()))),
            )?;
            let detail = if already {
                format!("already held: {what}")
            } else {
                format!("taken: {what}")
            };
            run.end(idx, StepStatus::Done, Some(detail))
        }
        Err(e) => {
            if matches!(&e, Error::Slot(LockError::Full { .. })) {
                // A definite answer: this id holds nothing.
                let _ = slot::clear(&ctx.s.state_dir);
            }
            let _ = run.end(idx, StepStatus::Failed, Some(e.to_string()));
            Err(e)
        }
    }
}

async fn acquire_waiting(ctx: &Ctx<'_>, c: &LockClient) -> Result<bool, Error> {
    let until = tokio::time::Instant::now() + c.settings.wait;
    let host = hostname();
    let mut sig = ctx.sig.clone();
    let mut said = false;
    loop {
        let r = tokio::select! {
            biased;
            s = sig.received() => return Err(abandoned(s)),
            r = c.acquire(&host) => r,
        };
        match r {
            Ok(already) => return Ok(already),
            Err(e) if e.retryable() && tokio::time::Instant::now() + WAIT_POLL <= until => {
                if !said {
                    tracing::info!(
                        "{e}; waiting up to {} (--lock-wait)",
                        humantime::format_duration(c.settings.wait)
                    );
                    said = true;
                }
            }
            Err(e) => return Err(Error::Slot(e)),
        }
        tokio::select! {
            biased;
            s = sig.received() => return Err(abandoned(s)),
            () = tokio::time::sleep(WAIT_POLL) => {}
        }
    }
}

fn abandoned(s: i32) -> Error {
    Error::Interrupted {
        signal: s,
        name: signals::name(s),
        state: "the wait for a slot was abandoned; nothing was changed".into(),
    }
}

/// Release with retries within the budget. Ok(whether it was held).
async fn release_retrying(c: &LockClient, id: &str) -> Result<bool, LockError> {
    let until = tokio::time::Instant::now() + RELEASE_BUDGET;
    let mut pause = Duration::from_millis(500);
    loop {
        match c.release(id, &who()).await {
            Ok(held) => return Ok(held),
            Err(e) if tokio::time::Instant::now() + pause < until => {
                tracing::warn!("releasing the slot: {e}; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Release the slot recorded in the state directory (the record says it is due first, so a
/// failure leaves it `releasing` for the next command). The report's `slot` says how it went.
pub(crate) async fn release_recorded(s: &Settings, rec: SlotRecord) -> SlotDoc {
    let mut rec = rec;
    let mut doc = SlotDoc {
        backend: rec.backend.clone(),
        group: rec.group.clone(),
        id: rec.id.clone(),
        taken_at: rec.taken_at,
        released: false,
        error: None,
        note: None,
    };
    let client = match client(s) {
        Ok(Some(c)) => c,
        Ok(None) => {
            doc.error = Some("no [lock] is configured now, so the slot cannot be released".into());
            doc.note = Some(free_hint(&rec.id));
            return doc;
        }
        Err(e) => {
            doc.error = Some(e.to_string());
            return doc;
        }
    };
    rec.state = SlotState::Releasing;
    if let Err(e) = slot::save(&s.state_dir, &rec) {
        tracing::warn!("{e}");
    }
    match release_retrying(&client, &rec.id).await {
        Ok(_) => {
            tracing::info!("slot released: group {:?}, id {:?}", rec.group, rec.id);
            if let Err(e) = slot::clear(&s.state_dir) {
                tracing::warn!("the slot was released but its record stays: {e}");
            }
            doc.released = true;
        }
        Err(e) => {
            tracing::error!("the slot could not be released: {e}; the next command or `cellctl lock release` retries");
            rec.release_error = Some(e.to_string());
            let _ = slot::save(&s.state_dir, &rec);
            doc.error = Some(e.to_string());
            doc.note = Some(free_hint(&rec.id));
        }
    }
    doc
}

fn free_hint(id: &str) -> String {
    format!("free it with `cellctl lock release {id}` (see `cellctl lock status`)")
}

/// After the run: release when the cell serves again and nothing is left to continue or undo;
/// else keep the slot and say why and how to free it.
pub(crate) async fn settle(s: &Settings, report: &mut Report, finished: bool) {
    let Ok(Some(rec)) = slot::load(&s.state_dir) else {
        return;
    };
    let serving = matches!(report.cell_left, Some(CellLeft::Running | CellLeft::Unchanged));
    if finished && serving {
        report.slot = Some(release_recorded(s, rec).await);
        return;
    }
    let why = match report.cell_left {
        Some(CellLeft::ShutDown) => "the cell is shut down",
        Some(CellLeft::Drained) => "the cell is drained",
        _ => "the run is not over (continue or undo it)",
    };
    tracing::info!("the slot stays held: {why}; {}", keep_hint(&rec.id));
    report.slot = Some(SlotDoc {
        backend: rec.backend,
        group: rec.group,
        id: rec.id.clone(),
        taken_at: rec.taken_at,
        released: false,
        error: rec.release_error,
        note: Some(format!("kept: {why}; {}", keep_hint(&rec.id))),
    });
}

fn keep_hint(id: &str) -> String {
    format!(
        "`cellctl start` or `cellctl upgrade` releases it once the cell is healthy, `cellctl resume` once a drain is undone; or free it by hand with `cellctl lock release {id}`"
    )
}

/// A release left due by an earlier command (the lock service was down): retried first.
pub(crate) async fn retry_pending(s: &Settings) -> Option<SlotDoc> {
    let rec = slot::load(&s.state_dir).ok().flatten()?;
    if rec.state != SlotState::Releasing {
        return None;
    }
    tracing::info!("an earlier release of the slot was not confirmed: retrying it");
    Some(release_recorded(s, rec).await)
}

/// For commands outside the journal (`start`): release a held slot after health passed.
pub(crate) async fn release_after_start(s: &Settings, report: &mut Report) {
    if let Ok(Some(rec)) = slot::load(&s.state_dir) {
        report.slot = Some(release_recorded(s, rec).await);
    }
}

/// The slot this cell's state directory records (for `status`), with how to free it.
pub(crate) fn recorded(s: &Settings) -> Option<SlotDoc> {
    let rec = slot::load(&s.state_dir).ok().flatten()?;
    let note = match rec.state {
        SlotState::Releasing => format!(
            "its release failed ({}); the next command retries, or `cellctl lock release {}`",
            rec.release_error.as_deref().unwrap_or("?"),
            rec.id
        ),
        SlotState::Taking => format!(
            "a take was not confirmed; `cellctl lock status` tells, `cellctl lock release {}` frees it",
            rec.id
        ),
        SlotState::Held => keep_hint(&rec.id),
    };
    Some(SlotDoc {
        backend: rec.backend,
        group: rec.group,
        id: rec.id,
        taken_at: rec.taken_at,
        released: false,
        error: rec.release_error,
        note: Some(note),
    })
}
