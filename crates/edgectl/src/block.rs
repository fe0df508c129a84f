//! `edgectl tenant ...`, `edgectl host block|unblock`, `edgectl site block|unblock` and
//! `edgectl block list`: credentials revoked by the authority (given to the hub's resolver),
//! the rest enforced and audited by the scheduler (`edge.v1.api.block.set`).

use anyhow::{Context, Result};
use edge_auth::Authority;
use edge_bus::api::request;
use edge_types::api::Empty;
use edge_types::block::{
    BlockEvent, BlockListReply, BlockRequest, BlockTarget, SiteHosts, SiteHostsChange, TenantSites,
};
use edge_types::join::InvitationList;
use edge_types::subject::ApiOp;
use edge_types::Name;

use crate::cli::{BlockCommand, Global, HostCommand, TenantCommand};
use crate::output::print;
use crate::{connect, connect_as, name, REQUEST_TIMEOUT};

fn open(global: &Global) -> Result<Authority> {
    crate::auth::open(&global.auth_dir())
}

/// Gives the hub's resolver re-signed account JWTs, as the authority's system user.
async fn push(global: &Global, authority: &Authority, jwts: &[String]) -> Result<()> {
    let system = connect_as(global, Some(authority.system_user()?)).await?;
    for jwt in jwts {
        edge_bus::claims::push_account_jwt(&system, jwt).await?;
    }
    Ok(())
}

pub async fn tenant(cmd: TenantCommand, global: &Global) -> Result<()> {
    match cmd {
        TenantCommand::Add { tenant } => {
            let tenant = name("tenant", &tenant)?;
            let mut authority = open(global)?;
            let jwts = authority.tenant(&tenant)?;
            push(global, &authority, &jwts).await.context("giving the hub the tenant's account")?;
            println!("{}", authority.tenant_user(&tenant, &Name::new("admin")?)?.display());
        }
        TenantCommand::User { tenant, name: user } => {
            let path = open(global)?.tenant_user(&name("tenant", &tenant)?, &name("user", &user)?)?;
            println!("{}", path.display());
        }
        TenantCommand::List => {
            let tenants = open(global)?.tenants()?;
            let rows = tenants.iter().map(|t| vec![t.to_string()]).collect();
            print(global.output, &tenants, &["TENANT"], rows);
        }
        TenantCommand::Sites { tenant, selector } => {
            let req = TenantSites { tenant: name("tenant", &tenant)?, sites: selector };
            let client = connect(global).await?;
            let r: TenantSites = request(&client, ApiOp::TenantSites, &req, REQUEST_TIMEOUT).await?;
            let sites = if r.sites.trim().is_empty() { "any".to_string() } else { r.sites.clone() };
            print(global.output, &r, &["TENANT", "SITES"], vec![vec![r.tenant.to_string(), sites]]);
        }
        TenantCommand::Block { tenant, reason } => block_tenant(global, &tenant, true, reason).await?,
        TenantCommand::Unblock { tenant, reason } => block_tenant(global, &tenant, false, reason).await?,
    }
    Ok(())
}

async fn block_tenant(global: &Global, tenant: &str, blocked: bool, reason: Option<String>) -> Result<()> {
    let tenant = name("tenant", tenant)?;
    let mut authority = open(global)?;
    let jwt = authority.set_tenant_revoked(&tenant, blocked)?;
    push(global, &authority, &[jwt]).await?;
    set(global, BlockTarget::Tenant { tenant }, blocked, reason, None).await
}

/// `edgectl site block|unblock SITE`: revokes (or reinstates) the site's leaf link at the hub,
/// then has the scheduler record and enforce it.
pub async fn site(global: &Global, site: &str, blocked: bool, reason: Option<String>) -> Result<()> {
    let site = name("site", site)?;
    let mut authority = open(global)?;
    let key = match authority.site_leaf_user(&site) {
        Ok(key) => key,
        // A site that joined by call-home: its key is the one its invitation recorded.
        Err(_) => joined_key(global, &site, None)
            .await?
            .with_context(|| format!("site {site} has no bundle here and has not joined"))?,
    };
    let jwt = authority.set_user_revoked(&key, blocked)?;
    push(global, &authority, &[jwt]).await?;
    set(global, BlockTarget::Site { site }, blocked, reason, None).await
}

