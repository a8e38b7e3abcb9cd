//! Neural-network ATen ops: matrix products, convolutions, pooling, normalizations, softmax
//! and attention, decomposed into IR ops.

use super::elementwise::self_tensor;
use super::{arg_or_pos, invalid, unsupported, LResult, Lowered, Lowerer};
use crate::export::{Arg, ExportNode};
use kiln_ir::{BinaryOp, ConvAttrs, DType, Dim, Op, PoolAttrs, PoolKind, ReduceKind, UnaryOp, ValueId};

fn base(n: &ExportNode) -> &str {
    super::aten_base_name(&n.target).map(|(b, _)| b).unwrap_or("")
}

/// `torch.matmul` semantics on top of the IR's rank >= 2 matmul.
pub(crate) fn matmul_value(l: &mut Lowerer, a: ValueId, b: ValueId, n: &ExportNode) -> LResult<ValueId> {
    let (ra, rb) = (l.rank(a), l.rank(b));
    if ra == 0 || rb == 0 {
        return invalid("matmul operands must have at least one dimension");
    }
    let a2 = if ra == 1 {
        let k = l.shape(a)[0].clone();
        l.reshape(a, vec![Dim::constant(1), k], n)?
    } else {
        a
    };
    let b2 = if rb == 1 {
        let k = l.shape(b)[0].clone();
        l.reshape(b, vec![k, Dim::constant(1)], n)?
    } else {
        b
    };
    let mut y = l.node(Op::MatMul, vec![a2, b2], n)?;
    if ra == 1 || rb == 1 {
        let mut shape = l.shape(y);
        let r = shape.len();
        if rb == 1 {
            shape.remove(r - 1);
        }
        if ra == 1 {
            shape.remove(r - 2);
        }
        y = l.reshape(y, shape, n)?;
    }
    Ok(y)
}

pub(crate) fn matmul(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let a = l.tensor_arg(n, &["self", "input"], 0)?;
    let b = l.tensor_arg(n, &["other", "mat2"], 1)?;
    Ok(Lowered::one(matmul_value(l, a, b, n)?))
}

pub(crate) fn linear(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = l.tensor_arg(n, &["input"], 0)?;
    let w = l.tensor_arg(n, &["weight"], 1)?;
    let wt = l.transpose_last(w, n)?;
    let mut y = matmul_value(l, x, wt, n)?;
    if let Some(b) = l.opt_tensor_arg(n, &["bias"])? {
        y = l.binary(BinaryOp::Add, y, b, n)?;
    }
    Ok(Lowered::one(y))
}

/// `beta * input + alpha * (m1 @ m2)` for `addmm` and `baddbmm`.
fn scaled_product_sum(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let c = l.tensor_arg(n, &["self", "input"], 0)?;
    let a = l.tensor_arg(n, &["mat1", "batch1"], 1)?;
    let b = l.tensor_arg(n, &["mat2", "batch2"], 2)?;
    let beta = l.float_arg(n, &["beta"], 3, Some(1.0))?;
    let alpha = l.float_arg(n, &["alpha"], 4, Some(1.0))?;
    let mut p = l.node(Op::MatMul, vec![a, b], n)?;
    if alpha != 1.0 {
        p = l.binary_scalar(BinaryOp::Mul, p, alpha, n)?;
    }
    if beta == 0.0 {
        return Ok(Lowered::one(p));
    }
    let c = if beta != 1.0 { l.binary_scalar(BinaryOp::Mul, c, beta, n)? } else { c };
    Ok(Lowered::one(l.binary(BinaryOp::Add, c, p, n)?))
}

pub(crate) fn addmm(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    scaled_product_sum(l, n)
}

pub(crate) fn baddbmm(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    scaled_product_sum(l, n)
}

