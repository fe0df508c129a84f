//! Offline-first: with its WAN link cut, a site keeps its workloads running, restarts crashed
//! containers, survives a site-manager restart and a cold boot from its own desired state;
//! what it records meanwhile reaches the hub exactly once when the link returns; changes made
//! centrally during the cut apply afterwards; and the reconnect itself restarts nothing.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Result;
use bollard::query_parameters::{KillContainerOptions, RemoveContainerOptionsBuilder};
use edge_types::api::SitePhase;
use support::{sleeper, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_site_keeps_running_restarts_and_cold_boots_on_its_own() -> Result<()> {
    let mut stack = Stack::start(&[&[("tier", "edge")]]).await?;
    let site = stack.site(0).clone();
    let app = edge_testkit::unique("pos");
    stack.apply(&sleeper(&app, "tier = edge", "edge/busybox:v1", &[])).await?;
    stack.wait_running(&[&site], &app, 1).await?;
    let before = stack.containers(&site, &app).await?;

    stack.cut(0).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stack.containers(&site, &app).await?, before, "the cut alone changes nothing");

    // A crashed container is restarted from the site-local desired state.
    stack.docker.kill_container(&before[0].id, None::<KillContainerOptions>).await?;
    stack
        .eventually("restart with the WAN down", || async {
            let c = stack.containers(&site, &app).await?;
            Ok(c.len() == 1 && c[0].id == before[0].id && c[0].running && c[0].started_at != before[0].started_at)
        })
        .await?;
    let running = stack.containers(&site, &app).await?;

    // A restarted site-manager adopts without the hub, and still restarts crashes.
    stack.restart_manager(0).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(stack.containers(&site, &app).await?, running, "adopted, not restarted");
    crash(&stack, &site, &app, 1).await?; // the new site-manager is at work, offline

    // Cold boot with no WAN: leaf server and site-manager restart; the containers are gone too,
    // as after a host reboot. The site brings the app back from its own store.
    stack.sites[0].cold_boot().await?;
    let rm = RemoveContainerOptionsBuilder::default().force(true).build();
    stack.docker.remove_container(&running[0].id, Some(rm)).await?;
    stack.wait_running(&[&site], &app, 1).await?;
    let rebooted = stack.containers(&site, &app).await?;
    assert_ne!(rebooted[0].id, running[0].id);
    assert!(!stack.sites[0].wan.is_up(), "all of this happened with the WAN down");

    // The link returns: nothing restarts.
    stack.restore(0).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(stack.containers(&site, &app).await?, rebooted, "the reconnect restarted nothing");
    stack
        .eventually("the hub learns the site runs the app", || async {
            let s = stack.status(&app).await?;
            Ok(s.sites[0].phase == SitePhase::Running
                && s.sites[0].report.as_ref().is_some_and(|r| r.containers[0].container_id == rebooted[0].id))
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_made_during_a_cut_apply_when_the_link_returns() -> Result<()> {
    let stack = Stack::start(&[&[("customer", "acme")], &[("customer", "acme")]]).await?;
    let (off, on) = (stack.site(0).clone(), stack.site(1).clone());
    let app = edge_testkit::unique("menu");
    stack.apply(&sleeper(&app, "customer = acme", "edge/busybox:v1", &[])).await?;
    stack.wait_running(&[&off, &on], &app, 1).await?;
    let old = stack.containers(&off, &app).await?;

    stack.cut(0).await?;
    stack.apply(&sleeper(&app, "customer = acme", "edge/busybox:v2", &[])).await?;
    stack
        .eventually("the connected site runs v2", || async {
            let c = stack.containers(&on, &app).await?;
            Ok(c.len() == 1 && c[0].running && c[0].image == "edge/busybox:v2")
        })
        .await?;
    stack
        .eventually("status shows the cut-off site pending and offline", || async {
            let s = stack.status(&app).await?;
            let off_status = s.sites.iter().find(|x| x.site == off).unwrap();
            Ok(s.generation == 2 && off_status.phase == SitePhase::Pending && off_status.offline)
        })
        .await?;
    assert_eq!(stack.containers(&off, &app).await?, old, "no change reaches a cut-off site");

    stack.restore(0).await?;
    stack
        .eventually("the change applies after the link returns", || async {
            let c = stack.containers(&off, &app).await?;
            Ok(c.len() == 1 && c[0].running && c[0].image == "edge/busybox:v2")
        })
        .await?;
    stack
        .eventually("both sites report generation 2 running", || async {
            let s = stack.status(&app).await?;
            Ok(s.sites.iter().all(|x| x.phase == SitePhase::Running))
        })
        .await?;
    Ok(())
}

/// Kills the app's container `times` times, waiting for each restart.
async fn crash(stack: &Stack, site: &edge_types::Name, app: &str, times: usize) -> Result<()> {
    for _ in 0..times {
        let c = stack.containers(site, app).await?;
        stack.docker.kill_container(&c[0].id, None::<KillContainerOptions>).await?;
        stack
            .eventually("restarted", || async {
                let now = stack.containers(site, app).await?;
                Ok(now[0].running && now[0].started_at != c[0].started_at)
            })
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_recorded_during_a_cut_reach_the_hub_exactly_once_in_order() -> Result<()> {
    let stack = Stack::start(&[&[("tier", "edge")]]).await?;
    let site = stack.site(0).clone();
    let app = edge_testkit::unique("cam");
    stack.apply(&sleeper(&app, "", "edge/busybox:v1", &[])).await?;
    stack.wait_running(&[&site], &app, 1).await?;

    stack.cut(0).await?;
    crash(&stack, &site, &app, 3).await?; // recorded at the site as status changes
    let (held, last) = stack.site_buffer(0).await?;
    assert!(held >= 3, "status changes buffered at the site: {held}");

    stack.restore(0).await?;
    stack
        .eventually("the hub holds every event the site recorded", || async {
            Ok(stack.hub_copies(&site).await?.last().is_some_and(|(_, seq)| *seq >= last))
        })
        .await?;
    let copies = stack.hub_copies(&site).await?;
    let seqs: Vec<u64> = copies.iter().map(|(_, s)| *s).collect();
    support::assert_exactly_once(&seqs, last, "after a cut");
    let ids: HashSet<&String> = copies.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), copies.len(), "no duplicate message ids");
    stack
        .eventually("the hub's status shows the three restarts", || async {
            let s = stack.status(&app).await?;
            Ok(s.sites[0].report.as_ref().is_some_and(|r| r.containers[0].restarts == 3))
        })
        .await?;
    stack.eventually("the site's buffer drains", || async { Ok(stack.site_buffer(0).await?.0 == 0) }).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_buffer_refuses_events_raises_the_alarm_and_loses_no_state() -> Result<()> {
    let stack = Stack::start_with(&[&[("tier", "edge")]], |c| c.events_max_msgs = 2).await?;
    let site = stack.site(0).clone();
    let app = edge_testkit::unique("scale");
    stack.apply(&sleeper(&app, "", "edge/busybox:v1", &[])).await?;
    stack.wait_running(&[&site], &app, 1).await?;
    stack.eventually("the buffer drains while connected", || async { Ok(stack.site_buffer(0).await?.0 == 0) }).await?;

    stack.cut(0).await?;
    crash(&stack, &site, &app, 3).await?;
    assert_eq!(stack.site_buffer(0).await?.0, 2, "the buffer holds its limit and no more");

    stack.restore(0).await?;
    stack
        .eventually("the hub sees refused events counted", || async {
            let b = stack.site_summary(0).await?.buffer;
            Ok(b.is_some_and(|b| b.rejected_total > 0))
        })
        .await?;
    stack
        .eventually("the latest state still reaches the hub", || async {
            let s = stack.status(&app).await?;
            Ok(s.sites[0]
                .report
                .as_ref()
                .is_some_and(|r| r.containers[0].restarts == 3 && r.containers[0].state == "running"))
        })
        .await?;
    stack
        .eventually("the alarm clears once the hub has caught up", || async {
            let b = stack.site_summary(0).await?.buffer;
            Ok(b.is_some_and(|b| !b.full && b.messages == 0))
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flapping_link_restarts_nothing_and_loses_nothing() -> Result<()> {
    let stack = Stack::start(&[&[("tier", "edge")], &[("tier", "edge")]]).await?;
    let (flappy, steady) = (stack.site(0).clone(), stack.site(1).clone());
    let app = edge_testkit::unique("kiosk");
    stack.apply(&sleeper(&app, "tier = edge", "edge/busybox:v1", &[])).await?;
    stack.wait_running(&[&flappy, &steady], &app, 1).await?;
    let before = stack.containers(&steady, &app).await?;

    // Ten flaps of the WAN link, with a crash at the site in the middle of them.
    let flapping = stack.sites[0].wan.flap(10, Duration::from_millis(700), Duration::from_millis(500));
    let crashing = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        crash(&stack, &flappy, &app, 1).await
    };
    let ((), crashed) = tokio::join!(flapping, crashing);
    crashed?;
    let after_crash = stack.containers(&flappy, &app).await?;

    let (_, last) = stack.site_buffer(0).await?;
    stack
        .eventually("the hub holds every event of the flapping site", || async {
            Ok(stack.hub_copies(&flappy).await?.last().is_some_and(|(_, seq)| *seq >= last))
        })
        .await?;
    let seqs: Vec<u64> = stack.hub_copies(&flappy).await?.iter().map(|(_, s)| *s).collect();
    support::assert_exactly_once(&seqs, last, "across ten reconnects");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.containers(&flappy, &app).await?, after_crash, "reconnects restarted nothing");
    assert_eq!(stack.containers(&steady, &app).await?, before, "the other site was never touched");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_leaf_is_detected_and_recovered() -> Result<()> {
    let mut stack = Stack::start(&[&[("tier", "edge")]]).await?;
    let pid = stack.sites[0].leaf.pid().expect("leaf runs");
    let hub_addr = stack.sites[0].wan.addr().to_string(); // the probe crosses the same WAN
                                                          // The operator's restart command; here it resumes the frozen leaf process.
    stack.sites[0].tweak = std::sync::Arc::new(move |c: &mut site_manager::Config| {
        c.hub_probe_addr = Some(hub_addr.clone());
        c.leaf_restart_cmd = Some(format!("kill -CONT {pid}"));
        c.leaf_stuck_secs = 2;
    });
    stack.restart_manager(0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.eventually("connected", || async { stack.connected(0).await }).await?;

    // The leaf stops serving while the WAN is fine (the hub greets a probe).
    std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status()?;
    stack
        .eventually("the site-manager recovers the leaf and says so", || async {
            let s = stack.site_summary(0).await?;
            Ok(s.connected && s.leaf_recoveries >= 1)
        })
        .await?;

    // A plain WAN cut is not a stuck leaf: no recovery is attempted.
    let before = stack.site_summary(0).await?.leaf_recoveries;
    stack.cut(0).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    stack.restore(0).await?;
    assert_eq!(stack.site_summary(0).await?.leaf_recoveries, before);
    Ok(())
}

/// When the site's leaf-link credential expires, Unix seconds.
fn leaf_expiry(stack: &Stack) -> Result<u64> {
    let creds = edge_auth::Creds::parse(&std::fs::read_to_string(&stack.sites[0].leaf_creds)?)?;
    Ok(edge_auth::leaf::expires_at(&creds.jwt)?.expect("leaf credentials expire"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_site_whose_credential_expires_while_offline_keeps_running_and_recovers() -> Result<()> {
    let stack = Stack::start(&[&[]]).await?;
    let site = stack.site(0).clone();
    let app = edge_testkit::unique("pos");
    stack.apply(&sleeper(&app, "", "edge/busybox:v1", &[])).await?;
    stack.wait_running(&[&site], &app, 1).await?;
    let before = stack.containers(&site, &app).await?;

    // The WAN goes down, and while it is down the leaf-link credential reaches its end (here
    // after 3 s; 90 days by default). The site's leader tries to renew it and cannot.
    stack.cut(0).await?;
    stack.hub.authority().renew_leaf(&site, Duration::from_secs(3))?;
    let expiry = leaf_expiry(&stack)?;
    let now = || edge_bus::time::now_ms() / 1000;
    while now() <= expiry + 2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(leaf_expiry(&stack)?, expiry, "no renewal can happen offline");
    // Expired and offline: everything at the site keeps running, untouched.
    let during = stack.containers(&site, &app).await?;
    assert!(during.iter().all(|c| c.running), "{during:?}");
    assert_eq!(
        during.iter().map(|c| (&c.id, &c.started_at)).collect::<Vec<_>>(),
        before.iter().map(|c| (&c.id, &c.started_at)).collect::<Vec<_>>()
    );

    // The WAN returns: the leader renews through the hub's client port with the enrolment
    // credential, and the leaf server links again with the renewed file.
    stack.restore(0).await?;
    let renewed = leaf_expiry(&stack)?;
    assert!(renewed >= now() + 3000, "renewed for the scheduler's hour: {renewed}");
    stack
        .eventually("the hub hears the site's status again", || async {
            let s = stack.status(&app).await?;
            Ok(s.sites.first().is_some_and(|x| x.phase == SitePhase::Running && !x.offline))
        })
        .await?;
    let after = stack.containers(&site, &app).await?;
    assert_eq!(
        after.iter().map(|c| (&c.id, &c.started_at)).collect::<Vec<_>>(),
        before.iter().map(|c| (&c.id, &c.started_at)).collect::<Vec<_>>(),
        "nothing restarted"
    );
    Ok(())
}
