//! cellsim: a simulated VMware Cloud Director cell. See README.md for the contract.

mod api;
mod appliance;
mod boot;
mod db;
mod fleetlock;
mod group;
mod install;
mod model;
mod serve;
mod store;
mod timeline;
mod tls;
mod tools;
mod tty;

use clap::{Args, Parser, Subcommand};
use model::{Fault, FaultKind, Knobs, Op, Phase, State, now_ms, rfc3339_ms};
use serde::Serialize;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use store::{CellDir, Error, Result, io_err};

#[derive(Parser)]
#[command(
    name = "cellsim",
    version,
    about = "A simulated VMware Cloud Director cell, for testing and rehearsing cellctl (never shipped)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Lay out a new simulated cell under DIR (bin/ wrappers, sim/ state)
    Create(Box<CreateArgs>),
    /// Show the cell as it is now
    Show {
        dir: PathBuf,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Add or finish running jobs
    Jobs {
        #[command(subcommand)]
        cmd: JobsCmd,
    },
    /// Change knobs while the cell runs: KEY=VALUE...
    Set {
        dir: PathBuf,
        /// latency, quiesce_delay, arrival_every (`none` stops arrivals), job_duration,
        /// startup_delay, watchdog_restart (`none`), password, user, prompt, version (installed),
        /// service_name, maintenance_line, hang_ignores_term, api_token_ttl, api_status_field,
        /// api_slow_delay, reboot_kills, schema_check; and db_version (the group's shared database)
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Inject a fault into cell-management-tool calls (hang, crash, garble, jvm-warnings,
    /// connect-refused), REST API calls (api-401, api-500, api-slow, api-malformed) or installer
    /// runs (installer-fail: fails part-way, disk full), or `clear` them
    Fault {
        dir: PathBuf,
        #[arg(value_parser = fault_kinds())]
        kind: String,
        /// Which tool calls: status, status-verbose, quiesce, shutdown, maintenance, any; on an
        /// appliance also vamicli-repo, vamicli-check, vamicli-install (hang or crash)
        /// (API faults take none: they apply to every API call but /api/versions)
        #[arg(long, value_parser = ["status", "status-verbose", "quiesce", "shutdown", "maintenance", "any", "vamicli-repo", "vamicli-check", "vamicli-install"])]
        op: Option<String>,
        /// How many calls it affects (default: every call until cleared)
        #[arg(long)]
        times: Option<u32>,
    },
    /// The log of tool invocations
    Invocations {
        dir: PathBuf,
        /// A JSON array of the records instead of text
        #[arg(long)]
        json: bool,
    },
    /// Play the host's boot after `systemctl reboot`: a new boot id in DIR/sim/boot_id, and the
    /// cell's service starts (unless --no-service: the service manager did not start it)
    Boot {
        dir: PathBuf,
        #[arg(long)]
        no_service: bool,
    },
    /// Write a fake VMware installer (.bin, mode 0644) that upgrades the cell, or with
    /// --appliance an appliance update (VMware_Cloud_Director_V-BUILD_update.tar.gz and its
    /// .sha256); prints its path
    Package(PackageArgs),
    /// The group's timeline (GROUPDIR/timeline.jsonl, or DIR/sim/timeline.jsonl for a group of
    /// one) as JSON lines sorted by time, after bringing every cell of the group up to now
    Timeline {
        /// A cell of the group
        #[arg(required_unless_present = "group", conflicts_with = "group")]
        dir: Option<PathBuf>,
        /// The group directory
        #[arg(long, value_name = "GROUPDIR")]
        group: Option<PathBuf>,
    },
    /// Serve the cell's health endpoint (GET|HEAD /cloud/server_status) and REST API on loopback,
    /// over HTTP and HTTPS, until SIGTERM/SIGINT or until DIR is deleted; writes DIR/sim/serve.json
    Serve {
        dir: PathBuf,
        /// Address of the plain-HTTP listener; loopback only (port 0: any free port)
        #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR:PORT")]
        listen: std::net::SocketAddr,
        /// Address of the HTTPS listener (certificate in DIR/sim/tls/, CA DIR/sim/tls/ca.pem)
        #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR:PORT")]
        https: std::net::SocketAddr,
        /// Present a self-signed certificate marked as a CA (as `openssl req -x509` makes) instead
        /// of the one the cell's CA signed (DIR/sim/tls/self-signed.pem, made once)
        #[arg(long)]
        self_signed: bool,
    },
    /// A FleetLock server (POST /v1/pre-reboot, /v1/steady-state) whose semaphores live in etcd
    /// (airlock's key and shape), until killed
    Fleetlock {
        /// Listen address (port 0: any free port)
        #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR:PORT")]
        listen: std::net::SocketAddr,
        /// etcd's client URL (plain http)
        #[arg(long, value_name = "URL")]
        etcd: String,
        /// Slots per group
        #[arg(long, default_value_t = 1)]
        slots: u64,
        /// Write the bound port here once listening
        #[arg(long, value_name = "FILE")]
        port_file: Option<PathBuf>,
    },
}

#[derive(Args)]
struct PackageArgs {
    /// The simulated cell the package installs into
    #[arg(long, value_name = "DIR")]
    cell: PathBuf,
    /// The version it installs (goes into the file name)
    #[arg(long, value_name = "V")]
    version: String,
    /// Directory for OUT_DIR/vmware-vcloud-director-distribution-V-BUILD.bin (made if missing)
    out_dir: PathBuf,
    /// ok: installs V; fail: fails part-way; hang: hangs after the first prompt;
    /// nochange: claims success, installs nothing
    #[arg(long, default_value = "ok", value_parser = install::Kind::NAMES.to_vec())]
    kind: String,
    /// Build number [default: a stable eight-digit number derived from V]
    #[arg(long, value_name = "NNNNNNN")]
    build: Option<String>,
    /// How long the "installation" takes
    #[arg(long, default_value = "1s", value_name = "DUR")]
    install_time: String,
    /// An appliance update package for `vamicli` (a .tar.gz with a manifest) instead of a .bin
    #[arg(long)]
    appliance: bool,
    /// With --appliance: the version the manifest offers, when it should differ from --version
    #[arg(long, value_name = "V", requires = "appliance")]
    offer: Option<String>,
    /// With --appliance: this many more bytes (zeros, compressed to almost nothing) in
    /// package-pool/, so unpacking takes a while (a step a test can catch in flight)
    #[arg(long, value_name = "BYTES", requires = "appliance", default_value_t = 0)]
    pad: u64,
}

#[derive(Args)]
struct CreateArgs {
    dir: PathBuf,
    /// [default: vcd-sim-password]
    #[arg(long)]
    password: Option<String>,
    /// [default: administrator]
    #[arg(long)]
    user: Option<String>,
    /// Jobs running at creation
    #[arg(long, default_value_t = 0)]
    jobs: u32,
    /// [default: 30s]
    #[arg(long, value_name = "DUR")]
    job_duration: Option<String>,
    /// A new job arrives this often while the cell is up, active and not quiesced [default: none]
    #[arg(long, value_name = "DUR")]
    arrival_every: Option<String>,
    /// Start-up time of each cell-management-tool call (a JVM) [default: 0s]
    #[arg(long, value_name = "DUR")]
    latency: Option<String>,
    /// Time from `--quiesce true` to `Is Active = false` [default: 1s]
    #[arg(long, value_name = "DUR")]
    quiesce_delay: Option<String>,
    /// Time from a service start to the cell being up [default: 0s]
    #[arg(long, value_name = "DUR")]
    startup_delay: Option<String>,
    /// After `--shutdown`, the watchdog restarts the cell after this [default: none]
    #[arg(long, value_name = "DUR")]
    watchdog_restart: Option<String>,
    /// Password prompt; `{user}` is replaced by the -u user
    /// [default: "Please enter the password for user {user}: "]
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// `--status` prints only `Job count` and `Is Active` (as vCD 5.1 did)
    #[arg(long)]
    no_maintenance_line: bool,
    /// Installed product version of the cell (also the database's) [default: 10.6.1]
    #[arg(long, value_name = "V")]
    version: Option<String>,
    /// Name of the service unit [default: vmware-vcd]
    #[arg(long, value_name = "NAME")]
    service_name: Option<String>,
    /// A hanging tool ignores SIGTERM
    #[arg(long)]
    hang_ignores_term: bool,
    /// Service stopped, cell down
    #[arg(long)]
    stopped: bool,
    /// Replace an existing cell in DIR
    #[arg(long)]
    force: bool,
    /// A VCD appliance: also a `vamicli` stand-in in DIR/bin (update --repo/--check/--install)
    #[arg(long)]
    appliance: bool,
    /// Join the group of cells in GROUPDIR (made if missing): they list each other in the API
    /// and share its sessions and CA [default: a group of one]
    #[arg(long, value_name = "GROUPDIR")]
    group: Option<PathBuf>,
    /// The cell's name in the API (letters, digits, `.`, `_`, `-`) [default: DIR's file name]
    #[arg(long)]
    name: Option<String>,
}

fn fault_kinds() -> Vec<&'static str> {
    let mut kinds = FaultKind::NAMES.to_vec();
    kinds.push("clear");
    kinds
}

#[derive(Subcommand)]
enum JobsCmd {
    /// Start jobs now; prints their ids
    Add {
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// [default: the job_duration knob]
        #[arg(long, value_name = "DUR", conflicts_with = "never")]
        duration: Option<String>,
        /// The jobs never finish on their own (stuck tasks)
        #[arg(long)]
        never: bool,
        #[arg(long, default_value = "vappDeploy")]
        operation: String,
        /// An API cancel only records the request (`cancel_requested`); the jobs keep running
        #[arg(long)]
        uncancellable: bool,
    },
    /// End jobs now (never-ending ones too)
    Finish {
        dir: PathBuf,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(required_unless_present = "all", value_name = "ID")]
        ids: Vec<String>,
    },
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    // The wrappers' hidden entry point is parsed by hand: its arguments belong to the fake
    // tool and must reach it untouched (clap would claim `-h`, `--help`, `-V`...).
    if args.get(1).is_some_and(|a| a == "tool") {
        std::process::exit(tool_entry(&args[2..]));
    }
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli.cmd) {
        let _ = std::io::stdout().flush();
        eprintln!("cellsim: error: {e}");
        std::process::exit(1);
    }
}

