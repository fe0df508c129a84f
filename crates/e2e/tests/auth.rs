//! Least privilege on the bus, with real nats-server auth: a hub and two site leaves trusting one
//! operator. Whatever runs at site B (here a client with B's site-manager credential, which is
//! all-powerful inside B's own account) cannot receive site A's traffic through the hub nor
//! publish as A; credentials only open what they were issued for.

mod support;

use std::time::Duration;

use anyhow::{ensure, Result};
use edge_testkit::NatsServer;
use edge_types::api::Empty;
use edge_types::block::{BlockEvent, BlockListReply, BlockTarget};
use edge_types::subject::{self, ApiOp};
use edge_types::Name;
use futures::StreamExt;

/// A subscription that must stay silent for a while.
async fn silent(sub: &mut async_nats::Subscriber, what: &str) {
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(700), sub.next()).await {
        panic!("{what}: received {:?}", m.subject);
    }
}

async fn receives(sub: &mut async_nats::Subscriber, what: &str) {
    match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
        Ok(Some(_)) => {}
        _ => panic!("{what}: nothing received"),
    }
}

/// Waits until interest of the leaves has crossed to the hub (subscriptions propagate
/// asynchronously): publishes until the control subscription receives.
async fn until_received(hub: &async_nats::Client, subject: &str, sub: &mut async_nats::Subscriber) {
    for _ in 0..50 {
        hub.publish(subject.to_string(), "x".into()).await.unwrap();
        hub.flush().await.unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            return;
        }
    }
    panic!("{subject} never reached its own site");
}

#[tokio::test]
async fn a_site_can_neither_read_nor_forge_another_sites_subjects() -> Result<()> {
    let hub_server = NatsServer::hub().await?;
    let (a, b) = (Name::new("shop-a")?, Name::new("shop-b")?);
    let leaf_a = NatsServer::leaf(a.as_str(), &hub_server).await?;
    let leaf_b = NatsServer::leaf(b.as_str(), &hub_server).await?;
    let hub = hub_server.connect().await?;
    let at_a = leaf_a.connect().await?;
    let at_b = leaf_b.connect().await?;

    // Hub -> site: A's log requests, desired-state deliveries and replies reach A, never B.
    for subj in [
        subject::logs(&a),
        format!("{}.S.x", subject::delivery_down(&a)),
        format!("{}.1", subject::site_inbox_prefix(&a)),
    ] {
        let mut own = at_a.subscribe(subj.clone()).await?;
        let mut other = at_b.subscribe(subj.clone()).await?;
        at_b.flush().await?;
        until_received(&hub, &subj, &mut own).await;
        silent(&mut other, &format!("site B listening on {subj}")).await;
    }
    // Nor can B see anything with a wildcard over the whole grammar.
    let mut everything = at_b.subscribe("edge.v1.>").await?;
    at_b.flush().await?;
    let mut own = at_a.subscribe(subject::logs(&a)).await?;
    until_received(&hub, &subject::logs(&a), &mut own).await;
    hub.publish(subject::desired(&a, &Name::new("web")?), "x".into()).await?;
    hub.flush().await?;
    silent(&mut everything, "site B's wildcard").await;

    // Site -> hub: B's heartbeat arrives; B publishing as A (heartbeat, events delivered to the
    // hub's streams, call-home as a raw subject of A) does not.
    let mut hb_b = hub.subscribe(subject::heartbeat(&b)).await?;
    let mut as_a = hub.subscribe(format!("{}.>", subject::PREFIX)).await?;
    hub.flush().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for subj in [
        subject::heartbeat(&a),
        format!("{}.S.1", subject::delivery_up(&a)),
        subject::site_status(&a, &Name::new("web")?),
        subject::site_registration(&a),
    ] {
        at_b.publish(subj, "forged".into()).await?;
    }
    at_b.publish(subject::heartbeat(&b), "mine".into()).await?;
    at_b.flush().await?;
    receives(&mut hb_b, "B's own heartbeat at the hub").await;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(700), as_a.next()).await {
        assert_eq!(m.subject.as_str(), subject::heartbeat(&b), "only B's own heartbeat crosses");
    }

    // B cannot open a consumer on A's desired state in the hub, only on its own.
    let js_b = async_nats::jetstream::with_domain(at_b.clone(), "hub");
    let hub_js = edge_bus::topology::hub_js(&hub);
    edge_bus::topology::ensure_hub(&hub_js).await?;
    // Named, so that the request's subject carries the filter (as a stream source's does).
    let consumer_of = |site: &Name| async_nats::jetstream::consumer::push::Config {
        name: Some("probe".into()),
        deliver_subject: format!("{}.S.test", subject::delivery_down(site)),
        filter_subject: subject::desired_for_site(site),
        ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
        ..Default::default()
    };
    let stream_of = |site: &Name| edge_bus::topology::desired_stream_of(site);
    let stolen = tokio::time::timeout(Duration::from_secs(3), async {
        js_b.get_stream_no_info(stream_of(&a))
            .await?
            .create_consumer(consumer_of(&a))
            .await
            .map(|_| ())
            .map_err(anyhow::Error::from)
    })
    .await;
    assert!(!matches!(stolen, Ok(Ok(()))), "site B made a consumer on site A's desired state");
    js_b.get_stream_no_info(stream_of(&b)).await?.create_consumer(consumer_of(&b)).await?;
    Ok(())
}

