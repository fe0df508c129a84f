//! Rollout to a fleet: the central services as their own processes (release builds) on a real
//! hub, `sites` simulated sites (see [`crate::sim`]) and a few real leaf sites, each a leaf
//! nats-server with its site-manager process running real containers. An app is applied to
//! every site, then changed; measured from the change's apply request to each site's report
//! of the new version running being stored at the hub (what `edgectl app status` shows).
//! Beside it, the ceiling on the same hub and connections: a plain stream, one message per
//! site, each site's consumer echoing it back on core NATS. Then the resident memory of every
//! central service and of the hub at this fleet size.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use async_nats::jetstream::{kv, stream};
use dashmap::DashMap;
use edge_bus::api::request;
use edge_bus::topology;
use edge_testkit::NatsServer;
use edge_types::api::ApplyReply;
use edge_types::status::{AppStatusReport, Phase};
use edge_types::subject::ApiOp;
use edge_types::Name;
use futures::StreamExt;
use std::sync::Arc;

use crate::procs::{self, Service};
use crate::sim::{self, Fleet, FleetOptions};

/// The image the real leaf sites run (built by `make setup`).
const IMAGE: &str = "edge/busybox:v1";
const APP: &str = "fleet";

pub struct FleetRun {
    pub sites: usize,
    pub leaf_sites: usize,
    /// Connecting every simulated site and creating its consumer.
    pub setup: Duration,
    /// The first version, from apply to every site's running report at the hub.
    pub first_all: Duration,
    /// The change's apply request until its reply (placement and desired states written).
    pub apply_reply: Duration,
    /// Per simulated site, from the change's apply request: desired state received.
    pub received: Vec<Duration>,
    /// Per site (simulated and real), from the change's apply request: running report at the hub.
    pub acked: Vec<Duration>,
    /// Per real leaf site, the same.
    pub leaf_acked: Vec<Duration>,
    /// The ceilings: per site, from the first publish to its echo back.
    pub raw: RawRounds,
    /// Hub CPU seconds from the change's apply to the last acknowledgement.
    pub hub_cpu: f64,
    pub window: Duration,
    /// Resident memory after the change settled: each central service, then the hub.
    pub memory: Vec<(String, u64)>,
}

impl FleetRun {
    /// Time until `share` of all sites had acknowledged.
    pub fn quantile(v: &[Duration], total: usize, share: f64) -> Option<Duration> {
        let need = ((total as f64) * share).ceil().max(1.0) as usize;
        v.get(need - 1).copied()
    }
}

fn app_spec(version: &str) -> serde_json::Value {
    serde_json::json!({
        "name": APP, "version": version,
        "placement": {"sites": ""},
        "services": [{
            "name": "main", "image": IMAGE, "command": ["sleep", "3600"],
            "env": {"VERSION": version},
            "resources": {"cpus": 0.1, "memory_mb": 16},
        }],
    })
}

/// A leaf site with its site-manager process; dropped (also when the run fails), it stops the
/// site-manager and removes the containers it ran.
struct Leaf {
    name: Name,
    _server: NatsServer,
    manager: Service,
}

impl Drop for Leaf {
    fn drop(&mut self) {
        self.manager.kill();
        edge_testkit::remove_site_containers(self.name.as_str());
    }
}

