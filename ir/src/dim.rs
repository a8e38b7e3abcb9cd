//! Dimensions: static sizes and symbolic sizes.
//!
//! A [`Dim`] is an integer polynomial over the graph's symbols (`s0`, `2*s0`, `s0*s1+4`), kept in
//! one canonical form so that equal dims compare equal: monomials sorted, coefficients non-zero.
//! A static size is the constant polynomial. Symbols themselves live in the graph's
//! [`SymbolTable`], each with the `[min, max]` range from the export's `range_constraints`.

use std::collections::BTreeMap;
use std::fmt;

/// Index of a symbol in a graph's [`SymbolTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymId(pub u32);

/// A symbolic size with its inclusive range. `max` is `None` when unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub min: i64,
    pub max: Option<i64>,
}

/// The symbols of one graph, in declaration order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymbolTable {
    symbols: Vec<Symbol>,
}

impl SymbolTable {
    /// Adds a symbol (or returns the existing one of that name, widening nothing).
    pub fn intern(&mut self, name: &str, min: i64, max: Option<i64>) -> SymId {
        if let Some(id) = self.lookup(name) {
            return id;
        }
        self.symbols.push(Symbol { name: name.to_string(), min, max });
        SymId(self.symbols.len() as u32 - 1)
    }

    pub fn lookup(&self, name: &str) -> Option<SymId> {
        self.symbols.iter().position(|s| s.name == name).map(|i| SymId(i as u32))
    }

    pub fn get(&self, id: SymId) -> Option<&Symbol> {
        self.symbols.get(id.0 as usize)
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (SymId, &Symbol)> {
        self.symbols.iter().enumerate().map(|(i, s)| (SymId(i as u32), s))
    }
}

/// A dimension size: an integer polynomial over symbols in canonical form.
///
/// Each term is a monomial (a sorted list of symbols, repeated for powers) with a non-zero
/// coefficient; terms are sorted by monomial. The empty polynomial is the constant 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dim {
    terms: Vec<(Vec<SymId>, i64)>,
}

/// Arithmetic on dims saturates at the `i64` range instead of overflowing, so hostile sizes
/// give type errors (element counts that cannot match) rather than panics.
impl Dim {
    pub fn constant(value: i64) -> Dim {
        Dim::from_map(BTreeMap::from([(Vec::new(), value)]))
    }

    pub fn symbol(id: SymId) -> Dim {
        Dim { terms: vec![(vec![id], 1)] }
    }

    fn from_map(map: BTreeMap<Vec<SymId>, i64>) -> Dim {
        Dim { terms: map.into_iter().filter(|(_, c)| *c != 0).collect() }
    }

    fn to_map(&self) -> BTreeMap<Vec<SymId>, i64> {
        self.terms.iter().cloned().collect()
    }

