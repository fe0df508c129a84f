//! Images from the site's own store (`edge_blobs_<site>`, staged by registry-sync): a replica
//! whose image is in the project's store waits until every blob of it is at the site, then the
//! image is loaded into this host's Docker Engine from there (no WAN, no registry) and run by
//! digest. A blob that does not match its digest is deleted from the site store, so it is
//! staged again.

use std::collections::BTreeMap;

use async_nats::jetstream::object_store::{self, ObjectStore};
use bollard::Docker;
use edge_types::image::{parts, Blob, ImageRecord, ImageVariant};
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

/// Why an image cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {reference} has no build for this host's architecture ({arch})")]
    NoVariant { reference: String, arch: String },
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
    /// This host's CPU architecture, as Docker names it: which variant of an image it runs.
    pub arch: String,
}

impl SiteImages {
    /// The variant of `img` this host runs.
    pub fn variant<'a>(&self, img: &'a ImageRecord) -> Result<&'a ImageVariant, ImageError> {
        img.variant_for(&self.arch)
            .ok_or_else(|| ImageError::NoVariant { reference: img.reference.clone(), arch: self.arch.clone() })
    }

    /// Where `img` stands.
    pub async fn readiness(&self, img: &ImageRecord) -> Result<Readiness, ImageError> {
        let v = self.variant(img)?;
        if self.docker.inspect_image(&v.config.digest).await.is_ok() {
            return Ok(Readiness::Loaded);
        }
        let (mut present, mut total) = (0, 0);
        for b in std::iter::once(&v.config).chain(v.layers.iter()) {
            total += 1;
            let mut whole = true;
            for (name, size) in parts(b) {
                whole = match self.store.info(&name).await {
                    Ok(info) => !info.deleted && info.size as u64 == size,
                    Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => false,
                    Err(e) => return Err(ImageError::Store(e.to_string())),
                };
                if !whole {
                    break;
                }
            }
            if whole {
                present += 1;
            }
        }
        Ok(if present == total { Readiness::Staged } else { Readiness::Staging(present, total) })
    }

    /// Makes sure this host's variant of `img` is in Docker, loading it from the site store if
    /// need be; returns its image id.
    pub async fn ensure(&self, img: &ImageRecord) -> Result<String, ImageError> {
        let v = self.variant(img)?;
        if self.docker.inspect_image(&v.config.digest).await.is_ok() {
            return Ok(v.config.digest.clone());
        }
        let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let config_name = format!("{}.json", hex(&v.config.digest));
        files.insert(config_name.clone(), self.read(&v.config).await?);
        let mut layer_names = Vec::new();
        for l in &v.layers {
            let name = format!("{}.tar", hex(&l.digest));
            if !files.contains_key(&name) {
                files.insert(name.clone(), self.read(l).await?);
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
            .inspect_image(&v.config.digest)
            .await
            .map_err(|e| ImageError::Docker(format!("loaded, yet not found by digest: {e}")))?;
        tracing::info!(reference = %img.reference, digest = %img.digest, arch = %self.arch, "image loaded from the site store");
        Ok(v.config.digest.clone())
    }

    /// A blob's bytes (its parts, in order), checked against its digest.
    async fn read(&self, blob: &Blob) -> Result<Vec<u8>, ImageError> {
        let digest = blob.digest.as_str();
        let mut bytes = Vec::new();
        for (name, _) in parts(blob) {
            let mut object = match self.store.get(&name).await {
                Ok(o) => o,
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => {
                    return Err(ImageError::Missing(digest.into()))
                }
                Err(e) => return Err(ImageError::Store(e.to_string())),
            };
            object.read_to_end(&mut bytes).await.map_err(|e| ImageError::Store(e.to_string()))?;
        }
        let got = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if got != digest {
            for (name, _) in parts(blob) {
                if let Err(e) = self.store.delete(&name).await {
                    tracing::warn!(object = %name, error = %e, "cannot delete a corrupt blob");
                }
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
