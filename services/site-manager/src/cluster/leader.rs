//! What the site's leader does while it leads: assign replicas to live hosts, merge the hosts'
//! status into the site's, and keep the hub's record of the site's hosts current.

use std::collections::BTreeMap;
use std::time::Duration;

use edge_bus::signal::Waiter;
use edge_types::cluster::Assignment;
use edge_types::site::{LabelValue, SiteRegistration};
use edge_types::status::AppStatusReport;
use edge_types::Name;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{assign, hosts, ClusterView};
use crate::desired::DesiredMap;
use crate::status::{merge, StatusPublisher};

/// The leader's loop; idle while this host does not lead.
pub struct Leader {
    pub site: Name,
    pub me: Name,
    pub view: ClusterView,
    pub desired: DesiredMap,
    pub desired_loaded: watch::Receiver<bool>,
    pub leading: watch::Receiver<bool>,
    pub changed: Waiter,
    pub dead_after: Duration,
    pub publisher: StatusPublisher,
    /// The site's registration as the leader sees it, for the registrar.
    pub registration: watch::Sender<Option<SiteRegistration>>,
    pub site_labels: BTreeMap<String, LabelValue>,
    /// This host's inventory: live by definition, also before its first beat is read back.
    pub own: edge_types::site::HostInventory,
    /// The site's public key once this host holds the site key; registered for sealing.
    pub public_key: tokio::sync::watch::Receiver<Option<String>>,
    /// Which hosts may run workloads (the hub's `_hosts`): nothing is assigned to the others,
    /// so their workloads move.
    pub hosts: crate::desired::HostPolicy,
    /// Host ids two machines beat under: rejected too.
    pub duplicates: hosts::Duplicates,
}

impl Leader {
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.leading.wait_for(|l| *l) => {}
            }
            // A new term: act only on complete state, and publish everything once.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = async {
                    let _ = self.desired_loaded.wait_for(|l| *l).await;
                    self.view.hosts.loaded().await;
                    self.view.assignments.loaded().await;
                    self.view.host_status.loaded().await;
                } => {}
            }
            self.publisher.forget();
            tracing::info!(host = %self.me, "leading the site");
            while *self.leading.borrow() {
                self.pass().await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.changed.changed() => {}
                    _ = self.leading.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            // No longer leading: the new leader registers the site; this host must not go on
            // retrying or refreshing a view that is no longer its to give.
            self.registration.send_replace(None);
        }
    }

    async fn pass(&mut self) {
        // This host is live by definition, also before its first beat is read back.
        let mut live = hosts::live(&self.view, self.dead_after);
        live.retain(|h| h.host != self.me);
        live.push(self.own.clone());
        live.sort_by(|a, b| a.host.cmp(&b.host));
        for e in self.view.hosts.snapshot().into_values() {
            self.duplicates.observe(&e.value.inventory.host, &e.value.instance);
        }
        let duplicates = self.duplicates.current();
        // Every live host is reported; only admitted ones that are not duplicates get work.
        let seen = live.clone();
        live.retain(|h| crate::desired::admits(&self.hosts, &h.host) && !duplicates.contains(&h.host));
        let desired = self.desired.lock().expect("desired lock").clone();
        let stored = self.view.assignments.snapshot();
        let previous: BTreeMap<Name, Assignment> =
            stored.values().map(|e| (e.value.app.clone(), e.value.clone())).collect();
        let next = assign::assign(&self.me, &desired, &live, &previous);
        for (app, a) in &next {
            let key = app.to_string();
            let same = stored.get(&key).is_some_and(|e| {
                e.value.generation == a.generation && e.value.replicas == a.replicas && e.value.unplaced == a.unplaced
            });
            if same {
                continue;
            }
            let body = serde_json::to_vec(a).expect("assignments serialize").into();
            let written = match stored.get(&key) {
                Some(e) => {
                    self.view.buckets.assign.update(&key, body, e.revision).await.map(|_| ()).map_err(|e| e.to_string())
                }
                None => self.view.buckets.assign.create(&key, body).await.map(|_| ()).map_err(|e| e.to_string()),
            };
            match written {
                Ok(()) => {
                    tracing::info!(%app, generation = a.generation, replicas = a.replicas.len(), unplaced = a.unplaced.len(), "replicas assigned")
                }
                // A concurrent write (a leader handing over): the mirror catches up, next pass redoes it.
                Err(e) => tracing::warn!(%app, error = %e, "assignment not written; retrying"),
            }
        }
        for (key, e) in stored.iter().filter(|(_, e)| !next.contains_key(&e.value.app)) {
            if let Err(err) = self.view.buckets.assign.delete_expect_revision(key, Some(e.revision)).await {
                tracing::debug!(app = %key, error = %err, "stale assignment not deleted; retrying");
            }
        }

        // Merge the live hosts' reports into the site's.
        let live_names: std::collections::BTreeSet<&Name> = live.iter().map(|h| &h.host).collect();
        // Keys are `<app>.<host>`; reports of hosts presumed down are left out.
        let host_of = |key: &str| key.rsplit_once('.').map(|(_, h)| h.to_string()).unwrap_or_default();
        let by_host: Vec<(String, AppStatusReport)> = self
            .view
            .host_status
            .snapshot()
            .into_iter()
            .map(|(k, e)| (host_of(&k), e.value))
            .filter(|(h, _)| live_names.iter().any(|n| n.as_str() == h))
            .collect();
        let mut merged = Vec::new();
        for d in desired.values() {
            let of_app: Vec<&AppStatusReport> =
                by_host.iter().filter(|(_, r)| r.app == d.app).map(|(_, r)| r).collect();
            // `next` holds an assignment for every app with a spec, none for tombstones.
            merged.push(merge(&self.site, d, next.get(&d.app), &of_app));
        }
        self.publisher.publish_changed(merged).await;

        let reg = SiteRegistration {
            site: self.site.clone(),
            labels: self.site_labels.clone(),
            hosts: seen,
            duplicate_hosts: duplicates.into_iter().collect(),
            agent_version: crate::VERSION.into(),
            public_key: self.public_key.borrow().clone(),
        };
        self.registration.send_if_modified(|cur| {
            if cur.as_ref() == Some(&reg) {
                false
            } else {
                *cur = Some(reg);
                true
            }
        });
    }
}
