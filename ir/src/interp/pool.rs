//! Sliding-window pooling (max, avg) and adaptive pooling, as PyTorch defines them.

use super::reduce::nan_max;
use super::value::{attr, numel, Data, Value, R};
use crate::infer::window_output;
use crate::op::{PoolAttrs, PoolKind};

/// The window of one output position along one spatial dim.
#[derive(Clone, Copy)]
struct Window {
    /// First tap position (may be negative: padding).
    start: i64,
    /// Number of taps and the distance between them.
    taps: usize,
    dilation: usize,
    /// For avg pooling: the window's extent clipped to the padded input `[-pad, len + pad)`.
    padded_count: usize,
}

/// Per spatial dim (left-padded to 3 dims with trivial ones), the windows of every output
/// position.
fn windows(a: &PoolAttrs, x: &[usize]) -> R<[Vec<Window>; 3]> {
    let rank = x.len();
    if !(3..=5).contains(&rank) {
        return Err(format!("input must have rank 3 to 5, got {x:?}"));
    }
    let nsp = rank - 2;
    let lists = [
        ("kernel", a.kernel.len()),
        ("stride", a.stride.len()),
        ("padding", a.padding.len()),
        ("dilation", a.dilation.len()),
    ];
    for (name, len) in lists {
        if len != nsp {
            return Err(format!("`{name}` has {len} entries for {nsp} spatial dims"));
        }
    }
    let trivial = vec![Window { start: 0, taps: 1, dilation: 1, padded_count: 1 }];
    let mut out = [trivial.clone(), trivial.clone(), trivial];
    for i in 0..nsp {
        let len = x[2 + i] as i64;
        let k = attr(a.kernel[i], "kernel", 1)? as i64;
        let s = attr(a.stride[i], "stride", 1)? as i64;
        let p = attr(a.padding[i], "padding", 0)? as i64;
        let d = attr(a.dilation[i], "dilation", 1)? as i64;
        if a.kind == PoolKind::Avg && d != 1 {
            return Err(format!("avg pooling takes no dilation, got {d}"));
        }
        let n = window_output(len, k, s, p, d, a.ceil_mode).max(0);
        let mut ws = Vec::with_capacity(n as usize);
        for o in 0..n {
            let start = o * s - p;
            // PyTorch's avg_pool divisor with count_include_pad: the window cut at len + pad.
            let end = (start + k).min(len + p);
            ws.push(Window {
                start,
                taps: k as usize,
                dilation: d as usize,
                padded_count: (end - start).max(0) as usize,
            });
        }
        out[3 - nsp + i] = ws;
    }
    Ok(out)
}

