//! The site's event buffer: every event the site-manager records goes through here into the
//! site's SITE_EVENTS stream. A full buffer refuses new events (back-pressure): the refusal is
//! counted and raises an alarm, logged and carried by every heartbeat, never silent. The hub's
//! watermark purges what the hub has processed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_nats::jetstream::{self, message::PublishMessage, ErrorCode};
use edge_bus::topology::STREAM_SITE_EVENTS;
use edge_types::site::BufferState;

/// Why an event was not stored.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("the site's event buffer is full; event refused")]
    Full,
    #[error("event not stored: {0}")]
    Unavailable(String),
}

/// Writes events to the site's stream and keeps the full-buffer alarm.
pub struct EventBuffer {
    js: jetstream::Context,
    rejected: AtomicU64,
    full: AtomicBool,
}

impl EventBuffer {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js, rejected: AtomicU64::new(0), full: AtomicBool::new(false) }
    }

    /// Stores one event with a deterministic `Nats-Msg-Id`; waits for the stream's ack.
    pub async fn publish(&self, subject: String, payload: Vec<u8>, msg_id: String) -> Result<(), BufferError> {
        let msg = PublishMessage::build().payload(payload.into()).message_id(msg_id);
        let unavailable = |e: &dyn std::fmt::Display| BufferError::Unavailable(e.to_string());
        let ack = self.js.send_publish(subject, msg).await.map_err(|e| unavailable(&e))?;
        match ack.await {
            Ok(_) => {
                if self.full.swap(false, Ordering::Relaxed) {
                    tracing::warn!("event buffer accepts events again");
                }
                Ok(())
            }
            Err(e) if is_store_full(&e) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::error!("ALARM: event buffer full; events are refused until the hub catches up");
                }
                Err(BufferError::Full)
            }
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// Drops every event up to and including `through`, which the hub has processed.
    pub async fn purge_through(&self, through: u64) -> Result<u64, async_nats::Error> {
        let stream = self.js.get_stream(STREAM_SITE_EVENTS).await?;
        let purged = stream.purge().sequence(through + 1).await?;
        Ok(purged.purged)
    }

    /// Current fill, limits and alarm.
    pub async fn state(&self) -> Result<BufferState, async_nats::Error> {
        let mut stream = self.js.get_stream(STREAM_SITE_EVENTS).await?;
        let info = stream.info().await?;
        Ok(BufferState {
            messages: info.state.messages,
            bytes: info.state.bytes,
            max_messages: info.config.max_messages,
            max_bytes: info.config.max_bytes,
            rejected_total: self.rejected.load(Ordering::Relaxed),
            full: self.full.load(Ordering::Relaxed),
        })
    }
}

impl EventBuffer {
    /// The site's telemetry stream: what it holds against its byte limit. `full` means the
    /// limit is reached and the oldest samples are being dropped (those the hub has not copied
    /// yet are lost); `rejected_total` counts samples removed by the limits so far.
    pub async fn telemetry_state(&self) -> Result<BufferState, async_nats::Error> {
        let mut stream = self.js.get_stream(edge_bus::topology::STREAM_TELEMETRY).await?;
        let info = stream.info().await?;
        let max = info.config.max_bytes;
        Ok(BufferState {
            messages: info.state.messages,
            bytes: info.state.bytes,
            max_messages: info.config.max_messages,
            max_bytes: max,
            rejected_total: info.state.first_sequence.saturating_sub(1),
            full: max > 0 && info.state.bytes as f64 >= 0.95 * max as f64,
        })
    }
}

/// The stream refused the write for lack of room (JetStream error 10077, store failed, which is
/// what `discard: new` answers at a limit).
fn is_store_full(e: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|js| js.error_code() == ErrorCode::STREAM_STORE_FAILED)
}
