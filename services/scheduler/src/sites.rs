//! The `site.*` operations: call-home registration, central labels, listing.

use edge_bus::kv::{self, Change};
use edge_types::api::*;
use edge_types::join::JoinAction;
use edge_types::schema::decode;
use edge_types::site::{SiteRecord, SiteRegistration};
use edge_types::Name;

use crate::placement;
use crate::{Hub, SchedulerError};

/// Every registered site, as it reported itself.
async fn registered(hub: &Hub) -> Result<Vec<SiteRecord>, SchedulerError> {
    Ok(kv::list::<SiteRecord>(&hub.buckets.sites, "").await?.into_iter().map(|(_, s)| s).collect())
}

/// Every registered site with the hosts that may run workloads (`hosts::usable`): what
/// placement sees.
pub async fn all_sites(hub: &Hub) -> Result<Vec<SiteRecord>, SchedulerError> {
    let approved = hub.host_lists.approved();
    Ok(registered(hub).await?.iter().map(|s| crate::hosts::usable(hub, s, approved.get(&s.site))).collect())
}

/// Re-places every application for one site after what its hosts may run changed.
pub async fn replace_site(hub: &Hub, site: &Name) -> Result<(), SchedulerError> {
    if let Some((record, _)) = kv::get::<SiteRecord>(&hub.buckets.sites, site.as_str()).await? {
        place_site(hub, &record).await?;
    }
    Ok(())
}

/// Places every application again (after a site joined or its labels changed).
pub async fn place_all(hub: &Hub) -> Result<(), SchedulerError> {
    let sites = all_sites(hub).await?;
    for (_, r) in kv::list::<AppRecord>(&hub.buckets.apps, "app.").await? {
        placement::place(hub, &r, &sites).await?;
    }
    Ok(())
}

/// Re-places every application for one site (counting only its usable hosts).
async fn place_site(hub: &Hub, site: &SiteRecord) -> Result<(), SchedulerError> {
    let site = crate::hosts::usable(hub, site, hub.host_lists.approved().get(&site.site));
    for (_, r) in kv::list::<AppRecord>(&hub.buckets.apps, "app.").await? {
        placement::place_on_site(hub, &r, &site).await?;
    }
    Ok(())
}

/// Stores a site's registration (keeping centrally set labels), makes the hub source the
/// site's events, and re-places apps if the site is new or its labels or hosts changed.
pub async fn upsert_registration(hub: &Hub, reg: &SiteRegistration) -> Result<bool, SchedulerError> {
    let _guard = hub.placement.lock().await;
    let mut is_new = false;
    let mut placement_changed = false;
    let key = reg.site.to_string();
    let stored = kv::update::<SiteRecord, _>(&hub.buckets.sites, &key, |cur| {
        is_new = cur.is_none();
        let next = SiteRecord {
            site: reg.site.clone(),
            reported_labels: reg.plain_labels(),
            labels: cur.map(|c| c.labels.clone()).unwrap_or_default(),
            hosts: reg.hosts.clone(),
            agent_version: reg.agent_version.clone(),
            registered_at_ms: cur.map(|c| c.registered_at_ms).unwrap_or_else(edge_bus::time::now_ms),
            // A site's key is replaced, never removed: a registration sent before the host
            // held the key keeps the one known.
            public_key: reg.public_key.clone().or_else(|| cur.and_then(|c| c.public_key.clone())),
            duplicate_hosts: reg.duplicate_hosts.clone(),
        };
        placement_changed = cur.is_none_or(|c| {
            c.effective_labels() != next.effective_labels()
                || c.hosts != next.hosts
                || c.duplicate_hosts != next.duplicate_hosts
        });
        if cur.is_some_and(|c| {
            c.reported_labels == next.reported_labels
                && c.hosts == next.hosts
                && c.agent_version == next.agent_version
                && c.public_key == next.public_key
                && c.duplicate_hosts == next.duplicate_hosts
        }) {
            Change::Keep
        } else {
            Change::Put(next)
        }
    })
    .await?;
    if !hub.sourced.contains(&reg.site) {
        let _edit = hub.source_edits.lock().await;
        if edge_bus::topology::add_site_source(&hub.js, &reg.site).await? {
            tracing::info!(site = %reg.site, "hub now sources the site's events");
        }
        hub.sourced.insert(reg.site.clone());
    }
    if placement_changed {
        tracing::info!(site = %reg.site, new = is_new, "site registered");
        if let Some(site) = stored {
            place_site(hub, &site).await?;
        }
    }
    Ok(is_new)
}

