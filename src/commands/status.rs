//! `cellctl status`: read-only, takes no lock.

use crate::adapters::api::Api;
use crate::adapters::credentials;
use crate::adapters::vendor::{CellTool, ToolError};
use crate::config::Settings;
use crate::engine::context::service_of;
use crate::engine::preflight::installed_version;
use crate::error::Error;
use crate::model::outcome::CommandName;
use crate::model::step::ServiceState;
use crate::output::report::Report;
use crate::store::journal::Journal;

pub(crate) async fn status(s: &Settings) -> (Report, Result<(), Error>) {
    match report(s).await {
        Ok(rep) => (rep, Ok(())),
        Err(e) => (Report::failed(CommandName::Status, &e), Err(e)),
    }
}

async fn report(s: &Settings) -> Result<Report, Error> {
    let service = service_of(s);
    if !service.installed().await {
        return Err(Error::NotACell(format!(
            "the service manager has no unit {}: check --service (or install VMware Cloud Director)",
            s.service
        )));
    }
    let cmt = s.vcd_home.join("bin/cell-management-tool");
    if !cmt.is_file() {
        return Err(Error::NotACell(format!(
            "{} is missing: check --vcd-home (or install VMware Cloud Director)",
            cmt.display()
        )));
    }
    let svc = service.state().await?;
    // The password is read once (a prompt on a terminal asks once) and only for a running cell.
    let tool = if svc == ServiceState::Running {
        let (password, _) = credentials::load(s.password_file.as_deref(), s.credentials_dir.clone(), &s.user)?;
        Some(CellTool::new(&s.vcd_home, &s.user, password, s.tool_timeout))
    } else {
        None
    };
    let st = match &tool {
        // A cell shut down under a running service (a run killed in its last step) cannot
        // answer; the recorded run is what the operator needs to see then.
        Some(t) => match t.status().await {
            Ok(st) => Some(st),
            Err(e @ ToolError::CellDown { .. }) => {
                tracing::warn!("{e}");
                None
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let journal = Journal {
        dir: s.state_dir.clone(),
    };
    let recorded = if s.state_dir.join("current.json").exists() {
        journal.current()?.as_ref().map(Into::into)
    } else {
        None
    };
    let live = journal.holder();
    let mut rep = Report::new(CommandName::Status).with_status(st, svc);
    if let Some(tool) = tool {
        // Best effort: status must work when the API does not.
        match Api::new(&s.api, &s.user, tool.password.clone()) {
            Ok(api) => {
                match api.running_tasks().await {
                    Ok(t) => rep.tasks = Some(t),
                    Err(e) => rep.tasks_error = Some(e.to_string()),
                }
                api.logout().await;
            }
            Err(e) => rep.tasks_error = Some(e.to_string()),
        }
    }
    rep.installed_version = Some(installed_version(s).await);
    rep.recorded_run = Some(recorded);
    rep.live_run = live;
    rep.slot = crate::engine::slot::recorded(s);
    Ok(rep)
}
