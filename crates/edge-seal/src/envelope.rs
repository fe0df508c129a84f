//! Envelope encryption at the hub: each tenant's values are encrypted with the tenant's data
//! key (XSalsa20-Poly1305), and data keys are stored wrapped by the master key. Every box
//! carries the context it was made for (tenant, secret, version) inside the authenticated
//! plaintext, so a box copied to another record does not open there.

use base64::Engine;
use crypto_secretbox::aead::{Aead, AeadCore, KeyInit, OsRng};
use crypto_secretbox::XSalsa20Poly1305;
use zeroize::Zeroizing;

use crate::SealError;

const NONCE: usize = 24;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A 32-byte symmetric key; never printed.
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// A fresh random key.
    pub fn generate() -> Self {
        let k = XSalsa20Poly1305::generate_key(&mut OsRng);
        Self(Zeroizing::new(k.into()))
    }

    /// Parses a key given as 64 hex digits or as base64 of 32 bytes (surrounding whitespace is
    /// ignored, so a key file may end with a newline).
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let t = text.trim();
        let bytes = Zeroizing::new(if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32).map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).expect("hex checked")).collect::<Vec<u8>>()
        } else {
            B64.decode(t).map_err(|_| SealError::BadKey("neither 64 hex digits nor base64".into()))?
        });
        let arr: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| SealError::BadKey(format!("{} bytes, not 32", bytes.len())))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The key as 64 hex digits, for a key file.
    pub fn to_hex(&self) -> zeroize::Zeroizing<String> {
        Zeroizing::new(self.0.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Encrypts `plaintext` bound to `context`: base64 of nonce and box.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let cipher = XSalsa20Poly1305::new((&*self.0).into());
        let nonce = XSalsa20Poly1305::generate_nonce(&mut OsRng);
        let mut framed = Zeroizing::new(Vec::with_capacity(2 + context.len() + plaintext.len()));
        framed.extend_from_slice(&(context.len() as u16).to_be_bytes());
        framed.extend_from_slice(context.as_bytes());
        framed.extend_from_slice(plaintext);
        let boxed = cipher.encrypt(&nonce, framed.as_slice()).expect("encryption in memory cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&boxed);
        B64.encode(out)
    }

    /// Opens what [`seal`](Self::seal) made for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let raw = B64.decode(sealed.trim()).map_err(|_| SealError::Malformed("not base64"))?;
        if raw.len() < NONCE + 16 {
            return Err(SealError::Malformed("truncated"));
        }
        let (nonce, boxed) = raw.split_at(NONCE);
        let cipher = XSalsa20Poly1305::new((&*self.0).into());
        let framed = Zeroizing::new(cipher.decrypt(nonce.into(), boxed).map_err(|_| SealError::Tampered)?);
        let len = u16::from_be_bytes([framed[0], framed[1]]) as usize;
        if framed.len() < 2 + len || &framed[2..2 + len] != context.as_bytes() {
            return Err(SealError::WrongContext);
        }
        Ok(Zeroizing::new(framed[2 + len..].to_vec()))
    }

    /// Wraps another key (a tenant's data key under the master key).
    pub fn wrap(&self, context: &str, key: &Key) -> String {
        self.seal(context, key.0.as_slice())
    }

    /// Unwraps what [`wrap`](Self::wrap) made.
    pub fn unwrap_key(&self, context: &str, wrapped: &str) -> Result<Key, SealError> {
        let bytes = self.open(context, wrapped)?;
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| SealError::Malformed("wrapped key size"))?;
        Ok(Key(Zeroizing::new(arr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_context_binding() {
        let k = Key::generate();
        let boxed = k.seal("default/db/1", b"hunter2");
        assert!(!boxed.contains("hunter2"));
        assert_eq!(k.open("default/db/1", &boxed).unwrap().as_slice(), b"hunter2");
        assert!(matches!(k.open("default/db/2", &boxed), Err(SealError::WrongContext)));
        assert!(matches!(Key::generate().open("default/db/1", &boxed), Err(SealError::Tampered)));
        let mut raw = B64.decode(&boxed).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(matches!(k.open("default/db/1", &B64.encode(&raw)), Err(SealError::Tampered)));
        assert!(matches!(k.open("default/db/1", &B64.encode(&raw[..30])), Err(SealError::Malformed(_))));
    }

    #[test]
    fn keys_parse_from_hex_or_base64_and_wrap() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
        let master = Key::parse(hex).unwrap();
        let b64 = B64.encode(*master.0);
        assert_eq!(*Key::parse(&b64).unwrap().0, *master.0);
        assert!(Key::parse("abc").is_err());
        assert!(Key::parse(&B64.encode([1u8; 16])).is_err());
        let dek = Key::generate();
        let wrapped = master.wrap("tenant/default", &dek);
        assert_eq!(*master.unwrap_key("tenant/default", &wrapped).unwrap().0, *dek.0);
        assert!(master.unwrap_key("tenant/other", &wrapped).is_err());
        assert_eq!(format!("{master:?}"), "Key(<redacted>)");
    }
}