/// Checks that a site's request names the site its subject does (`edge.v1.api.site.<op>.<site>`,
/// which the caller's credential allows only for its own site): a payload naming another is
/// refused at `/site` and audited (`edge.v1.audit.join.<subject's site>`), so that no site can
/// act as another.
pub(crate) async fn calling_site(hub: &Hub, subject: &str, claimed: &Name, what: &str) -> Result<(), ApiError> {
    let caller = match edge_types::subject::parse(subject) {
        Ok(edge_types::subject::Subject::ApiOfSite { site, .. }) => site,
        _ => return Err(ApiError::invalid("/site", "invalid request: the subject does not name the calling site")),
    };
    if &caller == claimed {
        return Ok(());
    }
    tracing::warn!(%caller, %claimed, "{what} refused: the payload names another site");
    let detail = format!("{what}: /site names {claimed}, the credential's site is {caller}");
    crate::join::audit(hub, &caller, None, JoinAction::Refused, "site", Some(detail)).await?;
    Err(ApiError::invalid(
        "/site",
        "invalid request: /site: is not the calling site (the subject's, which its credential allows)",
    ))
}

/// Call-home of the site named by the request's subject (`edge.v1.api.site.register.<site>`),
/// which the caller's credential allows only for its own site: the payload must name the same
/// site, so that no site can register (and so be placed, sourced and trusted) as another.
pub async fn register(hub: &Hub, subject: &str, body: &[u8]) -> Result<RegisterReply, ApiError> {
    let reg: SiteRegistration = decode(body).map_err(edge_bus::api::invalid)?;
    calling_site(hub, subject, &reg.site, "call-home").await?;
    // A site named like the hub's domain would make the hub source its own stream.
    Name::site(reg.site.as_str()).map_err(|e| ApiError::invalid("/site", format!("invalid request: /site: {e}")))?;
    let new = upsert_registration(hub, &reg).await?;
    Ok(RegisterReply { site: reg.site, new })
}

/// A site's renewal of its leaf-link credential (`edge.v1.api.site.renew.<site>`, reached
/// through the shared enrolment account, so the proof is the request's: the site's current
/// credential and a signature by its key, [`edge_auth::leaf::check_renewal`]). A blocked site
/// gets nothing.
pub async fn renew(hub: &Hub, subject: &str, body: &[u8]) -> Result<edge_types::site::LeafRenewed, ApiError> {
    let req: edge_types::site::LeafRenewal = decode(body).map_err(edge_bus::api::invalid)?;
    calling_site(hub, subject, &req.site, "renewal").await?;
    let Some(renewer) = &hub.renewer else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "this scheduler does not renew credentials (it has no SCHEDULER_LEAF_SIGNER)",
        ));
    };
    if hub.blocks.site_blocked(&req.site) {
        return refuse_renewal(hub, &req.site, "/site: is blocked").await;
    }
    let now = edge_bus::time::now_ms();
    match renewer.renew(&req.site, &req.jwt, req.at_ms, &req.signature, now) {
        Ok((jwt, expires_at)) => {
            tracing::info!(site = %req.site, expires_at, "leaf-link credential renewed");
            let detail = Some(format!("valid until {expires_at}"));
            crate::join::audit(hub, &req.site, None, JoinAction::Renewed, "site", detail).await?;
            Ok(edge_types::site::LeafRenewed { site: req.site, jwt, expires_at })
        }
        Err(e) => refuse_renewal(hub, &req.site, &e.to_string()).await,
    }
}

/// Refuses a renewal (`why` starts with the field's pointer), audited.
async fn refuse_renewal(hub: &Hub, site: &Name, why: &str) -> Result<edge_types::site::LeafRenewed, ApiError> {
    tracing::warn!(%site, reason = why, "renewal refused");
    crate::join::audit(hub, site, None, JoinAction::Refused, "site", Some(format!("renewal: {why}"))).await?;
    let pointer = why.split(':').next().unwrap_or("").to_string();
    Err(ApiError::invalid(pointer, format!("invalid request: {why}")))
}

