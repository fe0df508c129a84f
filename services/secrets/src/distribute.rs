//! Distribution follows placement: a secret is sealed to a site while an application placed
//! there references it, re-sealed when it is rotated or the site's key changes, and withdrawn
//! (its subject overwritten by an envelope without ciphertext) when no application there uses
//! it any more. Sealed envelopes travel with the desired state (the hub's stream of the site's
//! shard), which each site sources filtered to its own subjects, so a site never holds another site's secrets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use edge_bus::kv;
use edge_bus::topology::{desired_shards, desired_stream};
use edge_seal::site::seal;
use edge_types::api::AppRecord;
use edge_types::app::AppSpec;
use edge_types::block::BlockTarget;
use edge_types::rollout::Revision;
use edge_types::schema::decode;
use edge_types::secret::{AuditAction, SealedSecret, SecretPayload, SecretValue, StoredSecret};
use edge_types::subject::{self, Subject};
use edge_types::Name;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::audit::{event, SERVICE_ACTOR};
use crate::error::SecretsError;
use crate::store::context;
use crate::Secrets;

/// One secret at one site.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub site: Name,
    pub tenant: Name,
    pub name: Name,
}

/// What should be at a target: this version sealed to this site key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub version: u64,
    pub recipient: String,
}

/// What was last written for a target (acked by the hub's DESIRED).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub version: u64,
    pub recipient: String,
    pub withdrawn: bool,
    /// Stream sequence of the write, so the next write's message id differs.
    pub seq: u64,
}

/// The last write per target, shared with `describe`.
pub type Delivered = Arc<Mutex<BTreeMap<Target, Delivery>>>;

/// Publishes awaiting acks at most.
const WINDOW: usize = 512;

/// A secret of a tenant: `(tenant, name)`.
pub type SecretId = (Name, Name);

/// Which secrets each site needs: every target where an app placed at the site runs a spec
/// that references the secret (of the app's tenant), the secret exists, and the site
/// registered a key.
pub fn needed(
    uses: &BTreeSet<Target>,
    keys: &HashMap<Name, String>,
    versions: &HashMap<SecretId, u64>,
) -> BTreeMap<Target, Want> {
    uses.iter()
        .filter_map(|t| {
            let recipient = keys.get(&t.site)?.clone();
            let version = *versions.get(&(t.tenant.clone(), t.name.clone()))?;
            Some((t.clone(), Want { version, recipient }))
        })
        .collect()
}

/// What to write: seals for targets whose delivery differs from what they need, withdrawals
/// for targets delivered but no longer used (a site still using a secret whose key is not
/// known right now keeps what it has).
pub fn diff(
    want: &BTreeMap<Target, Want>,
    have: &BTreeMap<Target, Delivery>,
    uses: &BTreeSet<Target>,
) -> Vec<(Target, Option<Want>)> {
    let mut out = Vec::new();
    for (t, w) in want {
        let current = have.get(t).is_some_and(|d| !d.withdrawn && d.version == w.version && d.recipient == w.recipient);
        if !current {
            out.push((t.clone(), Some(w.clone())));
        }
    }
    for (t, d) in have {
        if !d.withdrawn && !want.contains_key(t) && !uses.contains(t) {
            out.push((t.clone(), None));
        }
    }
    out
}

