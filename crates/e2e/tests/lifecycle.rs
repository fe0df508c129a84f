//! Spec changes replace containers, identical re-applies touch nothing, crashed containers are
//! restarted, and a restarted site-manager adopts running containers without restarting them.

mod support;

use std::time::Duration;

use anyhow::Result;
use bollard::query_parameters::KillContainerOptions;
use edge_types::api::SitePhase;
use support::{sleeper, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spec_change_replaces_and_unchanged_reapply_touches_nothing() -> Result<()> {
    let stack = Stack::start(&[&[("tier", "edge")]]).await?;
    let site = stack.site(0).clone();
    let app = edge_testkit::unique("api");

    let v1 = sleeper(&app, "tier = edge", "edge/busybox:v1", &[("MODE", "a")]);
    stack.apply(&v1).await?;
    stack.wait_running(&[&site], &app, 1).await?;
    let before = stack.containers(&site, &app).await?;

    // Same spec again: no new generation, nothing touched.
    let again = stack.apply(&v1).await?;
    assert!(!again.changed);
    assert_eq!(again.generation, 1);
    tokio::time::sleep(Duration::from_secs(5)).await; // > one site resync and a status round
    assert_eq!(stack.containers(&site, &app).await?, before, "ids and start times unchanged");

    // New image tag: the container is replaced.
    let v2 = sleeper(&app, "tier = edge", "edge/busybox:v2", &[("MODE", "a")]);
    assert_eq!(stack.apply(&v2).await?.generation, 2);
    stack
        .eventually("container replaced by the v2 image", || async {
            let c = stack.containers(&site, &app).await?;
            Ok(c.len() == 1 && c[0].running && c[0].image == "edge/busybox:v2" && c[0].id != before[0].id)
        })
        .await?;

    // New env: replaced again, and the new value is in the container.
    let v3 = sleeper(&app, "tier = edge", "edge/busybox:v2", &[("MODE", "b")]);
    assert_eq!(stack.apply(&v3).await?.generation, 3);
    stack
        .eventually("container replaced with MODE=b", || async {
            let c = stack.containers(&site, &app).await?;
            Ok(c.len() == 1 && c[0].running && c[0].env.iter().any(|e| e == "MODE=b"))
        })
        .await?;
    stack
        .eventually("status reports generation 3 running", || async {
            let s = stack.status(&app).await?;
            Ok(s.generation == 3 && s.sites.len() == 1 && s.sites[0].phase == SitePhase::Running)
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashed_containers_restart_and_restarted_manager_adopts() -> Result<()> {
    let mut stack = Stack::start(&[&[("tier", "edge")]]).await?;
    let site = stack.site(0).clone();
    let app = edge_testkit::unique("cam");
    stack.apply(&sleeper(&app, "", "edge/busybox:v1", &[])).await?;
    stack.wait_running(&[&site], &app, 1).await?;
    let first = stack.containers(&site, &app).await?.remove(0);

    // Kill the container behind the site-manager's back: it is started again, same container.
    stack.docker.kill_container(&first.id, None::<KillContainerOptions>).await?;
    stack
        .eventually("killed container restarted", || async {
            let c = stack.containers(&site, &app).await?;
            Ok(c.len() == 1 && c[0].id == first.id && c[0].running && c[0].started_at != first.started_at)
        })
        .await?;
    stack
        .eventually("status shows one restart", || async {
            let s = stack.status(&app).await?;
            let r = s.sites.first().and_then(|s| s.report.clone());
            Ok(r.is_some_and(|r| r.containers.first().is_some_and(|c| c.restarts == 1 && c.state == "running")))
        })
        .await?;
    let running = stack.containers(&site, &app).await?;

    // Restart the site-manager: it adopts the running container and does not restart it.
    let restarted_at = edge_bus::time::now_ms();
    stack.restart_manager(0).await;
    stack
        .eventually("the new site-manager reported status", || async {
            let s = stack.status(&app).await?;
            Ok(s.sites.first().and_then(|s| s.report.as_ref()).is_some_and(|r| r.reported_at_ms >= restarted_at))
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await; // a resync pass more
    assert_eq!(stack.containers(&site, &app).await?, running, "same container, same start time");
    Ok(())
}
