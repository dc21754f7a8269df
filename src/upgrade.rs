//! `install`, `start` and `upgrade`: verify the package before the cell is touched, drain,
//! install in a transient unit, optionally upgrade the database, start, wait until healthy.
//! The journal records the stage, so a rerun after a crash, reboot or `kill -9` continues
//! where the run stopped (and learns the transient unit's result if it was under way).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::PackageArgs;
use crate::config::{DrainSettings, Settings};
use crate::credentials::Secret;
use crate::drain::{self, Runner, check_executable, service_of};
use crate::error::Error;
use crate::exec;
use crate::install::{InstallError, Learned, Transient, UnitSpec, UnitStatus};
use crate::journal::{
    Before, DeadlineAction, RunOptions, RunRecord, SCHEMA, Stage, Step, StepRecord, StepStatus, UpgradeRecord,
    new_run_id, now_rfc3339, unix_now,
};
use crate::package::{self, Kind, Package, compare_versions};
use crate::procedure::{Outcome, Phase};
use crate::report::{Report, hostname};
use crate::service::{Service, ServiceState};
use crate::signals::{self, SignalWatch};
use crate::vendor::CellTool;

/// What `install` and `upgrade` were asked to do.
#[derive(Debug, Clone)]
pub struct UpgradeOptions {
    pub command: &'static str,
    pub package: Option<PathBuf>,
    pub pkg: PackageArgs,
    pub db_upgrade: bool,
    /// Drain first (upgrade); None for `install`, which needs a stopped cell.
    pub drain: Option<DrainSettings>,
    /// Start and health-check afterwards (upgrade).
    pub start: bool,
    pub health_deadline: Duration,
}

/// The last `n` lines of installer output, on one line (for error messages).
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Read the installed version with the configured command (None if it cannot be told).
pub async fn installed_version(s: &Settings) -> Option<String> {
    let (prog, args) = s.install.version_command.split_first()?;
    let out = exec::run(std::path::Path::new(prog), args, s.tool_timeout).await.ok()?;
    if !out.success() {
        return None;
    }
    out.stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

fn transient(s: &Settings) -> Transient {
    Transient {
        systemd_run: s.install.systemd_run.clone(),
        self_exe: std::env::current_exe().unwrap_or_else(|_| "/usr/bin/cellctl".into()),
        dir: s.state_dir.join("units"),
    }
}

/// Is `cmd` runnable (an executable path, or a name found on PATH)?
fn resolvable(cmd: &std::path::Path) -> bool {
    let exec_ok = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if cmd.components().count() > 1 {
        return exec_ok(cmd);
    }
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| exec_ok(&d.join(cmd))))
}

/// The program, arguments, answers and environment that install a package.
fn install_spec(s: &Settings, pkg: &Package, unit: &str, allow_downgrade: bool) -> Result<UnitSpec, Error> {
    let path = pkg.path.display().to_string();
    let mut spec = UnitSpec {
        unit: unit.to_string(),
        description: format!("cellctl install {}", pkg.path.display()),
        program: pkg.path.clone(),
        args: vec![],
        answers: vec![],
        env: vec![],
        timeout: s.install.timeout,
    };
    match pkg.kind {
        // VMware's scripted installs answer: y = proceed, n = do not run the configure step.
        Kind::VmwareBin => spec.answers = vec!["y".into(), "n".into()],
        Kind::Rpm => {
            spec.program = "rpm".into();
            spec.args.push("-Uvh".into());
            if allow_downgrade {
                spec.args.push("--oldpackage".into());
            }
            spec.args.push(path);
        }
        Kind::Deb => {
            spec.program = "dpkg".into();
            spec.args = vec!["-i".into(), path];
            spec.env.push(("DEBIAN_FRONTEND".into(), "noninteractive".into()));
        }
        Kind::Custom => {
            let cmd = s
                .install
                .command
                .as_ref()
                .ok_or_else(|| Error::Internal("custom kind without a command".into()))?;
            let argv: Vec<String> = cmd.iter().map(|a| a.replace("{package}", &path)).collect();
            spec.program = argv[0].clone().into();
            spec.args = argv[1..].to_vec();
        }
    }
    Ok(spec)
}

