//! `edgectl image ...`: images enter the store from the local Docker Engine. The image is
//! exported as `docker save` would, each blob (config, layers) uploaded to the hub's blob store
//! by digest unless it is there already, then `edge.v1.api.image.push` has registry-sync check
//! every blob against its digest and record the image.

use std::collections::HashMap;
use std::io::Read;

use anyhow::{bail, Context, Result};
use edge_bus::api::request;
use edge_bus::topology::{hub_js, BLOBS_HUB};
use edge_types::image::{Blob, ImageListReply, ImagePush, ImageRecord};
use edge_types::subject::ApiOp;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use crate::cli::{Global, ImageCommand};
use crate::output::print;
use crate::{connect, REQUEST_TIMEOUT};

pub async fn run(cmd: ImageCommand, global: &Global) -> Result<()> {
    let client = connect(global).await?;
    match cmd {
        ImageCommand::Push { image } => {
            let docker = bollard::Docker::connect_with_local_defaults().context("cannot reach the Docker Engine")?;
            let pushed = push(&client, &docker, &image).await?;
            let r = &pushed.record;
            println!(
                "pushed {} {} ({} bytes; {} blobs sent, {} already stored)",
                r.reference, r.digest, r.size, pushed.sent, pushed.skipped
            );
        }
        ImageCommand::Import { reference } => {
            let req = edge_types::image::ImageImport { reference };
            // Layers can be large: allow the registry time.
            let r: ImageRecord =
                request(&client, ApiOp::ImageImport, &req, std::time::Duration::from_secs(600)).await?;
            let platforms: Vec<String> = r.platforms().iter().map(|p| format!("{}/{}", p.os, p.architecture)).collect();
            println!(
                "imported {} {} ({}; {} bytes) from {}",
                r.reference,
                r.digest,
                platforms.join(", "),
                r.size,
                r.source
            );
        }
        ImageCommand::List => {
            let r: ImageListReply =
                request(&client, ApiOp::ImageList, &edge_types::api::Empty {}, REQUEST_TIMEOUT).await?;
            let rows = r
                .images
                .iter()
                .map(|i| {
                    let platforms: Vec<String> =
                        i.platforms().iter().map(|p| format!("{}/{}", p.os, p.architecture)).collect();
                    vec![
                        i.reference.clone(),
                        i.digest[..19].to_string(),
                        platforms.join(","),
                        i.source.clone(),
                        i.size.to_string(),
                    ]
                })
                .collect();
            print(global.output, &r, &["REFERENCE", "DIGEST", "PLATFORMS", "SOURCE", "BYTES"], rows);
        }
    }
    Ok(())
}

/// What a push did.
pub struct Pushed {
    pub record: ImageRecord,
    /// Blobs uploaded, and blobs the store already had.
    pub sent: usize,
    pub skipped: usize,
}

/// Pushes `image` from `docker` into the store at the hub `client` is connected to.
pub async fn push(client: &async_nats::Client, docker: &bollard::Docker, image: &str) -> Result<Pushed> {
    let Some(reference) = edge_types::image::normalize(image) else {
        bail!("{image:?} is not an image reference");
    };
    let mut tar = Vec::new();
    let mut export = docker.export_image(&reference);
    while let Some(chunk) = export.next().await {
        tar.extend_from_slice(&chunk.with_context(|| format!("cannot export {reference} from Docker"))?);
    }
    let (config, layers) = unpack(&tar)?;
    let store = hub_js(client)
        .get_object_store(BLOBS_HUB)
        .await
        .context("the hub has no image store: is registry-sync running?")?;
    let (mut sent, mut skipped) = (0, 0);
    let blob_of = |bytes: &[u8]| Blob {
        digest: format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
        size: bytes.len() as u64,
    };
    let config_blob = blob_of(&config);
    let layer_blobs: Vec<Blob> = layers.iter().map(|l| blob_of(l)).collect();
    for (blob, bytes) in std::iter::once((&config_blob, &config)).chain(layer_blobs.iter().zip(layers.iter())) {
        match store.info(&blob.digest).await {
            Ok(info) if !info.deleted && info.size as u64 == blob.size => skipped += 1,
            _ => {
                store
                    .put(blob.digest.as_str(), &mut bytes.as_slice())
                    .await
                    .with_context(|| format!("cannot upload blob {}", blob.digest))?;
                sent += 1;
            }
        }
    }
    let req = ImagePush { reference, config: config_blob, layers: layer_blobs };
    let record: ImageRecord = request(client, ApiOp::ImagePush, &req, REQUEST_TIMEOUT).await?;
    Ok(Pushed { record, sent, skipped })
}

/// The config and the layers (in order) of the first image of a `docker save` archive.
fn unpack(archive: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut a = tar::Archive::new(archive);
    for entry in a.entries().context("the export is not a tar archive")? {
        let mut entry = entry.context("the export is not a tar archive")?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path =
            entry.path().context("bad path in the export")?.to_string_lossy().trim_start_matches("./").to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).context("cannot read the export")?;
        files.insert(path, bytes);
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Manifest {
        config: String,
        layers: Vec<String>,
    }
    let manifest = files.get("manifest.json").context("the export has no manifest.json")?;
    let manifests: Vec<Manifest> =
        serde_json::from_slice(manifest).context("the export's manifest.json is not understood")?;
    let m = manifests.into_iter().next().context("the export holds no image")?;
    let mut take = |p: &str| files.remove(p).with_context(|| format!("the export lacks {p}"));
    let config = take(&m.config)?;
    let layers = m.layers.iter().map(|l| take(l)).collect::<Result<Vec<_>>>()?;
    Ok((config, layers))
}
