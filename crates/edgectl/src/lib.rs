//! edgectl: every command is a request on a documented bus subject (see `schemas/asyncapi.yaml`),
//! so any NATS client can do the same; `dev` runs a whole local stack as processes.

pub mod app;
pub mod auth;
pub mod block;
pub mod cli;
pub mod dev;
pub mod events;
pub mod image;
pub mod logs;
pub mod output;
pub mod rollout;
pub mod secret;
pub mod site;

use std::time::Duration;

use anyhow::{Context, Result};
use cli::{Cli, Command};

/// A name given on the command line, or an error saying which (`kind`) is invalid.
pub(crate) fn name(kind: &str, s: &str) -> Result<edge_types::Name> {
    edge_types::Name::new(s).map_err(|e| anyhow::anyhow!("{kind} {s:?}: {e}"))
}

/// How long a request may take before edgectl gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Dev(cmd) => dev::run(cmd, &cli.global).await,
        Command::App(cmd) => app::run(cmd, &cli.global).await,
        Command::Site(cmd) => site::run(cmd, &cli.global).await,
        Command::Auth(cmd) => auth::run(cmd, &cli.global).await,
        Command::Tenant(cmd) => block::tenant(cmd, &cli.global).await,
        Command::Host(cmd) => block::host(cmd, &cli.global).await,
        Command::Block(cmd) => block::list(cmd, &cli.global).await,
        Command::Secret(cmd) => secret::run(cmd, &cli.global).await,
        Command::Image(cmd) => image::run(cmd, &cli.global).await,
        Command::Alerts => alerts(&cli.global).await,
        Command::Logs(args) => logs::run(args, &cli.global).await,
        Command::Events(args) => events::run(args, &cli.global).await,
        Command::Send(args) => events::send(args, &cli.global).await,
        Command::Health { service } => health(&cli.global, &service).await,
    }
}

/// Connects to the hub: `--server`, else `EDGE_NATS_URL`, else the running dev stack's hub,
/// with the credential of [`auth::client_creds`].
pub async fn connect(global: &cli::Global) -> Result<async_nats::Client> {
    connect_as(global, auth::client_creds(global)).await
}

/// Connects to the hub (as [`connect`]) presenting `creds`.
pub async fn connect_as(global: &cli::Global, creds: Option<std::path::PathBuf>) -> Result<async_nats::Client> {
    let url = match &global.server {
        Some(u) => u.clone(),
        None => dev::State::load(&global.dev_dir)
            .map(|s| s.hub_url)
            .context("no hub to talk to: pass --server URL, set EDGE_NATS_URL, or start one with `edgectl dev up`")?,
    };
    let endpoint = edge_bus::Endpoint::new(&url, creds);
    edge_bus::connect(&endpoint, "edgectl", false).await.context("cannot reach the hub")
}

/// `edgectl health SERVICE`: the service's health reply, or an error (exit 1).
async fn health(global: &cli::Global, service: &str) -> Result<()> {
    anyhow::ensure!(
        ["scheduler", "secrets", "registry-sync", "telemetry"].contains(&service),
        "unknown service {service:?}: scheduler, secrets, registry-sync or telemetry"
    );
    let client = connect(global).await?;
    let subject = format!("{}.{service}.health", edge_types::subject::PREFIX);
    let reply = tokio::time::timeout(Duration::from_secs(5), client.request(subject, Vec::new().into()))
        .await
        .with_context(|| format!("{service} did not answer within 5 s"))?
        .with_context(|| format!("{service} did not answer"))?;
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).context("health reply is not JSON")?;
    anyhow::ensure!(body["status"] == "ok", "{service} is not healthy: {body}");
    println!("{service} ok ({})", body["version"].as_str().unwrap_or("?"));
    Ok(())
}

/// `edgectl alerts`: the firing alerts, oldest first.
async fn alerts(global: &cli::Global) -> Result<()> {
    let client = connect(global).await?;
    let r: edge_types::alert::AlertListReply = edge_bus::api::request(
        &client,
        edge_types::subject::ApiOp::AlertList,
        &edge_types::api::Empty {},
        REQUEST_TIMEOUT,
    )
    .await?;
    let rows = r
        .alerts
        .iter()
        .map(|a| vec![a.kind.as_str().to_string(), a.name.to_string(), output::age(a.since_ms), a.cause.clone()])
        .collect();
    output::print(global.output, &r, &["ALERT", "NAME", "SINCE", "CAUSE"], rows);
    Ok(())
}
