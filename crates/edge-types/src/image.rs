//! Container images in the project's own store: content by digest (config and layers as blobs
//! in the hub's object store), an image record per reference, and what each site holds. Apps
//! name images by reference; a reference found in the store is resolved at apply time to its
//! record, staged at every site the app is placed at, and run by digest there.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::Name;

/// One blob (an image config or a layer) by digest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Blob {
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    /// Bytes.
    #[schemars(range(max = 68719476736u64))]
    pub size: u64,
}

/// An OS and CPU architecture an image runs on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    #[schemars(length(min = 1, max = 32))]
    pub os: String,
    /// Go's names, as Docker reports them: `amd64`, `arm64`, `arm`, ...
    #[schemars(length(min = 1, max = 32))]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16))]
    pub variant: Option<String>,
}

/// A push: the blobs of an image already uploaded to the hub's blob store (`edge_blobs`,
/// object name = digest), to be checked and recorded under `reference`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagePush {
    #[schemars(
        regex(
            pattern = r"^([a-z0-9.-]+(:[0-9]{1,5})?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
        ),
        length(max = 255)
    )]
    pub reference: String,
    pub config: Blob,
    #[schemars(length(min = 1, max = 256))]
    pub layers: Vec<Blob>,
}

/// An image in the store: what a reference resolves to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    /// Normalized reference (`:latest` added when no tag was given).
    #[schemars(length(max = 255))]
    pub reference: String,
    /// Digest of the image's content (config and layers, in order): what the app runs.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    /// The image config; its digest is the image id Docker reports.
    pub config: Blob,
    #[schemars(length(min = 1, max = 256))]
    pub layers: Vec<Blob>,
    /// Platforms the image runs on (from its config).
    #[schemars(length(max = 16))]
    pub platforms: Vec<Platform>,
    /// Bytes of config and layers.
    pub size: u64,
    pub pushed_at_ms: u64,
}

impl ImageRecord {
    /// Every blob of the image: the config, then the layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }

    /// The content digest of a config and its layers (sha256 over their digests, in order).
    pub fn content_digest(config: &Blob, layers: &[Blob]) -> String {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        for b in std::iter::once(config).chain(layers) {
            h.update(b.digest.as_bytes());
            h.update(b"\n");
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

/// The images in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageListReply {
    pub images: Vec<ImageRecord>,
}

/// How far one image is staged at one site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageStaging {
    pub reference: String,
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    pub blobs_present: u32,
    pub blobs_total: u32,
    pub bytes_present: u64,
    pub bytes_total: u64,
}

impl ImageStaging {
    pub fn complete(&self) -> bool {
        self.blobs_present == self.blobs_total
    }
}

/// What registry-sync has staged at a site (bucket `edge_staging`, key = site).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteStaging {
    pub site: Name,
    pub images: Vec<ImageStaging>,
    /// Bytes sent to the site since registry-sync started.
    pub bytes_sent: u64,
    /// Why staging is stalled (the site unreachable, a blob missing at the hub), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub updated_at_ms: u64,
}

/// Why `host` cannot run `image` (its CPU architecture is not one the image was built for);
/// `None` when it can, or when the image's platforms are unknown.
pub fn arch_mismatch(image: &ImageRecord, host: &crate::site::HostInventory) -> Option<String> {
    if image.platforms.is_empty() || image.platforms.iter().any(|p| p.architecture == host.arch) {
        return None;
    }
    let built: Vec<String> = image.platforms.iter().map(|p| format!("{}/{}", p.os, p.architecture)).collect();
    Some(format!("image {} is built for {}, the host is {}", image.reference, built.join(", "), host.arch))
}

/// A reference with `:latest` added when it has no tag (`None` when it is not a valid
/// reference).
pub fn normalize(reference: &str) -> Option<String> {
    if reference.len() > 255 || !valid_reference(reference) {
        return None;
    }
    let last = reference.rsplit('/').next().unwrap_or(reference);
    Some(if last.contains(':') { reference.to_string() } else { format!("{reference}:latest") })
}

fn valid_reference(r: &str) -> bool {
    // Checked by hand rather than by regex to keep this crate free of a regex engine.
    let (path, tag) = match r.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, Some(t)),
        _ => (r, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return false;
        }
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 1 && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost") {
        let host = parts.remove(0);
        let (name, port) = host.split_once(':').map(|(h, p)| (h, Some(p))).unwrap_or((host, None));
        let host_ok = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'));
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
        if !host_ok || !port_ok {
            return false;
        }
    }
    !parts.is_empty()
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && p.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        })
}

/// The KV key of a normalized reference (`:` is not allowed in keys; `=` is not allowed in
/// references, so the mapping is one to one).
pub fn reference_key(reference: &str) -> String {
    reference.replace(':', "=")
}

/// Whether `s` is a content digest.
pub fn is_digest(s: &str) -> bool {
    s.len() == 71 && s.starts_with("sha256:") && s[7..].chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_checked_and_normalized() {
        assert_eq!(normalize("edge/busybox:v1").as_deref(), Some("edge/busybox:v1"));
        assert_eq!(normalize("busybox").as_deref(), Some("busybox:latest"));
        assert_eq!(normalize("localhost:5000/team/app").as_deref(), Some("localhost:5000/team/app:latest"));
        assert_eq!(normalize("registry.example.com/a/b:1.2").as_deref(), Some("registry.example.com/a/b:1.2"));
        for bad in ["", "Edge/x", "a//b", "a:", "a:-x", "a/b:c/d", "a b", "x:=y", "-a"] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
        assert_eq!(reference_key("localhost:5000/a:v1"), "localhost=5000/a=v1");
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(is_digest(&d));
        assert!(!is_digest("sha256:xyz"));
        assert!(!is_digest(&d.to_uppercase()));
        let b = |c: char| Blob { digest: format!("sha256:{}", c.to_string().repeat(64)), size: 1 };
        assert_ne!(
            ImageRecord::content_digest(&b('a'), &[b('b'), b('c')]),
            ImageRecord::content_digest(&b('a'), &[b('c'), b('b')])
        );
    }
}
