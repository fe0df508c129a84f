//! Images from the project's store: pushed from the local Docker Engine by digest, staged by
//! registry-sync into the store of every site the app is placed at, loaded into Docker from the
//! site's store and run by digest, also with the WAN down; an update that adds one layer sends
//! one layer (and its config); a blob that does not match its digest is refused; an image that
//! is not in the store fails at apply; images no app needs are removed from the site's store
//! and from the hosts after a grace period.

mod support;

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use edge_bus::api::{request, RequestError};
use edge_bus::topology::{hub_js, BLOBS_HUB, BUCKET_STAGING};
use edge_testkit::unique;
use edge_types::image::{Blob, ImagePush, ImageRecord, SiteStaging};
use edge_types::subject::ApiOp;
use serde_json::json;
use support::*;

fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker").args(args).output()?;
    ensure!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A new image: `base` plus one layer holding `/marker` with `text`.
fn layered(base: &str, reference: &str, text: &str) -> Result<()> {
    let name = unique("img-build");
    docker(&["create", "--name", &name, base, "true"])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("marker");
    std::fs::write(&file, text)?;
    let copied = docker(&["cp", file.to_str().context("path")?, &format!("{name}:/marker")]);
    let committed = copied.and_then(|_| docker(&["commit", &name, reference]));
    docker(&["rm", "-f", &name])?;
    committed.map(|_| ())
}

async fn staging(stack: &Stack, site: &edge_types::Name) -> Result<Option<SiteStaging>> {
    let kv = hub_js(&stack.client).get_key_value(BUCKET_STAGING).await?;
    Ok(match kv.get(site.as_str()).await? {
        Some(v) => Some(serde_json::from_slice(&v)?),
        None => None,
    })
}

