//! The reference interpreter: kiln's numerical oracle.
//!
//! [`run`] evaluates a graph on concrete inputs with plain, obviously correct loops, following
//! the semantics in the crate documentation exactly. Every other stage (passes, every codegen
//! target, the runtime) is tested against it. Speed is not its job, but every op is linear in
//! its work (`numel * window` for pools and convolutions), so small CNNs and transformers run in
//! well under a second.
//!
//! Floats are computed in `f64` and rounded to the value's dtype after every op; integers are
//! computed in `i64` and wrapped to the dtype. Anything the data can get wrong (a gather index out
//! of range, an integer division by zero, a shape that does not match the declared type) is an
//! [`IrError::Interp`] naming the node and op, never a panic.
//!
//! Modules by concern: `value` (run-time values and index helpers), `elementwise` (unary,
//! binary, where, cast), `reduce` (reductions, arg-reductions, cumsum), `linalg` (matmul,
//! conv), `pool` (pooling, adaptive pooling), `layout` (reshape, permute, expand, slice,
//! concat, pad, gather, iota, full).

mod elementwise;
mod layout;
mod linalg;
mod pool;
mod reduce;
pub mod scalar;
mod value;

use crate::dim::{Dim, SymId, SymbolTable};
use crate::error::IrError;
use crate::graph::{Graph, TensorType, ValueId};
use crate::op::Op;
use crate::tensor::Tensor;
use crate::weights::WeightStore;
use value::{Value, R};

/// Concrete values of the graph's symbols, bound from the input shapes.
pub(crate) struct Env<'a> {
    symbols: &'a SymbolTable,
    bindings: Vec<Option<i64>>,
}

impl Env<'_> {
    /// Evaluates a dim with the bound symbols.
    pub fn dim(&self, d: &Dim) -> R<i64> {
        d.eval(&|s: SymId| self.bindings.get(s.0 as usize).copied().flatten()).ok_or_else(|| {
            let unbound: Vec<String> = d
                .symbols()
                .into_iter()
                .filter(|s| self.bindings.get(s.0 as usize).copied().flatten().is_none())
                .map(|s| {
                    self.symbols.get(s).map(|sym| format!("`{}`", sym.name)).unwrap_or_else(|| format!("#{}", s.0))
                })
                .collect();
            if unbound.is_empty() {
                format!("dim `{}` overflows", d.display(self.symbols))
            } else {
                format!("symbol {} is not bound by the input shapes", unbound.join(", "))
            }
        })
    }

    /// Evaluates a shape; every dim must be non-negative.
    pub fn shape(&self, dims: &[Dim]) -> R<Vec<usize>> {
        dims.iter()
            .map(|d| {
                let v = self.dim(d)?;
                usize::try_from(v).map_err(|_| format!("dim `{}` evaluates to {v}", d.display(self.symbols)))
            })
            .collect()
    }
}

