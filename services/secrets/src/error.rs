//! Errors of the secrets service, and how each becomes an API error. None carries a value.

use edge_bus::kv::KvError;
use edge_bus::BusError;
use edge_seal::SealError;
use edge_types::api::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("stored key {what} does not open with this master key: {source}")]
    WrongMasterKey {
        what: String,
        #[source]
        source: SealError,
    },
    #[error("secret {0} does not open with its tenant's data key")]
    Undecryptable(String),
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl SecretsError {
    pub fn js(e: impl std::fmt::Display) -> Self {
        SecretsError::JetStream(e.to_string())
    }
}

impl From<SecretsError> for ApiError {
    fn from(e: SecretsError) -> Self {
        let code = match &e {
            SecretsError::Kv(KvError::Contended { .. }) => ErrorCode::Conflict,
            SecretsError::JetStream(_) | SecretsError::Kv(KvError::Store { .. }) | SecretsError::Bus(_) => {
                ErrorCode::Unavailable
            }
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, e.to_string())
    }
}
