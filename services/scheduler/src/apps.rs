//! The `app.*` operations: apply, list, get, status, delete.

use edge_bus::kv::{self, Change};
use edge_types::api::*;
use edge_types::app::AppSpec;
use edge_types::image::{ImageRecord, SiteStaging, StagingProgress};
use edge_types::schema::decode;
use std::collections::{BTreeMap, BTreeSet};

use edge_types::policy::Policy;
use edge_types::rollout::{Revision, RolloutPhase};
use edge_types::status::AppStatusReport;
use edge_types::Name;

use edge_types::block::Caller;
use edge_types::subject::ApiOp;

use crate::placement::{self, app_key, gen_key};
use crate::rollout;
use crate::sites::all_sites;
use crate::Hub;

/// Decodes and checks a spec as `apply` and `plan` take it: schema, then what the schema cannot
/// say (unique names, parsable selectors that do not contradict themselves, comparisons that
/// have a meaning).
fn checked_spec(hub: &Hub, caller: &Caller, body: &[u8]) -> Result<(AppSpec, Policy), ApiError> {
    let mut spec: AppSpec = decode(body).map_err(edge_bus::api::invalid)?;
    spec.tenant = caller.tenant_for(&spec.tenant, "/tenant")?;
    let invalid = |e: edge_types::app::SpecError| ApiError::invalid(e.pointer.clone(), format!("invalid request: {e}"));
    let policy = spec.check().map_err(invalid)?;
    policy.check_orders(&hub.orders).map_err(invalid)?;
    Ok((spec, policy))
}

