//! The compose stack as users run it: `make images` builds every image locally, `docker-compose
//! up` brings the hub, the services and two sites (each its leaf and site-manager on its own
//! network), the example app is applied and runs at both sites; one site's WAN is cut with
//! `docker network disconnect` and it keeps running, restarting a killed container on its own.
//! The project name and published ports are the test's own, and everything is removed at the end.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use edge_bus::api::request;
use edge_testkit::unique;
use edge_types::api::{AppStatusReply, SiteListReply};
use edge_types::subject::ApiOp;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A compose project, taken down (volumes and the containers its sites ran included) on drop.
struct Project {
    name: String,
    ports: [(String, u16); 3],
    /// The stack's authority and credentials (`scripts/compose-auth.sh`).
    auth: tempfile::TempDir,
}

impl Project {
    fn compose(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.current_dir(root()).args(["-p", &self.name]);
        for (k, v) in &self.ports {
            c.env(k, v.to_string());
        }
        c.env("EDGE_AUTH_DIR", self.auth.path());
        c.env("EDGE_RENEW_CHECK_SECS", "1");
        c
    }

    fn container(&self, service: &str) -> Result<String> {
        run(self.compose().args(["ps", "-q", service]))
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose().args(["down", "-v", "--remove-orphans"]).output();
        for site in ["site-1", "site-2"] {
            support::remove_site_containers(&edge_types::Name::new(site).expect("name"));
        }
    }
}

