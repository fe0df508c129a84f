//! Giving the hub's resolver an updated account JWT (a revocation, a reinstatement): a request
//! on `$SYS.REQ.CLAIMS.UPDATE` by a user of the system account. The hub applies it at once:
//! connections of revoked users are closed and refused from then on.

use std::time::Duration;

use crate::BusError;

const CLAIMS_UPDATE: &str = "$SYS.REQ.CLAIMS.UPDATE";

/// Sends `jwt` to the resolver of the server `system` is connected to (and, through the
/// system account, to the other servers of its cluster); an error when a server refuses it.
pub async fn push_account_jwt(system: &async_nats::Client, jwt: &str) -> Result<(), BusError> {
    update(system, CLAIMS_UPDATE, jwt).await
}

/// Sends `jwt`, the JWT of account `account` (public key), to the server `system` is connected
/// to on the account's own update subject, which every resolver takes, also a fixed (memory)
/// one: how a site's leader gives its leaf server the site account's revocations.
pub async fn push_account_jwt_of(system: &async_nats::Client, account: &str, jwt: &str) -> Result<(), BusError> {
    update(system, &format!("$SYS.REQ.ACCOUNT.{account}.CLAIMS.UPDATE"), jwt).await
}

async fn update(system: &async_nats::Client, subject: &str, jwt: &str) -> Result<(), BusError> {
    let req = async_nats::Request::new().payload(jwt.to_string().into()).timeout(Some(Duration::from_secs(10)));
    let reply = system
        .send_request(subject.to_string(), req)
        .await
        .map_err(|e| BusError::Claims(format!("no resolver answered {subject}: {e}")))?;
    let v: serde_json::Value = serde_json::from_slice(&reply.payload)
        .map_err(|_| BusError::Claims("the resolver's reply is not JSON".into()))?;
    if let Some(err) = v.get("error") {
        let what = err.get("description").and_then(|d| d.as_str()).unwrap_or("refused");
        return Err(BusError::Claims(format!("the resolver refused the account update: {what}")));
    }
    Ok(())
}
