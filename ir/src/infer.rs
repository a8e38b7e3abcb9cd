//! Type inference: the result dtype and shape of every op, from its operands' types.
//!
//! The graph builder uses it to type new nodes and the verifier uses it to check stored types.
//! Errors are plain reasons; callers add the op and node names.

use crate::dim::{Dim, SymbolTable};
use crate::dtype::DType;
use crate::graph::TensorType;
use crate::op::{ConvAttrs, Op, PoolAttrs, UnaryOp};

type R<T> = Result<T, String>;

fn arity(inputs: &[&TensorType], n: usize) -> R<()> {
    if inputs.len() == n {
        Ok(())
    } else {
        Err(format!("expects {n} operand(s), got {}", inputs.len()))
    }
}

fn show(dims: &[Dim], symbols: &SymbolTable) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.display(symbols).to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Broadcasts two shapes with NumPy rules (aligned at the right; a dim of 1 stretches).
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> R<Vec<Dim>> {
    broadcast_with(a, b, &SymbolTable::default())
}

fn broadcast_with(a: &[Dim], b: &[Dim], symbols: &SymbolTable) -> R<Vec<Dim>> {
    let rank = a.len().max(b.len());
    let one = Dim::constant(1);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.len() >= rank { &a[i + a.len() - rank] } else { &one };
        let db = if i + b.len() >= rank { &b[i + b.len() - rank] } else { &one };
        out.push(if da == db || db.is_const(1) {
            da.clone()
        } else if da.is_const(1) {
            db.clone()
        } else {
            return Err(format!("shapes {} and {} do not broadcast at dim {i}", show(a, symbols), show(b, symbols)));
        });
    }
    Ok(out)
}

fn check_axis(axis: usize, rank: usize) -> R<()> {
    if axis < rank {
        Ok(())
    } else {
        Err(format!("axis {axis} out of range for rank {rank}"))
    }
}

fn static_dim(d: &Dim, what: &str) -> R<i64> {
    d.as_const().ok_or_else(|| format!("{what} must be static"))
}

