//! Onboarding by call-home: a site invited with a one-time token (`edgectl site add --join`)
//! makes its own leaf-link key at first boot, presents the token through the shared enrolment
//! account, and links to the hub once an operator approves it; a replayed or wrong token is
//! refused and audited. Real hub and leaf servers with decentralized auth, the real scheduler
//! and site-manager, and `edgectl` as an operator runs it.

mod support;

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use edge_bus::api::{request, request_as_site, RequestError};
use edge_testkit::NatsServer;
use edge_types::api::{Empty, SiteListReply};
use edge_types::join::{InvitationList, JoinAction, JoinEvent, SiteJoin, SiteJoined};
use edge_types::subject::ApiOp;
use edge_types::Name;
use tokio_util::sync::CancellationToken;

async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + support::TIMEOUT;
    loop {
        if check().await.unwrap_or(false) {
            return Ok(());
        }
        ensure!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A join of `site` with `token` by a key of its own (not the site's).
async fn join_as_stranger(enrol: &async_nats::Client, site: &Name, token: &str) -> Result<SiteJoined, RequestError> {
    let seed = edge_auth::leaf::new_key_seed().unwrap();
    let at_ms = edge_bus::time::now_ms();
    let (public_key, signature) = edge_auth::leaf::sign_join(&seed, site, at_ms).unwrap();
    let req = SiteJoin { site: site.clone(), host: None, token: token.into(), public_key, at_ms, signature };
    request_as_site(enrol, ApiOp::SiteJoin, site, &req, Duration::from_secs(5)).await
}

fn site_manager(site: &Name, leaf: &NatsServer, bundle: &Path, hub: &NatsServer, dir: &Path) -> site_manager::Config {
    let mut c = site_manager::Config::new(site.clone(), leaf.url());
    c.nats_creds = Some(leaf.creds().to_path_buf());
    c.host = Some(Name::new("host-1").unwrap());
    c.heartbeat_secs = 1;
    c.key_dir = dir.join("keys");
    c.secrets_dir = std::path::PathBuf::from(format!("/dev/shm/{}", edge_testkit::unique("edge-join-secrets")));
    c.leaf_creds = Some(bundle.join("leaf.creds"));
    c.hub_url = Some(hub.url());
    // Across the WAN, over TLS verified with the bundle's CA.
    c.hub_ca = Some(bundle.join("ca.pem"));
    c.enrol_creds = Some(bundle.join("enrol.creds"));
    c.join_token = Some(bundle.join("token"));
    c.renew_check_secs = 1;
    c
}

/// A hub with the scheduler answering, and an operator's client.
async fn hub_with_scheduler() -> Result<(NatsServer, async_nats::Client, tokio_util::sync::DropGuard)> {
    let hub_server = NatsServer::hub().await?;
    let (scheduler, _running) = support::run_scheduler(&hub_server);
    let hub = hub_server.connect().await?;
    while request::<_, InvitationList>(&hub, ApiOp::SiteInvites, &Empty {}, Duration::from_secs(5)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await; // the scheduler is starting
    }
    Ok((hub_server, hub, scheduler.drop_guard()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_site_joins_with_its_one_time_token_once_approved() -> Result<()> {
    let (hub_server, hub, _stop) = hub_with_scheduler().await?;
    let invites = || request::<_, InvitationList>(&hub, ApiOp::SiteInvites, &Empty {}, Duration::from_secs(5));

    // The operator invites the site: its bundle has a token and no leaf-link credential.
    let site = Name::new(edge_testkit::unique("join"))?;
    let bundle =
        std::path::PathBuf::from(support::edgectl(&hub_server, &["site", "add", site.as_str(), "--join"])?.trim());
    ensure!(!bundle.join("leaf.creds").exists() && bundle.join("token").exists());
    let token = std::fs::read_to_string(bundle.join("token"))?;

    // First boot: the leaf server runs on its own, the site-manager joins and waits.
    let leaf = NatsServer::leaf(site.as_str(), &hub_server).await?;
    let dir = tempfile::tempdir()?;
    let manager = CancellationToken::new();
    let config = site_manager(&site, &leaf, &bundle, &hub_server, dir.path());
    let run = tokio::spawn(site_manager::run(config, manager.clone()));
    let _stop_manager = manager.clone().drop_guard();
    eventually("the site joined and awaits approval", || async {
        let list = invites().await?;
        Ok(list.invitations.iter().any(|i| i.invite.site == site && i.joined_key.is_some() && !i.approved))
    })
    .await?;
    let joined_key = invites().await?.invitations.into_iter().find(|i| i.invite.site == site).unwrap().joined_key;
    ensure!(!bundle.join("leaf.creds").exists(), "no credential before approval");

    // The token is spent: another key presenting it is refused, and so is a wrong token.
    let over_wan = |ca: std::path::PathBuf| {
        edge_bus::Endpoint::new(hub_server.url(), Some(bundle.join("enrol.creds"))).with_tls_ca(Some(ca))
    };
    let enrol = edge_bus::connect(&over_wan(bundle.join("ca.pem")), "t", false).await?;
    // The hub's client port offers TLS: a site verifies it with its bundle's CA, and an
    // impostor's certificate (another authority's CA) is refused.
    let impostor = tempfile::tempdir()?;
    edge_auth::Authority::init(impostor.path())?;
    ensure!(
        edge_bus::connect(&over_wan(impostor.path().join("tls/ca.pem")), "t", false).await.is_err(),
        "a certificate of another CA is refused"
    );
    assert_eq!(support::refused_at(join_as_stranger(&enrol, &site, token.trim()).await), "/token");
    assert_eq!(support::refused_at(join_as_stranger(&enrol, &site, "AAAAAAAAAAAAAAAAAAAAAAAA").await), "/token");
    let uninvited = Name::new(edge_testkit::unique("nobody"))?;
    assert_eq!(support::refused_at(join_as_stranger(&enrol, &uninvited, token.trim()).await), "/site");

    // Approved: the site receives its credential, links and calls home.
    support::edgectl(&hub_server, &["site", "approve", site.as_str()])?;
    eventually("the approved site links and registers", || async {
        let sites: SiteListReply = request(&hub, ApiOp::SiteList, &Empty {}, Duration::from_secs(5)).await?;
        Ok(sites.sites.iter().any(|s| s.site == site && s.connected))
    })
    .await?;
    let creds = edge_auth::Creds::parse(&std::fs::read_to_string(bundle.join("leaf.creds"))?)?;
    let claims: edge_auth::jwt::Claims<edge_auth::claims::User> = edge_auth::jwt::decode(&creds.jwt)?;
    assert_eq!(Some(claims.sub), joined_key, "the credential is for the key the site made");
    ensure!(!bundle.join("token").exists(), "the spent token is removed from the site");

    // A joined site is blocked in one step too (its key is the one it joined with).
    support::edgectl(&hub_server, &["site", "block", site.as_str(), "--reason", "test"])?;
    eventually("the blocked site is cut off", || async {
        let sites: SiteListReply = request(&hub, ApiOp::SiteList, &Empty {}, Duration::from_secs(5)).await?;
        Ok(sites.sites.iter().any(|s| s.site == site && s.blocked && !s.connected))
    })
    .await?;
    ensure!(hub_server.log().contains("Credentials Revoked"), "the hub dropped the link for the revocation");

    // Every step is in the audit trail.
    let js = edge_bus::topology::hub_js(&hub);
    let stream = js.get_stream("AUDIT").await?;
    let info = stream.get_info().await?;
    let mut actions = Vec::new();
    for seq in 1..=info.state.last_sequence {
        let Ok(msg) = stream.get_raw_message(seq).await else { continue };
        if msg.subject.as_str() == edge_types::subject::audit_join(&site) {
            actions.push(serde_json::from_slice::<JoinEvent>(&msg.payload)?.action);
        }
    }
    for want in [JoinAction::Invited, JoinAction::Joined, JoinAction::Refused, JoinAction::Approved] {
        ensure!(actions.contains(&want), "{want:?} not audited: {actions:?}");
    }
    manager.cancel();
    let _ = run.await;
    Ok(())
}

/// A host's join with `token` by a key of its own (not the invited host's).
async fn host_join_as_stranger(
    enrol: &async_nats::Client,
    site: &Name,
    host: &Name,
    token: &str,
) -> Result<SiteJoined, RequestError> {
    let seed = edge_auth::leaf::new_key_seed().unwrap();
    let at_ms = edge_bus::time::now_ms();
    let (public_key, signature) = edge_auth::host::sign_join(&seed, site, host, at_ms).unwrap();
    let req =
        SiteJoin { site: site.clone(), host: Some(host.clone()), token: token.into(), public_key, at_ms, signature };
    request_as_site(enrol, ApiOp::SiteJoin, site, &req, Duration::from_secs(5)).await
}

/// Whether a client can open a session at `server` with `creds`.
async fn connects(server: &NatsServer, creds: &Path) -> bool {
    let opts = async_nats::ConnectOptions::with_credentials_file(creds).await.expect("creds file");
    match tokio::time::timeout(Duration::from_secs(5), opts.max_reconnects(1).connect(server.url())).await {
        Ok(Ok(c)) => {
            // Authorization errors arrive after the handshake: a round trip shows them.
            c.flush().await.is_ok() && c.connection_state() == async_nats::connection::State::Connected
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_joins_with_its_own_key_and_blocking_it_revokes_that_key_at_the_site() -> Result<()> {
    let (hub_server, hub, _stop) = hub_with_scheduler().await?;
    let invites = || request::<_, InvitationList>(&hub, ApiOp::SiteInvites, &Empty {}, Duration::from_secs(5));

    // A running site: its first host on the site's shared credential, with the site's system
    // user (it gives the leaf server the site account's revocations when it leads).
    let site = Name::new(edge_testkit::unique("hostjoin"))?;
    let leaf = NatsServer::leaf(site.as_str(), &hub_server).await?;
    let bundle = hub_server.authority().site(&site)?;
    let dir = tempfile::tempdir()?;
    let manager = CancellationToken::new();
    let _stop_manager = manager.clone().drop_guard();
    let mut first = site_manager(&site, &leaf, &bundle.dir, &hub_server, &dir.path().join("h1"));
    first.join_token = None;
    first.sys_creds = Some(bundle.sys_creds.clone());
    let run1 = tokio::spawn(site_manager::run(first, manager.clone()));

    // The site's system user opens nothing at the hub.
    ensure!(!connects(&hub_server, &bundle.sys_creds).await, "a site's system user is refused at the hub");

    // The operator invites host-2: a directory with its one-time token.
    let host = Name::new("host-2")?;
    let host_dir =
        std::path::PathBuf::from(support::edgectl(&hub_server, &["host", "invite", site.as_str(), "host-2"])?.trim());
    let token = std::fs::read_to_string(host_dir.join("token"))?;
    let host_creds = dir.path().join("h2").join("host.creds");
    std::fs::create_dir_all(host_creds.parent().unwrap())?;
    let mut second = site_manager(&site, &leaf, &bundle.dir, &hub_server, &dir.path().join("h2"));
    second.host = Some(host.clone());
    second.nats_creds = Some(host_creds.clone());
    second.host_token = Some(host_dir.join("token"));
    second.enrol_creds = Some(host_dir.join("enrol.creds"));
    second.join_token = None;
    second.leaf_creds = None;
    second.sys_creds = Some(bundle.sys_creds.clone());
    let run2 = tokio::spawn(site_manager::run(second, manager.clone()));
    let invitation = |list: &InvitationList| {
        list.invitations.iter().find(|i| i.invite.site == site && i.invite.host.as_ref() == Some(&host)).cloned()
    };
    eventually("host-2 joined and awaits approval", || async {
        Ok(invitation(&invites().await?).is_some_and(|i| i.joined_key.is_some() && !i.approved))
    })
    .await?;
    ensure!(!host_creds.exists(), "no credential before approval");

    // The token is spent on host-2's key: another key presenting it is refused.
    let enrol =
        edge_bus::connect(&edge_bus::Endpoint::new(hub_server.url(), Some(host_dir.join("enrol.creds"))), "t", false)
            .await?;
    assert_eq!(support::refused_at(host_join_as_stranger(&enrol, &site, &host, token.trim()).await), "/token");
    let other = Name::new("host-9")?;
    assert_eq!(support::refused_at(host_join_as_stranger(&enrol, &site, &other, token.trim()).await), "/host");

    // Approved (with host-1, so the site's list has both): host-2 gets its own credential and runs.
    support::edgectl(&hub_server, &["host", "approve", site.as_str(), "host-1", "host-2"])?;
    eventually("host-2 runs at the site", || async {
        let sites: SiteListReply = request(&hub, ApiOp::SiteList, &Empty {}, Duration::from_secs(5)).await?;
        Ok(sites.sites.iter().any(|s| s.site == site && s.hosts.iter().any(|h| h.host == host)))
    })
    .await?;
    let creds = edge_auth::Creds::parse(&std::fs::read_to_string(&host_creds)?)?;
    let claims: edge_auth::jwt::Claims<edge_auth::claims::User> = edge_auth::jwt::decode(&creds.jwt)?;
    let joined_key = invitation(&invites().await?).and_then(|i| i.joined_key);
    assert_eq!(Some(claims.sub), joined_key, "the credential is for the key host-2 made");
    assert_eq!(claims.nats.issuer_account, hub_server.authority().site_account(&site)?, "in the site's account");
    ensure!(!host_dir.join("token").exists() || !dir.path().join("h2/host.seed").exists(), "spent");
    ensure!(connects(&leaf, &host_creds).await, "host-2's credential opens the site's leaf server");

    // Blocked: its credential is revoked at the site's leaf server (the first host's is not).
    support::edgectl(&hub_server, &["host", "block", site.as_str(), "host-2", "--reason", "stolen"])?;
    eventually("host-2's credential is refused at the site", || async { Ok(!connects(&leaf, &host_creds).await) })
        .await?;
    ensure!(connects(&leaf, &bundle.agent_creds).await, "the site's other hosts still connect");
    // Unblocked: reinstated.
    support::edgectl(&hub_server, &["host", "unblock", site.as_str(), "host-2"])?;
    eventually("host-2's credential works again", || async { Ok(connects(&leaf, &host_creds).await) }).await?;

    manager.cancel();
    let _ = run1.await;
    let _ = run2.await;
    Ok(())
}

/// The JWT of a credentials file.
fn jwt_of(path: &Path) -> Result<edge_auth::jwt::Claims<edge_auth::claims::User>> {
    Ok(edge_auth::jwt::decode(&edge_auth::Creds::parse(&std::fs::read_to_string(path)?)?.jwt)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renew_only_sidecar_keeps_a_writable_copy_of_the_secrets_credential_valid() -> Result<()> {
    let (hub_server, _hub, _stop) = hub_with_scheduler().await?;
    // A site as Kubernetes runs it: the bundle is a read-only Secret whose leaf credential
    // ends in seconds; the leaf server reads a copy in its pod's volume.
    let site = Name::new(edge_testkit::unique("sidecar"))?;
    let bundle = hub_server.authority().site(&site)?;
    hub_server.authority().renew_leaf(&site, Duration::from_secs(4))?;
    let first = jwt_of(&bundle.leaf_creds)?;
    let volume = tempfile::tempdir()?;
    let copy = volume.path().join("leaf.creds");
    let mut c = site_manager::Config::new(site.clone(), "nats://127.0.0.1:1");
    c.renew_only = true;
    c.leaf_creds = Some(copy.clone());
    c.leaf_creds_from = Some(bundle.leaf_creds.clone());
    c.hub_url = Some(hub_server.url());
    c.hub_ca = Some(bundle.ca.clone());
    c.enrol_creds = Some(bundle.enrol_creds.clone());
    c.renew_check_secs = 1;
    let sidecar = CancellationToken::new();
    let run = tokio::spawn(site_manager::run(c, sidecar.clone()));
    let _stop_sidecar = sidecar.clone().drop_guard();

    // It takes the Secret's credential and renews it before it ends (for an hour, the
    // scheduler's validity here), in the copy; the Secret stays as it was.
    eventually("the copy is renewed", || async {
        Ok(jwt_of(&copy).is_ok_and(|c| c.sub == first.sub && c.exp > first.exp.map(|e| e + 600)))
    })
    .await?;
    assert_eq!(jwt_of(&bundle.leaf_creds)?.exp, first.exp, "the read-only copy is untouched");

    // An operator's re-issue into the Secret (newer) replaces the copy.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    hub_server.authority().renew_leaf(&site, Duration::from_secs(7200))?;
    let manual = jwt_of(&bundle.leaf_creds)?;
    eventually("the copy takes the operator's newer credential", || async {
        Ok(jwt_of(&copy).is_ok_and(|c| c.iat == manual.iat && c.exp == manual.exp))
    })
    .await?;
    sidecar.cancel();
    run.await??;
    Ok(())
}
