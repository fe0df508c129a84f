//! The site's key pair, shared by its hosts. Each host has its own xkey in a file only it can
//! read; the first host to find the site without a key creates the site key and publishes its
//! public half (`site` in the site's `edge_keys` bucket, compare-and-swap create, so one wins).
//! Every host holding the site key seals it to each other host's public key (`seal.<host>`),
//! so the bucket holds the site's private key only as ciphertext, and any host can open the
//! secrets sealed to the site, also after fail-over with the WAN down.

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

/// The site's private key sealed from one host to another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedSiteKey {
    sender: String,
    recipient: String,
    sealed: String,
}

/// What the rest of the site-manager sees: the site key once this host holds it.
#[derive(Clone)]
pub struct SiteKey {
    pub key: Arc<XKey>,
    pub public: String,
}

pub struct SiteKeys {
    pub kv: Store,
    pub host: Name,
    pub key_file: PathBuf,
    pub out: watch::Sender<Option<SiteKey>>,
}

impl SiteKeys {
    /// Holds the site key as soon as it can and shares it with the site's other hosts, until
    /// shutdown. Checks the bucket every `every`.
    pub async fn run(self, every: Duration, shutdown: CancellationToken) {
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
                Ok(Some(k)) if held.is_none() => {
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
            }
        }
    }

    async fn step(&self, me: &XKey, held: Option<&SiteKey>) -> Result<Option<SiteKey>, async_nats::Error> {
        let my_key = format!("host.{}", self.host);
        let mine = me.public_key();
        if self.kv.get(&my_key).await?.as_deref() != Some(mine.as_bytes()) {
            self.kv.put(&my_key, mine.clone().into()).await?;
        }
        let site = match held {
            Some(k) => k.clone(),
            None => match self.acquire(me).await? {
                Some(k) => k,
                None => return Ok(None),
            },
        };
        self.share(me, &site).await?;
        Ok(Some(site))
    }

    /// The site key: created if the site has none, else opened from the copy sealed to us.
    async fn acquire(&self, me: &XKey) -> Result<Option<SiteKey>, async_nats::Error> {
        let Some(public) = self.kv.get(SITE).await? else {
            let fresh = XKey::new();
            let public = fresh.public_key();
            return match self.kv.create(SITE, public.clone().into()).await {
                Ok(_) => {
                    tracing::info!(site_key = %public, "created the site key");
                    let key = SiteKey { key: Arc::new(fresh), public };
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
        if sealed.recipient != me.public_key() {
            return Ok(None); // sealed to an earlier key of this host; a holder re-seals it
        }
        let sender = XKey::from_public_key(&sealed.sender)?;
        let seed = Zeroizing::new(me.open(&B64.decode(&sealed.sealed)?, &sender)?);
        let key = XKey::from_seed(std::str::from_utf8(&seed)?)?;
        if key.public_key() != public {
            return Err(format!("the site key sealed to this host is not the site's ({public})").into());
        }
        Ok(Some(SiteKey { key: Arc::new(key), public }))
    }

    /// Seals the site key to every host that registered a key and lacks a copy for it.
    async fn share(&self, me: &XKey, site: &SiteKey) -> Result<(), async_nats::Error> {
        let keys: Vec<String> = self.kv.keys().await?.try_collect().await?;
        for k in keys.iter().filter_map(|k| k.strip_prefix("host.")) {
            let Ok(host) = Name::new(k) else { continue };
            let Some(public) = self.kv.get(format!("host.{host}")).await? else { continue };
            let public = String::from_utf8(public.to_vec())?;
            let current = match self.kv.get(format!("seal.{host}")).await? {
                Some(raw) => serde_json::from_slice::<SealedSiteKey>(&raw).is_ok_and(|s| s.recipient == public),
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
        let seed = Zeroizing::new(site.key.seed()?);
        let sealed = SealedSiteKey {
            sender: me.public_key(),
            recipient: public.to_string(),
            sealed: B64.encode(me.seal(seed.as_bytes(), &to)?),
        };
        self.kv.put(format!("seal.{host}"), serde_json::to_vec(&sealed)?.into()).await?;
        Ok(())
    }
}
