//! Reads the sites' telemetry as the hub's `TELEMETRY` stream receives it: the latest resource
//! sample of every host, and counts of container exits and OOM kills per site and per app.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use dashmap::DashMap;
use edge_bus::topology::STREAM_TELEMETRY;
use edge_types::schema::decode;
use edge_types::subject::{self, Subject};
use edge_types::telemetry::{HostStats, Lifecycle, LifecycleEvent};
use edge_types::Name;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Exits and OOM kills counted.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    pub exits: u64,
    pub ooms: u64,
}

/// What the sites reported.
#[derive(Clone, Default)]
pub struct Reported {
    /// Latest sample per (site, host).
    pub hosts: Arc<DashMap<(Name, Name), HostStats>>,
    pub by_site: Arc<DashMap<Name, Counts>>,
    pub by_app: Arc<DashMap<Name, Counts>>,
    /// Messages rejected as malformed or not matching their subject.
    pub rejected: Arc<std::sync::atomic::AtomicU64>,
    /// Messages read (taken or rejected).
    pub taken: Arc<std::sync::atomic::AtomicU64>,
}

impl Reported {
    fn take(&self, subj: &str, payload: &[u8]) -> Result<(), String> {
        match subject::parse(subj).map_err(|e| e.to_string())? {
            Subject::HostStats { site, host } => {
                let s = decode::<HostStats>(payload).map_err(|e| e.to_string())?;
                if s.site != site || s.host != host {
                    return Err("site or host does not match the subject".into());
                }
                self.hosts.insert((site, host), s);
            }
            Subject::Lifecycle { site, host } => {
                let e = decode::<LifecycleEvent>(payload).map_err(|e| e.to_string())?;
                if e.site != site || e.host != host {
                    return Err("site or host does not match the subject".into());
                }
                let bump = |c: &mut Counts| match e.event {
                    Lifecycle::Exit => c.exits += 1,
                    Lifecycle::Oom => c.ooms += 1,
                    _ => {}
                };
                bump(&mut self.by_site.entry(site).or_default());
                bump(&mut self.by_app.entry(e.app.clone()).or_default());
            }
            other => return Err(format!("not a telemetry subject: {other:?}")),
        }
        Ok(())
    }

    /// Follows the hub's TELEMETRY until shutdown (the last message of each subject first).
    pub async fn follow(self, js: jetstream::Context, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(e) = self.follow_once(&js, &shutdown).await {
                tracing::warn!(error = %e, "telemetry consumer failed; retrying");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn follow_once(
        &self,
        js: &jetstream::Context,
        shutdown: &CancellationToken,
    ) -> Result<(), async_nats::Error> {
        let stream = js.get_stream(STREAM_TELEMETRY).await?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                filter_subject: subject::telemetry_all(),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                m = messages.next() => match m { Some(m) => m?, None => return Ok(()) },
            };
            self.taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(reason) = self.take(&msg.subject, &msg.payload) {
                self.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(subject = %msg.subject, %reason, "rejected a telemetry message");
            }
        }
    }
}
