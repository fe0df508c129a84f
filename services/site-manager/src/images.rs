//! Images from the site's own store (`edge_blobs_<site>`, staged by registry-sync): a replica
//! whose image is in the project's store waits until every blob of it is at the site, then the
//! image is loaded into this host's Docker Engine from there (no WAN, no registry) and run by
//! digest. A blob that does not match its digest is deleted from the site store, so it is
//! staged again.

use std::collections::BTreeMap;

use async_nats::jetstream::object_store::{self, ObjectStore};
use bollard::Docker;
use edge_types::image::ImageRecord;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

/// Why an image cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("blob {0} is not at the site yet")]
    Missing(String),
    #[error("blob {0} at the site does not match its digest; deleted, to be staged again")]
    Corrupt(String),
    #[error("site image store: {0}")]
    Store(String),
    #[error("loading into Docker: {0}")]
    Docker(String),
}

/// Where an image stands on this host.
#[derive(Debug, PartialEq, Eq)]
pub enum Readiness {
    /// In Docker already.
    Loaded,
    /// Every blob is at the site: it can be loaded.
    Staged,
    /// Blobs present of the total.
    Staging(u32, u32),
}

#[derive(Clone)]
pub struct SiteImages {
    pub docker: Docker,
    pub store: ObjectStore,
}

impl SiteImages {
    /// Where `img` stands.
    pub async fn readiness(&self, img: &ImageRecord) -> Result<Readiness, ImageError> {
        if self.docker.inspect_image(&img.config.digest).await.is_ok() {
            return Ok(Readiness::Loaded);
        }
        let (mut present, mut total) = (0, 0);
        for b in img.blobs() {
            total += 1;
            match self.store.info(&b.digest).await {
                Ok(info) if !info.deleted && info.size as u64 == b.size => present += 1,
                Ok(_) => {}
                Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::Store(e.to_string())),
            }
        }
        Ok(if present == total { Readiness::Staged } else { Readiness::Staging(present, total) })
    }

    /// Makes sure `img` is in Docker, loading it from the site store if need be.
    pub async fn ensure(&self, img: &ImageRecord) -> Result<(), ImageError> {
        if self.docker.inspect_image(&img.config.digest).await.is_ok() {
            return Ok(());
        }
        let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let config_name = format!("{}.json", hex(&img.config.digest));
        files.insert(config_name.clone(), self.read(&img.config.digest).await?);
        let mut layer_names = Vec::new();
        for l in &img.layers {
            let name = format!("{}.tar", hex(&l.digest));
            if !files.contains_key(&name) {
                files.insert(name.clone(), self.read(&l.digest).await?);
            }
            layer_names.push(name);
        }
        let manifest =
            serde_json::json!([{ "Config": config_name, "RepoTags": [img.reference], "Layers": layer_names }]);
        files.insert("manifest.json".into(), serde_json::to_vec(&manifest).expect("manifest serializes"));
        let archive = archive(&files).map_err(|e| ImageError::Docker(e.to_string()))?;
        let opts = bollard::query_parameters::ImportImageOptionsBuilder::default().quiet(true).build();
        let mut load = self.docker.import_image(opts, bollard::body_full(archive.into()), None);
        while let Some(step) = load.next().await {
            step.map_err(|e| ImageError::Docker(e.to_string()))?;
        }
        self.docker
            .inspect_image(&img.config.digest)
            .await
            .map_err(|e| ImageError::Docker(format!("loaded, yet not found by digest: {e}")))?;
        tracing::info!(reference = %img.reference, digest = %img.digest, "image loaded from the site store");
        Ok(())
    }

    /// A blob's bytes, checked against its digest.
    async fn read(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let mut object = match self.store.get(digest).await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => {
                return Err(ImageError::Missing(digest.into()))
            }
            Err(e) => return Err(ImageError::Store(e.to_string())),
        };
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await.map_err(|e| ImageError::Store(e.to_string()))?;
        let got = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if got != digest {
            if let Err(e) = self.store.delete(digest).await {
                tracing::warn!(%digest, error = %e, "cannot delete a corrupt blob");
            }
            tracing::error!(%digest, %got, "blob at the site does not match its digest; deleted");
            return Err(ImageError::Corrupt(digest.into()));
        }
        Ok(bytes)
    }
}

/// A tar archive of `files`, as `docker load` takes it.
fn archive(files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, bytes.as_slice())?;
    }
    b.into_inner()
}
