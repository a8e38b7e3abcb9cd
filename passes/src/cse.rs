//! Common-subexpression elimination: nodes that compute the same op on the same operands
//! become one.
//!
//! Two nodes are the same when their ops are equal attribute for attribute (floating-point
//! attributes compared by their bits, so `full 0.0` and `full -0.0` differ and two `NaN`s with
//! the same bits match) and their operands are the same values, in the same order. Every op of
//! the IR is pure, so any two such nodes can merge. The first node (in execution order) stays,
//! with its name and source; users of the others use it.
//!
//! What it does not do: treat commutative ops as equal with swapped operands (`add a, b` and
//! `add b, a` both stay), compare weights by their bytes, look through rewrites
//! ([`crate::canonicalize()`] first), or remove the nodes nothing uses any more (those merged
//! away are simply not emitted; others are [`crate::dce`]'s). Deterministic: nodes are visited
//! in order and the lookup table only answers "seen before?".

use crate::error::{check_input, PassError};
use crate::rebuild::Rebuild;
use kiln_ir::{Graph, Op, ValueId};
use std::collections::HashMap;

const PASS: &str = "cse";

/// Merges nodes with equal ops over equal operands (see the module docs).
pub fn cse(graph: &Graph) -> Result<Graph, PassError> {
    check_input(PASS, graph)?;
    let mut b = Rebuild::new(graph);
    b.copy_inputs();
    b.copy_weights();
    let mut seen: HashMap<Key, Vec<(&Op, ValueId)>> = HashMap::new();
    for (_, node) in graph.nodes() {
        let inputs = b.operands(node);
        let bucket = seen.entry((node.op.name(), inputs.clone())).or_default();
        if let Some(&(_, earlier)) = bucket.iter().find(|(op, _)| same_op(op, &node.op)) {
            b.alias(node.output, earlier);
        } else {
            let v = b.copy_node(node, inputs);
            bucket.push((&node.op, v));
        }
    }
    Ok(b.finish())
}

/// A node's op name and (new) operands: the ops seen under a key and their results are
/// compared with [`same_op`].
type Key = (&'static str, Vec<ValueId>);

/// Equal ops, with `f64` attributes compared by bits.
pub(crate) fn same_op(a: &Op, b: &Op) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    let (fa, fb) = (take_floats(&mut a), take_floats(&mut b));
    fa.iter().map(|f| f.to_bits()).eq(fb.iter().map(|f| f.to_bits())) && a == b
}

/// Replaces the op's `f64` attributes by `0.0` and returns them.
fn take_floats(op: &mut Op) -> Vec<f64> {
    match op {
        Op::Pad { value, .. } | Op::Full { value, .. } => vec![std::mem::take(value)],
        Op::Iota { start, step, .. } => vec![std::mem::take(start), std::mem::take(step)],
        _ => vec![],
    }
}