/// `pool` (max or avg) as in PyTorch's `max_pool{1,2,3}d` / `avg_pool{1,2,3}d`.
pub(crate) fn pool(a: &PoolAttrs, x: &Value) -> R<Value> {
    let [w0, w1, w2] = windows(a, &x.shape)?;
    let nsp = x.shape.len() - 2;
    let planes = x.shape[0] * x.shape[1];
    let sp = &x.shape[2..];
    let (l0, l1, l2) = match nsp {
        1 => (1, 1, sp[0]),
        2 => (1, sp[0], sp[1]),
        _ => (sp[0], sp[1], sp[2]),
    };
    let mut shape = x.shape[..2].to_vec();
    shape.extend([w0.len(), w1.len(), w2.len()][3 - nsp..].iter());
    numel(&shape)?;
    // In-bounds tap positions of a window.
    let taps = |w: Window, len: usize| {
        (0..w.taps).filter_map(move |t| {
            let p = w.start + (t * w.dilation) as i64;
            (p >= 0 && p < len as i64).then_some(p as usize)
        })
    };
    let plane = l0 * l1 * l2;
    let mut fout = Vec::new();
    let mut iout = Vec::new();
    for pl in 0..planes {
        let base = pl * plane;
        for (o0, a0) in w0.iter().enumerate() {
            for (o1, a1) in w1.iter().enumerate() {
                for (o2, a2) in w2.iter().enumerate() {
                    let offsets = taps(*a0, l0).flat_map(|p0| {
                        taps(*a1, l1).flat_map(move |p1| taps(*a2, l2).map(move |p2| base + (p0 * l1 + p1) * l2 + p2))
                    });
                    let mut count = 0usize;
                    match (&x.data, a.kind) {
                        (Data::Float(v), PoolKind::Max) => {
                            fout.push(offsets.fold(f64::NEG_INFINITY, |m, o| {
                                count += 1;
                                nan_max(m, v[o])
                            }));
                        }
                        (Data::Float(v), PoolKind::Avg) => {
                            let sum: f64 = offsets
                                .map(|o| {
                                    count += 1;
                                    v[o]
                                })
                                .sum();
                            let divisor = if a.count_include_pad {
                                a0.padded_count * a1.padded_count * a2.padded_count
                            } else {
                                count
                            };
                            fout.push(sum / divisor as f64);
                        }
                        (Data::Int(v), PoolKind::Max) => {
                            iout.push(offsets.fold(i64::MIN, |m, o| {
                                count += 1;
                                m.max(v[o])
                            }));
                        }
                        (Data::Int(_), PoolKind::Avg) => {
                            return Err(format!("avg pooling needs a float input, got {}", x.dtype));
                        }
                    }
                    if count == 0 {
                        return Err(format!(
                            "the window of output position {:?} lies entirely in the padding",
                            [o0, o1, o2]
                        ));
                    }
                }
            }
        }
    }
    let data = if matches!(x.data, Data::Float(_)) { Data::Float(fout) } else { Data::Int(iout) };
    Value::new(x.dtype, shape, data)
}

