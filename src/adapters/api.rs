//! The Cloud Director API: version discovery, provider login, the cells of the group (for the
//! redundancy guard), this cell's running tasks, and cancelling them.
//!
//! The password goes only into the login's `Authorization: Basic` header; every other request
//! carries the bearer token. A 401 (token expired mid-run) logs in again, once per request.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::adapters::credentials::Secret;
use crate::adapters::http::error_chain as chain;

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Base URL, e.g. https://vcd.example.com (the cell itself serves the group's API).
    pub url: String,
    pub ca_file: Option<PathBuf>,
    /// Trust exactly the certificate with this thumbprint (instead of the CA file).
    pub pin: Option<crate::adapters::pin::Pin>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// This cell's name in the API (default: the host name).
    pub cell_name: String,
    pub min_active_peers: usize,
    pub page_size: usize,
    pub cancel_concurrency: usize,
    pub cancel_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API {url}: {detail}")]
    Transport { url: String, detail: String },
    #[error(
        "API {url}: the credentials of {user} were refused (401); check the password and that the user is a system administrator"
    )]
    Unauthorized { url: String, user: String },
    #[error("API {url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("API {url}: unexpected answer: {detail}")]
    Body { url: String, detail: String },
    #[error("API setup: {0}")]
    Setup(#[from] crate::adapters::http::ClientError),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CellInfo {
    pub name: String,
    pub id: String,
    pub is_active: bool,
    /// ACTIVE|MAINTENANCE|QUIESCED|INACTIVE on API 38.1+, absent before.
    pub status: Option<String>,
    /// The VCD version the cell runs (`productVersion`), when the API says.
    #[serde(default)]
    pub product_version: Option<String>,
}

impl CellInfo {
    /// Counts as an active peer: `status` when the API has it, else `isActive`.
    pub fn serving(&self) -> bool {
        match &self.status {
            Some(s) => s == "ACTIVE",
            None => self.is_active,
        }
    }

    /// Its service runs (serving, quiesced or in maintenance): anything but INACTIVE.
    pub fn running(&self) -> bool {
        match &self.status {
            Some(s) => s != "INACTIVE",
            None => self.is_active,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    pub operation: String,
    pub owner: String,
    pub started: String,
}

impl TaskInfo {
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, by {}, started {})",
            self.operation, self.id, self.owner, self.started
        )
    }
}

/// The API's documents, as far as cellctl reads them (unknown fields are ignored).
mod wire {
    use serde::Deserialize;

    /// `GET /api/versions`.
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Versions {
        pub version_info: Vec<VersionInfo>,
    }

    #[derive(Debug, Deserialize)]
    pub struct VersionInfo {
        pub version: String,
        #[serde(default)]
        pub deprecated: bool,
    }

    /// `GET /cloudapi/1.0.0/cells`: one page.
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CellsPage {
        pub values: Vec<Cell>,
        pub page_count: Option<u64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Cell {
        pub name: String,
        #[serde(default)]
        pub id: String,
        pub is_active: bool,
        pub status: Option<String>,
        #[serde(default)]
        pub product_version: Option<String>,
    }

    /// `GET /api/query?type=adminTask&format=records`: one page.
    #[derive(Debug, Deserialize)]
    pub struct TasksPage {
        pub total: u64,
        #[serde(default)]
        pub record: Option<Vec<Task>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Task {
        pub href: String,
        pub name: Option<String>,
        pub owner_name: Option<String>,
        pub start_date: Option<String>,
    }
}

/// The newest API version that is not deprecated.
fn newest_version(v: &wire::Versions) -> Option<String> {
    v.version_info
        .iter()
        .filter(|x| !x.deprecated)
        .map(|x| x.version.as_str())
        .max_by(|a, b| crate::adapters::package::compare_versions(a, b))
        .map(str::to_string)
}

fn cells_of(page: wire::CellsPage) -> (Vec<CellInfo>, u64) {
    let cells = page
        .values
        .into_iter()
        .map(|c| CellInfo {
            name: c.name,
            id: c.id,
            is_active: c.is_active,
            status: c.status,
            product_version: c.product_version,
        })
        .collect();
    (cells, page.page_count.unwrap_or(1))
}

fn tasks_of(page: wire::TasksPage) -> (Vec<TaskInfo>, u64) {
    let unknown = || "?".to_string();
    let tasks = page
        .record
        .unwrap_or_default()
        .into_iter()
        .map(|r| TaskInfo {
            id: r.href.rsplit('/').next().unwrap_or(&r.href).to_string(),
            operation: r.name.unwrap_or_else(unknown),
            owner: r.owner_name.unwrap_or_else(unknown),
            started: r.start_date.unwrap_or_else(unknown),
        })
        .collect();
    (tasks, page.total)
}

/// A request that got no answer: the URL and the whole error chain (DNS, refused, TLS).
fn transport(url: &str) -> impl FnOnce(reqwest::Error) -> ApiError + '_ {
    move |e| ApiError::Transport {
        url: url.to_string(),
        detail: chain(&e),
    }
}

/// Shared by concurrent requests (task cancels): the token and version sit behind mutexes
/// that are never held across an await.
pub struct Api {
    s: ApiSettings,
    client: reqwest::Client,
    user: String,
    password: Secret,
    version: std::sync::Mutex<Option<String>>,
    token: std::sync::Mutex<Option<Secret>>,
}

impl Api {
    pub fn new(s: &ApiSettings, user: &str, password: Secret) -> Result<Api, ApiError> {
        let trust = crate::adapters::http::Trust {
            ca_file: s.ca_file.as_deref(),
            pin: s.pin.as_ref(),
        };
        let client = crate::adapters::http::client(s.connect_timeout, s.timeout, trust).map_err(ApiError::Setup)?;
        Ok(Api {
            s: s.clone(),
            client,
            user: user.to_string(),
            password,
            version: std::sync::Mutex::default(),
            token: std::sync::Mutex::default(),
        })
    }

