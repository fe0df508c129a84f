//! Rollouts of a new version over the sites that run an older one: waves (canary first), each
//! gated on health for `healthy_time_secs`; a failed gate halts the rollout and, by default,
//! rolls the updated sites back. The rules are pure functions here; the driver applies them to
//! the stored records once a second.

use std::collections::BTreeMap;
use std::time::Duration;

use edge_bus::kv::{self, Change};
use edge_types::api::AppRecord;
use edge_types::rollout::{Revision, RolloutPhase, RolloutPolicy, RolloutState, Wave, WaveStatus};
use edge_types::selector::{LabelOrders, Selector};
use edge_types::site::SiteRecord;
use edge_types::status::{AppStatusReport, Phase};
use edge_types::Name;
use tokio_util::sync::CancellationToken;

use crate::placement::{self, app_key};
use crate::sites::all_sites;
use crate::{Hub, SchedulerError};

/// Sites `targets` in waves: the canary sites first, then batches of `sites_in_parallel` in
/// site order. Empty waves are left out.
pub fn plan_waves(policy: &RolloutPolicy, orders: &LabelOrders, sites: &[SiteRecord], targets: &[Name]) -> Vec<Wave> {
    let canary_sel = Selector::parse(&policy.canary).unwrap_or_default();
    let is_canary = |s: &Name| {
        !policy.canary.trim().is_empty()
            && sites.iter().any(|r| &r.site == s && canary_sel.matches_in(&r.effective_labels(), orders))
    };
    let mut sorted = targets.to_vec();
    sorted.sort();
    let (canary, rest): (Vec<Name>, Vec<Name>) = sorted.into_iter().partition(is_canary);
    let mut waves = Vec::new();
    if !canary.is_empty() {
        waves.push(Wave { name: "canary".into(), sites: canary });
    }
    for chunk in rest.chunks(policy.sites_in_parallel.max(1) as usize) {
        waves.push(Wave { name: format!("wave {}", waves.len() + 1), sites: chunk.to_vec() });
    }
    waves
}

/// How the sites of one wave are doing on the rollout's generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub running: u32,
    pub failed: u32,
    pub progressing: u32,
    /// Offline, or holding the change until their maintenance window.
    pub waiting: u32,
}

/// Counts a wave's sites from their latest reports and whether they are connected.
pub fn census(
    sites: &[Name],
    generation: u64,
    reports: &BTreeMap<Name, AppStatusReport>,
    connected: impl Fn(&Name) -> bool,
) -> Census {
    let mut c = Census::default();
    for s in sites {
        let current = reports.get(s).filter(|r| r.generation == generation);
        match current.map(|r| r.phase) {
            Some(Phase::Running) => c.running += 1,
            Some(Phase::Failed) => c.failed += 1,
            Some(Phase::Deferred) => c.waiting += 1,
            _ if !connected(s) => c.waiting += 1,
            _ => c.progressing += 1,
        }
    }
    c
}

/// What a wave's health gate says now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Every site is accounted for within the tolerances: healthy now.
    Healthy,
    /// Not yet: why.
    Wait(String),
    /// Failed: why.
    Failed(String),
}

/// The gate of a wave `elapsed` after it started.
pub fn gate(policy: &RolloutPolicy, c: Census, elapsed: Duration) -> Gate {
    if c.failed > policy.max_unavailable {
        return Gate::Failed(format!("{} sites failed (max_unavailable {})", c.failed, policy.max_unavailable));
    }
    if c.waiting > policy.max_offline {
        return Gate::Wait(format!(
            "waiting for {} offline or deferred sites (max_offline {})",
            c.waiting, policy.max_offline
        ));
    }
    if c.progressing == 0 {
        return Gate::Healthy;
    }
    if elapsed < Duration::from_secs(policy.progress_deadline_secs) {
        return Gate::Wait(format!("{} sites progressing", c.progressing));
    }
    // Past the deadline, sites still progressing count as unavailable.
    if c.failed + c.progressing > policy.max_unavailable {
        return Gate::Failed(format!(
            "{} sites not running after the progress deadline of {} s",
            c.progressing, policy.progress_deadline_secs
        ));
    }
    Gate::Healthy
}

