//! What each role may publish and subscribe to: the least privilege of every credential the
//! project issues.
//!
//! A site's leaf link is the boundary that matters. Its user lives in the hub's control-plane
//! account and may only carry the site's own traffic: through it the site publishes its
//! heartbeat, its deliveries to the hub's streams, the consumer requests that read its own
//! desired state, and replies to requests the hub sent it; and it receives (its interest
//! crosses the link for) requests into its own JetStream domain, its log requests, replies to
//! its own requests and its own desired-state deliveries. Everything else of every other site
//! stays out of reach: nats-server drops what the link's user may not publish and never
//! forwards what it may not subscribe to.

use edge_bus::topology::{self, api_prefix, HUB_DOMAIN};
use edge_types::subject;
use edge_types::Name;

use crate::claims::{SubjectPermission, CONN_LEAFNODE, CONN_STANDARD};

/// Permissions of one credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub publish: SubjectPermission,
    pub subscribe: SubjectPermission,
    /// Kinds of connection allowed (empty: any).
    pub connection_types: Vec<String>,
    /// Recorded in the JWT's tags: role and scope, for `edgectl auth` listings and audits.
    pub tags: Vec<String>,
}

/// A user JWT: `user` (public key) named `name` in the account `account` (public key), with
/// this scope, signed by `signer` (one of the account's signing keys), expiring at `exp`. A
/// `bearer` token is taken by the server alone, without proof of the user's key (for clients
/// that cannot sign, such as a shell with `nc`).
pub fn sign_user(
    scope: Scope,
    signer: &nkeys::KeyPair,
    account: &str,
    name: &str,
    user: &str,
    exp: Option<u64>,
    bearer: bool,
) -> Result<String, crate::AuthError> {
    let iat = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut c = crate::jwt::Claims {
        jti: String::new(),
        iat,
        iss: signer.public_key(),
        name: name.to_string(),
        sub: user.to_string(),
        exp: exp.map(|e| e.max(iat + 1)),
        nats: crate::claims::User {
            publish: scope.publish,
            subscribe: scope.subscribe,
            subs: -1,
            data: -1,
            payload: -1,
            allowed_connection_types: scope.connection_types,
            issuer_account: account.to_string(),
            bearer_token: bearer,
            tags: scope.tags,
            kind: "user".into(),
            version: 2,
        },
    };
    crate::jwt::encode(&mut c, signer)
}

/// The leaf link of one site, as the hub sees it.
pub fn site_leaf(site: &Name) -> Scope {
    let desired_stream = topology::desired_stream_of(site);
    let hub_api = api_prefix(HUB_DOMAIN);
    let publish = vec![
        subject::heartbeat(site),
        subject::ApiOp::SiteRegister.subject_for(site),
        format!("{}.>", subject::delivery_up(site)),
        // Only consumers filtered to the site's own desired state (the filter is part of the
        // subject, and the server checks it against the request).
        format!("{hub_api}.CONSUMER.CREATE.{desired_stream}.*.{}", subject::desired_for_site(site)),
        // Consumers on the hub's streams of apps' `to_sites` topics, filtered to the messages
        // stored for this site (again checked against the request).
        format!("{hub_api}.CONSUMER.CREATE.*.*.{}", subject::topic_any_at(site)),
        format!("{hub_api}.INFO"),
        // Flow-control replies to the hub's consumers it sources from (desired state, topics).
        "$JS.FC.>".to_string(),
        // Replies to what the hub asked: its clients' inboxes and its servers' JetStream
        // replies. nats-server's per-request response permission does not cover leaf links,
        // so the site may publish to any reply subject; they are random (a NUID of about 130
        // bits) and a site can only receive its own (`_INBOX.site.<site>.>`), so it cannot
        // learn, let alone answer, another site's requests.
        "_INBOX.>".to_string(),
        "$JSC.R.>".to_string(),
    ];
    let mut subscribe = vec![
        format!("{}.>", api_prefix(site.as_str())),
        subject::logs(site),
        format!("{}.>", subject::site_inbox_prefix(site)),
        format!("{}.>", subject::delivery_down(site)),
        format!("$O.{}.>", topology::site_blobs(site)),
        // Replies to the consumer requests the site's leaf server makes for its sources.
        "$JSC.R.>".to_string(),
    ];
    // Flow-control replies of the hub's sources of the site's streams: its events, telemetry
    // and the apps' topics (`TOPIC_<tenant>_<app>_<topic>`, named per app, hence the wildcard).
    // They carry no data: another site subscribing learns stream names and timing, no content.
    subscribe.push("$JS.FC.>".to_string());
    Scope {
        publish: SubjectPermission::allow(publish),
        subscribe: SubjectPermission::allow(subscribe),
        connection_types: vec![CONN_LEAFNODE.to_string()],
        tags: vec!["role:site-leaf".into(), format!("site:{site}")],
    }
}

