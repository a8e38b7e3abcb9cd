//! Index simplification: rewrites a kernel's index expressions into sums of constant multiples
//! of loop variables, symbols and opaque terms, resolving floor divisions and remainders by
//! constants where the loop ranges prove them exact.
//!
//! Views are lowered as index arithmetic over flattened positions: a permute of a reshape reads
//! `((((i0*8 + i2)*4 + i1)*8 + i3) // 32) % 8` and the like. With `i1 < 4` and `i3 < 8` known
//! from their loops, `(256*i0 + 32*i2 + 8*i1 + i3) // 32` is exactly `8*i0 + i2`, because the
//! rest `8*i1 + i3` stays in `[0, 32)`. After this pass such indices are affine in the loop
//! variables, so they need no division at run time and a backend can vectorize the loads
//! (contiguous along the innermost loop). Every rewrite is an identity on integers: a division
//! `a // c` becomes `q` only when `a = c*q + r` with `r` proven to lie in `[0, c)`. Where `r`
//! is proven non-negative only, the multiples of `c` still leave the division —
//! `(c*q + r) // c = q + r // c`, `(c*q + r) % c = r % c` — so that an index no longer
//! depends on a loop whose terms were multiples (a transposed view of a flattened plane reads
//! `((64*i2 + i1) // 8) % 8`, which is `(i1 // 8) % 8`, then `i1 // 8` for `i1 < 64`).

use super::eval::expr_type;
use super::ir::{Expr, GpuForm, Kernel, ScalarType, Stmt, VarId};
use kiln_ir::BinaryOp;
use std::collections::HashMap;

/// An index as `constant + Σ coefficient × atom`, atoms in order of first appearance.
#[derive(Clone, Debug, PartialEq)]
struct Linear {
    constant: i64,
    terms: Vec<(Expr, i64)>,
}

impl Linear {
    fn constant(c: i64) -> Linear {
        Linear { constant: c, terms: Vec::new() }
    }

    fn atom(e: Expr) -> Linear {
        Linear { constant: 0, terms: vec![(e, 1)] }
    }

    fn as_constant(&self) -> Option<i64> {
        self.terms.is_empty().then_some(self.constant)
    }

    /// `self + k * other`, or `None` on overflow.
    fn plus(mut self, other: Linear, k: i64) -> Option<Linear> {
        self.constant = self.constant.checked_add(other.constant.checked_mul(k)?)?;
        for (atom, c) in other.terms {
            let c = c.checked_mul(k)?;
            match self.terms.iter_mut().find(|(a, _)| *a == atom) {
                Some((_, existing)) => *existing = existing.checked_add(c)?,
                None => self.terms.push((atom, c)),
            }
        }
        self.terms.retain(|(_, c)| *c != 0);
        Some(self)
    }

    fn scaled(self, k: i64) -> Option<Linear> {
        Linear::constant(0).plus(self, k)
    }

    fn to_expr(&self) -> Expr {
        let mut e = Expr::Int(0);
        for (atom, c) in &self.terms {
            e = Expr::add(e, Expr::mul(atom.clone(), Expr::Int(*c)));
        }
        Expr::add(e, Expr::Int(self.constant))
    }
}

struct Simplifier<'k> {
    /// The kernel, for the types of expressions inside indices (`None`: such expressions are
    /// kept as they are).
    kernel: Option<&'k Kernel>,
    /// `[min, max]` of loop variables with constant extents.
    ranges: HashMap<VarId, (i64, i64)>,
}