/// Expands a one-element list to `n` entries (PyTorch accepts `stride=[2]` for 2-d ops).
fn per_dim(v: Vec<i64>, n: usize, what: &str) -> LResult<Vec<i64>> {
    match v.len() {
        1 => Ok(vec![v[0]; n]),
        len if len == n => Ok(v),
        len => invalid(format!("`{what}` has {len} entries for {n} spatial dims")),
    }
}

/// Adds a batch dim to unbatched inputs (`[c, *s]`) of ops that expect `[n, c, *s]`.
fn batched(l: &mut Lowerer, x: ValueId, spatial: usize, n: &ExportNode) -> LResult<(ValueId, bool)> {
    if l.rank(x) == spatial + 1 {
        let mut shape = vec![Dim::constant(1)];
        shape.extend(l.shape(x));
        return Ok((l.reshape(x, shape, n)?, true));
    }
    if l.rank(x) != spatial + 2 {
        return invalid(format!("expects a {}-d or {}-d input, got rank {}", spatial + 1, spatial + 2, l.rank(x)));
    }
    Ok((x, false))
}

fn unbatched(l: &mut Lowerer, y: ValueId, was_unbatched: bool, n: &ExportNode) -> LResult<ValueId> {
    if !was_unbatched {
        return Ok(y);
    }
    let shape = l.shape(y)[1..].to_vec();
    l.reshape(y, shape, n)
}

fn conv_common(l: &mut Lowerer, n: &ExportNode, x: ValueId, w: ValueId, bias: Option<ValueId>, mut attrs: ConvAttrs, pad_mode: Option<String>) -> LResult<Lowered> {
    let spatial = l.rank(w).checked_sub(2).filter(|s| (1..=3).contains(s)).ok_or(super::LowerError::Invalid("weight must have rank 3 to 5".into()))?;
    let (mut x, was_unbatched) = batched(l, x, spatial, n)?;
    if let Some(mode) = pad_mode {
        match mode.as_str() {
            "valid" => attrs.padding = vec![0; spatial],
            "same" => {
                // Total padding d*(k-1) per dim; an odd total puts the extra element at the end.
                let wshape = l.shape(w);
                let mut pads = vec![(0, 0); 2];
                attrs.padding = vec![0; spatial];
                let mut asymmetric = false;
                for i in 0..spatial {
                    let k = wshape[2 + i].as_const().ok_or(super::LowerError::Unsupported("symbolic kernel size".into()))?;
                    let total = attrs.dilation[i] * (k - 1);
                    attrs.padding[i] = total / 2;
                    pads.push((0, total - total / 2 * 2));
                    asymmetric |= total % 2 == 1;
                }
                if asymmetric {
                    x = l.node(Op::Pad { pads, value: 0.0 }, vec![x], n)?;
                }
            }
            other => return invalid(format!("unknown padding mode `{other}`")),
        }
    }
    let mut y = l.node(Op::Conv(attrs), vec![x, w], n)?;
    if let Some(b) = bias {
        let b = l.per_channel(b, spatial + 2, n)?;
        y = l.binary(BinaryOp::Add, y, b, n)?;
    }
    Ok(Lowered::one(unbatched(l, y, was_unbatched, n)?))
}

fn spatial_of(l: &Lowerer, w: ValueId) -> usize {
    l.rank(w).saturating_sub(2).max(1)
}

/// `conv1d/2d/3d(input, weight, bias, stride, padding, dilation, groups)`.
pub(crate) fn conv(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = l.tensor_arg(n, &["input"], 0)?;
    let w = l.tensor_arg(n, &["weight"], 1)?;
    let b = l.opt_tensor_arg(n, &["bias"])?;
    let s = spatial_of(l, w);
    let stride = per_dim(l.ints_arg(n, &["stride"], 3, Some(vec![1]))?, s, "stride")?;
    let dilation = per_dim(l.ints_arg(n, &["dilation"], 5, Some(vec![1]))?, s, "dilation")?;
    let (padding, mode) = match arg_or_pos(n, &["padding"], 4) {
        Some(Arg::Str(m)) => (vec![0; s], Some(m.clone())),
        _ => (per_dim(l.ints_arg(n, &["padding"], 4, Some(vec![0]))?, s, "padding")?, None),
    };
    let groups = l.int_arg(n, &["groups"], 6, Some(1))?;
    let attrs = ConvAttrs { stride, padding, dilation, groups, transposed: false, output_padding: vec![0; s] };
    conv_common(l, n, x, w, b, attrs, mode)
}

