//! Host tensors: a dtype, a static shape and little-endian bytes in row-major order.
//!
//! This is the one exchange format for weights, inputs and outputs across kiln (the frontend
//! produces it, the interpreter and `.npz` I/O consume it). Conversion helpers read and write
//! elements as `f64` or `i64`.

use crate::dtype::DType;
use half::{bf16, f16};
use std::cmp::Ordering;

/// A dense, contiguous tensor in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// `numel * dtype.size_bytes()` bytes, little-endian, row-major.
    pub bytes: Vec<u8>,
}

impl Tensor {
    pub fn numel_of(shape: &[usize]) -> usize {
        shape.iter().product()
    }

    pub fn numel(&self) -> usize {
        Tensor::numel_of(&self.shape)
    }

    /// Builds a tensor from raw bytes; `None` when the byte count does not match.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Option<Tensor> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        (n.checked_mul(dtype.size_bytes())? == bytes.len()).then_some(Tensor { dtype, shape, bytes })
    }

    /// Builds a tensor of `dtype` from `f64` values (rounded / truncated / wrapped as a cast would).
    pub fn from_f64(dtype: DType, shape: Vec<usize>, values: &[f64]) -> Tensor {
        assert_eq!(Tensor::numel_of(&shape), values.len(), "value count must match the shape");
        let mut bytes = Vec::with_capacity(values.len() * dtype.size_bytes());
        for &v in values {
            write_f64(dtype, v, &mut bytes);
        }
        Tensor { dtype, shape, bytes }
    }

    /// Builds a tensor of `dtype` from `i64` values.
    pub fn from_i64(dtype: DType, shape: Vec<usize>, values: &[i64]) -> Tensor {
        assert_eq!(Tensor::numel_of(&shape), values.len(), "value count must match the shape");
        let mut bytes = Vec::with_capacity(values.len() * dtype.size_bytes());
        for &v in values {
            write_i64(dtype, v, &mut bytes);
        }
        Tensor { dtype, shape, bytes }
    }

    /// Every element as `f64` (integers and bools converted exactly where representable).
    pub fn to_f64(&self) -> Vec<f64> {
        let w = self.dtype.size_bytes();
        self.bytes.chunks_exact(w).map(|b| read_f64(self.dtype, b)).collect()
    }

    /// Every element as `i64` (floats truncated toward zero, as a cast would).
    pub fn to_i64(&self) -> Vec<i64> {
        let w = self.dtype.size_bytes();
        self.bytes.chunks_exact(w).map(|b| read_i64(self.dtype, b)).collect()
    }
}

fn read_f64(dtype: DType, b: &[u8]) -> f64 {
    match dtype {
        DType::F32 => f32::from_le_bytes(b.try_into().unwrap()) as f64,
        DType::F64 => f64::from_le_bytes(b.try_into().unwrap()),
        DType::F16 => f16::from_le_bytes(b.try_into().unwrap()).to_f64(),
        DType::BF16 => bf16::from_le_bytes(b.try_into().unwrap()).to_f64(),
        _ => read_i64(dtype, b) as f64,
    }
}

fn read_i64(dtype: DType, b: &[u8]) -> i64 {
    match dtype {
        DType::I64 => i64::from_le_bytes(b.try_into().unwrap()),
        DType::I32 => i32::from_le_bytes(b.try_into().unwrap()) as i64,
        DType::I16 => i16::from_le_bytes(b.try_into().unwrap()) as i64,
        DType::I8 => b[0] as i8 as i64,
        DType::U8 => b[0] as i64,
        DType::Bool => (b[0] != 0) as i64,
        _ => float_to_i64(read_f64(dtype, b)),
    }
}

/// Float to integer as PyTorch casts do on CPU: truncation toward zero; NaN becomes 0 and
/// out-of-range values saturate (Rust's `as`).
pub fn float_to_i64(v: f64) -> i64 {
    v as i64
}

