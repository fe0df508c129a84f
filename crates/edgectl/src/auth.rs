//! `edgectl auth ...` and `edgectl site add`: the authority's keys and the credentials it issues.

use std::path::PathBuf;

use anyhow::{Context, Result};
use edge_auth::Authority;
use edge_types::Name;

use crate::cli::{AuthCommand, Global};

pub async fn run(cmd: AuthCommand, global: &Global) -> Result<()> {
    let dir = global.auth_dir();
    match cmd {
        AuthCommand::Init => {
            let mut a = Authority::init(&dir).with_context(|| format!("making the authority in {}", dir.display()))?;
            // An authority made by an older version gains what this one needs (the enrolment
            // account for renewals); its hub reads it from hub-auth.conf at its next start.
            a.ensure_enrolment()?;
            a.control_user(&Name::new("admin")?)?;
            println!("operator {}", a.operator_public_key());
            println!("hub trust: {}", a.hub_auth_conf().display());
        }
        AuthCommand::Tls { names } => {
            let (cert, key) = open(&dir)?.hub_tls(&names)?;
            println!("{}\n{}", cert.display(), key.display());
        }
        AuthCommand::Rotate { name, revoke_previous: false } => {
            let name = crate::name("user", &name)?;
            println!("{}", open(&dir)?.rotate_control_user(&name)?.display());
        }
        AuthCommand::Rotate { name, revoke_previous: true } => {
            let name = crate::name("user", &name)?;
            let mut authority = open(&dir)?;
            let jwt = authority.revoke_previous_control_user(&name)?;
            let system = crate::connect_as(global, Some(authority.system_user()?)).await?;
            edge_bus::claims::push_account_jwt(&system, &jwt).await?;
            println!("the previous credential of {name} is revoked at the hub");
        }
        AuthCommand::User { name } => {
            let name = Name::new(&name).map_err(|e| anyhow::anyhow!("user {name:?}: {e}"))?;
            println!("{}", open(&dir)?.control_user(&name)?.display());
        }
    }
    Ok(())
}

/// `edgectl site add SITE`: prints the site's bundle directory.
pub fn site_add(site: &str, global: &Global) -> Result<()> {
    let site = Name::new(site).map_err(|e| anyhow::anyhow!("site {site:?}: {e}"))?;
    let bundle = open(&global.auth_dir())?.site(&site)?;
    println!("{}", bundle.dir.display());
    Ok(())
}

/// Who runs the command, for audit records.
pub fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let mut a = format!("edgectl/{user}");
    a.truncate(128);
    a
}

pub(crate) fn open(dir: &std::path::Path) -> Result<Authority> {
    Authority::open(dir).with_context(|| format!("no authority in {} (run `edgectl auth init`)", dir.display()))
}

/// The credentials the CLI connects with: `--creds`, else the authority's `admin` user.
pub fn client_creds(global: &Global) -> Option<PathBuf> {
    if let Some(c) = &global.creds {
        return Some(c.clone());
    }
    let admin = global.auth_dir().join("creds").join("admin.creds");
    admin.exists().then_some(admin)
}
