//! Detects a leaf server that has stopped reconnecting to the hub (a known nats-server failure
//! on flaky links) and recovers it. The leaf is stuck when the hub does not answer through it
//! while the hub's leafnode port greets a direct probe (so the WAN itself is up) for
//! `stuck_after`; recovery runs the operator's restart command (e.g. `systemctl restart
//! nats-leaf` or `docker restart site-1-leaf`), counted and reported in heartbeats.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::sources::hub_reachable;

const CHECK_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Watches the leaf link; disabled unless both a probe address and a restart command are set.
pub struct LeafWatch {
    pub client: async_nats::Client,
    /// `host:port` of the hub's leafnode listener, as the site reaches it.
    pub probe_addr: String,
    /// Shell command that restarts the site's leaf server.
    pub restart_cmd: String,
    pub stuck_after: Duration,
    /// Recoveries run since start, reported in heartbeats.
    pub recoveries: Arc<AtomicU64>,
}

/// Whether the hub's leafnode port answers over the WAN: it greets every connection with
/// `INFO`, so an accepting middlebox that cannot reach the hub does not count.
async fn wan_up(addr: &str) -> bool {
    use tokio::io::AsyncReadExt;
    let greet = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"INFO")
    };
    matches!(tokio::time::timeout(PROBE_TIMEOUT, greet).await, Ok(Some(true)))
}

impl LeafWatch {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut stuck_since: Option<Instant> = None;
        let mut quiet_until = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
            if hub_reachable(&self.client).await || !wan_up(&self.probe_addr).await {
                stuck_since = None; // linked, or the WAN is down: nothing the leaf could do
                continue;
            }
            let since = *stuck_since.get_or_insert_with(Instant::now);
            if since.elapsed() < self.stuck_after || Instant::now() < quiet_until {
                continue;
            }
            self.recoveries.fetch_add(1, Ordering::Relaxed);
            tracing::error!(stuck_for = ?since.elapsed(), "leaf server is not linked to a reachable hub; restarting it");
            let run = tokio::process::Command::new("sh").arg("-c").arg(&self.restart_cmd).kill_on_drop(true).status();
            match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
                Ok(Ok(status)) if status.success() => tracing::info!("leaf restart command done"),
                Ok(Ok(status)) => tracing::error!(%status, "leaf restart command failed"),
                Ok(Err(e)) => tracing::error!(error = %e, "leaf restart command could not run"),
                Err(_) => tracing::error!("leaf restart command timed out"),
            }
            stuck_since = None;
            quiet_until = Instant::now() + self.stuck_after; // give the restarted leaf time to link
        }
    }
}
