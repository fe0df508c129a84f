//! telemetry: the fleet's health as Prometheus metrics. It follows the hub's record of sites,
//! applications and status reports, every site's heartbeats (buffer fill, refusals, leaf
//! recoveries), the hub's sourcing of site events (catch-up lag) and the services' own
//! request statistics, and serves them at `/metrics`.

pub mod fleet;
pub mod http;
pub mod metrics;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Version announced on the NATS service API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const NAME: &str = "telemetry";

/// Configuration, from flags or `TELEMETRY_*` environment variables.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "telemetry", version)]
pub struct Config {
    /// URL of the hub NATS server.
    #[arg(long, env = "TELEMETRY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Address of the Prometheus endpoint (`/metrics`).
    #[arg(long, env = "TELEMETRY_LISTEN", default_value = "127.0.0.1:9464")]
    pub listen: String,
    /// A site counts as connected while its last heartbeat is younger than this many seconds.
    #[arg(long, env = "TELEMETRY_SITE_TIMEOUT_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub site_timeout_secs: u64,
    /// Most sites given their own series; the rest count in the fleet totals only.
    #[arg(long, env = "TELEMETRY_MAX_SITES", default_value_t = 10_000)]
    pub max_sites: usize,
}

impl Config {
    pub fn new(nats_url: impl Into<String>, listen: impl Into<String>) -> Self {
        Self { nats_url: nats_url.into(), listen: listen.into(), site_timeout_secs: 15, max_sites: 10_000 }
    }
}

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Bus(#[from] edge_bus::BusError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), TelemetryError> {
    let (listener, addr) = http::bind(&config.listen)
        .await
        .map_err(|source| TelemetryError::Listen { addr: config.listen.clone(), source })?;
    let client = edge_bus::connect(&config.nats_url, NAME, true).await?;
    let js = edge_bus::topology::hub_js(&client);
    let buckets = edge_bus::topology::ensure_hub(&js).await?;
    let fleet = fleet::Fleet::follow(
        client.clone(),
        buckets,
        Duration::from_secs(config.site_timeout_secs),
        config.max_sites,
        shutdown.clone(),
    )
    .await
    .map_err(|e| edge_bus::BusError::js("subscribe to heartbeats", e))?;
    let f = fleet.clone();
    let server = tokio::spawn(http::serve(
        listener,
        move || {
            let f = f.clone();
            async move { metrics::render(&f.snapshot().await) }
        },
        shutdown.clone(),
    ));
    tracing::info!(%addr, "telemetry ready: metrics at http://{addr}/metrics");
    let description = "Serves the fleet's health as Prometheus metrics";
    let health = edge_bus::health::serve_health(&client, NAME, VERSION, description, shutdown.clone()).await;
    use edge_bus::shutdown::bounded;
    bounded("metrics endpoint", server).await;
    bounded("flushing", client.flush()).await;
    health.map_err(|e| edge_bus::BusError::js("service API", e))?;
    tracing::info!("telemetry stopped");
    Ok(())
}
