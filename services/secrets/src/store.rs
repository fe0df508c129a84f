//! The `secret.*` operations: put, rotate, list, describe, delete. Values are encrypted with
//! the tenant's data key before they are stored and never leave in a reply or a log line.

use edge_bus::api::invalid;
use edge_bus::kv::{self, Change};
use edge_types::api::{ApiError, ErrorCode};
use edge_types::block::Caller;
use edge_types::schema::decode;
use edge_types::secret::*;
use edge_types::Name;

use crate::audit::event;
use crate::Secrets;

/// Versions whose metadata a record keeps (values: only the current one).
const KEPT_VERSIONS: usize = 100;

/// KV key of a secret.
pub fn secret_key(tenant: &Name, name: &Name) -> String {
    format!("{tenant}.{name}")
}

/// What a secret's ciphertext is bound to: its tenant, name and version.
pub fn context(tenant: &Name, name: &Name, version: u64) -> String {
    format!("{tenant}/{name}/{version}")
}

fn actor(a: &Option<String>) -> String {
    a.clone().unwrap_or_else(|| "anonymous".into())
}

/// `put` (the secret must not exist) and `rotate` (it must).
pub async fn write(s: &Secrets, caller: &Caller, body: &[u8], rotate: bool) -> Result<SecretInfo, ApiError> {
    let mut req: SecretWrite = decode(body).map_err(invalid)?;
    req.tenant = caller.tenant_for(&req.tenant, "/tenant")?;
    let size = req.value.0.len();
    if size > MAX_VALUE_BYTES {
        return Err(ApiError::invalid("/value", format!("value is {size} bytes; the limit is {MAX_VALUE_BYTES}")));
    }
    let (tenant, name, by) = (req.tenant.clone(), req.name.clone(), actor(&req.actor));
    let dek = s.keys.tenant(&tenant).await?;
    let floor = if rotate { 0 } else { s.keys.version_floor(&tenant, &name).await? };
    let now = edge_bus::time::now_ms();
    let mut refused: Option<ApiError> = None;
    let stored = kv::update::<StoredSecret, _>(&s.buckets.secrets, &secret_key(&tenant, &name), |cur| {
        refused = match (cur, rotate) {
            (Some(_), false) => Some(ApiError::new(
                ErrorCode::Conflict,
                format!("secret {tenant}/{name} exists; rotate it to give it a new value"),
            )),
            (None, true) => Some(ApiError::not_found(format!("secret {tenant}/{name} does not exist; put it first"))),
            _ => None,
        };
        if refused.is_some() {
            return Change::Keep;
        }
        let version = cur.map(|c| c.version).unwrap_or(floor) + 1;
        let mut versions = cur.map(|c| c.versions.clone()).unwrap_or_default();
        versions.push(SecretVersion { version, created_at_ms: now, created_by: by.clone(), size_bytes: size as u64 });
        let skip = versions.len().saturating_sub(KEPT_VERSIONS);
        versions.drain(..skip);
        let ciphertext = dek.seal(&context(&tenant, &name, version), req.value.0.as_bytes());
        Change::Put(StoredSecret { tenant: tenant.clone(), name: name.clone(), version, versions, ciphertext })
    })
    .await
    .map_err(crate::SecretsError::from)?;
    if let Some(e) = refused {
        return Err(e);
    }
    let stored = stored.expect("a put or rotate stores a record");
    let action = if rotate { AuditAction::Rotated } else { AuditAction::Stored };
    s.audit.record([event(&by, action, &tenant, &name, stored.version, None)]).await;
    tracing::info!(%tenant, secret = %name, version = stored.version, ?action, "secret written");
    s.changed.raise();
    Ok(s.info(&stored))
}

async fn get(s: &Secrets, tenant: &Name, name: &Name) -> Result<StoredSecret, ApiError> {
    kv::get::<StoredSecret>(&s.buckets.secrets, &secret_key(tenant, name))
        .await
        .map_err(crate::SecretsError::from)?
        .map(|(r, _)| r)
        .ok_or_else(|| ApiError::not_found(format!("secret {tenant}/{name} does not exist")))
}

pub async fn describe(s: &Secrets, caller: &Caller, body: &[u8]) -> Result<SecretInfo, ApiError> {
    let mut req: SecretName = decode(body).map_err(invalid)?;
    req.tenant = caller.tenant_for(&req.tenant, "/tenant")?;
    Ok(s.info(&get(s, &req.tenant, &req.name).await?))
}

pub async fn list(s: &Secrets, caller: &Caller, body: &[u8]) -> Result<SecretListReply, ApiError> {
    let req: SecretListRequest = decode(body).map_err(invalid)?;
    let tenant = caller.tenant_for(&req.tenant.unwrap_or_else(default_tenant), "/tenant")?;
    let all =
        kv::list::<StoredSecret>(&s.buckets.secrets, &format!("{tenant}.")).await.map_err(crate::SecretsError::from)?;
    let secrets = all.iter().filter(|(_, r)| r.tenant == tenant).map(|(_, r)| s.info(r)).collect();
    Ok(SecretListReply { secrets })
}

/// Deletes a secret no application references; it is then withdrawn from every site.
pub async fn delete(s: &Secrets, caller: &Caller, body: &[u8]) -> Result<SecretDeleteReply, ApiError> {
    let mut req: SecretName = decode(body).map_err(invalid)?;
    req.tenant = caller.tenant_for(&req.tenant, "/tenant")?;
    let current = get(s, &req.tenant, &req.name).await?;
    let users = s.apps_using(&req.tenant, &req.name);
    if !users.is_empty() {
        let names: Vec<&str> = users.iter().map(Name::as_str).collect();
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("secret {}/{} is used by {}; remove it from them first", req.tenant, req.name, names.join(", ")),
        ));
    }
    s.keys.set_version_floor(&req.tenant, &req.name, current.version).await?;
    kv::update::<StoredSecret, _>(&s.buckets.secrets, &secret_key(&req.tenant, &req.name), |_| Change::Delete)
        .await
        .map_err(crate::SecretsError::from)?;
    let by = actor(&req.actor);
    s.audit.record([event(&by, AuditAction::Deleted, &req.tenant, &req.name, current.version, None)]).await;
    tracing::info!(tenant = %req.tenant, secret = %req.name, "secret deleted");
    s.changed.raise();
    Ok(SecretDeleteReply { tenant: req.tenant, name: req.name })
}
