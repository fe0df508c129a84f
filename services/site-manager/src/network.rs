//! Each application's own network at this host. An app's containers share a Docker bridge
//! network of their own, where every service is found by its name (Docker's DNS, the service
//! name as alias); other apps' containers are on other bridges, which Docker keeps apart.
//!
//! - Outbound denied (the default): the app's network is `internal`, with no route out of it.
//!   A service that publishes ports also joins the app's ingress network, a bridge whose
//!   traffic is not masqueraded, so its ports answer from outside while its own connections
//!   still find no way out (replies to a private source address do not come back, and Docker
//!   drops traffic between bridges).
//! - Outbound allowed: the app's network is a plain bridge (`.out`), ports published on it.
//!
//! Names: `edge.<site>.<host>.<app>`, `edge.<site>.<host>.<app>.out` and `...in` (dots cannot
//! occur in site, host or app names, so no two apps' names meet). Subnets are /24s of the
//! operator's pool (`SITE_MANAGER_NETWORK_POOL`, a /16), each network's first choice a hash of
//! its name; Docker's own default pools hold only about thirty networks. Networks are labelled
//! with site, host and app, and removed when no container of ours refers to them any more.
//! Membership is reconciled on running containers (connect, then disconnect), so a change of
//! the app's network, or a container made before networks existed, never restarts a container.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use bollard::models::NetworkDisconnectRequest;
use bollard::models::{EndpointSettings, Ipam, IpamConfig, NetworkConnectRequest, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;
use bollard::Docker;
use edge_types::Name;

use crate::labels;
use crate::reconcile::Wanted;
use crate::runtime::RuntimeError;

/// Docker's option that turns masquerading (SNAT) of a bridge's outbound traffic off.
const NO_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
/// Label of our networks: `app`, `app-outbound` or `ingress`.
const KIND: &str = "io.edge.network";

/// What a network is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The app's network; `internal` unless the app allows outbound connections.
    App { outbound: bool },
    /// Where the app's services that publish ports answer, without a way out.
    Ingress,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::App { outbound: false } => "app",
            Kind::App { outbound: true } => "app-outbound",
            Kind::Ingress => "ingress",
        }
    }
}

/// One network a container belongs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Net {
    pub name: String,
    /// The app the network is of.
    pub app: Name,
    pub kind: Kind,
    /// Whether the container is found there by its service name (in its own app's networks,
    /// not in a peer's, where it would shadow the peer's services).
    pub named: bool,
}

/// The name of an app's own network at a host.
fn app_network(site: &Name, host: &Name, app: &Name, outbound: bool) -> String {
    let base = format!("edge.{site}.{host}.{app}");
    if outbound {
        format!("{base}.out")
    } else {
        base
    }
}

/// The /16 that app networks take their /24 subnets from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool([u8; 2]);

impl Default for Pool {
    fn default() -> Self {
        Pool([10, 213])
    }
}

impl std::str::FromStr for Pool {
    type Err = String;

    /// `a.b.0.0/16`.
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("{s:?} is not an IPv4 /16 such as 10.213.0.0/16");
        let (addr, bits) = s.trim().split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let [a, b, c, d] = addr.octets();
        if bits != "16" || c != 0 || d != 0 {
            return Err(err());
        }
        Ok(Pool([a, b]))
    }
}

impl Pool {
    /// The `i`th /24 of the pool.
    fn subnet(self, i: u8) -> String {
        format!("{}.{}.{i}.0/24", self.0[0], self.0[1])
    }
}

/// The networks a replica belongs on at this host, its primary network first.
pub fn networks_of(site: &Name, host: &Name, w: &Wanted) -> Vec<Net> {
    let own = app_network(site, host, &w.app, w.outbound);
    let mut out =
        vec![Net { name: own.clone(), app: w.app.clone(), kind: Kind::App { outbound: w.outbound }, named: true }];
    if !w.outbound && !w.service.ports.is_empty() {
        out.push(Net { name: format!("{own}.in"), app: w.app.clone(), kind: Kind::Ingress, named: true });
    }
    for p in &w.peers {
        let name = app_network(site, host, &p.app, p.outbound);
        out.push(Net { name, app: p.app.clone(), kind: Kind::App { outbound: p.outbound }, named: false });
    }
    out
}

