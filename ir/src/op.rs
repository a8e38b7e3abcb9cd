//! The closed set of IR operations and their typed attributes.
//!
//! Exact semantics of each op are specified in the crate documentation (`lib.rs`); shape and
//! dtype rules are in [`crate::infer`].

use crate::dim::Dim;
use crate::dtype::DType;

/// Elementwise functions of one tensor. The result has the input's shape and dtype (`isnan`
/// gives `bool`); the dtype rules are in [`crate::infer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnaryOp {
    Neg,
    Abs,
    Exp,
    Log,
    Log1p,
    Expm1,
    Sqrt,
    Rsqrt,
    Reciprocal,
    Tanh,
    Sigmoid,
    Erf,
    Sin,
    Cos,
    Relu,
    Floor,
    Ceil,
    Round,
    Sign,
    Not,
    IsNan,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 21] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Log1p,
        UnaryOp::Expm1,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Reciprocal,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Erf,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Relu,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Round,
        UnaryOp::Sign,
        UnaryOp::Not,
        UnaryOp::IsNan,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Log1p => "log1p",
            UnaryOp::Expm1 => "expm1",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Reciprocal => "reciprocal",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Erf => "erf",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Relu => "relu",
            UnaryOp::Floor => "floor",
            UnaryOp::Ceil => "ceil",
            UnaryOp::Round => "round",
            UnaryOp::Sign => "sign",
            UnaryOp::Not => "not",
            UnaryOp::IsNan => "isnan",
        }
    }

    /// Transcendental and other float-only functions; they reject integer inputs.
    pub fn float_only(self) -> bool {
        use UnaryOp::*;
        matches!(self, Exp | Log | Log1p | Expm1 | Sqrt | Rsqrt | Reciprocal | Tanh | Sigmoid | Erf | Sin | Cos)
    }
}

/// Elementwise functions of two tensors, with broadcasting. Both inputs have the same dtype
/// (the frontend inserts casts for PyTorch's type promotion).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// Division rounding toward negative infinity (PyTorch `floor_divide`).
    FloorDiv,
    /// Remainder with the sign of the divisor (PyTorch `remainder`).
    Rem,
    Pow,
    Max,
    Min,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Xor,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 18] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::FloorDiv,
        BinaryOp::Rem,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::And,
        BinaryOp::Or,
        BinaryOp::Xor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::FloorDiv => "floordiv",
            BinaryOp::Rem => "rem",
            BinaryOp::Pow => "pow",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Xor => "xor",
        }
    }

    /// Comparisons produce `bool`.
    pub fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Eq | Ne | Lt | Le | Gt | Ge)
    }

    /// Logical ops take and produce `bool` (or bitwise on integers).
    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor)
    }
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
}

impl ReduceKind {
    pub const ALL: [ReduceKind; 5] =
        [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max, ReduceKind::Min, ReduceKind::Prod];

    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "reduce_sum",
            ReduceKind::Mean => "reduce_mean",
            ReduceKind::Max => "reduce_max",
            ReduceKind::Min => "reduce_min",
            ReduceKind::Prod => "reduce_prod",
        }
    }
}

/// Index-of-extremum reductions over one axis; the result is `i64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArgKind {
    ArgMax,
    ArgMin,
}

impl ArgKind {
    pub fn name(self) -> &'static str {
        match self {
            ArgKind::ArgMax => "argmax",
            ArgKind::ArgMin => "argmin",
        }
    }
}

/// Attributes of [`Op::Conv`]. Every list has one entry per spatial dim (1 to 3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvAttrs {
    pub stride: Vec<i64>,
    pub padding: Vec<i64>,
    pub dilation: Vec<i64>,
    pub groups: i64,
    pub transposed: bool,
    /// Extra size added at the end of each spatial dim of a transposed convolution's output.
    pub output_padding: Vec<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Max,
    Avg,
}

impl PoolKind {
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Max => "max",
            PoolKind::Avg => "avg",
        }
    }
}

/// Attributes of [`Op::Pool`]. Every list has one entry per spatial dim (1 to 3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolAttrs {
    pub kind: PoolKind,
    pub kernel: Vec<i64>,
    pub stride: Vec<i64>,
    pub padding: Vec<i64>,
    pub dilation: Vec<i64>,
    pub ceil_mode: bool,
    /// Avg only: whether padded positions count in the divisor.
    pub count_include_pad: bool,
}

/// How [`Op::Attention`] applies its scale to the scores `q @ kᵀ`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttentionScale {
    /// `scores * c`.
    Mul(f64),
    /// `scores / c` (models that divide by `sqrt(d)` rather than multiply by its inverse).
    Div(f64),
}

