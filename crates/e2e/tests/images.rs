//! Images from the project's store: pushed from the local Docker Engine by digest, staged by
//! registry-sync into the store of every site the app is placed at, loaded into Docker from the
//! site's store and run by digest, also with the WAN down; an update that adds one layer sends
//! one layer (and its config); a blob that does not match its digest is refused; an image that
//! is not in the store fails at apply; images no app needs are removed from the site's store
//! and from the hosts after a grace period; a cut during staging costs at most the part in
//! flight; a corrupt blob at a site is caught, deleted and staged again.

mod support;

use std::process::{Child, Command, Stdio};
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
    layered_bytes(base, reference, text.as_bytes())
}

/// A new image: `base` plus one layer holding `/marker` with `bytes`.
fn layered_bytes(base: &str, reference: &str, bytes: &[u8]) -> Result<()> {
    let name = unique("img-build");
    docker(&["create", "--name", &name, base, "true"])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("marker");
    std::fs::write(&file, bytes)?;
    let copied = docker(&["cp", file.to_str().context("path")?, &format!("{name}:/marker")]);
    let committed = copied.and_then(|_| docker(&["commit", &name, reference]));
    docker(&["rm", "-f", &name])?;
    committed.map(|_| ())
}

/// Names for the images a test makes; every image whose repository has one of them is removed
/// from the engine when the test ends (declare it before the stack: it is dropped after it).
#[derive(Default)]
struct Made(std::sync::Mutex<Vec<String>>);

impl Made {
    fn name(&self, prefix: &str) -> String {
        let n = unique(prefix);
        self.0.lock().expect("names").push(n.clone());
        n
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        let names = self.0.lock().map(|n| n.clone()).unwrap_or_default();
        let Ok(listed) = docker(&["images", "--format", "{{.ID}} {{.Repository}}"]) else { return };
        let ids: Vec<&str> = listed
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, repo)| names.iter().any(|n| repo.contains(n.as_str())))
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            // A container a stopping site-manager just made would hold the image: remove it first.
            for _ in 0..3 {
                if let Ok(users) = docker(&["ps", "-aq", "--filter", &format!("ancestor={id}")]) {
                    for c in users.split_whitespace() {
                        let _ = docker(&["rm", "-f", c]);
                    }
                }
                if docker(&["rmi", "-f", id]).is_ok() {
                    break;
                }
            }
        }
    }
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
    let made = Made::default();
    let mut stack = Stack::start(&[&[("role", "shop")], &[("role", "shop")]]).await?;
    let (s0, s1) = (stack.site(0).clone(), stack.site(1).clone());
    let repo = made.name("edge/staged");
    let (v1, v2) = (format!("{repo}:v1"), format!("{repo}:v2"));
    layered("edge/busybox:v1", &v1, "one")?;
    let pushed = edgectl::image::push(&stack.client, &stack.docker, &v1).await?;
    let record = pushed.record;
    // The base layer is in the store already (the stack pushed edge/busybox:v1).
    ensure!(
        record.variants[0].layers.len() == 2 && pushed.sent == 2 && pushed.skipped == 1,
        "config and new layer sent: {record:?}"
    );
    ensure!(record.platforms().iter().any(|p| p.os == "linux"), "platform recorded: {:?}", record.platforms());
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
        ensure!(
            c.image_id == record.variants[0].config.digest,
            "runs by digest: {} vs {}",
            c.image_id,
            record.variants[0].config.digest
        );
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
    docker(&["rmi", "-f", &record.variants[0].config.digest])?;
    stack.sites[0].start_host(0);
    stack.wait_running(&[&s0], &app, 1).await.context("restarted at the cut site from its store")?;
    stack.restore(0).await?;
    stack.sites[1].start_host(0);
    stack.wait_running(&[&s1], &app, 1).await?;

    // An update that adds one layer: only that layer and the new config travel.
    let sent_before = staging(&stack, &s1).await?.map(|s| s.bytes_sent).unwrap_or(0);
    docker(&["tag", &record.variants[0].config.digest, &v1])?;
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
                if !(c.len() == 1 && c[0].running && c[0].image_id == r2.variants[0].config.digest) {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await?;
    let sent = staging(&stack, &s1).await?.context("staging")?.bytes_sent - sent_before;
    let new_bytes = r2.variants[0].config.size + r2.variants[0].layers.last().context("layer")?.size;
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
    let made = Made::default();
    let stack = Stack::start_with(&[&[]], |c| c.image_gc_secs = 2).await?;
    let site = stack.site(0).clone();
    let reference = format!("{}:v1", made.name("edge/gc"));
    layered("edge/busybox:v1", &reference, "gc")?;
    let record = edgectl::image::push(&stack.client, &stack.docker, &reference).await?.record;
    docker(&["rmi", &reference])?;
    let app = unique("gc");
    stack.apply(&sleeper(&app, "", &reference, &[])).await?;
    stack.wait_running(&[&site], &app, 1).await?;
    let store = stack.site_js(0).await?.get_object_store(edge_bus::topology::site_blobs(&site)).await?;
    ensure!(store.info(&record.variants[0].config.digest).await.is_ok_and(|i| !i.deleted), "staged");

    stack.delete(&app).await?;
    stack
        .eventually("the image left the host and the site store", || async {
            let in_docker = stack.docker.inspect_image(&record.variants[0].config.digest).await.is_ok();
            let in_store = store.info(&record.variants[0].config.digest).await.is_ok_and(|i| !i.deleted);
            Ok(!in_docker && !in_store)
        })
        .await?;
    // The base layer of edge/busybox, which the host had before, is still there.
    ensure!(stack.docker.inspect_image("edge/busybox:v1").await.is_ok(), "the host's own image stays");
    Ok(())
}

