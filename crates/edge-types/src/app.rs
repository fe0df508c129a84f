//! The application spec: what an application team applies. Human-authored, so unknown fields
//! are rejected (typos surface) and every bound is in the JSON Schema.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::names::Name;
use crate::policy::Policy;

/// A versioned aggregate of containers and config, with the placement that says where it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Application name, unique in the fleet.
    pub name: Name,
    /// The tenant the application belongs to: only that tenant's users see and change it, and
    /// its secrets are that tenant's. A tenant's request is always for its own tenant (absent
    /// means so); operators name it. Absent: `default`.
    #[serde(default = "crate::secret::default_tenant", skip_serializing_if = "crate::secret::is_default_tenant")]
    pub tenant: Name,
    /// The application's own version string, shown in status; any change is a new generation.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"))]
    pub version: String,
    /// The containers that make up the application.
    #[schemars(length(min = 1, max = 32))]
    pub services: Vec<ServiceSpec>,
    /// Where the application runs.
    pub placement: Placement,
    /// How a new version rolls out over the sites running an older one; absent: all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::RolloutPolicy>,
    /// The application's own network at each host; absent: isolated, no outbound access.
    #[serde(default, skip_serializing_if = "NetworkSpec::is_default")]
    pub network: NetworkSpec,
    /// A connection to the site's bus for the application's containers: its topics. Absent
    /// (or no topics): the containers get no bus connection.
    #[serde(default, skip_serializing_if = "BusSpec::is_empty")]
    pub bus: BusSpec,
}

/// The application's own topics on the bus. Its containers get the site leaf's address and a
/// credential that may publish to these topics only (`EDGE_BUS_*` variables); what they publish
/// is kept at the site within the topic's limits, copied to the hub when the link is up, and
/// read centrally with `edgectl events` (`edge.v1.api.app.events`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BusSpec {
    /// The topics, each with its own limits at every site.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub topics: Vec<TopicSpec>,
}

/// One topic: a stream at each site running the application and one at the hub. When a site's
/// copy is full, publishing is refused (back-pressure) until the hub has caught up or the
/// oldest messages expire; nothing already stored is dropped to make room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name, unique within the application; the last token of its subject
    /// `edge.v1.topic.<tenant>.<app>.<topic>`.
    pub name: Name,
    /// Bytes the topic keeps at each site (and at the hub for each site). Default 16 MiB.
    #[serde(default = "default_topic_bytes")]
    #[schemars(range(min = 4096, max = 1073741824))]
    pub max_bytes: i64,
    /// Messages the topic keeps at each site; absent: no count limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000000))]
    pub max_msgs: Option<i64>,
    /// How long a message is kept, in seconds. Default 7 days.
    #[serde(default = "default_topic_age")]
    #[schemars(range(min = 60, max = 31536000))]
    pub max_age_secs: u64,
    /// Largest message accepted, in bytes. Default 64 KiB.
    #[serde(default = "default_topic_msg_size")]
    #[schemars(range(min = 16, max = 1048576))]
    pub max_msg_size: i32,
    /// Which way messages flow: `to_hub` (default: the containers publish, central readers
    /// read) or `to_sites` (central senders publish to the sites running the app, its
    /// containers read).
    #[serde(default, skip_serializing_if = "Direction::is_default")]
    pub direction: Direction,
}

/// Which way a topic's messages flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the app's containers at the sites to the hub.
    #[default]
    ToHub,
    /// From the hub to the app's containers at the sites where it runs.
    ToSites,
}

impl Direction {
    fn is_default(&self) -> bool {
        *self == Direction::ToHub
    }
}

impl BusSpec {
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// The bus when it has topics.
    pub fn used(&self) -> Option<&BusSpec> {
        (!self.is_empty()).then_some(self)
    }

    /// The topics flowing `direction`.
    pub fn topics_to(&self, direction: Direction) -> Vec<Name> {
        self.topics.iter().filter(|t| t.direction == direction).map(|t| t.name.clone()).collect()
    }
}

