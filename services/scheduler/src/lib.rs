//! scheduler: the central service that accepts applications, decides which sites each belongs
//! on, and writes every site's desired state; it follows site registrations, heartbeats and
//! status reports to keep placement current and to answer status queries.

pub mod apps;
pub mod audit;
pub mod authlog;
pub mod blocks;
pub mod config;
pub mod error;
pub mod events;
pub mod hosts;
pub mod join;
pub mod liveness;
pub mod placement;
pub mod rollout;
pub mod rollout_api;
pub mod sites;
pub mod sources;
pub mod tenants;
pub mod topics;
pub mod watermark;
pub mod writer;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::service::ServiceExt;
use edge_bus::api::reply_counted;
use edge_bus::topology::HubBuckets;
use edge_types::block::Caller;
use edge_types::subject::ApiOp;
use edge_types::Name;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::SchedulerError;

/// How long the desired-state writer waits for a publish ack before failing: a hub busy
/// delivering a fleet-wide change to thousands of sites may take longer than the 5 s other
/// JetStream requests wait (a stuck request, e.g. right after a hub restart, must not hold a
/// request handler for long).
pub const WRITE_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Service version announced on the NATS service API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Shared state of the scheduler.
#[derive(Clone)]
pub struct Hub {
    pub js: jetstream::Context,
    pub buckets: HubBuckets,
    /// Serialises placement changes within this process, so two requests never place the
    /// same app at once; KV compare-and-swap guards against other processes.
    pub placement: Arc<tokio::sync::Mutex<()>>,
    /// Serialises edits of the site sources of the hub's `SITE_EVENTS` and `TELEMETRY` (a
    /// read-modify-write of the stream's config): a registration adding one, the re-attachment
    /// of stalled ones. Not the placement lock, so that applies never wait on a stream update
    /// that the hub, busy after a restart, is slow to answer.
    pub source_edits: Arc<tokio::sync::Mutex<()>>,
    pub liveness: liveness::LivenessMap,
    pub watermarks: watermark::Watermarks,
    /// Declared orders of label values, for comparisons such as `size >= medium`.
    pub orders: Arc<edge_types::selector::LabelOrders>,
    /// Site events rejected as malformed or forged.
    pub rejected: Arc<AtomicU64>,
    /// Apps whose rollout may need a step (`None` until the first full scan).
    pub rolling: rollout::Rolling,
    /// Failed requests per endpoint name (`app-apply`, ...), shown in `$SRV.STATS`.
    pub failed: edge_bus::api::Failures,
    /// The scheduler's configuration.
    pub config: Arc<Config>,
    /// Sites whose events the hub's streams are known to source (checked or added by this
    /// process): a site re-registering after every reconnect then costs no stream read.
    pub sourced: Arc<dashmap::DashSet<Name>>,
    /// What the hub's streams of apps' topics source (see [`topics`]).
    pub topics: Arc<topics::Known>,
    /// Tenants, sites and hosts blocked by operators (`block.set`).
    pub blocks: blocks::Blocks,
    /// Which sites each tenant may use (`tenant.sites`).
    pub tenants: tenants::TenantPolicies,
    /// The sites' approved hosts (`site.hosts`).
    pub host_lists: hosts::HostLists,
    /// Renews sites' leaf-link credentials, when given the control account's signer.
    pub renewer: Option<Arc<edge_auth::leaf::Renewer>>,
    /// Issues hosts' own credentials, when given the hosts' signer.
    pub host_issuer: Option<Arc<edge_auth::host::HostIssuer>>,
}

