//! The cell's state and its lazy time model.
//!
//! Nothing runs in the background: every access calls [`State::advance`] with the wall-clock time,
//! which replays what happened since the last access (cell start-up, watchdog restart, quiesce
//! taking effect, job arrivals and completions). Delays are stored as knobs and the moments they
//! start from are stored as timestamps, so changing a knob takes effect on a pending transition.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Format version of `state.json`.
pub const SCHEMA: u32 = 1;

/// Arrivals generated in one advance at most; a cell left alone for days must not explode.
const ARRIVAL_CAP: u64 = 10_000;

/// Failed jobs kept for inspection; older ones are dropped.
const FAILED_KEEP: usize = 1_000;

/// Operations given to arriving jobs, cycled, so a verbose status looks like a real cell's.
const ARRIVAL_OPERATIONS: &[&str] = &[
    "vappDeploy",
    "vdcComposeVapp",
    "vappPowerOn",
    "vdcCopyTemplate",
    "vappUndeployPowerOff",
];

pub const DEFAULT_PROMPT: &str = "Please enter the password for user {user}: ";

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn rfc3339_s(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// Durations are stored as humantime text ("300ms", "1h") so state.json and `show --json`
/// read like the `set` command's values.
mod dur {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    pub mod opt {
        use super::*;
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(text) => humantime::parse_duration(&text)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

/// Settings that can be changed while the cell runs (`cellsim set`). Knobs missing from an
/// older state.json take their defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default)]
pub struct Knobs {
    pub user: String,
    pub password: String,
    /// Password prompt; `{user}` is replaced by the user given with `-u`.
    pub prompt: String,
    /// Sleep at the start of every cell-management-tool call (JVM start-up).
    #[serde(with = "dur")]
    pub latency: Duration,
    #[serde(with = "dur")]
    pub quiesce_delay: Duration,
    #[serde(with = "dur")]
    pub startup_delay: Duration,
    /// Duration of jobs that arrive on their own and of `jobs add` without `--duration`.
    #[serde(with = "dur")]
    pub job_duration: Duration,
    #[serde(with = "dur::opt")]
    pub arrival_every: Option<Duration>,
    #[serde(with = "dur::opt")]
    pub watchdog_restart: Option<Duration>,
    /// Whether `--status` prints `In Maintenance Mode = ...` (vCD 8.10+ does, 5.1 did not).
    pub maintenance_line: bool,
    pub version: String,
    pub service_name: String,
    /// A hanging tool ignores SIGTERM, so callers must escalate to SIGKILL.
    pub hang_ignores_term: bool,
    /// How long an API session token is valid after the login (the current value applies to
    /// existing tokens too, so lowering it expires them).
    #[serde(with = "dur")]
    pub api_token_ttl: Duration,
    /// Whether the cells list carries `status` (API 38.1+); false: only `isActive` (API <= 38.0).
    pub api_status_field: bool,
    /// How long an answer waits under the `api-slow` fault.
    #[serde(with = "dur")]
    pub api_slow_delay: Duration,
    /// `systemctl reboot` kills the process that asked (as a real reboot ends every process),
    /// before it answers.
    pub reboot_kills: bool,
    /// A start fails when the installed version differs from the shared database's schema
    /// (on by default in cells made with `--group`; off in a group of one).
    pub schema_check: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            user: "administrator".into(),
            password: "vcd-sim-password".into(),
            prompt: DEFAULT_PROMPT.into(),
            latency: Duration::ZERO,
            quiesce_delay: Duration::from_secs(1),
            startup_delay: Duration::ZERO,
            job_duration: Duration::from_secs(30),
            arrival_every: None,
            watchdog_restart: None,
            maintenance_line: true,
            version: "10.6.1".into(),
            service_name: "vmware-vcd".into(),
            hang_ignores_term: false,
            api_token_ttl: Duration::from_secs(30 * 60),
            api_status_field: true,
            api_slow_delay: Duration::from_secs(5),
            reboot_kills: false,
            schema_check: false,
        }
    }
}

impl Knobs {
    pub const KEYS: &'static [&'static str] = &[
        "user",
        "password",
        "prompt",
        "latency",
        "quiesce_delay",
        "startup_delay",
        "job_duration",
        "arrival_every",
        "watchdog_restart",
        "maintenance_line",
        "version",
        "service_name",
        "hang_ignores_term",
        "api_token_ttl",
        "api_status_field",
        "api_slow_delay",
        "reboot_kills",
        "schema_check",
    ];

    /// Applies one `KEY=VALUE` from `cellsim set`; keys may use `-` or `_`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let key = key.replace('-', "_");
        match key.as_str() {
            "user" => self.user = value.into(),
            "password" => self.password = value.into(),
            "prompt" => self.prompt = value.into(),
            "version" => self.version = value.into(),
            "service_name" => self.service_name = value.into(),
            "latency" => self.latency = parse_duration(value)?,
            "quiesce_delay" => self.quiesce_delay = parse_duration(value)?,
            "startup_delay" => self.startup_delay = parse_duration(value)?,
            "job_duration" => self.job_duration = parse_duration(value)?,
            "arrival_every" => self.arrival_every = parse_interval(value)?,
            "watchdog_restart" => self.watchdog_restart = parse_opt_duration(value)?,
            "maintenance_line" => self.maintenance_line = parse_bool(value)?,
            "hang_ignores_term" => self.hang_ignores_term = parse_bool(value)?,
            "api_token_ttl" => self.api_token_ttl = parse_duration(value)?,
            "api_status_field" => self.api_status_field = parse_bool(value)?,
            "api_slow_delay" => self.api_slow_delay = parse_duration(value)?,
            "reboot_kills" => self.reboot_kills = parse_bool(value)?,
            "schema_check" => self.schema_check = parse_bool(value)?,
            _ => {
                return Err(format!("unknown knob `{key}` (known: {})", Knobs::KEYS.join(", ")));
            }
        }
        Ok(())
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("bad duration `{text}`: {e}"))
}