fn default_topic_bytes() -> i64 {
    16 << 20
}
fn default_topic_age() -> u64 {
    7 * 86_400
}
fn default_topic_msg_size() -> i32 {
    64 << 10
}

/// The application's network. At each host the application's containers share a Docker
/// network of their own, where each service is found by its name (DNS); other applications'
/// containers cannot reach them. Ports a service publishes (`ports`) are its ingress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Whether the containers may open connections outside the application's network (the
    /// host, the site's LAN, the internet). Default: no; they reach only each other, and
    /// answer on their published ports.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outbound: bool,
    /// Applications whose containers may reach this one's services by name: at each host where
    /// both run, theirs join this application's network (under no names of their own there).
    /// An application without `outbound` does not join one that has it, which would be its way
    /// out. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub allow_from: Vec<Name>,
}

impl NetworkSpec {
    pub fn is_default(&self) -> bool {
        self == &NetworkSpec::default()
    }
}

/// One container of an application, run `replicas` times at every selected site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Service name, unique within the application.
    pub name: Name,
    /// Container image reference, e.g. `edge/busybox:v1`.
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[a-z0-9][a-z0-9._/:@-]*$"))]
    pub image: String,
    /// Command and arguments; the image's default when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<CommandArg>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 128, "propertyNames" = {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,127}$"}))]
    pub env: BTreeMap<String, EnvValue>,
    /// Ports published on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ports: Vec<PortSpec>,
    /// Resource limits.
    #[serde(default)]
    pub resources: Resources,
    /// Containers of this service at each selected site (mode `replicated`).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 16))]
    pub replicas: u32,
    /// `replicated` (default): `replicas` containers per site, spread over its hosts;
    /// `one-per-matching-host`: one container on every host of the site that matches.
    #[serde(default, skip_serializing_if = "Mode::is_default")]
    pub mode: Mode,
    /// Never run two replicas of this service on one host (a replica that has no host of its
    /// own stays unplaced). Without it, replicas are still spread when hosts allow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anti_affinity: bool,
    /// Device nodes of the host the container gets: `camera` (every `/dev/video*`), `gpu`
    /// (every GPU node). The service runs only on hosts that have them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub devices: Vec<DeviceKind>,
    /// Secrets the container receives: as the file `/run/secrets/<name>` (tmpfs, read-only)
    /// or as an environment variable. A container starts only once its secrets are at the site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub secrets: Vec<crate::secret::SecretRef>,
    /// How the site checks the container is healthy. An unhealthy container does not count as
    /// running (status, rollout gates, alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// The container's root filesystem is read-only; `/tmp` is a small tmpfs (secret files are
    /// mounted as always).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root: bool,
}

/// A health probe, run by Docker inside the container every `period_secs`: exactly one of
/// `http` (a GET that must answer 2xx or 3xx, with the image's `wget`), `tcp` (a connection,
/// with the image's `nc`) or `exec` (a command that must exit 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub exec: Vec<CommandArg>,
    #[serde(default = "ten")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_secs: u32,
    #[serde(default = "two")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_secs: u32,
    /// Consecutive failures before the container is unhealthy.
    #[serde(default = "three")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
}

/// An HTTP GET probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    #[serde(default = "root_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$"))]
    pub path: String,
}

/// A TCP connect probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

fn ten() -> u32 {
    10
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}
fn root_path() -> String {
    "/".into()
}

impl Probe {
    /// The command Docker runs for this probe.
    pub fn command(&self) -> Vec<String> {
        let t = self.timeout_secs.to_string();
        if let Some(h) = &self.http {
            let url = format!("http://127.0.0.1:{}{}", h.port, h.path);
            return ["CMD", "wget", "-q", "-O", "/dev/null", "-T", &t, &url].map(String::from).to_vec();
        }
        if let Some(p) = &self.tcp {
            return ["CMD", "nc", "-z", "-w", &t, "127.0.0.1", &p.port.to_string()].map(String::from).to_vec();
        }
        std::iter::once("CMD".to_string()).chain(self.exec.iter().map(|a| a.0.clone())).collect()
    }
}

