//! Cryptography of secrets: envelope encryption at the hub ([`envelope`]), sealing to a site's
//! public key and opening at the site ([`site`]), and key files ([`keyfile`]). Errors never
//! carry plaintext.

pub mod envelope;
pub mod keyfile;
pub mod site;

pub use nkeys::XKey;

/// Why a key, box or payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("bad key: {0}")]
    BadKey(String),
    #[error("key file {0}")]
    KeyFile(String),
    #[error("malformed sealed data: {0}")]
    Malformed(&'static str),
    #[error("the box does not open: tampered, truncated or sealed with another key")]
    Tampered,
    #[error("sealed for another record (tenant, name or version differ)")]
    WrongContext,
    #[error("sealed for another site")]
    OtherSite,
    #[error("sealed to another key of this site")]
    OtherKey,
    #[error("sealed by a sender this site does not trust")]
    UntrustedSender,
}
