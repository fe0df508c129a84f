//! site-manager binary: parse configuration, set up logging, run until SIGTERM/SIGINT.

use clap::Parser;

/// Two runtime threads whatever the host's core count: the agent's work is light and waits on
/// I/O, and a fixed thread count keeps its memory the same on a Raspberry Pi and a 64-core server.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let config = site_manager::Config::parse();
    let _traces = edge_bus::logging::init("site-manager", "info");
    let shutdown = edge_bus::shutdown::on_signal();
    site_manager::run(config, shutdown).await?;
    Ok(())
}
