//! The audit trail: every store, rotation, deletion, distribution and withdrawal is an event in
//! the hub's `AUDIT` stream (`edge.v1.audit.secret.<tenant>.<name>`). Sites add their reads and
//! refusals to their own event stream (`edge.v1.site.<site>.audit`).

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_nats::jetstream;
use edge_types::secret::{AuditAction, AuditEvent};
use edge_types::subject;
use edge_types::Name;

/// Who the service itself acts as in the trail.
pub const SERVICE_ACTOR: &str = "secrets";

#[derive(Clone)]
pub struct Audit {
    js: jetstream::Context,
    /// Events that could not be stored (also logged, without values).
    pub failed: Arc<AtomicU64>,
}

/// An event of `action` on a secret, now.
pub fn event(
    actor: &str,
    action: AuditAction,
    tenant: &Name,
    name: &Name,
    version: u64,
    site: Option<&Name>,
) -> AuditEvent {
    AuditEvent {
        at_ms: edge_bus::time::now_ms(),
        actor: actor.chars().take(128).collect(),
        action,
        tenant: tenant.clone(),
        name: name.clone(),
        version,
        site: site.cloned(),
        detail: None,
    }
}

impl Audit {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js, failed: Default::default() }
    }

    /// Stores `events`, pipelined, waiting for every ack.
    pub async fn record(&self, events: impl IntoIterator<Item = AuditEvent>) {
        let mut acks = Vec::new();
        for e in events {
            let body = serde_json::to_vec(&e).expect("audit events serialize");
            match self.js.publish(subject::audit_secret(&e.tenant, &e.name), body.into()).await {
                Ok(ack) => acks.push(ack),
                Err(err) => self.fail(&e, err),
            }
        }
        for r in futures::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            if let Err(err) = r {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %err, "audit event not stored");
            }
        }
    }

    fn fail(&self, e: &AuditEvent, err: impl std::fmt::Display) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(tenant = %e.tenant, secret = %e.name, action = ?e.action, error = %err, "audit event not stored");
    }
}
