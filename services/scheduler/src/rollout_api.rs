//! The rollout operations: `app.rollout` (progress by wave), `app.pause` / `app.resume` (one app
//! or all), `app.history` and `app.rollback`.

use edge_bus::kv::{self, Change};
use edge_types::api::{ApiError, AppRecord, AppRef};
use edge_types::rollout::*;
use edge_types::schema::decode;
use edge_types::Name;

use crate::placement::app_key;
use crate::rollout::{self, reports, wave_statuses};
use crate::{Hub, SchedulerError};

async fn record(hub: &Hub, name: &Name) -> Result<AppRecord, ApiError> {
    kv::get::<AppRecord>(&hub.buckets.apps, &app_key(name))
        .await
        .map_err(SchedulerError::from)?
        .map(|(r, _)| r)
        .ok_or_else(|| ApiError::not_found(format!("application \"{name}\" does not exist")))
}

pub async fn status(hub: &Hub, body: &[u8]) -> Result<RolloutStatusReply, ApiError> {
    let req: AppRef = decode(body).map_err(edge_bus::api::invalid)?;
    let r = record(hub, &req.name).await?;
    let waves = match &r.rollout {
        Some(ro) => wave_statuses(hub, ro, &r.sites, &reports(hub, &req.name).await?),
        None => Vec::new(),
    };
    Ok(RolloutStatusReply { name: req.name, rollout: r.rollout, waves })
}

/// Pauses (`pause`) or resumes rollouts of one app or of all; returns the apps changed.
pub async fn control(hub: &Hub, body: &[u8], pause: bool) -> Result<RolloutControlReply, ApiError> {
    let req: RolloutControl = decode(body).map_err(edge_bus::api::invalid)?;
    let names: Vec<Name> = match (&req.name, req.all) {
        (Some(n), false) => {
            record(hub, n).await?;
            vec![n.clone()]
        }
        (None, true) => kv::list::<AppRecord>(&hub.buckets.apps, "app.")
            .await
            .map_err(SchedulerError::from)?
            .into_iter()
            .map(|(_, r)| r.spec.name)
            .collect(),
        _ => return Err(ApiError::invalid("/name", "invalid request: give either name or all: true")),
    };
    let _guard = hub.placement.lock().await;
    let (from, to) = if pause {
        (RolloutPhase::Progressing, RolloutPhase::Paused)
    } else {
        (RolloutPhase::Paused, RolloutPhase::Progressing)
    };
    let mut changed = Vec::new();
    for name in names {
        let mut hit = false;
        kv::update::<AppRecord, _>(&hub.buckets.apps, &app_key(&name), |cur| {
            hit = false;
            let Some(c) = cur.filter(|c| c.rollout.as_ref().is_some_and(|r| r.phase == from)) else {
                return Change::Keep;
            };
            let mut next = c.clone();
            let r = next.rollout.as_mut().expect("checked");
            r.phase = to;
            if !pause {
                // The deadline and the healthy time count from the resume.
                r.wave_started_at_ms = edge_bus::time::now_ms();
                r.healthy_since_ms = None;
            }
            r.message = if pause { "paused by an operator".into() } else { "resumed".into() };
            hit = true;
            Change::Put(next)
        })
        .await
        .map_err(SchedulerError::from)?;
        if hit {
            hub.rolling.insert(&name);
            tracing::info!(app = %name, paused = pause, "rollout {}", if pause { "paused" } else { "resumed" });
            changed.push(name);
        }
    }
    Ok(RolloutControlReply { apps: changed })
}

pub async fn history(hub: &Hub, body: &[u8]) -> Result<HistoryReply, ApiError> {
    let req: AppRef = decode(body).map_err(edge_bus::api::invalid)?;
    let revisions = rollout::revisions(hub, &req.name).await?;
    if revisions.is_empty() {
        record(hub, &req.name).await?;
    }
    Ok(HistoryReply { name: req.name, revisions })
}

/// Rolls an app back, at once on every site, to `to_version` or to the version before the
/// current one.
pub async fn rollback(hub: &Hub, body: &[u8]) -> Result<AppRecord, ApiError> {
    let req: RollbackRequest = decode(body).map_err(edge_bus::api::invalid)?;
    let _guard = hub.placement.lock().await;
    let current = record(hub, &req.name).await?;
    let revisions = rollout::revisions(hub, &req.name).await?;
    let older = revisions.iter().filter(|r| r.generation < current.generation);
    let target = match &req.to_version {
        Some(v) => older.clone().find(|r| &r.version == v).ok_or_else(|| {
            ApiError::invalid(
                "/to_version",
                format!("invalid request: /to_version: no earlier revision has version {v:?}"),
            )
        })?,
        None => older.clone().find(|r| r.version != current.spec.version).ok_or_else(|| {
            ApiError::invalid("/name", "invalid request: there is no earlier version to roll back to")
        })?,
    };
    let why = format!("rollback to {} requested", target.version);
    Ok(rollout::rollback(hub, &current, target.generation, &why).await?)
}
