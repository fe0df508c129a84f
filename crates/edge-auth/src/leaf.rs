//! A site's leaf-link credential over its life. It is issued with an expiry (a credential
//! copied off a site stops working by itself) and renewed ahead of it by the scheduler
//! (`edge.v1.api.site.renew.<site>`), which needs no working leaf link: a site whose credential
//! expired while it was offline renews on its way back. The proof is the site's own: its
//! current credential (signed by the control account's signer, naming the site) and a
//! signature by the credential's key over the site, the time and the key. Expiry and renewal
//! never touch the site's own account, so local operation never stops.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use edge_types::Name;
use nkeys::KeyPair;

use crate::claims::{self, User};
use crate::creds::Creds;
use crate::jwt::{self, Claims};
use crate::scope;
use crate::AuthError;

/// How long a leaf-link credential is valid unless the authority is told otherwise.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// How far a renewal request's time may be from the scheduler's clock.
pub const RENEWAL_SKEW_MS: u64 = 5 * 60 * 1000;

/// The name of a site's leaf-link user, which its JWT carries (signed).
pub fn user_name(site: &Name) -> String {
    format!("{site}-leaf")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The JWT of `site`'s leaf-link user `user` (public key) in the control account
/// (`account`, public key), signed by the account's `signer`, valid for `valid` from now.
pub fn issue(signer: &KeyPair, account: &str, site: &Name, user: &str, valid: Duration) -> Result<String, AuthError> {
    let exp = now_secs() + valid.as_secs().max(1);
    scope::sign_user(scope::site_leaf(site), signer, account, &user_name(site), user, Some(exp), false)
}

/// When a JWT expires, Unix seconds (`None`: never).
pub fn expires_at(token: &str) -> Result<Option<u64>, AuthError> {
    Ok(jwt::decode::<User>(token)?.exp)
}

/// What a site signs: a join (with a new key) or a renewal (with its current one).
fn signed_message(purpose: &str, site: &Name, at_ms: u64, user: &str) -> String {
    format!("edge.v1 leaf {purpose} {site} {at_ms} {user}")
}

pub(crate) fn sign(purpose: &str, key: &KeyPair, site: &Name, at_ms: u64) -> Result<String, AuthError> {
    let sig = key
        .sign(signed_message(purpose, site, at_ms, &key.public_key()).as_bytes())
        .map_err(|e| AuthError::Key(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(sig))
}

pub(crate) fn verify(purpose: &str, user: &str, site: &Name, at_ms: u64, signature: &str) -> bool {
    let Ok(key) = KeyPair::from_public_key(user) else { return false };
    let Ok(sig) = URL_SAFE_NO_PAD.decode(signature) else { return false };
    key.verify(signed_message(purpose, site, at_ms, user).as_bytes(), &sig).is_ok()
}

/// The signature (base64url) a site's leaf-link credential `creds` makes over a renewal
/// request of `site` at `at_ms`.
pub fn sign_renewal(creds: &Creds, site: &Name, at_ms: u64) -> Result<String, AuthError> {
    let key =
        KeyPair::from_seed(&creds.seed).map_err(|_| AuthError::Invalid("credentials hold no valid seed".into()))?;
    sign("renewal", &key, site, at_ms)
}

/// The signature a new leaf-link key (its seed) makes over `site`'s join at `at_ms`, and the
/// key's public half.
pub fn sign_join(seed: &str, site: &Name, at_ms: u64) -> Result<(String, String), AuthError> {
    let key = KeyPair::from_seed(seed).map_err(|_| AuthError::Invalid("no valid seed".into()))?;
    Ok((key.public_key(), sign("join", &key, site, at_ms)?))
}

/// A new leaf-link key's seed, made at the site.
pub fn new_key_seed() -> Result<String, AuthError> {
    KeyPair::new_user().seed().map_err(|e| AuthError::Key(e.to_string()))
}

/// Whether a join of `site` at `at_ms` (near `now_ms`) is signed by `user`'s key.
pub fn check_join(user: &str, site: &Name, at_ms: u64, signature: &str, now_ms: u64) -> Result<(), RenewalError> {
    check_signed("join", user, site, at_ms, signature, now_ms)
}

/// Checks a request signed by `user`'s key for `purpose` at `at_ms` (near `now_ms`).
pub(crate) fn check_signed(
    purpose: &str,
    user: &str,
    site: &Name,
    at_ms: u64,
    signature: &str,
    now_ms: u64,
) -> Result<(), RenewalError> {
    if at_ms.abs_diff(now_ms) > RENEWAL_SKEW_MS {
        return Err(RenewalError::Skew);
    }
    if !verify(purpose, user, site, at_ms, signature) {
        return Err(RenewalError::Signature);
    }
    Ok(())
}

/// A one-time join token: 32 random bytes, base32 (no padding).
pub fn new_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| AuthError::Key(format!("no randomness: {e}")))?;
    Ok(data_encoding::BASE32_NOPAD.encode(&bytes))
}