/// A kind of device node a container can be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Camera,
    Gpu,
}

/// How many containers of a service run at a site.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `replicas` containers per site.
    #[default]
    Replicated,
    /// One container on every matching host of the site.
    OnePerMatchingHost,
}

impl Mode {
    fn is_default(&self) -> bool {
        *self == Mode::Replicated
    }
}

/// One command-line argument.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct CommandArg(#[schemars(length(max = 4096))] pub String);

/// One environment value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct EnvValue(#[schemars(length(max = 8192))] pub String);

fn one() -> u32 {
    1
}

/// A port published on the host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// Port inside the container.
    #[schemars(range(min = 1, max = 65535))]
    pub container: u16,
    /// Port on the host; the same as `container` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub host: Option<u16>,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Transport protocol of a published port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`, as Docker and the spec spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl PortSpec {
    /// The port on the host: `host`, else the container's.
    pub fn host_port(&self) -> u16 {
        self.host.unwrap_or(self.container)
    }
}

/// Resource limits of one container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU limit in cores, e.g. 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 512.0))]
    pub cpus: Option<f64>,
    /// Memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 6, max = 4194304))]
    pub memory_mb: Option<u64>,
    /// GPUs the container needs for itself; a host's GPUs are never shared by two containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub gpus: Option<u32>,
}

/// Where an application runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Site-label selector, e.g. `customer = acme, region in (eu, us), !legacy`. Terms are
    /// joined by `,`; operators are `=`, `!=`, `in (..)`, `notin (..)`, `key` (exists) and
    /// `!key` (absent), and comparisons `>`, `>=`, `<`, `<=` (numbers with unit suffixes, or
    /// values of an order the operator declares). An empty string selects every site.
    #[schemars(length(max = 1024))]
    pub sites: String,
    /// Host selector, same language, over each host's labels and facts: `arch`, `os`, `cpus`,
    /// `memory` (bytes), `disk`, `gpu` and `camera` (device counts, absent when zero), `host`.
    /// A site is selected only if at least one of its hosts matches. Empty: every host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1024))]
    pub hosts: String,
}

/// A semantic problem in a spec that the schema cannot express.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {message}")]
pub struct SpecError {
    /// JSON pointer to the offending field.
    pub pointer: String,
    pub message: String,
}

