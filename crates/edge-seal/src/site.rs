//! Sealing a secret to one site: an xkey box (curve25519, XSalsa20-Poly1305) from the `secrets`
//! service's key to the site's public key. The site checks the box and everything inside it
//! against the envelope and itself before it believes a byte.

use base64::Engine;
use edge_types::secret::{SealedSecret, SecretPayload};
use edge_types::Name;
use nkeys::XKey;
use zeroize::Zeroizing;

use crate::SealError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Seals `payload` from `sender` to the site public key `recipient`.
pub fn seal(sender: &XKey, recipient: &str, payload: &SecretPayload) -> Result<SealedSecret, SealError> {
    let to =
        XKey::from_public_key(recipient).map_err(|_| SealError::BadKey("recipient is not a public xkey".into()))?;
    let plain = Zeroizing::new(serde_json::to_vec(payload).expect("payload serializes"));
    let boxed = sender.seal(&plain, &to).map_err(|_| SealError::BadKey("sender has no private key".into()))?;
    Ok(SealedSecret {
        site: payload.site.clone(),
        tenant: payload.tenant.clone(),
        name: payload.name.clone(),
        version: payload.version,
        sender: sender.public_key(),
        recipient: recipient.to_string(),
        sealed: Some(B64.encode(boxed)),
    })
}

/// Opens a sealed secret at site `site` holding key `me`. `trusted_sender`, when set, is the
/// only sender accepted. Refuses a box for another site or key, from another sender, tampered,
/// truncated, or whose inside disagrees with its envelope.
pub fn open(
    me: &XKey,
    site: &Name,
    env: &SealedSecret,
    trusted_sender: Option<&str>,
) -> Result<SecretPayload, SealError> {
    if &env.site != site {
        return Err(SealError::OtherSite);
    }
    if env.recipient != me.public_key() {
        return Err(SealError::OtherKey);
    }
    if trusted_sender.is_some_and(|t| t != env.sender) {
        return Err(SealError::UntrustedSender);
    }
    let sealed = env.sealed.as_deref().ok_or(SealError::Malformed("withdrawn: nothing to open"))?;
    let sender =
        XKey::from_public_key(&env.sender).map_err(|_| SealError::BadKey("sender is not a public xkey".into()))?;
    let raw = B64.decode(sealed).map_err(|_| SealError::Malformed("not base64"))?;
    let plain = Zeroizing::new(me.open(&raw, &sender).map_err(|_| SealError::Tampered)?);
    let payload: SecretPayload = serde_json::from_slice(&plain).map_err(|_| SealError::Malformed("payload"))?;
    if &payload.site != site {
        return Err(SealError::OtherSite);
    }
    if payload.tenant != env.tenant || payload.name != env.name || payload.version != env.version {
        return Err(SealError::WrongContext);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_types::secret::SecretValue;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn payload(site: &str, version: u64) -> SecretPayload {
        SecretPayload {
            site: n(site),
            tenant: n("default"),
            name: n("db"),
            version,
            sealed_at_ms: 1,
            value: SecretValue("hunter2".into()),
        }
    }

    #[test]
    fn only_the_addressed_site_opens_it() {
        let hub = XKey::new();
        let (a, b) = (XKey::new(), XKey::new());
        let env = seal(&hub, &a.public_key(), &payload("a", 3)).unwrap();
        let text = serde_json::to_string(&env).unwrap();
        assert!(!text.contains("hunter2"));
        let opened = open(&a, &n("a"), &env, Some(&hub.public_key())).unwrap();
        assert_eq!(opened.value.0, "hunter2");

        // Replayed to site b: the envelope names a, or (rewritten) the key or inside does not match.
        assert!(matches!(open(&b, &n("b"), &env, None), Err(SealError::OtherSite)));
        let mut moved = env.clone();
        moved.site = n("b");
        assert!(matches!(open(&b, &n("b"), &moved, None), Err(SealError::OtherKey)));
        moved.recipient = b.public_key();
        assert!(matches!(open(&b, &n("b"), &moved, None), Err(SealError::Tampered)));
        // Sealed for b by an attacker who copied a's inside: the inside names a.
        let forged = seal(&hub, &b.public_key(), &payload("a", 3)).unwrap();
        let mut forged = SealedSecret { site: n("b"), ..forged };
        assert!(matches!(open(&b, &n("b"), &forged, None), Err(SealError::OtherSite)));
        forged.sender = XKey::new().public_key();
        assert!(matches!(open(&b, &n("b"), &forged, Some(&hub.public_key())), Err(SealError::UntrustedSender)));
    }

    #[test]
    fn tampered_truncated_and_relabelled_boxes_are_refused() {
        let hub = XKey::new();
        let a = XKey::new();
        let env = seal(&hub, &a.public_key(), &payload("a", 3)).unwrap();
        let mut raw = B64.decode(env.sealed.as_ref().unwrap()).unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 0x40;
        let tampered = SealedSecret { sealed: Some(B64.encode(&raw)), ..env.clone() };
        assert!(matches!(open(&a, &n("a"), &tampered, None), Err(SealError::Tampered)));
        let truncated = SealedSecret { sealed: Some(B64.encode(&raw[..20])), ..env.clone() };
        assert!(matches!(open(&a, &n("a"), &truncated, None), Err(SealError::Tampered)));
        let relabelled = SealedSecret { version: 4, ..env.clone() };
        assert!(matches!(open(&a, &n("a"), &relabelled, None), Err(SealError::WrongContext)));
        let withdrawn = SealedSecret { sealed: None, ..env };
        assert!(matches!(open(&a, &n("a"), &withdrawn, None), Err(SealError::Malformed(_))));
    }
}
