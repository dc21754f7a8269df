//! SIGINT/SIGTERM/SIGHUP: the first is handed to the procedure (which rolls back, or finishes a
//! shutdown that has begun); the second exits at once, leaving the journal for `drain`/`resume`.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::watch;

use crate::model::outcome::CommandName;
use crate::output::report::Report;

pub fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

#[derive(Clone)]
pub struct SignalWatch {
    rx: watch::Receiver<Option<i32>>,
}

impl SignalWatch {
    /// The first signal received, if any (does not wait).
    pub fn pending(&self) -> Option<i32> {
        *self.rx.borrow()
    }

    /// Wait for the first signal (returns at once if one already came).
    pub async fn received(&mut self) -> i32 {
        loop {
            if let Some(s) = *self.rx.borrow_and_update() {
                return s;
            }
            if self.rx.changed().await.is_err() {
                // The handler thread is gone: no signal will ever come.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The run acts on a signal before shutdown: it undoes what it changed.
pub fn log_undo(sig: i32) {
    tracing::warn!("{}: undoing this run's changes", name(sig));
}

/// Install the handler thread. `journal_hint` is printed if we must exit at once.
pub fn install(command: CommandName, json: bool, journal_hint: String) -> std::io::Result<SignalWatch> {
    let (tx, rx) = watch::channel(None);
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut first = None;
        for sig in signals.forever() {
            match first {
                None => {
                    first = Some(sig);
                    // What is done about it depends on the step: the run says so when it acts.
                    tracing::warn!(
                        "{} received: stopping safely (a second signal exits at once)",
                        name(sig)
                    );
                    let _ = tx.send(Some(sig));
                }
                Some(_) => exit_now(command, sig, json, &journal_hint),
            }
        }
    })?;
    Ok(SignalWatch { rx })
}

fn exit_now(command: CommandName, sig: i32, json: bool, journal_hint: &str) -> ! {
    eprintln!(
        "cellctl: second {} - exiting at once; the journal in {journal_hint} is kept: `cellctl status` names the command that continues or undoes the run",
        name(sig)
    );
    Report::emit_emergency(command, sig, name(sig), journal_hint, json);
    std::process::exit(128 + sig)
}
