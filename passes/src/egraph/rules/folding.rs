//! Weight folding: constant scales and shifts move through sums and into the weights of the
//! linear layer or convolution before them, where constant folding computes them at compile
//! time. Together they fold an inference batch norm (which the frontend writes as
//! `(x - mean) * scale + shift`) into the preceding convolution — `conv(x, W * scale) + bias'`
//! — and a per-channel scale (LayerScale) into the preceding linear layer.
//!
//! Each rule requires its scales and shifts to be constants and the value they act on not to
//! be one (constants fold anyway), which keeps the e-graph's growth small. Equal in real
//! arithmetic; in floating point the products and sums round in another order, as in every
//! inference compiler's batch-norm folding (checked against the interpreter at kiln's
//! tolerances by the soundness test).

use super::{add_op, attributed_op, rule, var, Rule};
use crate::egraph::lang::TensorGraph;
use egg::{Id, Subst};
use kiln_ir::{BinaryOp, Dim, Op};

const THEME: &str = "folding";

fn constant(egraph: &TensorGraph, subst: &Subst, name: &str) -> bool {
    let d = &egraph[var(subst, name)].data;
    d.is_constant() && d.ty().is_some_and(|t| t.dtype.is_float())
}

/// `?x` is not a constant and every other named variable is a float constant.
fn shifts_and_scales(egraph: &TensorGraph, subst: &Subst, constants: &[&str]) -> bool {
    !egraph[var(subst, "?x")].data.is_constant() && constants.iter().all(|c| constant(egraph, subst, c))
}

fn binary(egraph: &mut TensorGraph, op: BinaryOp, a: Id, b: Id) -> Id {
    add_op(egraph, &Op::Binary(op), &[a, b])
}

/// `(?x op1 ?c) * ?s = x * s op1 c * s` for `op1` add or sub.
fn distribute(op: BinaryOp) -> impl Fn(&mut TensorGraph, Id, &Subst) -> Option<Id> {
    move |g, _, s| {
        if !shifts_and_scales(g, s, &["?c", "?s"]) {
            return None;
        }
        let xs = binary(g, BinaryOp::Mul, var(s, "?x"), var(s, "?s"));
        let cs = binary(g, BinaryOp::Mul, var(s, "?c"), var(s, "?s"));
        Some(binary(g, op, xs, cs))
    }
}

/// `x + (a op b)` for constants `?c1` and `?c2` (`a`, `b` the two named, in that order).
fn combine(op: BinaryOp, a: &'static str, b: &'static str) -> impl Fn(&mut TensorGraph, Id, &Subst) -> Option<Id> {
    move |g, _, s| {
        if !shifts_and_scales(g, s, &["?c1", "?c2"]) {
            return None;
        }
        let c = binary(g, op, var(s, a), var(s, b));
        Some(binary(g, BinaryOp::Add, var(s, "?x"), c))
    }
}

/// The dims of constant `?s` when it broadcasts over an output of rank `rank` along dim
/// `along` only (every other dim is 1); its size along that dim (1 for a scalar-like scale).
fn only_along(egraph: &TensorGraph, s: Id, rank: usize, along: usize) -> Option<Dim> {
    let shape = &egraph[s].data.ty()?.shape;
    if shape.len() > rank {
        return None;
    }
    let offset = rank - shape.len();
    let mut size = Dim::constant(1);
    for (i, d) in shape.iter().enumerate() {
        if i + offset == along {
            size = d.clone();
        } else if !d.is_const(1) {
            return None;
        }
    }
    Some(size)
}

