//! Constant folding (and, through it, weight layout): computes at compile time what depends
//! only on weights and constants, and stores it as new weights.
//!
//! A value is *constant* when it is a weight, or the result of a node whose operands are all
//! constant, whose op is not `dim_value` and has no symbolic attribute, whose result shape is
//! static and at most [`FoldLimits::max_bytes`] big (`full` and `iota` with static shapes are
//! constant). Constant values that the rest of the graph needs (used by a non-constant node, or
//! a graph output) are *materialized*: evaluated with the reference interpreter
//! ([`kiln_ir::interp::run`] on a sub-graph of their constant cone) and replaced by a new weight
//! with the node's name and type, added to the returned [`WeightStore`]. The constant nodes
//! feeding them disappear, and so do weights nothing uses any more.
//!
//! A needed constant is materialized only if it is not a bare `full` or `iota` (those stay:
//! they are cheap immediates for code generation) nor an `expand` (a broadcast is free to
//! read; materializing it would only multiply the bytes), and it is small: at most
//! [`FoldLimits::small_elems`] elements, or no more elements than the distinct weights it is
//! computed from. Otherwise its node stays and its constant operands are considered in its
//! place — so `expand{shape=[4096, 4096]} (full 0.0)` stays a broadcast, and
//! `expand{shape=[2, 32, 32]} (reshape (permute %w))` becomes an expand of one weight, while
//! `mul (rsqrt (add %bn.var, 1e-5)), %bn.weight` becomes one weight.
//!
//! **Layout.** Pre-transposing weights is this pass: `permute{perm=[1, 0]} %fc.weight` feeding
//! a `matmul` is a constant as big as its weight, so it becomes a weight stored transposed,
//! and `%fc.weight` goes away when nothing else uses it.
//!
//! What it does not do:
//! * algebra: `conv(x, w) * s` is not turned into `conv(x, w * s)`; only subgraphs whose every
//!   input is constant are folded;
//! * fold anything involving user inputs or symbolic sizes (`dim_value`, symbolic shapes);
//! * keep folded results bit-identical to a compiled kernel: values are what the reference
//!   interpreter computes (in `f64`, rounded to the dtype after every op), which may round
//!   differently from the kernels that would otherwise compute them;
//! * remove dead non-constant nodes ([`crate::dce`] does).
//!
//! Evaluation errors (say, a gather index out of range in constant data, which would fail at
//! run time too) are [`PassError::Fold`]. Output is deterministic: new weights are added after
//! the kept ones, in node order.

use crate::error::{check_input, PassError};
use crate::rebuild::Rebuild;
use kiln_ir::{Graph, Node, Op, Tensor, ValueDef, ValueId, WeightStore};

const PASS: &str = "fold_constants";

/// Size limits of [`fold_constants_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldLimits {
    /// No constant value bigger than this (in bytes) is computed at compile time.
    pub max_bytes: usize,
    /// Constants of up to this many elements are materialized even when they are bigger than
    /// the weights they come from (small masks, index tables, broadcast scalars).
    pub small_elems: usize,
}

impl Default for FoldLimits {
    /// 64 MiB and 4096 elements.
    fn default() -> FoldLimits {
        FoldLimits { max_bytes: 64 << 20, small_elems: 4096 }
    }
}

/// [`fold_constants_with`] with the default [`FoldLimits`].
pub fn fold_constants(graph: &Graph, weights: &WeightStore) -> Result<(Graph, WeightStore), PassError> {
    fold_constants_with(graph, weights, &FoldLimits::default())
}

/// Folds constant subgraphs into weights (see the module docs). The returned store holds
/// exactly the returned graph's weights.
pub fn fold_constants_with(graph: &Graph, weights: &WeightStore, limits: &FoldLimits) -> Result<(Graph, WeightStore), PassError> {
    check_input(PASS, graph)?;
    let facts = Facts::compute(graph, limits);
    let plan = plan(graph, &facts, limits);

    // Evaluate each materialized value on its own constant cone, in node order.
    let mut folded: Vec<(ValueId, Tensor)> = Vec::new();
    for (_, node) in graph.nodes() {
        if plan.materialize[node.output.0 as usize] {
            folded.push((node.output, evaluate(graph, weights, node)?));
        }
    }

    // The result: inputs, the weights still used, the new weights, the kept nodes.
    let mut b = Rebuild::new(graph);
    b.copy_inputs();
    let mut store = WeightStore::default();
    for &w in graph.weights() {
        if plan.weight_used[w.0 as usize] {
            let name = &graph.value(w).name;
            let t = weights.get(name).ok_or_else(|| PassError::MissingWeight { pass: PASS, name: name.clone() })?;
            store.insert(name.clone(), t.clone());
            b.copy_weight(w);
        }
    }
    for (v, t) in folded {
        b.weight_for(v);
        store.insert(graph.value(v).name.clone(), t);
    }
    for (_, node) in graph.nodes() {
        if plan.emit[node.output.0 as usize] {
            let inputs = b.operands(node);
            b.copy_node(node, inputs);
        }
    }
    Ok((b.finish(), store))
}

/// Per value: whether it is constant, and the distinct weights it is computed from.
struct Facts {
    constant: Vec<bool>,
    /// Sorted weight ids of each constant value's cone (empty for non-constants).
    cone: Vec<Vec<ValueId>>,
}

