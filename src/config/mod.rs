//! Settings: command-line flag > `CELLCTL_*` environment (both via clap) > config file > default.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{DrainArgs, GlobalArgs, MaintainArgs, RebootArgs};
use crate::model::phase::DeadlineAction;
use crate::store::trust::Owners;

pub const DEFAULT_CONFIG: &str = "/etc/cellctl/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {detail}; fix the file or point --config elsewhere")]
    File { path: String, detail: ParseError },
    #[error("config file {path}{}: `{key}` = {value:?} is not a duration (e.g. \"30m\", \"90s\")", .line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Duration {
        path: String,
        /// Where the key stands in the file, when it can be found.
        line: Option<usize>,
        key: &'static str,
        value: String,
    },
    /// A file that someone other than root or this user could have written.
    #[error("{subject} {problem}: {why}, so it is refused; fix with: {fix}")]
    Untrusted {
        /// The file, and where it was named.
        subject: String,
        problem: String,
        why: &'static str,
        fix: String,
    },
    #[error("{setting}: {value:?} is not a SHA-256 thumbprint: {source}")]
    Thumbprint {
        setting: &'static str,
        value: String,
        source: crate::adapters::pin::ThumbprintError,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file's text, to say on which line a bad value stands.
    #[serde(skip)]
    pub text: String,
    pub vcd_home: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub systemctl: Option<PathBuf>,
    pub service: Option<String>,
    pub tool_timeout: Option<String>,
    pub json: Option<bool>,
    #[serde(default)]
    pub drain: DrainFile,
    #[serde(default)]
    pub install: InstallFile,
    #[serde(default)]
    pub health: HealthFile,
    #[serde(default)]
    pub upgrade: UpgradeFile,
    #[serde(default)]
    pub report: ReportFile,
    #[serde(default)]
    pub api: ApiFile,
    #[serde(default)]
    pub lock: LockFile,
    #[serde(default)]
    pub maintain: MaintainFile,
}

/// `[lock]`: fleet-wide slots on etcd or a FleetLock server (none: no slot is taken).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub etcd: Option<String>,
    pub fleetlock: Option<String>,
    pub group: Option<String>,
    pub slots: Option<u32>,
    pub id: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub wait: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintainFile {
    /// argv that reboots the host through the service manager.
    pub reboot_command: Option<Vec<String>>,
    pub boot_id_file: Option<PathBuf>,
    /// Files whose presence means a reboot is required.
    pub reboot_required_files: Option<Vec<PathBuf>>,
    /// argv that exits 1 when a reboot is required (used only where present); [] for none.
    pub needs_restarting: Option<Vec<String>>,
    /// After a reboot: how long to wait for the cell's service before starting it.
    pub service_wait: Option<String>,
    /// Time limit of the COMMAND's unit.
    pub timeout: Option<String>,
}

/// `maintain`'s settings.
#[derive(Debug, Clone)]
pub struct MaintainSettings {
    pub reboot: RebootSettings,
    pub reboot_required_files: Vec<PathBuf>,
    /// Empty: not asked.
    pub needs_restarting: Vec<String>,
    pub timeout: Duration,
}