/// Lower-case hex SHA-256 of a token: what the scheduler keeps.
pub fn token_digest(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a renewal is refused (never a secret in it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenewalError {
    #[error("/jwt: {0}")]
    Jwt(String),
    #[error("/jwt: not issued by this control plane's signer")]
    Issuer,
    #[error("/jwt: is not the leaf credential of site {0}")]
    OtherSite(Name),
    #[error("/at_ms: more than 5 minutes from the hub's clock")]
    Skew,
    #[error("/signature: does not verify with the key")]
    Signature,
}

/// Checks a renewal request of `site`: `token` (the current JWT, expired or not) must be
/// `site`'s leaf credential issued by `signer`, `at_ms` near `now_ms`, and `signature` made by
/// the JWT's key. Returns the JWT's claims to renew.
pub fn check_renewal(
    signer: &str,
    site: &Name,
    token: &str,
    at_ms: u64,
    signature: &str,
    now_ms: u64,
) -> Result<Claims<User>, RenewalError> {
    let claims: Claims<User> = jwt::decode(token).map_err(|e| RenewalError::Jwt(e.to_string()))?;
    if claims.iss != signer {
        return Err(RenewalError::Issuer);
    }
    if claims.name != user_name(site) {
        return Err(RenewalError::OtherSite(site.clone()));
    }
    if at_ms.abs_diff(now_ms) > RENEWAL_SKEW_MS {
        return Err(RenewalError::Skew);
    }
    if !verify("renewal", &claims.sub, site, at_ms, signature) {
        return Err(RenewalError::Signature);
    }
    Ok(claims)
}

/// A signing key from its seed file.
pub(crate) fn read_signer(path: &std::path::Path) -> Result<KeyPair, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io { path: path.to_path_buf(), source })?;
    KeyPair::from_seed(text.trim()).map_err(|_| AuthError::Invalid(format!("{} holds no valid seed", path.display())))
}

/// What a scheduler holds to renew leaf-link credentials: the control account's signing key
/// (`accounts/EDGE.signer.seed` of the authority) and how long a renewal is valid.
pub struct Renewer {
    signer: KeyPair,
    pub valid: Duration,
}

impl std::fmt::Debug for Renewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewer").field("signer", &self.signer.public_key()).field("valid", &self.valid).finish()
    }
}

impl Renewer {
    /// Reads the signing key's seed from `path` (never logged).
    pub fn from_seed_file(path: &std::path::Path, valid: Duration) -> Result<Self, AuthError> {
        Ok(Self { signer: read_signer(path)?, valid })
    }

    /// Checks a renewal request ([`check_renewal`]) and issues the same identity anew:
    /// `(jwt, expires_at)`.
    pub fn renew(
        &self,
        site: &Name,
        token: &str,
        at_ms: u64,
        signature: &str,
        now_ms: u64,
    ) -> Result<(String, u64), RenewalError> {
        let old = check_renewal(&self.signer.public_key(), site, token, at_ms, signature, now_ms)?;
        let jwt = issue(&self.signer, &old.nats.issuer_account, site, &old.sub, self.valid)
            .map_err(|e| RenewalError::Jwt(e.to_string()))?;
        let exp = expires_at(&jwt).map_err(|e| RenewalError::Jwt(e.to_string()))?.unwrap_or(0);
        Ok((jwt, exp))
    }

