//! `edgectl site ...`: requests on `edge.v1.api.site.*`.

use anyhow::{bail, Result};
use edge_bus::api::request;
use edge_types::api::*;
use edge_types::site::{LabelValue, SiteRecord};
use edge_types::subject::ApiOp;
use edge_types::Name;

use edge_types::join::{Invitation, InvitationList, SiteInvite};

use crate::cli::{Global, SiteCommand};
use crate::output::{self, print};
use crate::{connect, REQUEST_TIMEOUT};

/// `0.1.0: 998, 0.2.0: 2`: how many sites run each site-manager version, most first.
fn per_version(r: &SiteListReply) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in &r.sites {
        *counts.entry(if s.agent_version.is_empty() { "unknown" } else { &s.agent_version }).or_default() += 1;
    }
    let mut counts: Vec<(&str, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts.iter().map(|(v, n)| format!("{v}: {n}")).collect::<Vec<_>>().join(", ")
}

pub async fn run(cmd: SiteCommand, global: &Global) -> Result<()> {
    match cmd {
        SiteCommand::List => {
            let client = connect(global).await?;
            let r: SiteListReply = request(&client, ApiOp::SiteList, &Empty {}, REQUEST_TIMEOUT).await?;
            let rows = r
                .sites
                .iter()
                .map(|s| {
                    let hosts: Vec<String> = s
                        .hosts
                        .iter()
                        .map(|h| {
                            let blocked = if s.blocked_hosts.contains(&h.host) {
                                " BLOCKED"
                            } else if s.duplicate_hosts.contains(&h.host) {
                                " DUPLICATE"
                            } else if s.unknown_hosts.contains(&h.host) {
                                " UNKNOWN"
                            } else {
                                ""
                            };
                            format!("{}({} {}cpu {}GiB{blocked})", h.host, h.arch, h.cpus, h.memory_bytes >> 30)
                        })
                        .collect();
                    let apps: Vec<&str> = s.apps.iter().map(|a| a.as_str()).collect();
                    vec![
                        s.site.to_string(),
                        s.agent_version.clone(),
                        match (s.blocked, s.connected) {
                            (true, _) => "blocked".into(),
                            (false, true) => "yes".into(),
                            (false, false) => "no".into(),
                        },
                        output::age(s.last_seen_ms),
                        s.buffer.as_ref().map(output::buffer).unwrap_or_else(|| "-".into()),
                        output::labels(&s.labels),
                        hosts.join(" "),
                        apps.join(","),
                    ]
                })
                .collect();
            let headers = ["SITE", "VERSION", "CONNECTED", "LAST SEEN", "BUFFER", "LABELS", "HOSTS", "APPS"];
            print(global.output, &r, &headers, rows);
            if global.output == crate::cli::Format::Table && !r.sites.is_empty() {
                println!("\nsites per version: {}", per_version(&r));
            }
        }
        SiteCommand::Add { site, join: false, .. } => crate::auth::site_add(&site, global)?,
        SiteCommand::Add { site, join: true, auto_approve, valid_hours } => {
            invite(global, &site, auto_approve, valid_hours).await?
        }
        SiteCommand::Approve { site } => {
            let req = edge_types::secret::SiteRef { site: crate::name("site", &site)? };
            let client = connect(global).await?;
            let r: Invitation = request(&client, ApiOp::SiteApprove, &req, REQUEST_TIMEOUT).await?;
            print(global.output, &r, &["SITE", "APPROVED", "JOINED"], vec![invitation_row(&r)[..3].to_vec()]);
        }
        SiteCommand::Invites => {
            let client = connect(global).await?;
            let r: InvitationList = request(&client, ApiOp::SiteInvites, &Empty {}, REQUEST_TIMEOUT).await?;
            let rows = r.invitations.iter().map(invitation_row).collect();
            print(global.output, &r, &["SITE", "APPROVED", "JOINED", "EXPIRES", "REFUSED"], rows);
        }
        SiteCommand::Renew { site, valid_days } => {
            let site = crate::name("site", &site)?;
            let valid = std::time::Duration::from_secs(valid_days.max(1) * 24 * 3600);
            let path = crate::auth::open(&global.auth_dir())?.renew_leaf(&site, valid)?;
            println!("{}", path.display());
        }
        SiteCommand::Block { site, reason } => crate::block::site(global, &site, true, reason).await?,
        SiteCommand::Unblock { site, reason } => crate::block::site(global, &site, false, reason).await?,
        SiteCommand::RotateKey { site } => {
            let req = edge_types::secret::SiteRef {
                site: Name::new(&site).map_err(|e| anyhow::anyhow!("site {site:?}: {e}"))?,
            };
            let client = connect(global).await?;
            let r: edge_types::secret::SiteRekey =
                request(&client, ApiOp::SiteRotateKey, &req, REQUEST_TIMEOUT).await?;
            print(global.output, &r, &["SITE", "ROTATION REQUESTED"], vec![vec![r.site.to_string(), "yes".into()]]);
        }
        SiteCommand::Label { site, labels } => {
            let mut req = SiteLabelRequest {
                site: Name::new(&site).map_err(|e| anyhow::anyhow!("site {site:?}: {e}"))?,
                set: Default::default(),
                remove: Vec::new(),
            };
            for l in labels {
                if let Some((k, v)) = l.split_once('=') {
                    req.set.insert(k.to_string(), LabelValue(v.to_string()));
                } else if let Some(k) = l.strip_suffix('-') {
                    req.remove.push(k.to_string());
                } else {
                    bail!("label {l:?} must be key=value to set or key- to remove");
                }
            }
            let client = connect(global).await?;
            let r: SiteRecord = request(&client, ApiOp::SiteLabel, &req, REQUEST_TIMEOUT).await?;
            print(
                global.output,
                &r,
                &["SITE", "LABELS"],
                vec![vec![r.site.to_string(), output::labels(&r.effective_labels())]],
            );
        }
    }
    Ok(())
}