pub fn rules() -> Vec<Rule> {
    vec![
        rule(
            "scale-over-shift",
            THEME,
            "(x + c) * s = x * s + c * s for constants c and s (c * s folds). Equal in real \
             arithmetic; rounds in another order.",
            "(mul (add ?x ?c) ?s)",
            distribute(BinaryOp::Add),
        ),
        rule(
            "scale-over-centering",
            THEME,
            "(x - c) * s = x * s - c * s for constants c and s: batch norm's `(x - mean) * scale` \
             becomes a scale the layer before can absorb. Equal in real arithmetic; rounds in \
             another order.",
            "(mul (sub ?x ?c) ?s)",
            distribute(BinaryOp::Sub),
        ),
        rule(
            "combine-shifts",
            THEME,
            "(x + c1) + c2 = x + (c1 + c2) for constants (one add at run time). Equal in real \
             arithmetic.",
            "(add (add ?x ?c1) ?c2)",
            combine(BinaryOp::Add, "?c1", "?c2"),
        ),
        rule(
            "combine-shift-and-centering",
            THEME,
            "(x + c1) - c2 = x + (c1 - c2) for constants. Equal in real arithmetic.",
            "(sub (add ?x ?c1) ?c2)",
            combine(BinaryOp::Sub, "?c1", "?c2"),
        ),
        rule(
            "combine-centering-and-shift",
            THEME,
            "(x - c1) + c2 = x + (c2 - c1) for constants. Equal in real arithmetic.",
            "(add (sub ?x ?c1) ?c2)",
            combine(BinaryOp::Sub, "?c2", "?c1"),
        ),
        rule(
            "combine-scales",
            THEME,
            "(x * c1) * c2 = x * (c1 * c2) for constants (one multiply at run time). Equal in real \
             arithmetic; the product rounds once less (and can differ where x * c1 overflows).",
            "(mul (mul ?x ?c1) ?c2)",
            |g, _, s| {
                if !shifts_and_scales(g, s, &["?c1", "?c2"]) {
                    return None;
                }
                let c = binary(g, BinaryOp::Mul, var(s, "?c1"), var(s, "?c2"));
                Some(binary(g, BinaryOp::Mul, var(s, "?x"), c))
            },
        ),
        rule(
            "conv-scaled-channels",
            THEME,
            "conv(x, W) * s = conv(x, W * s) for a constant weight W and a constant s that varies \
             only along the output channels (batch norm's scale): each output channel's weights \
             are scaled, and folding computes them at compile time. Not for transposed \
             convolutions (their weight is laid out by input channel). Equal in real arithmetic.",
            "(mul (conv ?a ?x ?w) ?s)",
            |g, _, s| {
                let Some(Op::Conv(attrs)) = attributed_op(g, s, "?a", "conv") else { return None };
                if attrs.transposed || !shifts_and_scales(g, s, &["?w", "?s"]) {
                    return None;
                }
                let (w, scale) = (var(s, "?w"), var(s, "?s"));
                let out_rank = attrs.stride.len() + 2;
                let channels = only_along(g, scale, out_rank, 1)?;
                let w_rank = g[w].data.ty()?.rank();
                let mut shape = vec![Dim::constant(1); w_rank];
                shape[0] = channels;
                let per_channel = add_op(g, &Op::Reshape { shape }, &[scale]);
                let scaled = binary(g, BinaryOp::Mul, w, per_channel);
                Some(add_op(g, &Op::Conv(attrs), &[var(s, "?x"), scaled]))
            },
        ),
        rule(
            "matmul-scaled-columns",
            THEME,
            "(a @ W) * s = a @ (W * s) for a constant 2-d weight W and a constant s that varies \
             only along the output columns (a per-channel scale such as LayerScale): folding \
             scales W's columns at compile time. Equal in real arithmetic.",
            "(mul (matmul ?x ?w) ?s)",
            |g, _, s| {
                let (w, scale) = (var(s, "?w"), var(s, "?s"));
                // Rank-0 scales are `scaled-matmul`'s.
                if !shifts_and_scales(g, s, &["?w", "?s"])
                    || g[w].data.ty()?.rank() != 2
                    || g[scale].data.ty()?.rank() == 0
                {
                    return None;
                }
                let out_rank = g[var(s, "?x")].data.ty()?.rank().max(2);
                let columns = only_along(g, scale, out_rank, out_rank - 1)?;
                let per_column = add_op(g, &Op::Reshape { shape: vec![columns] }, &[scale]);
                let scaled = binary(g, BinaryOp::Mul, w, per_column);
                Some(add_op(g, &Op::MatMul, &[var(s, "?x"), scaled]))
            },
        ),
    ]
}