/// A CNCF Distribution registry (Debian's `docker-registry`) on loopback, killed on drop.
struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start() -> Result<Self> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let bin = root.join(".tools/bin/docker-registry");
        ensure!(bin.exists(), "docker-registry is missing: run scripts/setup.sh (make test does)");
        let dir = tempfile::tempdir()?;
        let addr = format!("127.0.0.1:{}", edge_bus::natsconf::free_port()?);
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )?;
        let child = Command::new(bin).arg("serve").arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        Ok(Self { child, addr, _dir: dir })
    }
}

#[tokio::test]
async fn an_image_imported_from_a_registry_runs_at_the_sites() -> Result<()> {
    let made = Made::default();
    let registry = Registry::start()?;
    let stack = Stack::start(&[&[]]).await?;
    let site = stack.site(0).clone();
    // An image only the registry has: built here, pushed by Docker, removed from the engine.
    let local = format!("{}:v1", made.name("edge/upstream"));
    layered("edge/busybox:v1", &local, "from the registry")?;
    let remote = format!("{}/{}", registry.addr, local);
    docker(&["tag", &local, &remote])?;
    stack.eventually("docker pushed to the registry", || async { Ok(docker(&["push", &remote]).is_ok()) }).await?;
    docker(&["rmi", &local, &remote])?;

    let imported: ImageRecord =
        request(&stack.client, ApiOp::ImageImport, &json!({"reference": remote}), Duration::from_secs(60)).await?;
    ensure!(imported.reference == remote && imported.source == format!("http://{}", registry.addr), "{imported:?}");
    ensure!(imported.variants.len() == 1 && imported.variants[0].layers.len() == 2, "{imported:?}");
    let arch = docker(&["info", "--format", "{{.Architecture}}"])?;
    let arch = if arch == "x86_64" { "amd64".to_string() } else { arch };
    ensure!(imported.variants[0].platform.architecture == arch, "platform from the config: {imported:?}");

    let app = unique("upstream");
    stack
        .apply(&json!({"name": app, "version": "1", "placement": {"sites": ""},
                       "services": [{"name": "main", "image": remote, "command": ["sh", "-c", "cat /marker; sleep 3600"]}]}))
        .await?;
    stack.wait_running(&[&site], &app, 1).await?;
    let c = &stack.containers(&site, &app).await?[0];
    ensure!(c.image_id == imported.variants[0].config.digest, "runs by digest");

    // A multi-platform index (amd64 and arm64) put together in the registry: both platforms
    // are recorded, and this amd64 host runs the amd64 build.
    let multi = multi_platform(&registry, &local)?;
    let indexed: ImageRecord =
        request(&stack.client, ApiOp::ImageImport, &json!({"reference": multi}), Duration::from_secs(60)).await?;
    let archs: Vec<&str> = indexed.platforms().iter().map(|p| p.architecture.as_str()).collect();
    ensure!(archs == ["amd64", "arm64"], "both platforms recorded: {archs:?}");
    let app2 = unique("multi");
    stack.apply(&sleeper(&app2, "", &multi, &[])).await?;
    stack.wait_running(&[&site], &app2, 1).await?;
    let c = &stack.containers(&site, &app2).await?[0];
    let amd64 = indexed.variant_for(&arch).context("variant")?;
    ensure!(c.image_id == amd64.config.digest, "this host runs its own platform's build");

    // Unknown tags and registries that are not there fail with the reason, changing nothing.
    let missing = format!("{}/edge/none:v9", registry.addr);
    let err = request::<_, ImageRecord>(
        &stack.client,
        ApiOp::ImageImport,
        &json!({"reference": missing}),
        Duration::from_secs(30),
    )
    .await;
    ensure!(matches!(&err, Err(RequestError::Api(e)) if e.message.contains("404")), "{err:?}");
    let err = request::<_, ImageRecord>(
        &stack.client,
        ApiOp::ImageImport,
        &json!({"reference": "edge/busybox:v1"}),
        Duration::from_secs(30),
    )
    .await;
    ensure!(matches!(&err, Err(RequestError::Api(e)) if e.pointer.as_deref() == Some("/reference")), "{err:?}");
    Ok(())
}