/// `none` (or `never`/`off`) means unset.
pub fn parse_opt_duration(text: &str) -> Result<Option<Duration>, String> {
    match text.trim() {
        "none" | "never" | "off" => Ok(None),
        other => parse_duration(other).map(Some),
    }
}

/// Like [`parse_opt_duration`], but zero is refused: it would mean infinitely many arrivals.
pub fn parse_interval(text: &str) -> Result<Option<Duration>, String> {
    let d = parse_opt_duration(text)?;
    if d == Some(Duration::ZERO) {
        return Err("arrival_every must be more than 0 (use `none` to stop arrivals)".into());
    }
    Ok(d)
}

/// Orders version strings such as `10.5.1`, `10.6.0.1` or `10.6.1-24300000`: numeric parts
/// compare as numbers, other parts as text, and a longer version with an equal prefix is newer.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(v: &str) -> Vec<&str> {
        v.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|p| !p.is_empty())
            .collect()
    }
    let (a, b) = (parts(a), parts(b));
    for (x, y) in a.iter().zip(&b) {
        let order = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("bad boolean `{text}` (use true or false)")),
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Up,
    Down,
    Starting,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Up => "up",
            Phase::Down => "down",
            Phase::Starting => "starting",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Job {
    pub id: String,
    pub operation: String,
    pub started_at_ms: u64,
    /// None: never ends on its own (a stuck task).
    pub ends_at_ms: Option<u64>,
    /// False: an API cancel is recorded (`cancel_requested`) but the job keeps running.
    #[serde(default = "yes")]
    pub cancellable: bool,
    #[serde(default)]
    pub cancel_requested: bool,
}

fn yes() -> bool {
    true
}

/// A job ended by an API cancel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CanceledJob {
    pub id: String,
    pub operation: String,
    pub started_at_ms: u64,
    pub canceled_at_ms: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FailedJob {
    pub id: String,
    pub operation: String,
    pub started_at_ms: u64,
    pub failed_at_ms: u64,
    pub reason: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Hang,
    Crash,
    Garble,
    JvmWarnings,
    ConnectRefused,
    /// REST API faults (`cellsim serve`): every API call but `/api/versions`.
    #[serde(rename = "api-401")]
    Api401,
    #[serde(rename = "api-500")]
    Api500,
    ApiSlow,
    ApiMalformed,
    /// The next installer runs fail part-way (as if the disk were full): a fault an operator
    /// can fix (`clear`), unlike a `--kind fail` package.
    InstallerFail,
}

impl FaultKind {
    pub const NAMES: &'static [&'static str] = &[
        "hang",
        "crash",
        "garble",
        "jvm-warnings",
        "connect-refused",
        "api-401",
        "api-500",
        "api-slow",
        "api-malformed",
        "installer-fail",
    ];

    pub fn parse(text: &str) -> Option<FaultKind> {
        Some(match text {
            "hang" => FaultKind::Hang,
            "crash" => FaultKind::Crash,
            "garble" => FaultKind::Garble,
            "jvm-warnings" => FaultKind::JvmWarnings,
            "connect-refused" => FaultKind::ConnectRefused,
            "api-401" => FaultKind::Api401,
            "api-500" => FaultKind::Api500,
            "api-slow" => FaultKind::ApiSlow,
            "api-malformed" => FaultKind::ApiMalformed,
            "installer-fail" => FaultKind::InstallerFail,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Hang => "hang",
            FaultKind::Crash => "crash",
            FaultKind::Garble => "garble",
            FaultKind::JvmWarnings => "jvm-warnings",
            FaultKind::ConnectRefused => "connect-refused",
            FaultKind::Api401 => "api-401",
            FaultKind::Api500 => "api-500",
            FaultKind::ApiSlow => "api-slow",
            FaultKind::ApiMalformed => "api-malformed",
            FaultKind::InstallerFail => "installer-fail",
        }
    }
    /// Faults of the REST API rather than of cell-management-tool.
    pub fn is_api(self) -> bool {
        matches!(
            self,
            FaultKind::Api401 | FaultKind::Api500 | FaultKind::ApiSlow | FaultKind::ApiMalformed
        )
    }
}

