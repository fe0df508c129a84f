//! Alerts from the fleet's snapshots: an application degrading (running at fewer sites than
//! desired for a while, failed somewhere, or its containers restarting again and again), a site
//! offline longer than a threshold, a site's event buffer nearly full. Each fires once with its
//! cause and resolves itself when the cause goes away; both are events on the bus. While it
//! fires, the listing shows its current reason (an app first short of sites, then failing its
//! probe), not only the one it fired for.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use edge_types::alert::{Alert, AlertKind, AlertState};
use edge_types::Name;

use crate::metrics::Snapshot;

/// When conditions become alerts.
#[derive(Clone, Debug)]
pub struct Thresholds {
    /// A site not heard from this long is offline.
    pub site_offline: Duration,
    /// An app running at fewer sites than desired this long is degraded.
    pub app_short: Duration,
    /// This many restarts of an app's containers within `restart_window` is degradation.
    pub restarts: u64,
    pub restart_window: Duration,
    /// A buffer this full (0 to 1) is nearly full.
    pub buffer_fill: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            site_offline: Duration::from_secs(300),
            app_short: Duration::from_secs(120),
            restarts: 3,
            restart_window: Duration::from_secs(600),
            buffer_fill: 0.8,
        }
    }
}

type Key = (AlertKind, Name);

/// What holds now for an alert: its cause in words and the kind of cause. Words change with
/// every evaluation (an age, a fill); the kind changes only when the reason does, and only
/// then is a firing alert's stored cause rewritten.
type Cause = (&'static str, String);

/// What an evaluation changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Alerts that started firing or resolved: events on the bus and in the listing.
    pub events: Vec<Alert>,
    /// Firing alerts whose reason changed (an app short of sites whose containers now fail
    /// their probe): the listing shows the new cause.
    pub recaused: Vec<Alert>,
}

/// Alert state between evaluations.
#[derive(Default)]
pub struct Evaluator {
    /// Firing alerts, with the kind of their cause (unknown for alerts restored from before a
    /// restart).
    pub active: BTreeMap<Key, (Alert, Option<&'static str>)>,
    /// When a condition that must last was first seen (cleared when it stops).
    pending: HashMap<Key, Instant>,
    /// Each app's restart count over time, within the restart window.
    restarts: HashMap<Name, VecDeque<(Instant, u64)>>,
}

impl Evaluator {
    /// Restores alerts that were firing before a restart (they resolve at the next evaluation
    /// if their cause is gone).
    pub fn restore(&mut self, alerts: impl IntoIterator<Item = Alert>) {
        for a in alerts {
            self.active.insert((a.kind, a.name.clone()), (a, None));
        }
    }

