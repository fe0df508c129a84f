//! Placement at fleet scale (issue 4): every (app, site) decision of `apps` applications over
//! `sites` sites (about 10% selectivity), computed with the scheduler's own selection code, then
//! every match written durably to the hub's DESIRED stream with the scheduler's `DesiredWriter`,
//! beside the raw JetStream publish rate of the same number of messages of the same size (the
//! ceiling) into a plain stream and into one configured like DESIRED, each on a fresh server in
//! the same run.

use std::future::IntoFuture;
use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use async_nats::jetstream::{message::PublishMessage, stream};
use edge_bus::topology;
use edge_testkit::NatsServer;

use crate::procs::cpu_secs;
use edge_types::app::AppSpec;
use edge_types::desired::DesiredApp;
use edge_types::policy::Policy;
use edge_types::selector::LabelOrders;
use edge_types::site::{Labels, SiteRecord};
use futures::stream::{FuturesUnordered, StreamExt};
use scheduler::placement::select_sites;
use scheduler::writer::DesiredWriter;
use serde_json::json;

/// The order `size >= medium` is compared by, as an operator would declare it.
const ORDERS: &str = "size=small<medium<large";
const REGIONS: [&str; 6] = ["eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-east"];
const SIZES: [&str; 3] = ["small", "medium", "large"];
const TIERS: [&str; 3] = ["prod", "staging", "lab"];
const CPUS: [u32; 4] = [2, 4, 8, 16];
/// Steps coprime with 100, so `start + k * step (mod 100)` picks distinct customers.
const STEPS: [u64; 8] = [1, 3, 7, 9, 11, 13, 17, 19];

/// Figures of one run.
pub struct PlacementRun {
    pub apps: usize,
    pub sites: usize,
    /// Every (app, site) pair: `apps * sites`.
    pub decisions: u64,
    /// Pairs the policy selected.
    pub matched: u64,
    /// All decisions with `scheduler::placement::select_sites` (labels merged per call).
    pub select_sites: Duration,
    /// All decisions with each site's labels merged once, then `Selector::matches_in`, and the
    /// policy's whole check only where the labels match.
    pub precomputed: Duration,
    /// The write pass: decide and write every match, until the last ack.
    pub write_pass: Pass,
    /// Desired states acked as stored (none may be a duplicate on a fresh stream).
    pub written: u64,
    pub payload_bytes: u64,
    /// Raw JetStream publish of `written` messages of the same average size, same window.
    pub ceiling: Pass,
    /// The same into a stream configured as DESIRED, with a subject and message id per message.
    pub like_desired: Pass,
    pub window: usize,
}

impl PlacementRun {
    pub fn rate(&self, n: u64, d: Duration) -> f64 {
        n as f64 / d.as_secs_f64().max(1e-9)
    }

    pub fn avg_payload(&self) -> usize {
        (self.payload_bytes / self.written.max(1)) as usize
    }
}

/// Wall time of a pass and the CPU seconds the hub and this process spent in it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pass {
    pub wall: Duration,
    pub hub_cpu: f64,
    pub client_cpu: f64,
}

/// Measures from creation to [`Meter::stop`].
pub(crate) struct Meter {
    hub: u32,
    start: Instant,
    hub0: f64,
    client0: f64,
}

impl Meter {
    pub(crate) fn start(hub: u32) -> Self {
        Self { hub, start: Instant::now(), hub0: cpu_secs(hub), client0: cpu_secs(std::process::id()) }
    }

    pub(crate) fn stop(self) -> Pass {
        Pass {
            wall: self.start.elapsed(),
            hub_cpu: cpu_secs(self.hub) - self.hub0,
            client_cpu: cpu_secs(std::process::id()) - self.client0,
        }
    }
}

/// SplitMix64: deterministic, well-spread synthetic data without a dependency.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn pick<T: Copy>(values: &[T], h: u64) -> T {
    values[(h % values.len() as u64) as usize]
}

/// Site `i` (built from JSON, so fields added later with defaults need no change here): it
/// reports region, size and cpus itself; customer and tier are set centrally.
fn site(i: usize) -> Result<SiteRecord> {
    let h = mix(i as u64);
    let cpus = pick(&CPUS, h >> 32);
    Ok(serde_json::from_value(json!({
        "site": format!("site-{i:05}"),
        "reported_labels": {
            "region": pick(&REGIONS, h >> 8),
            "size": pick(&SIZES, h >> 16),
            "cpus": cpus.to_string(),
        },
        "labels": { "customer": format!("c{}", h % 100), "tier": pick(&TIERS, h >> 24) },
        "hosts": [{
            "host": "host-1", "arch": "amd64", "os": "linux", "cpus": cpus,
            "memory_bytes": u64::from(cpus) << 32, "disk_bytes": 256u64 << 30,
        }],
        "agent_version": "0.1.0",
        "registered_at_ms": 1_764_000_000_000u64,
    }))?)
}

