//! The one source of truth for JetStream streams and KV buckets. Services call these at start-up;
//! every call is idempotent.
//!
//! Hub (domain `hub`):
//! - streams `DESIRED_00` to `DESIRED_31`, one per desired-state shard (`edge_types::subject::
//!   desired_shard` of the site), each binding `edge.v1.desired.<shard>.>`, one message per
//!   subject: the latest desired state of each (site, app).
//! - stream `SITE_EVENTS` binds nothing; it sources every registered site's `SITE_EVENTS` through
//!   `$JS.<site>.API`, so site events reach the hub once the link is up, however long it was down.
//! - KV buckets `edge_apps`, `edge_sites`, `edge_status`, `edge_secrets` (secrets, encrypted
//!   with their tenant's data key) and `edge_secret_keys` (data keys wrapped by the master key).
//! - stream `AUDIT` binds `edge.v1.audit.>`: who did what to which secret or site, kept a year.
//! - sealed secrets travel in the desired state too, as
//!   `edge.v1.desired.<shard>.<site>._secret.<tenant>.<name>`.
//!
//! Site (domain = site id):
//! - stream `DESIRED` binds nothing; it sources the hub's stream of the site's shard filtered to
//!   `edge.v1.desired.<shard>.<site>.>`, so the site holds exactly its own desired state, also
//!   offline.
//! - stream `SITE_EVENTS` binds `edge.v1.site.<site>.>`: status and registration, kept at the
//!   site until the hub has processed them (the hub's watermark, `..._watermark` of its desired state,
//!   arrives with the desired state and the site purges up to it). Full, it refuses new events.
//! - KV buckets `edge_hosts`, `edge_leader`, `edge_assign`, `edge_host_status`: the site's own
//!   cluster (hosts, leader lease, replica placement, per-host status), see `edge_types::cluster`;
//!   `edge_keys`: each host's public key and the site key sealed to each host.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use edge_types::subject;
use edge_types::Name;

use crate::BusError;

/// JetStream domain of the hub.
pub const HUB_DOMAIN: &str = "hub";
/// A site's own desired-state stream (the hub's are [`desired_stream`]).
pub const STREAM_DESIRED: &str = "DESIRED";
pub const STREAM_SITE_EVENTS: &str = "SITE_EVENTS";
pub const STREAM_TELEMETRY: &str = "TELEMETRY";
pub const BUCKET_APPS: &str = "edge_apps";
pub const BUCKET_SITES: &str = "edge_sites";
pub const BUCKET_STATUS: &str = "edge_status";
pub const BUCKET_SECRETS: &str = "edge_secrets";
pub const BUCKET_SECRET_KEYS: &str = "edge_secret_keys";
pub const STREAM_AUDIT: &str = "AUDIT";
pub const STREAM_ALERTS: &str = "ALERTS";
pub const BUCKET_ALERTS: &str = "edge_alerts";
pub const BUCKET_HOSTS: &str = "edge_hosts";
pub const BUCKET_LEADER: &str = "edge_leader";
pub const BUCKET_ASSIGN: &str = "edge_assign";
pub const BUCKET_HOST_STATUS: &str = "edge_host_status";
pub const BUCKET_KEYS: &str = "edge_keys";
pub const BUCKET_IMAGES: &str = "edge_images";
pub const BUCKET_STAGING: &str = "edge_staging";
/// The hub's blob store (object store): image configs and layers, object name = digest.
pub const BLOBS_HUB: &str = "edge_blobs";

const DEDUPE_WINDOW: Duration = Duration::from_secs(120);
/// Dedupe window of DESIRED: a writer re-reads a subject's state before writing again, so the
/// window only has to cover publishes in flight (acks time out after seconds); a short window
/// keeps the hub's id map small during a fleet-wide placement (measured: about 8% more writes/s
/// than with 2 minutes).
pub const DESIRED_DEDUPE_WINDOW: Duration = Duration::from_secs(30);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// The hub's stream of one desired-state shard: `DESIRED_<shard>`.
pub fn desired_stream(shard: u32) -> String {
    format!("{STREAM_DESIRED}_{}", subject::shard_token(shard))
}

