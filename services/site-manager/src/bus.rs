//! The site's bus for applications (`bus` in an app's spec). For each app that asks:
//! - its topics' streams at the site (`TOPIC_<tenant>_<app>_<topic>`, limits from the spec),
//!   which the hub sources like the site's own events, so they are buffered through WAN cuts;
//! - a credential for its containers, signed here with the site's apps key (also offline),
//!   that may publish to the app's topics only, written beside the container's secret files;
//! - a way to the leaf server from the app's network, which has no route out by default: a
//!   relay listening on the network's gateway address (the host's side of the bridge), so the
//!   leaf server itself keeps listening on loopback only; or, for a site-manager that runs in a
//!   container (`SITE_MANAGER_APP_BUS_JOIN`), on its own address in the app's network, which
//!   it joins as `edge-bus`.
//!
//! The container finds it all in its environment: `EDGE_BUS_URL`, `EDGE_BUS_CREDS` (a file),
//! `EDGE_BUS_INBOX_PREFIX`, `EDGE_BUS_SUBJECT_PREFIX` (append a `to_hub` topic),
//! `EDGE_BUS_STREAM_PREFIX` (append a `to_sites` topic: its stream here) and `EDGE_SITE`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use async_nats::jetstream;
use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::InspectContainerOptions;
use bollard::Docker;
use edge_auth::apps::AppIssuer;
use edge_types::app::{Direction, TopicSpec};
use edge_types::desired::DesiredApp;
use edge_types::site::{BufferState, TopicFill};
use edge_types::{subject, Name};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::reconcile::{Wanted, WantedSet};

/// Where a container finds its bus credential (the directory of its secret files).
pub const CREDS_FILE: &str = "edge-bus.creds";
/// The name apps find the bus by on their network when the site-manager joins it.
const BUS_ALIAS: &str = "edge-bus";

/// Why an app's container cannot have its bus connection yet.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("network {0} has no IPv4 gateway")]
    NoGateway(String),
    #[error("this site-manager has no address on network {0} after joining it")]
    NoAddress(String),
    #[error("cannot listen for the app bus on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot issue the app's credential: {0}")]
    Credential(#[from] edge_auth::AuthError),
}

/// The bus of the apps at this host.
pub struct AppBus {
    site: Name,
    issuer: AppIssuer,
    js: jetstream::Context,
    docker: Docker,
    /// The leaf server's client address (`host:port`).
    leaf: String,
    /// The port the relays listen on, at each app network's gateway.
    port: u16,
    /// Per app network: the address its containers dial and what stops its relay.
    relays: Mutex<HashMap<String, (String, CancellationToken)>>,
    /// When the site-manager runs in a container of the same engine: its id. It then joins
    /// each app network (found there as `edge-bus`) instead of listening on the gateway.
    join: Option<String>,
    /// Topic streams as last ensured, by stream name.
    ensured: Mutex<HashMap<String, TopicSpec>>,
    /// The site's topics at least half full, fullest first, as last measured (heartbeats
    /// carry them; the hub raises `topic_nearly_full`).
    fills: Mutex<Vec<TopicFill>>,
    shutdown: CancellationToken,
}

impl AppBus {
    /// Makes sure the topic streams of every wanted app with a bus exist with their spec's
    /// limits. Returns the replicas that must wait (their app's streams could not be made), with why.
    pub async fn ensure_topics(&self, wanted: &WantedSet) -> BTreeMap<(Name, Name, u32), String> {
        let mut failed: BTreeMap<Name, String> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for w in wanted.values() {
            let Some(bus) = &w.bus else { continue };
            if !seen.insert(w.app.clone()) {
                continue;
            }
            for t in &bus.topics {
                let stream = edge_bus::topology::topic_stream(&w.tenant, &w.app, &t.name);
                if self.ensured.lock().expect("ensured lock").get(&stream) == Some(t) {
                    continue;
                }
                match edge_bus::topology::ensure_site_topic(&self.js, &self.site, &w.tenant, &w.app, t).await {
                    Ok(()) => {
                        tracing::info!(app = %w.app, topic = %t.name, stream, "topic stream ready");
                        self.ensured.lock().expect("ensured lock").insert(stream, t.clone());
                    }
                    Err(e) => {
                        tracing::warn!(app = %w.app, topic = %t.name, error = %e, "cannot make the topic's stream");
                        failed.insert(w.app.clone(), format!("topic {} has no stream at the site yet: {e}", t.name));
                    }
                }
            }
        }
        wanted.iter().filter_map(|(k, w)| Some((k.clone(), failed.get(&w.app)?.clone()))).collect()
    }

