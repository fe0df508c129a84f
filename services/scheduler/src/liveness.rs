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
    pub buffer: Option<BufferState>,
}

/// Liveness by site.
#[derive(Clone, Default)]
pub struct LivenessMap(Arc<DashMap<Name, Liveness>>);

impl LivenessMap {
    pub fn get(&self, site: &Name) -> Liveness {
        self.0.get(site).map(|l| l.clone()).unwrap_or_default()
    }

    /// Heard from within `timeout_ms`.
    pub fn connected(&self, site: &Name, timeout_ms: u64) -> bool {
        let seen = self.get(site).last_seen_ms;
        seen > 0 && edge_bus::time::now_ms().saturating_sub(seen) < timeout_ms
    }

    /// Records heartbeats until shutdown.
    pub async fn follow(self, client: async_nats::Client, shutdown: CancellationToken) -> Result<(), SchedulerError> {
        let mut sub = client.subscribe(subject::heartbeat_all()).await.map_err(SchedulerError::js)?;
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                m = sub.next() => match m { Some(m) => m, None => return Ok(()) },
            };
            match (subject::parse(&msg.subject), decode::<Heartbeat>(&msg.payload)) {
                (Ok(Subject::Heartbeat { site }), Ok(hb)) if hb.site == site => {
                    self.0.insert(site, Liveness { last_seen_ms: edge_bus::time::now_ms(), buffer: hb.buffer });
                }
                _ => tracing::debug!(subject = %msg.subject, "ignoring malformed heartbeat"),
            }
        }
    }
}
