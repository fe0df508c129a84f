//! A whole stack for end-to-end tests: hub and site leaf nats-servers (real processes), the
//! scheduler and one site-manager per site (in-process, through their `run` entries), and the
//! real Docker Engine. Names are random so tests run in parallel; containers are removed on drop.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use async_nats::jetstream::consumer;
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptionsBuilder};
use bollard::Docker;
use edge_bus::api::{request, request_raw, RequestError};
use edge_testkit::{unique, NatsServer, Relay};
use edge_types::api::*;
use edge_types::site::LabelValue;
use edge_types::subject::ApiOp;
use edge_types::Name;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A change to a site-manager's configuration.
pub type Tweak = std::sync::Arc<dyn Fn(&mut site_manager::Config) + Send + Sync>;

pub struct Site {
    pub name: Name,
    pub leaf: NatsServer,
    /// The site's WAN link to the hub.
    pub wan: Relay,
    /// The same WAN, to the hub's client port (renewals of the leaf credential).
    pub wan_client: Relay,
    /// The site's bundle: its leaf credential (renewed in place) and the enrolment credential.
    pub leaf_creds: std::path::PathBuf,
    pub enrol_creds: std::path::PathBuf,
    pub labels: Vec<(String, String)>,
    /// Adjusts the site-manager's configuration (limits, intervals) before each start.
    pub tweak: Tweak,
    /// The site's hosts, each with its own site-manager sharing the site's leaf server.
    pub hosts: Vec<Host>,
    /// Where the hosts keep their keys, and write containers' secret files.
    pub key_dir: std::path::PathBuf,
    pub secrets_dir: std::path::PathBuf,
}

/// One host of a site (simulated on the shared Docker Engine, scoped by the host label).
pub struct Host {
    pub name: Name,
    pub labels: Vec<(String, String)>,
    manager: Option<(CancellationToken, JoinHandle<()>)>,
}

/// A host to start: its name and host labels.
pub type HostDef<'a> = (&'a str, &'a [(&'a str, &'a str)]);

/// A site to start: its labels and hosts.
pub type SiteDef<'a> = (&'a [(&'a str, &'a str)], &'a [HostDef<'a>]);

pub struct Stack {
    pub hub: NatsServer,
    pub sites: Vec<Site>,
    pub client: async_nats::Client,
    pub docker: Docker,
    scheduler: Option<(CancellationToken, JoinHandle<()>)>,
    secrets: Option<(CancellationToken, JoinHandle<()>)>,
    registry: Option<(CancellationToken, JoinHandle<()>)>,
    /// Keys of this stack (the secrets master key, the hosts' keys).
    pub keys: tempfile::TempDir,
    /// Secret files of every host of the stack, on the machine's tmpfs.
    pub secrets_dir: std::path::PathBuf,
}

impl Stack {
    /// Starts a hub, the scheduler, and one leaf plus site-manager per entry of `sites`
    /// (each entry is the site's labels).
    pub async fn start(sites: &[&[(&str, &str)]]) -> Result<Self> {
        Self::start_with(sites, |_| {}).await
    }

    /// Like [`Stack::start`], with every site-manager's configuration adjusted by `tweak`.
    pub async fn start_with(
        sites: &[&[(&str, &str)]],
        tweak: impl Fn(&mut site_manager::Config) + Send + Sync + 'static,
    ) -> Result<Self> {
        let one: &[HostDef] = &[("host-1", &[])];
        let defs: Vec<SiteDef> = sites.iter().map(|labels| (*labels, one)).collect();
        Self::start_sites(&defs, tweak).await
    }

