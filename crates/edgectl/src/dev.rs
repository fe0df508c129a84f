//! `edgectl dev`: the whole stack on this machine as plain processes, with its state, logs and
//! JetStream stores under one directory (`.edge` by default). No compose needed.
//!
//! Layout: `<dir>/state.json` (URLs and pids), `<dir>/logs/*.log`, `<dir>/hub/`, `<dir>/<site>/`.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use edge_auth::Authority;
use edge_bus::api::request;
use edge_bus::natsconf::{self, HubPorts, LeafPorts};
use edge_types::api::{Empty, SiteListReply};
use edge_types::subject::ApiOp;
use edge_types::Name;
use rustix::process::{kill_process, test_kill_process, Pid, Signal};
use serde::{Deserialize, Serialize};

use crate::cli::{DevCommand, Global};
use crate::output::{print, table};

/// Central services started by `dev up`, besides the hub.
const SERVICES: [&str; 4] = ["scheduler", "secrets", "registry-sync", "telemetry"];

/// What `dev up` started, saved in `<dir>/state.json`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct State {
    pub hub_url: String,
    pub sites: Vec<DevSite>,
    pub processes: Vec<Proc>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DevSite {
    pub name: String,
    pub leaf_url: String,
    pub labels: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Proc {
    pub name: String,
    pub pid: i32,
    pub log: PathBuf,
}

impl Proc {
    /// Whether the process still runs; a zombie waiting to be reaped counts as gone.
    fn alive(&self) -> bool {
        let exists = Pid::from_raw(self.pid).is_some_and(|p| test_kill_process(p).is_ok());
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        exists && !matches!(state, Some('Z') | Some('X'))
    }
}

impl State {
    pub fn load(dir: &Path) -> Result<State> {
        let path = dir.join("state.json");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("no dev stack state at {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a dev stack state file", path.display()))
    }
    fn save(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join("state.json"), serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }
}

pub async fn run(cmd: DevCommand, global: &Global) -> Result<()> {
    match cmd {
        DevCommand::Up { sites } => up(&global.dev_dir, sites).await,
        DevCommand::Status => status(global).await,
        DevCommand::Down => down(&global.dev_dir).await,
    }
}

/// Labels of dev site `i` (1-based): sites 1, 2, 4, 5, ... belong to customer acme, every
/// third to globex; regions alternate eu and us.
fn site_labels(i: u32) -> String {
    let customer = if i.is_multiple_of(3) { "globex" } else { "acme" };
    let region = if i % 2 == 1 { "eu" } else { "us" };
    format!("customer={customer},region={region}")
}

fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("edgectl has no parent directory")?.join(name);
    if !path.exists() {
        bail!("{} is missing: build the workspace first (cargo build --workspace)", path.display());
    }
    Ok(path)
}

/// Starts `program` detached (its own process group, so it outlives edgectl and a Ctrl-C in
/// this terminal), with output to `<dir>/logs/<name>.log`.
fn spawn(dir: &Path, name: &str, program: &Path, args: &[&str], env: &[(String, String)]) -> Result<Proc> {
    let log = dir.join("logs").join(format!("{name}.log"));
    let out = std::fs::File::create(&log)?;
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    Ok(Proc { name: name.into(), pid: child.id() as i32, log })
}

async fn wait_nats(url: &str, creds: &Path, log: &Path) -> Result<()> {
    let start = Instant::now();
    let endpoint = edge_bus::Endpoint::new(url, Some(creds.to_path_buf()));
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(client) = edge_bus::connect(&endpoint, "edgectl", false).await {
            if async_nats::jetstream::new(client).query_account().await.is_ok() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("nats-server at {url} did not start; see {}", log.display())
}

fn port_or_free(preferred: u16) -> Result<u16> {
    if std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        return Ok(preferred);
    }
    Ok(natsconf::free_port()?)
}

/// The workload images the examples use, put into the image store when Docker has them.
const DEV_IMAGES: [&str; 2] = ["edge/busybox:v1", "edge/busybox:v2"];

