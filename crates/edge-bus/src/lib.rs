//! The bus library shared by every service and the CLI: connecting, the JetStream topology
//! (streams and buckets are ensured here and nowhere else), typed request/reply, compare-and-swap
//! KV updates, signals and logging.

pub mod api;
pub mod backoff;
pub mod claims;
pub mod connect;
pub mod health;
pub mod kv;
pub mod logging;
pub mod mirror;
pub mod natsconf;
pub mod scan;
pub mod shutdown;
pub mod signal;
pub mod time;
pub mod topology;
pub mod trace;

pub use connect::{connect, BusError, Endpoint};
