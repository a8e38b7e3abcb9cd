//! Matrix multiplication and convolution (forward and transposed), accumulating in `f64` for
//! floats and wrapping `i64` for integers.

use super::value::{attr, broadcast_offsets, broadcast_shapes, numel, Acc, Data, Value, R};
use crate::infer::window_output;
use crate::op::ConvAttrs;

/// `a[..., m, k] @ b[..., k, n] -> [..., m, n]`, batch dims broadcast.
pub(crate) fn matmul(a: &Value, b: &Value) -> R<Value> {
    if a.dtype != b.dtype {
        return Err(format!("operand dtypes differ: {} and {}", a.dtype, b.dtype));
    }
    let (ra, rb) = (a.shape.len(), b.shape.len());
    if ra < 2 || rb < 2 {
        return Err(format!("operands must have rank >= 2, got {:?} and {:?}", a.shape, b.shape));
    }
    let (m, k) = (a.shape[ra - 2], a.shape[ra - 1]);
    let (k2, n) = (b.shape[rb - 2], b.shape[rb - 1]);
    if k != k2 {
        return Err(format!("contraction dims differ: {:?} @ {:?}", a.shape, b.shape));
    }
    let batch = broadcast_shapes(&a.shape[..ra - 2], &b.shape[..rb - 2])?;
    let ia = broadcast_offsets(&a.shape[..ra - 2], &batch)?;
    let ib = broadcast_offsets(&b.shape[..rb - 2], &batch)?;
    let mut shape = batch;
    shape.extend([m, n]);
    numel(&shape)?;
    let data = match (&a.data, &b.data) {
        (Data::Float(x), Data::Float(y)) => Data::Float(mm(x, y, &ia, &ib, m, k, n)),
        (Data::Int(x), Data::Int(y)) => Data::Int(mm(x, y, &ia, &ib, m, k, n)),
        _ => return Err("internal: operand storage differs".into()),
    };
    Value::new(a.dtype, shape, data)
}

/// Batched matmul: batch `t` multiplies matrix `ia[t]` of `a` by matrix `ib[t]` of `b`. Each
/// output element sums its `k` products in order `p = 0, 1, ...`; the loops run `i, p, j` so
/// that `b` is read row by row.
fn mm<T: Acc>(a: &[T], b: &[T], ia: &[usize], ib: &[usize], m: usize, k: usize, n: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(ia.len() * m * n);
    for (&sa, &sb) in ia.iter().zip(ib) {
        let (a, b) = (&a[sa * m * k..(sa + 1) * m * k], &b[sb * k * n..(sb + 1) * k * n]);
        for i in 0..m {
            let row = out.len();
            out.resize(row + n, T::ZERO);
            let acc = &mut out[row..];
            for p in 0..k {
                let av = a[i * k + p];
                for (acc, &bv) in acc.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                    *acc = acc.mul_add(av, bv);
                }
            }
        }
    }
    out
}

/// Validated convolution geometry, with the spatial dims left-padded to 3 (size 1, kernel 1,
/// stride 1, padding 0, dilation 1) so that one loop nest serves 1d, 2d and 3d.
struct Geom {
    batch: usize,
    c_in: usize,
    c_out: usize,
    groups: usize,
    /// Spatial size of the input (for transposed: of the input too).
    inp: [usize; 3],
    kernel: [usize; 3],
    out: [usize; 3],
    stride: [usize; 3],
    pad: [usize; 3],
    dil: [usize; 3],
}

impl Geom {
    /// Position of tap `t` for window `o` along spatial dim `d`: `o*stride + t*dilation - pad`.
    /// Forward: `o` is an output index and the position is in the input; transposed: `o` is an
    /// input index and the position is in the output.
    fn pos(&self, d: usize, o: usize, t: usize) -> i64 {
        (o * self.stride[d] + t * self.dil[d]) as i64 - self.pad[d] as i64
    }

    /// For each of `count` windows along dim `d`, the taps `[lo, hi)` whose positions fall in
    /// `[0, len)` (a contiguous range, found by scanning every tap).
    fn taps(&self, d: usize, count: usize, len: usize) -> Vec<(usize, usize)> {
        (0..count)
            .map(|o| {
                let ok = |t: &usize| (0..len as i64).contains(&self.pos(d, o, *t));
                let lo = (0..self.kernel[d]).find(ok).unwrap_or(0);
                let hi = (0..self.kernel[d]).rev().find(ok).map_or(lo, |t| t + 1);
                (lo, hi)
            })
            .collect()
    }
}

