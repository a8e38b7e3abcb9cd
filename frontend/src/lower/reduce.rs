//! Reduction ATen ops: sums, means, extrema and their indices, logical reductions, variance,
//! norms, `logsumexp` and `cumsum`.

use super::elementwise::self_tensor;
use super::{arg_or_pos, invalid, LResult, Lowered, Lowerer};
use crate::export::{Arg, ExportNode};
use kiln_ir::{ArgKind, BinaryOp, DType, Dim, Op, ReduceKind, UnaryOp, ValueId};

fn base(n: &ExportNode) -> &str {
    super::aten_base_name(&n.target).map(|(b, _)| b).unwrap_or("")
}

/// The reduced axes from `dim` (a list, a single int, or absent/empty for all), sorted.
fn axes(l: &Lowerer, n: &ExportNode, x: ValueId, pos: usize) -> LResult<Vec<usize>> {
    let r = l.rank(x);
    let list = match arg_or_pos(n, &["dim"], pos) {
        None => vec![],
        Some(Arg::Ints(v)) => v.clone(),
        Some(Arg::Int(v)) => vec![*v],
        Some(other) => return invalid(format!("`dim` should be integers, got {other:?}")),
    };
    if list.is_empty() {
        return Ok((0..r).collect());
    }
    let mut out = list.into_iter().map(|a| l.axis(a, r)).collect::<LResult<Vec<_>>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn input_in_out_dtype(l: &mut Lowerer, n: &ExportNode) -> LResult<ValueId> {
    let x = self_tensor(l, n)?;
    match l.out_dtype(n, 0) {
        Some(dt) => l.cast(x, dt, n),
        None => Ok(x),
    }
}

/// `sum`, `mean`, `prod` over `dim` (all dims when absent), with `keepdim` and `dtype`.
pub(crate) fn reduce(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let kind = match base(n) {
        "sum" => ReduceKind::Sum,
        "mean" => ReduceKind::Mean,
        _ => ReduceKind::Prod,
    };
    let x = input_in_out_dtype(l, n)?;
    let axes = axes(l, n, x, 1)?;
    let keepdim = l.bool_arg(n, &["keepdim"], 2, false)?;
    if l.rank(x) == 0 {
        return Ok(Lowered::one(x));
    }
    Ok(Lowered::one(l.reduce(kind, x, axes, keepdim, n)?))
}

pub(crate) fn amax_amin(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let kind = if base(n) == "amax" { ReduceKind::Max } else { ReduceKind::Min };
    let x = self_tensor(l, n)?;
    let axes = axes(l, n, x, 1)?;
    let keepdim = l.bool_arg(n, &["keepdim"], 2, false)?;
    Ok(Lowered::one(l.reduce(kind, x, axes, keepdim, n)?))
}

/// `max`/`min`: all elements (`.default`), along a dim with indices (`.dim`), or elementwise
/// against another tensor (`.other`).
pub(crate) fn max_min(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let is_max = base(n) == "max";
    let x = self_tensor(l, n)?;
    if let Some(Arg::Tensor(o)) = arg_or_pos(n, &["other"], 1) {
        let y = l.value(o)?;
        let op = if is_max { BinaryOp::Max } else { BinaryOp::Min };
        return Ok(Lowered::one(l.binary(op, x, y, n)?));
    }
    let kind = if is_max { ReduceKind::Max } else { ReduceKind::Min };
    match arg_or_pos(n, &["dim"], 1) {
        None => {
            let all = (0..l.rank(x)).collect();
            Ok(Lowered::one(l.reduce(kind, x, all, false, n)?))
        }
        Some(_) => {
            let axis = l.axis(l.int_arg(n, &["dim"], 1, None)?, l.rank(x))?;
            let keepdim = l.bool_arg(n, &["keepdim"], 2, false)?;
            let v = l.reduce(kind, x, vec![axis], keepdim, n)?;
            let ak = if is_max { ArgKind::ArgMax } else { ArgKind::ArgMin };
            let i = l.node(Op::ArgReduce { kind: ak, axis, keepdim }, vec![x], n)?;
            Ok(Lowered::Values(vec![Some(v), Some(i)]))
        }
    }
}

pub(crate) fn arg_reduce(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let kind = if base(n) == "argmax" { ArgKind::ArgMax } else { ArgKind::ArgMin };
    let x = self_tensor(l, n)?;
    let keepdim = l.bool_arg(n, &["keepdim"], 2, false)?;
    match arg_or_pos(n, &["dim"], 1) {
        None => {
            let flat = l.reshape(x, vec![Dim::product(&l.shape(x))], n)?;
            let i = l.node(Op::ArgReduce { kind, axis: 0, keepdim: false }, vec![flat], n)?;
            if keepdim {
                let ones = vec![Dim::constant(1); l.rank(x)];
                return Ok(Lowered::one(l.reshape(i, ones, n)?));
            }
            Ok(Lowered::one(i))
        }
        Some(_) => {
            let axis = l.axis(l.int_arg(n, &["dim"], 1, None)?, l.rank(x))?;
            Ok(Lowered::one(l.node(Op::ArgReduce { kind, axis, keepdim }, vec![x], n)?))
        }
    }
}

/// `any` is a max over bools, `all` a min.
pub(crate) fn all_any(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let kind = if base(n) == "any" { ReduceKind::Max } else { ReduceKind::Min };
    let x = self_tensor(l, n)?;
    let x = l.cast(x, DType::Bool, n)?;
    let axes = axes(l, n, x, 1)?;
    let keepdim = l.bool_arg(n, &["keepdim"], 2, false)?;
    let y = l.reduce(kind, x, axes, keepdim, n)?;
    let dt = l.out_dtype(n, 0).unwrap_or(DType::Bool);
    Ok(Lowered::one(l.cast(y, dt, n)?))
}

pub(crate) fn cumsum(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = input_in_out_dtype(l, n)?;
    let axis = l.axis(l.int_arg(n, &["dim"], 1, None)?, l.rank(x))?;
    Ok(Lowered::one(l.node(Op::CumSum { axis }, vec![x], n)?))
}

/// `var`/`std` with `correction` (or `unbiased`): `sum((x - mean)^2) / (N - correction)`.
pub(crate) fn var_std(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let axes = axes(l, n, x, 1)?;
    let keepdim = l.bool_arg(n, &["keepdim"], usize::MAX, false)?;
    let correction = match arg_or_pos(n, &["correction"], usize::MAX) {
        Some(Arg::Int(c)) => *c as f64,
        Some(Arg::Float(c)) => *c,
        _ => {
            if l.bool_arg(n, &["unbiased"], usize::MAX, true)? {
                1.0
            } else {
                0.0
            }
        }
    };
    let shape = l.shape(x);
    let count: Option<i64> = axes.iter().map(|&a| shape[a].as_const()).product();
    let Some(count) = count else { return super::unsupported("variance over a symbolic dim") };
    let mean = l.reduce(ReduceKind::Mean, x, axes.clone(), true, n)?;
    let xc = l.binary(BinaryOp::Sub, x, mean, n)?;
    let sq = l.binary(BinaryOp::Mul, xc, xc, n)?;
    let s = l.reduce(ReduceKind::Sum, sq, axes, keepdim, n)?;
    let v = l.binary_scalar(BinaryOp::Div, s, (count as f64 - correction).max(0.0), n)?;
    let y = if base(n) == "std" { l.unary(UnaryOp::Sqrt, v, n)? } else { v };
    Ok(Lowered::one(y))
}

/// `max + log(sum(exp(x - max)))`, with the max kept finite for all -inf rows.
pub(crate) fn logsumexp(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let axes = axes(l, n, x, 1)?;
    let keepdim = l.bool_arg(n, &["keepdim"], 2, false)?;
    let m = l.reduce(ReduceKind::Max, x, axes.clone(), true, n)?;
    let inf = l.scalar(f64::INFINITY, l.dtype(m), n)?;
    let absm = l.unary(UnaryOp::Abs, m, n)?;
    let is_inf = l.binary(BinaryOp::Eq, absm, inf, n)?;
    let zero = l.scalar(0.0, l.dtype(m), n)?;
    let m = l.node(Op::Where, vec![is_inf, zero, m], n)?;
    let d = l.binary(BinaryOp::Sub, x, m, n)?;
    let e = l.unary(UnaryOp::Exp, d, n)?;
    let s = l.reduce(ReduceKind::Sum, e, axes.clone(), keepdim, n)?;
    let ls = l.unary(UnaryOp::Log, s, n)?;
    let m = if keepdim { m } else { l.reduce(ReduceKind::Max, m, axes, false, n)? };
    Ok(Lowered::one(l.binary(BinaryOp::Add, ls, m, n)?))
}

/// `linalg_vector_norm(x, ord, dim, keepdim)` for ord 1, 2, inf and other positive orders.
pub(crate) fn vector_norm(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let ord = l.float_arg(n, &["ord"], 1, Some(2.0))?;
    let axes = axes(l, n, x, 2)?;
    let keepdim = l.bool_arg(n, &["keepdim"], 3, false)?;
    let a = l.unary(UnaryOp::Abs, x, n)?;
    let y = if ord == f64::INFINITY {
        l.reduce(ReduceKind::Max, a, axes, keepdim, n)?
    } else if ord == 1.0 {
        l.reduce(ReduceKind::Sum, a, axes, keepdim, n)?
    } else if ord == 2.0 {
        let sq = l.binary(BinaryOp::Mul, x, x, n)?;
        let s = l.reduce(ReduceKind::Sum, sq, axes, keepdim, n)?;
        l.unary(UnaryOp::Sqrt, s, n)?
    } else if ord > 0.0 {
        let p = l.binary_scalar(BinaryOp::Pow, a, ord, n)?;
        let s = l.reduce(ReduceKind::Sum, p, axes, keepdim, n)?;
        l.binary_scalar(BinaryOp::Pow, s, 1.0 / ord, n)?
    } else {
        return super::unsupported(format!("vector norm of order {ord}"));
    };
    Ok(Lowered::one(y))
}
