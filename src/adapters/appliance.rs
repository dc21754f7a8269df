//! The VCD appliance's update path (`../shared/research/vcd.md` §3, "Appliance"): the update
//! package unpacked into a folder of its own, and `vamicli update --repo file:///FOLDER`,
//! `--check`, `--install latest --accepteula`.
//!
//! vamicli's output is read loosely: `--check` lists the available update on the line after
//! `Available Updates -` (`10.6.0.1234 Build 24135488`), or says `No available updates found.`

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::exec;

#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    #[error("cannot unpack {package} into {folder}: {detail}")]
    Unpack {
        package: String,
        folder: String,
        detail: String,
    },
    #[error("vamicli {args} failed ({result}); its output: {output}")]
    Vamicli {
        args: String,
        result: String,
        output: String,
    },
    #[error("{0}")]
    NotOffered(String),
    #[error("{0}")]
    Setup(String),
    /// After the update (and its reboot) the installed version is not the package's.
    #[error("{0}")]
    Version(String),
}

/// Unpacked bytes at most, whatever the archive claims: a corrupt or hostile archive must not
/// fill the disk (VCD update packages are a few GiB).
const MAX_UNPACKED: u64 = 64 * 1024 * 1024 * 1024;

/// Unpack `package` (a `.tar.gz`) into `folder`, which must not exist yet (a fresh folder of
/// its own). Entries whose path would leave the folder (absolute, `..`) or that are links,
/// devices or FIFOs are refused; on any error the folder is removed again.
pub fn unpack(package: &Path, folder: &Path) -> Result<u64, ApplianceError> {
    let err = |detail: String| ApplianceError::Unpack {
        package: package.display().to_string(),
        folder: folder.display().to_string(),
        detail,
    };
    if let Some(parent) = folder.parent() {
        fs::create_dir_all(parent).map_err(|e| err(format!("cannot make {}: {e}", parent.display())))?;
    }
    fs::create_dir(folder).map_err(|e| err(format!("cannot make a fresh folder: {e}")))?;
    let r = unpack_into(package, folder).map_err(err);
    if r.is_err() {
        let _ = fs::remove_dir_all(folder);
    }
    r
}

fn unpack_into(package: &Path, folder: &Path) -> Result<u64, String> {
    let file = fs::File::open(package).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut total = 0u64;
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| format!("a corrupt archive: {e}"))?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let rel = safe_relative(&path).ok_or_else(|| format!("entry {} would leave the folder", path.display()))?;
        let target = folder.join(&rel);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(|e| e.to_string())?;
            continue;
        }
        if !kind.is_file() {
            return Err(format!("entry {} is not a file or folder ({kind:?})", path.display()));
        }
        if let Some(p) = target.parent() {
            fs::create_dir_all(p).map_err(|e| e.to_string())?;
        }
        let mut out = fs::File::create(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        let limit = MAX_UNPACKED.saturating_sub(total) + 1;
        let n = std::io::copy(&mut (&mut entry).take(limit), &mut out).map_err(|e| e.to_string())?;
        total += n;
        if total > MAX_UNPACKED {
            return Err(format!("more than {MAX_UNPACKED} bytes unpacked: refusing"));
        }
    }
    Ok(total)
}

/// The entry's path inside the folder, or None when it would leave it.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// The size the package unpacks to, read from its entries' headers without writing anything.
pub fn unpacked_size(package: &Path) -> Result<u64, String> {
    let file = fs::File::open(package).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut total = 0u64;
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| format!("a corrupt archive: {e}"))?;
        total = total.saturating_add(entry.header().size().unwrap_or(0));
    }
    Ok(total)
}

/// Where an update repository keeps its manifest (VAMI's repository layout: the update
/// `.tar.gz` is such a repository, `manifest/` beside `package-pool/`). Inferred from VAMI's
/// layout and the vendor's update packages, not stated in the research notes.
pub const MANIFEST: &str = "manifest/manifest-latest.xml";

/// The manifest's largest believable size (VAMI manifests are a few KiB).
const MAX_MANIFEST: u64 = 1024 * 1024;

/// What an update package's manifest offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub version: String,
    pub build: Option<String>,
}

/// The version (and build) the manifest inside `package` names, read from the archive's
/// stream: nothing is written.
pub fn manifest_offer(package: &Path) -> Result<Offer, String> {
    let file = fs::File::open(package).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| format!("a corrupt archive: {e}"))?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        if safe_relative(&path).as_deref() != Some(Path::new(MANIFEST)) {
            continue;
        }
        let mut xml = String::new();
        entry
            .take(MAX_MANIFEST)
            .read_to_string(&mut xml)
            .map_err(|e| format!("{MANIFEST}: {e}"))?;
        return parse_manifest(&xml);
    }
    Err(format!("no {MANIFEST} in the package: not an appliance update"))
}

/// `<version>` and `<build>` of a VAMI manifest.
fn parse_manifest(xml: &str) -> Result<Offer, String> {
    let tag = |name: &str| -> Option<String> {
        let open = format!("<{name}>");
        let start = xml.find(&open)? + open.len();
        let end = xml[start..].find(&format!("</{name}>"))?;
        Some(xml[start..start + end].trim().to_string()).filter(|t| !t.is_empty())
    };
    Ok(Offer {
        version: tag("version").ok_or_else(|| format!("{MANIFEST} names no <version>"))?,
        build: tag("build"),
    })
}

/// `file:///FOLDER`: the repository URL vamicli reads a local update from.
pub fn repo_url(folder: &Path) -> String {
    format!("file://{}", folder.display())
}

