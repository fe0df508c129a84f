//! Keeps the site's desired state flowing from the hub. After a hub restart the site's leaf
//! server retries creating its sourcing consumer in the hub with a back-off that has held new
//! desired state away from sites for tens of seconds. When the hub answers but the source has
//! been idle, the site-manager re-attaches it, which makes the server create the consumer at once
//! and resume after the last message it stored.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use edge_bus::backoff::Backoff;
use edge_bus::topology::{api_prefix, reattach_desired_source, HUB_DOMAIN, STREAM_DESIRED};
use tokio_util::sync::CancellationToken;

const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A healthy source hears idle heartbeats; silent this long, it has stalled.
const STALLED_AFTER: Duration = Duration::from_secs(3);
/// First wait between two re-attachments; doubles while the source stays stalled.
const COOLDOWN: Duration = Duration::from_secs(3);
const MAX_COOLDOWN: Duration = Duration::from_secs(60);

/// Whether the hub's JetStream answers through the leaf link.
pub async fn hub_reachable(client: &async_nats::Client) -> bool {
    let req = client.request(format!("{}.INFO", api_prefix(HUB_DOMAIN)), "".into());
    matches!(tokio::time::timeout(Duration::from_secs(1), req).await, Ok(Ok(_)))
}

pub async fn keep_flowing(client: async_nats::Client, js: jetstream::Context, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(COOLDOWN, MAX_COOLDOWN);
    let mut not_before = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let Ok(mut stream) = js.get_stream(STREAM_DESIRED).await else { continue };
        let Ok(info) = stream.info().await else { continue };
        let stalled = info.sources.first().is_some_and(|s| s.active.is_none_or(|a| a >= STALLED_AFTER));
        if !stalled {
            backoff.reset();
            continue;
        }
        if Instant::now() < not_before || !hub_reachable(&client).await {
            continue;
        }
        not_before = Instant::now() + backoff.next_delay();
        match reattach_desired_source(&js).await {
            Ok(()) => tracing::info!("re-attached the stalled desired-state source"),
            Err(e) => tracing::warn!(error = %e, "cannot re-attach the desired-state source"),
        }
    }
}
