//! Layout rules: views composed or cancelled, and permutes moved through elementwise ops so
//! that they meet (and cancel) or reach a weight (where constant folding stores the weight
//! permuted). All are exact: views move elements without computing on them, and an
//! elementwise op computes the same value for every element wherever the elements sit.

use super::{add_op, attributed_op, rule, var, Rule};
use crate::egraph::lang::TensorGraph;
use egg::{Id, Subst};
use kiln_ir::{BinaryOp, Op, UnaryOp};

const THEME: &str = "layout";

/// `permute{perm=q}` of `permute{perm=p}` of x is `permute{perm=r}` of x with r[i] = p[q[i]].
fn compose(egraph: &mut TensorGraph, subst: &Subst) -> Option<Id> {
    let (Op::Permute { perm: outer }, Op::Permute { perm: inner }) =
        (attributed_op(egraph, subst, "?q", "permute")?, attributed_op(egraph, subst, "?p", "permute")?)
    else {
        return None;
    };
    let x = var(subst, "?x");
    let perm: Vec<usize> = outer.iter().map(|&i| inner.get(i).copied()).collect::<Option<_>>()?;
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Some(x);
    }
    Some(add_op(egraph, &Op::Permute { perm }, &[x]))
}

/// The outer view of `?outer` applied straight to `?x` (`op`: reshape or expand).
fn outer_only(egraph: &mut TensorGraph, subst: &Subst, op: &str) -> Option<Id> {
    let outer = attributed_op(egraph, subst, "?s", op)?;
    Some(add_op(egraph, &outer, &[var(subst, "?x")]))
}

/// `?x` itself when the view of it has `?x`'s type (a view that changes nothing).
fn identity(_: &mut TensorGraph, _: Id, subst: &Subst) -> Option<Id> {
    Some(var(subst, "?x"))
}

/// Elementwise unary ops a permute moves through (all of them).
const UNARY: [UnaryOp; 21] = UnaryOp::ALL;
/// Binary ops a permute applied to both operands moves through.
pub const PERMUTED_BINARY: [BinaryOp; 8] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Max,
    BinaryOp::Min,
    BinaryOp::Pow,
    BinaryOp::Rem,
];

pub fn rules() -> Vec<Rule> {
    let mut rules = vec![
        rule(
            "permute-permute",
            THEME,
            "Two permutes compose into one (and cancel when the composition is the identity).",
            "(permute ?q (permute ?p ?x))",
            |g, _, s| compose(g, s),
        ),
        rule(
            "reshape-reshape",
            THEME,
            "A reshape of a reshape is the outer reshape: both keep the row-major element order.",
            "(reshape ?s (reshape ?t ?x))",
            |g, _, s| outer_only(g, s, "reshape"),
        ),
        rule(
            "reshape-identity",
            THEME,
            "A reshape to the operand's own shape is the operand (the type check keeps it exact).",
            "(reshape ?s ?x)",
            identity,
        ),
        rule(
            "expand-expand",
            THEME,
            "An expand of an expand is the outer expand: expand only grows size-1 dims.",
            "(expand ?s (expand ?t ?x))",
            |g, _, s| outer_only(g, s, "expand"),
        ),
        rule(
            "expand-identity",
            THEME,
            "An expand to the operand's own shape is the operand.",
            "(expand ?s ?x)",
            identity,
        ),
    ];
    for u in UNARY {
        let name = u.name();
        rules.push(rule(
            &format!("{name}-of-permute"),
            THEME,
            "An elementwise op of a permute is the permute of the op: each element is computed \
             from the same input element.",
            &format!("({name} (permute ?p ?x))"),
            move |g, _, s| {
                let inner = add_op(g, &Op::Unary(u), &[var(s, "?x")]);
                let p = attributed_op(g, s, "?p", "permute")?;
                Some(add_op(g, &p, &[inner]))
            },
        ));
    }
    for b_op in PERMUTED_BINARY {
        let name = b_op.name();
        rules.push(rule(
            &format!("{name}-of-permutes"),
            THEME,
            "A binary elementwise op of two operands permuted alike (same permutation, same \
             shapes) is the permute of the op.",
            &format!("({name} (permute ?p ?a) (permute ?p ?b))"),
            move |g, _, s| {
                let (a, b) = (var(s, "?a"), var(s, "?b"));
                if g[a].data.ty()?.shape != g[b].data.ty()?.shape {
                    return None;
                }
                let inner = add_op(g, &Op::Binary(b_op), &[a, b]);
                let p = attributed_op(g, s, "?p", "permute")?;
                Some(add_op(g, &p, &[inner]))
            },
        ));
    }
    rules
}
