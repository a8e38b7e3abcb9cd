//! Layout ATen ops: views, permutations, slicing, joining, padding and indexing.

use super::elementwise::{promote, self_tensor};
use super::{arg, arg_or_pos, invalid, unsupported, LResult, Lowered, Lowerer};
use crate::export::{Arg, ExportNode};
use kiln_ir::{BinaryOp, DType, Dim, Op, ValueId};

fn base(n: &ExportNode) -> &str {
    super::aten_base_name(&n.target).map(|(b, _)| b).unwrap_or("")
}

/// Resolves a view's target sizes, including one `-1`.
fn resolve_view(l: &Lowerer, x: ValueId, sizes: Vec<Dim>) -> LResult<Vec<Dim>> {
    let holes: Vec<usize> = sizes.iter().enumerate().filter(|(_, d)| d.is_const(-1)).map(|(i, _)| i).collect();
    match holes.as_slice() {
        [] => Ok(sizes),
        [h] => {
            let total = Dim::product(&l.shape(x));
            let known = Dim::product(sizes.iter().enumerate().filter(|(i, _)| i != h).map(|(_, d)| d));
            let inferred = if known.is_const(0) { Some(Dim::constant(0)) } else { total.div_exact(&known) };
            match inferred {
                Some(d) => {
                    let mut out = sizes;
                    out[*h] = d;
                    Ok(out)
                }
                None => unsupported("a view whose -1 size kiln cannot infer symbolically"),
            }
        }
        _ => invalid("a view with more than one -1"),
    }
}

pub(crate) fn view(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let sizes = l.dims_arg(n, &["size", "shape"], 1)?;
    let shape = resolve_view(l, x, sizes)?;
    Ok(Lowered::one(l.reshape(x, shape, n)?))
}

pub(crate) fn flatten(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let shape = l.shape(x);
    if shape.is_empty() {
        return Ok(Lowered::one(l.reshape(x, vec![Dim::constant(1)], n)?));
    }
    let start = l.axis(l.int_arg(n, &["start_dim"], 1, Some(0))?, shape.len())?;
    let end = l.axis(l.int_arg(n, &["end_dim"], 2, Some(-1))?, shape.len())?;
    if start > end {
        return invalid("flatten start_dim is after end_dim");
    }
    let mut out = shape[..start].to_vec();
    out.push(Dim::product(&shape[start..=end]));
    out.extend_from_slice(&shape[end + 1..]);
    Ok(Lowered::one(l.reshape(x, out, n)?))
}

pub(crate) fn unflatten(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let shape = l.shape(x);
    let axis = l.axis(l.int_arg(n, &["dim"], 1, None)?, shape.len())?;
    let mut sizes = l.dims_arg(n, &["sizes"], 2)?;
    if let Some(h) = sizes.iter().position(|d| d.is_const(-1)) {
        let known = Dim::product(sizes.iter().enumerate().filter(|(i, _)| *i != h).map(|(_, d)| d));
        sizes[h] = shape[axis].div_exact(&known).ok_or(super::LowerError::Unsupported("unflatten size kiln cannot infer".into()))?;
    }
    let mut out = shape[..axis].to_vec();
    out.extend(sizes);
    out.extend_from_slice(&shape[axis + 1..]);
    Ok(Lowered::one(l.reshape(x, out, n)?))
}

pub(crate) fn unsqueeze(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let mut shape = l.shape(x);
    let axis = l.axis(l.int_arg(n, &["dim"], 1, None)?, shape.len() + 1)?;
    shape.insert(axis, Dim::constant(1));
    Ok(Lowered::one(l.reshape(x, shape, n)?))
}

pub(crate) fn squeeze(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let shape = l.shape(x);
    let axes: Vec<usize> = match arg_or_pos(n, &["dim"], 1) {
        None => (0..shape.len()).collect(),
        Some(_) => l.ints_arg(n, &["dim"], 1, None)?.into_iter().map(|a| l.axis(a, shape.len())).collect::<LResult<_>>()?,
    };
    let out: Vec<Dim> = shape.iter().enumerate().filter(|(i, d)| !(axes.contains(i) && d.is_const(1))).map(|(_, d)| d.clone()).collect();
    Ok(Lowered::one(l.reshape(x, out, n)?))
}

