//! Progress while waiting: on a terminal a live line redrawn every second (time waited, time
//! left, the latest count from the tool or the API's task list); otherwise a log line when the
//! count changes and a heartbeat each minute (so a journal or CI log shows the run is alive).
//!
//! Log lines printed while the live line is drawn first clear it ([`LogWriter`]), so no stale
//! copies of the line are left in the scrollback; the next tick draws it again.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const HEARTBEAT: Duration = Duration::from_secs(60);

/// The live line is on the screen (without its newline).
static LIVE: AtomicBool = AtomicBool::new(false);

/// Where the count last came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `cell-management-tool cell --status`: jobs, with `Is Active`.
    Tool { is_active: bool },
    /// The API's task list for this cell (between tool polls).
    Api,
}

pub struct Progress {
    tty: bool,
    started: Instant,
    count: Option<(u64, Source)>,
    logged_count: Option<u64>,
    last_log: Instant,
}

fn short(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            count: None,
            logged_count: None,
            last_log: Instant::now(),
        }
    }

    /// A tool poll answered.
    pub fn update(&mut self, job_count: u64, is_active: bool, left: Duration) {
        let waited = self.started.elapsed();
        crate::output::events::progress(job_count, is_active, waited.as_secs(), left.as_secs());
        self.count = Some((job_count, Source::Tool { is_active }));
        self.show(left);
    }

    /// The API listed this cell's tasks (a count between tool polls): shown on the live line;
    /// a log gets the tool's counts only (the task list itself is logged when it changes).
    pub fn tasks(&mut self, count: u64, left: Duration) {
        self.count = Some((count, Source::Api));
        if self.tty {
            self.draw(left);
        }
    }

    /// A second passed: redraw the live line (terminal only).
    pub fn tick(&mut self, left: Duration) {
        if self.tty && self.count.is_some() {
            self.draw(left);
        }
    }

    fn show(&mut self, left: Duration) {
        let Some((count, source)) = self.count else { return };
        if self.tty {
            self.draw(left);
        } else if self.logged_count != Some(count) || self.last_log.elapsed() >= HEARTBEAT {
            let waited = short(self.started.elapsed());
            match source {
                Source::Tool { is_active } => {
                    tracing::info!(job_count = count, is_active, waited = %waited, deadline_in = %short(left), "waiting for jobs");
                }
                Source::Api => {}
            }
            self.logged_count = Some(count);
            self.last_log = Instant::now();
        }
    }

    fn draw(&self, left: Duration) {
        let Some((count, source)) = self.count else { return };
        let what = match source {
            Source::Tool { is_active: true } => format!("{count} job(s), cell still active"),
            Source::Tool { is_active: false } => format!("{count} job(s)"),
            Source::Api => format!("{count} task(s) (API)"),
        };
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r\x1b[Kwaiting: {what}; waited {}, deadline in {}",
            short(self.started.elapsed()),
            short(left)
        );
        let _ = e.flush();
        LIVE.store(true, Ordering::SeqCst);
    }

    /// End the live line so later output starts on a fresh line. (There is one live line per
    /// process, so the state is global; the method keeps call sites tied to their progress.)
    #[allow(clippy::unused_self)]
    pub fn finish(&mut self) {
        if LIVE.swap(false, Ordering::SeqCst) {
            eprintln!();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// The log's writer: stderr, after clearing a live progress line that is on the screen.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = std::io::Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        if LIVE.swap(false, Ordering::SeqCst) {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
        std::io::stderr()
    }
}
