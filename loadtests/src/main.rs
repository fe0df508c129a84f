//! `make bench`: measures what the offline-first promise costs and how fast it recovers, beside
//! the ceiling of the same nats-server without our services, and prints one table.

mod catchup;
mod durability;
mod fleet;
mod footprint;
mod ingest;
mod placement;
mod procs;
mod report;
mod secrets;
mod sim;
mod staging;
mod storm;

use std::time::Duration;

use clap::Parser;

/// Scale benchmarks of the edge orchestrator.
#[derive(Parser, Debug)]
struct Args {
    /// Events buffered at the site during each WAN cut.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Cuts per catch-up scenario.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Events published per durability setting.
    #[arg(long, default_value_t = 20_000)]
    durability_events: u64,
    /// Leaf sites in the reconnect storm.
    #[arg(long, default_value_t = 50)]
    storm_sites: usize,
    /// Applications in the placement benchmark.
    #[arg(long, default_value_t = 1_000)]
    placement_apps: usize,
    /// Sites in the placement benchmark.
    #[arg(long, default_value_t = 10_000)]
    placement_sites: usize,
    /// Publish acks outstanding while writing desired state (and in its raw ceiling).
    #[arg(long, default_value_t = scheduler::writer::DesiredWriter::DEFAULT_WINDOW)]
    placement_window: usize,
    /// Simulated sites a rotated secret propagates to.
    #[arg(long, default_value_t = 1_000)]
    secret_sites: usize,
    /// Rotations measured.
    #[arg(long, default_value_t = 20)]
    secret_rounds: usize,
    /// Simulated sites sending telemetry.
    #[arg(long, default_value_t = 1_000)]
    ingest_sites: usize,
    /// Telemetry samples sent.
    #[arg(long, default_value_t = 200_000)]
    ingest_messages: u64,
    /// Sites an image is staged to.
    #[arg(long, default_value_t = 20)]
    staging_sites: usize,
    /// Size of the staged image, MB.
    #[arg(long, default_value_t = 50)]
    staging_mb: usize,
    /// Fleet sizes (simulated sites) a change is rolled out to, smallest first.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000])]
    fleet_sites: Vec<usize>,
    /// Real leaf sites (leaf nats-server and site-manager, real containers) beside them.
    #[arg(long, default_value_t = 3)]
    fleet_leaf_sites: usize,
    /// Simulated time a container takes to start at a simulated site, ms.
    #[arg(long, default_value_t = 0)]
    fleet_start_ms: u64,
    /// Seconds between a simulated site's heartbeats.
    #[arg(long, default_value_t = 5)]
    fleet_heartbeat_secs: u64,
    /// Containers the site-manager runs in the footprint scenario.
    #[arg(long, default_value_t = 20)]
    footprint_containers: u32,
    /// Seconds the site-manager settles before its memory is read.
    #[arg(long, default_value_t = 15)]
    footprint_settle_secs: u64,
    /// Run only the scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _traces = edge_bus::logging::init("loadtests", "warn");
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    let mut table = report::Table::default();
    if wanted("catchup") {
        let raw = catchup::run(args.events, args.rounds, false).await?;
        let ours = catchup::run(args.events, args.rounds, true).await?;
        table.catchup(args.events, &ours, &raw);
    }
    if wanted("durability") {
        let always = durability::run(args.durability_events, true).await?;
        let default = durability::run(args.durability_events, false).await?;
        table.durability(args.durability_events, always, default);
    }
    if wanted("storm") {
        let s = storm::run(args.storm_sites).await?;
        table.storm(args.storm_sites, &s);
    }
    if wanted("placement") {
        let p = placement::run(args.placement_apps, args.placement_sites, args.placement_window).await?;
        table.placement(&p);
    }
    if wanted("ingest") {
        let r = ingest::run(args.ingest_sites, args.ingest_messages).await?;
        table.ingest(&r);
    }
    if wanted("secrets") {
        let s = secrets::run(args.secret_sites, args.secret_rounds).await?;
        table.secrets(&s);
    }
    if wanted("rollout") {
        let opts = sim::FleetOptions {
            heartbeat: Duration::from_secs(args.fleet_heartbeat_secs.max(1)),
            start_delay: Duration::from_millis(args.fleet_start_ms),
        };
        let mut runs = Vec::new();
        for &n in &args.fleet_sites {
            let r = fleet::run(n, args.fleet_leaf_sites, opts).await?;
            let target = match n {
                1_000 => Some(Duration::from_secs(1)),
                10_000 => Some(Duration::from_secs(5)),
                _ => None,
            };
            table.fleet(&r, target);
            runs.push(r);
        }
        if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
            table.central_memory(first, last);
        }
    }
    if wanted("footprint") {
        let f = footprint::run(args.footprint_containers, Duration::from_secs(args.footprint_settle_secs)).await?;
        table.footprint(&f);
    }
    if wanted("staging") {
        let s = staging::run(args.staging_sites, args.staging_mb).await?;
        table.staging(&s);
    }
    table.print();
    Ok(())
}
