//! Alerts: a condition of the fleet that needs a human, raised by the telemetry service with
//! its cause, and resolved by it when the cause goes away.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::Name;

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// An application runs at fewer sites than desired, has failed somewhere, or its
    /// containers keep restarting.
    AppDegraded,
    /// A site has not been heard from for longer than the threshold.
    SiteOffline,
    /// A site's event buffer is nearly full (it will refuse events when full).
    BufferNearlyFull,
    /// One of an application's topics is nearly full at a site: its containers' messages
    /// will be refused (or are) until the hub catches up or old ones expire.
    TopicNearlyFull,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::AppDegraded => "app_degraded",
            AlertKind::SiteOffline => "site_offline",
            AlertKind::BufferNearlyFull => "buffer_nearly_full",
            AlertKind::TopicNearlyFull => "topic_nearly_full",
        }
    }
}

/// Whether an alert is active.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// One alert, as listed and as published on `edge.v1.alert.<kind>.<name>` when it fires and
/// when it resolves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    pub kind: AlertKind,
    /// The app or site it is about.
    pub name: Name,
    pub state: AlertState,
    /// Why, in one sentence a human can act on.
    #[schemars(length(max = 512))]
    pub cause: String,
    /// When it started firing, ms since the Unix epoch.
    pub since_ms: u64,
    /// When it resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at_ms: Option<u64>,
}

/// Reply to `alert.list`: the firing alerts, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertListReply {
    pub alerts: Vec<Alert>,
}