    /// The causes holding now, by alert.
    fn conditions(&mut self, s: &Snapshot, th: &Thresholds, now: Instant) -> BTreeMap<Key, Cause> {
        let mut holding = BTreeMap::new();
        // A condition that must last `after` before it is an alert (one firing already, perhaps
        // for another reason or from before a restart, goes on at once).
        let active = &self.active;
        let lasting = |holding: &mut BTreeMap<Key, Cause>,
                       pending: &mut HashMap<Key, Instant>,
                       key: Key,
                       cause: Cause,
                       after: Duration| {
            let since = *pending.entry(key.clone()).or_insert(now);
            if now.duration_since(since) >= after || active.contains_key(&key) {
                holding.insert(key, cause);
            }
        };
        let mut seen = Vec::new();
        for r in &s.sites {
            let Ok(site) = Name::new(&r.site) else { continue };
            if !r.connected {
                let cause = match r.last_seen_secs {
                    Some(age) => format!("site {site} has not been heard from for {age:.0} s"),
                    None => format!("site {site} has not been heard from since telemetry started"),
                };
                let key = (AlertKind::SiteOffline, site.clone());
                seen.push(key.clone());
                lasting(&mut holding, &mut self.pending, key, ("offline", cause), th.site_offline);
            }
            if r.buffer_fill >= th.buffer_fill {
                let cause = format!(
                    "site {site}'s event buffer is {:.0}% full ({} events the hub has not processed){}",
                    r.buffer_fill * 100.0,
                    r.buffer_messages,
                    if r.buffer_full { "; it refuses new events" } else { "" }
                );
                holding.insert((AlertKind::BufferNearlyFull, site.clone()), ("events", cause));
            } else if r.telemetry_fill >= th.buffer_fill {
                let cause = format!(
                    "site {site}'s telemetry buffer is {:.0}% full{}",
                    r.telemetry_fill * 100.0,
                    if r.telemetry_full { "; its oldest samples are dropped" } else { "" }
                );
                holding.insert((AlertKind::BufferNearlyFull, site.clone()), ("telemetry", cause));
            }
            // One alert per app: its fullest topic at the first site where one is nearly full.
            for t in r.topics.iter().filter(|t| t.state.fill() >= th.buffer_fill) {
                let key = (AlertKind::TopicNearlyFull, t.app.clone());
                if holding.contains_key(&key) {
                    continue;
                }
                let cause = format!(
                    "topic {} of app {} is {:.0}% full at site {site} ({} messages kept there){}",
                    t.topic,
                    t.app,
                    t.state.fill() * 100.0,
                    t.state.messages,
                    if t.state.full { "; it refuses new messages" } else { "" }
                );
                holding.insert(key, ("topic", cause));
            }
        }
        for a in &s.apps {
            let Ok(app) = Name::new(&a.app) else { continue };
            let key = (AlertKind::AppDegraded, app.clone());
            let history = self.restarts.entry(app.clone()).or_default();
            history.push_back((now, a.restarts));
            while history.front().is_some_and(|(t, _)| now.duration_since(*t) > th.restart_window) {
                history.pop_front();
            }
            let low = history.iter().map(|(_, n)| *n).min().unwrap_or(a.restarts);
            let restarted = a.restarts.saturating_sub(low);
            if a.sites_failed > 0 {
                let cause = format!("{app} failed at {} of {} sites", a.sites_failed, a.sites_desired);
                holding.insert(key, ("failed", cause));
            } else if restarted >= th.restarts {
                let cause = format!(
                    "{app}'s containers restarted {restarted} times in the last {} s",
                    th.restart_window.as_secs()
                );
                holding.insert(key, ("restarts", cause));
            } else if a.unhealthy > 0 {
                let cause = format!("{app} has {} containers failing their probe", a.unhealthy);
                seen.push(key.clone());
                lasting(&mut holding, &mut self.pending, key, ("probe", cause), th.app_short);
            } else if a.sites_running < a.sites_desired {
                let cause = format!("{app} runs at {} of {} sites", a.sites_running, a.sites_desired);
                seen.push(key.clone());
                lasting(&mut holding, &mut self.pending, key, ("short", cause), th.app_short);
            }
        }
        self.pending.retain(|k, _| seen.contains(k));
        self.restarts.retain(|app, _| s.apps.iter().any(|a| a.app == app.as_str()));
        holding
    }