fn conv_geom(a: &ConvAttrs, x: &[usize], w: &[usize]) -> R<Geom> {
    let rank = x.len();
    if !(3..=5).contains(&rank) {
        return Err(format!("input must have rank 3 to 5, got {x:?}"));
    }
    if w.len() != rank {
        return Err(format!("weight {w:?} must have the input's rank {rank}"));
    }
    let nsp = rank - 2;
    let lists = [("stride", a.stride.len()), ("padding", a.padding.len()), ("dilation", a.dilation.len())];
    for (name, len) in lists.into_iter().chain(a.transposed.then_some(("output_padding", a.output_padding.len()))) {
        if len != nsp {
            return Err(format!("`{name}` has {len} entries for {nsp} spatial dims"));
        }
    }
    let groups = attr(a.groups, "groups", 1)?;
    let (batch, c_in) = (x[0], x[1]);
    if (c_in / groups) * groups != c_in {
        return Err(format!("{c_in} input channels are not divisible by {groups} groups"));
    }
    let c_out = if a.transposed {
        if w[0] != c_in {
            return Err(format!("transposed weight {w:?} has {} input channels, the input has {c_in}", w[0]));
        }
        w[1].checked_mul(groups).ok_or("too many output channels")?
    } else {
        if w[1].checked_mul(groups) != Some(c_in) {
            return Err(format!("weight {w:?} with {groups} groups does not take {c_in} input channels"));
        }
        if (w[0] / groups) * groups != w[0] {
            return Err(format!("{} output channels are not divisible by {groups} groups", w[0]));
        }
        w[0]
    };
    let off = 3 - nsp;
    let mut g = Geom {
        batch,
        c_in,
        c_out,
        groups,
        inp: [1; 3],
        kernel: [1; 3],
        out: [1; 3],
        stride: [1; 3],
        pad: [0; 3],
        dil: [1; 3],
    };
    for i in 0..nsp {
        let (len, k) = (x[2 + i], w[2 + i]);
        let (s, p, d) =
            (attr(a.stride[i], "stride", 1)?, attr(a.padding[i], "padding", 0)?, attr(a.dilation[i], "dilation", 1)?);
        let (len_i, k_i) = (len as i64, attr(k as i64, "kernel size", 0)? as i64);
        let out = if a.transposed {
            let op = attr(a.output_padding[i], "output_padding", 0)? as i64;
            (len_i - 1) * s as i64 - 2 * p as i64 + d as i64 * (k_i - 1) + op + 1
        } else if k == 0 {
            return Err("kernel size 0".into());
        } else {
            window_output(len_i, k_i, s as i64, p as i64, d as i64, false)
        };
        if out < 0 {
            return Err(format!("spatial dim {i} would have negative size {out}"));
        }
        (g.inp[off + i], g.kernel[off + i], g.out[off + i]) = (len, k, out as usize);
        (g.stride[off + i], g.pad[off + i], g.dil[off + i]) = (s, p, d);
    }
    let mut shape = vec![batch, c_out];
    shape.extend_from_slice(&g.out[off..]);
    numel(&shape)?;
    Ok(g)
}

/// `conv` as in the crate docs: cross-correlation, or (when `transposed`) its adjoint.
pub(crate) fn conv(a: &ConvAttrs, x: &Value, w: &Value) -> R<Value> {
    if x.dtype != w.dtype {
        return Err(format!("input and weight dtypes differ: {} and {}", x.dtype, w.dtype));
    }
    let g = conv_geom(a, &x.shape, &w.shape)?;
    let data = match (&x.data, &w.data, a.transposed) {
        (Data::Float(x), Data::Float(w), false) => Data::Float(conv_forward(&g, x, w)),
        (Data::Float(x), Data::Float(w), true) => Data::Float(conv_transposed(&g, x, w)),
        (Data::Int(x), Data::Int(w), false) => Data::Int(conv_forward(&g, x, w)),
        (Data::Int(x), Data::Int(w), true) => Data::Int(conv_transposed(&g, x, w)),
        _ => return Err("internal: operand storage differs".into()),
    };
    let nsp = x.shape.len() - 2;
    let mut shape = vec![g.batch, g.c_out];
    shape.extend_from_slice(&g.out[3 - nsp..]);
    Value::new(x.dtype, shape, data)
}