/// Infers the type of `op` applied to operands of `inputs` types.
pub fn infer(op: &Op, inputs: &[&TensorType], symbols: &SymbolTable) -> R<TensorType> {
    match op {
        Op::Unary(u) => {
            arity(inputs, 1)?;
            let x = inputs[0];
            let dtype = match u {
                UnaryOp::IsNan => DType::Bool,
                UnaryOp::Not => {
                    if x.dtype.is_float() {
                        return Err("`not` needs a bool or integer operand".into());
                    }
                    x.dtype
                }
                _ if u.float_only() && !x.dtype.is_float() => {
                    return Err(format!("`{}` needs a float operand, got {}", u.name(), x.dtype))
                }
                _ => x.dtype,
            };
            Ok(TensorType::new(dtype, x.shape.clone()))
        }
        Op::Binary(b) => {
            arity(inputs, 2)?;
            let (x, y) = (inputs[0], inputs[1]);
            if x.dtype != y.dtype {
                return Err(format!("operand dtypes differ: {} and {}", x.dtype, y.dtype));
            }
            if b.is_logical() && x.dtype.is_float() {
                return Err("logical ops need bool or integer operands".into());
            }
            let shape = broadcast_with(&x.shape, &y.shape, symbols)?;
            let dtype = if b.is_comparison() { DType::Bool } else { x.dtype };
            Ok(TensorType::new(dtype, shape))
        }
        Op::Where => {
            arity(inputs, 3)?;
            if inputs[0].dtype != DType::Bool {
                return Err(format!("condition must be bool, got {}", inputs[0].dtype));
            }
            if inputs[1].dtype != inputs[2].dtype {
                return Err(format!("branch dtypes differ: {} and {}", inputs[1].dtype, inputs[2].dtype));
            }
            let s = broadcast_with(&inputs[0].shape, &inputs[1].shape, symbols)?;
            let s = broadcast_with(&s, &inputs[2].shape, symbols)?;
            Ok(TensorType::new(inputs[1].dtype, s))
        }
        Op::Cast(dtype) => {
            arity(inputs, 1)?;
            Ok(TensorType::new(*dtype, inputs[0].shape.clone()))
        }
        Op::Reduce { axes, keepdim, kind: _ } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            if axes.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("axes {axes:?} must be sorted and unique"));
            }
            for &a in axes {
                check_axis(a, x.rank())?;
            }
            Ok(TensorType::new(x.dtype, reduced_shape(&x.shape, axes, *keepdim)))
        }
        Op::ArgReduce { axis, keepdim, .. } => {
            arity(inputs, 1)?;
            check_axis(*axis, inputs[0].rank())?;
            Ok(TensorType::new(DType::I64, reduced_shape(&inputs[0].shape, &[*axis], *keepdim)))
        }
        Op::MatMul => {
            arity(inputs, 2)?;
            let (a, b) = (inputs[0], inputs[1]);
            if a.dtype != b.dtype {
                return Err(format!("operand dtypes differ: {} and {}", a.dtype, b.dtype));
            }
            if a.rank() < 2 || b.rank() < 2 {
                return Err("operands must have rank >= 2".into());
            }
            let (ra, rb) = (a.rank(), b.rank());
            if a.shape[ra - 1] != b.shape[rb - 2] {
                return Err(format!(
                    "contraction dims differ: {} vs {}",
                    show(&a.shape, symbols),
                    show(&b.shape, symbols)
                ));
            }
            let mut shape = broadcast_with(&a.shape[..ra - 2], &b.shape[..rb - 2], symbols)?;
            shape.push(a.shape[ra - 2].clone());
            shape.push(b.shape[rb - 1].clone());
            Ok(TensorType::new(a.dtype, shape))
        }
        Op::Attention(attrs) => infer_attention(attrs, inputs, symbols),
        Op::Conv(attrs) => {
            arity(inputs, 2)?;
            infer_conv(attrs, inputs[0], inputs[1])
        }
        Op::Pool(attrs) => {
            arity(inputs, 1)?;
            infer_pool(attrs, inputs[0])
        }
        Op::AdaptivePool { output_size, .. } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            if x.rank() != output_size.len() + 2 || output_size.is_empty() {
                return Err(format!("input rank {} does not match output_size {output_size:?}", x.rank()));
            }
            if output_size.iter().any(|&o| o < 1) {
                return Err("output sizes must be positive".into());
            }
            let mut shape = x.shape[..2].to_vec();
            shape.extend(output_size.iter().map(|&o| Dim::constant(o)));
            Ok(TensorType::new(x.dtype, shape))
        }
        Op::Reshape { shape } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            let (a, b) = (Dim::product(&x.shape), Dim::product(shape));
            if a != b {
                return Err(format!(
                    "element counts differ: {} has {} elements, target {} has {}",
                    show(&x.shape, symbols),
                    a.display(symbols),
                    show(shape, symbols),
                    b.display(symbols)
                ));
            }
            Ok(TensorType::new(x.dtype, shape.clone()))
        }
        Op::Permute { perm } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            let mut seen = perm.clone();
            seen.sort();
            if seen != (0..x.rank()).collect::<Vec<_>>() {
                return Err(format!("{perm:?} is not a permutation of rank {}", x.rank()));
            }
            Ok(TensorType::new(x.dtype, perm.iter().map(|&p| x.shape[p].clone()).collect()))
        }
        Op::Expand { shape } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            if shape.len() != x.rank() {
                return Err(format!("target rank {} differs from input rank {}", shape.len(), x.rank()));
            }
            for (from, to) in x.shape.iter().zip(shape) {
                if from != to && !from.is_const(1) {
                    return Err(format!("cannot expand {} to {}", show(&x.shape, symbols), show(shape, symbols)));
                }
            }
            Ok(TensorType::new(x.dtype, shape.clone()))
        }
        Op::Slice { axis, start, end, step } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            check_axis(*axis, x.rank())?;
            if *step < 1 {
                return Err(format!("step {step} must be positive"));
            }
            let len = end.sub(start);
            let dim = &x.shape[*axis];
            if let (Some(s), Some(e)) = (start.as_const(), end.as_const()) {
                if s < 0 || e < s {
                    return Err(format!("bounds {s}..{e} are not normalized"));
                }
                if let Some(d) = dim.as_const() {
                    if e > d {
                        return Err(format!("end {e} is past dim size {d}"));
                    }
                }
            }
            if len.as_const().is_some_and(|l| l < 0) {
                return Err(format!(
                    "slice bounds {}..{} have negative length",
                    start.display(symbols),
                    end.display(symbols)
                ));
            }
            let out = if *step == 1 {
                len
            } else {
                let l = static_dim(&len, "a strided slice's length")?;
                Dim::constant(l.saturating_add(step - 1) / step)
            };
            let mut shape = x.shape.clone();
            shape[*axis] = out;
            Ok(TensorType::new(x.dtype, shape))
        }
        Op::Concat { axis } => {
            let first = inputs.first().ok_or("expects at least one operand")?;
            check_axis(*axis, first.rank())?;
            let mut total = Dim::constant(0);
            for t in inputs {
                if t.dtype != first.dtype || t.rank() != first.rank() {
                    return Err("operands differ in dtype or rank".into());
                }
                for (i, (a, b)) in t.shape.iter().zip(&first.shape).enumerate() {
                    if i != *axis && a != b {
                        return Err(format!("operands differ at dim {i}"));
                    }
                }
                total = total.add(&t.shape[*axis]);
            }
            let mut shape = first.shape.clone();
            shape[*axis] = total;
            Ok(TensorType::new(first.dtype, shape))
        }
        Op::Pad { pads, .. } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            if pads.len() != x.rank() {
                return Err(format!("{} pad pairs for rank {}", pads.len(), x.rank()));
            }
            let shape =
                x.shape.iter().zip(pads).map(|(d, (lo, hi))| d.add(&Dim::constant(lo.saturating_add(*hi)))).collect();
            Ok(TensorType::new(x.dtype, shape))
        }
        Op::Gather { axis } => {
            arity(inputs, 2)?;
            let (data, idx) = (inputs[0], inputs[1]);
            check_axis(*axis, data.rank())?;
            if !idx.dtype.is_int() {
                return Err(format!("indices must be integers, got {}", idx.dtype));
            }
            let mut shape = data.shape[..*axis].to_vec();
            shape.extend(idx.shape.iter().cloned());
            shape.extend(data.shape[axis + 1..].iter().cloned());
            Ok(TensorType::new(data.dtype, shape))
        }
        Op::Iota { shape, axis, dtype, .. } => {
            arity(inputs, 0)?;
            check_axis(*axis, shape.len())?;
            Ok(TensorType::new(*dtype, shape.clone()))
        }
        Op::Full { shape, dtype, .. } => {
            arity(inputs, 0)?;
            Ok(TensorType::new(*dtype, shape.clone()))
        }
        Op::DimValue { dtype, .. } => {
            arity(inputs, 0)?;
            Ok(TensorType::new(*dtype, vec![]))
        }
        Op::CumSum { axis } => {
            arity(inputs, 1)?;
            check_axis(*axis, inputs[0].rank())?;
            Ok(inputs[0].clone())
        }
    }
}

