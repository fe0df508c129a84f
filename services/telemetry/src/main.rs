//! telemetry binary: parse configuration, set up logging, run until SIGTERM/SIGINT.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = telemetry::Config::parse();
    let _traces = edge_bus::logging::init("telemetry", "info");
    let shutdown = edge_bus::shutdown::on_signal();
    telemetry::run(config, shutdown).await?;
    Ok(())
}
