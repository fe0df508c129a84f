//! Keeps every connected site's events and telemetry flowing into the hub. After a hub restart the server
//! creates each sourcing consumer before the site's leaf is back, times out, and retries with a
//! back-off that holds catch-up for about 40 s. A source that has been idle while its site is
//! connected (heartbeats arriving) is therefore re-attached, which makes the server create the
//! consumer at once and resume after the last message it stored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use edge_bus::backoff::Backoff;
use edge_bus::topology::{reattach_site_sources_of, site_sources_of, STREAM_SITE_EVENTS, STREAM_TELEMETRY};
use edge_types::Name;
use tokio_util::sync::CancellationToken;

use crate::Hub;

/// How often sources are checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A connected site's source silent this long is stalled (a healthy one hears idle heartbeats).
const STALLED_AFTER: Duration = Duration::from_secs(3);
/// A site must have been connected this long first, so the server's own reconnect can work.
const GRACE: Duration = Duration::from_secs(1);
/// Least time between two re-attachments of one site; doubles while the source stays stalled.
const COOLDOWN: Duration = Duration::from_secs(3);
const MAX_COOLDOWN: Duration = Duration::from_secs(60);

pub async fn keep_flowing(hub: Hub, client: async_nats::Client, shutdown: CancellationToken) {
    // Per stalled (stream, site): no re-attachment before this instant, and the back-off.
    let mut waits: HashMap<(&str, Name), (Instant, Backoff)> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        for stream in [STREAM_SITE_EVENTS, STREAM_TELEMETRY] {
            keep_stream_flowing(&hub, &client, stream, &mut waits).await;
        }
    }
}

async fn keep_stream_flowing<'a>(
    hub: &Hub,
    client: &async_nats::Client,
    stream: &'a str,
    waits: &mut HashMap<(&'a str, Name), (Instant, Backoff)>,
) {
    let states = match site_sources_of(client, stream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, stream, "cannot read site sources");
            return;
        }
    };
    let mut due = Vec::new();
    for st in states {
        let Ok(site) = Name::site(&st.site) else { continue };
        let settled = hub.liveness.connected_for(&site).is_some_and(|d| d >= GRACE);
        let stalled = st.active.is_none_or(|a| a >= STALLED_AFTER);
        if !stalled {
            waits.remove(&(stream, site));
            continue;
        }
        let (not_before, backoff) = waits
            .entry((stream, site.clone()))
            .or_insert_with(|| (Instant::now(), Backoff::new(COOLDOWN, MAX_COOLDOWN)));
        if !settled || Instant::now() < *not_before {
            continue;
        }
        *not_before = Instant::now() + backoff.next_delay();
        due.push(site);
    }
    if due.is_empty() {
        return;
    }
    // All of this pass's stalled sources in two stream updates. The stream config is shared
    // with registration (hence the lock); applies do not take it.
    let _guard = hub.source_edits.lock().await;
    match reattach_site_sources_of(&hub.js, stream, &due).await {
        Ok(()) => tracing::info!(sites = due.len(), stream, "re-attached stalled sources"),
        Err(e) => tracing::warn!(sites = due.len(), stream, error = %e, "cannot re-attach sources"),
    }
}
