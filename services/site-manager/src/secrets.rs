//! The secrets sealed to this site, as they arrive with its desired state. Each is opened with
//! the site key and checked (for this site, this key, untampered, not older than one already
//! seen) before it is believed; a refusal is counted, logged without the value, and put on the
//! site's audit trail. Opened values live only in memory, zeroed when dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use edge_seal::site::open;
use edge_types::secret::{AuditAction, AuditEvent, SealedSecret};
use edge_types::{subject, Name};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::buffer::EventBuffer;
use crate::keys::SiteKey;

/// An opened secret.
#[derive(Clone)]
pub struct Opened {
    pub version: u64,
    pub value: Arc<Zeroizing<String>>,
}

#[derive(Default)]
struct Inner {
    opened: HashMap<(Name, Name), Opened>,
    /// Envelopes that arrived before this host held the site key.
    waiting: HashMap<(Name, Name), SealedSecret>,
    /// Highest version seen per secret: an older one arriving later is a replay.
    highest: HashMap<(Name, Name), u64>,
}

pub struct SiteSecrets {
    site: Name,
    actor: String,
    key: watch::Receiver<Option<SiteKey>>,
    /// Only envelopes from this sender are opened, when set.
    trusted_sender: Option<String>,
    inner: Mutex<Inner>,
    buffer: Arc<EventBuffer>,
    /// The site's key bucket: tells a key being rotated in from a foreign one.
    keys: async_nats::jetstream::kv::Store,
    /// Envelopes refused (reported in heartbeats).
    pub rejected: Arc<AtomicU64>,
}

/// What an arriving envelope changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Changed,
    Unchanged,
    /// Kept until this host holds the site key.
    Waiting,
}

impl SiteSecrets {
    pub fn new(
        site: Name,
        host: &Name,
        key: watch::Receiver<Option<SiteKey>>,
        trusted_sender: Option<String>,
        buffer: Arc<EventBuffer>,
        keys: async_nats::jetstream::kv::Store,
    ) -> Self {
        Self {
            actor: format!("site-manager/{site}/{host}"),
            site,
            key,
            trusted_sender,
            inner: Default::default(),
            buffer,
            keys,
            rejected: Default::default(),
        }
    }

    /// Takes an envelope from the site's DESIRED stream.
    pub async fn receive(&self, env: SealedSecret) -> Received {
        let key = self.key.borrow().clone();
        // Sealed to the site's new key, which this host has not opened yet: it waits too.
        let newer = match &key {
            Some(k) if k.for_recipient(&env.recipient).is_none() => self.is_site_key(&env.recipient).await,
            _ => false,
        };
        let result = match key.filter(|_| !newer) {
            None => {
                let id = (env.tenant.clone(), env.name.clone());
                self.inner.lock().expect("secrets lock").waiting.insert(id, env);
                // The key may have arrived while this envelope was being put aside.
                if self.key.borrow().is_some() && self.key_arrived().await {
                    return Received::Changed;
                }
                return Received::Waiting;
            }
            Some(k) => self.apply(&k, &env),
        };
        match result {
            Ok(r) => r,
            Err(reason) => {
                self.refuse(&env, &reason).await;
                Received::Unchanged
            }
        }
    }

    /// Whether `public` is the site's key as its bucket holds it now.
    async fn is_site_key(&self, public: &str) -> bool {
        matches!(self.keys.get("site").await, Ok(Some(v)) if v.as_ref() == public.as_bytes())
    }

    /// Opens what waited for the site key; true when anything changed.
    pub async fn key_arrived(&self) -> bool {
        let Some(k) = self.key.borrow().clone() else { return false };
        let waiting: Vec<SealedSecret> =
            self.inner.lock().expect("secrets lock").waiting.drain().map(|(_, e)| e).collect();
        let mut changed = false;
        for env in waiting {
            if k.for_recipient(&env.recipient).is_none() && self.is_site_key(&env.recipient).await {
                let id = (env.tenant.clone(), env.name.clone());
                self.inner.lock().expect("secrets lock").waiting.insert(id, env);
                continue;
            }
            match self.apply(&k, &env) {
                Ok(r) => changed |= r == Received::Changed,
                Err(reason) => self.refuse(&env, &reason).await,
            }
        }
        changed
    }

    fn apply(&self, k: &SiteKey, env: &SealedSecret) -> Result<Received, String> {
        let id = (env.tenant.clone(), env.name.clone());
        let mut inner = self.inner.lock().expect("secrets lock");
        let highest = inner.highest.get(&id).copied().unwrap_or(0);
        if env.version < highest {
            return Err(format!("version {} is older than version {highest} already received (replay)", env.version));
        }
        if env.sealed.is_none() {
            inner.highest.insert(id.clone(), env.version);
            return Ok(if inner.opened.remove(&id).is_some() { Received::Changed } else { Received::Unchanged });
        }
        // The current site key, or an earlier one for what is not re-sealed yet.
        let key = k.for_recipient(&env.recipient).unwrap_or(&k.key);
        let payload = open(key, &self.site, env, self.trusted_sender.as_deref()).map_err(|e| e.to_string())?;
        inner.highest.insert(id.clone(), env.version);
        let value = Arc::new(Zeroizing::new(payload.value.0.clone()));
        let same = inner.opened.get(&id).is_some_and(|o| o.version == env.version && *o.value == *value);
        inner.opened.insert(id, Opened { version: env.version, value });
        Ok(if same { Received::Unchanged } else { Received::Changed })
    }

    async fn refuse(&self, env: &SealedSecret, reason: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::error!(tenant = %env.tenant, secret = %env.name, version = env.version, %reason, "refused a sealed secret");
        let mut e = self.event(AuditAction::Rejected, &env.tenant, &env.name, env.version);
        e.detail = Some(reason.chars().take(256).collect());
        self.audit(e).await;
    }

    /// An opened secret of `tenant`.
    pub fn get(&self, tenant: &Name, name: &Name) -> Option<Opened> {
        self.inner.lock().expect("secrets lock").opened.get(&(tenant.clone(), name.clone())).cloned()
    }

    /// Versions of the opened secrets, by tenant and name.
    pub fn versions(&self) -> HashMap<(Name, Name), u64> {
        let inner = self.inner.lock().expect("secrets lock");
        inner.opened.iter().map(|(id, o)| (id.clone(), o.version)).collect()
    }

    fn event(&self, action: AuditAction, tenant: &Name, name: &Name, version: u64) -> AuditEvent {
        AuditEvent {
            at_ms: edge_bus::time::now_ms(),
            actor: self.actor.clone(),
            action,
            tenant: tenant.clone(),
            name: name.clone(),
            version,
            site: Some(self.site.clone()),
            detail: None,
        }
    }

    /// Records that a secret was given to a container.
    pub async fn read_by(&self, tenant: &Name, name: &Name, version: u64, container: &str) {
        let mut e = self.event(AuditAction::Read, tenant, name, version);
        e.detail = Some(container.chars().take(256).collect());
        self.audit(e).await;
    }

    async fn audit(&self, e: AuditEvent) {
        let body = serde_json::to_vec(&e).expect("audit events serialize");
        let id = format!("audit.{}.{}.{}.{:?}.{}.{}", self.site, e.tenant, e.name, e.action, e.version, e.at_ms);
        if let Err(err) = self.buffer.publish(subject::site_audit(&self.site), body, id).await {
            tracing::warn!(error = %err, "audit event not stored at the site");
        }
    }
}