pub async fn run(n: usize, leaves: usize, opts: FleetOptions) -> Result<FleetRun> {
    let hub = NatsServer::hub().await?;
    let client = hub.connect().await?;
    let js = topology::hub_js(&client);
    let buckets = topology::ensure_hub(&js).await?;
    sim::ensure_bridge(&js).await?;
    let sites: Vec<Name> = (0..n).map(|i| Name::site(format!("sim-{i:05}"))).collect::<Result<_, _>>()?;
    sim::register(&buckets, &sites).await?;

    let dir = tempfile::tempdir()?;
    let url = hub.url();
    let services = vec![
        Service::start(
            "scheduler",
            "scheduler",
            &[
                ("SCHEDULER_NATS_URL", url.clone()),
                ("SCHEDULER_NATS_CREDS", hub.user_creds("scheduler")?.display().to_string()),
                ("SCHEDULER_IMAGES_FROM_HOSTS", IMAGE.into()),
            ],
        )?,
        Service::start(
            "secrets",
            "secrets",
            &[
                ("SECRETS_NATS_URL", url.clone()),
                ("SECRETS_NATS_CREDS", hub.user_creds("secrets")?.display().to_string()),
                ("SECRETS_MASTER_KEY_FILE", dir.path().join("master.key").display().to_string()),
                ("SECRETS_CREATE_MASTER_KEY", "true".into()),
            ],
        )?,
        Service::start(
            "telemetry",
            "telemetry",
            &[
                ("TELEMETRY_NATS_URL", url.clone()),
                ("TELEMETRY_NATS_CREDS", hub.user_creds("telemetry")?.display().to_string()),
                ("TELEMETRY_LISTEN", format!("127.0.0.1:{}", edge_bus::natsconf::free_port()?)),
                ("TELEMETRY_MAX_SITES", (2 * (n + leaves)).max(10_000).to_string()),
            ],
        )?,
        Service::start(
            "registry-sync",
            "registry-sync",
            &[
                ("REGISTRY_SYNC_NATS_URL", url.clone()),
                ("REGISTRY_SYNC_NATS_CREDS", hub.user_creds("registry-sync")?.display().to_string()),
            ],
        )?,
    ];
    for s in &services {
        procs::wait_healthy(&client, &s.name, Duration::from_secs(60)).await?;
    }

    let mut leaf_sites = Vec::new();
    for i in 0..leaves {
        let name = Name::site(format!("leaf-{}-{i}", std::process::id()))?;
        let server = NatsServer::leaf(name.as_str(), &hub).await?;
        let manager = procs::start_site_manager(&name, &server, &dir.path().join(name.as_str()))?;
        leaf_sites.push(Leaf { name, _server: server, manager });
    }

    let start = Instant::now();
    let mut fleet = Fleet::start(&url, hub.creds(), sites.clone(), opts).await?;
    let setup = start.elapsed();
    eprintln!("fleet: {n} simulated sites following their desired state after {setup:.1?}");
    for leaf in &leaf_sites {
        let deadline = Instant::now() + Duration::from_secs(60);
        while buckets.sites.get(leaf.name.as_str()).await?.is_none() {
            ensure!(Instant::now() < deadline, "leaf site {} never registered", leaf.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let total = n + leaves;
    let app = Name::new(APP)?;

    // The first version: a new app at every site.
    let acks = watch_running(&buckets.status, &app).await?;
    let t1 = Instant::now();
    let first = match apply(&client, "1").await {
        Ok(r) => r,
        Err(e) => {
            let log = hub.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("hub log (last lines):\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            return Err(e);
        }
    };
    wait_acked(&acks, first.generation, total, t1, Duration::from_secs(600)).await.context("first version")?;
    let first_all = t1.elapsed();
    eprintln!("fleet: version 1 running at all {total} sites after {first_all:.1?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The change.
    let hub_pid = hub.pid().unwrap_or(0);
    let cpu0 = procs::cpu_secs(hub_pid);
    let t0 = Instant::now();
    let reply = apply(&client, "2").await?;
    let apply_reply = t0.elapsed();
    ensure!(reply.changed && reply.sites.len() == total, "the change reached {} of {total} sites", reply.sites.len());
    wait_acked(&acks, reply.generation, total, t0, Duration::from_secs(600)).await.context("the change")?;
    let window = t0.elapsed();
    let hub_cpu = procs::cpu_secs(hub_pid) - cpu0;
    let since = |at: Instant| at.saturating_duration_since(t0);
    let mut acked: Vec<Duration> = Vec::new();
    let mut leaf_acked: Vec<Duration> = Vec::new();
    for e in acks.iter().filter(|e| e.value().0 == reply.generation) {
        acked.push(since(e.value().1));
        if leaf_sites.iter().any(|l| &l.name == e.key()) {
            leaf_acked.push(since(e.value().1));
        }
    }
    let mut received: Vec<Duration> =
        fleet.progress.received_at(&app, reply.generation).into_iter().map(since).collect();
    acked.sort();
    leaf_acked.sort();
    received.sort();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut memory: Vec<(String, u64)> = services.iter().map(|s| (s.name.clone(), s.rss())).collect();
    memory.push(("nats-server (hub)".into(), procs::rss_bytes(hub_pid)));
    let rejected = fleet.progress.rejected.load(std::sync::atomic::Ordering::Relaxed);
    ensure!(rejected == 0, "simulated sites refused {rejected} desired-state messages");

    let raw = if n > 0 { raw_ceiling(&client, &mut fleet).await? } else { Default::default() };

    fleet.stop().await;
    for s in services {
        s.stop(Duration::from_secs(10)).await;
    }
    drop(leaf_sites);
    Ok(FleetRun {
        sites: n,
        leaf_sites: leaves,
        setup,
        first_all,
        apply_reply,
        received,
        acked,
        leaf_acked,
        raw,
        hub_cpu,
        window,
        memory,
    })
}

async fn apply(client: &async_nats::Client, version: &str) -> Result<ApplyReply> {
    request::<_, ApplyReply>(client, ApiOp::AppApply, &app_spec(version), Duration::from_secs(120))
        .await
        .with_context(|| format!("applying version {version}"))
}

/// Per site: the newest generation whose running report the hub stored, and when it was seen.
type Acks = Arc<DashMap<Name, (u64, Instant)>>;

/// Follows the hub's status bucket for `app`.
async fn watch_running(status: &kv::Store, app: &Name) -> Result<Acks> {
    let acks: Acks = Arc::new(DashMap::new());
    let mut watch = status.watch(format!("{app}.>")).await?;
    let out = acks.clone();
    tokio::spawn(async move {
        while let Some(Ok(entry)) = watch.next().await {
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let Ok(r) = serde_json::from_slice::<AppStatusReport>(&entry.value) else { continue };
            if r.phase == Phase::Running {
                let newer = out.get(&r.site).is_none_or(|cur| cur.0 < r.generation);
                if newer {
                    out.insert(r.site.clone(), (r.generation, Instant::now()));
                }
            }
        }
    });
    Ok(acks)
}

async fn wait_acked(acks: &Acks, generation: u64, total: usize, from: Instant, limit: Duration) -> Result<()> {
    loop {
        let done = acks.iter().filter(|e| e.value().0 >= generation).count();
        if done >= total {
            return Ok(());
        }
        if from.elapsed() > limit {
            bail!("{done} of {total} sites report generation {generation} running after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The ceilings: one message per site into a plain stream on the same hub (acked), each
/// delivered to that site's consumer over its own connection and echoed back on core NATS.
/// First with a literal filter per site (`raw.<site>`: the server finds a site's next message
/// through its per-subject index), then with a wildcard filter per site in one stream
/// (`rawwc.<site>.>`, subject `rawwc.<site>.app`, one message per subject), twice: the second
/// round replaces the first round's messages, as a change of a placed app does; then the same two
/// rounds with the sites spread over as many streams as the hub's desired state has shards
/// (`rawsh.<shard>.<site>.>`, each site in its desired-state shard), the layout of the hub's
/// desired state: the like-for-like ceiling of a change.
async fn raw_ceiling(client: &async_nats::Client, fleet: &mut Fleet) -> Result<RawRounds> {
    let mut js = topology::hub_js(client);
    // The wildcard rounds keep the hub busy for seconds at 10,000 sites.
    js.set_timeout(Duration::from_secs(60));
    // Streams like DESIRED (one message per subject, as many consumers as sites), nothing else.
    let streams = [("RAW_LITERAL".to_string(), "raw.>".to_string()), ("RAW_WILDCARD".into(), "rawwc.>".into())]
        .into_iter()
        .chain((0..sim::SHARDS).map(|k| (format!("RAW_SHARD_{k}"), format!("rawsh.{k}.>"))));
    for (name, subjects) in streams {
        js.create_stream(stream::Config {
            name,
            subjects: vec![subjects],
            storage: stream::StorageType::File,
            max_messages_per_subject: 1,
            max_consumers: topology::DESIRED_MAX_CONSUMERS,
            ..Default::default()
        })
        .await?;
    }
    fleet.start_echo("RAW_LITERAL", "raw.{site}", "rawack").await?;
    fleet.start_echo("RAW_WILDCARD", "rawwc.{site}.>", "rawack").await?;
    fleet.start_echo("RAW_SHARD_{shard}", "rawsh.{shard}.{site}.>", "rawack").await?;
    let mut echoes = client.subscribe("rawack.>").await?;
    client.flush().await?;
    let sites = &fleet.sites;
    let literal = raw_round(&js, sites, &mut echoes, "raw.{site}", b'a').await?;
    let wildcard_first = raw_round(&js, sites, &mut echoes, "rawwc.{site}.app", b'b').await?;
    let wildcard_change = raw_round(&js, sites, &mut echoes, "rawwc.{site}.app", b'c').await?;
    raw_round(&js, sites, &mut echoes, "rawsh.{shard}.{site}.app", b'd').await?;
    let sharded_change = raw_round(&js, sites, &mut echoes, "rawsh.{shard}.{site}.app", b'e').await?;
    Ok(RawRounds { literal, wildcard_first, wildcard_change, sharded_change })
}

/// One message to each site on `subject` (`{site}` replaced), until every echo is back.
async fn raw_round(
    js: &async_nats::jetstream::Context,
    sites: &[Name],
    echoes: &mut async_nats::Subscriber,
    subject: &str,
    fill: u8,
) -> Result<Vec<Duration>> {
    let payload = bytes::Bytes::from(vec![fill; 640]);
    let t0 = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for site in sites {
        let subject = subject.replace("{site}", site.as_str()).replace("{shard}", &sim::shard_of(site).to_string());
        acks.push(js.publish(subject, payload.clone()).await?.into_future());
        if acks.len() >= 1024 {
            acks.next().await.expect("pending")?;
        }
    }
    while let Some(a) = acks.next().await {
        a?;
    }
    let mut seen: HashMap<String, Duration> = HashMap::new();
    while seen.len() < sites.len() {
        match tokio::time::timeout(Duration::from_secs(120), echoes.next()).await {
            Ok(Some(m)) => {
                seen.entry(m.subject.to_string()).or_insert(t0.elapsed());
            }
            _ => bail!("raw fan-out: {} of {} echoes", seen.len(), sites.len()),
        }
    }
    let mut v: Vec<Duration> = seen.into_values().collect();
    v.sort();
    Ok(v)
}

/// Echo times per site of the raw ceilings, sorted.
#[derive(Default)]
pub struct RawRounds {
    pub literal: Vec<Duration>,
    pub wildcard_first: Vec<Duration>,
    pub wildcard_change: Vec<Duration>,
    /// The wildcard change again with the sites spread over [`sim::SHARDS`] streams, each site
    /// following only its shard's.
    pub sharded_change: Vec<Duration>,
}
