//! registry-sync: Replicates the container images each site needs into the site's own store.
//!
//! This release registers the service on the NATS service API (`$SRV.PING`, `$SRV.INFO`,
//! `$SRV.STATS`) and answers `edge.v1.registry-sync.health`; its capabilities land in later releases.

use tokio_util::sync::CancellationToken;

/// Version announced on the NATS service API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Configuration, from flags or `REGISTRY_SYNC_*` environment variables.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "registry-sync", version)]
pub struct Config {
    /// URL of the hub NATS server.
    #[arg(
        long,
        env = "REGISTRY_SYNC_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
}

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Bus(#[from] edge_bus::BusError),
    #[error("service API: {0}")]
    Service(String),
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServiceError> {
    let client = edge_bus::connect(&config.nats_url, "registry-sync", true).await?;
    tracing::info!("registry-sync ready");
    edge_bus::health::serve_health(
        &client,
        "registry-sync",
        VERSION,
        "Replicates the container images each site needs into the site's own store",
        shutdown,
    )
    .await
    .map_err(|e| ServiceError::Service(e.to_string()))?;
    let _ = client.flush().await;
    tracing::info!("registry-sync stopped");
    Ok(())
}
