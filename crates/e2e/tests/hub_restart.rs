//! A hub restart: sites keep running, what they recorded meanwhile reaches the hub quickly once
//! it is back, and new desired state reaches them just as quickly.

mod support;

use std::time::{Duration, Instant};

use anyhow::Result;
use support::{sleeper, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_hub_restart_buffered_events_catch_up_fast() -> Result<()> {
    let mut stack = Stack::start(&[&[("tier", "edge")]]).await?;
    let site = stack.site(0).clone();
    let app = edge_testkit::unique("till");
    stack.apply(&sleeper(&app, "", "edge/busybox:v1", &[])).await?;
    stack.wait_running(&[&site], &app, 1).await?;
    let before = stack.containers(&site, &app).await?;

    stack.hub.stop().await;
    // Events recorded at the site while the hub is down: 200 of them, straight into its stream.
    let js = stack.site_js(0).await?;
    for i in 0..200 {
        let subject = format!("edge.v1.site.{site}.status.probe{i}");
        js.publish(subject, "{}".into()).await?.await?;
    }
    let (_, last) = stack.site_buffer(0).await?;
    stack.hub.restart().await?;
    let back = Instant::now();
    stack
        .eventually("the hub holds every event the site recorded", || async {
            Ok(stack.hub_copies(&site).await?.last().is_some_and(|(_, seq)| *seq >= last))
        })
        .await?;
    let took = back.elapsed();
    eprintln!("catch-up of {last} events after a hub restart: {took:?}");
    assert!(took < Duration::from_secs(15), "catch-up took {took:?}");
    let seqs: Vec<u64> = stack.hub_copies(&site).await?.iter().map(|(_, s)| *s).collect();
    support::assert_exactly_once(&seqs, last, "hub restart");
    assert_eq!(stack.containers(&site, &app).await?, before, "the hub restart restarted nothing");

    // A change applied right after the restart reaches the site without waiting out the
    // server's own retry back-off.
    let applied = Instant::now();
    stack.apply(&sleeper(&app, "", "edge/busybox:v2", &[])).await?;
    stack
        .eventually("the change reaches the site", || async {
            let c = stack.containers(&site, &app).await?;
            Ok(c.len() == 1 && c[0].running && c[0].image == "edge/busybox:v2")
        })
        .await?;
    eprintln!("change applied after a hub restart running at the site in {:?}", applied.elapsed());
    assert!(applied.elapsed() < Duration::from_secs(15), "took {:?}", applied.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_hub_restart_every_site_resyncs() -> Result<()> {
    const SITES: usize = 6;
    let labels: &[(&str, &str)] = &[("tier", "edge")];
    let mut stack = Stack::start(&[labels; SITES]).await?;
    let app = edge_testkit::unique("storm");
    stack.apply(&sleeper(&app, "tier = edge", "edge/busybox:v1", &[])).await?;
    let names: Vec<_> = stack.sites.iter().map(|s| s.name.clone()).collect();
    stack.wait_running(&names.iter().collect::<Vec<_>>(), &app, 1).await?;

    stack.hub.stop().await;
    let mut last = Vec::new();
    for (i, site) in names.iter().enumerate() {
        let js = stack.site_js(i).await?;
        for n in 0..20 {
            js.publish(format!("edge.v1.site.{site}.status.probe{n}"), "{}".into()).await?.await?;
        }
        last.push(stack.site_buffer(i).await?.1);
    }
    stack.hub.restart().await?;
    let back = Instant::now();
    let v2 = sleeper(&app, "tier = edge", "edge/busybox:v2", &[]);
    stack.eventually("the scheduler takes the change", || async { Ok(stack.apply(&v2).await.is_ok()) }).await?;
    for (i, site) in names.iter().enumerate() {
        stack
            .eventually("the site's events are at the hub", || async {
                Ok(stack.hub_copies(site).await?.last().is_some_and(|(_, seq)| *seq >= last[i]))
            })
            .await?;
        let seqs: Vec<u64> = stack.hub_copies(site).await?.iter().map(|(_, s)| *s).collect();
        support::assert_exactly_once(&seqs, last[i], site.as_str());
        stack
            .eventually("the site runs the change", || async {
                let c = stack.containers(site, &app).await?;
                Ok(c.len() == 1 && c[0].running && c[0].image == "edge/busybox:v2")
            })
            .await?;
    }
    eprintln!("{SITES} sites back in sync {:?} after the hub restart", back.elapsed());
    assert!(back.elapsed() < Duration::from_secs(30), "took {:?}", back.elapsed());
    Ok(())
}
