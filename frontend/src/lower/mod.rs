//! Lowering: ATen nodes of the exported graph → kiln IR nodes.
//!
//! [`Lowerer`] walks the nodes in order, keeps the map from export value names to IR values,
//! and dispatches each node through the [`OPS`] table (the one list of supported ATen ops; the
//! `docs/ops.md` table is generated from it). High-level ops decompose into the IR's small op
//! set. After each node, the IR result types are checked against the dtype and shape the
//! exporter recorded, so a lowering bug shows up at the node that caused it.
//!
//! Unsupported ops do not stop the walk: their results are replaced by placeholders of the
//! recorded type so that every unsupported op in the graph is found and reported at once.

mod aliases;
mod elementwise;
mod layout;
mod nn;
mod reduce;
mod tensor_ops;

use crate::error::{FrontendError, UnsupportedOp};
use crate::export::{dtype_from_code, Arg, ExportNode, ExportedProgram, SymArg};
use kiln_ir::{BinaryOp, DType, Dim, Graph, Op, TensorType, UnaryOp, ValueId};
use std::collections::HashMap;

/// Why one node could not be lowered.
#[derive(Debug)]
pub(crate) enum LowerError {
    /// The op, or this use of it, is not supported: collected and reported together.
    Unsupported(String),
    /// The node is malformed or kiln hit an inconsistency: reported at once.
    Invalid(String),
}

impl From<kiln_ir::IrError> for LowerError {
    fn from(e: kiln_ir::IrError) -> Self {
        LowerError::Invalid(e.to_string())
    }
}

pub(crate) type LResult<T> = Result<T, LowerError>;

pub(crate) fn invalid<T>(msg: impl Into<String>) -> LResult<T> {
    Err(LowerError::Invalid(msg.into()))
}

pub(crate) fn unsupported<T>(msg: impl Into<String>) -> LResult<T> {
    Err(LowerError::Unsupported(msg.into()))
}

/// A float computed from a size at run time: `coeff * dim + offset`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SymFloat {
    pub coeff: f64,
    pub dim: Dim,
    pub offset: f64,
}

/// What a node produced.
pub(crate) enum Lowered {
    /// One IR value per output slot (in order); `None` for slots kiln does not produce (e.g.
    /// max-pool indices), which fail only if something uses them.
    Values(Vec<Option<ValueId>>),
    /// A symbolic integer (from `sym_size` or integer arithmetic on sizes).
    Sym(Dim),
    /// A symbolic float (`torch.sym_float(size)` and float arithmetic on it).
    SymFloat(SymFloat),
    /// Nothing (assertions, metadata checks).
    Nothing,
}

impl Lowered {
    pub(crate) fn one(v: ValueId) -> Lowered {
        Lowered::Values(vec![Some(v)])
    }
}

type LowerFn = fn(&mut Lowerer, &ExportNode) -> LResult<Lowered>;

/// One supported ATen op (the base name, without namespace or overload) and how it lowers.
pub struct OpEntry {
    pub name: &'static str,
    pub(crate) lower: LowerFn,
    /// How the op maps to IR, for `docs/ops.md`.
    pub doc: &'static str,
}

macro_rules! ops {
    ($( $name:literal => $f:path, $doc:literal; )*) => {
        /// Every supported op, sorted by name.
        pub static OPS: &[OpEntry] = &[ $( OpEntry { name: $name, lower: $f, doc: $doc } ),* ];
    };
}

use elementwise as ew;
use layout as ly;
use reduce as rd;
use tensor_ops as to;

