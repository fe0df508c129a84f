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
    let req = SiteJoin { site: site.clone(), token: token.into(), public_key, at_ms, signature };
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
    c.enrol_creds = Some(bundle.join("enrol.creds"));
    c.join_token = Some(bundle.join("token"));
    c.renew_check_secs = 1;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_site_joins_with_its_one_time_token_once_approved() -> Result<()> {
    let hub_server = NatsServer::hub().await?;
    let (scheduler, _running) = support::run_scheduler(&hub_server);
    let _stop = scheduler.drop_guard();
    let hub = hub_server.connect().await?;
    let invites = || request::<_, InvitationList>(&hub, ApiOp::SiteInvites, &Empty {}, Duration::from_secs(5));
    while invites().await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await; // the scheduler is starting
    }

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
    let enrol =
        edge_bus::connect(&edge_bus::Endpoint::new(hub_server.url(), Some(bundle.join("enrol.creds"))), "t", false)
            .await?;
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
