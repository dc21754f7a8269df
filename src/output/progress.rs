//! Progress while waiting: a live line on a terminal; otherwise a log line when the job count
//! changes and a heartbeat each minute (so a journal or CI log shows the run is alive).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const HEARTBEAT: Duration = Duration::from_secs(60);

pub struct Progress {
    tty: bool,
    started: Instant,
    last_count: Option<u64>,
    last_log: Instant,
    drawn: bool,
}

fn short(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_count: None,
            last_log: Instant::now(),
            drawn: false,
        }
    }

    pub fn update(&mut self, job_count: u64, is_active: bool, left: Duration) {
        let waited = self.started.elapsed();
        crate::output::events::progress(job_count, is_active, waited.as_secs(), left.as_secs());
        if self.tty {
            let mut e = std::io::stderr().lock();
            let _ = write!(
                e,
                "\r\x1b[Kwaiting: {job_count} job(s), active={is_active}, waited {}, deadline in {}",
                short(waited),
                short(left)
            );
            let _ = e.flush();
            self.drawn = true;
        } else if self.last_count != Some(job_count) || self.last_log.elapsed() >= HEARTBEAT {
            tracing::info!(job_count, is_active, waited = %short(waited), deadline_in = %short(left), "waiting for jobs");
            self.last_log = Instant::now();
        }
        self.last_count = Some(job_count);
    }

    /// End the live line so later output starts on a fresh line.
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
