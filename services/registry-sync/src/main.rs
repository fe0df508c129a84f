//! registry-sync binary: parse configuration, set up logging, run until SIGTERM/SIGINT.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = registry_sync::Config::parse();
    let _traces = edge_bus::logging::init("registry-sync", "info");
    let shutdown = edge_bus::shutdown::on_signal();
    registry_sync::run(config, shutdown).await?;
    Ok(())
}
