//! The verifier: checks every invariant listed in the crate documentation.
//!
//! [`verify`] returns the first violation it finds as [`IrError::Verify`], with a message that
//! names the offending node (by its result's name, `%name`, its index and its op) or value.
//! Passes call [`verify_if_debug`] after each transformation; the text parser calls [`verify`]
//! on every graph it reads.
//!
//! Besides the invariants of the crate docs, the verifier checks what makes type inference safe
//! to run on arbitrary (e.g. parsed) graphs: sliding-window attributes are positive (`stride`,
//! `kernel`, `dilation` >= 1, `padding`, `output_padding` >= 0) and no size arithmetic that
//! inference performs overflows `i64`. It also checks the symbol table: each symbol's name is an
//! identifier (`[A-Za-z_][A-Za-z0-9_]*`, so that dims print and parse) and its range has
//! `min <= max`; and value names use only `[A-Za-z0-9_.]` (as [`Graph::fresh_name`] makes them).
//!
//! The verifier never panics, whatever the graph.

use crate::dim::Dim;
use crate::error::IrError;
use crate::graph::{Graph, NodeId, TensorType, ValueDef, ValueId};
use crate::infer;
use crate::op::{ConvAttrs, Op, PoolAttrs};
use std::collections::HashSet;

/// Checks every invariant of `graph`; the first violation comes back as [`IrError::Verify`].
pub fn verify(graph: &Graph) -> Result<(), IrError> {
    Verifier { graph }.run()
}

/// Runs [`verify`] in debug builds (and tests); does nothing in release builds.
pub fn verify_if_debug(graph: &Graph) -> Result<(), IrError> {
    if cfg!(debug_assertions) {
        verify(graph)
    } else {
        Ok(())
    }
}

fn err<T>(message: String) -> Result<T, IrError> {
    Err(IrError::Verify(message))
}

struct Verifier<'a> {
    graph: &'a Graph,
}