/// Runs `graph` on `inputs` (in the order of [`Graph::inputs`]) with the weights of `weights`,
/// returning the graph outputs in order.
///
/// Inputs are checked against the graph's input types: count, dtype, rank, and every dim. Each
/// input dim that is a bare symbol binds that symbol (two inputs binding it differently is an
/// error), bound values must lie in the symbol's range, and every input dim must then evaluate
/// to the given size. Weights are looked up by value name and must match their declared types.
/// Every node's result is checked against its declared type.
pub fn run(graph: &Graph, weights: &WeightStore, inputs: &[Tensor]) -> Result<Vec<Tensor>, IrError> {
    let err = |m: String| IrError::Interp(m);
    let mut values: Vec<Option<Value>> = vec![None; graph.value_count()];
    let env = bind_inputs(graph, inputs).map_err(err)?;

    for (&id, tensor) in graph.inputs().iter().zip(inputs) {
        let name = &value_data(graph, id).map_err(err)?.name;
        let v = Value::from_tensor(tensor).map_err(|m| err(format!("input `{name}`: {m}")))?;
        values[id.0 as usize] = Some(v);
    }
    for &id in graph.weights() {
        let data = value_data(graph, id).map_err(err)?;
        let name = &data.name;
        let tensor = weights.get(name).ok_or_else(|| err(format!("weight `{name}` is not in the weight store")))?;
        let v = Value::from_tensor(tensor).map_err(|m| err(format!("weight `{name}`: {m}")))?;
        check_type(&v, &data.ty, &env).map_err(|m| err(format!("weight `{name}`: {m}")))?;
        values[id.0 as usize] = Some(v);
    }

    for (_, node) in graph.nodes() {
        let out = value_data(graph, node.output).map_err(err)?;
        let context = |m: String| {
            let at = node.source.as_deref().map(|s| format!(" (at {s})")).unwrap_or_default();
            err(format!("node `{}` ({}){at}: {m}", out.name, node.op.name()))
        };
        let mut args: Vec<&Value> = Vec::with_capacity(node.inputs.len());
        for &i in &node.inputs {
            let v = values
                .get(i.0 as usize)
                .and_then(|v| v.as_ref())
                .ok_or_else(|| context(format!("operand #{} is not defined before this node", i.0)))?;
            args.push(v);
        }
        let result = eval_op(&node.op, &args, &env).map_err(context)?;
        check_type(&result, &out.ty, &env).map_err(context)?;
        values[node.output.0 as usize] = Some(result);
    }

    graph
        .outputs()
        .iter()
        .map(|(name, id)| {
            values
                .get(id.0 as usize)
                .and_then(|v| v.as_ref())
                .map(Value::to_tensor)
                .ok_or_else(|| err(format!("output `{name}` refers to a value that was never computed")))
        })
        .collect()
}

fn value_data(graph: &Graph, id: ValueId) -> R<&crate::graph::ValueData> {
    graph.try_value(id).ok_or_else(|| format!("value #{} does not exist", id.0))
}

/// Checks input count and dtypes, binds symbols from bare-symbol dims, checks their ranges and
/// that every input dim evaluates to the given size.
fn bind_inputs<'g>(graph: &'g Graph, inputs: &[Tensor]) -> R<Env<'g>> {
    let symbols = &graph.symbols;
    if inputs.len() != graph.inputs().len() {
        return Err(format!("the graph takes {} input(s), {} given", graph.inputs().len(), inputs.len()));
    }
    // For each symbol: its value and which input (name, dim) bound it.
    let mut bound: Vec<Option<(i64, String, usize)>> = vec![None; symbols.len()];
    let mut types = Vec::with_capacity(inputs.len());
    for (&id, t) in graph.inputs().iter().zip(inputs) {
        let data = value_data(graph, id)?;
        let (name, ty) = (&data.name, &data.ty);
        if t.dtype != ty.dtype {
            return Err(format!("input `{name}` has dtype {}, the graph expects {}", t.dtype, ty.dtype));
        }
        if t.shape.len() != ty.rank() {
            return Err(format!(
                "input `{name}` has rank {} (shape {:?}), the graph expects {}",
                t.shape.len(),
                t.shape,
                ty.display(symbols)
            ));
        }
        for (i, (d, &size)) in ty.shape.iter().zip(&t.shape).enumerate() {
            let Some(s) = d.as_symbol() else { continue };
            let sym = symbols.get(s).ok_or_else(|| format!("input `{name}` dim {i} uses unknown symbol #{}", s.0))?;
            let size = i64::try_from(size).map_err(|_| format!("input `{name}` dim {i} is too large"))?;
            match &bound[s.0 as usize] {
                Some((v, other, j)) if *v != size => {
                    return Err(format!(
                        "symbol `{}` is {v} from input `{other}` dim {j} but {size} from input `{name}` dim {i}",
                        sym.name
                    ))
                }
                Some(_) => {}
                None => bound[s.0 as usize] = Some((size, name.clone(), i)),
            }
        }
        types.push((name, ty, &t.shape));
    }
    for (s, sym) in symbols.iter() {
        if let Some((v, who, i)) = &bound[s.0 as usize] {
            let too_big = sym.max.is_some_and(|m| *v > m);
            if *v < sym.min || too_big {
                let max = sym.max.map(|m| m.to_string()).unwrap_or_else(|| "inf".into());
                return Err(format!(
                    "symbol `{}` = {v} (input `{who}` dim {i}) is outside its range [{}, {max}]",
                    sym.name, sym.min
                ));
            }
        }
    }
    let env = Env { symbols, bindings: bound.into_iter().map(|b| b.map(|(v, _, _)| v)).collect() };
    for (name, ty, shape) in types {
        for (i, (d, &size)) in ty.shape.iter().zip(shape).enumerate() {
            let want = env.dim(d).map_err(|m| format!("input `{name}` dim {i}: {m}"))?;
            if i64::try_from(size).ok() != Some(want) {
                return Err(format!(
                    "input `{name}` dim {i} is {size}, but `{}` evaluates to {want} (expected {})",
                    d.display(symbols),
                    ty.display(symbols)
                ));
            }
        }
    }
    Ok(env)
}

