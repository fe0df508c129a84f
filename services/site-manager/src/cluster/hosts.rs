//! The host table: each host rewrites its entry every beat; a host whose entry this process has
//! not seen change for `dead_after` is presumed down (judged by the local clock only).

use std::time::Duration;

use async_nats::jetstream::kv::Store;
use edge_types::cluster::HostState;
use edge_types::site::HostInventory;
use tokio_util::sync::CancellationToken;

use super::ClusterView;

/// Rewrites this host's entry every `every`.
pub struct HostBeat {
    pub kv: Store,
    pub state: HostState,
    pub every: Duration,
}

impl HostBeat {
    pub async fn run(self, shutdown: CancellationToken) {
        let key = self.state.inventory.host.to_string();
        let body: Vec<u8> = serde_json::to_vec(&self.state).expect("host state serializes");
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.kv.put(&key, body.clone().into()).await {
                tracing::debug!(error = %e, "host beat not stored");
            }
        }
    }
}

/// The hosts that beat within `dead_after`, sorted by name.
pub fn live(view: &ClusterView, dead_after: Duration) -> Vec<HostInventory> {
    view.hosts.snapshot().into_values().filter(|e| e.seen.elapsed() < dead_after).map(|e| e.value.inventory).collect()
}
