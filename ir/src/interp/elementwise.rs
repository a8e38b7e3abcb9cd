//! Elementwise ops: unary functions, binary ops with broadcasting, `where`, `cast`.

use super::value::{broadcast_offsets, broadcast_shapes, Data, Value, R};
use crate::dtype::DType;
use crate::op::{BinaryOp, UnaryOp};
use crate::tensor::float_to_i64;

/// `x -> f(x)`, same shape; `isnan` gives bool.
pub(crate) fn unary(op: UnaryOp, x: &Value) -> R<Value> {
    let shape = x.shape.clone();
    match &x.data {
        Data::Float(v) => match op {
            UnaryOp::IsNan => Value::ints(DType::Bool, shape, v.iter().map(|a| a.is_nan() as i64).collect()),
            UnaryOp::Not => Err(format!("`not` needs a bool or integer operand, got {}", x.dtype)),
            _ => {
                let f = float_unary(op);
                Value::floats(x.dtype, shape, v.iter().map(|&a| f(a)).collect())
            }
        },
        Data::Int(v) => {
            if op.float_only() {
                return Err(format!("`{}` needs a float operand, got {}", op.name(), x.dtype));
            }
            let is_bool = x.dtype == DType::Bool;
            let f = |a: i64| -> i64 {
                match op {
                    UnaryOp::Neg => a.wrapping_neg(),
                    UnaryOp::Abs => a.wrapping_abs(),
                    UnaryOp::Relu => a.max(0),
                    UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => a,
                    UnaryOp::Sign => a.signum(),
                    UnaryOp::Not if is_bool => (a == 0) as i64,
                    UnaryOp::Not => !a,
                    UnaryOp::IsNan => 0,
                    // Float-only ops were rejected above.
                    _ => a,
                }
            };
            let dtype = if op == UnaryOp::IsNan { DType::Bool } else { x.dtype };
            Value::ints(dtype, shape, v.iter().map(|&a| f(a)).collect())
        }
    }
}

fn float_unary(op: UnaryOp) -> fn(f64) -> f64 {
    match op {
        UnaryOp::Neg => |a| -a,
        UnaryOp::Abs => f64::abs,
        UnaryOp::Exp => f64::exp,
        UnaryOp::Log => f64::ln,
        UnaryOp::Log1p => f64::ln_1p,
        UnaryOp::Expm1 => f64::exp_m1,
        UnaryOp::Sqrt => f64::sqrt,
        UnaryOp::Rsqrt => |a| 1.0 / a.sqrt(),
        UnaryOp::Reciprocal => |a| 1.0 / a,
        UnaryOp::Tanh => f64::tanh,
        UnaryOp::Sigmoid => |a| 1.0 / (1.0 + (-a).exp()),
        UnaryOp::Erf => libm::erf,
        UnaryOp::Sin => f64::sin,
        UnaryOp::Cos => f64::cos,
        // NaN stays NaN; -0.0 and negatives become +0.0.
        UnaryOp::Relu => |a| if a > 0.0 || a.is_nan() { a } else { 0.0 },
        UnaryOp::Floor => f64::floor,
        UnaryOp::Ceil => f64::ceil,
        UnaryOp::Round => f64::round_ties_even,
        // Like PyTorch: NaN gives 0 (neither comparison holds), zeros give +0.
        UnaryOp::Sign => |a| ((a > 0.0) as i64 - (a < 0.0) as i64) as f64,
        // Handled by the caller.
        UnaryOp::Not | UnaryOp::IsNan => |a| a,
    }
}

/// Python's `//` on floats (also PyTorch's `floor_divide`): exact via `fmod`, then rounded
/// toward -inf; division by zero gives the IEEE quotient.
pub(crate) fn float_floordiv(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        return a / b;
    }
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && (b < 0.0) != (m < 0.0) {
        div -= 1.0;
    }
    if div == 0.0 {
        return 0.0f64.copysign(a / b);
    }
    let mut f = div.floor();
    if div - f > 0.5 {
        f += 1.0;
    }
    f
}

/// Python's `%` on floats (also PyTorch's `remainder`): `fmod` (exact), moved into the
/// divisor's sign. Equals `a - floor(a/b)*b` in exact arithmetic, without its rounding error.
pub(crate) fn float_rem(a: f64, b: f64) -> f64 {
    let m = a % b;
    if m != 0.0 && (b < 0.0) != (m < 0.0) {
        m + b
    } else {
        m
    }
}