/// Checks a computed value against a declared (possibly symbolic) type.
fn check_type(v: &Value, ty: &TensorType, env: &Env) -> R<()> {
    let shape = env.shape(&ty.shape)?;
    if v.dtype != ty.dtype || v.shape != shape {
        return Err(format!(
            "result is {}{:?}, but the declared type {} evaluates to {}{:?}",
            v.dtype,
            v.shape,
            ty.display(env.symbols),
            ty.dtype,
            shape
        ));
    }
    Ok(())
}

fn arity<'v, const N: usize>(args: &[&'v Value]) -> R<[&'v Value; N]> {
    <[&Value; N]>::try_from(args).map_err(|_| format!("expects {N} operand(s), got {}", args.len()))
}

/// Evaluates one op on concrete operands.
fn eval_op(op: &Op, args: &[&Value], env: &Env) -> R<Value> {
    match op {
        Op::Unary(u) => {
            let [x] = arity(args)?;
            elementwise::unary(*u, x)
        }
        Op::Binary(b) => {
            let [x, y] = arity(args)?;
            elementwise::binary(*b, x, y)
        }
        Op::Where => {
            let [c, x, y] = arity(args)?;
            elementwise::select(c, x, y)
        }
        Op::Cast(to) => {
            let [x] = arity(args)?;
            elementwise::cast(x, *to)
        }
        Op::Reduce { kind, axes, keepdim } => {
            let [x] = arity(args)?;
            reduce::reduce(*kind, axes, *keepdim, x)
        }
        Op::ArgReduce { kind, axis, keepdim } => {
            let [x] = arity(args)?;
            reduce::arg_reduce(*kind, *axis, *keepdim, x)
        }
        Op::CumSum { axis } => {
            let [x] = arity(args)?;
            reduce::cumsum(*axis, x)
        }
        Op::MatMul => {
            let [a, b] = arity(args)?;
            linalg::matmul(a, b)
        }
        Op::Attention(attrs) => linalg::attention(attrs, args),
        Op::Conv(attrs) => {
            let [x, w] = arity(args)?;
            linalg::conv(attrs, x, w)
        }
        Op::Pool(attrs) => {
            let [x] = arity(args)?;
            pool::pool(attrs, x)
        }
        Op::AdaptivePool { kind, output_size } => {
            let [x] = arity(args)?;
            pool::adaptive_pool(*kind, output_size, x)
        }
        Op::Reshape { shape } => {
            let [x] = arity(args)?;
            layout::reshape(x, env.shape(shape)?)
        }
        Op::Permute { perm } => {
            let [x] = arity(args)?;
            layout::permute(x, perm)
        }
        Op::Expand { shape } => {
            let [x] = arity(args)?;
            layout::expand(x, env.shape(shape)?)
        }
        Op::Slice { axis, start, end, step } => {
            let [x] = arity(args)?;
            layout::slice(x, *axis, env.dim(start)?, env.dim(end)?, *step)
        }
        Op::Concat { axis } => layout::concat(args, *axis),
        Op::Pad { pads, value } => {
            let [x] = arity(args)?;
            layout::pad(x, pads, *value)
        }
        Op::Gather { axis } => {
            let [data, idx] = arity(args)?;
            layout::gather(data, idx, *axis)
        }
        Op::Iota { shape, axis, start, step, dtype } => {
            arity::<0>(args)?;
            layout::iota(env.shape(shape)?, *axis, *start, *step, *dtype)
        }
        Op::Full { shape, value, dtype } => {
            arity::<0>(args)?;
            layout::full(env.shape(shape)?, *value, *dtype)
        }
        Op::DimValue { dim, dtype } => {
            arity::<0>(args)?;
            layout::full(vec![], env.dim(dim)? as f64, *dtype)
        }
    }
}

