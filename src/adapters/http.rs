//! The one way cellctl builds HTTP clients (API, health endpoint, webhook): rustls with the
//! system trust store plus an optional CA file, both timeouts set, no redirects followed.

use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("CA file {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error("{0}")]
    Build(String),
}

pub fn client(
    connect_timeout: Duration,
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = ca_file {
        let bad = |detail: String| ClientError::CaFile {
            path: ca.display().to_string(),
            detail,
        };
        let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| bad(e.to_string()))?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| ClientError::Build(error_chain(&e)))
}

/// A reqwest error with its causes: the top level alone ("error sending request") hides
/// whether it was DNS, a refused connection or an untrusted certificate.
pub fn error_chain(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
