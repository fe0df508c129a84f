//! The one subject grammar of the bus, version `v1`. Every subject is built and parsed here;
//! no other code splits subjects on `.`.
//!
//! ```text
//! edge.v1.api.<noun>.<verb>            request/reply API of the central services (app, site: scheduler;
//!                                      secret: secrets; alert, telemetry: telemetry; image: registry-sync)
//! edge.v1.api.site.register.<site>     call-home of a site (the site is the caller, from its credential)
//! edge.v1.api.site.renew.<site>        a site renews its leaf-link credential (proved by its key;
//!                                      reachable without the leaf link, through the enrolment account)
//! edge.v1.api.site.join.<site>         a new site's first call-home with its one-time token
//! edge.v1.api.tenant.<tenant>.<noun>.<verb>  a tenant's request: its account imports `app.*` and
//!                                      `secret.*` under their plain names and the hub sees them
//!                                      here, so the tenant comes from the credential
//! edge.v1.desired.<shard>.<site>.<app>        desired state of one app at one site
//! edge.v1.desired.<shard>.<site>._watermark   how far the hub has processed the site's events
//! edge.v1.desired.<shard>.<site>._secret.<tenant>.<name>   a secret sealed to the site (or withdrawn)
//! edge.v1.desired.<shard>.<site>._rekey       the site must make a new key pair
//! edge.v1.site.<site>.status.<app>     an app's observed status at a site (site stream SITE_EVENTS)
//! edge.v1.site.<site>.registration     call-home record of a site and its hosts (SITE_EVENTS)
//! edge.v1.site.<site>.audit            audit events of a site: secrets read, refused (SITE_EVENTS)
//! edge.v1.audit.secret.<tenant>.<name> audit events of the secrets service (hub stream AUDIT)
//! edge.v1.audit.site.<site>            a site blocked or unblocked (hub stream AUDIT)
//! edge.v1.audit.tenant.<tenant>        a tenant blocked or unblocked (hub stream AUDIT)
//! edge.v1.audit.host.<site>.<host>     a host blocked or unblocked (hub stream AUDIT)
//! edge.v1.audit.join.<site>            a site invited, joined, approved, or a join refused (AUDIT)
//! edge.v1.audit.auth.<server>          a connection refused for its credentials (AUDIT)
//! edge.v1.hb.<site>                    liveness heartbeat, core NATS only (not stored)
//! edge.v1.alert.<kind>.<name>          an alert firing or resolving (hub stream ALERTS)
//! edge.v1.logs.<site>                  logs on demand from a site's hosts (core request)
//! edge.v1.tm.<site>.stats.<host>       a host's and its containers' resource use (site TELEMETRY)
//! edge.v1.tm.<site>.event.<host>       containers' lifecycle events (site TELEMETRY)
//! edge.v1.dlv.<site>.up.>              stream-source deliveries from the site to the hub
//! edge.v1.dlv.<site>.down.>            stream-source deliveries from the hub to the site
//! _INBOX.site.<site>.>                 replies to requests made at the site
//! ```
//!
//! The per-site tokens of the last three let the hub allow a site's leaf link exactly its own
//! subjects (`edge_auth::scope::site_leaf`): a site cannot read or forge another's traffic.
//!
//! `<shard>` is the site's desired-state shard, [`desired_shard`]: two digits, a fixed hash of
//! the site id modulo [`DESIRED_SHARDS`]. The hub keeps each shard in its own stream
//! (`DESIRED_<shard>`) and a site sources only its shard's stream, so that following one's own
//! subjects costs a site a walk over its shard, not over every site's messages (see
//! `docs/benchmarks.md`, rollout to 10,000 sites).

use crate::names::Name;

/// First two tokens of every subject: namespace and grammar version.
pub const PREFIX: &str = "edge.v1";