impl Runner {
    fn up(&self) -> &UpgradeRecord {
        self.rec.upgrade.as_ref().expect("an install/upgrade record")
    }

    fn up_mut(&mut self) -> &mut UpgradeRecord {
        self.rec.upgrade.as_mut().expect("an install/upgrade record")
    }

    fn next_stage(&mut self) -> Result<(), Error> {
        let up = self.up();
        let next = up
            .stage
            .next(up.db_upgrade, up.start)
            .ok_or_else(|| Error::Internal(format!("no stage after {:?}", up.stage)))?;
        tracing::debug!(from = ?up.stage, to = ?next, "stage");
        self.up_mut().stage = next;
        self.save()
    }

    /// Run a unit (or pick up the one a previous process started) and wait for its result.
    /// The first signal stops the waiting, not the unit: a rerun learns its result.
    async fn unit_result(
        &mut self,
        step: Step,
        spec: UnitSpec,
        tr: &Transient,
        retry: bool,
    ) -> Result<UnitStatus, Error> {
        let what = if step == Step::Install {
            "the installer"
        } else {
            "the database upgrade"
        };
        let wrap = |e: InstallError| {
            if step == Step::DbUpgrade {
                Error::DbUpgrade(e)
            } else {
                Error::Install(e)
            }
        };
        let previous = self.rec.last(step).map(|s| s.status);
        let mut sig = self.sig.clone();
        let pending = match previous {
            Some(StepStatus::Started) => match tr.learn(&spec.unit).await {
                Learned::Finished(st) => {
                    tracing::info!(unit = %spec.unit, "{what} finished while cellctl was away: {}", st.describe());
                    return Ok(st);
                }
                Learned::Running(pid) => {
                    tracing::info!(unit = %spec.unit, pid, "{what} is still running; waiting for it");
                    Some(())
                }
                Learned::Unknown if retry => None,
                Learned::Unknown => {
                    return Err(wrap(InstallError::Unknown {
                        unit: spec.unit.clone(),
                    }));
                }
            },
            Some(StepStatus::Failed) if !retry => {
                return Err(Error::Conflict(format!(
                    "{what} failed earlier in run {}; fix the cause, then rerun with --retry-install (or undo nothing: the cell is stopped)",
                    self.rec.run_id
                )));
            }
            _ => None,
        };
        let fut = async {
            if pending.is_some() {
                tr.wait_for(&spec.unit, spec.timeout, what).await
            } else {
                tr.run(&spec, what).await
            }
        };
        if pending.is_none() {
            self.begin(step)?;
            self.rec.steps.last_mut().expect("just begun").detail = Some(format!("unit {}", spec.unit));
            self.save()?;
            tracing::info!(unit = %spec.unit, "running {what} in a transient unit: {} {}", spec.program.display(), spec.args.join(" "));
        }
        tokio::select! {
            biased;
            s = sig.received() => Err(Error::Interrupted {
                signal: s,
                name: signals::name(s),
                state: format!("{what} runs on in unit {}: rerun `cellctl upgrade` to pick up its result", spec.unit),
            }),
            r = fut => r.map_err(wrap),
        }
    }

    fn last_idx(&self, step: Step) -> usize {
        self.rec.steps.iter().rposition(|s| s.step == step).expect("step begun")
    }

