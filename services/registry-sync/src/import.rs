//! `image.import`: copies an image from an OCI registry (the Distribution API, v2) into the
//! store: every platform of its index (attestation manifests skipped) as a variant of one
//! record, every blob checked against its digest (a mismatch is fetched once more, then the
//! import fails). Registries on loopback, or listed in `REGISTRY_SYNC_INSECURE_REGISTRIES`, are
//! reached over plain HTTP; others over HTTPS. Anonymous pulls and bearer tokens (the
//! `WWW-Authenticate: Bearer` challenge) are supported.

use async_nats::jetstream::object_store::ObjectStore;
use edge_types::api::{ApiError, ErrorCode};
use edge_types::image::{normalize, Blob, ImageImport, ImageRecord, ImageVariant, Platform};
use edge_types::schema::decode;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::Registry;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or config read (they are a few KiB).
const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Reference(String),
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    #[error("blob {0} from the registry does not match its digest, twice")]
    Mismatch(String),
    #[error("image store: {0}")]
    Store(String),
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Reference(_) => ApiError::invalid("/reference", format!("invalid request: {e}")),
            ImportError::Registry { .. } | ImportError::Mismatch(_) => {
                ApiError::new(ErrorCode::Unavailable, e.to_string())
            }
            ImportError::Store(_) => ApiError::new(ErrorCode::Unavailable, e.to_string()),
        }
    }
}

/// Where an image lives in a registry.
#[derive(Debug, PartialEq, Eq)]
pub struct Remote {
    /// `http://host:port` or `https://host`.
    pub base: String,
    pub repository: String,
    pub tag: String,
}

impl Remote {
    /// Parses a normalized reference that names its registry host.
    pub fn parse(reference: &str, insecure: &[String]) -> Result<Self, ImportError> {
        let (host, rest) = reference
            .split_once('/')
            .filter(|(h, _)| h.contains('.') || h.contains(':') || *h == "localhost")
            .ok_or_else(|| {
                ImportError::Reference(format!("{reference} names no registry host (host[:port]/path:tag)"))
            })?;
        let (repository, tag) =
            rest.rsplit_once(':').ok_or_else(|| ImportError::Reference(format!("{reference} has no tag")))?;
        let name = host.split(':').next().unwrap_or(host);
        let plain = name == "localhost" || name.starts_with("127.") || insecure.iter().any(|i| i == host);
        let scheme = if plain { "http" } else { "https" };
        Ok(Self { base: format!("{scheme}://{host}"), repository: repository.into(), tag: tag.into() })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<IndexEntry>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    digest: String,
    platform: Option<EntryPlatform>,
}

#[derive(Deserialize)]
struct EntryPlatform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    size: u64,
}

/// A registry session: the client and the bearer token, once one was asked for.
struct Session<'a> {
    http: &'a reqwest::Client,
    remote: &'a Remote,
    token: Option<String>,
}