/// Request/reply operations served by the central services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiOp {
    AppApply,
    AppList,
    AppGet,
    AppStatus,
    AppDelete,
    AppPlan,
    AppRollout,
    AppPause,
    AppResume,
    AppHistory,
    AppRollback,
    AppEvents,
    AppSend,
    SiteList,
    SiteLabel,
    SiteRegister,
    SiteRenew,
    SiteInvite,
    SiteInvites,
    SiteApprove,
    SiteJoin,
    SiteHosts,
    SiteRotateKey,
    SecretPut,
    SecretRotate,
    SecretList,
    SecretDescribe,
    SecretDelete,
    AlertList,
    TelemetryResources,
    ImagePush,
    ImageImport,
    ImageList,
    BlockSet,
    BlockList,
    TenantSites,
}

impl ApiOp {
    pub const ALL: [ApiOp; 36] = [
        ApiOp::AppApply,
        ApiOp::AppList,
        ApiOp::AppGet,
        ApiOp::AppStatus,
        ApiOp::AppDelete,
        ApiOp::AppPlan,
        ApiOp::AppRollout,
        ApiOp::AppPause,
        ApiOp::AppResume,
        ApiOp::AppHistory,
        ApiOp::AppRollback,
        ApiOp::AppEvents,
        ApiOp::AppSend,
        ApiOp::SiteList,
        ApiOp::SiteLabel,
        ApiOp::SiteRegister,
        ApiOp::SiteRenew,
        ApiOp::SiteInvite,
        ApiOp::SiteInvites,
        ApiOp::SiteApprove,
        ApiOp::SiteJoin,
        ApiOp::SiteHosts,
        ApiOp::SiteRotateKey,
        ApiOp::SecretPut,
        ApiOp::SecretRotate,
        ApiOp::SecretList,
        ApiOp::SecretDescribe,
        ApiOp::SecretDelete,
        ApiOp::AlertList,
        ApiOp::TelemetryResources,
        ApiOp::ImagePush,
        ApiOp::ImageImport,
        ApiOp::ImageList,
        ApiOp::BlockSet,
        ApiOp::BlockList,
        ApiOp::TenantSites,
    ];

    /// `(noun, verb)` of the operation.
    pub fn parts(self) -> (&'static str, &'static str) {
        match self {
            ApiOp::AppApply => ("app", "apply"),
            ApiOp::AppList => ("app", "list"),
            ApiOp::AppGet => ("app", "get"),
            ApiOp::AppStatus => ("app", "status"),
            ApiOp::AppDelete => ("app", "delete"),
            ApiOp::AppPlan => ("app", "plan"),
            ApiOp::AppRollout => ("app", "rollout"),
            ApiOp::AppPause => ("app", "pause"),
            ApiOp::AppResume => ("app", "resume"),
            ApiOp::AppHistory => ("app", "history"),
            ApiOp::AppRollback => ("app", "rollback"),
            ApiOp::AppEvents => ("app", "events"),
            ApiOp::AppSend => ("app", "send"),
            ApiOp::SiteList => ("site", "list"),
            ApiOp::SiteLabel => ("site", "label"),
            ApiOp::SiteRegister => ("site", "register"),
            ApiOp::SiteRenew => ("site", "renew"),
            ApiOp::SiteInvite => ("site", "invite"),
            ApiOp::SiteInvites => ("site", "invites"),
            ApiOp::SiteApprove => ("site", "approve"),
            ApiOp::SiteJoin => ("site", "join"),
            ApiOp::SiteHosts => ("site", "hosts"),
            ApiOp::SiteRotateKey => ("site", "rotate-key"),
            ApiOp::SecretPut => ("secret", "put"),
            ApiOp::SecretRotate => ("secret", "rotate"),
            ApiOp::SecretList => ("secret", "list"),
            ApiOp::SecretDescribe => ("secret", "describe"),
            ApiOp::SecretDelete => ("secret", "delete"),
            ApiOp::AlertList => ("alert", "list"),
            ApiOp::TelemetryResources => ("telemetry", "resources"),
            ApiOp::ImagePush => ("image", "push"),
            ApiOp::ImageImport => ("image", "import"),
            ApiOp::ImageList => ("image", "list"),
            ApiOp::BlockSet => ("block", "set"),
            ApiOp::BlockList => ("block", "list"),
            ApiOp::TenantSites => ("tenant", "sites"),
        }
    }