    pub fn settings(&self) -> &ApiSettings {
        &self.s
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.s.url.trim_end_matches('/'))
    }

    fn token(&self) -> Option<Secret> {
        self.token.lock().expect("not poisoned").clone()
    }

    fn set_token(&self, t: Option<Secret>) {
        *self.token.lock().expect("not poisoned") = t;
    }

    async fn version(&self) -> Result<String, ApiError> {
        if let Some(v) = self.version.lock().expect("not poisoned").clone() {
            return Ok(v);
        }
        let url = self.url("/api/versions");
        let resp = self
            .client
            .get(&url)
            .header("Accept", "application/*+json")
            .send()
            .await
            .map_err(transport(&url))?;
        let v: wire::Versions = Self::json(&url, resp).await?;
        let ver = newest_version(&v).ok_or_else(|| ApiError::Body {
            url,
            detail: "no versionInfo[].version".into(),
        })?;
        *self.version.lock().expect("not poisoned") = Some(ver.clone());
        Ok(ver)
    }

    async fn json<T: serde::de::DeserializeOwned>(url: &str, resp: reqwest::Response) -> Result<T, ApiError> {
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ApiError::Transport {
            url: url.into(),
            detail: chain(&e),
        })?;
        if !status.is_success() {
            let snippet: String = text.chars().take(200).collect();
            return Err(ApiError::Status {
                url: url.into(),
                status: status.as_u16(),
                body: snippet,
            });
        }
        serde_json::from_str(&text).map_err(|e| {
            let snippet: String = text.chars().take(80).collect();
            ApiError::Body {
                url: url.into(),
                detail: format!("not the expected JSON ({e}): {snippet:?}"),
            }
        })
    }

    pub async fn login(&self) -> Result<(), ApiError> {
        let v = self.version().await?;
        let url = self.url("/cloudapi/1.0.0/sessions/provider");
        let resp = self
            .client
            .post(&url)
            .basic_auth(format!("{}@System", self.user), Some(self.password.expose()))
            .header("Accept", format!("application/json;version={v}"))
            .send()
            .await
            .map_err(transport(&url))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(ApiError::Unauthorized {
                url,
                user: self.user.clone(),
            });
        }
        let token = resp
            .headers()
            .get("X-VMWARE-VCLOUD-ACCESS-TOKEN")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let status = resp.status();
        if !status.is_success() {
            return Err(ApiError::Status {
                url,
                status: status.as_u16(),
                body: String::new(),
            });
        }
        let token = token.ok_or_else(|| ApiError::Body {
            url,
            detail: "no X-VMWARE-VCLOUD-ACCESS-TOKEN header".into(),
        })?;
        self.set_token(Some(Secret::new(token)));
        Ok(())
    }

    pub async fn logout(&self) {
        let Some(token) = self.token.lock().expect("not poisoned").take() else {
            return;
        };
        let url = self.url("/cloudapi/1.0.0/sessions/current");
        let v = self.version.lock().expect("not poisoned").clone().unwrap_or_default();
        let _ = self
            .client
            .delete(&url)
            .bearer_auth(token.expose())
            .header("Accept", format!("application/json;version={v}"))
            .send()
            .await;
    }

    /// A bearer request; a 401 means the token expired: log in again and retry once.
    async fn send(&self, method: reqwest::Method, path: &str, accept: &str) -> Result<reqwest::Response, ApiError> {
        if self.token().is_none() {
            self.login().await?;
        }
        let v = self.version().await?;
        let url = self.url(path);
        for attempt in 0..2 {
            let Some(token) = self.token() else {
                self.login().await?;
                continue;
            };
            let resp = self
                .client
                .request(method.clone(), &url)
                .bearer_auth(token.expose())
                .header("Accept", format!("{accept};version={v}"))
                .send()
                .await
                .map_err(transport(&url))?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                tracing::info!("API session expired; logging in again");
                self.set_token(None);
                self.login().await?;
                continue;
            }
            if resp.status() == StatusCode::UNAUTHORIZED {
                return Err(ApiError::Unauthorized {
                    url,
                    user: self.user.clone(),
                });
            }
            return Ok(resp);
        }
        Err(ApiError::Unauthorized {
            url,
            user: self.user.clone(),
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str, accept: &str) -> Result<T, ApiError> {
        let url = self.url(path);
        let resp = self.send(reqwest::Method::GET, path, accept).await?;
        Self::json(&url, resp).await
    }

    /// Every cell of the group, every page.
    pub async fn cells(&self) -> Result<Vec<CellInfo>, ApiError> {
        let mut all = vec![];
        let mut page = 1u64;
        loop {
            let path = format!("/cloudapi/1.0.0/cells?page={page}&pageSize={}", self.s.page_size);
            let (cells, pages) = cells_of(self.get(&path, "application/json").await?);
            all.extend(cells);
            if page >= pages || page >= 1000 {
                return Ok(all);
            }
            page += 1;
        }
    }

    /// This cell's running tasks (admin task query filtered on the cell's name), every page.
    pub async fn running_tasks(&self) -> Result<Vec<TaskInfo>, ApiError> {
        let mut all = vec![];
        let mut page = 1u64;
        let filter = format!("status==running;cellName=={}", self.s.cell_name);
        loop {
            let path = format!(
                "/api/query?type=adminTask&format=records&page={page}&pageSize={}&filter={}",
                self.s.page_size,
                percent_encoding::utf8_percent_encode(&filter, QUERY_VALUE)
            );
            let (tasks, total) = tasks_of(self.get(&path, "application/*+json").await?);
            let got = tasks.len();
            all.extend(tasks);
            if got == 0 || all.len() as u64 >= total || page >= 1000 {
                return Ok(all);
            }
            page += 1;
        }
    }

    pub async fn cancel(&self, task_id: &str) -> Result<(), ApiError> {
        let path = format!("/api/task/{task_id}/action/cancel");
        let url = self.url(&path);
        let resp = self.send(reqwest::Method::POST, &path, "application/*+json").await?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            let body: String = resp.text().await.unwrap_or_default().chars().take(200).collect();
            Err(ApiError::Status {
                url,
                status: status.as_u16(),
                body,
            })
        }
    }
}