/// The key `site` (its leaf link) or its `host` joined with, from the scheduler's invitations.
async fn joined_key(global: &Global, site: &Name, host: Option<&Name>) -> Result<Option<String>> {
    let client = connect(global).await?;
    let list: InvitationList = request(&client, ApiOp::SiteInvites, &Empty {}, REQUEST_TIMEOUT).await?;
    Ok(list
        .invitations
        .into_iter()
        .find(|i| &i.invite.site == site && i.invite.host.as_ref() == host)
        .and_then(|i| i.joined_key))
}

pub async fn host(cmd: HostCommand, global: &Global) -> Result<()> {
    let (site, host, blocked, reason) = match cmd {
        HostCommand::Block { site, host, reason } => (site, host, true, reason),
        HostCommand::Unblock { site, host, reason } => (site, host, false, reason),
        HostCommand::Approve { site, hosts } => return site_hosts(global, &site, hosts, Vec::new(), false).await,
        HostCommand::Remove { site, hosts } => return site_hosts(global, &site, Vec::new(), hosts, false).await,
        HostCommand::Any { site } => return site_hosts(global, &site, Vec::new(), Vec::new(), true).await,
        HostCommand::Invite { site, host, auto_approve, valid_hours } => {
            return crate::site::invite_host(global, &site, &host, auto_approve, valid_hours).await
        }
    };
    let (site, host) = (name("site", &site)?, name("host", &host)?);
    // A host that joined with its own key: its credential is revoked (or reinstated) in the
    // site's account, which reaches the site's leaf server with the host policy. A host on the
    // site's shared credential has nothing of its own to revoke.
    let account_jwt = match joined_key(global, &site, Some(&host)).await? {
        Some(key) => Some(open(global)?.set_site_user_revoked(&site, &key, blocked)?),
        None => None,
    };
    set(global, BlockTarget::Host { site, host }, blocked, reason, account_jwt).await
}

pub async fn list(cmd: BlockCommand, global: &Global) -> Result<()> {
    let BlockCommand::List = cmd;
    let client = connect(global).await?;
    let r: BlockListReply = request(&client, ApiOp::BlockList, &Empty {}, REQUEST_TIMEOUT).await?;
    let rows = r
        .blocks
        .iter()
        .map(|b| {
            vec![
                b.target.to_string(),
                crate::output::age(b.at_ms),
                b.actor.clone(),
                b.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print(global.output, &r, &["BLOCKED", "SINCE", "BY", "REASON"], rows);
    Ok(())
}

/// `site.hosts` at the scheduler: approve or remove hosts, or admit any.
async fn site_hosts(global: &Global, site: &str, approve: Vec<String>, remove: Vec<String>, any: bool) -> Result<()> {
    let names = |v: Vec<String>| v.iter().map(|h| name("host", h)).collect::<Result<Vec<_>>>();
    let req = SiteHostsChange {
        site: name("site", site)?,
        approve: names(approve)?,
        remove: names(remove)?,
        any,
        actor: Some(crate::auth::actor()),
    };
    let client = connect(global).await?;
    let r: SiteHosts = request(&client, ApiOp::SiteHosts, &req, REQUEST_TIMEOUT).await?;
    let approved = match &r.allowed {
        None => "any".to_string(),
        Some(a) => a.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(","),
    };
    print(global.output, &r, &["SITE", "APPROVED HOSTS"], vec![vec![r.site.to_string(), approved]]);
    Ok(())
}

/// `block.set` at the scheduler, which enforces the block and records it in AUDIT.
async fn set(
    global: &Global,
    target: BlockTarget,
    blocked: bool,
    reason: Option<String>,
    account_jwt: Option<String>,
) -> Result<()> {
    anyhow::ensure!(reason.as_ref().is_none_or(|r| r.len() <= 256), "--reason: at most 256 bytes");
    let req = BlockRequest { target, blocked, reason, actor: Some(crate::auth::actor()), account_jwt };
    let client = connect(global).await?;
    let r: BlockEvent = request(&client, ApiOp::BlockSet, &req, REQUEST_TIMEOUT).await?;
    let state = if r.blocked { "blocked" } else { "unblocked" };
    let apps: Vec<&str> = r.apps.iter().map(|a| a.as_str()).collect();
    print(
        global.output,
        &r,
        &["TARGET", "STATE", "APPS"],
        vec![vec![r.target.to_string(), state.into(), apps.join(",")]],
    );
    Ok(())
}