    /// Evaluates a snapshot: the alerts that started firing, those that resolved, and those
    /// still firing for another reason than before.
    pub fn step(&mut self, s: &Snapshot, th: &Thresholds, now: Instant, now_ms: u64) -> Changes {
        let holding = self.conditions(s, th, now);
        let mut changes = Changes::default();
        for (key, (class, cause)) in &holding {
            match self.active.get_mut(key) {
                Some((a, was)) => {
                    // Still firing: the words of the cause (an age, a fill) are not news, its
                    // reason is.
                    if *was != Some(*class) {
                        *was = Some(*class);
                        a.cause = cause.clone();
                        changes.recaused.push(a.clone());
                    }
                }
                None => {
                    let a = Alert {
                        kind: key.0,
                        name: key.1.clone(),
                        state: AlertState::Firing,
                        cause: cause.clone(),
                        since_ms: now_ms,
                        resolved_at_ms: None,
                    };
                    self.active.insert(key.clone(), (a.clone(), Some(*class)));
                    changes.events.push(a);
                }
            }
        }
        let gone: Vec<Key> = self.active.keys().filter(|k| !holding.contains_key(*k)).cloned().collect();
        for key in gone {
            let (mut a, _) = self.active.remove(&key).expect("listed");
            a.state = AlertState::Resolved;
            a.resolved_at_ms = Some(now_ms);
            changes.events.push(a);
        }
        changes
    }
}

/// Evaluates the fleet every period and publishes what changes: an event on
/// `edge.v1.alert.<kind>.<name>` (hub stream ALERTS) and the firing set in `edge_alerts`.
pub struct Raiser {
    pub js: async_nats::jetstream::Context,
    pub kv: async_nats::jetstream::kv::Store,
    pub fleet: crate::fleet::Fleet,
    pub thresholds: Thresholds,
}

fn alert_key(a: &Alert) -> String {
    format!("{}.{}", a.kind.as_str(), a.name)
}

impl Raiser {
    pub async fn run(self, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        let mut e = Evaluator::default();
        match edge_bus::kv::list::<Alert>(&self.kv, "").await {
            Ok(firing) => e.restore(firing.into_iter().map(|(_, a)| a)),
            Err(err) => tracing::warn!(error = %err, "cannot read the alerts that were firing"),
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let snap = self.fleet.snapshot().await;
            let changes = e.step(&snap, &self.thresholds, Instant::now(), edge_bus::time::now_ms());
            for a in &changes.events {
                self.publish(a).await;
            }
            for a in &changes.recaused {
                tracing::warn!(kind = a.kind.as_str(), name = %a.name, cause = %a.cause, "alert still firing, for another cause");
                self.store(a).await;
            }
        }
    }

    async fn publish(&self, a: &Alert) {
        match a.state {
            AlertState::Firing => {
                tracing::warn!(kind = a.kind.as_str(), name = %a.name, cause = %a.cause, "alert firing")
            }
            AlertState::Resolved => tracing::info!(kind = a.kind.as_str(), name = %a.name, "alert resolved"),
        }
        self.store(a).await;
        let body = serde_json::to_vec(a).expect("alerts serialize");
        let id = format!("alert.{}.{:?}.{}", alert_key(a), a.state, a.resolved_at_ms.unwrap_or(a.since_ms));
        let msg = async_nats::jetstream::message::PublishMessage::build().payload(body.into()).message_id(id);
        let sent = match self.js.send_publish(edge_types::subject::alert(a.kind, &a.name), msg).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(err) = sent {
            tracing::error!(error = %err, "alert event not stored");
        }
    }

