//! Removes from this host's Docker Engine the images that came from the site's store and that
//! no app at the site has needed for `grace`. An image is the store's when its id (the config
//! digest) is a blob of the site store or was an image of a desired app since this process
//! started; others (the host's own) are never touched. Removal is not forced: an image a
//! container still uses, or that has other tags, stays.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::object_store::ObjectStore;
use bollard::Docker;
use tokio_util::sync::CancellationToken;

use crate::desired::DesiredMap;

pub struct ImageGc {
    pub docker: Docker,
    pub store: ObjectStore,
    pub desired: DesiredMap,
    pub grace: Duration,
    /// Store images seen in desired state.
    seen: HashSet<String>,
    /// Store images no app needs, since when.
    unneeded: HashMap<String, Instant>,
}

impl ImageGc {
    pub fn new(docker: Docker, store: ObjectStore, desired: DesiredMap, grace: Duration) -> Self {
        Self { docker, store, desired, grace, seen: HashSet::new(), unneeded: HashMap::new() }
    }

    /// Sweeps every quarter of the grace period (at most every minute) until shutdown.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let every = (self.grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.sweep().await {
                tracing::debug!(error = %e, "image sweep failed; next one retries");
            }
        }
    }

    async fn sweep(&mut self) -> Result<(), bollard::errors::Error> {
        let needed: HashSet<String> = {
            let desired = self.desired.lock().expect("desired lock");
            desired
                .values()
                .flat_map(|d| d.images.values().flat_map(|i| i.variants.iter().map(|v| v.config.digest.clone())))
                .collect()
        };
        self.seen.extend(needed.iter().cloned());
        let images = self.docker.list_images(None::<bollard::query_parameters::ListImagesOptions>).await?;
        let present: HashSet<String> = images.iter().map(|i| i.id.clone()).collect();
        self.unneeded.retain(|id, _| present.contains(id) && !needed.contains(id));
        for image in images {
            let id = image.id;
            if needed.contains(&id) || !self.ours(&id).await {
                continue;
            }
            let since = *self.unneeded.entry(id.clone()).or_insert_with(Instant::now);
            if since.elapsed() < self.grace {
                continue;
            }
            match self.docker.remove_image(&id, None::<bollard::query_parameters::RemoveImageOptions>, None).await {
                Ok(_) => {
                    self.unneeded.remove(&id);
                    tracing::info!(image = %id, tags = ?image.repo_tags, "image no app needs removed");
                }
                Err(e) => tracing::debug!(image = %id, error = %e, "image kept (in use or tagged elsewhere)"),
            }
        }
        Ok(())
    }

    async fn ours(&self, id: &str) -> bool {
        self.seen.contains(id) || self.store.info(id).await.is_ok_and(|i| !i.deleted)
    }
}