    /// The service that answers the operation: `secrets` for `secret.*`, else `scheduler`.
    pub fn service(self) -> &'static str {
        match self.parts().0 {
            "secret" => "secrets",
            "alert" | "telemetry" => "telemetry",
            "image" => "registry-sync",
            _ => "scheduler",
        }
    }

    /// Whether the caller's site is the subject's last token: call-home, where the site's
    /// credential allows it only its own (`edge.v1.api.site.register.<site>`), so that the
    /// hub takes the site's identity from the subject, never from the payload.
    pub fn per_site(self) -> bool {
        matches!(self, ApiOp::SiteRegister | ApiOp::SiteRenew | ApiOp::SiteJoin)
    }

    /// The subjects of a [`ApiOp::per_site`] operation for every site: `...<verb>.*`.
    pub fn subject_for_any(self) -> String {
        let (noun, verb) = self.parts();
        format!("{PREFIX}.api.{noun}.{verb}.*")
    }

    /// Whether a tenant's users may call the operation: their account imports it from the
    /// control plane under its plain subject, mapped to [`tenant_api`] (the tenant's apps and
    /// secrets, nothing of the fleet's).
    pub fn tenant_scoped(self) -> bool {
        matches!(self.parts().0, "app" | "secret")
    }

    /// Full subject, e.g. `edge.v1.api.app.apply`; for a [`ApiOp::per_site`] operation the
    /// documented form with a `{site}` parameter (requests go to [`ApiOp::subject_for`]).
    pub fn subject(self) -> String {
        let (noun, verb) = self.parts();
        if self.per_site() {
            format!("{PREFIX}.api.{noun}.{verb}.{{site}}")
        } else {
            format!("{PREFIX}.api.{noun}.{verb}")
        }
    }

    /// The subject of a request made by `site`: `edge.v1.api.<noun>.<verb>.<site>` for a
    /// [`ApiOp::per_site`] operation, else [`ApiOp::subject`].
    pub fn subject_for(self, site: &Name) -> String {
        let (noun, verb) = self.parts();
        if self.per_site() {
            format!("{PREFIX}.api.{noun}.{verb}.{site}")
        } else {
            self.subject()
        }
    }

    /// The endpoint's subject within its [`ApiOp::group`]: the verb, and `.*` for the site of a
    /// [`ApiOp::per_site`] operation.
    pub fn endpoint(self) -> String {
        let verb = self.parts().1;
        if self.per_site() {
            format!("{verb}.*")
        } else {
            verb.to_string()
        }
    }

    /// The service-API group the endpoint lives in, e.g. `edge.v1.api.app`.
    pub fn group(self) -> String {
        format!("{PREFIX}.api.{}", self.parts().0)
    }
}

/// `edge.v1.api.tenant.<tenant>.<noun>.<verb>`: a [`ApiOp::tenant_scoped`] operation as the
/// control plane receives it from `tenant`'s account.
pub fn tenant_api(tenant: &Name, op: ApiOp) -> String {
    let (noun, verb) = op.parts();
    format!("{PREFIX}.api.tenant.{tenant}.{noun}.{verb}")
}

/// Every tenant's requests: what the control-plane account exports to tenants' accounts.
pub fn tenant_api_all() -> String {
    format!("{PREFIX}.api.tenant.*.>")
}

/// The service-API group of tenants' requests, and an operation's endpoint within it.
pub fn tenant_api_endpoint(op: ApiOp) -> (String, String) {
    let (noun, verb) = op.parts();
    (format!("{PREFIX}.api.tenant"), format!("*.{noun}.{verb}"))
}

/// The tenant a request subject was made by (its account's import put it there), or `None`
/// for the control plane's own subjects.
pub fn tenant_of_request(subject: &str) -> Option<Name> {
    match parse(subject) {
        Ok(Subject::ApiOfTenant { tenant, .. }) => Some(tenant),
        _ => None,
    }
}

