//! The cell's health endpoint: `GET /cloud/server_status` answering `Service is up.`
//! (`/api/versions` answers 200 even in maintenance mode, so it is no health check).

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Health {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    /// Trust exactly the certificate with this thumbprint (instead of the CA file).
    pub pin: Option<crate::adapters::pin::Pin>,
    pub request_timeout: Duration,
    pub interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("health check setup: {0}")]
    Setup(#[from] crate::adapters::http::ClientError),
    #[error("the cell did not become healthy within {}: {url} last said: {last}", humantime::format_duration(*.after))]
    NotHealthy { url: String, after: Duration, last: String },
}

/// What an unhealthy endpoint answered (or why it could not be asked).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NotUp(pub String);

pub const UP_BODY: &str = "Service is up.";

impl Health {
    pub fn client(&self) -> Result<reqwest::Client, HealthError> {
        let trust = crate::adapters::http::Trust {
            ca_file: self.ca_file.as_deref(),
            pin: self.pin.as_ref(),
        };
        crate::adapters::http::client(self.request_timeout, self.request_timeout, trust).map_err(HealthError::Setup)
    }

    /// One probe: Ok(()) if healthy, else what the endpoint said.
    pub async fn probe(&self, client: &reqwest::Client) -> Result<(), NotUp> {
        let resp = client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| NotUp(crate::adapters::http::error_chain(&e)))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() && body.contains(UP_BODY) {
            Ok(())
        } else {
            let snippet: String = body.chars().take(80).collect();
            Err(NotUp(format!("HTTP {status}: {:?}", snippet.trim())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_endpoint_is_not_healthy() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A port nothing listens on (bound then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let h = Health {
            url: format!("http://127.0.0.1:{port}/cloud/server_status"),
            ca_file: None,
            pin: None,
            request_timeout: Duration::from_secs(5),
            interval: Duration::from_millis(10),
        };
        let c = h.client().unwrap();
        assert!(rt.block_on(h.probe(&c)).is_err());
    }
}
