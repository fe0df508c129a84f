//! Records in AUDIT every connection a server refused for its credentials: nats-server's
//! event (`$SYS.SERVER.<id>.CLIENT.AUTH.ERR`, exported by the system account to the control
//! account) becomes an [`AuthRefusal`] on `edge.v1.audit.auth.<server>`, once per event (its id
//! is the message id). So a forged, expired or revoked credential, or a blocked site redialling,
//! is refused by the server and audited here.

use edge_types::join::AuthRefusal;
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::Hub;

/// The part of nats-server's event this records.
#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    id: String,
    server: EventServer,
    #[serde(default)]
    client: EventClient,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct EventServer {
    #[serde(default)]
    name: String,
}

#[derive(Default, Deserialize)]
struct EventClient {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    /// The user JWT it presented (public; its seed never travels).
    #[serde(default)]
    jwt: Option<String>,
}

fn clip(s: String, max: usize) -> String {
    s.chars().take(max).collect()
}

fn refusal(event: Event) -> AuthRefusal {
    let opt = |s: Option<String>, max| s.filter(|s| !s.is_empty()).map(|s| clip(s, max));
    // The user's key: as the server names it, else the subject of the JWT it presented.
    let presented = event.client.jwt.as_deref().and_then(|t| edge_auth::jwt::decode::<edge_auth::claims::User>(t).ok());
    let user = event.client.user.filter(|u| !u.is_empty()).or(presented.map(|c| c.sub));
    AuthRefusal {
        at_ms: edge_bus::time::now_ms(),
        server: clip(event.server.name, 256),
        kind: clip(event.client.kind.unwrap_or_default().to_lowercase(), 64),
        host: opt(event.client.host, 256),
        user: opt(user, 256),
        name: opt(event.client.name, 256),
        reason: clip(event.reason, 1024),
        repeated: 0,
    }
}

/// At most one record a minute of identical refusals (a blocked site's leaf redials each
/// second); the others are counted into the next record.
const RECORD_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Distinct refusals remembered at once; beyond, the memory starts over.
const REMEMBERED: usize = 10_000;

#[derive(Default)]
struct Throttle(std::collections::HashMap<(Option<String>, String, String), (std::time::Instant, u64)>);

impl Throttle {
    /// Whether to record `r` now; if so, `r.repeated` counts those held back since.
    fn admit(&mut self, r: &mut AuthRefusal, now: std::time::Instant) -> bool {
        if self.0.len() >= REMEMBERED {
            self.0.clear();
        }
        let key = (r.user.clone(), r.kind.clone(), r.reason.clone());
        match self.0.get_mut(&key) {
            Some((last, held)) if now.duration_since(*last) < RECORD_EVERY => {
                *held += 1;
                false
            }
            Some((last, held)) => {
                r.repeated = std::mem::take(held);
                *last = now;
                true
            }
            None => {
                self.0.insert(key, (now, 0));
                true
            }
        }
    }
}

/// Follows the servers' refusals until shut down.
pub async fn follow(hub: Hub, client: async_nats::Client, shutdown: CancellationToken) {
    let mut sub = match client.subscribe(edge_auth::authority::AUTH_ERROR_EVENTS).await {
        Ok(sub) => sub,
        Err(e) => return tracing::warn!(error = %e, "cannot follow refused connections; they are not audited"),
    };
    let mut throttle = Throttle::default();
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        let Ok(event) = serde_json::from_slice::<Event>(&msg.payload) else {
            tracing::warn!(subject = %msg.subject, "unreadable refused-connection event");
            continue;
        };
        let id = format!(
            "auth.{}",
            if event.id.is_empty() { edge_bus::time::now_ms().to_string() } else { event.id.clone() }
        );
        let mut record = refusal(event);
        if !throttle.admit(&mut record, std::time::Instant::now()) {
            continue;
        }
        tracing::warn!(server = %record.server, kind = %record.kind, user = ?record.user, host = ?record.host, reason = %record.reason, "connection refused");
        if let Err(e) = crate::audit::record(&hub, edge_types::subject::audit_auth(&record.server), &record, id).await {
            tracing::warn!(error = %e, "refused connection not recorded in AUDIT");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nats_servers_event() {
        let raw = r#"{"type":"io.nats.server.advisory.v1.client_disconnect","id":"abc","timestamp":"2026-01-01T00:00:00Z",
            "server":{"name":"hub","host":"0.0.0.0","id":"NXYZ","ver":"2.15.1","seq":3,"jetstream":true,"time":"2026-01-01T00:00:00Z"},
            "client":{"start":"2026-01-01T00:00:00Z","host":"127.0.0.1","id":7,"user":"UABC","name":"thief","lang":"rust","kind":"Client"},
            "sent":{"msgs":0,"bytes":0},"received":{"msgs":0,"bytes":0},"reason":"Authentication Failure"}"#;
        let r = refusal(serde_json::from_str(raw).unwrap());
        assert_eq!(
            (r.server.as_str(), r.kind.as_str(), r.reason.as_str()),
            ("hub", "client", "Authentication Failure")
        );
        assert_eq!(
            (r.user.as_deref(), r.name.as_deref(), r.host.as_deref()),
            (Some("UABC"), Some("thief"), Some("127.0.0.1"))
        );
    }

    #[test]
    fn identical_refusals_are_recorded_once_a_minute_with_a_count() {
        let base = AuthRefusal {
            at_ms: 0,
            server: "hub".into(),
            kind: "leafnode".into(),
            host: None,
            user: Some("UABC".into()),
            name: None,
            reason: "Authorization Violation".into(),
            repeated: 0,
        };
        let mut t = Throttle::default();
        let t0 = std::time::Instant::now();
        assert!(t.admit(&mut base.clone(), t0));
        for s in 1..=59 {
            assert!(!t.admit(&mut base.clone(), t0 + std::time::Duration::from_secs(s)));
        }
        let other = AuthRefusal { user: Some("UDEF".into()), ..base.clone() };
        assert!(t.admit(&mut other.clone(), t0 + std::time::Duration::from_secs(1)), "another user is recorded");
        let mut next = base.clone();
        assert!(t.admit(&mut next, t0 + std::time::Duration::from_secs(61)));
        assert_eq!(next.repeated, 59);
    }
}