pub(crate) fn permute(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let r = l.rank(x);
    let perm = l.ints_arg(n, &["dims"], 1, None)?.into_iter().map(|a| l.axis(a, r)).collect::<LResult<Vec<_>>>()?;
    Ok(Lowered::one(l.permute(x, perm, n)?))
}

/// `transpose(x, d0, d1)` and `t(x)`.
pub(crate) fn transpose(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let r = l.rank(x);
    if r < 2 {
        return Ok(Lowered::one(x));
    }
    let (a, b) = if base(n) == "t" {
        (0, 1)
    } else {
        (l.axis(l.int_arg(n, &["dim0"], 1, None)?, r)?, l.axis(l.int_arg(n, &["dim1"], 2, None)?, r)?)
    };
    let mut perm: Vec<usize> = (0..r).collect();
    perm.swap(a, b);
    Ok(Lowered::one(l.permute(x, perm, n)?))
}

pub(crate) fn expand_value(l: &mut Lowerer, x: ValueId, sizes: Vec<Dim>, n: &ExportNode) -> LResult<ValueId> {
    let mut shape = l.shape(x);
    if sizes.len() < shape.len() {
        return invalid("expand to fewer dims than the input has");
    }
    let lead = sizes.len() - shape.len();
    let mut x = x;
    if lead > 0 {
        let mut s = vec![Dim::constant(1); lead];
        s.extend(shape);
        x = l.reshape(x, s.clone(), n)?;
        shape = s;
    }
    let target: Vec<Dim> = sizes.into_iter().zip(&shape).map(|(t, s)| if t.is_const(-1) { s.clone() } else { t }).collect();
    if target == shape {
        return Ok(x);
    }
    l.node(Op::Expand { shape: target }, vec![x], n)
}

pub(crate) fn expand(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let sizes = l.dims_arg(n, &["size"], 1)?;
    Ok(Lowered::one(expand_value(l, x, sizes, n)?))
}

/// Normalizes one slice bound against `dim` (negative counts from the end; clamped).
fn bound(v: Option<Dim>, default: Dim, dim: &Dim) -> Dim {
    let Some(v) = v else { return default };
    match (v.as_const(), dim.as_const()) {
        (Some(b), Some(d)) => Dim::constant(if b < 0 { (b + d).max(0) } else { b.min(d) }),
        (Some(b), None) if b < 0 => dim.add(&Dim::constant(b)),
        // Past-the-end sentinels (INT64_MAX) on a symbolic dim mean "to the end".
        (Some(b), None) if b >= i64::MAX / 4 => dim.clone(),
        _ => v,
    }
}

pub(crate) fn slice_value(l: &mut Lowerer, x: ValueId, axis: usize, start: Dim, end: Dim, step: i64, n: &ExportNode) -> LResult<ValueId> {
    let dim = l.shape(x)[axis].clone();
    if start.is_const(0) && end == dim && step == 1 {
        return Ok(x);
    }
    l.node(Op::Slice { axis, start, end, step }, vec![x], n)
}

pub(crate) fn slice(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let shape = l.shape(x);
    let axis = l.axis(l.int_arg(n, &["dim"], 1, Some(0))?, shape.len())?;
    let step = l.int_arg(n, &["step"], 4, Some(1))?;
    if step < 1 {
        return invalid(format!("slice step {step} must be positive"));
    }
    let dim = &shape[axis];
    let start = bound(l.dim_arg(n, &["start"], 2)?, Dim::constant(0), dim);
    let mut end = bound(l.dim_arg(n, &["end"], 3)?, dim.clone(), dim);
    if let (Some(s), Some(e)) = (start.as_const(), end.as_const()) {
        if e < s {
            end = Dim::constant(s);
        }
    }
    Ok(Lowered::one(slice_value(l, x, axis, start, end, step, n)?))
}

