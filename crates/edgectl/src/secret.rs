//! `edgectl secret ...`: requests on `edge.v1.api.secret.*`. A value is read from a file or
//! standard input, never from the command line (which other users can see in process lists),
//! and never printed.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use edge_bus::api::request;
use edge_types::secret::*;
use edge_types::subject::ApiOp;
use edge_types::Name;

use crate::cli::{Global, SecretCommand};
use crate::output::{self, print};
use crate::{connect, REQUEST_TIMEOUT};

use crate::name;

fn tenant(t: &Option<String>) -> Result<Name> {
    name("tenant", t.as_deref().unwrap_or(DEFAULT_TENANT))
}

use crate::auth::actor;

/// The value: the file's bytes as they are, or standard input without one trailing newline.
fn read_value(file: &Option<PathBuf>) -> Result<SecretValue> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("cannot read the value from standard input")?;
            if s.ends_with('\n') {
                s.pop();
            }
            s
        }
    };
    anyhow::ensure!(!text.is_empty(), "the value is empty");
    Ok(SecretValue(text))
}

pub async fn run(cmd: SecretCommand, global: &Global) -> Result<()> {
    let client = connect(global).await?;
    match cmd {
        SecretCommand::Put { name: n, from_file, tenant: t } => {
            write(&client, global, ApiOp::SecretPut, &n, &from_file, &t).await?
        }
        SecretCommand::Rotate { name: n, from_file, tenant: t } => {
            write(&client, global, ApiOp::SecretRotate, &n, &from_file, &t).await?
        }
        SecretCommand::List { tenant: t } => {
            let req = SecretListRequest { tenant: Some(tenant(&t)?) };
            let r: SecretListReply = request(&client, ApiOp::SecretList, &req, REQUEST_TIMEOUT).await?;
            match global.output {
                crate::cli::Format::Json => output::print(global.output, &r, &[], vec![]),
                crate::cli::Format::Table => show(global, &r.secrets),
            }
        }
        SecretCommand::Describe { name: n, tenant: t } => {
            let req = SecretName { tenant: tenant(&t)?, name: name("secret", &n)?, actor: Some(actor()) };
            let r: SecretInfo = request(&client, ApiOp::SecretDescribe, &req, REQUEST_TIMEOUT).await?;
            let rows = r
                .versions
                .iter()
                .rev()
                .map(|v| {
                    vec![
                        v.version.to_string(),
                        output::age(v.created_at_ms),
                        v.created_by.clone(),
                        format!("{} B", v.size_bytes),
                    ]
                })
                .collect();
            if global.output == crate::cli::Format::Table {
                show(global, std::slice::from_ref(&r));
                println!();
            }
            print(global.output, &r, &["VERSION", "CREATED", "BY", "SIZE"], rows);
        }
        SecretCommand::Delete { name: n, tenant: t } => {
            let req = SecretName { tenant: tenant(&t)?, name: name("secret", &n)?, actor: Some(actor()) };
            let r: SecretDeleteReply = request(&client, ApiOp::SecretDelete, &req, REQUEST_TIMEOUT).await?;
            print(global.output, &r, &["DELETED"], vec![vec![format!("{}/{}", r.tenant, r.name)]]);
        }
    }
    Ok(())
}

/// `put` or `rotate`.
async fn write(
    client: &async_nats::Client,
    global: &Global,
    op: ApiOp,
    n: &str,
    file: &Option<PathBuf>,
    t: &Option<String>,
) -> Result<()> {
    let req =
        SecretWrite { tenant: tenant(t)?, name: name("secret", n)?, value: read_value(file)?, actor: Some(actor()) };
    let r: SecretInfo = request(client, op, &req, REQUEST_TIMEOUT).await?;
    show(global, &[r]);
    Ok(())
}

/// Secrets as a table: never a value, only versions, users and where they are.
fn show(global: &Global, secrets: &[SecretInfo]) {
    let join = |v: &[Name]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.iter().map(Name::as_str).collect::<Vec<_>>().join(",")
        }
    };
    let rows = secrets
        .iter()
        .map(|s| {
            let updated = s.versions.last().map(|v| output::age(v.created_at_ms)).unwrap_or_default();
            vec![format!("{}/{}", s.tenant, s.name), s.version.to_string(), updated, join(&s.apps), join(&s.sites)]
        })
        .collect();
    print(global.output, &secrets, &["SECRET", "VERSION", "UPDATED", "APPS", "SITES"], rows);
}