impl Facts {
    fn compute(graph: &Graph, limits: &FoldLimits) -> Facts {
        let n = graph.value_count();
        let mut facts = Facts { constant: vec![false; n], cone: vec![Vec::new(); n] };
        for &w in graph.weights() {
            facts.constant[w.0 as usize] = true;
            facts.cone[w.0 as usize] = vec![w];
        }
        for (_, node) in graph.nodes() {
            let out = node.output.0 as usize;
            let ty = graph.ty(node.output);
            let small = ty
                .static_shape()
                .and_then(|s| s.iter().try_fold(ty.dtype.size_bytes() as u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?)))
                .is_some_and(|bytes| bytes <= limits.max_bytes as u64);
            let constant = small
                && !matches!(node.op, Op::DimValue { .. })
                && static_attributes(&node.op)
                && node.inputs.iter().all(|v| facts.constant[v.0 as usize]);
            if constant {
                let mut cone: Vec<ValueId> = node.inputs.iter().flat_map(|v| facts.cone[v.0 as usize].iter().copied()).collect();
                cone.sort();
                cone.dedup();
                facts.constant[out] = true;
                facts.cone[out] = cone;
            }
        }
        facts
    }
}

/// Whether every dim in the op's attributes is a number (a static result shape does not
/// imply it: `slice{start=s0, end=s0+4}`).
fn static_attributes(op: &Op) -> bool {
    let all = |dims: &[kiln_ir::Dim]| dims.iter().all(|d| d.as_const().is_some());
    match op {
        Op::Reshape { shape } | Op::Expand { shape } | Op::Iota { shape, .. } | Op::Full { shape, .. } => all(shape),
        Op::Slice { start, end, .. } => start.as_const().is_some() && end.as_const().is_some(),
        Op::DimValue { dim, .. } => dim.as_const().is_some(),
        _ => true,
    }
}

/// What becomes of each value (indexed by value id).
struct Plan {
    /// Node results replaced by new weights.
    materialize: Vec<bool>,
    /// Nodes kept in the result.
    emit: Vec<bool>,
    /// Values that kept nodes or outputs use (of interest for weights: the ones to keep).
    weight_used: Vec<bool>,
}

/// Decides which constants to materialize, walking the nodes backwards so that every use of a
/// value is seen before the value: a constant is *needed* when a non-constant node or a
/// materialization-refusing constant node uses it, or when it is a graph output.
fn plan(graph: &Graph, facts: &Facts, limits: &FoldLimits) -> Plan {
    let n = graph.value_count();
    let mut needed = vec![false; n];
    let mut plan = Plan { materialize: vec![false; n], emit: vec![false; n], weight_used: vec![false; n] };
    for (_, v) in graph.outputs() {
        needed[v.0 as usize] = true;
        plan.weight_used[v.0 as usize] = true;
    }
    let elems = |v: ValueId| {
        let shape = graph.ty(v).static_shape();
        shape.and_then(|s| s.iter().try_fold(1i64, |acc, &d| acc.checked_mul(d))).unwrap_or(i64::MAX)
    };
    for (_, node) in graph.nodes().collect::<Vec<_>>().into_iter().rev() {
        let out = node.output.0 as usize;
        if facts.constant[out] {
            if !needed[out] {
                continue;
            }
            // Generators and broadcasts stay as nodes (see the module docs).
            let cheap = matches!(node.op, Op::Full { .. } | Op::Iota { .. } | Op::Expand { .. });
            let source_elems = facts.cone[out].iter().fold(0i64, |acc, &w| acc.saturating_add(elems(w)));
            let size = elems(node.output);
            if !cheap && (size <= limits.small_elems as i64 || size <= source_elems) {
                plan.materialize[out] = true;
                continue;
            }
        }
        plan.emit[out] = true;
        for v in &node.inputs {
            needed[v.0 as usize] = true;
            plan.weight_used[v.0 as usize] = true;
        }
    }
    plan
}

/// Computes constant value `v` with the interpreter, on a graph of just its constant cone.
fn evaluate(graph: &Graph, weights: &WeightStore, node: &Node) -> Result<Tensor, PassError> {
    let v = node.output;
    // The cone's nodes, by a walk over operands, then in node order.
    let mut in_cone = vec![false; graph.value_count()];
    let mut stack = vec![v];
    while let Some(u) = stack.pop() {
        if std::mem::replace(&mut in_cone[u.0 as usize], true) {
            continue;
        }
        if let ValueDef::Node(n) = graph.value(u).def {
            stack.extend(graph.node(n).inputs.iter().copied());
        }
    }
    let mut b = Rebuild::new(graph);
    for &w in graph.weights() {
        if in_cone[w.0 as usize] {
            b.copy_weight(w);
        }
    }
    for (_, node) in graph.nodes() {
        if in_cone[node.output.0 as usize] {
            let inputs = b.operands(node);
            b.copy_node(node, inputs);
        }
    }
    let result = b.get(v);
    let mut sub = b.new;
    sub.add_output("folded", result);
    let fail = |source| PassError::Fold { node: graph.value(v).name.clone(), op: node.op.name(), source };
    let mut out = kiln_ir::interp::run(&sub, weights, &[]).map_err(fail)?;
    Ok(out.pop().expect("the sub-graph has one output"))
}