/// KV key of a revision.
pub fn rev_key(app: &Name, generation: u64) -> String {
    format!("rev.{app}.{generation}")
}

/// Stores (or updates the outcome of) a revision.
pub async fn record_revision(hub: &Hub, rev: &Revision, app: &Name) -> Result<(), SchedulerError> {
    let r = rev.clone();
    kv::update::<Revision, _>(&hub.buckets.apps, &rev_key(app, rev.generation), |cur| match cur {
        Some(c) if c == &r => Change::Keep,
        _ => Change::Put(r.clone()),
    })
    .await?;
    Ok(())
}

/// Stores the revision of `record`'s current generation if none is stored.
pub async fn ensure_revision(hub: &Hub, record: &AppRecord) -> Result<(), SchedulerError> {
    let rev = Revision {
        generation: record.generation,
        version: record.spec.version.clone(),
        spec: record.spec.clone(),
        applied_at_ms: record.updated_at_ms,
        outcome: "applied".into(),
        images: record.images.clone(),
    };
    kv::update::<Revision, _>(&hub.buckets.apps, &rev_key(&record.spec.name, record.generation), |cur| match cur {
        Some(_) => Change::Keep,
        None => Change::Put(rev.clone()),
    })
    .await?;
    Ok(())
}

/// Sets the outcome of a stored revision.
pub async fn set_outcome(hub: &Hub, app: &Name, generation: u64, outcome: &str) -> Result<(), SchedulerError> {
    kv::update::<Revision, _>(&hub.buckets.apps, &rev_key(app, generation), |cur| match cur {
        Some(c) if c.outcome != outcome => {
            let mut c = c.clone();
            c.outcome = outcome.to_string();
            Change::Put(c)
        }
        _ => Change::Keep,
    })
    .await?;
    Ok(())
}

/// Every stored revision of an app, newest first.
pub async fn revisions(hub: &Hub, app: &Name) -> Result<Vec<Revision>, SchedulerError> {
    let mut all: Vec<Revision> =
        kv::list::<Revision>(&hub.buckets.apps, &format!("rev.{app}.")).await?.into_iter().map(|(_, r)| r).collect();
    all.sort_by_key(|r| std::cmp::Reverse(r.generation));
    Ok(all)
}

/// The rollout a newly applied `spec` (generation `generation`) starts over `previous`, or
/// `None` when it goes out at once (no policy, first version, nothing running yet).
pub fn start(
    hub: &Hub,
    previous: Option<&AppRecord>,
    next: &AppRecord,
    matched: &[Name],
    sites: &[SiteRecord],
) -> Option<RolloutState> {
    let policy = next.spec.rollout.as_ref()?;
    let prev = previous?;
    // The generation each site runs (or is held at) now.
    let active = prev
        .rollout
        .as_ref()
        .filter(|r| matches!(r.phase, RolloutPhase::Progressing | RolloutPhase::Paused | RolloutPhase::Halted));
    let running_on = |s: &Name| active.and_then(|r| r.held.get(s).copied()).unwrap_or(prev.generation);
    let targets: Vec<Name> = matched.iter().filter(|s| prev.sites.contains(s)).cloned().collect();
    if targets.is_empty() {
        return None;
    }
    let waves = plan_waves(policy, &hub.orders, sites, &targets);
    let held = waves.iter().skip(1).flat_map(|w| w.sites.iter()).map(|s| (s.clone(), running_on(s))).collect();
    let now = edge_bus::time::now_ms();
    Some(RolloutState {
        generation: next.generation,
        version: next.spec.version.clone(),
        from_generation: prev.generation,
        from_version: prev.spec.version.clone(),
        waves,
        current: 0,
        phase: RolloutPhase::Progressing,
        held,
        started_at_ms: now,
        wave_started_at_ms: now,
        healthy_since_ms: None,
        message: String::new(),
    })
}

/// The latest reports of an app, by site.
pub async fn reports(hub: &Hub, app: &Name) -> Result<BTreeMap<Name, AppStatusReport>, SchedulerError> {
    let all = kv::list::<AppStatusReport>(&hub.buckets.status, &format!("{app}.")).await?;
    Ok(all.into_iter().map(|(_, r)| r).filter(|r| &r.app == app).map(|r| (r.site.clone(), r)).collect())
}

