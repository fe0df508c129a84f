//! registry-sync: the project's image store. Images enter it by push (their blobs by digest in
//! the hub's object store `edge_blobs`, a record per reference in `edge_images`), and every
//! image an app placed at a site uses is staged into that site's own store, so a site deploys
//! and restarts containers with the WAN down.

pub mod config;
pub mod error;
pub mod import;
pub mod push;
pub mod stage;
pub mod throttle;

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::{kv, object_store::ObjectStore};
use dashmap::DashMap;
use edge_bus::api::{reply_counted, Failures};
use edge_bus::mirror::Mirror;
use edge_bus::signal::Signal;
use edge_types::api::AppRecord;
use edge_types::image::SiteStaging;
use edge_types::subject::ApiOp;
use edge_types::Name;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::RegistryError;

/// Version announced on the NATS service API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const NAME: &str = "registry-sync";

/// Shared state of the service.
#[derive(Clone)]
pub struct Registry {
    pub client: async_nats::Client,
    /// The hub's blob store.
    pub blobs: ObjectStore,
    pub images: kv::Store,
    pub staging: kv::Store,
    /// Applied apps: where each is placed and the images it resolved to.
    pub apps: Mirror<AppRecord>,
    /// Registered sites: the architectures of their hosts.
    pub sites: Mirror<edge_types::site::SiteRecord>,
    /// Raised when a pass should start now.
    pub stage_now: Signal,
    /// Bytes per second per site (0: no limit).
    pub rate: u64,
    pub concurrent: usize,
    /// Blobs seen at each site, and when.
    pub known: Arc<DashMap<(Name, String), Instant>>,
    /// Bytes sent to each site.
    pub sent: Arc<DashMap<Name, u64>>,
    /// The staging progress last recorded per site.
    pub last: Arc<DashMap<Name, SiteStaging>>,
    /// Blobs at a site that no app there needs, since when.
    pub unneeded: Arc<DashMap<(Name, String), Instant>>,
    /// When each site's store was last swept for unneeded blobs.
    pub swept: Arc<DashMap<Name, Instant>>,
    /// How long an unneeded blob stays.
    pub gc_grace: std::time::Duration,
    /// How long a blob seen at a site is trusted to be there before it is checked again.
    pub recheck: std::time::Duration,
    /// Failed requests per endpoint, shown in `$SRV.STATS`.
    pub failed: Failures,
    /// The HTTP client for registries (`None` when it could not be built, e.g. no CA
    /// certificates on the host), and the registries reached over plain HTTP.
    pub http: Option<reqwest::Client>,
    pub insecure: Arc<Vec<String>>,
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RegistryError> {
    let client =
        edge_bus::connect(&edge_bus::Endpoint::new(&config.nats_url, config.nats_creds.clone()), NAME, true).await?;
    let js = edge_bus::topology::hub_js(&client);
    let buckets = edge_bus::topology::ensure_hub(&js).await?;
    let blobs = edge_bus::topology::ensure_image_store(&js).await?;
    let stage_now = Signal::new();
    let r = Registry {
        client: client.clone(),
        blobs,
        images: buckets.images.clone(),
        staging: buckets.staging.clone(),
        apps: Mirror::follow_prefix(buckets.apps.clone(), "app.", stage_now.clone(), shutdown.clone()),
        sites: Mirror::follow(buckets.sites.clone(), stage_now.clone(), shutdown.clone()),
        stage_now,
        rate: config.site_bytes_per_sec,
        concurrent: config.concurrent_sites,
        known: Default::default(),
        sent: Default::default(),
        last: Default::default(),
        unneeded: Default::default(),
        swept: Default::default(),
        gc_grace: config.gc_grace(),
        recheck: std::time::Duration::from_secs(config.recheck_secs.max(1)),
        failed: Default::default(),
        http: registry_client()
            .inspect_err(|e| tracing::warn!(error = %e, "image import is unavailable: no HTTP client"))
            .ok(),
        insecure: Arc::new(config.insecure_registries.clone()),
    };
    let failed = r.failed.clone();
    let service = async_nats::service::ServiceExt::service_builder(&client)
        .description("The image store: pushes by digest, staged into each site's own store")
        .stats_handler(
            move |endpoint, _| serde_json::json!({ "failed_requests": failed.get(&endpoint).map(|v| *v).unwrap_or(0) }),
        )
        .start(NAME, VERSION)
        .await
        .map_err(RegistryError::js)?;
    let requests = edge_bus::api::endpoints(&service, NAME).await.map_err(RegistryError::js)?;
    let stager = tokio::spawn(stage::run(r.clone(), config.pass_every(), shutdown.clone()));
    tracing::info!(site_bytes_per_sec = config.site_bytes_per_sec, "registry-sync ready");

    edge_bus::api::serve_until(requests, &shutdown, |op, req| {
        let r = r.clone();
        async move { serve(&r, op, req).await }
    })
    .await;
    use edge_bus::shutdown::bounded;
    bounded("stopping the service API", service.stop()).await;
    bounded("staging", stager).await;
    bounded("flushing", client.flush()).await;
    tracing::info!("registry-sync stopped");
    Ok(())
}

/// The HTTP client for registries: TLS with the platform's roots (rustls, ring).
fn registry_client() -> Result<reqwest::Client, RegistryError> {
    edge_bus::trace::install_tls_provider();
    reqwest::Client::builder()
        .user_agent(concat!("edge-registry-sync/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| RegistryError::JetStream(format!("HTTP client: {e:?}")))
}

async fn serve(r: &Registry, op: Option<ApiOp>, req: async_nats::service::Request) {
    let Some(op) = op else { return edge_bus::api::answer_health(req, NAME, VERSION).await };
    let f = &r.failed;
    let body = match edge_bus::api::body(&req) {
        Ok(b) => b,
        Err(e) => return reply_counted::<()>(f, op, &req, Err(e)).await,
    };
    match op {
        ApiOp::ImagePush => reply_counted(f, op, &req, push::push(r, body).await).await,
        ApiOp::ImageList => reply_counted(f, op, &req, push::list(r, body).await).await,
        ApiOp::ImageImport => reply_counted(f, op, &req, import::import(r, body).await).await,
        other => unreachable!("{other:?} is not registered by registry-sync"),
    }
}