fn write_f64(dtype: DType, v: f64, out: &mut Vec<u8>) {
    match dtype {
        DType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
        DType::F64 => out.extend_from_slice(&v.to_le_bytes()),
        DType::F16 => out.extend_from_slice(&f16::from_f64(v).to_le_bytes()),
        DType::BF16 => out.extend_from_slice(&bf16::from_f64(v).to_le_bytes()),
        DType::Bool => out.push((v != 0.0) as u8),
        _ => write_i64(dtype, float_to_i64(v), out),
    }
}

fn write_i64(dtype: DType, v: i64, out: &mut Vec<u8>) {
    match dtype {
        DType::I64 => out.extend_from_slice(&v.to_le_bytes()),
        DType::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
        DType::I16 => out.extend_from_slice(&(v as i16).to_le_bytes()),
        DType::I8 => out.push(v as i8 as u8),
        DType::U8 => out.push(v as u8),
        DType::Bool => out.push((v != 0) as u8),
        _ => write_f64(dtype, v as f64, out),
    }
}

/// Rounds an `f64` to the precision of a float dtype (identity for `f64`).
pub fn round_to(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::F32 => v as f32 as f64,
        DType::F16 => f16::from_f64(v).to_f64(),
        DType::BF16 => bf16::from_f64(v).to_f64(),
        _ => v,
    }
}

/// Wraps an `i64` to the range of an integer dtype (two's complement), bools to 0/1.
pub fn wrap_to(dtype: DType, v: i64) -> i64 {
    match dtype {
        DType::I32 => v as i32 as i64,
        DType::I16 => v as i16 as i64,
        DType::I8 => v as i8 as i64,
        DType::U8 => v as u8 as i64,
        DType::Bool => (v != 0) as i64,
        _ => v,
    }
}

/// How far a tensor is from a reference: see [`compare`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    pub max_abs: f64,
    /// Largest `|got - want| / |want|` over elements with `want != 0`.
    pub max_rel: f64,
    /// Elements outside `atol + rtol * |want|` (a NaN matches only a NaN).
    pub bad: usize,
}

/// Compares two tensors elementwise; `None` when their shapes differ.
pub fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Option<Comparison> {
    if got.shape != want.shape {
        return None;
    }
    let mut c = Comparison { max_abs: 0.0, max_rel: 0.0, bad: 0 };
    for (a, b) in got.to_f64().into_iter().zip(want.to_f64()) {
        if a.is_nan() || b.is_nan() {
            c.bad += (a.is_nan() != b.is_nan()) as usize;
            continue;
        }
        if a == b {
            continue;
        }
        let diff = (a - b).abs();
        c.max_abs = c.max_abs.max(diff);
        if b != 0.0 {
            c.max_rel = c.max_rel.max(diff / b.abs());
        }
        // Unequal infinities never match; a NaN bound (NaN tolerance) counts as a mismatch.
        let bound = atol + rtol * b.abs();
        let within = a.is_finite() && b.is_finite() && matches!(diff.partial_cmp(&bound), Some(Ordering::Less | Ordering::Equal));
        c.bad += usize::from(!within);
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_counts_what_is_outside_the_tolerance() {
        let want = Tensor::from_f64(DType::F64, vec![5], &[1.0, 100.0, f64::NAN, f64::INFINITY, 0.0]);
        let close = Tensor::from_f64(DType::F64, vec![5], &[1.00001, 100.005, f64::NAN, f64::INFINITY, 1e-6]);
        let c = compare(&close, &want, 1e-4, 1e-5).unwrap();
        assert_eq!(c.bad, 0);
        let far = Tensor::from_f64(DType::F64, vec![5], &[1.1, 100.0, 0.0, f64::NEG_INFINITY, 1e-3]);
        assert_eq!(compare(&far, &want, 1e-4, 1e-5).unwrap().bad, 4);
        let other_shape = Tensor::from_f64(DType::F64, vec![1, 5], &[0.0; 5]);
        assert!(compare(&other_shape, &want, 1e-4, 1e-5).is_none());
    }
}
