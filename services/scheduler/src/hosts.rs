//! Which of a site's hosts may run workloads: not a blocked one (`block.set`), not one outside
//! the site's approved hosts once it has any (`site.hosts`; unknown hosts are rejected and
//! listed until approved), not a host id two machines beat under (the site reports those). The
//! site's leader enforces it from `edge.v1.desired.<shard>.<site>._hosts`; placement at the hub
//! counts only those hosts too.

use std::collections::{BTreeMap, BTreeSet};

use edge_bus::kv::{self, Change};
use edge_bus::mirror::Mirror;
use edge_types::api::ApiError;
use edge_types::block::{SiteHosts, SiteHostsChange};
use edge_types::join::JoinAction;
use edge_types::schema::decode;
use edge_types::site::SiteRecord;
use edge_types::Name;

use crate::{Hub, SchedulerError};

const PREFIX: &str = "hosts.";

fn key(site: &Name) -> String {
    format!("{PREFIX}{site}")
}

/// The sites' approved hosts (`hosts.<site>` in `edge_apps`, the list in `allowed`), as this
/// process last read them: placement consults them on every pass, without a KV read.
#[derive(Clone)]
pub struct HostLists(Mirror<SiteHosts>);

impl HostLists {
    pub fn follow(kv: async_nats::jetstream::kv::Store, shutdown: tokio_util::sync::CancellationToken) -> Self {
        Self(Mirror::follow_prefix(kv, PREFIX, Default::default(), shutdown))
    }

    pub async fn loaded(&self) {
        self.0.loaded().await
    }

    /// The approved hosts of every site that has a list.
    pub fn approved(&self) -> BTreeMap<Name, BTreeSet<Name>> {
        self.0
            .snapshot()
            .into_values()
            .filter_map(|e| Some((e.value.site, e.value.allowed?.into_iter().collect())))
            .collect()
    }
}

/// The hosts of `record` that may run workloads, as placement sees them.
pub fn usable(hub: &Hub, record: &SiteRecord, approved: Option<&BTreeSet<Name>>) -> SiteRecord {
    let blocked = hub.blocks.blocked_hosts(&record.site);
    let mut r = record.clone();
    r.hosts.retain(|h| {
        !blocked.contains(&h.host)
            && !record.duplicate_hosts.contains(&h.host)
            && approved.is_none_or(|a| a.contains(&h.host))
    });
    r
}

/// The hosts of `record` that are rejected as unknown (not approved while the site has a list).
pub fn unknown(record: &SiteRecord, approved: Option<&BTreeSet<Name>>) -> Vec<Name> {
    let Some(a) = approved else { return Vec::new() };
    record.hosts.iter().map(|h| h.host.clone()).filter(|h| !a.contains(h)).collect()
}

/// The site's host policy now.
async fn current(hub: &Hub, site: &Name) -> Result<SiteHosts, SchedulerError> {
    // `hosts.<site>` holds the approved hosts (in `allowed`) and the site account's latest
    // JWT; read from the bucket, as the request that changed it may have just written it.
    let stored = kv::get::<SiteHosts>(&hub.buckets.apps, &key(site)).await?.map(|(l, _)| l);
    Ok(SiteHosts {
        site: site.clone(),
        blocked: hub.blocks.blocked_hosts(site),
        allowed: stored.as_ref().and_then(|l| l.allowed.clone()),
        updated_at_ms: edge_bus::time::now_ms(),
        account_jwt: stored.and_then(|l| l.account_jwt),
    })
}

/// Keeps the site account's JWT the authority re-signed (a host's credential revoked or
/// reinstated), to be published with the site's host policy.
pub async fn set_account_jwt(hub: &Hub, site: &Name, jwt: &str) -> Result<(), SchedulerError> {
    kv::update::<SiteHosts, _>(&hub.buckets.apps, &key(site), |cur| {
        let mut r = cur.cloned().unwrap_or_else(|| SiteHosts {
            site: site.clone(),
            blocked: Vec::new(),
            allowed: None,
            updated_at_ms: 0,
            account_jwt: None,
        });
        if r.account_jwt.as_deref() == Some(jwt) {
            return Change::Keep;
        }
        r.account_jwt = Some(jwt.to_string());
        r.updated_at_ms = edge_bus::time::now_ms();
        Change::Put(r)
    })
    .await?;
    Ok(())
}

