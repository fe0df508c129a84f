//! Staging: every image of every app placed at a site is copied, blob by blob, from the hub's
//! blob store into the site's own (`edge_blobs_<site>` in the site's domain) over the leaf
//! link, within the per-site byte rate. A blob the site already holds is never sent again, so
//! an update that changes one layer sends one layer, and a cut costs at most the blob in flight:
//! the next pass resumes with what is missing. Progress per site is recorded in `edge_staging`.
//! Blobs no app at a site needs any more are deleted from its store after a grace period.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, object_store};
use edge_bus::topology::site_blobs;
use edge_types::image::{parts, Blob, ImageRecord, ImageStaging, SiteStaging};
use edge_types::Name;
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::throttle::Throttled;
use crate::Registry;

/// Runs staging passes on every change and every `every` until shutdown.
pub async fn run(r: Registry, every: Duration, shutdown: CancellationToken) {
    let mut waiter = r.stage_now.waiter();
    let _ = r.apps.loaded().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = pass(&r) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = waiter.changed() => {}
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The images each site needs: those of the apps placed there, with only the variants of the
/// architectures its hosts have (all of them while the site has not reported its hosts).
pub fn needs(r: &Registry) -> BTreeMap<Name, BTreeMap<String, ImageRecord>> {
    let sites = r.sites.snapshot();
    let mut out: BTreeMap<Name, BTreeMap<String, ImageRecord>> = BTreeMap::new();
    for e in r.apps.snapshot().values() {
        for site in &e.value.sites {
            let archs: Vec<&str> = sites
                .get(site.as_str())
                .map(|s| s.value.hosts.iter().map(|h| h.arch.as_str()).collect())
                .unwrap_or_default();
            for image in e.value.images.values() {
                let needed = for_archs(image, &archs);
                out.entry(site.clone()).or_default().insert(image.digest.clone(), needed);
            }
        }
    }
    out
}

/// `image` with only the variants of `archs` (all of them when none matches or none is known).
fn for_archs(image: &ImageRecord, archs: &[&str]) -> ImageRecord {
    let mut trimmed = image.clone();
    trimmed.variants.retain(|v| archs.contains(&v.platform.architecture.as_str()));
    if trimmed.variants.is_empty() {
        return image.clone();
    }
    trimmed
}

async fn pass(r: &Registry) {
    let mut needs = needs(r);
    // Sites staged before that need nothing now still get swept.
    for e in r.last.iter() {
        needs.entry(e.key().clone()).or_default();
    }
    futures::stream::iter(needs)
        .for_each_concurrent(r.concurrent.max(1), |(site, images)| async move {
            let status = stage_site(r, &site, &images).await;
            record(r, status).await;
        })
        .await;
}

/// Copies what `site` lacks of `images`; returns how far the site is staged.
async fn stage_site(r: &Registry, site: &Name, images: &BTreeMap<String, ImageRecord>) -> SiteStaging {
    let mut status = SiteStaging {
        site: site.clone(),
        images: Vec::new(),
        bytes_sent: 0,
        error: None,
        updated_at_ms: edge_bus::time::now_ms(),
    };
    let mut wanted: BTreeMap<String, u64> = BTreeMap::new();
    for image in images.values() {
        for b in image.blobs() {
            wanted.insert(b.digest.clone(), b.size);
        }
    }
    let js = jetstream::with_domain(r.client.clone(), site.as_str());
    let result = async {
        let store = js.get_object_store(site_blobs(site)).await.map_err(|e| format!("site store unreachable: {e}"))?;
        for (digest, size) in &wanted {
            if present(r, &store, site, digest, *size).await? {
                continue;
            }
            copy(r, &store, site, digest, *size).await?;
        }
        sweep(r, &store, site, &wanted).await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(%site, error = %e, "staging stalled");
        status.error = Some(e);
    }
    status.bytes_sent = r.sent.get(site).map(|v| *v).unwrap_or(0);
    for image in images.values() {
        let mut s = ImageStaging {
            reference: image.reference.clone(),
            digest: image.digest.clone(),
            blobs_present: 0,
            blobs_total: 0,
            bytes_present: 0,
            bytes_total: 0,
        };
        for b in image.blobs() {
            s.blobs_total += 1;
            s.bytes_total += b.size;
            if r.known.contains_key(&(site.clone(), b.digest.clone())) {
                s.blobs_present += 1;
                s.bytes_present += b.size;
            }
        }
        status.images.push(s);
    }
    status
}

/// Deletes from the site's store the blobs that no app there has needed for the grace period
/// (the store is listed at most every quarter of it).
async fn sweep(
    r: &Registry,
    store: &object_store::ObjectStore,
    site: &Name,
    wanted: &BTreeMap<String, u64>,
) -> Result<(), String> {
    let every = (r.gc_grace / 4).max(Duration::from_secs(1));
    if r.swept.get(site).is_some_and(|at| at.elapsed() < every) {
        return Ok(());
    }
    r.swept.insert(site.clone(), Instant::now());
    let mut list = store.list().await.map_err(|e| format!("listing the site store: {e}"))?;
    let mut held = Vec::new();
    while let Some(info) = list.next().await {
        let info = info.map_err(|e| format!("listing the site store: {e}"))?;
        if !info.deleted {
            held.push(info.name);
        }
    }
    let held_digests: std::collections::BTreeSet<String> =
        held.iter().map(|n| edge_types::image::blob_of_object(n).to_string()).collect();
    r.unneeded.retain(|(s, d), _| s != site || held_digests.contains(d));
    for name in held {
        let digest = edge_types::image::blob_of_object(&name).to_string();
        let key = (site.clone(), digest.clone());
        if wanted.contains_key(&digest) {
            r.unneeded.remove(&key);
            continue;
        }
        let since = *r.unneeded.entry(key.clone()).or_insert_with(Instant::now);
        if since.elapsed() < r.gc_grace {
            continue;
        }
        store.delete(&name).await.map_err(|e| format!("deleting {name}: {e}"))?;
        r.known.remove(&key);
        tracing::info!(%site, object = %name, "blob no app needs removed from the site store");
    }
    Ok(())
}

/// Whether the site holds blob `digest` whole, every part of it (remembered for the recheck
/// period once seen: a blob the site deleted as corrupt is sent again after at most that long).
async fn present(
    r: &Registry,
    store: &object_store::ObjectStore,
    site: &Name,
    digest: &str,
    size: u64,
) -> Result<bool, String> {
    let key = (site.clone(), digest.to_string());
    if r.known.get(&key).is_some_and(|at| at.elapsed() < r.recheck) {
        return Ok(true);
    }
    r.known.remove(&key);
    for (name, bytes) in parts(&Blob { digest: digest.into(), size }) {
        if !holds(store, &name, bytes).await? {
            return Ok(false);
        }
    }
    r.known.insert(key, Instant::now());
    Ok(true)
}

/// Whether the store holds object `name` of `size` bytes.
async fn holds(store: &object_store::ObjectStore, name: &str, size: u64) -> Result<bool, String> {
    match store.info(name).await {
        Ok(info) => Ok(!info.deleted && info.size as u64 == size),
        Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("site store unreachable: {e}")),
    }
}

