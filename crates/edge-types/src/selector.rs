//! Site-label selectors: `customer = acme, tier != lab, region in (eu, us), gpu, !legacy`.
//! Terms are joined by `,` and all must hold. An empty selector selects every site.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed selector.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Selector {
    terms: Vec<Term>,
}

/// One condition on a label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parse error with the byte position it was found at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct SelectorError {
    pub position: usize,
    pub message: String,
}

impl Selector {
    /// Parses a selector expression.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut p = Parser { s: input, pos: 0 };
        let mut terms = Vec::new();
        p.skip_ws();
        if p.at_end() {
            return Ok(Self { terms });
        }
        loop {
            terms.push(p.term()?);
            p.skip_ws();
            if p.at_end() {
                break;
            }
            p.expect(",")?;
        }
        Ok(Self { terms })
    }

    /// Whether a site with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|t| t.matches(labels))
    }

    pub fn terms(&self) -> &[Term] {
        &self.terms
    }
}

impl Term {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Term::Eq(k, v) => labels.get(k) == Some(v),
            Term::Ne(k, v) => labels.get(k) != Some(v),
            Term::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Term::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Term::Exists(k) => labels.contains_key(k),
            Term::NotExists(k) => !labels.contains_key(k),
        }
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Eq(k, v) => write!(f, "{k} = {v}"),
            Term::Ne(k, v) => write!(f, "{k} != {v}"),
            Term::In(k, vs) => write!(f, "{k} in ({})", vs.join(", ")),
            Term::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(", ")),
            Term::Exists(k) => write!(f, "{k}"),
            Term::NotExists(k) => write!(f, "!{k}"),
        }
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.s.len() - trimmed.len();
    }
    fn error<T>(&self, message: impl Into<String>) -> Result<T, SelectorError> {
        Err(SelectorError { position: self.pos, message: message.into() })
    }
    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, tok: &str) -> Result<(), SelectorError> {
        if self.eat(tok) {
            Ok(())
        } else {
            self.error(format!("expected '{tok}'"))
        }
    }
    fn word(&mut self, what: &str) -> Result<String, SelectorError> {
        self.skip_ws();
        let len = self.rest().find(|c: char| !is_word_char(c)).unwrap_or(self.rest().len());
        if len == 0 {
            return self.error(format!("expected {what}"));
        }
        let w = self.rest()[..len].to_string();
        self.pos += len;
        Ok(w)
    }
    fn list(&mut self) -> Result<Vec<String>, SelectorError> {
        self.expect("(")?;
        let mut values = vec![self.word("a value")?];
        while self.eat(",") {
            values.push(self.word("a value")?);
        }
        self.expect(")")?;
        Ok(values)
    }
    fn term(&mut self) -> Result<Term, SelectorError> {
        if self.eat("!") {
            return Ok(Term::NotExists(self.word("a label key")?));
        }
        let key = self.word("a label key")?;
        self.skip_ws();
        if self.eat("!=") {
            return Ok(Term::Ne(key, self.word("a value")?));
        }
        if self.eat("==") || self.eat("=") {
            return Ok(Term::Eq(key, self.word("a value")?));
        }
        let save = self.pos;
        if let Ok(op) = self.word("an operator") {
            match op.as_str() {
                "in" => return Ok(Term::In(key, self.list()?)),
                "notin" => return Ok(Term::NotIn(key, self.list()?)),
                _ => {
                    self.pos = save;
                    return self.error(format!("expected '=', '!=', 'in', 'notin' or ',' after '{key}'"));
                }
            }
        }
        Ok(Term::Exists(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn evaluates_every_operator() {
        let l = labels(&[("customer", "acme"), ("region", "eu"), ("gpu", "")]);
        let yes = [
            "",
            "customer = acme",
            "customer==acme",
            "customer != other",
            "region in (eu, us)",
            "region notin (us)",
            "gpu",
            "!legacy",
            "customer=acme, gpu, region in (eu)",
            "missing != x",
        ];
        for s in yes {
            assert!(Selector::parse(s).unwrap().matches(&l), "{s}");
        }
        let no = [
            "customer = other",
            "customer != acme",
            "region in (us)",
            "region notin (eu)",
            "legacy",
            "!gpu",
            "customer=acme, legacy",
            "missing in (x)",
        ];
        for s in no {
            assert!(!Selector::parse(s).unwrap().matches(&l), "{s}");
        }
    }

    #[test]
    fn errors_point_at_the_position() {
        let e = Selector::parse("customer = acme, region in eu").unwrap_err();
        assert_eq!(e.position, 27, "{e}");
        let e = Selector::parse("customer ~ acme").unwrap_err();
        assert_eq!(e.position, 9, "{e}");
        let e = Selector::parse("a = b,").unwrap_err();
        assert_eq!(e.position, 6, "{e}");
        assert!(Selector::parse("a b").is_err());
    }
}