/// The cell-management-tool operation a fault applies to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    Status,
    StatusVerbose,
    Quiesce,
    Shutdown,
    Maintenance,
    Any,
    /// `vamicli update --repo` (appliance cells).
    VamicliRepo,
    /// `vamicli update --check` and `vamicli version`.
    VamicliCheck,
    /// `vamicli update --install`.
    VamicliInstall,
}

impl Op {
    pub fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "status" => Op::Status,
            "status-verbose" => Op::StatusVerbose,
            "quiesce" => Op::Quiesce,
            "shutdown" => Op::Shutdown,
            "maintenance" => Op::Maintenance,
            "any" => Op::Any,
            "vamicli-repo" => Op::VamicliRepo,
            "vamicli-check" => Op::VamicliCheck,
            "vamicli-install" => Op::VamicliInstall,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Op::Status => "status",
            Op::StatusVerbose => "status-verbose",
            Op::Quiesce => "quiesce",
            Op::Shutdown => "shutdown",
            Op::Maintenance => "maintenance",
            Op::Any => "any",
            Op::VamicliRepo => "vamicli-repo",
            Op::VamicliCheck => "vamicli-check",
            Op::VamicliInstall => "vamicli-install",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub op: Op,
    /// Calls it still affects; None: every call until cleared.
    pub remaining: Option<u32>,
}

impl Fault {
    fn matches(&self, op: Op) -> bool {
        self.op == Op::Any || self.op == op
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct State {
    pub schema: u32,
    pub knobs: Knobs,
    pub service_running: bool,
    pub service_since_ms: u64,
    pub cell: Phase,
    /// When the cell entered its current phase.
    pub cell_since_ms: u64,
    /// Down because of `--shutdown` (the watchdog may restart it), not a service stop.
    pub shut_down_by_tool: bool,
    /// `--quiesce true` given: no new jobs start.
    pub quiesced: bool,
    pub quiesced_at_ms: Option<u64>,
    /// `Is Active`; turns false `quiesce_delay` after the quiesce.
    pub active: bool,
    pub in_maintenance: bool,
    pub jobs: Vec<Job>,
    pub failed_jobs: Vec<FailedJob>,
    pub completed_count: u64,
    /// Jobs ever started (arrivals and `jobs add`).
    pub arrived_count: u64,
    pub next_job_seq: u64,
    /// The next arrival is due `arrival_every` after this.
    pub arrival_anchor_ms: u64,
    /// Times the cell came back after a `--shutdown` through the watchdog.
    pub watchdog_restarts: u64,
    pub faults: Vec<Fault>,
    pub last_advanced_ms: u64,
    /// Where states written before the shared database record (db.rs) kept its schema version;
    /// read only to write that record on first access, never written again.
    #[serde(default, skip_serializing)]
    pub db_version: Option<String>,
    /// The shared database's schema version, loaded from db.json by `CellDir::with_state` for
    /// this access (None: no record). A start compares it with the installed version.
    #[serde(skip)]
    pub db_schema: Option<String>,
    /// Why the last start left the cell down (installed version and schema differ); cleared by
    /// the next start or stop. Served by the health endpoint and written to the cell's log.
    #[serde(default)]
    pub start_refused: Option<String>,
    /// The UUID of the cell's `urn:vcloud:cell:<uuid>` id; filled in on first access for
    /// states written before it existed (see `CellDir::with_state`).
    #[serde(default)]
    pub cell_id: String,
    /// The cell's name in its group; None (older states): DIR's file name.
    #[serde(default)]
    pub name: Option<String>,
    /// The group directory shared with other cells; None: a group of one.
    #[serde(default)]
    pub group: Option<std::path::PathBuf>,
    /// The API's `primaryIP` (127.0.0.N); None (older states): 127.0.0.1.
    #[serde(default)]
    pub primary_ip: Option<String>,
    /// Jobs ended by an API cancel (the latest [`FAILED_KEEP`]).
    #[serde(default)]
    pub canceled_jobs: Vec<CanceledJob>,
    #[serde(default)]
    pub canceled_count: u64,
    /// Set by `systemctl reboot`: the host is down (the service manager refuses to start units)
    /// until the test plays the boot (`cellsim boot`). None: not rebooting.
    #[serde(default)]
    pub rebooting_since_ms: Option<u64>,
    /// Reboots requested (`systemctl reboot`) and boots played (`cellsim boot`).
    #[serde(default)]
    pub reboots: u64,
    #[serde(default)]
    pub boots: u64,
    /// Timeline events produced by this access, written to the group's timeline.jsonl by
    /// `CellDir::with_state` once the state is saved.
    #[serde(skip)]
    pub events: Vec<Pending>,
}

/// A timeline event not yet written: when it happened, what, and its details.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub at_ms: u64,
    pub event: &'static str,
    pub detail: serde_json::Value,
}

impl State {
    pub fn new(knobs: Knobs, running: bool, now: u64) -> State {
        State {
            schema: SCHEMA,
            knobs,
            service_running: running,
            service_since_ms: now,
            cell: if running { Phase::Up } else { Phase::Down },
            cell_since_ms: now,
            shut_down_by_tool: false,
            quiesced: false,
            quiesced_at_ms: None,
            active: true,
            in_maintenance: false,
            jobs: Vec::new(),
            failed_jobs: Vec::new(),
            completed_count: 0,
            arrived_count: 0,
            next_job_seq: 1,
            arrival_anchor_ms: now,
            watchdog_restarts: 0,
            faults: Vec::new(),
            last_advanced_ms: now,
            db_version: None,
            db_schema: None,
            start_refused: None,
            cell_id: String::new(),
            name: None,
            group: None,
            primary_ip: None,
            canceled_jobs: Vec::new(),
            canceled_count: 0,
            rebooting_since_ms: None,
            reboots: 0,
            boots: 0,
            events: Vec::new(),
        }
    }

