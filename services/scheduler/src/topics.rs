//! The hub's side of applications' topics (`bus` in an app's spec): one stream per topic
//! (`TOPIC_<tenant>_<app>_<topic>`). A `to_hub` topic's sources the site stream of every site
//! the app is placed at, as the hub sources the sites' events, and is read for `edgectl events`
//! (`edge.v1.api.app.events`); a `to_sites` topic's takes what central senders send
//! (`edge.v1.api.app.send`), one copy per site, which each site's stream sources. Both are
//! scoped to the caller's tenant like every app operation.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use edge_types::api::{ApiError, ErrorCode};
use edge_types::app::{AppSpec, Direction, TopicSpec};
use edge_types::schema::decode;
use edge_types::topic::{EventsReply, EventsRequest, SendReply, SendRequest, TopicEvent};
use edge_types::{subject, Name};
use futures::StreamExt;

use crate::Hub;

/// What the hub's topic streams are known to have, by stream: the topic's limits and the
/// sites sourced. A placement pass that adds nothing costs no request.
pub type Known = dashmap::DashMap<String, (TopicSpec, BTreeSet<Name>)>;

/// Makes the hub's streams of `spec`'s topics source `sites` (added to those they have).
/// Failures are logged and retried on the next placement: the sites keep what the apps
/// publish meanwhile.
pub async fn ensure(hub: &Hub, spec: &AppSpec, sites: &[Name]) {
    let bus = &spec.bus;
    if sites.is_empty() {
        return;
    }
    for t in &bus.topics {
        let stream = edge_bus::topology::topic_stream(&spec.tenant, &spec.name, &t.name);
        let known = hub.topics.get(&stream).is_some_and(|k| &k.0 == t && sites.iter().all(|s| k.1.contains(s)));
        if known {
            continue;
        }
        match edge_bus::topology::ensure_hub_topic(&hub.js, &spec.tenant, &spec.name, t, sites).await {
            Ok(()) => {
                let mut entry = hub.topics.entry(stream).or_insert_with(|| (t.clone(), BTreeSet::new()));
                entry.0 = t.clone();
                entry.1.extend(sites.iter().cloned());
            }
            Err(e) => {
                tracing::warn!(app = %spec.name, topic = %t.name, error = %e, "cannot source the topic from its sites; will retry")
            }
        }
    }
}

/// Largest reply, in payload bytes (the bus carries 1 MiB).
const MAX_REPLY_BYTES: usize = 512 * 1024;
/// How long one read waits for the server to deliver what it counted as pending.
const READ_WAIT: Duration = Duration::from_secs(2);

/// `app.events`: the messages of one of an app's topics at the hub, oldest first.
pub async fn read(hub: &Hub, body: &[u8]) -> Result<EventsReply, ApiError> {
    let req: EventsRequest = decode(body).map_err(edge_bus::api::invalid)?;
    let record = crate::apps::get_record(hub, &req.name).await?;
    let spec = &record.spec;
    declared(spec, &req.topic, Direction::ToHub)?;
    let empty = EventsReply { events: Vec::new(), last_seq: req.after_seq.unwrap_or(0), more: false };
    let name = edge_bus::topology::topic_stream(&spec.tenant, &spec.name, &req.topic);
    let Ok(stream) = hub.js.get_stream(&name).await else {
        return Ok(empty); // placed nowhere yet
    };
    let filter_subjects = if req.sites.is_empty() {
        vec![subject::topic_all_sites(&spec.tenant, &spec.name, &req.topic)]
    } else {
        req.sites.iter().map(|s| subject::topic_at(&spec.tenant, &spec.name, &req.topic, s)).collect()
    };
    let deliver_policy = match (req.after_seq, req.since_ms) {
        (Some(seq), _) => DeliverPolicy::ByStartSequence { start_sequence: seq + 1 },
        (None, Some(ms)) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .map_err(|_| ApiError::invalid("/since_ms", "not a time"))?,
        },
        (None, None) => DeliverPolicy::All,
    };
    let config = pull::Config {
        filter_subjects,
        deliver_policy,
        ack_policy: AckPolicy::None,
        inactive_threshold: Duration::from_secs(10),
        memory_storage: true,
        ..Default::default()
    };
    let internal = |e: &dyn std::fmt::Display| ApiError::internal(format!("cannot read the topic's stream: {e}"));
    let mut consumer = stream.create_consumer(config).await.map_err(|e| internal(&e))?;
    let pending = consumer.info().await.map_err(|e| internal(&e))?.num_pending;
    let reply = collect(&consumer, pending, req.max as usize, empty).await;
    let _ = stream.delete_consumer(&consumer.cached_info().name).await;
    reply
}