fn float_binary(op: BinaryOp, a: f64, b: f64) -> f64 {
    let t = |c: bool| c as i64 as f64;
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::FloorDiv => float_floordiv(a, b),
        BinaryOp::Rem => float_rem(a, b),
        BinaryOp::Pow => a.powf(b),
        BinaryOp::Max => {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else if b > a {
                b
            } else {
                a
            }
        }
        BinaryOp::Min => {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else if b < a {
                b
            } else {
                a
            }
        }
        BinaryOp::Eq => t(a == b),
        BinaryOp::Ne => t(a != b),
        BinaryOp::Lt => t(a < b),
        BinaryOp::Le => t(a <= b),
        BinaryOp::Gt => t(a > b),
        BinaryOp::Ge => t(a >= b),
        // Rejected by the caller.
        BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => f64::NAN,
    }
}

/// `base^exp` with wrapping multiplication, by squaring.
fn int_pow(mut base: i64, mut exp: u64) -> i64 {
    let mut acc: i64 = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = acc.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        exp >>= 1;
    }
    acc
}

fn int_binary(op: BinaryOp, a: i64, b: i64) -> R<i64> {
    let nonzero = || if b == 0 { Err("integer division by zero".to_string()) } else { Ok(()) };
    Ok(match op {
        BinaryOp::Add => a.wrapping_add(b),
        BinaryOp::Sub => a.wrapping_sub(b),
        BinaryOp::Mul => a.wrapping_mul(b),
        BinaryOp::Div => {
            nonzero()?;
            a.wrapping_div(b)
        }
        BinaryOp::FloorDiv => {
            nonzero()?;
            let q = a.wrapping_div(b);
            if a.wrapping_rem(b) != 0 && ((a < 0) != (b < 0)) {
                q - 1
            } else {
                q
            }
        }
        BinaryOp::Rem => {
            nonzero()?;
            let r = a.wrapping_rem(b);
            if r != 0 && ((r < 0) != (b < 0)) {
                r + b
            } else {
                r
            }
        }
        BinaryOp::Pow => {
            let e = u64::try_from(b).map_err(|_| format!("integer pow with negative exponent {b}"))?;
            int_pow(a, e)
        }
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::Eq => (a == b) as i64,
        BinaryOp::Ne => (a != b) as i64,
        BinaryOp::Lt => (a < b) as i64,
        BinaryOp::Le => (a <= b) as i64,
        BinaryOp::Gt => (a > b) as i64,
        BinaryOp::Ge => (a >= b) as i64,
        // On bool (0/1) bitwise is logical.
        BinaryOp::And => a & b,
        BinaryOp::Or => a | b,
        BinaryOp::Xor => a ^ b,
    })
}

/// `a op b` with broadcasting. Comparisons give bool.
pub(crate) fn binary(op: BinaryOp, a: &Value, b: &Value) -> R<Value> {
    if a.dtype != b.dtype {
        return Err(format!("operand dtypes differ: {} and {}", a.dtype, b.dtype));
    }
    let shape = broadcast_shapes(&a.shape, &b.shape)?;
    let ia = broadcast_offsets(&a.shape, &shape)?;
    let ib = broadcast_offsets(&b.shape, &shape)?;
    let dtype = if op.is_comparison() { DType::Bool } else { a.dtype };
    match (&a.data, &b.data) {
        (Data::Float(x), Data::Float(y)) => {
            if op.is_logical() {
                return Err(format!("`{}` needs bool or integer operands, got {}", op.name(), a.dtype));
            }
            let out: Vec<f64> = ia.iter().zip(&ib).map(|(&i, &j)| float_binary(op, x[i], y[j])).collect();
            if op.is_comparison() {
                Value::ints(dtype, shape, out.into_iter().map(|v| v as i64).collect())
            } else {
                Value::floats(dtype, shape, out)
            }
        }
        (Data::Int(x), Data::Int(y)) => {
            let out = ia.iter().zip(&ib).map(|(&i, &j)| int_binary(op, x[i], y[j])).collect::<R<Vec<i64>>>()?;
            Value::ints(dtype, shape, out)
        }
        _ => Err("internal: operand storage differs".into()),
    }
}