    /// Records a timeline event (written when the state is saved).
    pub fn emit(&mut self, at_ms: u64, event: &'static str, detail: serde_json::Value) {
        self.events.push(Pending { at_ms, event, detail });
    }

    /// What the health endpoint reports: the service runs, the cell is up (not starting) and the
    /// maintenance message is off. Quiesce does not matter: a quiesced cell still serves.
    pub fn is_healthy(&self) -> bool {
        self.service_running && self.cell == Phase::Up && !self.in_maintenance
    }

    /// What `Is Active` would say: only an up cell is active.
    pub fn is_active(&self) -> bool {
        self.cell == Phase::Up && self.active
    }

    fn arrivals_allowed(&self) -> bool {
        self.cell == Phase::Up && !self.quiesced && !self.in_maintenance
    }

    /// The one pending automatic transition: the current phase admits at most one.
    fn next_transition(&self) -> Option<u64> {
        match self.cell {
            Phase::Starting => Some(self.cell_since_ms + ms(self.knobs.startup_delay)),
            Phase::Down if self.service_running && self.shut_down_by_tool => {
                self.knobs.watchdog_restart.map(|w| self.cell_since_ms + ms(w))
            }
            Phase::Up if self.quiesced && self.active => self.quiesced_at_ms.map(|q| q + ms(self.knobs.quiesce_delay)),
            _ => None,
        }
    }

    fn apply_transition(&mut self, at: u64) {
        match self.cell {
            Phase::Starting => {
                self.cell = Phase::Up;
                self.cell_since_ms = at;
                self.arrival_anchor_ms = at;
                self.emit(at, "cell_up", serde_json::json!({"version": self.knobs.version}));
            }
            Phase::Down => {
                self.watchdog_restarts += 1;
                self.emit(at, "watchdog_restart", serde_json::Value::Null);
                self.begin_start(at);
            }
            Phase::Up => self.active = false,
        }
    }

    /// Why a start must fail: with `schema_check` on, the installed version differs from the
    /// shared database's schema (as a real cell cannot connect to a database of another version).
    pub fn start_refusal(&self) -> Option<String> {
        let schema = self.db_schema.as_deref()?;
        let installed = self.knobs.version.as_str();
        if !self.knobs.schema_check || compare_versions(schema, installed).is_eq() {
            return None;
        }
        let what = if compare_versions(schema, installed).is_lt() {
            "run the database upgrade (bin/upgrade) before starting an upgraded cell"
        } else {
            "this cell was not upgraded: install the database's version before starting it"
        };
        Some(format!(
            "Unable to start the cell: the database schema is at version {schema}, but this cell runs version {installed}; {what}."
        ))
    }