/// Every secret the spec references must exist (they are stored by the `secrets` service), so
/// a typo fails here and not at the sites.
async fn check_secrets(hub: &Hub, spec: &AppSpec) -> Result<(), ApiError> {
    let tenant = &spec.tenant;
    for (i, svc) in spec.services.iter().enumerate() {
        for (j, r) in svc.secrets.iter().enumerate() {
            let key = format!("{tenant}.{}", r.name);
            let exists = hub.buckets.secrets.get(&key).await.map_err(crate::SchedulerError::js)?.is_some();
            if !exists {
                return Err(ApiError::invalid(
                    format!("/services/{i}/secrets/{j}/name"),
                    format!(
                        "invalid request: secret {:?} of tenant {tenant:?} does not exist; store it first (edgectl secret put)",
                        r.name.as_str()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The spec's images that are in the image store, by reference as the spec names them: what
/// they resolve to now. An image not in the store is refused, unless the configuration says the
/// hosts have it (`SCHEDULER_IMAGES_FROM_HOSTS`).
async fn resolve_images(hub: &Hub, spec: &AppSpec) -> Result<BTreeMap<String, ImageRecord>, ApiError> {
    let mut out = BTreeMap::new();
    for (i, svc) in spec.services.iter().enumerate() {
        let Some(reference) = edge_types::image::normalize(&svc.image) else {
            return Err(ApiError::invalid(
                format!("/services/{i}/image"),
                format!("invalid request: {:?} is not an image reference", svc.image),
            ));
        };
        let key = edge_types::image::reference_key(&reference);
        match kv::get::<ImageRecord>(&hub.buckets.images, &key).await.map_err(crate::SchedulerError::from)? {
            Some((record, _)) => {
                out.insert(svc.image.clone(), record);
            }
            None if hub.config.image_from_hosts(&reference) => {}
            None => {
                return Err(ApiError::invalid(
                    format!("/services/{i}/image"),
                    format!("invalid request: image {reference} is not in the image store; push it first (edgectl image push {reference})"),
                ))
            }
        }
    }
    Ok(out)
}

/// Where a spec would run, and why every other site and host is excluded; changes nothing.
pub async fn plan(hub: &Hub, caller: &Caller, body: &[u8]) -> Result<PlanReply, ApiError> {
    let (spec, policy) = checked_spec(hub, caller, body)?;
    check_secrets(hub, &spec).await?;
    resolve_images(hub, &spec).await?;
    let sites = all_sites(hub).await?;
    let known_site: BTreeSet<String> = sites.iter().flat_map(|s| s.effective_labels().into_keys()).collect();
    let known_host: BTreeSet<String> =
        sites.iter().flat_map(|s| s.hosts.iter().flat_map(|h| h.attributes().into_keys())).collect();
    let unknown = |sel: &edge_types::selector::Selector, known: &BTreeSet<String>| -> Vec<String> {
        sel.terms().iter().map(|t| t.key().to_string()).filter(|k| !known.contains(k)).collect()
    };
    let scope = hub.tenants.scope_of(&spec.tenant);
    let mut unknown_labels = unknown(&policy.sites, &known_site);
    unknown_labels.extend(unknown(&policy.hosts, &known_host).into_iter().map(|k| format!("hosts: {k}")));
    unknown_labels.dedup();
    let mut plans: Vec<SitePlan> = sites
        .iter()
        .map(|s| {
            let mut fit = policy.explain(&spec, s, &hub.orders);
            if !scope.admits(s, &hub.orders) {
                fit.selected = false;
                fit.reasons.insert(0, format!("not among the sites tenant {} may use", spec.tenant));
            }
            let hosts = fit
                .hosts
                .iter()
                .map(|h| HostPlan {
                    host: h.host.clone(),
                    selected: h.usable(spec.services.len()),
                    reasons: h.reasons(),
                })
                .collect();
            SitePlan {
                site: s.site.clone(),
                selected: fit.selected,
                connected: hub.connected(&s.site),
                reasons: fit.reasons,
                hosts,
            }
        })
        .collect();
    plans.sort_by(|a, b| b.selected.cmp(&a.selected).then(a.site.cmp(&b.site)));
    Ok(PlanReply { name: spec.name, sites: plans, unknown_labels })
}

/// Validates and stores a spec, then places it. An identical spec changes nothing.
pub async fn apply(hub: &Hub, caller: &Caller, body: &[u8]) -> Result<ApplyReply, ApiError> {
    let (spec, policy) = checked_spec(hub, caller, body)?;
    check_secrets(hub, &spec).await?;
    let images = resolve_images(hub, &spec).await?;
    let _guard = hub.placement.lock().await;
    let key = app_key(&spec.name);
    let digest = spec.digest();
    let existing = kv::get::<AppRecord>(&hub.buckets.apps, &key).await.map_err(crate::SchedulerError::from)?;
    if let Some((r, _)) = &existing {
        if r.spec.tenant != spec.tenant {
            let whose = if caller.owns(&r.spec.tenant) {
                format!(" by tenant {:?}", r.spec.tenant.as_str())
            } else {
                String::new()
            };
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("application name {:?} is taken{whose}; choose another name", spec.name.as_str()),
            ));
        }
        if r.digest == digest && r.images == images {
            return Ok(ApplyReply {
                name: spec.name,
                generation: r.generation,
                changed: false,
                sites: r.sites.clone(),
            });
        }
    }
    let last_deleted =
        kv::get::<u64>(&hub.buckets.apps, &gen_key(&spec.name)).await.map_err(crate::SchedulerError::from)?;
    let floor = last_deleted.map(|(g, _)| g).unwrap_or(0);
    let previous = existing.map(|(r, _)| r);
    let generation = previous.as_ref().map(|r| r.generation).unwrap_or(floor).max(floor) + 1;
    let sites = all_sites(hub).await?;
    let mut next = AppRecord {
        spec: spec.clone(),
        generation,
        digest: digest.clone(),
        sites: previous.as_ref().map(|r| r.sites.clone()).unwrap_or_default(),
        updated_at_ms: edge_bus::time::now_ms(),
        rollout: None,
        images: images.clone(),
    };
    let matched = placement::matching(hub, &spec, &policy, &sites);
    placement::check_arches(&spec, &policy, &hub.orders, &images, &sites, &matched)?;
    if let Some(prev) = &previous {
        // Records stored before revisions existed: keep the running version restorable.
        rollout::ensure_revision(hub, prev).await?;
    }
    next.rollout = rollout::start(hub, previous.as_ref(), &next, &matched, &sites);
    // The revision first: a rollout holds sites at older revisions, which must be readable.
    let revision = Revision {
        generation,
        version: spec.version.clone(),
        spec: spec.clone(),
        applied_at_ms: next.updated_at_ms,
        outcome: if next.rollout.is_some() { "rolling out".into() } else { "applied".into() },
        images,
    };
    rollout::record_revision(hub, &revision, &spec.name).await?;
    let expected = previous.as_ref().map(|r| r.generation);
    let mut conflict = false;
    kv::update::<AppRecord, _>(&hub.buckets.apps, &key, |cur| {
        conflict = cur.map(|r| r.generation) != expected;
        if conflict {
            Change::Keep
        } else {
            Change::Put(next.clone())
        }
    })
    .await
    .map_err(crate::SchedulerError::from)?;
    if conflict {
        return Err(ApiError::new(ErrorCode::Conflict, format!("{} changed concurrently; apply again", spec.name)));
    }
    if let Some(prev) =
        previous.as_ref().filter(|p| p.rollout.as_ref().is_some_and(|r| r.phase == RolloutPhase::Progressing))
    {
        rollout::set_outcome(hub, &spec.name, prev.generation, "superseded").await?;
    }
    if next.rollout.is_some() {
        hub.rolling.insert(&spec.name);
    }
    let placed = placement::place(hub, &next, &sites).await?;
    tracing::info!(app = %spec.name, generation, sites = placed.len(), rollout = next.rollout.is_some(), "applied");
    Ok(ApplyReply { name: spec.name, generation, changed: true, sites: placed })
}

/// A tenant's request about one application (`{"name": ...}`) must name one of its own: any
/// other is answered as if it did not exist. Operators may name any.
pub async fn check_owner(hub: &Hub, caller: &Caller, op: ApiOp, body: &[u8]) -> Result<(), ApiError> {
    let Caller::Tenant(_) = caller else { return Ok(()) };
    if matches!(op, ApiOp::AppApply | ApiOp::AppPlan | ApiOp::AppList) {
        return Ok(());
    }
    // A body without a valid name is left to the operation's own validation.
    let Some(name) = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).and_then(|n| Name::new(n).ok()))
    else {
        return Ok(());
    };
    let found = kv::get::<AppRecord>(&hub.buckets.apps, &app_key(&name)).await.map_err(crate::SchedulerError::from)?;
    match found {
        Some((r, _)) if !caller.owns(&r.spec.tenant) => {
            Err(ApiError::not_found(format!("application \"{name}\" does not exist")))
        }
        _ => Ok(()),
    }
}

pub(crate) async fn get_record(hub: &Hub, name: &Name) -> Result<AppRecord, ApiError> {
    kv::get::<AppRecord>(&hub.buckets.apps, &app_key(name))
        .await
        .map_err(crate::SchedulerError::from)?
        .map(|(r, _)| r)
        .ok_or_else(|| ApiError::not_found(format!("application \"{name}\" does not exist")))
}

pub async fn get(hub: &Hub, body: &[u8]) -> Result<AppRecord, ApiError> {
    let req: AppRef = decode(body).map_err(edge_bus::api::invalid)?;
    get_record(hub, &req.name).await
}

/// Status reports of an app, by site.
async fn reports(hub: &Hub, app: &Name) -> Result<Vec<AppStatusReport>, ApiError> {
    let all = kv::list::<AppStatusReport>(&hub.buckets.status, &format!("{app}."))
        .await
        .map_err(crate::SchedulerError::from)?;
    Ok(all.into_iter().map(|(_, r)| r).filter(|r| &r.app == app).collect())
}

fn site_status(
    hub: &Hub,
    record: &AppRecord,
    site: &Name,
    report: Option<&AppStatusReport>,
    staging: Option<&SiteStaging>,
) -> SiteAppStatus {
    let target = record.rollout.as_ref().and_then(|r| r.held.get(site).copied()).unwrap_or(record.generation);
    let phase = if !record.sites.contains(site) {
        SitePhase::Removing
    } else {
        match report {
            Some(r) if r.generation == target => r.phase.into(),
            _ => SitePhase::Pending,
        }
    };
    SiteAppStatus {
        site: site.clone(),
        phase,
        target_generation: target,
        offline: !hub.connected(site),
        report: report.cloned(),
        staging: staging.and_then(|s| {
            let digests: Vec<&str> = record.images.values().map(|i| i.digest.as_str()).collect();
            StagingProgress::of(s, &digests)
        }),
    }
}

pub async fn status(hub: &Hub, body: &[u8]) -> Result<AppStatusReply, ApiError> {
    let req: AppRef = decode(body).map_err(edge_bus::api::invalid)?;
    let record = get_record(hub, &req.name).await?;
    let reports = reports(hub, &req.name).await?;
    let mut staging = BTreeMap::new();
    if !record.images.is_empty() {
        for site in &record.sites {
            let got = kv::get::<SiteStaging>(&hub.buckets.staging, site.as_str());
            if let Some((s, _)) = got.await.map_err(crate::SchedulerError::from)? {
                staging.insert(site.clone(), s);
            }
        }
    }
    let mut sites: Vec<SiteAppStatus> = record
        .sites
        .iter()
        .map(|s| site_status(hub, &record, s, reports.iter().find(|r| &r.site == s), staging.get(s)))
        .collect();
    // Sites it is leaving but that still run it.
    for r in reports.iter().filter(|r| !record.sites.contains(&r.site) && r.phase != edge_types::status::Phase::Removed)
    {
        sites.push(site_status(hub, &record, &r.site, Some(r), None));
    }
    Ok(AppStatusReply {
        name: record.spec.name.clone(),
        version: record.spec.version.clone(),
        generation: record.generation,
        sites,
    })
}

pub async fn list(hub: &Hub, caller: &Caller, body: &[u8]) -> Result<AppListReply, ApiError> {
    let _: Empty = decode(body).map_err(edge_bus::api::invalid)?;
    let records = kv::list::<AppRecord>(&hub.buckets.apps, "app.").await.map_err(crate::SchedulerError::from)?;
    let statuses = kv::list::<AppStatusReport>(&hub.buckets.status, "").await.map_err(crate::SchedulerError::from)?;
    let mut apps = Vec::new();
    for (_, r) in records.into_iter().filter(|(_, r)| caller.owns(&r.spec.tenant)) {
        let running = statuses
            .iter()
            .filter(|(_, s)| {
                s.app == r.spec.name
                    && r.sites.contains(&s.site)
                    && s.generation == r.generation
                    && s.phase == edge_types::status::Phase::Running
            })
            .count();
        apps.push(AppSummary {
            name: r.spec.name.clone(),
            tenant: r.spec.tenant.clone(),
            version: r.spec.version.clone(),
            generation: r.generation,
            sites_desired: r.sites.len() as u32,
            sites_running: running as u32,
        });
    }
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(AppListReply { apps })
}

pub async fn delete(hub: &Hub, body: &[u8]) -> Result<DeleteReply, ApiError> {
    let req: AppRef = decode(body).map_err(edge_bus::api::invalid)?;
    let _guard = hub.placement.lock().await;
    let record = get_record(hub, &req.name).await?;
    placement::remove(hub, &record).await?;
    tracing::info!(app = %req.name, sites = record.sites.len(), "deleted");
    Ok(DeleteReply { name: req.name, sites: record.sites })
}