/// `y[n, oc, o] = sum_{ic in oc's group, k} x[n, ic, o*stride + k*dilation - pad] * w[oc, ic', k]`
/// with zeros outside the input. Weight `[c_out, c_in/groups, *k]`.
fn conv_forward<T: Acc>(g: &Geom, x: &[T], w: &[T]) -> Vec<T> {
    let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
    let [i0, i1, i2] = g.inp;
    let [k0, k1, k2] = g.kernel;
    let (in_plane, k_numel) = (i0 * i1 * i2, k0 * k1 * k2);
    let (r0, r1, r2) = (g.taps(0, g.out[0], i0), g.taps(1, g.out[1], i1), g.taps(2, g.out[2], i2));
    let mut y = Vec::with_capacity(g.batch * g.c_out * g.out.iter().product::<usize>());
    for n in 0..g.batch {
        for oc in 0..g.c_out {
            let grp = oc / cout_g;
            for (o0, &(lo0, hi0)) in r0.iter().enumerate() {
                for (o1, &(lo1, hi1)) in r1.iter().enumerate() {
                    for (o2, &(lo2, hi2)) in r2.iter().enumerate() {
                        let mut acc = T::ZERO;
                        for ic in 0..cin_g {
                            let xb = (n * g.c_in + grp * cin_g + ic) * in_plane;
                            let wb = (oc * cin_g + ic) * k_numel;
                            for t0 in lo0..hi0 {
                                let p0 = g.pos(0, o0, t0) as usize;
                                for t1 in lo1..hi1 {
                                    let p1 = g.pos(1, o1, t1) as usize;
                                    for t2 in lo2..hi2 {
                                        let p2 = g.pos(2, o2, t2) as usize;
                                        let xv = x[xb + (p0 * i1 + p1) * i2 + p2];
                                        let wv = w[wb + (t0 * k1 + t1) * k2 + t2];
                                        acc = acc.mul_add(xv, wv);
                                    }
                                }
                            }
                        }
                        y.push(acc);
                    }
                }
            }
        }
    }
    y
}

