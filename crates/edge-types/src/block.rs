//! Tenants and blocking: who makes a request (the operator or a tenant, from the credential's
//! account), and the blocks an operator sets on a tenant, a site or a host (`block.set`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::ApiError;
use crate::names::Name;

/// Who made a request, as the subject it arrived on says: a tenant's account can only send
/// on its own `edge.v1.api.tenant.<tenant>.>` (its imports map its plain subjects there), so
/// the tenant comes from the credential, never from a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The control plane's own account: operators and central services; acts for any tenant.
    Operator,
    Tenant(Name),
}

impl Caller {
    /// The caller of a request that arrived on `subject`.
    pub fn of_subject(subject: &str) -> Self {
        crate::subject::tenant_of_request(subject).map_or(Caller::Operator, Caller::Tenant)
    }

    /// Whether the caller may see and change what belongs to `tenant`.
    pub fn owns(&self, tenant: &Name) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Tenant(t) => t == tenant,
        }
    }

    /// The tenant a request acts for: the one it names, which a tenant's must be its own (or
    /// the default, meaning "mine"); else the error names the field at `pointer`.
    pub fn tenant_for(&self, asked: &Name, pointer: &str) -> Result<Name, ApiError> {
        match self {
            Caller::Operator => Ok(asked.clone()),
            Caller::Tenant(t) if asked == t || asked.as_str() == crate::secret::DEFAULT_TENANT => Ok(t.clone()),
            Caller::Tenant(t) => Err(ApiError::invalid(
                pointer,
                format!(
                    "invalid request: /tenant: {:?} is not yours; your credential is tenant {:?}'s",
                    asked.as_str(),
                    t.as_str()
                ),
            )),
        }
    }
}

/// Which sites a tenant's applications may run at (`tenant.sites`, operators only): a site
/// selector every one of its applications' placement must also satisfy, so a tenant cannot
/// place work on another customer's sites. Empty: any site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSites {
    pub tenant: Name,
    /// A site selector, as in `placement.sites` (e.g. `customer = acme`).
    #[schemars(length(max = 1024))]
    pub sites: String,
}

/// Prefix of the tenants' site policies in the hub's `apps` bucket.
pub const TENANT_SITES_PREFIX: &str = "tenant-sites.";

/// What a block applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BlockTarget {
    /// A tenant: its users' credentials are revoked and its applications stop everywhere.
    Tenant { tenant: Name },
    /// A site: its leaf link's credential is revoked and it gets no secrets; its workloads
    /// keep running on their own.
    Site { site: Name },
    /// A host of a site: its workloads move to the site's other hosts and its own stop.
    Host { site: Name, host: Name },
}

impl BlockTarget {
    /// KV key of the block (in the hub's `apps` bucket): `block.tenant.<t>`,
    /// `block.site.<s>`, `block.host.<s>.<h>`.
    pub fn key(&self) -> String {
        match self {
            BlockTarget::Tenant { tenant } => format!("{BLOCK_KEY_PREFIX}tenant.{tenant}"),
            BlockTarget::Site { site } => format!("{BLOCK_KEY_PREFIX}site.{site}"),
            BlockTarget::Host { site, host } => format!("{BLOCK_KEY_PREFIX}host.{site}.{host}"),
        }
    }

    /// The AUDIT subject the block is recorded on.
    pub fn audit_subject(&self) -> String {
        use crate::subject;
        match self {
            BlockTarget::Tenant { tenant } => subject::audit_tenant(tenant),
            BlockTarget::Site { site } => subject::audit_site(site),
            BlockTarget::Host { site, host } => subject::audit_host(site, host),
        }
    }
}

impl std::fmt::Display for BlockTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockTarget::Tenant { tenant } => write!(f, "tenant {tenant}"),
            BlockTarget::Site { site } => write!(f, "site {site}"),
            BlockTarget::Host { site, host } => write!(f, "host {host} of site {site}"),
        }
    }
}

/// Prefix of the blocks' keys in the hub's `apps` bucket.
pub const BLOCK_KEY_PREFIX: &str = "block.";

