//! site-manager binary: parse configuration, set up logging, run until SIGTERM/SIGINT.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = site_manager::Config::parse();
    let _traces = edge_bus::logging::init("site-manager", "info");
    let shutdown = edge_bus::shutdown::on_signal();
    site_manager::run(config, shutdown).await?;
    Ok(())
}