fn reduced_shape(shape: &[Dim], axes: &[usize], keepdim: bool) -> Vec<Dim> {
    let mut out = Vec::new();
    for (i, d) in shape.iter().enumerate() {
        if axes.contains(&i) {
            if keepdim {
                out.push(Dim::constant(1));
            }
        } else {
            out.push(d.clone());
        }
    }
    out
}

/// Output length of a sliding window, PyTorch's formula (floor or ceil mode).
/// Arguments must be in range (see [`check_window`]); arithmetic saturates.
pub fn window_output(input: i64, kernel: i64, stride: i64, pad: i64, dilation: i64, ceil_mode: bool) -> i64 {
    let stride = stride.max(1);
    let span = input
        .saturating_add(pad.saturating_mul(2))
        .saturating_sub(dilation.saturating_mul(kernel.saturating_sub(1)))
        .saturating_sub(1);
    if span < 0 {
        return 0;
    }
    let mut out = if ceil_mode { span.saturating_add(stride - 1) / stride + 1 } else { span / stride + 1 };
    // In ceil mode the last window must start inside the input or the left padding.
    if ceil_mode && (out - 1).saturating_mul(stride) >= input.saturating_add(pad) {
        out -= 1;
    }
    out
}

/// Window attributes: strides, kernels and dilations at least 1, paddings at least 0, and all
/// below 2^30 so that size arithmetic cannot overflow.
fn check_window(name: &str, values: &[i64], min: i64) -> R<()> {
    match values.iter().find(|&&v| v < min || v > 1 << 30) {
        Some(v) => Err(format!("`{name}` value {v} is out of range (must be {min}..=2^30)")),
        None => Ok(()),
    }
}

