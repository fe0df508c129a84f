//! Connecting to a NATS server with the options every component wants.

use std::path::PathBuf;
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
    /// The credentials file cannot be read (the reason never holds its content).
    #[error("cannot read credentials {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
    /// An account update was not accepted by the hub's resolver.
    #[error("{0}")]
    Claims(String),
    /// The server holds streams of an older layout that this version cannot use as they are.
    #[error("{0}")]
    Layout(String),
}

impl BusError {
    pub fn js(what: impl Into<String>, source: impl Into<async_nats::Error>) -> Self {
        BusError::JetStream { what: what.into(), source: source.into() }
    }
}

/// Where and as whom to connect.
#[derive(Clone, Debug, Default)]
pub struct Endpoint {
    pub url: String,
    /// Credentials file (user JWT and seed) issued by the authority (`edgectl auth`).
    pub creds: Option<PathBuf>,
    /// Prefix of reply subjects; a site's clients use the site's own
    /// (`edge_types::subject::site_inbox_prefix`), which its leaf link may receive.
    pub inbox_prefix: Option<String>,
    /// Connect over TLS only, verifying the server's certificate against this CA certificate
    /// (PEM): a site dialling the hub's client port across the WAN (`ca.pem` of its bundle).
    pub tls_ca: Option<PathBuf>,
}

impl Endpoint {
    pub fn new(url: impl Into<String>, creds: Option<PathBuf>) -> Self {
        Self { url: url.into(), creds, inbox_prefix: None, tls_ca: None }
    }

    /// The same endpoint, over TLS verified against `ca` (none: as it was).
    pub fn with_tls_ca(self, ca: Option<PathBuf>) -> Self {
        Self { tls_ca: ca.or(self.tls_ca), ..self }
    }
}

/// Connects as `name`. When `wait` is true the first connection is retried until the server
/// is up (a site-manager that boots before its leaf server); otherwise a down server is an error.
pub async fn connect(to: &Endpoint, name: &str, wait: bool) -> Result<async_nats::Client, BusError> {
    connect_with(to, name, wait, async_nats::ConnectOptions::new()).await
}

/// Like [`connect`], also counting (re)connections: the receiver changes each time the client
/// (re)connects, so state learned from core NATS while disconnected can be reset.
pub async fn connect_observed(
    to: &Endpoint,
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
    Ok((connect_with(to, name, wait, opts).await?, rx))
}

async fn connect_with(
    to: &Endpoint,
    name: &str,
    wait: bool,
    mut opts: async_nats::ConnectOptions,
) -> Result<async_nats::Client, BusError> {
    let url = to.url.as_str();
    if let Some(path) = &to.creds {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|source| BusError::Credentials { path: path.clone(), reason: source.to_string() })?;
    }
    if let Some(prefix) = &to.inbox_prefix {
        opts = opts.custom_inbox_prefix(prefix);
    }
    if let Some(ca) = &to.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    let mut opts = opts
        .name(name)
        .max_reconnects(None)
        .reconnect_delay_callback(crate::backoff::reconnect_delay)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)));
    if wait {
        opts = opts.retry_on_initial_connect();
    }
    opts.connect(url).await.map_err(|source| BusError::Connect { url: url.to_string(), source })
}
