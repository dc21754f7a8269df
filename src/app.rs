//! The composition root: parse the command line, resolve settings, run the command on the
//! engine, and end every run the same way (report saved, delivered, metrics written, document
//! printed). `main.rs` calls [`run`].

use clap::{CommandFactory, FromArgMatches};

use crate::adapters::host::hostname;
use crate::adapters::install;
use crate::adapters::webhook::{self, Outbox};
use crate::cli::{self, Cli, Command};
use crate::commands;
use crate::commands::upgrade::{Upgrade, UpgradeOptions};
use crate::config::{self, Settings};
use crate::engine::lifecycle::execute;
use crate::engine::signals::{self, SignalWatch};
use crate::error::{Error, code};
use crate::model::outcome::CommandName;
use crate::model::time::{Timestamp, new_run_id};
use crate::output::report::{CellDoc, Report};
use crate::output::{events, metrics};
use crate::store::journal::JournalError;
use crate::store::reports;

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CELLCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd stderr already reaches the journal; use one sink, natively if we can.
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    let registry = tracing_subscriber::registry().with(filter);
    if let Some(j) = journald {
        let _ = registry.with(j).try_init();
    } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        // A person watching: no timestamps, and the live progress line is cleared first.
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(crate::output::progress::LogWriter)
            .with_target(false)
            .without_time()
            .compact();
        let _ = registry.with(fmt).try_init();
    } else {
        // nohup, tee, cron, an orchestrator: every line says when (RFC 3339, UTC).
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .compact();
        let _ = registry.with(fmt).try_init();
    }
}

/// The command's name, for the commands that end with a report.
fn command_name(c: &Command) -> Option<CommandName> {
    Some(match c {
        Command::Status => CommandName::Status,
        Command::Drain(_) => CommandName::Drain,
        Command::Resume => CommandName::Resume,
        Command::Install(_) => CommandName::Install,
        Command::Start(_) => CommandName::Start,
        Command::Upgrade(_) => CommandName::Upgrade,
        Command::Report(_) => CommandName::Report,
        Command::Lock(_) => CommandName::Lock,
        Command::Preflight(_) => CommandName::Preflight,
        Command::DbUpgrade(_) => CommandName::DbUpgrade,
        Command::Maintain(_) => CommandName::Maintain,
        Command::RunLogged { .. } | Command::Man { .. } | Command::Completions { .. } => return None,
    })
}

/// Parse arguments, run the command, print its document; returns the process exit code.
pub fn run() -> i32 {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let Some(name) = command_name(&cli.command) else {
        return tool_command(cli.command);
    };
    init_logging();
    let started_at = Timestamp::now();
    let (settings, file, path) = match config::resolve(&cli.global) {
        Ok(x) => x,
        Err(e) => return config_failed(name, &cli.global, &e.into()),
    };
    let outbox = settings.webhook.enabled().then(|| {
        (
            settings.webhook.clone(),
            Outbox::new(&settings.state_dir, settings.webhook.outbox_max),
        )
    });
    events::init(settings.events, outbox);
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
                let (rep, res) = commands::status::status(&settings).await;
                if !settings.json && res.is_ok() {
                    print!("{}", rep.status_text());
                }
                rep.emit(settings.json);
                res.map_or_else(|e| e.exit_code(), |()| code::OK)
            }
            Command::Report(args) => commands::report::report(&settings, args).await,
            Command::Lock(args) => {
                let (rep, res) = commands::lock::lock(&settings, args.action).await;
                if !settings.json && res.is_ok() {
                    print!("{}", commands::lock::text(&rep));
                }
                rep.emit(settings.json);
                res.map_or_else(|e| e.exit_code(), |()| code::OK)
            }
            Command::Preflight(a) => {
                let o = commands::preflight::PreflightOptions {
                    package: a.package.or_else(|| file.upgrade.package.clone()),
                    pkg: cli::PackageArgs {
                        sha256: a.sha256.or_else(|| file.upgrade.sha256.clone()),
                        allow_downgrade: a.allow_downgrade,
                        package_version: a.package_version,
                        retry_install: false,
                    },
                };
                let (rep, res) = commands::preflight::preflight(&settings, &o).await;
                if !settings.json {
                    print!("{}", rep.preflight_text());
                }
                rep.emit(settings.json);
                res.map_or_else(|e| e.exit_code(), |()| code::OK)
            }
            cmd => run_and_report(name, cmd, &settings, &file, path.as_ref(), started_at).await,
        }
    })
}

fn parse() -> Result<Cli, i32> {
    let matches = Cli::command().try_get_matches().map_err(|e| usage_failed(&e))?;
    Cli::from_arg_matches(&matches).map_err(|e| usage_failed(&e))
}

