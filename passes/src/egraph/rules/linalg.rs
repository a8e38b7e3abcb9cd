//! Linear algebra. Matmul chains re-associate and matmuls distribute over sums (the cost model
//! picks the form). A constant
//! scalar factor (finite, not zero) moves across a matmul, so that the cost model can put it
//! where it is cheapest — on the smaller operand, or on a weight, where constant folding
//! applies it at compile time (`(x @ W) * s → x @ (W * s)`). Equal in real arithmetic; in
//! floating point the scale is rounded into different products, so results differ in the last
//! bits (the rules are sound up to rounding, like any reassociation a compiler's fast-math
//! mode does, and are checked against the interpreter at kiln's tolerances).

use super::{add_op, rule, var, Rule};
use crate::egraph::lang::{TensorAnalysis, TensorGraph, TensorNode};
use egg::{Applier, Id, PatternAst, Rewrite, Subst};
use kiln_ir::{BinaryOp, Dim, Op};

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
        rule(
            "matmul-reassociate-left",
            THEME,
            "(a @ b) @ c = a @ (b @ c): the cost model picks the order with less work, and with b \
             and c weights, b @ c folds into one weight (a low-rank adapter's two factors). \
             Equal in real arithmetic; the sums round in a different order.",
            "(matmul (matmul ?a ?b) ?c)",
            |g, _, s| {
                let bc = matmul(g, var(s, "?b"), var(s, "?c"));
                Some(matmul(g, var(s, "?a"), bc))
            },
        ),
        rule(
            "matmul-reassociate-right",
            THEME,
            "a @ (b @ c) = (a @ b) @ c, the same law the other way.",
            "(matmul ?a (matmul ?b ?c))",
            |g, _, s| {
                let ab = matmul(g, var(s, "?a"), var(s, "?b"));
                Some(matmul(g, ab, var(s, "?c")))
            },
        ),
        rule(
            "matmul-distribute",
            THEME,
            "a @ b + a @ c = a @ (b + c) when b and c have one shape: one matmul instead of two, \
             and with b and c weights their sum folds into one weight. Equal in real arithmetic; \
             the products and the sum round in another order.",
            "(add (matmul ?a ?b) (matmul ?a ?c))",
            |g, _, s| {
                let (b, c) = (var(s, "?b"), var(s, "?c"));
                if g[b].data.ty()? != g[c].data.ty()? {
                    return None;
                }
                let sum = add_op(g, &Op::Binary(BinaryOp::Add), &[b, c]);
                Some(matmul(g, var(s, "?a"), sum))
            },
        ),
        rule(
            "matmul-factor",
            THEME,
            "a @ (b + c) = a @ b + a @ c, distributivity the other way (the cost model decides).",
            "(matmul ?a (add ?b ?c))",
            |g, _, s| {
                let (b, c) = (var(s, "?b"), var(s, "?c"));
                if g[b].data.ty()? != g[c].data.ty()? {
                    return None;
                }
                let ab = matmul(g, var(s, "?a"), b);
                let ac = matmul(g, var(s, "?a"), c);
                Some(add_op(g, &Op::Binary(BinaryOp::Add), &[ab, ac]))
            },
        ),
        merge_matmuls(),
        merge_convs(),
    ]
}

/// All matmuls of one input with weight operands become one matmul with the weights
/// concatenated along the output axis, each result a slice of it (the Q, K and V projections
/// of attention become one matmul). Exact: every output element is the same dot product,
/// summed in the same order. Applies to weights (not other constants) that are 2-d with the
/// same number of rows and dtype; all such matmuls of the input merge at once, so merging
/// never feeds on its own results.
pub struct MergeMatmuls;

/// The class of a `weight:` leaf, if class `id` is one.
fn is_weight(egraph: &TensorGraph, id: Id) -> bool {
    egraph[id].nodes.iter().any(|n| n.op.as_str().starts_with("weight:"))
}

impl Applier<TensorNode, TensorAnalysis> for MergeMatmuls {
    fn apply_one(
        &self,
        egraph: &mut TensorGraph,
        _eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<TensorNode>>,
        rule_name: egg::Symbol,
    ) -> Vec<Id> {
        let x = egraph.find(var(subst, "?x"));
        let Some(w0) = egraph[var(subst, "?w")].data.ty().cloned() else { return vec![] };
        if w0.rank() != 2 {
            return vec![];
        }
        // Every matmul of x with a compatible weight: (its class, the weight, its columns).
        let mut group: Vec<(Id, Id, i64)> = Vec::new();
        for class in egraph.classes() {
            for n in &class.nodes {
                if n.op.as_str() != "matmul" || egraph.find(n.children[0]) != x {
                    continue;
                }
                let w = egraph.find(n.children[1]);
                let Some(t) = egraph[w].data.ty() else { continue };
                let cols = t.shape.get(1).and_then(Dim::as_const);
                if is_weight(egraph, w) && t.rank() == 2 && t.shape[0] == w0.shape[0] && t.dtype == w0.dtype {
                    if let Some(cols) = cols {
                        group.push((egraph.find(class.id), w, cols));
                    }
                }
            }
        }
        group.sort();
        group.dedup();
        if group.len() < 2 {
            return vec![];
        }
        let Some(out) = egraph[group[0].0].data.ty().cloned() else { return vec![] };
        let weights: Vec<Id> = group.iter().map(|g| g.1).collect();
        let w = add_op(egraph, &Op::Concat { axis: 1 }, &weights);
        let merged = matmul(egraph, x, w);
        let parts: Vec<(Id, i64)> = group.iter().map(|&(m, _, cols)| (m, cols)).collect();
        union_with_slices(egraph, merged, out.rank() - 1, &parts, rule_name)
    }
}