    /// Starts sites with several hosts each.
    pub async fn start_sites(
        sites: &[SiteDef<'_>],
        tweak: impl Fn(&mut site_manager::Config) + Send + Sync + 'static,
    ) -> Result<Self> {
        let tweak: Tweak = std::sync::Arc::new(tweak);
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = edge_bus::logging::init("e2e", "info"); // RUST_LOG=info shows every service's log
        }
        let hub = NatsServer::hub().await?;
        let client = hub.connect().await?;
        let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
        let secrets_dir = std::path::PathBuf::from(format!("/dev/shm/{}", unique("edge-test-secrets")));
        let keys = tempfile::tempdir()?;
        let mut stack = Stack {
            hub,
            sites: Vec::new(),
            client,
            docker,
            scheduler: None,
            secrets: None,
            registry: None,
            keys,
            secrets_dir,
        };
        stack.start_scheduler();
        stack.start_secrets();
        stack.start_registry();
        let owned = |l: &[(&str, &str)]| l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        for (labels, hosts) in sites {
            let name = Name::site(unique("s"))?;
            let wan = Relay::start(&stack.hub.leaf_addr()).await?;
            let wan_client = Relay::start(stack.hub.url().trim_start_matches("nats://")).await?;
            let leaf = NatsServer::leaf_to(name.as_str(), &stack.hub, &format!("nats-leaf://{}", wan.addr())).await?;
            let bundle = stack.hub.authority().site(&name)?;
            let hosts = hosts
                .iter()
                .map(|(h, l)| Ok(Host { name: Name::new(*h)?, labels: owned(l), manager: None }))
                .collect::<Result<Vec<_>>>()?;
            let mut site = Site {
                name,
                leaf,
                wan,
                wan_client,
                leaf_creds: bundle.leaf_creds,
                enrol_creds: bundle.enrol_creds,
                labels: owned(labels),
                tweak: tweak.clone(),
                hosts,
                key_dir: stack.keys.path().join("hosts"),
                secrets_dir: stack.secrets_dir.clone(),
            };
            site.start_manager();
            stack.sites.push(site);
        }
        stack.seed_images().await?;
        let want = stack.sites.len();
        stack
            .eventually("every site registered", || async { Ok(stack.sites_list().await?.sites.len() == want) })
            .await?;
        Ok(stack)
    }

    fn start_scheduler(&mut self) {
        self.scheduler = Some(run_scheduler(&self.hub));
    }

    /// A telemetry service's configuration for this stack, listening on `listen`.
    #[allow(dead_code)] // not every test binary runs telemetry
    pub fn telemetry_config(&self, listen: impl Into<String>) -> telemetry::Config {
        let mut config = telemetry::Config::new(self.hub.url(), listen);
        config.nats_creds = Some(self.hub.user_creds("telemetry").expect("credentials"));
        config
    }

    fn start_secrets(&mut self) {
        let mut config = secrets::Config::new(self.hub.url(), self.keys.path().join("master.key"));
        config.nats_creds = Some(self.hub.user_creds("secrets").expect("credentials"));
        self.secrets = Some(service("secrets", |t| secrets::run(config, t)));
    }

    /// Puts the workload images the tests use into the image store, as `edgectl dev up` does.
    async fn seed_images(&self) -> Result<()> {
        for image in ["edge/busybox:v1", "edge/busybox:v2"] {
            self.eventually(&format!("{image} pushed"), || async {
                Ok(edgectl::image::push(&self.client, &self.docker, image).await.is_ok())
            })
            .await?;
        }
        Ok(())
    }

    fn start_registry(&mut self) {
        self.start_registry_with(|_| {});
    }

    fn start_registry_with(&mut self, tweak: impl FnOnce(&mut registry_sync::Config)) {
        let mut config = registry_sync::Config::new(self.hub.url());
        config.nats_creds = Some(self.hub.user_creds("registry-sync").expect("credentials"));
        config.pass_secs = 2;
        config.gc_grace_secs = 4;
        config.recheck_secs = 2;
        tweak(&mut config);
        self.registry = Some(service("registry-sync", |t| registry_sync::run(config, t)));
    }

    /// Restarts registry-sync with its configuration adjusted by `tweak`.
    pub async fn restart_registry(&mut self, tweak: impl FnOnce(&mut registry_sync::Config)) {
        if let Some((t, h)) = self.registry.take() {
            t.cancel();
            let _ = h.await;
        }
        self.start_registry_with(tweak);
    }