fn drop_axis(l: &mut Lowerer, x: ValueId, axis: usize, n: &ExportNode) -> LResult<ValueId> {
    let mut shape = l.shape(x);
    shape.remove(axis);
    l.reshape(x, shape, n)
}

pub(crate) fn select(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let shape = l.shape(x);
    let axis = l.axis(l.int_arg(n, &["dim"], 1, None)?, shape.len())?;
    let index = l.dim_arg(n, &["index"], 2)?.ok_or(super::LowerError::Invalid("select without an index".into()))?;
    let start = match index.as_const() {
        Some(i) if i < 0 => shape[axis].add(&Dim::constant(i)),
        _ => index,
    };
    let end = start.add(&Dim::constant(1));
    let s = l.node(Op::Slice { axis, start, end, step: 1 }, vec![x], n)?;
    Ok(Lowered::one(drop_axis(l, s, axis, n)?))
}

pub(crate) fn narrow(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let shape = l.shape(x);
    let axis = l.axis(l.int_arg(n, &["dim"], 1, None)?, shape.len())?;
    let start = l.dim_arg(n, &["start"], 2)?.unwrap_or(Dim::constant(0));
    let start = bound(Some(start), Dim::constant(0), &shape[axis]);
    let len = l.dim_arg(n, &["length"], 3)?.ok_or(super::LowerError::Invalid("narrow without a length".into()))?;
    let end = start.add(&len);
    Ok(Lowered::one(slice_value(l, x, axis, start, end, 1, n)?))
}

/// Slices `x` along `axis` into pieces of the given sizes.
fn pieces(l: &mut Lowerer, x: ValueId, axis: usize, sizes: &[Dim], n: &ExportNode) -> LResult<Vec<Option<ValueId>>> {
    let mut start = Dim::constant(0);
    let mut out = Vec::new();
    for s in sizes {
        let end = start.add(s);
        out.push(Some(slice_value(l, x, axis, start.clone(), end.clone(), 1, n)?));
        start = end;
    }
    Ok(out)
}

