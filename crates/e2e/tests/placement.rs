//! An app placed on `customer = acme` runs at exactly the matching sites; relabelling moves it;
//! deleting removes it. Real hub and leaf servers, real Docker.

mod support;

use anyhow::Result;
use edge_types::api::SitePhase;
use support::{sleeper, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn app_runs_exactly_where_placement_selects_and_follows_labels() -> Result<()> {
    let stack = Stack::start(&[&[("customer", "acme")], &[("customer", "acme")], &[("customer", "globex")]]).await?;
    let (a, b, c) = (stack.site(0).clone(), stack.site(1).clone(), stack.site(2).clone());
    let app = edge_testkit::unique("web");

    // The preview names the matching sites and says why the third is excluded; it stores nothing.
    let plan = stack.plan(&sleeper(&app, "customer = acme, cameras", "edge/busybox:v1", &[])).await?;
    assert!(plan.sites.iter().all(|s| !s.selected), "no site has cameras");
    assert_eq!(plan.unknown_labels, ["cameras"]);
    let plan = stack.plan(&sleeper(&app, "customer = acme", "edge/busybox:v1", &[])).await?;
    let selected: Vec<_> = plan.sites.iter().filter(|s| s.selected).map(|s| s.site.clone()).collect();
    assert_eq!(selected.len(), 2);
    let excluded = plan.sites.iter().find(|s| s.site == c).unwrap();
    assert!(!excluded.selected && excluded.reasons[0].contains("customer=globex"), "{excluded:?}");
    assert!(stack.apps().await?.apps.is_empty(), "a plan applies nothing");
    // Ordered labels compare by the order the operator declared (size=small<medium<large).
    stack.label(&c, "size", "large").await?;
    stack.label(&a, "size", "small").await?;
    let plan = stack.plan(&sleeper(&app, "size >= medium", "edge/busybox:v1", &[])).await?;
    let selected: Vec<_> = plan.sites.iter().filter(|s| s.selected).map(|s| s.site.clone()).collect();
    assert_eq!(selected, std::slice::from_ref(&c));
    let small = plan.sites.iter().find(|s| s.site == a).unwrap();
    assert!(small.reasons[0].contains("size=small"), "{small:?}");

    let reply = stack.apply(&sleeper(&app, "customer = acme", "edge/busybox:v1", &[])).await?;
    assert!(reply.changed);
    assert_eq!(reply.generation, 1);
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(reply.sites, expected);

    stack.wait_running(&[&a, &b], &app, 1).await?;
    stack
        .eventually("both sites report running", || async {
            let s = stack.status(&app).await?;
            Ok(s.sites.len() == 2 && s.sites.iter().all(|s| s.phase == SitePhase::Running))
        })
        .await?;
    assert!(stack.containers(&c, &app).await?.is_empty(), "the non-matching site runs nothing");
    let listed = stack.apps().await?;
    let summary = listed.apps.iter().find(|s| s.name.as_str() == app).unwrap();
    assert_eq!((summary.sites_desired, summary.sites_running), (2, 2));

    // Relabel: site c starts matching, site a stops.
    stack.label(&c, "customer", "acme").await?;
    stack.wait_running(&[&c], &app, 1).await?;
    stack.label(&a, "customer", "initech").await?;
    stack.eventually("the app leaves site a", || async { Ok(stack.containers(&a, &app).await?.is_empty()) }).await?;
    stack.wait_running(&[&b, &c], &app, 1).await?;
    stack
        .eventually("status lists b and c running", || async {
            let s = stack.status(&app).await?;
            let mut running: Vec<_> =
                s.sites.iter().filter(|s| s.phase == SitePhase::Running).map(|s| s.site.clone()).collect();
            running.sort();
            let mut want = vec![b.clone(), c.clone()];
            want.sort();
            Ok(running == want && s.sites.len() == 2)
        })
        .await?;

    // Delete: every container goes.
    stack.delete(&app).await?;
    for site in [&a, &b, &c] {
        stack.eventually("containers removed", || async { Ok(stack.containers(site, &app).await?.is_empty()) }).await?;
    }
    assert!(stack.apps().await?.apps.iter().all(|s| s.name.as_str() != app));
    Ok(())
}
