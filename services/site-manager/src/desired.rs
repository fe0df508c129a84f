//! Follows the site's own DESIRED stream (in the site's JetStream domain), so the site knows its
//! desired state with the WAN down and after a cold boot. The hub's watermark for the site's
//! events travels in the same stream and purges the site's event buffer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, consumer};
use edge_bus::signal::Signal;
use edge_bus::topology::STREAM_DESIRED;
use edge_types::desired::{DesiredApp, EventsWatermark};
use edge_types::schema::decode;
use edge_types::secret::{SealedSecret, SiteRekey};
use edge_types::subject::{self, Subject};
use edge_types::Name;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::buffer::EventBuffer;

/// The latest desired state per app, shared with the reconcile loop.
pub type DesiredMap = Arc<Mutex<BTreeMap<Name, DesiredApp>>>;

/// Which of the site's hosts may run workloads, as the hub last said (`_hosts`: blocked ones,
/// and the approved ones when the site's host list is explicit): the leader assigns nothing to
/// the others and each of them stops what it runs. `None` until the hub said anything: all may.
pub type HostPolicy = Arc<Mutex<Option<edge_types::block::SiteHosts>>>;

/// Whether `host` may run workloads under `policy`.
pub fn admits(policy: &HostPolicy, host: &Name) -> bool {
    policy.lock().expect("host policy lock").as_ref().is_none_or(|p| p.admits(host))
}

/// Reads the site's DESIRED stream into [`DesiredMap`].
pub struct DesiredFollower {
    pub js: jetstream::Context,
    pub site: Name,
    pub desired: DesiredMap,
    pub changed: Signal,
    /// Turns true once everything stored at start has been read: until then the reconcile loop
    /// must not act, or it would remove containers whose desired state it has not read yet.
    pub loaded: watch::Sender<bool>,
    pub buffer: Arc<EventBuffer>,
    /// Messages rejected as malformed or addressed to another site.
    pub rejected: Arc<AtomicU64>,
    /// Where sealed secrets go.
    pub secrets: Arc<crate::secrets::SiteSecrets>,
    /// The latest key rotation the hub asked for.
    pub rekey: watch::Sender<u64>,
    /// The trace context each app's desired state came with.
    pub traces: Arc<crate::traces::AppTraces>,
    pub hosts: HostPolicy,
}

/// A message of the site's DESIRED stream.
pub enum Incoming {
    App(Box<DesiredApp>),
    Watermark(EventsWatermark),
    Secret(Box<SealedSecret>),
    Rekey(SiteRekey),
    Hosts(edge_types::block::SiteHosts),
}

impl DesiredFollower {
    /// Reads the stream from the start (it keeps one message per subject), then follows it.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(e) = self.follow_once(&shutdown).await {
                tracing::warn!(error = %e, "desired-state consumer failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }

    async fn follow_once(&self, shutdown: &CancellationToken) -> Result<(), async_nats::Error> {
        let mut stream = self.js.get_stream(STREAM_DESIRED).await?;
        if stream.info().await?.state.messages == 0 {
            self.loaded.send_replace(true);
        }
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                m = messages.next() => match m {
                    Some(m) => m?,
                    None => return Ok(()),
                },
            };
            let pending = msg.info().map(|i| i.pending).unwrap_or(0);
            match accept(&self.site, &msg.subject, &msg.payload) {
                Ok(Incoming::App(d)) => {
                    tracing::debug!(app = %d.app, generation = d.generation, removed = d.spec.is_none(), "desired state");
                    self.traces.record(&d.app, d.generation, msg.headers.as_ref());
                    self.desired.lock().expect("desired lock").insert(d.app.clone(), *d);
                    self.changed.raise();
                }
                Ok(Incoming::Rekey(r)) => {
                    self.rekey.send_if_modified(|cur| {
                        let newer = r.requested_at_ms > *cur;
                        if newer {
                            *cur = r.requested_at_ms;
                        }
                        newer
                    });
                }
                Ok(Incoming::Hosts(h)) => {
                    let mut policy = self.hosts.lock().expect("host policy lock");
                    let same = policy.as_ref().is_some_and(|p| p.blocked == h.blocked && p.allowed == h.allowed);
                    if !same {
                        tracing::info!(blocked = ?h.blocked, approved = ?h.allowed, "which hosts may run workloads changed");
                        *policy = Some(h);
                        self.changed.raise();
                    }
                }
                Ok(Incoming::Secret(e)) => {
                    if self.secrets.receive(*e).await == crate::secrets::Received::Changed {
                        self.changed.raise();
                    }
                }
                Ok(Incoming::Watermark(w)) => match self.buffer.purge_through(w.through).await {
                    Ok(n) => tracing::debug!(through = w.through, purged = n, "hub has processed site events"),
                    Err(e) => tracing::warn!(error = %e, "cannot purge processed events; next watermark retries"),
                },
                Err(reason) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(subject = %msg.subject, %reason, "rejected desired-state message");
                }
            }
            if pending == 0 && !*self.loaded.borrow() {
                self.loaded.send_replace(true);
                self.changed.raise();
            }
        }
    }
}

