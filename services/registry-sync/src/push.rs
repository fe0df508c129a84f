//! `image.push` and `image.list`: an image enters the store once every blob it names is in the
//! hub's blob store with the content its digest says; a blob that does not match is deleted
//! (the pusher uploads it again) and the push is refused naming the field.

use async_nats::jetstream::object_store::ObjectStore;
use edge_bus::kv;
use edge_types::api::ApiError;
use edge_types::image::{
    normalize, reference_key, Blob, ImageListReply, ImagePush, ImageRecord, ImageVariant, Platform,
};
use edge_types::schema::decode;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use crate::error::RegistryError;
use crate::Registry;

/// Largest image config read (they are a few KiB).
const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Checks and records a pushed image.
pub async fn push(r: &Registry, body: &[u8]) -> Result<ImageRecord, ApiError> {
    let p: ImagePush = decode(body).map_err(edge_bus::api::invalid)?;
    let Some(reference) = normalize(&p.reference) else {
        return Err(ApiError::invalid(
            "/reference",
            format!("invalid request: {:?} is not an image reference", p.reference),
        ));
    };
    let config = check_blob(&r.blobs, &p.config, "/config").await?;
    for (i, layer) in p.layers.iter().enumerate() {
        check_blob(&r.blobs, layer, &format!("/layers/{i}")).await?;
    }
    let platform = platform_of(&config)
        .ok_or_else(|| ApiError::invalid("/config", "invalid request: the config blob is not an image config"))?;
    let variant = ImageVariant { platform, config: p.config, layers: p.layers };
    let record = ImageRecord::new(reference.clone(), vec![variant], "docker".into(), edge_bus::time::now_ms());
    store(r, &record).await?;
    tracing::info!(%reference, digest = %record.digest, size = record.size, "image pushed");
    Ok(record)
}

/// Records an image under its reference and starts staging.
pub async fn store(r: &Registry, record: &ImageRecord) -> Result<(), ApiError> {
    let key = reference_key(&record.reference);
    let bytes = serde_json::to_vec(record).expect("records serialize");
    r.images.put(&key, bytes.into()).await.map_err(RegistryError::js)?;
    r.stage_now.raise();
    Ok(())
}

/// Every image in the store.
pub async fn list(r: &Registry, body: &[u8]) -> Result<ImageListReply, ApiError> {
    let _: edge_types::api::Empty = decode(body).map_err(edge_bus::api::invalid)?;
    let mut images: Vec<ImageRecord> = kv::list::<ImageRecord>(&r.images, "")
        .await
        .map_err(RegistryError::from)?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    images.sort_by(|a, b| a.reference.cmp(&b.reference));
    Ok(ImageListReply { images })
}

/// Reads blob `b` from the store and checks its size and digest; returns its bytes when it is
/// small enough to be a config (else an empty vector). A blob that does not match is deleted.
async fn check_blob(store: &ObjectStore, b: &Blob, field: &str) -> Result<Vec<u8>, ApiError> {
    let missing = || {
        ApiError::invalid(
            format!("{field}/digest"),
            format!("invalid request: blob {} is not in the blob store; upload it first", b.digest),
        )
    };
    let mut object = match store.get(&b.digest).await {
        Ok(o) => o,
        Err(e) if e.kind() == async_nats::jetstream::object_store::GetErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(RegistryError::js(e).into()),
    };
    let (digest, size, kept) = digest_of(&mut object).await.map_err(RegistryError::js)?;
    if digest != b.digest || size != b.size {
        if let Err(e) = store.delete(&b.digest).await {
            tracing::warn!(digest = %b.digest, error = %e, "cannot delete a corrupt blob");
        }
        tracing::warn!(expected = %b.digest, got = %digest, size, "blob does not match its digest; deleted");
        return Err(ApiError::invalid(
            format!("{field}/digest"),
            format!(
                "invalid request: blob {} does not match its digest or size; it was deleted, upload it again",
                b.digest
            ),
        ));
    }
    Ok(kept)
}

/// sha256 digest and size of everything `r` yields, and the bytes when there are at most
/// [`MAX_CONFIG_BYTES`].
pub async fn digest_of(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> std::io::Result<(String, u64, Vec<u8>)> {
    let mut h = Sha256::new();
    let mut kept = Vec::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
        if kept.len() + n <= MAX_CONFIG_BYTES {
            kept.extend_from_slice(&buf[..n]);
        }
    }
    if size as usize > MAX_CONFIG_BYTES {
        kept.clear();
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), size, kept))
}

/// The platform an image config declares (`os`, `architecture`, `variant`).
pub fn platform_of(config: &[u8]) -> Option<Platform> {
    let v: serde_json::Value = serde_json::from_slice(config).ok()?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).filter(|s| !s.is_empty()).map(str::to_string);
    Some(Platform {
        os: text("os").unwrap_or_else(|| "linux".into()),
        architecture: text("architecture")?,
        variant: text("variant"),
    })
}
