//! Checks made before a run changes anything: the tools exist, the service has settled, and
//! enough other cells serve (the redundancy guard, which fails closed).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::adapters::api::{Api, GuardRefusal, guard_verdict};
use crate::adapters::service::Service;
use crate::adapters::vendor::{CellStatus, CellTool};
use crate::config::Settings;
use crate::error::{Error, Precheck};
use crate::model::step::ServiceState;

pub(crate) fn check_executable(p: &Path) -> Result<(), Error> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(Precheck::NotExecutable {
            path: p.display().to_string(),
        }
        .into()),
        Err(source) => Err(Precheck::Missing {
            path: p.display().to_string(),
            source,
        }
        .into()),
    }
}

/// The tools are there and the service has settled: its state, and the cell's status if it runs.
pub(crate) async fn cell(tool: &CellTool, service: &Service) -> Result<(Option<CellStatus>, ServiceState), Error> {
    check_executable(&tool.cmt)?;
    check_executable(&tool.vcd_cell)?;
    let svc = service_state(service).await?;
    match svc {
        ServiceState::Running => Ok((Some(tool.status().await?), svc)),
        ServiceState::Stopped => Ok((None, svc)),
        ServiceState::Changing => Err(Precheck::Changing {
            service: service.name.clone(),
        }
        .into()),
    }
}

/// The service's state, as a precheck (nothing changed yet when it cannot be told).
pub(crate) async fn service_state(service: &Service) -> Result<ServiceState, Error> {
    service.state().await.map_err(|e| Precheck::Service(e).into())
}

/// Before any change: are enough other cells serving? Fails closed when the API cannot tell,
/// unless the operator skipped the guard or allowed taking the last cell. Returns the line
/// the preflight step records.
pub(crate) async fn redundancy_guard(s: &Settings, allow_last_cell: bool, tool: &CellTool) -> Result<String, Error> {
    if !s.redundancy_guard {
        tracing::warn!("redundancy guard skipped: other cells were not checked");
        return Ok("redundancy guard skipped".into());
    }
    let verdict = match Api::new(&s.api, &s.user, tool.password.clone()) {
        Err(e) => Err(GuardRefusal(e.to_string())),
        Ok(api) => {
            let r = api.cells().await;
            api.logout().await;
            match r {
                Ok(cells) => guard_verdict(&cells, &s.api.cell_name, s.api.min_active_peers),
                Err(e) => Err(GuardRefusal(format!(
                    "cannot list the cells ({e}); the guard fails closed: fix [api] url/ca_file/cert_sha256, or pass --skip-redundancy-guard"
                ))),
            }
        }
    };
    match verdict {
        Ok(n) => {
            tracing::info!("redundancy guard: {n} other active cell(s)");
            Ok(format!("redundancy guard: {n} other active cell(s)"))
        }
        Err(refusal) if allow_last_cell => {
            tracing::warn!("--allow-last-cell: going ahead although {refusal}");
            Ok(format!("last cell allowed: {refusal}"))
        }
        Err(refusal) => Err(refusal.into()),
    }
}
