//! What sites measure and report for the fleet view: each host's and container's resource use,
//! and containers' lifecycle events. Stored first in the site's own `TELEMETRY` stream
//! (bounded: the oldest samples go first) and copied to the hub's by stream sourcing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::Name;

/// One host's resource use (`edge.v1.tm.<site>.stats.<host>`), every few seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostStats {
    pub site: Name,
    pub host: Name,
    /// When measured, ms since the Unix epoch at the site.
    pub at_ms: u64,
    /// Busy share of all the host's CPUs since the previous sample, 0 to 1.
    pub cpu_ratio: f64,
    pub cpus: u32,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    /// Free space where Docker keeps its data.
    pub disk_free_bytes: u64,
    /// This host's containers of ours.
    #[schemars(length(max = 512))]
    pub containers: Vec<ContainerStats>,
}

/// One container's resource use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerStats {
    pub app: Name,
    pub service: Name,
    pub replica: u32,
    #[schemars(length(max = 128))]
    pub container_id: String,
    /// CPU cores in use (1.0 = one core busy).
    pub cpu_cores: f64,
    pub memory_bytes: u64,
}

/// What happened to a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Start,
    /// The process ended (see `exit_code`).
    Exit,
    /// The kernel killed it for memory.
    Oom,
    Restart,
}

/// A container's lifecycle event (`edge.v1.tm.<site>.event.<host>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LifecycleEvent {
    pub site: Name,
    pub host: Name,
    pub at_ms: u64,
    pub app: Name,
    pub service: Name,
    pub replica: u32,
    #[schemars(length(max = 128))]
    pub container_id: String,
    pub event: Lifecycle,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

/// One container in `telemetry.resources`: where it runs and what it uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacedStats {
    pub site: Name,
    pub host: Name,
    pub service: Name,
    pub replica: u32,
    pub container_id: String,
    pub cpu_cores: f64,
    pub memory_bytes: u64,
    /// When the site measured it.
    pub at_ms: u64,
}

/// Reply to `telemetry.resources` (request: `AppRef`): every container of an app, by site and
/// host, with its latest resource use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesReply {
    pub app: Name,
    pub containers: Vec<PlacedStats>,
}