/// `adaptive_pool`: output `i` along a dim of size `L` with `O` outputs pools
/// `[floor(i*L/O), ceil((i+1)*L/O))`.
pub(crate) fn adaptive_pool(kind: PoolKind, output_size: &[i64], x: &Value) -> R<Value> {
    let nsp = output_size.len();
    if !(1..=3).contains(&nsp) || x.shape.len() != nsp + 2 {
        return Err(format!("input {:?} does not match output_size {output_size:?}", x.shape));
    }
    if kind == PoolKind::Avg && !matches!(x.data, Data::Float(_)) {
        return Err(format!("avg pooling needs a float input, got {}", x.dtype));
    }
    // Per dim (left-padded to 3), the [start, end) of each output's window.
    let mut ranges: [Vec<(usize, usize)>; 3] = [vec![(0, 1)], vec![(0, 1)], vec![(0, 1)]];
    let mut lens = [1usize; 3];
    let mut shape = x.shape[..2].to_vec();
    for i in 0..nsp {
        let o = attr(output_size[i], "output size", 1)?;
        let l = x.shape[2 + i];
        if l == 0 {
            return Err(format!("spatial dim {i} is empty"));
        }
        ranges[3 - nsp + i] = (0..o).map(|j| (j * l / o, ((j + 1) * l).div_ceil(o))).collect();
        lens[3 - nsp + i] = l;
        shape.push(o);
    }
    numel(&shape)?;
    let [l0, l1, l2] = lens;
    let planes = x.shape[0] * x.shape[1];
    let plane = l0 * l1 * l2;
    let mut fout = Vec::new();
    let mut iout = Vec::new();
    for pl in 0..planes {
        let base = pl * plane;
        for &(s0, e0) in &ranges[0] {
            for &(s1, e1) in &ranges[1] {
                for &(s2, e2) in &ranges[2] {
                    let offsets = (s0..e0).flat_map(|p0| {
                        (s1..e1).flat_map(move |p1| (s2..e2).map(move |p2| base + (p0 * l1 + p1) * l2 + p2))
                    });
                    match (&x.data, kind) {
                        (Data::Float(v), PoolKind::Max) => {
                            fout.push(offsets.fold(f64::NEG_INFINITY, |m, o| nan_max(m, v[o])))
                        }
                        (Data::Float(v), PoolKind::Avg) => {
                            let count = (e0 - s0) * (e1 - s1) * (e2 - s2);
                            fout.push(offsets.map(|o| v[o]).sum::<f64>() / count as f64)
                        }
                        (Data::Int(v), _) => iout.push(offsets.fold(i64::MIN, |m, o| m.max(v[o]))),
                    }
                }
            }
        }
    }
    let data = if matches!(x.data, Data::Float(_)) { Data::Float(fout) } else { Data::Int(iout) };
    Value::new(x.dtype, shape, data)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::{Op, PoolAttrs, PoolKind};

    fn pool(kind: PoolKind, k: &[i64], s: &[i64], p: &[i64], ceil_mode: bool, count_include_pad: bool) -> Op {
        Op::Pool(PoolAttrs {
            kind,
            kernel: k.to_vec(),
            stride: s.to_vec(),
            padding: p.to_vec(),
            dilation: vec![1; k.len()],
            ceil_mode,
            count_include_pad,
        })
    }

    #[test]
    fn avg_pool_ceil_mode_count_include_pad_like_pytorch() {
        // torch.nn.functional.avg_pool2d(torch.arange(25.).reshape(1, 1, 5, 5), 3, 2, 1,
        //     ceil_mode=True, count_include_pad=True)
        // Rows/cols windows: [-1, 2), [1, 4), [3, 6) (the last clipped at len + pad = 6), so every
        // divisor is 9; first row: (0+1+5+6)/9, (1+2+3+6+7+8)/9, (3+4+8+9)/9.
        let x = arange(&[1, 1, 5, 5]);
        let y = ok(pool(PoolKind::Avg, &[3, 3], &[2, 2], &[1, 1], true, true), [x.clone()]);
        assert_eq!(y.shape, vec![1, 1, 3, 3]);
        let first: Vec<f64> = y.to_f64()[..3].to_vec();
        assert_eq!(first, vec![1.3333333730697632, 3.0, 2.6666667461395264]);
        assert_close(&y, &[1, 1, 3, 3], &[12.0 / 9.0, 3.0, 24.0 / 9.0, 7.0, 12.0, 9.0, 8.0, 13.0, 84.0 / 9.0], 1e-7);
        // Without count_include_pad the divisor is the in-bounds count: 4, 6, 4 / 6, 9, 6 / 4, 6, 4.
        let y = ok(pool(PoolKind::Avg, &[3, 3], &[2, 2], &[1, 1], true, false), [x.clone()]);
        assert_close(&y, &[1, 1, 3, 3], &[3.0, 4.5, 6.0, 10.5, 12.0, 13.5, 18.0, 19.5, 21.0], 1e-7);
    }

    #[test]
    fn avg_pool_ceil_mode_window_past_padding() {
        // 1d, len 6, kernel 3, stride 2, padding 1, ceil_mode: span = 6+2-3 = 5 -> ceil(5/2)+1 = 4
        // outputs with windows [-1,2) [1,4) [3,6) [5,8): the last is clipped to [5, 7) (len+pad
        // = 7), so count_include_pad divides by 2, not 3; otherwise by 1.
        let x = f32s(&[1, 1, 6], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let y = ok(pool(PoolKind::Avg, &[3], &[2], &[1], true, true), [x.clone()]);
        assert_close(&y, &[1, 1, 4], &[3.0 / 3.0, 9.0 / 3.0, 15.0 / 3.0, 6.0 / 2.0], 1e-7);
        let y = ok(pool(PoolKind::Avg, &[3], &[2], &[1], true, false), [x.clone()]);
        assert_close(&y, &[1, 1, 4], &[1.5, 3.0, 5.0, 6.0], 1e-7);
        // Without ceil_mode there are 3 outputs.
        let y = ok(pool(PoolKind::Avg, &[3], &[2], &[1], false, true), &[x]);
        assert_close(&y, &[1, 1, 3], &[1.0, 3.0, 5.0], 1e-7);
    }

    #[test]
    fn max_pool_padding_dilation_nan() {
        let x = f32s(&[1, 1, 5], &[-5.0, -1.0, -3.0, -4.0, -2.0]);
        // Padding is -inf, so the negative edge values win.
        let y = ok(pool(PoolKind::Max, &[2], &[2], &[1], false, false), [x.clone()]);
        assert_close(&y, &[1, 1, 3], &[-5.0, -1.0, -2.0], 0.0);
        // Dilation 2, kernel 2: taps (i, i+2): max(-5,-3), max(-1,-4), max(-3,-2).
        let mut op = pool(PoolKind::Max, &[2], &[1], &[0], false, false);
        if let Op::Pool(a) = &mut op {
            a.dilation = vec![2];
        }
        assert_close(&ok(op, &[x]), &[1, 1, 3], &[-3.0, -1.0, -2.0], 0.0);
        let nan = f64::NAN;
        let x = f32s(&[1, 1, 2, 2], &[1.0, nan, 3.0, 2.0]);
        let y = ok(pool(PoolKind::Max, &[2, 2], &[1, 1], &[0, 0], false, false), &[x]);
        assert!(y.to_f64()[0].is_nan());
        let x = i64s(&[1, 2, 2], &[1, 5, -2, -7]);
        assert_ints(&ok(pool(PoolKind::Max, &[2], &[2], &[1], true, false), &[x]), &[1, 2, 2], &[1, 5, -2, -7]);
    }

    #[test]
    fn max_pool_3d() {
        let x = arange(&[1, 1, 2, 2, 2]);
        let y = ok(pool(PoolKind::Max, &[2, 2, 2], &[1, 1, 1], &[0, 0, 0], false, false), [x.clone()]);
        assert_close(&y, &[1, 1, 1, 1, 1], &[7.0], 0.0);
        let y = ok(pool(PoolKind::Avg, &[2, 2, 2], &[1, 1, 1], &[0, 0, 0], false, false), &[x]);
        assert_close(&y, &[1, 1, 1, 1, 1], &[3.5], 0.0);
    }

    #[test]
    fn adaptive_pool_non_divisible() {
        // L = 5, O = 3: windows [0,2) [1,4) [3,5).
        let x = f32s(&[1, 1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let y = ok(Op::AdaptivePool { kind: PoolKind::Avg, output_size: vec![3] }, [x.clone()]);
        assert_close(&y, &[1, 1, 3], &[1.5, 3.0, 4.5], 1e-7);
        let y = ok(Op::AdaptivePool { kind: PoolKind::Max, output_size: vec![3] }, &[x]);
        assert_close(&y, &[1, 1, 3], &[2.0, 4.0, 5.0], 0.0);
        // 2d: [3, 5] -> [2, 3]; rows [0,2) [1,3), cols [0,2) [1,4) [3,5).
        let x = arange(&[1, 1, 3, 5]);
        let y = ok(Op::AdaptivePool { kind: PoolKind::Max, output_size: vec![2, 3] }, [x.clone()]);
        assert_close(&y, &[1, 1, 2, 3], &[6.0, 8.0, 9.0, 11.0, 13.0, 14.0], 0.0);
        let y = ok(Op::AdaptivePool { kind: PoolKind::Avg, output_size: vec![1, 1] }, &[x]);
        assert_close(&y, &[1, 1, 1, 1], &[7.0], 0.0);
        // Upsampling (O > L): windows [0,1) [0,1) [0,2)... for L = 2, O = 3: [0,1) [0,2) [1,2).
        let x = f32s(&[1, 1, 2], &[1.0, 3.0]);
        let y = ok(Op::AdaptivePool { kind: PoolKind::Avg, output_size: vec![3] }, &[x]);
        assert_close(&y, &[1, 1, 3], &[1.0, 2.0, 3.0], 0.0);
    }
}
