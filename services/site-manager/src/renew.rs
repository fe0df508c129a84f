//! Keeps the site's leaf-link credential valid. The site's leader checks its expiry every
//! `--renew-check-secs`; with a third of its life left (or none: back from months offline) it
//! asks the hub's scheduler for a new one (`edge.v1.api.site.renew.<site>`) over a connection of
//! its own with the shared enrolment credential, which works without the leaf link, proving the
//! request with the credential's key (`edge_auth::leaf`). The new file replaces the old one
//! atomically; the leaf server reads it on its next connect. None of this touches the site's
//! own account: an expired leaf credential never stops anything at the site.
//!
//! A site that joins by call-home has no leaf credential at first, only the invitation's
//! one-time token (`--join-token`): the leader makes the leaf-link key here (kept in
//! `leaf.seed` next to the credential until it is approved), presents the token with the
//! key's public half (`edge.v1.api.site.join.<site>`) and asks again until the centre approves;
//! then it writes the credential and forgets the token.

use std::path::PathBuf;
use std::time::Duration;

use edge_auth::claims::User;
use edge_auth::jwt::{self, Claims};
use edge_auth::{leaf, Creds};
use edge_types::join::{SiteJoin, SiteJoined};
use edge_types::site::{LeafRenewal, LeafRenewed};
use edge_types::subject::ApiOp;
use edge_types::Name;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why a renewal did not happen this time (retried at the next check).
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("leaf credentials: {0}")]
    Creds(#[from] edge_auth::AuthError),
    #[error("cannot reach the hub for a renewal: {0}")]
    Connect(#[from] edge_bus::BusError),
    #[error("renewal refused or failed: {0}")]
    Request(#[from] edge_bus::api::RequestError),
    #[error("the hub's renewal is not for this site's key")]
    WrongKey,
    #[error("no leaf credential at {0} and no join token to get one")]
    NoCredential(PathBuf),
}

/// What a check did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The credential is far from its expiry.
    Valid,
    /// Renewed; the new expiry (Unix seconds).
    Renewed(u64),
    /// Joined and approved: the site's first credential, and its expiry.
    Joined(u64),
    /// Joined; the centre has not approved the site yet.
    AwaitingApproval,
}

pub struct LeafRenewer {
    pub site: Name,
    /// The leaf server's credentials file.
    pub creds: PathBuf,
    /// A read-only copy to take when newer (a Kubernetes Secret's), see [`take_newer`].
    pub creds_from: Option<PathBuf>,
    /// The hub's client URL with the enrolment credential.
    pub hub: edge_bus::Endpoint,
    pub every: Duration,
    /// Only the site's leader renews (the file is the site's, not the host's).
    pub leading: watch::Receiver<bool>,
    /// The invitation's one-time token, for a site without a credential yet.
    pub join_token: Option<PathBuf>,
}

impl LeafRenewer {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !*self.leading.borrow() {
                continue;
            }
            match self.check().await {
                Ok(Outcome::Renewed(exp)) => {
                    tracing::info!(site = %self.site, expires_at = exp, "leaf-link credential renewed")
                }
                Ok(Outcome::Joined(exp)) => {
                    tracing::info!(site = %self.site, expires_at = exp, "site joined: leaf-link credential received")
                }
                Ok(Outcome::AwaitingApproval) => {
                    tracing::info!(site = %self.site, "joined; waiting for the centre's approval")
                }
                Ok(Outcome::Valid) => {}
                Err(e) => tracing::warn!(site = %self.site, error = %e, "leaf-link credential not renewed; will retry"),
            }
        }
    }

    /// Renews when due, or joins when the site has no credential yet.
    pub async fn check(&self) -> Result<Outcome, RenewError> {
        if let Some(from) = &self.creds_from {
            if take_newer(from, &self.creds)? {
                tracing::info!(from = %from.display(), "leaf-link credential taken from the read-only copy");
            }
        }
        if !self.creds.exists() {
            return self.join().await;
        }
        let text = std::fs::read_to_string(&self.creds)
            .map_err(|source| edge_auth::AuthError::Io { path: self.creds.clone(), source })?;
        let creds = Creds::parse(&text)?;
        let claims: Claims<User> = jwt::decode(&creds.jwt)?;
        let now = edge_bus::time::now_ms() / 1000;
        if !due(claims.iat, claims.exp, now) {
            return Ok(Outcome::Valid);
        }
        let at_ms = edge_bus::time::now_ms();
        let req = LeafRenewal {
            site: self.site.clone(),
            jwt: creds.jwt.clone(),
            at_ms,
            signature: leaf::sign_renewal(&creds, &self.site, at_ms)?,
        };
        let client = edge_bus::connect(&self.hub, "site-manager-renewal", false).await?;
        let reply: LeafRenewed =
            edge_bus::api::request_as_site(&client, ApiOp::SiteRenew, &self.site, &req, Duration::from_secs(10))
                .await?;
        let fresh: Claims<User> = jwt::decode(&reply.jwt)?;
        if fresh.sub != claims.sub || reply.site != self.site {
            return Err(RenewError::WrongKey);
        }
        edge_auth::creds::write_file(&self.creds, &Creds { jwt: reply.jwt, seed: creds.seed })?;
        Ok(Outcome::Renewed(reply.expires_at))
    }

    /// The site's first call-home with the invitation's token.
    async fn join(&self) -> Result<Outcome, RenewError> {
        let Some(token_file) = &self.join_token else { return Err(RenewError::NoCredential(self.creds.clone())) };
        join(&self.hub, &self.site, None, &self.creds, token_file).await
    }
}