fn even_pieces(dim: &Dim, size: i64) -> LResult<Vec<Dim>> {
    let Some(d) = dim.as_const() else { return unsupported("splitting a symbolic dim") };
    if size < 1 {
        return invalid("split size must be positive");
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < d {
        out.push(Dim::constant(size.min(d - at)));
        at += size;
    }
    Ok(out)
}

/// `split(x, split_size, dim)` and `split_with_sizes(x, split_sizes, dim)`.
pub(crate) fn split(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let shape = l.shape(x);
    let axis = l.axis(l.int_arg(n, &["dim"], 2, Some(0))?, shape.len())?;
    let sizes = match arg_or_pos(n, &["split_size", "split_sizes", "split_size_or_sections"], 1) {
        Some(Arg::Int(s)) if base(n) == "split" => even_pieces(&shape[axis], *s)?,
        _ => l.dims_arg(n, &["split_sizes", "split_size"], 1)?,
    };
    Ok(Lowered::Values(pieces(l, x, axis, &sizes, n)?))
}

pub(crate) fn chunk(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let shape = l.shape(x);
    let chunks = l.int_arg(n, &["chunks"], 1, None)?;
    let axis = l.axis(l.int_arg(n, &["dim"], 2, Some(0))?, shape.len())?;
    let d = shape[axis].as_const().ok_or(super::LowerError::Unsupported("chunking a symbolic dim".into()))?;
    if chunks < 1 {
        return invalid("chunks must be positive");
    }
    let size = (d + chunks - 1) / chunks;
    let sizes = even_pieces(&shape[axis], size.max(1))?;
    Ok(Lowered::Values(pieces(l, x, axis, &sizes, n)?))
}

pub(crate) fn unbind(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let shape = l.shape(x);
    let axis = l.axis(l.int_arg(n, &["dim"], 1, Some(0))?, shape.len())?;
    let sizes = even_pieces(&shape[axis], 1)?;
    let mut out = Vec::new();
    for p in pieces(l, x, axis, &sizes, n)?.into_iter().flatten() {
        out.push(Some(drop_axis(l, p, axis, n)?));
    }
    Ok(Lowered::Values(out))
}

pub(crate) fn cat(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let xs = l.tensor_list(n, &["tensors"], 0)?;
    // Legacy: 1-d empty tensors are skipped by torch.cat.
    let xs: Vec<ValueId> = xs.into_iter().filter(|&x| !(l.rank(x) == 1 && l.shape(x)[0].is_const(0))).collect();
    let Some(&first) = xs.first() else { return invalid("cat of no tensors") };
    let axis = l.axis(l.int_arg(n, &["dim"], 1, Some(0))?, l.rank(first))?;
    let dt = l.out_dtype(n, 0).unwrap_or_else(|| xs.iter().map(|&x| l.dtype(x)).reduce(promote).unwrap_or(DType::F32));
    let xs = xs.into_iter().map(|x| l.cast(x, dt, n)).collect::<LResult<Vec<_>>>()?;
    if xs.len() == 1 {
        return Ok(Lowered::one(xs[0]));
    }
    Ok(Lowered::one(l.node(Op::Concat { axis }, xs, n)?))
}

pub(crate) fn stack(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let xs = l.tensor_list(n, &["tensors"], 0)?;
    let Some(&first) = xs.first() else { return invalid("stack of no tensors") };
    let axis = l.axis(l.int_arg(n, &["dim"], 1, Some(0))?, l.rank(first) + 1)?;
    let dt = l.out_dtype(n, 0).unwrap_or(l.dtype(first));
    let mut parts = Vec::new();
    for x in xs {
        let x = l.cast(x, dt, n)?;
        let mut shape = l.shape(x);
        shape.insert(axis, Dim::constant(1));
        parts.push(l.reshape(x, shape, n)?);
    }
    if parts.len() == 1 {
        return Ok(Lowered::one(parts[0]));
    }
    Ok(Lowered::one(l.node(Op::Concat { axis }, parts, n)?))
}

/// `constant_pad_nd(x, pad, value)` and `pad(x, pad, mode='constant', value)`; `pad` lists
/// (before, after) pairs starting from the last dim.
pub(crate) fn constant_pad(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    if let Some(Arg::Str(mode)) = arg_or_pos(n, &["mode"], 2) {
        if mode != "constant" {
            return unsupported(format!("pad mode `{mode}`"));
        }
    }
    let pad = l.ints_arg(n, &["pad"], 1, None)?;
    let value = l.float_arg(n, &["value"], usize::MAX, Some(0.0))?;
    let r = l.rank(x);
    if pad.len() % 2 != 0 || pad.len() / 2 > r {
        return invalid(format!("pad list of length {} for rank {r}", pad.len()));
    }
    let mut pads = vec![(0i64, 0i64); r];
    for (i, pair) in pad.chunks(2).enumerate() {
        pads[r - 1 - i] = (pair[0], pair[1]);
    }
    Ok(Lowered::one(l.node(Op::Pad { pads, value }, vec![x], n)?))
}

pub(crate) fn embedding(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let w = l.tensor_arg(n, &["weight"], 0)?;
    let idx = l.tensor_arg(n, &["indices"], 1)?;
    Ok(Lowered::one(l.node(Op::Gather { axis: 0 }, vec![w, idx], n)?))
}

pub(crate) fn index_select(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let axis = l.axis(l.int_arg(n, &["dim"], 1, None)?, l.rank(x))?;
    let idx = l.tensor_arg(n, &["index"], 2)?;
    Ok(Lowered::one(l.node(Op::Gather { axis }, vec![x, idx], n)?))
}

/// Wraps negative indices once: `i < 0 ? i + size : i`.
fn wrap_negative(l: &mut Lowerer, idx: ValueId, size: &Dim, n: &ExportNode) -> LResult<ValueId> {
    let dt = l.dtype(idx);
    let zero = l.scalar(0.0, dt, n)?;
    let neg = l.node(Op::Binary(BinaryOp::Lt), vec![idx, zero], n)?;
    let s = l.dim_scalar(size, dt, n)?;
    let shifted = l.node(Op::Binary(BinaryOp::Add), vec![idx, s], n)?;
    l.node(Op::Where, vec![neg, shifted, idx], n)
}

/// `index.Tensor(x, indices)`: advanced indexing with integer index tensors on consecutive
/// dims (after leading `None`s). One index tensor is a gather; several are combined into one
/// row-major linear index (broadcast together) over the merged dims, then gathered.
pub(crate) fn index(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let indices = match arg_or_pos(n, &["indices"], 1) {
        Some(Arg::OptionalTensors(v)) => v.clone(),
        Some(Arg::Tensors(v)) => v.iter().cloned().map(Some).collect(),
        other => return invalid(format!("indices should be a list of tensors, got {other:?}")),
    };
    let given: Vec<(usize, &String)> = indices.iter().enumerate().filter_map(|(i, t)| t.as_ref().map(|t| (i, t))).collect();
    let Some(&(first, _)) = given.first() else { return invalid("index without index tensors") };
    if given.iter().enumerate().any(|(k, (axis, _))| *axis != first + k) {
        return unsupported("advanced indexing with index tensors on non-adjacent dims");
    }
    let shape = l.shape(x);
    let last = first + given.len() - 1;
    if last >= shape.len() {
        return invalid("more index tensors than the tensor has dims");
    }
    let mut idxs = Vec::new();
    for (_, name) in &given {
        let v = l.value(name)?;
        if !l.dtype(v).is_int() {
            return unsupported("boolean-mask indexing (data-dependent output shape)");
        }
        idxs.push(l.cast(v, DType::I64, n)?);
    }
    if idxs.len() == 1 {
        return Ok(Lowered::one(l.node(Op::Gather { axis: first }, vec![x, idxs[0]], n)?));
    }
    // Linear index over dims first..=last: ((i0 * d1 + i1) * d2 + i2) ...
    let sizes = &shape[first..=last];
    let mut linear = wrap_negative(l, idxs[0], &sizes[0], n)?;
    for (k, &idx) in idxs.iter().enumerate().skip(1) {
        let size = l.dim_scalar(&sizes[k], DType::I64, n)?;
        let scaled = l.node(Op::Binary(BinaryOp::Mul), vec![linear, size], n)?;
        let wrapped = wrap_negative(l, idx, &sizes[k], n)?;
        linear = l.node(Op::Binary(BinaryOp::Add), vec![scaled, wrapped], n)?;
    }
    let mut merged = shape[..first].to_vec();
    merged.push(Dim::product(&shape[first..=last]));
    merged.extend_from_slice(&shape[last + 1..]);
    let flat = l.reshape(x, merged, n)?;
    Ok(Lowered::one(l.node(Op::Gather { axis: first }, vec![flat, linear], n)?))
}

/// `gather(x, dim, index)`: `out[..., i_d, ...] = x[..., index[..., i_d, ...], ...]`, as one
/// gather from the flattened input at row-major linear positions built from iotas.
pub(crate) fn gather(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let axis = l.axis(l.int_arg(n, &["dim"], 1, None)?, l.rank(x))?;
    let idx = l.tensor_arg(n, &["index"], 2)?;
    let xs: Vec<i64> = l.shape(x).iter().map(|d| d.as_const().ok_or(super::LowerError::Unsupported("gather over symbolic dims".into()))).collect::<LResult<_>>()?;
    let is = l.shape(idx);
    if is.len() != xs.len() {
        return invalid("gather index must have the input's rank");
    }
    let idx = l.cast(idx, DType::I64, n)?;
    let idx = wrap_negative(l, idx, &Dim::constant(xs[axis]), n)?;
    let mut stride = 1i64;
    let mut linear: Option<ValueId> = None;
    for d in (0..xs.len()).rev() {
        let coord = if d == axis {
            idx
        } else {
            l.node(Op::Iota { shape: is.clone(), axis: d, start: 0.0, step: 1.0, dtype: DType::I64 }, vec![], n)?
        };
        let term = if stride == 1 { coord } else { l.binary_scalar(BinaryOp::Mul, coord, stride as f64, n)? };
        linear = Some(match linear {
            None => term,
            Some(acc) => l.node(Op::Binary(BinaryOp::Add), vec![acc, term], n)?,
        });
        stride *= xs[d];
    }
    let flat = l.reshape(x, vec![Dim::constant(stride)], n)?;
    let linear = linear.ok_or(super::LowerError::Invalid("gather of a 0-d tensor".into()))?;
    Ok(Lowered::one(l.node(Op::Gather { axis: 0 }, vec![flat, linear], n)?))
}

/// `diff(x, n, dim, prepend, append)`: `x[1:] - x[:-1]` along `dim`, `n` times.
pub(crate) fn diff(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let mut x = self_tensor(l, n)?;
    let times = l.int_arg(n, &["n"], 1, Some(1))?;
    let axis = l.axis(l.int_arg(n, &["dim"], 2, Some(-1))?, l.rank(x))?;
    let pre = l.opt_tensor_arg(n, &["prepend"])?;
    let app = l.opt_tensor_arg(n, &["append"])?;
    if pre.is_some() || app.is_some() {
        let mut parts: Vec<ValueId> = pre.into_iter().collect();
        parts.push(x);
        parts.extend(app);
        x = l.node(Op::Concat { axis }, parts, n)?;
    }
    let op = if l.dtype(x) == DType::Bool { BinaryOp::Xor } else { BinaryOp::Sub };
    for _ in 0..times.max(0) {
        let len = l.shape(x)[axis].clone();
        if len.is_const(0) {
            break;
        }
        let end = len.sub(&Dim::constant(1));
        let hi = l.node(Op::Slice { axis, start: Dim::constant(1), end: len.clone(), step: 1 }, vec![x], n)?;
        let lo = l.node(Op::Slice { axis, start: Dim::constant(0), end, step: 1 }, vec![x], n)?;
        x = l.node(Op::Binary(op), vec![hi, lo], n)?;
    }
    Ok(Lowered::one(x))
}

/// `repeat(x, repeats)`: tile by reshaping to interleaved unit dims, expanding and merging.
pub(crate) fn repeat(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let reps = l.ints_arg(n, &["repeats"], 1, None)?;
    let mut shape = l.shape(x);
    if reps.len() < shape.len() {
        return invalid("repeat needs at least one repeat count per dim");
    }
    let mut padded = vec![Dim::constant(1); reps.len() - shape.len()];
    padded.append(&mut shape);
    let mut inter = Vec::new();
    let mut big = Vec::new();
    let mut out = Vec::new();
    for (d, &r) in padded.iter().zip(&reps) {
        inter.extend([Dim::constant(1), d.clone()]);
        big.extend([Dim::constant(r), d.clone()]);
        out.push(d.mul(&Dim::constant(r)));
    }
    let y = l.reshape(x, inter, n)?;
    let y = l.node(Op::Expand { shape: big }, vec![y], n)?;
    Ok(Lowered::one(l.reshape(y, out, n)?))
}

fn contiguous_strides(sizes: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; sizes.len()];
    for i in (0..sizes.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(sizes[i + 1].max(1));
    }
    strides
}