/// A query value: everything but RFC 3986's unreserved characters is escaped (the filter's
/// `;` and `==` included, so the API reads them as part of the value).
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why the redundancy guard refuses (or could not decide).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GuardRefusal(pub String);

/// The redundancy guard's verdict: how many other cells serve, and whether that is enough.
pub fn guard_verdict(cells: &[CellInfo], me: &str, min_active_peers: usize) -> Result<usize, GuardRefusal> {
    if !cells.iter().any(|c| c.name == me) {
        let names: Vec<&str> = cells.iter().map(|c| c.name.as_str()).collect();
        return Err(GuardRefusal(format!(
            "this cell ({me}) is not among the API's cells {names:?}; set [api] cell_name to its name in VCD"
        )));
    }
    let peers = cells.iter().filter(|c| c.name != me && c.serving()).count();
    if peers < min_active_peers {
        let others: Vec<String> = cells
            .iter()
            .filter(|c| c.name != me)
            .map(|c| {
                format!(
                    "{} {}",
                    c.name,
                    c.status.clone().unwrap_or_else(|| if c.is_active {
                        "active".into()
                    } else {
                        "inactive".into()
                    })
                )
            })
            .collect();
        return Err(GuardRefusal(format!(
            "only {peers} other active cell(s) ({}), {min_active_peers} required: taking this cell down would take the service down; wait for the others, or pass --allow-last-cell for a full-outage upgrade",
            if others.is_empty() {
                "no other cells".to_string()
            } else {
                others.join(", ")
            }
        )));
    }
    Ok(peers)
}

