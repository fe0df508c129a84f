//! Hosts that join a site with a key of their own (`edgectl host invite SITE HOST`): the host
//! makes its key, presents the invitation's one-time token with the key's public half (signed,
//! as a site's join is, [`crate::leaf`]), and once the centre approves it receives a
//! credential of its own in the site's account, signed by the hosts' signing key that every
//! site account lists. The credential does not expire (a host offline for months keeps
//! working); blocking the host revokes it in the site's account
//! ([`crate::Authority::set_site_user_revoked`]), which the site's leader gives its leaf server.

use edge_types::Name;
use nkeys::KeyPair;

use crate::leaf::RenewalError;
use crate::{scope, AuthError};

/// The name a host's user carries in its JWT.
pub fn user_name(site: &Name, host: &Name) -> String {
    format!("{site}/{host}")
}

fn purpose(host: &Name) -> String {
    format!("host-join {host}")
}

/// A host's join request: its public key and the signature over site, host and time.
pub fn sign_join(seed: &str, site: &Name, host: &Name, at_ms: u64) -> Result<(String, String), AuthError> {
    let key = KeyPair::from_seed(seed).map_err(|_| AuthError::Invalid("no valid seed".into()))?;
    Ok((key.public_key(), crate::leaf::sign(&purpose(host), &key, site, at_ms)?))
}

/// Checks a host's join request.
pub fn check_join(
    user: &str,
    site: &Name,
    host: &Name,
    at_ms: u64,
    signature: &str,
    now_ms: u64,
) -> Result<(), RenewalError> {
    crate::leaf::check_signed(&purpose(host), user, site, at_ms, signature, now_ms)
}

/// Issues hosts' credentials: what the scheduler holds (`SCHEDULER_HOST_SIGNER`).
pub struct HostIssuer {
    signer: KeyPair,
}

impl std::fmt::Debug for HostIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostIssuer").field("signer", &self.signer.public_key()).finish()
    }
}

impl HostIssuer {
    pub fn from_seed_file(path: &std::path::Path) -> Result<Self, AuthError> {
        Ok(Self { signer: crate::leaf::read_signer(path)? })
    }

    /// The JWT of `host`'s user `user` (public key) in `site`'s account (`account`).
    pub fn issue(&self, account: &str, site: &Name, host: &Name, user: &str) -> Result<String, AuthError> {
        scope::sign_user(scope::site_host(site, host), &self.signer, account, &user_name(site, host), user, None, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_join_is_bound_to_its_host() {
        let seed = KeyPair::new_user().seed().unwrap();
        let (site, h1, h2) = (Name::new("shop-1").unwrap(), Name::new("h1").unwrap(), Name::new("h2").unwrap());
        let (pk, sig) = sign_join(&seed, &site, &h1, 1_000).unwrap();
        assert_eq!(check_join(&pk, &site, &h1, 1_000, &sig, 2_000), Ok(()));
        assert_eq!(check_join(&pk, &site, &h2, 1_000, &sig, 2_000), Err(RenewalError::Signature));
        // Not a site join either.
        assert_eq!(crate::leaf::check_join(&pk, &site, 1_000, &sig, 2_000), Err(RenewalError::Signature));
    }
}
