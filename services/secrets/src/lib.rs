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
    #[arg(
        long,
        env = "SECRETS_NATS_URL",
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
    let client = edge_bus::connect(&config.nats_url, "secrets", true).await?;
    tracing::info!("secrets ready");
    edge_bus::health::serve_health(
        &client,
        "secrets",
        VERSION,
        "Stores tenant secrets and delivers them sealed to the sites that need them",
        shutdown,
    )
    .await
    .map_err(|e| ServiceError::Service(e.to_string()))?;
    let _ = client.flush().await;
    tracing::info!("secrets stopped");
    Ok(())
}
