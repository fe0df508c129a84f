//! The reconcile loop and its executor: wake on a change of desired state or of the site's
//! assignments, a Docker event or the resync tick; plan this host's share, act, report to the
//! leader. One loop per site-manager, so one replica is never reconciled twice at once.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use edge_bus::signal::Signal;
use edge_types::status::Phase;
use edge_types::Name;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::ClusterView;
use crate::desired::DesiredMap;
use crate::images::{Readiness, SiteImages};
use crate::network::membership;
use crate::reconcile::{gate_secrets, plan, wanted, Action, Observed, Wanted, WantedSet};
use crate::runtime::{DockerRuntime, Resolved};
use crate::secrets::SiteSecrets;
use crate::status::{self, Facts, HostStatusWriter};
use crate::traces::AppTraces;
use edge_types::secret::OnRotate;
use std::sync::Arc;

/// Longest wait between restarts of a container that keeps crashing.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long since its last restart starts a fresh crash streak, so a
/// workload that crashes once a week is not made to wait minutes.
const CRASH_WINDOW: Duration = Duration::from_secs(600);

/// State of the loop between passes.
pub struct Agent {
    pub site: Name,
    pub host: Name,
    pub runtime: DockerRuntime,
    pub desired: DesiredMap,
    pub view: ClusterView,
    pub changed: Signal,
    pub resync: Duration,
    /// Updates that replace running containers wait for this window.
    pub window: Option<crate::window::Window>,
    facts: Facts,
    /// Per container: restarts in the current crash streak and when the last one was.
    streaks: HashMap<String, (u32, Instant)>,
    /// Passes already scheduled for the end of a back-off, so each is scheduled once.
    wakes: std::collections::BTreeSet<Instant>,
    status: HostStatusWriter,
    /// The secrets sealed to this site, opened.
    pub secrets: Arc<SiteSecrets>,
    /// The traces the desired states came with: actions for an app join its apply's trace.
    pub traces: Arc<AppTraces>,
    /// The site's image store, for images from the project's store.
    pub images: Option<SiteImages>,
    /// Which hosts may run workloads; when this one may not (blocked, or not approved), it
    /// runs nothing.
    pub hosts: crate::desired::HostPolicy,
}

impl Agent {
    pub fn new(
        site: Name,
        host: Name,
        runtime: DockerRuntime,
        desired: DesiredMap,
        view: ClusterView,
        changed: Signal,
        secrets: Arc<SiteSecrets>,
    ) -> Self {
        let status = HostStatusWriter::new(view.buckets.host_status.clone(), host.clone());
        Self {
            site,
            host,
            runtime,
            desired,
            view,
            changed,
            resync: Duration::from_secs(10),
            window: None,
            facts: Facts::default(),
            streaks: HashMap::new(),
            wakes: Default::default(),
            status,
            secrets,
            traces: Arc::default(),
            images: None,
            hosts: Default::default(),
        }
    }