/// Desired-state shards: the hub's desired state is split over this many streams by
/// [`desired_shard`]. Part of the grammar: hub and sites must agree on it.
pub const DESIRED_SHARDS: u32 = 32;

/// The desired-state shard of a site: FNV-1a (32 bits) of its id, modulo [`DESIRED_SHARDS`].
/// Stable across versions and platforms, since sites and hub compute it independently.
pub fn desired_shard(site: &Name) -> u32 {
    fnv1a(site.as_str()) % DESIRED_SHARDS
}

/// FNV-1a, 32 bits: a small hash that is the same on every platform and version.
pub fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The `<shard>` token of a shard: two digits.
pub fn shard_token(shard: u32) -> String {
    format!("{shard:02}")
}

/// `edge.v1.desired.<shard>.<site>`: the root of one site's desired-state subjects.
fn desired_root(site: &Name) -> String {
    format!("{PREFIX}.desired.{}.{site}", shard_token(desired_shard(site)))
}

/// `edge.v1.desired.<shard>.<site>.<app>`
pub fn desired(site: &Name, app: &Name) -> String {
    format!("{}.{app}", desired_root(site))
}

/// `edge.v1.desired.<shard>.<site>._watermark`: travels with the desired state (the `_` keeps
/// it apart from app names, which cannot start with one).
pub fn events_watermark(site: &Name) -> String {
    format!("{}._watermark", desired_root(site))
}

/// `edge.v1.desired.<shard>.<site>._secret.<tenant>.<name>`: a secret sealed to one site,
/// travelling with its desired state (the `_` keeps it apart from app names).
pub fn sealed_secret(site: &Name, tenant: &Name, name: &Name) -> String {
    format!("{}._secret.{tenant}.{name}", desired_root(site))
}

/// `edge.v1.desired.<shard>.<site>._rekey`
pub fn site_rekey(site: &Name) -> String {
    format!("{}._rekey", desired_root(site))
}

/// Every sealed secret of every site (core subscriptions).
pub fn sealed_secret_all() -> String {
    format!("{PREFIX}.desired.*.*._secret.>")
}

/// Every sealed secret of the sites of one shard (a filter of the hub's `DESIRED_<shard>`).
pub fn sealed_secret_in_shard(shard: u32) -> String {
    format!("{PREFIX}.desired.{}.*._secret.>", shard_token(shard))
}

/// `edge.v1.site.<site>.audit`
pub fn site_audit(site: &Name) -> String {
    format!("{PREFIX}.site.{site}.audit")
}

/// `edge.v1.audit.site.<site>`: a site blocked or unblocked.
pub fn audit_site(site: &Name) -> String {
    format!("{PREFIX}.audit.site.{site}")
}

/// `edge.v1.audit.tenant.<tenant>`: a tenant blocked or unblocked.
pub fn audit_tenant(tenant: &Name) -> String {
    format!("{PREFIX}.audit.tenant.{tenant}")
}

/// `edge.v1.audit.join.<site>`: a site invited, joined, approved, or a join refused.
pub fn audit_join(site: &Name) -> String {
    format!("{PREFIX}.audit.join.{site}")
}

/// `edge.v1.audit.host.<site>.<host>`: a host blocked or unblocked.
pub fn audit_host(site: &Name, host: &Name) -> String {
    format!("{PREFIX}.audit.host.{site}.{host}")
}

/// `edge.v1.desired.<shard>.<site>._hosts`: which of the site's hosts may run workloads
/// ([`crate::block::SiteHosts`]).
pub fn site_hosts(site: &Name) -> String {
    format!("{}._hosts", desired_root(site))
}

/// `edge.v1.audit.secret.<tenant>.<name>`
pub fn audit_secret(tenant: &Name, name: &Name) -> String {
    format!("{PREFIX}.audit.secret.{tenant}.{name}")
}

/// `edge.v1.alert.<kind>.<name>`
pub fn alert(kind: crate::alert::AlertKind, name: &Name) -> String {
    format!("{PREFIX}.alert.{}.{name}", kind.as_str())
}