    /// Measures the fill of every topic of the site's apps (all of them, so that any host's
    /// heartbeat tells the same).
    pub async fn measure(&self, desired: &BTreeMap<Name, DesiredApp>) {
        let mut fills = Vec::new();
        for spec in desired.values().filter_map(|d| d.spec.as_ref()) {
            // `to_sites` topics drop their oldest when full: nothing is refused there.
            for t in spec.bus.topics.iter().filter(|t| t.direction == Direction::ToHub) {
                let stream = edge_bus::topology::topic_stream(&spec.tenant, &spec.name, &t.name);
                let Ok(mut s) = self.js.get_stream(&stream).await else { continue };
                let Ok(info) = s.info().await else { continue };
                let state = BufferState {
                    messages: info.state.messages,
                    bytes: info.state.bytes,
                    max_messages: info.config.max_messages,
                    max_bytes: info.config.max_bytes,
                    rejected_total: 0,
                    full: false,
                };
                let full = state.fill() >= 1.0
                    || (info.config.max_bytes > 0
                        && state.bytes + t.max_msg_size as u64 > info.config.max_bytes as u64);
                if state.fill() >= 0.5 {
                    let topic = t.name.clone();
                    let state = BufferState { full, ..state };
                    fills.push(TopicFill { tenant: spec.tenant.clone(), app: spec.name.clone(), topic, state });
                }
            }
        }
        fills.sort_by(|a, b| b.state.fill().total_cmp(&a.state.fill()));
        fills.truncate(64);
        *self.fills.lock().expect("fills lock") = fills;
    }

    /// The topics at least half full, as last measured.
    pub fn fills(&self) -> Vec<TopicFill> {
        self.fills.lock().expect("fills lock").clone()
    }

    /// What a replica of an app with a bus gets: its environment and its credential's text.
    /// The relay on its network (`network`, the replica's primary) is started if it is not.
    pub async fn connection(&self, w: &Wanted, network: &str) -> Result<(Vec<String>, String), BusError> {
        let bus = w.bus.as_ref().expect("only apps with a bus have a connection");
        let addr = self.relay(network).await?;
        let topics: Vec<Name> = bus.topics.iter().map(|t| t.name.clone()).collect();
        let (up, down) = (bus.topics_to(Direction::ToHub), bus.topics_to(Direction::ToSites));
        let creds = self.issuer.issue(&self.site, &w.tenant, &w.app, &up, &down)?;
        let env = vec![
            format!("EDGE_BUS_URL=nats://{addr}"),
            format!("EDGE_BUS_CREDS={}/{CREDS_FILE}", crate::runtime::SECRETS_MOUNT),
            format!("EDGE_BUS_INBOX_PREFIX={}", subject::app_inbox_prefix(&w.tenant, &w.app)),
            format!("EDGE_BUS_SUBJECT_PREFIX={}", subject::topic_prefix(&w.tenant, &w.app)),
            format!("EDGE_BUS_TOPICS={}", topics.iter().map(Name::as_str).collect::<Vec<_>>().join(",")),
            // Append a `to_sites` topic's name for its stream at the site, to read it from.
            format!("EDGE_BUS_STREAM_PREFIX={}", edge_bus::topology::topic_stream_prefix(&w.tenant, &w.app)),
            format!("EDGE_SITE={}", self.site),
        ];
        Ok((env, creds.render()))
    }

    /// Keeps a relay on exactly the networks in `networks` (those of running replicas of apps
    /// with a bus): started after a restart of the site-manager, stopped when no app needs it.
    pub async fn keep_relays(&self, networks: &BTreeSet<String>) {
        let mut stale = Vec::new();
        self.relays.lock().expect("relays lock").retain(|n, (addr, stop)| {
            let keep = networks.contains(n);
            if !keep {
                stop.cancel();
                tracing::info!(network = %n, %addr, "app bus relay stopped");
                stale.push(n.clone());
            }
            keep
        });
        // Joined networks are left, so that Docker can remove them once no app uses them.
        if let Some(me) = &self.join {
            for n in &stale {
                let request = NetworkDisconnectRequest { container: me.clone(), force: Some(true) };
                if let Err(e) = self.docker.disconnect_network(n, request).await {
                    tracing::debug!(network = %n, error = %e, "cannot leave the app network");
                }
            }
        }
        for n in networks {
            if let Err(e) = self.relay(n).await {
                tracing::warn!(network = %n, error = %e, "cannot relay the app bus on the network");
            }
        }
    }

    /// The address `network`'s containers dial for the bus; its relay is started if it is not
    /// running.
    async fn relay(&self, network: &str) -> Result<String, BusError> {
        if let Some((dial, _)) = self.relays.lock().expect("relays lock").get(network) {
            return Ok(dial.clone());
        }
        let (listen, dial) = match &self.join {
            None => {
                let at = SocketAddr::from((self.gateway(network).await?, self.port));
                (at, at.to_string())
            }
            Some(me) => {
                let at = SocketAddr::from((self.join_network(me, network).await?, self.port));
                (at, format!("{BUS_ALIAS}:{}", self.port))
            }
        };
        let listener = TcpListener::bind(listen).await.map_err(|e| BusError::Listen(listen, e))?;
        let stop = self.shutdown.child_token();
        let mut relays = self.relays.lock().expect("relays lock");
        if let Some((dial, _)) = relays.get(network) {
            return Ok(dial.clone()); // another pass started one meanwhile; this listener closes
        }
        relays.insert(network.to_string(), (dial.clone(), stop.clone()));
        tokio::spawn(relay(listener, self.leaf.clone(), stop));
        tracing::info!(network, %listen, %dial, "app bus relay listening");
        Ok(dial)
    }

