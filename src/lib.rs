//! cellctl: take one VMware Cloud Director cell safely out of service, upgrade it, report back.
//!
//! `main.rs` only calls [`run`]; each concern lives in its own module.

pub mod api;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod deliver;
pub mod drain;
pub mod error;
pub mod events;
pub mod exec;
pub mod health;
pub mod http;
pub mod install;
pub mod journal;
pub mod metrics;
pub mod package;
pub mod procedure;
pub mod progress;
pub mod report;
pub mod service;
pub mod signals;
pub mod trust;
pub mod upgrade;
pub mod vendor;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command, ReportAction, ReportArgs};
use crate::config::Settings;
use crate::deliver::Outbox;
use crate::error::{Error, code};
use crate::journal::now_rfc3339;
use crate::report::{CellDoc, Report};
use crate::signals::SignalWatch;

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CELLCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd stderr already reaches the journal; use one sink, natively if we can.
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    let registry = tracing_subscriber::registry().with(filter);
    if let Some(j) = journald {
        let _ = registry.with(j).try_init();
    } else {
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .without_time()
            .compact();
        let _ = registry.with(fmt).try_init();
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Status => "status",
        Command::Drain(_) => "drain",
        Command::Resume => "resume",
        Command::Install(_) => "install",
        Command::Start(_) => "start",
        Command::Upgrade(_) => "upgrade",
        Command::Report(_) => "report",
        Command::RunLogged { .. } => "run-logged",
        Command::Man { .. } => "man",
        Command::Completions { .. } => "completions",
    }
}

/// Parse arguments, run the command, print its document; returns the process exit code.
pub fn run() -> i32 {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => code::OK,
                _ => code::USAGE,
            };
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return code::USAGE;
        }
    };
    match cli.command {
        // No config, no logging: the wrapper must work even with a broken config mid-upgrade.
        Command::RunLogged {
            log,
            status,
            pid_file,
            answers,
            command,
        } => {
            let (program, args) = command.split_first().expect("clap requires the command");
            return install::run_logged(&log, &status, &pid_file, &answers, program, args);
        }
        Command::Man { out_dir } => {
            return match write_man(&out_dir) {
                Ok(()) => code::OK,
                Err(e) => {
                    eprintln!("cellctl: {e}");
                    e.exit_code()
                }
            };
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "cellctl", &mut std::io::stdout());
            return code::OK;
        }
        _ => {}
    }
    init_logging();
    let name = command_name(&cli.command);
    let started_at = now_rfc3339();
    let (settings, file, path) = match config::resolve(&cli.global) {
        Ok(x) => x,
        Err(e) => {
            let e = Error::from(e);
            let mut rep = Report::failed(name, &e);
            if name != "status" && name != "report" {
                rep.run_id = Some(journal::new_run_id());
                // Still leave a record where the operator said state lives.
                if let Some(sd) = &cli.global.state_dir
                    && let Err(err) = report::save(sd, &rep, 50)
                {
                    tracing::warn!("could not save the report: {err}");
                }
            }
            rep.emit(cli.global.json);
            return e.exit_code();
        }
    };
    let webhook = settings.webhook.enabled().then(|| {
        (
            settings.webhook.clone(),
            Outbox::new(&settings.state_dir, settings.webhook.outbox_max),
        )
    });
    events::init(settings.events, webhook);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cellctl: cannot start the runtime: {e}");
            return code::INTERNAL;
        }
    };
    rt.block_on(async move {
        match cli.command {
            Command::Status => {
                let (rep, res) = drain::status(&settings).await;
                if !settings.json && res.is_ok() {
                    print!("{}", rep.status_text());
                }
                rep.emit(settings.json);
                res.map(|_| code::OK).unwrap_or_else(|e| e.exit_code())
            }
            Command::Report(args) => report_command(&settings, args).await,
            cmd => {
                let sig = match signals::install(settings.json, settings.state_dir.display().to_string()) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("cellctl: cannot handle signals: {e}");
                        return code::INTERNAL;
                    }
                };
                write_metrics(&settings, None, Some((name, &started_at)));
                let flusher = tokio::spawn(events::background_flusher(settings.webhook.budget));
                let (mut rep, res) = run_command(cmd, &settings, &file, &path, sig).await;
                flusher.abort();
                if rep.started_at.is_none() {
                    rep.started_at = Some(started_at);
                }
                finish_run(&settings, &mut rep).await;
                if events::stdout_enabled() {
                    rep.emit(false);
                    events::report(serde_json::to_value(&rep).expect("report serializes"));
                } else {
                    rep.emit(settings.json);
                }
                res.map(|_| code::OK).unwrap_or_else(|e| e.exit_code())
            }
        }
    })
}