    /// A (re)started cell is a fresh JVM: quiesce and maintenance are gone. A cell whose
    /// version does not match the database's schema stays down (`start_refused`).
    fn begin_start(&mut self, at: u64) {
        self.start_refused = self.start_refusal();
        if let Some(reason) = self.start_refused.clone() {
            self.cell = Phase::Down;
            self.cell_since_ms = at;
            self.shut_down_by_tool = false;
            self.quiesced = false;
            self.quiesced_at_ms = None;
            self.in_maintenance = false;
            let detail = serde_json::json!({
                "reason": reason,
                "version": self.knobs.version,
                "schema": self.db_schema,
            });
            self.emit(at, "start_refused", detail);
            return;
        }
        self.cell = Phase::Starting;
        self.cell_since_ms = at;
        self.shut_down_by_tool = false;
        self.quiesced = false;
        self.quiesced_at_ms = None;
        self.active = true;
        self.in_maintenance = false;
    }

    /// Replays everything that happened up to `now`.
    pub fn advance(&mut self, now: u64) {
        let now = now.max(self.last_advanced_ms);
        // Each transition changes the phase or clears `active`, so few are possible in a row.
        for _ in 0..16 {
            // A knob shortened after the fact must not rewrite what callers already saw.
            let next = self.next_transition().map(|t| t.max(self.last_advanced_ms));
            match next {
                Some(t) if t <= now => {
                    self.generate_arrivals(t);
                    self.apply_transition(t);
                }
                _ => {
                    self.generate_arrivals(now);
                    break;
                }
            }
        }
        let before = self.jobs.len();
        self.jobs.retain(|j| j.ends_at_ms.is_none_or(|end| end > now));
        self.completed_count += (before - self.jobs.len()) as u64;
        self.last_advanced_ms = now;
    }

    fn generate_arrivals(&mut self, until: u64) {
        if !self.arrivals_allowed() {
            return;
        }
        let Some(every) = self.knobs.arrival_every else {
            return;
        };
        let every = ms(every).max(1);
        if until < self.arrival_anchor_ms + every {
            return;
        }
        let due = (until - self.arrival_anchor_ms) / every;
        // Beyond the cap, the oldest arrivals are counted as started and completed, unseen.
        let skipped = due.saturating_sub(ARRIVAL_CAP);
        self.arrived_count += skipped;
        self.completed_count += skipped;
        self.next_job_seq += skipped;
        self.arrival_anchor_ms += skipped * every;
        for _ in skipped..due {
            self.arrival_anchor_ms += every;
            let op = ARRIVAL_OPERATIONS[(self.next_job_seq as usize) % ARRIVAL_OPERATIONS.len()];
            let end = self.arrival_anchor_ms + ms(self.knobs.job_duration);
            self.start_job(op, self.arrival_anchor_ms, Some(end));
        }
    }

    /// Job ids look like the UUIDs of vCD tasks but count up, so they are easy to read; they
    /// start with the first eight hex digits of the cell's id, so they are unique in a group.
    fn start_job(&mut self, operation: &str, at: u64, ends_at: Option<u64>) -> String {
        let prefix = match self.cell_id.get(..8) {
            Some(p) if p.bytes().all(|b| b.is_ascii_hexdigit()) => p,
            _ => "00000000",
        };
        let id = format!("{prefix}-0000-4000-8000-{:012}", self.next_job_seq);
        self.next_job_seq += 1;
        self.arrived_count += 1;
        self.jobs.push(Job {
            id: id.clone(),
            operation: operation.into(),
            started_at_ms: at,
            ends_at_ms: ends_at,
            cancellable: true,
            cancel_requested: false,
        });
        id
    }

    /// `cellsim jobs add`: works whatever the quiesce state (it models work already admitted).
    pub fn add_jobs(
        &mut self,
        now: u64,
        count: u32,
        duration: Option<Duration>,
        operation: &str,
    ) -> Result<Vec<String>, String> {
        if self.cell != Phase::Up {
            return Err(format!(
                "the cell is {}; jobs can only be added to a cell that is up",
                self.cell.name()
            ));
        }
        Ok((0..count)
            .map(|_| self.start_job(operation, now, duration.map(|d| now + ms(d))))
            .collect())
    }

    /// What the API's status says about this cell: `INACTIVE` unless the service runs and the
    /// cell is up, then `MAINTENANCE`, `QUIESCED` or `ACTIVE`, in that order.
    pub fn api_status(&self) -> &'static str {
        if !self.service_running || self.cell != Phase::Up {
            "INACTIVE"
        } else if self.in_maintenance {
            "MAINTENANCE"
        } else if self.quiesced {
            "QUIESCED"
        } else {
            "ACTIVE"
        }
    }

