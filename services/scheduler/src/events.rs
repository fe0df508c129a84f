//! Consumes the hub's SITE_EVENTS stream (sourced from every site): registrations and status
//! reports. Durable, explicit acks after the KV write, so nothing is lost across restarts.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use edge_bus::kv::{self, Change};
use edge_bus::topology::STREAM_SITE_EVENTS;
use edge_types::schema::decode;
use edge_types::site::SiteRegistration;
use edge_types::status::{AppStatusReport, Phase};
use edge_types::subject::{self, Subject};
use edge_types::Name;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{sites, Hub, SchedulerError};

/// Durable consumer name on the hub's SITE_EVENTS.
pub const CONSUMER: &str = "scheduler";

/// Runs until shutdown, recreating the consumer after errors.
pub async fn follow(hub: Hub, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        if let Err(e) = follow_once(&hub, &shutdown).await {
            tracing::warn!(error = %e, "site-events consumer failed; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

async fn follow_once(hub: &Hub, shutdown: &CancellationToken) -> Result<(), SchedulerError> {
    let stream = hub.js.get_stream(STREAM_SITE_EVENTS).await.map_err(SchedulerError::js)?;
    let consumer = stream
        .get_or_create_consumer(
            CONSUMER,
            consumer::pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_deliver: 10,
                ..Default::default()
            },
        )
        .await
        .map_err(SchedulerError::js)?;
    let mut messages = consumer.messages().await.map_err(SchedulerError::js)?;
    // Events are handled by WORKERS tasks, each site always by the same one: a site's events
    // stay in order (its watermark only moves past what is processed) while thousands of sites'
    // reports are written to the status bucket side by side.
    let mut lanes = Vec::with_capacity(WORKERS);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<jetstream::Message>(LANE_DEPTH);
        lanes.push(tx);
        let hub = hub.clone();
        workers.spawn(async move {
            while let Some(msg) = rx.recv().await {
                process(&hub, msg).await;
            }
        });
    }
    let result = loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            m = messages.next() => match m {
                Some(Ok(m)) => m,
                Some(Err(e)) => break Err(SchedulerError::js(e)),
                None => break Ok(()),
            },
        };
        let lane = lane_of(&msg.subject);
        if lanes[lane].send(msg).await.is_err() {
            break Ok(());
        }
    };
    // Let the workers finish what they hold (it is acked), then stop them.
    drop(lanes);
    while workers.join_next().await.is_some() {}
    result
}

/// Tasks handling site events side by side.
const WORKERS: usize = 16;
/// Events queued per worker.
const LANE_DEPTH: usize = 64;

/// The worker of an event: by its site (the subject's fourth token), so that a site's events
/// are handled in order.
fn lane_of(subject: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let site = subject.split('.').nth(3).unwrap_or(subject);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    site.hash(&mut h);
    (h.finish() % WORKERS as u64) as usize
}

/// Handles one event and acknowledges it; a failed write is redelivered after a pause.
async fn process(hub: &Hub, msg: jetstream::Message) {
    let parsed = subject::parse(&msg.subject);
    let site = match &parsed {
        Ok(Subject::SiteStatus { site, .. } | Subject::SiteRegistration { site } | Subject::SiteAudit { site }) => {
            Some(site.clone())
        }
        _ => None,
    };
    let upstream = crate::watermark::upstream_sequence(&msg);
    let done = |hub: &Hub| {
        if let (Some(site), Some(seq)) = (&site, upstream) {
            hub.watermarks.processed(site, seq);
        }
    };
    let acked = match handle(hub, parsed, &msg).await {
        Ok(()) => {
            let acked = msg.ack().await;
            done(hub);
            acked
        }
        Err(Handling::Reject(reason)) => {
            // Malformed or forged: acknowledged so it is not redelivered, and counted.
            hub.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(subject = %msg.subject, %reason, "rejected site event");
            let acked = msg.ack().await;
            done(hub);
            acked
        }
        Err(Handling::Retry(e)) => {
            tracing::warn!(subject = %msg.subject, error = %e, "site event not processed; will be redelivered");
            msg.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await
        }
    };
    if let Err(e) = acked {
        // Unacknowledged events come again after the ack wait; handling them is idempotent.
        tracing::warn!(subject = %msg.subject, error = %e, "cannot acknowledge a site event");
    }
}

enum Handling {
    Reject(String),
    Retry(SchedulerError),
}

async fn handle(
    hub: &Hub,
    parsed: Result<Subject, subject::SubjectError>,
    msg: &jetstream::Message,
) -> Result<(), Handling> {
    let reject = |s: String| Handling::Reject(s);
    match parsed.map_err(|e| reject(e.to_string()))? {
        Subject::SiteStatus { site, app } => {
            let r: AppStatusReport = decode(&msg.payload).map_err(|e| reject(e.to_string()))?;
            if r.site != site || r.app != app {
                return Err(reject("site or app in the report does not match its subject".into()));
            }
            // The latest report wins; a site that has removed the app leaves no status behind.
            kv::update::<AppStatusReport, _>(&hub.buckets.status, &format!("{app}.{site}"), |cur| {
                if cur.is_some_and(|c| c.reported_at_ms > r.reported_at_ms) {
                    Change::Keep
                } else if r.phase == Phase::Removed {
                    Change::Delete
                } else {
                    Change::Put(r.clone())
                }
            })
            .await
            .map(|_| ())
            .map_err(|e| Handling::Retry(e.into()))
        }
        Subject::SiteRegistration { site } => {
            let reg: SiteRegistration = decode(&msg.payload).map_err(|e| reject(e.to_string()))?;
            if reg.site != site || Name::site(site.as_str()).is_err() {
                return Err(reject("site in the registration does not match its subject".into()));
            }
            sites::upsert_registration(hub, &reg).await.map(|_| ()).map_err(Handling::Retry)
        }
        Subject::SiteAudit { site } => {
            // Kept in the hub's SITE_EVENTS, where audits are read; validated so a forged one is
            // counted, and a site's refusal of a sealed secret is logged centrally (no values
            // travel in audit events).
            let e: edge_types::secret::AuditEvent = decode(&msg.payload).map_err(|e| reject(e.to_string()))?;
            if e.site.as_ref() != Some(&site) {
                return Err(reject("site in the audit event does not match its subject".into()));
            }
            if e.action == edge_types::secret::AuditAction::Rejected {
                tracing::warn!(%site, tenant = %e.tenant, secret = %e.name, version = e.version, detail = ?e.detail, "site refused a sealed secret");
            }
            Ok(())
        }
        other => Err(reject(format!("unexpected subject kind {other:?}"))),
    }
}