/// Run vamicli with `args`; its output when it succeeded.
pub async fn call(vamicli: &Path, args: &[&str], timeout: Duration) -> Result<exec::Output, ApplianceError> {
    let failed = |result: String, output: String| ApplianceError::Vamicli {
        args: args.join(" "),
        result,
        output,
    };
    match exec::run(vamicli, args, timeout).await {
        Ok(out) if out.success() => Ok(out),
        Ok(out) => Err(failed(out.describe_exit(), last_lines(&out))),
        Err(e) => Err(failed(e.to_string(), String::new())),
    }
}

/// The last lines of both streams, short enough for an error message.
pub fn last_lines(out: &exec::Output) -> String {
    let text = format!("{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(4)..].join(" | ");
    if tail.len() > 1024 {
        let cut = tail.char_indices().nth(1024).map_or(tail.len(), |(i, _)| i);
        return format!("{}…", &tail[..cut]);
    }
    tail
}

/// What `vamicli update --check` offers: Some(version) from the line after `Available
/// Updates -` (its first word), None for `No available updates`; Err for output that says
/// neither.
pub fn parse_check(stdout: &str) -> Result<Option<String>, String> {
    let mut lines = stdout.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("No available updates") {
            return Ok(None);
        }
        if line.starts_with("Available Updates") {
            let next = lines.find(|l| !l.is_empty()).unwrap_or("");
            return next
                .split_whitespace()
                .next()
                .filter(|w| w.starts_with(|c: char| c.is_ascii_digit()))
                .map(|w| Some(w.to_string()))
                .ok_or_else(|| format!("`Available Updates` names no version: {next:?}"));
        }
    }
    Err(format!(
        "neither `Available Updates` nor `No available updates` in its output: {:?}",
        stdout.chars().take(300).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_manifest_is_read_from_the_archive_without_unpacking() {
        let d = tempfile::tempdir().unwrap();
        let pkg = d.path().join("u_update.tar.gz");
        let gz = flate2::write::GzEncoder::new(fs::File::create(&pkg).unwrap(), flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        for (name, body) in [
            ("package-pool/x.rpm", "rpm"),
            (
                MANIFEST,
                "<update>\n <version>10.6.0</version>\n <build>24135488</build>\n</update>",
            ),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            t.append_data(&mut h, name, body.as_bytes()).unwrap();
        }
        t.into_inner().unwrap().finish().unwrap();
        let offer = manifest_offer(&pkg).unwrap();
        assert_eq!(offer.version, "10.6.0");
        assert_eq!(offer.build.as_deref(), Some("24135488"));
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "nothing written");
        assert!(parse_manifest("<update><build>1</build></update>").is_err());
        fs::write(&pkg, b"not gzip").unwrap();
        assert!(manifest_offer(&pkg).is_err());
    }

    #[test]
    fn check_output_is_read() {
        let out = "Checking for available updates, this process can take a few minutes....\nAvailable Updates -\n\t10.6.0.1234 Build 24135488\n";
        assert_eq!(parse_check(out), Ok(Some("10.6.0.1234".into())));
        assert_eq!(
            parse_check("Checking for available updates....\nNo available updates found.\n"),
            Ok(None)
        );
        assert!(parse_check("Failure: Error downloading manifest.").is_err());
        assert!(parse_check("Available Updates -\n\n").is_err());
    }

    #[test]
    fn paths_leaving_the_folder_are_refused() {
        assert_eq!(
            safe_relative(Path::new("manifest/m.xml")),
            Some(PathBuf::from("manifest/m.xml"))
        );
        assert_eq!(safe_relative(Path::new("./a/./b")), Some(PathBuf::from("a/b")));
        for bad in ["../x", "a/../../x", "/etc/passwd", ".", ""] {
            assert_eq!(safe_relative(Path::new(bad)), None, "{bad}");
        }
    }

    fn archive(entries: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("VMware_Cloud_Director_1.0.0-1_update.tar.gz");
        let gz = flate2::write::GzEncoder::new(fs::File::create(&p).unwrap(), flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        for (name, body) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            // set_path refuses `..`: write the raw name as a hostile archive would.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            t.append(&h, *body).unwrap();
        }
        t.into_inner().unwrap().finish().unwrap();
        (d, p)
    }

    #[test]
    fn unpacks_into_a_fresh_folder_only() {
        let (d, p) = archive(&[("manifest/manifest-latest.xml", b"<update/>"), ("pool/a.rpm", b"rpm")]);
        let folder = d.path().join("updates/run-1");
        assert_eq!(unpack(&p, &folder).unwrap(), 12);
        assert_eq!(fs::read(folder.join("pool/a.rpm")).unwrap(), b"rpm");
        assert_eq!(unpacked_size(&p).unwrap(), 12);
        // Not fresh: refused, and what is there is left alone.
        assert!(unpack(&p, &folder).is_err());
        assert!(folder.join("pool/a.rpm").exists());
    }

    #[test]
    fn an_escaping_entry_is_refused_and_nothing_is_left() {
        let (d, p) = archive(&[("ok.txt", b"x"), ("../escaped.txt", b"y")]);
        let folder = d.path().join("f");
        let e = unpack(&p, &folder).unwrap_err().to_string();
        assert!(e.contains("would leave the folder"), "{e}");
        assert!(!d.path().join("escaped.txt").exists());
        assert!(!folder.exists(), "a failed unpack removes its folder");
    }

    proptest! {
        #[test]
        fn safe_paths_stay_inside(parts in proptest::collection::vec("[a-z.]{1,3}|\\.\\.", 0..6)) {
            let p: PathBuf = parts.iter().collect();
            if let Some(rel) = safe_relative(&p) {
                prop_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
            }
        }
    }
}
