//! Elementwise ATen ops: arithmetic with PyTorch's type promotion, comparisons, logic,
//! activations (decomposed into IR elementwise ops), `where` and `masked_fill`.

use super::{arg_or_pos, invalid, unsupported, LResult, Lowered, Lowerer};
use crate::export::{Arg, ExportNode};
use kiln_ir::{BinaryOp, DType, Op, UnaryOp, ValueId};

fn category(d: DType) -> u8 {
    if d.is_bool() {
        0
    } else if d.is_int() {
        1
    } else {
        2
    }
}

/// PyTorch's promotion of two tensor dtypes.
pub(crate) fn promote(a: DType, b: DType) -> DType {
    if a == b {
        return a;
    }
    let (ca, cb) = (category(a), category(b));
    if ca != cb {
        return if ca > cb { a } else { b };
    }
    match (a, b) {
        (DType::F16, DType::BF16) | (DType::BF16, DType::F16) => DType::F32,
        (DType::U8, DType::I8) | (DType::I8, DType::U8) => DType::I16,
        _ if a.size_bytes() >= b.size_bytes() => a,
        _ => b,
    }
}

/// An operand: a tensor, a Python scalar (with its category: 0 bool, 1 int, 2 float), or a
/// symbolic integer size.
enum Operand {
    Tensor(ValueId),
    Scalar(f64, u8),
    Size(kiln_ir::Dim),
    SizeFloat(super::SymFloat),
}

fn scalar_category(o: &Operand) -> u8 {
    match o {
        Operand::Scalar(_, c) => *c,
        Operand::Size(_) => 1,
        Operand::SizeFloat(_) => 2,
        Operand::Tensor(_) => 2,
    }
}

fn operand(l: &Lowerer, n: &ExportNode, names: &[&str], i: usize) -> LResult<Operand> {
    match arg_or_pos(n, names, i) {
        Some(Arg::Tensor(t)) => Ok(Operand::Tensor(l.value(t)?)),
        Some(Arg::Float(v)) => Ok(Operand::Scalar(*v, 2)),
        Some(Arg::Int(v)) => Ok(Operand::Scalar(*v as f64, 1)),
        Some(Arg::Bool(b)) => Ok(Operand::Scalar(*b as i64 as f64, 0)),
        Some(Arg::SymFloat(s)) => {
            let f = l.sym_float(s)?;
            Ok(if f.coeff == 0.0 { Operand::Scalar(f.offset, 2) } else { Operand::SizeFloat(f) })
        }
        Some(Arg::SymInt(s)) => {
            let d = l.sym(s)?;
            Ok(match d.as_const() {
                Some(v) => Operand::Scalar(v as f64, 1),
                None => Operand::Size(d),
            })
        }
        other => invalid(format!("operand `{}` should be a tensor or a number, got {other:?}", names[0])),
    }
}

