//! What the telemetry service knows of the fleet: the hub's buckets (sites, apps, status
//! reports) as live copies, every site's latest heartbeat, the hub's sources of the sites'
//! events (their lag), and the services' own `$SRV.STATS`. A scrape turns them into a
//! [`Snapshot`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use edge_bus::mirror::Mirror;
use edge_bus::signal::Signal;
use edge_bus::topology::HubBuckets;
use edge_types::api::AppRecord;
use edge_types::schema::decode;
use edge_types::site::{Heartbeat, SiteRecord};
use edge_types::status::{AppStatusReport, Phase};
use edge_types::subject::{self, Subject};
use edge_types::Name;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::metrics::{AppRow, EndpointRow, HostRow, SiteRow, Snapshot};

/// How long a scrape waits for the services' statistics.
const STATS_WAIT: Duration = Duration::from_millis(300);

#[derive(Clone)]
pub struct Fleet {
    client: async_nats::Client,
    sites: Mirror<SiteRecord>,
    apps: Mirror<AppRecord>,
    status: Mirror<AppStatusReport>,
    beats: Arc<DashMap<Name, (Instant, Heartbeat)>>,
    site_timeout: Duration,
    max_sites: usize,
    /// Heartbeats rejected as malformed or forged.
    pub rejected: Arc<AtomicU64>,
    /// What the sites' telemetry streams reported.
    pub reported: crate::ingest::Reported,
}

impl Fleet {
    /// Starts following the hub's buckets and the heartbeats.
    pub async fn follow(
        client: async_nats::Client,
        buckets: HubBuckets,
        site_timeout: Duration,
        max_sites: usize,
        shutdown: CancellationToken,
    ) -> Result<Self, async_nats::Error> {
        let quiet = Signal::new();
        let fleet = Self {
            sites: Mirror::follow(buckets.sites, quiet.clone(), shutdown.clone()),
            apps: Mirror::follow_prefix(buckets.apps, "app.", quiet.clone(), shutdown.clone()),
            status: Mirror::follow(buckets.status, quiet, shutdown.clone()),
            beats: Default::default(),
            site_timeout,
            max_sites,
            rejected: Default::default(),
            reported: Default::default(),
            client: client.clone(),
        };
        let mut sub = client.subscribe(subject::heartbeat_all()).await?;
        let (beats, rejected) = (fleet.beats.clone(), fleet.rejected.clone());
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = sub.next() => match m { Some(m) => m, None => return },
                };
                match (subject::parse(&msg.subject), decode::<Heartbeat>(&msg.payload)) {
                    (Ok(Subject::Heartbeat { site }), Ok(hb)) if hb.site == site => {
                        beats.insert(site, (Instant::now(), hb));
                    }
                    _ => {
                        rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(fleet)
    }

    /// The fleet now.
    pub async fn snapshot(&self) -> Snapshot {
        let lag: HashMap<String, u64> = match edge_bus::topology::site_sources(&self.client).await {
            Ok(s) => s.into_iter().map(|s| (s.site, s.lag)).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the hub's site sources");
                HashMap::new()
            }
        };
        let apps: Vec<AppRecord> = self.apps.snapshot().into_values().map(|e| e.value).collect();
        let reports: Vec<AppStatusReport> = self.status.snapshot().into_values().map(|e| e.value).collect();
        let mut snap = Snapshot::default();
        let records: BTreeMap<String, SiteRecord> =
            self.sites.snapshot().into_iter().map(|(k, e)| (k, e.value)).collect();
        snap.sites_registered = records.len() as u64;
        for r in records.values() {
            *snap.sites_by_version.entry(version_label(&r.agent_version)).or_default() += 1;
        }
        for (i, r) in records.values().enumerate() {
            let beat = self.beats.get(&r.site).map(|b| (b.0, b.1.clone()));
            let age = beat.as_ref().map(|(at, _)| at.elapsed());
            let connected = age.is_some_and(|a| a < self.site_timeout);
            snap.sites_connected += connected as u64;
            if i >= self.max_sites {
                snap.sites_over_limit += 1;
                continue;
            }
            let hb = beat.map(|(_, hb)| hb);
            let buffer = hb.as_ref().and_then(|h| h.buffer.clone()).unwrap_or_default();
            let mine: Vec<&AppStatusReport> = reports.iter().filter(|x| x.site == r.site).collect();
            let placed: Vec<&AppRecord> = apps.iter().filter(|a| a.sites.contains(&r.site)).collect();
            let running = placed.iter().filter(|a| mine.iter().any(|x| runs(a, x))).count();
            snap.sites.push(SiteRow {
                site: r.site.to_string(),
                connected,
                last_seen_secs: age.map(|a| a.as_secs_f64()),
                buffer_fill: buffer.fill(),
                buffer_messages: buffer.messages,
                buffer_full: buffer.full,
                events_refused: buffer.rejected_total,
                catchup_lag: lag.get(r.site.as_str()).copied().unwrap_or(0),
                leaf_recoveries: hb.as_ref().map(|h| h.leaf_recoveries).unwrap_or(0),
                secrets_refused: hb.as_ref().map(|h| h.secrets_refused).unwrap_or(0),
                apps_desired: placed.len() as u64,
                apps_running: running as u64,
                apps_failed: mine.iter().filter(|x| x.phase == Phase::Failed).count() as u64,
                restarts: mine.iter().flat_map(|x| &x.containers).map(|c| c.restarts as u64).sum(),
                exits: self.reported.by_site.get(&r.site).map(|c| c.exits).unwrap_or(0),
                ooms: self.reported.by_site.get(&r.site).map(|c| c.ooms).unwrap_or(0),
                unhealthy: mine.iter().flat_map(|x| &x.containers).filter(|c| c.health == "unhealthy").count() as u64,
                telemetry_fill: hb.as_ref().and_then(|h| h.telemetry_buffer.as_ref()).map(|t| t.fill()).unwrap_or(0.0),
                telemetry_full: hb.as_ref().and_then(|h| h.telemetry_buffer.as_ref()).is_some_and(|t| t.full),
                topics: hb.as_ref().map(|h| h.topics.clone()).unwrap_or_default(),
            });
            let now = edge_bus::time::now_ms();
            for h in self.reported.hosts.iter().filter(|h| h.key().0 == r.site) {
                let s = h.value();
                snap.hosts.push(HostRow {
                    site: r.site.to_string(),
                    host: s.host.to_string(),
                    cpu_ratio: s.cpu_ratio,
                    memory_total: s.memory_total_bytes,
                    memory_available: s.memory_available_bytes,
                    disk_free: s.disk_free_bytes,
                    sample_age_secs: now.saturating_sub(s.at_ms) as f64 / 1000.0,
                });
            }
        }
        for a in &apps {
            let of_app: Vec<&AppStatusReport> = reports.iter().filter(|x| x.app == a.spec.name).collect();
            let used = self.containers_of(&a.spec.name);
            snap.apps.push(AppRow {
                app: a.spec.name.to_string(),
                generation: a.generation,
                sites_desired: a.sites.len() as u64,
                sites_running: of_app.iter().filter(|x| runs(a, x)).count() as u64,
                sites_failed: of_app.iter().filter(|x| a.sites.contains(&x.site) && x.phase == Phase::Failed).count()
                    as u64,
                restarts: of_app
                    .iter()
                    .filter(|x| a.sites.contains(&x.site))
                    .flat_map(|x| &x.containers)
                    .map(|c| c.restarts as u64)
                    .sum(),
                cpu_cores: used.iter().map(|c| c.cpu_cores).sum(),
                memory_bytes: used.iter().map(|c| c.memory_bytes).sum(),
                ooms: self.reported.by_app.get(&a.spec.name).map(|c| c.ooms).unwrap_or(0),
                unhealthy: of_app
                    .iter()
                    .filter(|x| a.sites.contains(&x.site))
                    .flat_map(|x| &x.containers)
                    .filter(|c| c.health == "unhealthy")
                    .count() as u64,
            });
        }
        snap.apps.sort_by(|a, b| a.app.cmp(&b.app));
        snap.endpoints = self.service_stats().await;
        snap
    }

