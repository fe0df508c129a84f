//! Logging set-up shared by the binaries: `tracing` with `RUST_LOG`-style filtering.

use tracing_subscriber::EnvFilter;

/// The filter every component logs with: `RUST_LOG` if set, else `default_filter`, with the
/// Docker client capped at `info` whatever is asked, because its debug lines carry request
/// and response bodies, and a container's environment holds the secrets given to it as
/// variables. Secrets never reach a log line.
pub fn filter(default_filter: &str) -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    filter.add_directive("bollard=info".parse().expect("valid directive"))
}

/// Installs the global subscriber (see [`filter`]).
pub fn init(default_filter: &str) {
    let _ = tracing_subscriber::fmt().with_env_filter(filter(default_filter)).with_target(false).try_init();
}
