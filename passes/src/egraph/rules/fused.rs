//! Recognition of fused ops that backends compute specially: attention, from the decomposed
//! form the frontend (and a model's own code) produces, becomes one [`Op::Attention`], which
//! the backends compute flash-attention style — without the score matrix in memory.
//!
//! Layer norm, RMS norm, softmax and GELU/SiLU are not recognized as ops of their own: kiln's
//! fusion already computes each of them as one kernel from its decomposed form (the row
//! statistics are hoisted into the row loop, see `kiln_codegen::kernel::hoist`), so on the CPU
//! a named op would change nothing.

use super::{add_op, attributed_op, rule, var, Rule};
use crate::egraph::lang::{TensorAnalysis, TensorGraph};
use egg::{Id, Subst};
use kiln_ir::{AttentionAttrs, AttentionMask, AttentionScale, DType, Op, ReduceKind, TensorType};

const THEME: &str = "fused";

/// The most masks one attention absorbs (causal, padding and one more).
const MAX_MASKS: usize = 3;

/// The searched form: `softmax(s) @ v` with softmax as the frontend decomposes it.
const SOFTMAX_MATMUL: &str =
    "(matmul (div (exp (sub ?s (reduce_max ?a1 ?s))) (reduce_sum ?a2 (exp (sub ?s (reduce_max ?a1 ?s))))) ?v)";

/// The scores `s` taken apart: `masks(scale(q @ kt))`.
struct Scores {
    scale: AttentionScale,
    q: Id,
    kt: Id,
    /// In the order they apply.
    masks: Vec<(AttentionMask, Id)>,
}

/// A rank-0 `full` constant's value (finite for a scale).
fn scalar_constant(egraph: &TensorGraph, id: Id) -> Option<f64> {
    let d = &egraph[id].data;
    d.ty().is_some_and(|t| t.shape.is_empty()).then(|| d.full()).flatten()
}

/// A `full` constant of any shape: its value.
fn fill_constant(egraph: &TensorGraph, id: Id) -> Option<f64> {
    egraph[id].data.full()
}

/// The operands of a `matmul` node in class `id` whose type is `want`.
fn matmul_in(egraph: &TensorGraph, id: Id, want: &TensorType) -> Option<(Id, Id)> {
    if egraph[id].data.ty() != Some(want) {
        return None;
    }
    egraph[id].nodes.iter().find(|n| n.op.as_str() == "matmul").map(|n| (n.children[0], n.children[1]))
}

/// Takes class `id` (of the scores' type `want`) apart into at most `budget` masks around an
/// optional scale around `q @ kt`. Nodes are tried in a fixed order (a matmul, then a scale,
/// then masks), so the result is deterministic.
fn peel(egraph: &TensorGraph, id: Id, want: &TensorType, budget: usize) -> Option<Scores> {
    if egraph[id].data.ty() != Some(want) {
        return None;
    }
    if let Some((q, kt)) = matmul_in(egraph, id, want) {
        return Some(Scores { scale: AttentionScale::Mul(1.0), q, kt, masks: vec![] });
    }
    let nodes = &egraph[id].nodes;
    for (name, scale) in [("mul", AttentionScale::Mul as fn(f64) -> AttentionScale), ("div", AttentionScale::Div)] {
        for n in nodes.iter().filter(|n| n.op.as_str() == name) {
            let Some(c) = scalar_constant(egraph, n.children[1]).filter(|c| c.is_finite() && *c != 0.0) else {
                continue;
            };
            if let Some((q, kt)) = matmul_in(egraph, n.children[0], want) {
                return Some(Scores { scale: scale(c), q, kt, masks: vec![] });
            }
        }
    }
    if budget == 0 {
        return None;
    }
    for n in nodes {
        let ops = TensorAnalysis::operands(egraph, n);
        let found = match n.op.as_str() {
            "add" => [(ops[0], ops[1]), (ops[1], ops[0])].into_iter().find_map(|(s, m)| {
                let float_mask = egraph[m].data.ty().is_some_and(|t| t.dtype == want.dtype);
                let inner = float_mask.then(|| peel(egraph, s, want, budget - 1)).flatten()?;
                Some((inner, AttentionMask::Add, m))
            }),
            "where" => {
                let (cond, a, b) = (ops[0], ops[1], ops[2]);
                let keep = fill_constant(egraph, b)
                    .and_then(|f| Some((peel(egraph, a, want, budget - 1)?, AttentionMask::Keep(f), cond)));
                keep.or_else(|| {
                    fill_constant(egraph, a)
                        .and_then(|f| Some((peel(egraph, b, want, budget - 1)?, AttentionMask::Fill(f), cond)))
                })
            }
            _ => None,
        };
        if let Some((mut inner, mask, m)) = found {
            inner.masks.push((mask, m));
            return Some(inner);
        }
    }
    None
}