    /// An API cancel of a running job: an uncancellable one only records the request.
    /// Returns None for an id that is not running here, else whether the job ended.
    pub fn cancel_job(&mut self, now: u64, id: &str) -> Option<bool> {
        let idx = self.jobs.iter().position(|j| j.id == id)?;
        if !self.jobs[idx].cancellable {
            self.jobs[idx].cancel_requested = true;
            return Some(false);
        }
        let job = self.jobs.remove(idx);
        self.canceled_count += 1;
        self.canceled_jobs.push(CanceledJob {
            id: job.id,
            operation: job.operation,
            started_at_ms: job.started_at_ms,
            canceled_at_ms: now,
        });
        if self.canceled_jobs.len() > FAILED_KEEP {
            let excess = self.canceled_jobs.len() - FAILED_KEEP;
            self.canceled_jobs.drain(..excess);
        }
        Some(true)
    }

    /// `cellsim jobs finish`: unknown ids are refused before anything changes.
    pub fn finish_jobs(&mut self, all: bool, ids: &[String]) -> Result<usize, String> {
        if !all && let Some(missing) = ids.iter().find(|id| !self.jobs.iter().any(|j| &j.id == *id)) {
            return Err(format!("no running job with id {missing}"));
        }
        let before = self.jobs.len();
        self.jobs.retain(|j| !all && !ids.contains(&j.id));
        let done = before - self.jobs.len();
        self.completed_count += done as u64;
        Ok(done)
    }

    fn fail_running_jobs(&mut self, now: u64, reason: &str) {
        for job in std::mem::take(&mut self.jobs) {
            self.failed_jobs.push(FailedJob {
                id: job.id,
                operation: job.operation,
                started_at_ms: job.started_at_ms,
                failed_at_ms: now,
                reason: reason.into(),
            });
        }
        if self.failed_jobs.len() > FAILED_KEEP {
            let excess = self.failed_jobs.len() - FAILED_KEEP;
            self.failed_jobs.drain(..excess);
        }
    }

    /// `--quiesce true|false`. Repeating `true` keeps the original deadline.
    pub fn set_quiesce(&mut self, now: u64, on: bool) {
        if on {
            if !self.quiesced {
                self.emit(now, "quiesced", serde_json::Value::Null);
                self.quiesced = true;
                self.quiesced_at_ms = Some(now);
            }
        } else {
            if self.quiesced {
                self.emit(now, "unquiesced", serde_json::Value::Null);
            }
            self.quiesced = false;
            self.quiesced_at_ms = None;
            self.active = true;
            self.arrival_anchor_ms = now;
        }
        self.advance(now);
    }

    pub fn set_maintenance(&mut self, now: u64, on: bool) {
        if self.in_maintenance && !on {
            self.arrival_anchor_ms = now;
            self.emit(now, "maintenance_off", serde_json::Value::Null);
        }
        if !self.in_maintenance && on {
            self.emit(now, "maintenance_on", serde_json::Value::Null);
        }
        self.in_maintenance = on;
    }

    /// `--shutdown`: the cell JVM stops; the service (watchdog) stays active.
    pub fn shutdown_cell(&mut self, now: u64) {
        self.fail_running_jobs(now, "cell shut down");
        self.emit(now, "shut_down", serde_json::Value::Null);
        self.cell = Phase::Down;
        self.cell_since_ms = now;
        self.shut_down_by_tool = true;
        self.advance(now);
    }

    pub fn service_stop(&mut self, now: u64) {
        if self.cell != Phase::Down {
            self.fail_running_jobs(now, "service stopped");
            self.cell = Phase::Down;
            self.cell_since_ms = now;
        }
        self.shut_down_by_tool = false;
        self.start_refused = None;
        if self.service_running {
            self.service_running = false;
            self.service_since_ms = now;
            self.emit(now, "service_stopped", serde_json::Value::Null);
        }
    }

    /// `systemctl reboot`: the host goes down (the service stops, jobs fail) and stays down
    /// until the boot is played ([`State::boot`]). A reboot while rebooting is counted and
    /// changes nothing else.
    pub fn reboot(&mut self, now: u64) {
        self.reboots += 1;
        if self.rebooting_since_ms.is_some() {
            return;
        }
        self.emit(now, "reboot", serde_json::Value::Null);
        self.service_stop(now);
        self.rebooting_since_ms = Some(now);
    }