#[tokio::test]
async fn credentials_open_only_what_they_were_issued_for() -> Result<()> {
    let hub = NatsServer::hub().await?;
    let site = Name::new("shop-c")?;
    let bundle = hub.authority().site(&site)?;
    let connect = |creds: Option<std::path::PathBuf>| {
        let endpoint = edge_bus::Endpoint::new(hub.url(), creds);
        async move { edge_bus::connect(&endpoint, "probe", false).await }
    };
    assert!(connect(None).await.is_err(), "a client without credentials is refused");
    assert!(connect(Some(bundle.agent_creds)).await.is_err(), "a site's own account is unknown at the hub");
    assert!(connect(Some(bundle.leaf_creds)).await.is_err(), "a leaf-link credential makes no client session");
    let other = NatsServer::hub().await?;
    let foreign = other.user_creds("scheduler")?;
    assert!(connect(Some(foreign)).await.is_err(), "another operator's user is refused");
    connect(Some(hub.user_creds("scheduler")?)).await?;
    Ok(())
}

fn leaf_jwt(creds: &edge_auth::Creds) -> String {
    creds.jwt.clone()
}

/// `edgectl site block|unblock` as an operator runs it.
fn edgectl_site(hub: &NatsServer, verb: &str, site: &Name) -> Result<()> {
    support::edgectl(hub, &["site", verb, site.as_str(), "--reason", "host stolen"]).map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_site_is_cut_off_stays_out_and_keeps_running_locally() -> Result<()> {
    let hub_server = NatsServer::hub().await?;
    // The scheduler records and enforces blocks (`block.set`).
    let (scheduler, _running) = support::run_scheduler(&hub_server);
    let _stop = scheduler.drop_guard();
    let site = Name::new("shop-d")?;
    let leaf = NatsServer::leaf(site.as_str(), &hub_server).await?;
    let hub = hub_server.connect().await?;
    let at_site = leaf.connect().await?;
    let mut logs = at_site.subscribe(subject::logs(&site)).await?;
    at_site.flush().await?;
    until_received(&hub, &subject::logs(&site), &mut logs).await;
    let list =
        || edge_bus::api::request::<_, BlockListReply>(&hub, ApiOp::BlockList, &Empty {}, Duration::from_secs(5));
    while list().await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await; // the scheduler is starting
    }

    // Before the block the site may renew its leaf credential; a key that is not the
    // credential's may not.
    let bundle = hub_server.authority().site(&site)?;
    let enrol =
        edge_bus::connect(&edge_bus::Endpoint::new(hub_server.url(), Some(bundle.enrol_creds.clone())), "t", false)
            .await?;
    let leaf = edge_auth::Creds::parse(&std::fs::read_to_string(&bundle.leaf_creds)?)?;
    let renew = |creds: edge_auth::Creds| {
        let (enrol, site) = (enrol.clone(), site.clone());
        async move {
            let at_ms = edge_bus::time::now_ms();
            let req = edge_types::site::LeafRenewal {
                site: site.clone(),
                jwt: leaf_jwt(&creds),
                at_ms,
                signature: edge_auth::leaf::sign_renewal(&creds, &site, at_ms).unwrap(),
            };
            edge_bus::api::request_as_site::<_, edge_types::site::LeafRenewed>(
                &enrol,
                ApiOp::SiteRenew,
                &site,
                &req,
                Duration::from_secs(5),
            )
            .await
        }
    };
    renew(leaf.clone()).await?;
    let other = hub_server.authority().site(&Name::new("shop-other")?)?;
    let other = edge_auth::Creds::parse(&std::fs::read_to_string(&other.leaf_creds)?)?;
    let thief = edge_auth::Creds { jwt: leaf.jwt.clone(), seed: other.seed };
    assert_eq!(support::refused_at(renew(thief).await), "/signature");
    // The enrolment credential opens nothing else.
    assert!(edge_bus::api::request::<_, BlockListReply>(&enrol, ApiOp::BlockList, &Empty {}, Duration::from_secs(2))
        .await
        .is_err());

    edgectl_site(&hub_server, "block", &site)?;
    // A blocked site renews nothing; the refusal is audited.
    assert_eq!(support::refused_at(renew(leaf.clone()).await), "/site");
    let refusal = edge_bus::topology::hub_js(&hub)
        .get_stream("AUDIT")
        .await?
        .get_last_raw_message_by_subject(&subject::audit_join(&site))
        .await?;
    let refusal: edge_types::join::JoinEvent = serde_json::from_slice(&refusal.payload)?;
    assert_eq!(refusal.action, edge_types::join::JoinAction::Refused);
    assert!(refusal.detail.as_deref().is_some_and(|d| d.contains("renewal") && d.contains("blocked")), "{refusal:?}");
    // The hub drops the link at once and refuses it on every redial (the leaf redials each
    // second): nothing crosses for several seconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while tokio::time::timeout(Duration::from_millis(50), logs.next()).await.is_ok() {}
    for _ in 0..8 {
        hub.publish(subject::logs(&site), "x".into()).await?;
        hub.flush().await?;
        silent(&mut logs, "a blocked site").await;
    }
    assert!(hub_server.log().contains("Credentials Revoked"), "the hub says why it dropped the site");
    // Each refused redial is audited, with the leaf link's key.
    let leaf_key = edge_auth::jwt::decode::<edge_auth::claims::User>(&leaf.jwt)?.sub;
    let audit_stream = edge_bus::topology::hub_js(&hub).get_stream("AUDIT").await?;
    audited_refusal(&audit_stream, |r| r.user.as_deref() == Some(leaf_key.as_str()) && r.kind == "leafnode").await?;
    // The site itself keeps working: its own server still serves its own clients.
    let mut local = at_site.subscribe("edge.v1.local.check").await?;
    at_site.publish("edge.v1.local.check", "x".into()).await?;
    receives(&mut local, "the site's own traffic while blocked").await;

    // Recorded where auditors look.
    let audit = edge_bus::topology::hub_js(&hub)
        .get_stream("AUDIT")
        .await?
        .get_last_raw_message_by_subject(&subject::audit_site(&site))
        .await?;
    let event: BlockEvent = serde_json::from_slice(&audit.payload)?;
    assert!(event.blocked && event.reason.as_deref() == Some("host stolen"), "{event:?}");
    // And the scheduler knows it: the site is listed as blocked.
    let blocks = list().await?;
    assert!(blocks.blocks.iter().any(|b| b.target == BlockTarget::Site { site: site.clone() }));

    edgectl_site(&hub_server, "unblock", &site)?;
    until_received(&hub, &subject::logs(&site), &mut logs).await;
    let blocks = list().await?;
    assert!(blocks.blocks.is_empty(), "{blocks:?}");
    Ok(())
}

