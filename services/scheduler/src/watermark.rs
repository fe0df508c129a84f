//! Tells each site how far the hub has processed its events, so the site's buffer holds only
//! what the hub does not have. The watermark is the site stream's sequence of the last event
//! processed (read from the `Nats-Stream-Source` header the hub's sourcing adds), published to
//! `edge.v1.desired.<shard>.<site>._watermark`, which each site receives with its desired state.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use dashmap::DashMap;
use edge_types::desired::EventsWatermark;
use edge_types::{subject, Name};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::Hub;

/// Processed and published watermarks by site.
#[derive(Clone, Default)]
pub struct Watermarks {
    processed: Arc<DashMap<Name, u64>>,
    published: Arc<DashMap<Name, u64>>,
}

impl Watermarks {
    /// Notes that the site's event with upstream sequence `seq` is processed.
    pub fn processed(&self, site: &Name, seq: u64) {
        let mut e = self.processed.entry(site.clone()).or_insert(0);
        *e = (*e).max(seq);
    }
}

/// The upstream sequence of a sourced message: the second field of `Nats-Stream-Source`
/// (`<stream[:hash]> <seq> <filter> <dest> <subject>`).
pub fn upstream_sequence(msg: &async_nats::Message) -> Option<u64> {
    let source = msg.headers.as_ref()?.get("Nats-Stream-Source")?;
    source.as_str().split_whitespace().nth(1)?.parse().ok()
}

/// Publishes changed watermarks every `every` until shutdown.
pub async fn publish_loop(hub: Hub, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let changed: Vec<(Name, u64)> = hub
            .watermarks
            .processed
            .iter()
            .filter(|e| hub.watermarks.published.get(e.key()).is_none_or(|p| *p < *e.value()))
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        publish(&hub, changed).await;
    }
}

/// Watermark publishes with acks outstanding at once: after a fleet-wide change every site has
/// a new one, and one round trip each would take seconds at 10,000 sites.
const WINDOW: usize = 512;

/// Publishes the watermarks, acks pipelined; each is recorded as published once acked, and one
/// that fails is tried again next round.
async fn publish(hub: &Hub, changed: Vec<(Name, u64)>) {
    let mut acks = FuturesUnordered::new();
    for (site, through) in changed {
        while acks.len() >= WINDOW {
            if let Some(done) = acks.next().await {
                settle(hub, done);
            }
        }
        let w = EventsWatermark { site: site.clone(), through };
        let msg = PublishMessage::build()
            .payload(serde_json::to_vec(&w).expect("watermarks serialize").into())
            .message_id(format!("watermark.{site}.{through}"));
        match hub.js.send_publish(subject::events_watermark(&site), msg).await {
            Ok(ack) => acks.push(async move { (site, through, ack.await.map(|_| ()).map_err(|e| e.to_string())) }),
            Err(e) => tracing::warn!(%site, error = %e, "watermark not published; will retry"),
        }
    }
    while let Some(done) = acks.next().await {
        settle(hub, done);
    }
}

fn settle(hub: &Hub, (site, through, acked): (Name, u64, Result<(), String>)) {
    match acked {
        Ok(()) => {
            hub.watermarks.published.insert(site, through);
        }
        Err(e) => tracing::warn!(%site, error = %e, "watermark not published; will retry"),
    }
}