pub async fn label(hub: &Hub, body: &[u8]) -> Result<SiteRecord, ApiError> {
    let req: SiteLabelRequest = decode(body).map_err(edge_bus::api::invalid)?;
    for (i, k) in req.remove.iter().enumerate() {
        if req.set.contains_key(k) {
            return Err(ApiError::invalid(
                format!("/remove/{i}"),
                format!("invalid request: label {k:?} is both set and removed"),
            ));
        }
    }
    let _guard = hub.placement.lock().await;
    let mut found = false;
    let updated = kv::update::<SiteRecord, _>(&hub.buckets.sites, req.site.as_str(), |cur| {
        found = cur.is_some();
        let Some(c) = cur else { return Change::Keep };
        let mut next = c.clone();
        for (k, v) in &req.set {
            next.labels.insert(k.clone(), v.0.clone());
        }
        for k in &req.remove {
            next.labels.remove(k);
        }
        if &next == c {
            Change::Keep
        } else {
            Change::Put(next)
        }
    })
    .await
    .map_err(SchedulerError::from)?;
    let Some(record) = updated.filter(|_| found) else {
        return Err(ApiError::not_found(format!("site {:?} is not registered", req.site.as_str())));
    };
    place_site(hub, &record).await?;
    tracing::info!(site = %req.site, labels = ?record.effective_labels(), "site labels changed");
    Ok(record)
}

pub async fn list(hub: &Hub, body: &[u8]) -> Result<SiteListReply, ApiError> {
    let _: Empty = decode(body).map_err(edge_bus::api::invalid)?;
    let apps = kv::list::<AppRecord>(&hub.buckets.apps, "app.").await.map_err(SchedulerError::from)?;
    let approved = hub.host_lists.approved();
    let mut sites: Vec<SiteSummary> = registered(hub)
        .await?
        .into_iter()
        .map(|s| {
            let live = hub.liveness.get(&s.site);
            SiteSummary {
                agent_version: s.agent_version.clone(),
                labels: s.effective_labels(),
                connected: hub.connected(&s.site),
                last_seen_ms: live.last_seen_ms,
                buffer: live.buffer,
                leaf_recoveries: live.leaf_recoveries,
                secrets_refused: live.secrets_refused,
                blocked: hub.blocks.site_blocked(&s.site),
                blocked_hosts: hub.blocks.blocked_hosts(&s.site),
                unknown_hosts: crate::hosts::unknown(&s, approved.get(&s.site)),
                duplicate_hosts: s.duplicate_hosts.clone(),
                apps: apps
                    .iter()
                    .filter(|(_, a)| a.sites.contains(&s.site))
                    .map(|(_, a)| a.spec.name.clone())
                    .collect(),
                hosts: s.hosts,
                site: s.site,
            }
        })
        .collect();
    sites.sort_by(|a, b| a.site.cmp(&b.site));
    Ok(SiteListReply { sites })
}

/// Asks a site to make a new key pair: a `_rekey` message travels with its desired state (so an
/// offline site rotates when its link returns); the site registers the new public key and the
/// secrets service re-seals what the site holds to it.
pub async fn rotate_key(hub: &Hub, body: &[u8]) -> Result<edge_types::secret::SiteRekey, ApiError> {
    let req: edge_types::secret::SiteRef = decode(body).map_err(edge_bus::api::invalid)?;
    if kv::get::<SiteRecord>(&hub.buckets.sites, req.site.as_str()).await.map_err(SchedulerError::from)?.is_none() {
        return Err(ApiError::not_found(format!("site {} is not registered", req.site)));
    }
    let rekey = edge_types::secret::SiteRekey { site: req.site.clone(), requested_at_ms: edge_bus::time::now_ms() };
    let msg = async_nats::jetstream::message::PublishMessage::build()
        .payload(serde_json::to_vec(&rekey).expect("serializes").into())
        .message_id(format!("rekey.{}.{}", rekey.site, rekey.requested_at_ms));
    let ack = hub.js.send_publish(edge_types::subject::site_rekey(&req.site), msg).await.map_err(SchedulerError::js)?;
    ack.await.map_err(SchedulerError::js)?;
    tracing::info!(site = %req.site, "asked the site to rotate its key");
    Ok(rekey)
}
