//! The command line (clap). Options without defaults here: defaults and the config file are
//! layered in `config.rs`, so that a flag or `CELLCTL_*` variable wins over the file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::phase::DeadlineAction;

pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CELLCTL_GIT_COMMIT"), ")");

/// clap's message on one line, without its "error: " prefix and its help hint.
pub fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("bad command line");
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// Every argument of the command line, subcommands' included.
fn all_args(cmd: &clap::Command) -> Vec<clap::Arg> {
    let mut v: Vec<clap::Arg> = cmd.get_arguments().cloned().collect();
    for sub in cmd.get_subcommands() {
        v.extend(all_args(sub));
    }
    v
}

/// When clap refused a value that came from a `CELLCTL_*` variable (not typed as a flag): the
/// variable and its value.
pub fn from_environment(e: &clap::Error, args: &[String]) -> Option<(String, String)> {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let typed = args
        .iter()
        .any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")));
    if typed {
        return None;
    }
    let cmd = <Cli as clap::CommandFactory>::command();
    let var = all_args(&cmd)
        .into_iter()
        .find(|a| a.get_long() == Some(long))?
        .get_env()?
        .to_string_lossy()
        .into_owned();
    let value = std::env::var(&var).ok()?;
    Some((var, value))
}

/// Whether the document is wanted on stdout: `--json` typed, or `CELLCTL_JSON` set true.
pub fn json_wanted(args: &[String]) -> bool {
    let yes = |v: &str| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "y" | "on");
    args.iter()
        .any(|a| a == "--json" || a.strip_prefix("--json=").is_some_and(yes))
        || std::env::var("CELLCTL_JSON").is_ok_and(|v| yes(&v))
}

/// The command a refused command line was for: the first word naming one (`unknown` if none).
pub fn command_named(args: &[String]) -> crate::model::outcome::CommandName {
    use crate::model::outcome::CommandName as C;
    args.iter()
        .find_map(|a| match a.as_str() {
            "status" => Some(C::Status),
            "drain" => Some(C::Drain),
            "resume" => Some(C::Resume),
            "install" => Some(C::Install),
            "start" => Some(C::Start),
            "upgrade" => Some(C::Upgrade),
            "report" => Some(C::Report),
            "lock" => Some(C::Lock),
            "preflight" => Some(C::Preflight),
            "db-upgrade" => Some(C::DbUpgrade),
            "maintain" => Some(C::Maintain),
            _ => None,
        })
        .unwrap_or(C::Unknown)
}

fn after_help() -> String {
    format!(
        "{}\nDurations (DUR) are a number with a unit, units may be combined: 90s, 30m, 1h30m, 2h, 500ms. \
A bare number is refused, and so is a zero deadline or timeout.\n\
With --json every command prints exactly one JSON document on stdout; human output goes to stderr.",
        crate::model::exit::help()
    )
}