ops! {
    "__and__" => ew::binary, "and";
    "__or__" => ew::binary, "or";
    "__xor__" => ew::binary, "xor";
    "_adaptive_avg_pool2d" => nn::adaptive_avg_pool, "adaptive_pool avg";
    "_assert_async" => to::nothing, "checked at export; dropped";
    "_assert_scalar" => to::nothing, "checked at export; dropped";
    "_assert_tensor_metadata" => to::nothing, "checked at export; dropped";
    "_log_softmax" => nn::log_softmax, "reduce_max, sub, exp, reduce_sum, log";
    "_native_batch_norm_legit_no_training" => nn::native_batch_norm, "sub, mul, rsqrt, add (inference)";
    "_softmax" => nn::softmax, "reduce_max, sub, exp, reduce_sum, div";
    "_to_copy" => to::to_copy, "cast (or nothing)";
    "_unsafe_view" => ly::view, "reshape";
    "abs" => ew::unary, "abs";
    "adaptive_avg_pool1d" => nn::adaptive_avg_pool, "adaptive_pool avg";
    "adaptive_avg_pool2d" => nn::adaptive_avg_pool, "adaptive_pool avg";
    "adaptive_avg_pool3d" => nn::adaptive_avg_pool, "adaptive_pool avg";
    "adaptive_max_pool1d" => nn::adaptive_max_pool, "adaptive_pool max (indices not supported)";
    "adaptive_max_pool2d" => nn::adaptive_max_pool, "adaptive_pool max (indices not supported)";
    "add" => ew::add, "add (mul for alpha)";
    "addmm" => nn::addmm, "matmul, mul, add";
    "alias" => to::identity, "no-op";
    "all" => rd::all_any, "cast to bool, reduce_min";
    "amax" => rd::amax_amin, "reduce_max";
    "amin" => rd::amax_amin, "reduce_min";
    "any" => rd::all_any, "cast to bool, reduce_max";
    "arange" => to::arange, "iota";
    "argmax" => rd::arg_reduce, "argmax";
    "argmin" => rd::arg_reduce, "argmin";
    "as_strided" => ly::as_strided, "reshape, or iota, add, gather (contiguous inputs)";
    "avg_pool1d" => nn::avg_pool, "pool avg";
    "avg_pool2d" => nn::avg_pool, "pool avg";
    "avg_pool3d" => nn::avg_pool, "pool avg";
    "baddbmm" => nn::baddbmm, "matmul, mul, add";
    "batch_norm" => nn::batch_norm, "sub, mul, rsqrt, add (inference)";
    "bitwise_and" => ew::binary, "and";
    "bitwise_not" => ew::unary, "not";
    "bitwise_or" => ew::binary, "or";
    "bitwise_xor" => ew::binary, "xor";
    "bmm" => nn::matmul, "matmul";
    "cat" => ly::cat, "concat";
    "ceil" => ew::unary, "ceil";
    "chunk" => ly::chunk, "slice per chunk";
    "clamp" => ew::clamp, "max, min";
    "clamp_max" => ew::clamp, "min";
    "clamp_min" => ew::clamp, "max";
    "clone" => to::identity, "no-op";
    "constant_pad_nd" => ly::constant_pad, "pad";
    "contiguous" => to::identity, "no-op";
    "conv1d" => nn::conv, "conv, add";
    "conv2d" => nn::conv, "conv, add";
    "conv3d" => nn::conv, "conv, add";
    "conv_transpose1d" => nn::conv_transpose, "conv (transposed), add";
    "conv_transpose2d" => nn::conv_transpose, "conv (transposed), add";
    "conv_transpose3d" => nn::conv_transpose, "conv (transposed), add";
    "convolution" => nn::convolution, "conv, add";
    "copy" => to::copy, "cast, expand";
    "cos" => ew::unary, "cos";
    "cumsum" => rd::cumsum, "cumsum";
    "detach" => to::identity, "no-op";
    "diff" => ly::diff, "slice, sub";
    "div" => ew::div, "div (floor/trunc rounding modes)";
    "dropout" => to::dropout, "no-op (inference)";
    "elu" => ew::elu, "where, exp, sub, mul";
    "embedding" => ly::embedding, "gather (axis 0)";
    "empty" => to::full_op, "full 0 (values of empty are unspecified)";
    "empty_like" => to::full_like, "full 0 (values of empty are unspecified)";
    "eq" => ew::compare, "eq";
    "erf" => ew::unary, "erf";
    "exp" => ew::unary, "exp";
    "expand" => ly::expand, "expand (reshape for new leading dims)";
    "expm1" => ew::unary, "expm1";
    "feature_dropout" => to::dropout, "no-op (inference)";
    "fill" => to::fill, "full";
    "flatten" => ly::flatten, "reshape";
    "floor" => ew::unary, "floor";
    "floor_divide" => ew::floor_divide, "floordiv";
    "fmod" => ew::fmod, "rem, where (sign of the dividend)";
    "full" => to::full_op, "full";
    "full_like" => to::full_like, "full";
    "gather" => ly::gather, "iota, mul, add, reshape, gather";
    "ge" => ew::compare, "ge";
    "gelu" => ew::gelu, "erf or tanh form";
    "group_norm" => nn::group_norm, "reshape, reduce_mean, sub, mul, rsqrt, add";
    "gt" => ew::compare, "gt";
    "hardsigmoid" => ew::hardsigmoid, "add, max, min, div";
    "hardswish" => ew::hardswish, "add, max, min, mul, div";
    "hardtanh" => ew::hardtanh, "max, min";
    "index" => ly::index, "gather (one index tensor)";
    "index_select" => ly::index_select, "gather";
    "isnan" => ew::unary, "isnan";
    "layer_norm" => nn::layer_norm, "reduce_mean, sub, mul, rsqrt, add";
    "le" => ew::compare, "le";
    "leaky_relu" => ew::leaky_relu, "where, mul";
    "lift_fresh_copy" => to::identity, "no-op";
    "linalg_vector_norm" => rd::vector_norm, "abs/mul, reduce_sum/reduce_max, pow";
    "linear" => nn::linear, "permute, matmul, add";
    "log" => ew::unary, "log";
    "log1p" => ew::unary, "log1p";
    "log_softmax" => nn::log_softmax, "reduce_max, sub, exp, reduce_sum, log";
    "logical_and" => ew::logical, "and";
    "logical_not" => ew::logical_not, "not";
    "logical_or" => ew::logical, "or";
    "logical_xor" => ew::logical, "xor";
    "logsumexp" => rd::logsumexp, "reduce_max, sub, exp, reduce_sum, log, add";
    "lt" => ew::compare, "lt";
    "masked_fill" => ew::masked_fill, "where";
    "matmul" => nn::matmul, "matmul (reshape for 1-D operands)";
    "max" => rd::max_min, "reduce_max / argmax, or elementwise max";
    "max_pool1d" => nn::max_pool, "pool max";
    "max_pool2d" => nn::max_pool, "pool max";
    "max_pool2d_with_indices" => nn::max_pool, "pool max (indices not supported)";
    "max_pool3d" => nn::max_pool, "pool max";
    "maximum" => ew::binary, "max";
    "mean" => rd::reduce, "reduce_mean";
    "min" => rd::max_min, "reduce_min / argmin, or elementwise min";
    "minimum" => ew::binary, "min";
    "mish" => ew::mish, "exp, log1p, tanh, mul";
    "mm" => nn::matmul, "matmul";
    "mul" => ew::binary, "mul";
    "narrow" => ly::narrow, "slice";
    "native_dropout" => to::dropout, "no-op (inference)";
    "native_group_norm" => nn::group_norm, "reshape, reduce_mean, sub, mul, rsqrt, add";
    "native_layer_norm" => nn::layer_norm, "reduce_mean, sub, mul, rsqrt, add";
    "ne" => ew::compare, "ne";
    "neg" => ew::unary, "neg";
    "new_empty" => to::new_full, "full 0";
    "new_full" => to::new_full, "full";
    "new_ones" => to::new_full, "full 1";
    "new_zeros" => to::new_full, "full 0";
    "ones" => to::full_op, "full 1";
    "ones_like" => to::full_like, "full 1";
    "pad" => ly::constant_pad, "pad (constant mode)";
    "permute" => ly::permute, "permute";
    "pow" => ew::pow, "pow";
    "prod" => rd::reduce, "reduce_prod";
    "reciprocal" => ew::unary, "reciprocal";
    "relu" => ew::unary, "relu";
    "relu6" => ew::hardtanh, "max, min";
    "remainder" => ew::binary, "rem";
    "repeat" => ly::repeat, "reshape, expand, reshape";
    "reshape" => ly::view, "reshape";
    "rms_norm" => nn::rms_norm, "mul, reduce_mean, add, rsqrt, mul";
    "roll" => ly::roll, "slice, concat";
    "round" => ew::unary, "round (half to even)";
    "rsqrt" => ew::unary, "rsqrt";
    "rsub" => ew::rsub, "sub (mul for alpha)";
    "scalar_tensor" => to::scalar_tensor, "full";
    "scaled_dot_product_attention" => nn::sdpa, "matmul, mul, where/add, softmax, matmul";
    "select" => ly::select, "slice, reshape";
    "select_scatter" => ly::select_scatter, "reshape, slice, concat";
    "sigmoid" => ew::unary, "sigmoid";
    "sign" => ew::unary, "sign";
    "silu" => ew::silu, "sigmoid, mul";
    "sin" => ew::unary, "sin";
    "slice" => ly::slice, "slice";
    "slice_scatter" => ly::slice_scatter, "slice, concat (or gather, where for steps)";
    "softmax" => nn::softmax, "reduce_max, sub, exp, reduce_sum, div";
    "softplus" => ew::softplus, "mul, exp, log1p, div, where";
    "split" => ly::split, "slice per piece";
    "split_with_sizes" => ly::split, "slice per piece";
    "sqrt" => ew::unary, "sqrt";
    "square" => ew::square, "mul";
    "squeeze" => ly::squeeze, "reshape";
    "stack" => ly::stack, "reshape, concat";
    "std" => rd::var_std, "reduce_mean, sub, mul, reduce_sum, div, sqrt";
    "sub" => ew::sub, "sub (mul for alpha)";
    "sum" => rd::reduce, "reduce_sum";
    "sym_constrain_range_for_size" => to::nothing, "checked at export; dropped";
    "sym_size" => to::sym_size, "symbolic size (no IR node)";
    "t" => ly::transpose, "permute";
    "tanh" => ew::unary, "tanh";
    "to" => to::to_copy, "cast (or nothing)";
    "transpose" => ly::transpose, "permute";
    "tril" => to::tril_triu, "iota, sub, le/ge, where";
    "triu" => to::tril_triu, "iota, sub, le/ge, where";
    "trunc" => ew::trunc, "floor, ceil, where";
    "type_as" => to::type_as, "cast";
    "unbind" => ly::unbind, "slice, reshape per piece";
    "unflatten" => ly::unflatten, "reshape";
    "unsqueeze" => ly::unsqueeze, "reshape";
    "view" => ly::view, "reshape";
    "where" => ew::where_, "where";
    "zeros" => to::full_op, "full 0";
    "zeros_like" => to::full_like, "full 0";
}

