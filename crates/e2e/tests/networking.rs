//! Each application has its own network at each host: its services find each other by name,
//! other applications cannot reach them unless the spec allows them, connections out are refused
//! unless the spec allows them, published ports answer from outside, and a change of the network
//! moves running containers without restarting them.

mod support;

use anyhow::{ensure, Context, Result};
use edge_testkit::unique;
use serde_json::json;
use support::{sleeper, Stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `script` in a container; whether it exited 0.
async fn sh(container: &str, script: &str) -> Result<bool> {
    let out = tokio::process::Command::new("docker").args(["exec", container, "sh", "-c", script]).output().await?;
    Ok(out.status.success())
}

async fn docker(args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new("docker").args(args).output().await?;
    ensure!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// A server outside every app's network: busybox httpd published on the default bridge's
/// gateway address (an address of this machine), reachable from a container only by a way out.
struct World {
    id: String,
    addr: String,
}

impl World {
    async fn start() -> Result<Self> {
        // The default bridge's gateway, as a container on it sees it (its IPAM holds none).
        let probe =
            docker(&["run", "-d", "--label", "io.edge.test=networking", "edge/busybox:v1", "sleep", "30"]).await?;
        let gateway = docker(&["inspect", &probe, "-f", "{{.NetworkSettings.Gateway}}"]).await;
        docker(&["rm", "-f", &probe]).await?;
        let gateway = gateway?;
        ensure!(gateway.parse::<std::net::Ipv4Addr>().is_ok(), "no gateway on the default bridge: {gateway:?}");
        let id = docker(&[
            "run",
            "-d",
            "--label",
            "io.edge.test=networking",
            "-p",
            &format!("{gateway}::8080"),
            "edge/busybox:v1",
            "sh",
            "-c",
            "echo world > /tmp/i.html && httpd -f -p 8080 -h /tmp",
        ])
        .await?;
        let addr = docker(&["port", &id, "8080/tcp"]).await?;
        let addr = addr.lines().next().context("a published port")?.to_string();
        Ok(Self { id, addr })
    }

    /// `nc` arguments: host and port.
    fn nc(&self) -> String {
        self.addr.replacen(':', " ", 1)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker").args(["rm", "-f", &self.id]).output();
    }
}

/// The body of `GET /i.html` on 127.0.0.1:`port`.
async fn fetch(port: u16) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /i.html HTTP/1.0\r\n\r\n").await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn shop(name: &str, port: u16, outbound: bool, allow_from: &str) -> serde_json::Value {
    json!({
        "name": name,
        "version": "1.0.0",
        "services": [
            {
                "name": "web",
                "image": "edge/busybox:v1",
                "command": ["sh", "-c", "echo shop > /tmp/i.html && httpd -f -p 8080 -h /tmp"],
                "ports": [{"container": 8080, "host": port}],
                "resources": {"cpus": 0.1, "memory_mb": 32}
            },
            {
                "name": "client",
                "image": "edge/busybox:v1",
                "command": ["sleep", "3600"],
                "resources": {"cpus": 0.1, "memory_mb": 32}
            }
        ],
        "placement": {"sites": "tier = net"},
        "network": {"outbound": outbound, "allow_from": [allow_from]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apps_have_their_own_network_named_services_no_way_out_and_ingress() -> Result<()> {
    let stack = Stack::start(&[&[("tier", "net")]]).await?;
    let site = stack.site(0).clone();
    let world = World::start().await?;
    let (name, other, friend) = (unique("shop"), unique("other"), unique("friend"));
    let port = free_port()?;
    stack.apply(&shop(&name, port, false, &friend)).await?;
    let mut open = sleeper(&other, "tier = net", "edge/busybox:v1", &[]);
    open["network"] = json!({"outbound": true});
    stack.apply(&open).await?;
    stack.apply(&sleeper(&friend, "tier = net", "edge/busybox:v1", &[])).await?;
    stack.wait_running(&[&site], &name, 2).await?;
    stack.wait_running(&[&site], &other, 1).await?;
    stack.wait_running(&[&site], &friend, 1).await?;
    let friendly = stack.containers(&site, &friend).await?[0].id.clone();
    let containers = stack.containers(&site, &name).await?;
    let of = |service: &str| containers.iter().find(|c| c.service == service).map(|c| c.id.clone());
    let (web, client) = (of("web").context("web")?, of("client").context("client")?);
    let outsider = stack.containers(&site, &other).await?[0].id.clone();

    // Services of one app find each other by name.
    stack.eventually("the client reaches web by name", || sh(&client, "echo | nc -w 3 web 8080")).await?;
    // Published ports answer from outside, and status shows them as the service's ingress.
    stack.eventually("web answers on its published port", || async { Ok(fetch(port).await?.contains("shop")) }).await?;
    stack
        .eventually("status shows web's ingress", || async {
            let s = stack.status(&name).await?;
            let report = s.sites.first().and_then(|s| s.report.clone());
            Ok(report.is_some_and(|r| {
                r.containers.iter().any(|c| {
                    c.service.as_str() == "web" && c.ingress.iter().any(|p| p.container == 8080 && p.host == Some(port))
                })
            }))
        })
        .await?;
    // No way out by default, neither from a plain service nor from one with ingress.
    let to_world = format!("echo | nc -w 3 {}", world.nc());
    assert!(!sh(&client, &to_world).await?, "the client reached a server outside its app");
    assert!(!sh(&web, &to_world).await?, "web reached a server outside its app through its ingress network");
    // Another app neither resolves nor reaches the shop's services, but may go out as its spec allows.
    assert!(!sh(&outsider, "echo | nc -w 3 web 8080").await?, "another app reached web by name");
    let ips = docker(&["inspect", &web, "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"]).await?;
    for ip in ips.split_whitespace() {
        assert!(!sh(&outsider, &format!("echo | nc -w 3 {ip} 8080")).await?, "another app reached web at {ip}");
    }
    assert!(sh(&outsider, &to_world).await?, "an app allowed outbound could not reach the server outside");
    // An app the shop allows reaches its services by name, and gains no way out by it.
    stack.eventually("the allowed app reaches web by name", || sh(&friendly, "echo | nc -w 3 web 8080")).await?;
    assert!(!sh(&friendly, &to_world).await?, "the allowed app found a way out");

    // Opening the way out moves the running containers to the new network: no restart.
    let before = stack.containers(&site, &name).await?;
    stack.apply(&shop(&name, port, true, &friend)).await?;
    stack.eventually("the client reaches the server outside", || sh(&client, &to_world)).await?;
    // The allowed app, which has no way out, does not join a network that has one.
    stack
        .eventually("the allowed app leaves the shop's network", || async {
            Ok(!sh(&friendly, "echo | nc -w 3 web 8080").await?)
        })
        .await?;
    assert!(!sh(&friendly, &to_world).await?, "the allowed app found a way out through the shop's network");
    assert!(sh(&client, "echo | nc -w 3 web 8080").await?, "web by name after the move");
    stack
        .eventually("web answers on its port after the move", || async { Ok(fetch(port).await?.contains("shop")) })
        .await?;
    assert_eq!(stack.containers(&site, &name).await?, before, "containers restarted by a network change");

    // Removed apps leave no network behind.
    for app in [&name, &other, &friend] {
        stack.delete(app).await?;
    }
    let label = format!("label=io.edge.site={site}");
    stack
        .eventually("the apps' networks are removed", || async {
            Ok(docker(&["network", "ls", "-q", "--filter", &label]).await?.is_empty())
        })
        .await?;
    Ok(())
}
