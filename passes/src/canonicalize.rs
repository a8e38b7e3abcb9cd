//! Canonicalization: local rewrites that make a graph simpler without changing any result by
//! a single bit.
//!
//! Each rule looks at one node and the nodes defining its operands, and either replaces the
//! node by an existing value (its users then use that value) or by a simpler node with the
//! same name, type and source. Rules (`x`, `c` values; `full(v)` a `full` node whose value,
//! converted to its dtype, is `v`):
//!
//! | rule | start ⇒ goal |
//! |---|---|
//! | `cast_noop` | `cast{to=T} x` with `x: T` ⇒ `x` |
//! | `reshape_noop` | `reshape{shape=S} x` with `x` of shape `S` ⇒ `x` |
//! | `reshape_reshape` | `reshape{S2} (reshape{S1} x)` ⇒ `reshape{S2} x` |
//! | `permute_noop` | `permute{perm=[0, 1, ...]} x` ⇒ `x` |
//! | `permute_permute` | `permute{p2} (permute{p1} x)` ⇒ `permute{q} x`, `q[i] = p1[p2[i]]` (⇒ `x` when `q` is the identity) |
//! | `expand_noop` | `expand{shape=S} x` with `x` of shape `S` ⇒ `x` |
//! | `expand_expand` | `expand{S2} (expand{S1} x)` ⇒ `expand{S2} x` |
//! | `slice_noop` | `slice{axis=a, start=0, end=x.shape[a], step=1} x` ⇒ `x` |
//! | `mul_one` | `mul x, full(1)` and `mul full(1), x` ⇒ `x` |
//! | `div_one` | `div x, full(1)` ⇒ `x` |
//! | `sub_zero` | `sub x, full(+0.0)` ⇒ `x` (integers: `full(0)`) |
//! | `add_zero` | floats: `add x, full(-0.0)` (either side) ⇒ `x`; integers: `add x, full(0)` |
//! | `neg_neg` | `neg (neg x)` ⇒ `x` |
//! | `where_same` | `where c, a, a` ⇒ `a` |
//!
//! A node is replaced by an existing value only when that value has exactly the node's type:
//! broadcasting (`mul x[4], full(1)[2, 4]`, or `where c[2, 4], a[4], a[4]`) and a dtype change
//! leave it alone. The arithmetic rules apply to float and integer dtypes, not `bool`.
//!
//! What it does not do:
//! * anything that could change a float result: `x + 0.0` stays (`-0.0 + 0.0` is `+0.0`),
//!   `x - (-0.0)` stays, no reassociation, no `x * 0`, no `cast(cast(x))` merging;
//! * remove nodes that its rewrites left unused (that is [`crate::dce`]'s job), fold constants,
//!   or merge equal nodes;
//! * rename values: rewritten nodes keep their names, and graph outputs keep their names
//!   (an output may come to refer to a user input or a weight).
//!
//! The rules are applied in node order until a sweep changes nothing (at most
//! [`MAX_SWEEPS`] sweeps; a sweep usually reaches the fixed point, as each node sees its
//! operands already rewritten).

use crate::error::{check_input, PassError};
use crate::rebuild::Rebuild;
use kiln_ir::{BinaryOp, DType, Graph, Op, Tensor, TensorType, UnaryOp, ValueId};

const PASS: &str = "canonicalize";

/// The most sweeps [`canonicalize()`] makes before it stops (the result is valid either way).
pub const MAX_SWEEPS: usize = 16;

/// Applies the canonicalization rules (see the module docs) until nothing changes.
pub fn canonicalize(graph: &Graph) -> Result<Graph, PassError> {
    check_input(PASS, graph)?;
    let (mut g, mut fired) = sweep(graph)?;
    for _ in 1..MAX_SWEEPS {
        if fired == 0 {
            break;
        }
        (g, fired) = sweep(&g)?;
    }
    Ok(g)
}

/// What one rule makes of a node.
enum Rewrite {
    Keep,
    /// The node's result is this existing (new-graph) value.
    Value(ValueId),
    /// The node becomes this op over these (new-graph) operands.
    Node(Op, Vec<ValueId>),
}

/// One pass over the nodes in order; returns the new graph and how many rewrites fired.
fn sweep(old: &Graph) -> Result<(Graph, usize), PassError> {
    let mut b = Rebuild::new(old);
    b.copy_inputs();
    b.copy_weights();
    let mut fired = 0;
    for (_, node) in old.nodes() {
        let inputs = b.operands(node);
        let ty = old.ty(node.output);
        match rewrite(&b, &node.op, &inputs, ty) {
            Rewrite::Value(v) if b.new.ty(v) == ty => {
                fired += 1;
                b.alias(node.output, v);
            }
            Rewrite::Node(op, ins) => {
                fired += 1;
                b.rewrite_node(PASS, node, op, ins)?;
            }
            Rewrite::Keep | Rewrite::Value(_) => {
                b.copy_node(node, inputs);
            }
        }
    }
    Ok((b.finish(), fired))
}

