//! NATS JWTs (version 2, the format nats-server verifies): a header, the claims, and an Ed25519
//! signature by an nkey, each part base64url without padding. An operator signs itself and its
//! accounts; an account (or one of its signing keys) signs its users. The server trusts the
//! operator's public key and checks the chain.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nkeys::KeyPair;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AuthError;

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// The claims every NATS JWT carries, with the kind-specific part under `nats`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims<N> {
    /// Unique id of this JWT: a hash of the claims without it.
    #[serde(default)]
    pub jti: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Public key of the signer.
    pub iss: String,
    pub name: String,
    /// Public key of the subject (operator, account or user).
    pub sub: String,
    /// Expiry, Unix seconds; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    pub nats: N,
}

/// Signs `claims` with `signer` (whose public key must be `claims.iss`).
pub fn encode<N: Serialize>(claims: &mut Claims<N>, signer: &KeyPair) -> Result<String, AuthError> {
    if signer.public_key() != claims.iss {
        return Err(AuthError::Invalid(format!("issuer {} is not the signing key", claims.iss)));
    }
    claims.jti = String::new();
    let unsigned = serde_json::to_vec(claims).map_err(|e| AuthError::Invalid(e.to_string()))?;
    claims.jti = data_encoding::BASE32_NOPAD.encode(&Sha256::digest(&unsigned));
    let body = serde_json::to_vec(claims).map_err(|e| AuthError::Invalid(e.to_string()))?;
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(body));
    let sig = signer.sign(signing_input.as_bytes()).map_err(|e| AuthError::Key(e.to_string()))?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// Decodes a JWT and checks its signature against its own issuer (not whether the issuer is
/// trusted: that is the caller's question).
pub fn decode<N: DeserializeOwned>(token: &str) -> Result<Claims<N>, AuthError> {
    let bad = |what: &str| AuthError::Invalid(format!("not a NATS JWT: {what}"));
    let mut parts = token.trim().split('.');
    let (Some(h), Some(b), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected three dot-separated parts"));
    };
    let header = URL_SAFE_NO_PAD.decode(h).map_err(|_| bad("header is not base64url"))?;
    let header: serde_json::Value = serde_json::from_slice(&header).map_err(|_| bad("header is not JSON"))?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("ed25519-nkey") {
        return Err(bad("algorithm is not ed25519-nkey"));
    }
    let body = URL_SAFE_NO_PAD.decode(b).map_err(|_| bad("claims are not base64url"))?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad("signature is not base64url"))?;
    let claims: Claims<N> = serde_json::from_slice(&body).map_err(|e| bad(&format!("claims: {e}")))?;
    let issuer = KeyPair::from_public_key(&claims.iss).map_err(|_| bad("issuer is not a public nkey"))?;
    issuer
        .verify(format!("{h}.{b}").as_bytes(), &sig)
        .map_err(|_| AuthError::Invalid(format!("signature of {} does not verify", claims.name)))?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_jwt_decodes_and_a_changed_one_does_not() {
        let op = KeyPair::new_operator();
        let mut c = Claims {
            jti: String::new(),
            iat: 1,
            iss: op.public_key(),
            name: "op".into(),
            sub: op.public_key(),
            exp: None,
            nats: serde_json::json!({"type": "operator", "version": 2}),
        };
        let token = encode(&mut c, &op).unwrap();
        let back: Claims<serde_json::Value> = decode(&token).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.jti.len(), 52);

        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut forged = c.clone();
        forged.name = "other".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let err = decode::<serde_json::Value>(&parts.join(".")).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[test]
    fn the_issuer_must_be_the_signer() {
        let op = KeyPair::new_operator();
        let other = KeyPair::new_operator();
        let mut c = Claims {
            jti: String::new(),
            iat: 1,
            iss: other.public_key(),
            name: "op".into(),
            sub: op.public_key(),
            exp: None,
            nats: serde_json::json!({}),
        };
        assert!(encode(&mut c, &op).is_err());
    }
}
