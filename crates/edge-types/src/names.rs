//! Validated identifiers (site ids, application and service names) that end up in NATS subjects,
//! stream names, KV keys and Docker container names, so they must never carry `.`, `*`, `>`,
//! spaces or anything else that changes routing.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// Pattern every [`Name`] matches: a lower-case DNS label.
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// Longest allowed [`Name`].
pub const NAME_MAX_LEN: usize = 63;

/// Names nobody may use for a site, because they collide with the hub's JetStream domain.
const RESERVED_SITE_NAMES: &[&str] = &["hub"];

/// A validated name: 1 to 63 characters of `a-z`, `0-9` and `-`, not starting or ending with `-`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name {0:?} is longer than 63 characters")]
    TooLong(String),
    #[error("name {0:?} may only hold a-z, 0-9 and '-', and must start and end with a letter or digit")]
    BadCharacters(String),
    #[error("name {0:?} is reserved")]
    Reserved(String),
}

impl Name {
    /// Validates `s` as a name.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > NAME_MAX_LEN {
            return Err(NameError::TooLong(s));
        }
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !s.chars().all(ok_char) || s.starts_with('-') || s.ends_with('-') {
            return Err(NameError::BadCharacters(s));
        }
        Ok(Self(s))
    }

    /// Validates `s` as a site id, which also becomes the site's JetStream domain.
    pub fn site(s: impl Into<String>) -> Result<Self, NameError> {
        let name = Self::new(s)?;
        if RESERVED_SITE_NAMES.contains(&name.as_str()) {
            return Err(NameError::Reserved(name.0));
        }
        Ok(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> Self {
        n.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl JsonSchema for Name {
    fn schema_name() -> Cow<'static, str> {
        "Name".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A lower-case DNS label: a-z, 0-9 and '-', 1 to 63 characters.",
            "minLength": 1,
            "maxLength": NAME_MAX_LEN,
            "pattern": NAME_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "web", "site-01", "0abc", &"a".repeat(63)] {
            assert!(Name::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_subject_breakers() {
        for bad in ["", "a.b", "*", ">", "a b", "A", "-a", "a-", "é", "$sys", &"a".repeat(64)] {
            assert!(Name::new(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(Name::site("hub"), Err(NameError::Reserved(_))));
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<Name>("\"a.b\"").is_err());
        assert_eq!(serde_json::from_str::<Name>("\"ok\"").unwrap().as_str(), "ok");
    }
}