/// Unions each class of `parts` (a class and its size along `axis`) with its slice of
/// `merged`, in order; returns the classes that changed.
fn union_with_slices(
    egraph: &mut TensorGraph,
    merged: Id,
    axis: usize,
    parts: &[(Id, i64)],
    rule: egg::Symbol,
) -> Vec<Id> {
    let mut start = 0;
    let mut changed = vec![];
    for &(class, size) in parts {
        let op = Op::Slice { axis, start: Dim::constant(start), end: Dim::constant(start + size), step: 1 };
        start += size;
        let s = add_op(egraph, &op, &[merged]);
        if egraph[class].data.ty() == egraph[s].data.ty() && egraph.union_trusted(class, s, rule) {
            egraph.analysis.provenance.push((class, rule));
            changed.push(class);
        }
    }
    changed
}

/// The rule of [`MergeMatmuls`].
pub fn merge_matmuls() -> Rule {
    let searcher: egg::Pattern<TensorNode> = "(matmul ?x ?w)".parse().expect("a valid pattern");
    Rule {
        name: "merge-parallel-matmuls".into(),
        theme: THEME,
        doc: "x @ W1, x @ W2, ... (weights) become slices of x @ [W1 W2 ...]: one matmul reads x \
              once and launches once. Exact.",
        rewrite: Rewrite::new("merge-parallel-matmuls", searcher, MergeMatmuls).expect("a valid rule"),
    }
}

/// All convolutions of one input with the same attributes (not grouped, not transposed) and
/// constant weights (weights, or weights with a folded batch norm) of the same kernel size
/// become one convolution with the weights
/// concatenated along the output channels, each result a slice of its channels (an
/// Inception-style branch point, a ResNet block's 1×1 projection beside its first 1×1
/// convolution). Exact: every output element is the same sum, in the same order.
pub struct MergeConvs;

impl Applier<TensorNode, TensorAnalysis> for MergeConvs {
    fn apply_one(
        &self,
        egraph: &mut TensorGraph,
        _eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<TensorNode>>,
        rule_name: egg::Symbol,
    ) -> Vec<Id> {
        let x = egraph.find(var(subst, "?x"));
        let attrs_class = egraph.find(var(subst, "?a"));
        let Some(Op::Conv(attrs)) = super::attributed_op(egraph, subst, "?a", "conv") else { return vec![] };
        let Some(w0) = egraph[var(subst, "?w")].data.ty().cloned() else { return vec![] };
        if attrs.groups != 1 || attrs.transposed || w0.rank() < 3 {
            return vec![];
        }
        let leaf_weights = is_weight(egraph, var(subst, "?w"));
        // Every such convolution of x: (its class, the weight, its output channels).
        let mut group: Vec<(Id, Id, i64)> = Vec::new();
        for class in egraph.classes() {
            for n in &class.nodes {
                if n.op.as_str() != "conv"
                    || egraph.find(n.children[0]) != attrs_class
                    || egraph.find(n.children[1]) != x
                {
                    continue;
                }
                let w = egraph.find(n.children[2]);
                let Some(t) = egraph[w].data.ty() else { continue };
                let same_kernel = t.rank() == w0.rank() && t.shape[1..] == w0.shape[1..] && t.dtype == w0.dtype;
                // Constants, not only weights: a batch norm folded into the weight is one. Not a
                // concatenation: that is a merged convolution, which must not merge again.
                let merged_before = egraph[w].nodes.iter().any(|n| n.op.as_str() == "concat");
                // Weights merge with weights, derived constants with derived constants: the
                // e-graph holds each convolution both as exported and with a batch norm folded
                // in, and merging one of each would compute both.
                let same_kind = is_weight(egraph, w) == leaf_weights;
                let mergeable = egraph[w].data.is_constant() && !merged_before && same_kernel && same_kind;
                if let (true, Some(c)) = (mergeable, t.shape[0].as_const()) {
                    group.push((egraph.find(class.id), w, c));
                }
            }
        }
        group.sort();
        group.dedup();
        if group.len() < 2 {
            return vec![];
        }
        let weights: Vec<Id> = group.iter().map(|g| g.1).collect();
        let w = add_op(egraph, &Op::Concat { axis: 0 }, &weights);
        let merged = add_op(egraph, &Op::Conv(attrs), &[x, w]);
        let parts: Vec<(Id, i64)> = group.iter().map(|&(c, _, channels)| (c, channels)).collect();
        union_with_slices(egraph, merged, 1, &parts, rule_name)
    }
}

/// The rule of [`MergeConvs`].
pub fn merge_convs() -> Rule {
    let searcher: egg::Pattern<TensorNode> = "(conv ?a ?x ?w)".parse().expect("a valid pattern");
    Rule {
        name: "merge-parallel-convs".into(),
        theme: THEME,
        doc: "conv(x, W1), conv(x, W2), ... with the same attributes and kernel size (weights) \
              become channel slices of conv(x, [W1; W2; ...]): one convolution reads x once and \
              launches once. Not for grouped or transposed convolutions. Exact.",
        rewrite: Rewrite::new("merge-parallel-convs", searcher, MergeConvs).expect("a valid rule"),
    }
}
