//! Site-local cluster state, kept in KV buckets of the site's own JetStream domain so the hosts
//! of a site agree on who leads and where every replica runs, with the WAN down:
//! - `edge_hosts`, key = host: [`HostState`], rewritten by each host's site-manager every beat;
//! - `edge_leader`, key `leader`: [`LeaderLease`], renewed by the leader (compare-and-swap);
//! - `edge_assign`, key = app: [`Assignment`], written by the leader only;
//! - `edge_host_status`, key = `<app>.<host>`: that host's [`crate::status::AppStatusReport`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::Name;
use crate::site::HostInventory;

/// A host's entry in the site's host table; its steady rewriting is the host's heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostState {
    pub inventory: HostInventory,
    /// Milliseconds between rewrites; a host silent for a few of them is presumed down.
    pub beat_ms: u64,
    #[schemars(length(max = 64))]
    pub agent_version: String,
    /// This machine's own id (made at its site-manager's first start, kept with its key): two
    /// machines beating under one host name are told apart by it (a duplicate host id).
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub instance: String,
}

/// The site's leader lease. Followers take it over when it has not changed for the lease time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaderLease {
    pub host: Name,
    /// When this host became leader, ms since the Unix epoch at the host.
    pub since_ms: u64,
}

/// Where the replicas of one application run at the site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub app: Name,
    /// The desired generation this assignment was computed for.
    pub generation: u64,
    /// The leader that wrote it.
    pub leader: Name,
    pub replicas: Vec<Placed>,
    /// Replicas no host can take now, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unplaced: Vec<Unplaced>,
}

/// One replica on one host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Placed {
    pub service: Name,
    pub replica: u32,
    pub host: Name,
}

/// A replica that could not be placed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unplaced {
    pub service: Name,
    pub replica: u32,
    #[schemars(length(max = 4096))]
    pub reason: String,
}
