//! The site as a small cluster: every host runs a site-manager; they share the site's leaf
//! server and agree through its KV buckets (see `edge_types::cluster`), so all of this works
//! with the WAN down. Each host beats into the host table and runs what is assigned to it;
//! one elected leader assigns replicas to live hosts, merges the hosts' status and registers
//! the site with the hub.

pub mod assign;
pub mod hosts;
pub mod leader;
pub mod lease;

use edge_bus::mirror::Mirror;
use edge_bus::signal::Signal;
use edge_bus::topology::SiteBuckets;
use edge_types::cluster::{Assignment, HostState};
use edge_types::status::AppStatusReport;
use tokio_util::sync::CancellationToken;

/// The site's shared state as this host sees it.
#[derive(Clone)]
pub struct ClusterView {
    pub buckets: SiteBuckets,
    pub hosts: Mirror<HostState>,
    pub assignments: Mirror<Assignment>,
    pub host_status: Mirror<AppStatusReport>,
}

impl ClusterView {
    /// Starts mirroring the site's buckets. Host beats and host status wake only the leader
    /// (`leader`); assignments wake both it and the host's reconcile loop (`host`).
    pub fn follow(buckets: SiteBuckets, host: &Signal, leader: &Signal, shutdown: &CancellationToken) -> Self {
        Self {
            hosts: Mirror::follow(buckets.hosts.clone(), leader.clone(), shutdown.clone()),
            assignments: Mirror::follow(buckets.assign.clone(), host.with(leader), shutdown.clone()),
            host_status: Mirror::follow(buckets.host_status.clone(), leader.clone(), shutdown.clone()),
            buckets,
        }
    }

    /// Assignments by app.
    pub fn assignments(&self) -> std::collections::BTreeMap<edge_types::Name, Assignment> {
        self.assignments.snapshot().into_values().map(|e| (e.value.app.clone(), e.value)).collect()
    }
}