/// Joins `site` (or, with `host`, as one of its hosts) with the invitation's one-time token in
/// `token_file`: makes the key (kept in `<creds>.seed` until approved; it never leaves this
/// machine), presents the token with the key's public half, and once approved writes the
/// credential to `creds` and forgets the token and the separate seed.
pub async fn join(
    hub: &edge_bus::Endpoint,
    site: &Name,
    host: Option<&Name>,
    creds: &std::path::Path,
    token_file: &std::path::Path,
) -> Result<Outcome, RenewError> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| edge_auth::AuthError::Io { path, source }
    };
    let token = std::fs::read_to_string(token_file).map_err(io(token_file))?.trim().to_string();
    let seed_file = creds.with_extension("seed");
    if !seed_file.exists() {
        edge_auth::creds::write_secret(&seed_file, &leaf::new_key_seed()?)?;
    }
    let seed = std::fs::read_to_string(&seed_file).map_err(io(&seed_file))?.trim().to_string();
    let at_ms = edge_bus::time::now_ms();
    let (public_key, signature) = match host {
        None => leaf::sign_join(&seed, site, at_ms)?,
        Some(h) => edge_auth::host::sign_join(&seed, site, h, at_ms)?,
    };
    let req =
        SiteJoin { site: site.clone(), host: host.cloned(), token, public_key: public_key.clone(), at_ms, signature };
    let client = edge_bus::connect(hub, "site-manager-join", false).await?;
    let reply: SiteJoined =
        edge_bus::api::request_as_site(&client, ApiOp::SiteJoin, site, &req, Duration::from_secs(10)).await?;
    let (Some(jwt), true) = (reply.jwt, reply.approved) else { return Ok(Outcome::AwaitingApproval) };
    if jwt::decode::<User>(&jwt)?.sub != public_key {
        return Err(RenewError::WrongKey);
    }
    edge_auth::creds::write_file(creds, &Creds { jwt, seed })?;
    // Spent: the token and the separate seed are no longer needed.
    let _ = std::fs::remove_file(&seed_file);
    let _ = std::fs::remove_file(token_file);
    Ok(Outcome::Joined(reply.expires_at.unwrap_or(0)))
}

/// Copies the credentials file `from` to `to` when `to` is missing or was issued earlier;
/// returns whether it did. A missing `from` (a site still to join) is not an error.
pub fn take_newer(from: &std::path::Path, to: &std::path::Path) -> Result<bool, edge_auth::AuthError> {
    let read = |path: &std::path::Path| -> Result<Creds, edge_auth::AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| edge_auth::AuthError::Io { path: path.to_path_buf(), source })?;
        Creds::parse(&text)
    };
    if !from.exists() {
        return Ok(false);
    }
    let offered = read(from)?;
    let newer = match to.exists() {
        false => true,
        true => jwt::decode::<User>(&offered.jwt)?.iat > jwt::decode::<User>(&read(to)?.jwt)?.iat,
    };
    if newer {
        edge_auth::creds::write_file(to, &offered)?;
    }
    Ok(newer)
}

/// Whether a credential issued at `iat` and expiring at `exp` (Unix seconds) is due for renewal
/// at `now`: with a third of its life left, or expired. One that never expires never is.
pub fn due(iat: u64, exp: Option<u64>, now: u64) -> bool {
    let Some(exp) = exp else { return false };
    let life = exp.saturating_sub(iat);
    exp.saturating_sub(now) <= life / 3
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn renews_with_a_third_of_its_life_left_or_after_it_expired() {
        assert!(!due(0, None, u64::MAX));
        assert!(!due(0, Some(90), 50));
        assert!(due(0, Some(90), 60));
        assert!(due(0, Some(90), 1_000_000), "expired while offline");
    }
}
