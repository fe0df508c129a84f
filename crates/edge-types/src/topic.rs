//! Reading applications' topics at the hub (`edge.v1.api.app.events`, `edgectl events`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::Name;

/// Request of `app.events`: what an app's containers published to one of its topics, as the
/// hub holds it (every site's copy, arrived when its link was up), oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    /// The application.
    pub name: Name,
    /// One of the topics its spec declares (`bus.topics`).
    pub topic: Name,
    /// Only these sites; empty: every site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub sites: Vec<Name>,
    /// Only messages stored at the hub at or after this time (milliseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// Only messages after this sequence of the hub's stream (the `last_seq` of a previous
    /// reply): how a reader follows a topic without gaps or repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// Most messages in one reply (1 to 1000, default 100); a reply also stops at 512 KiB.
    #[serde(default = "default_max")]
    #[schemars(range(min = 1, max = 1000))]
    pub max: u32,
}

fn default_max() -> u32 {
    100
}

/// Reply to `app.events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsReply {
    pub events: Vec<TopicEvent>,
    /// The hub stream's sequence to continue after (`after_seq`); the request's when none.
    pub last_seq: u64,
    /// Messages matching the request remain after these.
    pub more: bool,
}

/// One message of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicEvent {
    /// The site whose container published it.
    pub site: Name,
    /// Its sequence in the hub's stream of the topic.
    pub seq: u64,
    /// When the hub stored it (milliseconds since the epoch).
    pub stored_ms: u64,
    /// The payload, when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The payload in hex, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hex: Option<String>,
}

impl TopicEvent {
    /// The payload as carried: text as is, other bytes in hex.
    pub fn payload(site: Name, seq: u64, stored_ms: u64, bytes: &[u8]) -> Self {
        let (data, data_hex) = match std::str::from_utf8(bytes) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (None, Some(hex::encode(bytes))),
        };
        Self { site, seq, stored_ms, data, data_hex }
    }
}

/// Request of `app.send`: one message to a `to_sites` topic of an app, for every site the app
/// is placed at (or those named). Each site's copy waits at the hub while its link is down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The application.
    pub name: Name,
    /// One of its `to_sites` topics.
    pub topic: Name,
    /// Only these sites (each must run the app); empty: every site it is placed at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub sites: Vec<Name>,
    /// The message (text; at most the topic's `max_msg_size` bytes).
    #[schemars(length(max = 1048576))]
    pub data: String,
    /// An id the sender chooses: a request sent again with the same id within two minutes
    /// is stored once per site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub id: Option<String>,
}

/// Reply to `app.send`: the sites the message is stored for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendReply {
    pub sites: Vec<Name>,
}