    /// The value when the dim is static.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.as_slice() {
            [] => Some(0),
            [(m, c)] if m.is_empty() => Some(*c),
            _ => None,
        }
    }

    /// The symbol when the dim is exactly one symbol (`s0`).
    pub fn as_symbol(&self) -> Option<SymId> {
        match self.terms.as_slice() {
            [(m, 1)] if m.len() == 1 => Some(m[0]),
            _ => None,
        }
    }

    pub fn is_const(&self, value: i64) -> bool {
        self.as_const() == Some(value)
    }

    /// The symbols this dim mentions, sorted and unique.
    pub fn symbols(&self) -> Vec<SymId> {
        let mut out: Vec<SymId> = self.terms.iter().flat_map(|(m, _)| m.iter().copied()).collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn add(&self, other: &Dim) -> Dim {
        let mut map = self.to_map();
        for (m, c) in &other.terms {
            let e: &mut i64 = map.entry(m.clone()).or_insert(0);
            *e = e.saturating_add(*c);
        }
        Dim::from_map(map)
    }

    pub fn sub(&self, other: &Dim) -> Dim {
        self.add(&other.scale(-1))
    }

    pub fn scale(&self, k: i64) -> Dim {
        Dim::from_map(self.terms.iter().map(|(m, c)| (m.clone(), c.saturating_mul(k))).collect())
    }

    pub fn mul(&self, other: &Dim) -> Dim {
        let mut map = BTreeMap::new();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &other.terms {
                let mut m = ma.clone();
                m.extend_from_slice(mb);
                m.sort();
                let e: &mut i64 = map.entry(m).or_insert(0);
                *e = e.saturating_add(ca.saturating_mul(*cb));
            }
        }
        Dim::from_map(map)
    }

    /// Product of a list of dims (1 for an empty list).
    pub fn product<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Dim {
        dims.into_iter().fold(Dim::constant(1), |acc, d| acc.mul(d))
    }

    /// `self / divisor` when it divides exactly term by term; `divisor` must be a single
    /// monomial (e.g. `3`, `s0`, `4*s0`), which covers the views found in exported models.
    pub fn div_exact(&self, divisor: &Dim) -> Option<Dim> {
        let [(dm, dc)] = divisor.terms.as_slice() else { return None };
        let mut map = BTreeMap::new();
        for (m, c) in &self.terms {
            if c % dc != 0 {
                return None;
            }
            let mut rest = m.clone();
            for s in dm {
                let pos = rest.iter().position(|x| x == s)?;
                rest.remove(pos);
            }
            *map.entry(rest).or_insert(0) += c / dc;
        }
        Some(Dim::from_map(map))
    }

    /// Evaluates the dim with concrete values for its symbols.
    pub fn eval(&self, value_of: &dyn Fn(SymId) -> Option<i64>) -> Option<i64> {
        let mut total: i64 = 0;
        for (m, c) in &self.terms {
            let mut term = *c;
            for s in m {
                term = term.checked_mul(value_of(*s)?)?;
            }
            total = total.checked_add(term)?;
        }
        Some(total)
    }

    /// The smallest value the dim can take given the symbols' ranges, when every coefficient
    /// is positive (so the minimum is at the symbols' minima); `None` otherwise.
    pub fn min_value(&self, symbols: &SymbolTable) -> Option<i64> {
        if self.terms.iter().any(|(_, c)| *c < 0) {
            return None;
        }
        self.eval(&|s| symbols.get(s).map(|sym| sym.min.max(0)))
    }

    /// Writes the dim using the symbols' names (`2*s0*s1+3`).
    pub fn display<'a>(&'a self, symbols: &'a SymbolTable) -> DimDisplay<'a> {
        DimDisplay { dim: self, symbols }
    }

    /// The canonical terms: `(monomial symbols, coefficient)`, sorted by monomial.
    pub fn monomials(&self) -> &[(Vec<SymId>, i64)] {
        &self.terms
    }

    pub(crate) fn terms(&self) -> &[(Vec<SymId>, i64)] {
        &self.terms
    }
}

impl From<i64> for Dim {
    fn from(v: i64) -> Dim {
        Dim::constant(v)
    }
}

/// [`Dim`] printer: see [`Dim::display`].
pub struct DimDisplay<'a> {
    dim: &'a Dim,
    symbols: &'a SymbolTable,
}

impl fmt::Display for DimDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms = self.dim.terms();
        if terms.is_empty() {
            return f.write_str("0");
        }
        // Symbolic terms first (highest degree first), the constant last, for readability.
        let mut order: Vec<&(Vec<SymId>, i64)> = terms.iter().collect();
        order.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        for (i, (m, c)) in order.into_iter().enumerate() {
            let (neg, abs) = (*c < 0, c.unsigned_abs());
            if i == 0 {
                if neg {
                    f.write_str("-")?;
                }
            } else {
                f.write_str(if neg { "-" } else { "+" })?;
            }
            let mut parts: Vec<String> = Vec::new();
            if abs != 1 || m.is_empty() {
                parts.push(abs.to_string());
            }
            for s in m {
                let name = self.symbols.get(*s).map(|s| s.name.clone()).unwrap_or_else(|| format!("?{}", s.0));
                parts.push(name);
            }
            f.write_str(&parts.join("*"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_arithmetic() {
        let mut t = SymbolTable::default();
        let s0 = Dim::symbol(t.intern("s0", 1, Some(64)));
        let s1 = Dim::symbol(t.intern("s1", 1, None));
        let a = s0.mul(&Dim::constant(4)).add(&Dim::constant(3));
        assert_eq!(a.display(&t).to_string(), "4*s0+3");
        let b = s1.mul(&s0).add(&s0.scale(-1));
        assert_eq!(b.display(&t).to_string(), "s0*s1-s0");
        assert_eq!(s0.mul(&s1), s1.mul(&s0));
        assert_eq!(a.sub(&a), Dim::constant(0));
        assert_eq!(s0.scale(12).div_exact(&Dim::constant(4)), Some(s0.scale(3)));
        assert_eq!(s0.scale(12).mul(&s1).div_exact(&s1), Some(s0.scale(12)));
        assert_eq!(s0.scale(3).div_exact(&Dim::constant(2)), None);
        assert_eq!(a.eval(&|_| Some(5)), Some(23));
        assert_eq!(a.min_value(&t), Some(7));
    }
}