/// Request of `block.set` (operators only): block or unblock a tenant, a site or a host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    pub target: BlockTarget,
    /// True: block; false: unblock.
    pub blocked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub reason: Option<String>,
    /// Who asks, for the audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub actor: Option<String>,
    /// For a host: the site's account JWT re-signed by the authority with the host's
    /// credential revoked (or reinstated), delivered to the site with its host policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub account_jwt: Option<String>,
}

/// A block set or lifted: the reply of `block.set`, what `block.list` shows, and the record in
/// the hub's AUDIT stream (`edge.v1.audit.{tenant,site,host}.…`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockEvent {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Who: the operator's user name or the tool.
    #[schemars(length(max = 128))]
    pub actor: String,
    pub target: BlockTarget,
    /// True: blocked; false: unblocked.
    pub blocked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub reason: Option<String>,
    /// Applications the block stopped (a tenant's) or started again (unblocked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<Name>,
}

/// Reply to `block.list`: the blocks in force.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockListReply {
    pub blocks: Vec<BlockEvent>,
}

/// Which of a site's hosts may run workloads, on `edge.v1.desired.<shard>.<site>._hosts`: the
/// site's leader assigns nothing to a blocked host, nor, when the site's hosts are declared
/// (`allowed`), to a host not among them (unknown: rejected and listed until approved); their
/// site-managers stop what they run. The last record is all that counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteHosts {
    pub site: Name,
    #[schemars(length(max = 1024))]
    pub blocked: Vec<Name>,
    /// The hosts approved for the site (`edgectl host approve`); absent: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub allowed: Option<Vec<Name>>,
    /// Milliseconds since the Unix epoch at the hub when it last changed.
    pub updated_at_ms: u64,
    /// The site's account JWT as the authority last signed it (revoking the credentials of
    /// blocked hosts): the site's leader gives it to its leaf server, which then drops and
    /// refuses those hosts' connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub account_jwt: Option<String>,
}

impl SiteHosts {
    /// Whether `host` may run workloads.
    pub fn admits(&self, host: &Name) -> bool {
        !self.blocked.contains(host) && self.allowed.as_ref().is_none_or(|a| a.contains(host))
    }
}

/// Request of `site.hosts` (operators): approve hosts for a site (the first approval makes the
/// site's host list explicit: any other host is then unknown), remove approved ones, or go back
/// to admitting any host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteHostsChange {
    pub site: Name,
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub approve: Vec<Name>,
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub remove: Vec<Name>,
    /// Admit any host again (no list).
    #[serde(default)]
    pub any: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub actor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn a_tenant_acts_only_for_itself() {
        let t1 = Caller::of_subject(&crate::subject::tenant_api(&n("t1"), crate::subject::ApiOp::AppApply));
        assert_eq!(t1, Caller::Tenant(n("t1")));
        assert!(t1.owns(&n("t1")) && !t1.owns(&n("t2")));
        assert_eq!(t1.tenant_for(&n("default"), "/tenant").unwrap(), n("t1"));
        let e = t1.tenant_for(&n("t2"), "/tenant").unwrap_err();
        assert_eq!(e.pointer.as_deref(), Some("/tenant"));
        let op = Caller::of_subject("edge.v1.api.app.apply");
        assert!(op.owns(&n("t2")));
        assert_eq!(op.tenant_for(&n("t2"), "/tenant").unwrap(), n("t2"));
    }

    #[test]
    fn targets_have_their_own_keys_and_audit_subjects() {
        let t = BlockTarget::Host { site: n("s1"), host: n("h1") };
        assert_eq!(t.key(), "block.host.s1.h1");
        assert_eq!(t.audit_subject(), "edge.v1.audit.host.s1.h1");
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "host", "site": "s1", "host": "h1"}));
        assert!(serde_json::from_value::<BlockTarget>(serde_json::json!({"kind": "tenant", "tenant": "a", "x": 1}))
            .is_err());
    }
}