fn spatial_lists(n: usize, lists: &[(&str, usize)]) -> R<()> {
    for (name, len) in lists {
        if *len != n {
            return Err(format!("`{name}` has {len} entries for {n} spatial dims"));
        }
    }
    Ok(())
}

fn infer_conv(a: &ConvAttrs, x: &TensorType, w: &TensorType) -> R<TensorType> {
    if x.dtype != w.dtype {
        return Err(format!("input and weight dtypes differ: {} and {}", x.dtype, w.dtype));
    }
    let n = x.rank().checked_sub(2).filter(|n| (1..=3).contains(n)).ok_or("input must have rank 3 to 5")?;
    if w.rank() != x.rank() {
        return Err("weight rank must equal input rank".into());
    }
    spatial_lists(n, &[("stride", a.stride.len()), ("padding", a.padding.len()), ("dilation", a.dilation.len())])?;
    if a.transposed {
        spatial_lists(n, &[("output_padding", a.output_padding.len())])?;
    }
    if a.groups < 1 || a.groups > 1 << 30 {
        return Err("groups must be positive".into());
    }
    check_window("stride", &a.stride, 1)?;
    check_window("dilation", &a.dilation, 1)?;
    check_window("padding", &a.padding, 0)?;
    if a.transposed {
        check_window("output_padding", &a.output_padding, 0)?;
    }
    let c_in = static_dim(&x.shape[1], "input channels")?;
    let w0 = static_dim(&w.shape[0], "weight dim 0")?;
    let w1 = static_dim(&w.shape[1], "weight dim 1")?;
    let c_out = if a.transposed {
        if w0 != c_in {
            return Err(format!("transposed weight has {w0} input channels, input has {c_in}"));
        }
        w1.saturating_mul(a.groups)
    } else {
        if w1.saturating_mul(a.groups) != c_in {
            return Err(format!("weight expects {} input channels, input has {c_in}", w1.saturating_mul(a.groups)));
        }
        if w0 % a.groups != 0 {
            return Err("output channels not divisible by groups".into());
        }
        w0
    };
    let mut shape = vec![x.shape[0].clone(), Dim::constant(c_out)];
    for i in 0..n {
        let len = static_dim(&x.shape[2 + i], "spatial dims")?;
        let k = static_dim(&w.shape[2 + i], "kernel dims")?;
        let out = if a.transposed {
            (len - 1)
                .saturating_mul(a.stride[i])
                .saturating_sub(2 * a.padding[i])
                .saturating_add(a.dilation[i].saturating_mul(k - 1))
                .saturating_add(a.output_padding[i] + 1)
        } else {
            window_output(len, k, a.stride[i], a.padding[i], a.dilation[i], false)
        };
        if out < 1 {
            return Err(format!("spatial dim {i} would be empty"));
        }
        shape.push(Dim::constant(out));
    }
    Ok(TensorType::new(x.dtype, shape))
}

