//! Onboarding by call-home: an operator invites a site with a one-time token
//! (`edgectl site add SITE --join`); the site, on first boot, makes its own leaf-link key and
//! presents the token (`edge.v1.api.site.join.<site>`, through the shared enrolment account);
//! the centre approves it, by hand (`edgectl site approve`) or by the invitation's policy, and
//! the site receives its leaf-link credential. A token works for one key only: a replay with
//! another key is refused and audited.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::Name;

/// Request of `site.invite` (operators): `site` may join once, with the token whose SHA-256 is
/// `token_sha256` (the scheduler never sees the token itself), before `expires_at_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteInvite {
    pub site: Name,
    /// A host of the site rather than the site itself (`edgectl host invite`): it joins with
    /// its own key and receives its own credential in the site's account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Name>,
    /// Lower-case hex SHA-256 of the token.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub token_sha256: String,
    /// Milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// Approve the site as soon as it presents the token; else it waits for `site.approve`.
    #[serde(default)]
    pub auto_approve: bool,
    /// Public key of the account its user belongs to: the control account for a site's leaf
    /// link, the site's own account for a host.
    #[schemars(length(equal = 56), regex(pattern = r"^A[A-Z2-7]{55}$"))]
    pub account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub actor: Option<String>,
}

/// The scheduler's record of an invitation: the reply of `site.invite` and `site.approve`,
/// listed by `site.invites`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Invitation {
    pub invite: SiteInvite,
    pub invited_at_ms: u64,
    /// The key the site joined with (the token is spent on it), once it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_at_ms: Option<u64>,
    /// Approved (by hand, or by the invitation's policy once the site joined).
    #[serde(default)]
    pub approved: bool,
    /// Refused join attempts (wrong or replayed token, expired invitation).
    #[serde(default)]
    pub refused: u64,
}

/// Reply to `site.invites`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationList {
    pub invitations: Vec<Invitation>,
}

/// Request of `site.join.<site>`: the site's first call-home, with the invitation's token and
/// the public half of the leaf-link key it made, signed by that key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteJoin {
    pub site: Name,
    /// A host joining the site (its invitation's host), rather than the site's leaf link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Name>,
    #[schemars(length(min = 16, max = 128))]
    pub token: String,
    /// The public key of the user asked for: the site's leaf link, or the host's own.
    #[schemars(length(equal = 56), regex(pattern = r"^U[A-Z2-7]{55}$"))]
    pub public_key: String,
    /// Milliseconds since the Unix epoch (at most 5 minutes off the hub's clock).
    pub at_ms: u64,
    /// Ed25519 signature (base64url) by the key over the site (and host), `at_ms` and the key.
    #[schemars(length(min = 1, max = 256))]
    pub signature: String,
}

/// Reply to `site.join`: approved with the credential's JWT, or waiting for approval (the
/// site asks again).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteJoined {
    pub site: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Name>,
    pub approved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8192))]
    pub jwt: Option<String>,
    /// When the JWT expires, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// What happened to a site's enrolment, in the hub's AUDIT stream (`edge.v1.audit.join.<site>`):
/// invitations, joins, approvals, renewals of its leaf-link credential, and refusals of any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JoinAction {
    Invited,
    Joined,
    Approved,
    Renewed,
    Refused,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinEvent {
    pub at_ms: u64,
    pub site: Name,
    /// The host, for a host's invitation, join or approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Name>,
    pub action: JoinAction,
    #[schemars(length(max = 128))]
    pub actor: String,
    /// Why a join was refused, or the key it joined with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub detail: Option<String>,
}

/// A connection a server of the system refused for its credentials (none, unknown, expired or
/// revoked; a blocked site's leaf link redialling), from nats-server's own event
/// (`$SYS.SERVER.<id>.CLIENT.AUTH.ERR`), recorded by the scheduler in the hub's AUDIT stream
/// (`edge.v1.audit.auth.<server>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthRefusal {
    /// Milliseconds since the Unix epoch (the server's event time).
    pub at_ms: u64,
    /// The server that refused it.
    #[schemars(length(max = 256))]
    pub server: String,
    /// What connected: `client`, `leafnode`, ...
    #[schemars(length(max = 64))]
    pub kind: String,
    /// Where from (address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub host: Option<String>,
    /// The user it presented (an nkey's public key), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub user: Option<String>,
    /// The connection's name, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub name: Option<String>,
    /// The server's reason (`Authentication Failure`, `Authorization Violation`, ...).
    #[schemars(length(max = 1024))]
    pub reason: String,
    /// Identical refusals (same user, kind and reason) since the previous record, not recorded
    /// one by one: a blocked site's leaf redials every second, recorded once a minute.
    #[serde(default)]
    pub repeated: u64,
}