fn tool_entry(args: &[OsString]) -> i32 {
    match args {
        [flag, dir, tool, rest @ ..] if flag == "--cell" => {
            tools::run(Path::new(dir), &tool.to_string_lossy(), rest.to_vec())
        }
        _ => {
            eprintln!("usage: cellsim tool --cell DIR <{}> ARGS...", tools::TOOLS.join("|"));
            2
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Create(args) => create(*args),
        Cmd::Show { dir, json } => show(&dir, json),
        Cmd::Jobs {
            cmd:
                JobsCmd::Add {
                    dir,
                    count,
                    duration,
                    never,
                    operation,
                    uncancellable,
                },
        } => {
            let duration = duration.map(|d| model::parse_duration(&d)).transpose()?;
            let ids = CellDir::new(&dir).with_state(|s, now| {
                let duration = match (never, duration) {
                    (true, _) => None,
                    (false, Some(d)) => Some(d),
                    (false, None) => Some(s.knobs.job_duration),
                };
                let ids = s.add_jobs(now, count, duration, &operation)?;
                for job in s.jobs.iter_mut().filter(|j| ids.contains(&j.id)) {
                    job.cancellable = !uncancellable;
                }
                Ok(ids)
            })?;
            for id in ids {
                println!("{id}");
            }
            Ok(())
        }
        Cmd::Jobs {
            cmd: JobsCmd::Finish { dir, all, ids },
        } => CellDir::new(&dir)
            .with_state(|s, _| Ok(s.finish_jobs(all, &ids)?))
            .map(|_| ()),
        Cmd::Set { dir, pairs } => CellDir::new(&dir).with_state(|s, now| {
            for pair in &pairs {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("expected KEY=VALUE, got `{pair}`"))?;
                // Not a knob but state: what a database upgrade would record.
                if matches!(key.trim(), "db_version" | "db-version") {
                    let cell = CellDir::new(&dir);
                    db::set(&group::shared_dir(&cell, s.group.as_deref()), value, now)?;
                    let detail = serde_json::json!({"from": s.db_schema, "to": value});
                    s.emit(now, "db_set", detail);
                    s.db_schema = Some(value.to_string());
                    continue;
                }
                s.set_knob(now, key.trim(), value)?;
            }
            // A shortened delay may already be due.
            s.advance(now);
            Ok(())
        }),
        Cmd::Fault { dir, kind, op, times } => {
            let op = op.as_deref().map(|o| Op::parse(o).expect("clap checked"));
            CellDir::new(&dir).with_state(|s, _| {
                match FaultKind::parse(&kind) {
                    None => {
                        if times.is_some() {
                            return Err(Error::Msg("`clear` takes no --times".into()));
                        }
                        s.faults.retain(|f| op.is_some_and(|op| f.op != op));
                    }
                    Some(kind) => {
                        if kind.is_api() && op.is_some() {
                            return Err(Error::Msg(format!(
                                "{}: API faults take no --op (they apply to every API call but /api/versions)",
                                kind.name()
                            )));
                        }
                        if kind == FaultKind::InstallerFail && op.is_some() {
                            return Err(Error::Msg(
                                "installer-fail takes no --op (it applies to installer runs)".into(),
                            ));
                        }
                        if times == Some(0) {
                            return Err(Error::Msg("--times must be at least 1".into()));
                        }
                        s.add_fault(Fault {
                            kind,
                            op: op.unwrap_or(Op::Any),
                            remaining: times,
                        });
                    }
                }
                Ok(())
            })
        }
        Cmd::Invocations { dir, json } => invocations(&dir, json),
        Cmd::Boot { dir, no_service } => boot::boot(&dir, !no_service),
        Cmd::Timeline { dir, group } => timeline::print(dir.as_deref(), group.as_deref()),
        Cmd::Package(args) if args.appliance => {
            let path = install::write_appliance_package(
                &args.cell,
                &args.out_dir,
                &args.version,
                args.build,
                args.offer.as_deref(),
                model::parse_duration(&args.install_time)?,
                args.pad,
            )?;
            println!("{}", path.display());
            Ok(())
        }
        Cmd::Package(args) => {
            let exe = std::env::current_exe().map_err(io_err(Path::new("current executable")))?;
            let path = install::write_package(
                &exe,
                &args.cell,
                &args.out_dir,
                &args.version,
                install::Kind::parse(&args.kind).expect("clap checked"),
                args.build,
                model::parse_duration(&args.install_time)?,
            )?;
            println!("{}", path.display());
            Ok(())
        }
        Cmd::Serve {
            dir,
            listen,
            https,
            self_signed,
        } => serve::serve(&dir, listen, https, self_signed),
        Cmd::Fleetlock {
            listen,
            etcd,
            slots,
            port_file,
        } => fleetlock::serve(listen, &etcd, slots, port_file.as_deref()),
    }
}