impl Session<'_> {
    fn fail(&self, message: impl Into<String>) -> ImportError {
        ImportError::Registry { registry: self.remote.base.clone(), message: message.into() }
    }

    /// GETs `/v2/<repository>/<what>`, answering a bearer challenge once.
    async fn get(&mut self, what: &str, accept: &str) -> Result<reqwest::Response, ImportError> {
        let url = format!("{}/v2/{}/{what}", self.remote.base, self.remote.repository);
        for _ in 0..2 {
            let mut req = self.http.get(&url).header(ACCEPT, accept);
            if let Some(t) = &self.token {
                req = req.header(AUTHORIZATION, format!("Bearer {t}"));
            }
            let resp = req.send().await.map_err(|e| self.fail(e.to_string()))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && self.token.is_none() {
                let challenge =
                    resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                self.token = Some(self.token_for(&challenge).await?);
                continue;
            }
            if !resp.status().is_success() {
                return Err(self.fail(format!("GET {what}: {}", resp.status())));
            }
            return Ok(resp);
        }
        Err(self.fail(format!("GET {what}: unauthorized")))
    }

    /// Answers `Bearer realm="...",service="...",scope="..."` with an anonymous token.
    async fn token_for(&self, challenge: &str) -> Result<String, ImportError> {
        let params = challenge
            .strip_prefix("Bearer ")
            .ok_or_else(|| self.fail(format!("unsupported authentication {challenge:?}")))?;
        let field = |k: &str| {
            params
                .split(',')
                .find_map(|p| p.trim().strip_prefix(&format!("{k}=")).map(|v| v.trim_matches('"').to_string()))
        };
        let realm = field("realm").ok_or_else(|| self.fail("bearer challenge without realm"))?;
        let mut query = vec![];
        if let Some(s) = field("service") {
            query.push(("service", s));
        }
        query.push(("scope", field("scope").unwrap_or_else(|| format!("repository:{}:pull", self.remote.repository))));
        let url = reqwest::Url::parse_with_params(&realm, &query).map_err(|e| self.fail(e.to_string()))?;
        let resp = self.http.get(url).send().await.map_err(|e| self.fail(e.to_string()))?;
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = resp.json_bytes().await.map_err(|e| self.fail(format!("token: {e}")))?;
        t.token.or(t.access_token).ok_or_else(|| self.fail("the token service gave no token"))
    }

    /// A manifest or index, with its digest checked when it was asked for by digest.
    async fn document(&mut self, reference: &str) -> Result<Document, ImportError> {
        self.digest_ok(reference.starts_with("sha256:").then_some(reference))?;
        let resp = self.get(&format!("manifests/{reference}"), MANIFEST_TYPES).await?;
        let bytes = bounded(resp, MAX_DOCUMENT_BYTES).await.map_err(|e| self.fail(e))?;
        if reference.starts_with("sha256:") && sha256(&bytes) != reference {
            return Err(ImportError::Mismatch(reference.into()));
        }
        serde_json::from_slice(&bytes).map_err(|e| self.fail(format!("manifest {reference}: {e}")))
    }

    /// A digest the registry named must be one, before it goes into a URL or an object name.
    fn digest_ok(&self, digest: Option<&str>) -> Result<(), ImportError> {
        match digest {
            Some(d) if !edge_types::image::is_digest(d) => Err(self.fail(format!("{d:?} is not a sha256 digest"))),
            _ => Ok(()),
        }
    }

    /// Fetches a blob and checks it (twice at most).
    async fn blob(&mut self, d: &Descriptor) -> Result<Vec<u8>, ImportError> {
        self.digest_ok(Some(&d.digest))?;
        for _ in 0..2 {
            let resp = self.get(&format!("blobs/{}", d.digest), "*/*").await?;
            let bytes = bounded(resp, d.size).await.map_err(|e| self.fail(e))?;
            if bytes.len() as u64 == d.size && sha256(&bytes) == d.digest {
                return Ok(bytes);
            }
            tracing::warn!(digest = %d.digest, "blob from the registry does not match its digest; fetching it again");
        }
        Err(ImportError::Mismatch(d.digest.clone()))
    }
}

/// The body of a response, refused when longer than `max` bytes.
async fn bounded(mut resp: reqwest::Response, max: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        out.extend_from_slice(&chunk);
        if out.len() as u64 > max {
            return Err(format!("response longer than {max} bytes"));
        }
    }
    Ok(out)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

trait JsonBytes {
    async fn json_bytes<T: serde::de::DeserializeOwned>(self) -> Result<T, String>;
}

