//! Logging set-up shared by the binaries: `tracing` with `RUST_LOG`-style filtering, and spans
//! exported over OTLP when the environment asks for it (see [`crate::trace`]).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::trace::Exporter;

/// The filter every component logs with: `RUST_LOG` if set, else `default_filter`, with the
/// Docker client capped at `info` whatever is asked, because its debug lines carry request
/// and response bodies, and a container's environment holds the secrets given to it as
/// variables. Secrets never reach a log line.
pub fn filter(default_filter: &str) -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    filter.add_directive("bollard=info".parse().expect("valid directive"))
}

/// Installs the global subscriber (see [`filter`]) for `component` (the service name its spans
/// are exported under). Keep the returned exporter until the process ends: dropping it sends
/// the spans still buffered. `None` when traces are not exported or a subscriber was already
/// installed.
#[must_use = "dropping the exporter stops exporting traces"]
pub fn init(component: &str, default_filter: &str) -> Option<Exporter> {
    let exporter = Exporter::from_env(component);
    let otel = exporter.as_ref().map(|e| e.layer());
    let installed = tracing_subscriber::registry()
        .with(filter(default_filter))
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .with(otel)
        .try_init()
        .is_ok();
    exporter.filter(|_| installed)
}