fn create(args: CreateArgs) -> Result<()> {
    let mut knobs = Knobs::default();
    let settings = [
        ("password", &args.password),
        ("user", &args.user),
        ("job_duration", &args.job_duration),
        ("arrival_every", &args.arrival_every),
        ("latency", &args.latency),
        ("quiesce_delay", &args.quiesce_delay),
        ("startup_delay", &args.startup_delay),
        ("watchdog_restart", &args.watchdog_restart),
        ("prompt", &args.prompt),
        ("version", &args.version),
        ("service_name", &args.service_name),
    ];
    for (key, value) in settings {
        if let Some(value) = value {
            knobs.set(key, value)?;
        }
    }
    knobs.maintenance_line = !args.no_maintenance_line;
    knobs.hang_ignores_term = args.hang_ignores_term;
    if args.stopped && args.jobs > 0 {
        return Err(Error::Msg("--jobs needs a running cell (drop --stopped)".into()));
    }

    for sub in ["bin", "sim"] {
        let path = args.dir.join(sub);
        fs::create_dir_all(&path).map_err(io_err(&path))?;
    }
    let root = args.dir.canonicalize().map_err(io_err(&args.dir))?;
    let cell = CellDir::new(&root);
    if cell.state_path().exists() && !args.force {
        return Err(Error::Msg(format!(
            "{} already holds a cell (use --force to replace it)",
            root.display()
        )));
    }
    let name = args.name.clone().unwrap_or_else(|| cell.default_name());
    group::check_name(&name)?;

    let now = now_ms();
    let duration = knobs.job_duration;
    let mut state = State::new(knobs, !args.stopped, now);
    state.cell_id = store::uuid_v4();
    state.name = Some(name.clone());
    if args.jobs > 0 {
        state.add_jobs(now, args.jobs, Some(duration), "vappDeploy")?;
    }
    match &args.group {
        Some(dir) => {
            // Held until the state (with its primary IP) is saved, so concurrent creates agree.
            let (group, ip, _lock) = group::register(dir, &name, &root)?;
            // The group's database exists once: its first member's version makes it.
            db::init(&group, &state.knobs.version, now)?;
            state.knobs.schema_check = true;
            state.group = Some(group);
            state.primary_ip = Some(ip);
            cell.save(&state)?;
        }
        None => {
            db::set(&cell.sim(), &state.knobs.version, now)?;
            state.primary_ip = Some("127.0.0.1".into());
            cell.save(&state)?;
        }
    }
    tls::ensure(&cell, state.group.as_deref(), true)?;
    boot::new_boot_id(&cell)?;
    let created = model::Pending {
        at_ms: now,
        event: "created",
        detail: serde_json::json!({
            "service": if state.service_running { "running" } else { "stopped" },
            "cell": state.cell.name(),
            "version": state.knobs.version,
        }),
    };
    timeline::append(&timeline::path_of(&cell, state.group.as_deref()), &name, &[created])?;
    let log = cell.invocations_path();
    fs::write(&log, "").map_err(io_err(&log))?;

    let exe = std::env::current_exe().map_err(io_err(Path::new("current executable")))?;
    let mut tools = tools::TOOLS.to_vec();
    if args.appliance {
        appliance::create(&cell)?;
        tools.push(tools::VAMICLI);
    } else {
        let _ = fs::remove_file(cell.sim().join("appliance.json"));
        let _ = fs::remove_file(cell.bin().join(tools::VAMICLI));
    }
    for tool in tools {
        let path = cell.bin().join(tool);
        let script = format!(
            "#!/bin/sh\n# The simulated {tool} of the cellsim cell in this directory.\nexec {} tool --cell {} {tool} \"$@\"\n",
            sh_quote(&exe),
            sh_quote(&root)
        );
        fs::write(&path, script).map_err(io_err(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(io_err(&path))?;
    }
    // Not a model of the cell, so a plain script rather than a wrapper into cellsim.
    let path = cell.bin().join("systemd-run");
    fs::write(&path, include_str!("systemd-run.sh")).map_err(io_err(&path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(io_err(&path))?;
    println!("Created a simulated cell in {}", root.display());
    println!("  tools: {}", cell.bin().display());
    Ok(())
}

/// Single-quotes a path for /bin/sh.
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

#[derive(Serialize)]
struct JobView<'a> {
    id: &'a str,
    operation: &'a str,
    started_at: String,
    ends_at: Option<String>,
    cancellable: bool,
    cancel_requested: bool,
}

#[derive(Serialize)]
struct CanceledJobView<'a> {
    id: &'a str,
    operation: &'a str,
    started_at: String,
    canceled_at: String,
}

#[derive(Serialize)]
struct FailedJobView<'a> {
    id: &'a str,
    operation: &'a str,
    started_at: String,
    failed_at: String,
    reason: &'a str,
}

#[derive(Serialize)]
struct ShowView<'a> {
    dir: String,
    name: &'a str,
    /// `urn:vcloud:cell:<uuid>`
    id: String,
    /// The group directory; null for a group of one.
    group: Option<String>,
    primary_ip: &'a str,
    now: String,
    service: &'static str,
    service_name: &'a str,
    cell: &'static str,
    cell_since: String,
    job_count: usize,
    is_active: bool,
    quiesced: bool,
    quiesced_at: Option<String>,
    in_maintenance: bool,
    version: &'a str,
    /// The shared database's schema version (db.json of the group).
    db_version: Option<&'a str>,
    /// Why the last start left the cell down; null unless refused.
    start_refused: Option<&'a str>,
    /// Between `systemctl reboot` and `cellsim boot`.
    rebooting: bool,
    reboots: u64,
    boots: u64,
    /// Whether the health endpoint answers `Service is up.`
    healthy: bool,
    jobs: Vec<JobView<'a>>,
    completed_count: u64,
    arrived_count: u64,
    failed_jobs: Vec<FailedJobView<'a>>,
    canceled_count: u64,
    canceled_jobs: Vec<CanceledJobView<'a>>,
    watchdog_restarts: u64,
    /// The `vamicli` stand-in's state; null for a Linux cell.
    appliance: Option<appliance::ApplianceState>,
    faults: &'a [Fault],
    knobs: &'a Knobs,
}

