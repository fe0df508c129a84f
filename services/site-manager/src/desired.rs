//! Follows the site's own DESIRED stream (in the site's JetStream domain), so the site knows its
//! desired state with the WAN down and after a cold boot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, consumer};
use edge_bus::topology::STREAM_DESIRED;
use edge_types::desired::DesiredApp;
use edge_types::schema::decode;
use edge_types::subject::{self, Subject};
use edge_types::Name;
use futures::StreamExt;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// The latest desired state per app, shared with the reconcile loop.
pub type DesiredMap = Arc<Mutex<BTreeMap<Name, DesiredApp>>>;

/// Reads the stream from the start (it keeps one message per app), then follows it. `loaded`
/// turns true once everything stored at start has been read: until then the reconcile loop must
/// not act, or it would remove containers whose desired state it has not read yet.
pub async fn follow(
    js: jetstream::Context,
    site: Name,
    desired: DesiredMap,
    changed: Arc<Notify>,
    loaded: watch::Sender<bool>,
    rejected: Arc<std::sync::atomic::AtomicU64>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        if let Err(e) = follow_once(&js, &site, &desired, &changed, &loaded, &rejected, &shutdown).await {
            tracing::warn!(error = %e, "desired-state consumer failed; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }
}

async fn follow_once(
    js: &jetstream::Context,
    site: &Name,
    desired: &DesiredMap,
    changed: &Notify,
    loaded: &watch::Sender<bool>,
    rejected: &std::sync::atomic::AtomicU64,
    shutdown: &CancellationToken,
) -> Result<(), async_nats::Error> {
    let mut stream = js.get_stream(STREAM_DESIRED).await?;
    if stream.info().await?.state.messages == 0 {
        loaded.send_replace(true);
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = messages.next() => match m {
                Some(m) => m?,
                None => return Ok(()),
            },
        };
        let pending = msg.info().map(|i| i.pending).unwrap_or(0);
        match accept(site, &msg.subject, &msg.payload) {
            Ok(d) => {
                tracing::debug!(app = %d.app, generation = d.generation, removed = d.spec.is_none(), "desired state");
                desired.lock().expect("desired lock").insert(d.app.clone(), d);
                changed.notify_one();
            }
            Err(reason) => {
                rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(subject = %msg.subject, %reason, "rejected desired-state message");
            }
        }
        if pending == 0 && !*loaded.borrow() {
            loaded.send_replace(true);
            changed.notify_one();
        }
    }
}

/// Validates a desired-state message: schema, subject shape, and that subject and body agree on
/// the site and app (a message for another site is never acted on).
fn accept(site: &Name, subj: &str, payload: &[u8]) -> Result<DesiredApp, String> {
    let Ok(Subject::Desired { site: s, app }) = subject::parse(subj) else {
        return Err("not a desired-state subject".into());
    };
    let d = decode::<DesiredApp>(payload).map_err(|e| e.to_string())?;
    if &s != site || d.site != s || d.app != app || d.spec.as_ref().is_some_and(|spec| spec.name != app) {
        return Err("site or app in the message does not match its subject".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_other_sites_and_mismatches() {
        let me = Name::new("s1").unwrap();
        let body = |site: &str, app: &str| {
            serde_json::to_vec(&serde_json::json!({"site": site, "app": app, "generation": 1, "spec": null})).unwrap()
        };
        assert!(accept(&me, "edge.v1.desired.s1.web", &body("s1", "web")).is_ok());
        assert!(accept(&me, "edge.v1.desired.s2.web", &body("s2", "web")).is_err());
        assert!(accept(&me, "edge.v1.desired.s1.web", &body("s1", "db")).is_err());
        assert!(accept(&me, "edge.v1.desired.s1.web", b"{not json").is_err());
    }
}