/// Pushes [`DEV_IMAGES`] into the dev stack's image store (registry-sync may still be starting).
async fn seed_images(client: &async_nats::Client) {
    let Ok(docker) = bollard::Docker::connect_with_local_defaults() else { return };
    for image in DEV_IMAGES {
        if docker.inspect_image(image).await.is_err() {
            println!("image      {image} is not in Docker; push it when it is (edgectl image push {image})");
            continue;
        }
        let start = Instant::now();
        loop {
            match crate::image::push(client, &docker, image).await {
                Ok(p) => {
                    println!("image      {image} in the store ({})", &p.record.digest[..19]);
                    break;
                }
                Err(e) if start.elapsed() > Duration::from_secs(30) => {
                    println!("image      {image} not pushed: {e:#}");
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

async fn up(dir: &Path, n: u32) -> Result<()> {
    if let Ok(state) = State::load(dir) {
        if state.processes.iter().any(Proc::alive) {
            bail!("a dev stack is already running in {}; stop it with `edgectl dev down`", dir.display());
        }
        cleanup(dir, &state).await?;
    }
    let nats = natsconf::nats_server_bin();
    std::fs::create_dir_all(dir.join("logs"))?;
    let dir = dir.canonicalize()?;
    // The stack's own authority: every server trusts it, every process presents a credential.
    let authority = Authority::init(&dir.join("auth"))?;
    let admin = authority.control_user(&Name::new("admin")?)?;

    let ports = HubPorts { client: port_or_free(4222)?, leaf: port_or_free(7422)?, http: port_or_free(8222)? };
    std::fs::create_dir_all(dir.join("hub"))?;
    let conf = dir.join("hub/hub.conf");
    std::fs::write(&conf, natsconf::HUB_CONF)?;
    std::fs::copy(authority.hub_auth_conf(), dir.join("hub/auth.conf"))?;
    let hub_url = format!("nats://127.0.0.1:{}", ports.client);
    let mut state = State { hub_url: hub_url.clone(), sites: Vec::new(), processes: Vec::new() };
    let tls = authority.hub_tls(&["127.0.0.1".into(), "localhost".into()])?;
    let env = natsconf::hub_env("hub", &ports, &dir.join("hub/store"), (&tls.0, &tls.1));
    let hub = spawn(&dir, "hub", &nats, &["-c", &conf.display().to_string()], &env)?;
    state.processes.push(hub.clone());
    state.save(&dir)?;
    wait_nats(&hub_url, &admin, &hub.log).await?;
    println!("hub        {hub_url} (leaf port {}, monitoring http://127.0.0.1:{})", ports.leaf, ports.http);

    for svc in SERVICES {
        let prefix = svc.to_uppercase().replace('-', "_");
        let creds = authority.control_user(&Name::new(svc)?)?;
        let mut env = vec![
            (format!("{prefix}_NATS_URL"), hub_url.clone()),
            (format!("{prefix}_NATS_CREDS"), creds.display().to_string()),
        ];
        if svc == "secrets" {
            // A development master key, created on first start next to the hub's store.
            env.push(("SECRETS_MASTER_KEY_FILE".into(), dir.join("hub/master.key").display().to_string()));
            env.push(("SECRETS_CREATE_MASTER_KEY".into(), "true".into()));
        }
        if svc == "scheduler" {
            // Renews the sites' leaf-link credentials.
            env.push(("SCHEDULER_LEAF_SIGNER".into(), authority.control_signer_seed().display().to_string()));
            // Gives hosts invited to join with their own key (`host invite`) their credential.
            env.push(("SCHEDULER_HOST_SIGNER".into(), authority.host_signer_seed()?.display().to_string()));
        }
        if svc == "telemetry" {
            let listen = format!("127.0.0.1:{}", natsconf::free_port()?);
            println!("metrics    http://{listen}/metrics");
            env.push(("TELEMETRY_LISTEN".into(), listen));
        }
        state.processes.push(spawn(&dir, svc, &bin(svc)?, &[], &env)?);
        state.save(&dir)?;
    }

    let hub_leaf = format!("nats-leaf://127.0.0.1:{}", ports.leaf);
    for i in 1..=n {
        let site = format!("site-{i}");
        let leaf_ports = LeafPorts { client: natsconf::free_port()?, http: natsconf::free_port()? };
        std::fs::create_dir_all(dir.join(&site))?;
        let conf = dir.join(&site).join("leaf.conf");
        std::fs::write(&conf, natsconf::LEAF_CONF)?;
        let bundle = authority.site(&Name::new(&site)?)?;
        std::fs::copy(&bundle.auth_conf, dir.join(&site).join("auth.conf"))?;
        let store = dir.join(&site).join("store");
        let auth =
            natsconf::LeafAuth { creds: &bundle.leaf_creds, tls_ca: &bundle.ca, store_key: bundle.read_store_key()? };
        let env = natsconf::leaf_env(&site, &leaf_ports, &store, &hub_leaf, &auth);
        let leaf = spawn(&dir, &format!("{site}-leaf"), &nats, &["-c", &conf.display().to_string()], &env)?;
        state.processes.push(leaf.clone());
        let leaf_url = format!("nats://127.0.0.1:{}", leaf_ports.client);
        state.sites.push(DevSite { name: site.clone(), leaf_url: leaf_url.clone(), labels: site_labels(i) });
        state.save(&dir)?;
        wait_nats(&leaf_url, &bundle.agent_creds, &leaf.log).await?;
        let env = [
            ("SITE_MANAGER_SITE".to_string(), site.clone()),
            ("SITE_MANAGER_NATS_URL".to_string(), leaf_url.clone()),
            ("SITE_MANAGER_NATS_CREDS".to_string(), bundle.agent_creds.display().to_string()),
            ("SITE_MANAGER_HOST".to_string(), "host-1".to_string()),
            ("SITE_MANAGER_LABELS".to_string(), site_labels(i)),
            ("SITE_MANAGER_KEY_DIR".to_string(), dir.join(&site).join("keys").display().to_string()),
            ("SITE_MANAGER_LEAF_CREDS".to_string(), bundle.leaf_creds.display().to_string()),
            ("SITE_MANAGER_HUB_URL".to_string(), hub_url.clone()),
            ("SITE_MANAGER_HUB_CA".to_string(), bundle.ca.display().to_string()),
            ("SITE_MANAGER_ENROL_CREDS".to_string(), bundle.enrol_creds.display().to_string()),
            // Gives the leaf server the site account's host revocations.
            ("SITE_MANAGER_SYS_CREDS".to_string(), bundle.sys_creds.display().to_string()),
            // The dev sites share this machine's Docker Engine: no site removes images.
            ("SITE_MANAGER_IMAGE_GC_SECS".to_string(), "0".to_string()),
        ];
        state.processes.push(spawn(&dir, &format!("{site}-manager"), &bin("site-manager")?, &[], &env)?);
        state.save(&dir)?;
        println!("{site:<10} {leaf_url} labels {}", site_labels(i));
    }

    // Ready when every site has called home.
    let client = edge_bus::connect(&edge_bus::Endpoint::new(&hub_url, Some(admin)), "edgectl", false).await?;
    let start = Instant::now();
    loop {
        let listed: Result<SiteListReply, _> =
            request(&client, ApiOp::SiteList, &Empty {}, Duration::from_secs(5)).await;
        if listed.is_ok_and(|l| l.sites.len() == n as usize) {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("sites did not register within 60 s; see the logs in {}", dir.join("logs").display());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    seed_images(&client).await;
    println!("dev stack up: {n} sites registered; state and logs in {}", dir.display());
    println!("stop it with: edgectl dev down");
    Ok(())
}

async fn status(global: &Global) -> Result<()> {
    let state = State::load(&global.dev_dir).context("no dev stack here; start one with `edgectl dev up`")?;
    let rows: Vec<Vec<String>> = state
        .processes
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.pid.to_string(),
                if p.alive() { "running".into() } else { "stopped".into() },
                p.log.display().to_string(),
            ]
        })
        .collect();
    match global.output {
        crate::cli::Format::Json => print(global.output, &state, &[], vec![]),
        crate::cli::Format::Table => {
            println!("hub {}", state.hub_url);
            print!("{}", table(&["PROCESS", "PID", "STATE", "LOG"], &rows));
        }
    }
    Ok(())
}

/// Stops every process (services first, the hub last), removes the dev sites' containers and
/// the state directory.
async fn down(dir: &Path) -> Result<()> {
    let state = State::load(dir).context("no dev stack here; nothing to stop")?;
    cleanup(dir, &state).await?;
    println!("dev stack stopped; containers and {} removed", dir.display());
    Ok(())
}

async fn cleanup(dir: &Path, state: &State) -> Result<()> {
    // Services and site-managers first (they drain through the servers), then the leaves,
    // then the hub; each group stops concurrently.
    let is_server = |p: &Proc| p.name.ends_with("leaf") || p.name == "hub";
    let groups: [Vec<&Proc>; 3] = [
        state.processes.iter().filter(|p| !is_server(p)).collect(),
        state.processes.iter().filter(|p| p.name.ends_with("leaf")).collect(),
        state.processes.iter().filter(|p| p.name == "hub").collect(),
    ];
    for group in groups {
        futures::future::join_all(group.into_iter().map(stop)).await;
    }
    let docker = bollard::Docker::connect_with_local_defaults()?.negotiate_version().await?;
    for site in &state.sites {
        let filters = HashMap::from([("label".to_string(), vec![format!("io.edge.site={}", site.name)])]);
        let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        for c in docker.list_containers(Some(opts)).await? {
            if let Some(id) = c.id {
                docker
                    .remove_container(&id, Some(RemoveContainerOptionsBuilder::default().force(true).build()))
                    .await?;
            }
        }
        // The apps' networks the site's hosts made.
        let opts = bollard::query_parameters::ListNetworksOptionsBuilder::default().filters(&filters).build();
        for n in docker.list_networks(Some(opts)).await? {
            if let Some(name) = n.name {
                docker.remove_network(&name).await?;
            }
        }
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    Ok(())
}

/// SIGTERM, then SIGKILL if the process is still there after 10 s.
async fn stop(p: &Proc) {
    let Some(pid) = Pid::from_raw(p.pid) else {
        return;
    };
    if kill_process(pid, Signal::TERM).is_err() {
        return;
    }
    let start = Instant::now();
    while p.alive() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if p.alive() {
        let _ = kill_process(pid, Signal::KILL);
    }
}
