//! The interpreter's elementwise semantics on single values, for other evaluators (the kernel
//! IR evaluator) that must compute exactly what the interpreter computes.

use super::elementwise;
use super::value::{Data, Value};
use crate::dtype::DType;
use crate::op::{BinaryOp, UnaryOp};

/// One element: floats as `f64` (already rounded to their dtype), integers and bools as `i64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    F(f64),
    I(i64),
}

fn value(dtype: DType, x: Num) -> Value {
    let data = match x {
        Num::F(f) if dtype.is_float() => Data::Float(vec![f]),
        Num::F(f) => Data::Int(vec![super::value::scalar_to_int(dtype, f)]),
        Num::I(i) if dtype.is_float() => Data::Float(vec![crate::tensor::round_to(dtype, i as f64)]),
        Num::I(i) => Data::Int(vec![crate::tensor::wrap_to(dtype, i)]),
    };
    Value { dtype, shape: vec![], data }
}

fn num(v: &Value) -> Num {
    match &v.data {
        Data::Float(f) => Num::F(f[0]),
        Data::Int(i) => Num::I(i[0]),
    }
}

/// `op x` for an element of `dtype`; returns the result's dtype and value.
pub fn unary(op: UnaryOp, dtype: DType, x: Num) -> Result<(DType, Num), String> {
    let r = elementwise::unary(op, &value(dtype, x))?;
    Ok((r.dtype, num(&r)))
}

/// `a op b` for elements of `dtype`.
pub fn binary(op: BinaryOp, dtype: DType, a: Num, b: Num) -> Result<(DType, Num), String> {
    let r = elementwise::binary(op, &value(dtype, a), &value(dtype, b))?;
    Ok((r.dtype, num(&r)))
}

/// Converts an element of `from` to `to` with the IR's cast rules.
pub fn cast(from: DType, to: DType, x: Num) -> Result<Num, String> {
    Ok(num(&elementwise::cast(&value(from, x), to)?))
}