impl Simplifier<'_> {
    fn range(&self, atom: &Expr) -> Option<(i64, i64)> {
        match atom {
            Expr::Var(v) => self.ranges.get(v).copied(),
            // `x // c` and `x % c` of a non-negative `x` whose range is known.
            Expr::Binary(op @ (BinaryOp::FloorDiv | BinaryOp::Rem), x, c) => {
                let (Expr::Int(c), Some((lo, hi))) = (&**c, self.range(x)) else { return None };
                match op {
                    _ if *c <= 0 || lo < 0 => None,
                    BinaryOp::FloorDiv => Some((lo / c, hi / c)),
                    _ => Some((0, hi.min(c - 1))),
                }
            }
            _ => None,
        }
    }

    /// `l = c*q + r`, each term's coefficient split into a multiple of `c` (in `q`) and a
    /// remainder in `[0, c)` (in `r`, whose atoms must be proven non-negative): `(q, r, the
    /// largest value of r, whether a term went into both)`, or `None` when an atom of `r` is
    /// not proven non-negative or the bound overflows.
    fn split(&self, l: &Linear, c: i64) -> Option<(Linear, Linear, i64, bool)> {
        let mut q = Linear::constant(l.constant.div_euclid(c));
        let mut r = Linear::constant(l.constant.rem_euclid(c));
        let (mut r_max, mut mixed) = (r.constant, false);
        for (atom, k) in &l.terms {
            let (kq, kr) = (k.div_euclid(c), k.rem_euclid(c));
            mixed |= kq != 0 && kr != 0;
            if kq != 0 {
                q.terms.push((atom.clone(), kq));
            }
            if kr != 0 {
                let (lo, hi) = self.range(atom)?;
                if lo < 0 {
                    return None;
                }
                r_max = r_max.checked_add(kr.checked_mul(hi)?)?;
                r.terms.push((atom.clone(), kr));
            }
        }
        Some((q, r, r_max, mixed))
    }

    /// `l = c*q + r` with `r` proven in `[0, c)`: returns `(q, r)`.
    fn div_rem(&self, l: &Linear, c: i64) -> Option<(Linear, Linear)> {
        let (q, r, r_max, _) = self.split(l, c)?;
        (r_max < c).then_some((q, r))
    }

    /// `l = c*q + r` where `q` has the terms of `l` whose coefficients `c` divides and `r` the
    /// others, each with a coefficient in `(0, c)` and a non-negative atom (so `r` is
    /// non-negative, though not proven below `c`): returns `(q, r)`, so that
    /// `l // c = q + r // c` and `l % c = r % c`.
    fn split_multiples(&self, l: &Linear, c: i64) -> Option<(Linear, Linear)> {
        let (q, r, _, mixed) = self.split(l, c)?;
        (!mixed).then_some((q, r))
    }

    /// `l` with each pair of terms `n·k·(x // n) + k·(x % n)` of a non-negative loop variable
    /// `x` read as `k·x` (a view that splits a dimension and one that merges it back:
    /// `393216·(i0 // 512) + 768·(i0 % 512)` is `768·i0`).
    fn recombine(&self, mut l: Linear) -> Linear {
        let parts = |atom: &Expr| match atom {
            Expr::Binary(op @ (BinaryOp::FloorDiv | BinaryOp::Rem), x, n) => match (&**x, &**n) {
                (Expr::Var(v), Expr::Int(n)) if *n > 0 => Some((*op, *v, *n)),
                _ => None,
            },
            _ => None,
        };
        let mut i = 0;
        while i < l.terms.len() {
            let found = parts(&l.terms[i].0).filter(|(op, v, _)| {
                *op == BinaryOp::FloorDiv && self.ranges.get(v).is_some_and(|(lo, _)| *lo >= 0)
            });
            let pair = found.and_then(|(_, v, n)| {
                let high = l.terms[i].1;
                l.terms.iter().position(|(atom, k)| {
                    parts(atom) == Some((BinaryOp::Rem, v, n)) && k.checked_mul(n) == Some(high)
                })
                .map(|j| (j, v, l.terms[j].1))
            });
            match pair {
                Some((j, v, k)) => {
                    let (first, second) = (i.min(j), i.max(j));
                    l.terms.remove(second);
                    l.terms.remove(first);
                    l = match l.clone().plus(Linear::atom(Expr::Var(v)), k) {
                        Some(sum) => sum,
                        None => return l,
                    };
                    i = 0;
                }
                None => i += 1,
            }
        }
        l
    }

    /// The largest proper factor `g` of `c` shared with a term's coefficient for which
    /// `l = g*q + r` with `r` proven in `[0, g)`: `(g, q, r)`.
    fn common_factor(&self, l: &Linear, c: i64) -> Option<(i64, Linear, Linear)> {
        fn gcd(a: i64, b: i64) -> i64 {
            if b == 0 {
                a.abs()
            } else {
                gcd(b, a % b)
            }
        }
        let mut factors: Vec<i64> = l.terms.iter().map(|(_, k)| gcd(c, *k)).filter(|g| *g > 1 && *g < c).collect();
        factors.sort_unstable_by(|a, b| b.cmp(a));
        factors.dedup();
        factors.into_iter().find_map(|g| self.div_rem(l, g).map(|(q, r)| (g, q, r)))
    }

    /// The linear form of index expression `e`.
    fn linear(&self, e: &Expr) -> Linear {
        let opaque = || Linear::atom(self.children(e));
        match e {
            Expr::Int(v) => Linear::constant(*v),
            Expr::Binary(BinaryOp::Add, a, b) => {
                self.linear(a).plus(self.linear(b), 1).map(|l| self.recombine(l)).unwrap_or_else(opaque)
            }
            Expr::Binary(BinaryOp::Sub, a, b) => {
                self.linear(a).plus(self.linear(b), -1).map(|l| self.recombine(l)).unwrap_or_else(opaque)
            }
            Expr::Binary(BinaryOp::Mul, a, b) => {
                let (la, lb) = (self.linear(a), self.linear(b));
                match (la.as_constant(), lb.as_constant()) {
                    (_, Some(k)) => la.scaled(k),
                    (Some(k), _) => lb.scaled(k),
                    _ => None,
                }
                .unwrap_or_else(opaque)
            }
            Expr::Binary(op @ (BinaryOp::FloorDiv | BinaryOp::Rem), a, b) => {
                let Expr::Int(c) = **b else { return opaque() };
                if c <= 0 {
                    return opaque();
                }
                // (x // a) // b == x // (a*b) for positive a, b.
                if let (BinaryOp::FloorDiv, Expr::Binary(BinaryOp::FloorDiv, x, inner)) = (op, a.as_ref()) {
                    if let Expr::Int(a_c) = **inner {
                        if let Some(ab) = a_c.checked_mul(c).filter(|_| a_c > 0) {
                            return self.linear(&Expr::Binary(BinaryOp::FloorDiv, x.clone(), Box::new(Expr::Int(ab))));
                        }
                    }
                }
                let l = self.linear(a);
                if let Some((q, r)) = self.div_rem(&l, c) {
                    return if *op == BinaryOp::FloorDiv { q } else { r };
                }
                // A common factor `g` of `c` and the terms: `l = g*q + r` with `r` in `[0, g)`
                // gives `l // c = q // (c/g)` and `l % c = g*(q % (c/g)) + r` (a view merging
                // a batch dimension into rows reads `(128*i0 + i1) // 8192` for `i1 < 128`:
                // `i0 // 64`).
                if let Some((g, q, r)) = self.common_factor(&l, c) {
                    let n = Box::new(Expr::Int(c / g));
                    let q = Box::new(q.to_expr());
                    if *op == BinaryOp::FloorDiv {
                        return self.linear(&Expr::Binary(BinaryOp::FloorDiv, q, n));
                    }
                    let high = self.linear(&Expr::Binary(BinaryOp::Rem, q, n));
                    return high.scaled(g).and_then(|h| h.plus(r, 1)).unwrap_or_else(opaque);
                }
                // Multiples of `c` leave the division: `(c*q + r) // c = q + r // c` and
                // `(c*q + r) % c = r % c`, with `r` what remains (non-negative).
                match self.split_multiples(&l, c) {
                    Some((q, r)) if !q.terms.is_empty() => {
                        let rest = Expr::Binary(*op, Box::new(r.to_expr()), Box::new(Expr::Int(c)));
                        if *op == BinaryOp::FloorDiv {
                            q.plus(Linear::atom(rest), 1).unwrap_or_else(opaque)
                        } else {
                            Linear::atom(rest)
                        }
                    }
                    _ => opaque(),
                }
            }
            _ => opaque(),
        }
    }

    /// `e` with its children simplified (its own operator kept). Without the kernel's types,
    /// only the children that are surely indices: a load's index, the operands of integer
    /// arithmetic (an atom of an index).
    fn children(&self, e: &Expr) -> Expr {
        let arithmetic = matches!(
            e,
            Expr::Load { .. }
                | Expr::Binary(BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::FloorDiv | BinaryOp::Rem, ..)
        );
        match self.kernel.is_some() || arithmetic {
            true => e.map_children(&|x| self.expr(x)),
            false => e.clone(),
        }
    }

    /// `e` with every index subexpression in linear form.
    fn expr(&self, e: &Expr) -> Expr {
        let index = match self.kernel {
            Some(kernel) => expr_type(kernel, e) == ScalarType::Index,
            // Reached only through indices (see `children`).
            None => !matches!(e, Expr::Load { .. }),
        };
        if index && !matches!(e, Expr::Var(_) | Expr::Int(_) | Expr::Sym(_)) {
            self.linear(e).to_expr()
        } else {
            self.children(e)
        }
    }

    fn stmts(&mut self, body: &[Stmt]) -> Vec<Stmt> {
        body.iter()
            .map(|s| match s {
                Stmt::Loop { var, extent, kind, body } => {
                    let extent = self.expr(extent);
                    if let Expr::Int(n) = extent {
                        self.ranges.insert(*var, (0, (n - 1).max(0)));
                    }
                    Stmt::Loop { var: *var, extent, kind: *kind, body: self.stmts(body) }
                }
                Stmt::Let { var, value } => Stmt::Let { var: *var, value: self.expr(value) },
                Stmt::Decl { var, init } => Stmt::Decl { var: *var, init: self.expr(init) },
                Stmt::Assign { var, value } => Stmt::Assign { var: *var, value: self.expr(value) },
                Stmt::Store { buf, index, value } => {
                    Stmt::Store { buf: *buf, index: self.expr(index), value: self.expr(value) }
                }
                Stmt::Barrier => Stmt::Barrier,
                Stmt::Mma(m) => Stmt::Mma(m.clone()),
            })
            .collect()
    }
}

