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

/// This machine's id for `host` of `site`: random, made at the first start and kept next to
/// the host's key (`<site>-<host>.instance` in `dir`), so a restart keeps it and another
/// machine under the same host name has another.
pub fn instance_id(dir: &std::path::Path, site: &edge_types::Name, host: &edge_types::Name) -> Result<String, String> {
    let path = dir.join(format!("{site}-{host}.instance"));
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_string());
    }
    let id = edge_auth::leaf::new_token().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(&path, &id).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(id)
}

/// Host ids two machines beat under at once. Each host rewrites its entry every beat with its
/// machine's id; one change of id is a host swapped for another machine, but changes that keep
/// coming (twice within `window`) are two machines claiming one name: that host id is rejected
/// until its id has been steady for `window`.
pub struct Duplicates {
    window: Duration,
    /// Per host: the id last seen and when it changed, most recent last.
    seen: std::collections::HashMap<edge_types::Name, (String, Vec<std::time::Instant>)>,
}

impl Duplicates {
    pub fn new(window: Duration) -> Self {
        Self { window, seen: Default::default() }
    }

    /// Records that `host` beat with machine id `instance` (entries without one are ignored).
    pub fn observe(&mut self, host: &edge_types::Name, instance: &str) {
        self.observe_at(host, instance, std::time::Instant::now())
    }

    fn observe_at(&mut self, host: &edge_types::Name, instance: &str, now: std::time::Instant) {
        if instance.is_empty() {
            return;
        }
        let entry = self.seen.entry(host.clone()).or_insert_with(|| (instance.to_string(), Vec::new()));
        if entry.0 != instance {
            entry.0 = instance.to_string();
            entry.1.push(now);
        }
        let window = self.window;
        entry.1.retain(|t| now.duration_since(*t) < window);
    }

    /// The host ids whose machine id changed at least twice within the window.
    pub fn current(&self) -> std::collections::BTreeSet<edge_types::Name> {
        self.current_at(std::time::Instant::now())
    }

    fn current_at(&self, now: std::time::Instant) -> std::collections::BTreeSet<edge_types::Name> {
        self.seen
            .iter()
            .filter(|(_, (_, changes))| changes.iter().filter(|t| now.duration_since(**t) < self.window).count() >= 2)
            .map(|(h, _)| h.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_swap_is_not_a_duplicate_but_two_machines_under_one_name_are() {
        let h = edge_types::Name::new("h2").unwrap();
        let mut d = Duplicates::new(Duration::from_secs(10));
        let t0 = Instant::now();
        d.observe_at(&h, "A", t0);
        d.observe_at(&h, "A", t0 + Duration::from_secs(1));
        // The machine is swapped: one change.
        d.observe_at(&h, "B", t0 + Duration::from_secs(2));
        assert!(d.current_at(t0 + Duration::from_secs(3)).is_empty());
        // Two machines alternate.
        d.observe_at(&h, "A", t0 + Duration::from_secs(4));
        assert!(d.current_at(t0 + Duration::from_secs(5)).contains(&h));
        // One is gone: steady again after the window.
        d.observe_at(&h, "A", t0 + Duration::from_secs(9));
        assert!(d.current_at(t0 + Duration::from_secs(15)).is_empty());
    }
}