/// The first rule that applies to `op` over new-graph operands `ins`, whose result type is `ty`.
fn rewrite(b: &Rebuild, op: &Op, ins: &[ValueId], ty: &TensorType) -> Rewrite {
    let g = &b.new;
    let shape_of = |v: ValueId| &g.ty(v).shape;
    match (op, ins) {
        (Op::Cast(to), &[x]) if g.ty(x).dtype == *to => Rewrite::Value(x),
        (Op::Reshape { shape }, &[x]) => {
            if shape_of(x) == shape {
                return Rewrite::Value(x);
            }
            match b.def(x) {
                Some((Op::Reshape { .. }, &[inner])) if shape_of(inner) == shape => Rewrite::Value(inner),
                Some((Op::Reshape { .. }, &[inner])) => Rewrite::Node(op.clone(), vec![inner]),
                _ => Rewrite::Keep,
            }
        }
        (Op::Permute { perm }, &[x]) => {
            if is_identity(perm) {
                return Rewrite::Value(x);
            }
            match b.def(x) {
                Some((Op::Permute { perm: inner_perm }, &[inner])) => {
                    let q: Vec<usize> = perm.iter().map(|&i| inner_perm[i]).collect();
                    if is_identity(&q) {
                        Rewrite::Value(inner)
                    } else {
                        Rewrite::Node(Op::Permute { perm: q }, vec![inner])
                    }
                }
                _ => Rewrite::Keep,
            }
        }
        (Op::Expand { shape }, &[x]) => {
            if shape_of(x) == shape {
                return Rewrite::Value(x);
            }
            match b.def(x) {
                Some((Op::Expand { .. }, &[inner])) => Rewrite::Node(op.clone(), vec![inner]),
                _ => Rewrite::Keep,
            }
        }
        (Op::Slice { axis, start, end, step }, &[x]) => {
            let whole = shape_of(x).get(*axis).is_some_and(|d| d == end) && start.is_const(0) && *step == 1;
            if whole {
                Rewrite::Value(x)
            } else {
                Rewrite::Keep
            }
        }
        (Op::Unary(UnaryOp::Neg), &[x]) => match b.def(x) {
            Some((Op::Unary(UnaryOp::Neg), &[inner])) => Rewrite::Value(inner),
            _ => Rewrite::Keep,
        },
        (Op::Where, &[_, a, c]) if a == c => Rewrite::Value(a),
        (Op::Binary(op), &[x, y]) => arithmetic_identity(b, *op, x, y, ty.dtype),
        _ => Rewrite::Keep,
    }
}

/// `x * 1`, `1 * x`, `x / 1`, `x - 0`, `x + (-0.0)` (integers: `x + 0`, `0 + x`).
fn arithmetic_identity(b: &Rebuild, op: BinaryOp, x: ValueId, y: ValueId, dtype: DType) -> Rewrite {
    if !(dtype.is_float() || dtype.is_int()) {
        return Rewrite::Keep;
    }
    let is = |v: ValueId, want: f64| full_value(b, v).is_some_and(|c| c.to_bits() == want.to_bits());
    // The additive identity: -0.0 for floats (+0.0 is not: -0.0 + 0.0 = +0.0); 0 for integers
    // (whose `full` values read back as +0.0).
    let zero = if dtype.is_float() { -0.0 } else { 0.0 };
    match op {
        BinaryOp::Mul if is(y, 1.0) => Rewrite::Value(x),
        BinaryOp::Mul if is(x, 1.0) => Rewrite::Value(y),
        BinaryOp::Div if is(y, 1.0) => Rewrite::Value(x),
        BinaryOp::Sub if is(y, 0.0) => Rewrite::Value(x),
        BinaryOp::Add if is(y, zero) => Rewrite::Value(x),
        BinaryOp::Add if is(x, zero) => Rewrite::Value(y),
        _ => Rewrite::Keep,
    }
}

/// The element value of a `full` node, converted to its dtype as the interpreter does
/// (`full{value=1.5, dtype=i64}` is 1).
fn full_value(b: &Rebuild, v: ValueId) -> Option<f64> {
    match b.def(v)? {
        (Op::Full { value, dtype, .. }, _) => Some(Tensor::from_f64(*dtype, vec![], &[*value]).to_f64()[0]),
        _ => None,
    }
}

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}
