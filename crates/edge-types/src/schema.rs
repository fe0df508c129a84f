//! JSON Schemas of every bus message, and validation of inbound bytes against them.
//!
//! The files in `schemas/` are generated from the Rust types (`make schemas`), and a test
//! fails when a file differs from what the types generate, so the two cannot drift. Services
//! validate against the committed files, embedded at build time, with remote `$ref` fetching
//! compiled out.

use std::collections::HashMap;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::alert::{Alert, AlertListReply};
use crate::api::*;
use crate::app::AppSpec;
use crate::block::{BlockEvent, BlockListReply, BlockRequest, SiteHosts, SiteHostsChange, TenantSites};
use crate::cluster::{Assignment, HostState, LeaderLease};
use crate::desired::{DesiredApp, EventsWatermark};
use crate::image::{ImageImport, ImageListReply, ImagePush, ImageRecord, SiteStaging};
use crate::join::{AuthRefusal, Invitation, InvitationList, JoinEvent, SiteInvite, SiteJoin, SiteJoined};
use crate::logs::{LogChunk, LogRequest};
use crate::rollout::{HistoryReply, RollbackRequest, RolloutControl, RolloutControlReply, RolloutStatusReply};
use crate::secret::{
    AuditEvent, SealedSecret, SecretDeleteReply, SecretInfo, SecretListReply, SecretListRequest, SecretName,
    SecretWrite, SiteRef, SiteRekey, StoredSecret,
};
use crate::site::{Heartbeat, LeafRenewal, LeafRenewed, SiteRecord, SiteRegistration};
use crate::status::AppStatusReport;
use crate::telemetry::{HostStats, LifecycleEvent, ResourcesReply};
use crate::topic::{EventsReply, EventsRequest, SendReply, SendRequest};

/// Largest inbound message accepted, in bytes (the bus allows 1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A bus message with a schema file `schemas/<NAME>.json`.
pub trait Message: Serialize + DeserializeOwned + JsonSchema {
    const NAME: &'static str;
}

macro_rules! messages {
    ($($ty:ty),* $(,)?) => {
        $(impl Message for $ty { const NAME: &'static str = stringify!($ty); })*

        /// Every message: its name, committed schema, and the schema its type generates.
        pub fn all() -> Vec<(&'static str, &'static str, fn() -> Value)> {
            vec![$((
                stringify!($ty),
                include_str!(concat!("../../../schemas/", stringify!($ty), ".json")),
                generate::<$ty> as fn() -> Value,
            )),*]
        }
    };
}

messages!(
    AppSpec,
    DesiredApp,
    EventsWatermark,
    AppStatusReport,
    SiteRegistration,
    SiteRecord,
    Heartbeat,
    Empty,
    AppRef,
    ApplyReply,
    AppRecord,
    AppListReply,
    AppStatusReply,
    DeleteReply,
    PlanReply,
    SiteListReply,
    SiteLabelRequest,
    RegisterReply,
    ApiError,
    HostState,
    LeaderLease,
    Assignment,
    RolloutStatusReply,
    RolloutControl,
    RolloutControlReply,
    HistoryReply,
    RollbackRequest,
    SecretWrite,
    SecretName,
    SecretListRequest,
    SecretInfo,
    SecretListReply,
    SecretDeleteReply,
    SealedSecret,
    AuditEvent,
    StoredSecret,
    SiteRef,
    SiteRekey,
    Alert,
    AlertListReply,
    LogRequest,
    LogChunk,
    HostStats,
    LifecycleEvent,
    ResourcesReply,
    ImagePush,
    ImageImport,
    ImageRecord,
    ImageListReply,
    SiteStaging,
    BlockRequest,
    BlockEvent,
    BlockListReply,
    SiteHosts,
    SiteHostsChange,
    TenantSites,
    LeafRenewal,
    LeafRenewed,
    SiteInvite,
    Invitation,
    InvitationList,
    SiteJoin,
    SiteJoined,
    JoinEvent,
    AuthRefusal,
    EventsRequest,
    EventsReply,
    SendRequest,
    SendReply,
);

/// The schema a type generates (draft 2020-12).
pub fn generate<T: JsonSchema>() -> Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12().into_generator().into_root_schema_for::<T>();
    serde_json::to_value(schema).expect("schemas serialize")
}

fn validators() -> &'static HashMap<&'static str, jsonschema::Validator> {
    static V: OnceLock<HashMap<&'static str, jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| {
        all()
            .into_iter()
            .map(|(name, text, _)| {
                let schema: Value = serde_json::from_str(text).expect("committed schema is JSON");
                let v = jsonschema::validator_for(&schema).expect("committed schema compiles");
                (name, v)
            })
            .collect()
    })
}

/// Why inbound bytes were rejected. Never echoes field values, which may be confidential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes is larger than the limit of {MAX_MESSAGE_BYTES} bytes")]
    TooLarge(usize),
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("{}: {message}", if pointer.is_empty() { "(message)" } else { pointer.as_str() })]
    Invalid { pointer: String, message: String },
}

impl DecodeError {
    /// JSON pointer of the offending field (`""` is the whole message).
    pub fn pointer(&self) -> &str {
        match self {
            DecodeError::Invalid { pointer, .. } => pointer,
            _ => "",
        }
    }
}

/// Parses `bytes` as `T` after validating them against `T`'s schema.
pub fn decode<T: Message>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    validate::<T>(&value)?;
    serde_json::from_value(value).map_err(|e| DecodeError::Invalid { pointer: String::new(), message: e.to_string() })
}

/// Validates a JSON value against `T`'s schema, reporting the first violation.
pub fn validate<T: Message>(value: &Value) -> Result<(), DecodeError> {
    let validator = &validators()[T::NAME];
    match validator.iter_errors(value).next() {
        None => Ok(()),
        Some(e) => {
            Err(DecodeError::Invalid { pointer: e.instance_path().to_string(), message: e.masked().to_string() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed schema files equal what the types generate. Run with `UPDATE_SCHEMAS=1`
    /// (or `make schemas`) to rewrite them after changing a type.
    #[test]
    fn committed_schemas_match_types() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
        let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
        let mut stale = Vec::new();
        for (name, committed, gen) in all() {
            let fresh = serde_json::to_string_pretty(&gen()).unwrap() + "\n";
            if update {
                std::fs::write(format!("{dir}/{name}.json"), &fresh).unwrap();
            } else if fresh != committed {
                stale.push(name);
            }
        }
        assert!(stale.is_empty(), "schemas out of date (run `make schemas`): {stale:?}");
    }
}