/// Every alert subject: what the hub stream ALERTS binds.
pub fn alert_all() -> String {
    format!("{PREFIX}.alert.>")
}

/// Every audit subject: what the hub stream AUDIT binds.
/// `edge.v1.audit.auth.<server>`: a connection a server refused for its credentials.
pub fn audit_auth(server: &str) -> String {
    let token: String =
        server.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{PREFIX}.audit.auth.{token}")
}

pub fn audit_all() -> String {
    format!("{PREFIX}.audit.>")
}

/// Every desired-state subject of one shard: what the hub stream `DESIRED_<shard>` binds.
pub fn desired_in_shard(shard: u32) -> String {
    format!("{PREFIX}.desired.{}.>", shard_token(shard))
}

/// Desired state of one app at every site of one shard: `edge.v1.desired.<shard>.*.<app>`.
pub fn desired_of_app_in_shard(shard: u32, app: &Name) -> String {
    format!("{PREFIX}.desired.{}.*.{app}", shard_token(shard))
}

/// Desired state of one site: the filter the site's DESIRED stream sources with.
pub fn desired_for_site(site: &Name) -> String {
    format!("{}.>", desired_root(site))
}

/// Every event subject of one site: what the site stream SITE_EVENTS binds.
pub fn site_events(site: &Name) -> String {
    format!("{PREFIX}.site.{site}.>")
}

/// Every event subject of every site.
pub fn site_events_all() -> String {
    format!("{PREFIX}.site.>")
}

/// `edge.v1.site.<site>.status.<app>`
pub fn site_status(site: &Name, app: &Name) -> String {
    format!("{PREFIX}.site.{site}.status.{app}")
}

/// `edge.v1.site.<site>.registration`
pub fn site_registration(site: &Name) -> String {
    format!("{PREFIX}.site.{site}.registration")
}

/// `edge.v1.hb.<site>`
pub fn heartbeat(site: &Name) -> String {
    format!("{PREFIX}.hb.{site}")
}

/// `edge.v1.tm.<site>.stats.<host>`
pub fn host_stats(site: &Name, host: &Name) -> String {
    format!("{PREFIX}.tm.{site}.stats.{host}")
}

/// `edge.v1.tm.<site>.event.<host>`
pub fn lifecycle(site: &Name, host: &Name) -> String {
    format!("{PREFIX}.tm.{site}.event.{host}")
}

/// Every telemetry subject of every site.
pub fn telemetry_all() -> String {
    format!("{PREFIX}.tm.>")
}

/// Every telemetry subject of one site: what the site stream TELEMETRY binds.
pub fn telemetry_for_site(site: &Name) -> String {
    format!("{PREFIX}.tm.{site}.>")
}

/// `edge.v1.logs.<site>`
pub fn logs(site: &Name) -> String {
    format!("{PREFIX}.logs.{site}")
}

/// Delivery prefix of the hub's sources of a site's streams (`external.deliver_prefix`): the
/// site's consumers publish to `edge.v1.dlv.<site>.up.S.<id>`.
pub fn delivery_up(site: &Name) -> String {
    format!("{PREFIX}.dlv.{site}.up")
}

/// Delivery prefix of a site's sources of the hub's streams: the hub's consumers publish to
/// `edge.v1.dlv.<site>.down.S.<id>`.
pub fn delivery_down(site: &Name) -> String {
    format!("{PREFIX}.dlv.{site}.down")
}

/// What an app's containers publish to for `topic` at their site:
/// `edge.v1.topic.<tenant>.<app>.<topic>`.
pub fn topic(tenant: &Name, app: &Name, topic: &Name) -> String {
    format!("{}.{topic}", topic_prefix(tenant, app))
}

/// The subjects of an app's topics start with this (`edge.v1.topic.<tenant>.<app>`).
pub fn topic_prefix(tenant: &Name, app: &Name) -> String {
    format!("{PREFIX}.topic.{tenant}.{app}")
}