impl Lowerer<'_> {
    fn materialize(&mut self, o: &Operand, dtype: DType, n: &ExportNode) -> LResult<ValueId> {
        match o {
            Operand::Tensor(v) => self.cast(*v, dtype, n),
            Operand::Scalar(v, _) => self.scalar(*v, dtype, n),
            Operand::Size(d) => self.dim_scalar(d, dtype, n),
            // Python computes the float in double precision; it is rounded to `dtype` once.
            Operand::SizeFloat(f) => {
                let d = self.dim_scalar(&f.dim, DType::F64, n)?;
                let scaled = if f.coeff != 1.0 { self.binary_scalar(BinaryOp::Mul, d, f.coeff, n)? } else { d };
                let v = if f.offset != 0.0 { self.binary_scalar(BinaryOp::Add, scaled, f.offset, n)? } else { scaled };
                self.cast(v, dtype, n)
            }
        }
    }

    /// The dtype PyTorch computes `a op b` in, from the operands alone.
    fn promoted(&self, a: &Operand, b: &Operand) -> DType {
        match (a, b) {
            (Operand::Tensor(x), Operand::Tensor(y)) => {
                let (dx, dy) = (self.dtype(*x), self.dtype(*y));
                // Rank-0 tensors do not widen dimensioned ones of the same category.
                let (zx, zy) = (self.rank(*x) == 0, self.rank(*y) == 0);
                match (category(dx) == category(dy), zx, zy) {
                    (true, true, false) => dy,
                    (true, false, true) => dx,
                    _ => promote(dx, dy),
                }
            }
            (Operand::Tensor(x), s) | (s, Operand::Tensor(x)) => {
                let dx = self.dtype(*x);
                match scalar_category(s) {
                    c if c <= category(dx) => dx,
                    2 => DType::F32,
                    _ => DType::I64,
                }
            }
            (a, b) => match scalar_category(a).max(scalar_category(b)) {
                2 => DType::F32,
                1 => DType::I64,
                _ => DType::Bool,
            },
        }
    }

    fn compute_dtype(&self, n: &ExportNode, a: &Operand, b: &Operand) -> DType {
        self.out_dtype(n, 0).filter(|d| !d.is_bool() || self.promoted(a, b).is_bool()).unwrap_or_else(|| self.promoted(a, b))
    }

    fn two_operands(&mut self, n: &ExportNode) -> LResult<(Operand, Operand)> {
        Ok((operand(self, n, &["self", "input", "a"], 0)?, operand(self, n, &["other", "b", "exponent"], 1)?))
    }
}

fn binary_op(name: &str) -> Option<BinaryOp> {
    Some(match name {
        "mul" => BinaryOp::Mul,
        "maximum" => BinaryOp::Max,
        "minimum" => BinaryOp::Min,
        "remainder" => BinaryOp::Rem,
        "bitwise_and" | "__and__" => BinaryOp::And,
        "bitwise_or" | "__or__" => BinaryOp::Or,
        "bitwise_xor" | "__xor__" => BinaryOp::Xor,
        _ => return None,
    })
}

fn base(n: &ExportNode) -> &str {
    super::aten_base_name(&n.target).map(|(b, _)| b).unwrap_or("")
}

/// `mul`, `maximum`, `minimum`, `remainder`, bitwise ops: computed in the result dtype.
pub(crate) fn binary(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let op = binary_op(base(n)).ok_or_else(|| super::LowerError::Invalid("not a binary op".into()))?;
    let (a, b) = l.two_operands(n)?;
    let dt = l.compute_dtype(n, &a, &b);
    let (x, y) = (l.materialize(&a, dt, n)?, l.materialize(&b, dt, n)?);
    Ok(Lowered::one(l.binary(op, x, y, n)?))
}

fn add_sub(l: &mut Lowerer, n: &ExportNode, op: BinaryOp, reverse: bool) -> LResult<Lowered> {
    let (a, b) = l.two_operands(n)?;
    let dt = l.compute_dtype(n, &a, &b);
    let (mut x, mut y) = (l.materialize(&a, dt, n)?, l.materialize(&b, dt, n)?);
    if reverse {
        std::mem::swap(&mut x, &mut y);
    }
    let alpha = l.float_arg(n, &["alpha"], usize::MAX, Some(1.0))?;
    // `sub(a, b, alpha)` is `a - alpha*b`; `rsub(a, b, alpha)` is `b - alpha*a`.
    let scaled = if reverse { &mut x } else { &mut y };
    if alpha != 1.0 {
        *scaled = l.binary_scalar(BinaryOp::Mul, *scaled, alpha, n)?;
    }
    Ok(Lowered::one(l.binary(op, x, y, n)?))
}

pub(crate) fn add(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    add_sub(l, n, BinaryOp::Add, false)
}

pub(crate) fn sub(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    add_sub(l, n, BinaryOp::Sub, false)
}

pub(crate) fn rsub(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    add_sub(l, n, BinaryOp::Sub, true)
}

