//! The kind-specific claims of operator, account and user JWTs (the `nats` object), with the
//! field names nats-server reads. Only what the project sets is modelled; nats-server applies
//! its defaults to the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The operator: the root of trust every server of the system is configured with.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Operator {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<String>,
    /// Public key of the system account (server events, `$SYS`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system_account: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u8,
}

/// An account: a namespace of subjects, streams and users.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Account {
    pub limits: AccountLimits,
    /// Keys that may sign this account's users (besides the account's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<String>,
    /// Users (public keys, or `*` for all) whose JWTs issued at or before the time (Unix
    /// seconds) are refused: the revocation list.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revocations: BTreeMap<String, u64>,
    /// What other accounts may import from this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<Export>,
    /// What this account takes from others' exports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<Import>,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u8,
}

/// The revocation that covers every user of an account (`revocations` key).
pub const ALL_USERS: &str = "*";

/// A subject an account offers other accounts: `service` (requests, answered across) here.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Export {
    pub name: String,
    pub subject: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// An import of another account's export: requests the importer sends on `local_subject` go
/// to `subject` in `account` (its public key), replies come back.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Import {
    pub name: String,
    pub subject: String,
    pub account: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_subject: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Export and import kind of request/reply subjects.
pub const SERVICE: &str = "service";
/// Export and import kind of one-way subjects (events).
pub const STREAM: &str = "stream";

/// Limits of an account; -1 is unlimited. JetStream is enabled when a storage limit is not 0.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccountLimits {
    pub subs: i64,
    pub data: i64,
    pub payload: i64,
    pub imports: i64,
    pub exports: i64,
    pub wildcards: bool,
    pub conn: i64,
    pub leaf: i64,
    pub mem_storage: i64,
    pub disk_storage: i64,
    pub streams: i64,
    pub consumer: i64,
}

impl AccountLimits {
    /// No limits, JetStream enabled.
    pub fn unlimited_with_jetstream() -> Self {
        Self {
            subs: -1,
            data: -1,
            payload: -1,
            imports: -1,
            exports: -1,
            wildcards: true,
            conn: -1,
            leaf: -1,
            mem_storage: -1,
            disk_storage: -1,
            streams: -1,
            consumer: -1,
        }
    }

    /// No limits, JetStream disabled (the system account).
    pub fn unlimited_without_jetstream() -> Self {
        Self { mem_storage: 0, disk_storage: 0, streams: 0, consumer: 0, ..Self::unlimited_with_jetstream() }
    }

    /// The enrolment account's: shared by every site, so bounded: small messages, a few
    /// subscriptions per connection's worth, at most `conn` connections at once (sites renew
    /// rarely and one at a time).
    pub fn enrolment(conn: i64) -> Self {
        Self {
            payload: 16 * 1024,
            subs: 4 * conn,
            conn,
            leaf: 0,
            imports: 8,
            exports: 0,
            ..Self::unlimited_without_jetstream()
        }
    }
}

impl Default for AccountLimits {
    fn default() -> Self {
        Self::unlimited_with_jetstream()
    }
}

/// Subjects allowed and denied (wildcards allowed). Empty allow with empty deny: everything.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubjectPermission {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl SubjectPermission {
    pub fn allow<I: IntoIterator<Item = S>, S: Into<String>>(subjects: I) -> Self {
        Self { allow: subjects.into_iter().map(Into::into).collect(), deny: Vec::new() }
    }
}

/// Kinds of connections a user may make.
pub const CONN_STANDARD: &str = "STANDARD";
pub const CONN_LEAFNODE: &str = "LEAFNODE";

/// A user: one client (or one leaf link) of one account.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct User {
    #[serde(rename = "pub", default)]
    pub publish: SubjectPermission,
    #[serde(rename = "sub", default)]
    pub subscribe: SubjectPermission,
    pub subs: i64,
    pub data: i64,
    pub payload: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_connection_types: Vec<String>,
    /// The account, when a signing key of it (not its own key) signed this user.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer_account: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bearer_token: bool,
    /// Free-form tags; the project records the role and scope here (`role:site-leaf`, `site:s1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u8,
}
