//! The HTTPS listener's certificates: a self-signed CA (one per group) and a server certificate
//! per cell for `127.0.0.1`, `::1` and `localhost`, made with rcgen on aws-lc-rs.
//!
//! Files: `DIR/sim/tls/ca.pem` (the CA certificate clients trust), `DIR/sim/tls/server.pem` (the
//! server certificate, then the CA's), `DIR/sim/tls/server.key` (mode 0600). The CA key is
//! `ca.key` (0600) beside the CA's own `ca.pem`: in `DIR/sim/tls/` for a group of one, in
//! `GROUPDIR/tls/` for a group (then `DIR/sim/tls/ca.pem` is a copy of `GROUPDIR/tls/ca.pem`).
//!
//! `serve --self-signed` presents instead the kind of certificate a cell gets from `openssl req
//! -x509`: self-signed and marked as a CA (basicConstraints CA:TRUE), `DIR/sim/tls/self-signed.pem`
//! and `.key` (0600), made once per cell.

use crate::store::{CellDir, Error, Result, hex, io_err, lock_file, write_atomic};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The names the server certificate is valid for.
pub const SERVER_NAMES: &[&str] = &["127.0.0.1", "::1", "localhost"];

fn tls_err(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::Msg(format!("{what}: {e}"))
}

fn validity(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2049, 12, 31);
}

/// The CA's parameters, rebuilt from its key alone (the subject names the key), so the key file
/// is all it takes to sign again: no certificate parsing.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params);
    let id = params.key_identifier(key);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("cellsim simulated VCD CA {}", hex(&id[..id.len().min(6)])),
    );
    params.distinguished_name.push(DnType::OrganizationName, "cellsim");
    params
}

fn mkdir_private(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// Makes the CA in `dir` (ca.pem, ca.key) unless it exists; returns (CA PEM, CA key PEM).
/// The caller holds the lock of `dir`'s owner.
fn ensure_ca(dir: &Path) -> Result<(String, String)> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if cert_path.exists() && key_path.exists() {
        return Ok((read(&cert_path)?, read(&key_path)?));
    }
    mkdir_private(dir)?;
    let key = KeyPair::generate().map_err(tls_err("generating the CA key"))?;
    let cert = ca_params(&key)
        .self_signed(&key)
        .map_err(tls_err("making the CA certificate"))?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    write_atomic(&key_path, key_pem.as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert_pem.as_bytes(), 0o644)?;
    Ok((cert_pem, key_pem))
}