/// Runs the distribution until shutdown: once the buckets are read, after every change, and
/// every `resync` as a safety net.
pub async fn run(s: Secrets, resync: Duration, shutdown: CancellationToken) {
    let mut waiter = s.changed.waiter();
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = async { s.apps.loaded().await; s.sites.loaded().await; s.stored.loaded().await; s.blocks.loaded().await; } => {}
    }
    loop {
        match load(&s.js, &s.delivered).await {
            Ok(n) => {
                tracing::info!(targets = n, "read what was delivered before");
                break;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read delivered secrets; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    loop {
        if let Err(e) = pass(&s).await {
            tracing::warn!(error = %e, "distribution pass failed; retrying");
            s.changed.raise();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = waiter.changed() => {}
            _ = tokio::time::sleep(resync) => {}
        }
    }
}

/// Reads the last envelope of every sealed-secret subject of the hub's desired state, shard by
/// shard.
async fn load(js: &jetstream::Context, delivered: &Delivered) -> Result<usize, SecretsError> {
    let mut out = BTreeMap::new();
    for shard in desired_shards() {
        let stream = js.get_stream_no_info(desired_stream(shard)).await.map_err(SecretsError::js)?;
        let messages = edge_bus::scan::last_per_subject(&stream, subject::sealed_secret_in_shard(shard))
            .await
            .map_err(SecretsError::js)?;
        for msg in messages {
            let seq = msg.info().map_err(SecretsError::js)?.stream_sequence;
            match (subject::parse(&msg.subject), decode::<SealedSecret>(&msg.payload)) {
                (Ok(Subject::SealedSecret { site, tenant, name }), Ok(e)) => {
                    let d = Delivery { version: e.version, recipient: e.recipient, withdrawn: e.sealed.is_none(), seq };
                    out.insert(Target { site, tenant, name }, d);
                }
                _ => {
                    tracing::error!(subject = %msg.subject, "unreadable sealed-secret envelope in the desired state; it will be rewritten")
                }
            }
        }
    }
    let n = out.len();
    *delivered.lock().expect("delivered lock") = out;
    Ok(n)
}

/// Which secrets at which sites the placed apps reference, held rollout sites by their older
/// spec; none at a blocked site (what it holds is withdrawn).
async fn uses(s: &Secrets) -> Result<BTreeSet<Target>, SecretsError> {
    let blocked: BTreeSet<Name> = s
        .blocks
        .snapshot()
        .into_values()
        .filter_map(|e| match e.value.target {
            BlockTarget::Site { site } if e.value.blocked => Some(site),
            _ => None,
        })
        .collect();
    let mut out = BTreeSet::new();
    let mut revisions: HashMap<(Name, u64), AppSpec> = HashMap::new();
    for entry in s.apps.snapshot().into_values() {
        let r: AppRecord = entry.value;
        for site in r.sites.iter().filter(|s| !blocked.contains(*s)) {
            let held = r.rollout.as_ref().and_then(|ro| ro.held.get(site).copied()).filter(|g| *g != r.generation);
            let spec = match held {
                None => &r.spec,
                Some(g) => {
                    let key = (r.spec.name.clone(), g);
                    if !revisions.contains_key(&key) {
                        let rev = kv::get::<Revision>(&s.buckets.apps, &format!("rev.{}.{g}", r.spec.name)).await?;
                        revisions.insert(key.clone(), rev.map(|(r, _)| r.spec).unwrap_or_else(|| r.spec.clone()));
                    }
                    &revisions[&key]
                }
            };
            let tenant = &r.spec.tenant;
            out.extend(spec.secret_names().into_iter().map(|name| Target {
                site: site.clone(),
                tenant: tenant.clone(),
                name,
            }));
        }
    }
    Ok(out)
}

/// One pass: compute what each site needs, write the differences, record what was acked.
pub async fn pass(s: &Secrets) -> Result<(), SecretsError> {
    let uses = uses(s).await?;
    let keys: HashMap<Name, String> = s
        .sites
        .snapshot()
        .into_values()
        .filter_map(|e| Some((e.value.site.clone(), e.value.public_key.clone()?)))
        .collect();
    let stored: HashMap<SecretId, StoredSecret> =
        s.stored.snapshot().into_values().map(|e| ((e.value.tenant.clone(), e.value.name.clone()), e.value)).collect();
    let versions = stored.iter().map(|(n, r)| (n.clone(), r.version)).collect();
    let want = needed(&uses, &keys, &versions);
    let have = s.delivered.lock().expect("delivered lock").clone();
    let todo = diff(&want, &have, &uses);
    if todo.is_empty() {
        return Ok(());
    }
    let waiting: BTreeSet<&Name> = uses.iter().filter(|t| !keys.contains_key(&t.site)).map(|t| &t.site).collect();
    if !waiting.is_empty() {
        tracing::info!(sites = ?waiting, "sites without a registered key wait for their secrets");
    }

    // Each value opened once per pass, kept only in zeroized memory.
    let mut values: HashMap<SecretId, Zeroizing<Vec<u8>>> = HashMap::new();
    let mut acks = FuturesUnordered::new();
    let mut audit = Vec::new();
    let mut first_error = None;
    for (target, want) in todo {
        while acks.len() >= WINDOW {
            settle(s, acks.next().await.expect("non-empty"), &mut audit, &mut first_error);
        }
        let after = have.get(&target).map(|d| d.seq).unwrap_or(0);
        let envelope = match &want {
            Some(w) => {
                let id = (target.tenant.clone(), target.name.clone());
                let record = &stored[&id];
                if !values.contains_key(&id) {
                    let dek = s.keys.tenant(&target.tenant).await?;
                    let ctx = context(&record.tenant, &record.name, record.version);
                    let v = dek
                        .open(&ctx, &record.ciphertext)
                        .map_err(|_| SecretsError::Undecryptable(format!("{}/{}", record.tenant, record.name)))?;
                    values.insert(id.clone(), v);
                }
                let text = String::from_utf8_lossy(&values[&id]).into_owned();
                let payload = SecretPayload {
                    site: target.site.clone(),
                    tenant: target.tenant.clone(),
                    name: target.name.clone(),
                    version: w.version,
                    sealed_at_ms: edge_bus::time::now_ms(),
                    value: SecretValue(text),
                };
                let sealed = seal(&s.keys.sender, &w.recipient, &payload);
                drop(payload);
                match sealed {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(site = %target.site, error = %e, "cannot seal to the site's registered key");
                        continue;
                    }
                }
            }
            None => {
                let d = &have[&target];
                SealedSecret {
                    site: target.site.clone(),
                    tenant: target.tenant.clone(),
                    name: target.name.clone(),
                    version: d.version,
                    sender: s.keys.sender.public_key(),
                    recipient: d.recipient.clone(),
                    sealed: None,
                }
            }
        };
        let kind = if envelope.sealed.is_some() { "seal" } else { "withdraw" };
        let id =
            format!("secret.{}.{}.{}.{}.{kind}.{after}", target.site, target.tenant, target.name, envelope.version);
        let body = serde_json::to_vec(&envelope).expect("envelopes serialize");
        let msg = PublishMessage::build().payload(body.into()).message_id(id);
        let subj = subject::sealed_secret(&target.site, &target.tenant, &target.name);
        let ack = s.js.send_publish(subj, msg).await.map_err(SecretsError::js)?;
        let delivery = Delivery {
            version: envelope.version,
            recipient: envelope.recipient.clone(),
            withdrawn: envelope.sealed.is_none(),
            seq: 0,
        };
        acks.push(async move { (target, delivery, ack.into_future().await) });
    }
    while let Some(done) = acks.next().await {
        settle(s, done, &mut audit, &mut first_error);
    }
    let n = audit.len();
    s.audit.record(audit).await;
    tracing::info!(written = n, "secrets distributed or withdrawn");
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

type Done = (Target, Delivery, Result<jetstream::publish::PublishAck, jetstream::context::PublishError>);

/// Records an acked write as delivered (and its audit event); keeps the first failure.
fn settle(
    s: &Secrets,
    (target, mut d, ack): Done,
    audit: &mut Vec<edge_types::secret::AuditEvent>,
    err: &mut Option<SecretsError>,
) {
    match ack {
        Ok(ack) => {
            d.seq = ack.sequence;
            let action = if d.withdrawn { AuditAction::Withdrawn } else { AuditAction::Distributed };
            audit.push(event(SERVICE_ACTOR, action, &target.tenant, &target.name, d.version, Some(&target.site)));
            s.delivered.lock().expect("delivered lock").insert(target, d);
        }
        Err(e) => {
            if err.is_none() {
                *err = Some(SecretsError::js(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn t(site: &str, name: &str) -> Target {
        Target { site: n(site), tenant: n("default"), name: n(name) }
    }

    #[test]
    fn sites_get_what_their_apps_use_and_lose_the_rest() {
        let uses: BTreeSet<Target> = [t("a", "db"), t("b", "db"), t("c", "db"), t("a", "missing")].into();
        let keys: HashMap<Name, String> = [(n("a"), "XA".into()), (n("b"), "XB".into())].into();
        let versions: HashMap<SecretId, u64> = [((n("default"), n("db")), 2)].into();
        let want = needed(&uses, &keys, &versions);
        // c has no key yet, `missing` does not exist.
        assert_eq!(want.keys().cloned().collect::<Vec<_>>(), [t("a", "db"), t("b", "db")]);

        let have: BTreeMap<Target, Delivery> = [
            (t("a", "db"), Delivery { version: 2, recipient: "XA".into(), withdrawn: false, seq: 5 }),
            (t("b", "db"), Delivery { version: 1, recipient: "XB".into(), withdrawn: false, seq: 6 }),
            (t("d", "db"), Delivery { version: 1, recipient: "XD".into(), withdrawn: false, seq: 7 }),
            (t("e", "db"), Delivery { version: 1, recipient: "XE".into(), withdrawn: true, seq: 8 }),
        ]
        .into();
        let todo = diff(&want, &have, &uses);
        // a is current; b gets the rotated version; d is withdrawn; e was withdrawn already.
        assert_eq!(todo, vec![(t("b", "db"), Some(Want { version: 2, recipient: "XB".into() })), (t("d", "db"), None)]);

        // A site that registered a new key gets the same version re-sealed.
        let mut rekeyed = keys.clone();
        rekeyed.insert(n("a"), "XA2".into());
        let todo = diff(&needed(&uses, &rekeyed, &versions), &have, &uses);
        assert!(todo.contains(&(t("a", "db"), Some(Want { version: 2, recipient: "XA2".into() }))));

        // A site whose key is unknown for a moment keeps what it holds.
        let mut keyless = keys.clone();
        keyless.remove(&n("a"));
        let todo = diff(&needed(&uses, &keyless, &versions), &have, &uses);
        assert!(!todo.iter().any(|(t, _)| t.site == n("a")), "{todo:?}");
        let todo = diff(&needed(&uses, &rekeyed, &versions), &have, &uses);
        assert!(todo.contains(&(t("a", "db"), Some(Want { version: 2, recipient: "XA2".into() }))));
    }

    #[test]
    fn a_secret_is_its_tenants_only() {
        let theirs = Target { site: n("a"), tenant: n("t2"), name: n("db") };
        let uses: BTreeSet<Target> = [theirs.clone()].into();
        let keys: HashMap<Name, String> = [(n("a"), "XA".into())].into();
        // Tenant t1 has a secret `db`; an app of t2 naming `db` gets nothing of it.
        let versions: HashMap<SecretId, u64> = [((n("t1"), n("db")), 1)].into();
        assert!(needed(&uses, &keys, &versions).is_empty());
        let versions: HashMap<SecretId, u64> = [((n("t2"), n("db")), 3)].into();
        assert_eq!(needed(&uses, &keys, &versions)[&theirs].version, 3);
    }
}
