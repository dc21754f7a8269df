//! A verified package, as runs record it (the verification itself is `adapters::package`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// VMware's `vmware-vcloud-director-distribution-V-B.bin` installer.
    VmwareBin,
    Rpm,
    Deb,
    /// `[install] command` from the config.
    Custom,
    /// A VCD appliance's `VMware_Cloud_Director_V-BUILD_update.tar.gz`, installed through vamicli.
    ApplianceUpdate,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Package {
    pub path: PathBuf,
    pub sha256: String,
    pub kind: Kind,
    /// The version the package installs, when it can be told before installing.
    pub version: Option<String>,
}
