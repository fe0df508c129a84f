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
    #[arg(long, env = "REGISTRY_SYNC_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), edge_bus::BusError> {
    let description = "Replicates the container images each site needs into the site's own store";
    edge_bus::health::run_health_only(&config.nats_url, "registry-sync", VERSION, description, shutdown).await
}
