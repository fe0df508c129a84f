//! A host that joins its site with a key of its own (`edgectl host invite SITE HOST`): before
//! it can open a connection at the site's leaf server it has no credential, only the
//! invitation's one-time token. It asks the hub (over its own connection with the shared
//! enrolment credential, [`crate::renew::join`]) until the centre approves it, then writes its
//! credential where `--nats-creds` points and goes on as any host.

use std::path::PathBuf;
use std::time::Duration;

use edge_types::Name;
use tokio_util::sync::CancellationToken;

use crate::renew::{self, Outcome};

pub struct HostJoin {
    pub site: Name,
    pub host: Name,
    /// Where the host's credential goes (`--nats-creds`).
    pub creds: PathBuf,
    pub token: PathBuf,
    /// The hub's client URL with the enrolment credential.
    pub hub: edge_bus::Endpoint,
    pub every: Duration,
}

impl HostJoin {
    /// Returns once the host has its credential (at once if it has one); `false` when shut
    /// down first.
    pub async fn until_joined(&self, shutdown: &CancellationToken) -> bool {
        loop {
            if self.creds.exists() {
                return true;
            }
            match renew::join(&self.hub, &self.site, Some(&self.host), &self.creds, &self.token).await {
                Ok(Outcome::Joined(_)) => {
                    tracing::info!(site = %self.site, host = %self.host, "host joined: credential received");
                    return true;
                }
                Ok(_) => {
                    tracing::info!(site = %self.site, host = %self.host, "joined; waiting for the centre's approval")
                }
                Err(e) => {
                    tracing::warn!(site = %self.site, host = %self.host, error = %e, "host join failed; will retry")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.every) => {}
            }
        }
    }
}