/// `conv_transpose1d/2d/3d(input, weight, bias, stride, padding, output_padding, groups, dilation)`.
pub(crate) fn conv_transpose(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = l.tensor_arg(n, &["input"], 0)?;
    let w = l.tensor_arg(n, &["weight"], 1)?;
    let b = l.opt_tensor_arg(n, &["bias"])?;
    let s = spatial_of(l, w);
    let attrs = ConvAttrs {
        stride: per_dim(l.ints_arg(n, &["stride"], 3, Some(vec![1]))?, s, "stride")?,
        padding: per_dim(l.ints_arg(n, &["padding"], 4, Some(vec![0]))?, s, "padding")?,
        output_padding: per_dim(l.ints_arg(n, &["output_padding"], 5, Some(vec![0]))?, s, "output_padding")?,
        groups: l.int_arg(n, &["groups"], 6, Some(1))?,
        dilation: per_dim(l.ints_arg(n, &["dilation"], 7, Some(vec![1]))?, s, "dilation")?,
        transposed: true,
    };
    conv_common(l, n, x, w, b, attrs, None)
}

/// `convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)`.
pub(crate) fn convolution(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = l.tensor_arg(n, &["input"], 0)?;
    let w = l.tensor_arg(n, &["weight"], 1)?;
    let b = l.opt_tensor_arg(n, &["bias"])?;
    let s = spatial_of(l, w);
    let attrs = ConvAttrs {
        stride: per_dim(l.ints_arg(n, &["stride"], 3, Some(vec![1]))?, s, "stride")?,
        padding: per_dim(l.ints_arg(n, &["padding"], 4, Some(vec![0]))?, s, "padding")?,
        dilation: per_dim(l.ints_arg(n, &["dilation"], 5, Some(vec![1]))?, s, "dilation")?,
        transposed: l.bool_arg(n, &["transposed"], 6, false)?,
        output_padding: per_dim(l.ints_arg(n, &["output_padding"], 7, Some(vec![0]))?, s, "output_padding")?,
        groups: l.int_arg(n, &["groups"], 8, Some(1))?,
    };
    conv_common(l, n, x, w, b, attrs, None)
}

fn pool_spatial(n: &ExportNode) -> usize {
    let b = base(n);
    if b.contains("1d") {
        1
    } else if b.contains("3d") {
        3
    } else {
        2
    }
}

/// `max_pool{1,2,3}d(input, kernel_size, stride, padding, dilation, ceil_mode)`; the indices
/// output of `max_pool2d_with_indices` is not produced.
pub(crate) fn max_pool(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let s = pool_spatial(n);
    let x = self_tensor(l, n)?;
    let kernel = per_dim(l.ints_arg(n, &["kernel_size"], 1, None)?, s, "kernel_size")?;
    let stride = l.ints_arg(n, &["stride"], 2, Some(vec![]))?;
    let stride = if stride.is_empty() { kernel.clone() } else { per_dim(stride, s, "stride")? };
    let attrs = PoolAttrs {
        kind: PoolKind::Max,
        kernel,
        stride,
        padding: per_dim(l.ints_arg(n, &["padding"], 3, Some(vec![0]))?, s, "padding")?,
        dilation: per_dim(l.ints_arg(n, &["dilation"], 4, Some(vec![1]))?, s, "dilation")?,
        ceil_mode: l.bool_arg(n, &["ceil_mode"], 5, false)?,
        count_include_pad: false,
    };
    let (x, unb) = batched(l, x, s, n)?;
    let y = l.node(Op::Pool(attrs), vec![x], n)?;
    let y = unbatched(l, y, unb, n)?;
    Ok(Lowered::Values(vec![Some(y), None]))
}

