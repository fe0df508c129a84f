//! telemetry: the fleet's health as Prometheus metrics. It follows the hub's record of sites,
//! applications and status reports, every site's heartbeats (buffer fill, refusals, leaf
//! recoveries), the hub's sourcing of site events (catch-up lag) and the services' own
//! request statistics, and serves them at `/metrics`.

pub mod alerts;
pub mod fleet;
pub mod http;
pub mod ingest;
pub mod metrics;

use std::time::Duration;

use async_nats::service::ServiceExt;
use edge_types::subject::ApiOp;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Version announced on the NATS service API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const NAME: &str = "telemetry";

/// Configuration, from flags or `TELEMETRY_*` environment variables.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "telemetry", version)]
pub struct Config {
    /// URL of the hub NATS server.
    #[arg(long, env = "TELEMETRY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Credentials file (user JWT and nkey seed) to connect with, issued by the authority
    /// (`edgectl auth`); the file is read, never logged.
    #[arg(long, env = "TELEMETRY_NATS_CREDS")]
    pub nats_creds: Option<std::path::PathBuf>,
    /// Address of the Prometheus endpoint (`/metrics`).
    #[arg(long, env = "TELEMETRY_LISTEN", default_value = "127.0.0.1:9464")]
    pub listen: String,
    /// A site counts as connected while its last heartbeat is younger than this many seconds.
    #[arg(long, env = "TELEMETRY_SITE_TIMEOUT_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub site_timeout_secs: u64,
    /// Most sites given their own series; the rest count in the fleet totals only.
    #[arg(long, env = "TELEMETRY_MAX_SITES", default_value_t = 10_000)]
    pub max_sites: usize,
    /// Seconds between alert evaluations.
    #[arg(long, env = "TELEMETRY_ALERT_EVERY_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub alert_every_secs: u64,
    /// A site not heard from this many seconds raises `site_offline`.
    #[arg(long, env = "TELEMETRY_SITE_OFFLINE_SECS", default_value_t = 300)]
    pub site_offline_secs: u64,
    /// An app running at fewer sites than desired this many seconds raises `app_degraded`.
    #[arg(long, env = "TELEMETRY_APP_SHORT_SECS", default_value_t = 120)]
    pub app_short_secs: u64,
    /// This many restarts of an app's containers within the restart window raise `app_degraded`.
    #[arg(long, env = "TELEMETRY_RESTARTS_ALERT", default_value_t = 3)]
    pub restarts_alert: u64,
    #[arg(long, env = "TELEMETRY_RESTART_WINDOW_SECS", default_value_t = 600)]
    pub restart_window_secs: u64,
    /// A site's event buffer this full (0 to 1) raises `buffer_nearly_full`.
    #[arg(long, env = "TELEMETRY_BUFFER_ALERT_RATIO", default_value_t = 0.8)]
    pub buffer_alert_ratio: f64,
}

impl Config {
    pub fn new(nats_url: impl Into<String>, listen: impl Into<String>) -> Self {
        let th = alerts::Thresholds::default();
        Self {
            nats_url: nats_url.into(),
            nats_creds: None,
            listen: listen.into(),
            site_timeout_secs: 15,
            max_sites: 10_000,
            alert_every_secs: 5,
            site_offline_secs: th.site_offline.as_secs(),
            app_short_secs: th.app_short.as_secs(),
            restarts_alert: th.restarts,
            restart_window_secs: th.restart_window.as_secs(),
            buffer_alert_ratio: th.buffer_fill,
        }
    }

