//! Errors of the scheduler, and how each becomes an API error.

use edge_bus::kv::KvError;
use edge_bus::BusError;
use edge_types::api::{ApiError, ErrorCode};

/// What can go wrong while serving a request or placing apps.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("stored state is corrupt: {0}")]
    Corrupt(String),
    #[error("configuration: {0}")]
    Config(#[from] edge_auth::AuthError),
}

impl SchedulerError {
    pub fn js(e: impl std::fmt::Display) -> Self {
        SchedulerError::JetStream(e.to_string())
    }
}

impl From<SchedulerError> for ApiError {
    fn from(e: SchedulerError) -> Self {
        let code = match &e {
            SchedulerError::Kv(KvError::Contended { .. }) => ErrorCode::Conflict,
            SchedulerError::JetStream(_) | SchedulerError::Kv(KvError::Store { .. }) | SchedulerError::Bus(_) => {
                ErrorCode::Unavailable
            }
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, e.to_string())
    }
}