/// `as_strided(x, size, stride, storage_offset)` on an input the exporter recorded as
/// contiguous: element `i` of the result is the input's row-major element
/// `offset + sum(i_k * stride_k)`. A plain reshape when the strides are the contiguous ones.
pub(crate) fn as_strided(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let Some(Arg::Tensor(input_name)) = arg(n, &["self"]) else { return invalid("as_strided without an input") };
    if !l.recorded_contiguous(input_name) {
        return unsupported("as_strided of a tensor that is not contiguous in the export");
    }
    let size = l.ints_arg(n, &["size"], 1, None)?;
    let stride = l.ints_arg(n, &["stride"], 2, None)?;
    let offset = l.int_arg(n, &["storage_offset"], 3, Some(0))?;
    if size.len() != stride.len() || size.iter().chain(&stride).any(|&v| v < 0) || offset < 0 {
        return invalid("as_strided sizes and strides must be non-negative and of equal length");
    }
    let numel: Option<i64> = l.shape(x).iter().map(|d| d.as_const()).product();
    let Some(numel) = numel else { return unsupported("as_strided of a tensor with symbolic dims") };
    let last = offset + size.iter().zip(&stride).map(|(&s, &st)| (s - 1).max(0).saturating_mul(st)).sum::<i64>();
    if size.iter().all(|&s| s > 0) && last >= numel {
        return invalid(format!("as_strided reads element {last} of a tensor with {numel}"));
    }
    let out_shape: Vec<Dim> = size.iter().map(|&s| Dim::constant(s)).collect();
    if offset == 0 && stride == contiguous_strides(&size) && size.iter().product::<i64>() == numel {
        return Ok(Lowered::one(l.reshape(x, out_shape, n)?));
    }
    let flat = l.reshape(x, vec![Dim::constant(numel)], n)?;
    let mut linear = l.node(Op::Full { shape: out_shape.clone(), value: offset as f64, dtype: DType::I64 }, vec![], n)?;
    for (k, &st) in stride.iter().enumerate() {
        if st == 0 || size[k] == 1 {
            continue;
        }
        let iota = l.node(Op::Iota { shape: out_shape.clone(), axis: k, start: 0.0, step: st as f64, dtype: DType::I64 }, vec![], n)?;
        linear = l.node(Op::Binary(BinaryOp::Add), vec![linear, iota], n)?;
    }
    Ok(Lowered::one(l.node(Op::Gather { axis: 0 }, vec![flat, linear], n)?))
}

