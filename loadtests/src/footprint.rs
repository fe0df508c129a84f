//! Footprint of the site agent: the real `site-manager` binary (release build) at a real leaf
//! site, its resident memory once idle, then running 20 containers on the real Docker Engine.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use edge_bus::api::request;
use edge_bus::topology;
use edge_testkit::NatsServer;
use edge_types::api::{ApplyReply, DeleteReply};
use edge_types::status::{AppStatusReport, Phase};
use edge_types::subject::ApiOp;
use edge_types::Name;

use crate::procs::{self, Service};

const IMAGE: &str = "edge/busybox:v1";
const APP: &str = "footprint";

pub struct Footprint {
    /// Resident memory after registering and settling, no workload.
    pub idle: u64,
    /// The same, anonymous and file-backed.
    pub idle_parts: (u64, u64),
    /// Resident memory while running `containers` containers, settled.
    pub busy: u64,
    pub containers: u32,
    /// Highest resident memory over the whole run.
    pub peak: u64,
    /// How long the settle periods were.
    pub settle: Duration,
    /// Which build ran (`agent` or `release` profile).
    pub build: String,
}

pub async fn run(containers: u32, settle: Duration) -> Result<Footprint> {
    let hub = NatsServer::hub().await?;
    let client = hub.connect().await?;
    let buckets = topology::ensure_hub(&topology::hub_js(&client)).await?;
    let scheduler = Service::start(
        "scheduler",
        "scheduler",
        &[
            ("SCHEDULER_NATS_URL", hub.url()),
            ("SCHEDULER_NATS_CREDS", hub.user_creds("scheduler")?.display().to_string()),
            ("SCHEDULER_IMAGES_FROM_HOSTS", IMAGE.into()),
        ],
    )?;
    procs::wait_healthy(&client, "scheduler", Duration::from_secs(60)).await?;

    let site = Name::site(format!("footprint-{}", std::process::id()))?;
    let leaf = NatsServer::leaf(site.as_str(), &hub).await?;
    let dir = tempfile::tempdir()?;
    let manager = procs::start_site_manager(&site, &leaf, dir.path())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while buckets.sites.get(site.as_str()).await?.is_none() {
        ensure!(Instant::now() < deadline, "the site never registered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(settle).await;
    let idle = manager.rss();
    let idle_parts = procs::rss_parts(manager.pid());

    // Two services (a service has at most 16 replicas), the containers split between them.
    let service = |name: &str, replicas: u32| {
        serde_json::json!({
            "name": name, "image": IMAGE, "command": ["sleep", "3600"], "replicas": replicas,
            "resources": {"cpus": 0.01, "memory_mb": 8},
        })
    };
    let spec = serde_json::json!({
        "name": APP, "version": "1", "placement": {"sites": ""},
        "services": [service("a", containers.div_ceil(2)), service("b", containers / 2)],
    });
    let result = async {
        request::<_, ApplyReply>(&client, ApiOp::AppApply, &spec, Duration::from_secs(30)).await?;
        let key = format!("{APP}.{site}");
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let report = edge_bus::kv::get::<AppStatusReport>(&buckets.status, &key).await?.map(|(r, _)| r);
            if report.is_some_and(|r| r.phase == Phase::Running && r.containers.len() == containers as usize) {
                break;
            }
            ensure!(Instant::now() < deadline, "{containers} containers never all ran");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(settle).await;
        Ok::<_, anyhow::Error>(manager.rss())
    }
    .await;
    let peak = procs::peak_rss_bytes(manager.pid());
    let _ = request::<_, DeleteReply>(
        &client,
        ApiOp::AppDelete,
        &serde_json::json!({"name": APP}),
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    manager.stop(Duration::from_secs(10)).await;
    scheduler.stop(Duration::from_secs(10)).await;
    edge_testkit::remove_site_containers(site.as_str());
    let busy = result.context("running the containers")?;
    let build = procs::site_manager_binary()?
        .parent()
        .and_then(|d| d.file_name())
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Footprint { idle, idle_parts, busy, containers, peak, settle, build })
}
