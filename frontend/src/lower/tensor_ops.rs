//! Tensor creation, dtype conversion, no-ops (aliases, clones, dropout in inference, export
//! assertions) and the symbolic-size bookkeeping (`sym_size`, Python integer arithmetic).

use super::elementwise::self_tensor;
use super::nn::lower_triangle;
use super::{arg_or_pos, invalid, pos, unsupported, LResult, Lowered, Lowerer, SymFloat};
use crate::export::{Arg, ExportNode};
use kiln_ir::{DType, Dim, Op, UnaryOp};

fn base(n: &ExportNode) -> &str {
    super::aten_base_name(&n.target).map(|(b, _)| b).unwrap_or("")
}

pub(crate) fn nothing(_: &mut Lowerer, _: &ExportNode) -> LResult<Lowered> {
    Ok(Lowered::Nothing)
}

pub(crate) fn identity(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    Ok(Lowered::one(self_tensor(l, n)?))
}

/// Dropout at inference is the identity (`native_dropout` also returns an all-true mask).
pub(crate) fn dropout(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    if base(n) != "native_dropout" && l.bool_arg(n, &["train"], 2, false)? {
        let p = l.float_arg(n, &["p"], 1, Some(0.0))?;
        if p > 0.0 {
            return unsupported("dropout in training mode (export the model after model.eval())");
        }
    }
    if base(n) == "native_dropout" {
        if l.bool_arg(n, &["train"], 2, false)? {
            return unsupported("dropout in training mode (export the model after model.eval())");
        }
        let shape = l.shape(x);
        let mask = l.node(Op::Full { shape, value: 1.0, dtype: DType::Bool }, vec![], n)?;
        return Ok(Lowered::Values(vec![Some(x), Some(mask)]));
    }
    Ok(Lowered::one(x))
}

/// `_to_copy`, `to.*`: a cast to the recorded result dtype (device and layout are ignored).
pub(crate) fn to_copy(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let dt = match l.out_dtype(n, 0) {
        Some(d) => d,
        None => l.dtype_arg(n, &["dtype"])?.unwrap_or(l.dtype(x)),
    };
    Ok(Lowered::one(l.cast(x, dt, n)?))
}

pub(crate) fn type_as(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let other = l.tensor_arg(n, &["other"], 1)?;
    let dt = l.dtype(other);
    Ok(Lowered::one(l.cast(x, dt, n)?))
}

fn number(l: &Lowerer, a: Option<&Arg>) -> LResult<Option<(Dim, bool)>> {
    Ok(match a {
        None => None,
        Some(Arg::Int(v)) => Some((Dim::constant(*v), false)),
        Some(Arg::SymInt(s)) => Some((l.sym(s)?, false)),
        Some(Arg::Float(f)) if f.fract() == 0.0 && f.abs() < 1e15 => Some((Dim::constant(*f as i64), true)),
        Some(Arg::Float(_)) => return unsupported("arange with fractional bounds"),
        Some(other) => return invalid(format!("arange bound should be a number, got {other:?}")),
    })
}

/// `arange(end)`, `arange(start, end)`, `arange(start, end, step)`.
pub(crate) fn arange(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let (start, end, step) = if arg_or_pos(n, &["start"], usize::MAX).is_some() {
        (number(l, arg_or_pos(n, &["start"], 0))?, number(l, arg_or_pos(n, &["end"], 1))?, number(l, arg_or_pos(n, &["step"], 2))?)
    } else {
        (None, number(l, arg_or_pos(n, &["end"], 0))?, None)
    };
    let Some((end, end_float)) = end else { return invalid("arange without an end") };
    let (start, start_float) = start.unwrap_or((Dim::constant(0), false));
    let (step, step_float) = step.unwrap_or((Dim::constant(1), false));
    let step_v = step.as_const().ok_or(super::LowerError::Unsupported("symbolic arange step".into()))?;
    if step_v == 0 {
        return invalid("arange step is zero");
    }
    let span = end.sub(&start);
    let len = match (span.as_const(), step_v) {
        (Some(s), st) => Dim::constant(((s + st - st.signum()) / st).max(0)),
        (None, 1) => span,
        _ => return unsupported("arange over a symbolic range with a step"),
    };
    let any_float = start_float || end_float || step_float;
    let dt = match l.out_dtype(n, 0) {
        Some(d) => d,
        None => l.dtype_arg(n, &["dtype"])?.unwrap_or(if any_float { DType::F32 } else { DType::I64 }),
    };
    let start_v = start.as_const().ok_or(super::LowerError::Unsupported("symbolic arange start".into()))?;
    Ok(Lowered::one(l.node(Op::Iota { shape: vec![len], axis: 0, start: start_v as f64, step: step_v as f64, dtype: dt }, vec![], n)?))
}

