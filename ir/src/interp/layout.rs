//! Data movement and constants: reshape, permute, expand, slice, concat, pad, gather, iota, full.

use super::value::{
    broadcast_offsets, is_float_storage, numel, scalar_to_int, split_at_axis, strided_offsets, strides, Data, Value, R,
};
use crate::dtype::DType;

/// Same elements in row-major order, new shape.
pub(crate) fn reshape(x: &Value, shape: Vec<usize>) -> R<Value> {
    if numel(&shape)? != x.numel() {
        return Err(format!("cannot reshape {:?} ({} elements) to {shape:?}", x.shape, x.numel()));
    }
    Value::new(x.dtype, shape, x.data.clone())
}

/// `y.shape[i] = x.shape[perm[i]]`.
pub(crate) fn permute(x: &Value, perm: &[usize]) -> R<Value> {
    let rank = x.shape.len();
    let mut seen = vec![false; rank];
    for &p in perm {
        if p >= rank || std::mem::replace(&mut seen[p], true) {
            return Err(format!("{perm:?} is not a permutation of rank {rank}"));
        }
    }
    if perm.len() != rank {
        return Err(format!("{perm:?} is not a permutation of rank {rank}"));
    }
    let st = strides(&x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let pst: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    let offsets = strided_offsets(&shape, &pst, 0)?;
    Value::new(x.dtype, shape, x.data.take(&offsets))
}

/// Broadcast to `shape` (same rank; dims of size 1 repeat).
pub(crate) fn expand(x: &Value, shape: Vec<usize>) -> R<Value> {
    if shape.len() != x.shape.len() {
        return Err(format!("cannot expand {:?} to {shape:?}: ranks differ", x.shape));
    }
    let offsets = broadcast_offsets(&x.shape, &shape)?;
    Value::new(x.dtype, shape, x.data.take(&offsets))
}

/// Elements `start, start + step, ...` below `end` along `axis`.
pub(crate) fn slice(x: &Value, axis: usize, start: i64, end: i64, step: i64) -> R<Value> {
    let rank = x.shape.len();
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    let dim = x.shape[axis] as i64;
    if !(0 <= start && start <= end && end <= dim) {
        return Err(format!("bounds {start}..{end} are not within 0..={dim}"));
    }
    if step < 1 {
        return Err(format!("step {step} must be positive"));
    }
    let len = ((end - start) + step - 1) / step;
    let st = strides(&x.shape);
    let mut shape = x.shape.clone();
    shape[axis] = len as usize;
    let mut sst = st.clone();
    // With len >= 2, step < end - start <= dim, so the product stays in bounds.
    sst[axis] = if len >= 2 { st[axis] * step as usize } else { 0 };
    let offsets = strided_offsets(&shape, &sst, start as usize * st[axis])?;
    Value::new(x.dtype, shape, x.data.take(&offsets))
}

/// Joins operands along `axis`; all other dims must be equal.
pub(crate) fn concat(xs: &[&Value], axis: usize) -> R<Value> {
    let first = xs.first().ok_or("expects at least one operand")?;
    let rank = first.shape.len();
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    let mut total = 0usize;
    for x in xs {
        if x.dtype != first.dtype || x.shape.len() != rank {
            return Err(format!(
                "operands differ in dtype or rank: {}{:?} and {}{:?}",
                first.dtype, first.shape, x.dtype, x.shape
            ));
        }
        for i in 0..rank {
            if i != axis && x.shape[i] != first.shape[i] {
                return Err(format!("operands differ at dim {i}: {:?} and {:?}", first.shape, x.shape));
            }
        }
        total = total.checked_add(x.shape[axis]).ok_or("concatenated dim overflows")?;
    }
    let mut shape = first.shape.clone();
    shape[axis] = total;
    let n = numel(&shape)?;
    let outer: usize = first.shape[..axis].iter().product();
    let inner: usize = first.shape[axis + 1..].iter().product();
    fn join<T: Copy>(parts: &[(&[T], usize)], outer: usize, n: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(n);
        for o in 0..outer {
            for &(p, chunk) in parts {
                out.extend_from_slice(&p[o * chunk..(o + 1) * chunk]);
            }
        }
        out
    }
    let data = if is_float_storage(first.dtype) {
        let parts = xs.iter().map(|x| Ok((x.as_floats("operand")?, x.shape[axis] * inner))).collect::<R<Vec<_>>>()?;
        Data::Float(join(&parts, outer, n))
    } else {
        let parts = xs.iter().map(|x| Ok((x.as_ints("operand")?, x.shape[axis] * inner))).collect::<R<Vec<_>>>()?;
        Data::Int(join(&parts, outer, n))
    };
    Value::new(first.dtype, shape, data)
}

/// Constant padding, `pads[i] = (before, after)`; negative amounts crop.
pub(crate) fn pad(x: &Value, pads: &[(i64, i64)], value: f64) -> R<Value> {
    let rank = x.shape.len();
    if pads.len() != rank {
        return Err(format!("{} pad pairs for rank {rank}", pads.len()));
    }
    let mut shape = Vec::with_capacity(rank);
    for (i, (&d, &(lo, hi))) in x.shape.iter().zip(pads).enumerate() {
        let out = d as i128 + lo as i128 + hi as i128;
        if out < 0 || out > usize::MAX as i128 {
            return Err(format!("dim {i} of size {d} padded by ({lo}, {hi}) gives {out}"));
        }
        shape.push(out as usize);
    }
    let n = numel(&shape)?;
    let st = strides(&x.shape);
    // Source offset of every output element, or None for padding.
    let mut src: Vec<Option<usize>> = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    for _ in 0..n {
        let mut off = Some(0usize);
        for d in 0..rank {
            let s = idx[d] as i128 - pads[d].0 as i128;
            if s < 0 || s >= x.shape[d] as i128 {
                off = None;
                break;
            }
            off = off.map(|o| o + s as usize * st[d]);
        }
        src.push(off);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    let data = match &x.data {
        Data::Float(v) => Data::Float(src.iter().map(|s| s.map_or(value, |o| v[o])).collect()),
        Data::Int(v) => {
            let fill = scalar_to_int(x.dtype, value);
            Data::Int(src.iter().map(|s| s.map_or(fill, |o| v[o])).collect())
        }
    };
    Value::new(x.dtype, shape, data)
}

/// `data[:axis] ++ idx.shape ++ data[axis+1:]`: slices of `data` along `axis` at each index;
/// negative indices count from the end (once); anything else out of range is an error.
pub(crate) fn gather(data: &Value, idx: &Value, axis: usize) -> R<Value> {
    if !idx.dtype.is_int() {
        return Err(format!("indices must be integers, got {}", idx.dtype));
    }
    let (outer, dim, inner) = split_at_axis(&data.shape, axis)?;
    let indices = idx
        .as_ints("indices")?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            if j < 0 || j >= dim as i64 {
                Err(format!("index {i} is out of range for dim {axis} of size {dim}"))
            } else {
                Ok(j as usize)
            }
        })
        .collect::<R<Vec<usize>>>()?;
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&idx.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    let n = numel(&shape)?;
    let mut offsets = Vec::with_capacity(n);
    for o in 0..outer {
        for &j in &indices {
            let base = (o * dim + j) * inner;
            offsets.extend(base..base + inner);
        }
    }
    Value::new(data.dtype, shape, data.data.take(&offsets))
}