    /// Stores a secret (`put`) or gives it a new value (`rotate`).
    pub async fn secret(
        &self,
        op: ApiOp,
        name: &str,
        value: &str,
    ) -> Result<edge_types::secret::SecretInfo, RequestError> {
        let body = serde_json::json!({"name": name, "value": value, "actor": "e2e"});
        request(&self.client, op, &body, Duration::from_secs(20)).await
    }

    pub async fn secret_describe(&self, name: &str) -> Result<edge_types::secret::SecretInfo, RequestError> {
        request(&self.client, ApiOp::SecretDescribe, &serde_json::json!({"name": name}), Duration::from_secs(20)).await
    }

    pub fn site(&self, i: usize) -> &Name {
        &self.sites[i].name
    }

    pub async fn apply(&self, spec: &serde_json::Value) -> Result<ApplyReply, RequestError> {
        request(&self.client, ApiOp::AppApply, spec, Duration::from_secs(20)).await
    }

    pub async fn raw<T: edge_types::schema::Message>(&self, op: ApiOp, body: &[u8]) -> Result<T, RequestError> {
        request_raw(&self.client, op, body.to_vec(), Duration::from_secs(20)).await
    }

    pub async fn plan(&self, spec: &serde_json::Value) -> Result<PlanReply, RequestError> {
        request(&self.client, ApiOp::AppPlan, spec, Duration::from_secs(20)).await
    }

    pub async fn delete(&self, app: &str) -> Result<DeleteReply, RequestError> {
        request(&self.client, ApiOp::AppDelete, &serde_json::json!({"name": app}), Duration::from_secs(20)).await
    }

    pub async fn status(&self, app: &str) -> Result<AppStatusReply, RequestError> {
        request(&self.client, ApiOp::AppStatus, &serde_json::json!({"name": app}), Duration::from_secs(20)).await
    }

    pub async fn apps(&self) -> Result<AppListReply, RequestError> {
        request(&self.client, ApiOp::AppList, &Empty {}, Duration::from_secs(20)).await
    }

    pub async fn sites_list(&self) -> Result<SiteListReply, RequestError> {
        request(&self.client, ApiOp::SiteList, &Empty {}, Duration::from_secs(20)).await
    }

    pub async fn label(&self, site: &Name, key: &str, value: &str) -> Result<(), RequestError> {
        let req = SiteLabelRequest {
            site: site.clone(),
            set: [(key.to_string(), LabelValue(value.to_string()))].into(),
            remove: vec![],
        };
        let _: edge_types::site::SiteRecord =
            request(&self.client, ApiOp::SiteLabel, &req, Duration::from_secs(20)).await?;
        Ok(())
    }