async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await.unwrap_or(false) {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn running_at(client: &async_nats::Client, app: &str) -> Result<Vec<String>> {
    let st: AppStatusReply =
        request(client, ApiOp::AppStatus, &serde_json::json!({"name": app}), Duration::from_secs(10)).await?;
    Ok(st
        .sites
        .iter()
        .filter(|s| {
            serde_json::to_value(s.phase).ok().and_then(|v| v.as_str().map(String::from)).as_deref() == Some("running")
        })
        .map(|s| s.site.to_string())
        .collect())
}

#[tokio::test]
async fn the_compose_stack_runs_the_example_and_a_cut_site_keeps_running() -> Result<()> {
    run(Command::new(root().join("scripts/images.sh")).current_dir(root()))?;
    let free = || edge_bus::natsconf::free_port();
    let project = Project {
        name: unique("edgetest").replace('-', ""),
        ports: [
            ("EDGE_HUB_PORT".into(), free()?),
            ("EDGE_HUB_HTTP_PORT".into(), free()?),
            ("EDGE_TELEMETRY_PORT".into(), free()?),
        ],
        auth: tempfile::tempdir()?,
    };
    let edgectl = support::bin_dir().join("edgectl");
    run(Command::new(root().join("scripts/compose-auth.sh"))
        .env("EDGE_AUTH_DIR", project.auth.path())
        .env("EDGECTL", &edgectl))?;
    run(project.compose().args(["up", "-d"]))?;
    let admin = project.auth.path().join("creds/admin.creds");
    let url = format!("nats://127.0.0.1:{}", project.ports[0].1);
    let start = Instant::now();
    let client = loop {
        match edge_bus::connect(&edge_bus::Endpoint::new(&url, Some(admin.clone())), "test", false).await {
            Ok(c) => break c,
            Err(e) if start.elapsed() > Duration::from_secs(60) => bail!("the hub does not answer at {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    eventually("both sites registered", Duration::from_secs(90), || async {
        let l: SiteListReply =
            request(&client, ApiOp::SiteList, &serde_json::json!({}), Duration::from_secs(5)).await?;
        Ok(l.sites.len() == 2)
    })
    .await?;

    // As a user would: put the workload image into the store, apply the example.
    let docker = bollard::Docker::connect_with_local_defaults()?;
    eventually("the image is in the store", Duration::from_secs(60), || async {
        Ok(edgectl::image::push(&client, &docker, "edge/busybox:v1").await.is_ok())
    })
    .await?;
    let spec = std::fs::read(root().join("examples/hello.yaml"))?;
    let spec: serde_json::Value = serde_norway::from_slice(&spec)?;
    request::<_, edge_types::api::ApplyReply>(&client, ApiOp::AppApply, &spec, Duration::from_secs(30)).await?;
    eventually("hello runs at both sites", Duration::from_secs(120), || async {
        Ok(running_at(&client, "hello").await?.len() == 2)
    })
    .await?;
    // An app on the bus (the site-managers here run in containers: they join its network).
    let spec = std::fs::read(root().join("examples/bus.yaml"))?;
    let spec: serde_json::Value = serde_norway::from_slice(&spec)?;
    request::<_, edge_types::api::ApplyReply>(&client, ApiOp::AppApply, &spec, Duration::from_secs(30)).await?;
    eventually("readings from both sites at the hub", Duration::from_secs(120), || async {
        let req = serde_json::json!({"name": "counter", "topic": "readings", "max": 1000});
        let r: edge_types::topic::EventsReply =
            request(&client, ApiOp::AppEvents, &req, Duration::from_secs(10)).await?;
        let sites: std::collections::BTreeSet<&str> = r.events.iter().map(|e| e.site.as_str()).collect();
        Ok(sites.len() == 2)
    })
    .await?;

    // Cut site-1's WAN: its leaf leaves the `wan` network.
    let leaf = project.container("site-1-leaf")?;
    let wan = format!("{}_wan", project.name);
    run(Command::new("docker").args(["network", "disconnect", &wan, &leaf]))?;
    let list = |site: &str| {
        run(Command::new("docker").args([
            "ps",
            "-q",
            "--filter",
            &format!("label=io.edge.site={site}"),
            "--filter",
            "label=io.edge.app=hello",
        ]))
    };
    let before = list("site-1")?;
    ensure!(before.lines().count() == 2, "hello's two containers run at site-1: {before}");
    // A container killed while the WAN is down comes back by the site's own doing.
    let victim = before.lines().next().context("container")?.to_string();
    run(Command::new("docker").args(["kill", &victim]))?;
    eventually("site-1 restarted the killed container with its WAN down", Duration::from_secs(60), || async {
        let running = run(Command::new("docker").args(["inspect", "-f", "{{.State.Running}}", &victim]))?;
        Ok(running == "true")
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(list("site-1")?.lines().count() == 2, "site-1 keeps running hello while cut off");
    run(Command::new("docker").args(["network", "connect", &wan, &leaf]))?;
    eventually("hello runs at both sites again, as the hub sees it", Duration::from_secs(120), || async {
        Ok(running_at(&client, "hello").await?.len() == 2)
    })
    .await?;

    // site-2's leaf credential nears its end: its site-manager renews it in the bundle the
    // leaf server reads, through the hub's client port.
    let site = edge_types::Name::new("site-2")?;
    let creds = edge_auth::Authority::open(project.auth.path())?.renew_leaf(&site, Duration::from_secs(3))?;
    let expiry = || -> Result<u64> {
        let c = edge_auth::Creds::parse(&std::fs::read_to_string(&creds)?)?;
        Ok(edge_auth::leaf::expires_at(&c.jwt)?.unwrap_or(0))
    };
    eventually("site-2 renewed its leaf credential", Duration::from_secs(60), || async {
        Ok(expiry()? > edge_bus::time::now_ms() / 1000 + 24 * 3600)
    })
    .await?;
    // Past the old credential's end the link carries on with the renewed one.
    tokio::time::sleep(Duration::from_secs(5)).await;
    eventually("the hub still hears site-2", Duration::from_secs(60), || async {
        let l: SiteListReply =
            request(&client, ApiOp::SiteList, &serde_json::json!({}), Duration::from_secs(5)).await?;
        Ok(l.sites.iter().any(|s| s.site == site && s.connected))
    })
    .await?;
    Ok(())
}
