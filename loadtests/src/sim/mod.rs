//! The site simulator: thousands of lightweight simulated sites beside real leaf sites. Each
//! simulated site is its own NATS connection to the hub, runs the site-manager's decision code
//! over a simulated container runtime ([`site::SimSite`]) and sends heartbeats like a real one.
//!
//! What differs from a real site, and why: a site is a leaf server with its own JetStream
//! domain, which the hub sources from; thousands of nats-server processes do not fit on one
//! machine, so a simulated site reads its desired state from the hub directly (an ordered
//! consumer filtered to the site, as the leaf's source is) and publishes its status to the
//! hub's bridge stream `SIM_EVENTS`, which the hub's SITE_EVENTS sources with the `sim.` prefix
//! removed. The scheduler cannot tell the reports apart from a leaf's. Simulated sites are
//! registered by writing their records to `edge_sites` (registration through events would make
//! the hub source a domain that does not exist).

pub mod runtime;
pub mod site;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer, stream};
use dashmap::DashMap;
use edge_bus::topology::{self, STREAM_SITE_EVENTS};
use edge_types::site::{HostInventory, SiteRecord};
use edge_types::{subject, Name};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Subject prefix of simulated sites' events, stripped when the hub's SITE_EVENTS sources them.
pub const EVENTS_PREFIX: &str = "sim";
/// The hub stream that holds simulated sites' events until SITE_EVENTS has sourced them.
pub const BRIDGE_STREAM: &str = "SIM_EVENTS";

/// When each simulated site received and reported each generation of each app.
#[derive(Default)]
pub struct Progress {
    /// (site, app, generation) -> first time the site received it.
    received: DashMap<(Name, Name, u64), Instant>,
    /// Desired-state consumers created (a site's consumer counts again after a re-subscribe).
    pub following: AtomicU64,
    /// Desired-state messages a simulated site refused.
    pub rejected: AtomicU64,
}

impl Progress {
    fn received(&self, site: &Name, app: &Name, generation: u64) {
        self.received.entry((site.clone(), app.clone(), generation)).or_insert_with(Instant::now);
    }

    /// When each site received `generation` of `app`.
    pub fn received_at(&self, app: &Name, generation: u64) -> Vec<Instant> {
        self.received.iter().filter(|e| &e.key().1 == app && e.key().2 == generation).map(|e| *e.value()).collect()
    }
}

