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
    /// The server holds streams of an older layout that this version cannot use as they are.
    #[error("{0}")]
    Layout(String),
}

impl BusError {
    pub fn js(what: impl Into<String>, source: impl Into<async_nats::Error>) -> Self {
        BusError::JetStream { what: what.into(), source: source.into() }
    }
}

/// Connects as `name`. When `wait` is true the first connection is retried until the server
/// is up (a site-manager that boots before its leaf server); otherwise a down server is an error.
pub async fn connect(url: &str, name: &str, wait: bool) -> Result<async_nats::Client, BusError> {
    connect_with(url, name, wait, async_nats::ConnectOptions::new()).await
}

/// Like [`connect`], also counting (re)connections: the receiver changes each time the client
/// (re)connects, so state learned from core NATS while disconnected can be reset.
pub async fn connect_observed(
    url: &str,
    name: &str,
    wait: bool,
) -> Result<(async_nats::Client, tokio::sync::watch::Receiver<u64>), BusError> {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let tx = std::sync::Arc::new(tx);
    let opts = async_nats::ConnectOptions::new().event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if matches!(event, async_nats::Event::Connected) {
                tx.send_modify(|n| *n += 1);
            }
        }
    });
    Ok((connect_with(url, name, wait, opts).await?, rx))
}

async fn connect_with(
    url: &str,
    name: &str,
    wait: bool,
    opts: async_nats::ConnectOptions,
) -> Result<async_nats::Client, BusError> {
    let mut opts = opts
        .name(name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)));
    if wait {
        opts = opts.retry_on_initial_connect();
    }
    opts.connect(url).await.map_err(|source| BusError::Connect { url: url.to_string(), source })
}
