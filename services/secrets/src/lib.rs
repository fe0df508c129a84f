//! secrets: Stores tenant secrets and delivers them sealed to the sites that need them.
//!
//! This release registers the service on the NATS service API (`$SRV.PING`, `$SRV.INFO`,
//! `$SRV.STATS`) and answers `edge.v1.secrets.health`; its capabilities land in later releases.

use tokio_util::sync::CancellationToken;

/// Version announced on the NATS service API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Configuration, from flags or `SECRETS_*` environment variables.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "secrets", version)]
pub struct Config {
    /// URL of the hub NATS server.
    #[arg(long, env = "SECRETS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), edge_bus::BusError> {
    let description = "Stores tenant secrets and delivers them sealed to the sites that need them";
    edge_bus::health::run_health_only(&config.nats_url, "secrets", VERSION, description, shutdown).await
}
