//! Placement: which sites an application belongs on, and making the hub's desired state say
//! exactly that. Every function here is idempotent, so a retry or a resync pass is always safe.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use edge_bus::kv::{self, Change};
use edge_bus::topology::desired_stream;
use edge_types::api::AppRecord;
use edge_types::app::AppSpec;
use edge_types::desired::DesiredApp;
use edge_types::image::ImageRecord;
use edge_types::policy::Policy;
use edge_types::selector::LabelOrders;
use edge_types::site::SiteRecord;
use edge_types::{subject, Name};
use futures::StreamExt;

use crate::error::SchedulerError;
use crate::writer::DesiredWriter;
use crate::Hub;

/// Sites the policy selects for `spec` (site labels match, and hosts that match and fit), sorted.
pub fn select_sites(spec: &AppSpec, policy: &Policy, orders: &LabelOrders, sites: &[SiteRecord]) -> Vec<Name> {
    let mut out: Vec<Name> = sites.iter().filter(|s| policy.selects(spec, s, orders)).map(|s| s.site.clone()).collect();
    out.sort();
    out
}

/// The sites `spec` belongs on now: those its policy selects, none while its tenant is blocked
/// (a blocked tenant's applications stop everywhere).
pub fn matching(hub: &Hub, spec: &AppSpec, policy: &Policy, sites: &[SiteRecord]) -> Vec<Name> {
    if hub.blocks.tenant_blocked(&spec.tenant) {
        return Vec::new();
    }
    // Only among the sites the tenant may use (`tenant.sites`).
    let scope = hub.tenants.scope_of(&spec.tenant);
    let allowed: Vec<SiteRecord> = sites.iter().filter(|s| scope.admits(s, &hub.orders)).cloned().collect();
    select_sites(spec, policy, &hub.orders, &allowed)
}