/// `avg_pool{1,2,3}d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)`.
pub(crate) fn avg_pool(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let s = pool_spatial(n);
    let x = self_tensor(l, n)?;
    if arg_or_pos(n, &["divisor_override"], 6).is_some() {
        return unsupported("avg_pool with divisor_override");
    }
    let kernel = per_dim(l.ints_arg(n, &["kernel_size"], 1, None)?, s, "kernel_size")?;
    let stride = l.ints_arg(n, &["stride"], 2, Some(vec![]))?;
    let stride = if stride.is_empty() { kernel.clone() } else { per_dim(stride, s, "stride")? };
    let attrs = PoolAttrs {
        kind: PoolKind::Avg,
        kernel,
        stride,
        padding: per_dim(l.ints_arg(n, &["padding"], 3, Some(vec![0]))?, s, "padding")?,
        dilation: vec![1; s],
        ceil_mode: l.bool_arg(n, &["ceil_mode"], 4, false)?,
        count_include_pad: l.bool_arg(n, &["count_include_pad"], 5, true)?,
    };
    let (x, unb) = batched(l, x, s, n)?;
    let y = l.node(Op::Pool(attrs), vec![x], n)?;
    Ok(Lowered::one(unbatched(l, y, unb, n)?))
}

fn adaptive(l: &mut Lowerer, n: &ExportNode, kind: PoolKind) -> LResult<ValueId> {
    let s = pool_spatial(n);
    let x = self_tensor(l, n)?;
    let (x, unb) = batched(l, x, s, n)?;
    let output_size = per_dim(l.ints_arg(n, &["output_size"], 1, None)?, s, "output_size")?;
    let y = l.node(Op::AdaptivePool { kind, output_size }, vec![x], n)?;
    unbatched(l, y, unb, n)
}

pub(crate) fn adaptive_avg_pool(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    Ok(Lowered::one(adaptive(l, n, PoolKind::Avg)?))
}

pub(crate) fn adaptive_max_pool(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let y = adaptive(l, n, PoolKind::Max)?;
    Ok(Lowered::Values(vec![Some(y), None]))
}

/// Half-precision inputs of normalizations are computed in f32, as PyTorch does.
fn upcast(l: &mut Lowerer, x: ValueId, n: &ExportNode) -> LResult<(ValueId, DType)> {
    let dt = l.dtype(x);
    if matches!(dt, DType::F16 | DType::BF16) {
        Ok((l.cast(x, DType::F32, n)?, dt))
    } else {
        Ok((x, dt))
    }
}

/// Batch-norm parameters: optional affine weight and bias, running statistics, epsilon.
struct BatchNormParams {
    weight: Option<ValueId>,
    bias: Option<ValueId>,
    mean: ValueId,
    var: ValueId,
    eps: f64,
}

/// Inference batch norm: `(x - mean) * (rsqrt(var + eps) * weight) + bias`, per channel.
fn batch_norm_value(l: &mut Lowerer, n: &ExportNode, x: ValueId, p: BatchNormParams) -> LResult<ValueId> {
    let BatchNormParams { weight: w, bias: b, mean, var, eps } = p;
    let rank = l.rank(x);
    let ve = l.binary_scalar(BinaryOp::Add, var, eps, n)?;
    let mut scale = l.unary(UnaryOp::Rsqrt, ve, n)?;
    if let Some(w) = w {
        scale = l.binary(BinaryOp::Mul, scale, w, n)?;
    }
    let mean = l.per_channel(mean, rank, n)?;
    let scale = l.per_channel(scale, rank, n)?;
    let xc = l.binary(BinaryOp::Sub, x, mean, n)?;
    let mut y = l.binary(BinaryOp::Mul, xc, scale, n)?;
    if let Some(b) = b {
        let b = l.per_channel(b, rank, n)?;
        y = l.binary(BinaryOp::Add, y, b, n)?;
    }
    Ok(y)
}