    /// Keeps the listing (`edge_alerts`) in step: a firing alert with its latest cause, a
    /// resolved one gone.
    async fn store(&self, a: &Alert) {
        let stored = match a.state {
            AlertState::Firing => {
                let body = serde_json::to_vec(a).expect("alerts serialize");
                self.kv.put(alert_key(a), body.into()).await.map(|_| ()).map_err(|e| e.to_string())
            }
            AlertState::Resolved => self.kv.delete(alert_key(a)).await.map_err(|e| e.to_string()),
        };
        if let Err(err) = stored {
            tracing::error!(error = %err, "alert state not stored");
        }
    }
}

/// `alert.list`: the firing alerts, oldest first.
pub async fn list(
    kv: &async_nats::jetstream::kv::Store,
    body: &[u8],
) -> Result<edge_types::alert::AlertListReply, edge_types::api::ApiError> {
    let _: edge_types::api::Empty = edge_types::schema::decode(body).map_err(edge_bus::api::invalid)?;
    let mut alerts: Vec<Alert> = edge_bus::kv::list::<Alert>(kv, "")
        .await
        .map_err(|e| edge_types::api::ApiError::new(edge_types::api::ErrorCode::Unavailable, e.to_string()))?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    alerts.sort_by_key(|a| a.since_ms);
    Ok(edge_types::alert::AlertListReply { alerts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{AppRow, SiteRow};

    fn snap(connected: bool, fill: f64, running: u64, failed: u64, restarts: u64) -> Snapshot {
        Snapshot {
            sites: vec![SiteRow {
                site: "shop-1".into(),
                connected,
                last_seen_secs: Some(if connected { 1.0 } else { 400.0 }),
                buffer_fill: fill,
                ..Default::default()
            }],
            apps: vec![AppRow {
                app: "web".into(),
                sites_desired: 2,
                sites_running: running,
                sites_failed: failed,
                restarts,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn th() -> Thresholds {
        Thresholds {
            site_offline: Duration::from_secs(60),
            app_short: Duration::from_secs(30),
            restarts: 3,
            restart_window: Duration::from_secs(300),
            buffer_fill: 0.8,
        }
    }

    fn kinds(changes: &[Alert]) -> Vec<(AlertKind, AlertState)> {
        changes.iter().map(|a| (a.kind, a.state)).collect()
    }

    /// The alerts that started or resolved in an evaluation.
    fn step(e: &mut Evaluator, s: &Snapshot, now: Instant, now_ms: u64) -> Vec<Alert> {
        let c = e.step(s, &th(), now, now_ms);
        assert!(c.recaused.is_empty(), "{:?}", c.recaused);
        c.events
    }

    #[test]
    fn lasting_conditions_fire_after_their_threshold_and_resolve() {
        let mut e = Evaluator::default();
        let t0 = Instant::now();
        assert!(step(&mut e, &snap(true, 0.1, 2, 0, 0), t0, 0).is_empty());
        // Offline and short of sites: not yet.
        assert!(step(&mut e, &snap(false, 0.1, 1, 0, 0), t0 + Duration::from_secs(1), 1).is_empty());
        let c = step(&mut e, &snap(false, 0.1, 1, 0, 0), t0 + Duration::from_secs(40), 40);
        assert_eq!(kinds(&c), [(AlertKind::AppDegraded, AlertState::Firing)]);
        assert_eq!(c[0].cause, "web runs at 1 of 2 sites");
        let c = step(&mut e, &snap(false, 0.1, 1, 0, 0), t0 + Duration::from_secs(70), 70);
        assert_eq!(kinds(&c), [(AlertKind::SiteOffline, AlertState::Firing)]);
        assert!(c[0].cause.contains("has not been heard from for 400 s"), "{}", c[0].cause);
        // Nothing new while it lasts; both resolve when the cause goes away.
        assert!(step(&mut e, &snap(false, 0.1, 1, 0, 0), t0 + Duration::from_secs(80), 80).is_empty());
        let c = step(&mut e, &snap(true, 0.1, 2, 0, 0), t0 + Duration::from_secs(90), 90);
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|a| a.state == AlertState::Resolved && a.resolved_at_ms == Some(90)));
        assert!(e.active.is_empty());
    }

    #[test]
    fn a_full_topic_fires_once_per_app_and_resolves_when_it_drains() {
        let mut e = Evaluator::default();
        let t0 = Instant::now();
        let n = |s: &str| Name::new(s).unwrap();
        let fill = |messages: u64| edge_types::site::TopicFill {
            tenant: n("acme"),
            app: n("web"),
            topic: n("readings"),
            state: edge_types::site::BufferState {
                messages,
                max_messages: 10,
                max_bytes: -1,
                full: messages >= 10,
                ..Default::default()
            },
        };
        let mut s = snap(true, 0.1, 2, 0, 0);
        s.sites[0].topics = vec![fill(10), fill(9)];
        let c = step(&mut e, &s, t0, 0);
        assert_eq!(kinds(&c), [(AlertKind::TopicNearlyFull, AlertState::Firing)]);
        assert_eq!(c[0].name.as_str(), "web");
        assert!(c[0].cause.contains("topic readings of app web is 100% full at site shop-1"), "{}", c[0].cause);
        assert!(c[0].cause.ends_with("it refuses new messages"), "{}", c[0].cause);
        s.sites[0].topics = vec![fill(3)];
        let c = step(&mut e, &s, t0 + Duration::from_secs(5), 5);
        assert_eq!(kinds(&c), [(AlertKind::TopicNearlyFull, AlertState::Resolved)]);
    }

    #[test]
    fn failures_restarts_and_full_buffers_fire_at_once() {
        let mut e = Evaluator::default();
        let t0 = Instant::now();
        let c = step(&mut e, &snap(true, 0.9, 2, 1, 0), t0, 0);
        assert_eq!(
            kinds(&c),
            [(AlertKind::AppDegraded, AlertState::Firing), (AlertKind::BufferNearlyFull, AlertState::Firing)]
        );
        assert_eq!(e.active.len(), 2);
        let mut e = Evaluator::default();
        assert!(step(&mut e, &snap(true, 0.1, 2, 0, 10), t0, 0).is_empty());
        assert!(step(&mut e, &snap(true, 0.1, 2, 0, 12), t0 + Duration::from_secs(10), 10).is_empty());
        let c = step(&mut e, &snap(true, 0.1, 2, 0, 13), t0 + Duration::from_secs(20), 20);
        assert!(c[0].cause.contains("restarted 3 times"), "{}", c[0].cause);
        // Quiet for longer than the window: resolved.
        let c = step(&mut e, &snap(true, 0.1, 2, 0, 13), t0 + Duration::from_secs(400), 400);
        assert_eq!(kinds(&c), [(AlertKind::AppDegraded, AlertState::Resolved)]);
    }

    #[test]
    fn a_firing_alert_takes_a_new_reason_but_not_new_words_for_the_same_one() {
        let mut e = Evaluator::default();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        e.step(&snap(true, 0.1, 1, 0, 0), &th(), t0, 0);
        let c = e.step(&snap(true, 0.1, 1, 0, 0), &th(), at(40), 40);
        assert_eq!(c.events[0].cause, "web runs at 1 of 2 sites");
        // The containers that were starting now fail their probe: same alert, new reason.
        let mut sick = snap(true, 0.1, 1, 0, 0);
        sick.apps[0].unhealthy = 1;
        let c = e.step(&sick, &th(), at(41), 41);
        assert!(c.events.is_empty(), "{:?}", c.events);
        assert_eq!(c.recaused.len(), 1);
        assert_eq!(c.recaused[0].cause, "web has 1 containers failing their probe");
        assert_eq!((c.recaused[0].state, c.recaused[0].since_ms), (AlertState::Firing, 40));
        assert!(e.step(&sick, &th(), at(42), 42).recaused.is_empty());
        // An offline site's age grows with every evaluation: not a new reason.
        let mut gone = sick.clone();
        gone.sites[0].connected = false;
        e.step(&gone, &th(), at(43), 43);
        gone.sites[0].last_seen_secs = Some(500.0);
        let c = e.step(&gone, &th(), at(110), 110);
        assert_eq!(kinds(&c.events), [(AlertKind::SiteOffline, AlertState::Firing)]);
        gone.sites[0].last_seen_secs = Some(501.0);
        let c = e.step(&gone, &th(), at(111), 111);
        assert!(c.events.is_empty() && c.recaused.is_empty(), "{c:?}");
        // A restored alert learns its reason at the first evaluation.
        let mut restarted = Evaluator::default();
        restarted.restore(e.active.values().map(|(a, _)| a.clone()));
        let c = restarted.step(&gone, &th(), at(112), 112);
        assert!(c.events.is_empty(), "{:?}", c.events);
        assert_eq!(c.recaused.len(), 2);
    }
}
