//! Sites and hosts: call-home registration, heartbeats, and the central site record.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::Name;

/// Labels of a site or host. Keys like `customer` or `example.com/tier`; values up to 63 chars.
pub type Labels = BTreeMap<String, String>;

/// Sent by a site-manager at start and whenever its inventory changes (call-home).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteRegistration {
    pub site: Name,
    /// Labels from the site's own configuration.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 64, "propertyNames" = {"pattern": "^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$"}))]
    pub labels: BTreeMap<String, LabelValue>,
    #[schemars(length(max = 64))]
    pub hosts: Vec<HostInventory>,
    /// site-manager version.
    #[schemars(length(max = 64))]
    pub agent_version: String,
    /// The site's public xkey (curve25519): secrets reach the site sealed to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(equal = 56), regex(pattern = r"^X[A-Z2-7]{55}$"))]
    pub public_key: Option<String>,
    /// Host ids two machines beat under at once: rejected (nothing runs on them) until only
    /// one is left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub duplicate_hosts: Vec<Name>,
}

/// A label value: up to 63 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct LabelValue(#[schemars(length(max = 63), regex(pattern = r"^[A-Za-z0-9._/-]*$"))] pub String);

/// What a host has, read by its site-manager.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostInventory {
    pub host: Name,
    /// CPU architecture as Docker names it: `amd64`, `arm64`, ...
    #[schemars(length(max = 32))]
    pub arch: String,
    #[schemars(length(max = 64))]
    pub os: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Free space on the file system that holds Docker's data.
    pub disk_bytes: u64,
    /// GPU device nodes, e.g. `/dev/nvidia0`.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub gpus: Vec<String>,
    /// Other device nodes of interest, e.g. `/dev/video0`.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub devices: Vec<String>,
    #[serde(default)]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: BTreeMap<String, LabelValue>,
}

/// Request of `site.renew` (`edge.v1.api.site.renew.<site>`): a site asks for a new leaf-link
/// credential before (or after) its current one expires. Sent with the shared enrolment
/// credential, so the proof is in the body: the current JWT and a signature by its key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeafRenewal {
    pub site: Name,
    /// The site's current leaf-link JWT (expired or not).
    #[schemars(length(min = 1, max = 8192))]
    pub jwt: String,
    /// When the request was made, ms since the Unix epoch (at most 5 minutes off the hub's clock).
    pub at_ms: u64,
    /// Ed25519 signature (base64url) by the JWT's key over the site, `at_ms` and the key.
    #[schemars(length(min = 1, max = 256))]
    pub signature: String,
}

/// Reply to `site.renew`: the same identity, valid for another period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeafRenewed {
    pub site: Name,
    #[schemars(length(min = 1, max = 8192))]
    pub jwt: String,
    /// When the new JWT expires, Unix seconds.
    pub expires_at: u64,
}

/// Liveness beat of a site-manager, on core NATS.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub site: Name,
    pub host: Name,
    /// Milliseconds since the Unix epoch at the sender.
    pub sent_at_ms: u64,
    /// Milliseconds until the next heartbeat; 0 if unknown.
    #[serde(default)]
    pub interval_ms: u64,
    /// The site's event buffer, if the site-manager could read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer: Option<BufferState>,
    /// Times the site-manager restarted a leaf server that had stopped reconnecting.
    #[serde(default)]
    pub leaf_recoveries: u64,
    /// Sealed secrets this site-manager refused since it started.
    #[serde(default)]
    pub secrets_refused: u64,
    /// The site's telemetry buffer (oldest samples dropped at its limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_buffer: Option<BufferState>,
    /// The apps' topics at the site that are at least half full (`bus.topics`), fullest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub topics: Vec<TopicFill>,
}

/// How full an app's topic is at a site. A full topic refuses new messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicFill {
    pub tenant: Name,
    pub app: Name,
    pub topic: Name,
    /// Its stream at the site (`rejected_total` is not counted here: the server refuses).
    pub state: BufferState,
}

/// The site's event buffer (its SITE_EVENTS stream): what the hub has not processed yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BufferState {
    pub messages: u64,
    pub bytes: u64,
    /// Limits set by the operator; -1 is unlimited.
    pub max_messages: i64,
    pub max_bytes: i64,
    /// Events refused because the buffer was full, since the site-manager started.
    pub rejected_total: u64,
    /// The last event could not be stored: the buffer is full (alarm).
    pub full: bool,
}

impl BufferState {
    /// Fill between 0 and 1: the larger of the message and byte ratios.
    pub fn fill(&self) -> f64 {
        let ratio = |used: u64, max: i64| if max > 0 { used as f64 / max as f64 } else { 0.0 };
        ratio(self.messages, self.max_messages).max(ratio(self.bytes, self.max_bytes)).min(1.0)
    }
}

/// The hub's record of a site: what it registered plus the labels set centrally.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteRecord {
    pub site: Name,
    /// Labels the site reported from its configuration.
    pub reported_labels: Labels,
    /// Labels set centrally (`edgectl site label`); they win over reported ones.
    #[serde(default)]
    pub labels: Labels,
    pub hosts: Vec<HostInventory>,
    pub agent_version: String,
    /// When the site last called home, ms since the Unix epoch.
    pub registered_at_ms: u64,
    /// The site's public xkey, as it last registered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Host ids the site reports two machines beating under (rejected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicate_hosts: Vec<Name>,
}

impl SiteRecord {
    /// The labels placement sees: reported labels overlaid by central ones.
    pub fn effective_labels(&self) -> Labels {
        let mut l = self.reported_labels.clone();
        l.extend(self.labels.clone());
        l
    }
}

impl HostInventory {
    /// What host selectors see: facts (`host`, `arch`, `os`, `cpus`, `memory` and `disk` in
    /// bytes, `gpu` and `camera` counts when non-zero) overlaid by the host's labels, so an
    /// operator can declare what detection cannot see (an IP camera, a size class).
    pub fn attributes(&self) -> Labels {
        let mut a = Labels::new();
        a.insert("host".into(), self.host.to_string());
        a.insert("arch".into(), self.arch.clone());
        a.insert("os".into(), self.os.clone());
        a.insert("cpus".into(), self.cpus.to_string());
        a.insert("memory".into(), self.memory_bytes.to_string());
        a.insert("disk".into(), self.disk_bytes.to_string());
        if !self.gpus.is_empty() {
            a.insert("gpu".into(), self.gpus.len().to_string());
        }
        let cameras = self.devices.iter().filter(|d| d.starts_with("/dev/video")).count();
        if cameras > 0 {
            a.insert("camera".into(), cameras.to_string());
        }
        a.extend(self.labels.iter().map(|(k, v)| (k.clone(), v.0.clone())));
        a
    }

    /// The device nodes of a kind this host has.
    pub fn device_nodes(&self, kind: crate::app::DeviceKind) -> Vec<String> {
        match kind {
            crate::app::DeviceKind::Gpu => self.gpus.clone(),
            crate::app::DeviceKind::Camera => {
                self.devices.iter().filter(|d| d.starts_with("/dev/video")).cloned().collect()
            }
        }
    }

    /// GPUs usable by containers: the detected ones, or a `gpu` label's count.
    pub fn gpu_count(&self) -> u32 {
        match self.labels.get("gpu").and_then(|v| v.0.parse::<u32>().ok()) {
            Some(n) => n,
            None => self.gpus.len() as u32,
        }
    }
}

impl SiteRegistration {
    pub fn plain_labels(&self) -> Labels {
        self.labels.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()
    }
}
