//! Saved reports: `STATE_DIR/reports/<report id>.json`, the newest `keep` kept.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::atomic::{WriteError, write_atomic};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0:?} is not a run id")]
    BadId(String),
    #[error("no reports in {dir}: {source}")]
    NoDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no reports in {dir}")]
    Empty { dir: String },
    #[error("no report for run {id} in {dir}")]
    NotFound { id: String, dir: String },
    #[error("{path}: {detail}")]
    Unreadable { path: String, detail: String },
}

pub fn reports_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("reports")
}

/// Write `reports/<id>.json` atomically and keep the newest `keep`.
pub fn save(state_dir: &Path, id: &str, doc: &[u8], keep: usize) -> Result<PathBuf, WriteError> {
    let dir = reports_dir(state_dir);
    std::fs::create_dir_all(&dir).map_err(|source| WriteError {
        path: dir.display().to_string(),
        source,
    })?;
    let path = dir.join(format!("{id}.json"));
    write_atomic(&path, doc)?;
    prune(&dir, keep);
    Ok(path)
}

/// A report of a run that took no step (a refused command line or preflight): kept apart, so
/// that refusals never push real runs' reports out.
fn took_no_step(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_none_or(|v| v.get("steps").and_then(Value::as_array).is_none_or(Vec::is_empty))
}

/// Keep the newest `keep` reports of runs that took steps, and the newest `keep` refusals.
fn prune(dir: &Path, keep: usize) {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    if names.len() <= keep {
        return;
    }
    // Report ids sort by time.
    names.sort();
    let (refusals, runs): (Vec<PathBuf>, Vec<PathBuf>) = names.into_iter().partition(|p| took_no_step(p));
    for group in [runs, refusals] {
        for p in &group[..group.len().saturating_sub(keep)] {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One line of `cellctl report --list`.
#[derive(Debug, serde::Serialize)]
pub struct Listed {
    pub report_id: String,
    pub run_id: Option<String>,
    pub command: Option<String>,
    pub outcome: Option<String>,
    pub exit_code: Option<i64>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
}

/// Every saved report, oldest first.
pub fn list(state_dir: &Path) -> Result<Vec<Listed>, LoadError> {
    let dir = reports_dir(state_dir);
    let mut names: Vec<PathBuf> = read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    Ok(names
        .iter()
        .filter_map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            Some(Listed {
                report_id: p.file_stem()?.to_string_lossy().into_owned(),
                run_id: s("run_id"),
                command: s("command"),
                outcome: s("outcome"),
                exit_code: v.get("exit_code").and_then(Value::as_i64),
                started_at: s("started_at"),
                ended_at: s("ended_at"),
            })
        })
        .collect())
}

/// Whether a report of this id was saved already (a continued run's later invocations).
pub fn exists(state_dir: &Path, id: &str) -> bool {
    reports_dir(state_dir).join(format!("{id}.json")).exists()
}

fn read_dir(dir: &Path) -> Result<std::fs::ReadDir, LoadError> {
    std::fs::read_dir(dir).map_err(|source| LoadError::NoDir {
        dir: dir.display().to_string(),
        source,
    })
}

/// The newest report whose `run_id` is `id` (a continued run's later reports).
fn newest_of_run(dir: &Path, id: &str) -> Result<PathBuf, LoadError> {
    let mut names: Vec<PathBuf> = read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v.get("run_id").and_then(Value::as_str) == Some(id))
        })
        .collect();
    names.sort();
    names.pop().ok_or_else(|| LoadError::NotFound {
        id: id.into(),
        dir: dir.display().to_string(),
    })
}

/// Newest written, then newest id: ids alone tie within a millisecond.
fn newest(dir: &Path) -> Result<PathBuf, LoadError> {
    let mut names: Vec<(std::time::SystemTime, PathBuf)> = read_dir(dir)?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    names.sort();
    names.pop().map(|(_, p)| p).ok_or_else(|| LoadError::Empty {
        dir: dir.display().to_string(),
    })
}

/// A stored report, by run id or the newest, as it was written (any version's layout).
pub fn load(state_dir: &Path, run_id: Option<&str>) -> Result<Value, LoadError> {
    let dir = reports_dir(state_dir);
    let path = match run_id {
        Some(id) if id.contains('/') || id.contains("..") => return Err(LoadError::BadId(id.into())),
        Some(id) => {
            let direct = dir.join(format!("{id}.json"));
            if direct.exists() {
                direct
            } else {
                newest_of_run(&dir, id)?
            }
        }
        None => newest(&dir)?,
    };
    let unreadable = |detail: String| LoadError::Unreadable {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| unreadable(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))
}