/// A command line clap refused. A value that came from a `CELLCTL_*` variable is a bad setting
/// (exit 3) named as such, not a flag the operator never typed; with `--json` (or
/// `CELLCTL_JSON`) the refusal is still exactly one document on stdout.
fn usage_failed(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return code::OK;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return code::USAGE;
        }
        _ => {}
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let detail = cli::clap_message(e);
    let err = if let Some((var, value)) = cli::from_environment(e, &args) {
        Error::Config(config::ConfigError::Invalid(format!(
            "{var}={value:?} (environment): {detail}; fix or unset {var}"
        )))
    } else {
        let _ = e.print();
        Error::Usage(detail)
    };
    let rep = Report::failed(cli::command_named(&args), &err);
    if cli::json_wanted(&args) {
        rep.emit(true);
    } else if matches!(err, Error::Config(_)) {
        rep.emit(false);
    }
    err.exit_code()
}

/// Commands for packaging and the install unit: no config, no logging, so that the wrapper
/// works even with a broken config mid-upgrade.
fn tool_command(cmd: Command) -> i32 {
    match cmd {
        Command::RunLogged {
            log,
            status,
            pid_file,
            answers,
            command,
        } => {
            let (program, args) = command.split_first().expect("clap requires the command");
            install::run_logged(&log, &status, &pid_file, &answers, program, args)
        }
        Command::Man { out_dir } => match write_man(&out_dir) {
            Ok(()) => code::OK,
            Err(e) => {
                eprintln!("cellctl: {e}");
                e.exit_code()
            }
        },
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "cellctl", &mut std::io::stdout());
            code::OK
        }
        _ => code::INTERNAL,
    }
}

/// Bad settings: the document says so, and a command that may change the cell still leaves a
/// record where the operator said state lives.
fn config_failed(name: CommandName, g: &cli::GlobalArgs, e: &Error) -> i32 {
    let mut rep = Report::failed(name, e);
    if name.changes_the_cell() {
        rep.run_id = Some(new_run_id());
        if let Some(sd) = &g.state_dir
            && let Err(err) = rep.save(sd, 50)
        {
            tracing::warn!("could not save the report: {err}");
        }
    }
    rep.emit(g.json);
    e.exit_code()
}

async fn run_and_report(
    name: CommandName,
    cmd: Command,
    settings: &Settings,
    file: &config::FileConfig,
    path: Option<&std::path::PathBuf>,
    started_at: Timestamp,
) -> i32 {
    let sig = match signals::install(name, settings.json, settings.state_dir.display().to_string()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cellctl: cannot handle signals: {e}");
            return code::INTERNAL;
        }
    };
    let flusher = tokio::spawn(events::background_flusher(settings.webhook.budget));
    let (mut rep, res) = run_command(cmd, settings, file, path, sig).await;
    flusher.abort();
    rep.started_at.get_or_insert(started_at);
    // A run refused by the lock is not this host's last run: another one is under way, and its
    // report, metrics and deliveries are its own.
    let refused = matches!(res, Err(Error::Journal(JournalError::Locked { .. })));
    if refused {
        rep.ended_at.get_or_insert_with(Timestamp::now);
    } else {
        finish_run(settings, &mut rep).await;
    }
    if events::stdout_enabled() {
        rep.emit(false);
        events::report(&serde_json::to_value(&rep).expect("report serializes"));
    } else {
        rep.emit(settings.json);
    }
    res.map_or_else(|e| e.exit_code(), |()| code::OK)
}

fn upgrade_options(
    command: CommandName,
    package: Option<std::path::PathBuf>,
    pkg: cli::PackageArgs,
    file: &config::FileConfig,
    reboot: config::RebootSettings,
) -> UpgradeOptions {
    UpgradeOptions {
        command,
        package: package.or_else(|| file.upgrade.package.clone()),
        pkg: cli::PackageArgs {
            sha256: pkg.sha256.clone().or_else(|| file.upgrade.sha256.clone()),
            ..pkg
        },
        db_upgrade: false,
        drain: None,
        start: false,
        health_deadline: std::time::Duration::ZERO,
        reboot,
    }
}