async fn run_command(
    cmd: Command,
    settings: &Settings,
    file: &config::FileConfig,
    path: &Option<std::path::PathBuf>,
    sig: SignalWatch,
) -> (Report, Result<(), Error>) {
    let name = command_name(&cmd);
    let fail = |e: Error| (Report::failed(name, &e), Err(e));
    match cmd {
        Command::Drain(args) => match config::resolve_drain(&args, file, path) {
            Ok(d) => drain::drain(settings, &d, sig).await,
            Err(e) => fail(e.into()),
        },
        Command::Resume => drain::resume(settings, sig).await,
        Command::Install(a) => {
            let o = upgrade::UpgradeOptions {
                command: "install",
                package: a.package.or(file.upgrade.package.clone()),
                pkg: cli::PackageArgs {
                    sha256: a.pkg.sha256.clone().or(file.upgrade.sha256.clone()),
                    ..a.pkg
                },
                db_upgrade: false,
                drain: None,
                start: false,
                health_deadline: settings.health_deadline,
            };
            upgrade::upgrade(settings, &o, sig).await
        }
        Command::Start(a) => {
            let deadline = a.health_deadline.map(Into::into).unwrap_or(settings.health_deadline);
            upgrade::start(settings, deadline, sig).await
        }
        Command::Upgrade(a) => {
            if a.drain.no_shutdown {
                return fail(Error::Usage(
                    "upgrade needs the cell shut down: --no-shutdown does not apply".into(),
                ));
            }
            let mut d = match config::resolve_drain(&a.drain, file, path) {
                Ok(d) => d,
                Err(e) => return fail(e.into()),
            };
            d.shutdown = true;
            let o = upgrade::UpgradeOptions {
                command: "upgrade",
                package: a.package.or(file.upgrade.package.clone()),
                pkg: cli::PackageArgs {
                    sha256: a.pkg.sha256.clone().or(file.upgrade.sha256.clone()),
                    ..a.pkg
                },
                db_upgrade: a.db_upgrade || file.upgrade.db_upgrade.unwrap_or(false),
                drain: Some(d),
                start: true,
                health_deadline: a
                    .start
                    .health_deadline
                    .map(Into::into)
                    .unwrap_or(settings.health_deadline),
            };
            upgrade::upgrade(settings, &o, sig).await
        }
        other => fail(Error::Internal(format!(
            "{} is not a run command",
            command_name(&other)
        ))),
    }
}

