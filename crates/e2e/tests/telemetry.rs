//! The telemetry service against a live stack: its `/metrics` shows sites connected (and a cut
//! one as not), applications desired and running per site and per app, and the services' own
//! request counts, in the Prometheus text format; alerts fire with their cause and resolve.

mod support;

use std::time::Duration;

use anyhow::{Context, Result};
use edge_testkit::unique;
use edge_types::alert::{AlertKind, AlertState};
use edge_types::subject::ApiOp;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Status line and body of a GET.
async fn get(addr: &str, path: &str) -> Result<(String, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).await?;
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut raw)).await??;
    let (head, body) = raw.split_once("\r\n\r\n").context("no head")?;
    Ok((head.lines().next().unwrap_or_default().to_string(), body.to_string()))
}

/// The value of one series in an exposition.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_show_sites_apps_and_requests() -> Result<()> {
    let stack = Stack::start(&[&[("tier", "edge")], &[("tier", "edge")]]).await?;
    let addr = format!("127.0.0.1:{}", edge_bus::natsconf::free_port()?);
    let mut config = stack.telemetry_config(addr.clone());
    config.site_timeout_secs = 3;
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(telemetry::run(config, shutdown.clone()));

    let app = unique("watched");
    stack.apply(&sleeper(&app, "tier = edge", "edge/busybox:v1", &[])).await?;
    let (a, b) = (stack.site(0).clone(), stack.site(1).clone());
    stack.wait_running(&[&a, &b], &app, 1).await?;
    stack
        .eventually("the fleet in /metrics", || async {
            let (status, text) = get(&addr, "/metrics").await?;
            Ok(status.contains("200")
                && value(&text, "edge_sites_registered") == Some(2.0)
                && value(&text, "edge_sites_connected") == Some(2.0)
                && value(&text, &format!("edge_app_sites_desired{{app=\"{app}\"}}")) == Some(2.0)
                && value(&text, &format!("edge_app_sites_running{{app=\"{app}\"}}")) == Some(2.0)
                && value(&text, &format!("edge_site_apps_running{{site=\"{a}\"}}")) == Some(1.0)
                && value(&text, &format!("edge_site_buffer_fill_ratio{{site=\"{b}\"}}")).is_some()
                && value(&text, "edge_service_requests_total{service=\"scheduler\",endpoint=\"app-apply\"}")
                    .is_some_and(|n| n >= 1.0))
        })
        .await?;

    // A cut site is shown disconnected, and connected again when its link returns.
    stack.cut(0).await?;
    stack
        .eventually("the cut site disconnected in /metrics", || async {
            let (_, text) = get(&addr, "/metrics").await?;
            Ok(value(&text, "edge_sites_connected") == Some(1.0)
                && value(&text, &format!("edge_site_connected{{site=\"{a}\"}}")) == Some(0.0))
        })
        .await?;
    stack.restore(0).await?;
    stack
        .eventually("connected again", || async {
            Ok(value(&get(&addr, "/metrics").await?.1, "edge_sites_connected") == Some(2.0))
        })
        .await?;

    assert!(get(&addr, "/nope").await?.0.contains("404"));
    assert!(get(&addr, "/healthz").await?.0.contains("200"));
    shutdown.cancel();
    service.await??;
    Ok(())
}

async fn alerts(stack: &Stack) -> Result<Vec<edge_types::alert::Alert>> {
    let r: edge_types::alert::AlertListReply =
        edge_bus::api::request(&stack.client, ApiOp::AlertList, &serde_json::json!({}), Duration::from_secs(10))
            .await?;
    Ok(r.alerts)
}