impl Hub {
    /// Whether a site's heartbeats are arriving.
    pub fn connected(&self, site: &Name) -> bool {
        self.liveness.connected(site)
    }
}

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), SchedulerError> {
    let (client, reconnects) = edge_bus::connect::connect_observed(
        &edge_bus::Endpoint::new(&config.nats_url, config.nats_creds.clone()),
        "scheduler",
        true,
    )
    .await?;
    let js = edge_bus::topology::hub_js(&client);
    let buckets = edge_bus::topology::ensure_hub(&js).await?;
    edge_bus::topology::ensure_audit(&js).await?;
    let renewer = match &config.leaf_signer {
        Some(path) => {
            let valid = Duration::from_secs(config.leaf_valid_secs);
            let r = edge_auth::leaf::Renewer::from_seed_file(path, valid).map_err(SchedulerError::Config)?;
            Some(Arc::new(r))
        }
        None => None,
    };
    let host_issuer = match &config.host_signer {
        Some(path) => {
            Some(Arc::new(edge_auth::host::HostIssuer::from_seed_file(path).map_err(SchedulerError::Config)?))
        }
        None => None,
    };
    let blocks = blocks::Blocks::follow(buckets.apps.clone(), shutdown.clone());
    blocks.loaded().await;
    let tenants = tenants::TenantPolicies::follow(buckets.apps.clone(), shutdown.clone());
    tenants.loaded().await;
    let host_lists = hosts::HostLists::follow(buckets.apps.clone(), shutdown.clone());
    host_lists.loaded().await;
    let hub = Hub {
        blocks,
        tenants,
        host_lists,
        renewer,
        host_issuer,
        js,
        buckets,
        placement: Arc::new(tokio::sync::Mutex::new(())),
        source_edits: Arc::new(tokio::sync::Mutex::new(())),
        liveness: liveness::LivenessMap::new(Duration::from_secs(config.site_timeout_secs)),
        watermarks: Default::default(),
        orders: Arc::new(config.label_orders.clone()),
        config: Arc::new(config.clone()),
        rejected: Arc::new(AtomicU64::new(0)),
        sourced: Arc::new(dashmap::DashSet::new()),
        topics: Arc::default(),
        rolling: Default::default(),
        failed: Default::default(),
    };
    let (failed, rejected) = (hub.failed.clone(), hub.rejected.clone());

    let service = client
        .service_builder()
        .description("Places applications on sites and writes their desired state")
        .stats_handler(move |endpoint, _| {
            serde_json::json!({
                "failed_requests": failed.get(&endpoint).map(|v| *v).unwrap_or(0),
                "rejected_site_events": rejected.load(std::sync::atomic::Ordering::Relaxed),
            })
        })
        .start("scheduler", VERSION)
        .await
        .map_err(SchedulerError::js)?;
    let requests = edge_bus::api::endpoints(&service, "scheduler").await.map_err(SchedulerError::js)?;

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(events::follow(hub.clone(), shutdown.clone()));
    tasks.spawn(authlog::follow(hub.clone(), client.clone(), shutdown.clone()));
    let (c, live, sd) = (client.clone(), hub.liveness.clone(), shutdown.clone());
    tasks.spawn(async move {
        if let Err(e) = live.follow(c, reconnects, sd).await {
            tracing::error!(error = %e, "heartbeat subscription ended");
        }
    });
    tasks.spawn(watermark::publish_loop(hub.clone(), Duration::from_secs(1), shutdown.clone()));
    tasks.spawn(sources::keep_flowing(hub.clone(), client.clone(), shutdown.clone()));
    tasks.spawn(rollout::drive(hub.clone(), shutdown.clone()));
    let (h, sd, every) = (hub.clone(), shutdown.clone(), config.resync());
    tasks.spawn(async move { resync(h, every, sd).await });
    tracing::info!("scheduler ready");

    // Stop intake, let in-flight requests finish and reply, then stop the background tasks.
    edge_bus::api::serve_until(requests, &shutdown, |op, req| {
        let hub = hub.clone();
        async move { serve(&hub, op, req).await }
    })
    .await;
    use edge_bus::shutdown::bounded;
    bounded("stopping the service API", service.stop()).await;
    bounded("background tasks", async { while tasks.join_next().await.is_some() {} }).await;
    bounded("flushing", client.flush()).await;
    tracing::info!("scheduler stopped");
    Ok(())
}

