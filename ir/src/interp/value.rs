//! The interpreter's run-time values and the shape/index helpers every op shares.
//!
//! A [`Value`] is a dtype, a concrete row-major shape and its elements, held as `f64` for the
//! float dtypes (`f32 f64 f16 bf16`) and as `i64` for the integers and `bool` (0 or 1). After
//! every op the elements are brought back to the dtype with [`Value::normalize`]: floats are
//! rounded to the dtype's precision, integers wrapped to its range.

use crate::dtype::DType;
use crate::tensor::{float_to_i64, round_to, wrap_to, Tensor};

/// Results of op implementations: a plain reason, to which the caller adds the node's name.
pub(crate) type R<T> = Result<T, String>;

/// The largest element count the interpreter will allocate for one value (2^31 elements, 16 GiB
/// of `f64`). Bigger shapes are an error, not an allocation failure.
pub(crate) const MAX_NUMEL: usize = 1 << 31;

/// Elements of a value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Data {
    /// `f32 f64 f16 bf16`.
    Float(Vec<f64>),
    /// Integers and `bool` (0 / 1).
    Int(Vec<i64>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::Float(v) => v.len(),
            Data::Int(v) => v.len(),
        }
    }

    /// The elements at `offsets`, in that order.
    pub fn take(&self, offsets: &[usize]) -> Data {
        match self {
            Data::Float(v) => Data::Float(offsets.iter().map(|&o| v[o]).collect()),
            Data::Int(v) => Data::Int(offsets.iter().map(|&o| v[o]).collect()),
        }
    }
}

/// A concrete tensor during interpretation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Value {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Data,
}

/// Whether a dtype's elements live in [`Data::Float`].
pub(crate) fn is_float_storage(dtype: DType) -> bool {
    dtype.is_float()
}

/// A scalar `f64` converted to `dtype` as a cast would: rounded for floats, truncated toward
/// zero and wrapped for integers, `!= 0` for bool (NaN is true).
pub(crate) fn scalar_to_int(dtype: DType, v: f64) -> i64 {
    if dtype == DType::Bool {
        (v != 0.0) as i64
    } else {
        wrap_to(dtype, float_to_i64(v))
    }
}

impl Value {
    /// Builds a value and brings its elements to the dtype (rounding / wrapping).
    pub fn new(dtype: DType, shape: Vec<usize>, data: Data) -> R<Value> {
        let mut v = Value { dtype, shape, data };
        v.normalize()?;
        Ok(v)
    }

    pub fn floats(dtype: DType, shape: Vec<usize>, data: Vec<f64>) -> R<Value> {
        Value::new(dtype, shape, Data::Float(data))
    }

    pub fn ints(dtype: DType, shape: Vec<usize>, data: Vec<i64>) -> R<Value> {
        Value::new(dtype, shape, Data::Int(data))
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Checks that the storage kind and element count fit the dtype and shape, then rounds
    /// floats to the dtype's precision and wraps integers to its range.
    pub fn normalize(&mut self) -> R<()> {
        let n = numel(&self.shape)?;
        if n != self.data.len() {
            return Err(format!("internal: {} elements for shape {:?}", self.data.len(), self.shape));
        }
        let dtype = self.dtype;
        match (&mut self.data, is_float_storage(dtype)) {
            (Data::Float(v), true) => {
                if dtype != DType::F64 {
                    v.iter_mut().for_each(|x| *x = round_to(dtype, *x));
                }
            }
            (Data::Int(v), false) => {
                if dtype != DType::I64 {
                    v.iter_mut().for_each(|x| *x = wrap_to(dtype, *x));
                }
            }
            _ => return Err(format!("internal: wrong storage for dtype {dtype}")),
        }
        Ok(())
    }

    /// Float elements, or an error naming `what` when the value is not a float.
    pub fn as_floats(&self, what: &str) -> R<&[f64]> {
        match &self.data {
            Data::Float(v) => Ok(v),
            Data::Int(_) => Err(format!("{what} must be a float, got {}", self.dtype)),
        }
    }

    /// Integer / bool elements, or an error naming `what` when the value is a float.
    pub fn as_ints(&self, what: &str) -> R<&[i64]> {
        match &self.data {
            Data::Int(v) => Ok(v),
            Data::Float(_) => Err(format!("{what} must be an integer or bool, got {}", self.dtype)),
        }
    }

    /// Reads a host tensor, checking its byte count.
    pub fn from_tensor(t: &Tensor) -> R<Value> {
        let n = numel(&t.shape)?;
        if n.checked_mul(t.dtype.size_bytes()) != Some(t.bytes.len()) {
            return Err(format!("{} bytes do not hold a {}{:?} tensor", t.bytes.len(), t.dtype, t.shape));
        }
        let data = if is_float_storage(t.dtype) { Data::Float(t.to_f64()) } else { Data::Int(t.to_i64()) };
        Value::new(t.dtype, t.shape.clone(), data)
    }

    /// Writes the value as a host tensor.
    pub fn to_tensor(&self) -> Tensor {
        match &self.data {
            Data::Float(v) => Tensor::from_f64(self.dtype, self.shape.clone(), v),
            Data::Int(v) => Tensor::from_i64(self.dtype, self.shape.clone(), v),
        }
    }
}

/// Element count of a shape, with overflow and [`MAX_NUMEL`] checks.
pub(crate) fn numel(shape: &[usize]) -> R<usize> {
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))?;
    if n > MAX_NUMEL {
        return Err(format!("shape {shape:?} has {n} elements, more than the interpreter's limit of {MAX_NUMEL}"));
    }
    Ok(n)
}

