//! Telemetry ingest at the hub: `sites` simulated sites each send resource samples (one
//! `HostStats` of a host with three containers, as a site-manager does) into the hub's
//! TELEMETRY stream, acked; the telemetry service's real ingest reads and validates every one.
//! Measured: messages per second stored and ingested, and the hub's CPU meanwhile; beside it,
//! raw JetStream publish of as many messages of the same size into a plain stream.

use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use async_nats::jetstream::{self, stream};
use edge_testkit::NatsServer;
use edge_types::telemetry::{ContainerStats, HostStats};
use edge_types::{subject, Name};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::placement::{Meter, Pass};

/// Publish acks outstanding.
const WINDOW: usize = 1024;

pub struct IngestRun {
    pub sites: usize,
    pub messages: u64,
    pub bytes: usize,
    /// Until every sample was stored (acked).
    pub stored: Pass,
    /// Until the telemetry service had read and validated every sample.
    pub ingested: Pass,
    pub raw: Pass,
}

fn sample(site: &Name, host: &Name, i: u64) -> HostStats {
    let c = |n: u32| ContainerStats {
        app: Name::new(format!("app-{}", (i + n as u64) % 50)).expect("valid"),
        service: Name::new("main").expect("valid"),
        replica: n,
        container_id: format!("{:064x}", i * 4 + n as u64),
        cpu_cores: 0.05 * n as f64,
        memory_bytes: 20 << 20,
    };
    HostStats {
        site: site.clone(),
        host: host.clone(),
        at_ms: edge_bus::time::now_ms(),
        cpu_ratio: 0.25,
        cpus: 4,
        memory_total_bytes: 8 << 30,
        memory_available_bytes: 5 << 30,
        disk_free_bytes: 100 << 30,
        containers: (0..3).map(c).collect(),
    }
}

/// Publishes `bodies` to their subjects with at most WINDOW acks outstanding, all checked.
async fn publish(js: &jetstream::Context, msgs: Vec<(String, Vec<u8>)>) -> Result<()> {
    let mut acks = FuturesUnordered::new();
    for (subject, body) in msgs {
        while acks.len() >= WINDOW {
            acks.next().await.expect("non-empty")?;
        }
        acks.push(js.publish(subject, body.into()).await?.into_future());
    }
    while let Some(a) = acks.next().await {
        a?;
    }
    Ok(())
}

pub async fn run(sites: usize, messages: u64) -> Result<IngestRun> {
    let names: Vec<(Name, Name)> =
        (0..sites).map(|i| Ok((Name::site(format!("site-{i:05}"))?, Name::new("host-1")?))).collect::<Result<_>>()?;
    let msgs: Vec<(String, Vec<u8>)> = (0..messages)
        .map(|i| {
            let (site, host) = &names[i as usize % sites];
            (subject::host_stats(site, host), serde_json::to_vec(&sample(site, host, i)).expect("serializes"))
        })
        .collect();
    let bytes = msgs.iter().map(|(_, b)| b.len()).sum::<usize>() / msgs.len().max(1);

    // The hub's TELEMETRY, binding the sites' subjects as sourcing would fill it.
    let hub = NatsServer::hub().await?;
    let client = hub.connect().await?;
    let js = edge_bus::topology::hub_js(&client);
    js.create_stream(stream::Config {
        name: edge_bus::topology::STREAM_TELEMETRY.into(),
        subjects: vec![subject::telemetry_all()],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(7 * 86400),
        max_bytes: 4 << 30,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    })
    .await?;
    let reported = telemetry::ingest::Reported::default();
    let shutdown = CancellationToken::new();
    tokio::spawn(reported.clone().follow(js.clone(), shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await; // the consumer is up

    let pid = hub.pid().unwrap_or(0);
    let meter = Meter::start(pid);
    let start = Instant::now();
    publish(&js, msgs.clone()).await?;
    let stored = meter.stop();
    let meter = Meter::start(pid);
    let deadline = Instant::now() + Duration::from_secs(300);
    while reported.taken.load(Ordering::Relaxed) < messages {
        ensure!(Instant::now() < deadline, "ingest stalled at {}", reported.taken.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ingested = meter.stop();
    ingested.wall = start.elapsed(); // from the first publish to the last sample ingested
    ingested.hub_cpu += stored.hub_cpu;
    ingested.client_cpu += stored.client_cpu;
    ensure!(reported.rejected.load(Ordering::Relaxed) == 0, "samples rejected");
    ensure!(reported.hosts.len() == sites, "{} hosts known of {sites}", reported.hosts.len());
    shutdown.cancel();
    drop(hub);

    // Raw: the same bytes into a plain stream on a fresh hub.
    let hub = NatsServer::hub().await?;
    let client = hub.connect().await?;
    let js = edge_bus::topology::hub_js(&client);
    js.create_stream(stream::Config {
        name: "RAW".into(),
        subjects: vec!["raw.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let raw_msgs = msgs.into_iter().map(|(s, b)| (format!("raw.{s}"), b)).collect();
    let meter = Meter::start(hub.pid().unwrap_or(0));
    publish(&js, raw_msgs).await?;
    let raw = meter.stop();
    Ok(IngestRun { sites, messages, bytes, stored, ingested, raw })
}
