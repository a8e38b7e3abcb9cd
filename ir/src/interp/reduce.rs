//! Reductions over axes, arg-reductions over one axis, and the inclusive prefix sum.

use super::value::{split_at_axis, strided_offsets, strides, Data, Value, R};
use crate::dtype::DType;
use crate::op::{ArgKind, ReduceKind};

/// `reduce_<kind>` over sorted unique `axes`. Floats accumulate in `f64` and `max`/`min`
/// propagate NaN; integers accumulate in wrapping `i64`. Over a zero-size extent `sum` is 0,
/// `prod` 1, `mean` NaN, and `max`/`min` are errors; `mean` of integers is an error.
pub(crate) fn reduce(kind: ReduceKind, axes: &[usize], keepdim: bool, x: &Value) -> R<Value> {
    let rank = x.shape.len();
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("axes {axes:?} must be sorted and unique"));
    }
    if let Some(&a) = axes.iter().find(|&&a| a >= rank) {
        return Err(format!("axis {a} out of range for rank {rank}"));
    }
    if axes.is_empty() {
        return Ok(x.clone());
    }
    if kind == ReduceKind::Mean && !x.dtype.is_float() {
        return Err(format!("mean of {} (the frontend casts integers to float first)", x.dtype));
    }
    let st = strides(&x.shape);
    let (mut kept_shape, mut kept_strides, mut red_shape, mut red_strides) = (vec![], vec![], vec![], vec![]);
    let mut out_shape = Vec::with_capacity(rank);
    for (i, &d) in x.shape.iter().enumerate() {
        if axes.contains(&i) {
            red_shape.push(d);
            red_strides.push(st[i]);
            if keepdim {
                out_shape.push(1);
            }
        } else {
            kept_shape.push(d);
            kept_strides.push(st[i]);
            out_shape.push(d);
        }
    }
    let count: usize = red_shape.iter().product();
    if count == 0 && matches!(kind, ReduceKind::Max | ReduceKind::Min) {
        return Err(format!("{} over a zero-size extent (shape {:?}, axes {axes:?})", kind.name(), x.shape));
    }
    // Every output element reduces `base + r` over the offsets `r` of the reduced dims.
    let bases = strided_offsets(&kept_shape, &kept_strides, 0)?;
    let red = strided_offsets(&red_shape, &red_strides, 0)?;
    let data = match &x.data {
        Data::Float(v) => Data::Float(
            bases
                .iter()
                .map(|&b| {
                    let it = red.iter().map(|&r| v[b + r]);
                    match kind {
                        ReduceKind::Sum => it.sum::<f64>(),
                        ReduceKind::Mean => it.sum::<f64>() / count as f64,
                        ReduceKind::Prod => it.product::<f64>(),
                        ReduceKind::Max => it.fold(f64::NEG_INFINITY, nan_max),
                        ReduceKind::Min => it.fold(f64::INFINITY, nan_min),
                    }
                })
                .collect(),
        ),
        Data::Int(v) => Data::Int(
            bases
                .iter()
                .map(|&b| {
                    let mut it = red.iter().map(|&r| v[b + r]);
                    match kind {
                        ReduceKind::Sum | ReduceKind::Mean => it.fold(0i64, i64::wrapping_add),
                        ReduceKind::Prod => it.fold(1i64, i64::wrapping_mul),
                        ReduceKind::Max => it.next().map(|f| it.fold(f, i64::max)).unwrap_or(0),
                        ReduceKind::Min => it.next().map(|f| it.fold(f, i64::min)).unwrap_or(0),
                    }
                })
                .collect(),
        ),
    };
    Value::new(x.dtype, out_shape, data)
}

/// `max` that propagates NaN.
pub(crate) fn nan_max(m: f64, a: f64) -> f64 {
    if m.is_nan() || a.is_nan() {
        f64::NAN
    } else if a > m {
        a
    } else {
        m
    }
}

/// `min` that propagates NaN.
pub(crate) fn nan_min(m: f64, a: f64) -> f64 {
    if m.is_nan() || a.is_nan() {
        f64::NAN
    } else if a < m {
        a
    } else {
        m
    }
}

