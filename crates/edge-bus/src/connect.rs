//! Connecting to a NATS server with the options every component wants.

use std::time::Duration;

/// Errors of the bus layer that callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("JetStream {what} failed: {source}")]
    JetStream {
        what: String,
        #[source]
        source: async_nats::Error,
    },
}

impl BusError {
    pub fn js(what: impl Into<String>, source: impl Into<async_nats::Error>) -> Self {
        BusError::JetStream { what: what.into(), source: source.into() }
    }
}

/// Connects as `name`. When `wait` is true the first connection is retried until the server
/// is up (a site-manager that boots before its leaf server); otherwise a down server is an error.
pub async fn connect(url: &str, name: &str, wait: bool) -> Result<async_nats::Client, BusError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)));
    if wait {
        opts = opts.retry_on_initial_connect();
    }
    opts.connect(url).await.map_err(|source| BusError::Connect { url: url.to_string(), source })
}
