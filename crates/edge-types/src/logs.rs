//! Logs on demand: container logs stay at their site until someone asks. A request on
//! `edge.v1.logs.<site>` (core NATS, through the leaf link) reaches every host of the site;
//! each answers with chunks of its containers' lines on the reply subject, then a final chunk
//! marked `done`. A follow keeps streaming while the requester renews it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::Name;

fn tail() -> u32 {
    100
}

/// What to fetch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogRequest {
    pub app: Name,
    /// Only this service's containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Name>,
    /// Last lines of each container.
    #[serde(default = "tail")]
    #[schemars(range(min = 1, max = 10000))]
    pub tail: u32,
    /// Only lines of the last this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2592000))]
    pub since_secs: Option<u64>,
    /// Only lines containing this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub grep: Option<String>,
    /// Keep streaming new lines while the requester renews the same session (every few
    /// seconds; a follow stops 30 s after the last renewal).
    #[serde(default)]
    pub follow: bool,
    /// Identifies a follow across renewals.
    #[schemars(regex(pattern = r"^[A-Za-z0-9]{1,64}$"))]
    pub session: String,
}

/// Lines of one container, or the end of one host's answer (`done`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogChunk {
    pub site: Name,
    pub host: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<u32>,
    #[schemars(length(max = 1000))]
    pub lines: Vec<String>,
    /// This host has sent everything it had (a follow goes on after it).
    #[serde(default)]
    pub done: bool,
    /// Why this host could not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