    /// Connects this site-manager's own container to `network` as `edge-bus`; its address there.
    async fn join_network(&self, me: &str, network: &str) -> Result<Ipv4Addr, BusError> {
        let request = NetworkConnectRequest {
            container: me.to_string(),
            endpoint_config: Some(EndpointSettings { aliases: Some(vec![BUS_ALIAS.into()]), ..Default::default() }),
        };
        match self.docker.connect_network(network, request).await {
            Ok(()) => {}
            Err(e) if e.to_string().contains("already exists") => {}
            Err(e) => return Err(e.into()),
        }
        let inspected = self.docker.inspect_container(me, None::<InspectContainerOptions>).await?;
        inspected
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get(network)?.ip_address.clone())
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| BusError::NoAddress(network.to_string()))
    }

    /// The network's gateway: as its IPAM states it, else the first address of its subnet
    /// (what Docker gives the bridge when a subnet is set without a gateway).
    async fn gateway(&self, network: &str) -> Result<Ipv4Addr, BusError> {
        let n = self.docker.inspect_network(network, None).await?;
        let configs = n.ipam.and_then(|i| i.config).unwrap_or_default();
        let stated = configs.iter().filter_map(|c| c.gateway.as_deref()?.parse::<Ipv4Addr>().ok()).next();
        let first = || {
            configs.iter().find_map(|c| {
                let (net, _) = c.subnet.as_deref()?.split_once('/')?;
                let [a, b, c, d] = net.parse::<Ipv4Addr>().ok()?.octets();
                Some(Ipv4Addr::new(a, b, c, d | 1))
            })
        };
        stated.or_else(first).ok_or_else(|| BusError::NoGateway(network.to_string()))
    }
}

/// The apps' bus of this host, if it can issue their credentials: it needs the site's apps key
/// and its own credential (whose account the apps' are issued in).
pub fn from_config(
    config: &crate::Config,
    js: &jetstream::Context,
    docker: &Docker,
    shutdown: &CancellationToken,
) -> Option<AppBus> {
    let (Some(signer), Some(creds)) = (config.apps_signer(), config.nats_creds.as_ref()) else {
        tracing::info!("no apps key (SITE_MANAGER_APPS_SIGNER): apps that ask for the bus cannot run on this host");
        return None;
    };
    let issuer =
        edge_auth::apps::account_of_creds(creds).and_then(|account| AppIssuer::from_seed_file(&signer, account));
    match issuer {
        Ok(issuer) => Some(AppBus {
            site: config.site.clone(),
            issuer,
            js: js.clone(),
            docker: docker.clone(),
            leaf: leaf_addr(&config.nats_url),
            port: config.app_bus_port,
            relays: Mutex::default(),
            join: config.app_bus_join.then(own_container_id).flatten(),
            ensured: Mutex::default(),
            fills: Mutex::default(),
            shutdown: shutdown.clone(),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot use the apps key: apps that ask for the bus cannot run on this host");
            None
        }
    }
}

/// This process's container id, as Docker gives it for the container's host name.
fn own_container_id() -> Option<String> {
    let id = std::fs::read_to_string("/etc/hostname").ok()?.trim().to_string();
    if id.is_empty() {
        tracing::warn!("SITE_MANAGER_APP_BUS_JOIN is set but this container's id is unknown (/etc/hostname)");
        return None;
    }
    Some(id)
}

/// Accepts connections on `listener` and joins each to the leaf server at `leaf`, until `stop`.
async fn relay(listener: TcpListener, leaf: String, stop: CancellationToken) {
    loop {
        let (mut inbound, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "app bus relay cannot accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let leaf = leaf.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(&leaf).await else { return };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            }
        });
    }
}

/// The `host:port` of the first server of a NATS URL list (`nats://127.0.0.1:4222,...`).
pub fn leaf_addr(url: &str) -> String {
    let first = url.split(',').next().unwrap_or(url).trim();
    let rest = first.split_once("://").map_or(first, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    if rest.contains(':') {
        rest.to_string()
    } else {
        format!("{rest}:4222")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaf_address_is_the_first_server_of_the_url() {
        assert_eq!(leaf_addr("nats://127.0.0.1:4333"), "127.0.0.1:4333");
        assert_eq!(leaf_addr("nats://leaf,nats://other:1"), "leaf:4222");
        assert_eq!(leaf_addr("tls://u:p@leaf:7"), "leaf:7");
    }
}
