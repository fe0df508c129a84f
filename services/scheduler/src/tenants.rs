//! `tenant.sites` (operators only): which sites a tenant's applications may run at, a site
//! selector every one of its applications' placement must also satisfy (kept in the hub's
//! `edge_apps` bucket under `tenant-sites.<tenant>`). A tenant cannot place work on another
//! customer's sites, whatever its specs say.

use std::time::Duration;

use edge_bus::kv::{self, Change};
use edge_bus::mirror::Mirror;
use edge_types::api::ApiError;
use edge_types::block::{TenantSites, TENANT_SITES_PREFIX};
use edge_types::schema::decode;
use edge_types::selector::Selector;
use edge_types::Name;

use crate::{Hub, SchedulerError};

/// The tenants' site selectors, as this process last read them.
#[derive(Clone)]
pub struct TenantPolicies(Mirror<TenantSites>);

impl TenantPolicies {
    pub fn follow(kv: async_nats::jetstream::kv::Store, shutdown: tokio_util::sync::CancellationToken) -> Self {
        Self(Mirror::follow_prefix(kv, TENANT_SITES_PREFIX, Default::default(), shutdown))
    }

    pub async fn loaded(&self) {
        self.0.loaded().await
    }

    /// Where `tenant`'s applications may run.
    pub fn scope_of(&self, tenant: &Name) -> Scope {
        let Some(entry) = self.0.snapshot().remove(&key(tenant)) else { return Scope::Any };
        let sites = entry.value.sites.trim().to_string();
        if sites.is_empty() {
            return Scope::Any;
        }
        match Selector::parse(&sites) {
            Ok(sel) => Scope::Only(sel),
            // Stored only after parsing: a value that no longer does admits no site.
            Err(_) => Scope::Nowhere,
        }
    }
}

/// Where a tenant's applications may run.
pub enum Scope {
    Any,
    Only(Selector),
    Nowhere,
}

impl Scope {
    pub fn admits(&self, site: &edge_types::site::SiteRecord, orders: &edge_types::selector::LabelOrders) -> bool {
        match self {
            Scope::Any => true,
            Scope::Only(sel) => sel.matches_in(&site.effective_labels(), orders),
            Scope::Nowhere => false,
        }
    }
}

fn key(tenant: &Name) -> String {
    format!("{TENANT_SITES_PREFIX}{tenant}")
}

/// `tenant.sites`: sets a tenant's site selector (empty: any site) and places its applications
/// again.
pub async fn set(hub: &Hub, body: &[u8]) -> Result<TenantSites, ApiError> {
    let req: TenantSites = decode(body).map_err(edge_bus::api::invalid)?;
    if !req.sites.trim().is_empty() {
        let sel = Selector::parse(&req.sites)
            .map_err(|e| ApiError::invalid("/sites", format!("invalid request: /sites: {e}")))?;
        sel.check_orders(&hub.orders)
            .map_err(|e| ApiError::invalid("/sites", format!("invalid request: /sites: {e}")))?;
    }
    let _guard = hub.placement.lock().await;
    let k = key(&req.tenant);
    let value = req.clone();
    let (_, revision) = kv::update_at::<TenantSites, _>(&hub.buckets.apps, &k, |_| Change::Put(value.clone()))
        .await
        .map_err(SchedulerError::from)?;
    if !hub.tenants.0.caught_up(&k, revision.unwrap_or(0), Duration::from_secs(5)).await {
        tracing::warn!(tenant = %req.tenant, "tenant sites not yet seen by this process's copy");
    }
    let apps = crate::blocks::replace_tenant(hub, &req.tenant).await?;
    tracing::info!(tenant = %req.tenant, sites = %req.sites, apps = apps.len(), "tenant sites set");
    Ok(req)
}
