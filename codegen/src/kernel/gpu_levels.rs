//! The output levels of a dot-product kernel whose matrices a view interleaves, split and
//! reordered so that the tensor-core tiles ([`super::gpu_mma`]) find its matrices.
//!
//! Attention's `p @ v` followed by the view that merges the heads back into the hidden
//! dimension is lowered as one kernel over the merged output, `for i0 in 0..B·S { for i1 in
//! 0..H·D { acc = Σₖ p[i0 // S, i1 // D, i0 % S, k] · v[i0 // S, i1 // D, k, i1 % D] } }`: a
//! product per batch and head, but with the head inside the columns no split of the levels
//! into rows and columns has a row factor free of the columns. [`interleaved`] splits each
//! output level at the one constant its indices divide it by (`i0` into `b · S + s`, `i1` into
//! `h · D + d`; the index simplifier then reads `(S·b + s) // S` as `b`), and offers the
//! kernel with its levels in other orders — any subset of them as columns (those with the
//! innermost level first), the rest as rows with any one of them last — for the tiles to try:
//! here rows `(b, h, s)` and columns `d`, a
//! batched product of one `S × D` matrix per batch and head. A kernel whose levels need no
//! split may need the other order alone: a projection stored straight into the heads' layout,
//! `out[b, h, s, d] = Σₖ x[b, s, k] · w[k, h·D + d]`, has rows `(b, s)` and columns `(h, d)`.
//! Reordering the levels is sound
//! because the tiles take only kernels whose elements are independent (no element reads what
//! another writes); every part of the original parallel loop must stay among the rows, so that
//! the launch's items (its iterations) still map to whole rows.

use super::ir::{Expr, Kernel, LoopKind, ScalarType, Stmt, VarId};
use kiln_ir::BinaryOp;
use std::collections::BTreeSet;

/// The output levels of `k` — its parallel loop and the single loops nested in it — down to
/// the element's statements (which start with a declaration: a dot product's accumulator).
pub(super) fn output_levels(k: &Kernel) -> Option<(Vec<(VarId, &Expr)>, &[Stmt])> {
    let [Stmt::Loop { var, extent, kind: LoopKind::Parallel, body }] = k.body.as_slice() else { return None };
    let mut levels = vec![(*var, extent)];
    let mut at = body.as_slice();
    while !matches!(at.first(), Some(Stmt::Decl { .. })) {
        let [Stmt::Loop { var, extent, kind: LoopKind::Serial | LoopKind::Vector(_), body }] = at else {
            return None;
        };
        levels.push((*var, extent));
        at = body;
    }
    Some((levels, at))
}

/// Calls `f` on every expression of `body`, nested statements included.
fn each_expr(body: &[Stmt], f: &mut dyn FnMut(&Expr)) {
    for s in body {
        match s {
            Stmt::Loop { extent, body, .. } => {
                extent.visit(f);
                each_expr(body, f);
            }
            Stmt::Let { value: e, .. } | Stmt::Decl { init: e, .. } | Stmt::Assign { value: e, .. } => e.visit(f),
            Stmt::Store { index, value, .. } => {
                index.visit(f);
                value.visit(f);
            }
            Stmt::Barrier | Stmt::Mma(_) => {}
        }
    }
}

/// Variants of `k` with its output levels split where its indices divide them and reordered
/// (see the module docs), at most `max_levels` levels each, and the levels the original
/// parallel loop became (which must stay rows); `None` when there is no other order.
pub(super) fn interleaved(k: &Kernel, max_levels: usize) -> Option<(Vec<Kernel>, BTreeSet<VarId>)> {
    let (levels, element) = output_levels(k)?;
    let mut vars = k.vars.clone();
    // Each level with its constant extent, or its two parts (outer, inner) when every
    // division of it in the element is by one constant that divides its extent.
    let mut split: Vec<(VarId, i64)> = Vec::new();
    let (mut from, mut to) = (Vec::new(), Vec::new());
    let mut top = BTreeSet::new();
    for (i, (var, extent)) in levels.iter().enumerate() {
        let Expr::Int(n) = extent else { return None };
        let mut divisors = BTreeSet::new();
        each_expr(element, &mut |e| {
            if let Expr::Binary(BinaryOp::FloorDiv | BinaryOp::Rem, x, c) = e {
                if let (Expr::Var(v), Expr::Int(c)) = (&**x, &**c) {
                    if v == var {
                        divisors.insert(*c);
                    }
                }
            }
        });
        let parts = match divisors.iter().collect::<Vec<_>>().as_slice() {
            [&c] if c > 1 && c < *n && n % c == 0 => {
                let name = vars[var.0 as usize].0.clone();
                let (outer, inner) = (VarId(vars.len() as u32), VarId(vars.len() as u32 + 1));
                vars.push((format!("{name}o"), ScalarType::Index));
                vars.push((format!("{name}i"), ScalarType::Index));
                from.push(*var);
                to.push(Expr::add(Expr::mul(Expr::Var(outer), Expr::Int(c)), Expr::Var(inner)));
                vec![(outer, n / c), (inner, c)]
            }
            _ => vec![(*var, *n)],
        };
        if i == 0 {
            top.extend(parts.iter().map(|(v, _)| *v));
        }
        split.extend(parts);
    }
    // Nothing to split and no other order: nothing new to offer.
    if split.len() > max_levels || (from.is_empty() && split.len() < 3) {
        return None;
    }
    // The element in terms of the parts, its indices simplified with the parts' ranges.
    let element: Vec<Stmt> = element.iter().map(|s| s.substitute(&from, &to)).collect();
    let variant = |order: &[(VarId, i64)]| {
        let mut body = element.clone();
        for (i, (var, n)) in order.iter().enumerate().rev() {
            let kind = if i == 0 { LoopKind::Parallel } else { LoopKind::Serial };
            body = vec![Stmt::Loop { var: *var, extent: Expr::Int(*n), kind, body }];
        }
        super::simplify::simplify_kernel(Kernel { body, vars: vars.clone(), gpu_form: None, ..k.clone() })
    };
    // Columns: every non-empty subset of the levels without a part of the parallel loop, in
    // their order — first those with the innermost level, so that consecutive threads store
    // consecutive elements where a choice allows; rows: the others in order, with each in turn
    // last.
    let n = split.len();
    let mut masks: Vec<u32> = (1..(1u32 << n) - 1).collect();
    masks.sort_by_key(|m| (m & (1 << (n - 1)) == 0, *m));
    let mut variants = Vec::new();
    for mask in masks {
        let (cols, rows): (Vec<_>, Vec<_>) = split.iter().enumerate().partition(|(i, _)| mask & (1 << i) != 0);
        if cols.iter().any(|(_, (v, _))| top.contains(v)) {
            continue;
        }
        for last in 0..rows.len() {
            let mut order: Vec<(VarId, i64)> =
                rows.iter().enumerate().filter(|(j, _)| *j != last).map(|(_, (_, l))| **l).collect();
            order.push(*rows[last].1);
            order.extend(cols.iter().map(|(_, l)| **l));
            if order != split {
                variants.push(variant(&order));
            }
        }
    }
    Some((variants, top))
}
