//! The cost of the site leaf's durability choice: acknowledged publishes per second into the
//! site's event stream with `sync_interval: always` (every acked write is on disk) against the
//! server's default (fsync every 2 minutes, which lost acknowledged writes under power loss in
//! Jepsen's 2025 analysis).

use std::time::Instant;

use anyhow::Result;
use async_nats::jetstream;
use edge_bus::natsconf;
use edge_testkit::NatsServer;
use edge_types::Name;

/// Acked publishes per second.
pub async fn run(events: u64, sync_always: bool) -> Result<f64> {
    let interval = if sync_always { natsconf::LEAF_SYNC_INTERVAL } else { "2m" };
    let site = Name::site(if sync_always { "sync-always" } else { "sync-default" })?;
    // No hub: the leaf keeps trying to dial it, which changes nothing here.
    let overrides = [("LEAF_SYNC_INTERVAL", interval)];
    let leaf = NatsServer::leaf_with(site.as_str(), None, "nats-leaf://127.0.0.1:1", &overrides).await?;
    let js = jetstream::with_domain(leaf.connect().await?, site.as_str());
    edge_bus::topology::ensure_site(&js, &site, &Default::default()).await?;
    let start = Instant::now();
    crate::catchup::publish(&js, &site, 0, events).await?;
    Ok(events as f64 / start.elapsed().as_secs_f64())
}