pub(crate) fn div(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let (a, b) = l.two_operands(n)?;
    let mode = match arg_or_pos(n, &["rounding_mode"], usize::MAX) {
        Some(Arg::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let out = l.out_dtype(n, 0);
    match mode.as_deref() {
        None => {
            let dt = out.unwrap_or(DType::F32);
            let (x, y) = (l.materialize(&a, dt, n)?, l.materialize(&b, dt, n)?);
            Ok(Lowered::one(l.binary(BinaryOp::Div, x, y, n)?))
        }
        Some(m @ ("trunc" | "floor")) => {
            let dt = out.unwrap_or_else(|| l.promoted(&a, &b));
            let (x, y) = (l.materialize(&a, dt, n)?, l.materialize(&b, dt, n)?);
            let v = match (m, dt.is_float()) {
                ("floor", _) => l.binary(BinaryOp::FloorDiv, x, y, n)?,
                ("trunc", false) => l.binary(BinaryOp::Div, x, y, n)?,
                _ => {
                    let q = l.binary(BinaryOp::Div, x, y, n)?;
                    trunc_value(l, q, n)?
                }
            };
            Ok(Lowered::one(v))
        }
        Some(other) => invalid(format!("unknown rounding_mode `{other}`")),
    }
}

pub(crate) fn floor_divide(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let (a, b) = l.two_operands(n)?;
    let dt = l.compute_dtype(n, &a, &b);
    let (x, y) = (l.materialize(&a, dt, n)?, l.materialize(&b, dt, n)?);
    Ok(Lowered::one(l.binary(BinaryOp::FloorDiv, x, y, n)?))
}

pub(crate) fn pow(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let (a, b) = l.two_operands(n)?;
    let dt = l.compute_dtype(n, &a, &b);
    let x = l.materialize(&a, dt, n)?;
    // Small integer exponents as products: exact and what backends want anyway.
    if let Operand::Scalar(e, _) = b {
        if e == 2.0 {
            return Ok(Lowered::one(l.binary(BinaryOp::Mul, x, x, n)?));
        }
        if e == 1.0 {
            return Ok(Lowered::one(x));
        }
    }
    let y = l.materialize(&b, dt, n)?;
    Ok(Lowered::one(l.binary(BinaryOp::Pow, x, y, n)?))
}

pub(crate) fn square(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let dt = l.out_dtype(n, 0).unwrap_or(l.dtype(x));
    let x = l.cast(x, dt, n)?;
    Ok(Lowered::one(l.binary(BinaryOp::Mul, x, x, n)?))
}

pub(crate) fn compare(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let op = match base(n) {
        "eq" => BinaryOp::Eq,
        "ne" => BinaryOp::Ne,
        "lt" => BinaryOp::Lt,
        "le" => BinaryOp::Le,
        "gt" => BinaryOp::Gt,
        "ge" => BinaryOp::Ge,
        other => return invalid(format!("`{other}` is not a comparison")),
    };
    let (a, b) = l.two_operands(n)?;
    let dt = l.promoted(&a, &b);
    let (x, y) = (l.materialize(&a, dt, n)?, l.materialize(&b, dt, n)?);
    Ok(Lowered::one(l.binary(op, x, y, n)?))
}

pub(crate) fn logical(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let op = match base(n) {
        "logical_and" => BinaryOp::And,
        "logical_or" => BinaryOp::Or,
        _ => BinaryOp::Xor,
    };
    let (a, b) = l.two_operands(n)?;
    let (x, y) = (l.materialize(&a, DType::Bool, n)?, l.materialize(&b, DType::Bool, n)?);
    Ok(Lowered::one(l.binary(op, x, y, n)?))
}

pub(crate) fn logical_not(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let x = l.cast(x, DType::Bool, n)?;
    Ok(Lowered::one(l.unary(UnaryOp::Not, x, n)?))
}

pub(crate) fn self_tensor(l: &Lowerer, n: &ExportNode) -> LResult<ValueId> {
    l.tensor_arg(n, &["self", "input", "x"], 0)
}

/// The input cast to the recorded result dtype (ints become floats for `exp` and friends).
fn self_in_out_dtype(l: &mut Lowerer, n: &ExportNode) -> LResult<ValueId> {
    let x = self_tensor(l, n)?;
    match l.out_dtype(n, 0) {
        Some(dt) if dt != DType::Bool => l.cast(x, dt, n),
        _ => Ok(x),
    }
}

pub(crate) fn unary(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let op = match base(n) {
        "abs" => UnaryOp::Abs,
        "ceil" => UnaryOp::Ceil,
        "cos" => UnaryOp::Cos,
        "erf" => UnaryOp::Erf,
        "exp" => UnaryOp::Exp,
        "expm1" => UnaryOp::Expm1,
        "floor" => UnaryOp::Floor,
        "isnan" => UnaryOp::IsNan,
        "log" => UnaryOp::Log,
        "log1p" => UnaryOp::Log1p,
        "neg" => UnaryOp::Neg,
        "reciprocal" => UnaryOp::Reciprocal,
        "relu" => UnaryOp::Relu,
        "round" => UnaryOp::Round,
        "rsqrt" => UnaryOp::Rsqrt,
        "sigmoid" => UnaryOp::Sigmoid,
        "sign" => UnaryOp::Sign,
        "sin" => UnaryOp::Sin,
        "sqrt" => UnaryOp::Sqrt,
        "tanh" => UnaryOp::Tanh,
        "bitwise_not" => UnaryOp::Not,
        other => return invalid(format!("`{other}` is not a unary op")),
    };
    if op == UnaryOp::Round && l.int_arg(n, &["decimals"], usize::MAX, Some(0))? != 0 {
        return unsupported("round with decimals");
    }
    let x = if op == UnaryOp::IsNan { self_tensor(l, n)? } else { self_in_out_dtype(l, n)? };
    if (op == UnaryOp::Floor || op == UnaryOp::Ceil || op == UnaryOp::Round) && !l.dtype(x).is_float() {
        return Ok(Lowered::one(x));
    }
    Ok(Lowered::one(l.unary(op, x, n)?))
}

fn trunc_value(l: &mut Lowerer, x: ValueId, n: &ExportNode) -> LResult<ValueId> {
    let zero = l.scalar(0.0, l.dtype(x), n)?;
    let neg = l.binary(BinaryOp::Lt, x, zero, n)?;
    let up = l.unary(UnaryOp::Ceil, x, n)?;
    let down = l.unary(UnaryOp::Floor, x, n)?;
    l.node(Op::Where, vec![neg, up, down], n)
}

pub(crate) fn trunc(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    if !l.dtype(x).is_float() {
        return Ok(Lowered::one(x));
    }
    Ok(Lowered::one(trunc_value(l, x, n)?))
}

/// `clamp(x, lo, hi)` as `min(max(x, lo), hi)` with scalar or tensor bounds.
fn clamp_value(l: &mut Lowerer, x: ValueId, lo: Option<Operand>, hi: Option<Operand>, n: &ExportNode) -> LResult<ValueId> {
    let dt = l.dtype(x);
    let mut y = x;
    if let Some(lo) = lo {
        let b = l.materialize(&lo, dt, n)?;
        y = l.binary(BinaryOp::Max, y, b, n)?;
    }
    if let Some(hi) = hi {
        let b = l.materialize(&hi, dt, n)?;
        y = l.binary(BinaryOp::Min, y, b, n)?;
    }
    Ok(y)
}

fn opt_operand(l: &Lowerer, n: &ExportNode, names: &[&str], i: usize) -> LResult<Option<Operand>> {
    match arg_or_pos(n, names, i) {
        None => Ok(None),
        Some(_) => operand(l, n, names, i).map(Some),
    }
}

pub(crate) fn clamp(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_in_out_dtype(l, n)?;
    let (lo, hi) = match base(n) {
        "clamp_min" => (opt_operand(l, n, &["min"], 1)?, None),
        "clamp_max" => (None, opt_operand(l, n, &["max"], 1)?),
        _ => (opt_operand(l, n, &["min"], 1)?, opt_operand(l, n, &["max"], 2)?),
    };
    Ok(Lowered::one(clamp_value(l, x, lo, hi, n)?))
}

pub(crate) fn hardtanh(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let (lo, hi) = if base(n) == "relu6" {
        (0.0, 6.0)
    } else {
        (l.float_arg(n, &["min_val"], 1, Some(-1.0))?, l.float_arg(n, &["max_val"], 2, Some(1.0))?)
    };
    Ok(Lowered::one(clamp_value(l, x, Some(Operand::Scalar(lo, 2)), Some(Operand::Scalar(hi, 2)), n)?))
}

/// `clamp(x + 3, 0, 6) / 6`.
fn hardsigmoid_value(l: &mut Lowerer, x: ValueId, n: &ExportNode) -> LResult<ValueId> {
    let t = l.binary_scalar(BinaryOp::Add, x, 3.0, n)?;
    let t = clamp_value(l, t, Some(Operand::Scalar(0.0, 2)), Some(Operand::Scalar(6.0, 2)), n)?;
    l.binary_scalar(BinaryOp::Div, t, 6.0, n)
}

pub(crate) fn hardsigmoid(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    Ok(Lowered::one(hardsigmoid_value(l, x, n)?))
}

/// `x * clamp(x + 3, 0, 6) / 6`, in PyTorch's order of operations.
pub(crate) fn hardswish(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let t = l.binary_scalar(BinaryOp::Add, x, 3.0, n)?;
    let t = clamp_value(l, t, Some(Operand::Scalar(0.0, 2)), Some(Operand::Scalar(6.0, 2)), n)?;
    let t = l.binary(BinaryOp::Mul, x, t, n)?;
    Ok(Lowered::one(l.binary_scalar(BinaryOp::Div, t, 6.0, n)?))
}

pub(crate) fn silu(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let s = l.unary(UnaryOp::Sigmoid, x, n)?;
    Ok(Lowered::one(l.binary(BinaryOp::Mul, x, s, n)?))
}

/// `gelu`: `0.5*x*(1+erf(x/sqrt 2))`, or with `approximate='tanh'`
/// `0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3)))`.
pub(crate) fn gelu(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let approx = match arg_or_pos(n, &["approximate"], 1) {
        Some(Arg::Str(s)) => s.clone(),
        _ => "none".to_string(),
    };
    let inner = match approx.as_str() {
        "none" => {
            let t = l.binary_scalar(BinaryOp::Mul, x, std::f64::consts::FRAC_1_SQRT_2, n)?;
            l.unary(UnaryOp::Erf, t, n)?
        }
        "tanh" => {
            let x2 = l.binary(BinaryOp::Mul, x, x, n)?;
            let x3 = l.binary(BinaryOp::Mul, x2, x, n)?;
            let c = l.binary_scalar(BinaryOp::Mul, x3, 0.044715, n)?;
            let s = l.binary(BinaryOp::Add, x, c, n)?;
            let k = (2.0 / std::f64::consts::PI).sqrt();
            let t = l.binary_scalar(BinaryOp::Mul, s, k, n)?;
            l.unary(UnaryOp::Tanh, t, n)?
        }
        other => return invalid(format!("unknown gelu approximation `{other}`")),
    };
    let one_plus = l.binary_scalar(BinaryOp::Add, inner, 1.0, n)?;
    let half_x = l.binary_scalar(BinaryOp::Mul, x, 0.5, n)?;
    Ok(Lowered::one(l.binary(BinaryOp::Mul, half_x, one_plus, n)?))
}

pub(crate) fn leaky_relu(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let slope = l.float_arg(n, &["negative_slope"], 1, Some(0.01))?;
    let zero = l.scalar(0.0, l.dtype(x), n)?;
    let pos = l.binary(BinaryOp::Gt, x, zero, n)?;
    let neg = l.binary_scalar(BinaryOp::Mul, x, slope, n)?;
    Ok(Lowered::one(l.node(Op::Where, vec![pos, x, neg], n)?))
}

/// `elu(x, alpha, scale, input_scale)`: `scale * (x > 0 ? x : alpha * (exp(x * input_scale) - 1))`.
pub(crate) fn elu(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let alpha = l.float_arg(n, &["alpha"], 1, Some(1.0))?;
    let scale = l.float_arg(n, &["scale"], 2, Some(1.0))?;
    let input_scale = l.float_arg(n, &["input_scale"], 3, Some(1.0))?;
    let zero = l.scalar(0.0, l.dtype(x), n)?;
    let pos = l.binary(BinaryOp::Gt, x, zero, n)?;
    let xs = if input_scale != 1.0 { l.binary_scalar(BinaryOp::Mul, x, input_scale, n)? } else { x };
    let e = l.unary(UnaryOp::Expm1, xs, n)?;
    let neg = l.binary_scalar(BinaryOp::Mul, e, alpha, n)?;
    let y = l.node(Op::Where, vec![pos, x, neg], n)?;
    let y = if scale != 1.0 { l.binary_scalar(BinaryOp::Mul, y, scale, n)? } else { y };
    Ok(Lowered::one(y))
}

fn softplus_value(l: &mut Lowerer, x: ValueId, beta: f64, threshold: f64, n: &ExportNode) -> LResult<ValueId> {
    let bx = if beta != 1.0 { l.binary_scalar(BinaryOp::Mul, x, beta, n)? } else { x };
    let e = l.unary(UnaryOp::Exp, bx, n)?;
    let lp = l.unary(UnaryOp::Log1p, e, n)?;
    let soft = if beta != 1.0 { l.binary_scalar(BinaryOp::Div, lp, beta, n)? } else { lp };
    let th = l.scalar(threshold, l.dtype(x), n)?;
    let big = l.binary(BinaryOp::Gt, bx, th, n)?;
    l.node(Op::Where, vec![big, x, soft], n)
}

pub(crate) fn softplus(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let beta = l.float_arg(n, &["beta"], 1, Some(1.0))?;
    let threshold = l.float_arg(n, &["threshold"], 2, Some(20.0))?;
    Ok(Lowered::one(softplus_value(l, x, beta, threshold, n)?))
}

pub(crate) fn mish(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let sp = softplus_value(l, x, 1.0, 20.0, n)?;
    let t = l.unary(UnaryOp::Tanh, sp, n)?;
    Ok(Lowered::one(l.binary(BinaryOp::Mul, x, t, n)?))
}

pub(crate) fn where_(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let cond = l.tensor_arg(n, &["condition"], 0)?;
    let cond = l.cast(cond, DType::Bool, n)?;
    let a = operand(l, n, &["self"], 1)?;
    let b = operand(l, n, &["other"], 2)?;
    let dt = l.out_dtype(n, 0).unwrap_or_else(|| l.promoted(&a, &b));
    let (x, y) = (l.materialize(&a, dt, n)?, l.materialize(&b, dt, n)?);
    Ok(Lowered::one(l.node(Op::Where, vec![cond, x, y], n)?))
}

pub(crate) fn masked_fill(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let mask = l.tensor_arg(n, &["mask"], 1)?;
    let mask = l.cast(mask, DType::Bool, n)?;
    let v = operand(l, n, &["value"], 2)?;
    let fill = l.materialize(&v, l.dtype(x), n)?;
    Ok(Lowered::one(l.node(Op::Where, vec![mask, fill, x], n)?))
}

/// `fmod(a, b)`: remainder with the sign of the dividend (C `fmod`), from the divisor-signed
/// `rem`: where they disagree in sign and the remainder is non-zero, subtract `b`.
pub(crate) fn fmod(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let (a, b) = l.two_operands(n)?;
    let dt = l.compute_dtype(n, &a, &b);
    let (x, y) = (l.materialize(&a, dt, n)?, l.materialize(&b, dt, n)?);
    let r = l.binary(BinaryOp::Rem, x, y, n)?;
    let zero = l.scalar(0.0, dt, n)?;
    let r_nonzero = l.binary(BinaryOp::Ne, r, zero, n)?;
    let r_neg = l.binary(BinaryOp::Lt, r, zero, n)?;
    let x_neg = l.binary(BinaryOp::Lt, x, zero, n)?;
    let signs_differ = l.binary(BinaryOp::Xor, r_neg, x_neg, n)?;
    let fix = l.binary(BinaryOp::And, r_nonzero, signs_differ, n)?;
    let shifted = l.binary(BinaryOp::Sub, r, y, n)?;
    Ok(Lowered::one(l.node(Op::Where, vec![fix, shifted, r], n)?))
}