/// `batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled)`.
pub(crate) fn batch_norm(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    if l.bool_arg(n, &["training"], 5, false)? {
        return unsupported("batch norm in training mode (export the model after model.eval())");
    }
    let x = l.tensor_arg(n, &["input"], 0)?;
    let w = l.opt_tensor_arg(n, &["weight"])?;
    let b = l.opt_tensor_arg(n, &["bias"])?;
    let (Some(mean), Some(var)) = (l.opt_tensor_arg(n, &["running_mean"])?, l.opt_tensor_arg(n, &["running_var"])?) else {
        return unsupported("batch norm without running statistics");
    };
    let eps = l.float_arg(n, &["eps"], 7, Some(1e-5))?;
    Ok(Lowered::one(batch_norm_value(l, n, x, BatchNormParams { weight: w, bias: b, mean, var, eps })?))
}

/// `_native_batch_norm_legit_no_training(input, weight, bias, running_mean, running_var, momentum, eps)`
/// → `(output, save_mean, save_invstd)`; only the output is produced.
pub(crate) fn native_batch_norm(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = l.tensor_arg(n, &["input"], 0)?;
    let w = l.opt_tensor_arg(n, &["weight"])?;
    let b = l.opt_tensor_arg(n, &["bias"])?;
    let mean = l.tensor_arg(n, &["running_mean"], 3)?;
    let var = l.tensor_arg(n, &["running_var"], 4)?;
    let eps = l.float_arg(n, &["eps"], 6, Some(1e-5))?;
    let y = batch_norm_value(l, n, x, BatchNormParams { weight: w, bias: b, mean, var, eps })?;
    Ok(Lowered::Values(vec![Some(y), None, None]))
}

/// Normalizes `x` over `axes`: returns `(y, mean, rstd)` with mean and rstd kept as size-1 dims.
fn normalize(l: &mut Lowerer, n: &ExportNode, x: ValueId, axes: Vec<usize>, eps: f64) -> LResult<(ValueId, ValueId, ValueId)> {
    let mean = l.reduce(ReduceKind::Mean, x, axes.clone(), true, n)?;
    let xc = l.binary(BinaryOp::Sub, x, mean, n)?;
    let sq = l.binary(BinaryOp::Mul, xc, xc, n)?;
    let var = l.reduce(ReduceKind::Mean, sq, axes, true, n)?;
    let ve = l.binary_scalar(BinaryOp::Add, var, eps, n)?;
    let rstd = l.unary(UnaryOp::Rsqrt, ve, n)?;
    Ok((l.binary(BinaryOp::Mul, xc, rstd, n)?, mean, rstd))
}

fn affine(l: &mut Lowerer, n: &ExportNode, mut y: ValueId, w: Option<ValueId>, b: Option<ValueId>) -> LResult<ValueId> {
    if let Some(w) = w {
        y = l.binary(BinaryOp::Mul, y, w, n)?;
    }
    if let Some(b) = b {
        y = l.binary(BinaryOp::Add, y, b, n)?;
    }
    Ok(y)
}

/// `layer_norm(input, normalized_shape, weight, bias, eps)` and `native_layer_norm` (which
/// also returns mean and rstd).
pub(crate) fn layer_norm(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = l.tensor_arg(n, &["input"], 0)?;
    let k = l.ints_arg(n, &["normalized_shape"], 1, None)?.len();
    let w = l.opt_tensor_arg(n, &["weight"])?;
    let b = l.opt_tensor_arg(n, &["bias"])?;
    let eps = l.float_arg(n, &["eps"], 4, Some(1e-5))?;
    let rank = l.rank(x);
    if k == 0 || k > rank {
        return invalid(format!("normalized_shape of length {k} for rank {rank}"));
    }
    let (xf, dt) = upcast(l, x, n)?;
    let (y, mean, rstd) = normalize(l, n, xf, (rank - k..rank).collect(), eps)?;
    let y = l.cast(y, dt, n)?;
    let y = affine(l, n, y, w, b)?;
    let (mean, rstd) = statistics_as_recorded(l, n, mean, rstd)?;
    Ok(Lowered::Values(vec![Some(y), Some(mean), Some(rstd)]))
}

