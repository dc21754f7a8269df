//! The Cloud Director API: version discovery, provider login, the cells of the group (for the
//! redundancy guard), this cell's running tasks, and cancelling them.
//!
//! The password goes only into the login's `Authorization: Basic` header; every other request
//! carries the bearer token. A 401 (token expired mid-run) logs in again, once per request.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::credentials::Secret;
use crate::http::error_chain as chain;

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Base URL, e.g. https://vcd.example.com (the cell itself serves the group's API).
    pub url: String,
    pub ca_file: Option<PathBuf>,
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
    Setup(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CellInfo {
    pub name: String,
    pub id: String,
    pub is_active: bool,
    /// ACTIVE|MAINTENANCE|QUIESCED|INACTIVE on API 38.1+, absent before.
    pub status: Option<String>,
}

impl CellInfo {
    /// Counts as an active peer: `status` when the API has it, else `isActive`.
    pub fn serving(&self) -> bool {
        match &self.status {
            Some(s) => s == "ACTIVE",
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

/// The newest API version from `GET /api/versions`.
pub fn newest_version(v: &Value) -> Option<String> {
    let list = v["versionInfo"].as_array()?;
    list.iter()
        .filter(|x| x["deprecated"].as_bool() != Some(true))
        .filter_map(|x| x["version"].as_str())
        .max_by(|a, b| crate::package::compare_versions(a, b))
        .map(str::to_string)
}

pub fn parse_cells(v: &Value) -> Result<(Vec<CellInfo>, u64), String> {
    let values = v["values"].as_array().ok_or("no `values` array")?;
    let page_count = v["pageCount"].as_u64().unwrap_or(1);
    let cells = values
        .iter()
        .map(|c| {
            Ok(CellInfo {
                name: c["name"].as_str().ok_or("a cell without `name`")?.to_string(),
                id: c["id"].as_str().unwrap_or("").to_string(),
                is_active: c["isActive"].as_bool().ok_or("a cell without `isActive`")?,
                status: c["status"].as_str().map(str::to_string),
            })
        })
        .collect::<Result<Vec<_>, &str>>()?;
    Ok((cells, page_count))
}

pub fn parse_tasks(v: &Value) -> Result<(Vec<TaskInfo>, u64), String> {
    let total = v["total"].as_u64().ok_or("no `total`")?;
    let records = match &v["record"] {
        Value::Array(a) => a.clone(),
        Value::Null => vec![],
        _ => return Err("`record` is not a list".into()),
    };
    let tasks = records
        .iter()
        .map(|r| {
            let href = r["href"].as_str().ok_or("a task without `href`")?;
            Ok(TaskInfo {
                id: href.rsplit('/').next().unwrap_or(href).to_string(),
                operation: r["name"].as_str().unwrap_or("?").to_string(),
                owner: r["ownerName"].as_str().unwrap_or("?").to_string(),
                started: r["startDate"].as_str().unwrap_or("?").to_string(),
            })
        })
        .collect::<Result<Vec<_>, &str>>()?;
    Ok((tasks, total))
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
        let client =
            crate::http::client(s.connect_timeout, s.timeout, s.ca_file.as_deref()).map_err(ApiError::Setup)?;
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
            .map_err(|e| ApiError::Transport {
                url: url.clone(),
                detail: chain(&e),
            })?;
        let v = Self::json(&url, resp).await?;
        let ver = newest_version(&v).ok_or_else(|| ApiError::Body {
            url,
            detail: "no versionInfo[].version".into(),
        })?;
        *self.version.lock().expect("not poisoned") = Some(ver.clone());
        Ok(ver)
    }

    async fn json(url: &str, resp: reqwest::Response) -> Result<Value, ApiError> {
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
                detail: format!("not JSON ({e}): {snippet:?}"),
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
            .map_err(|e| ApiError::Transport {
                url: url.clone(),
                detail: chain(&e),
            })?;
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
                .map_err(|e| ApiError::Transport {
                    url: url.clone(),
                    detail: chain(&e),
                })?;
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

    async fn get(&self, path: &str, accept: &str) -> Result<Value, ApiError> {
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
            let v = self.get(&path, "application/json").await?;
            let (cells, pages) = parse_cells(&v).map_err(|d| ApiError::Body {
                url: self.url(&path),
                detail: d,
            })?;
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
                urlencode(&filter)
            );
            let v = self.get(&path, "application/*+json").await?;
            let (tasks, total) = parse_tasks(&v).map_err(|d| ApiError::Body {
                url: self.url(&path),
                detail: d,
            })?;
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

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The redundancy guard's verdict: how many other cells serve, and whether that is enough.
pub fn guard_verdict(cells: &[CellInfo], me: &str, min_active_peers: usize) -> Result<usize, String> {
    if !cells.iter().any(|c| c.name == me) {
        let names: Vec<&str> = cells.iter().map(|c| c.name.as_str()).collect();
        return Err(format!(
            "this cell ({me}) is not among the API's cells {names:?}; set [api] cell_name to its name in VCD"
        ));
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
        return Err(format!(
            "only {peers} other active cell(s) ({}), {min_active_peers} required: taking this cell down would take the service down; wait for the others, or pass --allow-last-cell for a full-outage upgrade",
            if others.is_empty() {
                "no other cells".to_string()
            } else {
                others.join(", ")
            }
        ));
    }
    Ok(peers)
}

/// Cancel tasks with at most `concurrency` requests in flight; returns the failures.
pub async fn cancel_all(api: &std::sync::Arc<Api>, tasks: &[TaskInfo], concurrency: usize) -> Vec<(TaskInfo, String)> {
    let mut failed = vec![];
    let mut set = tokio::task::JoinSet::new();
    let mut queue = tasks.iter().cloned();
    loop {
        while set.len() < concurrency.max(1) {
            let Some(t) = queue.next() else { break };
            let api = api.clone();
            set.spawn(async move {
                let r = api.cancel(&t.id).await.map_err(|e| e.to_string());
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
        }
    }

    #[test]
    fn guard_counts_serving_peers() {
        let cells = vec![
            cell("a", true, Some("ACTIVE")),
            cell("b", true, Some("QUIESCED")),
            cell("c", false, Some("INACTIVE")),
        ];
        assert!(guard_verdict(&cells, "a", 1).unwrap_err().contains("only 0 other"));
        let cells = vec![cell("a", true, Some("ACTIVE")), cell("b", true, Some("ACTIVE"))];
        assert_eq!(guard_verdict(&cells, "a", 1), Ok(1));
        // Without `status` (API <= 38.0), isActive decides.
        let cells = vec![cell("a", true, None), cell("b", true, None), cell("c", false, None)];
        assert_eq!(guard_verdict(&cells, "a", 1), Ok(1));
        assert!(guard_verdict(&cells, "zz", 1).unwrap_err().contains("cell_name"));
    }

    #[test]
    fn parses_api_shapes() {
        let v = json!({"versionInfo":[{"version":"37.0","deprecated":false},{"version":"38.1","deprecated":false},{"version":"39.0","deprecated":true}]});
        assert_eq!(newest_version(&v).as_deref(), Some("38.1"));
        let v = json!({"resultTotal":3,"pageCount":2,"page":1,"pageSize":2,"values":[{"name":"a","id":"x","isActive":true,"status":"ACTIVE"},{"name":"b","isActive":false}]});
        let (cells, pages) = parse_cells(&v).unwrap();
        assert_eq!(pages, 2);
        assert_eq!(cells[1].status, None);
        assert!(parse_cells(&json!({"values":[{"name":"a"}]})).is_err());
        let v = json!({"total":1,"record":[{"href":"https://h/api/task/t-1","name":"vappDeploy","ownerName":"bob","startDate":"2026-01-01T00:00:00Z"}]});
        let (tasks, total) = parse_tasks(&v).unwrap();
        assert_eq!((tasks[0].id.as_str(), total), ("t-1", 1));
        assert!(parse_tasks(&json!({"record":[]})).is_err());
    }

    #[test]
    fn filter_is_url_encoded() {
        assert_eq!(
            urlencode("(status==running;cellName==a b)"),
            "%28status%3D%3Drunning%3BcellName%3D%3Da%20b%29"
        );
    }
}