#[tokio::test]
async fn alerts_fire_with_their_cause_and_resolve_themselves() -> Result<()> {
    let stack = Stack::start(&[&[("tier", "edge")], &[("tier", "edge")]]).await?;
    let mut config = stack.telemetry_config(format!("127.0.0.1:{}", edge_bus::natsconf::free_port()?));
    config.site_timeout_secs = 3;
    config.alert_every_secs = 1;
    config.site_offline_secs = 2;
    config.restarts_alert = 2;
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(telemetry::run(config, shutdown.clone()));

    // An application whose container exits at once: it restarts again and again.
    let app = unique("crashy");
    let mut spec = sleeper(&app, "tier = edge", "edge/busybox:v1", &[]);
    spec["services"][0]["command"] = serde_json::json!(["false"]);
    stack.apply(&spec).await?;
    stack
        .eventually("app_degraded fires with its cause", || async {
            Ok(alerts(&stack).await?.iter().any(|a| {
                a.kind == AlertKind::AppDegraded
                    && a.name.as_str() == app
                    && a.state == AlertState::Firing
                    && (a.cause.contains("restarted") || a.cause.contains("failed at"))
            }))
        })
        .await?;

    // A site offline longer than the threshold, then back: fires, then resolves by itself.
    let a = stack.site(0).clone();
    stack.cut(0).await?;
    stack
        .eventually("site_offline fires", || async {
            Ok(alerts(&stack).await?.iter().any(|x| x.kind == AlertKind::SiteOffline && x.name == a))
        })
        .await?;
    stack.restore(0).await?;
    stack
        .eventually("site_offline resolves", || async {
            Ok(!alerts(&stack).await?.iter().any(|x| x.kind == AlertKind::SiteOffline))
        })
        .await?;
    // The app removed: its alert resolves too. Both transitions of both are events on the bus.
    stack.delete(&app).await?;
    stack.eventually("app_degraded resolves", || async { Ok(alerts(&stack).await?.is_empty()) }).await?;
    let js = edge_bus::topology::hub_js(&stack.client);
    let info = js.get_stream("ALERTS").await?.info().await?.state.clone();
    assert!(info.messages >= 4, "firing and resolved events of two alerts: {info:?}");
    shutdown.cancel();
    service.await??;
    Ok(())
}

/// `(at_ms, subject)` of every message the hub's TELEMETRY holds from one site.
async fn hub_telemetry(stack: &Stack, site: &edge_types::Name) -> Result<Vec<(u64, String)>> {
    use async_nats::jetstream::consumer;
    use futures::StreamExt;
    let js = edge_bus::topology::hub_js(&stack.client);
    let stream = js.get_stream("TELEMETRY").await?;
    let c = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: format!("edge.v1.tm.{site}.>"),
            ..Default::default()
        })
        .await?;
    let pending = c.clone().info().await?.num_pending;
    let mut out = Vec::new();
    let mut msgs = c.messages().await?;
    while (out.len() as u64) < pending {
        let m = tokio::time::timeout(Duration::from_secs(5), msgs.next()).await?.context("ended")??;
        let v: serde_json::Value = serde_json::from_slice(&m.payload)?;
        out.push((v["at_ms"].as_u64().unwrap_or(0), m.subject.to_string()));
    }
    Ok(out)
}