/// Python integer arithmetic on sizes, as it appears in exported graphs (`_operator.mul`).
const SYM_OPERATORS: &[&str] =
    &["_operator.add", "_operator.sub", "_operator.mul", "_operator.floordiv", "_operator.truediv", "_operator.neg", "torch.sym_float"];

/// Splits `torch.ops.aten.add_.Tensor` into (`add`, in-place?), for ATen targets.
pub fn aten_base_name(target: &str) -> Option<(&str, bool)> {
    let rest = target.strip_prefix("torch.ops.aten.")?;
    let base = rest.split('.').next()?;
    match base.strip_suffix('_') {
        // `__and__` and similar keep their underscores.
        Some(b) if !b.is_empty() && !b.ends_with('_') && !base.starts_with("__") => Some((b, true)),
        _ => Some((base, false)),
    }
}

pub fn lookup(name: &str) -> Option<&'static OpEntry> {
    OPS.iter().find(|e| e.name == name)
}

/// Builds the IR graph for a decoded program. Weights are declared by their state-dict names;
/// `weight_types` gives each one's declared type.
pub(crate) struct Lowerer<'p> {
    pub g: Graph,
    env: HashMap<String, ValueId>,
    /// Values that exist in the export but not in IR, with the reason (used only on use).
    missing: HashMap<String, String>,
    syms: HashMap<String, Dim>,
    sym_floats: HashMap<String, SymFloat>,
    aliases: aliases::Aliases,
    prog: &'p ExportedProgram,
}