/// Progress of every wave of a rollout, over the sites the app is still `placed` at.
pub fn wave_statuses(
    hub: &Hub,
    r: &RolloutState,
    placed: &[Name],
    reports: &BTreeMap<Name, AppStatusReport>,
) -> Vec<WaveStatus> {
    r.waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let sites: Vec<Name> = w.sites.iter().filter(|s| placed.contains(s)).cloned().collect();
            let c = census(&sites, r.generation, reports, |s| hub.connected(s));
            let state = if i < r.current {
                "done"
            } else if i > r.current {
                "pending"
            } else {
                match r.phase {
                    RolloutPhase::Halted | RolloutPhase::RolledBack => "failed",
                    RolloutPhase::Paused => "paused",
                    _ => "in progress",
                }
            };
            WaveStatus {
                name: w.name.clone(),
                state: state.into(),
                sites: sites.len() as u32,
                running: c.running,
                failed: c.failed,
                progressing: c.progressing,
                waiting: c.waiting,
            }
        })
        .collect()
}

/// Drives every progressing rollout once a second until shutdown.
pub async fn drive(hub: Hub, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Err(e) = step_all(&hub).await {
            tracing::warn!(error = %e, "rollout step failed; retrying");
        }
    }
}

/// Names of the apps whose rollout is progressing, so a step reads only those records; filled
/// by one full scan at start, then by apply and resume.
#[derive(Clone, Default)]
pub struct Rolling(std::sync::Arc<std::sync::Mutex<Option<std::collections::BTreeSet<Name>>>>);

impl Rolling {
    /// Marks an app as rolling out (a no-op before the first scan, which will find it).
    pub fn insert(&self, app: &Name) {
        if let Some(set) = self.0.lock().expect("rolling lock").as_mut() {
            set.insert(app.clone());
        }
    }
}

async fn step_all(hub: &Hub) -> Result<(), SchedulerError> {
    let _guard = hub.placement.lock().await;
    let known = hub.rolling.0.lock().expect("rolling lock").clone();
    let names = match known {
        Some(names) => names,
        None => {
            let all = kv::list::<AppRecord>(&hub.buckets.apps, "app.").await?;
            let names: std::collections::BTreeSet<Name> = all
                .into_iter()
                .filter(|(_, r)| r.rollout.as_ref().is_some_and(|ro| ro.phase == RolloutPhase::Progressing))
                .map(|(_, r)| r.spec.name)
                .collect();
            *hub.rolling.0.lock().expect("rolling lock") = Some(names.clone());
            names
        }
    };
    for name in names {
        let record = kv::get::<AppRecord>(&hub.buckets.apps, &app_key(&name)).await?.map(|(r, _)| r);
        match record.filter(|r| r.rollout.as_ref().is_some_and(|ro| ro.phase == RolloutPhase::Progressing)) {
            Some(r) => step(hub, r).await?,
            None => {
                if let Some(set) = hub.rolling.0.lock().expect("rolling lock").as_mut() {
                    set.remove(&name);
                }
            }
        }
    }
    Ok(())
}