/// Publishes the site's host policy with its desired state (an offline site learns it when its
/// link returns; the last one is all that counts).
pub async fn publish(hub: &Hub, site: &Name) -> Result<SiteHosts, SchedulerError> {
    let record = current(hub, site).await?;
    let msg = async_nats::jetstream::message::PublishMessage::build()
        .payload(serde_json::to_vec(&record).expect("serializes").into())
        .message_id(format!("hosts.{site}.{}", record.updated_at_ms));
    let ack = hub.js.send_publish(edge_types::subject::site_hosts(site), msg).await.map_err(SchedulerError::js)?;
    ack.await.map_err(SchedulerError::js)?;
    Ok(record)
}

/// `site.hosts` (operators): approve or remove hosts, or admit any host again. Approving a
/// host also approves its invitation, if it was invited to join with its own key.
pub async fn change(hub: &Hub, body: &[u8]) -> Result<SiteHosts, ApiError> {
    let req: SiteHostsChange = decode(body).map_err(edge_bus::api::invalid)?;
    if req.any && !req.approve.is_empty() {
        return Err(ApiError::invalid("/any", "invalid request: /any: cannot be set with hosts to approve"));
    }
    let record = apply(hub, &req).await?;
    crate::join::approve_hosts(hub, &req.site, &req.approve).await?;
    Ok(record)
}

/// Adds `host` to `site`'s approved hosts if the site has a list (an invitation approved by
/// its policy).
pub async fn admit_if_listed(hub: &Hub, site: &Name, host: &Name) -> Result<(), SchedulerError> {
    let listed = hub.host_lists.approved().contains_key(site);
    if listed {
        let req = SiteHostsChange {
            site: site.clone(),
            approve: vec![host.clone()],
            remove: Vec::new(),
            any: false,
            actor: Some("policy".into()),
        };
        apply(hub, &req).await?;
    }
    Ok(())
}

async fn apply(hub: &Hub, req: &SiteHostsChange) -> Result<SiteHosts, SchedulerError> {
    let _guard = hub.placement.lock().await;
    let site = req.site.clone();
    let (_, revision) = kv::update_at::<SiteHosts, _>(&hub.buckets.apps, &key(&site), |cur| {
        let account_jwt = cur.and_then(|c| c.account_jwt.clone());
        if req.any {
            return match cur {
                Some(c) if c.allowed.is_some() => Change::Put(SiteHosts { allowed: None, ..c.clone() }),
                _ => Change::Keep,
            };
        }
        let before: BTreeSet<Name> = cur.and_then(|c| c.allowed.clone()).unwrap_or_default().into_iter().collect();
        let mut hosts = before.clone();
        hosts.extend(req.approve.iter().cloned());
        for h in &req.remove {
            hosts.remove(h);
        }
        if cur.is_some_and(|c| c.allowed.is_some()) && hosts == before {
            return Change::Keep;
        }
        Change::Put(SiteHosts {
            site: site.clone(),
            blocked: Vec::new(),
            allowed: Some(hosts.into_iter().collect()),
            updated_at_ms: edge_bus::time::now_ms(),
            account_jwt,
        })
    })
    .await?;
    let record = publish(hub, &site).await?;
    if let Some(revision) = revision {
        if !hub.host_lists.0.caught_up(&key(&site), revision, std::time::Duration::from_secs(5)).await {
            tracing::warn!(%site, "approved hosts not yet seen by this process's copy");
        }
    }
    crate::sites::replace_site(hub, &site).await?;
    let actor = req.actor.clone().unwrap_or_else(|| "unknown".into());
    let detail = format!("hosts approved {:?} removed {:?} any {}", req.approve, req.remove, req.any);
    crate::join::audit(hub, &site, None, JoinAction::Approved, &actor, Some(detail.chars().take(256).collect()))
        .await?;
    tracing::info!(%site, allowed = ?record.allowed, "site hosts changed");
    Ok(record)
}