/// The topic `topic` of `spec`, which must flow `direction`.
fn declared<'a>(spec: &'a AppSpec, topic: &Name, direction: Direction) -> Result<&'a TopicSpec, ApiError> {
    let t = spec.bus.topics.iter().find(|t| &t.name == topic).ok_or_else(|| {
        let (app, topic) = (spec.name.as_str(), topic.as_str());
        ApiError::invalid("/topic", format!("application {app:?} declares no topic {topic:?} (bus.topics of its spec)"))
    })?;
    if t.direction != direction {
        let (verb, other) = match direction {
            Direction::ToHub => ("read at the hub", "to_sites: its messages go to the sites"),
            Direction::ToSites => ("sent to the sites", "to_hub: its messages come from the sites"),
        };
        return Err(ApiError::invalid("/topic", format!("topic {topic:?} cannot be {verb}: it is {other}")));
    }
    Ok(t)
}

/// `app.send`: one message to a `to_sites` topic, stored at the hub once for each target site
/// (`edge.v1.topic.<tenant>.<app>.<topic>.<site>`), from where the site's stream copies it.
pub async fn send(hub: &Hub, body: &[u8]) -> Result<SendReply, ApiError> {
    let req: SendRequest = decode(body).map_err(edge_bus::api::invalid)?;
    let record = crate::apps::get_record(hub, &req.name).await?;
    let spec = &record.spec;
    let t = declared(spec, &req.topic, Direction::ToSites)?;
    if req.data.len() > t.max_msg_size as usize {
        return Err(ApiError::invalid(
            "/data",
            format!("{} bytes is more than the topic's max_msg_size {}", req.data.len(), t.max_msg_size),
        ));
    }
    let sites: Vec<Name> = if req.sites.is_empty() {
        record.sites.clone()
    } else {
        if let Some((i, s)) = req.sites.iter().enumerate().find(|(_, s)| !record.sites.contains(s)) {
            return Err(ApiError::invalid(
                format!("/sites/{i}"),
                format!("application {:?} does not run at site {s:?}", spec.name.as_str()),
            ));
        }
        req.sites.clone()
    };
    // The stream may not exist yet if placement's last attempt failed.
    ensure(hub, spec, &sites).await;
    let unavailable =
        |e: &dyn std::fmt::Display| ApiError::new(ErrorCode::Unavailable, format!("cannot store the message: {e}"));
    let mut acks = Vec::with_capacity(sites.len());
    for site in &sites {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = &req.id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("{id}.{site}").as_str());
        }
        let subject = subject::topic_at(&spec.tenant, &spec.name, &req.topic, site);
        let ack = hub.js.publish_with_headers(subject, headers, req.data.clone().into_bytes().into()).await;
        acks.push(ack.map_err(|e| unavailable(&e))?);
    }
    for ack in acks {
        ack.await.map_err(|e| unavailable(&e))?;
    }
    Ok(SendReply { sites })
}

/// Reads up to `max` of the consumer's `pending` messages into `reply`.
async fn collect(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    pending: u64,
    max: usize,
    mut reply: EventsReply,
) -> Result<EventsReply, ApiError> {
    if pending == 0 {
        return Ok(reply);
    }
    let want = max.min(pending as usize);
    let mut messages = consumer
        .fetch()
        .max_messages(want)
        .expires(READ_WAIT)
        .messages()
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the topic's stream: {e}")))?;
    let mut bytes = 0;
    while let Some(Ok(m)) = messages.next().await {
        let Ok(info) = m.info() else { continue };
        let site = m.subject.rsplit('.').next().and_then(|s| Name::new(s).ok());
        let (seq, left, stored) = (info.stream_sequence, info.pending, info.published);
        bytes += m.payload.len() + 128;
        if bytes > MAX_REPLY_BYTES && !reply.events.is_empty() {
            reply.more = true;
            break;
        }
        let stored_ms = u64::try_from(stored.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        if let Some(site) = site {
            reply.events.push(TopicEvent::payload(site, seq, stored_ms, &m.payload));
        }
        reply.last_seq = seq;
        reply.more = left > 0;
        if reply.events.len() >= want {
            break;
        }
    }
    Ok(reply)
}
