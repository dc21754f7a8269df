//! cellctl: take one VMware Cloud Director cell safely out of service, upgrade it, report back.
//!
//! `main.rs` only calls [`run`]; each concern lives in its own module.

pub mod cli;
pub mod config;
pub mod credentials;
pub mod drain;
pub mod error;
pub mod exec;
pub mod health;
pub mod install;
pub mod journal;
pub mod package;
pub mod procedure;
pub mod progress;
pub mod report;
pub mod service;
pub mod signals;
pub mod upgrade;
pub mod vendor;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::error::{Error, code};
use crate::report::Report;

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

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
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
    init_logging();
    let json = cli.global.json;
    let name = match &cli.command {
        Command::Status => "status",
        Command::Drain(_) => "drain",
        Command::Resume => "resume",
        Command::Install(_) => "install",
        Command::Start(_) => "start",
        Command::Upgrade(_) => "upgrade",
        Command::RunLogged { .. } => return run_logged(cli.command),
        Command::Man { .. } => "man",
        Command::Completions { .. } => "completions",
    };
    let (report, result) = dispatch(cli);
    let json = json || report.as_ref().map(|(_, j)| *j).unwrap_or(false);
    let report = report.map(|(r, _)| r).unwrap_or_else(|| match &result {
        Err(e) => Report::failed(name, e),
        Ok(()) => Report::new(name),
    });
    if !json && name == "status" && result.is_ok() {
        print!("{}", report.status_text());
    }
    if name != "man" && name != "completions" {
        report.emit(json);
    } else if let Err(e) = &result {
        eprintln!("cellctl: {e}");
    }
    result.map(|_| code::OK).unwrap_or_else(|e| e.exit_code())
}

type Dispatched = (Option<(Report, bool)>, Result<(), Error>);

fn dispatch(cli: Cli) -> Dispatched {
    match cli.command {
        Command::Man { out_dir } => (None, write_man(&out_dir)),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "cellctl", &mut std::io::stdout());
            (None, Ok(()))
        }
        cmd => {
            let (settings, file, path) = match config::resolve(&cli.global) {
                Ok(x) => x,
                Err(e) => return (None, Err(e.into())),
            };
            let json = settings.json;
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return (None, Err(Error::Internal(format!("cannot start the runtime: {e}")))),
            };
            let (report, result) = match cmd {
                Command::Status => rt.block_on(drain::status(&settings)),
                Command::Drain(args) => {
                    let d = match config::resolve_drain(&args, &file, &path) {
                        Ok(d) => d,
                        Err(e) => return (None, Err(e.into())),
                    };
                    let sig = match signals::install(json, settings.state_dir.display().to_string()) {
                        Ok(s) => s,
                        Err(e) => return (None, Err(Error::Internal(format!("cannot handle signals: {e}")))),
                    };
                    rt.block_on(drain::drain(&settings, &d, sig))
                }
                Command::Resume => {
                    let sig = match signals::install(json, settings.state_dir.display().to_string()) {
                        Ok(s) => s,
                        Err(e) => return (None, Err(Error::Internal(format!("cannot handle signals: {e}")))),
                    };
                    rt.block_on(drain::resume(&settings, sig))
                }
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
                    let sig = match signals::install(json, settings.state_dir.display().to_string()) {
                        Ok(s) => s,
                        Err(e) => return (None, Err(Error::Internal(format!("cannot handle signals: {e}")))),
                    };
                    rt.block_on(upgrade::upgrade(&settings, &o, sig))
                }
                Command::Start(a) => {
                    let deadline = a.health_deadline.map(Into::into).unwrap_or(settings.health_deadline);
                    let sig = match signals::install(json, settings.state_dir.display().to_string()) {
                        Ok(s) => s,
                        Err(e) => return (None, Err(Error::Internal(format!("cannot handle signals: {e}")))),
                    };
                    rt.block_on(upgrade::start(&settings, deadline, sig))
                }
                Command::Upgrade(a) => {
                    if a.drain.no_shutdown {
                        return (
                            None,
                            Err(Error::Usage(
                                "upgrade needs the cell shut down: --no-shutdown does not apply".into(),
                            )),
                        );
                    }
                    let mut d = match config::resolve_drain(&a.drain, &file, &path) {
                        Ok(d) => d,
                        Err(e) => return (None, Err(e.into())),
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
                    let sig = match signals::install(json, settings.state_dir.display().to_string()) {
                        Ok(s) => s,
                        Err(e) => return (None, Err(Error::Internal(format!("cannot handle signals: {e}")))),
                    };
                    rt.block_on(upgrade::upgrade(&settings, &o, sig))
                }
                Command::Man { .. } | Command::Completions { .. } | Command::RunLogged { .. } => {
                    unreachable!("handled above")
                }
            };
            (Some((report, json)), result)
        }
    }
}

/// `cellctl run-logged`: the wrapper inside a transient unit. No config, no logging setup:
/// it must work even if the config file is broken mid-upgrade.
fn run_logged(cmd: Command) -> i32 {
    let Command::RunLogged {
        log,
        status,
        pid_file,
        answers,
        command,
    } = cmd
    else {
        unreachable!()
    };
    let (program, args) = command.split_first().expect("clap requires the command");
    install::run_logged(&log, &status, &pid_file, &answers, program, args)
}

fn write_man(dir: &std::path::Path) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Usage(format!("cannot write man page to {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let cmd = Cli::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf).map_err(io)?;
    std::fs::write(dir.join("cellctl.1"), buf).map_err(io)
}