/// `native_*_norm`'s mean and rstd in the dtype the export records (PyTorch's CPU kernels
/// return them in the input's dtype, f16 included; its CUDA kernels in f32).
fn statistics_as_recorded(l: &mut Lowerer, n: &ExportNode, mean: ValueId, rstd: ValueId) -> LResult<(ValueId, ValueId)> {
    let mean = match l.out_dtype(n, 1) {
        Some(d) => l.cast(mean, d, n)?,
        None => mean,
    };
    let rstd = match l.out_dtype(n, 2) {
        Some(d) => l.cast(rstd, d, n)?,
        None => rstd,
    };
    Ok((mean, rstd))
}

/// `group_norm(input, num_groups, weight, bias, eps)` and
/// `native_group_norm(input, weight, bias, N, C, HxW, group, eps)`.
pub(crate) fn group_norm(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = l.tensor_arg(n, &["input"], 0)?;
    let w = l.opt_tensor_arg(n, &["weight"])?;
    let b = l.opt_tensor_arg(n, &["bias"])?;
    let (groups, eps) = if base(n) == "native_group_norm" {
        (l.int_arg(n, &["group"], 6, None)?, l.float_arg(n, &["eps"], 7, Some(1e-5))?)
    } else {
        (l.int_arg(n, &["num_groups"], 1, None)?, l.float_arg(n, &["eps"], 4, Some(1e-5))?)
    };
    let shape = l.shape(x);
    if shape.len() < 2 || groups < 1 {
        return invalid("group norm needs [n, c, ...] input and positive groups");
    }
    let c = shape[1].as_const().ok_or(super::LowerError::Unsupported("symbolic channel count".into()))?;
    if c % groups != 0 {
        return invalid(format!("{c} channels are not divisible into {groups} groups"));
    }
    let rest = Dim::product(&shape[2..]).mul(&Dim::constant(c / groups));
    let (xf, dt) = upcast(l, x, n)?;
    let g = l.reshape(xf, vec![shape[0].clone(), Dim::constant(groups), rest], n)?;
    let (y, mean, rstd) = normalize(l, n, g, vec![2], eps)?;
    let y = l.reshape(y, shape.clone(), n)?;
    let y = l.cast(y, dt, n)?;
    let rank = shape.len();
    let w = w.map(|w| l.per_channel(w, rank, n)).transpose()?;
    let b = b.map(|b| l.per_channel(b, rank, n)).transpose()?;
    let y = affine(l, n, y, w, b)?;
    let mean = l.reshape(mean, vec![shape[0].clone(), Dim::constant(groups)], n)?;
    let rstd = l.reshape(rstd, vec![shape[0].clone(), Dim::constant(groups)], n)?;
    let (mean, rstd) = statistics_as_recorded(l, n, mean, rstd)?;
    Ok(Lowered::Values(vec![Some(y), Some(mean), Some(rstd)]))
}