/// A scalar in a dtype's storage, converted as a cast would.
fn constant(dtype: DType, v: f64) -> Data {
    if is_float_storage(dtype) {
        Data::Float(vec![v])
    } else {
        Data::Int(vec![scalar_to_int(dtype, v)])
    }
}

/// `start + step * i` where `i` is the index along `axis`, converted to `dtype` as a cast would.
pub(crate) fn iota(shape: Vec<usize>, axis: usize, start: f64, step: f64, dtype: DType) -> R<Value> {
    let (outer, dim, inner) = split_at_axis(&shape, axis)?;
    let n = numel(&shape)?;
    let mut vals = Vec::with_capacity(n);
    for _ in 0..outer {
        for i in 0..dim {
            let v = start + step * i as f64;
            vals.resize(vals.len() + inner, v);
        }
    }
    let data = if is_float_storage(dtype) {
        Data::Float(vals)
    } else {
        Data::Int(vals.into_iter().map(|v| scalar_to_int(dtype, v)).collect())
    };
    Value::new(dtype, shape, data)
}

/// Every element `value`, converted to `dtype` as a cast would.
pub(crate) fn full(shape: Vec<usize>, value: f64, dtype: DType) -> R<Value> {
    let n = numel(&shape)?;
    let data = match constant(dtype, value) {
        Data::Float(v) => Data::Float(vec![v[0]; n]),
        Data::Int(v) => Data::Int(vec![v[0]; n]),
    };
    Value::new(dtype, shape, data)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::{DType, Dim, Op};

    const NONE: [crate::Tensor; 0] = [];

    fn dims(v: &[i64]) -> Vec<Dim> {
        v.iter().map(|&d| Dim::constant(d)).collect()
    }

    #[test]
    fn reshape_permute_expand() {
        let x = arange(&[2, 3]);
        assert_close(
            &ok(Op::Reshape { shape: dims(&[3, 2]) }, [x.clone()]),
            &[3, 2],
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            0.0,
        );
        assert_close(&ok(Op::Permute { perm: vec![1, 0] }, [x.clone()]), &[3, 2], &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0], 0.0);
        let x3 = arange(&[2, 3, 4]);
        let y = ok(Op::Permute { perm: vec![2, 0, 1] }, &[x3]);
        assert_eq!(y.shape, vec![4, 2, 3]);
        // y[a, b, c] = x[b, c, a] = 12b + 4c + a.
        let want: Vec<f64> =
            (0..4).flat_map(|a| (0..2).flat_map(move |b| (0..3).map(move |c| (12 * b + 4 * c + a) as f64))).collect();
        assert_close(&y, &[4, 2, 3], &want, 0.0);
        let y = ok(Op::Expand { shape: dims(&[2, 2, 3]) }, &[f32s(&[1, 2, 1], &[1.0, 2.0])]);
        assert_close(&y, &[2, 2, 3], &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0], 0.0);
    }

    #[test]
    fn slices() {
        let x = arange(&[2, 7]);
        let sl = |start: i64, end: i64, step: i64| Op::Slice {
            axis: 1,
            start: Dim::constant(start),
            end: Dim::constant(end),
            step,
        };
        assert_close(&ok(sl(1, 6, 2), [x.clone()]), &[2, 3], &[1.0, 3.0, 5.0, 8.0, 10.0, 12.0], 0.0);
        assert_close(&ok(sl(2, 4, 1), [x.clone()]), &[2, 2], &[2.0, 3.0, 9.0, 10.0], 0.0);
        assert_close(&ok(sl(6, 7, 5), [x.clone()]), &[2, 1], &[6.0, 13.0], 0.0);
        assert_close(&ok(sl(3, 3, 1), [x.clone()]), &[2, 0], &[], 0.0);
        assert_close(&ok(sl(0, 7, 3), [x.clone()]), &[2, 3], &[0.0, 3.0, 6.0, 7.0, 10.0, 13.0], 0.0);
        let y = ok(Op::Slice { axis: 0, start: Dim::constant(1), end: Dim::constant(2), step: 1 }, &[x]);
        assert_close(&y, &[1, 7], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0], 0.0);
    }

    #[test]
    fn concats() {
        let a = arange(&[2, 2]);
        let b = f32s(&[2, 1], &[9.0, 8.0]);
        assert_close(&ok(Op::Concat { axis: 1 }, &[a.clone(), b]), &[2, 3], &[0.0, 1.0, 9.0, 2.0, 3.0, 8.0], 0.0);
        let c = f32s(&[1, 2], &[7.0, 6.0]);
        assert_close(
            &ok(Op::Concat { axis: 0 }, &[a.clone(), c, a]),
            &[5, 2],
            &[0.0, 1.0, 2.0, 3.0, 7.0, 6.0, 0.0, 1.0, 2.0, 3.0],
            0.0,
        );
        let y = ok(Op::Concat { axis: 0 }, &[i64s(&[1], &[1]), i64s(&[0], &[]), i64s(&[2], &[2, 3])]);
        assert_ints(&y, &[3], &[1, 2, 3]);
    }

    #[test]
    fn pads_and_crops() {
        let x = arange(&[2, 3]);
        let y = ok(Op::Pad { pads: vec![(1, 0), (-1, 2)], value: -1.0 }, &[x]);
        assert_close(&y, &[3, 4], &[-1.0, -1.0, -1.0, -1.0, 1.0, 2.0, -1.0, -1.0, 4.0, 5.0, -1.0, -1.0], 0.0);
        let y = ok(Op::Pad { pads: vec![(1, 1)], value: 2.7 }, &[i64s(&[1], &[5])]);
        assert_ints(&y, &[3], &[2, 5, 2]);
        let y = ok(Op::Pad { pads: vec![(-1, -1)], value: 0.0 }, &[i64s(&[3], &[1, 2, 3])]);
        assert_ints(&y, &[1], &[2]);
    }

    #[test]
    fn gathers() {
        let table = arange(&[4, 2]);
        let idx = i64s(&[2, 2], &[3, -1, 0, -4]);
        let y = ok(Op::Gather { axis: 0 }, &[table.clone(), idx]);
        assert_close(&y, &[2, 2, 2], &[6.0, 7.0, 6.0, 7.0, 0.0, 1.0, 0.0, 1.0], 0.0);
        let y = ok(Op::Gather { axis: 1 }, &[table.clone(), ints(DType::I32, &[3], &[1, 0, -2])]);
        assert_close(&y, &[4, 3], &[1.0, 0.0, 0.0, 3.0, 2.0, 2.0, 5.0, 4.0, 4.0, 7.0, 6.0, 6.0], 0.0);
        // Scalar index removes the axis.
        let y = ok(Op::Gather { axis: 0 }, &[table.clone(), i64s(&[], &[2])]);
        assert_close(&y, &[2], &[4.0, 5.0], 0.0);
        for bad in [4, -5] {
            let e = fails(Op::Gather { axis: 0 }, &[table.clone(), i64s(&[1], &[bad])]);
            assert!(e.contains(&format!("index {bad} is out of range")), "{e}");
        }
    }

    #[test]
    fn iota_and_full() {
        let y = ok(Op::Iota { shape: dims(&[2, 3]), axis: 1, start: 1.0, step: 0.5, dtype: DType::F32 }, NONE);
        assert_close(&y, &[2, 3], &[1.0, 1.5, 2.0, 1.0, 1.5, 2.0], 0.0);
        let y = ok(Op::Iota { shape: dims(&[3, 2]), axis: 0, start: 0.0, step: -1.5, dtype: DType::I64 }, NONE);
        assert_ints(&y, &[3, 2], &[0, 0, -1, -1, -3, -3]);
        let y = ok(Op::Full { shape: dims(&[2]), value: 0.1, dtype: DType::F16 }, NONE);
        assert_eq!(y.to_f64(), vec![half::f16::from_f64(0.1).to_f64(); 2]);
        let y = ok(Op::Full { shape: dims(&[2]), value: 300.0, dtype: DType::U8 }, NONE);
        assert_ints(&y, &[2], &[44, 44]);
        let y = ok(Op::Full { shape: vec![], value: f64::NAN, dtype: DType::Bool }, NONE);
        assert_ints(&y, &[], &[1]);
        let y = ok(Op::Full { shape: dims(&[1]), value: f64::NEG_INFINITY, dtype: DType::F32 }, NONE);
        assert_eq!(y.to_f64(), vec![f64::NEG_INFINITY]);
    }

    #[test]
    fn huge_shapes_are_errors() {
        let e = fails(Op::Full { shape: dims(&[1 << 20, 1 << 20]), value: 0.0, dtype: DType::F32 }, NONE);
        assert!(e.contains("limit"), "{e}");
    }
}
