//! `edgectl app ...`: requests on `edge.v1.api.app.*`.

use std::io::Read;

use anyhow::{Context, Result};
use edge_bus::api::{request, request_raw};
use edge_types::api::*;
use edge_types::subject::ApiOp;
use edge_types::telemetry::ResourcesReply;

use crate::cli::{AppCommand, Global};
use crate::output::print;
use crate::{connect, REQUEST_TIMEOUT};

pub async fn run(cmd: AppCommand, global: &Global) -> Result<()> {
    let client = connect(global).await?;
    match cmd {
        AppCommand::Apply { file } => {
            let body = read_spec(&file)?;
            let r: ApplyReply = request_raw(&client, ApiOp::AppApply, body, REQUEST_TIMEOUT).await?;
            let what = if r.changed {
                format!("applied (generation {})", r.generation)
            } else {
                format!("unchanged (generation {})", r.generation)
            };
            let sites: Vec<&str> = r.sites.iter().map(|s| s.as_str()).collect();
            print(
                global.output,
                &r,
                &["APP", "RESULT", "SITES"],
                vec![vec![r.name.to_string(), what, sites.join(",")]],
            );
        }
        AppCommand::Plan { file } => {
            let body = read_spec(&file)?;
            let r: PlanReply = request_raw(&client, ApiOp::AppPlan, body, REQUEST_TIMEOUT).await?;
            let yes_no = |b: bool| if b { "yes".to_string() } else { "no".to_string() };
            let mut rows = Vec::new();
            for s in &r.sites {
                rows.push(vec![
                    s.site.to_string(),
                    "-".into(),
                    yes_no(s.selected),
                    yes_no(s.connected),
                    s.reasons.join("; "),
                ]);
                for h in &s.hosts {
                    rows.push(vec![
                        String::new(),
                        h.host.to_string(),
                        yes_no(h.selected),
                        String::new(),
                        h.reasons.join("; "),
                    ]);
                }
            }
            print(global.output, &r, &["SITE", "HOST", "SELECTED", "CONNECTED", "WHY NOT"], rows);
            if global.output == crate::cli::Format::Table && !r.unknown_labels.is_empty() {
                println!("note: no site or host has the label(s) {}", r.unknown_labels.join(", "));
            }
        }
        AppCommand::List => {
            let r: AppListReply = request(&client, ApiOp::AppList, &Empty {}, REQUEST_TIMEOUT).await?;
            let rows = r
                .apps
                .iter()
                .map(|a| {
                    vec![
                        a.name.to_string(),
                        a.version.clone(),
                        a.generation.to_string(),
                        format!("{}/{}", a.sites_running, a.sites_desired),
                    ]
                })
                .collect();
            print(global.output, &r, &["NAME", "VERSION", "GENERATION", "RUNNING/SITES"], rows);
        }
        AppCommand::Get { name } => {
            let r: AppRecord =
                request(&client, ApiOp::AppGet, &serde_json::json!({ "name": name }), REQUEST_TIMEOUT).await?;
            match global.output {
                crate::cli::Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                crate::cli::Format::Table => print!("{}", serde_norway::to_string(&r)?),
            }
        }
        AppCommand::Status { name } => {
            let r: AppStatusReply =
                request(&client, ApiOp::AppStatus, &serde_json::json!({ "name": name }), REQUEST_TIMEOUT).await?;
            // Resource use from the telemetry service, when it runs.
            let used: std::collections::HashMap<String, (f64, u64)> = request::<_, ResourcesReply>(
                &client,
                ApiOp::TelemetryResources,
                &serde_json::json!({ "name": name }),
                std::time::Duration::from_secs(5),
            )
            .await
            .map(|u| u.containers.into_iter().map(|c| (c.container_id, (c.cpu_cores, c.memory_bytes))).collect())
            .unwrap_or_default();
            let usage = |id: &str| match used.get(id) {
                Some((cpu, mem)) => (format!("{cpu:.2}"), format!("{:.1}Mi", *mem as f64 / (1 << 20) as f64)),
                None => ("-".into(), "-".into()),
            };
            let mut rows = Vec::new();
            for s in &r.sites {
                let mut phase = serde_json::to_value(s.phase)?.as_str().unwrap_or_default().to_string();
                if s.offline {
                    phase += " (offline)";
                }
                match &s.report {
                    Some(rep) if !rep.containers.is_empty() => {
                        for c in &rep.containers {
                            let (cpu, mem) = usage(&c.container_id);
                            let image = c.image_id.trim_start_matches("sha256:").chars().take(12).collect::<String>();
                            rows.push(vec![
                                s.site.to_string(),
                                phase.clone(),
                                rep.generation.to_string(),
                                format!("{}/{}", c.service, c.replica),
                                c.host.to_string(),
                                c.state.clone(),
                                c.restarts.to_string(),
                                c.container_id.chars().take(12).collect(),
                                if image.is_empty() { "-".into() } else { image },
                                cpu,
                                mem,
                                ingress(c),
                                c.error.clone().unwrap_or_default(),
                            ]);
                        }
                    }
                    rep => rows.push(vec![
                        s.site.to_string(),
                        phase,
                        rep.as_ref().map(|r| r.generation.to_string()).unwrap_or_else(|| "-".into()),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        String::new(),
                    ]),
                }
            }
            if global.output == crate::cli::Format::Table {
                println!("{} version {} generation {}", r.name, r.version, r.generation);
            }
            let staging_lines: Vec<String> = r
                .sites
                .iter()
                .filter_map(|s| {
                    let p = s.staging.as_ref().filter(|p| !p.complete() || p.error.is_some())?;
                    let mb = |b: u64| b as f64 / (1 << 20) as f64;
                    let why = p.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default();
                    Some(format!(
                        "images at {}: {}/{} blobs, {:.1} of {:.1} MB staged{why}",
                        s.site,
                        p.blobs_present,
                        p.blobs_total,
                        mb(p.bytes_present),
                        mb(p.bytes_total)
                    ))
                })
                .collect();
            print(
                global.output,
                &r,
                &[
                    "SITE",
                    "PHASE",
                    "GEN",
                    "SERVICE/REPLICA",
                    "HOST",
                    "STATE",
                    "RESTARTS",
                    "CONTAINER",
                    "IMAGE",
                    "CPU",
                    "MEMORY",
                    "INGRESS",
                    "ERROR",
                ],
                rows,
            );
            if global.output == crate::cli::Format::Table {
                for line in staging_lines {
                    println!("{line}");
                }
            }
        }
        AppCommand::Delete { name } => {
            let r: DeleteReply =
                request(&client, ApiOp::AppDelete, &serde_json::json!({ "name": name }), REQUEST_TIMEOUT).await?;
            let sites: Vec<&str> = r.sites.iter().map(|s| s.as_str()).collect();
            print(
                global.output,
                &r,
                &["APP", "RESULT", "SITES"],
                vec![vec![r.name.to_string(), "deleted".into(), sites.join(",")]],
            );
        }
        AppCommand::Rollout(cmd) => crate::rollout::run(&client, cmd, global).await?,
        AppCommand::History { name } => crate::rollout::history(&client, name, global).await?,
        AppCommand::Rollback { name, to_version } => {
            crate::rollout::rollback(&client, name, to_version, global).await?
        }
    }
    Ok(())
}

/// Reads a spec file (YAML or JSON) and returns it as JSON bytes; the scheduler validates it.
fn read_spec(file: &std::path::Path) -> Result<Vec<u8>> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).context("cannot read the spec from standard input")?;
    } else {
        text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    }
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => serde_norway::from_str(&text)
            .with_context(|| format!("{} is neither valid JSON nor valid YAML", file.display()))?,
    };
    Ok(serde_json::to_vec(&value)?)
}

/// A container's published ports, `host->container/protocol`, or `-`.
fn ingress(c: &edge_types::status::ContainerStatus) -> String {
    if c.ingress.is_empty() {
        return "-".into();
    }
    let ports: Vec<String> =
        c.ingress.iter().map(|p| format!("{}->{}/{}", p.host_port(), p.container, p.protocol.as_str())).collect();
    ports.join(",")
}