#[tokio::test]
async fn sites_report_resources_and_lifecycle_buffered_through_cuts() -> Result<()> {
    let stack = Stack::start_with(&[&[("tier", "edge")], &[("tier", "edge")]], |c| c.stats_secs = 1).await?;
    let addr = format!("127.0.0.1:{}", edge_bus::natsconf::free_port()?);
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(telemetry::run(stack.telemetry_config(addr.clone()), shutdown.clone()));
    let app = unique("measured");
    stack.apply(&sleeper(&app, "tier = edge", "edge/busybox:v1", &[])).await?;
    let crashy = unique("exits");
    let mut spec = sleeper(&crashy, "tier = edge", "edge/busybox:v1", &[]);
    spec["services"][0]["command"] = serde_json::json!(["false"]);
    stack.apply(&spec).await?;
    let (a, b) = (stack.site(0).clone(), stack.site(1).clone());
    stack.wait_running(&[&a, &b], &app, 1).await?;

    // Every container's place and use, as `edgectl app status` shows it.
    stack
        .eventually("resources of both containers", || async {
            let r: edge_types::telemetry::ResourcesReply = edge_bus::api::request(
                &stack.client,
                ApiOp::TelemetryResources,
                &serde_json::json!({"name": app}),
                Duration::from_secs(5),
            )
            .await?;
            let mut sites: Vec<String> = r.containers.iter().map(|c| c.site.to_string()).collect();
            sites.sort();
            let mut want = vec![a.to_string(), b.to_string()];
            want.sort();
            Ok(sites == want && r.containers.iter().all(|c| c.memory_bytes > 0 && c.host.as_str() == "host-1"))
        })
        .await?;
    stack
        .eventually("hosts, app use and exits in /metrics", || async {
            let (_, text) = get(&addr, "/metrics").await?;
            Ok(value(&text, &format!("edge_host_cpu_ratio{{site=\"{a}\",host=\"host-1\"}}")).is_some()
                && value(&text, &format!("edge_host_memory_total_bytes{{site=\"{b}\",host=\"host-1\"}}"))
                    .is_some_and(|m| m > 0.0)
                && value(&text, &format!("edge_app_memory_bytes{{app=\"{app}\"}}")).is_some_and(|m| m > 0.0)
                && value(&text, &format!("edge_site_container_exits_total{{site=\"{a}\"}}")).is_some_and(|n| n >= 1.0)
                && value(&text, &format!("edge_site_telemetry_buffer_fill_ratio{{site=\"{a}\"}}"))
                    .is_some_and(|f| f > 0.0))
        })
        .await?;

    // Samples taken while the WAN is cut are kept at the site and reach the hub afterwards.
    stack.cut(0).await?;
    let cut_at = edge_bus::time::now_ms();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let restored_at = edge_bus::time::now_ms();
    stack.restore(0).await?;
    stack
        .eventually("samples of the cut at the hub", || async {
            let during = hub_telemetry(&stack, &a)
                .await?
                .into_iter()
                .filter(|(at, s)| s.contains(".stats.") && *at > cut_at && *at < restored_at)
                .count();
            Ok(during >= 1)
        })
        .await?;
    shutdown.cancel();
    service.await??;
    Ok(())
}

#[tokio::test]
async fn a_failing_probe_keeps_a_container_from_counting_as_running() -> Result<()> {
    let stack = Stack::start(&[&[("tier", "edge")]]).await?;
    let site = stack.site(0).clone();
    let addr = format!("127.0.0.1:{}", edge_bus::natsconf::free_port()?);
    let mut config = stack.telemetry_config(addr.clone());
    config.alert_every_secs = 1;
    config.app_short_secs = 2;
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(telemetry::run(config, shutdown.clone()));
    let probed = |name: &str, probe: serde_json::Value| {
        let mut spec = sleeper(name, "tier = edge", "edge/busybox:v1", &[]);
        spec["services"][0]["probe"] = probe;
        spec
    };
    let (good, bad) = (unique("healthy"), unique("sick"));
    stack.apply(&probed(&good, serde_json::json!({"exec": ["true"], "period_secs": 1}))).await?;
    // Its first check comes 5 s after the start: the app is first short of sites (an alert after
    // 2 s), then fails its probe, and the firing alert must say so.
    stack
        .apply(&probed(&bad, serde_json::json!({"exec": ["false"], "period_secs": 5, "failure_threshold": 1})))
        .await?;
    let phase_of = |app: String| {
        let stack = &stack;
        async move {
            let s = stack.status(&app).await?;
            let site = s.sites.first().cloned();
            Ok::<_, anyhow::Error>(site.and_then(|x| x.report.map(|r| (r.phase, r.containers[0].health.clone()))))
        }
    };
    stack
        .eventually("the passing probe runs, the failing one does not", || async {
            let (g, b) = (phase_of(good.clone()).await?, phase_of(bad.clone()).await?);
            Ok(g == Some((edge_types::status::Phase::Running, "healthy".into()))
                && b.is_some_and(|(p, h)| p != edge_types::status::Phase::Running && h == "unhealthy"))
        })
        .await?;
    stack
        .eventually("the failing probe in /metrics and as an alert", || async {
            let (_, text) = get(&addr, "/metrics").await?;
            let alerted = alerts(&stack).await?.iter().any(|a| a.name.as_str() == bad && a.cause.contains("probe"));
            Ok(value(&text, &format!("edge_site_containers_unhealthy{{site=\"{site}\"}}")) == Some(1.0) && alerted)
        })
        .await?;
    shutdown.cancel();
    service.await??;
    Ok(())
}