/// Helpers for the op tests: one-node graphs over fixed-shape inputs.
#[cfg(test)]
pub(crate) mod testutil {
    use crate::{DType, Graph, IrError, Op, Tensor, TensorType, WeightStore};

    pub fn f32s(shape: &[usize], v: &[f64]) -> Tensor {
        Tensor::from_f64(DType::F32, shape.to_vec(), v)
    }

    pub fn f64s(shape: &[usize], v: &[f64]) -> Tensor {
        Tensor::from_f64(DType::F64, shape.to_vec(), v)
    }

    pub fn i64s(shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_i64(DType::I64, shape.to_vec(), v)
    }

    pub fn ints(dtype: DType, shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_i64(dtype, shape.to_vec(), v)
    }

    pub fn bools(shape: &[usize], v: &[bool]) -> Tensor {
        let v: Vec<i64> = v.iter().map(|&b| b as i64).collect();
        Tensor::from_i64(DType::Bool, shape.to_vec(), &v)
    }

    /// `0, 1, 2, ...` as f32.
    pub fn arange(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        f32s(shape, &(0..n).map(|i| i as f64).collect::<Vec<_>>())
    }

    /// Runs `op` on inputs with exactly the tensors' static types; the node is typed by
    /// inference (so `add_node` must accept it).
    pub fn run_op(op: Op, inputs: impl AsRef<[Tensor]>) -> Result<Tensor, IrError> {
        let inputs = inputs.as_ref();
        let mut g = Graph::new("t");
        let ids = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
                g.add_input(&format!("x{i}"), TensorType::fixed(t.dtype, &shape))
            })
            .collect();
        let y = g.add_node(op, ids, "y", None)?;
        g.add_output("y", y);
        Ok(super::run(&g, &WeightStore::default(), inputs)?.remove(0))
    }

    /// [`run_op`] that must succeed.
    pub fn ok(op: Op, inputs: impl AsRef<[Tensor]>) -> Tensor {
        run_op(op, inputs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The error message of a failing [`run_op`].
    pub fn fails(op: Op, inputs: impl AsRef<[Tensor]>) -> String {
        match run_op(op, inputs) {
            Ok(t) => panic!("expected an error, got {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Element-wise comparison with NaN == NaN and a relative tolerance.
    pub fn assert_close(t: &Tensor, shape: &[usize], want: &[f64], tol: f64) {
        assert_eq!(t.shape, shape, "shape");
        let got = t.to_f64();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let same = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= tol * w.abs().max(1.0);
            assert!(same, "element {i}: got {g}, want {w} (all: {got:?})");
        }
    }

    pub fn assert_ints(t: &Tensor, shape: &[usize], want: &[i64]) {
        assert_eq!(t.shape, shape, "shape");
        assert_eq!(t.to_i64(), want);
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::{BinaryOp, DType, ReduceKind, UnaryOp};

    /// `x: f32[s0, 4]` -> `reduce_sum(x * 2, axis 1)`, plus a reshape to `[4*s0]`.
    fn symbolic_graph() -> Graph {
        let mut g = Graph::new("sym");
        let s0 = Dim::symbol(g.symbols.intern("s0", 2, Some(8)));
        let x = g.add_input("x", TensorType::new(DType::F32, vec![s0.clone(), Dim::constant(4)]));
        let two = g.add_node(Op::Full { shape: vec![], value: 2.0, dtype: DType::F32 }, vec![], "two", None).unwrap();
        let m = g.add_node(Op::Binary(BinaryOp::Mul), vec![x, two], "m", None).unwrap();
        let r = g
            .add_node(Op::Reduce { kind: ReduceKind::Sum, axes: vec![1], keepdim: false }, vec![m], "r", None)
            .unwrap();
        let flat = g.add_node(Op::Reshape { shape: vec![s0.scale(4)] }, vec![m], "flat", None).unwrap();
        g.add_output("r", r);
        g.add_output("flat", flat);
        g
    }

    #[test]
    fn symbolic_binding_at_two_sizes() {
        let g = symbolic_graph();
        let w = WeightStore::default();
        for n in [2usize, 5] {
            let out = run(&g, &w, &[arange(&[n, 4])]).unwrap();
            let want: Vec<f64> = (0..n).map(|i| 2.0 * (4 * i * 4 + 6) as f64).collect();
            assert_close(&out[0], &[n], &want, 0.0);
            assert_eq!(out[1].shape, vec![4 * n]);
        }
    }

    #[test]
    fn symbolic_binding_errors() {
        let g = symbolic_graph();
        let w = WeightStore::default();
        let e = run(&g, &w, &[arange(&[9, 4])]).unwrap_err().to_string();
        assert!(e.contains("`s0` = 9") && e.contains("[2, 8]"), "{e}");
        let e = run(&g, &w, &[arange(&[1, 4])]).unwrap_err().to_string();
        assert!(e.contains("outside its range"), "{e}");
        let e = run(&g, &w, &[arange(&[3, 5])]).unwrap_err().to_string();
        assert!(e.contains("input `x` dim 1 is 5"), "{e}");
        let e = run(&g, &w, &[arange(&[3])]).unwrap_err().to_string();
        assert!(e.contains("rank"), "{e}");
        let e = run(&g, &w, &[i64s(&[3, 4], &[0; 12])]).unwrap_err().to_string();
        assert!(e.contains("dtype"), "{e}");
        let e = run(&g, &w, &[]).unwrap_err().to_string();
        assert!(e.contains("1 input(s), 0 given"), "{e}");

        // Two inputs binding `s0` differently.
        let mut g = Graph::new("two");
        let s0 = Dim::symbol(g.symbols.intern("s0", 1, None));
        let a = g.add_input("a", TensorType::new(DType::F32, vec![s0.clone()]));
        let b = g.add_input("b", TensorType::new(DType::F32, vec![s0]));
        let y = g.add_node(Op::Binary(BinaryOp::Add), vec![a, b], "y", None).unwrap();
        g.add_output("y", y);
        let e = run(&g, &w, &[arange(&[3]), arange(&[4])]).unwrap_err().to_string();
        assert!(e.contains("input `a`") && e.contains("input `b`") && e.contains("`s0`"), "{e}");
        let out = run(&g, &w, &[arange(&[3]), arange(&[3])]).unwrap();
        assert_close(&out[0], &[3], &[0.0, 2.0, 4.0], 0.0);
    }

    #[test]
    fn compound_dims_are_checked() {
        // x: f32[s0], y: f32[2*s0+1]
        let mut g = Graph::new("c");
        let s0 = Dim::symbol(g.symbols.intern("s0", 1, None));
        let x = g.add_input("x", TensorType::new(DType::F32, vec![s0.clone()]));
        let y = g.add_input("y", TensorType::new(DType::F32, vec![s0.scale(2).add(&Dim::constant(1))]));
        g.add_output("x", x);
        g.add_output("y", y);
        let w = WeightStore::default();
        assert!(run(&g, &w, &[arange(&[2]), arange(&[5])]).is_ok());
        let e = run(&g, &w, &[arange(&[2]), arange(&[4])]).unwrap_err().to_string();
        assert!(e.contains("input `y` dim 0 is 4"), "{e}");

        // A symbol bound by no bare dim is an error.
        let mut g = Graph::new("u");
        let s0 = Dim::symbol(g.symbols.intern("s0", 1, None));
        let x = g.add_input("x", TensorType::new(DType::F32, vec![s0.scale(2)]));
        g.add_output("x", x);
        let e = run(&g, &w, &[arange(&[4])]).unwrap_err().to_string();
        assert!(e.contains("not bound"), "{e}");
    }

    #[test]
    fn weights_are_checked() {
        let mut g = Graph::new("w");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[2]));
        let b = g.add_weight("bias", TensorType::fixed(DType::F32, &[2]));
        let y = g.add_node(Op::Binary(BinaryOp::Add), vec![x, b], "y", None).unwrap();
        g.add_output("y", y);
        let mut w = WeightStore::default();
        let e = run(&g, &w, &[arange(&[2])]).unwrap_err().to_string();
        assert!(e.contains("`bias` is not in the weight store"), "{e}");
        w.insert("bias", f32s(&[3], &[1.0, 2.0, 3.0]));
        let e = run(&g, &w, &[arange(&[2])]).unwrap_err().to_string();
        assert!(e.contains("weight `bias`"), "{e}");
        w.insert("bias", f64s(&[2], &[1.0, 2.0]));
        let e = run(&g, &w, &[arange(&[2])]).unwrap_err().to_string();
        assert!(e.contains("weight `bias`"), "{e}");
        w.insert("bias", f32s(&[2], &[1.0, 2.0]));
        let out = run(&g, &w, &[arange(&[2])]).unwrap();
        assert_close(&out[0], &[2], &[1.0, 3.0], 0.0);
    }

    #[test]
    fn errors_name_the_node_and_declared_types_are_checked() {
        // A node typed wrongly by hand (as a bad parse could) is caught, not trusted.
        let mut g = Graph::new("bad");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[3]));
        let y = g.add_node_typed(Op::Unary(UnaryOp::Neg), vec![x], "neg_1", TensorType::fixed(DType::F32, &[4]), None);
        g.add_output("y", y);
        let e = run(&g, &WeightStore::default(), &[arange(&[3])]).unwrap_err().to_string();
        assert!(e.contains("node `neg_1` (neg)") && e.contains("declared type"), "{e}");

        // Wrong arity and dangling operands are errors too.
        let mut g = Graph::new("bad2");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[3]));
        let y =
            g.add_node_typed(Op::Binary(BinaryOp::Add), vec![x], "add_1", TensorType::fixed(DType::F32, &[3]), None);
        let z = g.add_node_typed(
            Op::Unary(UnaryOp::Neg),
            vec![ValueId(99)],
            "z",
            TensorType::fixed(DType::F32, &[3]),
            None,
        );
        g.add_output("y", y);
        g.add_output("z", z);
        let e = run(&g, &WeightStore::default(), &[arange(&[3])]).unwrap_err().to_string();
        assert!(e.contains("node `add_1` (add)") && e.contains("expects 2 operand(s)"), "{e}");

        // The source line is part of the message.
        let mut g = Graph::new("src");
        let x = g.add_input("x", TensorType::fixed(DType::I64, &[1]));
        let zero = g
            .add_node(Op::Full { shape: vec![Dim::constant(1)], value: 0.0, dtype: DType::I64 }, vec![], "zero", None)
            .unwrap();
        let d = g.add_node(Op::Binary(BinaryOp::Div), vec![x, zero], "div_1", Some("model.py:3".into())).unwrap();
        g.add_output("d", d);
        let e = run(&g, &WeightStore::default(), &[i64s(&[1], &[5])]).unwrap_err().to_string();
        assert!(e.contains("node `div_1` (div) (at model.py:3)") && e.contains("division by zero"), "{e}");
    }

    #[test]
    fn dim_value_reads_the_bound_symbol() {
        let mut g = Graph::new("dv");
        let s0 = g.symbols.intern("s0", 1, Some(16));
        let x = g.add_input("x", TensorType::new(DType::F32, vec![Dim::symbol(s0), Dim::constant(2)]));
        let d = Dim::symbol(s0).mul(&Dim::constant(3)).add(&Dim::constant(1));
        let v = g.add_node(Op::DimValue { dim: d, dtype: DType::I64 }, vec![], "v", None).unwrap();
        g.add_output("v", v);
        g.add_output("x", x);
        for n in [2usize, 5] {
            let out = run(&g, &WeightStore::default(), &[f32s(&[n, 2], &vec![0.0; n * 2])]).unwrap();
            assert_eq!(out[0].to_i64(), vec![3 * n as i64 + 1]);
        }
    }
}
