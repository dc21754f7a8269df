//! SIGINT/SIGTERM/SIGHUP: the first is handed to the procedure (which rolls back, or finishes a
//! shutdown that has begun); the second exits at once, leaving the journal for `drain`/`resume`.

use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::watch;

/// Set once the final document is on stdout, so an emergency exit does not print a second one.
pub static REPORT_PRINTED: AtomicBool = AtomicBool::new(false);

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

    /// A watch that never fires (tests, commands that need no handling).
    pub fn none() -> Self {
        let (tx, rx) = watch::channel(None);
        std::mem::forget(tx);
        SignalWatch { rx }
    }
}

/// Install the handler thread. `journal_hint` is printed if we must exit at once.
pub fn install(json: bool, journal_hint: String) -> std::io::Result<SignalWatch> {
    let (tx, rx) = watch::channel(None);
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut first = None;
        for sig in signals.forever() {
            match first {
                None => {
                    first = Some(sig);
                    tracing::warn!(
                        "{} received: undoing this run's changes (a second signal exits at once)",
                        name(sig)
                    );
                    let _ = tx.send(Some(sig));
                }
                Some(_) => exit_now(sig, json, &journal_hint),
            }
        }
    })?;
    Ok(SignalWatch { rx })
}

fn exit_now(sig: i32, json: bool, journal_hint: &str) -> ! {
    eprintln!(
        "cellctl: second {} - exiting at once; the journal in {journal_hint} is kept: `cellctl drain` continues the run, `cellctl resume` undoes it",
        name(sig)
    );
    if json && !REPORT_PRINTED.swap(true, Ordering::SeqCst) {
        let doc = serde_json::json!({
            "schema_version": crate::report::SCHEMA_VERSION,
            "outcome": "interrupted",
            "exit_code": 128 + sig,
            "cell_left": "unknown",
            "error": {"kind": "interrupted", "message": format!("second {}: exited at once; journal kept in {journal_hint}", name(sig))},
        });
        println!("{doc}");
    }
    std::process::exit(128 + sig)
}
