//! Test harness: real nats-server processes (a hub and site leaves) on random loopback ports,
//! with temporary stores removed on drop, using the project's own `nats-config/` files, and a
//! relay that cuts a site's WAN link on demand.

pub mod otlp;
pub mod relay;

pub use relay::Relay;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use edge_auth::Authority;
use edge_bus::natsconf::{self, HubPorts, LeafPorts};
use edge_types::Name;
use tokio::process::{Child, Command};

/// A running nats-server, killed when dropped. Servers run with the project's auth: a hub makes
/// its own authority (operator and accounts); a leaf gets its site's bundle from its hub's.
pub struct NatsServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    conf: PathBuf,
    env: Vec<(String, String)>,
    client_port: u16,
    leaf_port: Option<u16>,
    /// The hub's authority (a leaf shares its hub's).
    authority: Arc<Authority>,
    /// What [`NatsServer::connect`] presents: `admin` at a hub, the site-manager's at a leaf.
    creds: PathBuf,
    /// The site of a leaf.
    site: Option<Name>,
}

impl NatsServer {
    /// Starts a hub (JetStream domain `hub`) trusting a new authority.
    pub async fn hub() -> Result<Self> {
        let ports =
            HubPorts { client: natsconf::free_port()?, leaf: natsconf::free_port()?, http: natsconf::free_port()? };
        let dir = tempfile::Builder::new().prefix("edge-hub-").tempdir()?;
        let authority = Arc::new(Authority::init(&dir.path().join("auth"))?);
        std::fs::copy(authority.hub_auth_conf(), dir.path().join("auth.conf"))?;
        let creds = authority.control_user(&Name::new("admin")?)?;
        let tls = authority.hub_tls(&["127.0.0.1".into(), "localhost".into()])?;
        let env = natsconf::hub_env("hub", &ports, &dir.path().join("store"), (&tls.0, &tls.1));
        Self::start(dir, natsconf::HUB_CONF, env, ports.client, Some(ports.leaf), authority, creds, None).await
    }

    /// Starts a site leaf server (JetStream domain = `site`) connected to `hub`.
    pub async fn leaf(site: &str, hub: &NatsServer) -> Result<Self> {
        Self::leaf_to(site, hub, &hub.leaf_url()).await
    }

    /// Starts a site leaf server of `hub`'s authority that dials the hub at `hub_leaf_url`
    /// (for example through a [`Relay`]).
    pub async fn leaf_to(site: &str, hub: &NatsServer, hub_leaf_url: &str) -> Result<Self> {
        Self::leaf_with(site, Some(hub), hub_leaf_url, &[]).await
    }

    /// Starts a site leaf server with some of `leaf.conf`'s variables overridden (benchmarks
    /// compare settings such as `LEAF_SYNC_INTERVAL`); without a hub, of a new authority.
    pub async fn leaf_with(
        site: &str,
        hub: Option<&NatsServer>,
        hub_leaf_url: &str,
        overrides: &[(&str, &str)],
    ) -> Result<Self> {
        let ports = LeafPorts { client: natsconf::free_port()?, http: natsconf::free_port()? };
        let dir = tempfile::Builder::new().prefix(&format!("edge-leaf-{site}-")).tempdir()?;
        let name = Name::new(site)?;
        let authority = match hub {
            Some(hub) => hub.authority.clone(),
            None => Arc::new(Authority::init(&dir.path().join("auth"))?),
        };
        let bundle = authority.site(&name)?;
        std::fs::copy(&bundle.auth_conf, dir.path().join("auth.conf"))?;
        let auth =
            natsconf::LeafAuth { creds: &bundle.leaf_creds, tls_ca: &bundle.ca, store_key: bundle.read_store_key()? };
        let mut env = natsconf::leaf_env(site, &ports, &dir.path().join("store"), hub_leaf_url, &auth);
        for (k, v) in overrides {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        Self::start(dir, natsconf::LEAF_CONF, env, ports.client, None, authority, bundle.agent_creds, Some(name)).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn start(
        dir: tempfile::TempDir,
        conf_text: &str,
        env: Vec<(String, String)>,
        client_port: u16,
        leaf_port: Option<u16>,
        authority: Arc<Authority>,
        creds: PathBuf,
        site: Option<Name>,
    ) -> Result<Self> {
        let conf = dir.path().join("nats.conf");
        std::fs::write(&conf, conf_text)?;
        let mut s = Self { child: None, dir, conf, env, client_port, leaf_port, authority, creds, site };
        s.spawn().await?;
        Ok(s)
    }

    /// The authority this server trusts.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Credentials [`NatsServer::connect`] uses: the hub's `admin`, or the site-manager's at a leaf.
    pub fn creds(&self) -> &Path {
        &self.creds
    }

    /// Credentials of a control-plane user of the hub (`scheduler`, `secrets`, ...).
    pub fn user_creds(&self, name: &str) -> Result<PathBuf> {
        Ok(self.authority.control_user(&Name::new(name)?)?)
    }

    /// The endpoint services connect to: this server's URL with [`NatsServer::creds`], and at
    /// a leaf the site's inbox prefix.
    pub fn endpoint(&self) -> edge_bus::Endpoint {
        edge_bus::Endpoint {
            inbox_prefix: self.site.as_ref().map(edge_types::subject::site_inbox_prefix),
            ..edge_bus::Endpoint::new(self.url(), Some(self.creds.clone()))
        }
    }

    /// A client of this server with [`NatsServer::endpoint`].
    pub async fn connect(&self) -> Result<async_nats::Client> {
        Ok(edge_bus::connect(&self.endpoint(), "test", false).await?)
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("nats.log"))?;
        let child = Command::new(natsconf::nats_server_bin())
            .arg("-c")
            .arg(&self.conf)
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (run scripts/setup.sh to install it)")?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        for _ in 0..200 {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("nats-server exited with {status}; log: {}", self.log());
                }
            }
            if let Ok(client) = self.connect().await {
                let js = async_nats::jetstream::new(client);
                if js.query_account().await.is_ok() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("nats-server did not become ready; log: {}", self.log())
    }

    /// Client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// URL leaves dial (hub only).
    pub fn leaf_url(&self) -> String {
        format!("nats-leaf://{}", self.leaf_addr())
    }

    /// `host:port` of the leafnode listener (hub only).
    pub fn leaf_addr(&self) -> String {
        format!("127.0.0.1:{}", self.leaf_port.expect("only a hub accepts leaves"))
    }

    /// The server's JetStream store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// Stops the server (SIGKILL) and starts it again on the same ports and store.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        self.spawn().await
    }

    /// Kills the server.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

/// A random lower-case suffix, so parallel tests never share names.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &nuid::next().to_string().to_lowercase()[14..])
}

/// Removes every container the site-managers of `site` made on this Docker Engine (their
/// `io.edge.site` label), running or not, then the apps' networks they made; blocking, so it
/// also works in `Drop`.
pub fn remove_site_containers(site: &str) {
    let label = format!("label=io.edge.site={site}");
    for (list, remove) in [(["ps", "-aq"], ["rm", "-f"]), (["network", "ls"], ["network", "rm"])] {
        let out = std::process::Command::new("docker").args(list).args(["-q", "--filter", &label]).output();
        let Ok(out) = out else { continue };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker").args(remove).args(&ids).output();
        }
    }
}
