//! site-manager: runs on every host of a site. It follows the site's own desired state (held by
//! the site's leaf server, so it works with the WAN down) and runs the replicas the site's
//! leader assigned to its host as Docker containers, restarting crashed ones. The host elected
//! leader also assigns replicas to live hosts, merges status, reports it up through the site's
//! event stream and calls home.

pub mod accounts;
pub mod agent;
pub mod buffer;
pub mod bus;
pub mod callhome;
pub mod cluster;
pub mod config;
pub mod desired;
pub mod hostjoin;
pub mod imagegc;
pub mod images;
pub mod inventory;
pub mod keys;
pub mod labels;
pub mod leafwatch;
pub mod logs;
pub mod network;
pub mod reconcile;
pub mod renew;
pub mod runtime;
pub mod secrets;
pub mod sources;
pub mod stats;
pub mod status;
pub mod traces;
pub mod window;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use edge_bus::signal::Signal;
use edge_bus::BusError;
use edge_types::cluster::HostState;
use tokio::sync::watch;
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
    #[error("configuration: {0}")]
    Config(String),
}

/// Retries a start-up step until it succeeds (the leaf server or Docker may come up after the
/// site-manager at boot); `None` if shutdown came first.
async fn until_ready<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    shutdown: &CancellationToken,
    mut step: impl FnMut() -> F,
) -> Option<T> {
    let secs = std::time::Duration::from_secs;
    let mut backoff = edge_bus::backoff::Backoff::new(secs(1) / 2, secs(30));
    loop {
        let e = match step().await {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        tracing::warn!(error = %e, "{what} not ready; retrying in {delay:?}");
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The leaf-link credential's renewer, when the configuration has what it needs.
fn leaf_renewer(config: &Config, leading: watch::Receiver<bool>) -> Option<renew::LeafRenewer> {
    let (Some(creds), Some(hub)) = (&config.leaf_creds, config.hub_enrolment()) else {
        return None;
    };
    Some(renew::LeafRenewer {
        site: config.site.clone(),
        creds: creds.clone(),
        creds_from: config.leaf_creds_from.clone(),
        hub,
        every: std::time::Duration::from_secs(config.renew_check_secs),
        leading,
        join_token: config.join_token.clone(),
    })
}

/// `--renew-only`: keeps the leaf-link credential valid, nothing else, until shut down.
async fn renew_only(config: Config, shutdown: CancellationToken) -> Result<(), SiteManagerError> {
    let (_always, leading) = watch::channel(true);
    let renewer = leaf_renewer(&config, leading).ok_or_else(|| {
        SiteManagerError::Config("--renew-only needs --leaf-creds, --hub-url and --enrol-creds".into())
    })?;
    tracing::info!(site = %config.site, creds = %renewer.creds.display(), "keeping the leaf-link credential valid");
    renewer.run(shutdown).await;
    Ok(())
}

/// Runs the site-manager until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), SiteManagerError> {
    if config.renew_only {
        return renew_only(config, shutdown).await;
    }
    let window = config.window().map_err(SiteManagerError::Config)?;
    let site = config.site.clone();
    let host = config.host_name();
    let Some(mut runtime) =
        until_ready("docker", &shutdown, || runtime::DockerRuntime::connect(site.clone(), host.clone())).await
    else {
        return Ok(());
    };
    if let Some(token) = &config.host_token {
        let (Some(creds), Some(hub)) = (&config.nats_creds, config.hub_enrolment()) else {
            return Err(SiteManagerError::Config(
                "--host-token needs --nats-creds (where the credential goes), --hub-url and --enrol-creds".into(),
            ));
        };
        let join = hostjoin::HostJoin {
            site: site.clone(),
            host: host.clone(),
            creds: creds.clone(),
            token: token.clone(),
            hub,
            every: std::time::Duration::from_secs(config.renew_check_secs),
        };
        if !join.until_joined(&shutdown).await {
            return Ok(());
        }
    }
    let endpoint = edge_bus::Endpoint {
        inbox_prefix: Some(edge_types::subject::site_inbox_prefix(&site)),
        ..edge_bus::Endpoint::new(&config.nats_url, config.nats_creds.clone())
    };
    let client = edge_bus::connect(&endpoint, &format!("site-manager/{site}/{host}"), true).await?;
    // The leaf's own JetStream domain: the site's streams live there, reachable with the WAN down.
    let js = jetstream::with_domain(client.clone(), site.as_str());
    let limits = config.limits();
    if until_ready("site streams", &shutdown, || edge_bus::topology::ensure_site(&js, &site, &limits)).await.is_none() {
        return Ok(());
    }
    let blobs_bucket = edge_bus::topology::site_blobs(&site);
    let Some(blobs) = until_ready("site image store", &shutdown, || {
        let description = "Image blobs staged for the site by registry-sync";
        edge_bus::topology::ensure_object_store_limited(&js, &blobs_bucket, description, config.images_max_bytes)
    })
    .await
    else {
        return Ok(());
    };
    tracing::info!(%site, %host, "site streams ready");

    let Some(buckets) =
        until_ready("site cluster buckets", &shutdown, || edge_bus::topology::ensure_site_buckets(&js)).await
    else {
        return Ok(());
    };
    let host_labels = config.host_label_map();
    let Some(inventory) =
        until_ready("host inventory", &shutdown, || inventory::read(&runtime, &host, &host_labels)).await
    else {
        return Ok(());
    };

    runtime.set_devices(&inventory);
    runtime.set_secrets_dir(config.secrets_dir.clone());
    runtime.set_network_pool(config.network_pool);
    runtime.set_default_memory_mb((config.default_memory_mb > 0).then_some(config.default_memory_mb));
    if let Some(bus) = bus::from_config(&config, &js, runtime.docker(), &shutdown) {
        runtime.set_bus(std::sync::Arc::new(bus));
    }
    warn_unless_tmpfs(&config.secrets_dir);
    // Wakes this host's reconcile loop, and the leader's loop.
    let (changed, leader_changed) = (Signal::new(), Signal::new());
    let view = cluster::ClusterView::follow(buckets.clone(), &changed, &leader_changed, &shutdown);
    let desired = Arc::new(Mutex::new(Default::default()));
    let (loaded_tx, loaded_rx) = watch::channel(false);
    let buffer = Arc::new(buffer::EventBuffer::new(js.clone()));
    let (site_key_tx, site_key_rx) = watch::channel(None);
    let (rekey_tx, rekey_rx) = watch::channel(0u64);
    let secrets = Arc::new(secrets::SiteSecrets::new(
        site.clone(),
        &host,
        site_key_rx.clone(),
        config.secrets_sender.clone(),
        buffer.clone(),
        buckets.keys.clone(),
    ));
    let traces = Arc::new(traces::AppTraces::default());
    let host_policy = desired::HostPolicy::default();
    let follower = desired::DesiredFollower {
        hosts: host_policy.clone(),
        js: js.clone(),
        site: site.clone(),
        desired: desired.clone(),
        changed: changed.with(&leader_changed),
        loaded: loaded_tx,
        buffer: buffer.clone(),
        rejected: Arc::new(AtomicU64::new(0)),
        secrets: secrets.clone(),
        rekey: rekey_tx,
        traces: traces.clone(),
    };

    let mut tasks = tokio::task::JoinSet::new();
    let site_keys = keys::SiteKeys {
        kv: buckets.keys.clone(),
        host: host.clone(),
        key_file: config.key_file(),
        out: site_key_tx,
        rekey: rekey_rx,
    };
    tasks.spawn(site_keys.run(std::time::Duration::from_secs(2), shutdown.clone()));
    tasks.spawn(open_when_key_arrives(secrets.clone(), site_key_rx.clone(), changed.clone(), shutdown.clone()));
    let beat = std::time::Duration::from_secs(config.heartbeat_secs);
    let state = HostState {
        inventory: inventory.clone(),
        beat_ms: beat.as_millis() as u64,
        agent_version: VERSION.into(),
        instance: cluster::hosts::instance_id(&config.key_dir, &site, &host).map_err(SiteManagerError::Config)?,
    };
    tasks.spawn(cluster::hosts::HostBeat { kv: buckets.hosts.clone(), state, every: beat }.run(shutdown.clone()));
    let (leading_tx, leading_rx) = watch::channel(false);
    let election = cluster::lease::Election {
        kv: buckets.leader.clone(),
        me: host.clone(),
        lease: std::time::Duration::from_secs(config.lease_secs),
        leading: leading_tx,
    };
    tasks.spawn(election.run(shutdown.clone()));
    let (registration_tx, registration_rx) = watch::channel(None);
    let leader = cluster::leader::Leader {
        site: site.clone(),
        me: host.clone(),
        view: view.clone(),
        desired: desired.clone(),
        desired_loaded: loaded_rx.clone(),
        leading: leading_rx.clone(),
        changed: leader_changed.waiter(),
        dead_after: std::time::Duration::from_secs(config.host_dead_secs),
        publisher: status::StatusPublisher::new(buffer.clone()),
        registration: registration_tx,
        site_labels: config.label_map(),
        own: inventory.clone(),
        public_key: public_key_of(site_key_rx.clone(), &shutdown),
        hosts: host_policy.clone(),
        duplicates: cluster::hosts::Duplicates::new(std::time::Duration::from_secs(config.host_dead_secs)),
    };
    tasks.spawn(leader.run(shutdown.clone()));
    if let Some(renewer) = leaf_renewer(&config, leading_rx.clone()) {
        tasks.spawn(renewer.run(shutdown.clone()));
    }
    if let Some(sys) = &config.sys_creds {
        let pusher = accounts::AccountPusher {
            leaf: edge_bus::Endpoint::new(&config.nats_url, Some(sys.clone())),
            policy: host_policy.clone(),
            leading: leading_rx.clone(),
            every: std::time::Duration::from_secs(2),
        };
        tasks.spawn(pusher.run(shutdown.clone()));
    }
    let refresh = std::time::Duration::from_secs(config.register_refresh_secs);
    tasks.spawn(callhome::registrar(client.clone(), buffer.clone(), registration_rx, refresh, shutdown.clone()));
    let recoveries = Arc::new(AtomicU64::new(0));
    let beats = callhome::Heartbeats {
        client: client.clone(),
        buffer: buffer.clone(),
        site: site.clone(),
        host: host.clone(),
        every: beat,
        leaf_recoveries: recoveries.clone(),
        secrets_refused: secrets.rejected.clone(),
        bus: runtime.bus().cloned(),
    };
    tasks.spawn(beats.run(shutdown.clone()));
    tasks.spawn(follower.run(shutdown.clone()));
    tasks.spawn(sources::keep_flowing(client.clone(), js.clone(), shutdown.clone()));
    if let (Some(probe_addr), Some(restart_cmd)) = (config.hub_probe_addr.clone(), config.leaf_restart_cmd.clone()) {
        let watch = leafwatch::LeafWatch {
            client: client.clone(),
            probe_addr,
            restart_cmd,
            stuck_after: std::time::Duration::from_secs(config.leaf_stuck_secs),
            recoveries: recoveries.clone(),
        };
        tasks.spawn(watch.run(shutdown.clone()));
    }
    let collector = stats::Collector {
        js: js.clone(),
        site: site.clone(),
        host: host.clone(),
        runtime: runtime.clone(),
        every: std::time::Duration::from_secs(config.stats_secs),
        cpus: inventory.cpus,
    };
    tasks.spawn(collector.run(shutdown.clone()));
    let logs =
        logs::LogServer { client: client.clone(), site: site.clone(), host: host.clone(), runtime: runtime.clone() };
    tasks.spawn(logs.run(shutdown.clone()));
    let mut agent = agent::Agent::new(site, host, runtime, desired, view, changed, secrets);
    agent.resync = config.resync();
    agent.window = window;
    agent.traces = traces;
    agent.hosts = host_policy;
    if config.image_gc_secs > 0 {
        let grace = std::time::Duration::from_secs(config.image_gc_secs);
        let gc = imagegc::ImageGc::new(agent.runtime.docker().clone(), blobs.clone(), agent.desired.clone(), grace);
        tasks.spawn(gc.run(shutdown.clone()));
    }
    agent.images =
        Some(images::SiteImages { docker: agent.runtime.docker().clone(), store: blobs, arch: inventory.arch.clone() });
    tasks.spawn(agent.run(loaded_rx, shutdown.clone()));

    shutdown.cancelled().await;
    use edge_bus::shutdown::bounded;
    bounded("background tasks", async { while tasks.join_next().await.is_some() {} }).await;
    // Containers keep running: a site-manager stop is never a workload stop.
    bounded("flushing", client.flush()).await;
    tracing::info!("site-manager stopped; containers left running");
    Ok(())
}

/// The site's public key, once this host holds the site key.
fn public_key_of(
    mut key: watch::Receiver<Option<keys::SiteKey>>,
    shutdown: &CancellationToken,
) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(key.borrow().as_ref().map(|k| k.public.clone()));
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = key.changed() => if r.is_err() { return },
            }
            tx.send_replace(key.borrow().as_ref().map(|k| k.public.clone()));
        }
    });
    rx
}

/// Opens the secrets that arrived before the site key, as soon as it is held.
async fn open_when_key_arrives(
    secrets: Arc<secrets::SiteSecrets>,
    mut key: watch::Receiver<Option<keys::SiteKey>>,
    changed: Signal,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = key.changed() => if r.is_err() { return },
        }
        if secrets.key_arrived().await {
            changed.raise();
        }
    }
}

/// Secret files belong on a tmpfs; say so loudly when the directory is not on one.
fn warn_unless_tmpfs(dir: &std::path::Path) {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    let probe = dir.ancestors().find(|p| p.exists()).unwrap_or(dir);
    match rustix::fs::statfs(probe) {
        Ok(s) if s.f_type as u64 == TMPFS_MAGIC => {}
        Ok(_) => {
            tracing::warn!(dir = %dir.display(), "the secrets directory is not on a tmpfs: secret files may reach a disk")
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot tell whether the secrets directory is a tmpfs")
        }
    }
}