    /// Every container of an app the sites reported, with where it runs, newest samples.
    pub fn containers_of(&self, app: &Name) -> Vec<edge_types::telemetry::PlacedStats> {
        let mut out: Vec<_> = self
            .reported
            .hosts
            .iter()
            .flat_map(|h| {
                let s = h.value().clone();
                s.containers.into_iter().filter(|c| &c.app == app).map(move |c| edge_types::telemetry::PlacedStats {
                    site: s.site.clone(),
                    host: s.host.clone(),
                    service: c.service,
                    replica: c.replica,
                    container_id: c.container_id,
                    cpu_cores: c.cpu_cores,
                    memory_bytes: c.memory_bytes,
                    at_ms: s.at_ms,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.site, &a.service, a.replica).cmp(&(&b.site, &b.service, b.replica)));
        out
    }

    /// Every service's endpoints, from `$SRV.STATS` (summed over instances of a service).
    async fn service_stats(&self) -> Vec<EndpointRow> {
        let mut rows: BTreeMap<(String, String), EndpointRow> = BTreeMap::new();
        let inbox = self.client.new_inbox();
        let Ok(mut replies) = self.client.subscribe(inbox.clone()).await else { return Vec::new() };
        if self.client.publish_with_reply("$SRV.STATS", inbox, "".into()).await.is_err() {
            return Vec::new();
        }
        let deadline = tokio::time::Instant::now() + STATS_WAIT;
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, replies.next()).await {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else { continue };
            let service = v["name"].as_str().unwrap_or_default().to_string();
            for e in v["endpoints"].as_array().into_iter().flatten() {
                let endpoint = e["name"].as_str().unwrap_or_default().to_string();
                let row = rows.entry((service.clone(), endpoint.clone())).or_insert_with(|| EndpointRow {
                    service: service.clone(),
                    endpoint,
                    ..Default::default()
                });
                row.requests += e["num_requests"].as_u64().unwrap_or(0);
                row.errors += e["num_errors"].as_u64().unwrap_or(0);
                row.processing_secs += e["processing_time"].as_f64().unwrap_or(0.0) / 1e9;
            }
        }
        rows.into_values().collect()
    }
}

/// Whether a report says the app runs at its site at the generation it should.
fn runs(a: &AppRecord, r: &AppStatusReport) -> bool {
    let target = a.rollout.as_ref().and_then(|ro| ro.held.get(&r.site).copied()).unwrap_or(a.generation);
    r.app == a.spec.name && a.sites.contains(&r.site) && r.phase == Phase::Running && r.generation == target
}

/// Most distinct versions with series of their own; the rest count under `other`.
const MAX_VERSIONS: usize = 32;

/// A version as a metric label: bounded in length and in kinds (a site reports what it likes).
fn version_label(v: &str) -> String {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let v: String = v.chars().filter(|c| c.is_ascii_alphanumeric() || "._+-".contains(*c)).take(64).collect();
    if v.is_empty() {
        return "unknown".into();
    }
    let mut seen = SEEN.lock().expect("versions lock");
    if seen.contains(&v) {
        return v;
    }
    if seen.len() < MAX_VERSIONS {
        seen.push(v.clone());
        return v;
    }
    "other".into()
}
