//! Linear algebra: a constant scalar factor (finite, not zero) moves across a matmul, so that the cost model can put it
//! where it is cheapest — on the smaller operand, or on a weight, where constant folding
//! applies it at compile time (`(x @ W) * s → x @ (W * s)`). Equal in real arithmetic; in
//! floating point the scale is rounded into different products, so results differ in the last
//! bits (the rules are sound up to rounding, like any reassociation a compiler's fast-math
//! mode does, and are checked against the interpreter at kiln's tolerances).

use super::{add_op, rule, var, Rule};
use crate::egraph::lang::TensorGraph;
use egg::{Id, Subst};
use kiln_ir::{BinaryOp, Op};

const THEME: &str = "linalg";

/// Whether `?s` is a rank-0 `full` constant, finite and not zero. A zero or infinite factor
/// is not moved: `(a @ b) * 0` keeps the signs of `a @ b`'s zeros where `a @ (b * 0)` sums
/// signed zeros into +0 (found by the soundness test), and infinities turn cancellations into
/// NaN in one order and not the other.
fn scalar(egraph: &TensorGraph, subst: &Subst) -> bool {
    let s = &egraph[var(subst, "?s")].data;
    s.ty().is_some_and(|t| t.shape.is_empty()) && s.full().is_some_and(|v| v.is_finite() && v != 0.0)
}

fn mul(egraph: &mut TensorGraph, a: Id, b: Id) -> Id {
    add_op(egraph, &Op::Binary(BinaryOp::Mul), &[a, b])
}

fn matmul(egraph: &mut TensorGraph, a: Id, b: Id) -> Id {
    add_op(egraph, &Op::MatMul, &[a, b])
}

/// `(?a @ ?b) * ?s` for a scalar `?s`.
fn scale_after(egraph: &mut TensorGraph, _: Id, subst: &Subst) -> Option<Id> {
    if !scalar(egraph, subst) {
        return None;
    }
    let m = matmul(egraph, var(subst, "?a"), var(subst, "?b"));
    Some(mul(egraph, m, var(subst, "?s")))
}

pub fn rules() -> Vec<Rule> {
    vec![
        rule(
            "matmul-scaled-left",
            THEME,
            "(a * s) @ b = (a @ b) * s for a scalar s.",
            "(matmul (mul ?a ?s) ?b)",
            scale_after,
        ),
        rule(
            "matmul-scaled-right",
            THEME,
            "a @ (b * s) = (a @ b) * s for a scalar s.",
            "(matmul ?a (mul ?b ?s))",
            scale_after,
        ),
        rule(
            "scaled-matmul",
            THEME,
            "(a @ b) * s = a @ (b * s) for a scalar s, when b and s are constants (weights): \
             the scale folds into the weight at compile time. Not otherwise: a scale on the \
             output fuses into the matmul's epilogue, one on an activation operand would need \
             its own kernel.",
            "(mul (matmul ?a ?b) ?s)",
            |g, _, s| {
                if !scalar(g, s) || !g[var(s, "?b")].data.is_constant() || !g[var(s, "?s")].data.is_constant() {
                    return None;
                }
                let scaled = mul(g, var(s, "?b"), var(s, "?s"));
                Some(matmul(g, var(s, "?a"), scaled))
            },
        ),
    ]
}
