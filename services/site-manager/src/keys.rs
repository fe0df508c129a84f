//! The site's key pair, shared by its hosts. Each host has its own xkey in a file only it can
//! read; the first host to find the site without a key creates the site key and publishes its
//! public half (`site` in the site's `edge_keys` bucket, compare-and-swap create, so one wins).
//! Every host holding the site key seals it to each other host's public key (`seal.<host>`),
//! so the bucket holds the site's private key only as ciphertext, and any host can open the
//! secrets sealed to the site, also after fail-over with the WAN down.
//!
//! Rotation (`site.rotate-key`, arriving as `_rekey` with the desired state): one host makes a
//! new key (compare-and-swap on `site`), records the request as done (`rekeyed`), and seals the
//! new key, with the previous ones, to every host. Previous keys keep opening what was sealed to
//! them until the secrets service has re-sealed everything to the new public key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{CreateErrorKind, Store};
use base64::Engine;
use edge_seal::XKey;
use edge_types::Name;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const SITE: &str = "site";
const REKEYED: &str = "rekeyed";
/// Previous site keys kept to open what is still sealed to them.
const KEPT_PREVIOUS: usize = 2;

/// The site's private keys sealed from one host to another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedSiteKey {
    sender: String,
    recipient: String,
    /// Public key of the sealed site key.
    site: String,
    sealed: String,
    /// Earlier site keys, newest first, sealed the same way.
    #[serde(default)]
    previous: Vec<String>,
}

/// What the rest of the site-manager sees: the site key once this host holds it.
#[derive(Clone)]
pub struct SiteKey {
    pub key: Arc<XKey>,
    pub public: String,
    /// Earlier site keys, newest first.
    pub previous: Vec<Arc<XKey>>,
}

impl SiteKey {
    /// The key (current or earlier) whose public half is `public`.
    pub fn for_recipient(&self, public: &str) -> Option<&XKey> {
        std::iter::once(&self.key).chain(&self.previous).find(|k| k.public_key() == public).map(|k| k.as_ref())
    }
}

pub struct SiteKeys {
    pub kv: Store,
    pub host: Name,
    pub key_file: PathBuf,
    pub out: watch::Sender<Option<SiteKey>>,
    /// The latest rotation the hub asked for (`requested_at_ms`).
    pub rekey: watch::Receiver<u64>,
}

impl SiteKeys {
    /// Holds the site key as soon as it can, shares it with the site's other hosts and rotates
    /// it when asked, until shutdown. Checks the bucket every `every`.
    pub async fn run(mut self, every: Duration, shutdown: CancellationToken) {
        let host_key = match edge_seal::keyfile::load_or_create(&self.key_file) {
            Ok((k, created)) => {
                if created {
                    tracing::info!(file = %self.key_file.display(), "created this host's key");
                }
                k
            }
            Err(e) => {
                tracing::error!(error = %e, "no host key: this host cannot open secrets");
                return;
            }
        };
        let mut held: Option<SiteKey> = None;
        loop {
            match self.step(&host_key, held.as_ref()).await {
                Ok(Some(k)) if held.as_ref().map(|h| &h.public) != Some(&k.public) => {
                    tracing::info!(site_key = %k.public, "holding the site key");
                    self.out.send_replace(Some(k.clone()));
                    held = Some(k);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "site key not settled; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
                _ = self.rekey.changed() => {}
            }
        }
    }

    async fn step(&self, me: &XKey, held: Option<&SiteKey>) -> Result<Option<SiteKey>, async_nats::Error> {
        let my_key = format!("host.{}", self.host);
        let mine = me.public_key();
        if self.kv.get(&my_key).await?.as_deref() != Some(mine.as_bytes()) {
            self.kv.put(&my_key, mine.clone().into()).await?;
        }
        let current = self.kv.entry(SITE).await?.filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put);
        let site = match (held, &current) {
            (Some(k), Some(e)) if e.value.as_ref() == k.public.as_bytes() => k.clone(),
            // None yet, or another host rotated it: open our copy (it may not be there yet).
            _ => match self.acquire(me).await? {
                Some(k) => k,
                None => return Ok(held.cloned()),
            },
        };
        let site = match self.rotate_if_asked(me, &site).await? {
            Some(rotated) => rotated,
            None => site,
        };
        self.share(me, &site).await?;
        Ok(Some(site))
    }

