//! Onboarding by call-home (`edge_types::join`): invitations with one-time tokens, the sites'
//! and hosts' joins, and approvals. An invitation is kept in the hub's `edge_apps` bucket under
//! `invite.<site>` (a site's leaf link) or `invite.<site>.<host>` (a host's own credential in
//! the site's account); every step is recorded in AUDIT (`edge.v1.audit.join.<site>`).

use edge_bus::kv::{self, Change};
use edge_types::api::{ApiError, Empty, ErrorCode};
use edge_types::join::{Invitation, InvitationList, JoinAction, JoinEvent, SiteInvite, SiteJoin, SiteJoined};
use edge_types::schema::decode;
use edge_types::secret::SiteRef;
use edge_types::Name;

use crate::{Hub, SchedulerError};

const PREFIX: &str = "invite.";

fn key(site: &Name, host: Option<&Name>) -> String {
    match host {
        None => format!("{PREFIX}{site}"),
        Some(host) => format!("{PREFIX}{site}.{host}"),
    }
}

pub(crate) async fn audit(
    hub: &Hub,
    site: &Name,
    host: Option<&Name>,
    action: JoinAction,
    actor: &str,
    detail: Option<String>,
) -> Result<(), SchedulerError> {
    let event = JoinEvent {
        at_ms: edge_bus::time::now_ms(),
        site: site.clone(),
        host: host.cloned(),
        action,
        actor: actor.into(),
        detail,
    };
    let who = host.map_or_else(|| site.to_string(), |h| format!("{site}.{h}"));
    let id = format!("join.{who}.{action:?}.{}", event.at_ms);
    crate::audit::record(hub, edge_types::subject::audit_join(site), &event, id).await
}

/// `site.invite` (operators): a new invitation replaces an earlier one of the site.
pub async fn invite(hub: &Hub, body: &[u8]) -> Result<Invitation, ApiError> {
    let req: SiteInvite = decode(body).map_err(edge_bus::api::invalid)?;
    if req.expires_at_ms <= edge_bus::time::now_ms() {
        return Err(ApiError::invalid("/expires_at_ms", "invalid request: /expires_at_ms: is in the past"));
    }
    let record = Invitation {
        invite: req.clone(),
        invited_at_ms: edge_bus::time::now_ms(),
        joined_key: None,
        joined_at_ms: None,
        approved: false,
        refused: 0,
    };
    let r = record.clone();
    kv::update::<Invitation, _>(&hub.buckets.apps, &key(&req.site, req.host.as_ref()), |_| Change::Put(r.clone()))
        .await
        .map_err(SchedulerError::from)?;
    let actor = req.actor.clone().unwrap_or_else(|| "unknown".into());
    audit(hub, &req.site, req.host.as_ref(), JoinAction::Invited, &actor, None).await?;
    tracing::info!(site = %req.site, host = ?req.host, auto_approve = req.auto_approve, "invited");
    Ok(record)
}

/// `site.invites` (operators): every invitation, joined or not.
pub async fn list(hub: &Hub, body: &[u8]) -> Result<InvitationList, ApiError> {
    let _: Empty = decode(body).map_err(edge_bus::api::invalid)?;
    let all = kv::list::<Invitation>(&hub.buckets.apps, PREFIX).await.map_err(SchedulerError::from)?;
    Ok(InvitationList { invitations: all.into_iter().map(|(_, r)| r).collect() })
}

/// `site.approve` (operators): the site receives its credential at its next join request.
pub async fn approve(hub: &Hub, body: &[u8]) -> Result<Invitation, ApiError> {
    let req: SiteRef = decode(body).map_err(edge_bus::api::invalid)?;
    let Some(record) = approve_one(hub, &req.site, None).await? else {
        return Err(ApiError::not_found(format!(
            "site {} has no invitation (edgectl site add {} --join)",
            req.site, req.site
        )));
    };
    tracing::info!(site = %req.site, joined = record.joined_key.is_some(), "site approved");
    Ok(record)
}

/// Approves the invitation of `site` (or of its `host`), if it has one; audited.
async fn approve_one(hub: &Hub, site: &Name, host: Option<&Name>) -> Result<Option<Invitation>, SchedulerError> {
    let updated = kv::update::<Invitation, _>(&hub.buckets.apps, &key(site, host), |cur| match cur {
        Some(r) if !r.approved => {
            let mut r = r.clone();
            r.approved = true;
            Change::Put(r)
        }
        _ => Change::Keep,
    })
    .await?;
    if let Some(record) = &updated {
        audit(hub, site, host, JoinAction::Approved, "operator", record.joined_key.clone()).await?;
    }
    Ok(updated)
}

/// Approves the invitations of `hosts` of `site` that have one (`edgectl host approve`): each
/// receives its credential at its next join request.
pub async fn approve_hosts(hub: &Hub, site: &Name, hosts: &[Name]) -> Result<(), SchedulerError> {
    for host in hosts {
        if let Some(r) = approve_one(hub, site, Some(host)).await? {
            tracing::info!(%site, %host, joined = r.joined_key.is_some(), "host's invitation approved");
        }
    }
    Ok(())
}