/// Cancel tasks with at most `concurrency` requests in flight; returns the failures.
pub async fn cancel_all(
    api: &std::sync::Arc<Api>,
    tasks: &[TaskInfo],
    concurrency: usize,
) -> Vec<(TaskInfo, ApiError)> {
    let mut failed = vec![];
    let mut set = tokio::task::JoinSet::new();
    let mut queue = tasks.iter().cloned();
    loop {
        while set.len() < concurrency.max(1) {
            let Some(t) = queue.next() else { break };
            let api = api.clone();
            set.spawn(async move {
                let r = api.cancel(&t.id).await;
                (t, r)
            });
        }
        match set.join_next().await {
            Some(Ok((t, Err(e)))) => failed.push((t, e)),
            Some(Ok((_, Ok(())))) => {}
            Some(Err(e)) => tracing::error!("cancel task panicked: {e}"),
            None => return failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cell(name: &str, active: bool, status: Option<&str>) -> CellInfo {
        CellInfo {
            name: name.into(),
            id: format!("urn:vcloud:cell:{name}"),
            is_active: active,
            status: status.map(Into::into),
            product_version: None,
        }
    }

    #[test]
    fn guard_counts_serving_peers() {
        let cells = vec![
            cell("a", true, Some("ACTIVE")),
            cell("b", true, Some("QUIESCED")),
            cell("c", false, Some("INACTIVE")),
        ];
        assert!(guard_verdict(&cells, "a", 1).unwrap_err().0.contains("only 0 other"));
        let cells = vec![cell("a", true, Some("ACTIVE")), cell("b", true, Some("ACTIVE"))];
        assert_eq!(guard_verdict(&cells, "a", 1), Ok(1));
        // Without `status` (API <= 38.0), isActive decides.
        let cells = vec![cell("a", true, None), cell("b", true, None), cell("c", false, None)];
        assert_eq!(guard_verdict(&cells, "a", 1), Ok(1));
        assert!(guard_verdict(&cells, "zz", 1).unwrap_err().0.contains("cell_name"));
    }

    #[test]
    fn parses_api_shapes() {
        fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> serde_json::Result<T> {
            serde_json::from_value(v)
        }
        let v = json!({"versionInfo":[{"version":"37.0","deprecated":false},{"version":"38.1","deprecated":false},{"version":"39.0","deprecated":true}]});
        assert_eq!(newest_version(&parse(v).unwrap()).as_deref(), Some("38.1"));
        let v = json!({"resultTotal":3,"pageCount":2,"page":1,"pageSize":2,"values":[{"name":"a","id":"x","isActive":true,"status":"ACTIVE","productVersion":"10.6.1"},{"name":"b","isActive":false}]});
        let (cells, pages) = cells_of(parse(v).unwrap());
        assert_eq!(pages, 2);
        assert_eq!(cells[1].status, None);
        assert_eq!(cells[0].product_version.as_deref(), Some("10.6.1"));
        assert_eq!(cells[1].product_version, None);
        assert!(cells[0].running() && !cells[1].running());
        assert!(parse::<wire::CellsPage>(json!({"values":[{"name":"a"}]})).is_err());
        let v = json!({"total":1,"record":[{"href":"https://h/api/task/t-1","name":"vappDeploy","ownerName":"bob","startDate":"2026-01-01T00:00:00Z"}]});
        let (tasks, total) = tasks_of(parse(v).unwrap());
        assert_eq!((tasks[0].id.as_str(), total), ("t-1", 1));
        assert!(parse::<wire::TasksPage>(json!({"record":[]})).is_err());
        assert!(parse::<wire::TasksPage>(json!({"total":0,"record":null})).is_ok());
    }

    #[test]
    fn filter_is_url_encoded() {
        assert_eq!(
            percent_encoding::utf8_percent_encode("(status==running;cellName==a b)", QUERY_VALUE).to_string(),
            "%28status%3D%3Drunning%3BcellName%3D%3Da%20b%29"
        );
    }
}