/// The hub's desired-state stream that holds `site`'s subjects.
pub fn desired_stream_of(site: &Name) -> String {
    desired_stream(subject::desired_shard(site))
}

/// Every shard of the hub's desired state.
pub fn desired_shards() -> std::ops::Range<u32> {
    0..subject::DESIRED_SHARDS
}

/// Consumers each of the hub's `DESIRED_<shard>` streams may have: one sourcing consumer per connected site, plus the
/// services' own. nats-server 2.15 limits every stream to 1,000 consumers unless the stream
/// sets its own limit (zero or -1 mean that default, not "unlimited"), which would refuse the
/// 1,001st site.
pub const DESIRED_MAX_CONSUMERS: i32 = 1_000_000;

/// Limits of a site's event stream, which buffers everything the hub has not processed yet.
/// When a limit is reached, new events are refused (`discard: new`), never old ones dropped.
#[derive(Clone, Debug)]
pub struct SiteStreamLimits {
    pub max_bytes: i64,
    /// -1 for no limit on the count.
    pub max_messages: i64,
    /// Events older than this are dropped even if the hub never got them; the default (zero)
    /// keeps them until the hub has them.
    pub max_age: Duration,
    /// Most bytes of telemetry (resource samples, lifecycle events) kept at the site; the
    /// oldest samples go first, and samples older than a day always go.
    pub telemetry_max_bytes: i64,
}

impl Default for SiteStreamLimits {
    fn default() -> Self {
        Self { max_bytes: 1 << 30, max_messages: -1, max_age: Duration::ZERO, telemetry_max_bytes: 64 << 20 }
    }
}

/// The JetStream API prefix of a domain, for `external.api` of a source.
pub fn api_prefix(domain: &str) -> String {
    format!("$JS.{domain}.API")
}

/// A JetStream context bound to the hub's domain, usable from any server of the system.
pub fn hub_js(client: &async_nats::Client) -> jetstream::Context {
    jetstream::with_domain(client.clone(), HUB_DOMAIN)
}

/// Handles to the hub's buckets.
#[derive(Clone)]
pub struct HubBuckets {
    pub apps: kv::Store,
    pub sites: kv::Store,
    pub status: kv::Store,
    pub secrets: kv::Store,
    /// Image records by reference (key: [`edge_types::image::reference_key`]).
    pub images: kv::Store,
    /// What registry-sync has staged at each site, key = site.
    pub staging: kv::Store,
}

/// The blob store of a site, in the site's domain: bucket names differ per site so that no two
/// domains' streams bind the same subjects.
pub fn site_blobs(site: &Name) -> String {
    format!("edge_blobs_{site}")
}

/// Ensures the hub's blob store (registry-sync's).
pub async fn ensure_image_store(
    js: &jetstream::Context,
) -> Result<async_nats::jetstream::object_store::ObjectStore, BusError> {
    ensure_object_store(js, BLOBS_HUB, "Image configs and layers by digest").await
}

/// Opens an object store bucket (file storage), creating it if it does not exist.
pub async fn ensure_object_store(
    js: &jetstream::Context,
    name: &str,
    description: &str,
) -> Result<async_nats::jetstream::object_store::ObjectStore, BusError> {
    ensure_object_store_limited(js, name, description, 0).await
}

/// [`ensure_object_store`] holding at most `max_bytes` (0: no limit; applied when created).
pub async fn ensure_object_store_limited(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    max_bytes: i64,
) -> Result<async_nats::jetstream::object_store::ObjectStore, BusError> {
    use async_nats::jetstream::object_store;
    match js.get_object_store(name).await {
        Ok(s) => Ok(s),
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: name.into(),
                description: Some(description.into()),
                storage: stream::StorageType::File,
                num_replicas: replicas(),
                max_bytes: max_bytes.max(0),
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::js(format!("ensure object store {name}"), e)),
    }
}