    /// Containers of `app` at a site, as Docker reports them, by container id.
    pub async fn containers(&self, site: &Name, app: &str) -> Result<Vec<Container>> {
        let filters =
            HashMap::from([("label".to_string(), vec![format!("io.edge.site={site}"), format!("io.edge.app={app}")])]);
        let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let mut out = Vec::new();
        for c in self.docker.list_containers(Some(opts)).await? {
            let id = c.id.clone().unwrap_or_default();
            let inspect = self.docker.inspect_container(&id, None::<InspectContainerOptions>).await?;
            let state = inspect.state.unwrap_or_default();
            let labels = c.labels.clone().unwrap_or_default();
            out.push(Container {
                id,
                image: labels.get("io.edge.image").cloned().or(c.image.clone()).unwrap_or_default(),
                image_id: c.image_id.clone().unwrap_or_default(),
                running: state.running.unwrap_or(false),
                started_at: state.started_at.unwrap_or_default(),
                env: inspect.config.and_then(|c| c.env).unwrap_or_default(),
                service: labels.get("io.edge.service").cloned().unwrap_or_default(),
                host: labels.get("io.edge.host").cloned().unwrap_or_default(),
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Removes every container of one host of a site, as a power loss would.
    pub async fn power_off_containers(&self, site: &Name, host: &str) -> Result<()> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("io.edge.site={site}"), format!("io.edge.host={host}")],
        )]);
        let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        for c in self.docker.list_containers(Some(opts)).await? {
            let remove = bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build();
            self.docker.remove_container(&c.id.unwrap_or_default(), Some(remove)).await?;
        }
        Ok(())
    }

    /// Waits until every listed site runs exactly `n` running containers of `app`.
    pub async fn wait_running(&self, sites: &[&Name], app: &str, n: usize) -> Result<()> {
        for site in sites {
            self.eventually(&format!("{n} running containers of {app} at {site}"), || async {
                let c = self.containers(site, app).await?;
                Ok(c.len() == n && c.iter().all(|c| c.running))
            })
            .await?;
        }
        Ok(())
    }

    /// Polls `check` until it holds, failing after [`TIMEOUT`].
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let start = Instant::now();
        let mut last_err = None;
        while start.elapsed() < TIMEOUT {
            match check().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("timed out waiting for: {what} (last error: {last_err:?})")
    }

    /// Whether the hub currently sees site `i` as connected (heartbeats arriving).
    pub async fn connected(&self, i: usize) -> Result<bool> {
        let sites = self.sites_list().await?;
        Ok(sites.sites.iter().any(|s| s.site == self.sites[i].name && s.connected))
    }

    /// Cuts site `i`'s WAN link and waits until the hub sees it disconnected.
    pub async fn cut(&self, i: usize) -> Result<()> {
        self.sites[i].wan.cut();
        self.sites[i].wan_client.cut();
        self.eventually("the hub sees the site disconnected", || async { Ok(!self.connected(i).await?) }).await
    }

    /// Restores site `i`'s WAN link and waits until the hub sees it connected.
    pub async fn restore(&self, i: usize) -> Result<()> {
        self.sites[i].wan_client.restore();
        self.sites[i].wan.restore();
        self.eventually("the hub sees the site connected", || async { self.connected(i).await }).await
    }

    /// The host holding site `i`'s leader lease, read at the site.
    pub async fn leader(&self, i: usize) -> Result<Option<String>> {
        let kv = self.site_js(i).await?.get_key_value("edge_leader").await?;
        Ok(match kv.get("leader").await? {
            Some(v) => Some(serde_json::from_slice::<edge_types::cluster::LeaderLease>(&v)?.host.to_string()),
            None => None,
        })
    }

    /// The site's own JetStream (its leaf's domain).
    pub async fn site_js(&self, i: usize) -> Result<async_nats::jetstream::Context> {
        let leaf = self.sites[i].leaf.connect().await?;
        Ok(async_nats::jetstream::with_domain(leaf, self.sites[i].name.as_str()))
    }

    /// State of the site's event stream, read at the site: (messages held, last sequence).
    pub async fn site_buffer(&self, i: usize) -> Result<(u64, u64)> {
        let mut stream = self.site_js(i).await?.get_stream("SITE_EVENTS").await?;
        let state = &stream.info().await?.state;
        Ok((state.messages, state.last_sequence))
    }

    /// The hub's view of a site.
    pub async fn site_summary(&self, i: usize) -> Result<SiteSummary> {
        let sites = self.sites_list().await?;
        sites.sites.into_iter().find(|s| s.site == self.sites[i].name).ok_or_else(|| anyhow::anyhow!("site missing"))
    }

    /// (Nats-Msg-Id, upstream sequence) of every message the hub holds from one site.
    pub async fn hub_copies(&self, site: &Name) -> Result<Vec<(String, u64)>> {
        let js = edge_bus::topology::hub_js(&self.client);
        let stream = js.get_stream("SITE_EVENTS").await?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: edge_types::subject::site_events(site),
                ..Default::default()
            })
            .await?;
        let pending = consumer.clone().info().await?.num_pending;
        let mut out = Vec::new();
        let mut messages = consumer.messages().await?;
        while (out.len() as u64) < pending {
            let m = tokio::time::timeout(Duration::from_secs(5), messages.next()).await?.unwrap()?;
            let headers = m.headers.clone().unwrap_or_default();
            let id = headers.get("Nats-Msg-Id").map(|v| v.to_string()).unwrap_or_default();
            let source = headers.get("Nats-Stream-Source").map(|v| v.to_string()).unwrap_or_default();
            let upstream: u64 = source.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            out.push((id, upstream));
        }
        Ok(out)
    }

    /// Stops a site's site-manager (its containers keep running) and starts a new one.
    pub async fn restart_manager(&mut self, i: usize) {
        self.sites[i].stop_manager().await;
        self.sites[i].start_manager();
    }
}

