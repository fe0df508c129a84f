//! Rollouts across real sites: a canary that fails its health gate is rolled back without
//! touching the other sites; waves advance on health, pause and resume; a site outside its
//! maintenance window holds the change (the old version keeps running) without holding the
//! rollout, and takes it when its window opens.

mod support;

use std::collections::BTreeMap;

use anyhow::Result;
use edge_types::api::SitePhase;
use edge_types::rollout::{HistoryReply, RolloutPhase, RolloutStatusReply};
use edge_types::subject::ApiOp;
use support::{sleeper, Stack};

fn versioned(app: &str, version: &str, image: &str) -> serde_json::Value {
    let mut spec = sleeper(app, "", image, &[("VERSION", version)]);
    spec["version"] = version.into();
    spec["rollout"] = serde_json::json!({
        "canary": "canary = true",
        "sites_in_parallel": 1,
        "healthy_time_secs": 1,
        "progress_deadline_secs": 60,
        "max_offline": 1
    });
    spec
}

async fn rollout(stack: &Stack, app: &str) -> Result<RolloutStatusReply> {
    Ok(stack.raw(ApiOp::AppRollout, &serde_json::to_vec(&serde_json::json!({"name": app}))?).await?)
}

/// Container id per site.
async fn ids(stack: &Stack, app: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for s in &stack.sites {
        for c in stack.containers(&s.name, app).await? {
            out.insert(s.name.to_string(), c.id);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_that_fails_its_health_gate_is_rolled_back() -> Result<()> {
    let stack = Stack::start(&[&[("canary", "true")], &[], &[]]).await?;
    let all: Vec<_> = stack.sites.iter().map(|s| s.name.clone()).collect();
    let app = edge_testkit::unique("shop");
    stack.apply(&versioned(&app, "1.0.0", "edge/busybox:v1")).await?;
    stack.wait_running(&all.iter().collect::<Vec<_>>(), &app, 1).await?;
    let before = ids(&stack, &app).await?;

    // Version 2 names an image no site has: the canary fails, the gate fails, the canary goes back.
    let reply = stack.apply(&versioned(&app, "2.0.0", "edge/busybox:missing")).await?;
    assert_eq!(reply.generation, 2);
    stack
        .eventually("the rollout is rolled back", || async {
            let r = rollout(&stack, &app).await?;
            Ok(r.rollout.is_some_and(|ro| ro.phase == RolloutPhase::RolledBack))
        })
        .await?;
    let r = rollout(&stack, &app).await?;
    let ro = r.rollout.unwrap();
    assert!(ro.message.contains("canary failed its health gate"), "{}", ro.message);
    assert_eq!(r.waves[0].state, "failed");
    assert!(r.waves[1..].iter().all(|w| w.state == "pending"), "{:?}", r.waves);

    // Every site runs version 1 again; the sites after the canary were never touched.
    stack
        .eventually("every site reports running generation 3 (version 1.0.0)", || async {
            let s = stack.status(&app).await?;
            Ok(s.generation == 3 && s.version == "1.0.0" && s.sites.iter().all(|s| s.phase == SitePhase::Running))
        })
        .await?;
    let after = ids(&stack, &app).await?;
    for s in &all[1..] {
        assert_eq!(after[s.as_str()], before[s.as_str()], "site {s} was not part of the failed wave");
    }
    let canary = stack.containers(&all[0], &app).await?;
    assert!(canary.len() == 1 && canary[0].running && canary[0].image == "edge/busybox:v1", "{canary:?}");

    let h: HistoryReply = stack.raw(ApiOp::AppHistory, &serde_json::to_vec(&serde_json::json!({"name": app}))?).await?;
    let outcomes: Vec<(u64, &str)> = h.revisions.iter().map(|r| (r.generation, r.outcome.as_str())).collect();
    assert_eq!(outcomes[0].0, 3);
    assert!(outcomes[0].1.starts_with("rollback to 1.0.0"), "{outcomes:?}");
    assert!(outcomes[1].1.starts_with("rolled back: canary failed"), "{outcomes:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waves_pause_resume_and_a_closed_maintenance_window_defers_the_change() -> Result<()> {
    // The site labelled window=closed has a maintenance window twelve hours from now.
    let mut stack = Stack::start_with(&[&[("canary", "true")], &[], &[("window", "closed")]], |c| {
        if c.labels.iter().any(|(k, v)| k == "window" && v.0 == "closed") {
            let now_min = (edge_bus::time::now_ms() / 60_000 + 720) % 1440;
            let hm = |m: u64| format!("{:02}:{:02}", m / 60, m % 60);
            c.maintenance_window = Some(format!("{}-{}", hm(now_min), hm((now_min + 1) % 1440)));
        }
    })
    .await?;
    let all: Vec<_> = stack.sites.iter().map(|s| s.name.clone()).collect();
    let app = edge_testkit::unique("pos");
    // A first install does not wait for the window.
    stack.apply(&versioned(&app, "1.0.0", "edge/busybox:v1")).await?;
    stack.wait_running(&all.iter().collect::<Vec<_>>(), &app, 1).await?;
    let before = ids(&stack, &app).await?;

    stack.apply(&versioned(&app, "2.0.0", "edge/busybox:v2")).await?;
    let paused: edge_types::rollout::RolloutControlReply =
        stack.raw(ApiOp::AppPause, &serde_json::to_vec(&serde_json::json!({"all": true}))?).await?;
    assert!(paused.apps.iter().any(|a| a.as_str() == app));
    stack
        .eventually("the canary runs version 2", || async {
            let c = stack.containers(&all[0], &app).await?;
            Ok(c.len() == 1 && c[0].running && c[0].image == "edge/busybox:v2")
        })
        .await?;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let r = rollout(&stack, &app).await?;
    assert_eq!(r.rollout.as_ref().unwrap().phase, RolloutPhase::Paused);
    assert_eq!(r.rollout.as_ref().unwrap().current, 0, "a paused rollout starts no wave");
    assert_eq!(ids(&stack, &app).await?[all[1].as_str()], before[all[1].as_str()]);

    let _: edge_types::rollout::RolloutControlReply =
        stack.raw(ApiOp::AppResume, &serde_json::to_vec(&serde_json::json!({"name": app}))?).await?;
    stack
        .eventually("the rollout completes", || async {
            Ok(rollout(&stack, &app).await?.rollout.is_some_and(|r| r.phase == RolloutPhase::Complete))
        })
        .await?;
    let r = rollout(&stack, &app).await?;
    let waiting: u32 = r.waves.iter().map(|w| w.waiting).sum();
    assert_eq!(waiting, 1, "the deferred site is counted as waiting: {:?}", r.waves);
    let s = stack.status(&app).await?;
    let phase = |site: &edge_types::Name| s.sites.iter().find(|x| &x.site == site).unwrap().phase;
    assert_eq!(phase(&all[1]), SitePhase::Running);
    assert_eq!(phase(&all[2]), SitePhase::Deferred);
    assert_eq!(ids(&stack, &app).await?[all[2].as_str()], before[all[2].as_str()], "the old version keeps running");

    // The window opens (the site is reconfigured): the change applies.
    stack.sites[2].tweak = std::sync::Arc::new(|_| {});
    stack.restart_manager(2).await;
    stack
        .eventually("the deferred site runs version 2", || async {
            let c = stack.containers(&all[2], &app).await?;
            Ok(c.len() == 1 && c[0].running && c[0].image == "edge/busybox:v2")
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_site_is_counted_and_queued_and_a_rollback_goes_to_the_version_asked() -> Result<()> {
    let stack = Stack::start(&[&[("canary", "true")], &[], &[]]).await?;
    let all: Vec<_> = stack.sites.iter().map(|s| s.name.clone()).collect();
    let app = edge_testkit::unique("kiosk");
    stack.apply(&versioned(&app, "1.0.0", "edge/busybox:v1")).await?;
    stack.wait_running(&all.iter().collect::<Vec<_>>(), &app, 1).await?;

    // Site 2 is cut off: within max_offline (1) it does not hold the rollout.
    stack.cut(2).await?;
    stack.apply(&versioned(&app, "2.0.0", "edge/busybox:v2")).await?;
    stack
        .eventually("the rollout completes without the offline site", || async {
            Ok(rollout(&stack, &app).await?.rollout.is_some_and(|r| r.phase == RolloutPhase::Complete))
        })
        .await?;
    let waiting: u32 = rollout(&stack, &app).await?.waves.iter().map(|w| w.waiting).sum();
    assert_eq!(waiting, 1, "the offline site is counted");
    let c = stack.containers(&all[2], &app).await?;
    assert_eq!(c[0].image, "edge/busybox:v1", "cut off, the site still runs what it had");

    // The change was queued: back online, the site applies it.
    stack.restore(2).await?;
    stack
        .eventually("the returning site runs version 2", || async {
            let c = stack.containers(&all[2], &app).await?;
            Ok(c.len() == 1 && c[0].running && c[0].image == "edge/busybox:v2")
        })
        .await?;

    // An explicit rollback to 1.0.0 goes out at once, everywhere, as a new generation.
    let body = serde_json::to_vec(&serde_json::json!({"name": app, "to_version": "1.0.0"}))?;
    let record: edge_types::api::AppRecord = stack.raw(ApiOp::AppRollback, &body).await?;
    assert_eq!((record.generation, record.spec.version.as_str()), (3, "1.0.0"));
    stack
        .eventually("every site runs version 1 again", || async {
            let s = stack.status(&app).await?;
            Ok(s.generation == 3 && s.sites.iter().all(|s| s.phase == SitePhase::Running))
        })
        .await?;
    for s in &all {
        assert_eq!(stack.containers(s, &app).await?[0].image, "edge/busybox:v1");
    }
    let bad = serde_json::to_vec(&serde_json::json!({"name": app, "to_version": "9.9.9"}))?;
    let r: Result<edge_types::api::AppRecord, _> = stack.raw(ApiOp::AppRollback, &bad).await;
    assert!(
        matches!(r, Err(edge_bus::api::RequestError::Api(ref e)) if e.pointer.as_deref() == Some("/to_version")),
        "{r:?}"
    );
    Ok(())
}
