//! secrets binary: parse configuration, set up logging, run until SIGTERM/SIGINT.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = secrets::Config::parse();
    let _traces = edge_bus::logging::init("secrets", "info");
    let shutdown = edge_bus::shutdown::on_signal();
    secrets::run(config, shutdown).await?;
    Ok(())
}