/// `n` distinct customers, chosen by `h`.
fn customers(h: u64, n: u64) -> String {
    let (start, step) = (h % 100, pick(&STEPS, h >> 8));
    (0..n).map(|k| format!("c{}", (start + k * step) % 100)).collect::<Vec<_>>().join(", ")
}

/// App `j`: two services with resource limits, and one of three site selectors that each
/// select about 10% of the sites.
fn app(j: usize) -> Result<AppSpec> {
    let h = mix((j as u64) | 1 << 40);
    let sites = match j % 3 {
        // 15% of customers x 2/3 of sizes
        0 => format!("customer in ({}), size >= medium", customers(h, 15)),
        // 20% x 2/3 of tiers x 3/4 of CPU counts
        1 => format!("customer in ({}), tier != lab, cpus >= 4", customers(h, 20)),
        // 2 of 6 regions x 30% of customers
        _ => {
            let r = (h >> 16) as usize % REGIONS.len();
            let regions = format!("{}, {}", REGIONS[r], REGIONS[(r + 3) % REGIONS.len()]);
            format!("region in ({regions}), customer in ({})", customers(h, 30))
        }
    };
    let name = format!("app-{j:04}");
    Ok(serde_json::from_value(json!({
        "name": name,
        "version": format!("1.{}.0", j % 7),
        "services": [
            {
                "name": "web", "image": "edge/busybox:v1", "command": ["httpd", "-f", "-p", "8080"],
                "env": { "APP": name, "LOG_LEVEL": "info" },
                "ports": [{ "container": 8080, "host": 18080 }],
                "resources": { "cpus": 0.25, "memory_mb": 64 },
            },
            {
                "name": "worker", "image": "edge/busybox:v1", "command": ["sleep", "3600"],
                "resources": { "cpus": 0.1, "memory_mb": 32 }, "replicas": 2,
            },
        ],
        "placement": { "sites": sites },
    }))?)
}

/// Decides every pair with each site's labels merged once, then only the sites whose labels
/// match go through the policy's whole check (hosts and capacity): the count of matches.
fn decide_precomputed(specs: &[AppSpec], policies: &[Policy], orders: &LabelOrders, sites: &[SiteRecord]) -> u64 {
    let labels: Vec<Labels> = sites.iter().map(SiteRecord::effective_labels).collect();
    let mut matched = 0;
    for (spec, policy) in specs.iter().zip(policies) {
        for (site, l) in sites.iter().zip(&labels) {
            if policy.sites.matches_in(l, orders) && policy.hosts_fit(spec, site, orders) {
                matched += 1;
            }
        }
    }
    matched
}

/// Decides and writes every match to DESIRED on a fresh hub, the way a full placement pass
/// would: returns the pass's wall time, messages acked and payload bytes.
async fn write_pass(
    specs: &[AppSpec],
    policies: &[Policy],
    orders: &LabelOrders,
    sites: &[SiteRecord],
    window: usize,
) -> Result<(Pass, u64, u64)> {
    let hub = NatsServer::hub().await?;
    let client = hub.connect().await?;
    let js = topology::hub_js(&client);
    topology::ensure_hub(&js).await?;
    let mut writer = DesiredWriter::new(js.clone(), window);

    let meter = Meter::start(hub.pid().unwrap_or(0));
    let labels: Vec<Labels> = sites.iter().map(SiteRecord::effective_labels).collect();
    for (spec, policy) in specs.iter().zip(policies) {
        let mut d: Option<DesiredApp> = None;
        for (site, l) in sites.iter().zip(&labels) {
            if policy.sites.matches_in(l, orders) && policy.hosts_fit(spec, site, orders) {
                // What the scheduler writes: one whole state per selected site.
                let d = match d.as_mut() {
                    Some(d) => d,
                    None => d.insert(serde_json::from_value(
                        json!({"site": site.site, "app": spec.name, "generation": 1, "spec": spec}),
                    )?),
                };
                d.site = site.site.clone();
                writer.write(d, 0).await?;
            }
        }
    }
    writer.flush().await?;
    let pass = meter.stop();

    ensure!(writer.duplicates() == 0, "{} desired states were duplicates on a fresh stream", writer.duplicates());
    let mut stored = 0;
    for shard in topology::desired_shards() {
        stored += js.get_stream(topology::desired_stream(shard)).await?.info().await?.state.messages;
    }
    ensure!(stored == writer.written(), "the desired state holds {stored} messages, {} were acked", writer.written());
    Ok((pass, writer.written(), writer.payload_bytes()))
}

