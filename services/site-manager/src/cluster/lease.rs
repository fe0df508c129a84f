//! Leader election through the site's `edge_leader` KV bucket, with the WAN down as well.
//!
//! The leader rewrites the lease (compare-and-swap on its last revision) every third of the
//! lease time. A follower polls it and takes it over, by compare-and-swap on the revision it
//! saw, once that revision has not changed for a whole lease time by its own clock (so clocks
//! of different hosts never need to agree). A leader that cannot renew for two thirds of the
//! lease stops leading before anyone can take over; a leader that stops cleanly hands the
//! lease back at once.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Operation, Store};
use edge_types::cluster::LeaderLease;
use edge_types::schema::decode;
use edge_types::Name;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const KEY: &str = "leader";

/// Runs the election for this host; `leading` says whether this host leads right now.
pub struct Election {
    pub kv: Store,
    pub me: Name,
    pub lease: Duration,
    pub leading: watch::Sender<bool>,
}

impl Election {
    pub async fn run(self, shutdown: CancellationToken) {
        let tick = self.lease / 3;
        // Follower state: the revision last seen and when it was first seen.
        let mut seen: Option<(u64, Instant)> = None;
        // Leader state: our revision and when it was last confirmed.
        let mut held: Option<(u64, Instant)> = None;
        loop {
            held = match held {
                Some((rev, at)) => self.renew(rev, at).await,
                None => self.try_acquire(&mut seen).await,
            };
            let leading = held.is_some();
            if *self.leading.borrow() != leading {
                tracing::info!(host = %self.me, leading, "site leadership changed");
                self.leading.send_replace(leading);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
        }
        if let Some((rev, _)) = held {
            self.leading.send_replace(false);
            // Hand over at once instead of making the others wait out the lease.
            if let Err(e) = self.kv.delete_expect_revision(KEY, Some(rev)).await {
                tracing::debug!(error = %e, "lease not handed back; it will expire");
            }
        }
    }

    async fn renew(&self, rev: u64, confirmed: Instant) -> Option<(u64, Instant)> {
        let lease = LeaderLease { host: self.me.clone(), since_ms: edge_bus::time::now_ms() };
        match self.kv.update(KEY, body(&lease).into(), rev).await {
            Ok(next) => Some((next, Instant::now())),
            Err(e) => {
                use async_nats::jetstream::kv::UpdateErrorKind;
                if e.kind() == UpdateErrorKind::WrongLastRevision {
                    tracing::warn!(host = %self.me, "another host took the site lease");
                    None
                } else if confirmed.elapsed() >= self.lease * 2 / 3 {
                    tracing::warn!(host = %self.me, error = %e, "cannot renew the site lease; stepping down");
                    None
                } else {
                    Some((rev, confirmed))
                }
            }
        }
    }

    async fn try_acquire(&self, seen: &mut Option<(u64, Instant)>) -> Option<(u64, Instant)> {
        let lease = LeaderLease { host: self.me.clone(), since_ms: edge_bus::time::now_ms() };
        let entry = match self.kv.entry(KEY).await {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the site lease");
                return None;
            }
        };
        let attempt = match entry {
            None => self.kv.create(KEY, body(&lease).into()).await.ok(),
            Some(e) if e.operation != Operation::Put => self.kv.update(KEY, body(&lease).into(), e.revision).await.ok(),
            Some(e) => {
                let holder = decode::<LeaderLease>(&e.value).ok().map(|l| l.host);
                let stale = match seen {
                    Some((rev, since)) if *rev == e.revision => since.elapsed() >= self.lease,
                    _ => {
                        *seen = Some((e.revision, Instant::now()));
                        false
                    }
                };
                // Our own lease from before a restart, or one nobody renewed for a lease time.
                if holder.as_ref() == Some(&self.me) || stale {
                    self.kv.update(KEY, body(&lease).into(), e.revision).await.ok()
                } else {
                    None
                }
            }
        };
        attempt.map(|rev| {
            *seen = None;
            (rev, Instant::now())
        })
    }
}

fn body(lease: &LeaderLease) -> Vec<u8> {
    serde_json::to_vec(lease).expect("lease serializes")
}
