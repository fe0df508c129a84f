//! The keys of the service: the master key (from configuration), each tenant's data key and
//! the service's sealing xkey, both stored in `edge_secret_keys` wrapped by the master key.
//! A key is created once (compare-and-swap create; a concurrent creator's key wins).

use async_nats::jetstream::kv::{CreateErrorKind, Store};
use dashmap::DashMap;
use edge_seal::envelope::Key;
use edge_seal::XKey;
use edge_types::Name;
use zeroize::Zeroizing;

use crate::error::SecretsError;

const SENDER: &str = "sender";

pub struct Keyring {
    master: Key,
    kv: Store,
    tenants: DashMap<Name, Key>,
    /// Seals secrets to sites; its public key is in every sealed envelope.
    pub sender: XKey,
}

impl Keyring {
    /// Opens the stored keys with `master`, creating the sealing key on first start. A master
    /// key that does not open what is stored is an error: nothing is overwritten.
    pub async fn open(master: Key, kv: Store) -> Result<Self, SecretsError> {
        let wrapped = get_or_create(&kv, SENDER, || {
            let key = XKey::new();
            let seed = Zeroizing::new(key.seed().expect("new keys have seeds"));
            master.seal(SENDER, seed.as_bytes())
        })
        .await?;
        let seed = master
            .open(SENDER, &wrapped)
            .map_err(|source| SecretsError::WrongMasterKey { what: SENDER.into(), source })?;
        let seed = std::str::from_utf8(&seed).map_err(|_| SecretsError::MasterKey("sealing key is not text".into()))?;
        let sender = XKey::from_seed(seed).map_err(|_| SecretsError::MasterKey("sealing key is not a seed".into()))?;
        Ok(Self { master, kv, tenants: DashMap::new(), sender })
    }

    /// The data key of `tenant`, created on first use.
    pub async fn tenant(&self, tenant: &Name) -> Result<Key, SecretsError> {
        if let Some(k) = self.tenants.get(tenant) {
            return Ok(k.clone());
        }
        let key_name = format!("tenant.{tenant}");
        let context = format!("tenant/{tenant}");
        let wrapped = get_or_create(&self.kv, &key_name, || self.master.wrap(&context, &Key::generate())).await?;
        let key = self
            .master
            .unwrap_key(&context, &wrapped)
            .map_err(|source| SecretsError::WrongMasterKey { what: key_name, source })?;
        self.tenants.insert(tenant.clone(), key.clone());
        Ok(key)
    }
}

impl Keyring {
    /// The last version a deleted secret had: a secret put again continues after it, so a site
    /// that still remembers the old versions never takes the new one for a replay.
    pub async fn version_floor(&self, tenant: &Name, name: &Name) -> Result<u64, SecretsError> {
        match self.kv.get(format!("last.{tenant}.{name}")).await.map_err(SecretsError::js)? {
            Some(v) => Ok(std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()).unwrap_or(0)),
            None => Ok(0),
        }
    }

    /// Records the last version of a secret being deleted.
    pub async fn set_version_floor(&self, tenant: &Name, name: &Name, version: u64) -> Result<(), SecretsError> {
        self.kv.put(format!("last.{tenant}.{name}"), version.to_string().into()).await.map_err(SecretsError::js)?;
        Ok(())
    }
}

/// The stored string under `key`, or `make()`'s, stored if nobody stored one first.
async fn get_or_create(kv: &Store, key: &str, make: impl Fn() -> String) -> Result<String, SecretsError> {
    for _ in 0..3 {
        if let Some(v) = kv.get(key).await.map_err(SecretsError::js)? {
            return String::from_utf8(v.to_vec())
                .map_err(|_| SecretsError::MasterKey(format!("stored {key} is not text")));
        }
        let fresh = make();
        match kv.create(key, fresh.clone().into()).await {
            Ok(_) => return Ok(fresh),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => continue,
            Err(e) => return Err(SecretsError::js(e)),
        }
    }
    Err(SecretsError::JetStream(format!("{key} was created and removed concurrently")))
}
