//! Reconnect storm: N real leaf sites, each with its site-manager, lose the hub (killed) while
//! they go on recording events; the hub comes back, a new desired state is applied at once, and
//! we measure until every site is connected, every event is at the hub exactly once, and every
//! site holds the new desired state, with the hub's CPU time over that window.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use async_nats::jetstream::{self, consumer};
use edge_bus::api::request;
use edge_bus::topology::{self, STREAM_DESIRED, STREAM_SITE_EVENTS};
use edge_testkit::NatsServer;

use crate::procs::cpu_secs;
use edge_types::api::{ApplyReply, Empty, SiteListReply};
use edge_types::subject::{self, ApiOp};
use edge_types::Name;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

pub struct Storm {
    pub first_connected: Duration,
    pub median_connected: Duration,
    pub all_connected: Duration,
    pub all_events: Duration,
    pub all_desired: Duration,
    /// When the scheduler first answered an apply after the restart.
    pub applied: Duration,
    pub events: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub hub_cpu_secs: f64,
    pub window: Duration,
}

/// Events each site records while the hub is down.
const EVENTS_PER_SITE: u64 = 100;

struct Site {
    name: Name,
    /// Kept so the leaf server runs until the end.
    _leaf: NatsServer,
    js: jetstream::Context,
}

async fn sites_connected(client: &async_nats::Client) -> Result<HashSet<Name>> {
    let list: SiteListReply = request(client, ApiOp::SiteList, &Empty {}, Duration::from_secs(5)).await?;
    Ok(list.sites.into_iter().filter(|s| s.connected).map(|s| s.site).collect())
}

/// Longest a storm may take to settle.
const SETTLE: Duration = Duration::from_secs(180);

