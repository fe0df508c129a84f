//! A live, validated copy of a KV bucket in memory: every value with its revision and the moment
//! this process saw it change. Readers take snapshots; a shared [`Notify`] wakes whoever acts on
//! changes. Values that fail their schema are counted and left out, never acted on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Operation, Store};
use edge_types::schema::{decode, Message};
use futures::StreamExt;
use tokio::sync::watch;

use crate::signal::Signal;
use tokio_util::sync::CancellationToken;

/// One value of the bucket.
#[derive(Clone, Debug)]
pub struct Entry<T> {
    pub value: T,
    pub revision: u64,
    /// When this process saw the value written (or first read it).
    pub seen: Instant,
}

/// The copy. Cheap to clone; every clone sees the same state.
#[derive(Clone)]
pub struct Mirror<T> {
    map: Arc<Mutex<BTreeMap<String, Entry<T>>>>,
    loaded: watch::Receiver<bool>,
    /// Values rejected by their schema.
    pub rejected: Arc<AtomicU64>,
}

impl<T: Message + Clone + Send + 'static> Mirror<T> {
    /// Starts following `kv`; `changed` is notified after every change.
    pub fn follow(kv: Store, changed: Signal, shutdown: CancellationToken) -> Self {
        Self::follow_prefix(kv, "", changed, shutdown)
    }

    /// Starts following the keys of `kv` that start with `prefix` (which ends with `.`, or is
    /// empty for every key), for buckets that hold values of several types.
    pub fn follow_prefix(kv: Store, prefix: &'static str, changed: Signal, shutdown: CancellationToken) -> Self {
        let (loaded_tx, loaded) = watch::channel(false);
        let mirror = Self { map: Default::default(), loaded, rejected: Default::default() };
        let m = mirror.clone();
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                if let Err(e) = m.follow_once(&kv, prefix, &changed, &loaded_tx, &shutdown).await {
                    tracing::warn!(bucket = %kv.name, error = %e, "KV watch failed; restarting it");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        mirror
    }

    async fn follow_once(
        &self,
        kv: &Store,
        prefix: &str,
        changed: &Signal,
        loaded: &watch::Sender<bool>,
        shutdown: &CancellationToken,
    ) -> Result<(), async_nats::Error> {
        // The watch delivers the last value of every key, then each change.
        let mut watch = kv.watch_with_history(format!("{prefix}>")).await?;
        let empty = if prefix.is_empty() {
            kv.status().await?.values() == 0
        } else {
            use futures::TryStreamExt;
            let keys: Vec<String> = kv.keys().await?.try_collect().await?;
            !keys.iter().any(|k| k.starts_with(prefix))
        };
        if empty {
            loaded.send_replace(true);
        }
        let mut fresh: Option<BTreeMap<String, Entry<T>>> = (!empty).then(BTreeMap::new);
        loop {
            let e = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                e = watch.next() => match e {
                    Some(e) => e?,
                    None => return Ok(()),
                },
            };
            let value = match e.operation {
                Operation::Put => match decode::<T>(&e.value) {
                    Ok(v) => Some(v),
                    Err(err) => {
                        self.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(bucket = %kv.name, key = %e.key, error = %err, "rejected KV value");
                        None
                    }
                },
                Operation::Delete | Operation::Purge => None,
            };
            {
                // Until the initial read is complete, build a fresh map so keys deleted while
                // the watch was down do not linger.
                let mut guard = self.map.lock().expect("mirror lock");
                let map = match fresh.as_mut() {
                    Some(f) => f,
                    None => &mut *guard,
                };
                match value {
                    Some(value) => {
                        map.insert(e.key.clone(), Entry { value, revision: e.revision, seen: Instant::now() });
                    }
                    None => {
                        map.remove(&e.key);
                    }
                }
                if e.delta == 0 {
                    if let Some(f) = fresh.take() {
                        *guard = f;
                    }
                }
            }
            if e.delta == 0 && !*loaded.borrow() {
                loaded.send_replace(true);
            }
            changed.raise();
        }
    }

    /// Waits until the bucket's stored values have been read once.
    pub async fn loaded(&self) {
        let mut l = self.loaded.clone();
        let _ = l.wait_for(|v| *v).await;
    }

    /// Every value now, by key.
    pub fn snapshot(&self) -> BTreeMap<String, Entry<T>> {
        self.map.lock().expect("mirror lock").clone()
    }

    /// Waits (at most `limit`) until this copy holds `key` at `revision` or later, so that a
    /// request that just wrote it acts on what it wrote; false if the copy is still behind.
    pub async fn caught_up(&self, key: &str, revision: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.map.lock().expect("mirror lock").get(key).is_none_or(|e| e.revision < revision) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}