fn server_cert(ca_key_pem: &str) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(tls_err("reading the CA key"))?;
    let issuer = Issuer::new(ca_params(&ca_key), ca_key);
    let names: Vec<String> = SERVER_NAMES.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).map_err(tls_err("server certificate names"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.distinguished_name.push(DnType::OrganizationName, "cellsim");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params);
    let key = KeyPair::generate().map_err(tls_err("generating the server key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(tls_err("signing the server certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Makes whatever is missing: the CA (the group's, or the cell's own) and the cell's server
/// certificate (also remade when `renew` or when the cell's ca.pem is not the CA's). Returns the
/// path of the cell's ca.pem.
pub fn ensure(cell: &CellDir, group: Option<&Path>, renew: bool) -> Result<PathBuf> {
    let own = cell.tls_dir();
    mkdir_private(&own)?;
    let (ca_dir, lock_path) = match group {
        Some(g) => (g.join("tls"), g.join("lock")),
        None => (own.clone(), cell.sim().join("tls.lock")),
    };
    let _lock = lock_file(&lock_path)?;
    let (ca_pem, ca_key_pem) = ensure_ca(&ca_dir)?;
    let ca_path = own.join("ca.pem");
    let (cert_path, key_path) = (own.join("server.pem"), own.join("server.key"));
    let current = fs::read_to_string(&ca_path).ok().is_some_and(|t| t == ca_pem);
    if renew || !current || !cert_path.exists() || !key_path.exists() {
        let (cert_pem, key_pem) = server_cert(&ca_key_pem)?;
        write_atomic(&key_path, key_pem.as_bytes(), 0o600)?;
        write_atomic(&cert_path, format!("{cert_pem}{ca_pem}").as_bytes(), 0o644)?;
        if !current {
            write_atomic(&ca_path, ca_pem.as_bytes(), 0o644)?;
        }
    }
    Ok(ca_path)
}

/// A self-signed certificate marked as a CA, like `openssl req -x509` makes (its default
/// extensions say CA:TRUE), but with the loopback names, so that the CA mark is the only thing a
/// client could hold against it. Made unless it exists; returns the certificate's path.
pub fn ensure_self_signed(cell: &CellDir) -> Result<PathBuf> {
    let own = cell.tls_dir();
    mkdir_private(&own)?;
    let _lock = lock_file(&cell.sim().join("tls.lock"))?;
    let (cert_path, key_path) = (own.join("self-signed.pem"), own.join("self-signed.key"));
    if cert_path.exists() && key_path.exists() {
        return Ok(cert_path);
    }
    let names: Vec<String> = SERVER_NAMES.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).map_err(tls_err("self-signed certificate names"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "cellsim self-signed");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    validity(&mut params);
    let key = KeyPair::generate().map_err(tls_err("generating the self-signed key"))?;
    let cert = params
        .self_signed(&key)
        .map_err(tls_err("making the self-signed certificate"))?;
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(cert_path)
}

/// The SHA-256 thumbprint of the first certificate in a PEM file, colon-separated upper case (as
/// vCenter shows it and `openssl x509 -noout -fingerprint -sha256` prints it).
pub fn thumbprint(cert_path: &Path) -> Result<String> {
    use sha2::Digest;
    let first = CertificateDer::pem_file_iter(cert_path)
        .ok()
        .and_then(|mut certs| certs.next())
        .and_then(std::result::Result::ok)
        .ok_or_else(|| Error::Msg(format!("{}: no certificate", cert_path.display())))?;
    let digest = sha2::Sha256::digest(first.as_ref());
    Ok(digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

/// The provider every TLS use in cellsim goes through.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The listener's configuration from a certificate chain (PEM, the server's first) and its key:
/// `DIR/sim/tls/server.{pem,key}`, or `self-signed.{pem,key}`.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>> {
    let pem_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls::pki_types::pem::Error| Error::Msg(format!("{}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(pem_err(cert_path))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(pem_err(cert_path))?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(pem_err(key_path))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| Error::Msg(format!("TLS configuration: {e}")))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn the_ca_params_rebuild_from_the_key() {
        let key = KeyPair::generate().unwrap();
        let a = ca_params(&key);
        let b = ca_params(&KeyPair::from_pem(&key.serialize_pem()).unwrap());
        assert_eq!(a.distinguished_name, b.distinguished_name);
    }

    #[test]
    fn a_server_certificate_verifies_against_its_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let cell = CellDir::new(tmp.path());
        fs::create_dir_all(cell.sim()).unwrap();
        let ca = ensure(&cell, None, false).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        let chain: Vec<CertificateDer> = CertificateDer::pem_file_iter(cell.tls_dir().join("server.pem"))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        for name in SERVER_NAMES {
            let name = rustls::pki_types::ServerName::try_from(*name).unwrap();
            verifier
                .verify_server_cert(&chain[0], &chain[1..], &name, &[], rustls::pki_types::UnixTime::now())
                .unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(cell.tls_dir().join("server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing is remade when all is there.
        let before = fs::read(cell.tls_dir().join("server.pem")).unwrap();
        ensure(&cell, None, false).unwrap();
        assert_eq!(before, fs::read(cell.tls_dir().join("server.pem")).unwrap());
        server_config(&cell.tls_dir().join("server.pem"), &cell.tls_dir().join("server.key")).unwrap();
    }

    #[test]
    fn the_self_signed_certificate_is_a_ca_that_webpki_refuses_as_the_server() {
        let tmp = tempfile::tempdir().unwrap();
        let cell = CellDir::new(tmp.path());
        fs::create_dir_all(cell.sim()).unwrap();
        let pem = ensure_self_signed(&cell).unwrap();
        let cert = CertificateDer::pem_file_iter(&pem).unwrap().next().unwrap().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let e = verifier
            .verify_server_cert(&cert, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .unwrap_err();
        // webpki's error travels as rustls' OtherError, which compares unequal to everything.
        assert!(e.to_string().contains("CaUsedAsEndEntity"), "{e}");
        let t = thumbprint(&pem).unwrap();
        assert_eq!((t.len(), t.matches(':').count()), (95, 31), "{t}");
        // Made once: the thumbprint a client pinned stays valid across serves.
        ensure_self_signed(&cell).unwrap();
        assert_eq!(thumbprint(&pem).unwrap(), t);
        server_config(&pem, &cell.tls_dir().join("self-signed.key")).unwrap();
    }
}