/// Makes the hub's SITE_EVENTS source the simulated sites' bridge stream (idempotent).
pub async fn ensure_bridge(js: &jetstream::Context) -> Result<()> {
    js.get_or_create_stream(stream::Config {
        name: BRIDGE_STREAM.into(),
        description: Some("Events of simulated sites (benchmarks only)".into()),
        subjects: vec![format!("{EVENTS_PREFIX}.{}", subject::site_events_all())],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .context("creating the bridge stream")?;
    let mut events = js.get_stream(STREAM_SITE_EVENTS).await.context("reading SITE_EVENTS")?;
    let mut config = events.info().await?.config.clone();
    let sources = config.sources.get_or_insert_with(Vec::new);
    if !sources.iter().any(|s| s.name == BRIDGE_STREAM) {
        sources.push(stream::Source {
            name: BRIDGE_STREAM.into(),
            subject_transforms: vec![stream::SubjectTransform {
                source: format!("{EVENTS_PREFIX}.{}", subject::site_events_all()),
                destination: subject::site_events_all(),
            }],
            ..Default::default()
        });
        js.update_stream(config).await.context("making SITE_EVENTS source the bridge stream")?;
    }
    Ok(())
}

/// The one host of every simulated site.
pub fn sim_host() -> HostInventory {
    serde_json::from_value(serde_json::json!({
        "host": "h1", "arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux", "cpus": 4, "memory_bytes": 8u64 << 30, "disk_bytes": 64u64 << 30,
    }))
    .expect("a valid host")
}

/// A simulated site's record, as registration would store it.
pub fn site_record(site: &Name) -> SiteRecord {
    serde_json::from_value(serde_json::json!({
        "site": site, "reported_labels": {"fleet": "sim"}, "hosts": [sim_host()],
        "agent_version": "simulated", "registered_at_ms": edge_bus::time::now_ms(),
    }))
    .expect("a valid site record")
}

/// Writes the records of `sites` into the hub's `edge_sites`, many at once.
pub async fn register(buckets: &topology::HubBuckets, sites: &[Name]) -> Result<()> {
    let puts = sites.iter().map(|s| {
        let kv = buckets.sites.clone();
        async move {
            let body = serde_json::to_vec(&site_record(s)).expect("records serialize");
            kv.put(s.as_str(), body.into()).await.map(|_| ())
        }
    });
    let results: Vec<_> = futures::stream::iter(puts).buffer_unordered(256).collect().await;
    for r in results {
        r.context("registering a simulated site")?;
    }
    Ok(())
}

/// Running simulated sites.
pub struct Fleet {
    pub sites: Vec<Name>,
    clients: Vec<async_nats::Client>,
    pub progress: Arc<Progress>,
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

/// How the simulated sites behave.
#[derive(Clone, Copy, Debug)]
pub struct FleetOptions {
    pub heartbeat: Duration,
    /// Simulated time a container takes to start.
    pub start_delay: Duration,
}

impl Fleet {
    /// Connects every site (its own connection), then starts following desired state and
    /// sending heartbeats. Returns once every site's consumer exists.
    pub async fn start(hub_url: &str, creds: &std::path::Path, sites: Vec<Name>, opts: FleetOptions) -> Result<Self> {
        let creds = std::fs::read_to_string(creds).context("reading the simulated sites' credentials")?;
        let connects = sites.iter().map(|s| {
            let options = async_nats::ConnectOptions::with_credentials(&creds)
                .expect("credentials checked by the hub's start")
                .name(format!("sim-{s}"))
                .read_buffer_capacity(4096)
                .client_capacity(256)
                .subscription_capacity(1024);
            let url = hub_url.to_string();
            async move { options.connect(url).await }
        });
        let clients: Vec<async_nats::Client> = futures::stream::iter(connects)
            .buffered(64)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .context("connecting simulated sites")?;
        let progress = Arc::new(Progress::default());
        let shutdown = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let host = sim_host();
        for (name, client) in sites.iter().zip(&clients) {
            let s = site::SimSite::new(name.clone(), host.clone(), client.clone(), opts.start_delay, progress.clone());
            tasks.spawn(s.run(shutdown.clone()));
        }
        tasks.spawn(heartbeats(sites.clone(), clients.clone(), opts.heartbeat, shutdown.clone()));
        let fleet = Self { sites, clients, progress, shutdown, tasks };
        let start = Instant::now();
        while fleet.progress.following.load(Ordering::Relaxed) < fleet.sites.len() as u64 {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(300),
                "{} of {} simulated sites are following their desired state",
                fleet.progress.following.load(Ordering::Relaxed),
                fleet.sites.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(fleet)
    }

    /// The raw ceiling's far end: each site follows stream `stream_name` filtered to `filter`
    /// (in both, `{site}` is replaced by the site and `{shard}` by [`shard_of`] the site) and
    /// answers each message on `<ack_prefix>.<site>.<stream>` (core NATS), nothing else.
    pub async fn start_echo(&mut self, stream_name: &str, filter: &str, ack_prefix: &str) -> Result<()> {
        let ready = Arc::new(AtomicU64::new(0));
        for (site, client) in self.sites.iter().zip(&self.clients) {
            let (client, ready, shutdown) = (client.clone(), ready.clone(), self.shutdown.clone());
            let fill = |t: &str| t.replace("{site}", site.as_str()).replace("{shard}", &shard_of(site).to_string());
            let stream_name = fill(stream_name);
            let (filter, ack) = (fill(filter), format!("{ack_prefix}.{site}.{stream_name}"));
            self.tasks.spawn(async move {
                let js = topology::hub_js(&client);
                let consumer = match js.get_stream_no_info(&stream_name).await {
                    Ok(s) => s
                        .create_consumer(consumer::push::OrderedConfig {
                            deliver_subject: client.new_inbox(),
                            filter_subject: filter,
                            ..Default::default()
                        })
                        .await
                        .ok(),
                    Err(_) => None,
                };
                let Some(consumer) = consumer else { return };
                let Ok(mut messages) = consumer.messages().await else { return };
                ready.fetch_add(1, Ordering::Relaxed);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = messages.next() => match m {
                            Some(Ok(m)) => { let _ = client.publish(ack.clone(), m.payload.clone()).await; }
                            _ => return,
                        },
                    }
                }
            });
        }
        let start = Instant::now();
        while ready.load(Ordering::Relaxed) < self.sites.len() as u64 {
            anyhow::ensure!(start.elapsed() < Duration::from_secs(300), "echo consumers not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Stops every site and closes the connections.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        for c in self.clients.drain(..) {
            drop(c);
        }
    }
}

/// Shards of the sharded raw ceiling: as many as the hub's desired state has.
pub const SHARDS: usize = edge_types::subject::DESIRED_SHARDS as usize;

/// The shard of a site in the sharded raw ceiling: its desired-state shard.
pub fn shard_of(site: &Name) -> usize {
    edge_types::subject::desired_shard(site) as usize
}

/// Every site's heartbeat, through the site's own connection, spread over the interval.
async fn heartbeats(sites: Vec<Name>, clients: Vec<async_nats::Client>, every: Duration, shutdown: CancellationToken) {
    const BATCH: usize = 100;
    let batches = sites.len().div_ceil(BATCH).max(1);
    let pause = every / batches as u32;
    let host = Name::new("h1").expect("a valid host name");
    loop {
        for (names, conns) in sites.chunks(BATCH).zip(clients.chunks(BATCH)) {
            for (site, client) in names.iter().zip(conns) {
                let hb = edge_types::site::Heartbeat {
                    site: site.clone(),
                    host: host.clone(),
                    sent_at_ms: edge_bus::time::now_ms(),
                    interval_ms: every.as_millis() as u64,
                    buffer: None,
                    leaf_recoveries: 0,
                    secrets_refused: 0,
                    telemetry_buffer: None,
                    topics: Vec::new(),
                };
                let body = serde_json::to_vec(&hb).expect("heartbeats serialize");
                let _ = client.publish(subject::heartbeat(site), body.into()).await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