/// One mask of [`Op::Attention`], applied to the scaled scores in order; each takes the next
/// operand after `v`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttentionMask {
    /// `scores + mask` (a float mask of the scores' dtype).
    Add,
    /// `where(mask, scores, fill)`: a bool mask that keeps the scores where true.
    Keep(f64),
    /// `where(mask, fill, scores)`: a bool mask that replaces the scores where true.
    Fill(f64),
}

/// Attributes of [`Op::Attention`].
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionAttrs {
    pub scale: AttentionScale,
    pub masks: Vec<AttentionMask>,
}

/// One IR operation. Inputs are the node's operands, in the order given in the crate docs.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `(x) -> y`, elementwise.
    Unary(UnaryOp),
    /// `(a, b) -> y`, elementwise with broadcasting.
    Binary(BinaryOp),
    /// `(cond: bool, a, b) -> y`, elementwise select with broadcasting.
    Where,
    /// `(x) -> y`, elementwise conversion to another dtype.
    Cast(DType),
    /// `(x) -> y`, reduction over `axes` (sorted, unique).
    Reduce { kind: ReduceKind, axes: Vec<usize>, keepdim: bool },
    /// `(x) -> i64 indices`, over one axis.
    ArgReduce { kind: ArgKind, axis: usize, keepdim: bool },
    /// `(a[..., m, k], b[..., k, n]) -> [..., m, n]`, batch dims broadcast.
    MatMul,
    /// `(input[n, c, *s], weight) -> output`.
    Conv(ConvAttrs),
    /// `(q[..., m, d], k[..., n, d], v[..., n, e], masks...) -> [..., m, e]`:
    /// `softmax(masks(scale(q @ kᵀ))) @ v` over the last axis; batch dims broadcast. Not made
    /// by the frontend: the e-graph optimizer recognizes it (see the crate docs).
    Attention(AttentionAttrs),
    /// `(input[n, c, *s]) -> output`.
    Pool(PoolAttrs),
    /// `(input[n, c, *s]) -> [n, c, *output_size]`, PyTorch's adaptive pooling windows.
    AdaptivePool { kind: PoolKind, output_size: Vec<i64> },
    /// `(x) -> y` with the same elements in row-major order and a new shape.
    Reshape { shape: Vec<Dim> },
    /// `(x) -> y` with `y.shape[i] = x.shape[perm[i]]`.
    Permute { perm: Vec<usize> },
    /// `(x) -> y`, broadcast to `shape` (same rank; size-1 dims grow).
    Expand { shape: Vec<Dim> },
    /// `(x) -> y`, elements `start, start+step, ...` (< end) along `axis`; `0 <= start <= end <= dim`.
    Slice { axis: usize, start: Dim, end: Dim, step: i64 },
    /// `(x0, x1, ...) -> y`, joined along `axis`.
    Concat { axis: usize },
    /// `(x) -> y`, constant padding: `pads[i] = (before, after)` for every axis; negative crops.
    Pad { pads: Vec<(i64, i64)>, value: f64 },
    /// `(data, indices: integer) -> data[:axis] ++ indices.shape ++ data[axis+1:]` (index_select,
    /// embedding, tensor indexing). Negative indices count from the end.
    Gather { axis: usize },
    /// `() -> y[shape]`: `start + step * i` along `axis`, broadcast along the others.
    Iota { shape: Vec<Dim>, axis: usize, start: f64, step: f64, dtype: DType },
    /// `() -> y[shape]` filled with `value`.
    Full { shape: Vec<Dim>, value: f64, dtype: DType },
    /// `(x) -> y`, inclusive prefix sum along `axis`.
    CumSum { axis: usize },
    /// `() -> y[]` of `dtype`: the value of a (possibly symbolic) size, as a rank-0 tensor.
    DimValue { dim: Dim, dtype: DType },
}

impl Op {
    /// The op's name in the text form and in histograms.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Where => "where",
            Op::Cast(_) => "cast",
            Op::Reduce { kind, .. } => kind.name(),
            Op::ArgReduce { kind, .. } => kind.name(),
            Op::MatMul => "matmul",
            Op::Conv(_) => "conv",
            Op::Attention(_) => "attention",
            Op::Pool(_) => "pool",
            Op::AdaptivePool { .. } => "adaptive_pool",
            Op::Reshape { .. } => "reshape",
            Op::Permute { .. } => "permute",
            Op::Expand { .. } => "expand",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::Pad { .. } => "pad",
            Op::Gather { .. } => "gather",
            Op::Iota { .. } => "iota",
            Op::Full { .. } => "full",
            Op::CumSum { .. } => "cumsum",
            Op::DimValue { .. } => "dim_value",
        }
    }
}