/// `k` for `kt`: the operand of a permute in `kt`'s class that swaps the last two dims, or a
/// new such permute of `kt`.
fn untransposed(egraph: &mut TensorGraph, kt: Id, rank: usize) -> Id {
    let mut swap: Vec<usize> = (0..rank).collect();
    swap.swap(rank - 2, rank - 1);
    let transpose = Op::Permute { perm: swap };
    let found = egraph[kt].nodes.iter().find_map(|n| {
        let is_swap = n.op.as_str() == "permute" && TensorAnalysis::op_of(egraph, n).as_ref() == Some(&transpose);
        is_swap.then(|| n.children[1])
    });
    found.unwrap_or_else(|| add_op(egraph, &transpose, &[kt]))
}

/// Whether `?aN` is a reduction of kind `kind` over the last axis of a rank-`rank` tensor,
/// keeping it.
fn last_axis(egraph: &TensorGraph, subst: &Subst, attr: &str, op: &str, kind: ReduceKind, rank: usize) -> bool {
    matches!(attributed_op(egraph, subst, attr, op),
        Some(Op::Reduce { kind: k, axes, keepdim: true }) if k == kind && axes == [rank - 1])
}

/// Builds the attention node for one match of [`SOFTMAX_MATMUL`], or declines.
fn build_attention(egraph: &mut TensorGraph, subst: &Subst) -> Option<Id> {
    let s = var(subst, "?s");
    let want = egraph[s].data.ty()?.clone();
    let rank = want.rank();
    if !matches!(want.dtype, DType::F32 | DType::F64) || rank < 2 {
        return None;
    }
    if !last_axis(egraph, subst, "?a1", "reduce_max", ReduceKind::Max, rank)
        || !last_axis(egraph, subst, "?a2", "reduce_sum", ReduceKind::Sum, rank)
    {
        return None;
    }
    let scores = (0..=MAX_MASKS).find_map(|budget| peel(egraph, s, &want, budget))?;
    let kt_rank = egraph[scores.kt].data.ty()?.rank();
    let k = untransposed(egraph, scores.kt, kt_rank);
    let attrs = AttentionAttrs { scale: scores.scale, masks: scores.masks.iter().map(|m| m.0).collect() };
    let mut operands = vec![scores.q, k, var(subst, "?v")];
    operands.extend(scores.masks.iter().map(|m| m.1));
    Some(add_op(egraph, &Op::Attention(attrs), &operands))
}

/// The attention-recognition rule.
pub fn attention() -> Rule {
    rule(
        "recognize-attention",
        THEME,
        "softmax(masks(scale(q @ kᵀ))) @ v, with softmax over the last axis as \
         exp(s - max) / sum(exp(s - max)), an optional scalar scale (`* c` or `/ c`) right \
         after the matmul and up to three masks (`+ m`, `where(m, s, fill)`, \
         `where(m, fill, s)`), becomes one attention op, which backends compute without the \
         score matrix (flash attention). Exact: attention is defined as those very ops. \
         f32 and f64 only (the fused kernel accumulates in the output's dtype).",
        SOFTMAX_MATMUL,
        |g, _, s| build_attention(g, s),
    )
}

pub fn rules() -> Vec<Rule> {
    vec![attention()]
}