impl Verifier<'_> {
    fn run(&self) -> Result<(), IrError> {
        self.check_symbols()?;
        self.check_arg_list("input", self.graph.inputs(), ValueDef::Input)?;
        self.check_arg_list("weight", self.graph.weights(), ValueDef::Weight)?;
        self.check_values()?;
        self.check_nodes()?;
        self.check_outputs()
    }

    /// `%name` of a value, or `#id` when it does not exist.
    fn value_label(&self, v: ValueId) -> String {
        match self.graph.try_value(v) {
            Some(data) => format!("%{}", data.name),
            None => format!("#{}", v.0),
        }
    }

    fn node_label(&self, n: NodeId) -> String {
        let node = self.graph.node(n);
        match self.graph.try_value(node.output) {
            Some(data) => format!("node %{} (#{}, {})", data.name, n.0, node.op.name()),
            None => format!("node #{} ({})", n.0, node.op.name()),
        }
    }

    fn check_symbols(&self) -> Result<(), IrError> {
        for (id, sym) in self.graph.symbols.iter() {
            if !is_symbol_name(&sym.name) {
                return err(format!("symbol #{} has name {:?}, which is not an identifier", id.0, sym.name));
            }
            if self.graph.symbols.lookup(&sym.name) != Some(id) {
                return err(format!("symbol `{}` is declared twice", sym.name));
            }
            if let Some(max) = sym.max {
                if max < sym.min {
                    return err(format!("symbol `{}` has an empty range [{}, {}]", sym.name, sym.min, max));
                }
            }
        }
        Ok(())
    }

    /// A dim's symbols exist and its coefficients are small enough for inference's arithmetic.
    fn check_dim(&self, dim: &Dim, what: &dyn Fn() -> String) -> Result<(), IrError> {
        for s in dim.symbols() {
            if self.graph.symbols.get(s).is_none() {
                return err(format!("{} mentions symbol #{}, which is not in the symbol table", what(), s.0));
            }
        }
        if magnitude(dim).is_none() {
            return err(format!("{} has a coefficient too large for i64 arithmetic", what()));
        }
        Ok(())
    }

    fn check_type(&self, ty: &TensorType, what: &dyn Fn() -> String) -> Result<(), IrError> {
        for (i, d) in ty.shape.iter().enumerate() {
            self.check_dim(d, &|| format!("dim {i} of {}", what()))?;
        }
        Ok(())
    }

    fn check_values(&self) -> Result<(), IrError> {
        let g = self.graph;
        let mut names: HashSet<&str> = HashSet::new();
        for i in 0..g.value_count() {
            let v = ValueId(i as u32);
            let Some(data) = g.try_value(v) else {
                return err(format!("value #{i} is missing"));
            };
            if data.name.is_empty() {
                return err(format!("value #{i} has an empty name"));
            }
            if !is_value_name(&data.name) {
                return err(format!("value #{i} has name {:?}, outside [A-Za-z0-9_.]", data.name));
            }
            if !names.insert(data.name.as_str()) {
                return err(format!("value name %{} is used twice (again by value #{i})", data.name));
            }
            self.check_type(&data.ty, &|| format!("the type of value %{}", data.name))?;
            let ok = match data.def {
                ValueDef::Input(k) => g.inputs().get(k) == Some(&v),
                ValueDef::Weight(k) => g.weights().get(k) == Some(&v),
                ValueDef::Node(n) => (n.0 as usize) < g.node_count() && g.node(n).output == v,
            };
            if !ok {
                let def = def_text(data.def);
                return err(format!(
                    "value %{} (#{i}) claims to be defined by {def}, which does not define it",
                    data.name
                ));
            }
        }
        Ok(())
    }

    fn check_arg_list(&self, kind: &str, list: &[ValueId], def: fn(usize) -> ValueDef) -> Result<(), IrError> {
        for (k, &v) in list.iter().enumerate() {
            let Some(data) = self.graph.try_value(v) else {
                return err(format!("{kind} {k} is value #{}, which does not exist", v.0));
            };
            if data.def != def(k) {
                return err(format!("{kind} {k} is value %{}, which is defined as {}", data.name, def_text(data.def)));
            }
        }
        Ok(())
    }

    fn check_nodes(&self) -> Result<(), IrError> {
        let g = self.graph;
        let mut defined = vec![false; g.value_count()];
        for &v in g.inputs().iter().chain(g.weights()) {
            defined[v.0 as usize] = true; // in range: checked by check_arg_list
        }
        for (n, node) in g.nodes() {
            let label = || self.node_label(n);
            let out = node.output;
            match g.try_value(out) {
                None => return err(format!("{}: result is value #{}, which does not exist", label(), out.0)),
                Some(data) if data.def != ValueDef::Node(n) => {
                    return err(format!(
                        "{}: result %{} is defined as {}, not by this node",
                        label(),
                        data.name,
                        def_text(data.def)
                    ))
                }
                Some(_) => {}
            }
            for (i, &v) in node.inputs.iter().enumerate() {
                match defined.get(v.0 as usize) {
                    None => return err(format!("{}: operand {i} is value #{}, which does not exist", label(), v.0)),
                    Some(false) => {
                        return err(format!(
                            "{}: operand {i} ({}) is used before it is defined",
                            label(),
                            self.value_label(v)
                        ))
                    }
                    Some(true) => {}
                }
            }
            let types: Vec<&TensorType> = node.inputs.iter().map(|&v| &g.value(v).ty).collect();
            self.check_attrs(&node.op, &types).map_err(|m| IrError::Verify(format!("{}: {m}", label())))?;
            let inferred = infer::infer(&node.op, &types, &g.symbols)
                .map_err(|reason| IrError::Verify(format!("{}: type inference failed: {reason}", label())))?;
            let stored = &g.value(out).ty;
            if *stored != inferred {
                return err(format!(
                    "{}: stored type {} differs from the inferred type {}",
                    label(),
                    stored.display(&g.symbols),
                    inferred.display(&g.symbols)
                ));
            }
            defined[out.0 as usize] = true;
        }
        Ok(())
    }

    fn check_outputs(&self) -> Result<(), IrError> {
        for (name, v) in self.graph.outputs() {
            if self.graph.try_value(*v).is_none() {
                return err(format!("output {name:?} is value #{}, which does not exist", v.0));
            }
        }
        Ok(())
    }

    /// Attribute ranges beyond what inference checks, and overflow safety of inference's
    /// arithmetic. Errors are reasons; the caller names the node.
    fn check_attrs(&self, op: &Op, inputs: &[&TensorType]) -> Result<(), String> {
        let dims = |shape: &[Dim], what: &str| -> Result<(), String> {
            for (i, d) in shape.iter().enumerate() {
                self.check_dim(d, &|| format!("entry {i} of `{what}`")).map_err(verify_message)?;
            }
            Ok(())
        };
        match op {
            Op::Conv(a) => {
                positive("stride", &a.stride)?;
                positive("dilation", &a.dilation)?;
                non_negative("padding", &a.padding)?;
                non_negative("output_padding", &a.output_padding)?;
                if let [x, w] = inputs {
                    conv_arithmetic(a, x, w).ok_or("sizes overflow i64 arithmetic")?;
                }
            }
            Op::Pool(a) => {
                positive("kernel", &a.kernel)?;
                positive("stride", &a.stride)?;
                positive("dilation", &a.dilation)?;
                non_negative("padding", &a.padding)?;
                if let [x] = inputs {
                    pool_arithmetic(a, x).ok_or("sizes overflow i64 arithmetic")?;
                }
            }
            Op::Reshape { shape } => {
                dims(shape, "shape")?;
                let fits = |s: &[Dim]| s.iter().try_fold(1i64, |acc, d| acc.checked_mul(magnitude(d)?)).is_some();
                if !fits(shape) || !inputs.iter().all(|x| fits(&x.shape)) {
                    return Err("element count overflows i64 arithmetic".into());
                }
            }
            Op::Expand { shape } => dims(shape, "shape")?,
            Op::Iota { shape, .. } | Op::Full { shape, .. } => dims(shape, "shape")?,
            Op::DimValue { dim, .. } => dims(std::slice::from_ref(dim), "dim")?,
            Op::Slice { start, end, step, .. } => {
                self.check_dim(start, &|| "`start`".into()).map_err(verify_message)?;
                self.check_dim(end, &|| "`end`".into()).map_err(verify_message)?;
                magnitude(start)
                    .zip(magnitude(end))
                    .and_then(|(a, b)| a.checked_add(b))
                    .ok_or("`end - start` overflows i64 arithmetic")?;
                if *step > 1 {
                    if let Some(len) = end.sub(start).as_const() {
                        len.checked_add(*step).ok_or("`step` overflows i64 arithmetic")?;
                    }
                }
            }
            Op::Concat { axis } => {
                let mut total = 0i64;
                for x in inputs {
                    if let Some(d) = x.shape.get(*axis) {
                        total = magnitude(d)
                            .and_then(|m| total.checked_add(m))
                            .ok_or("the concatenated size overflows i64")?;
                    }
                }
            }
            Op::Pad { pads, .. } => {
                for (i, (lo, hi)) in pads.iter().enumerate() {
                    let amount = lo.checked_add(*hi).ok_or_else(|| format!("pad amount {i} overflows i64"))?;
                    if let Some(d) = inputs.first().and_then(|x| x.shape.get(i)) {
                        magnitude(d)
                            .and_then(|m| m.checked_add(amount.checked_abs()?))
                            .ok_or_else(|| format!("padded dim {i} overflows i64"))?;
                    }
                }
            }
            Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Cast(_)
            | Op::Reduce { .. }
            | Op::ArgReduce { .. }
            | Op::MatMul
            | Op::Attention(_)
            | Op::AdaptivePool { .. }
            | Op::Permute { .. }
            | Op::Gather { .. }
            | Op::CumSum { .. } => {}
        }
        Ok(())
    }
}

