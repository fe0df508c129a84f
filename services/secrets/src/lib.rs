//! secrets: stores tenant secrets encrypted (envelope encryption under a master key) and
//! delivers each one sealed to the sites whose applications reference it, withdrawing it when
//! none does. Every action is on the audit trail.

pub mod audit;
pub mod config;
pub mod distribute;
pub mod error;
pub mod keyring;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::service::ServiceExt;
use edge_bus::api::{reply_counted, Failures};
use edge_bus::mirror::Mirror;
use edge_bus::signal::Signal;
use edge_bus::topology::HubBuckets;
use edge_types::api::AppRecord;
use edge_types::block::{BlockEvent, Caller, BLOCK_KEY_PREFIX};
use edge_types::secret::{SecretInfo, StoredSecret};
use edge_types::site::SiteRecord;
use edge_types::subject::ApiOp;
use edge_types::Name;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::SecretsError;

/// Version announced on the NATS service API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const NAME: &str = "secrets";

/// Shared state of the service.
#[derive(Clone)]
pub struct Secrets {
    pub js: jetstream::Context,
    pub buckets: HubBuckets,
    pub keys: Arc<keyring::Keyring>,
    pub audit: audit::Audit,
    pub apps: Mirror<AppRecord>,
    pub sites: Mirror<SiteRecord>,
    pub stored: Mirror<StoredSecret>,
    /// Blocks set by operators: a blocked site gets no secrets.
    pub blocks: Mirror<BlockEvent>,
    pub delivered: distribute::Delivered,
    /// Raised on every change that may change what a site needs.
    pub changed: Signal,
    /// Failed requests per endpoint (`secret-put`, ...), shown in `$SRV.STATS`.
    pub failed: Failures,
}

impl Secrets {
    /// Applications of `tenant` whose spec references its secret `name`.
    pub fn apps_using(&self, tenant: &Name, name: &Name) -> Vec<Name> {
        let apps = self.apps.snapshot();
        apps.values()
            .filter(|e| &e.value.spec.tenant == tenant && e.value.spec.secret_names().contains(name))
            .map(|e| e.value.spec.name.clone())
            .collect()
    }

    /// What a reply shows of a secret: metadata, users and sites, never the value.
    pub fn info(&self, r: &StoredSecret) -> SecretInfo {
        let delivered = self.delivered.lock().expect("delivered lock");
        let sites = delivered
            .iter()
            .filter(|(t, d)| t.tenant == r.tenant && t.name == r.name && !d.withdrawn)
            .map(|(t, _)| t.site.clone())
            .collect();
        SecretInfo {
            tenant: r.tenant.clone(),
            name: r.name.clone(),
            version: r.version,
            versions: r.versions.clone(),
            apps: self.apps_using(&r.tenant, &r.name),
            sites,
        }
    }
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), SecretsError> {
    let master = config.master_key()?;
    let client =
        edge_bus::connect(&edge_bus::Endpoint::new(&config.nats_url, config.nats_creds.clone()), NAME, true).await?;
    let js = edge_bus::topology::hub_js(&client);
    let buckets = edge_bus::topology::ensure_hub(&js).await?;
    let key_store = edge_bus::topology::ensure_secret_store(&js).await?;
    let keys = Arc::new(keyring::Keyring::open(master, key_store).await?);
    let changed = Signal::new();
    let s = Secrets {
        js: js.clone(),
        apps: Mirror::follow_prefix(buckets.apps.clone(), "app.", changed.clone(), shutdown.clone()),
        sites: Mirror::follow(buckets.sites.clone(), changed.clone(), shutdown.clone()),
        stored: Mirror::follow(buckets.secrets.clone(), changed.clone(), shutdown.clone()),
        blocks: Mirror::follow_prefix(buckets.apps.clone(), BLOCK_KEY_PREFIX, changed.clone(), shutdown.clone()),
        buckets,
        keys,
        audit: audit::Audit::new(js),
        delivered: Default::default(),
        changed,
        failed: Default::default(),
    };
    let (failed, audit_failed) = (s.failed.clone(), s.audit.failed.clone());

    let service = client
        .service_builder()
        .description("Stores tenant secrets encrypted and delivers them sealed to the sites that need them")
        .stats_handler(move |endpoint, _| {
            serde_json::json!({
                "failed_requests": failed.get(&endpoint).map(|v| *v).unwrap_or(0),
                "audit_events_not_stored": audit_failed.load(std::sync::atomic::Ordering::Relaxed),
            })
        })
        .start(NAME, VERSION)
        .await
        .map_err(SecretsError::js)?;
    let requests = edge_bus::api::endpoints(&service, NAME).await.map_err(SecretsError::js)?;
    let distributor = tokio::spawn(distribute::run(s.clone(), Duration::from_secs(30), shutdown.clone()));
    tracing::info!(sealing_key = %s.keys.sender.public_key(), "secrets ready");

    edge_bus::api::serve_until(requests, &shutdown, |op, req| {
        let s = s.clone();
        async move { serve(&s, op, req).await }
    })
    .await;
    use edge_bus::shutdown::bounded;
    bounded("stopping the service API", service.stop()).await;
    bounded("distribution", distributor).await;
    bounded("flushing", client.flush()).await;
    tracing::info!("secrets stopped");
    Ok(())
}

async fn serve(s: &Secrets, op: Option<ApiOp>, req: async_nats::service::Request) {
    let Some(op) = op else { return edge_bus::api::answer_health(req, NAME, VERSION).await };
    let f = &s.failed;
    let body = match edge_bus::api::body(&req) {
        Ok(b) => b,
        Err(e) => return reply_counted::<()>(f, op, &req, Err(e)).await,
    };
    // A tenant's request is for its own secrets whatever it names (`Caller::tenant_for`).
    let c = &Caller::of_subject(&req.message.subject);
    match op {
        ApiOp::SecretPut => reply_counted(f, op, &req, store::write(s, c, body, false).await).await,
        ApiOp::SecretRotate => reply_counted(f, op, &req, store::write(s, c, body, true).await).await,
        ApiOp::SecretList => reply_counted(f, op, &req, store::list(s, c, body).await).await,
        ApiOp::SecretDescribe => reply_counted(f, op, &req, store::describe(s, c, body).await).await,
        ApiOp::SecretDelete => reply_counted(f, op, &req, store::delete(s, c, body).await).await,
        other => unreachable!("{other:?} is not registered by the secrets service"),
    }
}