impl AppSpec {
    /// Checks what the schema cannot: unique service names, unique host ports, mode and replica
    /// counts that agree, and site and host selectors that parse and do not contradict
    /// themselves. Comparisons over declared orders are checked by [`Policy::check_orders`].
    pub fn check(&self) -> Result<Policy, SpecError> {
        let mut names = std::collections::BTreeSet::new();
        let mut host_ports = std::collections::BTreeSet::new();
        for (i, svc) in self.services.iter().enumerate() {
            if !names.insert(&svc.name) {
                return Err(SpecError {
                    pointer: format!("/services/{i}/name"),
                    message: format!("service name {:?} is used twice", svc.name.as_str()),
                });
            }
            if svc.mode == Mode::OnePerMatchingHost && svc.replicas != 1 {
                return Err(SpecError {
                    pointer: format!("/services/{i}/replicas"),
                    message: "replicas has no meaning with mode one-per-matching-host (one per host)".into(),
                });
            }
            // Several replicas may publish a port only if no two share a host.
            let own_host = svc.replicas == 1 || svc.anti_affinity;
            for (j, p) in svc.ports.iter().enumerate() {
                let host = p.host_port();
                if !own_host || !host_ports.insert((host, p.protocol)) {
                    return Err(SpecError {
                        pointer: format!("/services/{i}/ports/{j}"),
                        message: format!(
                            "host port {host} is published more than once (replicas that publish a port need anti_affinity)"
                        ),
                    });
                }
            }
        }
        let mut peers = std::collections::BTreeSet::new();
        for (i, app) in self.network.allow_from.iter().enumerate() {
            let pointer = format!("/network/allow_from/{i}");
            if app == &self.name {
                return Err(SpecError { pointer, message: "an application always reaches its own services".into() });
            }
            if !peers.insert(app) {
                return Err(SpecError { pointer, message: format!("{:?} is listed twice", app.as_str()) });
            }
        }
        for (i, svc) in self.services.iter().enumerate() {
            check_secrets(i, svc)?;
            if let Some(p) = &svc.probe {
                let kinds = p.http.is_some() as u8 + p.tcp.is_some() as u8 + (!p.exec.is_empty()) as u8;
                if kinds != 1 {
                    return Err(SpecError {
                        pointer: format!("/services/{i}/probe"),
                        message: "a probe has exactly one of http, tcp and exec".into(),
                    });
                }
            }
        }
        let mut topics = std::collections::BTreeSet::new();
        for (i, t) in self.bus.topics.iter().enumerate() {
            if !topics.insert(&t.name) {
                return Err(SpecError {
                    pointer: format!("/bus/topics/{i}/name"),
                    message: format!("topic {:?} is declared twice", t.name.as_str()),
                });
            }
            if i64::from(t.max_msg_size) > t.max_bytes {
                return Err(SpecError {
                    pointer: format!("/bus/topics/{i}/max_msg_size"),
                    message: format!("a message of {} bytes cannot fit in max_bytes {}", t.max_msg_size, t.max_bytes),
                });
            }
        }
        if let Some(r) = &self.rollout {
            crate::selector::Selector::parse(&r.canary).map_err(|e| SpecError {
                pointer: "/rollout/canary".into(),
                message: format!("invalid selector {:?} {e}", r.canary),
            })?;
        }
        let policy = Policy::parse(&self.placement)?;
        for (i, svc) in self.services.iter().enumerate() {
            let Some(gpus) = svc.resources.gpus else { continue };
            let needs = crate::selector::Term::Compare("gpu".into(), crate::selector::CmpOp::Ge, gpus.to_string());
            if !policy.hosts.and(needs).contradictions(&Default::default()).is_empty() {
                return Err(SpecError {
                    pointer: format!("/services/{i}/resources/gpus"),
                    message: format!("unsatisfiable: the host selector excludes every host with {gpus} GPUs"),
                });
            }
        }
        Ok(policy)
    }

    /// Names of the secrets any service references (the app's tenant's), sorted, once each.
    pub fn secret_names(&self) -> std::collections::BTreeSet<Name> {
        self.services.iter().flat_map(|s| s.secrets.iter().map(|r| r.name.clone())).collect()
    }

    /// A stable digest of the whole spec; applying an identical spec is a no-op.
    pub fn digest(&self) -> String {
        digest_json(self)
    }
}

impl ServiceSpec {
    /// A stable digest of what the container is made from; a container is replaced only when
    /// the digest of its own service changes.
    pub fn digest(&self) -> String {
        digest_json(self)
    }

    /// The digest of the container made for this service of an app with bus topics `bus`: its
    /// own digest when the app has no bus (so containers made before buses existed stay), else
    /// one that also covers the topics its credential opens.
    pub fn digest_with_bus(&self, bus: Option<&BusSpec>) -> String {
        match bus {
            None => self.digest(),
            Some(b) => digest_json(&(self, b.topics.iter().map(|t| (&t.name, t.direction)).collect::<Vec<_>>())),
        }
    }
}

