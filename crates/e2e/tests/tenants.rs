//! Tenants: each its own NATS account, whose users reach only their own applications and
//! secrets (the tenant comes from the credential), and blocking a tenant in one step. Real hub
//! and leaf servers with decentralized auth, the real services, real Docker, and `edgectl` as
//! an operator runs it.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use edge_bus::api::{request, RequestError};
use edge_types::api::{AppListReply, AppRecord, ApplyReply, DeleteReply, Empty, ErrorCode};
use edge_types::secret::{SecretInfo, SecretListReply};
use edge_types::subject::ApiOp;
use support::{sleeper, Stack};

const T: Duration = Duration::from_secs(20);

async fn connect(stack: &Stack, creds: &std::path::Path) -> Result<async_nats::Client> {
    let endpoint = edge_bus::Endpoint::new(stack.hub.url(), Some(creds.to_path_buf()));
    Ok(edge_bus::connect(&endpoint, "tenant", false).await?)
}

fn code(r: Result<impl std::fmt::Debug, RequestError>) -> Option<ErrorCode> {
    match r {
        Err(RequestError::Api(e)) => Some(e.code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn pointer(r: Result<impl std::fmt::Debug, RequestError>) -> Option<String> {
    match r {
        Err(RequestError::Api(e)) => e.pointer,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_see_and_change_only_their_own_and_a_blocked_tenant_stops_everywhere() -> Result<()> {
    let stack = Stack::start(&[&[]]).await?;
    let site = stack.site(0).clone();
    let (t1, t2) = (edge_testkit::unique("t1"), edge_testkit::unique("t2"));
    let t1_creds = PathBuf::from(support::edgectl(&stack.hub, &["tenant", "add", &t1])?.trim());
    let t2_creds = PathBuf::from(support::edgectl(&stack.hub, &["tenant", "add", &t2])?.trim());
    let (one, two) = (connect(&stack, &t1_creds).await?, connect(&stack, &t2_creds).await?);

    // Tenant 1 stores a secret and runs an app that uses it, naming no tenant anywhere.
    let put = serde_json::json!({"name": "db", "value": "t1-only", "actor": "e2e"});
    let info: SecretInfo = request(&one, ApiOp::SecretPut, &put, T).await?;
    assert_eq!(info.tenant.as_str(), t1);
    let app = edge_testkit::unique("shop");
    let mut spec = sleeper(&app, "", "edge/busybox:v1", &[]);
    spec["services"][0]["secrets"] = serde_json::json!([{"name": "db"}]);
    let applied: ApplyReply = request(&one, ApiOp::AppApply, &spec, T).await?;
    assert_eq!(applied.sites, std::slice::from_ref(&site));
    stack.wait_running(&[&site], &app, 1).await?;
    let mine: AppListReply = request(&one, ApiOp::AppList, &Empty {}, T).await?;
    assert_eq!(mine.apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), [app.as_str()]);

    // Tenant 2 sees none of it and can change none of it.
    let theirs: AppListReply = request(&two, ApiOp::AppList, &Empty {}, T).await?;
    assert!(theirs.apps.is_empty(), "{theirs:?}");
    let by_name = serde_json::json!({"name": app});
    assert_eq!(code(request::<_, AppRecord>(&two, ApiOp::AppGet, &by_name, T).await), Some(ErrorCode::NotFound));
    assert_eq!(code(request::<_, DeleteReply>(&two, ApiOp::AppDelete, &by_name, T).await), Some(ErrorCode::NotFound));
    let taken = request::<_, ApplyReply>(&two, ApiOp::AppApply, &sleeper(&app, "", "edge/busybox:v1", &[]), T).await;
    match &taken {
        Err(RequestError::Api(e)) => {
            assert_eq!(e.code, ErrorCode::Conflict);
            assert!(!e.message.contains(&t1), "another tenant's name leaks: {}", e.message);
        }
        other => panic!("taking another tenant's app name: {other:?}"),
    }
    let mut forged = sleeper(&edge_testkit::unique("x"), "", "edge/busybox:v1", &[]);
    forged["tenant"] = t1.clone().into();
    assert_eq!(pointer(request::<_, ApplyReply>(&two, ApiOp::AppApply, &forged, T).await).as_deref(), Some("/tenant"));
    let secrets: SecretListReply = request(&two, ApiOp::SecretList, &serde_json::json!({}), T).await?;
    assert!(secrets.secrets.is_empty(), "{secrets:?}");
    let forged = serde_json::json!({"name": "db", "tenant": t1});
    assert_eq!(
        pointer(request::<_, SecretInfo>(&two, ApiOp::SecretDescribe, &forged, T).await).as_deref(),
        Some("/tenant")
    );
    // A secret of the same name is tenant 2's own; tenant 1's app is not touched by it.
    let put = serde_json::json!({"name": "db", "value": "t2-only", "actor": "e2e"});
    let info: SecretInfo = request(&two, ApiOp::SecretPut, &put, T).await?;
    assert_eq!((info.tenant.as_str(), info.apps.len()), (t2.as_str(), 0));
    // Nothing but the tenant operations is reachable: no blocks, no sites.
    for op in [ApiOp::BlockList, ApiOp::SiteList] {
        match request::<_, Empty>(&two, op, &Empty {}, Duration::from_secs(2)).await {
            Err(RequestError::NoResponders { .. } | RequestError::Timeout(_)) => {}
            other => panic!("a tenant reached {op:?}: {other:?}"),
        }
    }
    // The operator sees both tenants' apps, each with its tenant.
    let all = stack.apps().await?;
    assert!(all.apps.iter().any(|a| a.name.as_str() == app && a.tenant.as_str() == t1), "{all:?}");

    // Blocking tenant 1: its credentials stop working, its app stops, its secret is withdrawn.
    let before = stack.containers(&site, &app).await?;
    assert_eq!(before.len(), 1);
    support::edgectl(&stack.hub, &["tenant", "block", &t1, "--reason", "contract ended"])?;
    assert!(connect(&stack, &t1_creds).await.is_err(), "a blocked tenant's user is refused");
    stack
        .eventually("the blocked tenant's app stops", || async { Ok(stack.containers(&site, &app).await?.is_empty()) })
        .await?;
    let described: SecretInfo =
        request(&stack.client, ApiOp::SecretDescribe, &serde_json::json!({"name": "db", "tenant": t1}), T).await?;
    assert!(described.sites.is_empty(), "withdrawn from every site: {described:?}");
    let audit = edge_bus::topology::hub_js(&stack.client)
        .get_stream("AUDIT")
        .await?
        .get_last_raw_message_by_subject(&edge_types::subject::audit_tenant(&edge_types::Name::new(&t1)?))
        .await?;
    let event: edge_types::block::BlockEvent = serde_json::from_slice(&audit.payload)?;
    assert!(event.blocked && event.apps.iter().any(|a| a.as_str() == app), "{event:?}");
    // Tenant 2 is not affected.
    let _: AppListReply = request(&two, ApiOp::AppList, &Empty {}, T).await?;

    // Unblocked: its users connect again and its app runs again.
    support::edgectl(&stack.hub, &["tenant", "unblock", &t1])?;
    let one = connect(&stack, &t1_creds).await?;
    stack.wait_running(&[&site], &app, 1).await?;
    let mine: AppListReply = request(&one, ApiOp::AppList, &Empty {}, T).await?;
    assert_eq!(mine.apps.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_runs_only_at_the_sites_it_may_use() -> Result<()> {
    let stack = Stack::start(&[&[("customer", "acme")], &[("customer", "globex")]]).await?;
    let (acme, globex) = (stack.site(0).clone(), stack.site(1).clone());
    let tenant = edge_testkit::unique("acme");
    let creds = PathBuf::from(support::edgectl(&stack.hub, &["tenant", "add", &tenant])?.trim());
    support::edgectl(&stack.hub, &["tenant", "sites", &tenant, "customer = acme"])?;
    let client = connect(&stack, &creds).await?;

    // The tenant asks for every site; it gets only those it may use.
    let app = edge_testkit::unique("everywhere");
    let applied: ApplyReply = request(&client, ApiOp::AppApply, &sleeper(&app, "", "edge/busybox:v1", &[]), T).await?;
    assert_eq!(applied.sites, std::slice::from_ref(&acme));
    stack.wait_running(&[&acme], &app, 1).await?;
    assert!(stack.containers(&globex, &app).await?.is_empty());
    // The plan says why the other site is left out.
    let plan: edge_types::api::PlanReply =
        request(&client, ApiOp::AppPlan, &sleeper(&app, "", "edge/busybox:v1", &[]), T).await?;
    let other = plan.sites.iter().find(|s| s.site == globex).expect("globex planned");
    assert!(!other.selected && other.reasons.iter().any(|r| r.contains("tenant")), "{other:?}");

    // Widened: placed again at once.
    support::edgectl(&stack.hub, &["tenant", "sites", &tenant, ""])?;
    stack.wait_running(&[&acme, &globex], &app, 1).await?;
    Ok(())
}
