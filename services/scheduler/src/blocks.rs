//! The `block.*` operations (operators only): blocking and unblocking a tenant, a site or a
//! host, as the scheduler enforces it. Credentials are revoked by the authority (`edgectl`);
//! here a blocked tenant's applications are placed nowhere (so they stop everywhere), a blocked
//! site is shown as such (the secrets service stops sealing to it), and a blocked host is
//! published to its site, whose scheduler moves the host's workloads to the others.
//! Every change is recorded in the AUDIT stream.

use std::time::Duration;

use edge_bus::kv::{self, Change};
use edge_bus::mirror::Mirror;
use edge_types::api::{ApiError, AppRecord, Empty};
use edge_types::block::{BlockEvent, BlockListReply, BlockRequest, BlockTarget, BLOCK_KEY_PREFIX};
use edge_types::schema::decode;
use edge_types::Name;

use crate::placement;
use crate::sites::all_sites;
use crate::{Hub, SchedulerError};

/// The blocks in force, as this process last read them from the hub's `apps` bucket.
#[derive(Clone)]
pub struct Blocks(Mirror<BlockEvent>);

impl Blocks {
    pub fn follow(kv: async_nats::jetstream::kv::Store, shutdown: tokio_util::sync::CancellationToken) -> Self {
        Self(Mirror::follow_prefix(kv, BLOCK_KEY_PREFIX, Default::default(), shutdown))
    }

    pub async fn loaded(&self) {
        self.0.loaded().await
    }

    fn blocked(&self, target: &BlockTarget) -> bool {
        self.0.snapshot().get(&target.key()).is_some_and(|e| e.value.blocked)
    }

    pub fn tenant_blocked(&self, tenant: &Name) -> bool {
        self.blocked(&BlockTarget::Tenant { tenant: tenant.clone() })
    }

    pub fn site_blocked(&self, site: &Name) -> bool {
        self.blocked(&BlockTarget::Site { site: site.clone() })
    }

    /// The blocked hosts of `site`, sorted.
    pub fn blocked_hosts(&self, site: &Name) -> Vec<Name> {
        self.in_force()
            .into_iter()
            .filter_map(|e| match e.target {
                BlockTarget::Host { site: s, host } if &s == site => Some(host),
                _ => None,
            })
            .collect()
    }

    /// Every block in force, by target.
    pub fn in_force(&self) -> Vec<BlockEvent> {
        self.0.snapshot().into_values().map(|e| e.value).filter(|b| b.blocked).collect()
    }

    /// Waits (briefly) until this process sees the block stored at `revision`, so that what the
    /// request does next acts on it.
    async fn caught_up(&self, key: &str, revision: u64) {
        if !self.0.caught_up(key, revision, Duration::from_secs(5)).await {
            tracing::warn!(%key, "block not yet seen by this process's copy");
        }
    }
}

/// `block.set`: stores the block, enforces it, records it in AUDIT; the same request again
/// changes nothing but is recorded again.
pub async fn set(hub: &Hub, body: &[u8]) -> Result<BlockEvent, ApiError> {
    let req: BlockRequest = decode(body).map_err(edge_bus::api::invalid)?;
    if req.account_jwt.is_some() && !matches!(req.target, BlockTarget::Host { .. }) {
        return Err(ApiError::invalid("/account_jwt", "invalid request: /account_jwt: is for a host's block only"));
    }
    let _guard = hub.placement.lock().await;
    // Sites and hosts need not have registered: a stolen bundle or a spare host may be
    // blocked before it ever calls home.
    let mut event = BlockEvent {
        at_ms: edge_bus::time::now_ms(),
        actor: req.actor.clone().unwrap_or_else(|| "unknown".into()),
        target: req.target.clone(),
        blocked: req.blocked,
        reason: req.reason.clone(),
        apps: Vec::new(),
    };
    let key = req.target.key();
    let stored = event.clone();
    let (_, revision) = kv::update_at::<BlockEvent, _>(&hub.buckets.apps, &key, |_| Change::Put(stored.clone()))
        .await
        .map_err(SchedulerError::from)?;
    hub.blocks.caught_up(&key, revision.unwrap_or(0)).await;
    match &req.target {
        BlockTarget::Tenant { tenant } => event.apps = replace_tenant(hub, tenant).await?,
        BlockTarget::Host { site, .. } => {
            if let Some(jwt) = &req.account_jwt {
                crate::hosts::set_account_jwt(hub, site, jwt).await?;
            }
            crate::hosts::publish(hub, site).await?;
            crate::sites::replace_site(hub, site).await?;
        }
        BlockTarget::Site { .. } => {}
    }
    audit(hub, &event).await?;
    tracing::info!(target = %req.target, blocked = req.blocked, apps = event.apps.len(), "block set");
    Ok(event)
}

/// `block.list`: the blocks in force.
pub async fn list(hub: &Hub, body: &[u8]) -> Result<BlockListReply, ApiError> {
    let _: Empty = decode(body).map_err(edge_bus::api::invalid)?;
    let mut blocks = hub.blocks.in_force();
    blocks.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(BlockListReply { blocks })
}

/// Places a tenant's applications again: nowhere while it is blocked, where they belong once
/// unblocked. Returns their names.
pub(crate) async fn replace_tenant(hub: &Hub, tenant: &Name) -> Result<Vec<Name>, SchedulerError> {
    let sites = all_sites(hub).await?;
    let mut apps = Vec::new();
    for (_, r) in kv::list::<AppRecord>(&hub.buckets.apps, "app.").await? {
        if &r.spec.tenant == tenant {
            placement::place(hub, &r, &sites).await?;
            apps.push(r.spec.name);
        }
    }
    Ok(apps)
}

async fn audit(hub: &Hub, event: &BlockEvent) -> Result<(), SchedulerError> {
    let id = format!("{}.{}.{}", event.target.key(), event.blocked, event.at_ms);
    crate::audit::record(hub, event.target.audit_subject(), event, id).await
}
