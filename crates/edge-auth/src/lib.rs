//! Who may say what on the bus: NATS decentralized auth for the orchestrator.
//!
//! The operator signs accounts and accounts sign users ([`jwt`], [`claims`]); servers trust
//! only the operator's public key. [`authority`] keeps the keys and issues credentials files
//! ([`creds`]); [`scope`] says what each role may publish and subscribe to.

pub mod apps;
pub mod authority;
pub mod claims;
pub mod creds;
pub mod host;
pub mod jwt;
pub mod leaf;
pub mod scope;
pub mod tls;

pub use authority::{Authority, SiteBundle};
pub use creds::Creds;

/// Errors of issuing and reading credentials. None of them carries a seed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("nkey: {0}")]
    Key(String),
    #[error("{0}")]
    Invalid(String),
}