/// How the host is rebooted and its boot told ([maintain] keys, shared with an appliance's
/// upgrade, which reboots the same way).
#[derive(Debug, Clone)]
pub struct RebootSettings {
    pub reboot_command: Vec<String>,
    pub boot_id_file: PathBuf,
    pub service_wait: Duration,
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

pub fn resolve_maintain(
    a: &MaintainArgs,
    f: &FileConfig,
    path: Option<&Path>,
) -> Result<MaintainSettings, ConfigError> {
    maintain_settings(a, f, path).map_err(|e| e.at_line(f))
}

/// The reboot settings: flag > `CELLCTL_*` > `[maintain]` > default.
pub fn resolve_reboot(a: &RebootArgs, f: &FileConfig, path: Option<&Path>) -> Result<RebootSettings, ConfigError> {
    reboot_settings(a, f, path).map_err(|e| e.at_line(f))
}

fn reboot_settings(a: &RebootArgs, f: &FileConfig, path: Option<&Path>) -> Result<RebootSettings, ConfigError> {
    let m = &f.maintain;
    if let Some(p) = path
        && a.reboot_command.is_none()
        && let Some(c) = &m.reboot_command
    {
        check_program(p, "[maintain] reboot_command", c)?;
    }
    let r = RebootSettings {
        reboot_command: match &a.reboot_command {
            Some(c) => words(c),
            None => m.reboot_command.clone().unwrap_or_else(|| words("systemctl reboot")),
        },
        boot_id_file: a
            .boot_id_file
            .clone()
            .or(m.boot_id_file.clone())
            .unwrap_or_else(|| "/proc/sys/kernel/random/boot_id".into()),
        service_wait: match a.service_wait {
            Some(d) => d.into(),
            None => dur(path, "maintain.service_wait", m.service_wait.as_deref())?.unwrap_or(Duration::from_secs(300)),
        },
    };
    if r.reboot_command.is_empty() {
        return Err(ConfigError::Invalid(
            "the reboot command (--reboot-command, CELLCTL_REBOOT_COMMAND or [maintain] reboot_command) is empty; e.g. \"systemctl reboot\"".into(),
        ));
    }
    if r.service_wait.is_zero() {
        return Err(ConfigError::Invalid(
            "maintain.service_wait and maintain.timeout must be more than 0 (--service-wait, CELLCTL_SERVICE_WAIT); e.g. 5m".into(),
        ));
    }
    Ok(r)
}

fn maintain_settings(a: &MaintainArgs, f: &FileConfig, path: Option<&Path>) -> Result<MaintainSettings, ConfigError> {
    let m = &f.maintain;
    if let Some(p) = path
        && a.needs_restarting.is_none()
        && let Some(c) = &m.needs_restarting
    {
        check_program(p, "[maintain] needs_restarting", c)?;
    }
    let s = MaintainSettings {
        reboot: reboot_settings(&a.reboot_with, f, path)?,
        reboot_required_files: if a.reboot_required_files.is_empty() {
            m.reboot_required_files
                .clone()
                .unwrap_or_else(|| vec!["/run/reboot-required".into(), "/var/run/reboot-required".into()])
        } else {
            a.reboot_required_files.clone()
        },
        needs_restarting: match &a.needs_restarting {
            Some(c) => words(c),
            None => m
                .needs_restarting
                .clone()
                .unwrap_or_else(|| words("needs-restarting -r")),
        },
        timeout: dur(path, "maintain.timeout", m.timeout.as_deref())?.unwrap_or(Duration::from_secs(2 * 3600)),
    };
    if s.timeout.is_zero() {
        return Err(ConfigError::Invalid(
            "maintain.service_wait and maintain.timeout must be more than 0 (--service-wait, CELLCTL_SERVICE_WAIT); e.g. 5m".into(),
        ));
    }
    Ok(s)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFile {
    pub url: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// SHA-256 thumbprint of the one certificate to trust (replaces ca_file).
    pub cert_sha256: Option<String>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    pub cell_name: Option<String>,
    /// Other active cells required before this one may be taken down.
    pub min_active_peers: Option<usize>,
    /// false = never ask the API (unsafe; as --skip-redundancy-guard).
    pub redundancy_guard: Option<bool>,
    pub cancel_concurrency: Option<usize>,
    pub cancel_grace: Option<String>,
    /// Items per page when listing cells and tasks (the API allows at most 128).
    pub page_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportFile {
    /// Webhook receivers: each gets every report (and step events with `events`).
    pub urls: Option<Vec<String>>,
    pub ca_file: Option<PathBuf>,
    /// SHA-256 thumbprint of the one certificate to trust (replaces ca_file).
    pub cert_sha256: Option<String>,
    /// HMAC-SHA256 signing secret (mode 0600); else $CREDENTIALS_DIRECTORY/report-secret.
    pub secret_file: Option<PathBuf>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    /// Total time a run spends delivering (bounds how long reporting can hold a cell).
    pub budget: Option<String>,
    pub events: Option<bool>,
    pub outbox_max: Option<usize>,
    /// Reports kept in STATE_DIR/reports.
    pub keep: Option<usize>,
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallFile {
    pub systemd_run: Option<PathBuf>,
    /// argv printing the installed VCD version on its first line.
    pub version_command: Option<Vec<String>>,
    /// argv installing a package (`{package}` is replaced by its path), instead of the built-in ones.
    pub command: Option<Vec<String>>,
    pub timeout: Option<String>,
    /// `linux` or `appliance` (default: appliance when vamicli is found).
    pub kind: Option<String>,
    /// The appliance's vamicli.
    pub vamicli: Option<PathBuf>,
    /// Where the installer unpacks, and an appliance's update folders go (its free space is checked before an install).
    pub unpack_dir: Option<PathBuf>,
    /// Free space needed there, e.g. "4GiB" [default: the package's size × SPACE_FACTOR].
    pub min_free: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    pub url: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// SHA-256 thumbprint of the one certificate to trust (replaces ca_file).
    pub cert_sha256: Option<String>,
    pub deadline: Option<String>,
    pub interval: Option<String>,
    pub request_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeFile {
    pub package: Option<PathBuf>,
    pub sha256: Option<String>,
    pub db_upgrade: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainFile {
    pub deadline: Option<String>,
    pub on_deadline: Option<DeadlineAction>,
    pub after_cancel: Option<DeadlineAction>,
    pub allow_last_cell: Option<bool>,
    pub maintenance: Option<bool>,
    pub shutdown: Option<bool>,
    pub poll_interval: Option<String>,
    /// How often the API's task list is read between tool polls.
    pub signal_interval: Option<String>,
    /// How long the undo after a signal may take, in all (well inside the unit's TimeoutStopSec).
    pub rollback_budget: Option<String>,
}

/// Resolved settings shared by every command.
#[derive(Debug, Clone)]
pub struct Settings {
    pub vcd_home: PathBuf,
    pub user: String,
    pub password_file: Option<PathBuf>,
    pub credentials_dir: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub systemctl: PathBuf,
    pub service: String,
    pub tool_timeout: Duration,
    pub json: bool,
    pub install: InstallSettings,
    pub health: crate::adapters::health::Health,
    /// How long a started cell may take to answer healthy.
    pub health_deadline: Duration,
    pub webhook: crate::adapters::webhook::Webhook,
    pub keep_reports: usize,
    pub metrics_file: Option<PathBuf>,
    /// `--events`: NDJSON on stdout.
    pub events: bool,
    pub api: crate::adapters::api::ApiSettings,
    /// Ask the API for the other cells before any change (fails closed).
    pub redundancy_guard: bool,
    /// How long the undo after a signal may take in all: a stop request must end the run.
    pub rollback_budget: Duration,
    /// Fleet-wide slots (`[lock]`); None: no slot is taken (the behaviour without a lock).
    pub lock: Option<crate::adapters::lock::LockSettings>,
}

/// The systemd credential name for the webhook signing secret.
pub const REPORT_SECRET_CREDENTIAL: &str = "report-secret";

#[derive(Debug, Clone)]
pub struct InstallSettings {
    pub systemd_run: PathBuf,
    pub version_command: Vec<String>,
    pub command: Option<Vec<String>>,
    pub timeout: Duration,
    /// None: told by whether vamicli is found.
    pub kind: Option<CellKind>,
    pub vamicli: PathBuf,
    /// Where the installer unpacks.
    pub unpack_dir: PathBuf,
    /// Free space needed in `unpack_dir` (bytes); None: the package's size × `SPACE_FACTOR`.
    pub min_free: Option<u64>,
}

/// How the cell's product is installed and updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellKind {
    /// A Linux cell: the `.bin` installer (or an rpm, a deb, a configured command).
    Linux,
    /// The VCD appliance: `vamicli update` with an `_update.tar.gz`, then a reboot.
    Appliance,
}

fn cell_kind(text: &str, source: &str) -> Result<CellKind, ConfigError> {
    match text {
        "linux" => Ok(CellKind::Linux),
        "appliance" => Ok(CellKind::Appliance),
        other => Err(ConfigError::Invalid(format!(
            "{source}: unknown cell kind {other:?}: use \"linux\" or \"appliance\" (or leave it out to tell by vamicli)"
        ))),
    }
}

/// Without `min_free`, an install needs this many times the package's size free where it
/// unpacks: the self-extracting archive's payload, the RPMs it unpacks from it, and room for
/// their installation's scratch files.
pub const SPACE_FACTOR: u64 = 3;

/// Where VMware's `.bin` installer unpacks its payload by default.
pub const DEFAULT_UNPACK_DIR: &str = "/tmp";

/// A size: a whole number of bytes, or with a binary unit (K, M, G, T; also KiB, MiB, GiB,
/// TiB, any case): "4GiB", "500M", "1048576".
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "ki" | "kib" => 10,
        "m" | "mi" | "mib" => 20,
        "g" | "gi" | "gib" => 30,
        "t" | "ti" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// Where VMware's installer registers the product (an RPM), as the default version source.
pub const DEFAULT_VERSION_COMMAND: &[&str] = &[
    "rpm",
    "-q",
    "--queryformat",
    "%{VERSION}-%{RELEASE}\\n",
    "vmware-vcloud-director-distribution",
];

#[derive(Debug, Clone)]
pub struct DrainSettings {
    pub deadline: Duration,
    /// Given on this command line (or env): a continued run then gets a fresh deadline.
    pub deadline_explicit: bool,
    pub on_deadline: DeadlineAction,
    pub after_cancel: DeadlineAction,
    pub cancel_grace: Option<Duration>,
    pub allow_last_cell: bool,
    pub maintenance: bool,
    pub shutdown: bool,
    /// Time between vendor-tool polls; None: 30s while the API's task list answers between
    /// polls, 10s when it does not.
    pub poll_interval: Option<Duration>,
    /// Time between API task-list reads (the cheap signal) between tool polls.
    pub signal_interval: Duration,
    /// Time between the two observations that confirm "drained".
    pub confirm_interval: Duration,
}

/// Read the config file. The default path may be absent; an explicit one must exist.
///
/// The file names commands cellctl runs as root, so it is refused unless only root or this user
/// can write it. The check and the read use one open handle: a file swapped in between the two
/// is never read.
pub fn load_file(explicit: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>), ConfigError> {
    let (path, required) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let file_err = |detail: ParseError| ConfigError::File {
        path: path.display().to_string(),
        detail,
    };
    // O_NONBLOCK: a FIFO given as the config must not hang the run; it is refused below.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok((FileConfig::default(), None)),
        Err(e) => return Err(file_err(ParseError::Read(e))),
    };
    let meta = file.metadata().map_err(|e| file_err(ParseError::Read(e)))?;
    if !meta.is_file() {
        return Err(file_err(ParseError::NotRegular));
    }
    if let Some(x) = crate::store::trust::exposure(&meta, Owners::RootOrMe) {
        return Err(untrusted(
            format!("config file {}", path.display()),
            &path,
            x,
            "it names commands cellctl runs as root",
        ));
    }
    let mut text = String::new();
    (&file)
        .read_to_string(&mut text)
        .map_err(|e| file_err(ParseError::Read(e)))?;
    let mut cfg = parse(&text).map_err(file_err)?;
    cfg.text = text;
    Ok((cfg, Some(path)))
}

/// The refusal of a file others could have written, with the command that fixes it.
fn untrusted(subject: String, path: &Path, x: crate::store::trust::Exposure, why: &'static str) -> ConfigError {
    let fix = match x {
        crate::store::trust::Exposure::Writable { .. } => format!("chmod go-w {}", path.display()),
        crate::store::trust::Exposure::Owner { .. } => format!("chown root {}", path.display()),
    };
    ConfigError::Untrusted {
        subject,
        problem: x.problem(Owners::RootOrMe),
        why,
        fix,
    }
}

/// A program named by its absolute path in the config runs as root: refused when another user
/// could replace its contents. A bare name is looked up on root's PATH at run time, and a path
/// that does not exist runs nothing (the command itself then fails, naming it).
fn check_program(config: &Path, key: &str, argv: &[String]) -> Result<(), ConfigError> {
    let Some(program) = argv.first().map(Path::new).filter(|p| p.is_absolute()) else {
        return Ok(());
    };
    // Follows symlinks: the file that would be executed is the one that counts.
    let Ok(meta) = std::fs::metadata(program) else {
        return Ok(());
    };
    match crate::store::trust::exposure(&meta, Owners::RootOrMe) {
        Some(x) => Err(untrusted(
            format!("program {} ({key} in {})", program.display(), config.display()),
            program,
            x,
            "cellctl runs it as root",
        )),
        None => Ok(()),
    }
}

/// Where a URL setting comes from, for messages, and why it must be https.
struct UrlSetting {
    name: &'static str,
    why: &'static str,
}

const API_URL: UrlSetting = UrlSetting {
    name: "API URL (--api-url, CELLCTL_API_URL, [api] url)",
    why: "the API login carries the administrator password",
};
const HEALTH_URL: UrlSetting = UrlSetting {
    name: "health URL (--health-url, CELLCTL_HEALTH_URL, [health] url)",
    why: "its answer decides that the upgraded cell is healthy, and a plain-HTTP answer can be forged on the way",
};
const REPORT_URL: UrlSetting = UrlSetting {
    name: "report URL (--report-url, CELLCTL_REPORT_URL, [report] urls)",
    why: "the reports describe the cell and its failures to anyone on the way",
};

/// Where a certificate pin comes from: named in a bad value's error and in a mismatch's.
const API_PIN: &str = "the API certificate pin (--api-cert-sha256, CELLCTL_API_CERT_SHA256, [api] cert_sha256)";
const HEALTH_PIN: &str =
    "the health certificate pin (--health-cert-sha256, CELLCTL_HEALTH_CERT_SHA256, [health] cert_sha256)";
const REPORT_PIN: &str = "the report certificate pin ([report] cert_sha256)";

/// The pin from the flag (or its variable), else the config file's; parsed here so a typo stops
/// the run before anything is changed, with the setting named.
fn pin(
    setting: &'static str,
    flag: Option<&str>,
    file: Option<&str>,
) -> Result<Option<crate::adapters::pin::Pin>, ConfigError> {
    flag.or(file)
        .map(|v| {
            v.parse().map_err(|source| ConfigError::Thumbprint {
                setting,
                value: v.to_string(),
                source,
            })
        })
        .transpose()
        .map(|t| t.map(|thumbprint| crate::adapters::pin::Pin { thumbprint, setting }))
}

/// https only; plain http only with the explicit opt-in (then collected, to be warned about).
fn check_https(
    setting: &UrlSetting,
    url: &str,
    allow_http: bool,
    plain: &mut Vec<&'static str>,
) -> Result<(), ConfigError> {
    let scheme = match reqwest::Url::parse(url) {
        Ok(u) => u.scheme().to_string(),
        Err(e) => {
            return Err(ConfigError::Invalid(format!(
                "{} {url:?} is not a URL ({e}); give an https:// URL",
                setting.name
            )));
        }
    };
    match scheme.as_str() {
        "https" => Ok(()),
        "http" if allow_http => {
            if !plain.contains(&setting.name) {
                plain.push(setting.name);
            }
            Ok(())
        }
        _ => Err(ConfigError::Invalid(format!(
            "{} {url:?} is not https, and {}; give an https:// URL (plain HTTP on a test rig only: --insecure-allow-http)",
            setting.name, setting.why
        ))),
    }
}

/// Why a config file could not be used: one line, with the line number where known.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{0}")]
    Read(std::io::Error),
    #[error("line {line}: {msg}")]
    At { line: usize, msg: String },
    #[error("{0}")]
    Toml(String),
    #[error("not a regular file")]
    NotRegular,
}

/// Parse config text.
pub fn parse(text: &str) -> Result<FileConfig, ParseError> {
    toml::from_str::<FileConfig>(text).map_err(|e| {
        let msg = e.message().replace('\n', " ");
        match e.span() {
            Some(s) => ParseError::At {
                line: text[..s.start.min(text.len())].matches('\n').count() + 1,
                msg,
            },
            None => ParseError::Toml(msg),
        }
    })
}

impl ConfigError {
    /// Name the line of a bad value, found in the file's text by its section and key.
    fn at_line(self, f: &FileConfig) -> Self {
        match self {
            ConfigError::Duration { path, key, value, .. } => ConfigError::Duration {
                line: line_of(&f.text, key),
                path,
                key,
                value,
            },
            other => other,
        }
    }
}

/// The line (1-based) of `section.key` (or a top-level `key`) in TOML text.
fn line_of(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.rsplit_once('.').map_or(("", dotted), |(s, k)| (s, k));
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
        } else if current == section
            && line
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}

fn dur(path: Option<&Path>, key: &'static str, v: Option<&str>) -> Result<Option<Duration>, ConfigError> {
    v.map(|s| {
        humantime::parse_duration(s).map_err(|_| ConfigError::Duration {
            path: path.map(|p| p.display().to_string()).unwrap_or_default(),
            line: None,
            key,
            value: s.to_string(),
        })
    })
    .transpose()
}

pub fn resolve(g: &GlobalArgs) -> Result<(Settings, FileConfig, Option<PathBuf>), ConfigError> {
    let (f, path) = load_file(g.config.as_deref())?;
    match settings(g, &f, path.as_deref()) {
        Ok(s) => Ok((s, f, path)),
        Err(e) => Err(e.at_line(&f)),
    }
}

/// The settings from the command line (flags and `CELLCTL_*`) over the config file `f`.
fn settings(g: &GlobalArgs, f: &FileConfig, path: Option<&Path>) -> Result<Settings, ConfigError> {
    let tool_timeout = match g.tool_timeout {
        Some(d) => d.into(),
        None => dur(path, "tool_timeout", f.tool_timeout.as_deref())?.unwrap_or(Duration::from_secs(300)),
    };
    if tool_timeout.is_zero() {
        return Err(ConfigError::Invalid(
            "tool_timeout must be more than 0: every tool call needs a limit".into(),
        ));
    }
    let mut s = Settings {
        vcd_home: g
            .vcd_home
            .clone()
            .or(f.vcd_home.clone())
            .unwrap_or_else(|| "/opt/vmware/vcloud-director".into()),
        user: g
            .user
            .clone()
            .or(f.user.clone())
            .unwrap_or_else(|| "administrator".into()),
        password_file: g.password_file.clone().or(f.password_file.clone()),
        credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        state_dir: g
            .state_dir
            .clone()
            .or(f.state_dir.clone())
            .unwrap_or_else(|| "/var/lib/cellctl".into()),
        systemctl: g
            .systemctl
            .clone()
            .or(f.systemctl.clone())
            .unwrap_or_else(|| "systemctl".into()),
        service: g
            .service
            .clone()
            .or(f.service.clone())
            .unwrap_or_else(|| "vmware-vcd".into()),
        tool_timeout,
        json: g.json || f.json.unwrap_or(false),
        install: install_settings(g, f, path)?,
        health: health_settings(g, f, path)?,
        health_deadline: dur(path, "health.deadline", f.health.deadline.as_deref())?
            .unwrap_or(Duration::from_secs(15 * 60)),
        webhook: webhook_settings(g, f, path)?,
        keep_reports: f.report.keep.unwrap_or(50).max(1),
        metrics_file: g.metrics_file.clone().or(f.report.metrics_file.clone()),
        events: g.events,
        api: api_settings(g, f, path)?,
        redundancy_guard: !g.skip_redundancy_guard && f.api.redundancy_guard.unwrap_or(true),
        rollback_budget: rollback_budget(f, path)?,
        lock: lock_settings(g, f, path)?,
    };
    check_trust(g, f, &s, path)?;
    if s.webhook.enabled() {
        s.webhook.secret = Some(webhook_secret(g, f, s.credentials_dir.as_deref())?);
    }
    Ok(s)
}

/// What others could have written is refused: plain-HTTP URLs (unless the loud opt-in is given)
/// and programs named by the config that another user could replace.
fn check_trust(g: &GlobalArgs, f: &FileConfig, s: &Settings, path: Option<&Path>) -> Result<(), ConfigError> {
    let allow_http = g.insecure_allow_http;
    let mut plain = Vec::new();
    check_https(&API_URL, &s.api.url, allow_http, &mut plain)?;
    check_https(&HEALTH_URL, &s.health.url, allow_http, &mut plain)?;
    for u in &s.webhook.urls {
        check_https(&REPORT_URL, u, allow_http, &mut plain)?;
    }
    if !plain.is_empty() {
        tracing::warn!(
            "--insecure-allow-http: plain HTTP for the {}: cleartext credentials may be sent (the API login carries the administrator password); for test rigs only",
            plain.join(" and the ")
        );
    }
    if let Some(p) = path {
        if let Some(c) = &s.install.command {
            check_program(p, "[install] command", c)?;
        }
        // A --version-command (or CELLCTL_VERSION_COMMAND) replaces the file's, which then never runs.
        if g.version_command.is_none()
            && let Some(c) = &f.install.version_command
        {
            check_program(p, "[install] version_command", c)?;
        }
    }
    Ok(())
}

fn install_settings(g: &GlobalArgs, f: &FileConfig, path: Option<&Path>) -> Result<InstallSettings, ConfigError> {
    let i = InstallSettings {
        systemd_run: g
            .systemd_run
            .clone()
            .or(f.install.systemd_run.clone())
            .unwrap_or_else(|| "systemd-run".into()),
        version_command: match &g.version_command {
            Some(c) => c.split_whitespace().map(str::to_string).collect(),
            None => f.install.version_command.clone().unwrap_or_else(|| {
                DEFAULT_VERSION_COMMAND
                    .iter()
                    .map(std::string::ToString::to_string)
                    .collect()
            }),
        },
        command: f.install.command.clone(),
        timeout: dur(path, "install.timeout", f.install.timeout.as_deref())?.unwrap_or(Duration::from_secs(2 * 3600)),
        kind: match (&g.cell_kind, &f.install.kind) {
            (Some(k), _) => Some(cell_kind(k, "--cell-kind")?),
            (None, Some(k)) => Some(cell_kind(
                k,
                &format!(
                    "[install] kind in {}",
                    path.map_or_else(|| "the config file".into(), |p| p.display().to_string())
                ),
            )?),
            (None, None) => None,
        },
        vamicli: g
            .vamicli
            .clone()
            .or(f.install.vamicli.clone())
            .unwrap_or_else(|| "vamicli".into()),
        unpack_dir: g
            .unpack_dir
            .clone()
            .or(f.install.unpack_dir.clone())
            .unwrap_or_else(|| DEFAULT_UNPACK_DIR.into()),
        min_free: min_free(g, f, path)?,
    };
    if i.version_command.is_empty() {
        return Err(ConfigError::Invalid(
            "install.version_command is empty: give the argv that prints the installed version".into(),
        ));
    }
    if i.command.as_ref().is_some_and(std::vec::Vec::is_empty) {
        return Err(ConfigError::Invalid(
            "install.command is empty: remove it or give an argv with {package}".into(),
        ));
    }
    Ok(i)
}

/// `--min-free` (or CELLCTL_MIN_FREE) over `[install] min_free`.
fn min_free(g: &GlobalArgs, f: &FileConfig, path: Option<&Path>) -> Result<Option<u64>, ConfigError> {
    let (value, source) = match (&g.min_free, &f.install.min_free) {
        (Some(v), _) => (v, "--min-free (or CELLCTL_MIN_FREE)".to_string()),
        (None, Some(v)) => (
            v,
            format!(
                "[install] min_free in {}{}",
                path.map(|p| p.display().to_string()).unwrap_or_default(),
                line_of(&f.text, "install.min_free")
                    .map(|l| format!(" line {l}"))
                    .unwrap_or_default()
            ),
        ),
        (None, None) => return Ok(None),
    };
    parse_size(value).map(Some).ok_or_else(|| {
        ConfigError::Invalid(format!(
            "{source}: {value:?} is not a size; give bytes or a number with K, M, G or T (binary units), e.g. \"4GiB\""
        ))
    })
}

fn health_settings(
    g: &GlobalArgs,
    f: &FileConfig,
    path: Option<&Path>,
) -> Result<crate::adapters::health::Health, ConfigError> {
    Ok(crate::adapters::health::Health {
        url: g
            .health_url
            .clone()
            .or(f.health.url.clone())
            .unwrap_or_else(default_health_url),
        ca_file: g.health_ca_file.clone().or(f.health.ca_file.clone()),
        pin: pin(
            HEALTH_PIN,
            g.health_cert_sha256.as_deref(),
            f.health.cert_sha256.as_deref(),
        )?,
        request_timeout: dur(path, "health.request_timeout", f.health.request_timeout.as_deref())?
            .unwrap_or(Duration::from_secs(10)),
        interval: dur(path, "health.interval", f.health.interval.as_deref())?.unwrap_or(Duration::from_secs(5)),
    })
}

fn webhook_settings(
    g: &GlobalArgs,
    f: &FileConfig,
    path: Option<&Path>,
) -> Result<crate::adapters::webhook::Webhook, ConfigError> {
    Ok(crate::adapters::webhook::Webhook {
        urls: if g.report_url.is_empty() {
            f.report.urls.clone().unwrap_or_default()
        } else {
            g.report_url.clone()
        },
        ca_file: f.report.ca_file.clone(),
        pin: pin(REPORT_PIN, None, f.report.cert_sha256.as_deref())?,
        connect_timeout: dur(path, "report.connect_timeout", f.report.connect_timeout.as_deref())?
            .unwrap_or(Duration::from_secs(5)),
        timeout: dur(path, "report.timeout", f.report.timeout.as_deref())?.unwrap_or(Duration::from_secs(10)),
        budget: dur(path, "report.budget", f.report.budget.as_deref())?.unwrap_or(Duration::from_secs(60)),
        secret: None,
        events: f.report.events.unwrap_or(false),
        outbox_max: f.report.outbox_max.unwrap_or(500),
    })
}

fn api_settings(
    g: &GlobalArgs,
    f: &FileConfig,
    path: Option<&Path>,
) -> Result<crate::adapters::api::ApiSettings, ConfigError> {
    Ok(crate::adapters::api::ApiSettings {
        url: g
            .api_url
            .clone()
            .or(f.api.url.clone())
            .unwrap_or_else(|| format!("https://{}", crate::adapters::host::hostname())),
        ca_file: g.api_ca_file.clone().or(f.api.ca_file.clone()),
        pin: pin(API_PIN, g.api_cert_sha256.as_deref(), f.api.cert_sha256.as_deref())?,
        connect_timeout: dur(path, "api.connect_timeout", f.api.connect_timeout.as_deref())?
            .unwrap_or(Duration::from_secs(10)),
        timeout: dur(path, "api.timeout", f.api.timeout.as_deref())?.unwrap_or(Duration::from_secs(30)),
        cell_name: g
            .cell_name
            .clone()
            .or(f.api.cell_name.clone())
            .unwrap_or_else(crate::adapters::host::hostname),
        min_active_peers: f.api.min_active_peers.unwrap_or(1),
        page_size: f.api.page_size.unwrap_or(128).clamp(1, 128),
        cancel_concurrency: f.api.cancel_concurrency.unwrap_or(4).max(1),
        cancel_grace: dur(path, "api.cancel_grace", f.api.cancel_grace.as_deref())?.unwrap_or(Duration::from_secs(120)),
    })
}

/// The webhook's signing secret: `[report] secret_file` (mode checked), else the systemd
/// credential.
fn webhook_secret(
    g: &GlobalArgs,
    f: &FileConfig,
    credentials_dir: Option<&Path>,
) -> Result<crate::adapters::credentials::Secret, ConfigError> {
    let secret_file = g.report_secret_file.clone().or(f.report.secret_file.clone());
    let from_cred = credentials_dir
        .map(|d| d.join(REPORT_SECRET_CREDENTIAL))
        .filter(|p| p.exists());
    let secret = match (secret_file, from_cred) {
        (Some(p), _) => crate::adapters::credentials::read_secret_file(&p, true),
        (None, Some(p)) => crate::adapters::credentials::read_secret_file(&p, false),
        (None, None) => {
            return Err(ConfigError::Invalid(format!(
                "report urls are set but there is no signing secret: set [report] secret_file (mode 0600) or LoadCredential={REPORT_SECRET_CREDENTIAL}:FILE"
            )));
        }
    };
    secret.map_err(|e| ConfigError::Invalid(format!("report signing secret: {e}")))
}

/// Where a `[lock]` key stands in the config file, for messages ("" when not from a file).
fn lock_at(f: &FileConfig, path: Option<&Path>, key: &str) -> String {
    let line = line_of(&f.text, &format!("lock.{key}"));
    match (path, line) {
        (Some(p), Some(n)) => format!(" (config file {} line {n})", p.display()),
        (Some(p), None) => format!(" (config file {})", p.display()),
        _ => String::new(),
    }
}

/// The one lock backend and its URL (None: no lock); both set, or a URL that is not http(s),
/// is refused.
fn lock_backend(
    g: &GlobalArgs,
    f: &FileConfig,
    path: Option<&Path>,
) -> Result<Option<(crate::adapters::lock::Backend, String)>, ConfigError> {
    use crate::adapters::lock::Backend;
    let l = &f.lock;
    let at = |key: &str| lock_at(f, path, key);
    let etcd = g.lock_etcd.clone().or(l.etcd.clone());
    let fleetlock = g.lock_fleetlock.clone().or(l.fleetlock.clone());
    let (backend, url, key) = match (etcd, fleetlock) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid(format!(
                "both lock backends are set: etcd (--lock-etcd, CELLCTL_LOCK_ETCD, [lock] etcd){} and fleetlock (--lock-fleetlock, CELLCTL_LOCK_FLEETLOCK, [lock] fleetlock){}; keep one",
                at("etcd"),
                at("fleetlock")
            )));
        }
        (Some(u), None) => (Backend::Etcd, u, "etcd"),
        (None, Some(u)) => (Backend::FleetLock, u, "fleetlock"),
    };
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => {
            return Err(ConfigError::Invalid(format!(
                "lock {key} URL {url:?} (--lock-{key}, CELLCTL_LOCK_{}, [lock] {key}){} is not an http:// or https:// URL; e.g. http://etcd1:2379",
                key.to_uppercase(),
                at(key)
            )));
        }
    }
    Ok(Some((backend, url)))
}