fn fill_value(l: &Lowerer, n: &ExportNode, names: &[&str], i: usize) -> LResult<f64> {
    match base(n) {
        "zeros" | "zeros_like" | "new_zeros" | "empty" | "empty_like" | "new_empty" => Ok(0.0),
        "ones" | "ones_like" | "new_ones" => Ok(1.0),
        _ => l.float_arg(n, names, i, None),
    }
}

fn full_dtype(l: &Lowerer, n: &ExportNode, fallback: DType) -> LResult<DType> {
    Ok(match l.out_dtype(n, 0) {
        Some(d) => d,
        None => l.dtype_arg(n, &["dtype"])?.unwrap_or(fallback),
    })
}

/// `full(size, value)`, `zeros(size)`, `ones(size)`, `empty(size)`.
pub(crate) fn full_op(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let shape = l.dims_arg(n, &["size"], 0)?;
    let value = fill_value(l, n, &["fill_value"], 1)?;
    let dtype = full_dtype(l, n, DType::F32)?;
    Ok(Lowered::one(l.node(Op::Full { shape, value, dtype }, vec![], n)?))
}

/// `full_like(x, value)`, `zeros_like`, `ones_like`, `empty_like`.
pub(crate) fn full_like(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let value = fill_value(l, n, &["fill_value"], 1)?;
    let dtype = full_dtype(l, n, l.dtype(x))?;
    let shape = l.shape(x);
    Ok(Lowered::one(l.node(Op::Full { shape, value, dtype }, vec![], n)?))
}

/// `new_full(x, size, value)`, `new_zeros`, `new_ones`, `new_empty`.
pub(crate) fn new_full(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let shape = l.dims_arg(n, &["size"], 1)?;
    let value = fill_value(l, n, &["fill_value"], 2)?;
    let dtype = full_dtype(l, n, l.dtype(x))?;
    Ok(Lowered::one(l.node(Op::Full { shape, value, dtype }, vec![], n)?))
}

pub(crate) fn fill(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let shape = l.shape(x);
    let dt = l.dtype(x);
    match arg_or_pos(n, &["value"], 1) {
        Some(Arg::Tensor(t)) => {
            let v = l.value(t)?;
            let v = l.cast(v, dt, n)?;
            Ok(Lowered::one(super::layout::expand_value(l, v, shape, n)?))
        }
        _ => {
            let value = l.float_arg(n, &["value"], 1, None)?;
            Ok(Lowered::one(l.node(Op::Full { shape, value, dtype: dt }, vec![], n)?))
        }
    }
}

/// `copy(x, src)`: a tensor of `x`'s shape and dtype holding `src` (broadcast and cast).
pub(crate) fn copy(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let src = l.tensor_arg(n, &["src"], 1)?;
    let src = l.cast(src, l.dtype(x), n)?;
    let shape = l.shape(x);
    Ok(Lowered::one(super::layout::expand_value(l, src, shape, n)?))
}

pub(crate) fn scalar_tensor(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let value = l.float_arg(n, &["s"], 0, None)?;
    let dtype = full_dtype(l, n, DType::F32)?;
    Ok(Lowered::one(l.scalar(value, dtype, n)?))
}

/// `tril(x, diagonal)` / `triu(x, diagonal)`: zero the other triangle of the last two dims.
pub(crate) fn tril_triu(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let shape = l.shape(x);
    if shape.len() < 2 {
        return invalid("tril/triu need at least 2 dims");
    }
    let d = l.int_arg(n, &["diagonal"], 1, Some(0))?;
    let (rows, cols) = (shape[shape.len() - 2].clone(), shape[shape.len() - 1].clone());
    let keep = if base(n) == "tril" {
        lower_triangle(l, rows, cols, d, n)?
    } else {
        // triu keeps col - row >= d, the complement of tril with diagonal d - 1.
        let below = lower_triangle(l, rows, cols, d - 1, n)?;
        l.unary(UnaryOp::Not, below, n)?
    };
    let zero = l.scalar(0.0, l.dtype(x), n)?;
    Ok(Lowered::one(l.node(Op::Where, vec![keep, x, zero], n)?))
}

