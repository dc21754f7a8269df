//! The package to install: verified before anything else is touched.
//!
//! A regular file, not group/world-writable, whose SHA-256 matches `--sha256` or a
//! `PACKAGE.sha256` file beside it; its kind (VMware `.bin` installer, `.rpm`, `.deb`, or a
//! configured command) and, where it can be told, its version (for the downgrade check).

use std::cmp::Ordering;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("package {path}: {detail}")]
    Unusable { path: String, detail: String },
    #[error(
        "package {path} is writable by group or others (mode {mode:o}): anyone could have changed it; fix with: chmod go-w {path}"
    )]
    UnsafeMode { path: String, mode: u32 },
    #[error(
        "package {path} has no checksum to verify: give --sha256 HEX or put `HEX  {name}` in {path}.sha256 (from the vendor's download page)"
    )]
    NoChecksum { path: String, name: String },
    #[error("package {path} checksum mismatch: expected {expected}, file has {actual}; download it again")]
    Mismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Version(String),
}

pub use crate::model::package::{Kind, Package};

/// Hash a file in 64 KiB chunks (sha2 0.11's hasher is not an io::Write).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The checksum from a `.sha256` file: the first hex word (sha256sum's `HEX  name` format).
fn read_sidecar(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.split_whitespace().next().map(str::to_ascii_lowercase)
}

fn valid_hex(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

pub fn kind_of(path: &Path, custom: bool) -> Option<Kind> {
    if custom {
        return Some(Kind::Custom);
    }
    if path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("_update.tar.gz"))
    {
        return Some(Kind::ApplianceUpdate);
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("bin") => Some(Kind::VmwareBin),
        Some("rpm") => Some(Kind::Rpm),
        Some("deb") => Some(Kind::Deb),
        _ => None,
    }
}

/// `vmware-vcloud-director-distribution-10.5.1-22914446.bin` → `10.5.1-22914446`;
/// `VMware_Cloud_Director_10.6.0.1234-24135488_update.tar.gz` (or `VMware_vCloud_Director_…`)
/// → `10.6.0.1234-24135488`.
pub fn version_from_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if let Some(stem) = name.strip_suffix("_update.tar.gz") {
        let rest = stem
            .strip_prefix("VMware_Cloud_Director_")
            .or_else(|| stem.strip_prefix("VMware_vCloud_Director_"))?;
        rest.chars().next().filter(char::is_ascii_digit)?;
        return Some(rest.to_string());
    }
    let stem = path.file_stem()?.to_str()?;
    let rest = stem.strip_prefix("vmware-vcloud-director-distribution-")?;
    rest.chars().next().filter(char::is_ascii_digit)?;
    Some(rest.to_string())
}

/// Compare versions by their numeric fields (`10.5.1-22914446` vs `10.5.1.22914446` are equal).
/// Once major.minor.patch are there, a missing build number matches any: the installed
/// `10.6.0` is the package `10.6.0-24135488`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let nums = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect()
    };
    let (x, y) = (nums(a), nums(b));
    let common = x.len().min(y.len());
    let n = if common >= 3 { common } else { x.len().max(y.len()) };
    for i in 0..n {
        match x.get(i).unwrap_or(&0).cmp(y.get(i).unwrap_or(&0)) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    Ordering::Equal
}

