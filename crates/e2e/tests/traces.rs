//! Traces: one apply is one connected trace, from the scheduler's `app.apply` through
//! `placement` at the hub to `site.reconcile` and `container.start` at the site, its context
//! carried in the desired state's NATS headers across the leaf link, exported over OTLP to a
//! receiver on loopback. (This file is its own test process: the exporter is process-wide.)

mod support;

use std::collections::{BTreeSet, HashMap};

use anyhow::Result;
use edge_testkit::otlp::{OtlpReceiver, Span};
use edge_testkit::unique;
use support::*;

#[tokio::test]
async fn one_apply_yields_one_connected_trace() -> Result<()> {
    let receiver = OtlpReceiver::start().await?;
    // The same switches an operator sets; set before any exporter exists.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint());
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "200");
    let exporter = edge_bus::logging::init("e2e", "info").expect("traces exported");

    let stack = Stack::start(&[&[]]).await?;
    let site = stack.site(0).clone();
    let app = unique("traced");
    stack.apply(&sleeper(&app, "", "edge/busybox:v1", &[])).await?;
    stack.wait_running(&[&site], &app, 1).await?;

    let mut trace = Vec::new();
    stack
        .eventually("the apply's trace reaches the container start", || {
            exporter.flush();
            trace = trace_of_apply(&receiver.spans());
            let names: BTreeSet<&str> = trace.iter().map(|s| s.name.as_str()).collect();
            let done =
                ["app.apply", "placement", "site.reconcile", "container.start"].iter().all(|n| names.contains(n));
            async move { Ok(done) }
        })
        .await?;

    // Exactly one root, the apply; every other span's parent is in the same trace.
    let ids: HashMap<&str, &Span> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let roots: Vec<&Span> = trace.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root: {trace:#?}");
    assert_eq!(roots[0].name, "app.apply");
    for s in &trace {
        assert!(
            s.parent_span_id.is_empty() || ids.contains_key(s.parent_span_id.as_str()),
            "{} has its parent in the trace",
            s.name
        );
    }
    // The chain a user follows: container.start -> site.reconcile -> placement -> app.apply.
    let parent = |s: &Span| ids.get(s.parent_span_id.as_str()).map(|p| p.name.clone()).unwrap_or_default();
    let start = trace.iter().find(|s| s.name == "container.start").expect("container.start");
    let reconcile = ids[start.parent_span_id.as_str()];
    assert_eq!(reconcile.name, "site.reconcile");
    assert_eq!(parent(reconcile), "placement");
    assert_eq!(parent(ids[reconcile.parent_span_id.as_str()]), "app.apply");
    Ok(())
}

/// The spans of the trace of the stack's one apply.
fn trace_of_apply(spans: &[Span]) -> Vec<Span> {
    let applies: Vec<&Span> = spans.iter().filter(|s| s.name == "app.apply").collect();
    let Some(root) = applies.first() else { return Vec::new() };
    assert_eq!(applies.len(), 1, "one apply, one app.apply span");
    spans.iter().filter(|s| s.trace_id == root.trace_id).cloned().collect()
}