/// Every selected site must have, among the hosts the app may use there, one of an architecture
/// each stored image was built for; else the error names the service's image field. Sites that
/// have not reported their hosts yet are not judged.
pub fn check_arches(
    spec: &AppSpec,
    policy: &Policy,
    orders: &LabelOrders,
    images: &BTreeMap<String, ImageRecord>,
    sites: &[SiteRecord],
    matched: &[Name],
) -> Result<(), edge_types::api::ApiError> {
    for (i, svc) in spec.services.iter().enumerate() {
        let Some(img) = images.get(&svc.image) else { continue };
        let matched: BTreeSet<&Name> = matched.iter().collect();
        for site in sites.iter().filter(|s| matched.contains(&s.site) && !s.hosts.is_empty()) {
            let eligible: Vec<_> =
                site.hosts.iter().filter(|h| policy.host_fit(spec, h, orders).unmatched.is_empty()).collect();
            if eligible.iter().any(|h| edge_types::image::arch_mismatch(img, h).is_none()) {
                continue;
            }
            let built: Vec<String> = img.platforms().iter().map(|p| format!("{}/{}", p.os, p.architecture)).collect();
            let theirs: BTreeSet<&str> = eligible.iter().map(|h| h.arch.as_str()).collect();
            return Err(edge_types::api::ApiError::invalid(
                format!("/services/{i}/image"),
                format!(
                    "invalid request: image {} is built for {} only; site {} has no host of that architecture for service {} (its hosts: {})",
                    img.reference,
                    built.join(", "),
                    site.site,
                    svc.name,
                    theirs.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// KV key of an application record.
pub fn app_key(app: &Name) -> String {
    format!("app.{app}")
}

/// KV key of the last generation of a deleted application, so a re-created app continues the
/// sequence instead of reusing generation numbers.
pub fn gen_key(app: &Name) -> String {
    format!("gen.{app}")
}

/// The policy of a stored application (checked when it was applied).
fn policy_of(record: &AppRecord) -> Result<Policy, SchedulerError> {
    record.spec.check().map_err(|e| SchedulerError::Corrupt(e.to_string()))
}

/// Places one application: publishes its desired state to every matching site that lacks the
/// current generation, a tombstone to every site it no longer matches, and records the sites.
/// Returns the sites it is placed at.
pub async fn place(hub: &Hub, record: &AppRecord, sites: &[SiteRecord]) -> Result<Vec<Name>, SchedulerError> {
    // A span only within a request's trace: the periodic passes would make a trace per app.
    let span = edge_bus::trace::in_trace(
        || tracing::info_span!("placement", app = %record.spec.name, generation = record.generation, sites = tracing::field::Empty),
    );
    let placed = tracing::Instrument::instrument(place_in_span(hub, record, sites), span.clone()).await;
    if let Ok(p) = &placed {
        span.record("sites", p.len());
    }
    placed
}

async fn place_in_span(hub: &Hub, record: &AppRecord, sites: &[SiteRecord]) -> Result<Vec<Name>, SchedulerError> {
    let app = &record.spec.name;
    let policy = policy_of(record)?;
    let orders = policy.host_orders(&hub.orders);
    let matched = matching(hub, &record.spec, &policy, sites);
    let held = held_specs(hub, record).await?;
    let mut states: Vec<DesiredApp> = matched.iter().map(|site| target(record, &held, site, &orders)).collect();
    let keep: BTreeSet<&Name> = matched.iter().collect();
    for site in record.sites.iter().filter(|s| !keep.contains(s)) {
        states.push(desired(record, site, None));
        tracing::info!(%app, %site, "app leaves site");
    }
    ensure_all(&hub.js, states).await?;
    crate::topics::ensure(hub, &record.spec, &matched).await;
    if record.sites != matched {
        let m = matched.clone();
        kv::update::<AppRecord, _>(&hub.buckets.apps, &app_key(app), |cur| match cur {
            Some(r) if r.sites != m => {
                let mut r = r.clone();
                r.sites = m.clone();
                Change::Put(r)
            }
            _ => Change::Keep,
        })
        .await?;
    }
    Ok(matched)
}

/// Re-places one application for one site only (the site joined or its labels changed): the
/// cost is one check for that site, whatever the size of the fleet.
pub async fn place_on_site(hub: &Hub, record: &AppRecord, site: &SiteRecord) -> Result<(), SchedulerError> {
    let app = &record.spec.name;
    let policy = policy_of(record)?;
    let matches = !hub.blocks.tenant_blocked(&record.spec.tenant)
        && hub.tenants.scope_of(&record.spec.tenant).admits(site, &hub.orders)
        && policy.selects(&record.spec, site, &hub.orders);
    let placed = record.sites.contains(&site.site);
    if matches || placed {
        let orders = policy.host_orders(&hub.orders);
        let d = if matches {
            target(record, &held_specs(hub, record).await?, &site.site, &orders)
        } else {
            desired(record, &site.site, None)
        };
        ensure_all(&hub.js, vec![d]).await?;
        if matches {
            crate::topics::ensure(hub, &record.spec, std::slice::from_ref(&site.site)).await;
        }
    }
    if matches != placed {
        tracing::info!(%app, site = %site.site, placed = matches, "placement changed");
        kv::update::<AppRecord, _>(&hub.buckets.apps, &app_key(app), |cur| match cur {
            Some(r) if r.sites.contains(&site.site) != matches => {
                let mut r = r.clone();
                r.sites.retain(|s| s != &site.site);
                if matches {
                    r.sites.push(site.site.clone());
                    r.sites.sort();
                }
                Change::Put(r)
            }
            _ => Change::Keep,
        })
        .await?;
    }
    Ok(())
}

/// Removes an application from every site it is placed at, then forgets it.
pub async fn remove(hub: &Hub, record: &AppRecord) -> Result<(), SchedulerError> {
    let app = &record.spec.name;
    ensure_all(&hub.js, record.sites.iter().map(|site| desired(record, site, None)).collect()).await?;
    let generation = record.generation;
    kv::update::<u64, _>(&hub.buckets.apps, &gen_key(app), |cur| {
        if cur.is_some_and(|g| *g >= generation) {
            Change::Keep
        } else {
            Change::Put(generation)
        }
    })
    .await?;
    kv::update::<AppRecord, _>(&hub.buckets.apps, &app_key(app), |_| Change::Delete).await?;
    Ok(())
}

/// The desired state of `record` at `site`: its spec, with the host selector's label orders,
/// when placed there (`orders` given), else a tombstone.
fn desired(record: &AppRecord, site: &Name, orders: Option<&LabelOrders>) -> DesiredApp {
    DesiredApp {
        site: site.clone(),
        app: record.spec.name.clone(),
        generation: record.generation,
        spec: orders.map(|_| record.spec.clone()),
        orders: orders.map(|o| o.as_map().clone()).unwrap_or_default(),
        images: orders.map(|_| record.images.clone()).unwrap_or_default(),
    }
}

/// A generation's spec and the images it resolved to.
type Held = (AppSpec, BTreeMap<String, ImageRecord>);

/// Specs of the generations a rollout holds sites at, by generation.
async fn held_specs(hub: &Hub, record: &AppRecord) -> Result<BTreeMap<u64, Held>, SchedulerError> {
    let mut out = BTreeMap::new();
    let Some(r) = &record.rollout else { return Ok(out) };
    for g in r.held.values().copied().collect::<BTreeSet<u64>>() {
        let key = crate::rollout::rev_key(&record.spec.name, g);
        match kv::get::<edge_types::rollout::Revision>(&hub.buckets.apps, &key).await? {
            Some((rev, _)) => {
                out.insert(g, (rev.spec, rev.images));
            }
            None => {
                tracing::error!(app = %record.spec.name, generation = g, "held revision missing; site gets the new one")
            }
        }
    }
    Ok(out)
}

/// What `site` should run: the generation a rollout holds it at, or the record's.
fn target(record: &AppRecord, held: &BTreeMap<u64, Held>, site: &Name, orders: &LabelOrders) -> DesiredApp {
    let at = record.rollout.as_ref().and_then(|r| r.held.get(site)).and_then(|g| held.get(g).map(|s| (*g, s)));
    match at {
        Some((generation, (spec, images))) => DesiredApp {
            site: site.clone(),
            app: record.spec.name.clone(),
            generation,
            spec: Some(spec.clone()),
            orders: orders.as_map().clone(),
            images: images.clone(),
        },
        None => desired(record, site, Some(orders)),
    }
}

/// Writes every state of `states` that the hub's desired state does not already hold for its
/// subject, through the pipelined [`DesiredWriter`], each acked. Idempotent: a retry rewrites
/// nothing already there. What the streams hold is read with one scan of the app's subjects per
/// shard when many states of one app are checked (a fleet-wide placement), else with concurrent
/// direct gets.
pub async fn ensure_all(js: &jetstream::Context, states: Vec<DesiredApp>) -> Result<(), SchedulerError> {
    if states.is_empty() {
        return Ok(());
    }
    let streams = shard_streams(js).await?;
    let mut writer = DesiredWriter::new(js.clone(), DesiredWriter::DEFAULT_WINDOW);
    let one_app = states.iter().all(|d| d.app == states[0].app);
    if one_app && states.len() > SCAN_ABOVE {
        let shards: BTreeSet<u32> = states.iter().map(|d| subject::desired_shard(&d.site)).collect();
        let held = held_states(&streams, &shards, &states[0].app).await?;
        for d in &states {
            let current = held.get(&subject::desired(&d.site, &d.app)).map(|(seq, p)| (*seq, p.as_ref()));
            if let Some(after) = must_write(current, d) {
                writer.write(d, after).await?;
            }
        }
    } else {
        let checks = futures::stream::iter(states)
            .map(move |d| {
                let stream = streams[subject::desired_shard(&d.site) as usize].clone();
                async move { write_after(&stream, &d).await.map(|after| (d, after)) }
            })
            .buffered(CONCURRENT_CHECKS);
        futures::pin_mut!(checks);
        while let Some(checked) = checks.next().await {
            let (d, after) = checked?;
            if let Some(after) = after {
                writer.write(&d, after).await?;
                tracing::debug!(app = %d.app, site = %d.site, generation = d.generation, removed = d.spec.is_none(), "desired state written");
            }
        }
    }
    writer.flush().await?;
    if writer.written() > 0 {
        tracing::info!(written = writer.written(), "desired state written");
    }
    Ok(())
}

/// Direct gets in flight at once while checking what a placement must write.
const CONCURRENT_CHECKS: usize = 64;
/// Above this many states of one app, the app's subjects are read in one scan per shard instead.
const SCAN_ABOVE: usize = 32;
/// Shards scanned at once.
const CONCURRENT_SCANS: usize = 8;

/// Handles to the hub's desired-state streams by shard (made without a round trip).
async fn shard_streams(js: &jetstream::Context) -> Result<Vec<jetstream::stream::Stream<()>>, SchedulerError> {
    let mut out = Vec::with_capacity(subject::DESIRED_SHARDS as usize);
    for shard in edge_bus::topology::desired_shards() {
        out.push(js.get_stream_no_info(desired_stream(shard)).await.map_err(SchedulerError::js)?);
    }
    Ok(out)
}

/// The stored state of `app` at every site of `shards`: subject -> (stream sequence, payload).
async fn held_states(
    streams: &[jetstream::stream::Stream<()>],
    shards: &BTreeSet<u32>,
    app: &Name,
) -> Result<HashMap<String, (u64, Vec<u8>)>, SchedulerError> {
    let mut scans = Vec::with_capacity(shards.len());
    for &shard in shards {
        scans.push(scan_shard(streams[shard as usize].clone(), shard, app.clone()));
    }
    let mut scans = futures::stream::iter(scans).buffer_unordered(CONCURRENT_SCANS);
    let mut out = HashMap::new();
    while let Some(messages) = scans.next().await {
        for m in messages.map_err(SchedulerError::js)? {
            let seq = m.info().map_err(SchedulerError::js)?.stream_sequence;
            out.insert(m.subject.to_string(), (seq, m.payload.to_vec()));
        }
    }
    Ok(out)
}

/// The last message of every subject of `app` in one shard.
async fn scan_shard(
    stream: jetstream::stream::Stream<()>,
    shard: u32,
    app: Name,
) -> Result<Vec<jetstream::Message>, async_nats::Error> {
    edge_bus::scan::last_per_subject(&stream, subject::desired_of_app_in_shard(shard, &app)).await
}

/// Whether `d` must be written given what its subject holds (sequence and payload, if any):
/// the sequence it replaces (0: the subject is empty), or `None` if the stream already holds it
/// (or it is a removal of something never placed).
fn must_write(current: Option<(u64, &[u8])>, d: &DesiredApp) -> Option<u64> {
    match current {
        Some((seq, payload)) => {
            let same = serde_json::from_slice::<DesiredApp>(payload).is_ok_and(|current| {
                current.generation == d.generation
                    && current.spec == d.spec
                    && current.orders == d.orders
                    && current.images == d.images
            });
            (!same).then_some(seq)
        }
        None => d.spec.is_some().then_some(0),
    }
}

/// [`must_write`] for one state, read with a direct get.
async fn write_after(stream: &jetstream::stream::Stream<()>, d: &DesiredApp) -> Result<Option<u64>, SchedulerError> {
    match stream.direct_get_last_for_subject(subject::desired(&d.site, &d.app)).await {
        Ok(msg) => Ok(must_write(Some((msg.sequence, msg.payload.as_ref())), d)),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(must_write(None, d)),
        Err(e) => Err(SchedulerError::js(e)),
    }
}

#[cfg(test)]
mod arch_tests {
    use super::*;
    use edge_types::image::{Blob, ImageVariant, Platform};
    use edge_types::site::HostInventory;

    fn host(name: &str, arch: &str) -> HostInventory {
        HostInventory {
            host: Name::new(name).unwrap(),
            arch: arch.into(),
            os: "linux".into(),
            cpus: 4,
            memory_bytes: 4 << 30,
            disk_bytes: 0,
            gpus: vec![],
            devices: vec![],
            labels: Default::default(),
        }
    }

    fn site(name: &str, hosts: Vec<HostInventory>) -> SiteRecord {
        SiteRecord {
            site: Name::new(name).unwrap(),
            reported_labels: Default::default(),
            labels: Default::default(),
            hosts,
            agent_version: "t".into(),
            registered_at_ms: 0,
            public_key: None,
            duplicate_hosts: Vec::new(),
        }
    }

    #[test]
    fn a_site_without_a_host_of_the_images_architecture_is_refused() {
        let spec: AppSpec = serde_json::from_value(serde_json::json!({
            "name": "cam", "version": "1", "placement": {"sites": ""},
            "services": [{"name": "main", "image": "x/cam:1"}]
        }))
        .unwrap();
        let policy = spec.check().unwrap();
        let blob = Blob { digest: format!("sha256:{}", "a".repeat(64)), size: 1 };
        let platform = Platform { os: "linux".into(), architecture: "arm64".into(), variant: None };
        let variant = ImageVariant { platform, config: blob.clone(), layers: vec![blob] };
        let img = ImageRecord::new("x/cam:1".into(), vec![variant], String::new(), 0);
        let images = BTreeMap::from([("x/cam:1".to_string(), img)]);
        let mixed = site("mixed", vec![host("h1", "amd64"), host("h2", "arm64")]);
        let intel = site("intel", vec![host("h1", "amd64")]);
        let unknown = site("new", vec![]);
        let orders = LabelOrders::default();
        let names = |s: &[&SiteRecord]| s.iter().map(|s| s.site.clone()).collect::<Vec<_>>();
        let all = [mixed.clone(), unknown.clone()];
        assert!(check_arches(&spec, &policy, &orders, &images, &all, &names(&[&mixed, &unknown])).is_ok());
        let all = [mixed.clone(), intel.clone()];
        let e = check_arches(&spec, &policy, &orders, &images, &all, &names(&[&mixed, &intel])).unwrap_err();
        assert_eq!(e.pointer.as_deref(), Some("/services/0/image"));
        assert!(
            e.message.contains("linux/arm64") && e.message.contains("site intel") && e.message.contains("amd64"),
            "{}",
            e.message
        );
        // A site the app is not placed at is not judged.
        assert!(check_arches(&spec, &policy, &orders, &images, &all, &names(&[&mixed])).is_ok());
    }
}