    /// Makes a new site key if the hub asked for one this site has not made yet.
    async fn rotate_if_asked(&self, me: &XKey, site: &SiteKey) -> Result<Option<SiteKey>, async_nats::Error> {
        let asked = *self.rekey.borrow();
        let done: u64 = match self.kv.get(REKEYED).await? {
            Some(v) => std::str::from_utf8(&v)?.parse()?,
            None => 0,
        };
        if asked <= done {
            return Ok(None);
        }
        let Some(entry) = self.kv.entry(SITE).await? else { return Ok(None) };
        let fresh = XKey::new();
        let public = fresh.public_key();
        if self.kv.update(SITE, public.clone().into(), entry.revision).await.is_err() {
            return Ok(None); // another host rotated first; its key reaches us sealed
        }
        let mut previous = vec![site.key.clone()];
        previous.extend(site.previous.iter().take(KEPT_PREVIOUS - 1).cloned());
        let rotated = SiteKey { key: Arc::new(fresh), public, previous };
        self.put_sealed(me, &self.host, &me.public_key(), &rotated).await?;
        self.kv.put(REKEYED, asked.to_string().into()).await?;
        tracing::info!(site_key = %rotated.public, "rotated the site key");
        Ok(Some(rotated))
    }

    /// The site key: created if the site has none, else opened from the copy sealed to us.
    async fn acquire(&self, me: &XKey) -> Result<Option<SiteKey>, async_nats::Error> {
        let Some(public) = self.kv.get(SITE).await? else {
            let fresh = XKey::new();
            let public = fresh.public_key();
            return match self.kv.create(SITE, public.clone().into()).await {
                Ok(_) => {
                    tracing::info!(site_key = %public, "created the site key");
                    let key = SiteKey { key: Arc::new(fresh), public, previous: Vec::new() };
                    self.put_sealed(me, &self.host, &me.public_key(), &key).await?;
                    Ok(Some(key))
                }
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(e.into()),
            };
        };
        let public = String::from_utf8(public.to_vec())?;
        let Some(raw) = self.kv.get(format!("seal.{}", self.host)).await? else { return Ok(None) };
        let sealed: SealedSiteKey = serde_json::from_slice(&raw)?;
        if sealed.recipient != me.public_key() || sealed.site != public {
            return Ok(None); // sealed to an earlier key of ours, or of the site: a holder re-seals it
        }
        let sender = XKey::from_public_key(&sealed.sender)?;
        let open = |b64: &str| -> Result<XKey, async_nats::Error> {
            let seed = Zeroizing::new(me.open(&B64.decode(b64)?, &sender)?);
            Ok(XKey::from_seed(std::str::from_utf8(&seed)?)?)
        };
        let key = open(&sealed.sealed)?;
        if key.public_key() != public {
            return Err(format!("the site key sealed to this host is not the site's ({public})").into());
        }
        let previous = sealed.previous.iter().map(|p| open(p).map(Arc::new)).collect::<Result<_, _>>()?;
        Ok(Some(SiteKey { key: Arc::new(key), public, previous }))
    }

    /// Seals the site key to every host that registered a key and lacks a current copy.
    async fn share(&self, me: &XKey, site: &SiteKey) -> Result<(), async_nats::Error> {
        let keys: Vec<String> = self.kv.keys().await?.try_collect().await?;
        for k in keys.iter().filter_map(|k| k.strip_prefix("host.")) {
            let Ok(host) = Name::new(k) else { continue };
            let Some(public) = self.kv.get(format!("host.{host}")).await? else { continue };
            let public = String::from_utf8(public.to_vec())?;
            let current = match self.kv.get(format!("seal.{host}")).await? {
                Some(raw) => serde_json::from_slice::<SealedSiteKey>(&raw)
                    .is_ok_and(|s| s.recipient == public && s.site == site.public),
                None => false,
            };
            if !current {
                self.put_sealed(me, &host, &public, site).await?;
                tracing::info!(%host, "sealed the site key to a host");
            }
        }
        Ok(())
    }

    async fn put_sealed(&self, me: &XKey, host: &Name, public: &str, site: &SiteKey) -> Result<(), async_nats::Error> {
        let to = XKey::from_public_key(public)?;
        let seal = |k: &XKey| -> Result<String, async_nats::Error> {
            let seed = Zeroizing::new(k.seed()?);
            Ok(B64.encode(me.seal(seed.as_bytes(), &to)?))
        };
        let sealed = SealedSiteKey {
            sender: me.public_key(),
            recipient: public.to_string(),
            site: site.public.clone(),
            sealed: seal(&site.key)?,
            previous: site.previous.iter().map(|k| seal(k)).collect::<Result<_, _>>()?,
        };
        self.kv.put(format!("seal.{host}"), serde_json::to_vec(&sealed)?.into()).await?;
        Ok(())
    }
}
