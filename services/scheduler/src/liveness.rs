//! Which sites are connected: heartbeats (core NATS, not stored) tell when each site was last
//! heard from and how full its event buffer is.

use std::sync::Arc;

use dashmap::DashMap;
use edge_types::schema::decode;
use edge_types::site::{BufferState, Heartbeat};
use edge_types::subject::{self, Subject};
use edge_types::Name;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::SchedulerError;

/// What the last heartbeat of a site said.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    /// Hub clock when it arrived, ms since the Unix epoch.
    pub last_seen_ms: u64,
    /// Start of the current run of heartbeats (hub clock), i.e. when the site last reconnected.
    pub connected_since_ms: u64,
    /// The site's heartbeat interval, as it announced it.
    pub interval_ms: u64,
    pub leaf_recoveries: u64,
    pub secrets_refused: u64,
    pub buffer: Option<BufferState>,
}

/// Liveness by site.
#[derive(Clone)]
pub struct LivenessMap {
    sites: Arc<DashMap<Name, Liveness>>,
    timeout_ms: u64,
}

impl LivenessMap {
    /// A site counts as connected while its last heartbeat is younger than `timeout`.
    pub fn new(timeout: std::time::Duration) -> Self {
        Self { sites: Arc::new(DashMap::new()), timeout_ms: timeout.as_millis() as u64 }
    }

    pub fn get(&self, site: &Name) -> Liveness {
        self.sites.get(site).map(|l| l.clone()).unwrap_or_default()
    }

    fn fresh(&self, seen_ms: u64, now_ms: u64) -> bool {
        seen_ms > 0 && now_ms.saturating_sub(seen_ms) < self.timeout_ms
    }

    /// Whether the site's heartbeats are arriving.
    pub fn connected(&self, site: &Name) -> bool {
        self.fresh(self.get(site).last_seen_ms, edge_bus::time::now_ms())
    }

    /// How long the site has been connected without a gap, if its last heartbeat is no later
    /// than its own interval promises (stricter than [`LivenessMap::connected`], which allows
    /// for several missed beats before calling a site disconnected).
    pub fn connected_for(&self, site: &Name) -> Option<std::time::Duration> {
        let l = self.get(site);
        let now = edge_bus::time::now_ms();
        let promised = if l.interval_ms > 0 { 2 * l.interval_ms + 500 } else { self.timeout_ms };
        let on_time = l.last_seen_ms > 0 && now.saturating_sub(l.last_seen_ms) < promised;
        on_time.then(|| std::time::Duration::from_millis(now.saturating_sub(l.connected_since_ms)))
    }

    /// Records heartbeats until shutdown. When this process reconnects to the hub, what it knew
    /// is forgotten: heartbeats were missed meanwhile, so only new ones say who is connected.
    pub async fn follow(
        self,
        client: async_nats::Client,
        mut reconnects: tokio::sync::watch::Receiver<u64>,
        shutdown: CancellationToken,
    ) -> Result<(), SchedulerError> {
        let mut sub = client.subscribe(subject::heartbeat_all()).await.map_err(SchedulerError::js)?;
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = reconnects.changed() => {
                    self.sites.clear();
                    continue;
                }
                m = sub.next() => match m { Some(m) => m, None => return Ok(()) },
            };
            match (subject::parse(&msg.subject), decode::<Heartbeat>(&msg.payload)) {
                (Ok(Subject::Heartbeat { site }), Ok(hb)) if hb.site == site => {
                    let now = edge_bus::time::now_ms();
                    let previous = self.get(&site);
                    let since = if self.fresh(previous.last_seen_ms, now) { previous.connected_since_ms } else { now };
                    let live = Liveness {
                        last_seen_ms: now,
                        connected_since_ms: since,
                        interval_ms: hb.interval_ms,
                        leaf_recoveries: hb.leaf_recoveries,
                        secrets_refused: hb.secrets_refused,
                        buffer: hb.buffer,
                    };
                    self.sites.insert(site, live);
                }
                _ => tracing::debug!(subject = %msg.subject, "ignoring malformed heartbeat"),
            }
        }
    }
}