    /// A unit killed by a signal after running for its whole limit was stopped by systemd at
    /// RuntimeMaxSec: that is the configured timeout, and is reported as such.
    fn timed_out(&self, step: Step, st: &UnitStatus, limit: Duration) -> bool {
        let started = self
            .rec
            .last(step)
            .and_then(|s| humantime::parse_rfc3339_weak(&s.started_at).ok())
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok());
        st.signal.is_some() && started.is_some_and(|ran| ran >= limit)
    }

    async fn install_stage(&mut self, s: &Settings, o: &UpgradeOptions, tr: &Transient) -> Result<(), Error> {
        let pkg = self.up().package.clone();
        if pkg.kind == Kind::VmwareBin {
            // The vendor's instructions: chmod u+x before running it.
            let mode = std::fs::metadata(&pkg.path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0o644);
            if mode & 0o100 == 0 {
                std::fs::set_permissions(&pkg.path, std::fs::Permissions::from_mode(mode | 0o100))
                    .map_err(|e| Error::Install(InstallError::Io(format!("chmod u+x {}: {e}", pkg.path.display()))))?;
            }
        }
        let unit = self.up().install_unit.clone();
        let spec = install_spec(s, &pkg, &unit, self.up().allow_downgrade)?;
        let st = self.unit_result(Step::Install, spec, tr, o.pkg.retry_install).await?;
        let tail = self.tool.password.redact(&tr.tail(&unit));
        self.up_mut().installer_tail = Some(tail.clone());
        let idx = self.last_idx(Step::Install);
        if self.timed_out(Step::Install, &st, s.install.timeout) {
            let e = InstallError::Hung {
                what: "the installer".into(),
                unit: unit.clone(),
                after: s.install.timeout,
            };
            let _ = self.end(idx, StepStatus::Failed, Some(e.to_string()));
            return Err(e.into());
        }
        if !st.success() {
            let e = InstallError::Failed {
                what: "the installer".into(),
                unit: unit.clone(),
                result: st.describe(),
                tail: last_lines(&tail, 3),
            };
            let _ = self.end(idx, StepStatus::Failed, Some(e.to_string()));
            return Err(e.into());
        }
        let after = installed_version(s).await;
        self.up_mut().version_after = after.clone();
        let before = self.up().version_before.clone();
        let unchanged = match (&before, &after) {
            (Some(b), Some(a)) => compare_versions(a, b) == std::cmp::Ordering::Equal,
            (_, None) => true,
            _ => false,
        };
        let downgraded =
            matches!((&before, &after), (Some(b), Some(a)) if compare_versions(a, b) == std::cmp::Ordering::Less);
        if unchanged || (downgraded && !self.up().allow_downgrade) {
            let result = match (&before, &after) {
                (_, None) => "success reported, but the installed version cannot be read afterwards".to_string(),
                (Some(b), Some(a)) if downgraded => format!("installed version went down from {b} to {a}"),
                (_, Some(a)) => format!("success reported, but the installed version is still {a}"),
            };
            let e = InstallError::Failed {
                what: "the installer".into(),
                unit,
                result,
                tail: "see installer_tail".into(),
            };
            let _ = self.end(idx, StepStatus::Failed, Some(e.to_string()));
            return Err(e.into());
        }
        tracing::info!(
            "installed: {} -> {}",
            before.as_deref().unwrap_or("?"),
            after.as_deref().unwrap_or("?")
        );
        self.end(idx, StepStatus::Done, Some(format!("unit {unit}: {}", st.describe())))?;
        self.next_stage()
    }

    async fn db_stage(&mut self, s: &Settings, o: &UpgradeOptions, tr: &Transient) -> Result<(), Error> {
        let unit = self.up().db_unit.clone();
        let spec = UnitSpec {
            unit: unit.clone(),
            description: "cellctl database upgrade".into(),
            program: s.vcd_home.join("bin/upgrade"),
            args: vec!["--backup-completed".into()],
            // Yes to "upgrade the database?" and nothing more: any further question (an active
            // cell found, say) reads end-of-input, which the tool takes as no.
            answers: vec!["y".into()],
            env: vec![],
            timeout: s.install.timeout,
        };
        let st = self.unit_result(Step::DbUpgrade, spec, tr, o.pkg.retry_install).await?;
        let idx = self.last_idx(Step::DbUpgrade);
        if self.timed_out(Step::DbUpgrade, &st, s.install.timeout) {
            let e = InstallError::Hung {
                what: "the database upgrade".into(),
                unit,
                after: s.install.timeout,
            };
            let _ = self.end(idx, StepStatus::Failed, Some(e.to_string()));
            return Err(Error::DbUpgrade(e));
        }
        if !st.success() {
            let tail = self.tool.password.redact(&tr.tail(&unit));
            let e = InstallError::Failed {
                what: "the database upgrade".into(),
                unit,
                result: st.describe(),
                tail: last_lines(&tail, 3),
            };
            let _ = self.end(idx, StepStatus::Failed, Some(e.to_string()));
            return Err(Error::DbUpgrade(e));
        }
        self.end(idx, StepStatus::Done, None)?;
        self.next_stage()
    }

    async fn start_stage(&mut self, s: &Settings, o: &UpgradeOptions) -> Result<(), Error> {
        let steps = start_and_wait(&self.tool, &self.service, s, o.health_deadline, self.sig.clone()).await;
        let (steps, r) = steps;
        self.rec.steps.extend(steps);
        self.save()?;
        r?;
        self.next_stage()
    }
}