/// When each site was first seen connected after `t0`.
async fn connected_times(client: async_nats::Client, n: usize, t0: Instant) -> Result<HashMap<Name, Duration>> {
    let mut at = HashMap::new();
    while at.len() < n {
        if t0.elapsed() > SETTLE {
            bail!("storm did not settle: {} of {n} sites connected", at.len());
        }
        for s in sites_connected(&client).await.unwrap_or_default() {
            at.entry(s).or_insert(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(at)
}

/// When the hub's `SITE_EVENTS` first held `events`.
async fn events_time(hub_js: jetstream::Context, events: u64, t0: Instant) -> Result<Duration> {
    loop {
        if t0.elapsed() > SETTLE {
            bail!("storm did not settle: the hub never held the {events} events");
        }
        if let Ok(mut stream) = hub_js.get_stream(STREAM_SITE_EVENTS).await {
            if stream.info().await.is_ok_and(|i| i.state.messages >= events) {
                return Ok(t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// When each site first held `generation` of `app`.
async fn desired_times(sites: &[Site], app: &Name, generation: u64, t0: Instant) -> Result<HashMap<Name, Duration>> {
    let mut at = HashMap::new();
    while at.len() < sites.len() {
        if t0.elapsed() > SETTLE {
            bail!("storm did not settle: {} of {} sites hold the new desired state", at.len(), sites.len());
        }
        for s in sites {
            if at.contains_key(&s.name) {
                continue;
            }
            let stream = s.js.get_stream(STREAM_DESIRED).await?;
            if let Ok(m) = stream.get_last_raw_message_by_subject(&subject::desired(&s.name, app)).await {
                let d: serde_json::Value = serde_json::from_slice(&m.payload)?;
                if d["generation"] == generation {
                    at.insert(s.name.clone(), t0.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(at)
}

pub async fn run(n: usize) -> Result<Storm> {
    let mut hub = NatsServer::hub().await?;
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut sched = scheduler::Config::new(hub.url());
    sched.nats_creds = Some(hub.user_creds("scheduler")?);
    sched.site_timeout_secs = 3;
    // The storm's app names an image no host has, so that no container starts: it only
    // measures desired state reaching the sites.
    sched.images_from_hosts = vec!["edge/absent:none".into()];
    let sd = shutdown.clone();
    tasks.spawn(async move { scheduler::run(sched, sd).await.map_err(anyhow::Error::from) });

    let mut sites = Vec::new();
    for i in 0..n {
        let name = Name::site(format!("storm-{i:03}"))?;
        let leaf = NatsServer::leaf(name.as_str(), &hub).await?;
        let mut cfg = site_manager::Config::new(name.clone(), leaf.url());
        cfg.nats_creds = Some(leaf.creds().to_path_buf());
        cfg.host = Some(Name::new("h1")?);
        cfg.heartbeat_secs = 1;
        let sd = shutdown.clone();
        tasks.spawn(async move { site_manager::run(cfg, sd).await.map_err(anyhow::Error::from) });
        let js = jetstream::with_domain(leaf.connect().await?, name.as_str());
        sites.push(Site { name, _leaf: leaf, js });
    }
    let client = hub.connect().await?;
    let start = Instant::now();
    while sites_connected(&client).await.map(|s| s.len()).unwrap_or(0) < n {
        if start.elapsed() > Duration::from_secs(120) {
            bail!("the {n} sites never all connected");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    hub.stop().await;
    let mut expected: HashMap<Name, u64> = HashMap::new();
    for s in &sites {
        crate::catchup::publish(&s.js, &s.name, 0, EVENTS_PER_SITE).await?;
        let last = s.js.get_stream(STREAM_SITE_EVENTS).await?.info().await?.state.last_sequence;
        expected.insert(s.name.clone(), last);
    }
    let events: u64 = expected.values().sum();

    hub.restart().await?;
    let t0 = Instant::now();
    let pid = hub.pid().unwrap_or(0);
    let client = hub.connect().await?;
    let spec = serde_json::json!({
        "name": "storm", "version": "2",
        "services": [{"name": "main", "image": "edge/absent:none", "command": ["true"]}],
        "placement": {"sites": ""}
    });
    // Each figure is polled on its own from the restart on, so that a slow poll of one (the
    // machine also runs every site's leaf server and site-manager) does not delay the others.
    let connected = tokio::spawn(connected_times(client.clone(), n, t0));
    let all_events = tokio::spawn(events_time(topology::hub_js(&client), events, t0));
    let generation = loop {
        match request::<_, ApplyReply>(&client, ApiOp::AppApply, &spec, Duration::from_secs(5)).await {
            Ok(r) => break r.generation,
            Err(_) if t0.elapsed() < Duration::from_secs(60) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => bail!("apply after the restart failed: {e}"),
        }
    };
    let applied = t0.elapsed();
    let desired_at = desired_times(&sites, &Name::new("storm")?, generation, t0).await?;
    let connected_at = connected.await??;
    let events_at = all_events.await??;
    let window = t0.elapsed();
    let hub_cpu_secs = cpu_secs(pid);

    // Exactly once: every (site, upstream sequence) once.
    let hub_js = topology::hub_js(&client);
    let stream = hub_js.get_stream(STREAM_SITE_EVENTS).await?;
    let total = hub_js.get_stream(STREAM_SITE_EVENTS).await?.info().await?.state.messages;
    let mut msgs = stream.create_consumer(consumer::pull::OrderedConfig::default()).await?.messages().await?;
    let mut seen = HashSet::new();
    let mut duplicated = 0;
    for _ in 0..total {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next()).await?.expect("open")?;
        let src =
            m.headers.as_ref().and_then(|h| h.get("Nats-Stream-Source")).map(|v| v.to_string()).unwrap_or_default();
        let seq: u64 = src.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
        let site = match subject::parse(&m.subject) {
            Ok(subject::Subject::SiteStatus { site, .. } | subject::Subject::SiteRegistration { site }) => {
                site.to_string()
            }
            _ => String::new(),
        };
        if !seen.insert((site, seq)) {
            duplicated += 1;
        }
    }
    let lost = expected
        .iter()
        .map(|(site, last)| (1..=*last).filter(|q| !seen.contains(&(site.to_string(), *q))).count() as u64)
        .sum();

    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    // The sites made the app's network (its image is absent, so no container).
    for s in &sites {
        edge_testkit::remove_site_containers(s.name.as_str());
    }
    let mut c: Vec<Duration> = connected_at.values().copied().collect();
    c.sort();
    Ok(Storm {
        first_connected: c[0],
        median_connected: c[c.len() / 2],
        all_connected: *c.last().expect("n > 0"),
        all_events: events_at,
        all_desired: desired_at.values().copied().max().unwrap_or_default(),
        applied,
        events,
        lost,
        duplicated,
        hub_cpu_secs,
        window,
    })
}