/// The adjoint of [`conv_forward`] (PyTorch's `conv_transpose`): every input element scatters
/// `x[n, ic, i] * w[ic, oc', k]` to output position `i*stride + k*dilation - pad` (dropped when
/// outside the output). Weight `[c_in, c_out/groups, *k]`.
fn conv_transposed<T: Acc>(g: &Geom, x: &[T], w: &[T]) -> Vec<T> {
    let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
    let [i0, i1, i2] = g.inp;
    let [k0, k1, k2] = g.kernel;
    let [l0, l1, l2] = g.out;
    let (in_plane, out_plane, k_numel) = (i0 * i1 * i2, l0 * l1 * l2, k0 * k1 * k2);
    let (r0, r1, r2) = (g.taps(0, i0, l0), g.taps(1, i1, l1), g.taps(2, i2, l2));
    let mut y = vec![T::ZERO; g.batch * g.c_out * out_plane];
    for n in 0..g.batch {
        for c in 0..g.c_in {
            let grp = c / cin_g;
            for (a0, &(lo0, hi0)) in r0.iter().enumerate() {
                for (a1, &(lo1, hi1)) in r1.iter().enumerate() {
                    for (a2, &(lo2, hi2)) in r2.iter().enumerate() {
                        let xv = x[(n * g.c_in + c) * in_plane + (a0 * i1 + a1) * i2 + a2];
                        for oc in 0..cout_g {
                            let yb = (n * g.c_out + grp * cout_g + oc) * out_plane;
                            let wb = (c * cout_g + oc) * k_numel;
                            for t0 in lo0..hi0 {
                                let p0 = g.pos(0, a0, t0) as usize;
                                for t1 in lo1..hi1 {
                                    let p1 = g.pos(1, a1, t1) as usize;
                                    for t2 in lo2..hi2 {
                                        let p2 = g.pos(2, a2, t2) as usize;
                                        let at = yb + (p0 * l1 + p1) * l2 + p2;
                                        y[at] = y[at].mul_add(xv, w[wb + (t0 * k1 + t1) * k2 + t2]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::{ConvAttrs, DType, Op, Tensor};

    fn attrs(stride: &[i64], padding: &[i64], dilation: &[i64], groups: i64) -> ConvAttrs {
        ConvAttrs {
            stride: stride.to_vec(),
            padding: padding.to_vec(),
            dilation: dilation.to_vec(),
            groups,
            transposed: false,
            output_padding: vec![0; stride.len()],
        }
    }

    /// A deterministic pseudo-random f64 tensor with values in [-1, 1).
    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let v: Vec<f64> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect();
        f64s(shape, &v)
    }

    #[test]
    fn matmul_2d_and_batched_broadcast() {
        let a = f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = f32s(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
        assert_close(&ok(Op::MatMul, &[a.clone(), b.clone()]), &[2, 2], &[58.0, 64.0, 139.0, 154.0], 0.0);
        // a: [2, 1, 2, 3] (second batch = 2 * first), b: [3, 3, 2] (batch k = (k+1) * b).
        let mut av: Vec<f64> = a.to_f64();
        av.extend(a.to_f64().iter().map(|v| v * 2.0));
        let a4 = f32s(&[2, 1, 2, 3], &av);
        let bv: Vec<f64> = (1..=3).flat_map(|k| b.to_f64().into_iter().map(move |v| v * k as f64)).collect();
        let b3 = f32s(&[3, 3, 2], &bv);
        let y = ok(Op::MatMul, &[a4, b3]);
        let base = [58.0, 64.0, 139.0, 154.0];
        let want: Vec<f64> = (1..=2)
            .flat_map(|i| (1..=3).flat_map(move |k| base.into_iter().map(move |v| v * (i * k) as f64)))
            .collect();
        assert_close(&y, &[2, 3, 2, 2], &want, 0.0);
        let y = ok(Op::MatMul, &[i64s(&[1, 2], &[2, 3]), i64s(&[2, 1], &[4, 5])]);
        assert_ints(&y, &[1, 1], &[23]);
    }

    /// The obvious six-loop formula for 2d conv, written independently of the implementation.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv2d(
        x: &[f64],
        xs: [usize; 4],
        w: &[f64],
        ws: [usize; 4],
        s: [usize; 2],
        p: [usize; 2],
        d: [usize; 2],
        groups: usize,
    ) -> (Vec<f64>, [usize; 4]) {
        let [n, c, h, wd] = xs;
        let [co, cig, kh, kw] = ws;
        let oh = (h + 2 * p[0] - d[0] * (kh - 1) - 1) / s[0] + 1;
        let ow = (wd + 2 * p[1] - d[1] * (kw - 1) - 1) / s[1] + 1;
        let mut y = vec![0.0; n * co * oh * ow];
        for b in 0..n {
            for o in 0..co {
                let grp = o / (co / groups);
                for i in 0..oh {
                    for j in 0..ow {
                        let mut acc = 0.0;
                        for ci in 0..cig {
                            for u in 0..kh {
                                for v in 0..kw {
                                    let hi = (i * s[0] + u * d[0]) as i64 - p[0] as i64;
                                    let wi = (j * s[1] + v * d[1]) as i64 - p[1] as i64;
                                    if hi < 0 || wi < 0 || hi >= h as i64 || wi >= wd as i64 {
                                        continue;
                                    }
                                    let cc = grp * cig + ci;
                                    acc += x[((b * c + cc) * h + hi as usize) * wd + wi as usize]
                                        * w[((o * cig + ci) * kh + u) * kw + v];
                                }
                            }
                        }
                        y[((b * co + o) * oh + i) * ow + j] = acc;
                    }
                }
            }
        }
        (y, [n, co, oh, ow])
    }

    #[test]
    fn conv1d_hand_example() {
        // x = [1, 2, 3, 4], w = [1, 10], padding 1, stride 2:
        // padded 0 1 2 3 4 0 -> windows at 0, 2, 4: (0,1) (2,3) (4,0) -> 10, 32, 4.
        let x = f32s(&[1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
        let w = f32s(&[1, 1, 2], &[1.0, 10.0]);
        let y = ok(Op::Conv(attrs(&[2], &[1], &[1], 1)), &[x.clone(), w.clone()]);
        assert_close(&y, &[1, 1, 3], &[10.0, 32.0, 4.0], 0.0);
        // Dilation 2, no padding: (1,3) (2,4) -> 31, 42.
        let y = ok(Op::Conv(attrs(&[1], &[0], &[2], 1)), &[x, w]);
        assert_close(&y, &[1, 1, 2], &[31.0, 42.0], 0.0);
    }

    #[test]
    fn conv2d_matches_naive_with_padding_stride_dilation_groups() {
        // (x shape, w shape, stride, padding, dilation, groups)
        type Case = ([usize; 4], [usize; 4], [usize; 2], [usize; 2], [usize; 2], usize);
        let cases: [Case; 4] = [
            ([2, 4, 7, 6], [6, 2, 3, 2], [2, 1], [1, 1], [1, 2], 2),
            ([1, 3, 5, 5], [4, 3, 3, 3], [1, 1], [1, 1], [1, 1], 1),
            ([1, 4, 9, 8], [4, 1, 3, 3], [2, 3], [2, 0], [2, 1], 4),
            ([1, 2, 4, 4], [2, 2, 1, 1], [1, 1], [0, 0], [1, 1], 1),
        ];
        for (ci, (xs, ws, s, p, d, groups)) in cases.into_iter().enumerate() {
            let x = rand(&xs, 1 + ci as u64);
            let w = rand(&ws, 100 + ci as u64);
            let (want, ys) = naive_conv2d(&x.to_f64(), xs, &w.to_f64(), ws, s, p, d, groups);
            let a = attrs(
                &[s[0] as i64, s[1] as i64],
                &[p[0] as i64, p[1] as i64],
                &[d[0] as i64, d[1] as i64],
                groups as i64,
            );
            let y = ok(Op::Conv(a), &[x, w]);
            assert_close(&y, &ys, &want, 1e-12);
        }
    }

    #[test]
    fn conv3d_and_int_conv() {
        // A 1x1x1 kernel of 2 scales; a 2x2x2 all-ones kernel sums.
        let x = arange(&[1, 1, 2, 2, 2]);
        let w = f32s(&[1, 1, 2, 2, 2], &[1.0; 8]);
        assert_close(&ok(Op::Conv(attrs(&[1; 3], &[0; 3], &[1; 3], 1)), &[x, w]), &[1, 1, 1, 1, 1], &[28.0], 0.0);
        let x = i64s(&[1, 1, 3], &[1, 2, 3]);
        let w = i64s(&[1, 1, 2], &[1, -1]);
        assert_ints(&ok(Op::Conv(attrs(&[1], &[0], &[1], 1)), &[x, w]), &[1, 1, 2], &[-1, -1]);
    }

    fn dot(a: &Tensor, b: &Tensor) -> f64 {
        a.to_f64().iter().zip(b.to_f64()).map(|(x, y)| x * y).sum()
    }

    /// `<conv(x, w), y> == <x, conv_transpose(y, w)>` for the same weights: transposed conv is the
    /// adjoint of the forward conv, when output_padding restores the input size.
    #[test]
    fn transposed_conv_is_the_adjoint() {
        // (x shape, w shape, stride, padding, dilation, groups)
        type Case<'a> = (&'a [usize], &'a [usize], &'a [i64], &'a [i64], &'a [i64], i64);
        let cases: [Case; 4] = [
            (&[2, 4, 7, 6], &[6, 2, 3, 2], &[2, 1], &[1, 1], &[1, 2], 2),
            (&[1, 3, 8], &[2, 3, 3], &[3], &[1], &[1], 1),
            (&[1, 2, 5, 4, 4], &[2, 1, 2, 3, 2], &[2, 1, 2], &[1, 1, 0], &[1, 1, 2], 2),
            (&[1, 3, 9, 8], &[6, 1, 3, 3], &[2, 3], &[1, 0], &[2, 1], 3),
        ];
        for (ci, (xs, ws, s, p, d, groups)) in cases.into_iter().enumerate() {
            let x = rand(xs, 7 + ci as u64);
            let w = rand(ws, 70 + ci as u64);
            let fwd = ok(Op::Conv(attrs(s, p, d, groups)), &[x.clone(), w.clone()]);
            let y = rand(&fwd.shape, 700 + ci as u64);
            // output_padding that gives back the input's spatial size.
            let op: Vec<i64> = (0..s.len())
                .map(|i| {
                    let (l, lo, k) = (xs[2 + i] as i64, fwd.shape[2 + i] as i64, ws[2 + i] as i64);
                    l - ((lo - 1) * s[i] - 2 * p[i] + d[i] * (k - 1) + 1)
                })
                .collect();
            let mut t = attrs(s, p, d, groups);
            t.transposed = true;
            t.output_padding = op;
            let back = ok(Op::Conv(t), &[y.clone(), w]);
            assert_eq!(back.shape, xs);
            let (l, r) = (dot(&fwd, &y), dot(&x, &back));
            assert!((l - r).abs() < 1e-10 * l.abs().max(1.0), "case {ci}: {l} vs {r}");
        }
    }

    #[test]
    fn transposed_conv_hand_example() {
        // x = [1, 2], w = [1, 10, 100], stride 2: 1*w at 0.., 2*w at 2.. -> 1 10 102 20 200.
        let mut a = attrs(&[2], &[0], &[1], 1);
        a.transposed = true;
        let y = ok(Op::Conv(a.clone()), &[f32s(&[1, 1, 2], &[1.0, 2.0]), f32s(&[1, 1, 3], &[1.0, 10.0, 100.0])]);
        assert_close(&y, &[1, 1, 5], &[1.0, 10.0, 102.0, 20.0, 200.0], 0.0);
        // padding 1 crops one from each end; output_padding 1 adds one at the end.
        a.padding = vec![1];
        a.output_padding = vec![1];
        let y = ok(Op::Conv(a), &[f32s(&[1, 1, 2], &[1.0, 2.0]), f32s(&[1, 1, 3], &[1.0, 10.0, 100.0])]);
        assert_close(&y, &[1, 1, 4], &[10.0, 102.0, 20.0, 200.0], 0.0);
    }

    #[test]
    fn conv_rejects_bad_attributes() {
        let x = f32s(&[1, 1, 4], &[0.0; 4]);
        let w = f32s(&[1, 1, 2], &[0.0; 2]);
        let mut g = crate::Graph::new("c");
        let xi = g.add_input("x", crate::TensorType::fixed(DType::F32, &[1, 1, 4]));
        let wi = g.add_input("w", crate::TensorType::fixed(DType::F32, &[1, 1, 2]));
        let y = g.add_node_typed(
            Op::Conv(attrs(&[0], &[0], &[1], 1)),
            vec![xi, wi],
            "conv_1",
            crate::TensorType::fixed(DType::F32, &[1, 1, 3]),
            None,
        );
        g.add_output("y", y);
        let e = super::super::run(&g, &crate::WeightStore::default(), &[x, w]).unwrap_err().to_string();
        assert!(e.contains("node `conv_1` (conv)") && e.contains("stride 0"), "{e}");
    }
}

/// `softmax(masks(scale(q @ kᵀ))) @ v`, computed by the very ops of its decomposed form (see
/// the crate docs), so that recognizing attention changes no result of the interpreter.
pub(crate) fn attention(attrs: &crate::op::AttentionAttrs, args: &[&Value]) -> R<Value> {
    use super::elementwise::{binary, select};
    use super::layout::{full, permute};
    use super::reduce::reduce;
    use crate::op::{AttentionMask, AttentionScale, BinaryOp, ReduceKind, UnaryOp};
    if args.len() != 3 + attrs.masks.len() {
        return Err(format!("expects {} operand(s), got {}", 3 + attrs.masks.len(), args.len()));
    }
    let (q, k, v) = (args[0], args[1], args[2]);
    let rk = k.shape.len();
    if rk < 2 {
        return Err(format!("k must have rank >= 2, got {:?}", k.shape));
    }
    let mut perm: Vec<usize> = (0..rk).collect();
    perm.swap(rk - 2, rk - 1);
    let scores = matmul(q, &permute(k, &perm)?)?;
    let dt = scores.dtype;
    let (op, c) = match attrs.scale {
        AttentionScale::Mul(c) => (BinaryOp::Mul, c),
        AttentionScale::Div(c) => (BinaryOp::Div, c),
    };
    let mut s = binary(op, &scores, &full(vec![], c, dt)?)?;
    for (mask, m) in attrs.masks.iter().zip(&args[3..]) {
        s = match mask {
            AttentionMask::Add => binary(BinaryOp::Add, &s, m)?,
            AttentionMask::Keep(fill) => select(m, &s, &full(vec![], *fill, dt)?)?,
            AttentionMask::Fill(fill) => select(m, &full(vec![], *fill, dt)?, &s)?,
        };
        if s.shape != scores.shape {
            return Err(format!("a mask of shape {:?} grows the scores {:?}", m.shape, scores.shape));
        }
    }
    let last = vec![s.shape.len() - 1];
    let max = reduce(ReduceKind::Max, &last, true, &s)?;
    let e = super::elementwise::unary(UnaryOp::Exp, &binary(BinaryOp::Sub, &s, &max)?)?;
    let sum = reduce(ReduceKind::Sum, &last, true, &e)?;
    matmul(&binary(BinaryOp::Div, &e, &sum)?, v)
}