#[tokio::test]
async fn leaf_links_are_tls_and_a_site_trusts_only_its_authoritys_hub() -> Result<()> {
    use tokio::io::AsyncReadExt;
    let hub = NatsServer::hub().await?;
    // The leafnode port demands TLS before anything else.
    let mut tcp = tokio::net::TcpStream::connect(hub.leaf_addr()).await?;
    let mut info = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut info)).await??;
    let info = String::from_utf8_lossy(&info[..n]);
    assert!(info.contains("\"tls_required\":true"), "{info}");

    // A site whose CA did not sign the hub's certificate (a hub impostor, as the site sees it)
    // never links up.
    let other = NatsServer::hub().await?;
    let foreign_ca = other.authority().site(&Name::new("elsewhere")?)?.ca;
    let site = Name::new("shop-e")?;
    let foreign = foreign_ca.display().to_string();
    let leaf = NatsServer::leaf_with(site.as_str(), Some(&hub), &hub.leaf_url(), &[("LEAF_TLS_CA", &foreign)]).await?;
    let hub_client = hub.connect().await?;
    let mut logs = leaf.connect().await?.subscribe(subject::logs(&site)).await?;
    for _ in 0..5 {
        hub_client.publish(subject::logs(&site), "x".into()).await?;
        hub_client.flush().await?;
        silent(&mut logs, "a site that cannot verify the hub").await;
    }
    assert!(leaf.log().contains("certificate"), "the leaf says why: {}", leaf.log());

    // With its own CA the same site links up.
    let trusted = NatsServer::leaf(site.as_str(), &hub).await?;
    let mut logs = trusted.connect().await?.subscribe(subject::logs(&site)).await?;
    until_received(&hub_client, &subject::logs(&site), &mut logs).await;
    Ok(())
}