impl JsonBytes for reqwest::Response {
    async fn json_bytes<T: serde::de::DeserializeOwned>(self) -> Result<T, String> {
        let bytes = bounded(self, MAX_DOCUMENT_BYTES).await?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

/// Imports an image from its registry into the store.
pub async fn import(r: &Registry, body: &[u8]) -> Result<ImageRecord, ApiError> {
    let req: ImageImport = decode(body).map_err(edge_bus::api::invalid)?;
    let reference = normalize(&req.reference)
        .ok_or_else(|| ImportError::Reference(format!("{:?} is not an image reference", req.reference)))?;
    let remote = Remote::parse(&reference, &r.insecure)?;
    let http = r.http.as_ref().ok_or_else(|| ImportError::Registry {
        registry: remote.base.clone(),
        message: "registry-sync has no HTTP client (see its log: CA certificates missing?)".into(),
    })?;
    let record = fetch(http, &r.blobs, &reference, &remote).await?;
    crate::push::store(r, &record).await?;
    tracing::info!(%reference, digest = %record.digest, variants = record.variants.len(), size = record.size, "image imported");
    Ok(record)
}

async fn fetch(
    http: &reqwest::Client,
    store: &ObjectStore,
    reference: &str,
    remote: &Remote,
) -> Result<ImageRecord, ImportError> {
    let mut s = Session { http, remote, token: None };
    let top = s.document(&remote.tag).await?;
    let mut variants = Vec::new();
    if top.manifests.is_empty() {
        variants.push(variant(&mut s, store, top, None).await?);
    } else {
        for entry in top.manifests {
            let Some(p) = entry.platform.filter(|p| p.os != "unknown") else { continue };
            let platform = Platform { os: p.os, architecture: p.architecture, variant: p.variant };
            let doc = s.document(&entry.digest).await?;
            variants.push(variant(&mut s, store, doc, Some(platform)).await?);
        }
    }
    if variants.is_empty() {
        return Err(s.fail(format!("{reference} has no image for any platform")));
    }
    variants.truncate(16);
    Ok(ImageRecord::new(reference.into(), variants, remote.base.clone(), edge_bus::time::now_ms()))
}

/// One platform's image: its blobs copied into the store; the platform from the config when the
/// index did not give it.
async fn variant(
    s: &mut Session<'_>,
    store: &ObjectStore,
    doc: Document,
    platform: Option<Platform>,
) -> Result<ImageVariant, ImportError> {
    let config = doc.config.ok_or_else(|| s.fail(format!("not an image manifest ({})", doc.media_type)))?;
    if config.size > MAX_DOCUMENT_BYTES || doc.layers.is_empty() || doc.layers.len() > 256 {
        return Err(s.fail("manifest out of bounds (config size or layer count)"));
    }
    let mut platform = platform;
    for d in std::iter::once(&config).chain(doc.layers.iter()) {
        let present = store.info(&d.digest).await.is_ok_and(|i| !i.deleted && i.size as u64 == d.size);
        let is_config = d.digest == config.digest;
        if present && !(is_config && platform.is_none()) {
            continue;
        }
        let bytes = s.blob(d).await?;
        if is_config && platform.is_none() {
            platform = crate::push::platform_of(&bytes);
        }
        if !present {
            store.put(d.digest.as_str(), &mut bytes.as_slice()).await.map_err(|e| ImportError::Store(e.to_string()))?;
        }
    }
    let platform = platform.ok_or_else(|| s.fail("the image config names no architecture"))?;
    let blob = |d: &Descriptor| Blob { digest: d.digest.clone(), size: d.size };
    Ok(ImageVariant { platform, config: blob(&config), layers: doc.layers.iter().map(blob).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_their_registry_and_loopback_is_plain_http() {
        let r = Remote::parse("127.0.0.1:5000/team/cam:v1", &[]).unwrap();
        assert_eq!(r, Remote { base: "http://127.0.0.1:5000".into(), repository: "team/cam".into(), tag: "v1".into() });
        let r = Remote::parse("registry.example.com/cam:2", &[]).unwrap();
        assert_eq!(r.base, "https://registry.example.com");
        let r = Remote::parse("registry.lan:5000/cam:2", &["registry.lan:5000".into()]).unwrap();
        assert_eq!(r.base, "http://registry.lan:5000");
        assert!(Remote::parse("edge/busybox:v1", &[]).is_err(), "no registry host");
    }

    #[test]
    fn an_index_lists_platforms_and_attestations_are_skipped() {
        let doc: Document = serde_json::from_value(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "amd64"}},
                {"digest": "sha256:b", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"digest": "sha256:c", "platform": {"os": "unknown", "architecture": "unknown"}}
            ]
        }))
        .unwrap();
        let real: Vec<_> =
            doc.manifests.iter().filter_map(|m| m.platform.as_ref()).filter(|p| p.os != "unknown").collect();
        assert_eq!(real.len(), 2);
        assert_eq!(real[1].variant.as_deref(), Some("v8"));
    }
}
