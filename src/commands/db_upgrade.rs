//! `cellctl db-upgrade`: the database upgrade alone, once, on a stopped cell: the same step, in
//! the same transient unit, as `upgrade --db-upgrade`. Journaled like an install, so a rerun
//! after a crash picks up the unit's result instead of starting a second upgrade beside it.
//! A second run is a success: the vendor's tool says the database is already at the version.

use crate::adapters::api::Api;
use crate::engine::context::Ctx;
use crate::engine::lifecycle::Procedure;
use crate::engine::preflight::{self, installed_version};
use crate::engine::run::Run;
use crate::engine::units;
use crate::error::Error;
use crate::model::outcome::CommandName;
use crate::model::phase::{Event, Phase};
use crate::model::stage::Stage;
use crate::model::step::{Before, ServiceState};
use crate::model::time::new_run_id;
use crate::output::report::Report;
use crate::store::record::{RunRecord, UpgradeRecord};

/// What `db-upgrade` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct DbUpgradeOptions {
    /// Run the tool again after a failure or an unknown end recorded earlier.
    pub retry: bool,
    /// Ask the group's API whether another cell still runs (not with the guard skipped).
    pub ask_api: bool,
}

pub(crate) struct DbUpgrade<'a>(pub &'a DbUpgradeOptions);

/// This cell's service must be stopped: the tool upgrades the schema every cell uses.
async fn ensure_stopped(ctx: &Ctx<'_>) -> Result<ServiceState, Error> {
    let svc = preflight::service_state(&ctx.service).await?;
    if svc == ServiceState::Stopped {
        return Ok(svc);
    }
    Err(Error::Conflict(format!(
        "service {} is {svc}: the database upgrade runs only with every cell of the group stopped; drain and stop this cell first (`cellctl drain`), then rerun `cellctl db-upgrade`",
        ctx.service.name
    )))
}

/// The other cells of the group, through the API: none may run. An API that cannot be asked
/// does not stop the upgrade (with every cell stopped, the group serves no API at all); the
/// vendor's tool itself refuses while a cell of the group runs.
async fn others_stopped(ctx: &Ctx<'_>) -> Result<String, Error> {
    let s = ctx.s;
    let api = match Api::new(&s.api, &s.user, ctx.tool.password.clone()) {
        Ok(api) => api,
        Err(e) => return Ok(unasked(&e.to_string())),
    };
    let listed = api.cells().await;
    api.logout().await;
    let cells = match listed {
        Ok(c) => c,
        Err(e) => return Ok(unasked(&e.to_string())),
    };
    let running: Vec<&str> = cells
        .iter()
        .filter(|c| c.name != s.api.cell_name && c.running())
        .map(|c| c.name.as_str())
        .collect();
    if !running.is_empty() {
        return Err(Error::Conflict(format!(
            "cell(s) {} of the group still run (the API says): the database upgrade needs every cell stopped; drain them first (`cellctl drain` on each), then rerun `cellctl db-upgrade`",
            running.join(", ")
        )));
    }
    Ok(format!("the API lists {} cell(s), none running", cells.len()))
}

fn unasked(why: &str) -> String {
    tracing::warn!(
        "the group's cells could not be listed ({why}): going ahead; the database tool itself refuses while a cell runs"
    );
    format!("the group's cells could not be listed ({why})")
}

impl Procedure for DbUpgrade<'_> {
    fn command(&self) -> CommandName {
        CommandName::DbUpgrade
    }

    /// The password is for the API only: the tool needs none, and the cell is stopped.
    fn needs_password(&self) -> bool {
        self.0.ask_api
    }

    async fn start(&self, ctx: &Ctx<'_>, report: &mut Report) -> Result<Option<RunRecord>, Error> {
        preflight::check_executable(&preflight::db_tool(ctx.s))?;
        preflight::check_systemd_run(ctx.s)?;
        let svc = ensure_stopped(ctx).await?;
        let detail = if self.0.ask_api {
            others_stopped(ctx).await?
        } else {
            "the group's other cells were not asked (redundancy guard skipped)".to_string()
        };
        let run_id = new_run_id();
        report.run_id = Some(run_id.clone());
        let version = installed_version(ctx.s).await;
        let before = Before {
            job_count: 0,
            is_active: false,
            in_maintenance: None,
            service: svc,
        };
        let mut rec = super::drain::new_record(ctx, CommandName::DbUpgrade, run_id.clone(), None, before, Some(detail));
        rec.upgrade = Some(UpgradeRecord {
            package: None,
            stage: Stage::DbUpgrade,
            db_upgrade: true,
            start: false,
            allow_downgrade: false,
            version_before: version.clone(),
            version_after: version,
            install_unit: String::new(),
            db_unit: Some(format!("cellctl-dbupgrade-{run_id}")),
            installer_tail: None,
            appliance: None,
        });
        Ok(Some(rec))
    }

    async fn continue_record(&self, _ctx: &Ctx<'_>, rec: &mut RunRecord) -> Result<(), Error> {
        tracing::info!(run_id = %rec.run_id, "continuing the recorded database upgrade from {}", rec.started_at);
        Ok(())
    }

    async fn enter(&self, _ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
        if run.rec.phase == Phase::Start {
            // A stopped cell: nothing to drain.
            run.drain_event(Event::AlreadyStopped)?;
        }
        run.save()
    }

    async fn drive(&self, ctx: &Ctx<'_>, run: &mut Run) -> Result<(), Error> {
        let stage = run.rec.upgrade.as_ref().map(|u| u.stage);
        if stage != Some(Stage::DbUpgrade) {
            return Ok(());
        }
        // Checked again: a continued run's record may be old, and someone may have started
        // the cell meanwhile.
        ensure_stopped(ctx).await?;
        let r = super::upgrade::db_upgrade_step(ctx, run, self.0.retry, &units::transient(ctx.s)).await;
        if let Err(e) = &r {
            tracing::error!("{e}");
        }
        r
    }
}