    /// The first credential of a site that joined with key `user` (public), in `account`:
    /// `(jwt, expires_at)`.
    pub fn first(&self, account: &str, site: &Name, user: &str) -> Result<(String, u64), AuthError> {
        let jwt = issue(&self.signer, account, site, user, self.valid)?;
        let exp = expires_at(&jwt)?.unwrap_or(0);
        Ok((jwt, exp))
    }
}

/// What the shared enrolment user may ask: renewals and joins, nothing else.
pub const ENROL_OPS: [edge_types::subject::ApiOp; 2] =
    [edge_types::subject::ApiOp::SiteRenew, edge_types::subject::ApiOp::SiteJoin];

/// The shared enrolment user's permissions: ask for renewals, nothing else.
pub fn enrol_scope() -> scope::Scope {
    scope::Scope {
        publish: claims::SubjectPermission::allow(ENROL_OPS.map(|op| op.subject_for_any())),
        subscribe: claims::SubjectPermission::allow(["_INBOX.>"]),
        connection_types: vec![claims::CONN_STANDARD.to_string()],
        tags: vec!["role:enrol".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_renews_its_own_credential_only() {
        let signer = KeyPair::new_account();
        let (site, other) = (Name::new("shop-1").unwrap(), Name::new("shop-2").unwrap());
        let user = KeyPair::new_user();
        let token = issue(&signer, "AEDGE", &site, &user.public_key(), Duration::from_secs(60)).unwrap();
        let creds = Creds { jwt: token.clone(), seed: user.seed().unwrap() };
        let now = 1_000_000;
        let sig = sign_renewal(&creds, &site, now).unwrap();
        let ok = check_renewal(&signer.public_key(), &site, &token, now, &sig, now + 1000).unwrap();
        assert_eq!(ok.sub, user.public_key());
        assert!(expires_at(&token).unwrap().is_some());

        assert_eq!(
            check_renewal(&signer.public_key(), &other, &token, now, &sig, now),
            Err(RenewalError::OtherSite(other))
        );
        assert_eq!(
            check_renewal(&signer.public_key(), &site, &token, now, &sig, now + RENEWAL_SKEW_MS + 1),
            Err(RenewalError::Skew)
        );
        let stranger = KeyPair::new_account();
        assert_eq!(check_renewal(&stranger.public_key(), &site, &token, now, &sig, now), Err(RenewalError::Issuer));
        // A key that is not the credential's cannot ask.
        let thief = Creds { jwt: token.clone(), seed: KeyPair::new_user().seed().unwrap() };
        let forged = sign_renewal(&thief, &site, now).unwrap();
        assert_eq!(check_renewal(&signer.public_key(), &site, &token, now, &forged, now), Err(RenewalError::Signature));

        // The renewer issues the same key and account, valid from now.
        let renewer = Renewer { signer, valid: Duration::from_secs(3600) };
        let (fresh, exp) = renewer.renew(&site, &token, now, &sig, now).unwrap();
        let fresh: Claims<User> = jwt::decode(&fresh).unwrap();
        assert_eq!((fresh.sub.as_str(), fresh.nats.issuer_account.as_str()), (user.public_key().as_str(), "AEDGE"));
        assert!(exp >= now_secs() + 3599);
    }

    #[test]
    fn a_join_is_signed_by_the_key_it_presents() {
        let site = Name::new("shop-9").unwrap();
        let seed = new_key_seed().unwrap();
        let (key, sig) = sign_join(&seed, &site, 5_000).unwrap();
        assert_eq!(check_join(&key, &site, 5_000, &sig, 6_000), Ok(()));
        let (other, _) = sign_join(&new_key_seed().unwrap(), &site, 5_000).unwrap();
        assert_eq!(check_join(&other, &site, 5_000, &sig, 6_000), Err(RenewalError::Signature));
        assert_eq!(check_join(&key, &Name::new("shop-8").unwrap(), 5_000, &sig, 6_000), Err(RenewalError::Signature));
        // A renewal signature is not a join signature.
        let renewal = sign("renewal", &KeyPair::from_seed(&seed).unwrap(), &site, 5_000).unwrap();
        assert_eq!(check_join(&key, &site, 5_000, &renewal, 6_000), Err(RenewalError::Signature));
        let token = new_token().unwrap();
        assert_eq!(token_digest(&token).len(), 64);
        assert_ne!(token_digest(&token), token_digest(&new_token().unwrap()));
    }
}
