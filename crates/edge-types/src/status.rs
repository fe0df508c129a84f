//! Observed status of an application at a site, reported by the site-manager.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::Name;

/// How an application is doing at one site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Containers are being created or replaced.
    Progressing,
    /// Every container of the desired generation runs.
    Running,
    /// A container cannot be created or keeps failing.
    Failed,
    /// An update waits for the site's maintenance window; the previous version keeps running.
    Deferred,
    /// The app was removed from the site.
    Removed,
}

/// State of one container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerStatus {
    pub service: Name,
    pub replica: u32,
    pub host: Name,
    /// Docker container id, empty if the container could not be created.
    pub container_id: String,
    pub image: String,
    /// Docker's id of the image the container runs (`sha256:...`): the exact content.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 128))]
    pub image_id: String,
    /// Docker's state: `running`, `exited`, `created`, ...
    pub state: String,
    /// The probe's verdict: `healthy`, `unhealthy`, `starting`; absent without a probe.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 32))]
    pub health: String,
    /// Restarts done by the site-manager since the container was created.
    pub restarts: u32,
    /// Ports it publishes on its host (the service's ingress), the host port always set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ingress: Vec<crate::app::PortSpec>,
    /// Last error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Published by a site-manager when an app's status at its site changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppStatusReport {
    pub site: Name,
    pub app: Name,
    /// The generation the site is running (or removing).
    pub generation: u64,
    pub version: String,
    pub phase: Phase,
    pub containers: Vec<ContainerStatus>,
    /// Replicas no host of the site can take now, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unplaced: Vec<crate::cluster::Unplaced>,
    /// Milliseconds since the Unix epoch at the site.
    pub reported_at_ms: u64,
}