impl Site {
    /// A cold boot of the site's software: site-manager and leaf server both stop, then the
    /// leaf restarts on its store and a new site-manager starts. Containers are Docker's and
    /// keep running, as they would through a restart of our services.
    pub async fn cold_boot(&mut self) -> Result<()> {
        self.stop_manager().await;
        self.leaf.restart().await?;
        self.start_manager();
        Ok(())
    }

    /// Starts the site-manager of every host.
    fn start_manager(&mut self) {
        for j in 0..self.hosts.len() {
            self.start_host(j);
        }
    }

    /// Starts host `j`'s site-manager.
    pub fn start_host(&mut self, j: usize) {
        let config = self.manager_config(&self.hosts[j].name.clone(), &self.hosts[j].labels.clone());
        let token = CancellationToken::new();
        let t = token.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = site_manager::run(config, t).await {
                panic!("site-manager failed: {e}");
            }
        });
        self.hosts[j].manager = Some((token, handle));
    }

    /// Starts a site-manager on another machine that calls itself `host` (as a host's does),
    /// with a key and machine id of its own: a duplicate host id. Runs until the token is
    /// cancelled.
    pub fn start_impostor(&self, host: &str, key_dir: &std::path::Path) -> (CancellationToken, JoinHandle<()>) {
        let mut config = self.manager_config(&Name::new(host).expect("valid"), &[]);
        config.key_dir = key_dir.to_path_buf();
        let token = CancellationToken::new();
        let t = token.clone();
        let handle = tokio::spawn(async move {
            let _ = site_manager::run(config, t).await;
        });
        (token, handle)
    }

    fn manager_config(&self, host: &Name, labels: &[(String, String)]) -> site_manager::Config {
        let mut config = site_manager::Config::new(self.name.clone(), self.leaf.url());
        config.nats_creds = Some(self.leaf.creds().to_path_buf());
        config.host = Some(host.clone());
        config.resync_secs = 2;
        config.register_refresh_secs = 5;
        config.heartbeat_secs = 1;
        config.labels = self.labels.iter().map(|(k, v)| (k.clone(), LabelValue(v.clone()))).collect();
        config.host_labels = labels.iter().map(|(k, v)| (k.clone(), LabelValue(v.clone()))).collect();
        config.key_dir = self.key_dir.clone();
        config.secrets_dir = self.secrets_dir.clone();
        config.leaf_creds = Some(self.leaf_creds.clone());
        config.hub_url = Some(format!("nats://{}", self.wan_client.addr()));
        config.enrol_creds = Some(self.enrol_creds.clone());
        config.renew_check_secs = 1;
        (self.tweak)(&mut config);
        config
    }

    /// Stops every host's site-manager cleanly (containers keep running).
    pub async fn stop_manager(&mut self) {
        for j in 0..self.hosts.len() {
            self.stop_host(j).await;
        }
    }

    /// Stops host `j`'s site-manager cleanly (a leader hands its lease over).
    pub async fn stop_host(&mut self, j: usize) {
        if let Some((token, handle)) = self.hosts[j].manager.take() {
            token.cancel();
            let _ = handle.await;
        }
    }

    /// Kills host `j`'s site-manager: no clean-up at all, as if the host lost power (its
    /// containers stay, as Docker's, until the test removes them).
    pub async fn kill_host(&mut self, j: usize) {
        if let Some((token, handle)) = self.hosts[j].manager.take() {
            handle.abort();
            let _ = handle.await;
            token.cancel(); // only stops the detached readers that outlive the aborted task
        }
    }

    /// Index of the host named `name`.
    pub fn host_index(&self, name: &str) -> usize {
        self.hosts.iter().position(|h| h.name.as_str() == name).expect("known host")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for site in &self.sites {
            for h in &site.hosts {
                if let Some((t, _)) = &h.manager {
                    t.cancel();
                }
            }
            remove_site_containers(&site.name);
        }
        if let Some((t, _)) = &self.scheduler {
            t.cancel();
        }
        if let Some((t, _)) = &self.secrets {
            t.cancel();
        }
        if let Some((t, _)) = &self.registry {
            t.cancel();
        }
        let _ = std::fs::remove_dir_all(&self.secrets_dir);
    }
}