/// Start the service, wait for health, and turn the maintenance message off if the started
/// cell shows it. Returns the steps taken (with times) and the result.
pub async fn start_and_wait(
    tool: &CellTool,
    service: &Service,
    s: &Settings,
    deadline: Duration,
    mut sig: SignalWatch,
) -> (Vec<StepRecord>, Result<(), Error>) {
    let mut steps = vec![];
    let mut step = |step: Step, started: String, r: &Result<(), Error>, detail: Option<String>| {
        steps.push(StepRecord {
            step,
            status: if r.is_ok() {
                StepStatus::Done
            } else {
                StepStatus::Failed
            },
            started_at: started,
            ended_at: Some(now_rfc3339()),
            job_count: None,
            detail: r.as_ref().err().map(|e| e.to_string()).or(detail),
        });
    };
    let t0 = now_rfc3339();
    tracing::info!("starting service {}", service.name);
    let r = service.start().await.map_err(Error::from);
    step(Step::StartService, t0, &r, None);
    if r.is_err() {
        return (steps, r);
    }
    let t0 = now_rfc3339();
    let client = match s.health.client() {
        Ok(c) => c,
        Err(e) => {
            let r = Err(Error::from(e));
            step(Step::Health, t0, &r, None);
            return (steps, r);
        }
    };
    let until = tokio::time::Instant::now() + deadline;
    let mut maintenance_checked = false;
    let mut last: String;
    let r = loop {
        match s.health.probe(&client).await {
            Ok(()) => break Ok(()),
            Err(e) => last = e,
        }
        // A cell that came up showing the maintenance message answers 503 for ever: once it
        // answers the tool, check and turn the message off.
        let polled = if maintenance_checked {
            None
        } else {
            Some(tool.status().await)
        };
        if let Some(Err(e @ crate::vendor::ToolError::Rejected { .. })) = polled {
            break Err(e.into());
        }
        if let Some(Ok(st)) = polled {
            maintenance_checked = true;
            if st.in_maintenance == Some(true) {
                let t1 = now_rfc3339();
                tracing::info!("maintenance message is on after start: turning it off");
                let r = tool.maintenance_off().await.map_err(Error::from);
                step(Step::MaintenanceOff, t1, &r, None);
                if let Err(e) = r {
                    break Err(e);
                }
            }
        }
        let now = tokio::time::Instant::now();
        if now >= until {
            break Err(Error::Health(crate::health::HealthError::NotHealthy {
                url: s.health.url.clone(),
                after: deadline,
                last: last.clone(),
            }));
        }
        tokio::select! {
            biased;
            sg = sig.received() => break Err(Error::Interrupted {
                signal: sg,
                name: signals::name(sg),
                state: "the cell was started but not yet seen healthy: rerun `cellctl upgrade` (or `cellctl start`) to finish".into(),
            }),
            _ = tokio::time::sleep(s.health.interval.min(until - now)) => {}
        }
    };
    if r.is_ok() {
        tracing::info!("healthy: {} answers \"{}\"", s.health.url, crate::health::UP_BODY);
    }
    step(Step::Health, t0, &r, Some(s.health.url.clone()));
    (steps, r)
}

