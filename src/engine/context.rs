//! What a run reads but never changes (as zincati's `UpdateAgentInfo`): the settings, the
//! clients of the cell's tools, service and API, and the signal watch. What a run changes is
//! `run::Run`.

use std::sync::Arc;

use crate::adapters::api::Api;
use crate::adapters::credentials::{self, Secret};
use crate::adapters::service::Service;
use crate::adapters::vendor::{CellTool, ToolError};
use crate::config::Settings;
use crate::error::Error;

use super::signals::SignalWatch;

pub(crate) struct Ctx<'a> {
    pub s: &'a Settings,
    pub tool: CellTool,
    pub service: Service,
    /// The group's API (guard, tasks, cancel); None when it cannot be set up.
    pub api: Option<Arc<Api>>,
    pub sig: SignalWatch,
}

impl<'a> Ctx<'a> {
    pub fn new(s: &'a Settings, tool: CellTool, sig: SignalWatch) -> Self {
        let api = Api::new(&s.api, &tool.user, tool.password.clone()).ok().map(Arc::new);
        Ctx {
            s,
            service: service_of(s),
            tool,
            api,
            sig,
        }
    }
}

pub(crate) fn service_of(s: &Settings) -> Service {
    Service {
        systemctl: s.systemctl.clone(),
        name: s.service.clone(),
        timeout: s.tool_timeout,
    }
}

/// Read the password and build the vendor-tool driver. A password typed at the prompt is tried
/// on the cell at once (`cell --status` changes nothing) and asked again when the cell rejects
/// it, up to three tries, so a typo does not end the run.
pub(crate) async fn cell_tool(s: &Settings) -> Result<CellTool, Error> {
    let (mut password, source) = credentials::load(s.password_file.as_deref(), s.credentials_dir.clone(), &s.user)?;
    if source != credentials::Source::Prompt {
        return Ok(CellTool::new(&s.vcd_home, &s.user, password, s.tool_timeout));
    }
    for attempt in 1..=credentials::PROMPT_TRIES {
        let tool = CellTool::new(&s.vcd_home, &s.user, password, s.tool_timeout);
        match tool.status().await {
            Err(e @ ToolError::Rejected { .. }) if attempt < credentials::PROMPT_TRIES => {
                eprintln!("cellctl: {e}; try again");
                password = credentials::prompt(&s.user)?;
            }
            Err(e @ ToolError::Rejected { .. }) => return Err(e.into()),
            // Anything else is for the run's own preflight to report.
            _ => return Ok(tool),
        }
    }
    unreachable!("the last attempt returns")
}

/// The driver for a run that never calls the tool (`install` on a stopped cell): no password.
pub(crate) fn tool_without_password(s: &Settings) -> CellTool {
    CellTool::new(&s.vcd_home, &s.user, Secret::new(String::new()), s.tool_timeout)
}
