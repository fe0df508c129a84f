//! Bad input gets a clear error naming the field, and changes nothing.

mod support;

use anyhow::Result;
use edge_bus::api::RequestError;
use edge_types::api::{AppListReply, ApplyReply, ErrorCode};
use edge_types::subject::ApiOp;
use edge_types::Name;
use serde_json::json;
use std::time::Duration;
use support::{sleeper, Stack};

fn invalid(r: Result<ApplyReply, RequestError>) -> (String, String) {
    match r {
        Err(RequestError::Api(e)) => {
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{e:?}");
            (e.pointer.unwrap_or_default(), e.message)
        }
        other => panic!("expected an invalid_request error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_specs_are_rejected_with_the_field_and_change_nothing() -> Result<()> {
    let stack = Stack::start(&[&[("customer", "acme")]]).await?;
    let good = sleeper("good", "customer = acme", "edge/busybox:v1", &[]);

    let with = |pointer: &str, value: serde_json::Value| {
        let mut v = good.clone();
        *v.pointer_mut(pointer).unwrap() = value;
        v
    };
    let with_hosts = |hosts: &str| {
        let mut v = good.clone();
        v["placement"]["hosts"] = json!(hosts);
        v
    };
    let mut unknown = good.clone();
    unknown["services"][0]["imagee"] = json!("x");
    let mut unknown_top = good.clone();
    unknown_top["replicas"] = json!(2);

    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("name with a dot", with("/name", json!("a.b")), "/name"),
        ("name with a star", with("/name", json!("a*")), "/name"),
        ("name with >", with("/name", json!(">")), "/name"),
        ("name with a space", with("/name", json!("a b")), "/name"),
        ("service name with a dot", with("/services/0/name", json!("web.1")), "/services/0/name"),
        ("empty service list", with("/services", json!([])), "/services"),
        ("unknown field in a service", unknown, "/services/0"),
        ("unknown top-level field", unknown_top, ""),
        (
            "absurd memory",
            with("/services/0/resources/memory_mb", json!(1u64 << 40)),
            "/services/0/resources/memory_mb",
        ),
        ("negative cpus", with("/services/0/resources/cpus", json!(-1)), "/services/0/resources/cpus"),
        ("absurd cpus", with("/services/0/resources/cpus", json!(100000)), "/services/0/resources/cpus"),
        (
            "replicas zero",
            {
                let mut v = good.clone();
                v["services"][0]["replicas"] = json!(0);
                v
            },
            "/services/0/replicas",
        ),
        ("wrong type", with("/version", json!(3)), "/version"),
        ("bad selector", with("/placement/sites", json!("customer ~ acme")), "/placement/sites"),
        ("undeclared order", with("/placement/sites", json!("colour >= red")), "/placement/sites"),
        ("value outside the order", with("/placement/sites", json!("size >= huge")), "/placement/sites"),
        ("contradictory sites", with("/placement/sites", json!("customer = acme, customer = x")), "/placement/sites"),
        ("unsatisfiable order", with("/placement/sites", json!("size > large")), "/placement/sites"),
        ("contradictory hosts", with_hosts("cpus > 8, cpus < 4"), "/placement/hosts"),
        ("bad host selector", with_hosts("camera,"), "/placement/hosts"),
        (
            "gpus no host may have",
            {
                let mut v = good.clone();
                v["placement"]["hosts"] = json!("!gpu");
                v["services"][0]["resources"]["gpus"] = json!(1);
                v
            },
            "/services/0/resources/gpus",
        ),
        (
            "replicas with one-per-matching-host",
            {
                let mut v = good.clone();
                v["services"][0]["mode"] = json!("one-per-matching-host");
                v["services"][0]["replicas"] = json!(3);
                v
            },
            "/services/0/replicas",
        ),
        (
            "bad canary selector",
            {
                let mut v = good.clone();
                v["rollout"] = json!({"canary": "canary ="});
                v
            },
            "/rollout/canary",
        ),
        (
            "missing placement",
            {
                let mut v = good.clone();
                v.as_object_mut().unwrap().remove("placement");
                v
            },
            "",
        ),
    ];
    for (what, spec, pointer) in cases {
        let (p, msg) = invalid(stack.apply(&spec).await);
        assert_eq!(p, pointer, "{what}: {msg}");
        assert!(msg.starts_with("invalid request"), "{what}: {msg}");
        // The preview says the same.
        match stack.plan(&spec).await {
            Err(RequestError::Api(e)) => assert_eq!(e.pointer.unwrap_or_default(), pointer, "{what}"),
            other => panic!("{what}: plan accepted a bad spec: {other:?}"),
        }
    }

    // Duplicate service names are caught beyond the schema, still naming the field.
    let mut dup = good.clone();
    let svc = dup["services"][0].clone();
    dup["services"].as_array_mut().unwrap().push(svc);
    let (p, _) = invalid(stack.apply(&dup).await);
    assert_eq!(p, "/services/1/name");

    // Malformed JSON, wrong shapes and oversized bodies.
    for body in [&b"{not json"[..], b"", b"[]", b"null", b"\"x\""] {
        let r: Result<ApplyReply, _> = stack.raw(ApiOp::AppApply, body).await;
        invalid(r);
    }
    let huge = vec![b' '; 300 * 1024];
    invalid(stack.raw(ApiOp::AppApply, &huge).await);

    // Bad names on other operations.
    let r: Result<AppListReply, _> = stack.raw(ApiOp::AppList, br#"{"x":1}"#).await;
    assert!(matches!(r, Err(RequestError::Api(ref e)) if e.code == ErrorCode::InvalidRequest), "{r:?}");
    match stack.status("a.b").await {
        Err(RequestError::Api(e)) => assert_eq!(e.pointer.as_deref(), Some("/name")),
        other => panic!("{other:?}"),
    }
    match stack.status("nope").await {
        Err(RequestError::Api(e)) => assert_eq!(e.code, ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }

    // A site may not take the hub's name (its domain would collide with the hub's), nor call
    // home as another site than the one its subject (its credential) names.
    let register = |caller: &str, claimed: &str| {
        let reg = json!({"site": claimed, "labels": {}, "hosts": [], "agent_version": "x"});
        let caller = Name::new(caller).unwrap();
        let client = stack.client.clone();
        async move {
            edge_bus::api::request_as_site::<_, edge_types::api::RegisterReply>(
                &client,
                ApiOp::SiteRegister,
                &caller,
                &reg,
                Duration::from_secs(20),
            )
            .await
        }
    };
    for (caller, claimed) in [("hub", "hub"), ("shop-x", "shop-y")] {
        match register(caller, claimed).await {
            Err(RequestError::Api(e)) => assert_eq!(e.pointer.as_deref(), Some("/site"), "{e:?}"),
            other => panic!("{caller} as {claimed}: {other:?}"),
        }
    }
    // The forgery is audited, under the site whose credential sent it.
    let forged = edge_bus::topology::hub_js(&stack.client)
        .get_stream("AUDIT")
        .await?
        .get_last_raw_message_by_subject(&edge_types::subject::audit_join(&Name::new("shop-x")?))
        .await?;
    let forged: edge_types::join::JoinEvent = serde_json::from_slice(&forged.payload)?;
    assert_eq!(forged.action, edge_types::join::JoinAction::Refused);
    assert!(forged.detail.as_deref().is_some_and(|d| d.contains("call-home") && d.contains("shop-y")), "{forged:?}");
    let unnamed = json!({"site": "shop-y", "labels": {}, "hosts": [], "agent_version": "x"});
    let r = stack.client.request("edge.v1.api.site.register", serde_json::to_vec(&unnamed)?.into()).await;
    assert!(r.is_err(), "a call-home without its site token is not served: {r:?}");
    assert_eq!(stack.sites_list().await?.sites.len(), 1);

    // Rejections are counted where operators look: the service API's stats.
    let stats = stack.client.request("$SRV.STATS.scheduler", "".into()).await?;
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload)?;
    let apply = stats["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == "app-apply").unwrap();
    assert!(apply["data"]["failed_requests"].as_u64().unwrap() >= 20, "{apply}");

    // Nothing changed: no app exists and no container runs at the site.
    assert!(stack.apps().await?.apps.is_empty());
    assert!(stack.containers(stack.site(0), "good").await?.is_empty());
    Ok(())
}
