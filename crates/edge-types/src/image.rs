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

/// One platform's build of an image: its config (whose digest is the image id Docker reports)
/// and its layers, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageVariant {
    pub platform: Platform,
    pub config: Blob,
    #[schemars(length(min = 1, max = 256))]
    pub layers: Vec<Blob>,
}

/// An image in the store: what a reference resolves to. An image pushed from Docker has one
/// variant; one imported from a registry has a variant per platform of its index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    /// Normalized reference (`:latest` added when no tag was given).
    #[schemars(length(max = 255))]
    pub reference: String,
    /// Digest of the image's content (every variant's config and layers, in order): what the
    /// app runs.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    #[schemars(length(min = 1, max = 16))]
    pub variants: Vec<ImageVariant>,
    /// Bytes of every distinct blob.
    pub size: u64,
    pub pushed_at_ms: u64,
    /// Where it came from: `docker` (a push) or the registry it was imported from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 255))]
    pub source: String,
}

impl ImageRecord {
    /// Builds a record, computing its digest and size.
    pub fn new(reference: String, variants: Vec<ImageVariant>, source: String, pushed_at_ms: u64) -> Self {
        let mut r = Self { reference, digest: String::new(), variants, size: 0, pushed_at_ms, source };
        r.digest = r.content_digest();
        r.size = r.blobs().iter().map(|b| b.size).sum();
        r
    }

    /// Every distinct blob of every variant.
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut seen = std::collections::BTreeSet::new();
        self.variants
            .iter()
            .flat_map(|v| std::iter::once(&v.config).chain(v.layers.iter()))
            .filter(|b| seen.insert(b.digest.as_str()))
            .collect()
    }

    /// The platforms it was built for.
    pub fn platforms(&self) -> Vec<&Platform> {
        self.variants.iter().map(|v| &v.platform).collect()
    }

    /// The variant a host of CPU architecture `arch` runs.
    pub fn variant_for(&self, arch: &str) -> Option<&ImageVariant> {
        self.variants.iter().find(|v| v.platform.architecture == arch)
    }

    /// sha256 over every variant's platform, config and layer digests, in order.
    fn content_digest(&self) -> String {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        for v in &self.variants {
            h.update(format!(
                "{}/{}/{}\n",
                v.platform.os,
                v.platform.architecture,
                v.platform.variant.as_deref().unwrap_or("")
            ));
            for b in std::iter::once(&v.config).chain(v.layers.iter()) {
                h.update(b.digest.as_bytes());
                h.update(b"\n");
            }
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

/// An import: copy an image from an OCI registry (every platform of its index) into the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageImport {
    /// `host[:port]/path:tag` of the registry's image.
    #[schemars(
        regex(
            pattern = r"^([a-z0-9.-]+(:[0-9]{1,5})?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
        ),
        length(max = 255)
    )]
    pub reference: String,
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

/// How far an app's images are staged at one site, as `app status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StagingProgress {
    pub blobs_present: u32,
    pub blobs_total: u32,
    pub bytes_present: u64,
    pub bytes_total: u64,
    /// Why staging is stalled, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StagingProgress {
    /// The progress of the images with these digests in a site's staging record (`None` when
    /// the record names none of them yet).
    pub fn of(staging: &SiteStaging, digests: &[&str]) -> Option<Self> {
        let mut p = Self { error: staging.error.clone(), ..Self::default() };
        let mut any = false;
        for i in staging.images.iter().filter(|i| digests.contains(&i.digest.as_str())) {
            any = true;
            p.blobs_present += i.blobs_present;
            p.blobs_total += i.blobs_total;
            p.bytes_present += i.bytes_present;
            p.bytes_total += i.bytes_total;
        }
        any.then_some(p)
    }

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

/// Bytes of one part of a blob in a site's store: a blob larger than this travels and rests as
/// parts `<digest>.<n>`, so a cut costs at most one part, not the whole layer.
pub const PART_BYTES: u64 = 8 << 20;

/// The objects that hold `blob` in a site's store, with their sizes: the blob itself when it
/// fits in one part, else its parts in order.
pub fn parts(blob: &Blob) -> Vec<(String, u64)> {
    if blob.size <= PART_BYTES {
        return vec![(blob.digest.clone(), blob.size)];
    }
    let n = blob.size.div_ceil(PART_BYTES);
    (0..n).map(|i| (format!("{}.{i}", blob.digest), PART_BYTES.min(blob.size - i * PART_BYTES))).collect()
}

/// The blob digest an object of a site's store belongs to (the name without a part suffix).
pub fn blob_of_object(name: &str) -> &str {
    name.split_once('.').map(|(d, _)| d).unwrap_or(name)
}

/// Why `host` cannot run `image` (its CPU architecture is not one the image was built for);
/// `None` when it can, or when the image's platforms are unknown.
pub fn arch_mismatch(image: &ImageRecord, host: &crate::site::HostInventory) -> Option<String> {
    if image.variant_for(&host.arch).is_some() {
        return None;
    }
    let built: Vec<String> = image.platforms().iter().map(|p| format!("{}/{}", p.os, p.architecture)).collect();
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
    fn big_blobs_travel_in_parts() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parts(&Blob { digest: d.clone(), size: 10 }), vec![(d.clone(), 10)]);
        let p = parts(&Blob { digest: d.clone(), size: 2 * PART_BYTES + 5 });
        assert_eq!(p.len(), 3);
        assert_eq!(p[2], (format!("{d}.2"), 5));
        assert_eq!(p.iter().map(|(_, s)| s).sum::<u64>(), 2 * PART_BYTES + 5);
        assert_eq!(blob_of_object(&p[1].0), d);
        assert_eq!(blob_of_object(&d), d);
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(is_digest(&d));
        assert!(!is_digest("sha256:xyz"));
        assert!(!is_digest(&d.to_uppercase()));
        let b = |c: char| Blob { digest: format!("sha256:{}", c.to_string().repeat(64)), size: 1 };
        let amd64 = Platform { os: "linux".into(), architecture: "amd64".into(), variant: None };
        let arm64 = Platform { architecture: "arm64".into(), ..amd64.clone() };
        let v = |p: &Platform, layers: Vec<Blob>| ImageVariant { platform: p.clone(), config: b('a'), layers };
        let one = ImageRecord::new("x:1".into(), vec![v(&amd64, vec![b('b'), b('c')])], String::new(), 0);
        let swapped = ImageRecord::new("x:1".into(), vec![v(&amd64, vec![b('c'), b('b')])], String::new(), 0);
        assert_ne!(one.digest, swapped.digest);
        let both = ImageRecord::new(
            "x:1".into(),
            vec![v(&amd64, vec![b('b')]), v(&arm64, vec![b('b'), b('d')])],
            String::new(),
            0,
        );
        assert_eq!(both.blobs().len(), 3, "shared blobs counted once");
        assert_eq!(both.size, 3);
        assert_eq!(both.variant_for("arm64").map(|v| v.layers.len()), Some(2));
        assert!(both.variant_for("riscv64").is_none());
    }
}
