//! scheduler binary: parse configuration, set up logging, run until SIGTERM/SIGINT.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = scheduler::Config::parse();
    let _traces = edge_bus::logging::init("scheduler", "info");
    let shutdown = edge_bus::shutdown::on_signal();
    scheduler::run(config, shutdown).await?;
    Ok(())
}