/// The same messages as stored (at the site and at the hub): the site appended,
/// `edge.v1.topic.<tenant>.<app>.<topic>.<site>`.
pub fn topic_at(tenant: &Name, app: &Name, topic: &Name, site: &Name) -> String {
    format!("{PREFIX}.topic.{tenant}.{app}.{topic}.{site}")
}

/// Any app's topic messages stored for (or from) `site`: `edge.v1.topic.*.*.*.<site>`.
pub fn topic_any_at(site: &Name) -> String {
    format!("{PREFIX}.topic.*.*.*.{site}")
}

/// Every site's messages of a topic at the hub.
pub fn topic_all_sites(tenant: &Name, app: &Name, topic: &Name) -> String {
    format!("{PREFIX}.topic.{tenant}.{app}.{topic}.*")
}

/// Inbox prefix an app's containers use (their credential may receive replies there only).
pub fn app_inbox_prefix(tenant: &Name, app: &Name) -> String {
    format!("_INBOX.app.{tenant}.{app}")
}

/// Inbox prefix of the clients at a site, so that replies to them are the site's own subjects.
pub fn site_inbox_prefix(site: &Name) -> String {
    format!("_INBOX.site.{site}")
}

/// Every heartbeat subject.
pub fn heartbeat_all() -> String {
    format!("{PREFIX}.hb.*")
}

/// A parsed subject of the grammar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Api(ApiOp),
    /// A [`ApiOp::per_site`] request made by `site`.
    ApiOfSite {
        op: ApiOp,
        site: Name,
    },
    /// A [`ApiOp::tenant_scoped`] request made by `tenant`.
    ApiOfTenant {
        op: ApiOp,
        tenant: Name,
    },
    SiteHosts {
        site: Name,
    },
    AuditTenant {
        tenant: Name,
    },
    AuditHost {
        site: Name,
        host: Name,
    },
    /// A connection a server refused for its credentials (the server's name as a token).
    AuditAuth {
        server: String,
    },
    AuditJoin {
        site: Name,
    },
    Desired {
        site: Name,
        app: Name,
    },
    EventsWatermark {
        site: Name,
    },
    SealedSecret {
        site: Name,
        tenant: Name,
        name: Name,
    },
    SiteRekey {
        site: Name,
    },
    Alert {
        kind: crate::alert::AlertKind,
        name: Name,
    },
    SiteAudit {
        site: Name,
    },
    AuditSecret {
        tenant: Name,
        name: Name,
    },
    AuditSite {
        site: Name,
    },
    SiteStatus {
        site: Name,
        app: Name,
    },
    SiteRegistration {
        site: Name,
    },
    Heartbeat {
        site: Name,
    },
    Logs {
        site: Name,
    },
    HostStats {
        site: Name,
        host: Name,
    },
    Lifecycle {
        site: Name,
        host: Name,
    },
    /// An app's topic: as its containers publish (`site` absent) or as stored (the site
    /// appended).
    Topic {
        tenant: Name,
        app: Name,
        topic: Name,
        site: Option<Name>,
    },
}

/// Why a subject is not part of the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subject {subject:?} is not part of the edge.v1 grammar: {reason}")]
pub struct SubjectError {
    pub subject: String,
    pub reason: String,
}