/// Copies JetStream keeps of each stream and bucket this process creates: `EDGE_JS_REPLICAS`
/// (1 to 5, default 1). The central services on a three-node hub cluster set 3; a site's
/// single leaf server keeps 1.
pub fn replicas() -> usize {
    std::env::var("EDGE_JS_REPLICAS").ok().and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(1).clamp(1, 5)
}

/// Ensures the hub's streams and buckets.
pub async fn ensure_hub(js: &jetstream::Context) -> Result<HubBuckets, BusError> {
    ensure_desired_streams(js).await?;
    // Sources are added per site at registration, so never overwrite an existing config here.
    js.get_or_create_stream(stream::Config {
        name: STREAM_SITE_EVENTS.into(),
        description: Some("Events of every site, sourced from the sites' own streams".into()),
        storage: stream::StorageType::File,
        num_replicas: replicas(),
        max_age: 30 * DAY,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::js("ensure hub stream SITE_EVENTS", e))?;
    js.get_or_create_stream(stream::Config {
        name: STREAM_TELEMETRY.into(),
        description: Some("Resource samples and lifecycle events of every site, sourced from the sites".into()),
        storage: stream::StorageType::File,
        num_replicas: replicas(),
        max_age: 7 * DAY,
        max_bytes: 4 << 30,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::js("ensure hub stream TELEMETRY", e))?;
    Ok(HubBuckets {
        apps: ensure_bucket(js, BUCKET_APPS, "Applied applications by name").await?,
        sites: ensure_bucket(js, BUCKET_SITES, "Registered sites by id").await?,
        status: ensure_bucket(js, BUCKET_STATUS, "Latest status report per app and site, key <app>.<site>").await?,
        secrets: ensure_bucket(js, BUCKET_SECRETS, "Secrets per tenant, key <tenant>.<name>, values encrypted").await?,
        images: ensure_bucket(js, BUCKET_IMAGES, "Images in the store by reference, key <reference with : as =>")
            .await?,
        staging: ensure_bucket(js, BUCKET_STAGING, "What registry-sync has staged at each site, key = site").await?,
    })
}

/// Ensures the hub's desired-state streams, one per shard.
async fn ensure_desired_streams(js: &jetstream::Context) -> Result<(), BusError> {
    // Before the desired state was sharded, one hub stream `DESIRED` bound every desired-state
    // subject; it overlaps the shards' subjects, so the server would refuse them.
    if js.get_stream(STREAM_DESIRED).await.is_ok() {
        return Err(BusError::Layout(format!(
            "the hub has a stream {STREAM_DESIRED} from before the desired state was sharded \
             (edge.v1.desired.<shard>.<site>...); remove it (nats stream rm {STREAM_DESIRED}, or start \
             the hub with empty storage): the scheduler and the secrets service write every desired \
             state and sealed secret again"
        )));
    }
    for shard in desired_shards() {
        let name = desired_stream(shard);
        js.create_or_update_stream(stream::Config {
            name: name.clone(),
            description: Some(format!("Desired state per site and app of shard {shard}, sourced by its sites")),
            subjects: vec![subject::desired_in_shard(shard)],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            num_replicas: replicas(),
            duplicate_window: DESIRED_DEDUPE_WINDOW,
            allow_direct: true,
            max_consumers: DESIRED_MAX_CONSUMERS,
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::js(format!("ensure hub stream {name}"), e))?;
    }
    Ok(())
}

/// Ensures what the `telemetry` service keeps: alert events (stream `ALERTS`, a month) and the
/// firing alerts (bucket `edge_alerts`, key `<kind>.<name>`).
pub async fn ensure_alerts(js: &jetstream::Context) -> Result<kv::Store, BusError> {
    let description = "Alerts firing and resolving, with their causes";
    ensure_record_stream(js, STREAM_ALERTS, description, subject::alert_all(), 30 * DAY).await?;
    ensure_bucket(js, BUCKET_ALERTS, "Firing alerts, key <kind>.<name>").await
}

/// Ensures the audit stream `AUDIT`: who did what to which secret or site, kept a year.
pub async fn ensure_audit(js: &jetstream::Context) -> Result<(), BusError> {
    let description = "Audit trail: who stored, rotated, distributed or withdrew which secret; who blocked which site";
    ensure_record_stream(js, STREAM_AUDIT, description, subject::audit_all(), 365 * DAY).await
}

/// Ensures what only the `secrets` service uses: the wrapped data keys and the audit stream.
pub async fn ensure_secret_store(js: &jetstream::Context) -> Result<kv::Store, BusError> {
    ensure_audit(js).await?;
    ensure_bucket(js, BUCKET_SECRET_KEYS, "Data keys per tenant and the sealing key, wrapped by the master key").await
}

/// A hub stream of records kept for `max_age` (file storage, deduplicated by message id).
async fn ensure_record_stream(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    subject: String,
    max_age: Duration,
) -> Result<(), BusError> {
    js.get_or_create_stream(stream::Config {
        name: name.into(),
        description: Some(description.into()),
        subjects: vec![subject],
        storage: stream::StorageType::File,
        num_replicas: replicas(),
        max_age,
        duplicate_window: DEDUPE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::js(format!("ensure hub stream {name}"), e))?;
    Ok(())
}

/// Opens a KV bucket (file storage, one value per key), creating it if it does not exist.
async fn ensure_bucket(js: &jetstream::Context, name: &str, description: &str) -> Result<kv::Store, BusError> {
    match js.get_key_value(name).await {
        Ok(s) => Ok(s),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: name.into(),
                description: description.into(),
                history: 1,
                storage: stream::StorageType::File,
                num_replicas: replicas(),
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::js(format!("ensure bucket {name}"), e)),
    }
}

/// Handles to a site's cluster buckets (see `edge_types::cluster`).
#[derive(Clone)]
pub struct SiteBuckets {
    pub hosts: kv::Store,
    pub leader: kv::Store,
    pub assign: kv::Store,
    pub host_status: kv::Store,
    pub keys: kv::Store,
}

/// Ensures a site's cluster buckets in its own domain (`js` must be the site leaf's JetStream).
pub async fn ensure_site_buckets(js: &jetstream::Context) -> Result<SiteBuckets, BusError> {
    Ok(SiteBuckets {
        hosts: ensure_bucket(js, BUCKET_HOSTS, "The site's hosts, rewritten by each every beat").await?,
        leader: ensure_bucket(js, BUCKET_LEADER, "The site's leader lease").await?,
        assign: ensure_bucket(js, BUCKET_ASSIGN, "Where each app's replicas run at the site").await?,
        host_status: ensure_bucket(js, BUCKET_HOST_STATUS, "Each host's status per app, key <app>.<host>").await?,
        keys: ensure_bucket(js, BUCKET_KEYS, "Hosts' public keys and the site key sealed to each host").await?,
    })
}

/// Makes the hub's `SITE_EVENTS` and `TELEMETRY` source the site's; a no-op when they already
/// do. Returns true when the events source was added.
pub async fn add_site_source(js: &jetstream::Context, site: &Name) -> Result<bool, BusError> {
    add_source(js, STREAM_TELEMETRY, site).await?;
    add_source(js, STREAM_SITE_EVENTS, site).await
}

async fn add_source(js: &jetstream::Context, name: &str, site: &Name) -> Result<bool, BusError> {
    let mut stream = js.get_stream(name).await.map_err(|e| BusError::js(format!("get hub stream {name}"), e))?;
    let info = stream.info().await.map_err(|e| BusError::js(format!("read hub stream {name}"), e))?;
    let mut config = info.config.clone();
    let sources = config.sources.get_or_insert_with(Vec::new);
    let api = api_prefix(site.as_str());
    // `external.api` is set explicitly: async-nats sends `domain` raw on update, which the
    // server rejects (nats.rs #1350). The site's consumer delivers on the site's own subjects
    // (`edge.v1.dlv.<site>.up`), the only ones its leaf link may publish.
    let external = stream::External { api_prefix: api.clone(), delivery_prefix: Some(subject::delivery_up(site)) };
    let existing = sources.iter().position(|s| s.external.as_ref().is_some_and(|x| x.api_prefix == api));
    match existing {
        Some(i) if sources[i].external.as_ref() == Some(&external) => return Ok(false),
        // Made by a version without delivery prefixes: the same source, delivered on the site's subjects.
        Some(i) => sources[i].external = Some(external),
        None => sources.push(stream::Source { name: name.into(), external: Some(external), ..Default::default() }),
    }
    let added = existing.is_none();
    js.update_stream(config).await.map_err(|e| BusError::js(format!("add source for site {site}"), e))?;
    Ok(added)
}

/// The stream of an app's topic, at each site and at the hub: `TOPIC_<tenant>_<app>_<topic>`
/// (names hold no `_`, so no two topics share a stream).
pub fn topic_stream(tenant: &Name, app: &Name, topic: &Name) -> String {
    format!("{}{topic}", topic_stream_prefix(tenant, app))
}

/// What the stream names of an app's topics start with: `TOPIC_<tenant>_<app>_`.
pub fn topic_stream_prefix(tenant: &Name, app: &Name) -> String {
    format!("TOPIC_{tenant}_{app}_")
}

/// Ensures the site's stream of an app's topic (`js` is the site leaf's).
/// - `to_hub`: the app's containers publish to `edge.v1.topic.<tenant>.<app>.<topic>`, stored
///   with the site appended; when full, new messages are refused (the publisher sees the
///   error) and nothing stored is dropped.
/// - `to_sites`: a copy of the hub's messages for this site, sourced from the hub's stream;
///   when full, the oldest go.
pub async fn ensure_site_topic(
    js: &jetstream::Context,
    site: &Name,
    tenant: &Name,
    app: &Name,
    t: &edge_types::app::TopicSpec,
) -> Result<(), BusError> {
    use edge_types::app::Direction;
    let name = topic_stream(tenant, app, &t.name);
    let stored = subject::topic_at(tenant, app, &t.name, site);
    let mut config = stream::Config {
        name: name.clone(),
        description: Some(format!("Topic {} of app {app} (tenant {tenant}) at site {site}", t.name)),
        storage: stream::StorageType::File,
        num_replicas: replicas(),
        max_bytes: t.max_bytes,
        max_messages: t.max_msgs.unwrap_or(-1),
        max_age: Duration::from_secs(t.max_age_secs),
        max_message_size: t.max_msg_size,
        duplicate_window: DEDUPE_WINDOW.min(Duration::from_secs(t.max_age_secs)),
        ..Default::default()
    };
    match t.direction {
        Direction::ToHub => {
            let plain = subject::topic(tenant, app, &t.name);
            config.subjects = vec![plain.clone()];
            config.subject_transform = Some(stream::SubjectTransform { source: plain, destination: stored });
            config.discard = stream::DiscardPolicy::New;
        }
        Direction::ToSites => {
            config.sources = Some(vec![stream::Source {
                name: name.clone(),
                filter_subject: Some(stored),
                external: Some(stream::External {
                    api_prefix: api_prefix(HUB_DOMAIN),
                    delivery_prefix: Some(subject::delivery_down(site)),
                }),
                ..Default::default()
            }]);
            config.discard = stream::DiscardPolicy::Old;
        }
    }
    js.create_or_update_stream(config).await.map_err(|e| BusError::js(format!("ensure site stream {name}"), e))?;
    Ok(())
}

/// Ensures the hub's stream of an app's topic.
/// - `to_hub`: it sources the site stream of each of `sites` (added to those it has; a site
///   once sourced stays, so what it buffered still arrives after the app leaves it); it keeps
///   the topic's bytes per site sourced.
/// - `to_sites`: senders' messages, one per site (`edge.v1.topic.<tenant>.<app>.<topic>.<site>`),
///   each site's kept up to the topic's message count.
pub async fn ensure_hub_topic(
    js: &jetstream::Context,
    tenant: &Name,
    app: &Name,
    t: &edge_types::app::TopicSpec,
    sites: &[Name],
) -> Result<(), BusError> {
    use edge_types::app::Direction;
    let name = topic_stream(tenant, app, &t.name);
    let (mut config, exists) = match js.get_stream(&name).await {
        Ok(mut s) => {
            let info = s.info().await.map_err(|e| BusError::js(format!("read hub stream {name}"), e))?;
            (info.config.clone(), true)
        }
        Err(_) => {
            let config = stream::Config {
                name: name.clone(),
                description: Some(format!("Topic {} of app {app} (tenant {tenant}), every site's", t.name)),
                storage: stream::StorageType::File,
                num_replicas: replicas(),
                ..Default::default()
            };
            (config, false)
        }
    };
    let before = config.clone();
    config.max_age = Duration::from_secs(t.max_age_secs);
    config.max_message_size = t.max_msg_size;
    match t.direction {
        Direction::ToHub => {
            let sources = config.sources.get_or_insert_with(Vec::new);
            for site in sites {
                let api = api_prefix(site.as_str());
                if !sources.iter().any(|s| s.external.as_ref().is_some_and(|x| x.api_prefix == api)) {
                    sources.push(stream::Source {
                        name: name.clone(),
                        external: Some(stream::External {
                            api_prefix: api,
                            delivery_prefix: Some(subject::delivery_up(site)),
                        }),
                        ..Default::default()
                    });
                }
            }
            config.max_bytes = t.max_bytes.saturating_mul(sources.len().max(1) as i64);
        }
        Direction::ToSites => {
            config.subjects = vec![subject::topic_all_sites(tenant, app, &t.name)];
            config.max_messages_per_subject = t.max_msgs.unwrap_or(10_000);
            config.duplicate_window = DEDUPE_WINDOW;
        }
    }
    if exists && config == before {
        return Ok(());
    }
    if exists {
        js.update_stream(config).await.map_err(|e| BusError::js(format!("update hub stream {name}"), e))?;
    } else {
        js.create_stream(config).await.map_err(|e| BusError::js(format!("create hub stream {name}"), e))?;
    }
    Ok(())
}

/// Ensures a site's streams in its own domain (`js` must be the site leaf's JetStream).
pub async fn ensure_site(js: &jetstream::Context, site: &Name, limits: &SiteStreamLimits) -> Result<(), BusError> {
    js.create_or_update_stream(stream::Config {
        name: STREAM_DESIRED.into(),
        description: Some(format!("Desired state of site {site}, sourced from the hub")),
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas(),
        sources: Some(vec![stream::Source {
            name: desired_stream_of(site),
            filter_subject: Some(subject::desired_for_site(site)),
            // The hub's consumer delivers on the site's own subjects, which its leaf link may receive.
            external: Some(stream::External {
                api_prefix: api_prefix(HUB_DOMAIN),
                delivery_prefix: Some(subject::delivery_down(site)),
            }),
            ..Default::default()
        }]),
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::js("ensure site stream DESIRED", e))?;
    js.create_or_update_stream(stream::Config {
        name: STREAM_SITE_EVENTS.into(),
        description: Some(format!("Events of site {site}, copied to the hub when the link is up")),
        subjects: vec![subject::site_events(site)],
        storage: stream::StorageType::File,
        num_replicas: replicas(),
        max_bytes: limits.max_bytes,
        max_messages: limits.max_messages,
        max_age: limits.max_age,
        discard: stream::DiscardPolicy::New,
        duplicate_window: DEDUPE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::js("ensure site stream SITE_EVENTS", e))?;
    js.create_or_update_stream(stream::Config {
        name: STREAM_TELEMETRY.into(),
        description: Some(format!("Resource samples and lifecycle events of site {site}, newest kept")),
        subjects: vec![subject::telemetry_for_site(site)],
        storage: stream::StorageType::File,
        num_replicas: replicas(),
        max_bytes: limits.telemetry_max_bytes,
        max_age: DAY,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::js("ensure site stream TELEMETRY", e))?;
    Ok(())
}

/// A site source of the hub's `SITE_EVENTS` as the server reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteSourceState {
    pub site: String,
    /// Since the source last heard from the site; `None` when its consumer does not exist.
    pub active: Option<Duration>,
    pub lag: u64,
}

/// Reads the state of every site source of the hub's `SITE_EVENTS` (raw API: the client's
/// typed info omits which site a source is).
pub async fn site_sources(client: &async_nats::Client) -> Result<Vec<SiteSourceState>, BusError> {
    site_sources_of(client, STREAM_SITE_EVENTS).await
}

/// The same for another hub stream that sources the sites (`TELEMETRY`).
pub async fn site_sources_of(client: &async_nats::Client, stream: &str) -> Result<Vec<SiteSourceState>, BusError> {
    let subject = format!("{}.STREAM.INFO.{stream}", api_prefix(HUB_DOMAIN));
    let what = format!("read hub {stream}");
    let reply = client.request(subject, "".into()).await.map_err(|e| BusError::js(what.clone(), e))?;
    let info: serde_json::Value = serde_json::from_slice(&reply.payload).map_err(|e| BusError::js(what, e))?;
    let mut out = Vec::new();
    for s in info["sources"].as_array().into_iter().flatten() {
        let api = s["external"]["api"].as_str().unwrap_or_default();
        let Some(site) = api.strip_prefix("$JS.").and_then(|r| r.strip_suffix(".API")) else { continue };
        let active = s["active"].as_i64().filter(|ns| *ns >= 0).map(|ns| Duration::from_nanos(ns as u64));
        out.push(SiteSourceState { site: site.to_string(), active, lag: s["lag"].as_u64().unwrap_or(0) });
    }
    Ok(out)
}

/// Removes and re-adds a site's source of the hub's `SITE_EVENTS`. The server then creates its
/// sourcing consumer at once and resumes after the last message it stored: nothing is lost or
/// copied twice. Used when a source has stalled (after a hub restart the server retries creating
/// it with a back-off that has held catch-up for 40 s).
pub async fn reattach_site_source(js: &jetstream::Context, site: &Name) -> Result<(), BusError> {
    reattach_source(js, STREAM_SITE_EVENTS, &api_prefix(site.as_str())).await
}

/// The same for several sites of a hub stream that sources the sites (`SITE_EVENTS`,
/// `TELEMETRY`) at once: two stream updates in all, however many sites.
pub async fn reattach_site_sources_of(js: &jetstream::Context, stream: &str, sites: &[Name]) -> Result<(), BusError> {
    let apis: Vec<String> = sites.iter().map(|s| api_prefix(s.as_str())).collect();
    reattach_sources(js, stream, &apis).await
}

/// The same for a site's `DESIRED` stream and its source in the hub (`js` is the site's).
pub async fn reattach_desired_source(js: &jetstream::Context) -> Result<(), BusError> {
    reattach_source(js, STREAM_DESIRED, &api_prefix(HUB_DOMAIN)).await
}

async fn reattach_source(js: &jetstream::Context, name: &str, api: &str) -> Result<(), BusError> {
    reattach_sources(js, name, &[api.to_string()]).await
}

/// Removes the sources of stream `name` that read through any of `apis`, then adds them back.
async fn reattach_sources(js: &jetstream::Context, name: &str, apis: &[String]) -> Result<(), BusError> {
    let mut stream = js.get_stream(name).await.map_err(|e| BusError::js(format!("get stream {name}"), e))?;
    let mut config = stream.info().await.map_err(|e| BusError::js(format!("read stream {name}"), e))?.config.clone();
    let is_one = |s: &stream::Source| s.external.as_ref().is_some_and(|x| apis.contains(&x.api_prefix));
    let sources = config.sources.get_or_insert_with(Vec::new);
    let taken: Vec<stream::Source> = sources.iter().filter(|s| is_one(s)).cloned().collect();
    if taken.is_empty() {
        return Ok(());
    }
    sources.retain(|s| !is_one(s));
    let what = |verb: &str| format!("{verb} {} source(s) of {name}", taken.len());
    js.update_stream(config.clone()).await.map_err(|e| BusError::js(what("detach"), e))?;
    config.sources.get_or_insert_with(Vec::new).extend(taken.iter().cloned());
    js.update_stream(config).await.map_err(|e| BusError::js(what("re-attach"), e))?;
    Ok(())
}