/// Refuses a join: counted on the invitation (if any), audited, answered naming the field.
async fn refuse(hub: &Hub, site: &Name, host: Option<&Name>, pointer: &str, why: &str) -> Result<SiteJoined, ApiError> {
    tracing::warn!(%site, ?host, reason = why, "join refused");
    let _ = kv::update::<Invitation, _>(&hub.buckets.apps, &key(site, host), |cur| match cur {
        Some(r) => {
            let mut r = r.clone();
            r.refused += 1;
            Change::Put(r)
        }
        None => Change::Keep,
    })
    .await;
    audit(hub, site, host, JoinAction::Refused, "site", Some(format!("{pointer}: {why}"))).await?;
    Err(ApiError::invalid(pointer, format!("invalid request: {pointer}: {why}")))
}

/// What issues the credential a join asks for: the site's leaf link, or a host's own.
enum Issuer<'a> {
    Leaf(std::sync::Arc<edge_auth::leaf::Renewer>),
    Host(std::sync::Arc<edge_auth::host::HostIssuer>, &'a Name),
}

/// `site.join.<site>` (a site or one of its hosts, through the enrolment account): the
/// invitation's token spends itself on the first key that presents it; that key (and only it)
/// may ask again until approved.
pub async fn join(hub: &Hub, subject: &str, body: &[u8]) -> Result<SiteJoined, ApiError> {
    let req: SiteJoin = decode(body).map_err(edge_bus::api::invalid)?;
    crate::sites::calling_site(hub, subject, &req.site, "join").await?;
    let site = req.site.clone();
    let host = req.host.as_ref();
    let issuer = match (&req.host, &hub.renewer, &hub.host_issuer) {
        (None, Some(r), _) => Issuer::Leaf(r.clone()),
        (Some(h), _, Some(i)) => Issuer::Host(i.clone(), h),
        (None, None, _) => return Err(unavailable("SCHEDULER_LEAF_SIGNER")),
        (Some(_), _, None) => return Err(unavailable("SCHEDULER_HOST_SIGNER")),
    };
    let now = edge_bus::time::now_ms();
    let signed = match host {
        None => edge_auth::leaf::check_join(&req.public_key, &site, req.at_ms, &req.signature, now),
        Some(h) => edge_auth::host::check_join(&req.public_key, &site, h, req.at_ms, &req.signature, now),
    };
    if let Err(e) = signed {
        let text = e.to_string();
        let (pointer, why) = text.split_once(": ").unwrap_or(("/signature", &text));
        return refuse(hub, &site, host, pointer, why).await;
    }
    let Some((record, _)) =
        kv::get::<Invitation>(&hub.buckets.apps, &key(&site, host)).await.map_err(SchedulerError::from)?
    else {
        let pointer = if host.is_some() { "/host" } else { "/site" };
        return refuse(hub, &site, host, pointer, "is not invited").await;
    };
    if hub.blocks.site_blocked(&site) {
        return refuse(hub, &site, host, "/site", "is blocked").await;
    }
    if host.is_some_and(|h| hub.blocks.blocked_hosts(&site).contains(h)) {
        return refuse(hub, &site, host, "/host", "is blocked").await;
    }
    if edge_auth::leaf::token_digest(&req.token) != record.invite.token_sha256 {
        return refuse(hub, &site, host, "/token", "is not the invitation's").await;
    }
    match &record.joined_key {
        Some(k) if k != &req.public_key => return refuse(hub, &site, host, "/token", "was already used").await,
        None if record.invite.expires_at_ms <= now => return refuse(hub, &site, host, "/token", "has expired").await,
        _ => {}
    }
    let first = record.joined_key.is_none();
    if first {
        // Spend the token on this key; a concurrent join with another key loses.
        let pk = req.public_key.clone();
        let mut lost = false;
        kv::update::<Invitation, _>(&hub.buckets.apps, &key(&site, host), |cur| match cur {
            Some(r) if r.joined_key.is_none() => {
                let mut r = r.clone();
                r.joined_key = Some(pk.clone());
                r.joined_at_ms = Some(now);
                Change::Put(r)
            }
            Some(r) => {
                lost = r.joined_key.as_ref() != Some(&pk);
                Change::Keep
            }
            None => Change::Keep,
        })
        .await
        .map_err(SchedulerError::from)?;
        if lost {
            return refuse(hub, &site, host, "/token", "was already used").await;
        }
        audit(hub, &site, host, JoinAction::Joined, "site", Some(req.public_key.clone())).await?;
        tracing::info!(%site, ?host, "joined");
    }
    let waiting =
        SiteJoined { site: site.clone(), host: req.host.clone(), approved: false, jwt: None, expires_at: None };
    if !(record.approved || record.invite.auto_approve) {
        return Ok(waiting);
    }
    let issued = match &issuer {
        Issuer::Leaf(renewer) => {
            renewer.first(&record.invite.account, &site, &req.public_key).map(|(jwt, exp)| (jwt, Some(exp)))
        }
        Issuer::Host(issuer, h) => {
            issuer.issue(&record.invite.account, &site, h, &req.public_key).map(|jwt| (jwt, None))
        }
    };
    let (jwt, expires_at) = issued.map_err(|e| ApiError::internal(format!("cannot issue the credential: {e}")))?;
    if first && record.invite.auto_approve {
        audit(hub, &site, host, JoinAction::Approved, "policy", Some(req.public_key.clone())).await?;
        if let Some(h) = host {
            // The policy admits the host as `host approve` would, where the site lists its hosts.
            crate::hosts::admit_if_listed(hub, &site, h).await?;
        }
    }
    Ok(SiteJoined { jwt: Some(jwt), expires_at, approved: true, ..waiting })
}

fn unavailable(setting: &str) -> ApiError {
    ApiError::new(ErrorCode::Unavailable, format!("this scheduler issues no such credentials (it has no {setting})"))
}
