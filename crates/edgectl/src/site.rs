//! `edgectl site ...`: requests on `edge.v1.api.site.*`.

use anyhow::{bail, Result};
use edge_bus::api::request;
use edge_types::api::*;
use edge_types::site::{LabelValue, SiteRecord};
use edge_types::subject::ApiOp;
use edge_types::Name;

use crate::cli::{Global, SiteCommand};
use crate::output::{self, print};
use crate::{connect, REQUEST_TIMEOUT};

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
                            let blocked = if s.blocked_hosts.contains(&h.host) { " BLOCKED" } else { "" };
                            format!("{}({} {}cpu {}GiB{blocked})", h.host, h.arch, h.cpus, h.memory_bytes >> 30)
                        })
                        .collect();
                    let apps: Vec<&str> = s.apps.iter().map(|a| a.as_str()).collect();
                    vec![
                        s.site.to_string(),
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
            print(global.output, &r, &["SITE", "CONNECTED", "LAST SEEN", "BUFFER", "LABELS", "HOSTS", "APPS"], rows);
        }
        SiteCommand::Add { site } => crate::auth::site_add(&site, global)?,
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
