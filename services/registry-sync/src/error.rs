//! Errors of registry-sync, and how each becomes an API error.

use edge_bus::kv::KvError;
use edge_bus::BusError;
use edge_types::api::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl RegistryError {
    pub fn js(e: impl std::fmt::Display) -> Self {
        RegistryError::JetStream(e.to_string())
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let code = match &e {
            RegistryError::Kv(KvError::Contended { .. }) => ErrorCode::Conflict,
            _ => ErrorCode::Unavailable,
        };
        ApiError::new(code, e.to_string())
    }
}