/// `roll(x, shifts, dims)`: per dim, the last `shift` elements move to the front (two slices
/// and a concat); with no dims the flattened tensor is rolled and reshaped back.
pub(crate) fn roll(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let shifts = l.ints_arg(n, &["shifts"], 1, None)?;
    let dims = l.ints_arg(n, &["dims"], 2, Some(vec![]))?;
    let shape = l.shape(x);
    let (mut y, axes) = if dims.is_empty() {
        if shifts.len() != 1 {
            return invalid("roll without dims takes one shift");
        }
        (l.reshape(x, vec![Dim::product(&shape)], n)?, vec![0usize])
    } else {
        if dims.len() != shifts.len() {
            return invalid("roll needs one shift per dim");
        }
        (x, dims.iter().map(|&d| l.axis(d, shape.len())).collect::<LResult<Vec<_>>>()?)
    };
    for (&axis, &shift) in axes.iter().zip(&shifts) {
        let Some(len) = l.shape(y)[axis].as_const() else { return unsupported("roll along a symbolic dim") };
        if len == 0 {
            continue;
        }
        let s = shift.rem_euclid(len);
        if s == 0 {
            continue;
        }
        let cut = Dim::constant(len - s);
        let tail = l.node(Op::Slice { axis, start: cut.clone(), end: Dim::constant(len), step: 1 }, vec![y], n)?;
        let head = l.node(Op::Slice { axis, start: Dim::constant(0), end: cut, step: 1 }, vec![y], n)?;
        y = l.node(Op::Concat { axis }, vec![tail, head], n)?;
    }
    Ok(Lowered::one(l.reshape(y, shape, n)?))
}