/// Every file under `dir`, read whole.
fn files(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push(b);
        }
    }
}

#[tokio::test]
async fn a_sites_store_is_encrypted_at_rest() -> Result<()> {
    let hub = NatsServer::hub().await?;
    let site = Name::new("shop-f")?;
    let leaf = NatsServer::leaf(site.as_str(), &hub).await?;
    let js = async_nats::jetstream::with_domain(leaf.connect().await?, site.as_str());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "PROBE".into(),
        subjects: vec!["probe.>".into()],
        ..Default::default()
    })
    .await?;
    let marker = "plaintext-marker-7f3a9c";
    for i in 0..20 {
        js.publish(format!("probe.{i}"), format!("{marker} {i}").into()).await?.await?;
    }
    let mut all = Vec::new();
    files(&leaf.store_dir(), &mut all);
    let total: usize = all.iter().map(Vec::len).sum();
    assert!(total > 1000, "the store holds the messages ({total} bytes)");
    let leaked = all.iter().any(|f| f.windows(marker.len()).any(|w| w == marker.as_bytes()));
    assert!(!leaked, "a message is readable in the site's store files");
    // The site reads them back as usual.
    let msg = js.get_stream("PROBE").await?.get_last_raw_message_by_subject("probe.19").await?;
    assert_eq!(&msg.payload[..], format!("{marker} 19").as_bytes());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_credential_replaces_the_old_which_is_then_revoked() -> Result<()> {
    let hub = NatsServer::hub().await?;
    let path = hub.user_creds("probe")?;
    let connect = |creds: std::path::PathBuf| {
        let endpoint = edge_bus::Endpoint::new(hub.url(), Some(creds));
        async move { edge_bus::connect(&endpoint, "probe", false).await }
    };
    let old = tempfile::NamedTempFile::new()?;
    std::fs::copy(&path, old.path())?;

    // Rotated: the new credential is in the same file; the old one still works, so the service
    // can be restarted with the new one first.
    let rotated = support::edgectl(&hub, &["auth", "rotate", "probe"])?;
    assert_eq!(rotated.trim(), path.display().to_string());
    ensure!(std::fs::read(&path)? != std::fs::read(old.path())?, "a new credential");
    connect(path.clone()).await?;
    connect(old.path().to_path_buf()).await?;

    // Then the previous key is revoked at the hub.
    support::edgectl(&hub, &["auth", "rotate", "probe", "--revoke-previous"])?;
    assert!(connect(old.path().to_path_buf()).await.is_err(), "the previous credential is refused");
    connect(path).await?;
    Ok(())
}

/// Whether a core publish by `from` on `subject` reaches a subscriber of the hub. A marker
/// `from` publishes next proves the subscriptions are in place and that the publish, had it
/// been delivered, would have arrived first (one connection's messages keep their order).
async fn reaches(hub: &async_nats::Client, from: &async_nats::Client, subject: &str) -> Result<bool> {
    let marker = format!("_INBOX.mark.{}", edge_testkit::unique("m"));
    let mut sub = hub.subscribe(subject.to_string()).await?;
    let mut marks = hub.subscribe(marker.clone()).await?;
    hub.flush().await?;
    // Until the hub's interest is in place (subscriptions are processed asynchronously).
    until_received(from, &marker, &mut marks).await;
    from.publish(subject.to_string(), "x".into()).await?;
    from.publish(marker, "end".into()).await?;
    from.flush().await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), marks.next()).await {
            Ok(Some(m)) if m.payload.as_ref() == b"end" => break,
            Ok(Some(_)) => continue, // an earlier marker
            _ => anyhow::bail!("the marker never arrived"),
        }
    }
    Ok(matches!(tokio::time::timeout(Duration::from_millis(200), sub.next()).await, Ok(Some(_))))
}