impl<'p> Lowerer<'p> {
    pub(crate) fn new(g: Graph, prog: &'p ExportedProgram) -> Self {
        Lowerer { g, env: HashMap::new(), missing: HashMap::new(), syms: prog.sym_ints.clone(), sym_floats: HashMap::new(), aliases: aliases::Aliases::default(), prog }
    }

    pub(crate) fn bind(&mut self, export_name: &str, v: ValueId) {
        self.env.insert(export_name.to_string(), v);
    }

    pub(crate) fn bind_missing(&mut self, export_name: &str, reason: &str) {
        self.missing.insert(export_name.to_string(), reason.to_string());
    }

    pub(crate) fn value(&self, export_name: &str) -> LResult<ValueId> {
        if let Some(v) = self.env.get(export_name) {
            return Ok(*v);
        }
        match self.missing.get(export_name) {
            Some(reason) => unsupported(format!("uses `{export_name}`, which kiln does not produce: {reason}")),
            None => invalid(format!("uses `{export_name}`, which is not defined before it")),
        }
    }

    pub(crate) fn dtype(&self, v: ValueId) -> DType {
        self.g.ty(v).dtype
    }

    pub(crate) fn rank(&self, v: ValueId) -> usize {
        self.g.ty(v).rank()
    }

    pub(crate) fn shape(&self, v: ValueId) -> Vec<Dim> {
        self.g.ty(v).shape.clone()
    }

    /// The dtype the exporter recorded for output slot `i` of node `n`.
    pub(crate) fn out_dtype(&self, n: &ExportNode, i: usize) -> Option<DType> {
        let name = n.outputs.get(i)?.as_ref()?;
        self.prog.tensors.get(name).map(|m| m.dtype)
    }

    /// Whether the exporter recorded `name` with row-major contiguous strides.
    pub(crate) fn recorded_contiguous(&self, name: &str) -> bool {
        let Some(m) = self.prog.tensors.get(name) else { return false };
        let mut expected = Dim::constant(1);
        for (size, stride) in m.sizes.iter().zip(&m.strides).rev() {
            if !size.is_const(1) && *stride != expected {
                return false;
            }
            expected = expected.mul(size);
        }
        true
    }

