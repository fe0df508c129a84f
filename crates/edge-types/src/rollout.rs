//! Rollouts: a new version of an application reaches its sites in waves (a canary wave chosen
//! by label, then batches), each wave gated on health for a while; a failed gate halts the
//! rollout and rolls the updated sites back. Wire types of the rollout API and of the state the
//! scheduler keeps in the application's record.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::app::AppSpec;
use crate::names::Name;

/// How a new version of the application rolls out over the sites that run an older one. Sites
/// that run no version yet, and the first version, get it at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutPolicy {
    /// Site selector of the canary wave, updated first (e.g. `canary = true`). Empty: no canary.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub canary: String,
    /// Sites updated together in each wave after the canary.
    #[serde(default = "ten")]
    #[schemars(range(min = 1, max = 100000))]
    pub sites_in_parallel: u32,
    /// Sites of a wave that may fail (or not become healthy in time) without halting the rollout.
    #[serde(default)]
    pub max_unavailable: u32,
    /// Seconds every site of a wave must stay running before the next wave starts.
    #[serde(default = "thirty")]
    #[schemars(range(min = 0, max = 86400))]
    pub healthy_time_secs: u64,
    /// Seconds a wave may take to become healthy; then its gate fails.
    #[serde(default = "six_hundred")]
    #[schemars(range(min = 1, max = 604800))]
    pub progress_deadline_secs: u64,
    /// Sites of a wave that may be offline or waiting for their maintenance window: they are
    /// counted, get the change when they can, and do not hold the rollout. More than this and
    /// the rollout waits for them.
    #[serde(default = "one")]
    pub max_offline: u32,
    /// Roll the updated sites back when a gate fails (otherwise the rollout only halts).
    #[serde(default = "yes")]
    pub auto_rollback: bool,
}

fn ten() -> u32 {
    10
}
fn thirty() -> u64 {
    30
}
fn six_hundred() -> u64 {
    600
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    Progressing,
    /// Stopped by an operator; `resume` continues it.
    Paused,
    /// Every wave passed its gate.
    Complete,
    /// A gate failed and `auto_rollback` is off: updated sites stay updated, the others wait.
    Halted,
    /// A gate failed and the updated sites were rolled back.
    RolledBack,
}

/// A group of sites updated together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    /// `canary`, `wave 2`, ...
    pub name: String,
    pub sites: Vec<Name>,
}

/// The scheduler's state of a rollout, kept in the application's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutState {
    /// The generation being rolled out.
    pub generation: u64,
    pub version: String,
    /// The generation and version the updated sites ran before (what a rollback restores).
    pub from_generation: u64,
    pub from_version: String,
    pub waves: Vec<Wave>,
    /// Index of the wave in progress (equal to the number of waves once complete).
    pub current: usize,
    pub phase: RolloutPhase,
    /// Sites of waves not started yet, with the generation they stay on until then.
    pub held: BTreeMap<Name, u64>,
    pub started_at_ms: u64,
    pub wave_started_at_ms: u64,
    /// Since when the current wave has been healthy, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since_ms: Option<u64>,
    /// Why it halted or what it waits for.
    #[serde(default)]
    pub message: String,
}

/// One applied generation of an application, kept for history and rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    pub generation: u64,
    pub version: String,
    pub spec: AppSpec,
    pub applied_at_ms: u64,
    /// What became of it: `rolled out`, `rolled back: ...`, `rollback to 1.0.0`, ...
    #[serde(default)]
    pub outcome: String,
    /// The images the spec resolved to when it was applied.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub images: std::collections::BTreeMap<String, crate::image::ImageRecord>,
}

/// Progress of one wave, as counted now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaveStatus {
    pub name: String,
    /// `done`, `in progress`, `pending`, `failed`.
    pub state: String,
    pub sites: u32,
    pub running: u32,
    pub failed: u32,
    pub progressing: u32,
    /// Offline, or waiting for their maintenance window.
    pub waiting: u32,
}

/// Reply to `app.rollout`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutStatusReply {
    pub name: Name,
    /// No rollout was ever made (the app went out at once).
    pub rollout: Option<RolloutState>,
    pub waves: Vec<WaveStatus>,
}

/// Request of `app.pause` and `app.resume`: one app, or every app's rollout (`all`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutControl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    #[serde(default)]
    pub all: bool,
}

/// Reply to `app.pause` and `app.resume`: the apps whose rollout changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutControlReply {
    pub apps: Vec<Name>,
}

/// Reply to `app.history`, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryReply {
    pub name: Name,
    pub revisions: Vec<Revision>,
}

/// Request of `app.rollback`: back to `to_version`, or to the version before the current one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    pub name: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub to_version: Option<String>,
}