fn def_text(def: ValueDef) -> String {
    match def {
        ValueDef::Input(k) => format!("input {k}"),
        ValueDef::Weight(k) => format!("weight {k}"),
        ValueDef::Node(n) => format!("node #{}", n.0),
    }
}

fn verify_message(e: IrError) -> String {
    match e {
        IrError::Verify(m) => m,
        other => other.to_string(),
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: symbol names must read as identifiers inside dim expressions.
pub(crate) fn is_symbol_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `[A-Za-z0-9_.]+`, the names [`Graph::fresh_name`] makes.
pub(crate) fn is_value_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Sum of the absolute values of a dim's coefficients when it fits in `i64`. It bounds every
/// coefficient met while adding or multiplying dims (the sum is sub-multiplicative), so checking
/// it up front keeps inference's `Dim` arithmetic from overflowing.
fn magnitude(dim: &Dim) -> Option<i64> {
    dim.terms().iter().try_fold(0i64, |acc, (_, c)| acc.checked_add(c.checked_abs()?))
}

fn positive(name: &str, list: &[i64]) -> Result<(), String> {
    match list.iter().find(|&&v| v < 1) {
        Some(v) => Err(format!("`{name}` entries must be positive, got {v}")),
        None => Ok(()),
    }
}

fn non_negative(name: &str, list: &[i64]) -> Result<(), String> {
    match list.iter().find(|&&v| v < 0) {
        Some(v) => Err(format!("`{name}` entries must not be negative, got {v}")),
        None => Ok(()),
    }
}

/// [`infer::window_output`]'s arithmetic, checked (`stride >= 1` is already known).
fn window_fits(input: i64, kernel: i64, stride: i64, pad: i64, dilation: i64, ceil_mode: bool) -> Option<()> {
    let span = input
        .checked_add(pad.checked_mul(2)?)?
        .checked_sub(dilation.checked_mul(kernel.checked_sub(1)?)?)?
        .checked_sub(1)?;
    if span < 0 {
        return Some(());
    }
    let out = if ceil_mode { span.checked_add(stride)? / stride + 1 } else { span / stride + 1 };
    if ceil_mode {
        (out - 1).checked_mul(stride)?;
        input.checked_add(pad)?;
    }
    Some(())
}

fn static_at(ty: &TensorType, i: usize) -> Option<i64> {
    ty.shape.get(i).and_then(Dim::as_const)
}

/// The arithmetic of conv inference, checked wherever its operands are known (where they are
/// not, inference reports the problem before computing anything).
fn conv_arithmetic(a: &ConvAttrs, x: &TensorType, w: &TensorType) -> Option<()> {
    if let Some(w1) = static_at(w, 1) {
        w1.checked_mul(a.groups)?;
    }
    for i in 0..x.rank().saturating_sub(2) {
        let (Some(len), Some(k)) = (static_at(x, 2 + i), static_at(w, 2 + i)) else { continue };
        let (Some(&s), Some(&p), Some(&d)) = (a.stride.get(i), a.padding.get(i), a.dilation.get(i)) else { continue };
        if a.transposed {
            let op = a.output_padding.get(i).copied().unwrap_or(0);
            len.checked_sub(1)?
                .checked_mul(s)?
                .checked_sub(p.checked_mul(2)?)?
                .checked_add(d.checked_mul(k.checked_sub(1)?)?)?
                .checked_add(op)?
                .checked_add(1)?;
        } else {
            window_fits(len, k, s, p, d, false)?;
        }
    }
    Some(())
}

fn pool_arithmetic(a: &PoolAttrs, x: &TensorType) -> Option<()> {
    for i in 0..x.rank().saturating_sub(2) {
        let (Some(&k), Some(&s), Some(&p), Some(&d)) =
            (a.kernel.get(i), a.stride.get(i), a.padding.get(i), a.dilation.get(i))
        else {
            continue;
        };
        p.checked_mul(2)?;
        if let Some(len) = static_at(x, 2 + i) {
            window_fits(len, k, s, p, d, a.ceil_mode)?;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dim::SymId;
    use crate::dtype::DType;
    use crate::graph::ValueData;
    use crate::op::{BinaryOp, PoolKind, UnaryOp};

    fn f32s(shape: &[i64]) -> TensorType {
        TensorType::fixed(DType::F32, shape)
    }

    /// x: f32[s0, 4], w: f32[4, 3]; y = matmul(x, w); z = relu(y); output z.
    fn valid() -> Graph {
        let mut g = Graph::new("g");
        let s0 = Dim::symbol(g.symbols.intern("s0", 1, Some(64)));
        let x = g.add_input("x", TensorType::new(DType::F32, vec![s0, Dim::constant(4)]));
        let w = g.add_weight("w", f32s(&[4, 3]));
        let y = g.add_node(Op::MatMul, vec![x, w], "y", None).unwrap();
        let z = g.add_node(Op::Unary(UnaryOp::Relu), vec![y], "z", Some("m.py:3".into())).unwrap();
        g.add_output("out", z);
        g
    }

    fn expect_err(g: &Graph, needles: &[&str]) {
        match verify(g) {
            Ok(()) => panic!("expected a verifier error mentioning {needles:?}"),
            Err(IrError::Verify(m)) => {
                for n in needles {
                    assert!(m.contains(n), "error {m:?} should mention {n:?}");
                }
            }
            Err(other) => panic!("expected IrError::Verify, got {other:?}"),
        }
    }

    #[test]
    fn valid_graph_passes() {
        let g = valid();
        verify(&g).unwrap();
        verify_if_debug(&g).unwrap();
        verify(&Graph::new("empty")).unwrap();
    }

    #[test]
    fn wrong_stored_type() {
        let mut g = valid();
        let y = g.value_named("y").unwrap();
        g.add_node_typed(Op::Unary(UnaryOp::Neg), vec![y], "bad", f32s(&[2, 2]), None);
        expect_err(&g, &["%bad", "neg", "stored type f32[2, 2]", "f32[s0, 3]"]);
        if cfg!(debug_assertions) {
            assert!(verify_if_debug(&g).is_err());
        }
    }

    #[test]
    fn inference_failure_is_reported() {
        let mut g = valid();
        let x = g.value_named("x").unwrap();
        let z = g.value_named("z").unwrap();
        // f32[s0, 4] + f32[s0, 3] does not broadcast.
        g.add_node_typed(Op::Binary(BinaryOp::Add), vec![x, z], "sum", f32s(&[1]), None);
        expect_err(&g, &["%sum", "add", "type inference failed", "broadcast"]);
    }

    #[test]
    fn use_before_def() {
        let mut g = valid();
        let x = g.value_named("x").unwrap();
        // `early` uses value #(n+1), defined by the node after it.
        let later = ValueId(g.value_count() as u32 + 1);
        g.add_node_typed(Op::Binary(BinaryOp::Add), vec![x, later], "early", f32s(&[1]), None);
        g.add_node_typed(Op::Unary(UnaryOp::Neg), vec![x], "late", g.ty(x).clone(), None);
        expect_err(&g, &["%early", "operand 1", "%late", "before it is defined"]);
    }

    #[test]
    fn self_use_is_use_before_def() {
        let mut g = valid();
        let me = ValueId(g.value_count() as u32);
        g.add_node_typed(Op::Unary(UnaryOp::Neg), vec![me], "loop", f32s(&[1]), None);
        expect_err(&g, &["%loop", "before it is defined"]);
    }

    #[test]
    fn dangling_operand() {
        let mut g = valid();
        g.add_node_typed(Op::Unary(UnaryOp::Neg), vec![ValueId(99)], "dangle", f32s(&[1]), None);
        expect_err(&g, &["%dangle", "#99", "does not exist"]);
    }

    #[test]
    fn dangling_output() {
        let mut g = valid();
        g.add_output("ghost", ValueId(42));
        expect_err(&g, &["\"ghost\"", "#42"]);
    }

    #[test]
    fn unknown_symbol_in_type() {
        let mut g = valid();
        g.add_input("u", TensorType::new(DType::F32, vec![Dim::symbol(SymId(7))]));
        expect_err(&g, &["%u", "symbol #7"]);
    }

    #[test]
    fn unknown_symbol_in_attribute() {
        let mut g = valid();
        let x = g.value_named("x").unwrap();
        let bad = Dim::symbol(SymId(5));
        g.add_node_typed(
            Op::Reshape { shape: vec![bad.clone()] },
            vec![x],
            "r",
            TensorType::new(DType::F32, vec![]),
            None,
        );
        expect_err(&g, &["%r", "reshape", "symbol #5"]);
    }

    #[test]
    fn bad_symbol_table() {
        let mut g = valid();
        g.symbols.intern("2bad", 1, None);
        expect_err(&g, &["\"2bad\"", "identifier"]);
        let mut g = valid();
        g.symbols.intern("s9", 5, Some(3));
        expect_err(&g, &["s9", "empty range"]);
    }

    #[test]
    fn duplicate_value_name() {
        let mut g = valid();
        g.arenas_mut().0[3].name = "x".into(); // `z` renamed to the input's name
        expect_err(&g, &["%x", "used twice", "#3"]);
    }

    #[test]
    fn empty_or_unprintable_value_name() {
        let mut g = valid();
        g.arenas_mut().0[2].name = String::new();
        expect_err(&g, &["value #2", "empty name"]);
        let mut g = valid();
        g.arenas_mut().0[2].name = "a b".into();
        expect_err(&g, &["value #2", "\"a b\""]);
    }

    #[test]
    fn node_result_defined_elsewhere() {
        // Node 1 (`z`) claims the input `x` as its result.
        let mut g = valid();
        g.arenas_mut().1[1].output = ValueId(0);
        expect_err(&g, &["%z", "node #1", "does not define it"]);
    }

    #[test]
    fn node_result_dangling() {
        let mut g = valid();
        let (values, nodes, _, _) = g.arenas_mut();
        values.pop(); // `z` is gone, its node remains
        let _ = nodes;
        expect_err(&g, &["node #1", "relu", "#3", "does not exist"]);
    }

    #[test]
    fn value_defined_by_missing_node() {
        let mut g = valid();
        g.arenas_mut().0.push(ValueData { name: "orphan".into(), ty: f32s(&[1]), def: ValueDef::Node(NodeId(9)) });
        expect_err(&g, &["%orphan", "node #9"]);
    }

    #[test]
    fn input_and_weight_defs() {
        // The input list names the weight.
        let mut g = valid();
        g.arenas_mut().2[0] = ValueId(1);
        expect_err(&g, &["input 0", "%w", "defined as weight 0"]);
        // The weight list is out of range.
        let mut g = valid();
        g.arenas_mut().3[0] = ValueId(50);
        expect_err(&g, &["weight 0", "#50", "does not exist"]);
        // A value claims to be weight 1, which does not exist.
        let mut g = valid();
        g.arenas_mut().0[1].def = ValueDef::Weight(1);
        expect_err(&g, &["%w", "weight 1"]);
    }

    #[test]
    fn node_operand_count_is_checked_by_inference() {
        let mut g = valid();
        let mut bad = g.node(NodeId(0)).clone();
        bad.inputs.pop();
        g.arenas_mut().1[0] = bad;
        expect_err(&g, &["%y", "matmul", "expects 2 operand(s)"]);
    }

    #[test]
    fn bad_attributes() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", f32s(&[1, 2, 8, 8]));
        let pool = PoolAttrs {
            kind: PoolKind::Max,
            kernel: vec![2, 2],
            stride: vec![0, 2],
            padding: vec![0, 0],
            dilation: vec![1, 1],
            ceil_mode: false,
            count_include_pad: false,
        };
        g.add_node_typed(Op::Pool(pool), vec![x], "p", f32s(&[1, 2, 4, 4]), None);
        expect_err(&g, &["%p", "pool", "`stride`", "positive"]);

        let mut g = Graph::new("g");
        let x = g.add_input("x", f32s(&[1, 2, 8]));
        let w = g.add_weight("w", f32s(&[2, 2, i64::MAX / 2]));
        let conv = ConvAttrs {
            stride: vec![1],
            padding: vec![i64::MAX / 2],
            dilation: vec![1],
            groups: 1,
            transposed: false,
            output_padding: vec![0],
        };
        g.add_node_typed(Op::Conv(conv), vec![x, w], "c", f32s(&[1, 2, 1]), None);
        expect_err(&g, &["%c", "conv", "overflow"]);
    }

    #[test]
    fn overflowing_dims_do_not_panic() {
        let mut g = Graph::new("g");
        let big = i64::MAX / 2 + 1;
        let x = g.add_input("x", f32s(&[big, big]));
        g.add_node_typed(Op::Reshape { shape: vec![Dim::constant(1)] }, vec![x], "r", f32s(&[1]), None);
        expect_err(&g, &["%r", "overflow"]);

        let mut g = Graph::new("g");
        let x = g.add_input("x", f32s(&[i64::MAX]));
        g.add_node_typed(Op::Concat { axis: 0 }, vec![x, x], "c", f32s(&[1]), None);
        expect_err(&g, &["%c", "overflow"]);

        let mut g = Graph::new("g");
        let x = g.add_input("x", f32s(&[i64::MIN]));
        g.add_node_typed(Op::Pad { pads: vec![(0, 0)], value: 0.0 }, vec![x], "p", f32s(&[1]), None);
        expect_err(&g, &["%x", "too large"]);

        let mut g = Graph::new("g");
        let x = g.add_input("x", f32s(&[8]));
        let slice = Op::Slice { axis: 0, start: Dim::constant(-i64::MAX), end: Dim::constant(i64::MAX), step: 1 };
        g.add_node_typed(slice, vec![x], "s", f32s(&[1]), None);
        expect_err(&g, &["%s", "overflow"]);
    }

    #[test]
    fn outputs_may_name_inputs() {
        let mut g = valid();
        // An output naming an input is fine.
        let x = g.value_named("x").unwrap();
        g.add_output("x_again", x);
        verify(&g).unwrap();
        assert_eq!(g.value(x).def, ValueDef::Input(0));
        assert_eq!(g.value(g.weights()[0]).def, ValueDef::Weight(0));
    }
}
