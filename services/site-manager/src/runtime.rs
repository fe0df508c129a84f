//! The container runtime seam: the real Docker Engine through bollard. Containers are scoped to
//! this site and host by label, so several sites (or simulated hosts) can share one engine.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointSettings, HostConfig, NetworkingConfig, PortBinding, SystemInfo,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use edge_types::app::DeviceKind;
use edge_types::secret::SecretRef;
use edge_types::telemetry::Lifecycle;
use edge_types::Name;
use futures::{Stream, StreamExt};

use crate::labels;
use crate::network::{Net, Networks, Pool};
use crate::reconcile::{Observed, Wanted};
use crate::secrets::Opened;

/// Errors talking to the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("image {0} is not present on this host")]
    ImageMissing(String),
    #[error("cannot write secret files: {0}")]
    SecretFiles(std::io::Error),
    #[error("no free /24 left in the network pool {0} (SITE_MANAGER_NETWORK_POOL)")]
    NetworkPoolFull(String),
    #[error("app bus: {0}")]
    Bus(#[from] crate::bus::BusError),
    #[error("the app asks for the bus, and this host has no key to issue its credential (SITE_MANAGER_APPS_SIGNER)")]
    NoBusKey,
}

/// Docker, scoped to one site and host.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    site: Name,
    host: Name,
    /// The host's device nodes by kind, given to containers that ask for the kind.
    devices: HashMap<DeviceKind, Vec<String>>,
    /// Where secret files are written (a tmpfs), one directory per container.
    secrets_dir: PathBuf,
    /// The apps' networks at this host.
    networks: Networks,
    /// Memory limit of containers whose spec sets none.
    default_memory_mb: Option<u64>,
    /// The apps' bus at this host, when the host can issue its credentials.
    bus: Option<std::sync::Arc<crate::bus::AppBus>>,
}

/// Health from Docker's status line (`Up 5 minutes (healthy)`): `healthy`, `unhealthy`,
/// `starting`, or empty for a container without a probe.
pub fn health_of(status: &str) -> String {
    ["unhealthy", "healthy", "health: starting"]
        .into_iter()
        .find(|h| status.contains(&format!("({h})")))
        .map(|h| h.trim_start_matches("health: ").to_string())
        .unwrap_or_default()
}

/// A lifecycle event of one of our containers, as Docker reported it.
pub struct LifecycleSeen {
    pub id: String,
    pub app: Name,
    pub service: Name,
    pub replica: u32,
    pub event: Lifecycle,
    pub exit_code: Option<i64>,
}

/// A secret a container gets, opened.
pub struct Resolved<'a> {
    pub by: &'a SecretRef,
    pub secret: Opened,
}

/// Where a container sees its file secrets.
pub const SECRETS_MOUNT: &str = "/run/secrets";

/// Most processes (and threads) one container may have.
pub const PIDS_LIMIT: i64 = 4096;