/// One step of one rollout: evaluate the current wave's gate and act on it.
async fn step(hub: &Hub, record: AppRecord) -> Result<(), SchedulerError> {
    let app = record.spec.name.clone();
    let Some(policy) = record.spec.rollout.clone() else { return Ok(()) };
    let mut ro = record.rollout.clone().expect("checked by the caller");
    let now = edge_bus::time::now_ms();
    let Some(wave) = ro.waves.get(ro.current).cloned() else { return Ok(()) };
    let reports = reports(hub, &app).await?;
    // A site the app left during the rollout no longer counts.
    let sites: Vec<Name> = wave.sites.iter().filter(|s| record.sites.contains(s)).cloned().collect();
    let c = census(&sites, ro.generation, &reports, |s| hub.connected(s));
    let elapsed = Duration::from_millis(now.saturating_sub(ro.wave_started_at_ms));
    match gate(&policy, c, elapsed) {
        Gate::Failed(why) => {
            let why = format!("{} failed its health gate: {why}", wave.name);
            tracing::warn!(%app, generation = ro.generation, %why, "rollout halted");
            if policy.auto_rollback {
                return rollback(hub, &record, ro.from_generation, &why).await.map(|_| ());
            }
            ro.phase = RolloutPhase::Halted;
            ro.message = why.clone();
            set_outcome(hub, &app, ro.generation, &format!("halted: {why}")).await?;
        }
        Gate::Wait(why) => {
            ro.healthy_since_ms = None;
            ro.message = why;
        }
        Gate::Healthy => {
            let since = *ro.healthy_since_ms.get_or_insert(now);
            ro.message = format!("{} healthy", wave.name);
            if now.saturating_sub(since) >= policy.healthy_time_secs * 1000 {
                tracing::info!(%app, wave = %wave.name, "wave passed its health gate");
                ro.current += 1;
                ro.healthy_since_ms = None;
                ro.wave_started_at_ms = now;
                if let Some(next) = ro.waves.get(ro.current) {
                    for s in &next.sites {
                        ro.held.remove(s);
                    }
                    ro.message = format!("{} started", next.name);
                } else {
                    ro.phase = RolloutPhase::Complete;
                    ro.held.clear();
                    ro.message = "every wave passed its health gate".into();
                    set_outcome(hub, &app, ro.generation, "rolled out").await?;
                }
            }
        }
    }
    if record.rollout.as_ref() == Some(&ro) {
        return Ok(());
    }
    let released = record.rollout.as_ref().is_some_and(|r| r.held != ro.held);
    if let Some(stored) = save(hub, &record, ro).await? {
        if released {
            placement::place(hub, &stored, &all_sites(hub).await?).await?;
        }
    }
    Ok(())
}

/// Stores a new rollout state, if the record is still the one it was computed from.
async fn save(hub: &Hub, record: &AppRecord, ro: RolloutState) -> Result<Option<AppRecord>, SchedulerError> {
    let mut stored = None;
    kv::update::<AppRecord, _>(&hub.buckets.apps, &app_key(&record.spec.name), |cur| match cur {
        Some(c) if c.generation == record.generation => {
            let mut next = c.clone();
            next.rollout = Some(ro.clone());
            stored = Some(next.clone());
            Change::Put(next)
        }
        _ => Change::Keep,
    })
    .await?;
    Ok(stored)
}

