//! site-manager: runs at each site. It calls home, follows the site's own desired state (held
//! by the site's leaf server, so it works with the WAN down) and turns it into Docker containers,
//! restarting crashed ones and reporting status up through the site's event stream.

pub mod agent;
pub mod buffer;
pub mod callhome;
pub mod config;
pub mod desired;
pub mod inventory;
pub mod labels;
pub mod reconcile;
pub mod runtime;
pub mod sources;
pub mod status;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use edge_bus::BusError;
use edge_types::site::SiteRegistration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Version reported at call-home.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the site-manager could not run.
#[derive(Debug, thiserror::Error)]
pub enum SiteManagerError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("container runtime: {0}")]
    Runtime(#[from] runtime::RuntimeError),
}

/// Runs the site-manager until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), SiteManagerError> {
    let site = config.site.clone();
    let host = config.host_name();
    let runtime = runtime::DockerRuntime::connect(site.clone(), host.clone()).await?;
    let client = edge_bus::connect(&config.nats_url, &format!("site-manager/{site}/{host}"), true).await?;
    // The leaf's own JetStream domain: the site's streams live there, reachable with the WAN down.
    let js = jetstream::with_domain(client.clone(), site.as_str());
    edge_bus::topology::ensure_site(&js, &site, &config.limits()).await?;
    tracing::info!(%site, %host, "site streams ready");

    let inventory = inventory::read(&runtime, &host, &Default::default()).await?;
    let registration = SiteRegistration {
        site: site.clone(),
        labels: config.label_map(),
        hosts: vec![inventory],
        agent_version: VERSION.into(),
    };

    let desired = Arc::new(Mutex::new(Default::default()));
    let changed = Arc::new(Notify::new());
    let (loaded_tx, loaded_rx) = watch::channel(false);
    let buffer = Arc::new(buffer::EventBuffer::new(js.clone()));
    let follower = desired::DesiredFollower {
        js: js.clone(),
        site: site.clone(),
        desired: desired.clone(),
        changed: changed.clone(),
        loaded: loaded_tx,
        buffer: buffer.clone(),
        rejected: Arc::new(AtomicU64::new(0)),
    };

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(callhome::register(client.clone(), buffer.clone(), registration, shutdown.clone()));
    let beat = std::time::Duration::from_secs(config.heartbeat_secs);
    tasks.spawn(callhome::heartbeats(
        client.clone(),
        buffer.clone(),
        site.clone(),
        host.clone(),
        beat,
        shutdown.clone(),
    ));
    tasks.spawn(follower.run(shutdown.clone()));
    tasks.spawn(sources::keep_flowing(client.clone(), js.clone(), shutdown.clone()));
    let agent = agent::Agent::new(site, host, runtime, desired, changed, config.resync(), buffer);
    tasks.spawn(agent.run(loaded_rx, shutdown.clone()));

    shutdown.cancelled().await;
    use edge_bus::shutdown::bounded;
    bounded("background tasks", async { while tasks.join_next().await.is_some() {} }).await;
    // Containers keep running: a site-manager stop is never a workload stop.
    bounded("flushing", client.flush()).await;
    tracing::info!("site-manager stopped; containers left running");
    Ok(())
}