/// `argmax` / `argmin` along `axis`: the first index of the extremum, a NaN counting as the
/// extremum (so the first NaN wins). Result is `i64`.
pub(crate) fn arg_reduce(kind: ArgKind, axis: usize, keepdim: bool, x: &Value) -> R<Value> {
    let (outer, n, inner) = split_at_axis(&x.shape, axis)?;
    if n == 0 {
        return Err(format!("{} over a zero-size dim (shape {:?}, axis {axis})", kind.name(), x.shape));
    }
    let mut out_shape = x.shape.clone();
    if keepdim {
        out_shape[axis] = 1;
    } else {
        out_shape.remove(axis);
    }
    let better_f = |a: f64, best: f64| match kind {
        ArgKind::ArgMax => a > best,
        ArgKind::ArgMin => a < best,
    };
    let better_i = |a: i64, best: i64| match kind {
        ArgKind::ArgMax => a > best,
        ArgKind::ArgMin => a < best,
    };
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let mut best_k = 0usize;
            match &x.data {
                Data::Float(v) => {
                    let mut best = v[at(0)];
                    if !best.is_nan() {
                        for k in 1..n {
                            let a = v[at(k)];
                            if a.is_nan() {
                                best_k = k;
                                break;
                            }
                            if better_f(a, best) {
                                best = a;
                                best_k = k;
                            }
                        }
                    }
                }
                Data::Int(v) => {
                    let mut best = v[at(0)];
                    for k in 1..n {
                        let a = v[at(k)];
                        if better_i(a, best) {
                            best = a;
                            best_k = k;
                        }
                    }
                }
            }
            out.push(best_k as i64);
        }
    }
    Value::ints(DType::I64, out_shape, out)
}