fn infer_pool(a: &PoolAttrs, x: &TensorType) -> R<TensorType> {
    let n = x.rank().checked_sub(2).filter(|n| (1..=3).contains(n)).ok_or("input must have rank 3 to 5")?;
    spatial_lists(
        n,
        &[
            ("kernel", a.kernel.len()),
            ("stride", a.stride.len()),
            ("padding", a.padding.len()),
            ("dilation", a.dilation.len()),
        ],
    )?;
    check_window("kernel", &a.kernel, 1)?;
    check_window("stride", &a.stride, 1)?;
    check_window("dilation", &a.dilation, 1)?;
    check_window("padding", &a.padding, 0)?;
    let mut shape = x.shape[..2].to_vec();
    for i in 0..n {
        let len = static_dim(&x.shape[2 + i], "spatial dims")?;
        if a.padding[i] * 2 > a.kernel[i] {
            return Err("padding must be at most half the kernel".into());
        }
        let out = window_output(len, a.kernel[i], a.stride[i], a.padding[i], a.dilation[i], a.ceil_mode);
        if out < 1 {
            return Err(format!("spatial dim {i} would be empty"));
        }
        shape.push(Dim::constant(out));
    }
    Ok(TensorType::new(x.dtype, shape))
}

/// `q[..., m, d], k[..., n, d], v[..., n, e], masks... -> [..., m, e]` (see the crate docs).
fn infer_attention(attrs: &crate::op::AttentionAttrs, inputs: &[&TensorType], symbols: &SymbolTable) -> R<TensorType> {
    use crate::op::AttentionMask;
    arity(inputs, 3 + attrs.masks.len())?;
    let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
    if !q.dtype.is_float() || k.dtype != q.dtype || v.dtype != q.dtype {
        return Err(format!("q, k and v must share one float dtype, got {}, {} and {}", q.dtype, k.dtype, v.dtype));
    }
    if q.rank() < 2 || k.rank() < 2 || v.rank() < 2 {
        return Err("q, k and v must have rank >= 2".into());
    }
    let (rq, rk, rv) = (q.rank(), k.rank(), v.rank());
    if q.shape[rq - 1] != k.shape[rk - 1] {
        return Err(format!("q and k head dims differ: {} vs {}", show(&q.shape, symbols), show(&k.shape, symbols)));
    }
    if k.shape[rk - 2] != v.shape[rv - 2] {
        return Err(format!("k and v lengths differ: {} vs {}", show(&k.shape, symbols), show(&v.shape, symbols)));
    }
    let mut scores = broadcast_with(&q.shape[..rq - 2], &k.shape[..rk - 2], symbols)?;
    scores.push(q.shape[rq - 2].clone());
    scores.push(k.shape[rk - 2].clone());
    for (i, (mask, m)) in attrs.masks.iter().zip(&inputs[3..]).enumerate() {
        let want = match mask {
            AttentionMask::Add => q.dtype,
            AttentionMask::Keep(_) | AttentionMask::Fill(_) => DType::Bool,
        };
        if m.dtype != want {
            return Err(format!("mask {i} must be {want}, got {}", m.dtype));
        }
        if broadcast_with(&scores, &m.shape, symbols)? != scores {
            return Err(format!(
                "mask {i} of shape {} does not broadcast to the scores {}",
                show(&m.shape, symbols),
                show(&scores, symbols)
            ));
        }
    }
    let batch = scores[..scores.len() - 2].to_vec();
    let mut shape = broadcast_with(&batch, &v.shape[..rv - 2], symbols)?;
    shape.push(q.shape[rq - 2].clone());
    shape.push(v.shape[rv - 1].clone());
    Ok(TensorType::new(q.dtype, shape))
}