    pub fn thresholds(&self) -> alerts::Thresholds {
        alerts::Thresholds {
            site_offline: Duration::from_secs(self.site_offline_secs),
            app_short: Duration::from_secs(self.app_short_secs),
            restarts: self.restarts_alert,
            restart_window: Duration::from_secs(self.restart_window_secs),
            buffer_fill: self.buffer_alert_ratio,
        }
    }
}

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Bus(#[from] edge_bus::BusError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), TelemetryError> {
    let (listener, addr) = http::bind(&config.listen)
        .await
        .map_err(|source| TelemetryError::Listen { addr: config.listen.clone(), source })?;
    let client =
        edge_bus::connect(&edge_bus::Endpoint::new(&config.nats_url, config.nats_creds.clone()), NAME, true).await?;
    let js = edge_bus::topology::hub_js(&client);
    let buckets = edge_bus::topology::ensure_hub(&js).await?;
    let alert_kv = edge_bus::topology::ensure_alerts(&js).await?;
    let fleet = fleet::Fleet::follow(
        client.clone(),
        buckets,
        Duration::from_secs(config.site_timeout_secs),
        config.max_sites,
        shutdown.clone(),
    )
    .await
    .map_err(|e| edge_bus::BusError::js("subscribe to heartbeats", e))?;
    tokio::spawn(fleet.reported.clone().follow(js.clone(), shutdown.clone()));
    let f = fleet.clone();
    let server = tokio::spawn(http::serve(
        listener,
        move || {
            let f = f.clone();
            async move { metrics::render(&f.snapshot().await) }
        },
        shutdown.clone(),
    ));
    let raiser = alerts::Raiser { js, kv: alert_kv.clone(), fleet: fleet.clone(), thresholds: config.thresholds() };
    let every = Duration::from_secs(config.alert_every_secs);
    let alerting = tokio::spawn(raiser.run(every, shutdown.clone()));

    let service = client
        .service_builder()
        .description("Serves the fleet's health as Prometheus metrics and raises alerts")
        .start(NAME, VERSION)
        .await
        .map_err(|e| edge_bus::BusError::js("service API", e))?;
    let health = service.group(format!("{}.{NAME}", edge_types::subject::PREFIX)).endpoint("health").await;
    let endpoint = |op: ApiOp| {
        let (noun, verb) = op.parts();
        service.group(op.group()).endpoint_builder().name(format!("{noun}-{verb}")).add(verb)
    };
    let (list, resources) = (endpoint(ApiOp::AlertList).await, endpoint(ApiOp::TelemetryResources).await);
    let (health, list, resources) = match (health, list, resources) {
        (Ok(h), Ok(l), Ok(r)) => (h, l, r),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Err(edge_bus::BusError::js("service API", e).into()),
    };
    let mut requests = futures::stream::select_all([
        health.map(|r| (None, r)).boxed(),
        list.map(|r| (Some(ApiOp::AlertList), r)).boxed(),
        resources.map(|r| (Some(ApiOp::TelemetryResources), r)).boxed(),
    ]);
    tracing::info!(%addr, "telemetry ready: metrics at http://{addr}/metrics");
    loop {
        let (op, req) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = requests.next() => match r { Some(r) => r, None => break },
        };
        match op {
            Some(ApiOp::AlertList) => {
                edge_bus::api::respond(&req, alerts::list(&alert_kv, &req.message.payload).await).await
            }
            Some(_) => edge_bus::api::respond(&req, resources_of(&fleet, &req.message.payload)).await,
            None => {
                if let Err(e) = req.respond(Ok(edge_bus::health::health_body(NAME, VERSION).into())).await {
                    tracing::warn!(error = %e, "health reply failed");
                }
            }
        }
    }
    drop(requests);
    use edge_bus::shutdown::bounded;
    bounded("stopping the service API", service.stop()).await;
    bounded("metrics endpoint", server).await;
    bounded("alerts", alerting).await;
    bounded("flushing", client.flush()).await;
    tracing::info!("telemetry stopped");
    Ok(())
}

/// `telemetry.resources`: every container of an app with where it runs and what it uses.
fn resources_of(
    fleet: &fleet::Fleet,
    body: &[u8],
) -> Result<edge_types::telemetry::ResourcesReply, edge_types::api::ApiError> {
    let req: edge_types::api::AppRef = edge_types::schema::decode(body).map_err(edge_bus::api::invalid)?;
    let containers = fleet.containers_of(&req.name);
    Ok(edge_types::telemetry::ResourcesReply { app: req.name, containers })
}
