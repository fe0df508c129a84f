//! Requests and replies of the central API (`edge.v1.api.<noun>.<verb>`), and the typed error
//! every failed request gets.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::app::AppSpec;
use crate::names::Name;
use crate::site::{BufferState, HostInventory, LabelValue, Labels};
use crate::status::{AppStatusReport, Phase};

/// Body of requests that take no argument (`app.list`, `site.list`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Names one application (`app.get`, `app.status`, `app.delete`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppRef {
    pub name: Name,
}

/// Reply to `app.apply`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyReply {
    pub name: Name,
    pub generation: u64,
    /// False when the same spec was already applied: nothing changed.
    pub changed: bool,
    /// Sites the application is placed at.
    pub sites: Vec<Name>,
}

/// The hub's record of an application, reply to `app.get`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppRecord {
    pub spec: AppSpec,
    pub generation: u64,
    /// Digest of the spec, to detect a no-op apply.
    pub digest: String,
    /// Sites the application is currently placed at.
    pub sites: Vec<Name>,
    pub updated_at_ms: u64,
    /// The latest rollout of a new version, if one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::RolloutState>,
    /// The spec's images found in the image store at apply time, by reference.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub images: std::collections::BTreeMap<String, crate::image::ImageRecord>,
}

/// One line of `app.list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppSummary {
    pub name: Name,
    #[serde(default = "crate::secret::default_tenant", skip_serializing_if = "crate::secret::is_default_tenant")]
    pub tenant: Name,
    pub version: String,
    pub generation: u64,
    /// Sites the app is placed at.
    pub sites_desired: u32,
    /// Of those, sites reporting `running` at the current generation.
    pub sites_running: u32,
}

/// Reply to `app.list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppListReply {
    pub apps: Vec<AppSummary>,
}

/// Status of an application at one site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteAppStatus {
    pub site: Name,
    /// `pending` until the site has reported on the current generation.
    pub phase: SitePhase,
    /// The generation the site should run now (older than the app's while a rollout holds it).
    #[serde(default)]
    pub target_generation: u64,
    /// The site is not connected now, so a pending change waits for its link to return.
    #[serde(default)]
    pub offline: bool,
    /// The site's latest report, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<AppStatusReport>,
    /// How far the app's images from the store are staged at the site (absent: no such image,
    /// or staging has not started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<crate::image::StagingProgress>,
}

/// Phase of an app at a site as the hub sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SitePhase {
    /// No report on the current generation yet (the site may be offline).
    Pending,
    Progressing,
    Running,
    Failed,
    /// The site holds the change until its maintenance window opens.
    Deferred,
    /// Being removed from a site it no longer matches.
    Removing,
}

impl From<Phase> for SitePhase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Progressing => SitePhase::Progressing,
            Phase::Running => SitePhase::Running,
            Phase::Failed => SitePhase::Failed,
            Phase::Deferred => SitePhase::Deferred,
            Phase::Removed => SitePhase::Removing,
        }
    }
}

/// Reply to `app.status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppStatusReply {
    pub name: Name,
    pub version: String,
    pub generation: u64,
    pub sites: Vec<SiteAppStatus>,
}

/// Reply to `app.plan`: where a spec would run, and why every other site is excluded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanReply {
    pub name: Name,
    pub sites: Vec<SitePlan>,
    /// Labels the selector names that no registered site has (allowed, but often a typo).
    pub unknown_labels: Vec<String>,
}

/// One site in a placement preview.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SitePlan {
    pub site: Name,
    pub selected: bool,
    /// Connected now; a selected offline site gets the app when its link returns.
    pub connected: bool,
    /// For an excluded site, each failing term and what the site has instead.
    pub reasons: Vec<String>,
    /// Each host of the site (as last registered): whether it can take the app, and why not.
    #[serde(default)]
    pub hosts: Vec<HostPlan>,
}

/// One host in a placement preview.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostPlan {
    pub host: Name,
    /// Matches the host selector and is big enough for at least one service.
    pub selected: bool,
    /// Failing host-selector terms, and per service what the host is short of.
    pub reasons: Vec<String>,
}

/// Reply to `app.delete`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteReply {
    pub name: Name,
    /// Sites the app is being removed from.
    pub sites: Vec<Name>,
}

/// One line of `site.list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteSummary {
    pub site: Name,
    /// The site-manager version the site last registered with.
    #[serde(default)]
    pub agent_version: String,
    /// Effective labels (reported, overlaid by central).
    pub labels: Labels,
    pub hosts: Vec<HostInventory>,
    /// A heartbeat arrived recently.
    pub connected: bool,
    /// Last heartbeat seen by this scheduler, ms since the Unix epoch; 0 if none.
    pub last_seen_ms: u64,
    /// Applications placed at the site.
    pub apps: Vec<Name>,
    /// The site's event buffer as of its last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer: Option<BufferState>,
    /// Times the site restarted its leaf server because it had stopped reconnecting.
    #[serde(default)]
    pub leaf_recoveries: u64,
    /// Sealed secrets the site refused (tampered, misaddressed, replayed) since its
    /// site-manager started.
    #[serde(default)]
    pub secrets_refused: u64,
    /// The site is blocked (`block.set`): its leaf link is refused and it gets no secrets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
    /// Its hosts that are blocked: nothing runs on them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_hosts: Vec<Name>,
    /// Its hosts that are not approved while its host list is explicit: rejected until approved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_hosts: Vec<Name>,
    /// Host ids two machines beat under at once: rejected until one is left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicate_hosts: Vec<Name>,
}

/// Reply to `site.list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteListReply {
    pub sites: Vec<SiteSummary>,
}

/// Request of `site.label`: set and remove central labels of a site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteLabelRequest {
    pub site: Name,
    #[serde(default)]
    #[schemars(extend("maxProperties" = 64, "propertyNames" = {"pattern": "^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$"}))]
    pub set: BTreeMap<String, LabelValue>,
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub remove: Vec<String>,
}

/// Reply to `site.register`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterReply {
    pub site: Name,
    /// True on the first registration of this site.
    pub new: bool,
}

/// Kind of a failed request; also sent as the `Nats-Service-Error-Code` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or violates the schema; nothing changed.
    InvalidRequest,
    NotFound,
    /// A concurrent change won; retry.
    Conflict,
    /// A dependency (JetStream) is unavailable; retry later.
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// HTTP-like numeric code for the `Nats-Service-Error-Code` header.
    pub fn numeric(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// The body of every error reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    /// One sentence a human can act on.
    pub message: String,
    /// JSON pointer to the offending field, when one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), pointer: None }
    }
    pub fn invalid(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: ErrorCode::InvalidRequest, message: message.into(), pointer: Some(pointer.into()) }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}