#[tokio::test]
async fn an_image_is_staged_at_its_sites_and_runs_there_with_the_wan_down() -> Result<()> {
    let mut stack = Stack::start(&[&[("role", "shop")], &[("role", "shop")]]).await?;
    let (s0, s1) = (stack.site(0).clone(), stack.site(1).clone());
    let repo = unique("edge/staged");
    let (v1, v2) = (format!("{repo}:v1"), format!("{repo}:v2"));
    layered("edge/busybox:v1", &v1, "one")?;
    let pushed = edgectl::image::push(&stack.client, &stack.docker, &v1).await?;
    let record = pushed.record;
    // The base layer is in the store already (the stack pushed edge/busybox:v1).
    ensure!(
        record.layers.len() == 2 && pushed.sent == 2 && pushed.skipped == 1,
        "config and new layer sent: {record:?}"
    );
    ensure!(record.platforms.iter().any(|p| p.os == "linux"), "platform recorded: {:?}", record.platforms);
    // The engine no longer has it: the sites must load it from their own stores.
    docker(&["rmi", &v1])?;

    let app = unique("staged");
    let spec = |image: &str, version: &str| {
        json!({"name": app, "version": version, "placement": {"sites": "role = shop"},
               "services": [{"name": "main", "image": image, "command": ["sh", "-c", "cat /marker; sleep 3600"]}]})
    };
    stack.apply(&spec(&v1, "1")).await?;
    stack.wait_running(&[&s0, &s1], &app, 1).await?;
    for site in [&s0, &s1] {
        let c = &stack.containers(site, &app).await?[0];
        ensure!(c.image_id == record.config.digest, "runs by digest: {} vs {}", c.image_id, record.config.digest);
        let st = staging(&stack, site).await?.context("staging recorded")?;
        ensure!(st.images.iter().all(|i| i.complete()), "staged: {st:?}");
    }

    // WAN down at site 0, both sites' managers stopped, the containers and the image gone from
    // the host (the shared engine): site 0's manager starts again with the WAN down and brings
    // the container back from its own store; then site 1 does the same with the WAN up.
    stack.cut(0).await?;
    stack.sites[0].stop_host(0).await;
    stack.sites[1].stop_host(0).await;
    for site in [&s0, &s1] {
        for c in stack.containers(site, &app).await? {
            docker(&["rm", "-f", &c.id])?;
        }
    }
    docker(&["rmi", "-f", &record.config.digest])?;
    stack.sites[0].start_host(0);
    stack.wait_running(&[&s0], &app, 1).await.context("restarted at the cut site from its store")?;
    stack.restore(0).await?;
    stack.sites[1].start_host(0);
    stack.wait_running(&[&s1], &app, 1).await?;

    // An update that adds one layer: only that layer and the new config travel.
    let sent_before = staging(&stack, &s1).await?.map(|s| s.bytes_sent).unwrap_or(0);
    docker(&["tag", &record.config.digest, &v1])?;
    layered(&v1, &v2, "two")?;
    let update = edgectl::image::push(&stack.client, &stack.docker, &v2).await?;
    ensure!(
        update.sent == 2 && update.skipped == 2,
        "one new layer and a config sent: {} sent, {} skipped",
        update.sent,
        update.skipped
    );
    let r2 = update.record;
    docker(&["rmi", &v2])?;
    stack.apply(&spec(&v2, "2")).await?;
    stack
        .eventually("v2 runs at both sites", || async {
            for site in [&s0, &s1] {
                let c = stack.containers(site, &app).await?;
                if !(c.len() == 1 && c[0].running && c[0].image_id == r2.config.digest) {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await?;
    let sent = staging(&stack, &s1).await?.context("staging")?.bytes_sent - sent_before;
    let new_bytes = r2.config.size + r2.layers.last().context("layer")?.size;
    ensure!(
        sent == new_bytes,
        "only the new layer and config were sent to the site: {sent} bytes, expected {new_bytes}"
    );
    Ok(())
}

#[tokio::test]
async fn forged_blobs_and_images_missing_from_the_store_are_refused() -> Result<()> {
    let stack = Stack::start(&[]).await?;
    let store = hub_js(&stack.client).get_object_store(BLOBS_HUB).await?;
    let claimed = format!("sha256:{}", "ab".repeat(32));
    store.put(claimed.as_str(), &mut &b"not what the digest says"[..]).await?;
    let config = Blob { digest: claimed.clone(), size: 24 };
    let push = ImagePush { reference: "edge/forged:v1".into(), config: config.clone(), layers: vec![config] };
    let err = request::<_, ImageRecord>(&stack.client, ApiOp::ImagePush, &push, Duration::from_secs(10)).await;
    match err {
        Err(RequestError::Api(e)) => ensure!(e.pointer.as_deref() == Some("/config/digest"), "{e:?}"),
        other => anyhow::bail!("a forged blob was accepted: {other:?}"),
    }
    ensure!(store.info(&claimed).await.map_or(true, |i| i.deleted), "the forged blob is deleted");
    let images: edge_types::image::ImageListReply =
        request(&stack.client, ApiOp::ImageList, &json!({}), Duration::from_secs(10)).await?;
    ensure!(images.images.iter().all(|i| i.reference != "edge/forged:v1"), "nothing recorded");

    // An image that is not in the store fails at apply (and plan), naming the field.
    let spec = sleeper("nowhere", "", "edge/nowhere:v1", &[]);
    for result in [stack.apply(&spec).await.map(|_| ()), stack.plan(&spec).await.map(|_| ())] {
        match result {
            Err(RequestError::Api(e)) => {
                ensure!(e.pointer.as_deref() == Some("/services/0/image"), "{e:?}");
                ensure!(e.message.contains("edgectl image push edge/nowhere:v1"), "{}", e.message);
            }
            other => anyhow::bail!("an image missing from the store was accepted: {other:?}"),
        }
    }
    ensure!(stack.apps().await?.apps.is_empty(), "nothing applied");
    Ok(())
}

#[tokio::test]
async fn images_no_app_needs_leave_the_site_store_and_the_hosts() -> Result<()> {
    let stack = Stack::start_with(&[&[]], |c| c.image_gc_secs = 2).await?;
    let site = stack.site(0).clone();
    let reference = format!("{}:v1", unique("edge/gc"));
    layered("edge/busybox:v1", &reference, "gc")?;
    let record = edgectl::image::push(&stack.client, &stack.docker, &reference).await?.record;
    docker(&["rmi", &reference])?;
    let app = unique("gc");
    stack.apply(&sleeper(&app, "", &reference, &[])).await?;
    stack.wait_running(&[&site], &app, 1).await?;
    let store = stack.site_js(0).await?.get_object_store(edge_bus::topology::site_blobs(&site)).await?;
    ensure!(store.info(&record.config.digest).await.is_ok_and(|i| !i.deleted), "staged");

    stack.delete(&app).await?;
    stack
        .eventually("the image left the host and the site store", || async {
            let in_docker = stack.docker.inspect_image(&record.config.digest).await.is_ok();
            let in_store = store.info(&record.config.digest).await.is_ok_and(|i| !i.deleted);
            Ok(!in_docker && !in_store)
        })
        .await?;
    // The base layer of edge/busybox, which the host had before, is still there.
    ensure!(stack.docker.inspect_image("edge/busybox:v1").await.is_ok(), "the host's own image stays");
    Ok(())
}