/// Asserts that the upstream sequences the hub holds from a site are each there exactly once, in
/// the site's order, with none missing, through at least `through` (the site may record more
/// events while the test runs).
pub fn assert_exactly_once(seqs: &[u64], through: u64, what: &str) {
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected.as_slice(), "{what}: every site event exactly once, in order");
    assert!(seqs.len() as u64 >= through, "{what}: the hub holds {} of at least {through} events", seqs.len());
}

/// The directory of the workspace's binaries (`target/debug`), from this test's own path
/// (`target/debug/deps/<test>-<hash>`).
#[allow(dead_code)] // used by the tests that run binaries
pub fn bin_dir() -> std::path::PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf()
}

/// Removes every container of a site (blocking; used on drop).
pub fn remove_site_containers(site: &Name) {
    edge_testkit::remove_site_containers(site.as_str());
}

#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub id: String,
    /// The image as the spec names it.
    pub image: String,
    /// The image Docker runs (`sha256:...`: for an image from the store, its config digest).
    pub image_id: String,
    pub running: bool,
    pub started_at: String,
    pub env: Vec<String>,
    pub service: String,
    pub host: String,
}

/// An app spec running busybox `sleep`, placed by `selector`.
pub fn sleeper(name: &str, selector: &str, image: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let env: serde_json::Map<String, serde_json::Value> =
        env.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
    serde_json::json!({
        "name": name,
        "version": "1.0.0",
        "services": [{
            "name": "main",
            "image": image,
            "command": ["sleep", "3600"],
            "env": env,
            "resources": {"cpus": 0.1, "memory_mb": 32}
        }],
        "placement": {"sites": selector}
    })
}

/// `edgectl ARGS...` as an operator runs it, against `hub` and its authority; its standard
/// output.
pub fn edgectl(hub: &NatsServer, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(bin_dir().join("edgectl"))
        .args(["--server", &hub.url(), "--auth-dir"])
        .arg(hub.authority().dir())
        .args(args)
        .output()?;
    anyhow::ensure!(out.status.success(), "edgectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// The field a refused request names (its `pointer`); panics if the request was not refused.
pub fn refused_at<T: std::fmt::Debug>(r: Result<T, RequestError>) -> String {
    match r {
        Err(RequestError::Api(e)) => e.pointer.unwrap_or_default(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The scheduler as tests run it, against `hub` (stopped when the token is cancelled).
pub fn run_scheduler(hub: &NatsServer) -> (CancellationToken, JoinHandle<()>) {
    let mut config = scheduler::Config::new(hub.url());
    config.nats_creds = Some(hub.user_creds("scheduler").expect("credentials"));
    config.resync_secs = 5;
    config.site_timeout_secs = 3;
    config.label_orders = edge_types::selector::LabelOrders::parse("size=small<medium<large").expect("valid");
    // An image said to be on the hosts that is not: how tests make a version fail at a site.
    config.images_from_hosts = vec!["edge/busybox:missing".into()];
    // Renews sites' leaf credentials for an hour.
    config.leaf_signer = Some(hub.authority().control_signer_seed());
    config.leaf_valid_secs = 3600;
    // Gives hosts that join with their own key their credential.
    config.host_signer = Some(hub.authority().host_signer_seed().expect("hosts' signer"));
    service("scheduler", |t| scheduler::run(config, t))
}

/// Runs a central service in this process until its token is cancelled; it must not fail.
fn service<F, E>(name: &'static str, run: impl FnOnce(CancellationToken) -> F) -> (CancellationToken, JoinHandle<()>)
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let token = CancellationToken::new();
    let fut = run(token.clone());
    let handle = tokio::spawn(async move {
        if let Err(e) = fut.await {
            panic!("{name} failed: {e}");
        }
    });
    (token, handle)
}