pub(crate) fn sym_size(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let axis = l.axis(l.int_arg(n, &["dim"], 1, None)?, l.rank(x))?;
    Ok(Lowered::Sym(l.shape(x)[axis].clone()))
}

/// One operand of Python arithmetic on sizes: an integer size or a float `coeff*dim+offset`.
enum Num {
    Int(Dim),
    Float(SymFloat),
}

fn num(l: &Lowerer, a: Option<&Arg>) -> LResult<Num> {
    Ok(match a {
        Some(Arg::Int(v)) => Num::Int(Dim::constant(*v)),
        Some(Arg::SymInt(s)) => Num::Int(l.sym(s)?),
        Some(Arg::Float(v)) => Num::Float(SymFloat { coeff: 0.0, dim: Dim::constant(0), offset: *v }),
        Some(Arg::SymFloat(s)) => Num::Float(l.sym_float(s)?),
        other => return unsupported(format!("integer arithmetic on {other:?}")),
    })
}

fn as_float(x: Num) -> SymFloat {
    match x {
        Num::Float(f) => f,
        Num::Int(d) => match d.as_const() {
            Some(c) => SymFloat { coeff: 0.0, dim: Dim::constant(0), offset: c as f64 },
            None => SymFloat { coeff: 1.0, dim: d, offset: 0.0 },
        },
    }
}

/// `_operator.add/sub/mul/floordiv/truediv/neg` and `torch.sym_float` on symbolic sizes:
/// integer results stay polynomials; float results must stay affine in one size.
pub(crate) fn sym_arith(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let a = num(l, pos(n, 0))?;
    let op = n.target.as_str();
    if op == "torch.sym_float" {
        return Ok(Lowered::SymFloat(as_float(a)));
    }
    if op == "_operator.neg" {
        return Ok(match a {
            Num::Int(d) => Lowered::Sym(d.scale(-1)),
            Num::Float(f) => Lowered::SymFloat(SymFloat { coeff: -f.coeff, dim: f.dim, offset: -f.offset }),
        });
    }
    let b = num(l, pos(n, 1))?;
    if let (Num::Int(x), Num::Int(y)) = (&a, &b) {
        let d = match op {
            "_operator.add" => x.add(y),
            "_operator.sub" => x.sub(y),
            "_operator.mul" => x.mul(y),
            "_operator.floordiv" => match (x.as_const(), y.as_const()) {
                (Some(p), Some(q)) if q != 0 => Dim::constant(p.div_euclid(q)),
                _ => match x.div_exact(y) {
                    Some(q) => q,
                    None => return unsupported("floor division of symbolic sizes that kiln cannot simplify"),
                },
            },
            _ => return sym_float_arith(op, as_float(a), as_float(b)),
        };
        return Ok(Lowered::Sym(d));
    }
    sym_float_arith(op, as_float(a), as_float(b))
}

fn sym_float_arith(op: &str, x: SymFloat, y: SymFloat) -> LResult<Lowered> {
    let constant = |f: &SymFloat| f.coeff == 0.0;
    let affine = |coeff: f64, dim: Dim, offset: f64| Ok(Lowered::SymFloat(SymFloat { coeff, dim, offset }));
    match op {
        "_operator.add" | "_operator.sub" => {
            let sign = if op == "_operator.add" { 1.0 } else { -1.0 };
            if constant(&y) {
                affine(x.coeff, x.dim, x.offset + sign * y.offset)
            } else if constant(&x) {
                affine(sign * y.coeff, y.dim, x.offset + sign * y.offset)
            } else if x.dim == y.dim {
                affine(x.coeff + sign * y.coeff, x.dim, x.offset + sign * y.offset)
            } else {
                unsupported("float arithmetic mixing two different sizes")
            }
        }
        "_operator.mul" if constant(&y) => affine(x.coeff * y.offset, x.dim, x.offset * y.offset),
        "_operator.mul" if constant(&x) => affine(y.coeff * x.offset, y.dim, y.offset * x.offset),
        "_operator.truediv" if constant(&y) && y.offset != 0.0 => affine(x.coeff / y.offset, x.dim, x.offset / y.offset),
        _ => unsupported(format!("`{op}` on symbolic floats kiln cannot express")),
    }
}