    pub(crate) fn sym_float(&self, s: &crate::export::SymFloatArg) -> LResult<SymFloat> {
        match s {
            crate::export::SymFloatArg::Float(v) => Ok(SymFloat { coeff: 0.0, dim: Dim::constant(0), offset: *v }),
            crate::export::SymFloatArg::Name(name) => match self.sym_floats.get(name) {
                Some(f) => Ok(f.clone()),
                None => unsupported(format!("symbolic float `{name}` that kiln cannot express")),
            },
        }
    }

    pub(crate) fn sym(&self, s: &SymArg) -> LResult<Dim> {
        match s {
            SymArg::Int(v) => Ok(Dim::constant(*v)),
            SymArg::Name(name) => match self.syms.get(name) {
                Some(d) => Ok(d.clone()),
                None => invalid(format!("unknown symbolic integer `{name}`")),
            },
        }
    }

    // ---- IR building helpers -------------------------------------------------------------

    /// Adds one IR node for export node `n`. Intermediate values are named `<node>.<op>`; the
    /// value that becomes the node's output is renamed to the export's name afterwards.
    pub(crate) fn node(&mut self, op: Op, inputs: Vec<ValueId>, n: &ExportNode) -> LResult<ValueId> {
        let name = self.g.fresh_name(&format!("{}.{}", n.name, op.name()));
        Ok(self.g.add_node(op, inputs, &name, n.source.clone())?)
    }

    pub(crate) fn unary(&mut self, op: UnaryOp, x: ValueId, n: &ExportNode) -> LResult<ValueId> {
        self.node(Op::Unary(op), vec![x], n)
    }

    pub(crate) fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId, n: &ExportNode) -> LResult<ValueId> {
        self.node(Op::Binary(op), vec![a, b], n)
    }

    pub(crate) fn cast(&mut self, x: ValueId, to: DType, n: &ExportNode) -> LResult<ValueId> {
        if self.dtype(x) == to {
            return Ok(x);
        }
        self.node(Op::Cast(to), vec![x], n)
    }

    /// A rank-0 constant.
    pub(crate) fn scalar(&mut self, value: f64, dtype: DType, n: &ExportNode) -> LResult<ValueId> {
        self.node(Op::Full { shape: vec![], value, dtype }, vec![], n)
    }

    /// A rank-0 tensor holding a size: a constant when static, else a `dim_value` node.
    pub(crate) fn dim_scalar(&mut self, dim: &Dim, dtype: DType, n: &ExportNode) -> LResult<ValueId> {
        match dim.as_const() {
            Some(v) => self.scalar(v as f64, dtype, n),
            None => self.node(Op::DimValue { dim: dim.clone(), dtype }, vec![], n),
        }
    }

    /// `x op scalar` in x's dtype.
    pub(crate) fn binary_scalar(&mut self, op: BinaryOp, x: ValueId, value: f64, n: &ExportNode) -> LResult<ValueId> {
        let s = self.scalar(value, self.dtype(x), n)?;
        self.binary(op, x, s, n)
    }

    pub(crate) fn reshape(&mut self, x: ValueId, shape: Vec<Dim>, n: &ExportNode) -> LResult<ValueId> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.node(Op::Reshape { shape }, vec![x], n)
    }

    pub(crate) fn permute(&mut self, x: ValueId, perm: Vec<usize>, n: &ExportNode) -> LResult<ValueId> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        self.node(Op::Permute { perm }, vec![x], n)
    }

    /// Swaps the last two axes.
    pub(crate) fn transpose_last(&mut self, x: ValueId, n: &ExportNode) -> LResult<ValueId> {
        let r = self.rank(x);
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.permute(x, perm, n)
    }

    pub(crate) fn reduce(&mut self, kind: kiln_ir::ReduceKind, x: ValueId, axes: Vec<usize>, keepdim: bool, n: &ExportNode) -> LResult<ValueId> {
        self.node(Op::Reduce { kind, axes, keepdim }, vec![x], n)
    }

    /// Reshapes a per-channel vector `[c]` so it broadcasts against `[n, c, *spatial]` of `rank`.
    pub(crate) fn per_channel(&mut self, v: ValueId, rank: usize, n: &ExportNode) -> LResult<ValueId> {
        let mut shape = self.shape(v);
        shape.extend(std::iter::repeat_n(Dim::constant(1), rank.saturating_sub(2)));
        self.reshape(v, shape, n)
    }
}

// ---- argument access ----------------------------------------------------------------------

/// Looks an argument up by one of its schema names.
pub(crate) fn arg<'n>(n: &'n ExportNode, names: &[&str]) -> Option<&'n Arg> {
    n.inputs.iter().find(|(k, _)| names.contains(&k.as_str())).map(|(_, a)| a).filter(|a| !matches!(a, Arg::None))
}

/// The i-th positional argument.
pub(crate) fn pos(n: &ExportNode, i: usize) -> Option<&Arg> {
    n.inputs.get(i).map(|(_, a)| a).filter(|a| !matches!(a, Arg::None))
}

