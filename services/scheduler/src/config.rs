//! Configuration of the scheduler, from flags or `SCHEDULER_*` environment variables.

use std::time::Duration;

use edge_types::selector::LabelOrders;

/// scheduler: accepts applications, places them on sites by label, and writes each site's
/// desired state.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "scheduler", version)]
pub struct Config {
    /// URL of the hub NATS server.
    #[arg(long, env = "SCHEDULER_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Seconds between full placement passes over every app (a safety net; applies, deletes,
    /// registrations and label changes place at once).
    #[arg(long, env = "SCHEDULER_RESYNC_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub resync_secs: u64,
    /// A site is shown as connected while its last heartbeat is younger than this many seconds.
    #[arg(long, env = "SCHEDULER_SITE_TIMEOUT_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub site_timeout_secs: u64,
    /// Orders of label values that placement may compare, e.g.
    /// `size=small<medium<large;tier=bronze<silver<gold` (then `size >= medium` means medium or
    /// large).
    #[arg(long, env = "SCHEDULER_LABEL_ORDERS", default_value = "", value_parser = LabelOrders::parse)]
    pub label_orders: LabelOrders,
}

impl Config {
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self { nats_url: nats_url.into(), resync_secs: 30, site_timeout_secs: 15, label_orders: LabelOrders::default() }
    }
    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_secs)
    }
}
