//! `cellctl report [ID|--last]` and `cellctl report flush`.

use crate::adapters::webhook::{self, Outbox, Summary};
use crate::cli::{ReportAction, ReportArgs};
use crate::config::{ConfigError, Settings};
use crate::error::{Error, code};
use crate::model::outcome::{CommandName, Outcome};
use crate::output::report::Report;
use crate::output::{human, metrics};
use crate::store::reports;

/// Returns the exit code; the document is printed here.
pub(crate) async fn report(s: &Settings, args: ReportArgs) -> i32 {
    match args.action {
        Some(ReportAction::Flush) => flush(s).await,
        None if args.list => list(s),
        None => show(s, if args.last { None } else { args.run_id.as_deref() }),
    }
}

async fn flush(s: &Settings) -> i32 {
    let outbox = Outbox::new(&s.state_dir, s.webhook.outbox_max);
    let mut rep = Report::new(CommandName::Report);
    rep.outcome = Outcome::Flushed;
    let sum = if outbox.entries().is_empty() {
        Summary::default()
    } else {
        // Entries carry their own URL; signing needs this host's secret.
        let mut w = s.webhook.clone();
        if w.secret.is_none() {
            let e = Error::Config(ConfigError::Invalid(
                "the outbox holds reports but no signing secret is configured: set [report] secret_file".into(),
            ));
            Report::failed(CommandName::Report, &e).emit(s.json);
            return e.exit_code();
        }
        w.urls = vec![];
        let _guard = webhook::FLUSH.lock().await;
        w.flush(&outbox, tokio::time::Instant::now() + s.webhook.budget).await
    };
    let complete = sum.complete();
    if !s.json {
        println!(
            "{} delivered, {} still queued, {} rejected (kept in {})",
            sum.delivered.len(),
            sum.queued,
            sum.rejected.len(),
            outbox.dir.display()
        );
    }
    rep.delivery = Some(sum);
    if !complete {
        let e = Error::Undelivered("some reports are still undelivered (queued or rejected)".into());
        rep.fail(&e);
    }
    if let Some(path) = &s.metrics_file {
        metrics::update(path, &s.state_dir, &outbox, None, None);
    }
    rep.emit(s.json);
    rep.exit_code
}

fn list(s: &Settings) -> i32 {
    match reports::list(&s.state_dir) {
        Ok(all) => {
            if s.json {
                println!("{}", serde_json::json!({ "reports": all }));
            } else {
                print!("{}", human::report_list(&all));
            }
            code::OK
        }
        Err(err) => {
            let e = Error::Usage(err.to_string());
            Report::failed(CommandName::Report, &e).emit(s.json);
            e.exit_code()
        }
    }
}

fn show(s: &Settings, id: Option<&str>) -> i32 {
    match reports::load(&s.state_dir, id) {
        Ok(v) => {
            if s.json {
                println!("{v}");
            } else {
                print!("{}", human::human(&v));
            }
            code::OK
        }
        Err(err) => {
            let e = Error::Usage(format!("{err}; `cellctl report --last` shows the newest"));
            Report::failed(CommandName::Report, &e).emit(s.json);
            e.exit_code()
        }
    }
}