/// Writes `src` into `x` at positions `start, start+step, ...` (< `end`) along `axis`: a
/// concat of the untouched parts for unit steps, else a gather of `src` and a `where`.
/// Static positions `start, start+step, ...` (< `end`) along `axis`.
struct Positions {
    axis: usize,
    start: i64,
    end: i64,
    step: i64,
}

fn scatter_slice(l: &mut Lowerer, x: ValueId, src: ValueId, at: Positions, n: &ExportNode) -> LResult<ValueId> {
    let Positions { axis, start, end, step } = at;
    let shape = l.shape(x);
    let Some(len) = shape[axis].as_const() else { return unsupported("scatter into a symbolic dim") };
    let src = l.cast(src, l.dtype(x), n)?;
    if step == 1 {
        let mut parts = Vec::new();
        if start > 0 {
            parts.push(l.node(Op::Slice { axis, start: Dim::constant(0), end: Dim::constant(start), step: 1 }, vec![x], n)?);
        }
        parts.push(src);
        if end < len {
            parts.push(l.node(Op::Slice { axis, start: Dim::constant(end), end: Dim::constant(len), step: 1 }, vec![x], n)?);
        }
        if parts.len() == 1 {
            return Ok(parts[0]);
        }
        return l.node(Op::Concat { axis }, parts, n);
    }
    // i along the axis; src index j = (i - start) / step where (i - start) % step == 0.
    let i = l.node(Op::Iota { shape: vec![Dim::constant(len)], axis: 0, start: -(start as f64), step: 1.0, dtype: DType::I64 }, vec![], n)?;
    let zero = l.scalar(0.0, DType::I64, n)?;
    let ge = l.node(Op::Binary(BinaryOp::Ge), vec![i, zero], n)?;
    let limit = l.scalar((end - start) as f64, DType::I64, n)?;
    let lt = l.node(Op::Binary(BinaryOp::Lt), vec![i, limit], n)?;
    let rem = l.binary_scalar(BinaryOp::Rem, i, step as f64, n)?;
    let on = l.node(Op::Binary(BinaryOp::Eq), vec![rem, zero], n)?;
    let inside = l.node(Op::Binary(BinaryOp::And), vec![ge, lt], n)?;
    let mask = l.node(Op::Binary(BinaryOp::And), vec![inside, on], n)?;
    let j = l.binary_scalar(BinaryOp::FloorDiv, i, step as f64, n)?;
    let count = l.shape(src)[axis].as_const().unwrap_or(1).max(1);
    let j = l.node(Op::Binary(BinaryOp::Max), vec![j, zero], n)?;
    let top = l.scalar((count - 1) as f64, DType::I64, n)?;
    let j = l.node(Op::Binary(BinaryOp::Min), vec![j, top], n)?;
    let spread = l.node(Op::Gather { axis }, vec![src, j], n)?;
    let mut mshape = vec![Dim::constant(1); shape.len()];
    mshape[axis] = Dim::constant(len);
    let mask = l.reshape(mask, mshape, n)?;
    l.node(Op::Where, vec![mask, spread, x], n)
}