async fn new_record(
    s: &Settings,
    o: &UpgradeOptions,
    tool: &CellTool,
    service: &Service,
    report: &mut Report,
) -> Result<RunRecord, Error> {
    let path = o.package.clone().ok_or_else(|| {
        Error::Usage(format!(
            "no package: give `cellctl {} PACKAGE` (or [upgrade] package in the config)",
            o.command
        ))
    })?;
    // 1. The package, before anything else.
    let mut pkg = package::verify(&path, o.pkg.sha256.as_deref(), s.install.command.is_some())?;
    if let Some(v) = &o.pkg.package_version {
        pkg.version = Some(v.clone());
    }
    let before = installed_version(s).await;
    package::check_versions(before.as_deref(), pkg.version.as_deref(), o.pkg.allow_downgrade)?;
    if !resolvable(&s.install.systemd_run) {
        return Err(Error::Precheck(format!(
            "{} not found: installers run in a transient systemd unit; check --systemd-run",
            s.install.systemd_run.display()
        )));
    }
    if o.db_upgrade {
        check_executable(&s.vcd_home.join("bin/upgrade"))?;
    }
    // 2. The cell.
    let run_id = new_run_id();
    report.run_id = Some(run_id.clone());
    let (st, svc) = match o.drain {
        Some(_) => drain::preflight(tool, service).await?,
        None => {
            let svc = service.state().await.map_err(|e| Error::Precheck(e.to_string()))?;
            if svc != ServiceState::Stopped {
                return Err(Error::Conflict(format!(
                    "service {} is {svc:?}: installing under a running cell would break it; drain first (`cellctl drain`), or use `cellctl upgrade`",
                    service.name
                )));
            }
            (None, svc)
        }
    };
    let guard = match (&o.drain, st) {
        (Some(d), Some(_)) => Some(drain::redundancy_guard(s, d.allow_last_cell, tool).await?),
        _ => None,
    };
    let now = now_rfc3339();
    let stage = if st.is_some() { Stage::Drain } else { Stage::Install };
    let d = o.drain.as_ref();
    tracing::info!(
        package = %pkg.path.display(),
        version = pkg.version.as_deref().unwrap_or("?"),
        installed = before.as_deref().unwrap_or("?"),
        "package verified (sha256 {})",
        &pkg.sha256[..12]
    );
    Ok(RunRecord {
        schema: SCHEMA,
        run_id: run_id.clone(),
        command: o.command.into(),
        pid: std::process::id(),
        host: hostname(),
        vcd_home: s.vcd_home.display().to_string(),
        started_at: now.clone(),
        deadline_unix: unix_now() + d.map(|d| d.deadline.as_secs_f64()).unwrap_or(0.0),
        cancel_deadline_unix: None,
        options: RunOptions {
            deadline_secs: d.map(|d| d.deadline.as_secs()).unwrap_or(0),
            on_deadline: d.map(|d| d.on_deadline).unwrap_or(DeadlineAction::Abort),
            after_cancel: d.map(|d| d.after_cancel).unwrap_or(DeadlineAction::Abort),
            maintenance: d.is_some_and(|d| d.maintenance),
            shutdown: true,
        },
        before: Some(Before {
            job_count: st.map(|s| s.job_count).unwrap_or(0),
            is_active: st.is_some_and(|s| s.is_active),
            in_maintenance: st.and_then(|s| s.in_maintenance),
            service: svc,
        }),
        // A stopped cell has nothing to drain: the drain part of the record starts finished.
        phase: if st.is_some() {
            Phase::Start
        } else {
            Phase::Done {
                outcome: Outcome::ShutDown,
            }
        },
        steps: vec![StepRecord {
            step: Step::Preflight,
            status: StepStatus::Done,
            started_at: now,
            ended_at: Some(now_rfc3339()),
            job_count: st.map(|s| s.job_count),
            detail: if st.is_none() {
                Some(format!("service {} already stopped", service.name))
            } else {
                guard
            },
        }],
        outcome: None,
        ended_at: None,
        upgrade: Some(UpgradeRecord {
            package: pkg,
            stage,
            db_upgrade: o.db_upgrade,
            start: o.start,
            allow_downgrade: o.pkg.allow_downgrade,
            version_before: before,
            version_after: None,
            install_unit: format!("cellctl-install-{run_id}"),
            db_unit: format!("cellctl-dbupgrade-{run_id}"),
            installer_tail: None,
        }),
    })
}