fn show_view<'a>(dir: &Path, s: &'a State, now: u64) -> ShowView<'a> {
    ShowView {
        dir: dir.display().to_string(),
        name: s.name.as_deref().unwrap_or_default(),
        id: format!("urn:vcloud:cell:{}", s.cell_id),
        group: s.group.as_ref().map(|g| g.display().to_string()),
        primary_ip: s.primary_ip.as_deref().unwrap_or("127.0.0.1"),
        now: rfc3339_ms(now),
        service: if s.service_running { "running" } else { "stopped" },
        service_name: &s.knobs.service_name,
        cell: s.cell.name(),
        cell_since: rfc3339_ms(s.cell_since_ms),
        job_count: s.jobs.len(),
        is_active: s.is_active(),
        quiesced: s.quiesced,
        quiesced_at: s.quiesced_at_ms.map(rfc3339_ms),
        in_maintenance: s.in_maintenance,
        version: &s.knobs.version,
        db_version: s.db_schema.as_deref(),
        start_refused: s.start_refused.as_deref(),
        rebooting: s.rebooting(),
        reboots: s.reboots,
        boots: s.boots,
        healthy: s.is_healthy(),
        jobs: s
            .jobs
            .iter()
            .map(|j| JobView {
                id: &j.id,
                operation: &j.operation,
                started_at: rfc3339_ms(j.started_at_ms),
                ends_at: j.ends_at_ms.map(rfc3339_ms),
                cancellable: j.cancellable,
                cancel_requested: j.cancel_requested,
            })
            .collect(),
        completed_count: s.completed_count,
        arrived_count: s.arrived_count,
        failed_jobs: s
            .failed_jobs
            .iter()
            .map(|j| FailedJobView {
                id: &j.id,
                operation: &j.operation,
                started_at: rfc3339_ms(j.started_at_ms),
                failed_at: rfc3339_ms(j.failed_at_ms),
                reason: &j.reason,
            })
            .collect(),
        canceled_count: s.canceled_count,
        canceled_jobs: s
            .canceled_jobs
            .iter()
            .map(|j| CanceledJobView {
                id: &j.id,
                operation: &j.operation,
                started_at: rfc3339_ms(j.started_at_ms),
                canceled_at: rfc3339_ms(j.canceled_at_ms),
            })
            .collect(),
        watchdog_restarts: s.watchdog_restarts,
        appliance: appliance::is_appliance(&CellDir::new(dir))
            .then(|| appliance::load(&CellDir::new(dir)).ok())
            .flatten(),
        faults: &s.faults,
        knobs: &s.knobs,
    }
}

