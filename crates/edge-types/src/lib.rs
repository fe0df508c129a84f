//! Wire types of the edge orchestrator: every message on the bus, the subject grammar, and the
//! JSON Schemas that inbound messages are validated against. No NATS dependency lives here.

pub mod alert;
pub mod api;
pub mod app;
pub mod block;
pub mod cluster;
pub mod desired;
pub mod image;
pub mod join;
pub mod logs;
pub mod names;
pub mod policy;
pub mod rollout;
pub mod schema;
pub mod secret;
pub mod selector;
pub mod site;
pub mod status;
pub mod subject;
pub mod telemetry;
pub mod topic;

pub use names::{Name, NameError};
