//! Image staging: registry-sync copies an image of `mb` MB (a config and five layers of random,
//! incompressible bytes) from the hub's blob store into the stores of `sites` real leaf sites,
//! each in its own JetStream domain, until every site holds every blob; then an update that adds
//! one 1 MB layer. Beside it, the same bytes put into the same sites' object stores by a plain
//! client over the same leaf links, as many sites at once as registry-sync stages (the ceiling).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use async_nats::jetstream;
use edge_bus::api::request;
use edge_bus::topology::{self, site_blobs};
use edge_testkit::NatsServer;
use edge_types::api::AppRecord;
use edge_types::app::AppSpec;
use edge_types::image::{Blob, ImagePush, ImageRecord, SiteStaging};
use edge_types::subject::ApiOp;
use edge_types::Name;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

/// Sites staged at once, by registry-sync and by the ceiling alike.
const CONCURRENT: usize = 8;

pub struct StagingRun {
    pub sites: usize,
    pub image_bytes: u64,
    /// Until every site held the whole image, and the bytes registry-sync sent.
    pub staged: Duration,
    pub sent: u64,
    /// The same bytes put by a plain client into every site's object store.
    pub raw: Duration,
    /// The update (one new 1 MB layer): time, bytes sent, and the bytes that were new.
    pub update: Duration,
    pub update_sent: u64,
    pub update_new: u64,
}

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn blob(bytes: &[u8]) -> Blob {
    Blob { digest: format!("sha256:{}", hex::encode(Sha256::digest(bytes))), size: bytes.len() as u64 }
}

pub async fn run(sites: usize, mb: usize) -> Result<StagingRun> {
    let hub = NatsServer::hub().await?;
    let mut leaves = Vec::new();
    for i in 0..sites {
        let name = Name::site(format!("stage-{i:03}"))?;
        let leaf = NatsServer::leaf_to(name.as_str(), &hub, &hub.leaf_url()).await?;
        leaves.push((name, leaf));
    }
    let client = hub.connect().await?;
    let js = topology::hub_js(&client);
    let buckets = topology::ensure_hub(&js).await?;
    // Each site's store, made through the site's own leaf as its site-manager does.
    for (name, leaf) in &leaves {
        let c = leaf.connect().await?;
        let sjs = jetstream::with_domain(c, name.as_str());
        topology::ensure_object_store(&sjs, &site_blobs(name), "bench").await?;
        topology::ensure_object_store(&sjs, &format!("raw_{name}"), "bench ceiling").await?;
    }
    let shutdown = CancellationToken::new();
    let mut config = registry_sync::Config::new(hub.url());
    config.nats_creds = Some(hub.user_creds("registry-sync")?);
    config.pass_secs = 1;
    config.concurrent_sites = CONCURRENT;
    let sd = shutdown.clone();
    let service = tokio::spawn(async move { registry_sync::run(config, sd).await });
    let blobs = topology::ensure_image_store(&js).await?;
    let staging = buckets.staging.clone();

    // The image: a small config and five layers.
    let config_bytes = serde_json::to_vec(&serde_json::json!({"os": "linux", "architecture": "amd64", "bench": true}))?;
    let layer = (mb << 20) / 5;
    let layers: Vec<Vec<u8>> = (0..5).map(|i| random(layer, 0x9e37_79b9 + 2 * i)).collect();
    let push = |config: &Vec<u8>, layers: &[Vec<u8>]| ImagePush {
        reference: "bench/app:v1".into(),
        config: blob(config),
        layers: layers.iter().map(|l| blob(l)).collect(),
    };
    for bytes in std::iter::once(&config_bytes).chain(layers.iter()) {
        blobs.put(blob(bytes).digest.as_str(), &mut bytes.as_slice()).await?;
    }
    let record: ImageRecord =
        request(&client, ApiOp::ImagePush, &push(&config_bytes, &layers), Duration::from_secs(60)).await?;
    let image_bytes = record.size;

    let names: Vec<Name> = leaves.iter().map(|(n, _)| n.clone()).collect();
    let place = |record: &ImageRecord, generation: u64| -> Result<Vec<u8>> {
        let spec: AppSpec = serde_json::from_value(serde_json::json!({
            "name": "bench", "version": generation.to_string(), "placement": {"sites": ""},
            "services": [{"name": "main", "image": "bench/app:v1"}],
        }))?;
        let app = AppRecord {
            digest: spec.digest(),
            spec,
            generation,
            sites: names.clone(),
            updated_at_ms: edge_bus::time::now_ms(),
            rollout: None,
            images: [("bench/app:v1".to_string(), record.clone())].into(),
        };
        Ok(serde_json::to_vec(&app)?)
    };

    let t0 = Instant::now();
    buckets.apps.put("app.bench", place(&record, 1)?.into()).await?;
    let sent = wait_staged(&staging, &names, &record.digest).await.context("first staging")?;
    let staged = t0.elapsed();

    // The update: one new layer.
    let mut layers2 = layers.clone();
    layers2.push(random(1 << 20, 0xfeed));
    let config2 = serde_json::to_vec(&serde_json::json!({"os": "linux", "architecture": "amd64", "bench": 2}))?;
    for bytes in [&config2, layers2.last().expect("layer")] {
        blobs.put(blob(bytes).digest.as_str(), &mut bytes.as_slice()).await?;
    }
    let record2: ImageRecord =
        request(&client, ApiOp::ImagePush, &push(&config2, &layers2), Duration::from_secs(60)).await?;
    let t1 = Instant::now();
    buckets.apps.put("app.bench", place(&record2, 2)?.into()).await?;
    let sent2 = wait_staged(&staging, &names, &record2.digest).await.context("update staging")?;
    let update = t1.elapsed();
    let update_new = (config2.len() + layers2.last().expect("layer").len()) as u64 * sites as u64;
    shutdown.cancel();
    let _ = service.await;

    // The ceiling: the same blobs put into every site's store by a plain client.
    let all: Vec<&Vec<u8>> = std::iter::once(&config_bytes).chain(layers.iter()).collect();
    let t2 = Instant::now();
    futures::stream::iter(&names)
        .map(|name| {
            let all = all.clone();
            let client = client.clone();
            async move {
                let store =
                    jetstream::with_domain(client, name.as_str()).get_object_store(format!("raw_{name}")).await?;
                for bytes in all {
                    store.put(blob(bytes).digest.as_str(), &mut bytes.as_slice()).await?;
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(CONCURRENT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let raw = t2.elapsed();
    Ok(StagingRun { sites, image_bytes, staged, sent, raw, update, update_sent: sent2 - sent, update_new })
}

/// Waits until every site's staging record shows `digest` complete; returns the bytes sent.
async fn wait_staged(staging: &jetstream::kv::Store, sites: &[Name], digest: &str) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut done = 0;
        let mut sent = 0;
        for s in sites {
            if let Some(v) = staging.get(s.as_str()).await? {
                let st: SiteStaging = serde_json::from_slice(&v)?;
                sent += st.bytes_sent;
                if st.images.iter().any(|i| i.digest == digest && i.complete()) {
                    done += 1;
                }
            }
        }
        if done == sites.len() {
            if std::env::var_os("BENCH_DEBUG").is_some() {
                for s in sites {
                    let v = staging.get(s.as_str()).await?.expect("record");
                    eprintln!("{}", String::from_utf8_lossy(&v));
                }
            }
            return Ok(sent);
        }
        ensure!(Instant::now() < deadline, "{done} of {} sites staged after 10 minutes", sites.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
