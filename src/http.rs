//! The one way cellctl builds HTTP clients (API, health endpoint, webhook): rustls with the
//! system trust store plus an optional CA file, both timeouts set, no redirects followed.

use std::path::Path;
use std::time::Duration;

pub fn client(connect_timeout: Duration, timeout: Duration, ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("CA file {}: {e}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| format!("CA file {}: {e}", ca.display()))?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| e.to_string())
}

/// A reqwest error with its causes: the top level alone ("error sending request") hides
/// whether it was DNS, a refused connection or an untrusted certificate.
pub fn error_chain(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}
