//! Records in the hub's AUDIT stream (`edge.v1.audit.>`, kept a year), each with a
//! deterministic message id so a retried request records once.

use serde::Serialize;

use crate::{Hub, SchedulerError};

pub async fn record<T: Serialize>(hub: &Hub, subject: String, event: &T, id: String) -> Result<(), SchedulerError> {
    let msg = async_nats::jetstream::message::PublishMessage::build()
        .payload(serde_json::to_vec(event).expect("audit events serialize").into())
        .message_id(id);
    let ack = hub.js.send_publish(subject, msg).await.map_err(SchedulerError::js)?;
    ack.await.map_err(SchedulerError::js)?;
    Ok(())
}