/// `where(cond, a, b)` with broadcasting of all three.
pub(crate) fn select(cond: &Value, a: &Value, b: &Value) -> R<Value> {
    if cond.dtype != DType::Bool {
        return Err(format!("condition must be bool, got {}", cond.dtype));
    }
    if a.dtype != b.dtype {
        return Err(format!("branch dtypes differ: {} and {}", a.dtype, b.dtype));
    }
    let c = cond.as_ints("condition")?;
    let shape = broadcast_shapes(&broadcast_shapes(&cond.shape, &a.shape)?, &b.shape)?;
    let ic = broadcast_offsets(&cond.shape, &shape)?;
    let ia = broadcast_offsets(&a.shape, &shape)?;
    let ib = broadcast_offsets(&b.shape, &shape)?;
    let n = ic.len();
    let data = match (&a.data, &b.data) {
        (Data::Float(x), Data::Float(y)) => {
            Data::Float((0..n).map(|k| if c[ic[k]] != 0 { x[ia[k]] } else { y[ib[k]] }).collect())
        }
        (Data::Int(x), Data::Int(y)) => {
            Data::Int((0..n).map(|k| if c[ic[k]] != 0 { x[ia[k]] } else { y[ib[k]] }).collect())
        }
        _ => return Err("internal: operand storage differs".into()),
    };
    Value::new(a.dtype, shape, data)
}

