//! Site-label selectors: `customer = acme, tier != lab, region in (eu, us), gpu, !legacy,
//! cpus >= 4, memory >= 8Gi`. Terms are joined by `,` and all must hold. An empty selector
//! selects every site. Comparisons (`>`, `>=`, `<`, `<=`) are numeric: both sides are numbers,
//! optionally with a decimal (`k`, `M`, `G`, `T`) or binary (`Ki`, `Mi`, `Gi`, `Ti`) suffix.

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
    Compare(String, CmpOp, String),
}

/// A numeric comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
        }
    }

    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            CmpOp::Gt => left > right,
            CmpOp::Ge => left >= right,
            CmpOp::Lt => left < right,
            CmpOp::Le => left <= right,
        }
    }
}

/// A number with an optional decimal or binary unit suffix: `4`, `0.5`, `8Gi`, `2k`.
pub fn quantity(s: &str) -> Option<f64> {
    const UNITS: [(&str, f64); 8] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (number, factor) = UNITS.iter().find_map(|(u, f)| s.strip_suffix(u).map(|n| (n, *f))).unwrap_or((s, 1.0));
    let n: f64 = number.parse().ok()?;
    n.is_finite().then_some(n * factor)
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

    /// Why a site with these labels is not selected: one sentence per failing term (empty when
    /// it is selected).
    pub fn explain(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        self.terms
            .iter()
            .filter(|t| !t.matches(labels))
            .map(|t| {
                let key = t.key();
                let has = match labels.get(key) {
                    Some(v) if v.is_empty() => format!("the site has label {key} without a value"),
                    Some(v) => format!("the site has {key}={v}"),
                    None => format!("the site has no label {key}"),
                };
                let not_number =
                    matches!(t, Term::Compare(..)) && labels.get(key).is_some_and(|v| quantity(v).is_none());
                if not_number {
                    format!("`{t}` fails: {has}, which is not a number")
                } else {
                    format!("`{t}` fails: {has}")
                }
            })
            .collect()
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
            Term::Compare(k, op, v) => match (labels.get(k).and_then(|l| quantity(l)), quantity(v)) {
                (Some(left), Some(right)) => op.holds(left, right),
                _ => false,
            },
        }
    }

    /// The label the term is about.
    pub fn key(&self) -> &str {
        match self {
            Term::Eq(k, _)
            | Term::Ne(k, _)
            | Term::In(k, _)
            | Term::NotIn(k, _)
            | Term::Exists(k)
            | Term::NotExists(k)
            | Term::Compare(k, _, _) => k,
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
            Term::Compare(k, op, v) => write!(f, "{k} {} {v}", op.symbol()),
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
        for (tok, op) in [(">=", CmpOp::Ge), ("<=", CmpOp::Le), (">", CmpOp::Gt), ("<", CmpOp::Lt)] {
            if self.eat(tok) {
                let at = self.pos;
                let value = self.word("a number")?;
                if quantity(&value).is_none() {
                    self.pos = at;
                    self.skip_ws();
                    return self.error(format!("{value:?} is not a number (e.g. 4, 0.5, 8Gi)"));
                }
                return Ok(Term::Compare(key, op, value));
            }
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
    fn compares_quantities() {
        let l = labels(&[("cpus", "8"), ("memory", "16Gi"), ("name", "x")]);
        for s in ["cpus >= 4", "cpus > 7.5", "memory >= 8Gi", "memory < 1T", "cpus <= 8"] {
            assert!(Selector::parse(s).unwrap().matches(&l), "{s}");
        }
        for s in ["cpus > 8", "memory >= 32Gi", "name > 1", "absent >= 1"] {
            assert!(!Selector::parse(s).unwrap().matches(&l), "{s}");
        }
        assert_eq!(quantity("2Ki"), Some(2048.0));
        assert_eq!(quantity("1.5k"), Some(1500.0));
        assert_eq!(quantity("Gi"), None);
        let e = Selector::parse("cpus >= lots").unwrap_err();
        assert_eq!(e.position, 8, "{e}");
    }

    #[test]
    fn explains_every_failing_term() {
        let l = labels(&[("customer", "globex"), ("cpus", "2")]);
        let why = Selector::parse("customer = acme, cpus >= 4, camera, region").unwrap().explain(&l);
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[0].contains("customer=globex"), "{why:?}");
        assert!(why[1].contains("cpus >= 4") && why[1].contains("cpus=2"), "{why:?}");
        assert!(why[2].contains("no label camera"), "{why:?}");
        assert!(Selector::parse("cpus >= 2").unwrap().explain(&l).is_empty());
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
