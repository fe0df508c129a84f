//! Every panel of every Grafana dashboard in `grafana/dashboards` shows data: a real Prometheus
//! (Debian's package, installed by `scripts/setup.sh`) scrapes the telemetry service of a live
//! stack, and each panel's expression, with its variables set, must return a non-empty result.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use edge_testkit::unique;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Prometheus process, killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: &str) -> Result<Self> {
        let bin = root().join(".tools/bin/prometheus");
        if !bin.exists() {
            bail!("prometheus is missing: run scripts/setup.sh (make test does)");
        }
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: edge\n    static_configs:\n      - targets: [\"{target}\"]\n"),
        )?;
        let addr = format!("127.0.0.1:{}", edge_bus::natsconf::free_port()?);
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self { child, addr, _dir: dir })
    }

    /// Runs an instant query; the `data.result` array.
    async fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>> {
        let mut s = tokio::net::TcpStream::connect(&self.addr).await?;
        let req = format!("GET /api/v1/query?query={} HTTP/1.0\r\n\r\n", encode(expr));
        s.write_all(req.as_bytes()).await?;
        let mut raw = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut raw)).await??;
        let body = raw.split_once("\r\n\r\n").context("no body")?.1;
        let v: serde_json::Value = serde_json::from_str(body).with_context(|| format!("not JSON: {body}"))?;
        if v["status"] != "success" {
            bail!("query {expr:?} failed: {body}");
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn every_dashboard_panel_shows_data_from_a_live_stack() -> Result<()> {
    let stack = Stack::start(&[&[("tier", "edge")], &[("tier", "edge")]]).await?;
    let telemetry_addr = format!("127.0.0.1:{}", edge_bus::natsconf::free_port()?);
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(telemetry::run(stack.telemetry_config(telemetry_addr.clone()), shutdown.clone()));
    let app = unique("dashboarded");
    stack.apply(&sleeper(&app, "tier = edge", "edge/busybox:v1", &[])).await?;
    let (a, b) = (stack.site(0).clone(), stack.site(1).clone());
    stack.wait_running(&[&a, &b], &app, 1).await?;

    let prom = Prometheus::start(&telemetry_addr)?;
    stack
        .eventually("prometheus scraped the running app", || async {
            let r = prom.query(&format!("edge_app_sites_running{{app=\"{app}\"}}")).await?;
            Ok(r.first().and_then(|s| s["value"][1].as_str()) == Some("2"))
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(4)).await; // a few scrapes, for rates

    let mut checked = 0;
    let mut empty = Vec::new();
    for entry in std::fs::read_dir(root().join("grafana/dashboards"))? {
        let path = entry?.path();
        let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let title = d["title"].as_str().unwrap_or_default().to_string();
        for var in d["templating"]["list"].as_array().into_iter().flatten() {
            let q = var["query"]["query"].as_str().unwrap_or_default();
            let metric = q.trim_start_matches("label_values(").split(',').next().unwrap_or_default();
            if prom.query(metric).await?.is_empty() {
                empty.push(format!("{title}: variable {} ({q})", var["name"]));
            }
        }
        for panel in d["panels"].as_array().into_iter().flatten() {
            for t in panel["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default().replace("$site", a.as_str()).replace("$app", &app);
                checked += 1;
                if prom.query(&expr).await?.is_empty() {
                    empty.push(format!("{title} / {}: {expr}", panel["title"]));
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} expressions found");
    assert!(empty.is_empty(), "panels without data: {empty:#?}");
    shutdown.cancel();
    service.await??;
    Ok(())
}