/// Parses a subject of the grammar, validating every identifier in it.
pub fn parse(subject: &str) -> Result<Subject, SubjectError> {
    let err = |reason: &str| SubjectError { subject: subject.to_string(), reason: reason.to_string() };
    let rest = subject.strip_prefix(PREFIX).and_then(|r| r.strip_prefix('.')).ok_or_else(|| err("wrong prefix"))?;
    let tokens: Vec<&str> = rest.split('.').collect();
    let name = |s: &str| Name::new(s).map_err(|e| err(&e.to_string()));
    match tokens.as_slice() {
        ["api", noun, verb] => match ApiOp::ALL.into_iter().find(|op| op.parts() == (*noun, *verb)) {
            Some(op) if op.per_site() => Err(err("the operation takes the caller's site as a last token")),
            Some(op) => Ok(Subject::Api(op)),
            None => Err(err("unknown operation")),
        },
        ["api", "tenant", tenant, noun, verb] => match ApiOp::ALL.into_iter().find(|op| op.parts() == (*noun, *verb)) {
            Some(op) if op.tenant_scoped() => Ok(Subject::ApiOfTenant { op, tenant: name(tenant)? }),
            _ => Err(err("not an operation tenants may call")),
        },
        ["api", noun, verb, site] => match ApiOp::ALL.into_iter().find(|op| op.parts() == (*noun, *verb)) {
            Some(op) if op.per_site() => Ok(Subject::ApiOfSite { op, site: name(site)? }),
            _ => Err(err("unknown operation")),
        },
        ["desired", shard, site, rest @ ..] => {
            let site = name(site)?;
            if *shard != shard_token(desired_shard(&site)) {
                return Err(err("the shard token is not the site's desired-state shard"));
            }
            match rest {
                ["_rekey"] => Ok(Subject::SiteRekey { site }),
                ["_watermark"] => Ok(Subject::EventsWatermark { site }),
                ["_hosts"] => Ok(Subject::SiteHosts { site }),
                ["_secret", tenant, secret] => {
                    Ok(Subject::SealedSecret { site, tenant: name(tenant)?, name: name(secret)? })
                }
                [app] => Ok(Subject::Desired { site, app: name(app)? }),
                _ => Err(err("unknown shape")),
            }
        }
        ["alert", kind, n] => {
            use crate::alert::AlertKind as K;
            let kind = [K::AppDegraded, K::SiteOffline, K::BufferNearlyFull, K::TopicNearlyFull]
                .into_iter()
                .find(|k| k.as_str() == *kind)
                .ok_or_else(|| err("unknown alert kind"))?;
            Ok(Subject::Alert { kind, name: name(n)? })
        }
        ["site", site, "audit"] => Ok(Subject::SiteAudit { site: name(site)? }),
        ["audit", "site", site] => Ok(Subject::AuditSite { site: name(site)? }),
        ["audit", "join", site] => Ok(Subject::AuditJoin { site: name(site)? }),
        ["audit", "auth", server] if !server.is_empty() => Ok(Subject::AuditAuth { server: server.to_string() }),
        ["audit", "tenant", tenant] => Ok(Subject::AuditTenant { tenant: name(tenant)? }),
        ["audit", "host", site, host] => Ok(Subject::AuditHost { site: name(site)?, host: name(host)? }),
        ["audit", "secret", tenant, secret] => Ok(Subject::AuditSecret { tenant: name(tenant)?, name: name(secret)? }),
        ["site", site, "status", app] => Ok(Subject::SiteStatus { site: name(site)?, app: name(app)? }),
        ["site", site, "registration"] => Ok(Subject::SiteRegistration { site: name(site)? }),
        ["hb", site] => Ok(Subject::Heartbeat { site: name(site)? }),
        ["logs", site] => Ok(Subject::Logs { site: name(site)? }),
        ["tm", site, "stats", host] => Ok(Subject::HostStats { site: name(site)?, host: name(host)? }),
        ["tm", site, "event", host] => Ok(Subject::Lifecycle { site: name(site)?, host: name(host)? }),
        ["topic", tenant, app, topic, site @ ..] if site.len() <= 1 => Ok(Subject::Topic {
            tenant: name(tenant)?,
            app: name(app)?,
            topic: name(topic)?,
            site: site.first().map(|s| name(s)).transpose()?,
        }),
        _ => Err(err("unknown shape")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn round_trips() {
        let (s, a) = (n("shop-1"), n("web"));
        assert_eq!(parse(&desired(&s, &a)).unwrap(), Subject::Desired { site: s.clone(), app: a.clone() });
        assert_eq!(parse(&site_status(&s, &a)).unwrap(), Subject::SiteStatus { site: s.clone(), app: a });
        assert_eq!(parse(&site_registration(&s)).unwrap(), Subject::SiteRegistration { site: s.clone() });
        assert_eq!(parse(&events_watermark(&s)).unwrap(), Subject::EventsWatermark { site: s.clone() });
        let (t, x) = (n("default"), n("db-password"));
        assert_eq!(
            parse(&sealed_secret(&s, &t, &x)).unwrap(),
            Subject::SealedSecret { site: s.clone(), tenant: t.clone(), name: x.clone() }
        );
        assert_eq!(parse(&site_audit(&s)).unwrap(), Subject::SiteAudit { site: s.clone() });
        assert_eq!(parse(&site_rekey(&s)).unwrap(), Subject::SiteRekey { site: s.clone() });
        let k = crate::alert::AlertKind::SiteOffline;
        assert_eq!(parse(&alert(k, &s)).unwrap(), Subject::Alert { kind: k, name: s.clone() });
        assert_eq!(parse(&audit_secret(&t, &x)).unwrap(), Subject::AuditSecret { tenant: t, name: x });
        assert_eq!(parse(&audit_site(&s)).unwrap(), Subject::AuditSite { site: s.clone() });
        assert_eq!(parse(&audit_auth("hub 1.x")).unwrap(), Subject::AuditAuth { server: "hub_1_x".into() });
        assert_eq!(parse(&site_hosts(&s)).unwrap(), Subject::SiteHosts { site: s.clone() });
        let (tenant, h) = (n("acme"), n("pos-2"));
        assert_eq!(parse(&audit_tenant(&tenant)).unwrap(), Subject::AuditTenant { tenant: tenant.clone() });
        assert_eq!(parse(&audit_host(&s, &h)).unwrap(), Subject::AuditHost { site: s.clone(), host: h });
        for op in ApiOp::ALL.into_iter().filter(|op| op.tenant_scoped()) {
            assert_eq!(tenant_of_request(&tenant_api(&tenant, op)), Some(tenant.clone()));
        }
        assert!(parse("edge.v1.api.tenant.acme.block.set").is_err(), "only app and secret operations are tenants'");
        assert_eq!(tenant_of_request(&ApiOp::AppApply.subject()), None);
        assert_eq!(parse(&heartbeat(&s)).unwrap(), Subject::Heartbeat { site: s });
        for op in ApiOp::ALL.into_iter().filter(|op| !op.per_site()) {
            assert_eq!(parse(&op.subject()).unwrap(), Subject::Api(op));
        }
        let site = n("shop-1");
        assert_eq!(
            parse(&ApiOp::SiteRegister.subject_for(&site)).unwrap(),
            Subject::ApiOfSite { op: ApiOp::SiteRegister, site }
        );
        assert_eq!(ApiOp::SiteRegister.subject_for(&n("shop-1")), "edge.v1.api.site.register.shop-1");
        assert!(parse("edge.v1.api.site.register").is_err(), "call-home names its site");
        assert!(parse("edge.v1.api.app.apply.shop-1").is_err());
    }

    #[test]
    fn rejects_foreign_and_bad_tokens() {
        for bad in ["edge.v2.hb.a", "edge.v1.hb.A", "edge.v1.hb.a.b", "edge.v1.desired.a", "x", "edge.v1.api.app.nuke"]
        {
            assert!(parse(bad).is_err(), "{bad}");
        }
        // The pre-shard shape, and a site under another shard than its own.
        assert!(parse("edge.v1.desired.shop-1.web").is_err());
        let s = n("shop-1");
        let other = shard_token((desired_shard(&s) + 1) % DESIRED_SHARDS);
        assert!(parse(&format!("edge.v1.desired.{other}.shop-1.web")).is_err());
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // Fixed values: sites and hub of different versions must agree.
        assert_eq!(desired(&n("shop-1"), &n("web")), "edge.v1.desired.07.shop-1.web");
        assert_eq!(desired_shard(&n("a")), 0xe40c292c % DESIRED_SHARDS);
        let mut counts = vec![0u32; DESIRED_SHARDS as usize];
        for i in 0..10_000 {
            counts[desired_shard(&n(&format!("site-{i}"))) as usize] += 1;
        }
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*lo > 250 && *hi < 380, "uneven shards: {lo}..{hi}");
    }
}