/// Applies the spec of revision `to` as a new generation, at once on every site; the record
/// keeps the rollout it ends, marked rolled back with `why`. Returns the new record.
pub async fn rollback(hub: &Hub, record: &AppRecord, to: u64, why: &str) -> Result<AppRecord, SchedulerError> {
    let app = record.spec.name.clone();
    let Some((target, _)) = kv::get::<Revision>(&hub.buckets.apps, &rev_key(&app, to)).await? else {
        return Err(SchedulerError::Corrupt(format!("revision {to} of {app} is missing")));
    };
    let generation = record.generation + 1;
    let mut ended = record.rollout.clone();
    if let Some(r) = ended.as_mut() {
        if matches!(r.phase, RolloutPhase::Progressing | RolloutPhase::Paused | RolloutPhase::Halted) {
            r.phase = RolloutPhase::RolledBack;
            r.message = why.to_string();
            r.held.clear();
        }
    }
    let next = AppRecord {
        digest: target.spec.digest(),
        spec: target.spec.clone(),
        generation,
        sites: record.sites.clone(),
        updated_at_ms: edge_bus::time::now_ms(),
        rollout: ended,
        images: target.images.clone(),
    };
    let mut stored = None;
    kv::update::<AppRecord, _>(&hub.buckets.apps, &app_key(&app), |cur| match cur {
        Some(c) if c.generation == record.generation => {
            stored = Some(next.clone());
            Change::Put(next.clone())
        }
        _ => Change::Keep,
    })
    .await?;
    let Some(stored) = stored else {
        return Err(SchedulerError::Corrupt(format!("{app} changed during the rollback; retry")));
    };
    set_outcome(hub, &app, record.generation, &format!("rolled back: {why}")).await?;
    let rev = Revision {
        generation,
        version: target.version.clone(),
        spec: target.spec.clone(),
        applied_at_ms: stored.updated_at_ms,
        outcome: format!("rollback to {} (generation {to})", target.version),
        images: target.images.clone(),
    };
    record_revision(hub, &rev, &app).await?;
    placement::place(hub, &stored, &all_sites(hub).await?).await?;
    tracing::warn!(%app, to_version = %target.version, generation, "rolled back");
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: serde_json::Value) -> RolloutPolicy {
        serde_json::from_value(extra).unwrap()
    }

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn site(name: &str, canary: bool) -> SiteRecord {
        SiteRecord {
            site: n(name),
            reported_labels: if canary {
                [("canary".to_string(), "true".to_string())].into()
            } else {
                Default::default()
            },
            labels: Default::default(),
            hosts: vec![],
            agent_version: "t".into(),
            registered_at_ms: 0,
            public_key: None,
            duplicate_hosts: Vec::new(),
        }
    }

    #[test]
    fn waves_put_the_canary_first_then_batches() {
        let sites: Vec<SiteRecord> = ["a", "b", "c", "d", "e"].iter().map(|s| site(s, *s == "d")).collect();
        let targets: Vec<Name> = sites.iter().map(|s| s.site.clone()).collect();
        let p = policy(serde_json::json!({"canary": "canary = true", "sites_in_parallel": 2}));
        let waves = plan_waves(&p, &LabelOrders::default(), &sites, &targets);
        let names: Vec<(&str, Vec<&str>)> =
            waves.iter().map(|w| (w.name.as_str(), w.sites.iter().map(|s| s.as_str()).collect())).collect();
        assert_eq!(names, [("canary", vec!["d"]), ("wave 2", vec!["a", "b"]), ("wave 3", vec!["c", "e"])]);
        let p = policy(serde_json::json!({"canary": "canary = nowhere", "sites_in_parallel": 10}));
        assert_eq!(plan_waves(&p, &LabelOrders::default(), &sites, &targets).len(), 1, "an empty canary is skipped");
    }

    #[test]
    fn the_gate_fails_waits_and_tolerates_as_the_policy_says() {
        let p = policy(serde_json::json!({"max_unavailable": 1, "max_offline": 1, "progress_deadline_secs": 60}));
        let c = |running, failed, progressing, waiting| Census { running, failed, progressing, waiting };
        let early = Duration::from_secs(5);
        assert_eq!(gate(&p, c(3, 0, 0, 0), early), Gate::Healthy);
        assert_eq!(gate(&p, c(2, 1, 0, 1), early), Gate::Healthy, "one failed and one offline are tolerated");
        assert!(matches!(gate(&p, c(1, 2, 0, 0), early), Gate::Failed(_)));
        assert!(matches!(gate(&p, c(1, 0, 0, 2), early), Gate::Wait(_)), "too many offline: wait, never fail");
        assert!(matches!(gate(&p, c(2, 0, 1, 0), early), Gate::Wait(_)));
        assert!(matches!(gate(&p, c(1, 1, 1, 0), Duration::from_secs(61)), Gate::Failed(_)));
        assert_eq!(gate(&p, c(2, 0, 1, 0), Duration::from_secs(61)), Gate::Healthy, "one slow site is tolerated");
    }

    #[test]
    fn census_counts_only_the_rollouts_generation() {
        let report = |site: &str, generation, phase| AppStatusReport {
            site: n(site),
            app: n("a"),
            generation,
            version: "1".into(),
            phase,
            containers: vec![],
            unplaced: vec![],
            reported_at_ms: 0,
        };
        let reports: BTreeMap<Name, AppStatusReport> = [
            report("a", 2, Phase::Running),
            report("b", 1, Phase::Running),
            report("c", 2, Phase::Deferred),
            report("d", 2, Phase::Failed),
        ]
        .into_iter()
        .map(|r| (r.site.clone(), r))
        .collect();
        let sites = [n("a"), n("b"), n("c"), n("d"), n("e")];
        let c = census(&sites, 2, &reports, |s| s.as_str() != "e");
        assert_eq!(c, Census { running: 1, failed: 1, progressing: 1, waiting: 2 });
    }
}
