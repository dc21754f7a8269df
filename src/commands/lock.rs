//! `cellctl lock status` / `cellctl lock release [ID]`: the group's slots as the lock service
//! says, this cell's recorded slot, and freeing one (a stuck holder's: kured #137, #847) with
//! the operator named in the semaphore's history and in the report.

use crate::cli::LockAction;
use crate::config::Settings;
use crate::engine::slot;
use crate::error::Error;
use crate::model::outcome::CommandName;
use crate::output::report::{LockDoc, Report};
use crate::store::slot as local;

pub(crate) async fn lock(s: &Settings, action: LockAction) -> (Report, Result<(), Error>) {
    match run(s, action).await {
        Ok(rep) => (rep, Ok(())),
        Err(e) => (Report::failed(CommandName::Lock, &e), Err(e)),
    }
}

async fn run(s: &Settings, action: LockAction) -> Result<Report, Error> {
    let Some(c) = slot::client(s)? else {
        return Err(Error::Config(crate::config::ConfigError::Invalid(
            "no lock is configured: set [lock] etcd or fleetlock in the config (or --lock-etcd / --lock-fleetlock)"
                .into(),
        )));
    };
    let local_rec = local::load(&s.state_dir).map_err(|e| Error::Config(crate::config::ConfigError::Invalid(e)))?;
    let mut doc = LockDoc {
        action: "status",
        backend: c.settings.backend,
        url: c.settings.url.clone(),
        group: c.settings.group.clone(),
        id: c.id.clone(),
        listable: false,
        total_slots: None,
        holders: vec![],
        history: vec![],
        local: local_rec.clone(),
        released_id: None,
        was_held: None,
        by: None,
    };
    if let LockAction::Release { id } = action {
        let id = id.unwrap_or_else(|| c.id.clone());
        let by = slot::who();
        let held = c.release(&id, &by).await.map_err(Error::Slot)?;
        tracing::info!("released the slot of {id:?} in group {:?} ({by})", c.settings.group);
        if id == c.id {
            // This cell's own slot: its record goes too.
            local::clear(&s.state_dir).map_err(|e| {
                Error::Journal(crate::store::journal::JournalError::Write {
                    path: local::slot_path(&s.state_dir).display().to_string(),
                    source: e,
                })
            })?;
            doc.local = None;
        }
        doc.action = "release";
        doc.released_id = Some(id);
        doc.was_held = Some(held);
        doc.by = Some(by);
    }
    let st = c.status().await.map_err(Error::Slot)?;
    doc.listable = st.listable;
    doc.total_slots = st.total_slots;
    doc.holders = st.holders;
    doc.history = st.history;
    let mut rep = Report::new(CommandName::Lock);
    rep.lock = Some(doc);
    Ok(rep)
}

/// The human form of `lock status` / `lock release`, on stdout.
pub(crate) fn text(rep: &Report) -> String {
    use std::fmt::Write;
    let Some(d) = &rep.lock else { return String::new() };
    let mut t = String::new();
    if let (Some(id), Some(held)) = (&d.released_id, d.was_held) {
        let what = if held {
            "released"
        } else {
            "held no slot (nothing to release)"
        };
        let _ = writeln!(t, "{id}: {what}");
    }
    let _ = writeln!(
        t,
        "group {} at {} ({}), this cell's id {}",
        d.group,
        d.url,
        d.backend.as_str(),
        d.id
    );
    if d.listable {
        let total = d.total_slots.map_or("?".into(), |n| n.to_string());
        let _ = writeln!(t, "slots: {} of {total} held", d.holders.len());
        for h in &d.holders {
            let _ = writeln!(t, "  {h}");
        }
    } else {
        let _ = writeln!(
            t,
            "holders: the FleetLock protocol cannot list them; ask the server (e.g. airlock's etcd key)"
        );
    }
    if let Some(l) = &d.local {
        let _ = writeln!(
            t,
            "this cell's record: slot {:?} for run {} ({}){}",
            l.state,
            l.run_id.as_deref().unwrap_or("?"),
            l.command,
            l.release_error
                .as_ref()
                .map(|e| format!(", last release failed: {e}"))
                .unwrap_or_default()
        );
    }
    t
}
