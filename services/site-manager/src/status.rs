//! Status: each host turns its assigned replicas plus its observed containers into per-app
//! reports for the site's leader (`edge_host_status`); the leader merges them into the site's
//! report and publishes it, only when it changed, to the site's own SITE_EVENTS stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use edge_types::cluster::Assignment;
use edge_types::desired::DesiredApp;
use edge_types::status::{AppStatusReport, ContainerStatus, Phase};
use edge_types::{subject, Name};

use crate::buffer::EventBuffer;
use crate::reconcile::{Observed, WantedSet};

/// A container that is down and has been restarted this often is reported as failed.
const CRASH_LOOP_RESTARTS: u32 = 5;

/// What the executor learned while acting, keyed by replica `(app, service, replica)`.
#[derive(Default)]
pub struct Facts {
    pub errors: HashMap<(Name, Name, u32), String>,
    /// Restarts done by this site-manager, by container id.
    pub restarts: HashMap<String, u32>,
    /// Replicas not started yet, and what they wait for (a secret that has not arrived).
    pub waiting: BTreeMap<(Name, Name, u32), String>,
}

/// This host's report of every app in the desired state that it acts on (held apps excluded):
/// its own containers only. The site's leader merges the hosts' reports into the site's.
pub fn build(
    site: &Name,
    host: &Name,
    desired: &BTreeMap<Name, DesiredApp>,
    wanted: &WantedSet,
    held: &BTreeSet<Name>,
    observed: &[Observed],
    facts: &Facts,
) -> Vec<AppStatusReport> {
    let mut reports = Vec::new();
    for d in desired.values().filter(|d| !held.contains(&d.app)) {
        let mine: Vec<&Observed> = observed.iter().filter(|o| o.app == d.app).collect();
        let Some(spec) = &d.spec else {
            let phase = if mine.is_empty() { Phase::Removed } else { Phase::Progressing };
            reports.push(report(site, d, String::new(), phase, Vec::new()));
            continue;
        };
        let mut containers = Vec::new();
        let (mut all_ok, mut failed) = (true, false);
        for ((app, service, replica), w) in wanted.iter().filter(|(k, _)| k.0 == d.app) {
            let key = (app.clone(), service.clone(), *replica);
            let o = mine.iter().find(|o| &o.service == service && o.replica == *replica && o.digest == w.digest);
            let error = facts.errors.get(&key).cloned();
            let restarts = o.and_then(|o| facts.restarts.get(&o.id).copied()).unwrap_or(0);
            // A container whose probe fails (or has not passed yet) does not count as running.
            let running = o.is_some_and(|o| o.running() && (o.health.is_empty() || o.health == "healthy"));
            all_ok &= running;
            failed |= error.is_some() || (!running && restarts >= CRASH_LOOP_RESTARTS);
            containers.push(ContainerStatus {
                service: service.clone(),
                replica: *replica,
                host: host.clone(),
                container_id: o.map(|o| o.id.clone()).unwrap_or_default(),
                image: w.service.image.clone(),
                image_id: o.map(|o| o.image_id.clone()).unwrap_or_default(),
                health: o.map(|o| o.health.clone()).unwrap_or_default(),
                state: match (o, facts.waiting.get(&key)) {
                    (Some(o), _) => o.state.clone(),
                    (None, Some(why)) => why.clone(),
                    (None, None) => "missing".into(),
                },
                restarts,
                ingress: w
                    .service
                    .ports
                    .iter()
                    .map(|p| edge_types::app::PortSpec { host: Some(p.host_port()), ..p.clone() })
                    .collect(),
                error,
            });
        }
        let extra = mine.iter().any(|o| !wanted.contains_key(&(o.app.clone(), o.service.clone(), o.replica)));
        let phase = if failed {
            Phase::Failed
        } else if all_ok && !extra {
            Phase::Running
        } else {
            Phase::Progressing
        };
        reports.push(report(site, d, spec.version.clone(), phase, containers));
    }
    reports
}