/// Index expression `e` simplified for loop variables in the given `[min, max]` ranges (see
/// the module doc; what an index reads from a buffer is kept as it is).
pub(crate) fn simplify_index(e: &Expr, ranges: &HashMap<VarId, (i64, i64)>) -> Expr {
    Simplifier { kernel: None, ranges: ranges.clone() }.linear(e).to_expr()
}

/// `kernel` with its index expressions simplified (see the module doc).
pub fn simplify_kernel(kernel: Kernel) -> Kernel {
    let mut s = Simplifier { kernel: Some(&kernel), ranges: HashMap::new() };
    let body = s.stmts(&kernel.body);
    let gpu_form =
        kernel.gpu_form.clone().map(|f| Box::new(GpuForm { kernel: simplify_kernel(f.kernel), grid: f.grid }));
    Kernel { body, gpu_form, ..kernel }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::ir::{Access, BufferParam, LoopKind};
    use kiln_ir::{DType, Dim};

    /// A kernel storing `index` into a buffer inside loops over `extents`.
    fn kernel(extents: &[i64], index: impl Fn(&[Expr]) -> Expr) -> Kernel {
        let vars: Vec<VarId> = (0..extents.len() as u32).map(VarId).collect();
        let idx: Vec<Expr> = vars.iter().map(|&v| Expr::Var(v)).collect();
        let mut body = vec![Stmt::Store { buf: 0, index: index(&idx), value: Expr::elem_const(1.0, DType::F32) }];
        for (v, &n) in vars.iter().zip(extents).rev() {
            body = vec![Stmt::Loop { var: *v, extent: Expr::Int(n), kind: LoopKind::Serial, body }];
        }
        Kernel {
            name: "k".into(),
            buffers: vec![BufferParam {
                name: "b".into(),
                dtype: DType::F32,
                access: Access::Write,
                len: Dim::constant(1),
            }],
            vars: vars.iter().map(|v| (format!("i{}", v.0), ScalarType::Index)).collect(),
            body,
            fused: vec![],
            gpu_form: None,
        }
    }

    fn stored_index(k: &Kernel) -> Expr {
        let mut s = &k.body;
        loop {
            match &s[0] {
                Stmt::Loop { body, .. } => s = body,
                Stmt::Store { index, .. } => return index.clone(),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn lin(terms: &[(u32, i64)]) -> Expr {
        Linear { constant: 0, terms: terms.iter().map(|&(v, c)| (Expr::Var(VarId(v)), c)).collect() }.to_expr()
    }

    #[test]
    fn divisions_resolved_by_loop_ranges() {
        // (((i0*8 + i2)*4 + i1)*8 + i3): i0 < 2, i1 < 4, i2 < 8, i3 < 8.
        let flat = |i: &[Expr]| {
            Expr::add(
                Expr::mul(
                    Expr::add(
                        Expr::mul(Expr::add(Expr::mul(i[0].clone(), Expr::Int(8)), i[2].clone()), Expr::Int(4)),
                        i[1].clone(),
                    ),
                    Expr::Int(8),
                ),
                i[3].clone(),
            )
        };
        let k = simplify_kernel(kernel(&[2, 4, 8, 8], |i| Expr::div(Expr::div(flat(i), Expr::Int(32)), Expr::Int(8))));
        assert_eq!(stored_index(&k), lin(&[(0, 1)]));
        let k = simplify_kernel(kernel(&[2, 4, 8, 8], |i| Expr::rem(Expr::div(flat(i), Expr::Int(32)), Expr::Int(8))));
        assert_eq!(stored_index(&k), lin(&[(2, 1)]));
        let k = simplify_kernel(kernel(&[2, 4, 8, 8], |i| Expr::rem(flat(i), Expr::Int(32))));
        assert_eq!(stored_index(&k), lin(&[(1, 8), (3, 1)]));
    }

    #[test]
    fn divisions_without_proof_are_kept() {
        // i1 < 40 does not fit below 32: (32*i0 + i1) // 32 keeps i1's division, but the
        // multiple of 32 leaves it: i0 + i1 // 32.
        let k = simplify_kernel(kernel(&[4, 40], |i| {
            Expr::div(Expr::add(Expr::mul(i[0].clone(), Expr::Int(32)), i[1].clone()), Expr::Int(32))
        }));
        let rest = Expr::div(Expr::Var(VarId(1)), Expr::Int(32));
        assert_eq!(stored_index(&k), Expr::add(Expr::Var(VarId(0)), rest), "{:?}", stored_index(&k));
        // Terms that are neither multiples of 32 nor below it, or negative, keep the whole
        // division: (33*i0 + i1) // 32 and (32*i0 - i1) // 32.
        for (k0, k1) in [(33, 1), (32, -1)] {
            let k = simplify_kernel(kernel(&[4, 40], |i| {
                let l = Expr::add(Expr::mul(i[0].clone(), Expr::Int(k0)), Expr::mul(i[1].clone(), Expr::Int(k1)));
                Expr::div(l, Expr::Int(32))
            }));
            assert!(matches!(stored_index(&k), Expr::Binary(BinaryOp::FloorDiv, ..)), "{:?}", stored_index(&k));
        }
    }

    #[test]
    fn multiples_of_the_divisor_leave_divisions_and_remainders() {
        // A transposed view of a flattened plane: ((64*i0 + i1) // 8) % 8 with i1 < 64 reads
        // row i1 // 8 whatever i0 is (the column of the transposed output).
        let k = simplify_kernel(kernel(&[4, 64], |i| {
            let flat = Expr::add(Expr::mul(i[0].clone(), Expr::Int(64)), i[1].clone());
            Expr::rem(Expr::div(flat, Expr::Int(8)), Expr::Int(8))
        }));
        assert_eq!(stored_index(&k), Expr::div(Expr::Var(VarId(1)), Expr::Int(8)));
        // (64*i0 + i1) % 8 = i1 % 8.
        let k = simplify_kernel(kernel(&[4, 64], |i| {
            Expr::rem(Expr::add(Expr::mul(i[0].clone(), Expr::Int(64)), i[1].clone()), Expr::Int(8))
        }));
        assert_eq!(stored_index(&k), Expr::rem(Expr::Var(VarId(1)), Expr::Int(8)));
    }

    #[test]
    fn factors_shared_with_the_divisor_resolve_merged_views() {
        // A view merging a batch of 64 rows into a 128 × 128 plane: (128*i0 + i1) // 8192 with
        // i1 < 128 is i0 // 64, and its remainder 128*(i0 % 64) + i1.
        let flat = |i: &[Expr]| Expr::add(Expr::mul(i[0].clone(), Expr::Int(128)), i[1].clone());
        let k = simplify_kernel(kernel(&[128, 128], |i| Expr::div(flat(i), Expr::Int(8192))));
        assert_eq!(stored_index(&k), Expr::div(Expr::Var(VarId(0)), Expr::Int(64)));
        let k = simplify_kernel(kernel(&[128, 128], |i| Expr::rem(flat(i), Expr::Int(8192))));
        let high = Expr::mul(Expr::rem(Expr::Var(VarId(0)), Expr::Int(64)), Expr::Int(128));
        assert_eq!(stored_index(&k), Expr::add(Expr::add(high, Expr::Var(VarId(1))), Expr::Int(0)));
        // Not when the rest can reach the factor: i1 < 129 keeps the division.
        let k = simplify_kernel(kernel(&[128, 129], |i| Expr::div(flat(i), Expr::Int(8192))));
        assert!(matches!(stored_index(&k), Expr::Binary(BinaryOp::FloorDiv, ..)), "{:?}", stored_index(&k));
    }

    #[test]
    fn a_split_and_merged_dimension_reads_as_itself() {
        // 393216·(i0 // 512) + 768·(i0 % 512) + i1 = 768·i0 + i1 for i0 < 2048.
        let k = simplify_kernel(kernel(&[2048, 768], |i| {
            let high = Expr::mul(Expr::div(i[0].clone(), Expr::Int(512)), Expr::Int(393216));
            let low = Expr::mul(Expr::rem(i[0].clone(), Expr::Int(512)), Expr::Int(768));
            Expr::add(Expr::add(high, low), i[1].clone())
        }));
        assert_eq!(stored_index(&k), lin(&[(0, 768), (1, 1)]), "{:?}", stored_index(&k));
        // Coefficients that do not match keep both terms.
        let k = simplify_kernel(kernel(&[2048, 768], |i| {
            let high = Expr::mul(Expr::div(i[0].clone(), Expr::Int(512)), Expr::Int(393215));
            Expr::add(high, Expr::mul(Expr::rem(i[0].clone(), Expr::Int(512)), Expr::Int(768)))
        }));
        assert!(matches!(stored_index(&k), Expr::Binary(BinaryOp::Add, ..)), "{:?}", stored_index(&k));
        let mut divisions = 0;
        stored_index(&k).visit(&mut |e| divisions += matches!(e, Expr::Binary(BinaryOp::FloorDiv, ..)) as usize);
        assert_eq!(divisions, 1);
    }

    #[test]
    fn like_terms_combine_and_cancel() {
        let k = simplify_kernel(kernel(&[5, 6], |i| {
            Expr::sub(
                Expr::add(Expr::mul(i[0].clone(), Expr::Int(6)), i[1].clone()),
                Expr::mul(i[0].clone(), Expr::Int(6)),
            )
        }));
        assert_eq!(stored_index(&k), lin(&[(1, 1)]));
    }
}
