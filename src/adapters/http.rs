//! The one way cellctl builds HTTP clients (API, health endpoint, webhook): rustls with the
//! system trust store plus an optional CA file, or a certificate pin instead; both timeouts set,
//! no redirects followed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::adapters::pin::{Mismatch, Pin, PinVerifier};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("CA file {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error("TLS setup for the certificate pin: {0}")]
    Pin(#[from] rustls::Error),
    #[error("{0}")]
    Build(String),
}

/// How the server's certificate is trusted. A pin decides alone: the CA file is then not read,
/// because the pin names the one certificate to accept, which no CA could widen or narrow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trust<'a> {
    pub ca_file: Option<&'a Path>,
    pub pin: Option<&'a Pin>,
}

pub fn client(connect_timeout: Duration, timeout: Duration, trust: Trust<'_>) -> Result<reqwest::Client, ClientError> {
    client_with_identity(connect_timeout, timeout, trust, None)
}

/// As [`client`], presenting a client certificate (the lock service's mutual TLS).
pub fn client_with_identity(
    connect_timeout: Duration,
    timeout: Duration,
    trust: Trust<'_>,
    identity: Option<reqwest::Identity>,
) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pin) = trust.pin {
        b = b.tls_backend_preconfigured(pinned_config(pin)?);
    } else if let Some(ca) = trust.ca_file {
        let bad = |detail: String| ClientError::CaFile {
            path: ca.display().to_string(),
            detail,
        };
        let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| bad(e.to_string()))?;
        b = b.add_root_certificate(cert);
    }
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build().map_err(|e| ClientError::Build(error_chain(&e)))
}

/// rustls on aws-lc-rs (reqwest's own provider, so one crypto library in the binary), the safe
/// protocol versions, and the pin as the only certificate check.
fn pinned_config(pin: &Pin) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PinVerifier::new(pin.clone(), provider.clone()));
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// A reqwest error with its causes: the top level alone ("error sending request") hides
/// whether it was DNS, a refused connection or an untrusted certificate. A pin mismatch is said
/// alone, in its own words: rustls shows a custom certificate error only in its Debug form.
pub fn error_chain(e: &reqwest::Error) -> String {
    if let Some(m) = pin_mismatch(e) {
        return m.to_string();
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// The pin's verdict inside a failed request. rustls' error travels inside io::Errors (one in
/// another, as hyper-util and tokio-rustls wrap it), whose `source()` skips what they wrap, so each
/// link is also opened.
fn pin_mismatch(e: &reqwest::Error) -> Option<&Mismatch> {
    let mut link: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(l) = link {
        let mut inner: &(dyn std::error::Error + 'static) = l;
        while let Some(wrapped) = inner.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            inner = wrapped;
        }
        if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) =
            inner.downcast_ref::<rustls::Error>()
            && let Some(m) = other.0.downcast_ref::<Mismatch>()
        {
            return Some(m);
        }
        link = l.source();
    }
    None
}