/// An argument by name. The exporter writes every argument it passes under its schema name and
/// omits defaulted ones, so `_i` (the schema position) only documents the call; it is never used
/// as a fallback, which would pick up the wrong argument when an optional one is omitted.
pub(crate) fn arg_or_pos<'n>(n: &'n ExportNode, names: &[&str], _i: usize) -> Option<&'n Arg> {
    arg(n, names)
}

impl Lowerer<'_> {
    /// A required tensor argument.
    pub(crate) fn tensor_arg(&self, n: &ExportNode, names: &[&str], i: usize) -> LResult<ValueId> {
        match arg_or_pos(n, names, i) {
            Some(Arg::Tensor(t)) => self.value(t),
            Some(other) => invalid(format!("argument `{}` should be a tensor, got {other:?}", names[0])),
            None => invalid(format!("missing tensor argument `{}`", names[0])),
        }
    }

    /// An optional tensor argument.
    pub(crate) fn opt_tensor_arg(&self, n: &ExportNode, names: &[&str]) -> LResult<Option<ValueId>> {
        match arg(n, names) {
            Some(Arg::Tensor(t)) => Ok(Some(self.value(t)?)),
            None => Ok(None),
            Some(other) => invalid(format!("argument `{}` should be a tensor, got {other:?}", names[0])),
        }
    }

    pub(crate) fn tensor_list(&self, n: &ExportNode, names: &[&str], i: usize) -> LResult<Vec<ValueId>> {
        match arg_or_pos(n, names, i) {
            Some(Arg::Tensors(ts)) => ts.iter().map(|t| self.value(t)).collect(),
            other => invalid(format!("argument `{}` should be a list of tensors, got {other:?}", names[0])),
        }
    }

    /// An integer argument (a literal or a static symbolic value).
    pub(crate) fn int_arg(&self, n: &ExportNode, names: &[&str], i: usize, default: Option<i64>) -> LResult<i64> {
        match arg_or_pos(n, names, i) {
            Some(Arg::Int(v)) => Ok(*v),
            Some(Arg::Bool(b)) => Ok(*b as i64),
            Some(Arg::SymInt(s)) => match self.sym(s)?.as_const() {
                Some(v) => Ok(v),
                None => unsupported(format!("argument `{}` is symbolic where kiln needs a static value", names[0])),
            },
            None => default.map(Ok).unwrap_or_else(|| invalid(format!("missing integer argument `{}`", names[0]))),
            Some(other) => invalid(format!("argument `{}` should be an integer, got {other:?}", names[0])),
        }
    }

    /// An integer list (a single integer becomes a one-element list).
    pub(crate) fn ints_arg(&self, n: &ExportNode, names: &[&str], i: usize, default: Option<Vec<i64>>) -> LResult<Vec<i64>> {
        match arg_or_pos(n, names, i) {
            Some(Arg::Ints(v)) => Ok(v.clone()),
            Some(Arg::Int(v)) => Ok(vec![*v]),
            Some(Arg::SymInts(v)) => v
                .iter()
                .map(|s| self.sym(s)?.as_const().ok_or_else(|| LowerError::Unsupported(format!("argument `{}` is symbolic where kiln needs static values", names[0]))))
                .collect(),
            None => default.map(Ok).unwrap_or_else(|| invalid(format!("missing integer list argument `{}`", names[0]))),
            Some(other) => invalid(format!("argument `{}` should be a list of integers, got {other:?}", names[0])),
        }
    }

    /// A list of sizes that may be symbolic.
    pub(crate) fn dims_arg(&self, n: &ExportNode, names: &[&str], i: usize) -> LResult<Vec<Dim>> {
        match arg_or_pos(n, names, i) {
            Some(Arg::Ints(v)) => Ok(v.iter().map(|&d| Dim::constant(d)).collect()),
            Some(Arg::Int(v)) => Ok(vec![Dim::constant(*v)]),
            Some(Arg::SymInts(v)) => v.iter().map(|s| self.sym(s)).collect(),
            Some(Arg::SymInt(s)) => Ok(vec![self.sym(s)?]),
            other => invalid(format!("argument `{}` should be a list of sizes, got {other:?}", names[0])),
        }
    }

    /// One size that may be symbolic.
    pub(crate) fn dim_arg(&self, n: &ExportNode, names: &[&str], i: usize) -> LResult<Option<Dim>> {
        match arg_or_pos(n, names, i) {
            Some(Arg::Int(v)) => Ok(Some(Dim::constant(*v))),
            Some(Arg::SymInt(s)) => Ok(Some(self.sym(s)?)),
            None => Ok(None),
            Some(other) => invalid(format!("argument `{}` should be an integer, got {other:?}", names[0])),
        }
    }

    pub(crate) fn float_arg(&self, n: &ExportNode, names: &[&str], i: usize, default: Option<f64>) -> LResult<f64> {
        match arg_or_pos(n, names, i) {
            Some(Arg::Float(v)) => Ok(*v),
            Some(Arg::Int(v)) => Ok(*v as f64),
            Some(Arg::Bool(b)) => Ok(*b as i64 as f64),
            None => default.map(Ok).unwrap_or_else(|| invalid(format!("missing number argument `{}`", names[0]))),
            Some(other) => invalid(format!("argument `{}` should be a number, got {other:?}", names[0])),
        }
    }

    pub(crate) fn bool_arg(&self, n: &ExportNode, names: &[&str], i: usize, default: bool) -> LResult<bool> {
        match arg_or_pos(n, names, i) {
            Some(Arg::Bool(b)) => Ok(*b),
            Some(Arg::Int(v)) => Ok(*v != 0),
            None => Ok(default),
            Some(other) => invalid(format!("argument `{}` should be a bool, got {other:?}", names[0])),
        }
    }

    pub(crate) fn dtype_arg(&self, n: &ExportNode, names: &[&str]) -> LResult<Option<DType>> {
        match arg(n, names) {
            Some(Arg::ScalarType(code)) => dtype_from_code(*code, &n.name).map(Some).map_err(|e| LowerError::Unsupported(e.to_string())),
            None => Ok(None),
            Some(other) => invalid(format!("argument `{}` should be a dtype, got {other:?}", names[0])),
        }
    }

    /// Normalizes a possibly negative axis against `rank`.
    pub(crate) fn axis(&self, axis: i64, rank: usize) -> LResult<usize> {
        let r = rank.max(1) as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if a < 0 || a >= r {
            return invalid(format!("dim {axis} is out of range for rank {rank}"));
        }
        Ok(a as usize)
    }
}

