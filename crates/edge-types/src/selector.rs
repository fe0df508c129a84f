//! Site-label selectors: `customer = acme, tier != lab, region in (eu, us), gpu, !legacy,
//! cpus >= 4, memory >= 8Gi`. Terms are joined by `,` and all must hold. An empty selector
//! selects every site. Comparisons (`>`, `>=`, `<`, `<=`) are numeric when both sides are
//! numbers, optionally with a decimal (`k`, `M`, `G`, `T`) or binary (`Ki`, `Mi`, `Gi`, `Ti`)
//! suffix, and otherwise follow an order the operator declares for the label
//! (`size=small<medium<large`, see [`LabelOrders`]).

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

/// Orders the operator declares for label values, so `size >= medium` has a meaning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelOrders(BTreeMap<String, Vec<String>>);

impl LabelOrders {
    /// Parses `key=a<b<c;key2=x<y`; an empty string declares nothing.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut orders = BTreeMap::new();
        for decl in s.split(';').map(str::trim).filter(|d| !d.is_empty()) {
            let (key, values) = decl.split_once('=').ok_or_else(|| format!("{decl:?} is not key=a<b<c"))?;
            let values: Vec<String> = values.split('<').map(|v| v.trim().to_string()).collect();
            let ok = |w: &str| !w.is_empty() && w.chars().all(is_word_char);
            if !ok(key.trim()) || !values.iter().all(|v| ok(v)) || values.len() < 2 {
                return Err(format!("{decl:?} is not key=a<b<c with at least two values"));
            }
            orders.insert(key.trim().to_string(), values);
        }
        Ok(Self(orders))
    }

    /// Orders given as a map from label to its values, smallest first (as carried in desired
    /// state); a label with fewer than two values declares nothing.
    pub fn from_map(map: BTreeMap<String, Vec<String>>) -> Self {
        Self(map.into_iter().filter(|(_, v)| v.len() >= 2).collect())
    }

    pub fn as_map(&self) -> &BTreeMap<String, Vec<String>> {
        &self.0
    }

    /// The orders of the given labels only.
    pub fn subset<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Self {
        Self(keys.filter_map(|k| self.0.get_key_value(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn rank(&self, key: &str, value: &str) -> Option<usize> {
        self.0.get(key)?.iter().position(|v| v == value)
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

    /// Whether a site with these labels is selected (no declared orders).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_in(labels, &LabelOrders::default())
    }

    /// Whether a site with these labels is selected, comparing by the declared orders.
    pub fn matches_in(&self, labels: &BTreeMap<String, String>, orders: &LabelOrders) -> bool {
        self.terms.iter().all(|t| t.matches(labels, orders))
    }

    /// Checks that every comparison has a meaning: a number, or a value of a declared order.
    pub fn check_orders(&self, orders: &LabelOrders) -> Result<(), String> {
        for t in &self.terms {
            if let Term::Compare(k, _, v) = t {
                if quantity(v).is_none() && orders.rank(k, v).is_none() {
                    return Err(match orders.0.get(k) {
                        Some(vals) => {
                            format!("`{t}`: {v:?} is not one of the declared values of {k}: {}", vals.join(" < "))
                        }
                        None => format!("`{t}`: {v:?} is not a number and no order is declared for label {k}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Why a site with these labels is not selected: one sentence per failing term (empty when
    /// it is selected).
    pub fn explain(&self, labels: &BTreeMap<String, String>, orders: &LabelOrders) -> Vec<String> {
        self.explain_for("site", labels, orders)
    }

    /// Like [`Selector::explain`], naming what the labels belong to (`site`, `host`).
    pub fn explain_for(&self, noun: &str, labels: &BTreeMap<String, String>, orders: &LabelOrders) -> Vec<String> {
        self.terms
            .iter()
            .filter(|t| !t.matches(labels, orders))
            .map(|t| {
                let key = t.key();
                let has = match labels.get(key) {
                    Some(v) if v.is_empty() => format!("the {noun} has label {key} without a value"),
                    Some(v) => format!("the {noun} has {key}={v}"),
                    None => format!("the {noun} has no label {key}"),
                };
                let incomparable = matches!(t, Term::Compare(..))
                    && labels.get(key).is_some_and(|v| quantity(v).is_none() && orders.rank(key, v).is_none());
                if incomparable {
                    format!("`{t}` fails: {has}, which is neither a number nor a declared value")
                } else {
                    format!("`{t}` fails: {has}")
                }
            })
            .collect()
    }

    /// Groups of terms on one label that no value can satisfy together (`a = x, a = y`,
    /// `cpus > 8, cpus < 4`, `!gpu, gpu >= 1`): a selector with one selects nothing, ever.
    pub fn contradictions(&self, orders: &LabelOrders) -> Vec<String> {
        let mut keys: Vec<&str> = self.terms.iter().map(Term::key).collect();
        keys.sort();
        keys.dedup();
        let mut out = Vec::new();
        for key in keys {
            let terms: Vec<&Term> = self.terms.iter().filter(|t| t.key() == key).collect();
            if satisfiable(key, &terms, orders) {
                continue;
            }
            let listed: Vec<String> = terms.iter().map(|t| format!("`{t}`")).collect();
            out.push(match listed.as_slice() {
                [one] => format!("{one} can never hold: no value of {key} satisfies it"),
                _ => format!("{} cannot all hold: no value of {key} satisfies them", listed.join(", ")),
            });
        }
        out
    }

    /// This selector and one more term.
    pub fn and(&self, term: Term) -> Selector {
        let mut terms = self.terms.clone();
        terms.push(term);
        Selector { terms }
    }

    pub fn terms(&self) -> &[Term] {
        &self.terms
    }
}

/// Whether some value (or absence) of `key` satisfies every one of `terms` (all on `key`).
fn satisfiable(key: &str, terms: &[&Term], orders: &LabelOrders) -> bool {
    let holds = |value: Option<&str>| {
        let labels: BTreeMap<String, String> = value.map(|v| (key.to_string(), v.to_string())).into_iter().collect();
        terms.iter().all(|t| t.matches(&labels, orders))
    };
    if holds(None) {
        return true;
    }
    // Finite candidates: every value a term names, and every declared value of the label.
    let mut candidates: Vec<&str> = Vec::new();
    for t in terms {
        match t {
            Term::Eq(_, v) | Term::Ne(_, v) | Term::Compare(_, _, v) => candidates.push(v),
            Term::In(_, vs) | Term::NotIn(_, vs) => candidates.extend(vs.iter().map(String::as_str)),
            Term::Exists(_) | Term::NotExists(_) => {}
        }
    }
    if let Some(declared) = orders.0.get(key) {
        candidates.extend(declared.iter().map(String::as_str));
    }
    if candidates.iter().any(|v| holds(Some(v))) {
        return true;
    }
    let pins = terms.iter().any(|t| matches!(t, Term::Eq(..) | Term::In(..) | Term::NotExists(_)));
    if pins {
        return false; // the value must be one of the named ones, and none works
    }
    if terms.iter().any(|t| matches!(t, Term::Compare(_, _, v) if quantity(v).is_none())) {
        // Ordered values: the declared ones are all there is; undeclared, nothing can be said
        // here (`check_orders` rejects the comparison).
        return !orders.0.contains_key(key);
    }
    // Numeric comparisons: some number strictly inside the bounds, or the bound itself.
    let mut lo = (f64::NEG_INFINITY, false);
    let mut hi = (f64::INFINITY, false);
    for t in terms {
        if let Term::Compare(_, op, v) = t {
            let n = quantity(v).expect("numeric");
            match op {
                CmpOp::Gt if n >= lo.0 => lo = (n, true),
                CmpOp::Ge if n > lo.0 => lo = (n, false),
                CmpOp::Lt if n <= hi.0 => hi = (n, true),
                CmpOp::Le if n < hi.0 => hi = (n, false),
                _ => {}
            }
        }
    }
    lo.0 < hi.0 || (lo.0 == hi.0 && !lo.1 && !hi.1)
}

impl Term {
    fn matches(&self, labels: &BTreeMap<String, String>, orders: &LabelOrders) -> bool {
        match self {
            Term::Eq(k, v) => labels.get(k) == Some(v),
            Term::Ne(k, v) => labels.get(k) != Some(v),
            Term::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Term::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Term::Exists(k) => labels.contains_key(k),
            Term::NotExists(k) => !labels.contains_key(k),
            Term::Compare(k, op, v) => {
                let Some(label) = labels.get(k) else { return false };
                match (quantity(label), quantity(v)) {
                    (Some(left), Some(right)) => op.holds(left, right),
                    _ => match (orders.rank(k, label), orders.rank(k, v)) {
                        (Some(left), Some(right)) => op.holds(left as f64, right as f64),
                        _ => false,
                    },
                }
            }
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
                let value = self.word("a number or an ordered value")?;
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
        let e = Selector::parse("cpus >= ,").unwrap_err();
        assert_eq!(e.position, 8, "{e}");
    }

    #[test]
    fn compares_by_declared_orders() {
        let orders = LabelOrders::parse("size=small<medium<large; tier = bronze<gold").unwrap();
        let l = labels(&[("size", "large"), ("tier", "bronze")]);
        let yes = Selector::parse("size >= medium, tier < gold").unwrap();
        assert!(yes.matches_in(&l, &orders));
        assert!(yes.check_orders(&orders).is_ok());
        assert!(!yes.matches(&l), "without the declared order nothing compares");
        let no = Selector::parse("size > large").unwrap();
        assert!(!no.matches_in(&l, &orders));
        assert!(no.explain(&l, &orders)[0].contains("size=large"));
        assert!(Selector::parse("size >= huge").unwrap().check_orders(&orders).is_err());
        assert!(Selector::parse("colour >= red").unwrap().check_orders(&orders).is_err());
        assert!(LabelOrders::parse("size=small").is_err());
        assert!(LabelOrders::parse("size").is_err());
    }

    #[test]
    fn explains_every_failing_term() {
        let l = labels(&[("customer", "globex"), ("cpus", "2")]);
        let why =
            Selector::parse("customer = acme, cpus >= 4, camera, region").unwrap().explain(&l, &LabelOrders::default());
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[0].contains("customer=globex"), "{why:?}");
        assert!(why[1].contains("cpus >= 4") && why[1].contains("cpus=2"), "{why:?}");
        assert!(why[2].contains("no label camera"), "{why:?}");
        assert!(Selector::parse("cpus >= 2").unwrap().explain(&l, &LabelOrders::default()).is_empty());
    }

    #[test]
    fn finds_contradictions() {
        let orders = LabelOrders::parse("size=small<medium<large").unwrap();
        let bad = [
            "customer = a, customer = b",
            "customer = a, customer != a",
            "region in (eu), region notin (eu, us)",
            "region in (eu), region in (us)",
            "!gpu, gpu >= 1",
            "cpus > 8, cpus < 4",
            "cpus > 4, cpus <= 4",
            "size > large",
            "size < small, size != x",
            "memory >= 8Gi, memory < 4Gi",
        ];
        for s in bad {
            let c = Selector::parse(s).unwrap().contradictions(&orders);
            assert_eq!(c.len(), 1, "{s}: {c:?}");
        }
        let good = [
            "customer = a, region = b",
            "customer != a, customer != b",
            "region in (eu, us), region notin (us)",
            "cpus >= 4, cpus <= 4",
            "cpus > 4, cpus < 5",
            "size >= medium, size != large",
            "!legacy, customer = a",
            "gpu, gpu >= 1",
        ];
        for s in good {
            let c = Selector::parse(s).unwrap().contradictions(&orders);
            assert!(c.is_empty(), "{s}: {c:?}");
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
