//! WAN-cut catch-up: events buffered at a site while its link is cut, and the time from the link
//! returning to the hub holding every one of them. Run with our services (scheduler and
//! site-manager, which also consume, confirm and purge) and without them (the same servers with
//! only the streams: the raw sourcing ceiling).

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use async_nats::jetstream::{self, consumer, message::PublishMessage};
use edge_bus::topology::{self, STREAM_SITE_EVENTS};
use edge_testkit::{NatsServer, Relay};
use edge_types::status::{AppStatusReport, Phase};
use edge_types::{subject, Name};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

/// Outcome of one scenario.
pub struct Catchup {
    /// Link restored to hub holding everything, one per cut, sorted.
    pub times: Vec<Duration>,
    pub lost: u64,
    pub duplicated: u64,
    pub checked: u64,
}

/// Most acks awaited at once while publishing.
const WINDOW: usize = 1024;

/// Publishes `n` status events at the site, each with its own `Nats-Msg-Id`, acked by the site.
pub async fn publish(js: &jetstream::Context, site: &Name, round: usize, n: u64) -> Result<()> {
    let app = Name::new("bench")?;
    let subj = subject::site_status(site, &app);
    let mut acks = FuturesUnordered::new();
    for i in 0..n {
        let report = AppStatusReport {
            site: site.clone(),
            app: app.clone(),
            generation: 1,
            version: "1".into(),
            phase: Phase::Running,
            containers: vec![],
            unplaced: vec![],
            reported_at_ms: (round as u64) << 32 | i,
        };
        let msg = PublishMessage::build()
            .payload(serde_json::to_vec(&report)?.into())
            .message_id(format!("bench.{site}.{round}.{i}"));
        acks.push(js.send_publish(subj.clone(), msg).await?.into_future());
        if acks.len() >= WINDOW {
            acks.next().await.expect("non-empty")?;
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    Ok(())
}

async fn site_last_sequence(js: &jetstream::Context) -> Result<u64> {
    Ok(js.get_stream(STREAM_SITE_EVENTS).await?.info().await?.state.last_sequence)
}

async fn hub_messages(js: &jetstream::Context) -> Result<u64> {
    Ok(js.get_stream(STREAM_SITE_EVENTS).await?.info().await?.state.messages)
}

/// Upstream sequences of everything the hub holds, to count loss and duplicates.
async fn hub_upstream_sequences(js: &jetstream::Context) -> Result<Vec<u64>> {
    let stream = js.get_stream(STREAM_SITE_EVENTS).await?;
    let consumer = stream.create_consumer(consumer::pull::OrderedConfig::default()).await?;
    let total = hub_messages(js).await?;
    let mut messages = consumer.messages().await?;
    let mut out = Vec::with_capacity(total as usize);
    while (out.len() as u64) < total {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next()).await?.expect("stream open")?;
        let source = m.headers.as_ref().and_then(|h| h.get("Nats-Stream-Source")).map(|v| v.to_string());
        let seq = source.and_then(|s| s.split_whitespace().nth(1).and_then(|x| x.parse().ok())).unwrap_or(0);
        out.push(seq);
    }
    Ok(out)
}

pub async fn run(events: u64, rounds: usize, services: bool) -> Result<Catchup> {
    let hub = NatsServer::hub().await?;
    let wan = Relay::start(&hub.leaf_addr()).await?;
    let site = Name::site(if services { "bench-ours" } else { "bench-raw" })?;
    let leaf = NatsServer::leaf_to(site.as_str(), &hub, &format!("nats-leaf://{}", wan.addr())).await?;
    let hub_client = hub.connect().await?;
    let hub_js = topology::hub_js(&hub_client);
    let site_js = jetstream::with_domain(leaf.connect().await?, site.as_str());

    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    if services {
        let sd = shutdown.clone();
        let mut sched = scheduler::Config::new(hub.url());
        sched.nats_creds = Some(hub.user_creds("scheduler")?);
        tasks.spawn(async move { scheduler::run(sched, sd).await.map_err(anyhow::Error::from) });
        let mut cfg = site_manager::Config::new(site.clone(), leaf.url());
        cfg.nats_creds = Some(leaf.creds().to_path_buf());
        cfg.host = Some(Name::new("bench")?);
        cfg.heartbeat_secs = 1;
        let sd = shutdown.clone();
        tasks.spawn(async move { site_manager::run(cfg, sd).await.map_err(anyhow::Error::from) });
        let start = Instant::now();
        while !topology::site_sources(&hub_client).await.is_ok_and(|s| s.iter().any(|x| x.site == site.as_str())) {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("the site never registered");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        topology::ensure_hub(&hub_js).await?;
        topology::ensure_site(&site_js, &site, &Default::default()).await?;
        topology::add_site_source(&hub_js, &site).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut times = Vec::new();
    for round in 0..rounds {
        wan.cut();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        publish(&site_js, &site, round, events).await?;
        let last = site_last_sequence(&site_js).await?;
        wan.restore();
        let t0 = Instant::now();
        while hub_messages(&hub_js).await? < last {
            if t0.elapsed() > Duration::from_secs(300) {
                bail!("catch-up did not finish in 300 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        times.push(t0.elapsed());
        eprintln!("catch-up ({}) round {round}: {:?}", if services { "ours" } else { "raw" }, t0.elapsed());
    }
    let last = site_last_sequence(&site_js).await?;
    let mut seqs = hub_upstream_sequences(&hub_js).await?;
    let checked = seqs.len() as u64;
    seqs.sort_unstable();
    seqs.dedup();
    let duplicated = checked - seqs.len() as u64;
    let lost = last - seqs.iter().filter(|s| (1..=last).contains(*s)).count() as u64;

    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    times.sort();
    Ok(Catchup { times, lost, duplicated, checked })
}