/// Lowers every node; returns the graph or the list of every unsupported op.
pub(crate) fn lower_nodes(l: &mut Lowerer) -> Result<(), FrontendError> {
    let prog = l.prog;
    let mut unsupported_ops = Vec::new();
    for n in &prog.nodes {
        let first_new = l.g.value_count() as u32;
        let result = lower_one(l, n);
        let outcome = match result {
            Ok(lowered) => bind_outputs(l, n, lowered, first_new),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {}
            Err(LowerError::Unsupported(reason)) => {
                let known = aten_base_name(&n.target).and_then(|(b, _)| lookup(b)).is_some();
                unsupported_ops.push(UnsupportedOp {
                    target: n.target.clone(),
                    node: n.name.clone(),
                    source: n.source.clone(),
                    reason: if known || !reason.is_empty() { Some(reason).filter(|r| !r.is_empty()) } else { None },
                });
                // Stand in for the outputs so later nodes can still be checked.
                for name in n.outputs.iter().flatten() {
                    if l.env.contains_key(name) || l.syms.contains_key(name) {
                        continue;
                    }
                    match placeholder(l, name) {
                        Some(v) => l.bind(name, v),
                        None => l.bind_missing(name, "its producer is unsupported"),
                    }
                }
            }
            Err(LowerError::Invalid(reason)) => {
                return Err(FrontendError::Lowering { target: n.target.clone(), node: n.name.clone(), location: n.source.clone(), reason })
            }
        }
    }
    if unsupported_ops.is_empty() {
        Ok(())
    } else {
        Err(FrontendError::Unsupported(unsupported_ops))
    }
}

fn placeholder(l: &mut Lowerer, name: &str) -> Option<ValueId> {
    let meta = l.prog.tensors.get(name)?;
    let fresh = l.g.fresh_name(&format!("{name}.unsupported"));
    l.g.add_node(Op::Full { shape: meta.sizes.clone(), value: 0.0, dtype: meta.dtype }, vec![], &fresh, None).ok()
}

fn lower_one(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    if SYM_OPERATORS.contains(&n.target.as_str()) {
        return to::sym_arith(l, n);
    }
    let Some((base, _inplace)) = aten_base_name(&n.target) else {
        return unsupported(String::new());
    };
    match lookup(base) {
        Some(entry) => (entry.lower)(l, n),
        None => unsupported(String::new()),
    }
}

