//! Logging set-up shared by the binaries: `tracing` with `RUST_LOG`-style filtering.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `RUST_LOG` wins over `default_filter`.
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
}