/// `edgectl site add SITE --join`: the bundle without a leaf credential, with a one-time
/// token whose digest the scheduler is given.
async fn invite(global: &Global, site: &str, auto_approve: bool, valid_hours: u64) -> Result<()> {
    let site = crate::name("site", site)?;
    let authority = crate::auth::open(&global.auth_dir())?;
    let (bundle, token) = authority.site_to_join(&site)?;
    let req = SiteInvite {
        site,
        host: None,
        token_sha256: edge_auth::leaf::token_digest(&token),
        expires_at_ms: edge_bus::time::now_ms() + valid_hours.max(1) * 3600 * 1000,
        auto_approve,
        account: authority.control_account(),
        actor: Some(crate::auth::actor()),
    };
    let client = connect(global).await?;
    let _: Invitation = request(&client, ApiOp::SiteInvite, &req, REQUEST_TIMEOUT).await?;
    println!("{}", bundle.dir.display());
    Ok(())
}

/// `edgectl host invite SITE HOST`: the host's token (and enrolment credential) in its own
/// directory; the scheduler is given the token's digest.
pub async fn invite_host(global: &Global, site: &str, host: &str, auto_approve: bool, valid_hours: u64) -> Result<()> {
    let (site, host) = (crate::name("site", site)?, crate::name("host", host)?);
    let authority = crate::auth::open(&global.auth_dir())?;
    let (dir, token, account) = authority.host_to_join(&site, &host)?;
    let req = SiteInvite {
        site,
        host: Some(host),
        token_sha256: edge_auth::leaf::token_digest(&token),
        expires_at_ms: edge_bus::time::now_ms() + valid_hours.max(1) * 3600 * 1000,
        auto_approve,
        account,
        actor: Some(crate::auth::actor()),
    };
    let client = connect(global).await?;
    let _: Invitation = request(&client, ApiOp::SiteInvite, &req, REQUEST_TIMEOUT).await?;
    println!("{}", dir.display());
    Ok(())
}

fn invitation_row(r: &Invitation) -> Vec<String> {
    let joined =
        r.joined_key.as_deref().map(|k| format!("yes ({}...)", &k[..k.len().min(12)])).unwrap_or_else(|| "no".into());
    let who = match &r.invite.host {
        None => r.invite.site.to_string(),
        Some(h) => format!("{}/{h}", r.invite.site),
    };
    vec![
        who,
        if r.approved || r.invite.auto_approve { "yes".into() } else { "no".into() },
        joined,
        match r.invite.expires_at_ms.checked_sub(edge_bus::time::now_ms()) {
            _ if r.joined_key.is_some() => "-".into(),
            Some(left) => format!("in {}h", left / 3_600_000),
            None => "expired".into(),
        },
        r.refused.to_string(),
    ]
}