/// Verify the package; nothing is changed anywhere.
pub fn verify(path: &Path, sha256: Option<&str>, custom_command: bool) -> Result<Package, PackageError> {
    let display = path.display().to_string();
    let unusable = |detail: String| PackageError::Unusable {
        path: display.clone(),
        detail,
    };
    let meta = std::fs::symlink_metadata(path).map_err(|e| unusable(format!("{e}; check the path")))?;
    let meta = if meta.file_type().is_symlink() {
        std::fs::metadata(path).map_err(|e| unusable(format!("dangling symlink: {e}")))?
    } else {
        meta
    };
    if !meta.is_file() {
        return Err(unusable("not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(PackageError::UnsafeMode { path: display, mode });
    }
    let kind = kind_of(path, custom_command).ok_or_else(|| {
        unusable(
            "unknown package type: expected a VMware .bin installer, .rpm, .deb or an appliance's _update.tar.gz (or set [install] command)".into(),
        )
    })?;
    let expected = if let Some(s) = sha256 {
        s.trim().to_ascii_lowercase()
    } else {
        let side = PathBuf::from(format!("{display}.sha256"));
        read_sidecar(&side).ok_or_else(|| PackageError::NoChecksum {
            path: display.clone(),
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        })?
    };
    if !valid_hex(&expected) {
        return Err(unusable(format!("checksum {expected:?} is not 64 hex digits")));
    }
    let actual = sha256_file(path).map_err(|e| unusable(format!("cannot read: {e}")))?;
    if actual != expected {
        return Err(PackageError::Mismatch {
            path: display,
            expected,
            actual,
        });
    }
    let version = match kind {
        Kind::VmwareBin | Kind::Custom | Kind::ApplianceUpdate => version_from_name(path),
        Kind::Rpm | Kind::Deb => None,
    };
    Ok(Package {
        path: path.to_path_buf(),
        sha256: actual,
        kind,
        version,
    })
}

/// Refuse a downgrade (or a reinstall of the same version) unless allowed.
pub fn check_versions(
    installed: Option<&str>,
    package: Option<&str>,
    allow_downgrade: bool,
) -> Result<(), PackageError> {
    match (installed, package) {
        (Some(i), Some(p)) => match compare_versions(p, i) {
            Ordering::Greater => Ok(()),
            _ if allow_downgrade => Ok(()),
            Ordering::Equal => Err(PackageError::Version(format!(
                "package version {p} is already installed ({i}); nothing to upgrade (--allow-downgrade reinstalls it)"
            ))),
            Ordering::Less => Err(PackageError::Version(format!(
                "package version {p} is older than the installed {i}: refusing a downgrade (--allow-downgrade to force)"
            ))),
        },
        _ if allow_downgrade => Ok(()),
        (_, None) => Err(PackageError::Version(
            "cannot tell the package's version from its name, so a downgrade cannot be ruled out: pass --package-version V, or --allow-downgrade".into(),
        )),
        (None, Some(_)) => Err(PackageError::Version(
            "cannot read the installed version (see [install] version_command), so a downgrade cannot be ruled out: fix it, or pass --allow-downgrade".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn pkg(name: &str, body: &[u8], mode: u32) -> (tempfile::TempDir, PathBuf, String) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(name);
        std::fs::File::create(&p).unwrap().write_all(body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        let sum = hex::encode(Sha256::digest(body));
        (d, p, sum)
    }

    #[test]
    fn verifies_checksum_from_flag_and_sidecar() {
        let (_d, p, sum) = pkg(
            "vmware-vcloud-director-distribution-10.6.0-2400.bin",
            b"installer",
            0o644,
        );
        let ok = verify(&p, Some(&sum), false).unwrap();
        assert_eq!(ok.kind, Kind::VmwareBin);
        assert_eq!(ok.version.as_deref(), Some("10.6.0-2400"));
        std::fs::write(
            format!("{}.sha256", p.display()),
            format!("{}  x.bin\n", sum.to_uppercase()),
        )
        .unwrap();
        verify(&p, None, false).unwrap();
        let bad = "0".repeat(64);
        assert!(matches!(
            verify(&p, Some(&bad), false),
            Err(PackageError::Mismatch { .. })
        ));
    }

    #[test]
    fn refuses_writable_unknown_and_unchecked() {
        let (_d, p, sum) = pkg("a.bin", b"x", 0o664);
        assert!(matches!(
            verify(&p, Some(&sum), false),
            Err(PackageError::UnsafeMode { .. })
        ));
        let (_d, p, sum) = pkg("a.tar", b"x", 0o644);
        assert!(
            verify(&p, Some(&sum), false)
                .unwrap_err()
                .to_string()
                .contains("unknown package type")
        );
        let (_d, p, _) = pkg("a.rpm", b"x", 0o644);
        assert!(matches!(verify(&p, None, false), Err(PackageError::NoChecksum { .. })));
        let (d, _, sum) = pkg("a.rpm", b"x", 0o644);
        assert!(
            verify(d.path(), Some(&sum), false)
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
    }

    #[test]
    fn appliance_update_packages_are_told_by_name() {
        let (_d, p, sum) = pkg("VMware_Cloud_Director_10.6.0-24135488_update.tar.gz", b"tgz", 0o644);
        let ok = verify(&p, Some(&sum), false).unwrap();
        assert_eq!(ok.kind, Kind::ApplianceUpdate);
        assert_eq!(ok.version.as_deref(), Some("10.6.0-24135488"));
        assert_eq!(
            version_from_name(Path::new("VMware_vCloud_Director_9.5.0.3-11000000_update.tar.gz")).as_deref(),
            Some("9.5.0.3-11000000")
        );
        assert_eq!(version_from_name(Path::new("something_update.tar.gz")), None);
        // A configured command still wins.
        assert_eq!(kind_of(&p, true), Some(Kind::Custom));
    }

    #[test]
    fn version_rules() {
        assert_eq!(compare_versions("10.5.1-22914446", "10.5.1.22914446"), Ordering::Equal);
        assert_eq!(compare_versions("10.6.0-1", "10.5.1-99"), Ordering::Greater);
        assert_eq!(compare_versions("10.10", "10.9"), Ordering::Greater);
        assert_eq!(compare_versions("10.6.0-24135488", "10.6.0"), Ordering::Equal);
        assert_eq!(compare_versions("10.6.1", "10.6.0-999"), Ordering::Greater);
        assert_eq!(compare_versions("10.6", "10.6.1"), Ordering::Less);
        assert!(check_versions(Some("10.5"), Some("10.6"), false).is_ok());
        assert!(check_versions(Some("10.6"), Some("10.5"), false).is_err());
        assert!(check_versions(Some("10.6"), Some("10.5"), true).is_ok());
        assert!(check_versions(Some("10.6"), Some("10.6"), false).is_err());
        assert!(check_versions(Some("10.6"), None, false).is_err());
    }

    proptest! {
        #[test]
        fn comparison_is_antisymmetric(a in proptest::collection::vec(0u32..50, 1..5), b in proptest::collection::vec(0u32..50, 1..5)) {
            let s = |v: &Vec<u32>| v.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join(".");
            prop_assert_eq!(compare_versions(&s(&a), &s(&b)), compare_versions(&s(&b), &s(&a)).reverse());
        }
    }
}