    /// `cellsim boot`: the host is back; the service starts when `service` (it is enabled and
    /// the test does not hold it back), then `service_started {"by": "boot"}`. A boot of a host
    /// nobody rebooted follows a reboot nobody asked for (a power loss): `reboot` first, with
    /// `{"requested": false}`.
    pub fn boot(&mut self, now: u64, service: bool) {
        if self.rebooting_since_ms.is_none() {
            self.emit(now, "reboot", serde_json::json!({"requested": false}));
            self.service_stop(now);
        }
        self.rebooting_since_ms = None;
        self.boots += 1;
        self.emit(now, "boot", serde_json::Value::Null);
        if service {
            self.service_running = true;
            self.service_since_ms = now;
            self.emit(now, "service_started", serde_json::json!({"by": "boot"}));
            self.begin_start(now);
            self.advance(now);
        }
    }

    /// Between `systemctl reboot` and the boot.
    pub fn rebooting(&self) -> bool {
        self.rebooting_since_ms.is_some()
    }

    /// Returns false when the service was already active (then, as with systemd, nothing happens).
    pub fn service_start(&mut self, now: u64) -> bool {
        if self.service_running || self.rebooting_since_ms.is_some() {
            return false;
        }
        self.service_running = true;
        self.service_since_ms = now;
        self.emit(now, "service_started", serde_json::Value::Null);
        self.begin_start(now);
        self.advance(now);
        true
    }

    /// Knob changes that restart a schedule from now.
    pub fn set_knob(&mut self, now: u64, key: &str, value: &str) -> Result<(), String> {
        let before = self.knobs.arrival_every;
        self.knobs.set(key, value)?;
        if self.knobs.arrival_every != before {
            self.arrival_anchor_ms = now;
        }
        Ok(())
    }

    /// Adds a fault, replacing one of the same kind for the same operation.
    pub fn add_fault(&mut self, fault: Fault) {
        self.faults.retain(|f| !(f.kind == fault.kind && f.op == fault.op));
        self.faults.push(fault);
    }

    /// Uses up one call of the first matching fault among `kinds`.
    pub fn take_fault(&mut self, op: Op, kinds: &[FaultKind]) -> Option<FaultKind> {
        let idx = self
            .faults
            .iter()
            .position(|f| kinds.contains(&f.kind) && f.matches(op) && f.remaining != Some(0))?;
        let kind = self.faults[idx].kind;
        if let Some(n) = self.faults[idx].remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.faults.remove(idx);
            }
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(knobs: Knobs) -> State {
        State::new(knobs, true, 1_000_000)
    }

    #[test]
    fn arrivals_follow_the_interval_and_stop_on_quiesce() {
        let mut s = cell(Knobs {
            arrival_every: Some(Duration::from_millis(100)),
            job_duration: Duration::from_secs(3600),
            ..Knobs::default()
        });
        s.advance(1_000_350);
        assert_eq!(s.arrived_count, 3);
        s.set_quiesce(1_000_350, true);
        s.advance(1_010_000);
        assert_eq!(s.arrived_count, 3);
        assert!(!s.is_active());
        s.set_quiesce(1_010_000, false);
        assert!(s.is_active());
        s.advance(1_010_250);
        assert_eq!(s.arrived_count, 5);
    }

    #[test]
    fn quiesce_takes_effect_after_the_delay() {
        let mut s = cell(Knobs::default());
        s.set_quiesce(1_000_000, true);
        s.advance(1_000_999);
        assert!(s.is_active());
        s.advance(1_001_000);
        assert!(!s.is_active());
    }

    #[test]
    fn jobs_complete_at_their_end() {
        let mut s = cell(Knobs::default());
        s.add_jobs(1_000_000, 2, Some(Duration::from_millis(300)), "x").unwrap();
        s.add_jobs(1_000_000, 1, None, "stuck").unwrap();
        s.advance(1_000_299);
        assert_eq!(s.jobs.len(), 3);
        s.advance(1_000_300);
        assert_eq!(s.jobs.len(), 1);
        assert_eq!(s.completed_count, 2);
    }

    #[test]
    fn watchdog_restarts_a_shut_down_cell_unless_the_service_stops() {
        let mut s = cell(Knobs {
            watchdog_restart: Some(Duration::from_millis(500)),
            startup_delay: Duration::from_millis(200),
            ..Knobs::default()
        });
        s.add_jobs(1_000_000, 1, None, "x").unwrap();
        s.set_quiesce(1_000_000, true);
        s.shutdown_cell(1_000_000);
        assert_eq!(s.failed_jobs.len(), 1);
        s.advance(1_000_600);
        assert_eq!(s.cell, Phase::Starting);
        s.advance(1_000_700);
        assert_eq!(s.cell, Phase::Up);
        assert!(!s.quiesced);
        s.shutdown_cell(1_001_000);
        s.service_stop(1_001_000);
        s.advance(1_100_000);
        assert_eq!(s.cell, Phase::Down);
    }