fn show(dir: &Path, json: bool) -> Result<()> {
    let cell = CellDir::new(&dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()));
    let (state, now) = cell.with_state(|s, now| Ok((s.clone(), now)))?;
    let view = show_view(&cell.root, &state, now);
    if json {
        println!("{}", serde_json::to_string_pretty(&view).expect("view serializes"));
        return Ok(());
    }
    let since =
        |ms: u64| humantime::format_duration(std::time::Duration::from_millis(now.saturating_sub(ms) / 1000 * 1000));
    println!("Simulated cell in {} (version {})", view.dir, view.version);
    println!(
        "  name:        {} ({}, {}), {}",
        view.name,
        view.id,
        view.primary_ip,
        match &view.group {
            Some(g) => format!("group {g}"),
            None => "a group of one".into(),
        }
    );
    println!(
        "  service {}:  {} (for {})",
        view.service_name,
        view.service,
        since(state.service_since_ms)
    );
    let cell_line = match state.cell {
        Phase::Down if state.shut_down_by_tool => "down (shut down by cell-management-tool)".to_string(),
        Phase::Down if state.start_refused.is_some() => {
            format!("down ({})", state.start_refused.as_deref().unwrap_or_default())
        }
        _ => view.cell.to_string(),
    };
    println!("  cell:        {cell_line} (for {})", since(state.cell_since_ms));
    println!("  Job count = {}", view.job_count);
    println!("  Is Active = {}", view.is_active);
    println!("  In Maintenance Mode = {}", view.in_maintenance);
    println!(
        "  health:      {}",
        if view.healthy {
            "Service is up."
        } else {
            "Service Unavailable"
        }
    );
    println!("  database:    version {}", view.db_version.unwrap_or("unknown"));
    if let Some(a) = &view.appliance {
        println!(
            "  appliance:   repo {}, {} update(s) installed{}",
            a.repo.as_deref().unwrap_or("not set"),
            a.installs.len(),
            if a.reboot_required { ", reboot required" } else { "" }
        );
    }
    println!(
        "  quiesced:    {}",
        match &view.quiesced_at {
            Some(at) => format!("yes, since {at}"),
            None => "no".into(),
        }
    );
    println!(
        "  jobs:        {} running, {} completed, {} failed, {} canceled, {} started in all",
        view.job_count,
        view.completed_count,
        view.failed_jobs.len(),
        view.canceled_count,
        view.arrived_count
    );
    for job in &view.jobs {
        println!(
            "    {}  {:<22} started {}  ends {}{}{}",
            job.id,
            job.operation,
            job.started_at,
            job.ends_at.as_deref().unwrap_or("never"),
            if job.cancellable { "" } else { "  uncancellable" },
            if job.cancel_requested { "  cancel requested" } else { "" }
        );
    }
    for job in &view.canceled_jobs {
        println!("    {}  {:<22} CANCELED {}", job.id, job.operation, job.canceled_at);
    }
    for job in &view.failed_jobs {
        println!(
            "    {}  {:<22} FAILED {} ({})",
            job.id, job.operation, job.failed_at, job.reason
        );
    }
    if state.faults.is_empty() {
        println!("  faults:      none");
    }
    for f in &state.faults {
        let calls = if f.kind.is_api() {
            "API".to_string()
        } else {
            f.op.name().to_string()
        };
        println!(
            "  fault:       {} on {calls} calls{}",
            f.kind.name(),
            f.remaining.map(|n| format!(" ({n} more)")).unwrap_or_default()
        );
    }
    let knobs = serde_json::to_value(&state.knobs).expect("knobs serialize");
    let knobs: Vec<String> = knobs
        .as_object()
        .expect("knobs are an object")
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s:?}"),
            other => format!("{k}={other}"),
        })
        .collect();
    println!("  knobs:       {}", knobs.join(" "));
    Ok(())
}

fn invocations(dir: &Path, json: bool) -> Result<()> {
    let path = CellDir::new(dir).invocations_path();
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|source| Error::Json {
                path: path.clone(),
                source,
            })
        })
        .collect::<Result<_>>()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&records).expect("records serialize"));
        return Ok(());
    }
    for r in records {
        let r: tools::Record = serde_json::from_value(r).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        let mut flags = String::new();
        if r.stdin_tty {
            flags += " stdin=tty";
        }
        if r.password_in_argv {
            flags += " PASSWORD-IN-ARGV";
        }
        if r.password_in_env {
            flags += " PASSWORD-IN-ENV";
        }
        println!(
            "{}  {} {}  exit={} tty={}{}",
            r.at,
            r.tool,
            r.argv.join(" "),
            r.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none (hung)".into()),
            if r.had_tty { "yes" } else { "no" },
            flags
        );
    }
    Ok(())
}