/// Row-major strides of a shape (in elements).
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The largest stride, padding, dilation or kernel size the interpreter accepts (2^30), which
/// keeps all index arithmetic far from overflow.
pub(crate) const MAX_ATTR: i64 = 1 << 30;

/// Checks a window attribute (`stride`, `padding`, ...) lies in `[min, MAX_ATTR]`.
pub(crate) fn attr(v: i64, what: &str, min: i64) -> R<usize> {
    if v < min || v > MAX_ATTR {
        return Err(format!("{what} {v} is out of range [{min}, {MAX_ATTR}]"));
    }
    Ok(v as usize)
}

/// For every element of an output of `shape` in row-major order, the offset `base + sum(idx[d] *
/// strides[d])` into some source. Strides may be 0 (broadcast). The caller makes sure every
/// offset is in bounds of the source.
pub(crate) fn strided_offsets(shape: &[usize], strides: &[usize], base: usize) -> R<Vec<usize>> {
    debug_assert_eq!(shape.len(), strides.len());
    let n = numel(shape)?;
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok(out);
    }
    let rank = shape.len();
    let mut idx = vec![0usize; rank];
    let mut off = base;
    for _ in 0..n {
        out.push(off);
        // Odometer increment from the innermost dim.
        let mut d = rank;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            off += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// NumPy broadcasting of concrete shapes (aligned at the right; a dim of 1 stretches).
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out.push(match (da, db) {
            _ if da == db => da,
            (1, _) => db,
            (_, 1) => da,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        });
    }
    Ok(out)
}

/// For every element of `out` (row-major), the flat index into a tensor of shape `inp`
/// broadcast to `out`. `inp` must broadcast to `out`.
pub(crate) fn broadcast_offsets(inp: &[usize], out: &[usize]) -> R<Vec<usize>> {
    if inp.len() > out.len() {
        return Err(format!("shape {inp:?} does not broadcast to {out:?}"));
    }
    let lead = out.len() - inp.len();
    let in_strides = strides(inp);
    let mut st = vec![0usize; out.len()];
    for (i, &d) in inp.iter().enumerate() {
        if d == out[lead + i] {
            st[lead + i] = in_strides[i];
        } else if d != 1 {
            return Err(format!("shape {inp:?} does not broadcast to {out:?}"));
        }
    }
    strided_offsets(out, &st, 0)
}

/// Splits a shape at `axis` into (outer, dim, inner) element counts.
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> R<(usize, usize, usize)> {
    if axis >= shape.len() {
        return Err(format!("axis {axis} out of range for rank {}", shape.len()));
    }
    Ok((shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product()))
}

/// Element types that matmul and conv accumulate in: `f64` for floats, wrapping `i64`.
pub(crate) trait Acc: Copy {
    const ZERO: Self;
    fn mul_add(self, a: Self, b: Self) -> Self;
}

impl Acc for f64 {
    const ZERO: f64 = 0.0;
    fn mul_add(self, a: f64, b: f64) -> f64 {
        // Separate multiply and add (no fused rounding): the obvious reference semantics.
        self + a * b
    }
}

impl Acc for i64 {
    const ZERO: i64 = 0;
    fn mul_add(self, a: i64, b: i64) -> i64 {
        self.wrapping_add(a.wrapping_mul(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_broadcast() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strided_offsets(&[2, 2], &[1, 2], 0).unwrap(), vec![0, 2, 1, 3]);
        assert_eq!(broadcast_shapes(&[3, 1], &[4]).unwrap(), vec![3, 4]);
        assert!(broadcast_shapes(&[3], &[4]).is_err());
        assert_eq!(broadcast_offsets(&[3, 1], &[2, 3, 2]).unwrap(), vec![0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]);
        assert_eq!(strided_offsets(&[0, 3], &[3, 1], 0).unwrap(), Vec::<usize>::new());
        assert_eq!(strided_offsets(&[], &[], 5).unwrap(), vec![5]);
        assert!(numel(&[usize::MAX, 2]).is_err());
    }

    #[test]
    fn tensor_round_trip_rounds() {
        let t = Tensor::from_f64(DType::F16, vec![2], &[1.0, 0.1]);
        let v = Value::from_tensor(&t).unwrap();
        assert_eq!(v.as_floats("x").unwrap()[1], half::f16::from_f64(0.1).to_f64());
        assert_eq!(v.to_tensor(), t);
        let bad = Tensor { dtype: DType::F32, shape: vec![3], bytes: vec![0; 4] };
        assert!(Value::from_tensor(&bad).is_err());
    }
}
