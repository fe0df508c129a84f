//! Distributed traces: `tracing` spans exported as OpenTelemetry spans over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and the trace
//! context carried from one service to the next in NATS message headers (W3C `traceparent`
//! and `tracestate`), so an apply at the hub and the container start it causes at a site are one
//! trace. With no endpoint set nothing is exported and no header is added.
//!
//! The OTLP protocol is `http/protobuf` unless `OTEL_EXPORTER_OTLP_PROTOCOL` says `http/json`;
//! the service name is the component's unless `OTEL_SERVICE_NAME` is set.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
pub use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The environment variables that switch exporting on.
const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// Whether the environment asks for traces to be exported.
pub fn export_requested() -> bool {
    ENDPOINT_VARS.iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Makes ring the process's TLS provider (once; a provider already installed stays): the HTTP
/// client of the OTLP exporter (and registry-sync's) is built without a provider of its own.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The tracer provider of a process that exports spans; flushes what is buffered when shut
/// down or dropped.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Builds the OTLP exporter from the environment, for spans of `service`. `None` when no
    /// endpoint is set; an exporter that cannot be built is logged to stderr and skipped, since
    /// a service must run without its traces.
    pub fn from_env(service: &str) -> Option<Self> {
        if !export_requested() {
            return None;
        }
        install_tls_provider();
        let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("traces are not exported: cannot build the OTLP exporter: {e}");
                return None;
            }
        };
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service.to_string());
        }
        let provider =
            SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
        Some(Self { provider })
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans for this exporter.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("edge")).with_location(false)
    }

    /// Sends what is buffered now.
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Writes the current span's trace context into `headers`. Does nothing when the current span
/// is not exported (no exporter, or filtered out).
pub fn inject(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// The trace context a message carries, if any.
pub fn remote(headers: Option<&HeaderMap>) -> Option<Context> {
    let headers = headers?;
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` a child of the trace context `headers` carry, if any (call before entering it).
pub fn continue_from(span: &tracing::Span, headers: Option<&HeaderMap>) {
    if let Some(cx) = remote(headers) {
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of `cx` (call before entering it).
pub fn child_of(span: &tracing::Span, cx: &Context) {
    let _ = span.set_parent(cx.clone());
}

/// The span `make` builds when there is a current span to be its parent, else a disabled one:
/// work done outside any request (periodic passes, restarts) then makes no trace of its own.
pub fn in_trace(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if tracing::Span::current().is_none() {
        tracing::Span::none()
    } else {
        make()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_read_and_anything_else_ignored() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let cx = remote(Some(&h)).expect("context");
        assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let mut bad = HeaderMap::new();
        bad.insert("traceparent", "00-zz-00f067aa0ba902b7-01");
        assert!(remote(Some(&bad)).is_none());
        assert!(remote(Some(&HeaderMap::new())).is_none());
        assert!(remote(None).is_none());
    }

    #[test]
    fn nothing_is_injected_without_an_exported_span() {
        let mut h = HeaderMap::new();
        inject(&mut h);
        assert!(h.get("traceparent").is_none());
    }
}