    #[test]
    fn a_start_against_another_schema_leaves_the_cell_down() {
        let mut s = cell(Knobs {
            version: "10.6.1".into(),
            schema_check: true,
            watchdog_restart: Some(Duration::from_millis(100)),
            ..Knobs::default()
        });
        s.db_schema = Some("10.5.1".into());
        s.shutdown_cell(1_000_000);
        // The watchdog's restart is refused too, and does not loop.
        s.advance(1_000_500);
        assert_eq!((s.cell, s.service_running), (Phase::Down, true));
        assert!(
            s.start_refused
                .as_deref()
                .unwrap()
                .contains("schema is at version 10.5.1")
        );
        assert_eq!(s.watchdog_restarts, 1);
        let refused: Vec<u64> = s
            .events
            .iter()
            .filter(|e| e.event == "start_refused")
            .map(|e| e.at_ms)
            .collect();
        assert_eq!(refused, [1_000_100]);
        s.service_stop(1_000_600);
        assert_eq!(s.start_refused, None);
        s.db_schema = Some("10.6.1".into());
        assert!(s.service_start(1_000_700));
        assert_eq!(s.cell, Phase::Up);
        // Without the check, any schema starts.
        s.knobs.schema_check = false;
        s.db_schema = Some("9.0".into());
        s.service_stop(1_000_800);
        s.service_start(1_000_800);
        assert_eq!(s.cell, Phase::Up);
    }

    #[test]
    fn arrivals_are_capped() {
        let mut s = cell(Knobs {
            arrival_every: Some(Duration::from_millis(1)),
            ..Knobs::default()
        });
        s.advance(1_000_000 + 50_000);
        assert_eq!(s.arrived_count, 50_000);
        assert!(s.jobs.len() as u64 <= ARRIVAL_CAP);
    }

    #[test]
    fn versions_compare_part_by_part() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("10.5.1", "10.6.0"), Less);
        assert_eq!(compare_versions("10.10.0", "10.9.9"), Greater);
        assert_eq!(compare_versions("10.6.1", "10.6.1"), Equal);
        assert_eq!(compare_versions("10.6.1.24300000", "10.6.1"), Greater);
        assert_eq!(compare_versions("10.6.1-2", "10.6.1-10"), Less);
    }

    #[test]
    fn health_needs_an_up_cell_out_of_maintenance() {
        let mut s = cell(Knobs {
            startup_delay: Duration::from_millis(100),
            ..Knobs::default()
        });
        assert!(s.is_healthy());
        s.set_quiesce(1_000_000, true);
        assert!(s.is_healthy());
        s.set_maintenance(1_000_000, true);
        assert!(!s.is_healthy());
        s.service_stop(1_000_000);
        assert!(!s.is_healthy());
        s.service_start(1_000_000);
        assert!(!s.is_healthy());
        s.advance(1_000_100);
        assert!(s.is_healthy());
    }

    #[test]
    fn api_status_and_cancel() {
        let mut s = cell(Knobs::default());
        assert_eq!(s.api_status(), "ACTIVE");
        let ids = s.add_jobs(1_000_000, 2, None, "x").unwrap();
        s.jobs[1].cancellable = false;
        assert_eq!(s.cancel_job(1_000_001, &ids[0]), Some(true));
        assert_eq!(s.cancel_job(1_000_001, &ids[1]), Some(false));
        assert_eq!(s.cancel_job(1_000_001, "nope"), None);
        assert_eq!((s.jobs.len(), s.canceled_count), (1, 1));
        assert!(s.jobs[0].cancel_requested);
        s.set_quiesce(1_000_002, true);
        assert_eq!(s.api_status(), "QUIESCED");
        s.set_maintenance(1_000_002, true);
        assert_eq!(s.api_status(), "MAINTENANCE");
        s.service_stop(1_000_003);
        assert_eq!(s.api_status(), "INACTIVE");
    }

    #[test]
    fn older_knobs_take_defaults() {
        let knobs: Knobs = serde_json::from_str(r#"{"user":"u","latency":"1s"}"#).unwrap();
        assert_eq!(knobs.api_token_ttl, Duration::from_secs(1800));
        assert!(knobs.api_status_field);
    }

    #[test]
    fn times_limited_faults_run_out() {
        let mut s = cell(Knobs::default());
        s.add_fault(Fault {
            kind: FaultKind::Crash,
            op: Op::Status,
            remaining: Some(1),
        });
        assert_eq!(s.take_fault(Op::Quiesce, &[FaultKind::Crash]), None);
        assert_eq!(s.take_fault(Op::Status, &[FaultKind::Crash]), Some(FaultKind::Crash));
        assert_eq!(s.take_fault(Op::Status, &[FaultKind::Crash]), None);
    }
}