/// `rms_norm(input, normalized_shape, weight, eps)`: `x * rsqrt(mean(x^2) + eps) * weight`,
/// with `eps` defaulting to the dtype's machine epsilon as in PyTorch.
pub(crate) fn rms_norm(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let x = l.tensor_arg(n, &["input"], 0)?;
    let k = l.ints_arg(n, &["normalized_shape"], 1, None)?.len();
    let w = l.opt_tensor_arg(n, &["weight"])?;
    let rank = l.rank(x);
    if k == 0 || k > rank {
        return invalid(format!("normalized_shape of length {k} for rank {rank}"));
    }
    let (xf, dt) = upcast(l, x, n)?;
    let default_eps = match dt {
        DType::F64 => f64::EPSILON,
        DType::F16 => 0.0009765625,
        DType::BF16 => 0.0078125,
        _ => f32::EPSILON as f64,
    };
    let eps = l.float_arg(n, &["eps"], 3, Some(default_eps))?;
    let sq = l.binary(BinaryOp::Mul, xf, xf, n)?;
    let ms = l.reduce(ReduceKind::Mean, sq, (rank - k..rank).collect(), true, n)?;
    let ms = l.binary_scalar(BinaryOp::Add, ms, eps, n)?;
    let r = l.unary(UnaryOp::Rsqrt, ms, n)?;
    let y = l.binary(BinaryOp::Mul, xf, r, n)?;
    let y = l.cast(y, dt, n)?;
    Ok(Lowered::one(affine(l, n, y, w, None)?))
}

/// Softmax along `axis`: `exp(x - max) / sum(exp(x - max))`.
pub(crate) fn softmax_value(l: &mut Lowerer, x: ValueId, axis: usize, n: &ExportNode) -> LResult<ValueId> {
    let m = l.reduce(ReduceKind::Max, x, vec![axis], true, n)?;
    let d = l.binary(BinaryOp::Sub, x, m, n)?;
    let e = l.unary(UnaryOp::Exp, d, n)?;
    let s = l.reduce(ReduceKind::Sum, e, vec![axis], true, n)?;
    l.binary(BinaryOp::Div, e, s, n)
}

fn softmax_input(l: &mut Lowerer, n: &ExportNode) -> LResult<(ValueId, usize)> {
    let x = self_tensor(l, n)?;
    let axis = l.int_arg(n, &["dim"], 1, None)?;
    let axis = l.axis(axis, l.rank(x))?;
    // `dtype=` (softmax.int) or `half_to_float` (_softmax): compute in the recorded result dtype.
    let x = match l.out_dtype(n, 0) {
        Some(dt) => l.cast(x, dt, n)?,
        None => x,
    };
    if l.rank(x) == 0 {
        return unsupported("softmax of a 0-d tensor");
    }
    Ok((x, axis))
}

pub(crate) fn softmax(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let (x, axis) = softmax_input(l, n)?;
    Ok(Lowered::one(softmax_value(l, x, axis, n)?))
}

/// `x - max - log(sum(exp(x - max)))`.
pub(crate) fn log_softmax(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let (x, axis) = softmax_input(l, n)?;
    let m = l.reduce(ReduceKind::Max, x, vec![axis], true, n)?;
    let d = l.binary(BinaryOp::Sub, x, m, n)?;
    let e = l.unary(UnaryOp::Exp, d, n)?;
    let s = l.reduce(ReduceKind::Sum, e, vec![axis], true, n)?;
    let ls = l.unary(UnaryOp::Log, s, n)?;
    Ok(Lowered::one(l.binary(BinaryOp::Sub, d, ls, n)?))
}

/// A `[rows, cols]` bool mask that is true where `col - row <= diagonal` (lower triangle).
pub(crate) fn lower_triangle(l: &mut Lowerer, rows: Dim, cols: Dim, diagonal: i64, n: &ExportNode) -> LResult<ValueId> {
    let shape = vec![rows, cols];
    let r = l.node(Op::Iota { shape: shape.clone(), axis: 0, start: 0.0, step: 1.0, dtype: DType::I64 }, vec![], n)?;
    let c = l.node(Op::Iota { shape, axis: 1, start: 0.0, step: 1.0, dtype: DType::I64 }, vec![], n)?;
    let diff = l.binary(BinaryOp::Sub, c, r, n)?;
    let d = l.scalar(diagonal as f64, DType::I64, n)?;
    l.binary(BinaryOp::Le, diff, d, n)
}