/// The site's report of one app, merged by the leader from the reports of the live hosts and
/// the app's assignment: running when every assigned replica runs the desired generation and no
/// host still has leftovers; failed when a host reports failure or a replica has no host.
pub fn merge(
    site: &Name,
    d: &DesiredApp,
    assignment: Option<&Assignment>,
    host_reports: &[&AppStatusReport],
) -> AppStatusReport {
    let current: Vec<&&AppStatusReport> = host_reports.iter().filter(|r| r.generation == d.generation).collect();
    let Some(spec) = &d.spec else {
        let containers = host_reports.iter().flat_map(|r| r.containers.clone()).collect();
        let done = host_reports.iter().all(|r| r.phase == Phase::Removed);
        let phase = if done { Phase::Removed } else { Phase::Progressing };
        return report(site, d, String::new(), phase, containers);
    };
    let mut containers = Vec::new();
    let mut all_ok = assignment.is_some_and(|a| a.generation == d.generation);
    for p in assignment.map(|a| a.replicas.as_slice()).unwrap_or_default() {
        let found = current
            .iter()
            .flat_map(|r| r.containers.iter())
            .find(|c| c.service == p.service && c.replica == p.replica && c.host == p.host);
        let c = found.cloned().unwrap_or_else(|| ContainerStatus {
            service: p.service.clone(),
            replica: p.replica,
            host: p.host.clone(),
            container_id: String::new(),
            image: spec.services.iter().find(|s| s.name == p.service).map(|s| s.image.clone()).unwrap_or_default(),
            image_id: String::new(),
            health: String::new(),
            state: "pending".into(),
            restarts: 0,
            ingress: Vec::new(),
            error: None,
        });
        all_ok &= c.state == "running" && (c.health.is_empty() || c.health == "healthy");
        containers.push(c);
    }
    let unplaced = assignment.map(|a| a.unplaced.clone()).unwrap_or_default();
    let failed = !unplaced.is_empty() || current.iter().any(|r| r.phase == Phase::Failed);
    let settled = host_reports.iter().all(|r| r.generation == d.generation && r.phase == Phase::Running);
    let deferred = current.iter().any(|r| r.phase == Phase::Deferred);
    let phase = if failed {
        Phase::Failed
    } else if deferred {
        Phase::Deferred
    } else if all_ok && settled {
        Phase::Running
    } else {
        Phase::Progressing
    };
    let mut r = report(site, d, spec.version.clone(), phase, containers);
    r.unplaced = unplaced;
    r
}

fn report(
    site: &Name,
    d: &DesiredApp,
    version: String,
    phase: Phase,
    containers: Vec<ContainerStatus>,
) -> AppStatusReport {
    AppStatusReport {
        site: site.clone(),
        app: d.app.clone(),
        generation: d.generation,
        version,
        phase,
        containers,
        unplaced: Vec::new(),
        reported_at_ms: edge_bus::time::now_ms(),
    }
}

/// Remembers the last report written per key, so only changes are written.
#[derive(Default)]
struct Changes {
    last: HashMap<String, AppStatusReport>,
}

impl Changes {
    fn changed(&self, key: &str, r: &AppStatusReport) -> bool {
        !self.last.get(key).is_some_and(|l| {
            l.generation == r.generation
                && l.phase == r.phase
                && l.containers == r.containers
                && l.unplaced == r.unplaced
        })
    }
}

/// The leader's publisher: the site's reports, to the site's own SITE_EVENTS stream (copied to
/// the hub by sourcing whenever the link is up).
pub struct StatusPublisher {
    buffer: Arc<EventBuffer>,
    changes: Changes,
}

impl StatusPublisher {
    pub fn new(buffer: Arc<EventBuffer>) -> Self {
        Self { buffer, changes: Changes::default() }
    }

    /// Forgets what was published, so the next pass publishes everything (a new leader).
    pub fn forget(&mut self) {
        self.changes.last.clear();
    }

    /// Publishes what changed. A report that cannot be stored (buffer full, JetStream down) is
    /// retried on the next pass, since it is not remembered as published; the hub always ends
    /// with the latest state.
    pub async fn publish_changed(&mut self, reports: Vec<AppStatusReport>) {
        for r in reports {
            if !self.changes.changed(r.app.as_str(), &r) {
                continue;
            }
            let id = format!("status.{}.{}.{}.{}", r.site, r.app, r.generation, r.reported_at_ms);
            let body = serde_json::to_vec(&r).expect("reports serialize");
            match self.buffer.publish(subject::site_status(&r.site, &r.app), body, id).await {
                Ok(()) => {
                    tracing::info!(app = %r.app, generation = r.generation, phase = ?r.phase, "status reported");
                    self.changes.last.insert(r.app.to_string(), r);
                }
                Err(e) => tracing::warn!(error = %e, app = %r.app, "status not stored; will retry"),
            }
        }
    }
}

/// A host's publisher: its own reports, to the site's `edge_host_status` bucket for the leader.
pub struct HostStatusWriter {
    kv: async_nats::jetstream::kv::Store,
    host: Name,
    changes: Changes,
}

impl HostStatusWriter {
    pub fn new(kv: async_nats::jetstream::kv::Store, host: Name) -> Self {
        Self { kv, host, changes: Changes::default() }
    }

    /// Writes the reports that changed; a failed write is retried on the next pass.
    pub async fn write_changed(&mut self, reports: Vec<AppStatusReport>) {
        for r in reports {
            let key = format!("{}.{}", r.app, self.host);
            if !self.changes.changed(&key, &r) {
                continue;
            }
            let body = serde_json::to_vec(&r).expect("reports serialize");
            match self.kv.put(&key, body.into()).await {
                Ok(_) => {
                    tracing::debug!(app = %r.app, phase = ?r.phase, "host status written");
                    self.changes.last.insert(key, r);
                }
                Err(e) => tracing::warn!(error = %e, app = %r.app, "host status not stored; will retry"),
            }
        }
    }
}