/// Sends one blob from the hub's store to the site's, part by part (parts the site holds
/// already are skipped, so a cut resumes at the part it interrupted), within the site's byte
/// rate.
async fn copy(
    r: &Registry,
    store: &object_store::ObjectStore,
    site: &Name,
    digest: &str,
    size: u64,
) -> Result<(), String> {
    let mut object = r.blobs.get(digest).await.map_err(|e| format!("blob {digest} missing at the hub: {e}"))?;
    let started = Instant::now();
    let mut sent = 0u64;
    for (name, bytes) in parts(&Blob { digest: digest.into(), size }) {
        let mut part = (&mut object).take(bytes);
        if holds(store, &name, bytes).await? {
            tokio::io::copy(&mut part, &mut tokio::io::sink())
                .await
                .map_err(|e| format!("reading blob {digest}: {e}"))?;
            continue;
        }
        let mut reader = Throttled::new(part, r.rate);
        let put = store.put(name.as_str(), &mut reader).await;
        *r.sent.entry(site.clone()).or_insert(0) += reader.bytes;
        sent += reader.bytes;
        put.map_err(|e| format!("sending blob {digest}: {e}"))?;
    }
    r.known.insert((site.clone(), digest.to_string()), Instant::now());
    tracing::info!(%site, %digest, bytes = sent, secs = started.elapsed().as_secs_f64(), "blob staged");
    Ok(())
}

/// Stores a site's staging progress when it changed.
async fn record(r: &Registry, status: SiteStaging) {
    let key = status.site.to_string();
    let same = |cur: &SiteStaging| {
        cur.images == status.images && cur.error == status.error && cur.bytes_sent == status.bytes_sent
    };
    if r.last.get(&status.site).is_some_and(|cur| same(&cur)) {
        return;
    }
    match r.staging.put(&key, serde_json::to_vec(&status).expect("staging serializes").into()).await {
        Ok(_) => {
            r.last.insert(status.site.clone(), status);
        }
        Err(e) => tracing::warn!(site = %key, error = %e, "cannot record staging progress"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_types::image::{ImageVariant, Platform};

    #[test]
    fn a_site_gets_the_variants_of_its_hosts_architectures() {
        let blob = |c: char| Blob { digest: format!("sha256:{}", c.to_string().repeat(64)), size: 1 };
        let v = |arch: &str, c: char| ImageVariant {
            platform: Platform { os: "linux".into(), architecture: arch.into(), variant: None },
            config: blob(c),
            layers: vec![blob('f')],
        };
        let image = ImageRecord::new("x:1".into(), vec![v("amd64", 'a'), v("arm64", 'b')], String::new(), 0);
        assert_eq!(for_archs(&image, &["arm64"]).variants, vec![v("arm64", 'b')]);
        assert_eq!(for_archs(&image, &["arm64"]).digest, image.digest, "the same image");
        assert_eq!(for_archs(&image, &["amd64", "arm64"]).variants.len(), 2);
        assert_eq!(for_archs(&image, &[]).variants.len(), 2, "hosts not known yet: every variant");
        assert_eq!(for_archs(&image, &["riscv64"]).variants.len(), 2);
    }
}