async fn upgrade_inner(s: &Settings, o: &UpgradeOptions, sig: SignalWatch, report: &mut Report) -> Result<(), Error> {
    let (journal, _lock) = drain::open_journal(s, o.command)?;
    // `install` on a stopped cell never calls the vendor tool, so it needs no password.
    let tool = if o.drain.is_some() || o.start {
        drain::cell_tool(s)?
    } else {
        CellTool::new(&s.vcd_home, &s.user, Secret::new(String::new()), s.tool_timeout)
    };
    let service = service_of(s);
    let tr = transient(s);
    let rec = match journal.current()? {
        Some(mut rec) if rec.command == o.command && rec.upgrade.is_some() => {
            let up = rec.upgrade.as_ref().expect("checked");
            if let Some(p) = &o.package
                && p != &up.package.path
            {
                return Err(Error::Conflict(format!(
                    "run {} is upgrading with {}, not {}: finish it first (`cellctl {}` with no package or the same one)",
                    rec.run_id,
                    up.package.path.display(),
                    p.display(),
                    o.command
                )));
            }
            if matches!(up.stage, Stage::Drain | Stage::Install) {
                // The file could have changed while we were away: verify it again.
                package::verify(
                    &up.package.path,
                    Some(&up.package.sha256),
                    up.package.kind == Kind::Custom,
                )?;
            }
            tracing::info!(run_id = %rec.run_id, stage = ?up.stage, "continuing the recorded run from {}", rec.started_at);
            rec.pid = std::process::id();
            rec.outcome = None;
            rec.ended_at = None;
            if let Some(d) = &o.drain
                && d.deadline_explicit
            {
                rec.deadline_unix = unix_now() + d.deadline.as_secs_f64();
                rec.options.deadline_secs = d.deadline.as_secs();
            }
            rec
        }
        Some(rec) => {
            return Err(Error::Conflict(format!(
                "a `{}` run ({}) is recorded in {}; finish it with `cellctl {}` or undo it with `cellctl resume`",
                rec.command,
                rec.run_id,
                journal.current_path().display(),
                rec.command
            )));
        }
        None => new_record(s, o, &tool, &service, report).await?,
    };
    let mut r = Runner::new(journal, tool, service, rec, sig, &s.api);
    r.save()?;
    let mut result = Ok(());
    loop {
        let stage = r.up().stage;
        let step = match stage {
            Stage::Drain => {
                let d = o
                    .drain
                    .clone()
                    .ok_or_else(|| Error::Internal("drain stage without drain settings".into()))?;
                if r.rec.phase == Phase::Start {
                    r.advance(crate::procedure::Event::PreflightPassed)?;
                } else if !r.rec.phase.is_done() {
                    r.advance(crate::procedure::Event::Continued)?;
                    r.reassert().await?;
                }
                r.run(&d).await;
                match r.rec.phase {
                    Phase::Done {
                        outcome: Outcome::ShutDown | Outcome::Forced,
                    } => r.next_stage(),
                    // Aborted, interrupted, failed: the drain's own conclusion says it all.
                    _ => return drain_conclusion(r, report),
                }
            }
            Stage::Done => break,
            // A signal that came during the drain's shutdown (which was finished) ends the run
            // here: no new stage is begun, and the journal says where a rerun picks up.
            _ if r.sig.pending().is_some() => {
                let sg = r.sig.pending().expect("checked");
                Err(Error::Interrupted {
                    signal: sg,
                    name: signals::name(sg),
                    state: format!(
                        "the cell was shut down; nothing of stage {stage:?} was begun: rerun `cellctl {}` to continue",
                        o.command
                    ),
                })
            }
            Stage::Install => r.install_stage(s, o, &tr).await,
            Stage::DbUpgrade => r.db_stage(s, o, &tr).await,
            Stage::Start => r.start_stage(s, o).await,
        };
        if let Err(e) = step {
            tracing::error!("{e}");
            result = Err(e);
            break;
        }
    }
    if let Some(api) = &r.api {
        api.logout().await;
    }
    conclude(r, report, result)
}