/// What to change of a container's networks: networks to join, then networks to leave.
pub fn membership(wanted: &[Net], current: &BTreeSet<String>) -> (Vec<Net>, Vec<String>) {
    let join = wanted.iter().filter(|n| !current.contains(&n.name)).cloned().collect();
    let names: BTreeSet<&str> = wanted.iter().map(|n| n.name.as_str()).collect();
    let leave = current.iter().filter(|c| !names.contains(c.as_str())).cloned().collect();
    (join, leave)
}

/// FNV-1a of the name: where a network's search for a free subnet starts.
fn first_choice(name: &str) -> u8 {
    (edge_types::subject::fnv1a(name) % 256) as u8
}

fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Docker networks of one site and host.
#[derive(Clone)]
pub struct Networks {
    docker: Docker,
    site: Name,
    host: Name,
    pool: Pool,
}

impl Networks {
    pub fn new(docker: Docker, site: Name, host: Name, pool: Pool) -> Self {
        Self { docker, site, host, pool }
    }

    /// Makes `net` exist (a no-op when it does), once: Docker does not refuse a second network
    /// of a name, so two passes (or two site-managers sharing an engine) creating it at once
    /// made two, and every container referring to the name then failed ("ambiguous") for good.
    pub async fn ensure(&self, net: &Net) -> Result<(), RuntimeError> {
        match self.docker.inspect_network(&net.name, None).await {
            Ok(_) => return Ok(()),
            Err(e) if e.to_string().contains("ambiguous") => return self.keep_one(&net.name).await,
            Err(_) => {}
        }
        let labels = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::SITE.to_string(), self.site.to_string()),
            (labels::HOST.to_string(), self.host.to_string()),
            (labels::APP.to_string(), net.app.to_string()),
            (KIND.to_string(), net.kind.label().to_string()),
        ]);
        let options = match net.kind {
            Kind::Ingress => Some(HashMap::from([(NO_MASQUERADE.to_string(), "false".to_string())])),
            Kind::App { .. } => None,
        };
        let start = first_choice(&net.name);
        let mut last = None;
        for step in 0..=255u8 {
            let subnet = self.pool.subnet(start.wrapping_add(step));
            let request = NetworkCreateRequest {
                name: net.name.clone(),
                driver: Some("bridge".into()),
                internal: Some(net.kind == Kind::App { outbound: false }),
                ipam: Some(Ipam {
                    config: Some(vec![IpamConfig { subnet: Some(subnet), ..Default::default() }]),
                    ..Default::default()
                }),
                options: options.clone(),
                labels: Some(labels.clone()),
                ..Default::default()
            };
            match self.docker.create_network(request).await {
                Ok(_) => {
                    tracing::info!(network = %net.name, kind = net.kind.label(), "network created");
                    return self.keep_one(&net.name).await;
                }
                // Made meanwhile by another pass or host.
                Err(e) if status_of(&e) == Some(409) => return Ok(()),
                // The subnet is taken (by another network here or a route of the host): next.
                Err(e) if e.to_string().contains("overlap") => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map(RuntimeError::from).unwrap_or_else(|| RuntimeError::NetworkPoolFull(format!("{:?}", self.pool))))
    }

    /// Removes all but one of the networks called `name`: the one containers use, else the one
    /// with the lowest id, so that two processes doing this at once keep the same one.
    async fn keep_one(&self, name: &str) -> Result<(), RuntimeError> {
        let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let opts = ListNetworksOptionsBuilder::default().filters(&filters).build();
        // The name filter matches parts of names too.
        let mut ids: Vec<String> = self
            .docker
            .list_networks(Some(opts))
            .await?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| n.id)
            .collect();
        if ids.len() < 2 {
            return Ok(());
        }
        ids.sort();
        let mut used = Vec::new();
        for id in &ids {
            let inspected = self.docker.inspect_network(id, None).await?;
            used.push(inspected.containers.is_some_and(|c| !c.is_empty()));
        }
        let keep = used.iter().position(|u| *u).unwrap_or(0);
        for (i, id) in ids.iter().enumerate().filter(|(i, _)| *i != keep) {
            match self.docker.remove_network(id).await {
                Ok(()) => tracing::warn!(network = %name, id = %id, "removed a second network of the same name"),
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => {
                    tracing::warn!(network = %name, id = %id, in_use = used[i], error = %e, "a second network of the same name stays")
                }
            }
        }
        Ok(())
    }

    /// Connects a container to `net` (which must exist, see [`ensure`](Self::ensure)), with its
    /// service name as DNS alias where it is `named`.
    pub async fn join(&self, container: &str, net: &Net, service: &Name) -> Result<(), RuntimeError> {
        let aliases = net.named.then(|| vec![service.to_string()]);
        let request = NetworkConnectRequest {
            container: container.to_string(),
            endpoint_config: Some(EndpointSettings { aliases, ..Default::default() }),
        };
        match self.docker.connect_network(&net.name, request).await {
            Ok(()) => Ok(()),
            // Already connected (a race with another pass).
            Err(e) if status_of(&e) == Some(403) && e.to_string().contains("already exists") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Disconnects a container from a network; one gone already is not an error.
    pub async fn leave(&self, container: &str, network: &str) -> Result<(), RuntimeError> {
        let request = NetworkDisconnectRequest { container: container.to_string(), force: Some(true) };
        match self.docker.disconnect_network(network, request).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes this site and host's networks that are not in `keep` (Docker refuses to remove
    /// one that a container still uses; that is left for a later pass).
    pub async fn remove_unused(&self, keep: &BTreeSet<String>) -> Result<(), RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}={}", labels::SITE, self.site),
                format!("{}={}", labels::HOST, self.host),
                KIND.to_string(),
            ],
        )]);
        let opts = ListNetworksOptionsBuilder::default().filters(&filters).build();
        for n in self.docker.list_networks(Some(opts)).await? {
            let (Some(name), Some(id)) = (n.name, n.id) else { continue };
            if keep.contains(&name) {
                continue;
            }
            // By id: a name may (briefly) be two networks.
            match self.docker.remove_network(&id).await {
                Ok(()) => tracing::info!(network = %name, "network removed"),
                Err(e) => tracing::debug!(network = %name, error = %e, "network not removed yet"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_types::app::ServiceSpec;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn wanted(outbound: bool, ports: bool) -> Wanted {
        let mut svc: ServiceSpec =
            serde_json::from_value(serde_json::json!({"name": "web", "image": "edge/busybox:v1"})).unwrap();
        if ports {
            svc.ports = serde_json::from_value(serde_json::json!([{"container": 8080}])).unwrap();
        }
        Wanted {
            app: n("shop"),
            tenant: n("default"),
            version: "1".into(),
            generation: 1,
            service: svc,
            replica: 0,
            digest: "d".into(),
            image: None,
            outbound,
            peers: Vec::new(),
            bus: None,
        }
    }

    #[test]
    fn outbound_denied_is_internal_and_ports_get_an_ingress_network() {
        let (s, h) = (n("s1"), n("h1"));
        let names = |w: &Wanted| networks_of(&s, &h, w).into_iter().map(|n| (n.name, n.kind)).collect::<Vec<_>>();
        assert_eq!(names(&wanted(false, false)), [("edge.s1.h1.shop".into(), Kind::App { outbound: false })]);
        assert_eq!(
            names(&wanted(false, true)),
            [("edge.s1.h1.shop".into(), Kind::App { outbound: false }), ("edge.s1.h1.shop.in".into(), Kind::Ingress)]
        );
        assert_eq!(names(&wanted(true, true)), [("edge.s1.h1.shop.out".into(), Kind::App { outbound: true })]);
        // A peer's network is joined under no name.
        let mut w = wanted(false, false);
        w.peers = vec![crate::reconcile::Peer { app: n("db"), outbound: false }];
        let nets = networks_of(&s, &h, &w);
        assert_eq!(nets[1].name, "edge.s1.h1.db");
        assert!(nets[0].named && !nets[1].named);
    }

    #[test]
    fn membership_joins_first_and_leaves_the_rest() {
        let (s, h) = (n("s1"), n("h1"));
        let nets = networks_of(&s, &h, &wanted(false, true));
        let current: BTreeSet<String> = ["bridge".to_string(), "edge.s1.h1.shop".to_string()].into();
        let (join, leave) = membership(&nets, &current);
        assert_eq!(join.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["edge.s1.h1.shop.in"]);
        assert_eq!(leave, ["bridge"]);
        let all: BTreeSet<String> = nets.iter().map(|n| n.name.clone()).collect();
        assert_eq!(membership(&nets, &all), (vec![], vec![]));
    }

    #[test]
    fn pools_parse_as_a_slash_16() {
        assert_eq!("10.99.0.0/16".parse::<Pool>(), Ok(Pool([10, 99])));
        for bad in ["10.99.0.0/24", "10.99.1.0/16", "x/16", "10.99.0.0"] {
            assert!(bad.parse::<Pool>().is_err(), "{bad}");
        }
        assert_eq!(Pool::default().subnet(7), "10.213.7.0/24");
    }
}