/// Conversion to `to`: float -> int truncates toward zero (NaN -> 0, saturating, then wrapped),
/// anything -> bool is `!= 0` (NaN -> true), bool -> number is 0/1, floats round to nearest even.
pub(crate) fn cast(x: &Value, to: DType) -> R<Value> {
    let shape = x.shape.clone();
    match &x.data {
        Data::Float(v) if to.is_float() => Value::floats(to, shape, v.clone()),
        Data::Float(v) if to == DType::Bool => Value::ints(to, shape, v.iter().map(|&a| (a != 0.0) as i64).collect()),
        Data::Float(v) => Value::ints(to, shape, v.iter().map(|&a| float_to_i64(a)).collect()),
        Data::Int(v) if to.is_float() => Value::floats(to, shape, v.iter().map(|&a| a as f64).collect()),
        // Wrapping (and `!= 0` for bool) happens in `Value::ints`.
        Data::Int(v) => Value::ints(to, shape, v.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::{BinaryOp, DType, Op, UnaryOp};

    fn un(u: UnaryOp, x: &[f64]) -> Vec<f64> {
        ok(Op::Unary(u), &[f64s(&[x.len()], x)]).to_f64()
    }

    fn bin_f(b: BinaryOp, x: &[f64], y: &[f64]) -> Vec<f64> {
        ok(Op::Binary(b), &[f64s(&[x.len()], x), f64s(&[y.len()], y)]).to_f64()
    }

    fn bin_i(b: BinaryOp, x: &[i64], y: &[i64]) -> Vec<i64> {
        ok(Op::Binary(b), &[i64s(&[x.len()], x), i64s(&[y.len()], y)]).to_i64()
    }

    #[test]
    fn unary_floats() {
        let nan = f64::NAN;
        assert_eq!(
            un(UnaryOp::Round, &[0.5, 1.5, 2.5, -0.5, -1.5, 2.4, 2.6]),
            vec![0.0, 2.0, 2.0, -0.0, -2.0, 2.0, 3.0]
        );
        assert_eq!(un(UnaryOp::Sign, &[-3.0, 0.0, 2.0, -0.0]), vec![-1.0, 0.0, 1.0, 0.0]);
        assert_eq!(un(UnaryOp::Sign, &[nan]), vec![0.0]);
        let r = un(UnaryOp::Relu, &[-1.0, 0.0, 2.0, nan]);
        assert_eq!(&r[..3], &[0.0, 0.0, 2.0]);
        assert!(r[3].is_nan());
        assert_eq!(un(UnaryOp::Floor, &[-1.5, 1.5]), vec![-2.0, 1.0]);
        assert_eq!(un(UnaryOp::Ceil, &[-1.5, 1.5]), vec![-1.0, 2.0]);
        assert_eq!(un(UnaryOp::Neg, &[1.0, -2.0]), vec![-1.0, 2.0]);
        assert_eq!(un(UnaryOp::Abs, &[-1.0, 2.0]), vec![1.0, 2.0]);
        assert_eq!(un(UnaryOp::Rsqrt, &[4.0]), vec![0.5]);
        assert_eq!(un(UnaryOp::Reciprocal, &[4.0, 0.0]), vec![0.25, f64::INFINITY]);
        assert_eq!(un(UnaryOp::Sigmoid, &[0.0]), vec![0.5]);
        assert!((un(UnaryOp::Erf, &[0.5])[0] - 0.5204998778130465).abs() < 1e-15);
        // log1p(x) = x - x^2/2 + ...: exact where ln(1 + x) would lose it.
        assert!((un(UnaryOp::Log1p, &[1e-10])[0] - (1e-10 - 5e-21)).abs() < 1e-25);
        assert!(un(UnaryOp::Log, &[-1.0])[0].is_nan());
        let isnan = ok(Op::Unary(UnaryOp::IsNan), &[f32s(&[3], &[1.0, nan, f64::INFINITY])]);
        assert_eq!(isnan.dtype, DType::Bool);
        assert_eq!(isnan.to_i64(), vec![0, 1, 0]);
        // f32 results are rounded to f32.
        let e = ok(Op::Unary(UnaryOp::Exp), &[f32s(&[1], &[1.0])]);
        assert_eq!(e.to_f64()[0], std::f64::consts::E as f32 as f64);
    }

    #[test]
    fn unary_ints_and_bools() {
        let x = ints(DType::I8, &[4], &[-128, -1, 0, 5]);
        assert_ints(&ok(Op::Unary(UnaryOp::Neg), [x.clone()]), &[4], &[-128, 1, 0, -5]);
        assert_ints(&ok(Op::Unary(UnaryOp::Abs), [x.clone()]), &[4], &[-128, 1, 0, 5]);
        assert_ints(&ok(Op::Unary(UnaryOp::Sign), [x.clone()]), &[4], &[-1, -1, 0, 1]);
        assert_ints(&ok(Op::Unary(UnaryOp::Relu), [x.clone()]), &[4], &[0, 0, 0, 5]);
        assert_ints(&ok(Op::Unary(UnaryOp::Not), [x.clone()]), &[4], &[127, 0, -1, -6]);
        assert_ints(&ok(Op::Unary(UnaryOp::Round), [x.clone()]), &[4], &[-128, -1, 0, 5]);
        assert_ints(&ok(Op::Unary(UnaryOp::IsNan), &[x]), &[4], &[0, 0, 0, 0]);
        let b = bools(&[2], &[true, false]);
        assert_ints(&ok(Op::Unary(UnaryOp::Not), &[b]), &[2], &[0, 1]);
        let u = ints(DType::U8, &[2], &[0, 200]);
        assert_ints(&ok(Op::Unary(UnaryOp::Neg), &[u]), &[2], &[0, 56]);
    }

    #[test]
    fn binary_broadcasting() {
        let a = f32s(&[2, 1], &[1.0, 2.0]);
        let b = f32s(&[3], &[10.0, 20.0, 30.0]);
        let y = ok(Op::Binary(BinaryOp::Add), &[a.clone(), b.clone()]);
        assert_close(&y, &[2, 3], &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0], 0.0);
        let y = ok(Op::Binary(BinaryOp::Sub), &[b, a]);
        assert_close(&y, &[2, 3], &[9.0, 19.0, 29.0, 8.0, 18.0, 28.0], 0.0);
        // Scalar (rank 0) operand.
        let s = f32s(&[], &[2.0]);
        let y = ok(Op::Binary(BinaryOp::Mul), &[arange(&[2, 2]), s]);
        assert_close(&y, &[2, 2], &[0.0, 2.0, 4.0, 6.0], 0.0);
        // f32 rounding after the op: 0.1 + 0.2 in f32.
        let y = ok(Op::Binary(BinaryOp::Add), &[f32s(&[1], &[0.1]), f32s(&[1], &[0.2])]);
        assert_eq!(y.to_f64()[0], (0.1f32 as f64 + 0.2f32 as f64) as f32 as f64);
    }

    #[test]
    fn max_min_propagate_nan() {
        let nan = f64::NAN;
        let m = bin_f(BinaryOp::Max, &[1.0, nan, 3.0, -1.0], &[2.0, 0.0, nan, -2.0]);
        assert_eq!(m[0], 2.0);
        assert!(m[1].is_nan() && m[2].is_nan());
        assert_eq!(m[3], -1.0);
        let m = bin_f(BinaryOp::Min, &[1.0, nan, 3.0], &[2.0, 0.0, nan]);
        assert_eq!(m[0], 1.0);
        assert!(m[1].is_nan() && m[2].is_nan());
        assert_eq!(bin_i(BinaryOp::Max, &[1, -5], &[2, -7]), vec![2, -5]);
        assert_eq!(bin_i(BinaryOp::Min, &[1, -5], &[2, -7]), vec![1, -7]);
    }

    #[test]
    fn integer_division_family() {
        let a = [7, -7, 7, -7, 6, 0];
        let b = [2, 2, -2, -2, 3, 5];
        assert_eq!(bin_i(BinaryOp::Div, &a, &b), vec![3, -3, -3, 3, 2, 0]);
        assert_eq!(bin_i(BinaryOp::FloorDiv, &a, &b), vec![3, -4, -4, 3, 2, 0]);
        assert_eq!(bin_i(BinaryOp::Rem, &a, &b), vec![1, 1, -1, -1, 0, 0]);
        assert_eq!(bin_i(BinaryOp::Div, &[i64::MIN], &[-1]), vec![i64::MIN]);
        assert_eq!(bin_i(BinaryOp::Rem, &[i64::MIN], &[-1]), vec![0]);
        for op in [BinaryOp::Div, BinaryOp::FloorDiv, BinaryOp::Rem] {
            let e = fails(Op::Binary(op), &[i64s(&[2], &[1, 2]), i64s(&[2], &[1, 0])]);
            assert!(e.contains("division by zero"), "{e}");
        }
        // Results wrap to the dtype: i8 -128 / -1.
        let y = ok(Op::Binary(BinaryOp::Div), &[ints(DType::I8, &[1], &[-128]), ints(DType::I8, &[1], &[-1])]);
        assert_eq!(y.to_i64(), vec![-128]);
    }

    #[test]
    fn float_floordiv_and_rem() {
        let a = [7.0, -7.0, 7.0, -7.0, 7.5, -0.5];
        let b = [2.0, 2.0, -2.0, -2.0, 2.0, 2.0];
        assert_eq!(bin_f(BinaryOp::FloorDiv, &a, &b), vec![3.0, -4.0, -4.0, 3.0, 3.0, -1.0]);
        assert_eq!(bin_f(BinaryOp::Rem, &a, &b), vec![1.0, 1.0, -1.0, -1.0, 1.5, 1.5]);
        // Python: 1.0 // 0.1 == 9.0 and 1.0 % 0.1 == 0.09999999999999995.
        assert_eq!(bin_f(BinaryOp::FloorDiv, &[1.0], &[0.1]), vec![9.0]);
        assert_eq!(bin_f(BinaryOp::Rem, &[1.0], &[0.1]), vec![0.09999999999999995]);
        let z = bin_f(BinaryOp::FloorDiv, &[1.0, -1.0, 0.0], &[0.0, 0.0, 0.0]);
        assert_eq!(&z[..2], &[f64::INFINITY, f64::NEG_INFINITY]);
        assert!(z[2].is_nan());
        assert!(bin_f(BinaryOp::Rem, &[1.0], &[0.0])[0].is_nan());
    }

    #[test]
    fn pow_and_div() {
        assert_eq!(bin_f(BinaryOp::Pow, &[2.0, 4.0, -8.0], &[10.0, 0.5, 1.0 / 3.0])[..2], [1024.0, 2.0]);
        assert!(bin_f(BinaryOp::Pow, &[-8.0], &[1.0 / 3.0])[0].is_nan());
        assert_eq!(bin_i(BinaryOp::Pow, &[2, -3, 0, 5], &[10, 3, 0, 1]), vec![1024, -27, 1, 5]);
        let y = ok(Op::Binary(BinaryOp::Pow), &[ints(DType::I32, &[1], &[2]), ints(DType::I32, &[1], &[33])]);
        assert_eq!(y.to_i64(), vec![0]);
        let e = fails(Op::Binary(BinaryOp::Pow), &[i64s(&[1], &[2]), i64s(&[1], &[-1])]);
        assert!(e.contains("negative exponent"), "{e}");
        assert_eq!(bin_f(BinaryOp::Div, &[1.0, 1.0], &[4.0, 0.0]), vec![0.25, f64::INFINITY]);
    }

    #[test]
    fn comparisons_and_logic() {
        let nan = f64::NAN;
        let y = ok(Op::Binary(BinaryOp::Lt), &[f32s(&[3], &[1.0, 2.0, nan]), f32s(&[1], &[2.0])]);
        assert_eq!(y.dtype, DType::Bool);
        assert_eq!(y.to_i64(), vec![1, 0, 0]);
        let ne = ok(Op::Binary(BinaryOp::Ne), &[f32s(&[1], &[nan]), f32s(&[1], &[nan])]);
        assert_eq!(ne.to_i64(), vec![1]);
        assert_eq!(bin_i(BinaryOp::Ge, &[1, 2, 3], &[2, 2, 2]), vec![0, 1, 1]);
        assert_eq!(bin_i(BinaryOp::Eq, &[1, 2], &[2, 2]), vec![0, 1]);
        let (t, f) = (bools(&[4], &[true, true, false, false]), bools(&[4], &[true, false, true, false]));
        assert_eq!(ok(Op::Binary(BinaryOp::And), &[t.clone(), f.clone()]).to_i64(), vec![1, 0, 0, 0]);
        assert_eq!(ok(Op::Binary(BinaryOp::Or), &[t.clone(), f.clone()]).to_i64(), vec![1, 1, 1, 0]);
        assert_eq!(ok(Op::Binary(BinaryOp::Xor), &[t, f]).to_i64(), vec![0, 1, 1, 0]);
        assert_eq!(bin_i(BinaryOp::And, &[12], &[10]), vec![8]);
        assert_eq!(bin_i(BinaryOp::Or, &[12], &[10]), vec![14]);
        assert_eq!(bin_i(BinaryOp::Xor, &[12], &[10]), vec![6]);
    }

    #[test]
    fn where_broadcasts() {
        let c = bools(&[2, 1], &[true, false]);
        let a = f32s(&[3], &[1.0, 2.0, 3.0]);
        let b = f32s(&[], &[-1.0]);
        let y = ok(Op::Where, &[c, a, b]);
        assert_close(&y, &[2, 3], &[1.0, 2.0, 3.0, -1.0, -1.0, -1.0], 0.0);
        let y = ok(Op::Where, &[bools(&[2], &[false, true]), i64s(&[2], &[1, 2]), i64s(&[2], &[3, 4])]);
        assert_eq!(y.to_i64(), vec![3, 2]);
    }

    #[test]
    fn casts() {
        let nan = f64::NAN;
        let x = f32s(&[6], &[1.7, -1.7, 0.0, nan, 300.0, -0.2]);
        assert_eq!(ok(Op::Cast(DType::I64), [x.clone()]).to_i64(), vec![1, -1, 0, 0, 300, 0]);
        assert_eq!(ok(Op::Cast(DType::I8), [x.clone()]).to_i64(), vec![1, -1, 0, 0, 44, 0]);
        assert_eq!(ok(Op::Cast(DType::Bool), [x.clone()]).to_i64(), vec![1, 1, 0, 1, 1, 1]);
        let h = ok(Op::Cast(DType::F16), &[f64s(&[1], &[0.1])]);
        assert_eq!(h.to_f64()[0], half::f16::from_f64(0.1).to_f64());
        let i = i64s(&[3], &[-1, 0, 256]);
        assert_eq!(ok(Op::Cast(DType::U8), [i.clone()]).to_i64(), vec![255, 0, 0]);
        assert_eq!(ok(Op::Cast(DType::Bool), [i.clone()]).to_i64(), vec![1, 0, 1]);
        assert_close(&ok(Op::Cast(DType::F32), &[i]), &[3], &[-1.0, 0.0, 256.0], 0.0);
        let b = bools(&[2], &[true, false]);
        assert_close(&ok(Op::Cast(DType::F32), [b.clone()]), &[2], &[1.0, 0.0], 0.0);
        assert_eq!(ok(Op::Cast(DType::I32), &[b]).to_i64(), vec![1, 0]);
    }
}