/// The stream a ceiling publishes to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ceiling {
    /// A plain file stream, one subject, no message ids: what JetStream does at least per message.
    Plain,
    /// A file stream configured as DESIRED (one message per subject, its dedupe window),
    /// a subject and a `Nats-Msg-Id` of the same shape per message.
    LikeDesired,
}

/// Raw JetStream publish of `n` messages of `size` bytes on a fresh hub, with the same ack
/// window and checks as the writer, but no decisions and no serialization.
async fn ceiling(kind: Ceiling, n: u64, size: usize, window: usize) -> Result<Pass> {
    let hub = NatsServer::hub().await?;
    let client = hub.connect().await?;
    let js = topology::hub_js(&client);
    let like = kind == Ceiling::LikeDesired;
    js.create_stream(stream::Config {
        name: "RAW".into(),
        subjects: vec!["bench.>".into()],
        storage: stream::StorageType::File,
        max_messages_per_subject: if like { 1 } else { 0 },
        duplicate_window: if like { topology::DESIRED_DEDUPE_WINDOW } else { Duration::from_secs(120) },
        allow_direct: like,
        ..Default::default()
    })
    .await?;
    let msg = PublishMessage::build().payload(vec![b'x'; size].into());
    let window = window.clamp(1, DesiredWriter::MAX_WINDOW);
    let mut acks = FuturesUnordered::new();
    let meter = Meter::start(hub.pid().unwrap_or(0));
    for i in 0..n {
        while acks.len() >= window {
            acks.next().await.expect("non-empty")?;
        }
        let (subject, msg) = if like {
            let (site, app) = (i % 10_000, i / 10_000);
            let id = format!("desired.site-{site:05}.app-{app:04}.1.put.0");
            (format!("bench.v1.desired.site-{site:05}.app-{app:04}"), msg.clone().message_id(id))
        } else {
            ("bench.raw".to_string(), msg.clone())
        };
        acks.push(js.send_publish(subject, msg).await?.into_future());
    }
    while let Some(ack) = acks.next().await {
        ensure!(!ack?.duplicate, "a raw message was taken for a duplicate");
    }
    let pass = meter.stop();
    let stored = js.get_stream("RAW").await?.info().await?.state.messages;
    ensure!(stored == n, "RAW holds {stored} messages, {n} were acked");
    Ok(pass)
}

pub async fn run(apps: usize, sites: usize, window: usize) -> Result<PlacementRun> {
    ensure!(apps > 0 && sites > 0, "need at least one app and one site");
    let orders = LabelOrders::parse(ORDERS).map_err(anyhow::Error::msg)?;
    let site_records = (0..sites).map(site).collect::<Result<Vec<_>>>()?;
    let specs = (0..apps).map(app).collect::<Result<Vec<_>>>()?;
    let mut policies = Vec::with_capacity(apps);
    for spec in &specs {
        let policy = spec.check()?;
        policy.check_orders(&orders)?;
        policies.push(policy);
    }
    let decisions = (apps * sites) as u64;

    let start = Instant::now();
    let mut matched = 0u64;
    for (spec, policy) in specs.iter().zip(&policies) {
        matched += black_box(select_sites(spec, policy, &orders, &site_records)).len() as u64;
    }
    let select_time = start.elapsed();
    eprintln!("placement: select_sites decided {decisions} pairs in {select_time:?}, {matched} matched");

    let start = Instant::now();
    let matched_pre = decide_precomputed(&specs, black_box(&policies), &orders, black_box(&site_records));
    let precomputed = start.elapsed();
    if matched_pre != matched {
        bail!("precomputed labels matched {matched_pre} pairs, select_sites {matched}");
    }
    eprintln!("placement: precomputed labels decided {decisions} pairs in {precomputed:?}");

    let (pass, written, payload_bytes) = write_pass(&specs, &policies, &orders, &site_records, window).await?;
    ensure!(written == matched, "wrote {written} desired states for {matched} matches");
    eprintln!("placement: wrote {written} desired states: {pass:?}");

    let avg = (payload_bytes / written.max(1)) as usize;
    let raw = ceiling(Ceiling::Plain, written, avg, window).await?;
    eprintln!("placement: raw JetStream published {written} x {avg} B: {raw:?}");
    let like = ceiling(Ceiling::LikeDesired, written, avg, window).await?;
    eprintln!("placement: raw JetStream published {written} x {avg} B, stream like DESIRED: {like:?}");

    Ok(PlacementRun {
        apps,
        sites,
        decisions,
        matched,
        select_sites: select_time,
        precomputed,
        write_pass: pass,
        written,
        payload_bytes,
        ceiling: raw,
        like_desired: like,
        window: window.clamp(1, DesiredWriter::MAX_WINDOW),
    })
}
