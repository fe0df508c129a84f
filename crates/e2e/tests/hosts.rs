//! Sites with several hosts: host selectors (the brief's "customer X, hosts of size medium or
//! larger with a camera attached"), one-per-matching-host, replicas moving off a failed host
//! with and without the WAN, and a leader that dies without restarting anything. Real hub and
//! leaf servers, one site-manager per host, real Docker (hosts scoped by container label).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use edge_types::api::SitePhase;
use support::{sleeper, Container, Stack};

/// Fast failure detection for tests: a lease of 3 s, a host presumed down after 4 s silent
/// (hosts beat every second).
fn fast(c: &mut site_manager::Config) {
    c.lease_secs = 3;
    c.host_dead_secs = 4;
}

/// No host failures expected: a host is presumed down only after 30 s (a loaded machine may
/// delay beats by seconds, and a presumed-down host would change the placement under test).
fn steady(c: &mut site_manager::Config) {
    c.lease_secs = 3;
    c.host_dead_secs = 30;
}

fn with_hosts(mut spec: serde_json::Value, hosts: &str) -> serde_json::Value {
    spec["placement"]["hosts"] = hosts.into();
    spec
}

fn running_on(containers: &[Container]) -> Vec<String> {
    let mut hosts: Vec<String> = containers.iter().filter(|c| c.running).map(|c| c.host.clone()).collect();
    hosts.sort();
    hosts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_briefs_example_places_by_host_across_a_mixed_fleet() -> Result<()> {
    let mut stack = Stack::start_sites(
        &[
            (
                &[("customer", "acme")],
                &[("h1", &[("size", "small"), ("camera", "1")]), ("h2", &[("size", "large"), ("camera", "1")])],
            ),
            (&[("customer", "acme")], &[("h1", &[("size", "large")])]),
            (&[("customer", "globex")], &[("h1", &[("size", "large"), ("camera", "1")])]),
        ],
        steady,
    )
    .await?;
    let (a, b, c) = (stack.site(0).clone(), stack.site(1).clone(), stack.site(2).clone());
    stack
        .eventually("site a registered both hosts", || async { Ok(stack.site_summary(0).await?.hosts.len() == 2) })
        .await?;

    // The brief's example, one line: sites of customer acme, hosts of size medium or larger with a camera.
    let app = edge_testkit::unique("vision");
    let spec = with_hosts(sleeper(&app, "customer = acme", "edge/busybox:v1", &[]), "size >= medium, camera");
    let plan = stack.plan(&spec).await?;
    let site_plan = |s: &edge_types::Name| plan.sites.iter().find(|p| &p.site == s).unwrap().clone();
    let pa = site_plan(&a);
    assert!(pa.selected, "{pa:?}");
    let h1 = pa.hosts.iter().find(|h| h.host.as_str() == "h1").unwrap();
    assert!(!h1.selected && h1.reasons[0].contains("`size >= medium` fails: the host has size=small"), "{pa:?}");
    assert!(pa.hosts.iter().any(|h| h.host.as_str() == "h2" && h.selected), "{pa:?}");
    let pb = site_plan(&b);
    assert!(!pb.selected && pb.reasons[0].contains("none of the site's 1 hosts matches"), "{pb:?}");
    assert!(pb.hosts[0].reasons.iter().any(|r| r.contains("`camera` fails")), "{pb:?}");
    let pc = site_plan(&c);
    assert!(!pc.selected && pc.reasons[0].contains("customer=globex"), "{pc:?}");

    // A container that needs the camera device itself needs a /dev/video* node: the labelled
    // (IP) cameras of these hosts do not give it one, and the preview says so.
    let mut wired = spec.clone();
    wired["services"][0]["devices"] = serde_json::json!(["camera"]);
    let p = stack.plan(&wired).await?;
    let pa = p.sites.iter().find(|s| s.site == a).unwrap();
    assert!(!pa.selected && pa.hosts.iter().all(|h| h.reasons.iter().any(|r| r.contains("camera device"))), "{pa:?}");

    let reply = stack.apply(&spec).await?;
    assert_eq!(reply.sites, std::slice::from_ref(&a));
    stack.wait_running(&[&a], &app, 1).await?;
    assert_eq!(running_on(&stack.containers(&a, &app).await?), ["h2"], "only the large camera host runs it");
    for s in [&b, &c] {
        assert!(stack.containers(s, &app).await?.is_empty());
    }

    // One container on every camera host, whatever its size.
    let agent = edge_testkit::unique("camagent");
    let mut spec2 = with_hosts(sleeper(&agent, "", "edge/busybox:v1", &[]), "camera");
    spec2["services"][0]["mode"] = "one-per-matching-host".into();
    let reply = stack.apply(&spec2).await?;
    let mut want = vec![a.clone(), c.clone()];
    want.sort();
    assert_eq!(reply.sites, want);
    stack.wait_running(&[&a], &agent, 2).await?;
    stack.wait_running(&[&c], &agent, 1).await?;
    assert_eq!(running_on(&stack.containers(&a, &agent).await?), ["h1", "h2"]);
    stack
        .eventually("the hub reports both apps running", || async {
            let ok = |s: edge_types::api::AppStatusReply| s.sites.iter().all(|s| s.phase == SitePhase::Running);
            Ok(ok(stack.status(&app).await?) && ok(stack.status(&agent).await?))
        })
        .await?;

    // Host labels are re-evaluated: site b's host gets a camera and the site gains both apps.
    stack.sites[1].hosts[0].labels.push(("camera".into(), "1".into()));
    stack.sites[1].stop_host(0).await;
    stack.sites[1].start_host(0);
    stack.wait_running(&[&b], &app, 1).await?;
    stack.wait_running(&[&b], &agent, 1).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_hosts_replicas_move_with_and_without_the_wan() -> Result<()> {
    let (mut stack, site, app) = two_replicas_on_three_hosts(fast).await?;
    let leader = stack.leader(0).await?.expect("a leader");

    // A host that is not the leader loses power: its replica moves, the other one stays put.
    let j = power_off_a_replica_host(&mut stack, &app, &leader).await?;

    // The host comes back: it runs nothing (its replica lives elsewhere now).
    stack.sites[0].start_host(j);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stack.containers(&site, &app).await?.len(), 2);

    // With the WAN down, another host fails: the site moves its replica on its own.
    stack.cut(0).await?;
    let j = power_off_a_replica_host(&mut stack, &app, &leader).await?;
    let victim = stack.sites[0].hosts[j].name.to_string();

    // Back online, the hub sees the app running on the hosts that are left.
    stack.restore(0).await?;
    stack
        .eventually("the hub reports the moved replica running", || async {
            let s = stack.status(&app).await?;
            let Some(r) = s.sites[0].report.as_ref() else { return Ok(false) };
            Ok(s.sites[0].phase == SitePhase::Running && r.containers.iter().all(|c| c.host.as_str() != victim))
        })
        .await?;
    Ok(())
}

/// Cuts the power of a host of site 0 that runs a replica of `app` and is not the `leader`
/// (its site-manager is killed, its containers removed), then waits until the replica has moved;
/// returns the host's index.
/// A site of three hosts running an app of two replicas, never two on one host: the stack, the
/// site and the app.
async fn two_replicas_on_three_hosts(
    tweak: fn(&mut site_manager::Config),
) -> Result<(Stack, edge_types::Name, String)> {
    let stack = Stack::start_sites(&[(&[], &[("h1", &[]), ("h2", &[]), ("h3", &[])])], tweak).await?;
    let site = stack.site(0).clone();
    stack
        .eventually("all three hosts registered", || async { Ok(stack.site_summary(0).await?.hosts.len() == 3) })
        .await?;
    let app = edge_testkit::unique("web");
    let mut spec = sleeper(&app, "", "edge/busybox:v1", &[]);
    spec["services"][0]["replicas"] = 2.into();
    spec["services"][0]["anti_affinity"] = true.into();
    stack.apply(&spec).await?;
    stack.wait_running(&[&site], &app, 2).await?;
    Ok((stack, site, app))
}

async fn power_off_a_replica_host(stack: &mut Stack, app: &str, leader: &str) -> Result<usize> {
    let site = stack.site(0).clone();
    let before = stack.containers(&site, app).await?;
    let victim = before.iter().find(|c| c.host != leader).map(|c| c.host.clone()).expect("a replica off the leader");
    let j = stack.sites[0].host_index(&victim);
    stack.sites[0].kill_host(j).await;
    stack.power_off_containers(&site, &victim).await?;
    wait_moved(stack, &site, app, &before, &victim).await?;
    Ok(j)
}

/// Waits until `app` runs 2 containers again, none on `victim`, and the replicas on other
/// hosts are the very same containers as `before` (not restarted).
async fn wait_moved(
    stack: &Stack,
    site: &edge_types::Name,
    app: &str,
    before: &[Container],
    victim: &str,
) -> Result<()> {
    stack
        .eventually(&format!("the replica on {victim} moves to another host"), || async {
            let now = stack.containers(site, app).await?;
            Ok(now.len() == 2 && now.iter().all(|c| c.running && c.host != victim))
        })
        .await?;
    let now = stack.containers(site, app).await?;
    for kept in before.iter().filter(|c| c.host != victim) {
        assert!(now.iter().any(|c| c.id == kept.id && c.started_at == kept.started_at), "{kept:?} was restarted");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_leader_is_replaced_without_restarting_anything() -> Result<()> {
    // Hosts are presumed down only after 30 s, so this test sees the leader change alone.
    let mut stack = Stack::start_sites(&[(&[], &[("h1", &[]), ("h2", &[])])], steady).await?;
    let site = stack.site(0).clone();
    stack.eventually("both hosts registered", || async { Ok(stack.site_summary(0).await?.hosts.len() == 2) }).await?;
    let app = edge_testkit::unique("web");
    let mut spec = sleeper(&app, "", "edge/busybox:v1", &[]);
    spec["services"][0]["replicas"] = 2.into();
    stack.apply(&spec).await?;
    stack.wait_running(&[&site], &app, 2).await?;
    let before = stack.containers(&site, &app).await?;
    assert_eq!(running_on(&before), ["h1", "h2"], "replicas spread over both hosts");
    let started: BTreeMap<String, String> = before.iter().map(|c| (c.id.clone(), c.started_at.clone())).collect();

    let leader = stack.leader(0).await?.expect("a leader");
    let j = stack.sites[0].host_index(&leader);
    stack.sites[0].kill_host(j).await;
    stack
        .eventually("the other host takes the lease", || async {
            Ok(stack.leader(0).await?.is_some_and(|l| l != leader))
        })
        .await?;
    // The new leader republishes the site's status; nothing restarts.
    stack
        .eventually("the hub still reports the app running", || async {
            let s = stack.status(&app).await?;
            Ok(s.sites[0].phase == SitePhase::Running)
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The old leader's site-manager comes back as a follower and adopts its container.
    stack.sites[0].start_host(j);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = stack.containers(&site, &app).await?;
    let now: BTreeMap<String, String> = after.iter().map(|c| (c.id.clone(), c.started_at.clone())).collect();
    assert_eq!(now, started, "no container was restarted, replaced or moved");
    assert!(after.iter().all(|c| c.running));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocked_hosts_workloads_move_and_it_runs_nothing_until_unblocked() -> Result<()> {
    let (stack, site, app) = two_replicas_on_three_hosts(steady).await?;
    let before = stack.containers(&site, &app).await?;
    let victim = before[0].host.clone();

    // One step: the host's replica moves to the free host, the other replica is not touched.
    support::edgectl(&stack.hub, &["host", "block", site.as_str(), &victim, "--reason", "stolen"])?;
    wait_moved(&stack, &site, &app, &before, &victim).await?;
    let summary = stack.site_summary(0).await?;
    assert_eq!(summary.blocked_hosts.iter().map(|h| h.as_str()).collect::<Vec<_>>(), [victim.as_str()]);
    let audit = edge_bus::topology::hub_js(&stack.client)
        .get_stream("AUDIT")
        .await?
        .get_last_raw_message_by_subject(&edge_types::subject::audit_host(&site, &edge_types::Name::new(&victim)?))
        .await?;
    let event: edge_types::block::BlockEvent = serde_json::from_slice(&audit.payload)?;
    assert!(event.blocked && event.reason.as_deref() == Some("stolen"), "{event:?}");

    // Unblocked, it may run workloads again, but nothing running moves back.
    let placed = stack.containers(&site, &app).await?;
    support::edgectl(&stack.hub, &["host", "unblock", site.as_str(), &victim, "--reason", "stolen"])?;
    stack
        .eventually("the site list shows no blocked host", || async {
            Ok(stack.site_summary(0).await?.blocked_hosts.is_empty())
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = stack.containers(&site, &app).await?;
    for c in &placed {
        assert!(now.iter().any(|n| n.id == c.id && n.started_at == c.started_at), "{c:?} was restarted");
    }
    Ok(())
}

/// An app with one replica on every host of the site.
async fn everywhere(stack: &Stack) -> Result<String> {
    let app = edge_testkit::unique("agent");
    let mut spec = sleeper(&app, "", "edge/busybox:v1", &[]);
    spec["services"][0]["mode"] = "one-per-matching-host".into();
    stack.apply(&spec).await?;
    Ok(app)
}

async fn wait_on_hosts(stack: &Stack, site: &edge_types::Name, app: &str, hosts: &[&str]) -> Result<()> {
    let want: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    stack
        .eventually(&format!("{app} runs on exactly {hosts:?}"), || async {
            Ok(running_on(&stack.containers(site, app).await?) == want)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_hosts_are_rejected_and_listed_until_approved() -> Result<()> {
    let stack = Stack::start_sites(&[(&[], &[("h1", &[]), ("h2", &[]), ("h3", &[])])], steady).await?;
    let site = stack.site(0).clone();
    stack
        .eventually("all three hosts registered", || async { Ok(stack.site_summary(0).await?.hosts.len() == 3) })
        .await?;
    let app = everywhere(&stack).await?;
    wait_on_hosts(&stack, &site, &app, &["h1", "h2", "h3"]).await?;

    // The operator declares the site's hosts: h3 is not among them, so it is rejected (its
    // replica stops) and listed; the others are not touched.
    let before = stack.containers(&site, &app).await?;
    support::edgectl(&stack.hub, &["host", "approve", site.as_str(), "h1", "h2"])?;
    wait_on_hosts(&stack, &site, &app, &["h1", "h2"]).await?;
    let summary = stack.site_summary(0).await?;
    assert_eq!(summary.unknown_hosts.iter().map(|h| h.as_str()).collect::<Vec<_>>(), ["h3"]);
    let now = stack.containers(&site, &app).await?;
    for kept in before.iter().filter(|c| c.host != "h3") {
        assert!(now.iter().any(|c| c.id == kept.id && c.started_at == kept.started_at), "{kept:?} was restarted");
    }

    // Approved, it runs its replica again.
    support::edgectl(&stack.hub, &["host", "approve", site.as_str(), "h3"])?;
    wait_on_hosts(&stack, &site, &app, &["h1", "h2", "h3"]).await?;
    assert!(stack.site_summary(0).await?.unknown_hosts.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_id_two_machines_use_is_rejected_and_listed() -> Result<()> {
    let stack = Stack::start_sites(&[(&[], &[("h1", &[]), ("h2", &[])])], fast).await?;
    let site = stack.site(0).clone();
    stack.eventually("both hosts registered", || async { Ok(stack.site_summary(0).await?.hosts.len() == 2) }).await?;
    let app = everywhere(&stack).await?;
    wait_on_hosts(&stack, &site, &app, &["h1", "h2"]).await?;

    // A second machine starts calling itself h2: that host id is rejected and listed.
    let other_machine = tempfile::tempdir()?;
    let (impostor, handle) = stack.sites[0].start_impostor("h2", other_machine.path());
    stack
        .eventually("h2 is listed as a duplicate", || async {
            Ok(stack.site_summary(0).await?.duplicate_hosts.iter().any(|h| h.as_str() == "h2"))
        })
        .await?;
    wait_on_hosts(&stack, &site, &app, &["h1"]).await?;

    // One machine is left: h2 is accepted again once its id is steady.
    impostor.cancel();
    let _ = handle.await;
    stack
        .eventually("h2 is no longer a duplicate", || async {
            Ok(stack.site_summary(0).await?.duplicate_hosts.is_empty())
        })
        .await?;
    wait_on_hosts(&stack, &site, &app, &["h1", "h2"]).await?;
    Ok(())
}
