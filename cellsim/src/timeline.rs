//! The group timeline: one JSON object per line in `timeline.jsonl` of the group's shared
//! directory (GROUPDIR, or DIR/sim for a group of one), appended by every cell of the group for
//! each change the simulator makes (quiesce, maintenance, shutdown, service stop/start, the cell
//! coming up, a refused start, installs, database upgrades, reboots) and for each run of the
//! installer or the database tool. Tests assert cross-cell order from it.
//!
//! Lines are appended under an exclusive flock on the file itself, so they never interleave.
//! Events that the lazy time model discovers late (a cell coming up after its start-up delay)
//! carry the moment they happened, so the file is not sorted: readers sort by `at_ms` (stable).

use crate::group;
use crate::model::Pending;
use crate::store::{CellDir, Error, Result, io_err};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE: &str = "timeline.jsonl";

/// One line of timeline.jsonl.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    pub at_ms: u64,
    pub cell: String,
    pub event: String,
    #[serde(default)]
    pub detail: Value,
}

/// The timeline file of the group whose shared files are in `shared` (see `group::shared_dir`).
pub fn path_in(shared: &Path) -> PathBuf {
    shared.join(FILE)
}

/// The timeline file of `cell` (its group's, or its own for a group of one).
pub fn path_of(cell: &CellDir, group: Option<&Path>) -> PathBuf {
    path_in(&group::shared_dir(cell, group))
}

/// Appends `events` of the cell `name` to `path` as one write under the file's flock.
pub fn append(path: &Path, name: &str, events: &[Pending]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for p in events {
        let line = Event {
            at_ms: p.at_ms,
            cell: name.to_string(),
            event: p.event.to_string(),
            detail: p.detail.clone(),
        };
        text += &serde_json::to_string(&line).expect("event serializes");
        text.push('\n');
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    let mut file = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| io_err(path)(errno.into()))?;
    file.write_all(text.as_bytes()).map_err(io_err(path))?;
    Ok(())
}

/// Appends one event for the cell in `cell`, reading its name and group from its state
/// (for callers outside `CellDir::with_state`, such as the record of a tool run).
pub fn record(cell: &CellDir, event: &'static str, at_ms: u64, detail: Value) -> Result<()> {
    let state = cell.peek()?;
    let name = state.name.clone().unwrap_or_else(|| cell.default_name());
    let path = path_of(cell, state.group.as_deref());
    append(&path, &name, &[Pending { at_ms, event, detail }])
}

/// Reads a timeline file, sorted by `at_ms` (stable: same-moment events keep their order).
/// A missing file is an empty timeline.
pub fn read(path: &Path) -> Result<Vec<Event>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut events = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            })
        })
        .collect::<Result<Vec<Event>>>()?;
    events.sort_by_key(|e| e.at_ms);
    Ok(events)
}

/// `cellsim timeline (DIR | --group GROUPDIR)`: brings every cell of the group up to now (so
/// transitions already due, such as a cell coming up, are recorded), then prints the timeline
/// as JSON lines sorted by time.
pub fn print(dir: Option<&Path>, group_dir: Option<&Path>) -> Result<()> {
    let (path, members) = match (dir, group_dir) {
        (_, Some(g)) => {
            let g = g.canonicalize().map_err(io_err(g))?;
            let members: Vec<PathBuf> = group::registered(&g).into_iter().map(|(_, d)| d).collect();
            (path_in(&g), members)
        }
        (Some(d), None) => {
            let cell = CellDir::new(&d.canonicalize().map_err(io_err(d))?);
            let state = cell.peek()?;
            let members: Vec<PathBuf> = group::members(&cell, &state).into_iter().map(|(_, d)| d).collect();
            (path_of(&cell, state.group.as_deref()), members)
        }
        (None, None) => return Err(Error::Msg("give a cell DIR or --group GROUPDIR".into())),
    };
    for member in members {
        // A member being deleted is skipped, not an error.
        let _ = CellDir::new(&member).with_state(|_, _| Ok(()));
    }
    let mut out = std::io::stdout().lock();
    for event in read(&path)? {
        let line = serde_json::to_string(&event).expect("event serializes");
        writeln!(out, "{line}").map_err(io_err(Path::new("standard output")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_lines_read_back_sorted_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let ev = |at_ms, event| Pending {
            at_ms,
            event,
            detail: Value::Null,
        };
        append(&path, "a", &[ev(20, "quiesced"), ev(30, "shut_down")]).unwrap();
        append(&path, "b", &[ev(10, "cell_up")]).unwrap();
        append(&path, "b", &[]).unwrap();
        let got: Vec<(u64, String, String)> = read(&path)
            .unwrap()
            .into_iter()
            .map(|e| (e.at_ms, e.cell, e.event))
            .collect();
        assert_eq!(
            got,
            [
                (10, "b".into(), "cell_up".into()),
                (20, "a".into(), "quiesced".into()),
                (30, "a".into(), "shut_down".into())
            ]
        );
        assert!(read(&dir.path().join("missing")).unwrap().is_empty());
    }
}