async fn run_command(
    cmd: Command,
    settings: &Settings,
    file: &config::FileConfig,
    path: Option<&std::path::PathBuf>,
    sig: SignalWatch,
) -> (Report, Result<(), Error>) {
    let name = command_name(&cmd).unwrap_or(CommandName::Status);
    let fail = |e: Error| (Report::failed(name, &e), Err(e));
    let path = path.map(std::path::PathBuf::as_path);
    match cmd {
        Command::Drain(args) => match config::resolve_drain(&args, file, path) {
            Ok(d) => execute(settings, &commands::drain::Drain(&d), sig).await,
            Err(e) => fail(e.into()),
        },
        Command::Resume => execute(settings, &commands::resume::Resume, sig).await,
        Command::DbUpgrade(a) => {
            let o = commands::db_upgrade::DbUpgradeOptions {
                retry: a.retry_install,
                ask_api: settings.redundancy_guard,
            };
            execute(settings, &commands::db_upgrade::DbUpgrade(&o), sig).await
        }
        Command::Install(a) => {
            // `install` never reboots; an appliance's records the boot id it ends in, so that
            // `cellctl start` can tell whether the appliance has rebooted since.
            let with = cli::RebootArgs {
                boot_id_file: a.boot_id_file.clone(),
                ..cli::RebootArgs::default()
            };
            let reboot = match config::resolve_reboot(&with, file, path) {
                Ok(r) => r,
                Err(e) => return fail(e.into()),
            };
            let o = UpgradeOptions {
                health_deadline: settings.health_deadline,
                ..upgrade_options(CommandName::Install, a.package, a.pkg, file, reboot)
            };
            execute(settings, &Upgrade(&o), sig).await
        }
        Command::Start(a) => start(a, settings, file, path, sig).await,
        Command::Upgrade(a) => {
            if a.drain.no_shutdown {
                return fail(Error::Usage(
                    "upgrade needs the cell shut down: --no-shutdown does not apply".into(),
                ));
            }
            let (mut d, reboot) = match (
                config::resolve_drain(&a.drain, file, path),
                config::resolve_reboot(&a.reboot_with, file, path),
            ) {
                (Ok(d), Ok(r)) => (d, r),
                (Err(e), _) | (_, Err(e)) => return fail(e.into()),
            };
            d.shutdown = true;
            if a.start
                .health_deadline
                .map_or(settings.health_deadline, Into::into)
                .is_zero()
            {
                return fail(zero_health_deadline());
            }
            let o = UpgradeOptions {
                db_upgrade: a.db_upgrade || file.upgrade.db_upgrade.unwrap_or(false),
                drain: Some(d),
                start: true,
                health_deadline: a.start.health_deadline.map_or(settings.health_deadline, Into::into),
                ..upgrade_options(CommandName::Upgrade, a.package, a.pkg, file, reboot)
            };
            execute(settings, &Upgrade(&o), sig).await
        }
        Command::Maintain(a) => maintain(a, settings, file, path, sig).await,
        other => fail(Error::Internal(format!("{other:?} is not a run command"))),
    }
}

/// `cellctl start`: as any cell, or, on an appliance whose install awaits its reboot, the
/// reboot run (journaled, through the upgrade procedure).
async fn start(
    a: cli::StartCommandArgs,
    settings: &Settings,
    file: &config::FileConfig,
    path: Option<&std::path::Path>,
    sig: SignalWatch,
) -> (Report, Result<(), Error>) {
    let fail = |e: Error| (Report::failed(CommandName::Start, &e), Err(e));
    let deadline = a.start.health_deadline.map_or(settings.health_deadline, Into::into);
    if deadline.is_zero() {
        return fail(zero_health_deadline());
    }
    let reboot = match config::resolve_reboot(&a.reboot_with, file, path) {
        Ok(r) => r,
        Err(e) => return fail(e.into()),
    };
    match commands::appliance::reboot_pending(settings, &reboot) {
        Ok(false) => commands::start::start(settings, deadline, sig).await,
        // An appliance's install awaits its reboot: a run of its own, journaled.
        Ok(true) => {
            let o = UpgradeOptions {
                package: None,
                start: true,
                health_deadline: deadline,
                ..upgrade_options(CommandName::Start, None, cli::PackageArgs::default(), file, reboot)
            };
            execute(settings, &Upgrade(&o), sig).await
        }
        Err(e) => fail(e),
    }
}