/// `[lock]` (flags and `CELLCTL_LOCK_*` over the file): one backend at most, a FleetLock-valid
/// group, a slot count of at least 1, and client certificate and key together.
fn lock_settings(
    g: &GlobalArgs,
    f: &FileConfig,
    path: Option<&Path>,
) -> Result<Option<crate::adapters::lock::LockSettings>, ConfigError> {
    use crate::adapters::lock::LockSettings;
    let l = &f.lock;
    let at = |key: &str| lock_at(f, path, key);
    let Some((backend, url)) = lock_backend(g, f, path)? else {
        return Ok(None);
    };
    let group = g
        .lock_group
        .clone()
        .or(l.group.clone())
        .unwrap_or_else(|| "default".into());
    if group.is_empty() || !group.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
        return Err(ConfigError::Invalid(format!(
            "lock group {group:?} (--lock-group, CELLCTL_LOCK_GROUP, [lock] group){} must match [a-zA-Z0-9.-]+ (the FleetLock protocol's rule)",
            at("group")
        )));
    }
    let slots = g.lock_slots.or(l.slots).unwrap_or(1);
    if slots == 0 {
        return Err(ConfigError::Invalid(format!(
            "lock slots (--lock-slots, CELLCTL_LOCK_SLOTS, [lock] slots){} must be at least 1",
            at("slots")
        )));
    }
    let id = g.lock_id.clone().or(l.id.clone());
    if id.as_deref().is_some_and(|i| i.trim().is_empty() || i.contains('\n')) {
        return Err(ConfigError::Invalid(format!(
            "lock id (--lock-id, CELLCTL_LOCK_ID, [lock] id){} must be a non-empty single line",
            at("id")
        )));
    }
    let client_cert = g.lock_client_cert.clone().or(l.client_cert.clone());
    let client_key = g.lock_client_key.clone().or(l.client_key.clone());
    if client_cert.is_some() != client_key.is_some() {
        return Err(ConfigError::Invalid(format!(
            "lock client_cert and client_key (--lock-client-cert/--lock-client-key, [lock]){} go together: set both or neither",
            at(if client_cert.is_some() {
                "client_cert"
            } else {
                "client_key"
            })
        )));
    }
    let wait = match g.lock_wait {
        Some(d) => d.into(),
        None => dur(path, "lock.wait", l.wait.as_deref())?.unwrap_or(Duration::ZERO),
    };
    Ok(Some(LockSettings {
        backend,
        url,
        group,
        slots,
        id,
        ca_file: g.lock_ca_file.clone().or(l.ca_file.clone()),
        client_cert,
        client_key,
        wait,
    }))
}

