//! Credentials of applications' containers on their site's bus. Each site holds a signing key
//! of its own account for this (`apps.signer.seed` of its bundle), so a host issues them itself,
//! also with the WAN down, and the key opens nothing beyond the site's account, which only the
//! site's leaf server knows. A credential may publish to its app's topics and receive replies at
//! the app's inbox prefix ([`scope::app_bus`]); it is a bearer token, so the simplest client
//! (a shell script) can use it, and it is handed to the container as a file, never in its
//! environment or command line.

use edge_types::Name;
use nkeys::KeyPair;

use crate::{scope, AuthError, Creds};

/// Signs application credentials for one site.
pub struct AppIssuer {
    signer: KeyPair,
    /// The site account's public key.
    account: String,
}

impl std::fmt::Debug for AppIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppIssuer").field("signer", &self.signer.public_key()).field("account", &self.account).finish()
    }
}

impl AppIssuer {
    /// From the site's signing key file and the site account's public key.
    pub fn from_seed_file(path: &std::path::Path, account: String) -> Result<Self, AuthError> {
        Ok(Self { signer: crate::leaf::read_signer(path)?, account })
    }

    /// A new credential for the containers of `app` (of `tenant`) at `site`: publishing to its
    /// `up` topics, reading its `down` ones.
    pub fn issue(
        &self,
        site: &Name,
        tenant: &Name,
        app: &Name,
        up: &[Name],
        down: &[Name],
    ) -> Result<Creds, AuthError> {
        let user = KeyPair::new_user();
        let name = format!("{site}/{tenant}/{app}");
        let scope = scope::app_bus(site, tenant, app, up, down);
        let jwt = scope::sign_user(scope, &self.signer, &self.account, &name, &user.public_key(), None, true)?;
        let seed = user.seed().map_err(|e| AuthError::Key(e.to_string()))?;
        Ok(Creds { jwt, seed })
    }
}

/// The public key of the account a user's credentials file is of: the account that signed it,
/// or the one its signing key signed for.
pub fn account_of_creds(path: &std::path::Path) -> Result<String, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io { path: path.to_path_buf(), source })?;
    let creds = Creds::parse(&text)?;
    let claims: crate::jwt::Claims<crate::claims::User> = crate::jwt::decode(&creds.jwt)?;
    Ok(if claims.nats.issuer_account.is_empty() { claims.iss } else { claims.nats.issuer_account })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_credential_opens_its_own_topics_only() {
        let signer = KeyPair::new_account();
        let issuer = AppIssuer { signer, account: KeyPair::new_account().public_key() };
        let n = |s: &str| Name::new(s).unwrap();
        let c = issuer.issue(&n("shop-1"), &n("acme"), &n("cam"), &[n("counts")], &[n("orders")]).unwrap();
        let claims: crate::jwt::Claims<crate::claims::User> = crate::jwt::decode(&c.jwt).unwrap();
        let publish = &claims.nats.publish.allow;
        assert_eq!(publish[0], "edge.v1.topic.acme.cam.counts");
        assert!(publish[1..].iter().all(|s| s.contains(".TOPIC_acme_cam_orders")), "{publish:?}");
        assert_eq!(claims.nats.subscribe.allow, vec!["_INBOX.app.acme.cam.>"]);
        assert!(claims.nats.bearer_token);
        assert_eq!(claims.nats.issuer_account, issuer.account);
        assert!(!format!("{issuer:?}").contains(&issuer.signer.seed().unwrap()));
    }
}