/// A service's secret references: each secret once, no variable set twice, `in-place` only
/// for files (a process cannot see its environment change).
fn check_secrets(i: usize, svc: &ServiceSpec) -> Result<(), SpecError> {
    let mut names = std::collections::BTreeSet::new();
    for (j, r) in svc.secrets.iter().enumerate() {
        let err =
            |field: &str, message: String| SpecError { pointer: format!("/services/{i}/secrets/{j}{field}"), message };
        if !names.insert(&r.name) {
            return Err(err("/name", format!("secret {:?} is referenced twice", r.name.as_str())));
        }
        if let Some(var) = &r.env {
            if svc.env.contains_key(var) || svc.secrets[..j].iter().any(|o| o.env.as_ref() == Some(var)) {
                return Err(err("/env", format!("environment variable {var} is set twice")));
            }
            if r.on_rotate == crate::secret::OnRotate::InPlace {
                return Err(err(
                    "/on_rotate",
                    "in-place needs a file: a running process cannot see its environment change".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Hex SHA-256 (first 16 bytes) of a value's canonical JSON (maps are ordered).
pub fn digest_json<T: Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).expect("wire types always serialize");
    hex::encode(&Sha256::digest(bytes)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(secrets: serde_json::Value) -> AppSpec {
        serde_json::from_value(serde_json::json!({
            "name": "web", "version": "1", "placement": {"sites": ""},
            "services": [{"name": "api", "image": "edge/busybox:v1", "env": {"MODE": "x"}, "secrets": secrets}],
        }))
        .unwrap()
    }

    #[test]
    fn network_peers_are_checked_and_the_default_is_closed() {
        let mut s = spec(serde_json::json!([]));
        assert_eq!(s.network, NetworkSpec::default());
        assert!(!s.network.outbound && s.network.allow_from.is_empty());
        assert!(!serde_json::to_string(&s).unwrap().contains("network"), "the default is not written");
        s.network.allow_from = vec![Name::new("db").unwrap(), Name::new("web").unwrap()];
        assert_eq!(s.check().unwrap_err().pointer, "/network/allow_from/1");
        s.network.allow_from = vec![Name::new("db").unwrap(), Name::new("db").unwrap()];
        assert_eq!(s.check().unwrap_err().pointer, "/network/allow_from/1");
        s.network.allow_from.pop();
        s.check().unwrap();
    }

    #[test]
    fn secret_references_are_checked() {
        let ok = spec(serde_json::json!([{"name": "db"}, {"name": "token", "env": "TOKEN"}]));
        ok.check().unwrap();
        assert_eq!(ok.secret_names().into_iter().map(|n| n.to_string()).collect::<Vec<_>>(), ["db", "token"]);
        let pointer = |v| spec(v).check().unwrap_err().pointer;
        assert_eq!(
            pointer(serde_json::json!([{"name": "db"}, {"name": "db", "env": "X"}])),
            "/services/0/secrets/1/name"
        );
        assert_eq!(pointer(serde_json::json!([{"name": "db", "env": "MODE"}])), "/services/0/secrets/0/env");
        assert_eq!(
            pointer(serde_json::json!([{"name": "a", "env": "X"}, {"name": "b", "env": "X"}])),
            "/services/0/secrets/1/env"
        );
        assert_eq!(
            pointer(serde_json::json!([{"name": "a", "env": "X", "on_rotate": "in-place"}])),
            "/services/0/secrets/0/on_rotate"
        );
        spec(serde_json::json!([{"name": "a", "on_rotate": "in-place"}])).check().unwrap();
    }

    #[test]
    fn a_probe_has_one_kind_and_becomes_a_docker_command() {
        let with = |probe: serde_json::Value| {
            let mut s = spec(serde_json::json!([]));
            s.services[0].probe = Some(serde_json::from_value(probe).unwrap());
            s
        };
        let http = with(serde_json::json!({"http": {"port": 8080, "path": "/health"}}));
        http.check().unwrap();
        let cmd = http.services[0].probe.as_ref().unwrap().command();
        assert_eq!(cmd, ["CMD", "wget", "-q", "-O", "/dev/null", "-T", "2", "http://127.0.0.1:8080/health"]);
        let tcp = with(serde_json::json!({"tcp": {"port": 5432}}));
        assert_eq!(
            tcp.services[0].probe.as_ref().unwrap().command(),
            ["CMD", "nc", "-z", "-w", "2", "127.0.0.1", "5432"]
        );
        let both = with(serde_json::json!({"tcp": {"port": 1}, "exec": ["true"]}));
        assert_eq!(both.check().unwrap_err().pointer, "/services/0/probe");
        assert_eq!(with(serde_json::json!({})).check().unwrap_err().pointer, "/services/0/probe");
    }
}