/// Default 2 minutes: the shipped unit's TimeoutStopSec is 10 minutes, and a stop request must
/// end the run well before systemd kills it.
fn rollback_budget(f: &FileConfig, path: Option<&Path>) -> Result<Duration, ConfigError> {
    let b = dur(path, "drain.rollback_budget", f.drain.rollback_budget.as_deref())?.unwrap_or(Duration::from_secs(120));
    if b.is_zero() {
        return Err(ConfigError::Invalid(
            "drain.rollback_budget must be more than 0: the undo after a signal needs time".into(),
        ));
    }
    Ok(b)
}

/// The cell serves its own name's certificate, so the default names this host, not localhost.
fn default_health_url() -> String {
    format!("https://{}/cloud/server_status", crate::adapters::host::hostname())
}

pub fn resolve_drain(a: &DrainArgs, f: &FileConfig, path: Option<&Path>) -> Result<DrainSettings, ConfigError> {
    drain_settings(a, f, path).map_err(|e| e.at_line(f))
}

fn drain_settings(a: &DrainArgs, f: &FileConfig, path: Option<&Path>) -> Result<DrainSettings, ConfigError> {
    let deadline = match a.deadline {
        Some(d) => d.into(),
        None => dur(path, "drain.deadline", f.drain.deadline.as_deref())?.unwrap_or(Duration::from_secs(30 * 60)),
    };
    if deadline.is_zero() {
        return Err(ConfigError::Invalid(
            "the drain deadline (--deadline, CELLCTL_DEADLINE or [drain] deadline) must be more than 0: running jobs need time to end; e.g. 30m".into(),
        ));
    }
    let poll_interval = match a.poll_interval {
        Some(d) => Some(d.into()),
        None => dur(path, "drain.poll_interval", f.drain.poll_interval.as_deref())?,
    };
    let signal_interval =
        dur(path, "drain.signal_interval", f.drain.signal_interval.as_deref())?.unwrap_or(Duration::from_secs(1));
    if poll_interval.is_some_and(|p| p.is_zero()) || signal_interval.is_zero() {
        return Err(ConfigError::Invalid(
            "poll interval must be more than 0 (it would busy-wait on the cell)".into(),
        ));
    }
    Ok(DrainSettings {
        deadline,
        deadline_explicit: a.deadline.is_some(),
        on_deadline: a
            .on_deadline
            .map(Into::into)
            .or(f.drain.on_deadline)
            .unwrap_or(DeadlineAction::Abort),
        after_cancel: match a
            .after_cancel
            .map(Into::into)
            .or(f.drain.after_cancel)
            .unwrap_or(DeadlineAction::Abort)
        {
            DeadlineAction::Cancel => {
                return Err(ConfigError::Invalid("drain.after_cancel must be abort or force".into()));
            }
            x => x,
        },
        cancel_grace: a.cancel_grace.map(Into::into),
        allow_last_cell: a.allow_last_cell || f.drain.allow_last_cell.unwrap_or(false),
        maintenance: !a.no_maintenance && f.drain.maintenance.unwrap_or(true),
        shutdown: !a.no_shutdown && f.drain.shutdown.unwrap_or(true),
        poll_interval,
        signal_interval,
        confirm_interval: poll_interval.unwrap_or(Duration::MAX).min(Duration::from_secs(2)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("4GiB"), Some(4 << 30));
        assert_eq!(parse_size("500m"), Some(500 << 20));
        assert_eq!(parse_size(" 2 K "), Some(2048));
        for bad in ["", "G", "1.5G", "-1", "4 parsecs", "99999999999T"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn unknown_key_is_rejected_with_line() {
        let e = parse("user = \"a\"\nvcd_hom = \"/x\"\n").unwrap_err().to_string();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(e.contains("vcd_hom"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn unknown_key_in_section_is_rejected() {
        assert!(parse("[drain]\ndeadlin = \"1m\"\n").is_err());
    }

    #[test]
    fn flags_win_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "user = \"fromfile\"\nservice = \"svc\"\n[drain]\ndeadline = \"5m\"\non_deadline = \"force\"\n",
        )
        .unwrap();
        let g = GlobalArgs {
            config: Some(p),
            user: Some("fromflag".into()),
            ..Default::default()
        };
        let (s, f, path) = resolve(&g).unwrap();
        assert_eq!(s.user, "fromflag");
        assert_eq!(s.service, "svc");
        let d = resolve_drain(&DrainArgs::default(), &f, path.as_deref()).unwrap();
        assert_eq!(d.deadline, Duration::from_secs(300));
        assert_eq!(d.on_deadline, DeadlineAction::Force);
        assert!(!d.deadline_explicit);
    }

    #[test]
    fn bad_duration_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[drain]\ndeadline = \"soon\"\n").unwrap();
        let g = GlobalArgs {
            config: Some(p),
            ..Default::default()
        };
        let (_, f, path) = resolve(&g).unwrap();
        let e = resolve_drain(&DrainArgs::default(), &f, path.as_deref())
            .unwrap_err()
            .to_string();
        assert!(e.contains("drain.deadline") && e.contains("soon"), "{e}");
        assert!(e.contains("line 2"), "names the line: {e}");
    }

    #[test]
    fn a_key_is_found_on_its_line_in_its_section() {
        let text = "tool_timeout = \"x\"\n[health]\ndeadline = \"y\"\n[drain]\n# deadline\n  deadline   = \"z\"\n";
        assert_eq!(line_of(text, "tool_timeout"), Some(1));
        assert_eq!(line_of(text, "health.deadline"), Some(3));
        assert_eq!(line_of(text, "drain.deadline"), Some(6));
        assert_eq!(line_of(text, "api.timeout"), None);
    }

    fn config_with(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, p)
    }

    #[test]
    fn config_others_can_write_is_refused_with_the_fix() {
        for mode in [0o664, 0o646] {
            let (_d, p) = config_with("", mode);
            let e = load_file(Some(&p)).unwrap_err().to_string();
            assert!(e.contains(&format!("mode {mode:o}")), "{e}");
            assert!(e.contains(&format!("chmod go-w {}", p.display())), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let (_d, p) = config_with("", 0o644);
        assert!(load_file(Some(&p)).is_ok());
    }

    #[test]
    fn writable_program_named_by_the_config_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (d, p) = config_with("", 0o600);
        let prog = d.path().join("installer");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o775)).unwrap();
        let argv = vec![prog.display().to_string(), "{package}".into()];
        let e = check_program(&p, "[install] command", &argv).unwrap_err().to_string();
        assert!(e.contains(&format!("chmod go-w {}", prog.display())), "{e}");
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_program(&p, "[install] command", &argv).is_ok());
        // Bare names and absent files are not files anyone could have written.
        assert!(check_program(&p, "[install] command", &["rpm".into()]).is_ok());
        assert!(check_program(&p, "[install] command", &["/nonexistent/x".into()]).is_ok());
    }

    #[test]
    fn only_https_urls_unless_plain_http_is_allowed() {
        let mut plain = Vec::new();
        assert!(check_https(&API_URL, "https://vcd.example.com", false, &mut plain).is_ok());
        for bad in [
            "http://vcd.example.com",
            "HTTP://vcd.example.com",
            "ftp://x",
            "vcd.example.com",
        ] {
            let e = check_https(&API_URL, bad, false, &mut plain).unwrap_err().to_string();
            assert!(e.contains("https://") && e.contains("--api-url"), "{bad}: {e}");
        }
        assert!(plain.is_empty());
        check_https(&HEALTH_URL, "http://h/cloud/server_status", true, &mut plain).unwrap();
        check_https(&HEALTH_URL, "http://h2/cloud/server_status", true, &mut plain).unwrap();
        assert_eq!(plain, vec![HEALTH_URL.name], "named once");
        assert!(check_https(&REPORT_URL, "ftp://x", true, &mut plain).is_err());
    }

    #[test]
    fn pins_come_from_flag_else_file_and_a_bad_one_names_its_setting() {
        let hex = "ab".repeat(32);
        let (_d, p) = config_with(
            &format!(
                "[api]\ncert_sha256 = \"{}\"\n[report]\ncert_sha256 = \"{hex}\"\n",
                "CD:".repeat(31) + "CD"
            ),
            0o600,
        );
        let g = GlobalArgs {
            config: Some(p.clone()),
            health_cert_sha256: Some(hex.to_uppercase()),
            ..Default::default()
        };
        let (s, _, _) = resolve(&g).unwrap();
        let api = s.api.pin.unwrap();
        assert_eq!(api.thumbprint, "cd".repeat(32).parse().unwrap());
        assert_eq!(api.setting, API_PIN);
        assert_eq!(s.health.pin.unwrap().thumbprint, hex.parse().unwrap());
        assert_eq!(s.webhook.pin.unwrap().setting, REPORT_PIN);
        // The flag wins over the file; a bad value stops the run, naming where it came from.
        let g = GlobalArgs {
            config: Some(p),
            api_cert_sha256: Some("AB:CD".into()),
            ..Default::default()
        };
        let e = resolve(&g).unwrap_err().to_string();
        assert!(
            e.contains("--api-cert-sha256") && e.contains("\"AB:CD\"") && e.contains("64"),
            "{e}"
        );
    }

    #[test]
    fn lock_comes_from_flag_over_file_and_none_means_no_lock() {
        let (_d, p) = config_with(
            "[lock]\netcd = \"http://e:2379\"\ngroup = \"g1\"\nwait = \"2m\"\n",
            0o600,
        );
        let g = GlobalArgs {
            config: Some(p.clone()),
            lock_group: Some("g2".into()),
            ..Default::default()
        };
        let (s, _, _) = resolve(&g).unwrap();
        let l = s.lock.unwrap();
        assert_eq!((l.url.as_str(), l.group.as_str(), l.slots), ("http://e:2379", "g2", 1));
        assert_eq!(l.wait, Duration::from_secs(120));
        let (_d2, empty) = config_with("", 0o600);
        let g = GlobalArgs {
            config: Some(empty),
            ..Default::default()
        };
        assert!(resolve(&g).unwrap().0.lock.is_none(), "no [lock]: no slot");
        let (_d3, bad) = config_with("[lock]\nfleetlock = \"ftp://x\"\n", 0o600);
        let g = GlobalArgs {
            config: Some(bad),
            ..Default::default()
        };
        let e = resolve(&g).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("--lock-fleetlock"), "{e}");
    }

    #[test]
    fn explicit_missing_config_is_an_error() {
        let g = GlobalArgs {
            config: Some("/nonexistent/cellctl.toml".into()),
            ..Default::default()
        };
        assert!(resolve(&g).is_err());
    }
}