/// `cellctl maintain`: its options resolved; `--continue` with nothing to continue ends here,
/// before the lock, the password or the cell are touched (the boot unit runs it every boot).
async fn maintain(
    a: cli::MaintainArgs,
    settings: &Settings,
    file: &config::FileConfig,
    path: Option<&std::path::Path>,
    sig: SignalWatch,
) -> (Report, Result<(), Error>) {
    use crate::commands::maintain::{Continuation, Maintain, MaintainOptions, continuation};
    use crate::model::maintain::RebootPolicy;
    let fail = |e: Error| (Report::failed(CommandName::Maintain, &e), Err(e));
    if a.drain.no_shutdown {
        return fail(Error::Usage(
            "maintain runs its COMMAND on a shut-down cell: --no-shutdown does not apply".into(),
        ));
    }
    if a.command.is_empty() && !a.continue_run {
        return fail(Error::Usage(
            "no COMMAND: give `cellctl maintain [OPTIONS] -- COMMAND [ARGS...]`, or `cellctl maintain --continue` for the recorded run".into(),
        ));
    }
    let health_deadline = a.start.health_deadline.map_or(settings.health_deadline, Into::into);
    if health_deadline.is_zero() {
        return fail(zero_health_deadline());
    }
    let (mut d, m) = match (
        config::resolve_drain(&a.drain, file, path),
        config::resolve_maintain(&a, file, path),
    ) {
        (Ok(d), Ok(m)) => (d, m),
        (Err(e), _) | (_, Err(e)) => return fail(e.into()),
    };
    d.shutdown = true;
    if a.continue_run {
        match continuation(settings, a.at_boot) {
            Ok(Continuation::Nothing(why)) => {
                let mut rep = Report::new(CommandName::Maintain);
                rep.outcome = crate::model::outcome::Outcome::NothingToContinue;
                tracing::debug!("{why}");
                return (rep, Ok(()));
            }
            Ok(Continuation::Maintain) => {}
            Ok(Continuation::Appliance {
                command,
                db_upgrade,
                start,
            }) => {
                // One continuation after the boot: an appliance's upgrade goes on in its own
                // procedure, from its recorded stage (its package is in the record).
                let o = UpgradeOptions {
                    package: None,
                    db_upgrade,
                    drain: Some(d),
                    start,
                    health_deadline,
                    ..upgrade_options(command, None, cli::PackageArgs::default(), file, m.reboot)
                };
                return execute(settings, &Upgrade(&o), sig).await;
            }
            Err(e) => return fail(e),
        }
    }
    let o = MaintainOptions {
        command: a.command,
        reboot: match (a.reboot, a.reboot_if_required) {
            (true, _) => RebootPolicy::Always,
            (_, true) => RebootPolicy::IfRequired,
            _ => RebootPolicy::Never,
        },
        continue_run: a.continue_run,
        drain: d,
        health_deadline,
        m,
    };
    execute(settings, &Maintain(&o), sig).await
}

fn zero_health_deadline() -> Error {
    Error::Config(config::ConfigError::Invalid(
        "the health deadline (--health-deadline, CELLCTL_HEALTH_DEADLINE or [health] deadline) must be more than 0: a started cell needs time to answer; e.g. 15m".into(),
    ))
}

/// Every run ends here: the report is saved, delivered (within the budget, through the
/// outbox, older queued ones too), and the metrics written. Delivery never changes the outcome.
async fn finish_run(s: &Settings, rep: &mut Report) {
    let run_id = rep.run_id.get_or_insert_with(new_run_id).clone();
    // A continued run already has a report from an earlier invocation: this one gets its own id.
    let report_id = if reports::exists(&s.state_dir, &run_id) {
        new_run_id()
    } else {
        run_id.clone()
    };
    rep.report_id = Some(report_id.clone());
    rep.ended_at.get_or_insert_with(Timestamp::now);
    rep.cell = Some(CellDoc {
        host: hostname(),
        vcd_home: s.vcd_home.display().to_string(),
        service: s.service.clone(),
    });
    match rep.save(&s.state_dir, s.keep_reports) {
        Ok(p) => rep.saved_as = Some(p),
        Err(e) => tracing::warn!("could not save the report: {e}"),
    }
    if s.webhook.enabled() {
        deliver(s, rep, &report_id, &run_id).await;
        if let Err(e) = rep.save(&s.state_dir, s.keep_reports) {
            tracing::warn!("could not save the report: {e}");
        }
    }
    write_metrics(s, &serde_json::to_value(&*rep).expect("report serializes"));
}

/// Queue the report for every receiver in the outbox, then flush within the budget.
async fn deliver(s: &Settings, rep: &mut Report, report_id: &str, run_id: &str) {
    let outbox = Outbox::new(&s.state_dir, s.webhook.outbox_max);
    let body = serde_json::to_string(&*rep).expect("report serializes");
    let mut warnings = vec![];
    for e in s
        .webhook
        .entries_for(&format!("{report_id}-report"), "report", run_id, &body)
    {
        if let Err(err) = outbox.push(&e) {
            tracing::warn!("{err}");
            warnings.push(err.to_string());
        }
    }
    let _guard = webhook::FLUSH.lock().await;
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
}

/// Metrics of this host's runs: `last` is the run just finished, else the newest saved report.
fn write_metrics(s: &Settings, last: &serde_json::Value) {
    if let Some(path) = &s.metrics_file {
        let outbox = Outbox::new(&s.state_dir, s.webhook.outbox_max);
        metrics::update(path, &s.state_dir, &outbox, Some(last), None);
    }
}

fn write_man(dir: &std::path::Path) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Usage(format!("cannot write man page to {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    // cellctl.1 names cellctl-drain(1) and the others: every command gets its page.
    clap_mangen::generate_to(Cli::command(), dir).map_err(io)
}