/// Handles one request in a span named after its operation (`app.apply`, ...), continuing the
/// trace its headers carry.
async fn serve(hub: &Hub, op: Option<ApiOp>, req: async_nats::service::Request) {
    let Some(op) = op else { return edge_bus::api::answer_health(req, "scheduler", VERSION).await };
    let (noun, verb) = op.parts();
    let span = tracing::info_span!("request", otel.name = %format_args!("{noun}.{verb}"), otel.kind = "server");
    edge_bus::trace::continue_from(&span, req.message.headers.as_ref());
    tracing::Instrument::instrument(handle(hub, op, &req), span).await
}

async fn handle(hub: &Hub, op: ApiOp, req: &async_nats::service::Request) {
    let f = &hub.failed;
    let body = match edge_bus::api::body(req) {
        Ok(b) => b,
        Err(e) => return reply_counted::<()>(f, op, req, Err(e)).await,
    };
    let caller = Caller::of_subject(&req.message.subject);
    if let Err(e) = apps::check_owner(hub, &caller, op, body).await {
        return reply_counted::<()>(f, op, req, Err(e)).await;
    }
    match op {
        ApiOp::AppApply => reply_counted(f, op, req, apps::apply(hub, &caller, body).await).await,
        ApiOp::AppList => reply_counted(f, op, req, apps::list(hub, &caller, body).await).await,
        ApiOp::AppGet => reply_counted(f, op, req, apps::get(hub, body).await).await,
        ApiOp::AppStatus => reply_counted(f, op, req, apps::status(hub, body).await).await,
        ApiOp::AppDelete => reply_counted(f, op, req, apps::delete(hub, body).await).await,
        ApiOp::AppPlan => reply_counted(f, op, req, apps::plan(hub, &caller, body).await).await,
        ApiOp::AppRollout => reply_counted(f, op, req, rollout_api::status(hub, body).await).await,
        ApiOp::AppPause => reply_counted(f, op, req, rollout_api::control(hub, body, true).await).await,
        ApiOp::AppResume => reply_counted(f, op, req, rollout_api::control(hub, body, false).await).await,
        ApiOp::AppHistory => reply_counted(f, op, req, rollout_api::history(hub, body).await).await,
        ApiOp::AppRollback => reply_counted(f, op, req, rollout_api::rollback(hub, body).await).await,
        ApiOp::AppEvents => reply_counted(f, op, req, topics::read(hub, body).await).await,
        ApiOp::AppSend => reply_counted(f, op, req, topics::send(hub, body).await).await,
        ApiOp::SiteList => reply_counted(f, op, req, sites::list(hub, body).await).await,
        ApiOp::SiteLabel => reply_counted(f, op, req, sites::label(hub, body).await).await,
        ApiOp::SiteRegister => reply_counted(f, op, req, sites::register(hub, &req.message.subject, body).await).await,
        ApiOp::SiteRenew => reply_counted(f, op, req, sites::renew(hub, &req.message.subject, body).await).await,
        ApiOp::SiteJoin => reply_counted(f, op, req, join::join(hub, &req.message.subject, body).await).await,
        ApiOp::SiteInvite => reply_counted(f, op, req, join::invite(hub, body).await).await,
        ApiOp::SiteInvites => reply_counted(f, op, req, join::list(hub, body).await).await,
        ApiOp::SiteApprove => reply_counted(f, op, req, join::approve(hub, body).await).await,
        ApiOp::SiteHosts => reply_counted(f, op, req, hosts::change(hub, body).await).await,
        ApiOp::SiteRotateKey => reply_counted(f, op, req, sites::rotate_key(hub, body).await).await,
        ApiOp::BlockSet => reply_counted(f, op, req, blocks::set(hub, body).await).await,
        ApiOp::BlockList => reply_counted(f, op, req, blocks::list(hub, body).await).await,
        ApiOp::TenantSites => reply_counted(f, op, req, tenants::set(hub, body).await).await,
        other => unreachable!("{other:?} belongs to the {} service; no endpoint is registered here", other.service()),
    }
}

/// Periodic full placement pass: repairs anything a failed request or a lost race left behind.
async fn resync(hub: Hub, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let _guard = hub.placement.lock().await;
        if let Err(e) = sites::place_all(&hub).await {
            tracing::warn!(error = %e, "placement resync failed");
        }
    }
}