/// Repeats each head of `[..., h, s, e]` `rep` times along the head axis (grouped-query attention).
fn repeat_heads(l: &mut Lowerer, x: ValueId, rep: i64, n: &ExportNode) -> LResult<ValueId> {
    let shape = l.shape(x);
    let r = shape.len();
    // [..., h, s, e] → [..., h, 1, s, e] → expand → [..., h, rep, s, e] → [..., h*rep, s, e]
    let mut unsq2 = shape[..r - 2].to_vec();
    unsq2.push(Dim::constant(1));
    unsq2.extend_from_slice(&shape[r - 2..]);
    let y = l.reshape(x, unsq2.clone(), n)?;
    let mut big = unsq2;
    big[r - 2] = Dim::constant(rep);
    let y = l.node(Op::Expand { shape: big }, vec![y], n)?;
    let mut out = shape.clone();
    out[r - 3] = shape[r - 3].mul(&Dim::constant(rep));
    l.reshape(y, out, n)
}

/// `scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)`:
/// `softmax(q @ k^T * scale + mask) @ v` (dropout is ignored: inference).
pub(crate) fn sdpa(l: &mut Lowerer, n: &ExportNode) -> LResult<Lowered> {
    let q = l.tensor_arg(n, &["query"], 0)?;
    let mut k = l.tensor_arg(n, &["key"], 1)?;
    let mut v = l.tensor_arg(n, &["value"], 2)?;
    let mask = l.opt_tensor_arg(n, &["attn_mask"])?;
    let is_causal = l.bool_arg(n, &["is_causal"], 5, false)?;
    let qs = l.shape(q);
    let r = qs.len();
    if r < 2 || l.rank(k) != r || l.rank(v) != r {
        return invalid("query, key and value must have the same rank >= 2");
    }
    let e = qs[r - 1].as_const().ok_or(super::LowerError::Unsupported("symbolic head dim".into()))?;
    let scale = match arg_or_pos(n, &["scale"], 6) {
        Some(Arg::Float(s)) => *s,
        _ => 1.0 / (e as f64).sqrt(),
    };
    if l.bool_arg(n, &["enable_gqa"], 7, false)? && r >= 3 {
        let (hq, hk) = (qs[r - 3].as_const(), l.shape(k)[r - 3].as_const());
        if let (Some(hq), Some(hk)) = (hq, hk) {
            if hk != hq && hk > 0 && hq % hk == 0 {
                k = repeat_heads(l, k, hq / hk, n)?;
                v = repeat_heads(l, v, hq / hk, n)?;
            }
        }
    }
    let kt = l.transpose_last(k, n)?;
    let scores = l.node(Op::MatMul, vec![q, kt], n)?;
    let mut scores = l.binary_scalar(BinaryOp::Mul, scores, scale, n)?;
    let dt = l.dtype(scores);
    if is_causal {
        let (rows, cols) = (qs[r - 2].clone(), l.shape(k)[r - 2].clone());
        let keep = lower_triangle(l, rows, cols, 0, n)?;
        let ninf = l.scalar(f64::NEG_INFINITY, dt, n)?;
        scores = l.node(Op::Where, vec![keep, scores, ninf], n)?;
    }
    if let Some(m) = mask {
        if l.dtype(m) == DType::Bool {
            let ninf = l.scalar(f64::NEG_INFINITY, dt, n)?;
            scores = l.node(Op::Where, vec![m, scores, ninf], n)?;
        } else {
            let m = l.cast(m, dt, n)?;
            scores = l.binary(BinaryOp::Add, scores, m, n)?;
        }
    }
    let last = l.rank(scores) - 1;
    let p = softmax_value(l, scores, last, n)?;
    Ok(Lowered::one(l.node(Op::MatMul, vec![p, v], n)?))
}
