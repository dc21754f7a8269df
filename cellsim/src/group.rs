//! Groups of cells and the API state they share.
//!
//! A group is a directory (GROUPDIR) that several cells name at `create --group`:
//! `GROUPDIR/cells/NAME` holds the absolute DIR of the cell called NAME (written atomically),
//! `GROUPDIR/api.json` the API sessions (under `GROUPDIR/api.lock`), `GROUPDIR/tls/` the CA every
//! cell of the group serves a certificate from (under `GROUPDIR/lock`). A cell made without
//! `--group` is a group of one whose shared files live in its own `DIR/sim/`.

use crate::model::State;
use crate::store::{CellDir, Error, Result, io_err, lock_file, uuid_v4, write_atomic};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

pub fn cells_dir(group: &Path) -> PathBuf {
    group.join("cells")
}

/// Where the group-wide files live: GROUPDIR, or DIR/sim for a group of one.
pub fn shared_dir(cell: &CellDir, group: Option<&Path>) -> PathBuf {
    group.map_or_else(|| cell.sim(), Path::to_path_buf)
}

/// Cell names become file names: letters, digits, `.`, `_`, `-`, not starting with `.`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Msg(format!(
            "bad cell name `{name}`: use up to 64 letters, digits, `.`, `_` and `-` (not starting with `.`); \
             give one with --name"
        )))
    }
}

/// Whether the cell at `root` (per its state) is the member `name` of `group`.
fn is_member(state: &State, group: &Path, name: &str) -> bool {
    state.group.as_deref() == Some(group) && state.name.as_deref() == Some(name)
}

/// The registered members of `group` that still exist, as (name, DIR), sorted by name.
pub fn registered(group: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(cells_dir(group)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                return None; // a temporary file
            }
            let dir = PathBuf::from(fs::read_to_string(e.path()).ok()?.trim_end_matches('\n'));
            let state = CellDir::new(&dir).peek().ok()?;
            is_member(&state, group, &name).then_some((name, dir))
        })
        .collect();
    out.sort();
    out
}

/// Registers the cell `name` at `root` in `group` (made if missing; canonical) and picks its
/// primary IP, 127.0.0.N with the smallest N no other member uses. The caller holds the
/// returned lock until the cell's state (with that IP) is saved, so concurrent creates agree.
pub fn register(group: &Path, name: &str, root: &Path) -> Result<(PathBuf, String, nix::fcntl::Flock<fs::File>)> {
    fs::create_dir_all(cells_dir(group)).map_err(io_err(group))?;
    let group = group.canonicalize().map_err(io_err(group))?;
    let lock = lock_file(&group.join("lock"))?;
    let members = registered(&group);
    if let Some((_, other)) = members.iter().find(|(n, dir)| n == name && dir != root) {
        return Err(Error::Msg(format!(
            "group {} already has a cell named `{name}` (in {}); choose another --name",
            group.display(),
            other.display()
        )));
    }
    let used: Vec<String> = members
        .iter()
        .filter(|(n, _)| n != name)
        .filter_map(|(_, dir)| CellDir::new(dir).peek().ok()?.primary_ip)
        .collect();
    let ip = (1..=254)
        .map(|n| format!("127.0.0.{n}"))
        .find(|ip| !used.contains(ip))
        .ok_or_else(|| Error::Msg(format!("group {} is full (254 cells)", group.display())))?;
    let entry = cells_dir(&group).join(name);
    write_atomic(&entry, format!("{}\n", root.display()).as_bytes(), 0o644)?;
    Ok((group, ip, lock))
}

/// Every cell of the serving cell's group, the serving cell included, sorted by name: (name, DIR).
pub fn members(cell: &CellDir, state: &State) -> Vec<(String, PathBuf)> {
    let own_name = state.name.clone().unwrap_or_else(|| cell.default_name());
    let mut out = match &state.group {
        Some(group) => registered(group),
        None => Vec::new(),
    };
    if !out.iter().any(|(_, dir)| dir == &cell.root) {
        out.push((own_name, cell.root.clone()));
        out.sort();
    }
    out
}

/// One API session.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Session {
    pub token: String,
    /// The UUID of `urn:vcloud:session:<uuid>`.
    pub id: String,
    pub user: String,
    pub created_ms: u64,
}

/// `api.json`: the sessions and the stable ids a login answer shows.
#[derive(Serialize, Deserialize, Default, Debug)]
pub struct ApiStore {
    pub site_id: String,
    pub org_id: String,
    pub user_id: String,
    pub role_id: String,
    pub sessions: Vec<Session>,
}

/// Sessions older than this are dropped whatever the knob says (it is per cell; this bounds
/// the file).
const SESSION_KEEP_MS: u64 = 24 * 3600 * 1000;
const SESSIONS_MAX: usize = 1000;

/// Runs `f` on the group's API store under its lock and saves it.
pub fn with_api_store<T>(dir: &Path, now: u64, f: impl FnOnce(&mut ApiStore) -> T) -> Result<T> {
    let _lock = lock_file(&dir.join("api.lock"))?;
    let path = dir.join("api.json");
    let mut store: ApiStore = match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ApiStore::default(),
        Err(e) => return Err(io_err(&path)(e)),
    };
    for id in [
        &mut store.site_id,
        &mut store.org_id,
        &mut store.user_id,
        &mut store.role_id,
    ] {
        if id.is_empty() {
            *id = uuid_v4();
        }
    }
    store
        .sessions
        .retain(|s| now.saturating_sub(s.created_ms) < SESSION_KEEP_MS);
    let out = f(&mut store);
    if store.sessions.len() > SESSIONS_MAX {
        let excess = store.sessions.len() - SESSIONS_MAX;
        store.sessions.drain(..excess);
    }
    let text = serde_json::to_string_pretty(&store).expect("api store serializes") + "\n";
    write_atomic(&path, text.as_bytes(), 0o600)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_file_names() {
        for ok in ["cell1", "vcd-a.example", "A_2"] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "a b", ".."] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