fn bind_outputs(l: &mut Lowerer, n: &ExportNode, lowered: Lowered, first_new: u32) -> LResult<()> {
    match lowered {
        Lowered::Nothing => Ok(()),
        Lowered::Sym(d) => {
            if let Some(Some(name)) = n.outputs.first() {
                l.syms.insert(name.clone(), d);
            }
            Ok(())
        }
        Lowered::SymFloat(f) => {
            if let Some(Some(name)) = n.outputs.first() {
                l.sym_floats.insert(name.clone(), f);
            }
            Ok(())
        }
        Lowered::Values(vals) => {
            for (i, slot) in n.outputs.iter().enumerate() {
                let Some(name) = slot else { continue };
                match vals.get(i).copied().flatten() {
                    Some(v) => {
                        check_against_export(l, name, v)?;
                        // Values made by this node take the export's name (`%linear`).
                        if v.0 >= first_new {
                            l.g.rename_value(v, name);
                        }
                        l.bind(name, v);
                    }
                    None => l.bind_missing(name, &format!("output {i} of {} is not supported", n.target)),
                }
            }
            // In-place ops (`relu_`) also update every name of the tensor they mutate.
            let (base, in_place) = aten_base_name(&n.target).unwrap_or(("", false));
            let first = match n.inputs.first() {
                Some((_, Arg::Tensor(t))) => Some(t.as_str()),
                _ => None,
            };
            let outputs: Vec<String> = n.outputs.iter().flatten().cloned().collect();
            let rebind = l.aliases.record(base, in_place, first, &outputs).map_err(LowerError::Unsupported)?;
            if let Some(Some(v)) = vals.first() {
                for name in rebind {
                    l.bind(&name, *v);
                }
            }
            Ok(())
        }
    }
}

/// Compares the IR type of a lowered value with the exporter's record.
fn check_against_export(l: &Lowerer, name: &str, v: ValueId) -> LResult<()> {
    let Some(meta) = l.prog.tensors.get(name) else { return Ok(()) };
    let ty = l.g.ty(v);
    if ty.dtype != meta.dtype || ty.shape != meta.sizes {
        let recorded = TensorType::new(meta.dtype, meta.sizes.clone());
        return invalid(format!(
            "kiln's lowering gives {} but the export records {} for `{name}` (a kiln bug; please report it)",
            ty.display(&l.g.symbols),
            recorded.display(&l.g.symbols)
        ));
    }
    Ok(())
}

/// PyTorch's core ATen opset, as listed by `examples/list_core_aten_ops.py`.
pub const CORE_ATEN_OPS: &str = include_str!("../../data/core_aten_ops.txt");

/// The `docs/ops.md` document: every supported op, and coverage of the core ATen opset.
pub fn ops_markdown() -> String {
    let core: Vec<&str> = CORE_ATEN_OPS.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    let covered: Vec<&str> = core.iter().copied().filter(|c| lookup(c).is_some()).collect();
    let mut s = String::new();
    s.push_str("# Supported ATen ops\n\n");
    s.push_str("Generated by `kiln ops --markdown` from the frontend's op table (`frontend/src/lower/mod.rs`);\n");
    s.push_str("a test fails when this file and the code disagree. Ops are matched by base name: every\n");
    s.push_str("overload (`add.Tensor`, `add.Scalar`, ...) and the in-place form (`add_`) of a listed op are\n");
    s.push_str("accepted; a use kiln cannot lower (e.g. training-mode batch norm) is reported as unsupported\n");
    s.push_str("with its reason.\n\n");
    s.push_str(&format!(
        "**{} ATen ops supported; {} of the {} ops of PyTorch's core ATen opset** (`frontend/data/core_aten_ops.txt`).\n\n",
        OPS.len(),
        covered.len(),
        core.len()
    ));
    s.push_str("| ATen op | core ATen | lowers to |\n|---|---|---|\n");
    for e in OPS {
        let is_core = if core.contains(&e.name) { "yes" } else { "" };
        s.push_str(&format!("| `{}` | {} | {} |\n", e.name, is_core, e.doc));
    }
    s.push_str("\n## Core ATen ops not yet supported\n\n");
    let missing: Vec<String> = core.iter().filter(|c| lookup(c).is_none()).map(|c| format!("`{c}`")).collect();
    s.push_str(&missing.join(", "));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_table_is_sorted_and_unique() {
        for w in OPS.windows(2) {
            assert!(w[0].name < w[1].name, "{} must sort before {}", w[0].name, w[1].name);
        }
    }

    #[test]
    fn base_names() {
        assert_eq!(aten_base_name("torch.ops.aten.add.Tensor"), Some(("add", false)));
        assert_eq!(aten_base_name("torch.ops.aten.relu_.default"), Some(("relu", true)));
        assert_eq!(aten_base_name("torch.ops.aten._softmax.default"), Some(("_softmax", false)));
        assert_eq!(aten_base_name("torch.ops.aten.__and__.Tensor"), Some(("__and__", false)));
        assert_eq!(aten_base_name("_operator.mul"), None);
    }
}
