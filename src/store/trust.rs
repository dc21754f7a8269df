//! Who may have written a file that cellctl acts on. cellctl runs as root: a config file, a
//! program or a state directory that another user can write lets that user choose what root
//! runs or overwrites, so such files are refused instead of used.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// Why a file cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Writable by its group or by everyone (`mode` is the permission bits).
    Writable { mode: u32 },
    /// Owned by a user who is neither root (where root is accepted) nor the one running cellctl.
    Owner { uid: u32 },
}

/// Whose files are trusted: files root installed are, for a config and the programs it names;
/// the state directory must be this user's own, since cellctl creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    RootOrMe,
    Me,
}

pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// `None` when only root and this user can change the file (write bits checked first: they are
/// the commoner mistake, and the fix for them is the one to show first).
pub fn exposure(meta: &Metadata, owners: Owners) -> Option<Exposure> {
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(Exposure::Writable { mode: mode & 0o777 });
    }
    let uid = meta.uid();
    let root_ok = owners == Owners::RootOrMe && uid == 0;
    if uid != euid() && !root_ok {
        return Some(Exposure::Owner { uid });
    }
    None
}

impl Exposure {
    /// What is wrong, as the end of "FILE ...".
    pub fn problem(self, owners: Owners) -> String {
        match (self, owners) {
            (Exposure::Writable { mode }, _) => format!("is group- or world-writable (mode {mode:o})"),
            (Exposure::Owner { uid }, Owners::RootOrMe) => {
                format!("is owned by uid {uid}, not by root or by uid {} (this user)", euid())
            }
            (Exposure::Owner { uid }, Owners::Me) => {
                format!("is owned by uid {uid}, not by uid {} (this user)", euid())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn meta_with(mode: u32) -> (tempfile::NamedTempFile, Metadata) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let m = std::fs::metadata(f.path()).unwrap();
        (f, m)
    }

    #[test]
    fn write_bits_for_group_or_others_are_exposure() {
        for mode in [0o664, 0o646, 0o666, 0o620, 0o602] {
            let (_f, m) = meta_with(mode);
            assert_eq!(
                exposure(&m, Owners::RootOrMe),
                Some(Exposure::Writable { mode }),
                "{mode:o}"
            );
        }
    }

    #[test]
    fn own_file_without_foreign_write_bits_is_trusted() {
        for mode in [0o600, 0o644, 0o755, 0o400] {
            let (_f, m) = meta_with(mode);
            assert_eq!(exposure(&m, Owners::Me), None, "{mode:o}");
            assert_eq!(exposure(&m, Owners::RootOrMe), None, "{mode:o}");
        }
    }

    #[test]
    fn another_owner_is_exposure() {
        if euid() != 0 {
            eprintln!("NOTE: not root: cannot give a file to another user; owner rule not exercised here");
            return;
        }
        let (f, _) = meta_with(0o644);
        std::os::unix::fs::chown(f.path(), Some(65534), None).unwrap();
        let m = std::fs::metadata(f.path()).unwrap();
        assert_eq!(exposure(&m, Owners::RootOrMe), Some(Exposure::Owner { uid: 65534 }));
        assert!(Exposure::Owner { uid: 65534 }.problem(Owners::Me).contains("uid 65534"));
    }
}