/// Inclusive prefix sum along `axis` (floats accumulate in `f64`, integers wrap).
pub(crate) fn cumsum(axis: usize, x: &Value) -> R<Value> {
    let (outer, n, inner) = split_at_axis(&x.shape, axis)?;
    let mut data = x.data.clone();
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            match &mut data {
                Data::Float(v) => {
                    let mut acc = 0.0f64;
                    for k in 0..n {
                        acc += v[at(k)];
                        v[at(k)] = acc;
                    }
                }
                Data::Int(v) => {
                    let mut acc = 0i64;
                    for k in 0..n {
                        acc = acc.wrapping_add(v[at(k)]);
                        v[at(k)] = acc;
                    }
                }
            }
        }
    }
    Value::new(x.dtype, x.shape.clone(), data)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::{ArgKind, DType, Op, ReduceKind};

    fn red(kind: ReduceKind, axes: &[usize], keepdim: bool) -> Op {
        Op::Reduce { kind, axes: axes.to_vec(), keepdim }
    }

    #[test]
    fn sums_and_means() {
        let x = arange(&[2, 3, 2]);
        assert_close(&ok(red(ReduceKind::Sum, &[1], false), [x.clone()]), &[2, 2], &[6.0, 9.0, 24.0, 27.0], 0.0);
        assert_close(&ok(red(ReduceKind::Sum, &[0, 2], true), [x.clone()]), &[1, 3, 1], &[14.0, 22.0, 30.0], 0.0);
        assert_close(&ok(red(ReduceKind::Mean, &[0, 1, 2], false), [x.clone()]), &[], &[5.5], 0.0);
        assert_close(
            &ok(red(ReduceKind::Prod, &[2], false), [x.clone()]),
            &[2, 3],
            &[0.0, 6.0, 20.0, 42.0, 72.0, 110.0],
            0.0,
        );
        assert_close(
            &ok(red(ReduceKind::Max, &[0], false), [x.clone()]),
            &[3, 2],
            &[6.0, 7.0, 8.0, 9.0, 10.0, 11.0],
            0.0,
        );
        assert_close(&ok(red(ReduceKind::Min, &[1], true), [x.clone()]), &[2, 1, 2], &[0.0, 1.0, 6.0, 7.0], 0.0);
        // Empty axes: identity.
        assert_eq!(ok(red(ReduceKind::Sum, &[], false), [x.clone()]), x);
    }

    #[test]
    fn float_sum_accumulates_in_f64() {
        // In f32, 1e8 + 1 + 1 + ... loses the ones; in f64 it does not.
        let mut v = vec![1.0; 17];
        v[0] = 1e8;
        let y = ok(red(ReduceKind::Sum, &[0], false), &[f32s(&[17], &v)]);
        assert_eq!(y.to_f64(), vec![100000016.0]);
    }

    #[test]
    fn reduce_nan_and_empty() {
        let nan = f64::NAN;
        let x = f32s(&[2, 3], &[1.0, nan, 3.0, 4.0, 5.0, 6.0]);
        let m = ok(red(ReduceKind::Max, &[1], false), [x.clone()]).to_f64();
        assert!(m[0].is_nan());
        assert_eq!(m[1], 6.0);
        let m = ok(red(ReduceKind::Min, &[1], false), [x.clone()]).to_f64();
        assert!(m[0].is_nan());
        assert_eq!(m[1], 4.0);
        let e = f32s(&[2, 0], &[]);
        assert_close(&ok(red(ReduceKind::Sum, &[1], false), [e.clone()]), &[2], &[0.0, 0.0], 0.0);
        assert_close(&ok(red(ReduceKind::Prod, &[1], false), [e.clone()]), &[2], &[1.0, 1.0], 0.0);
        assert_close(&ok(red(ReduceKind::Mean, &[1], false), [e.clone()]), &[2], &[nan, nan], 0.0);
        assert!(fails(red(ReduceKind::Max, &[1], false), [e.clone()]).contains("zero-size"));
        assert!(fails(red(ReduceKind::Min, &[1], false), &[e]).contains("zero-size"));
    }

    #[test]
    fn reduce_ints() {
        let x = ints(DType::I32, &[2, 2], &[i32::MAX as i64, 1, -3, 5]);
        assert_ints(&ok(red(ReduceKind::Sum, &[1], false), [x.clone()]), &[2], &[i32::MIN as i64, 2]);
        assert_ints(
            &ok(red(ReduceKind::Prod, &[0], false), [x.clone()]),
            &[2],
            &[(i32::MAX as i64 * -3) as i32 as i64, 5],
        );
        assert_ints(&ok(red(ReduceKind::Max, &[0], false), [x.clone()]), &[2], &[i32::MAX as i64, 5]);
        assert_ints(&ok(red(ReduceKind::Min, &[1], false), [x.clone()]), &[2], &[1, -3]);
        assert!(fails(red(ReduceKind::Mean, &[1], false), &[x]).contains("mean"));
        // Bool sum is logical or (wrapped to bool).
        assert_ints(&ok(red(ReduceKind::Sum, &[0], false), &[bools(&[3], &[true, true, false])]), &[], &[1]);
    }

    #[test]
    fn argmax_argmin() {
        let nan = f64::NAN;
        let arg = |kind, axis, keepdim| Op::ArgReduce { kind, axis, keepdim };
        let x = f32s(&[2, 4], &[1.0, 3.0, 3.0, 0.0, 2.0, nan, 5.0, nan]);
        assert_ints(&ok(arg(ArgKind::ArgMax, 1, false), [x.clone()]), &[2], &[1, 1]);
        assert_ints(&ok(arg(ArgKind::ArgMin, 1, true), [x.clone()]), &[2, 1], &[3, 1]);
        assert_ints(&ok(arg(ArgKind::ArgMax, 0, false), &[x]), &[4], &[1, 1, 1, 1]);
        let x = i64s(&[2, 2], &[5, 5, -1, 7]);
        assert_ints(&ok(arg(ArgKind::ArgMax, 0, false), [x.clone()]), &[2], &[0, 1]);
        assert_ints(&ok(arg(ArgKind::ArgMin, 1, false), &[x]), &[2], &[0, 0]);
        assert!(fails(arg(ArgKind::ArgMax, 1, false), &[f32s(&[2, 0], &[])]).contains("zero-size"));
    }

    #[test]
    fn cumsums() {
        let x = arange(&[2, 3]);
        assert_close(&ok(Op::CumSum { axis: 1 }, [x.clone()]), &[2, 3], &[0.0, 1.0, 3.0, 3.0, 7.0, 12.0], 0.0);
        assert_close(&ok(Op::CumSum { axis: 0 }, &[x]), &[2, 3], &[0.0, 1.0, 2.0, 3.0, 5.0, 7.0], 0.0);
        assert_ints(&ok(Op::CumSum { axis: 0 }, &[ints(DType::I8, &[3], &[100, 100, 100])]), &[3], &[100, -56, 44]);
    }
}