fn curl(args: &[&str]) -> Result<String> {
    let out = Command::new("curl").arg("-fsS").args(args).output()?;
    ensure!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Puts an index of two platforms into the registry for `repo_tag` (already pushed there by
/// Docker, amd64): the pushed manifest and an arm64 twin (the same layers, a config that says
/// arm64). Returns the index's reference.
fn multi_platform(registry: &Registry, repo_tag: &str) -> Result<String> {
    let (repo, tag) = repo_tag.rsplit_once(':').context("tag")?;
    let base = format!("http://{}/v2/{repo}", registry.addr);
    let v2 = "application/vnd.docker.distribution.manifest.v2+json";
    let manifest_text = curl(&["-H", &format!("Accept: {v2}"), &format!("{base}/manifests/{tag}")])?;
    let mut manifest: serde_json::Value = serde_json::from_str(&manifest_text)?;
    let config_digest = manifest["config"]["digest"].as_str().context("config")?.to_string();
    let mut config: serde_json::Value = serde_json::from_str(&curl(&[&format!("{base}/blobs/{config_digest}")])?)?;
    config["architecture"] = "arm64".into();
    let dir = tempfile::tempdir()?;
    let put = |name: &str, bytes: &[u8]| -> Result<(String, usize)> {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes)?;
        Ok((format!("sha256:{}", sha256_hex(bytes)), bytes.len()))
    };
    let arm_config = serde_json::to_vec(&config)?;
    let (arm_config_digest, arm_config_size) = put("config.json", &arm_config)?;
    let location =
        curl(&["-X", "POST", "-o", "/dev/null", "-w", "%header{location}", &format!("{base}/blobs/uploads/")])?;
    let sep = if location.contains('?') { '&' } else { '?' };
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", dir.path().join("config.json").display()),
        &format!("{location}{sep}digest={arm_config_digest}"),
    ])?;
    manifest["config"]["digest"] = arm_config_digest.clone().into();
    manifest["config"]["size"] = arm_config_size.into();
    let arm_manifest = serde_json::to_vec(&manifest)?;
    let (arm_digest, arm_size) = put("arm.json", &arm_manifest)?;
    curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {v2}"),
        "--data-binary",
        &format!("@{}", dir.path().join("arm.json").display()),
        &format!("{base}/manifests/{arm_digest}"),
    ])?;
    let amd_digest = format!("sha256:{}", sha256_hex(manifest_text.as_bytes()));
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"mediaType": v2, "digest": amd_digest, "size": manifest_text.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": v2, "digest": arm_digest, "size": arm_size, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ]
    });
    put("index.json", &serde_json::to_vec(&index)?)?;
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.docker.distribution.manifest.list.v2+json",
        "--data-binary",
        &format!("@{}", dir.path().join("index.json").display()),
        &format!("{base}/manifests/multi"),
    ])?;
    Ok(format!("{}/{repo}:multi", registry.addr))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn a_cut_during_staging_resumes_at_the_part_it_interrupted() -> Result<()> {
    let made = Made::default();
    let mut stack = Stack::start(&[&[]]).await?;
    // 8 MiB/s: the big layer takes about three seconds to reach the site.
    stack.restart_registry(|c| c.site_bytes_per_sec = 8 << 20).await;
    let site = stack.site(0).clone();
    let reference = format!("{}:v1", made.name("edge/big"));
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let bytes: Vec<u8> = (0..(24 << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    layered_bytes("edge/busybox:v1", &reference, &bytes)?;
    let record = edgectl::image::push(&stack.client, &stack.docker, &reference).await?.record;
    docker(&["rmi", &reference])?;
    let big = record.variants[0].layers.iter().max_by_key(|l| l.size).context("layer")?.clone();
    let parts = edge_types::image::parts(&big);
    ensure!(parts.len() >= 3, "the layer travels in parts: {parts:?}");

    // The app runs a small image first; the update to the big one waits until it is staged,
    // the old container running meanwhile.
    let app = unique("big");
    stack.apply(&sleeper(&app, "", "edge/busybox:v1", &[])).await?;
    stack.wait_running(&[&site], &app, 1).await?;
    let old = stack.containers(&site, &app).await?[0].id.clone();
    let mut update = sleeper(&app, "", &reference, &[]);
    update["version"] = "2".into();
    stack.apply(&update).await?;
    let store = stack.site_js(0).await?.get_object_store(edge_bus::topology::site_blobs(&site)).await?;
    stack
        .eventually("the first part is at the site", || async {
            Ok(store.info(&parts[0].0).await.is_ok_and(|i| !i.deleted))
        })
        .await?;
    stack.cut(0).await?;
    // `app status` shows the site's staging stalled part way.
    stack
        .eventually("app status shows staging part way", || async {
            let st = stack.status(&app).await?;
            Ok(st.sites[0].staging.as_ref().is_some_and(|p| !p.complete()))
        })
        .await?;
    let c = stack.containers(&site, &app).await?;
    ensure!(c.len() == 1 && c[0].id == old && c[0].running, "the old version runs until the new one is staged: {c:?}");
    stack.restore(0).await?;
    let want = record.variants[0].config.digest.clone();
    stack
        .eventually("the new version runs", || async {
            let c = stack.containers(&site, &app).await?;
            Ok(c.len() == 1 && c[0].running && c[0].image_id == want)
        })
        .await?;
    stack
        .eventually("app status shows the images staged", || async {
            Ok(stack.status(&app).await?.sites[0].staging.as_ref().is_some_and(|p| p.complete()))
        })
        .await?;
    let sent = staging(&stack, &site).await?.context("staging")?.bytes_sent;
    // The site already had the base layer (edge/busybox:v1 ran there).
    let limit = record.size + edge_types::image::PART_BYTES;
    ensure!(
        sent <= limit,
        "after the cut only the interrupted part was sent again: {sent} bytes sent for {} needed",
        record.size
    );
    Ok(())
}

#[tokio::test]
async fn a_corrupt_blob_at_the_site_is_caught_deleted_and_staged_again() -> Result<()> {
    let made = Made::default();
    let stack = Stack::start(&[&[]]).await?;
    let site = stack.site(0).clone();
    let reference = format!("{}:v1", made.name("edge/corrupt"));
    layered("edge/busybox:v1", &reference, "intact")?;
    let record = edgectl::image::push(&stack.client, &stack.docker, &reference).await?.record;
    docker(&["rmi", &reference])?;
    // The site's store holds a blob of the right name and size and the wrong content (a disk
    // error, a tampered host): registry-sync takes it for staged.
    let layer = record.variants[0].layers.last().context("layer")?.clone();
    let store = stack.site_js(0).await?.get_object_store(edge_bus::topology::site_blobs(&site)).await?;
    let junk = vec![0u8; layer.size as usize];
    store.put(layer.digest.as_str(), &mut junk.as_slice()).await?;

    let app = unique("corrupt");
    stack.apply(&sleeper(&app, "", &reference, &[])).await?;
    // The site-manager finds the mismatch when it loads the image, deletes the blob, and the
    // blob is staged again; the container then runs the image as pushed.
    stack.wait_running(&[&site], &app, 1).await?;
    let c = &stack.containers(&site, &app).await?[0];
    ensure!(c.image_id == record.variants[0].config.digest, "runs the intact image");
    let mut object = store.get(&layer.digest).await?;
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes).await?;
    ensure!(format!("sha256:{}", sha256_hex(&bytes)) == layer.digest, "the site store holds the intact blob now");
    Ok(())
}