/// Validates a message of the DESIRED stream: schema, subject shape, and that subject and body
/// agree on the site and app (a message for another site is never acted on).
pub fn accept(site: &Name, subj: &str, payload: &[u8]) -> Result<Incoming, String> {
    match subject::parse(subj) {
        Ok(Subject::Desired { site: s, app }) => {
            let d = decode::<DesiredApp>(payload).map_err(|e| e.to_string())?;
            if &s != site || d.site != s || d.app != app || d.spec.as_ref().is_some_and(|spec| spec.name != app) {
                return Err("site or app in the message does not match its subject".into());
            }
            Ok(Incoming::App(Box::new(d)))
        }
        Ok(Subject::EventsWatermark { site: s }) => {
            let w = decode::<EventsWatermark>(payload).map_err(|e| e.to_string())?;
            if &s != site || w.site != s {
                return Err("site in the watermark does not match its subject".into());
            }
            Ok(Incoming::Watermark(w))
        }
        Ok(Subject::SealedSecret { site: s, tenant, name }) => {
            let e = decode::<SealedSecret>(payload).map_err(|e| e.to_string())?;
            if &s != site || e.site != s || e.tenant != tenant || e.name != name {
                return Err("site or secret in the envelope does not match its subject".into());
            }
            Ok(Incoming::Secret(Box::new(e)))
        }
        Ok(Subject::SiteRekey { site: s }) => {
            let r = decode::<SiteRekey>(payload).map_err(|e| e.to_string())?;
            if &s != site || r.site != s {
                return Err("site in the rotation request does not match its subject".into());
            }
            Ok(Incoming::Rekey(r))
        }
        Ok(Subject::SiteHosts { site: s }) => {
            let h = decode::<edge_types::block::SiteHosts>(payload).map_err(|e| e.to_string())?;
            if &s != site || h.site != s {
                return Err("site in the hosts record does not match its subject".into());
            }
            Ok(Incoming::Hosts(h))
        }
        _ => Err("not a desired-state subject".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_other_sites_and_mismatches() {
        let (me, other) = (Name::new("s1").unwrap(), Name::new("s2").unwrap());
        let (web, db) = (Name::new("web").unwrap(), Name::new("db").unwrap());
        let body = |site: &str, app: &str| {
            serde_json::to_vec(&serde_json::json!({"site": site, "app": app, "generation": 1, "spec": null})).unwrap()
        };
        let mine = subject::desired(&me, &web);
        assert!(matches!(accept(&me, &mine, &body("s1", "web")), Ok(Incoming::App(_))));
        assert!(accept(&me, &subject::desired(&other, &web), &body("s2", "web")).is_err());
        assert!(accept(&me, &subject::desired(&me, &db), &body("s1", "web")).is_err());
        assert!(accept(&me, &mine, b"{not json").is_err());
        // The subject shape from before the desired state was sharded.
        assert!(accept(&me, "edge.v1.desired.s1.web", &body("s1", "web")).is_err());
        let wm = |site: &str| serde_json::to_vec(&serde_json::json!({"site": site, "through": 7})).unwrap();
        let watermark = subject::events_watermark(&me);
        assert!(matches!(accept(&me, &watermark, &wm("s1")), Ok(Incoming::Watermark(_))));
        assert!(accept(&me, &watermark, &wm("s2")).is_err());
    }
}
