//! Writes many desired states at once (a full placement pass over a large fleet) into the hub's
//! desired-state streams (one per shard of sites): publishes are pipelined with a bounded number of acks outstanding, so memory
//! stays bounded, and every ack is awaited and checked, so a write counts only once JetStream
//! has stored it.

use std::future::IntoFuture;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage, publish::PublishAck};
use edge_bus::topology::desired_stream;
use edge_types::desired::DesiredApp;
use edge_types::subject;
use futures::future::{join, ready, Join, Ready};
use futures::stream::{FuturesUnordered, StreamExt};

use crate::error::SchedulerError;

/// An ack on its way, with the shard whose stream must have stored the message.
type AckFuture = Join<<PublishAckFuture as IntoFuture>::IntoFuture, Ready<u32>>;

/// Pipelined, acknowledged writer of [`DesiredApp`]s to the hub's desired-state streams.
///
/// [`write`](Self::write) returns once the message is sent and at most `window` acks are
/// outstanding; [`flush`](Self::flush) waits for the rest, and only then is everything written.
/// The first failed, timed-out or unexpected ack is returned as an error: drop the writer then,
/// since the acks still outstanding are abandoned. What was acked stays written, and every
/// message carries a deterministic `Nats-Msg-Id`, so writing the same states again is safe.
pub struct DesiredWriter {
    js: jetstream::Context,
    window: usize,
    acks: FuturesUnordered<AckFuture>,
    /// The hub's desired-state stream of each shard, for checking acks.
    streams: Vec<String>,
    written: u64,
    duplicates: u64,
    payload_bytes: u64,
}

impl DesiredWriter {
    /// Acks outstanding by default: enough to keep one connection busy on loopback.
    pub const DEFAULT_WINDOW: usize = 1024;
    /// Largest window: below async-nats' default `max_ack_inflight` (5,000), whose permits
    /// are held until an ack is consumed here, so a larger window could wait on itself.
    pub const MAX_WINDOW: usize = 4096;

    /// A writer on the hub's JetStream context with at most `window` acks outstanding
    /// (clamped to 1..=[`MAX_WINDOW`](Self::MAX_WINDOW); the context's `max_ack_inflight`
    /// must not be smaller), each waited for up to [`crate::WRITE_ACK_TIMEOUT`].
    pub fn new(mut js: jetstream::Context, window: usize) -> Self {
        js.set_timeout(crate::WRITE_ACK_TIMEOUT);
        Self {
            js,
            window: window.clamp(1, Self::MAX_WINDOW),
            acks: FuturesUnordered::new(),
            streams: edge_bus::topology::desired_shards().map(desired_stream).collect(),
            written: 0,
            duplicates: 0,
            payload_bytes: 0,
        }
    }

    /// Sends `d` to its subject with `Nats-Msg-Id` = `d.msg_id(after)`, where `after` is the
    /// stream sequence of its subject it replaces (0 for none). Waits for acks while the
    /// window is full.
    pub async fn write(&mut self, d: &DesiredApp, after: u64) -> Result<(), SchedulerError> {
        let payload = serde_json::to_vec(d).expect("desired state serializes");
        self.send(d, payload, after).await
    }

    async fn send(&mut self, d: &DesiredApp, payload: Vec<u8>, after: u64) -> Result<(), SchedulerError> {
        while self.acks.len() >= self.window {
            self.next_ack().await?;
        }
        self.payload_bytes += payload.len() as u64;
        // The trace of the request that placed it, if any, travels with it to the site.
        let mut headers = async_nats::HeaderMap::new();
        edge_bus::trace::inject(&mut headers);
        let msg = PublishMessage::build().headers(headers).payload(payload.into()).message_id(d.msg_id(after));
        let ack = self.js.send_publish(subject::desired(&d.site, &d.app), msg).await.map_err(SchedulerError::js)?;
        self.acks.push(join(ack.into_future(), ready(subject::desired_shard(&d.site))));
        Ok(())
    }

    /// Waits until every message sent so far is acked.
    pub async fn flush(&mut self) -> Result<(), SchedulerError> {
        while !self.acks.is_empty() {
            self.next_ack().await?;
        }
        Ok(())
    }

    async fn next_ack(&mut self) -> Result<(), SchedulerError> {
        let Some((ack, shard)) = self.acks.next().await else { return Ok(()) };
        let ack: PublishAck = ack.map_err(SchedulerError::js)?;
        if ack.stream != self.streams[shard as usize] {
            return Err(SchedulerError::JetStream(format!("desired state stored in stream {}", ack.stream)));
        }
        if ack.duplicate {
            self.duplicates += 1;
        } else {
            self.written += 1;
        }
        Ok(())
    }

    /// Messages acked as newly stored.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Messages acked as duplicates of one already stored (same `Nats-Msg-Id`).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Payload bytes sent (JSON, without headers).
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }
}