/// `slice_scatter(x, src, dim, start, end, step)`: `x` with the slice replaced by `src`.
pub(crate) fn slice_scatter(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let src = l.tensor_arg(n, &["src"], 1)?;
    let shape = l.shape(x);
    let axis = l.axis(l.int_arg(n, &["dim"], 2, Some(0))?, shape.len())?;
    let step = l.int_arg(n, &["step"], 5, Some(1))?;
    if step < 1 {
        return invalid("slice_scatter step must be positive");
    }
    let start = bound(l.dim_arg(n, &["start"], 3)?, Dim::constant(0), &shape[axis]);
    let end = bound(l.dim_arg(n, &["end"], 4)?, shape[axis].clone(), &shape[axis]);
    let (Some(start), Some(end)) = (start.as_const(), end.as_const()) else { return unsupported("slice_scatter with symbolic bounds") };
    Ok(Lowered::one(scatter_slice(l, x, src, Positions { axis, start, end: end.max(start), step }, n)?))
}

/// `select_scatter(x, src, dim, index)`: `x` with one index along `dim` replaced by `src`.
pub(crate) fn select_scatter(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = self_tensor(l, n)?;
    let src = l.tensor_arg(n, &["src"], 1)?;
    let shape = l.shape(x);
    let axis = l.axis(l.int_arg(n, &["dim"], 2, None)?, shape.len())?;
    let Some(len) = shape[axis].as_const() else { return unsupported("select_scatter into a symbolic dim") };
    let index = l.int_arg(n, &["index"], 3, None)?;
    let index = if index < 0 { index + len } else { index };
    if !(0..len).contains(&index) {
        return invalid(format!("select_scatter index {index} out of range for size {len}"));
    }
    let mut sshape = l.shape(src);
    sshape.insert(axis, Dim::constant(1));
    let src = l.reshape(src, sshape, n)?;
    Ok(Lowered::one(scatter_slice(l, x, src, Positions { axis, start: index, end: index + 1, step: 1 }, n)?))
}
