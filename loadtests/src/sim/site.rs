//! One simulated site: its own NATS connection to the hub, the site-manager's own decision code
//! (validation of each desired state, placement onto the site's host, reconcile plan, status
//! report and merge) over a simulated container runtime. What a real site does through its
//! leaf server (desired state sourced in, events sourced out) it does straight on the hub: an
//! ordered consumer of the hub's DESIRED filtered to the site, and status reports published
//! to the bridge stream that the hub's SITE_EVENTS sources.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use edge_bus::topology;
use edge_types::cluster::Assignment;
use edge_types::desired::DesiredApp;
use edge_types::site::HostInventory;
use edge_types::status::{AppStatusReport, Phase};
use edge_types::{subject, Name};
use futures::StreamExt;
use site_manager::cluster::assign::assign;
use site_manager::desired::{accept, Incoming};
use site_manager::reconcile::{gate_secrets, plan, wanted, Action};
use site_manager::status::{build, merge, Facts};
use tokio_util::sync::CancellationToken;

use super::runtime::SimRuntime;
use super::{Progress, EVENTS_PREFIX};

pub struct SimSite {
    pub name: Name,
    host: HostInventory,
    client: async_nats::Client,
    js: jetstream::Context,
    desired: BTreeMap<Name, DesiredApp>,
    assignments: BTreeMap<Name, Assignment>,
    runtime: SimRuntime,
    /// The last report published per app.
    published: HashMap<Name, AppStatusReport>,
    progress: Arc<Progress>,
}

impl SimSite {
    pub fn new(
        name: Name,
        host: HostInventory,
        client: async_nats::Client,
        start_delay: Duration,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            js: topology::hub_js(&client),
            name,
            host,
            client,
            desired: BTreeMap::new(),
            assignments: BTreeMap::new(),
            runtime: SimRuntime::new(start_delay),
            published: HashMap::new(),
            progress,
        }
    }

    /// Follows the site's desired state until `shutdown`, re-subscribing after errors.
    pub async fn run(mut self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(e) = self.follow_once(&shutdown).await {
                tracing::warn!(site = %self.name, error = %e, "simulated site lost its desired-state consumer");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    async fn follow_once(&mut self, shutdown: &CancellationToken) -> Result<(), async_nats::Error> {
        let stream = self.js.get_stream_no_info(topology::desired_stream_of(&self.name)).await?;
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: subject::desired_for_site(&self.name),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await?;
        self.progress.following.fetch_add(1, Ordering::Relaxed);
        let mut messages = consumer.messages().await?;
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                m = messages.next() => match m {
                    Some(m) => m?,
                    None => return Ok(()),
                },
            };
            match accept(&self.name, &msg.subject, &msg.payload) {
                Ok(Incoming::App(d)) => {
                    self.progress.received(&self.name, &d.app, d.generation);
                    self.desired.insert(d.app.clone(), *d);
                    self.reconcile().await;
                }
                // Watermarks, sealed secrets and re-key requests: nothing to simulate.
                Ok(_) => {}
                Err(reason) => {
                    self.progress.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(site = %self.name, subject = %msg.subject, %reason, "simulated site rejected a message");
                }
            }
        }
    }

    /// One reconcile pass of a one-host site: the leader's placement, the host's plan carried
    /// out by the simulated runtime, the host's report merged into the site's, published when
    /// it changed.
    async fn reconcile(&mut self) {
        let me = self.host.host.clone();
        self.assignments = assign(&me, &self.desired, std::slice::from_ref(&self.host), &self.assignments);
        let (mut wanted, held) = wanted(&self.desired, &self.assignments, &me);
        let waiting = gate_secrets(&mut wanted, &HashMap::new());
        let mut actions = plan(&wanted, &held, self.runtime.observed());
        actions.retain(|a| match a {
            Action::Create(w) | Action::Replace { wanted: w, .. } => {
                !waiting.contains_key(&(w.app.clone(), w.service.name.clone(), w.replica))
            }
            _ => true,
        });
        self.runtime.apply(actions).await;
        let facts = Facts { waiting, ..Default::default() };
        let hosts = build(&self.name, &me, &self.desired, &wanted, &held, self.runtime.observed(), &facts);
        let mut gone = Vec::new();
        for d in self.desired.values().filter(|d| !held.contains(&d.app)) {
            let mine: Vec<&AppStatusReport> = hosts.iter().filter(|r| r.app == d.app).collect();
            let report = merge(&self.name, d, self.assignments.get(&d.app), &mine);
            if report.phase == Phase::Removed {
                gone.push(d.app.clone());
            }
            let same = self.published.get(&d.app).is_some_and(|l| {
                l.generation == report.generation && l.phase == report.phase && l.containers == report.containers
            });
            if !same && self.publish(&report).await {
                self.published.insert(d.app.clone(), report);
            }
        }
        for app in gone {
            self.desired.remove(&app);
        }
    }

    /// Publishes a report to the bridge stream, acked, with the site-manager's message id;
    /// a few tries (the hub may be busy), then left for the next change.
    async fn publish(&self, r: &AppStatusReport) -> bool {
        let id = format!("status.{}.{}.{}.{}", r.site, r.app, r.generation, r.reported_at_ms);
        let body: bytes::Bytes = serde_json::to_vec(r).expect("reports serialize").into();
        let subject = format!("{EVENTS_PREFIX}.{}", subject::site_status(&r.site, &r.app));
        for attempt in 0..5 {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let sent = match self.js.publish_with_headers(subject.clone(), headers, body.clone()).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(site = %self.name, attempt, error = %e, "simulated status not stored");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        false
    }
}