impl DockerRuntime {
    /// Connects to the local Docker Engine (`DOCKER_HOST` or the default socket) and agrees on
    /// an API version the engine speaks.
    pub async fn connect(site: Name, host: Name) -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
        let networks = Networks::new(docker.clone(), site.clone(), host.clone(), Pool::default());
        Ok(Self {
            docker,
            site,
            host,
            devices: HashMap::new(),
            secrets_dir: std::env::temp_dir().join("edge-secrets"),
            networks,
            default_memory_mb: None,
            bus: None,
        })
    }

    /// The memory limit of containers whose spec sets none (`None`: no limit).
    pub fn set_default_memory_mb(&mut self, mb: Option<u64>) {
        self.default_memory_mb = mb;
    }

    /// Sets the /16 the apps' networks take their subnets from.
    pub fn set_network_pool(&mut self, pool: Pool) {
        self.networks = Networks::new(self.docker.clone(), self.site.clone(), self.host.clone(), pool);
    }

    /// The apps' networks at this host.
    pub fn networks(&self) -> &Networks {
        &self.networks
    }

    /// The networks a replica belongs on here, its primary first.
    pub fn networks_of(&self, w: &Wanted) -> Vec<Net> {
        crate::network::networks_of(&self.site, &self.host, w)
    }

    /// Gives replicas of apps with a bus their connection (see [`crate::bus`]).
    pub fn set_bus(&mut self, bus: std::sync::Arc<crate::bus::AppBus>) {
        self.bus = Some(bus);
    }

    pub fn bus(&self) -> Option<&std::sync::Arc<crate::bus::AppBus>> {
        self.bus.as_ref()
    }

    /// Writes a container's bus credential beside its secret files (mode 0444: the container's
    /// user may be anyone; the parent directory is the host's only).
    fn write_bus_creds(&self, container: &str, text: &str) -> std::io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::create_dir_all(&self.secrets_dir)?;
        std::fs::set_permissions(&self.secrets_dir, std::fs::Permissions::from_mode(0o700))?;
        let dir = self.secret_dir(container);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let tmp = dir.join(format!(".{}.tmp", crate::bus::CREDS_FILE));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o444).open(&tmp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        std::fs::rename(&tmp, dir.join(crate::bus::CREDS_FILE))
    }

    /// Sets the directory secret files are written under (it should be a tmpfs).
    pub fn set_secrets_dir(&mut self, dir: PathBuf) {
        self.secrets_dir = dir;
    }

    /// The directory of one container's secret files.
    fn secret_dir(&self, container: &str) -> PathBuf {
        self.secrets_dir.join(container)
    }

    /// Writes a container's file secrets (mode 0444 in a 0755 directory; the parent is 0700),
    /// each replaced atomically. Returns the names whose content changed.
    pub fn write_secret_files(&self, container: &str, secrets: &[Resolved<'_>]) -> std::io::Result<Vec<Name>> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let files: Vec<&Resolved> = secrets.iter().filter(|s| s.by.env.is_none()).collect();
        let mut changed = Vec::new();
        if files.is_empty() {
            return Ok(changed);
        }
        std::fs::create_dir_all(&self.secrets_dir)?;
        std::fs::set_permissions(&self.secrets_dir, std::fs::Permissions::from_mode(0o700))?;
        let dir = self.secret_dir(container);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        for s in files {
            let path = dir.join(s.by.name.as_str());
            let current = std::fs::read(&path).ok().map(zeroize::Zeroizing::new);
            if current.as_deref().map(Vec::as_slice) == Some(s.secret.value.as_bytes()) {
                continue;
            }
            let tmp = dir.join(format!(".{}.tmp", s.by.name));
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o444).open(&tmp)?;
            std::io::Write::write_all(&mut f, s.secret.value.as_bytes())?;
            std::fs::rename(&tmp, &path)?;
            changed.push(s.by.name.clone());
        }
        Ok(changed)
    }

    /// Removes the secret directories of this host's containers that no longer exist.
    pub fn remove_stale_secret_dirs(&self, live: &std::collections::HashSet<String>) {
        let prefix = format!("edge-{}-{}-", self.site, self.host);
        let Ok(entries) = std::fs::read_dir(&self.secrets_dir) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && !live.contains(&name) {
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    tracing::warn!(dir = %name, error = %err, "cannot remove a stale secrets directory");
                }
            }
        }
    }

    /// Sets the device nodes containers may be given (from the host inventory).
    pub fn set_devices(&mut self, inventory: &edge_types::site::HostInventory) {
        self.devices =
            [DeviceKind::Camera, DeviceKind::Gpu].into_iter().map(|k| (k, inventory.device_nodes(k))).collect();
    }

    fn scope_filters(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![format!("{}={}", labels::SITE, self.site), format!("{}={}", labels::HOST, self.host)],
        )])
    }

    /// Engine facts for the host inventory.
    pub async fn info(&self) -> Result<SystemInfo, RuntimeError> {
        Ok(self.docker.info().await?)
    }

    /// Every container of this site and host, running or not.
    pub async fn list(&self) -> Result<Vec<Observed>, RuntimeError> {
        let opts = ListContainersOptionsBuilder::default().all(true).filters(&self.scope_filters()).build();
        let mut out = Vec::new();
        for c in self.docker.list_containers(Some(opts)).await? {
            let l = c.labels.clone().unwrap_or_default();
            let get = |k: &str| l.get(k).cloned().unwrap_or_default();
            let parsed = (|| {
                Some(Observed {
                    id: c.id.clone()?,
                    app: Name::new(get(labels::APP)).ok()?,
                    service: Name::new(get(labels::SERVICE)).ok()?,
                    replica: get(labels::REPLICA).parse().ok()?,
                    generation: get(labels::GENERATION).parse().ok()?,
                    digest: get(labels::SPEC_DIGEST),
                    image: c.image.clone().unwrap_or_default(),
                    image_id: c.image_id.clone().unwrap_or_default(),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                    health: health_of(c.status.as_deref().unwrap_or_default()),
                    networks: c
                        .network_settings
                        .as_ref()
                        .and_then(|n| n.networks.as_ref())
                        .map(|n| n.keys().cloned().collect())
                        .unwrap_or_default(),
                })
            })();
            match parsed {
                Some(o) => out.push(o),
                None => {
                    tracing::warn!(id = ?c.id, "container has our site label but unreadable labels; ignoring it")
                }
            }
        }
        Ok(out)
    }

    /// Container name of a replica: stable, so a second create of the same replica conflicts
    /// instead of duplicating it.
    pub fn container_name(&self, w: &Wanted) -> String {
        self.replica_name(&w.app, &w.service.name, w.replica)
    }

    /// The container name of a replica (see [`container_name`](Self::container_name)).
    pub fn replica_name(&self, app: &Name, service: &Name, replica: u32) -> String {
        format!("edge-{}-{}-{app}-{service}-{replica}", self.site, self.host)
    }

    /// Creates and starts a replica with its secrets, from image `image_id` (an image from the
    /// store, run by its id) or else the spec's image; returns the container's id.
    pub async fn create(
        &self,
        w: &Wanted,
        secrets: &[Resolved<'_>],
        image_id: Option<&str>,
    ) -> Result<String, RuntimeError> {
        let svc = &w.service;
        let name = self.container_name(w);
        self.write_secret_files(&name, secrets).map_err(RuntimeError::SecretFiles)?;
        let mut env: Vec<String> = svc.env.iter().map(|(k, v)| format!("{k}={}", v.0)).collect();
        env.extend(secrets.iter().filter_map(|s| Some(format!("{}={}", s.by.env.as_ref()?, s.secret.value.as_str()))));
        let networks = self.networks_of(w);
        for net in &networks {
            self.networks.ensure(net).await?;
        }
        let primary = networks[0].name.clone();
        if w.bus.is_some() {
            let bus = self.bus.as_ref().ok_or(RuntimeError::NoBusKey)?;
            let (bus_env, creds) = bus.connection(w, &primary).await?;
            self.write_bus_creds(&name, &creds).map_err(RuntimeError::SecretFiles)?;
            env.extend(bus_env);
        }
        let binds = (w.bus.is_some() || secrets.iter().any(|s| s.by.env.is_none()))
            .then(|| vec![format!("{}:{SECRETS_MOUNT}:ro", self.secret_dir(&name).display())]);
        let lbl = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::SITE.to_string(), self.site.to_string()),
            (labels::HOST.to_string(), self.host.to_string()),
            (labels::APP.to_string(), w.app.to_string()),
            (labels::VERSION.to_string(), w.version.clone()),
            (labels::GENERATION.to_string(), w.generation.to_string()),
            (labels::SERVICE.to_string(), svc.name.to_string()),
            (labels::REPLICA.to_string(), w.replica.to_string()),
            (labels::SPEC_DIGEST.to_string(), w.digest.clone()),
            (labels::IMAGE.to_string(), svc.image.clone()),
        ]);
        let mut exposed = Vec::new();
        let mut bindings = HashMap::new();
        for p in &svc.ports {
            let key = format!("{}/{}", p.container, p.protocol.as_str());
            exposed.push(key.clone());
            let host_port = p.host_port().to_string();
            bindings.insert(key, Some(vec![PortBinding { host_ip: None, host_port: Some(host_port) }]));
        }
        let endpoint = EndpointSettings { aliases: Some(vec![svc.name.to_string()]), ..Default::default() };
        let body = ContainerCreateBody {
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(primary.clone(), endpoint)])),
            }),
            // An image from the store runs by its id (the config digest), never by a tag.
            image: Some(image_id.map(str::to_string).unwrap_or_else(|| svc.image.clone())),
            cmd: (!svc.command.is_empty()).then(|| svc.command.iter().map(|a| a.0.clone()).collect()),
            env: Some(env),
            labels: Some(lbl),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            healthcheck: svc.probe.as_ref().map(|p| {
                let secs = |s: u32| s as i64 * 1_000_000_000;
                bollard::models::HealthConfig {
                    test: Some(p.command()),
                    interval: Some(secs(p.period_secs)),
                    timeout: Some(secs(p.timeout_secs)),
                    retries: Some(p.failure_threshold as i64),
                    ..Default::default()
                }
            }),
            host_config: Some(HostConfig {
                devices: (!svc.devices.is_empty()).then(|| {
                    let nodes = svc.devices.iter().flat_map(|k| self.devices.get(k).into_iter().flatten());
                    nodes
                        .map(|path| DeviceMapping {
                            path_on_host: Some(path.clone()),
                            path_in_container: Some(path.clone()),
                            cgroup_permissions: Some("rwm".into()),
                        })
                        .collect()
                }),
                port_bindings: (!bindings.is_empty()).then_some(bindings),
                network_mode: Some(primary),
                binds,
                memory: svc.resources.memory_mb.or(self.default_memory_mb).map(|m| (m * 1024 * 1024) as i64),
                nano_cpus: svc.resources.cpus.map(|c| (c * 1e9) as i64),
                // Hardening every container gets: no privilege gained through setuid binaries,
                // a bounded number of processes (a fork bomb stays in its container).
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                pids_limit: Some(PIDS_LIMIT),
                readonly_rootfs: svc.read_only_root.then_some(true),
                tmpfs: svc
                    .read_only_root
                    .then(|| HashMap::from([("/tmp".to_string(), "rw,nosuid,nodev,size=64m".to_string())])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self.docker.create_container(Some(opts), body).await.map_err(|e| match e {
            bollard::errors::Error::DockerResponseServerError { status_code: 404, .. } => {
                RuntimeError::ImageMissing(svc.image.clone())
            }
            other => RuntimeError::Docker(other),
        })?;
        // Docker before API 1.44 takes one network at creation; the others are joined before start.
        for net in &networks[1..] {
            self.networks.join(&created.id, net, &svc.name).await?;
        }
        self.docker.start_container(&created.id, None).await?;
        Ok(created.id)
    }

    /// The Docker client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Starts an existing container.
    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        Ok(self.docker.start_container(id, None).await?)
    }

    /// Removes a container, stopping it first; a container already gone is not an error.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A container's log output (stdout and stderr) as it comes: the last `tail` lines, only
    /// those since `since` (Unix seconds) when set, then new ones if `follow`.
    pub fn logs(
        &self,
        id: &str,
        tail: u32,
        since: Option<i64>,
        follow: bool,
    ) -> impl Stream<Item = Result<bytes::Bytes, RuntimeError>> + Send + 'static {
        let mut opts = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(follow)
            .tail(&tail.to_string());
        if let Some(s) = since {
            opts = opts.since(s.clamp(0, i32::MAX as i64) as i32);
        }
        self.docker.logs(id, Some(opts.build())).map(|r| r.map(|o| o.into_bytes()).map_err(RuntimeError::from))
    }

    /// CPU cores and memory bytes a container uses now (Docker samples over about a second).
    pub async fn usage(&self, id: &str) -> Result<(f64, u64), RuntimeError> {
        let opts = bollard::query_parameters::StatsOptionsBuilder::default().stream(false).one_shot(false).build();
        let mut s = Box::pin(self.docker.stats(id, Some(opts)));
        let Some(r) = s.next().await else { return Ok((0.0, 0)) };
        let r = r?;
        let total = |c: &Option<bollard::models::ContainerCpuStats>| {
            let c = c.as_ref();
            (
                c.and_then(|c| c.cpu_usage.as_ref()).and_then(|u| u.total_usage).unwrap_or(0),
                c.and_then(|c| c.system_cpu_usage).unwrap_or(0),
                c.and_then(|c| c.online_cpus).unwrap_or(1),
            )
        };
        let (now, sys_now, cpus) = total(&r.cpu_stats);
        let (before, sys_before, _) = total(&r.precpu_stats);
        let sys = sys_now.saturating_sub(sys_before);
        let cores = if sys == 0 { 0.0 } else { now.saturating_sub(before) as f64 / sys as f64 * cpus as f64 };
        let memory = r.memory_stats.and_then(|m| m.usage).unwrap_or(0);
        Ok((cores, memory))
    }

    /// Our containers' lifecycle events (start, exit, OOM kill, restart) with what they were.
    /// Ends when Docker's event stream breaks; the caller re-subscribes.
    pub fn lifecycle(&self) -> impl Stream<Item = LifecycleSeen> + Send + 'static {
        let mut filters = self.scope_filters();
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert("event".into(), ["start", "die", "oom", "restart"].map(String::from).to_vec());
        let opts = EventsOptionsBuilder::default().filters(&filters).build();
        self.docker.events(Some(opts)).take_while(|e| futures::future::ready(e.is_ok())).filter_map(|e| {
            futures::future::ready((|| {
                let e = e.ok()?;
                let actor = e.actor?;
                let attrs = actor.attributes.unwrap_or_default();
                let get = |k: &str| attrs.get(k).cloned().unwrap_or_default();
                let event = match e.action.as_deref()? {
                    "start" => Lifecycle::Start,
                    "die" => Lifecycle::Exit,
                    "oom" => Lifecycle::Oom,
                    "restart" => Lifecycle::Restart,
                    _ => return None,
                };
                Some(LifecycleSeen {
                    id: actor.id.unwrap_or_default(),
                    app: Name::new(get(labels::APP)).ok()?,
                    service: Name::new(get(labels::SERVICE)).ok()?,
                    replica: get(labels::REPLICA).parse().ok()?,
                    event,
                    exit_code: (event == Lifecycle::Exit).then(|| get("exitCode").parse().ok()).flatten(),
                })
            })())
        })
    }

    /// A tick for every lifecycle event of our containers (die, stop, destroy, ...). Ends when
    /// the event stream breaks; the caller re-subscribes.
    pub fn events(&self) -> impl Stream<Item = ()> + Send + 'static {
        let mut filters = self.scope_filters();
        filters.insert("type".into(), vec!["container".into()]);
        let opts = EventsOptionsBuilder::default().filters(&filters).build();
        self.docker.events(Some(opts)).take_while(|e| futures::future::ready(e.is_ok())).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn health_from_docker_status() {
        assert_eq!(super::health_of("Up 5 minutes (healthy)"), "healthy");
        assert_eq!(super::health_of("Up 2 seconds (health: starting)"), "starting");
        assert_eq!(super::health_of("Up 1 minute (unhealthy)"), "unhealthy");
        assert_eq!(super::health_of("Up 1 minute"), "");
    }
}
