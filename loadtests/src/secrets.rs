//! Propagation of a rotated secret: the real `secrets` service on a real hub, an app placed at
//! `sites` simulated sites (each registered with its own xkey), and the sites themselves
//! simulated by subscribers that open every envelope with the site's key, as a site-manager
//! does. Measured from the rotation request to each site holding the new version; beside it, a
//! plain request/reply round trip on the same hub.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use edge_bus::api::request;
use edge_bus::topology;
use edge_seal::XKey;
use edge_testkit::NatsServer;
use edge_types::api::AppRecord;
use edge_types::app::AppSpec;
use edge_types::schema::decode;
use edge_types::secret::{SealedSecret, SecretInfo};
use edge_types::site::SiteRecord;
use edge_types::subject::{self, ApiOp};
use edge_types::Name;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "bench-secret";

pub struct SecretsRun {
    pub sites: usize,
    /// Per rotation: until every site held the new version.
    pub all_sites: Vec<Duration>,
    /// Per site and rotation: until that site held it.
    pub per_site: Vec<Duration>,
    /// Plain request/reply round trips on the same hub.
    pub round_trip: Vec<Duration>,
}

/// Version each simulated site opened, and when.
#[derive(Default)]
struct Opened {
    at: HashMap<Name, (u64, Instant)>,
    refused: u64,
}

pub async fn run(sites: usize, rounds: usize) -> Result<SecretsRun> {
    let hub = NatsServer::hub().await?;
    let client = hub.connect().await?;
    let js = topology::hub_js(&client);
    let buckets = topology::ensure_hub(&js).await?;

    let mut keys: HashMap<Name, XKey> = HashMap::new();
    for i in 0..sites {
        let site = Name::site(format!("site-{i:05}"))?;
        let key = XKey::new();
        let record: SiteRecord = serde_json::from_value(json!({
            "site": site, "reported_labels": {}, "hosts": [], "agent_version": "bench",
            "registered_at_ms": 1, "public_key": key.public_key(),
        }))?;
        buckets.sites.put(site.as_str(), serde_json::to_vec(&record)?.into()).await?;
        keys.insert(site, key);
    }

    // The simulated sites: open what arrives for them, two workers like two cores.
    let opened = Arc::new(Mutex::new(Opened::default()));
    let progress = Arc::new(Notify::new());
    let keys = Arc::new(keys);
    let mut envelopes = client.subscribe(subject::sealed_secret_all()).await?;
    let (tx, rx) = async_channel_pair();
    for _ in 0..2 {
        let (rx, keys, opened, progress) = (rx.clone(), keys.clone(), opened.clone(), progress.clone());
        tokio::spawn(async move {
            while let Ok(payload) = rx.recv().await {
                let result = decode::<SealedSecret>(&payload).ok().and_then(|e| {
                    let key = keys.get(&e.site)?;
                    edge_seal::site::open(key, &e.site, &e, None).ok()
                });
                let mut o = opened.lock().unwrap();
                match result {
                    Some(p) => {
                        o.at.insert(p.site, (p.version, Instant::now()));
                    }
                    None => o.refused += 1,
                }
                drop(o);
                progress.notify_one();
            }
        });
    }
    tokio::spawn(async move {
        while let Some(m) = envelopes.next().await {
            if tx.send(m.payload.to_vec()).await.is_err() {
                return;
            }
        }
    });

    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let mut config = secrets::Config::new(hub.url(), dir.path().join("master.key"));
    config.nats_creds = Some(hub.user_creds("secrets")?);
    let service = tokio::spawn(secrets::run(config, shutdown.clone()));
    let put = |op: ApiOp, value: String| {
        let client = client.clone();
        async move {
            let body = json!({"name": SECRET, "value": value, "actor": "bench"});
            request::<_, SecretInfo>(&client, op, &body, Duration::from_secs(10)).await
        }
    };
    let mut first = None;
    for _ in 0..100 {
        match put(ApiOp::SecretPut, "v1".into()).await {
            Ok(i) => {
                first = Some(i);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    ensure!(first.is_some(), "the secrets service did not answer");

    let spec: AppSpec = serde_json::from_value(json!({
        "name": "bench", "version": "1", "placement": {"sites": ""},
        "services": [{"name": "main", "image": "edge/busybox:v1", "secrets": [{"name": SECRET}]}],
    }))?;
    let record = AppRecord {
        digest: spec.digest(),
        spec,
        generation: 1,
        sites: keys.keys().cloned().collect(),
        updated_at_ms: edge_bus::time::now_ms(),
        rollout: None,
        images: Default::default(),
    };
    buckets.apps.put("app.bench", serde_json::to_vec(&record)?.into()).await?;
    wait_all(&opened, &progress, sites, 1, Duration::from_secs(60)).await.context("first delivery")?;
    eprintln!("secrets: version 1 at all {sites} sites");

    let (mut all_sites, mut per_site) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let version = round as u64 + 2;
        let start = Instant::now();
        put(ApiOp::SecretRotate, format!("v{version}")).await?;
        wait_all(&opened, &progress, sites, version, Duration::from_secs(30)).await?;
        all_sites.push(start.elapsed());
        let o = opened.lock().unwrap();
        per_site.extend(o.at.values().map(|(_, at)| at.duration_since(start)));
    }
    ensure!(opened.lock().unwrap().refused == 0, "simulated sites refused envelopes");

    // The baseline: a plain request/reply round trip through the same hub.
    let mut echo = client.subscribe("bench.echo").await?;
    let responder = client.clone();
    tokio::spawn(async move {
        while let Some(m) = echo.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, m.payload).await;
            }
        }
    });
    let mut round_trip = Vec::new();
    for _ in 0..1_000 {
        let start = Instant::now();
        client.request("bench.echo", "ping".into()).await?;
        round_trip.push(start.elapsed());
    }

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), service).await;
    all_sites.sort();
    per_site.sort();
    round_trip.sort();
    Ok(SecretsRun { sites, all_sites, per_site, round_trip })
}

/// Waits until every site opened `version`.
async fn wait_all(
    opened: &Mutex<Opened>,
    progress: &Notify,
    sites: usize,
    version: u64,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let done = opened.lock().unwrap().at.values().filter(|(v, _)| *v >= version).count();
        if done == sites {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{done} of {sites} sites hold version {version}");
        let _ = tokio::time::timeout(Duration::from_millis(50), progress.notified()).await;
    }
}

/// A bounded multi-consumer channel of payloads (tokio's mpsc has one consumer).
fn async_channel_pair() -> (Sender, Receiver) {
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    (Sender(tx), Receiver(Arc::new(tokio::sync::Mutex::new(rx))))
}

struct Sender(tokio::sync::mpsc::Sender<Vec<u8>>);
#[derive(Clone)]
struct Receiver(Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Vec<u8>>>>);

impl Sender {
    async fn send(&self, v: Vec<u8>) -> Result<(), ()> {
        self.0.send(v).await.map_err(|_| ())
    }
}

impl Receiver {
    async fn recv(&self) -> Result<Vec<u8>, ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}
