//! Secrets: what applications reference, what the `secrets` service is asked, and what travels
//! to a site. A value is plaintext only in a `put`/`rotate` request and inside a sealed payload;
//! every other message carries metadata or ciphertext. `Debug` of a value never shows it.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::Name;

/// The tenant of what names none: applications and secrets made by operators without one.
pub const DEFAULT_TENANT: &str = "default";

/// Whether `t` is the default tenant (left out when serializing).
pub fn is_default_tenant(t: &Name) -> bool {
    t.as_str() == DEFAULT_TENANT
}
/// Largest secret value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// How a service receives a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The secret's name (in tenant `default`).
    pub name: Name,
    /// Deliver it as this environment variable; absent: as the file `/run/secrets/<name>`
    /// (read-only, on a tmpfs of the host, never on disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"))]
    pub env: Option<String>,
    /// What a new value does to running containers: `restart` (default) replaces them;
    /// `in-place` rewrites the file and leaves them running (files only).
    #[serde(default, skip_serializing_if = "OnRotate::is_default")]
    pub on_rotate: OnRotate,
}

/// What a rotated secret does to the containers that use it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnRotate {
    #[default]
    Restart,
    InPlace,
}

impl OnRotate {
    fn is_default(&self) -> bool {
        *self == OnRotate::Restart
    }
}

/// A secret value. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SecretValue(#[schemars(length(min = 1, max = 65536))] pub String);

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<{} bytes redacted>)", self.0.len())
    }
}

pub fn default_tenant() -> Name {
    Name::new(DEFAULT_TENANT).expect("valid")
}

/// Request of `secret.put` (a new secret) and `secret.rotate` (a new value of an existing one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretWrite {
    #[serde(default = "default_tenant")]
    pub tenant: Name,
    pub name: Name,
    pub value: SecretValue,
    /// Who asks, for the audit trail (until requests are authenticated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub actor: Option<String>,
}

/// Names one secret (`secret.describe`, `secret.delete`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretName {
    #[serde(default = "default_tenant")]
    pub tenant: Name,
    pub name: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub actor: Option<String>,
}

/// Request of `secret.list`: every secret of a tenant (`default` when absent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretListRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Name>,
}

/// One version of a secret: metadata only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretVersion {
    pub version: u64,
    pub created_at_ms: u64,
    pub created_by: String,
    pub size_bytes: u64,
}

/// What `put`, `rotate`, `describe` and `list` show of a secret: never its value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretInfo {
    pub tenant: Name,
    pub name: Name,
    /// The current version.
    pub version: u64,
    /// Every version, oldest first (only the current one's value is kept).
    pub versions: Vec<SecretVersion>,
    /// Applications that reference it.
    pub apps: Vec<Name>,
    /// Sites it is delivered to now (sealed to each site's key).
    pub sites: Vec<Name>,
}

/// Reply to `secret.list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretListReply {
    pub secrets: Vec<SecretInfo>,
}

/// Reply to `secret.delete`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretDeleteReply {
    pub tenant: Name,
    pub name: Name,
}

/// A secret as the hub stores it (bucket `edge_secrets`, key `<tenant>.<name>`): metadata and
/// the current value encrypted with the tenant's data key, which the master key wraps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoredSecret {
    pub tenant: Name,
    pub name: Name,
    pub version: u64,
    pub versions: Vec<SecretVersion>,
    /// Base64 of nonce and XSalsa20-Poly1305 box of the current value, bound to
    /// `<tenant>/<name>/<version>`.
    #[schemars(length(max = 131072))]
    pub ciphertext: String,
}

/// A secret on its way to one site (`edge.v1.desired.<shard>.<site>._secret.<tenant>.<name>`): sealed
/// to the site's public key by the `secrets` service, or a withdrawal (no `sealed`), which
/// replaces the ciphertext at the site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SealedSecret {
    pub site: Name,
    pub tenant: Name,
    pub name: Name,
    pub version: u64,
    /// The `secrets` service's public xkey (curve25519), to open the box with.
    #[schemars(length(equal = 56), regex(pattern = r"^X[A-Z2-7]{55}$"))]
    pub sender: String,
    /// The site public xkey it is sealed to.
    #[schemars(length(equal = 56), regex(pattern = r"^X[A-Z2-7]{55}$"))]
    pub recipient: String,
    /// Base64 of the xkey box of a [`SecretPayload`]; absent for a withdrawal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 131072))]
    pub sealed: Option<String>,
}

/// The plaintext inside [`SealedSecret::sealed`]: the site checks every field against the
/// envelope and itself, so a box replayed to another site, for another secret or of an older
/// version is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretPayload {
    pub site: Name,
    pub tenant: Name,
    pub name: Name,
    pub version: u64,
    pub sealed_at_ms: u64,
    pub value: SecretValue,
}

/// Request of `site.rotate-key`: the site makes a new key pair, registers its public half, and
/// the secrets service re-seals everything the site holds to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteRef {
    pub site: Name,
}

/// Travels to the site with its desired state (`edge.v1.desired.<shard>.<site>._rekey`); reply to
/// `site.rotate-key`. A site rotates once per request: it records the last `requested_at_ms`
/// it acted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteRekey {
    pub site: Name,
    pub requested_at_ms: u64,
}

/// What happened to a secret, for the audit trail (hub stream `AUDIT`, and the site's events).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Stored,
    Rotated,
    Deleted,
    Distributed,
    Withdrawn,
    /// A site opened the secret to give it to a container.
    Read,
    /// A site refused a sealed payload (tampered, for another site, replayed).
    Rejected,
}

/// One audit event: who did what to which secret, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    pub at_ms: u64,
    /// Who: the requester, `secrets` for distribution, `site-manager/<site>/<host>` at a site.
    #[schemars(length(max = 128))]
    pub actor: String,
    pub action: AuditAction,
    pub tenant: Name,
    pub name: Name,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<Name>,
    /// For a read, the container it went to; for a rejection, the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_value() {
        let w = SecretWrite {
            tenant: default_tenant(),
            name: Name::new("db").unwrap(),
            value: SecretValue("hunter2".into()),
            actor: None,
        };
        let shown = format!("{w:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("7 bytes redacted"), "{shown}");
    }
}
