//! edgectl: the command-line client of the edge orchestrator.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = edgectl::cli::Cli::parse();
    if let Err(e) = edgectl::run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