#[derive(Debug, Parser)]
#[command(
    name = "cellctl",
    version = VERSION,
    about = "Safely take one VMware Cloud Director cell out of service, upgrade it and report back",
    after_long_help = after_help(),
    after_help = "Exit codes and more: --help",
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes: under their own heading, so a command's own options come first.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// VCD installation directory (tools are DIR/bin/...) [default: /opt/vmware/vcloud-director]
    #[arg(long, global = true, env = "CELLCTL_VCD_HOME", value_name = "DIR")]
    pub vcd_home: Option<PathBuf>,
    /// System administrator user for cell-management-tool [default: administrator]
    #[arg(long, global = true, env = "CELLCTL_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// File holding the administrator password (mode 0600); else $CREDENTIALS_DIRECTORY/vcd-password, else a prompt
    #[arg(long, global = true, env = "CELLCTL_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Journal, lock and run records [default: /var/lib/cellctl]
    #[arg(long, global = true, env = "CELLCTL_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Config file (TOML; unknown keys rejected) [default: /etc/cellctl/config.toml]
    #[arg(long, global = true, env = "CELLCTL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Service manager command [default: systemctl]
    #[arg(long, global = true, env = "CELLCTL_SYSTEMCTL", value_name = "PATH")]
    pub systemctl: Option<PathBuf>,
    /// The cell's service unit [default: vmware-vcd]
    #[arg(long, global = true, env = "CELLCTL_SERVICE", value_name = "NAME")]
    pub service: Option<String>,
    /// Time limit for each vendor-tool or service-manager call [default: 5m]
    #[arg(long, global = true, env = "CELLCTL_TOOL_TIMEOUT", value_name = "DUR")]
    pub tool_timeout: Option<humantime::Duration>,
    /// Print exactly one JSON document on stdout
    #[arg(long, global = true, env = "CELLCTL_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub json: bool,
    /// systemd-run, for installers in transient units [default: systemd-run]
    #[arg(long, global = true, env = "CELLCTL_SYSTEMD_RUN", value_name = "PATH")]
    pub systemd_run: Option<PathBuf>,
    /// Command printing the installed VCD version [default: rpm -q ... vmware-vcloud-director-distribution]
    #[arg(long, global = true, env = "CELLCTL_VERSION_COMMAND", value_name = "CMD")]
    pub version_command: Option<String>,
    /// What this cell is: `linux` (the .bin installer) or `appliance` (updated through vamicli)
    /// [default: appliance when vamicli is found, else linux]
    #[arg(long, global = true, env = "CELLCTL_CELL_KIND", value_name = "KIND", value_parser = ["linux", "appliance"])]
    pub cell_kind: Option<String>,
    /// The appliance's vamicli [default: vamicli on PATH]
    #[arg(long, global = true, env = "CELLCTL_VAMICLI", value_name = "PATH")]
    pub vamicli: Option<PathBuf>,
    /// Where the installer unpacks (an appliance's update goes into a fresh folder of its own
    /// there); its free space is checked before an install [default: /tmp]
    #[arg(long, global = true, env = "CELLCTL_UNPACK_DIR", value_name = "DIR")]
    pub unpack_dir: Option<PathBuf>,
    /// Free space needed in the unpack dir, e.g. 4GiB [default: 3 × the package's size; an
    /// appliance update: its unpacked size plus a tenth]
    #[arg(long, global = true, env = "CELLCTL_MIN_FREE", value_name = "SIZE")]
    pub min_free: Option<String>,
    /// The cell's health URL [default: https://<hostname>/cloud/server_status]
    #[arg(long, global = true, env = "CELLCTL_HEALTH_URL", value_name = "URL")]
    pub health_url: Option<String>,
    /// CA certificate (PEM) for the health URL, beside the system trust store
    #[arg(long, global = true, env = "CELLCTL_HEALTH_CA_FILE", value_name = "FILE")]
    pub health_ca_file: Option<PathBuf>,
    /// Trust only the health URL's certificate with this SHA-256 thumbprint (hex, colons allowed), instead of a CA
    #[arg(long, global = true, env = "CELLCTL_HEALTH_CERT_SHA256", value_name = "HEX")]
    pub health_cert_sha256: Option<String>,
    /// The Cloud Director API of the group [default: https://<hostname>]
    #[arg(long, global = true, env = "CELLCTL_API_URL", value_name = "URL")]
    pub api_url: Option<String>,
    /// CA certificate (PEM) for the API, beside the system trust store
    #[arg(long, global = true, env = "CELLCTL_API_CA_FILE", value_name = "FILE")]
    pub api_ca_file: Option<PathBuf>,
    /// Trust only the API's certificate with this SHA-256 thumbprint (hex, colons allowed), instead of a CA
    #[arg(long, global = true, env = "CELLCTL_API_CERT_SHA256", value_name = "HEX")]
    pub api_cert_sha256: Option<String>,
    /// This cell's name in the API [default: the host name]
    #[arg(long, global = true, env = "CELLCTL_CELL_NAME", value_name = "NAME")]
    pub cell_name: Option<String>,
    /// Do not ask the API whether other cells are active before taking this one down (unsafe)
    #[arg(long, global = true, env = "CELLCTL_SKIP_REDUNDANCY_GUARD", value_parser = clap::builder::BoolishValueParser::new())]
    pub skip_redundancy_guard: bool,
    /// Stream one JSON object per step change and progress tick on stdout (the report last)
    #[arg(long, global = true, env = "CELLCTL_EVENTS", value_parser = clap::builder::BoolishValueParser::new())]
    pub events: bool,
    /// Webhook receiving the run's report (repeatable) [default: [report] urls]
    #[arg(
        long,
        global = true,
        env = "CELLCTL_REPORT_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub report_url: Vec<String>,
    /// HMAC signing secret for the webhook (mode 0600) [default: [report] secret_file, else $CREDENTIALS_DIRECTORY/report-secret]
    #[arg(long, global = true, env = "CELLCTL_REPORT_SECRET_FILE", value_name = "FILE")]
    pub report_secret_file: Option<PathBuf>,
    /// node_exporter textfile for the last run's metrics [default: [report] metrics_file]
    #[arg(long, global = true, env = "CELLCTL_METRICS_FILE", value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Allow plain-http:// API, health and report URLs. UNSAFE, for test rigs only: the password
    /// and reports may cross the network in cleartext
    #[arg(long, global = true, env = "CELLCTL_INSECURE_ALLOW_HTTP", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_allow_http: bool,
    /// Take a fleet-wide slot on this etcd (v3 JSON gateway) before changing the cell [default: [lock] etcd]
    #[arg(long, global = true, env = "CELLCTL_LOCK_ETCD", value_name = "URL")]
    pub lock_etcd: Option<String>,
    /// Take a fleet-wide slot from this FleetLock server (airlock) before changing the cell [default: [lock] fleetlock]
    #[arg(long, global = true, env = "CELLCTL_LOCK_FLEETLOCK", value_name = "URL")]
    pub lock_fleetlock: Option<String>,
    /// The lock group ([a-zA-Z0-9.-]+) [default: default]
    #[arg(long, global = true, env = "CELLCTL_LOCK_GROUP", value_name = "NAME")]
    pub lock_group: Option<String>,
    /// etcd: how many cells of the group may hold a slot at once [default: 1]
    #[arg(long, global = true, env = "CELLCTL_LOCK_SLOTS", value_name = "N")]
    pub lock_slots: Option<u32>,
    /// This cell's id in the lock [default: the cell name, persisted in the state dir]
    #[arg(long, global = true, env = "CELLCTL_LOCK_ID", value_name = "ID")]
    pub lock_id: Option<String>,
    /// CA certificate (PEM) for the lock service, beside the system trust store
    #[arg(long, global = true, env = "CELLCTL_LOCK_CA_FILE", value_name = "FILE")]
    pub lock_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for the lock service (with --lock-client-key)
    #[arg(long, global = true, env = "CELLCTL_LOCK_CLIENT_CERT", value_name = "FILE")]
    pub lock_client_cert: Option<PathBuf>,
    /// Client key (PEM) for the lock service (with --lock-client-cert)
    #[arg(long, global = true, env = "CELLCTL_LOCK_CLIENT_KEY", value_name = "FILE")]
    pub lock_client_key: Option<PathBuf>,
    /// How long to wait for a free slot (0: fail at once, exit 15) [default: 0]
    #[arg(long, global = true, env = "CELLCTL_LOCK_WAIT", value_name = "DUR")]
    pub lock_wait: Option<humantime::Duration>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the cell's job count, active and maintenance flags, service state and any recorded run
    Status,
    /// Maintenance message on, quiesce, wait for jobs with a deadline, then shut down
    Drain(DrainArgs),
    /// Undo what a recorded (interrupted or --no-shutdown) run changed on a running cell
    Resume,
    /// Install a package on a stopped cell, in a transient systemd unit
    Install(InstallArgs),
    /// Start the cell's service and wait until its health endpoint answers "Service is up."; an
    /// appliance whose `cellctl install` awaits its reboot is rebooted instead, and the
    /// continuation after the boot (cellctl-continue.service) starts and checks it
    Start(StartCommandArgs),
    /// Verify the package, drain, install, [upgrade the database], start and health-check
    Upgrade(UpgradeArgs),
    /// Show a run's report (the last by default), or send what waits in the outbox
    Report(ReportArgs),
    /// The fleet-wide slots of [lock]: who holds them since when, and freeing a stuck one
    Lock(LockArgs),
    /// Make every check `upgrade` makes before a change, and change nothing (exit 25 on a failing check)
    Preflight(PreflightArgs),
    /// Upgrade the database alone (bin/upgrade, in a transient unit) on a stopped cell; a rerun
    /// is a success
    DbUpgrade(DbUpgradeArgs),
    /// Drain, run COMMAND in a transient unit, then start and health-check, or reboot and
    /// finish after the boot (`--continue`)
    #[command(
        after_help = "Examples:\n  cellctl maintain -- /usr/local/sbin/renew-cert\n  cellctl maintain --reboot-if-required -- dnf -y upgrade\n  cellctl maintain --continue            # after a failed COMMAND, or after the boot\nA failed COMMAND exits 26 and leaves the cell drained: `cellctl maintain --continue` runs it again and goes on, `cellctl resume` brings the cell back without it."
    )]
    Maintain(MaintainArgs),
    /// Run a program, logging its output and result (used inside the transient install unit)
    #[command(hide = true)]
    RunLogged {
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        status: PathBuf,
        #[arg(long)]
        pid_file: PathBuf,
        #[arg(long = "answer")]
        answers: Vec<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Write the man page to DIR (packaging)
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Print shell completions (packaging)
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnDeadline {
    /// Undo this run's changes and exit non-zero
    Abort,
    /// Shut down anyway and report the jobs still running
    Force,
    /// Cancel this cell's running tasks through the API, wait --cancel-grace, then --after-cancel
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AfterCancel {
    Abort,
    Force,
}

impl From<AfterCancel> for DeadlineAction {
    fn from(o: AfterCancel) -> Self {
        match o {
            AfterCancel::Abort => DeadlineAction::Abort,
            AfterCancel::Force => DeadlineAction::Force,
        }
    }
}

impl From<OnDeadline> for DeadlineAction {
    fn from(o: OnDeadline) -> Self {
        match o {
            OnDeadline::Abort => DeadlineAction::Abort,
            OnDeadline::Force => DeadlineAction::Force,
            OnDeadline::Cancel => DeadlineAction::Cancel,
        }
    }
}

#[derive(Debug, Args, Clone, Default)]
pub struct DrainArgs {
    /// How long to wait for running jobs [default: 30m]
    #[arg(long, env = "CELLCTL_DEADLINE", value_name = "DUR")]
    pub deadline: Option<humantime::Duration>,
    /// What to do at the deadline [default: abort]
    #[arg(long, value_enum, env = "CELLCTL_ON_DEADLINE")]
    pub on_deadline: Option<OnDeadline>,
    /// Leave the maintenance message alone (a load balancer drains the cell)
    #[arg(long)]
    pub no_maintenance: bool,
    /// Stop once drained; do not shut the cell down
    #[arg(long)]
    pub no_shutdown: bool,
    /// Time between status polls while waiting, from the start of each [default: 30s after the
    /// end of each call with the API's task list; without it 10s after, as the manual runbook]
    #[arg(long, env = "CELLCTL_POLL_INTERVAL", value_name = "DUR")]
    pub poll_interval: Option<humantime::Duration>,
    /// With --on-deadline cancel: what to do if jobs remain after the grace period [default: abort]
    #[arg(long, value_enum, env = "CELLCTL_AFTER_CANCEL")]
    pub after_cancel: Option<AfterCancel>,
    /// With --on-deadline cancel: how long cancelled tasks get to end [default: 2m]
    #[arg(long, env = "CELLCTL_CANCEL_GRACE", value_name = "DUR")]
    pub cancel_grace: Option<humantime::Duration>,
    /// Allow taking down the last active cell of the group (full-outage upgrade, --db-upgrade)
    #[arg(long)]
    pub allow_last_cell: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct PackageArgs {
    /// Expected SHA-256 of the package [default: from PACKAGE.sha256 beside it]
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Allow installing a version that is not newer than the installed one
    #[arg(long)]
    pub allow_downgrade: bool,
    /// The version the package installs, when its name does not say
    #[arg(long, value_name = "V")]
    pub package_version: Option<String>,
    /// Retry an install that failed or ended without a result in the recorded run
    #[arg(long)]
    pub retry_install: bool,
}

#[derive(Debug, Args, Clone)]
pub struct InstallArgs {
    /// The package: VMware .bin installer, .rpm or .deb
    #[arg(value_name = "PACKAGE")]
    pub package: Option<PathBuf>,
    /// An appliance: the boot id file, read when the install ends so that `cellctl start`
    /// knows whether the appliance has rebooted since [default: [maintain] boot_id_file, else
    /// /proc/sys/kernel/random/boot_id]
    #[arg(long, env = "CELLCTL_BOOT_ID_FILE", value_name = "FILE")]
    pub boot_id_file: Option<PathBuf>,
    #[command(flatten)]
    pub pkg: PackageArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub struct StartCommandArgs {
    #[command(flatten)]
    pub start: StartArgs,
    /// For an appliance whose install awaits its reboot
    #[command(flatten)]
    pub reboot_with: RebootArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub struct StartArgs {
    /// How long the cell may take to become healthy [default: 15m]
    #[arg(long, env = "CELLCTL_HEALTH_DEADLINE", value_name = "DUR")]
    pub health_deadline: Option<humantime::Duration>,
}

#[derive(Debug, Args, Clone)]
pub struct PreflightArgs {
    /// The package to check [default: [upgrade] package in the config, or CELLCTL_PACKAGE];
    /// without one the package checks are skipped
    #[arg(value_name = "PACKAGE", env = "CELLCTL_PACKAGE")]
    pub package: Option<PathBuf>,
    /// Expected SHA-256 of the package [default: from PACKAGE.sha256 beside it]
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// A package not newer than the installed version is a warning, not a failure
    #[arg(long)]
    pub allow_downgrade: bool,
    /// The version the package installs, when its name does not say
    #[arg(long, value_name = "V")]
    pub package_version: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct DbUpgradeArgs {
    /// Run the tool again after it failed or ended without a result in the recorded run
    #[arg(long)]
    pub retry_install: bool,
}

#[derive(Debug, Args, Clone)]
pub struct UpgradeArgs {
    /// The package [default: [upgrade] package in the config, or CELLCTL_PACKAGE]
    #[arg(value_name = "PACKAGE", env = "CELLCTL_PACKAGE")]
    pub package: Option<PathBuf>,
    #[command(flatten)]
    pub pkg: PackageArgs,
    /// Run the database upgrade (bin/upgrade --backup-completed) once, after the install:
    /// every cell of the group must be stopped (see --allow-last-cell in the docs)
    #[arg(long)]
    pub db_upgrade: bool,
    #[command(flatten)]
    pub drain: DrainArgs,
    #[command(flatten)]
    pub start: StartArgs,
    /// An appliance reboots after its update; the continuation after the boot finishes it
    #[command(flatten)]
    pub reboot_with: RebootArgs,
}

/// How the host is rebooted and its boot told (`maintain --reboot`, an appliance's upgrade).
#[derive(Debug, Args, Clone, Default)]
pub struct RebootArgs {
    /// The reboot command [default: [maintain] reboot_command, else systemctl reboot]
    #[arg(long, env = "CELLCTL_REBOOT_COMMAND", value_name = "CMD")]
    pub reboot_command: Option<String>,
    /// The boot id file [default: /proc/sys/kernel/random/boot_id]
    #[arg(long, env = "CELLCTL_BOOT_ID_FILE", value_name = "FILE")]
    pub boot_id_file: Option<PathBuf>,
    /// After a reboot: how long to wait for the cell's service to come up before starting it [default: 5m]
    #[arg(long, env = "CELLCTL_SERVICE_WAIT", value_name = "DUR")]
    pub service_wait: Option<humantime::Duration>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct MaintainArgs {
    /// Reboot after COMMAND through the service manager; the continuation after the boot
    /// (cellctl-continue.service, or `cellctl maintain --continue`) starts and checks the cell
    #[arg(long, conflicts_with = "reboot_if_required")]
    pub reboot: bool,
    /// Reboot after COMMAND only when the system says so: a reboot-required file exists, or
    /// `needs-restarting -r` (where present) exits 1
    #[arg(long)]
    pub reboot_if_required: bool,
    /// Continue the recorded run: after its reboot, or after a failed COMMAND (run again)
    #[arg(long = "continue", conflicts_with_all = ["reboot", "reboot_if_required"])]
    pub continue_run: bool,
    /// With --continue: do nothing (exit 0) unless a run is recorded as rebooting (for the boot unit)
    #[arg(long, requires = "continue_run")]
    pub at_boot: bool,
    #[command(flatten)]
    pub reboot_with: RebootArgs,
    /// A file whose presence means a reboot is required (repeatable) [default: /run/reboot-required, /var/run/reboot-required]
    #[arg(
        long = "reboot-required-file",
        env = "CELLCTL_REBOOT_REQUIRED_FILES",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub reboot_required_files: Vec<PathBuf>,
    /// Command that exits 1 when a reboot is required, used only where present; "" for none [default: needs-restarting -r]
    #[arg(long, env = "CELLCTL_NEEDS_RESTARTING", value_name = "CMD")]
    pub needs_restarting: Option<String>,
    #[command(flatten)]
    pub drain: DrainArgs,
    #[command(flatten)]
    pub start: StartArgs,
    /// The maintenance command and its arguments, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub action: Option<ReportAction>,
    /// The run id [default: the last run]
    #[arg(value_name = "RUN_ID")]
    pub run_id: Option<String>,
    /// The last run's report
    #[arg(long, conflicts_with = "run_id")]
    pub last: bool,
    /// List the saved reports (id, command, outcome, started, duration), oldest first
    #[arg(long, conflicts_with_all = ["run_id", "last"])]
    pub list: bool,
}

#[derive(Debug, Args, Clone)]
pub struct LockArgs {
    #[command(subcommand)]
    pub action: LockAction,
}

#[derive(Debug, Subcommand, Clone)]
pub enum LockAction {
    /// List the holders of the group's slots and since when (FleetLock cannot list them)
    Status,
    /// Free one slot (a stuck holder's, or this cell's) and record who did it; exit 15 if the
    /// lock service cannot be reached
    Release {
        /// The holder's id [default: this cell's id]
        #[arg(value_name = "ID")]
        id: Option<String>,
    },
}

#[derive(Debug, Subcommand, Clone)]
pub enum ReportAction {
    /// Deliver what waits in the outbox (exit 24 if something is still undelivered)
    Flush,
}