/// The site-manager of a site, on the site's own leaf server (in the site's account, which
/// only that leaf server knows: this credential opens nothing at the hub or at another site).
pub fn site_agent(site: &Name) -> Scope {
    unrestricted(vec!["role:site-agent".into(), format!("site:{site}")])
}

/// A host of a site that joined with its own key (`edgectl host invite`): what the shared
/// site-manager credential may, in the site's account, but revocable on its own.
pub fn site_host(site: &Name, host: &Name) -> Scope {
    unrestricted(vec!["role:site-host".into(), format!("site:{site}"), format!("host:{host}")])
}

/// An application's containers at a site (in the site's account): they may publish to the
/// app's own `to_hub` topics (`up`), read its own `to_sites` topics (`down`) with pull
/// consumers on their streams at the site, and receive replies (JetStream's answers) at the
/// app's own inbox prefix; nothing else: not another app's topics or streams, not the site's
/// own subjects, no other JetStream API.
pub fn app_bus(site: &Name, tenant: &Name, app: &Name, up: &[Name], down: &[Name]) -> Scope {
    let mut publish: Vec<String> = up.iter().map(|t| subject::topic(tenant, app, t)).collect();
    for t in down {
        let stream = topology::topic_stream(tenant, app, t);
        publish.extend([
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.*"),
            format!("$JS.API.CONSUMER.INFO.{stream}.*"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
            format!("$JS.ACK.{stream}.>"),
        ]);
    }
    Scope {
        publish: SubjectPermission::allow(publish),
        subscribe: SubjectPermission::allow([format!("{}.>", subject::app_inbox_prefix(tenant, app))]),
        connection_types: vec![CONN_STANDARD.to_string()],
        tags: vec!["role:app".into(), format!("site:{site}"), format!("tenant:{tenant}"), format!("app:{app}")],
    }
}

/// A site's system user, on the site's leaf server only: it may give that server a new JWT of
/// the site's account (`account`, public key) and nothing else. Its signing key is listed in
/// the sites' copy of the system account, not the hub's, so the hub refuses it.
pub fn site_system(account: &str) -> Scope {
    Scope {
        publish: SubjectPermission::allow([format!("$SYS.REQ.ACCOUNT.{account}.CLAIMS.UPDATE")]),
        subscribe: SubjectPermission::allow(["_INBOX.>"]),
        connection_types: vec![CONN_STANDARD.to_string()],
        tags: vec!["role:site-system".into()],
    }
}

/// What a central service (`scheduler`, `secrets`, `registry-sync`, `telemetry`) must never
/// publish, whatever else it does: the state the others own. A compromised telemetry or
/// registry-sync cannot place workloads or change apps, sites, blocks or secrets; the scheduler
/// cannot forge a sealed secret; the secrets service cannot place workloads. None may delete a
/// stream. (Each still reads widely and creates the streams and buckets it needs.) `None` for
/// any other name: an operator's user.
pub fn central_service(role: &str) -> Option<Scope> {
    use topology::{BUCKET_ALERTS, BUCKET_APPS, BUCKET_IMAGES, BUCKET_SECRETS, BUCKET_SECRET_KEYS};
    use topology::{BUCKET_SITES, BUCKET_STAGING, BUCKET_STATUS};
    let desired = format!("{}.desired", subject::PREFIX);
    let kv = |buckets: &[&str]| buckets.iter().map(|b| format!("$KV.{b}.>")).collect::<Vec<_>>();
    let control = [BUCKET_APPS, BUCKET_SITES, BUCKET_STATUS];
    let secrets = [BUCKET_SECRETS, BUCKET_SECRET_KEYS];
    let mut deny = match role {
        "scheduler" => {
            [kv(&secrets), kv(&[BUCKET_IMAGES, BUCKET_STAGING, BUCKET_ALERTS]), vec![subject::sealed_secret_all()]]
                .concat()
        }
        "secrets" => [
            kv(&control),
            kv(&[BUCKET_IMAGES, BUCKET_STAGING, BUCKET_ALERTS]),
            // Apps, watermarks, re-keys and host policies; sealed secrets (deeper) stay allowed.
            vec![format!("{}.*.*.*", desired), "$O.>".into()],
        ]
        .concat(),
        "registry-sync" => [kv(&control), kv(&secrets), kv(&[BUCKET_ALERTS]), vec![format!("{}.>", desired)]].concat(),
        "telemetry" => [
            kv(&control),
            kv(&secrets),
            kv(&[BUCKET_IMAGES, BUCKET_STAGING]),
            vec![format!("{}.>", desired), "$O.>".into()],
        ]
        .concat(),
        _ => return None,
    };
    deny.push("$JS.*.API.STREAM.DELETE.>".into());
    Some(Scope {
        publish: SubjectPermission { allow: Vec::new(), deny },
        subscribe: SubjectPermission::default(),
        connection_types: vec![CONN_STANDARD.to_string()],
        tags: vec![format!("role:{role}")],
    })
}

/// A control-plane user named `name`: a central service's scope ([`central_service`]) for the
/// services' names, an operator's (everything in the control account) for any other.
pub fn control_user(name: &str) -> Scope {
    central_service(name).unwrap_or_else(|| control_plane(name))
}

/// A central service (`scheduler`, `secrets`, ...) or an operator's tool at the hub.
pub fn control_plane(role: &str) -> Scope {
    unrestricted(vec![format!("role:{role}")])
}

/// A tenant's user: everything its account allows (its own account holds nothing but the
/// control plane's imports of the tenant's operations), from client connections only.
pub fn tenant_user(who: &str) -> Scope {
    unrestricted(vec![format!("tenant:{who}")])
}

/// Everything its account allows, from client connections only.
fn unrestricted(tags: Vec<String>) -> Scope {
    Scope {
        publish: SubjectPermission::default(),
        subscribe: SubjectPermission::default(),
        connection_types: vec![CONN_STANDARD.to_string()],
        tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_leaf_names_its_own_site_only() {
        let a = Name::new("shop-1").unwrap();
        let s = site_leaf(&a);
        for subj in s.publish.allow.iter().chain(&s.subscribe.allow) {
            let generic = subj.starts_with("$JS.hub.API.INFO")
                || subj == "_INBOX.>"
                || subj.starts_with("$JSC.")
                || subj.starts_with("$JS.FC.");
            assert!(generic || subj.contains("shop-1"), "{subj} is not scoped to the site");
        }
        assert!(s
            .publish
            .allow
            .contains(&"$JS.hub.API.CONSUMER.CREATE.DESIRED_07.*.edge.v1.desired.07.shop-1.>".into()));
        assert_eq!(s.connection_types, vec!["LEAFNODE"]);
    }
}