#[tokio::test]
async fn each_central_service_is_denied_what_it_must_never_do() -> Result<()> {
    let hub_server = NatsServer::hub().await?;
    let hub = hub_server.connect().await?;
    let as_service = |name: &'static str| {
        let creds = hub_server.user_creds(name);
        let url = hub_server.url();
        async move { anyhow::Ok(edge_bus::connect(&edge_bus::Endpoint::new(url, Some(creds?)), name, false).await?) }
    };
    let (app, secret) = ("edge.v1.desired.00.shop-1.web", "edge.v1.desired.00.shop-1._secret.default.db");
    let (apps_kv, secrets_kv, alerts_kv) =
        ("$KV.edge_apps.app.web", "$KV.edge_secrets.default.db", "$KV.edge_alerts.x");

    // (service, what it may publish, what it may not)
    let cases: [(&str, &[&str], &[&str]); 4] = [
        ("scheduler", &[app, apps_kv], &[secret, secrets_kv]),
        ("secrets", &[secret, secrets_kv], &[app, apps_kv]),
        ("registry-sync", &[], &[app, secret, apps_kv, secrets_kv]),
        ("telemetry", &[alerts_kv], &[app, secret, apps_kv, secrets_kv]),
    ];
    for (name, allowed, denied) in cases {
        let client = as_service(name).await?;
        for subject in allowed {
            ensure!(reaches(&hub, &client, subject).await?, "{name} may publish {subject}");
        }
        for subject in denied {
            ensure!(!reaches(&hub, &client, subject).await?, "{name} must not publish {subject}");
        }
        // None deletes a stream.
        let delete = "$JS.hub.API.STREAM.DELETE.AUDIT";
        ensure!(!reaches(&hub, &client, delete).await?, "{name} must not delete streams");
    }
    // An operator's user may do all of it.
    let admin = hub_server.connect().await?;
    ensure!(reaches(&hub, &admin, app).await?, "an operator publishes {app}");
    ensure!(reaches(&hub, &admin, secret).await?, "an operator publishes {secret}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_refused_for_their_credentials_are_audited() -> Result<()> {
    let hub_server = NatsServer::hub().await?;
    let (scheduler, _running) = support::run_scheduler(&hub_server);
    let _stop = scheduler.drop_guard();
    let hub = hub_server.connect().await?;
    let js = edge_bus::topology::hub_js(&hub);
    // Until the scheduler follows the refusals (it ensures AUDIT first).
    let mut stream = None;
    for _ in 0..100 {
        if let Ok(s) = js.get_stream("AUDIT").await {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stream = stream.expect("AUDIT exists");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A site's own credential (its account exists only at its leaf server) tried at the hub.
    let site = Name::new("shop-x")?;
    let bundle = hub_server.authority().site(&site)?;
    let stolen = edge_auth::Creds::parse(&std::fs::read_to_string(&bundle.agent_creds)?)?;
    let key = edge_auth::jwt::decode::<edge_auth::claims::User>(&stolen.jwt)?.sub;
    let endpoint = edge_bus::Endpoint::new(hub_server.url(), Some(bundle.agent_creds.clone()));
    ensure!(edge_bus::connect(&endpoint, "thief", false).await.is_err(), "refused");

    audited_refusal(&stream, |r| r.user.as_deref() == Some(key.as_str()) && r.kind == "client").await
}

/// Waits until AUDIT holds a refused connection that `matches`.
async fn audited_refusal(
    stream: &async_nats::jetstream::stream::Stream,
    matches: impl Fn(&edge_types::join::AuthRefusal) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + support::TIMEOUT;
    loop {
        let info = stream.clone().get_info().await?;
        for seq in info.state.first_sequence..=info.state.last_sequence {
            let Ok(m) = stream.get_raw_message(seq).await else { continue };
            if m.subject.as_str().starts_with("edge.v1.audit.auth.") {
                let r: edge_types::join::AuthRefusal = serde_json::from_slice(&m.payload)?;
                if matches(&r) && !r.reason.is_empty() {
                    return Ok(());
                }
            }
        }
        ensure!(tokio::time::Instant::now() < deadline, "the refused connection was not audited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
