//! Call-home: the site registers itself and its hosts with the hub (retried until the hub
//! answers, however long the WAN is down), and sends heartbeats.

use std::time::Duration;

use std::sync::Arc;

use edge_bus::api::{request_as_site, RequestError};
use edge_bus::backoff::Backoff;
use edge_types::api::RegisterReply;
use edge_types::app::digest_json;
use edge_types::site::{Heartbeat, SiteRegistration};
use edge_types::subject::{self, ApiOp};
use edge_types::Name;
use tokio_util::sync::CancellationToken;

use crate::buffer::EventBuffer;

/// Stores the registration in the site's event stream, then calls the hub until it accepts.
pub async fn register(
    client: async_nats::Client,
    buffer: Arc<EventBuffer>,
    reg: SiteRegistration,
    shutdown: CancellationToken,
) {
    let body = serde_json::to_vec(&reg).expect("registration serializes");
    // Unique per registration, not per content: a site that goes back to an earlier state
    // (a duplicate host gone again) must store it again, or the hub, processing the stream
    // after the direct call, ends on the state in between.
    let id = format!("registration.{}.{}.{}", reg.site, digest_json(&reg), edge_bus::time::now_ms());
    if let Err(e) = buffer.publish(subject::site_registration(&reg.site), body, id).await {
        tracing::warn!(error = %e, "registration not stored in the site stream");
    }
    // Jittered back-off, so a fleet reconnecting at once does not stampede.
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match request_as_site::<_, RegisterReply>(
            &client,
            ApiOp::SiteRegister,
            &reg.site,
            &reg,
            Duration::from_secs(10),
        )
        .await
        {
            Ok(reply) => {
                tracing::info!(site = %reply.site, new = reply.new, "registered with the hub");
                return;
            }
            Err(RequestError::Api(e)) => {
                tracing::error!(error = %e, "hub refused registration; retrying")
            }
            Err(e) => tracing::info!(error = %e, "hub not reachable for call-home; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Registers the site whenever the leader's view of it changes (hosts joining or leaving): the
/// newest registration always wins, also over one still being retried. Unchanged, it is sent
/// again after `refresh`.
pub async fn registrar(
    client: async_nats::Client,
    buffer: Arc<EventBuffer>,
    mut latest: tokio::sync::watch::Receiver<Option<SiteRegistration>>,
    refresh: Duration,
    shutdown: CancellationToken,
) {
    let mut done: Option<SiteRegistration> = None;
    loop {
        let next = latest.borrow_and_update().clone();
        if let Some(reg) = next.filter(|r| done.as_ref() != Some(r)) {
            let attempt = shutdown.child_token();
            tokio::select! {
                _ = register(client.clone(), buffer.clone(), reg.clone(), attempt.clone()) => {
                    if !shutdown.is_cancelled() {
                        done = Some(reg);
                    }
                }
                _ = latest.changed() => {
                    attempt.cancel();
                    continue;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = latest.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(refresh) => done = None,
        }
    }
}

/// Publishes a heartbeat every `every` on core NATS (liveness is not stored), with the state
/// of the event buffer and the leaf recoveries, so the hub sees fill, alarm and recoveries.
pub struct Heartbeats {
    pub client: async_nats::Client,
    pub buffer: Arc<EventBuffer>,
    pub site: Name,
    pub host: Name,
    pub every: Duration,
    pub leaf_recoveries: Arc<std::sync::atomic::AtomicU64>,
    pub secrets_refused: Arc<std::sync::atomic::AtomicU64>,
    /// The apps' bus, whose topics' fill the heartbeat carries.
    pub bus: Option<Arc<crate::bus::AppBus>>,
}

impl Heartbeats {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let state = match self.buffer.state().await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the event buffer");
                    None
                }
            };
            let hb = Heartbeat {
                site: self.site.clone(),
                host: self.host.clone(),
                sent_at_ms: edge_bus::time::now_ms(),
                interval_ms: self.every.as_millis() as u64,
                buffer: state,
                leaf_recoveries: self.leaf_recoveries.load(std::sync::atomic::Ordering::Relaxed),
                secrets_refused: self.secrets_refused.load(std::sync::atomic::Ordering::Relaxed),
                telemetry_buffer: self.buffer.telemetry_state().await.ok(),
                topics: self.bus.as_ref().map(|b| b.fills()).unwrap_or_default(),
            };
            let body = serde_json::to_vec(&hb).expect("heartbeat serializes");
            if let Err(e) = self.client.publish(subject::heartbeat(&self.site), body.into()).await {
                tracing::debug!(error = %e, "heartbeat not sent");
            }
        }
    }
}