/// Every run ends here: the report is saved, delivered (within the budget, through the
/// outbox, older queued ones too), and the metrics written. Delivery never changes the outcome.
async fn finish_run(s: &Settings, rep: &mut Report) {
    let run_id = rep.run_id.get_or_insert_with(journal::new_run_id).clone();
    // A continued run already has a report from an earlier invocation: this one gets its own id.
    let report_id = if report::reports_dir(&s.state_dir)
        .join(format!("{run_id}.json"))
        .exists()
    {
        journal::new_run_id()
    } else {
        run_id.clone()
    };
    rep.report_id = Some(report_id.clone());
    if rep.ended_at.is_none() {
        rep.ended_at = Some(now_rfc3339());
    }
    rep.cell = Some(CellDoc {
        host: report::hostname(),
        vcd_home: s.vcd_home.display().to_string(),
        service: s.service.clone(),
    });
    if let Err(e) = report::save(&s.state_dir, rep, s.keep_reports) {
        tracing::warn!("could not save the report: {e}");
    }
    let outbox = Outbox::new(&s.state_dir, s.webhook.outbox_max);
    if s.webhook.enabled() {
        let body = serde_json::to_string(&*rep).expect("report serializes");
        let mut warnings = vec![];
        for e in s
            .webhook
            .entries_for(&format!("{report_id}-report"), "report", &run_id, &body)
        {
            if let Err(err) = outbox.push(&e) {
                tracing::warn!("{err}");
                warnings.push(err.to_string());
            }
        }
        let _guard = deliver::FLUSH.lock().await;
        let mut sum = s
            .webhook
            .flush(&outbox, tokio::time::Instant::now() + s.webhook.budget)
            .await;
        sum.warnings.extend(warnings);
        if !sum.complete() {
            tracing::warn!(
                queued = sum.queued,
                rejected = sum.rejected.len(),
                "report delivery incomplete: queued reports go with the next run or `cellctl report flush`"
            );
        }
        rep.delivery = Some(sum);
        if let Err(e) = report::save(&s.state_dir, rep, s.keep_reports) {
            tracing::warn!("could not save the report: {e}");
        }
    }
    write_metrics(s, Some(&serde_json::to_value(&*rep).expect("report serializes")), None);
}

/// `last`: the run just finished; else the newest saved report is the last run.
fn write_metrics(s: &Settings, last: Option<&serde_json::Value>, in_progress: Option<(&str, &str)>) {
    let Some(path) = &s.metrics_file else { return };
    let stored = if last.is_none() {
        report::load(&s.state_dir, None).ok()
    } else {
        None
    };
    let outbox = Outbox::new(&s.state_dir, s.webhook.outbox_max).size();
    let text = metrics::render(last.or(stored.as_ref()), in_progress.map(|(c, t)| (c, "", t)), outbox);
    if let Err(e) = metrics::write(path, &text) {
        tracing::warn!("could not write metrics to {}: {e}", path.display());
    }
}

async fn report_command(s: &Settings, args: ReportArgs) -> i32 {
    match args.action {
        Some(ReportAction::Flush) => {
            let outbox = Outbox::new(&s.state_dir, s.webhook.outbox_max);
            let mut rep = Report::new("report");
            rep.outcome = "flushed".into();
            let pending = outbox.entries();
            let sum = if pending.is_empty() {
                deliver::Summary::default()
            } else {
                // Entries carry their own URL; signing needs this host's secret.
                let mut w = s.webhook.clone();
                if w.secret.is_none() {
                    let e = Error::Config(config::ConfigError::Invalid(
                        "the outbox holds reports but no signing secret is configured: set [report] secret_file".into(),
                    ));
                    let rep = Report::failed("report", &e);
                    rep.emit(s.json);
                    return e.exit_code();
                }
                w.urls = vec![];
                let _guard = deliver::FLUSH.lock().await;
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
            write_metrics(s, None, None);
            rep.emit(s.json);
            rep.exit_code
        }
        None => {
            let id = if args.last { None } else { args.run_id.as_deref() };
            match report::load(&s.state_dir, id) {
                Ok(v) => {
                    if s.json {
                        println!("{v}");
                    } else {
                        print!("{}", report::human(&v));
                    }
                    code::OK
                }
                Err(msg) => {
                    let e = Error::Usage(format!("{msg}; `cellctl report --last` shows the newest"));
                    Report::failed("report", &e).emit(s.json);
                    e.exit_code()
                }
            }
        }
    }
}

fn write_man(dir: &std::path::Path) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Usage(format!("cannot write man page to {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let cmd = Cli::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf).map_err(io)?;
    std::fs::write(dir.join("cellctl.1"), buf).map_err(io)
}
