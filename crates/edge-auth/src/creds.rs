//! The credentials file of a user: its JWT and its nkey seed, in the layout nats-server (leaf
//! `credentials:`) and every NATS client read. The seed is the secret; the file is written
//! with mode 0600.

use crate::AuthError;

const JWT_BEGIN: &str = "-----BEGIN NATS USER JWT-----";
const JWT_END: &str = "------END NATS USER JWT------";
const SEED_BEGIN: &str = "-----BEGIN USER NKEY SEED-----";
const SEED_END: &str = "------END USER NKEY SEED------";

/// A user's JWT with its seed.
#[derive(Clone)]
pub struct Creds {
    pub jwt: String,
    pub seed: String,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds").field("jwt", &self.jwt).field("seed", &"<redacted>").finish()
    }
}

impl Creds {
    /// The file's text.
    pub fn render(&self) -> String {
        format!(
            "{JWT_BEGIN}\n{}\n{JWT_END}\n\n\
             ************************* IMPORTANT *************************\n\
             The NKEY seed below proves this identity: keep it secret.\n\n\
             {SEED_BEGIN}\n{}\n{SEED_END}\n\n\
             *************************************************************\n",
            self.jwt, self.seed
        )
    }

    /// Reads a credentials file's text.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let between = |begin: &str, end: &str| -> Option<String> {
            let start = text.find(begin)? + begin.len();
            let stop = text[start..].find(end)? + start;
            Some(text[start..stop].trim().to_string())
        };
        let jwt = between(JWT_BEGIN, JWT_END).ok_or_else(|| AuthError::Invalid("credentials: no user JWT".into()))?;
        let seed =
            between(SEED_BEGIN, SEED_END).ok_or_else(|| AuthError::Invalid("credentials: no nkey seed".into()))?;
        Ok(Self { jwt, seed })
    }
}

/// Writes `creds` to `path` (mode 0600), replacing the file atomically: a reader (nats-server
/// connecting) sees the old file or the new one, never half of one.
pub fn write_file(path: &std::path::Path, creds: &Creds) -> Result<(), AuthError> {
    crate::authority::write(path, &creds.render(), true)
}

/// Writes a secret (a seed) to `path`, mode 0600, atomically.
pub fn write_secret(path: &std::path::Path, text: &str) -> Result<(), AuthError> {
    crate::authority::write(path, text, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_it_parses_and_never_debugs_the_seed() {
        let c = Creds { jwt: "a.b.c".into(), seed: "SUSECRET".into() };
        let back = Creds::parse(&c.render()).unwrap();
        assert_eq!((back.jwt.as_str(), back.seed.as_str()), ("a.b.c", "SUSECRET"));
        assert!(!format!("{c:?}").contains("SUSECRET"));
        assert!(Creds::parse("nothing").is_err());
    }
}