    /// Runs until shutdown. Nothing is done before the desired state and the assignments
    /// stored at the site have been read in full, so a restart never removes containers it has
    /// not yet matched to their desired state.
    pub async fn run(mut self, mut loaded: watch::Receiver<bool>, shutdown: CancellationToken) {
        let mut waiter = self.changed.waiter();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async {
                let _ = loaded.wait_for(|l| *l).await;
                self.view.assignments.loaded().await;
            } => {}
        }
        tokio::spawn(forward_docker_events(self.runtime.clone(), self.changed.clone(), shutdown.clone()));
        loop {
            self.pass().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = waiter.changed() => {}
                _ = tokio::time::sleep(self.resync) => {}
            }
        }
    }

    /// One reconcile pass.
    pub async fn pass(&mut self) {
        let desired = self.desired.lock().expect("desired lock").clone();
        let (mut wanted, mut held) = wanted(&desired, &self.view.assignments(), &self.host);
        if !crate::desired::admits(&self.hosts, &self.host) {
            // Blocked or not approved: stop everything here, whatever assignments this host
            // last read (the leader has moved them, or will once it reads the same).
            wanted.clear();
            held.clear();
        }
        // Replicas whose secrets have not arrived wait; their old containers keep running.
        let mut waiting = gate_secrets(&mut wanted, &self.secrets.versions());
        // Replicas whose image is not at the site yet wait too.
        waiting.extend(self.gate_images(&wanted).await);
        // And replicas of apps whose topic streams cannot be made yet.
        if let Some(bus) = self.runtime.bus() {
            waiting.extend(bus.ensure_topics(&wanted).await);
            bus.measure(&desired).await;
        }
        self.facts.waiting = waiting.clone();
        let observed = match self.runtime.list().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list containers; will retry");
                return;
            }
        };
        let mut actions = plan(&wanted, &held, &observed);
        actions.retain(|a| match a {
            Action::Create(w) | Action::Replace { wanted: w, .. } => {
                !waiting.contains_key(&(w.app.clone(), w.service.name.clone(), w.replica))
            }
            _ => true,
        });
        // Outside the maintenance window, replacements wait (the old containers keep running).
        let mut deferred = std::collections::BTreeSet::new();
        if self.window.is_some_and(|w| !w.open_at(edge_bus::time::now_ms())) {
            actions.retain(|a| match a {
                Action::Replace { wanted, .. } => {
                    deferred.insert(wanted.app.clone());
                    false
                }
                _ => true,
            });
        }
        let acted = !actions.is_empty();
        // One `site.reconcile` span per traced app and pass, parent of its actions' spans.
        let mut spans: HashMap<Name, Option<tracing::Span>> = HashMap::new();
        for action in actions {
            let span = action.app().and_then(|app| {
                let generation = desired.get(app)?.generation;
                spans
                    .entry(app.clone())
                    .or_insert_with(|| self.traces.reconcile_span(&self.site, &self.host, app, generation))
                    .clone()
            });
            match span {
                Some(span) => tracing::Instrument::instrument(self.execute(action), span).await,
                None => self.execute(action).await,
            }
        }
        drop(spans);
        let observed = if acted {
            match self.runtime.list().await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list containers; will retry");
                    return;
                }
            }
        } else {
            observed
        };
        self.refresh_secret_files(&wanted, &observed).await;
        let names = observed.iter().map(|o| self.runtime.replica_name(&o.app, &o.service, o.replica)).collect();
        self.runtime.remove_stale_secret_dirs(&names);
        let live: std::collections::HashSet<&str> = observed.iter().map(|o| o.id.as_str()).collect();
        self.facts.restarts.retain(|id, _| live.contains(id.as_str()));
        self.streaks.retain(|id, _| live.contains(id.as_str()));
        let mut reports = status::build(&self.site, &self.host, &desired, &wanted, &held, &observed, &self.facts);
        for r in reports.iter_mut().filter(|r| deferred.contains(&r.app) && r.phase != Phase::Failed) {
            r.phase = Phase::Deferred;
        }
        self.status.write_changed(reports).await;
        // Last: network changes and removals take Docker a while and change no status. The bus
        // relays first: a site-manager that joined an app's network leaves it before removal.
        self.keep_bus_relays(&wanted, &observed).await;
        self.reconcile_networks(&wanted, &observed).await;
    }

    /// Keeps the bus relay of every app network where a replica of an app with a bus runs.
    async fn keep_bus_relays(&self, wanted: &WantedSet, observed: &[Observed]) {
        let Some(bus) = self.runtime.bus() else { return };
        let networks = observed
            .iter()
            .filter_map(|o| {
                let w = wanted.get(&(o.app.clone(), o.service.clone(), o.replica))?;
                w.bus.as_ref()?;
                let primary = self.runtime.networks_of(w).swap_remove(0).name;
                o.networks.contains(&primary).then_some(primary)
            })
            .collect();
        bus.keep_relays(&networks).await;
    }

    /// Keeps every running container of ours on exactly its app's networks, live (connect,
    /// then disconnect: no restart), and removes networks no container refers to any more.
    async fn reconcile_networks(&self, wanted: &WantedSet, observed: &[Observed]) {
        let networks = self.runtime.networks();
        // Networks of every container (a stopped one needs its networks to start again) and of
        // every wanted replica (made before their containers).
        let mut keep: BTreeSet<String> = observed.iter().flat_map(|o| o.networks.iter().cloned()).collect();
        keep.extend(wanted.values().flat_map(|w| self.runtime.networks_of(w)).map(|n| n.name));
        for o in observed.iter().filter(|o| o.running()) {
            let Some(w) = wanted.get(&(o.app.clone(), o.service.clone(), o.replica)) else { continue };
            if w.digest != o.digest {
                continue;
            }
            let (join, leave) = membership(&self.runtime.networks_of(w), &o.networks);
            if join.is_empty() && leave.is_empty() {
                continue;
            }
            let mut joined = true;
            for net in &join {
                let joined_one = match networks.ensure(net).await {
                    Ok(()) => networks.join(&o.id, net, &o.service).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = joined_one {
                    tracing::warn!(container = short(&o.id), network = %net.name, error = %e, "cannot join the app's network");
                    joined = false;
                }
            }
            // Leave the old networks only once on all the new ones, never with none.
            if !joined {
                continue;
            }
            for name in &leave {
                if let Err(e) = networks.leave(&o.id, name).await {
                    tracing::warn!(container = short(&o.id), network = %name, error = %e, "cannot leave a network");
                }
            }
            tracing::info!(app = %o.app, service = %o.service, container = short(&o.id), joined = join.len(), left = leave.len(), "container moved to its app's networks");
        }
        if let Err(e) = networks.remove_unused(&keep).await {
            tracing::debug!(error = %e, "cannot list networks");
        }
    }

    async fn execute(&mut self, action: Action) {
        match action {
            Action::Create(w) => self.create(&w).await,
            Action::Replace { old, wanted } => {
                tracing::info!(app = %wanted.app, service = %wanted.service.name, replica = wanted.replica, "replacing container for a new spec");
                match self.runtime.remove(&old).await {
                    Ok(()) => self.create(&wanted).await,
                    Err(e) => self.record_error(&wanted, e.to_string()),
                }
            }
            Action::Start { id } => {
                let now = Instant::now();
                let streak = match self.streaks.get(&id) {
                    Some((n, last)) if now.duration_since(*last) < CRASH_WINDOW => {
                        let due = *last + restart_delay(*n);
                        if now < due {
                            self.wake_at(due);
                            return;
                        }
                        *n
                    }
                    _ => 0,
                };
                self.streaks.insert(id.clone(), (streak + 1, now));
                let n = self.facts.restarts.entry(id.clone()).or_insert(0);
                *n += 1;
                tracing::info!(container = %short(&id), restarts = *n, "restarting stopped container");
                if let Err(e) = self.runtime.start(&id).await {
                    tracing::warn!(container = %short(&id), error = %e, "restart failed");
                    // Its network was removed while it was stopped (by this site-manager before
                    // it knew of the container, or another sharing the engine): it could never
                    // start again. Removed, it is made anew on its networks at the next pass.
                    let text = e.to_string();
                    if text.contains("network") && text.contains("not found") {
                        tracing::info!(container = %short(&id), "removing a stopped container whose network is gone");
                        if let Err(e) = self.runtime.remove(&id).await {
                            tracing::warn!(container = %short(&id), error = %e, "remove failed");
                        }
                    }
                }
            }
            Action::Remove { id } => {
                tracing::info!(container = %short(&id), "removing container that is no longer desired");
                if let Err(e) = self.runtime.remove(&id).await {
                    tracing::warn!(container = %short(&id), error = %e, "remove failed");
                }
            }
        }
    }

    /// The secrets a replica uses, opened; `None` if one is missing (it then waits).
    fn resolve<'a>(&self, w: &'a Wanted) -> Option<Vec<Resolved<'a>>> {
        w.service
            .secrets
            .iter()
            .map(|r| Some(Resolved { by: r, secret: self.secrets.get(&w.tenant, &r.name)? }))
            .collect()
    }

    /// Rewrites the files of running replicas' `in-place` secrets that were rotated.
    async fn refresh_secret_files(
        &self,
        wanted: &crate::reconcile::WantedSet,
        observed: &[crate::reconcile::Observed],
    ) {
        for o in observed.iter().filter(|o| o.running()) {
            let Some(w) = wanted.get(&(o.app.clone(), o.service.clone(), o.replica)) else { continue };
            if w.digest != o.digest || !w.service.secrets.iter().any(|r| r.on_rotate == OnRotate::InPlace) {
                continue;
            }
            let Some(resolved) = self.resolve(w) else { continue };
            let in_place: Vec<Resolved> =
                resolved.into_iter().filter(|r| r.by.on_rotate == OnRotate::InPlace).collect();
            let name = self.runtime.container_name(w);
            match self.runtime.write_secret_files(&name, &in_place) {
                Ok(changed) => {
                    for s in in_place.iter().filter(|s| changed.contains(&s.by.name)) {
                        tracing::info!(container = %name, secret = %s.by.name, version = s.secret.version, "secret file updated in place");
                        self.secrets.read_by(&w.tenant, &s.by.name, s.secret.version, &name).await;
                    }
                }
                Err(e) => tracing::warn!(container = %name, error = %e, "cannot update secret files"),
            }
        }
    }

    async fn create(&mut self, w: &Wanted) {
        let span = edge_bus::trace::in_trace(
            || tracing::info_span!("container.start", app = %w.app, service = %w.service.name, replica = w.replica, image = %w.service.image),
        );
        tracing::Instrument::instrument(self.create_in_span(w), span).await
    }

    /// Replicas whose image from the store is neither loaded nor wholly at the site, with why.
    async fn gate_images(
        &self,
        wanted: &crate::reconcile::WantedSet,
    ) -> std::collections::BTreeMap<(Name, Name, u32), String> {
        let mut out = std::collections::BTreeMap::new();
        let mut seen: HashMap<String, Option<String>> = HashMap::new();
        for (key, w) in wanted {
            let Some(img) = &w.image else { continue };
            if !seen.contains_key(&img.digest) {
                let why = match &self.images {
                    None => Some(format!("waiting for image {} (no site store)", img.reference)),
                    Some(store) => match store.readiness(img).await {
                        Ok(Readiness::Loaded | Readiness::Staged) => None,
                        Ok(Readiness::Staging(n, total)) => {
                            Some(format!("waiting for image {} ({n}/{total} blobs at the site)", img.reference))
                        }
                        Err(e) => Some(format!("waiting for image {}: {e}", img.reference)),
                    },
                };
                seen.insert(img.digest.clone(), why);
            }
            if let Some(why) = seen[&img.digest].clone() {
                out.insert(key.clone(), why);
            }
        }
        out
    }

    async fn create_in_span(&mut self, w: &Wanted) {
        let key = (w.app.clone(), w.service.name.clone(), w.replica);
        let mut image_id = None;
        if let (Some(img), Some(store)) = (&w.image, &self.images) {
            match store.ensure(img).await {
                Ok(id) => image_id = Some(id),
                Err(e) => {
                    tracing::warn!(app = %w.app, image = %img.reference, error = %e, "cannot load image from the site store");
                    self.facts.errors.insert(key, format!("image {}: {e}", img.reference));
                    return;
                }
            }
        }
        let Some(secrets) = self.resolve(w) else {
            tracing::info!(app = %w.app, service = %w.service.name, "a secret was withdrawn before the container was made");
            return;
        };
        match self.runtime.create(w, &secrets, image_id.as_deref()).await {
            Ok(id) => {
                tracing::info!(app = %w.app, service = %w.service.name, replica = w.replica, container = %short(&id), "container started");
                self.facts.errors.remove(&key);
                let name = self.runtime.container_name(w);
                for s in &secrets {
                    self.secrets.read_by(&w.tenant, &s.by.name, s.secret.version, &name).await;
                }
            }
            Err(e) => {
                tracing::warn!(app = %w.app, service = %w.service.name, error = %e, "cannot create container");
                self.facts.errors.insert(key, e.to_string());
            }
        }
    }

    /// Runs a pass at `when` (a restart that waits out its back-off), once per instant.
    fn wake_at(&mut self, when: Instant) {
        let now = Instant::now();
        self.wakes.retain(|w| *w > now);
        if !self.wakes.insert(when) {
            return;
        }
        let changed = self.changed.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(when.into()).await;
            changed.raise();
        });
    }

    fn record_error(&mut self, w: &Wanted, message: String) {
        self.facts.errors.insert((w.app.clone(), w.service.name.clone(), w.replica), message);
    }
}

/// Wait before the next restart of a container already restarted `streak` times in a row:
/// 1 s, 2 s, 4 s, ... up to 5 minutes.
fn restart_delay(streak: u32) -> Duration {
    Duration::from_secs(1u64 << streak.saturating_sub(1).min(9)).min(MAX_RESTART_BACKOFF)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Wakes the loop on every lifecycle event of our containers; re-subscribes if Docker's event
/// stream breaks.
async fn forward_docker_events(runtime: DockerRuntime, changed: Signal, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let mut events = Box::pin(runtime.events());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                e = events.next() => match e {
                    Some(()) => changed.raise(),
                    None => break,
                },
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_doubles_to_five_minutes() {
        let secs: Vec<u64> = [1, 2, 3, 4, 9, 10, 40].iter().map(|n| restart_delay(*n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 256, 300, 300]);
    }
}
