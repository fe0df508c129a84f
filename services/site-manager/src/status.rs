//! Turns desired state plus observed containers into per-app status reports, and publishes a
//! report only when it changed, to the site's own SITE_EVENTS stream (copied to the hub by
//! sourcing whenever the link is up).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use edge_types::desired::DesiredApp;
use edge_types::status::{AppStatusReport, ContainerStatus, Phase};
use edge_types::{subject, Name};

use crate::buffer::EventBuffer;
use crate::reconcile::{wanted, Observed};

/// A container that is down and has been restarted this often is reported as failed.
const CRASH_LOOP_RESTARTS: u32 = 5;

/// What the executor learned while acting, keyed by replica `(app, service, replica)`.
#[derive(Default)]
pub struct Facts {
    pub errors: HashMap<(Name, Name, u32), String>,
    /// Restarts done by this site-manager, by container id.
    pub restarts: HashMap<String, u32>,
}

/// The report of every app in the desired state.
pub fn build(
    site: &Name,
    host: &Name,
    desired: &BTreeMap<Name, DesiredApp>,
    observed: &[Observed],
    facts: &Facts,
) -> Vec<AppStatusReport> {
    let wanted = wanted(desired);
    let mut reports = Vec::new();
    for d in desired.values() {
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
            let running = o.is_some_and(|o| o.running());
            all_ok &= running;
            failed |= error.is_some() || (!running && restarts >= CRASH_LOOP_RESTARTS);
            containers.push(ContainerStatus {
                service: service.clone(),
                replica: *replica,
                host: host.clone(),
                container_id: o.map(|o| o.id.clone()).unwrap_or_default(),
                image: w.service.image.clone(),
                state: o.map(|o| o.state.clone()).unwrap_or_else(|| "missing".into()),
                restarts,
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
        reported_at_ms: edge_bus::time::now_ms(),
    }
}

/// Publishes reports that differ from the last one published for their app.
pub struct StatusPublisher {
    buffer: Arc<EventBuffer>,
    last: HashMap<Name, AppStatusReport>,
}

impl StatusPublisher {
    pub fn new(buffer: Arc<EventBuffer>) -> Self {
        Self { buffer, last: HashMap::new() }
    }

    /// Publishes what changed. A report that cannot be stored (buffer full, JetStream down) is
    /// retried on the next pass, since it is not remembered as published; the hub always ends
    /// with the latest state.
    pub async fn publish_changed(&mut self, reports: Vec<AppStatusReport>) {
        for r in reports {
            let unchanged = self
                .last
                .get(&r.app)
                .is_some_and(|l| l.generation == r.generation && l.phase == r.phase && l.containers == r.containers);
            if unchanged {
                continue;
            }
            let id = format!("status.{}.{}.{}.{}", r.site, r.app, r.generation, r.reported_at_ms);
            let body = serde_json::to_vec(&r).expect("reports serialize");
            match self.buffer.publish(subject::site_status(&r.site, &r.app), body, id).await {
                Ok(()) => {
                    tracing::info!(app = %r.app, generation = r.generation, phase = ?r.phase, "status reported");
                    self.last.insert(r.app.clone(), r);
                }
                Err(e) => tracing::warn!(error = %e, app = %r.app, "status not stored; will retry"),
            }
        }
    }
}