/// The upgrade stopped in its drain: report it as the drain does, under the upgrade's name.
fn drain_conclusion(r: Runner, report: &mut Report) -> Result<(), Error> {
    let up = r.rec.upgrade.clone();
    let res = r.conclude(report);
    report.upgrade = up;
    res
}

fn conclude(mut r: Runner, report: &mut Report, result: Result<(), Error>) -> Result<(), Error> {
    let done = r.up().stage == Stage::Done;
    let outcome = match (&result, done) {
        (Ok(()), true) => {
            if r.rec.command == "install" {
                "installed"
            } else {
                "upgraded"
            }
        }
        (Err(Error::Interrupted { .. }), _) => "interrupted",
        _ => "failed",
    };
    r.rec.outcome = Some(outcome.into());
    r.rec.ended_at = Some(now_rfc3339());
    let journal = if done {
        r.journal.finish(&r.rec)
    } else {
        r.journal.save(&r.rec).map(|_| r.journal.current_path())
    };
    report.run_id = Some(r.rec.run_id.clone());
    report.started_at = Some(r.rec.started_at.clone());
    report.ended_at = r.rec.ended_at.clone();
    report.before = r.rec.before.clone();
    report.steps = r.rec.steps.clone();
    report.outcome = outcome.into();
    report.upgrade = r.rec.upgrade.clone();
    report.cell_left = Some(
        match (done, r.up().start, r.up().stage) {
            (true, true, _) => "running",
            (true, false, _) => "shut_down",
            (false, _, Stage::Start) => "changed",
            (false, _, _) => "shut_down",
        }
        .into(),
    );
    match journal {
        Ok(p) => report.journal = Some(p.display().to_string()),
        Err(e) if result.is_ok() => return Err(e.into()),
        Err(e) => tracing::error!("{e}"),
    }
    if result.is_err() && !done {
        tracing::warn!(
            "the run is kept in {}: rerun `cellctl {}` to continue from stage {:?}",
            r.journal.current_path().display(),
            r.rec.command,
            r.up().stage
        );
    }
    result
}

pub async fn upgrade(s: &Settings, o: &UpgradeOptions, sig: SignalWatch) -> (Report, Result<(), Error>) {
    let mut report = Report::new(o.command);
    let r = upgrade_inner(s, o, sig, &mut report).await;
    report.settle(&r);
    (report, r)
}

/// `cellctl start`: idempotent, so not journaled.
pub async fn start(s: &Settings, deadline: Duration, sig: SignalWatch) -> (Report, Result<(), Error>) {
    let mut report = Report::new("start");
    report.started_at = Some(now_rfc3339());
    let r = async {
        let tool = drain::cell_tool(s)?;
        let service = service_of(s);
        let (steps, r) = start_and_wait(&tool, &service, s, deadline, sig).await;
        report.steps = steps;
        r
    }
    .await;
    report.ended_at = Some(now_rfc3339());
    match &r {
        Ok(()) => {
            report.outcome = "started".into();
            report.cell_left = Some("running".into());
        }
        Err(e) => report.fail(e),
    }
    (report, r)
}
