//! Sliding-window kernels: convolution (direct and transposed), pooling and adaptive pooling.
//! Out-of-bounds taps (padding) are masked with a select around an index clamped into range,
//! so every load stays inside its buffer.

use super::builder::{linearize, KernelBuilder};
use super::ir::{Expr, LoopKind, ScalarType, Stmt, VarId};
use super::lower::{accumulator, clamp_index, GraphLowering, LowerError};
use kiln_ir::{BinaryOp, ConvAttrs, DType, Op, PoolAttrs, PoolKind, ValueDef, ValueId};

fn and(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryOp::And, a, b)
}

fn in_range(i: &Expr, n: &Expr) -> Expr {
    and(Expr::binary(BinaryOp::Ge, i.clone(), Expr::Int(0)), Expr::binary(BinaryOp::Lt, i.clone(), n.clone()))
}

fn nest(extents: &[(VarId, Expr)], body: Vec<Stmt>) -> Vec<Stmt> {
    let mut stmts = body;
    for (v, e) in extents.iter().rev() {
        stmts = vec![Stmt::Loop { var: *v, extent: e.clone(), kind: LoopKind::Serial, body: stmts }];
    }
    stmts
}

/// The statements computing window op `v` at output index `oidx`, and the expression of its
/// value afterwards (the accumulator, cast to the output dtype).
pub(crate) fn window_value(
    lw: &GraphLowering,
    kb: &mut KernelBuilder,
    v: ValueId,
    oidx: &[Expr],
    fused: &mut Vec<String>,
) -> Result<(Vec<Stmt>, Expr), LowerError> {
    let g = lw.graph();
    let ValueDef::Node(n) = g.value(v).def else { unreachable!("window values are node results") };
    let node = g.node(n);
    match &node.op {
        Op::Conv(a) => conv_body(lw, kb, v, node.inputs[0], node.inputs[1], a, oidx, fused),
        Op::Pool(a) => pool_body(lw, kb, v, node.inputs[0], a, oidx, fused),
        Op::AdaptivePool { kind, output_size } => {
            adaptive_body(lw, kb, v, node.inputs[0], *kind, output_size, oidx, fused)
        }
        _ => unreachable!("window_value is called for window ops"),
    }
}

fn static_shape(lw: &GraphLowering, v: ValueId) -> Vec<i64> {
    lw.graph().ty(v).shape.iter().map(|d| d.as_const().unwrap_or(0)).collect()
}

#[allow(clippy::too_many_arguments)]
fn conv_body(
    lw: &GraphLowering,
    kb: &mut KernelBuilder,
    v: ValueId,
    x: ValueId,
    w: ValueId,
    a: &ConvAttrs,
    oidx: &[Expr],
    fused: &mut Vec<String>,
) -> Result<(Vec<Stmt>, Expr), LowerError> {
    let g = lw.graph();
    let dt = g.ty(v).dtype;
    let acc_ty = accumulator(dt);
    let xs = static_shape(lw, x);
    let ws = static_shape(lw, w);
    let spatial = xs.len() - 2;
    let acc = kb.var("acc", ScalarType::Elem(acc_ty));
    let (cin_g, cout_g) = if a.transposed { (xs[1] / a.groups, ws[1]) } else { (ws[1], ws[0] / a.groups) };
    // Output channel co belongs to group co / cout_g; its inputs are channels g*cin_g + ci.
    let co = oidx[1].clone();
    let group = Expr::div(co.clone(), Expr::Int(cout_g));
    let ci = kb.index_var("ci");
    let ks: Vec<VarId> = (0..spatial).map(|_| kb.index_var("k")).collect();
    let cin = Expr::add(Expr::mul(group.clone(), Expr::Int(cin_g)), Expr::Var(ci));
    let mut valid: Option<Expr> = None;
    let mut xi = vec![oidx[0].clone(), cin.clone()];
    for d in 0..spatial {
        let o = oidx[2 + d].clone();
        let k = Expr::Var(ks[d]);
        let len = Expr::Int(xs[2 + d]);
        let i = if a.transposed {
            // o = i*stride - pad + k*dil  =>  i = (o + pad - k*dil) / stride when divisible.
            let t = Expr::sub(Expr::add(o, Expr::Int(a.padding[d])), Expr::mul(k, Expr::Int(a.dilation[d])));
            let divisible = Expr::binary(
                BinaryOp::Eq,
                Expr::binary(BinaryOp::Rem, t.clone(), Expr::Int(a.stride[d])),
                Expr::Int(0),
            );
            let nonneg = Expr::binary(BinaryOp::Ge, t.clone(), Expr::Int(0));
            let i = Expr::binary(BinaryOp::FloorDiv, t, Expr::Int(a.stride[d]));
            let ok = and(and(nonneg, divisible), in_range(&i, &len));
            valid = Some(valid.map_or(ok.clone(), |p| and(p, ok)));
            i
        } else {
            let i = Expr::add(
                Expr::sub(Expr::mul(o, Expr::Int(a.stride[d])), Expr::Int(a.padding[d])),
                Expr::mul(k, Expr::Int(a.dilation[d])),
            );
            if a.padding[d] > 0 {
                let ok = in_range(&i, &len);
                valid = Some(valid.map_or(ok.clone(), |p| and(p, ok)));
            }
            i
        };
        xi.push(clamp_index(i, len));
    }
    let mut wi = if a.transposed {
        // weight [c_in, c_out/groups, *k]
        vec![cin, Expr::rem(co.clone(), Expr::Int(cout_g))]
    } else {
        vec![co, Expr::Var(ci)]
    };
    wi.extend(ks.iter().map(|&k| Expr::Var(k)));
    let xv = Expr::Cast(acc_ty, Box::new(lw.value_at(kb, x, &xi, fused)?));
    let wv = Expr::Cast(acc_ty, Box::new(lw.value_at(kb, w, &wi, fused)?));
    let mut term = Expr::binary(BinaryOp::Mul, xv, wv);
    if let Some(ok) = valid {
        term = Expr::select(ok, term, Expr::elem_const(0.0, acc_ty));
    }
    let mut loops = vec![(ci, Expr::Int(cin_g))];
    loops.extend(ks.iter().enumerate().map(|(d, &k)| (k, Expr::Int(ws[2 + d]))));
    let mut stmts = vec![Stmt::Decl { var: acc, init: Expr::elem_const(0.0, acc_ty) }];
    stmts.extend(nest(
        &loops,
        vec![Stmt::Assign { var: acc, value: Expr::binary(BinaryOp::Add, Expr::Var(acc), term) }],
    ));
    Ok((stmts, Expr::Cast(dt, Box::new(Expr::Var(acc)))))
}

#[allow(clippy::too_many_arguments)]
fn pool_body(
    lw: &GraphLowering,
    kb: &mut KernelBuilder,
    v: ValueId,
    x: ValueId,
    a: &PoolAttrs,
    oidx: &[Expr],
    fused: &mut Vec<String>,
) -> Result<(Vec<Stmt>, Expr), LowerError> {
    let g = lw.graph();
    let dt = g.ty(v).dtype;
    let acc_ty = accumulator(dt);
    let xs = static_shape(lw, x);
    let spatial = xs.len() - 2;
    let acc = kb.var("acc", ScalarType::Elem(acc_ty));
    let ks: Vec<VarId> = (0..spatial).map(|_| kb.index_var("k")).collect();
    let mut valid: Option<Expr> = None;
    let mut xi = vec![oidx[0].clone(), oidx[1].clone()];
    let mut divisor = Expr::Int(1);
    for d in 0..spatial {
        let len = Expr::Int(xs[2 + d]);
        let start = Expr::sub(Expr::mul(oidx[2 + d].clone(), Expr::Int(a.stride[d])), Expr::Int(a.padding[d]));
        let i = Expr::add(start.clone(), Expr::mul(Expr::Var(ks[d]), Expr::Int(a.dilation[d])));
        let ok = in_range(&i, &len);
        valid = Some(valid.map_or(ok.clone(), |p| and(p, ok)));
        xi.push(clamp_index(i, len.clone()));
        // PyTorch's avg divisor: the window clipped to the padded input (count_include_pad),
        // or to the input itself.
        let (lo, hi) = if a.count_include_pad {
            (
                start.clone(),
                Expr::min(
                    Expr::add(start.clone(), Expr::Int(a.kernel[d])),
                    Expr::add(len.clone(), Expr::Int(a.padding[d])),
                ),
            )
        } else {
            (Expr::max(start.clone(), Expr::Int(0)), Expr::min(Expr::add(start, Expr::Int(a.kernel[d])), len))
        };
        divisor = Expr::mul(divisor, Expr::sub(hi, lo));
    }
    let x_val = Expr::Cast(acc_ty, Box::new(lw.value_at(kb, x, &xi, fused)?));
    let ok = valid.expect("pool has spatial dims");
    let (init, update) = match a.kind {
        PoolKind::Max => (
            f64::NEG_INFINITY,
            Expr::binary(
                BinaryOp::Max,
                Expr::Var(acc),
                Expr::select(ok, x_val, Expr::elem_const(f64::NEG_INFINITY, acc_ty)),
            ),
        ),
        PoolKind::Avg => {
            (0.0, Expr::binary(BinaryOp::Add, Expr::Var(acc), Expr::select(ok, x_val, Expr::elem_const(0.0, acc_ty))))
        }
    };
    let loops: Vec<(VarId, Expr)> = ks.iter().enumerate().map(|(d, &k)| (k, Expr::Int(a.kernel[d]))).collect();
    let mut stmts = vec![Stmt::Decl { var: acc, init: Expr::elem_const(init, acc_ty) }];
    stmts.extend(nest(&loops, vec![Stmt::Assign { var: acc, value: update }]));
    let mut result = Expr::Var(acc);
    if a.kind == PoolKind::Avg {
        result = Expr::binary(BinaryOp::Div, result, Expr::Cast(acc_ty, Box::new(divisor)));
    }
    Ok((stmts, Expr::Cast(dt, Box::new(result))))
}

#[allow(clippy::too_many_arguments)]
fn adaptive_body(
    lw: &GraphLowering,
    kb: &mut KernelBuilder,
    v: ValueId,
    x: ValueId,
    kind: PoolKind,
    output_size: &[i64],
    oidx: &[Expr],
    fused: &mut Vec<String>,
) -> Result<(Vec<Stmt>, Expr), LowerError> {
    let g = lw.graph();
    let dt = g.ty(v).dtype;
    let acc_ty = accumulator(dt);
    let xs = static_shape(lw, x);
    let spatial = output_size.len();
    let acc = kb.var("acc", ScalarType::Elem(acc_ty));
    let mut xi = vec![oidx[0].clone(), oidx[1].clone()];
    let mut loops = Vec::new();
    let mut count = Expr::Int(1);
    for d in 0..spatial {
        let (l, o) = (xs[2 + d], output_size[d]);
        let i = oidx[2 + d].clone();
        // Window [floor(i*L/O), ceil((i+1)*L/O)).
        let start = Expr::div(Expr::mul(i.clone(), Expr::Int(l)), Expr::Int(o));
        let end =
            Expr::div(Expr::add(Expr::mul(Expr::add(i, Expr::Int(1)), Expr::Int(l)), Expr::Int(o - 1)), Expr::Int(o));
        let len = Expr::sub(end, start.clone());
        let k = kb.index_var("k");
        loops.push((k, len.clone()));
        count = Expr::mul(count, len);
        xi.push(Expr::add(start, Expr::Var(k)));
    }
    let x_val = Expr::Cast(acc_ty, Box::new(lw.value_at(kb, x, &xi, fused)?));
    let (init, update) = match kind {
        PoolKind::Max => (f64::NEG_INFINITY, Expr::binary(BinaryOp::Max, Expr::Var(acc), x_val)),
        PoolKind::Avg => (0.0, Expr::binary(BinaryOp::Add, Expr::Var(acc), x_val)),
    };
    let mut stmts = vec![Stmt::Decl { var: acc, init: Expr::elem_const(init, acc_ty) }];
    stmts.extend(nest(&loops, vec![Stmt::Assign { var: acc, value: update }]));
    let mut result = Expr::Var(acc);
    if kind == PoolKind::Avg {
        result = Expr::binary(BinaryOp::Div, result, Expr::Cast(acc_ty, Box::new(count)));
    }
    Ok((stmts, Expr::Cast(dt, Box::new(result))))
}

/// Row `row` (the output index without its last dimension) of convolution `v`, accumulated
/// into buffer `out`: zero the row, then for each input channel and kernel tap add
/// `w[co, ci, k] * x[.., ow*s + kw*d - p]` to it. The taps that fall inside the input (the
/// interior of the row) form a loop without bounds checks, contiguous for stride 1 and so
/// vectorizable; the few outputs at each edge whose taps fall into the padding are masked.
/// The summation order per element (channel, then taps in order) and the rounding are those
/// of the per-element convolution. `None` for transposed convolutions and dynamic spatial or
/// channel sizes.
pub(crate) fn conv_rows(
    lw: &GraphLowering,
    kb: &mut KernelBuilder,
    v: ValueId,
    out: u32,
    row: &[Expr],
    fused: &mut Vec<String>,
) -> Result<Option<Vec<Stmt>>, LowerError> {
    let g = lw.graph();
    let ValueDef::Node(n) = g.value(v).def else { unreachable!("conv is a node") };
    let node = g.node(n);
    let Op::Conv(a) = &node.op else { return Ok(None) };
    let (x, w) = (node.inputs[0], node.inputs[1]);
    let (xs, ws, os) = (static_shape(lw, x), static_shape(lw, w), static_shape(lw, v));
    if a.transposed || xs[1..].contains(&0) || ws.contains(&0) || os[1..].contains(&0) {
        return Ok(None);
    }
    let dt = g.ty(v).dtype;
    let spatial = xs.len() - 2;
    let last = spatial - 1;
    let (cin_g, cout_g) = (ws[1], ws[0] / a.groups);
    let co = row[1].clone();
    let group = Expr::div(co.clone(), Expr::Int(cout_g));
    let ci = kb.index_var("ci");
    let ks: Vec<VarId> = (0..spatial).map(|_| kb.index_var("k")).collect();
    let cin = Expr::add(Expr::mul(group, Expr::Int(cin_g)), Expr::Var(ci));
    // Rows of the input for the outer spatial dims: fixed per tap, checked once.
    let mut row_ok: Option<Expr> = None;
    let mut xi = vec![row[0].clone(), cin];
    for d in 0..last {
        let len = Expr::Int(xs[2 + d]);
        let i = Expr::add(
            Expr::sub(Expr::mul(row[2 + d].clone(), Expr::Int(a.stride[d])), Expr::Int(a.padding[d])),
            Expr::mul(Expr::Var(ks[d]), Expr::Int(a.dilation[d])),
        );
        if a.padding[d] > 0 {
            let ok = in_range(&i, &len);
            row_ok = Some(row_ok.map_or(ok.clone(), |p| and(p, ok)));
        }
        xi.push(clamp_index(i, len));
    }
    let mut wi = vec![co, Expr::Var(ci)];
    wi.extend(ks.iter().map(|&k| Expr::Var(k)));
    let w_tap = kb.var("w", ScalarType::Elem(dt));
    let w_value = lw.value_at(kb, w, &wi, fused)?;
    let (s, dil, pad) = (a.stride[last], a.dilation[last], a.padding[last]);
    let (in_len, out_len) = (xs[2 + last], os[2 + last]);
    let kw = Expr::Var(ks[last]);
    // The outputs whose tap `kw` is inside the input: lo <= ow < hi.
    let (lo, hi) = (kb.index_var("lo"), kb.index_var("hi"));
    let before = Expr::sub(Expr::Int(pad), Expr::mul(kw.clone(), Expr::Int(dil)));
    let lo_value = Expr::min(
        Expr::div(Expr::add(Expr::max(before.clone(), Expr::Int(0)), Expr::Int(s - 1)), Expr::Int(s)),
        Expr::Int(out_len),
    );
    let last_in = Expr::add(Expr::Int(in_len - 1), before);
    let hi_value = Expr::select(
        Expr::binary(BinaryOp::Ge, last_in.clone(), Expr::Int(0)),
        Expr::min(
            Expr::add(Expr::div(Expr::max(last_in, Expr::Int(0)), Expr::Int(s)), Expr::Int(1)),
            Expr::Int(out_len),
        ),
        Expr::Int(0),
    );
    let at = |ow: Expr| {
        let mut i = row.to_vec();
        i.push(ow);
        linearize(&i, &g.ty(v).shape)
    };
    let mut update = |kb: &mut KernelBuilder, ow: Expr, checked: bool| -> Result<Stmt, LowerError> {
        let iw = Expr::add(
            Expr::sub(Expr::mul(ow.clone(), Expr::Int(s)), Expr::Int(pad)),
            Expr::mul(kw.clone(), Expr::Int(dil)),
        );
        let mut ok = row_ok.clone();
        let mut idx = xi.clone();
        if checked {
            let inside = in_range(&iw, &Expr::Int(in_len));
            ok = Some(ok.map_or(inside.clone(), |p| and(p, inside)));
            idx.push(clamp_index(iw, Expr::Int(in_len)));
        } else {
            idx.push(iw);
        }
        let xv = lw.value_at(kb, x, &idx, fused)?;
        let mut term = Expr::binary(BinaryOp::Mul, Expr::Var(w_tap), cast_elem(dt, xv, g.ty(x).dtype));
        if let Some(ok) = ok {
            term = Expr::select(ok, term, Expr::elem_const(0.0, dt));
        }
        let index = at(ow);
        Ok(Stmt::Store {
            buf: out,
            index: index.clone(),
            value: Expr::binary(BinaryOp::Add, Expr::load(out, index), term),
        })
    };
    let (u0, u1, u2, z) = (kb.index_var("o"), kb.index_var("o"), kb.index_var("o"), kb.index_var("o"));
    let left = update(kb, Expr::Var(u0), true)?;
    let interior = update(kb, Expr::add(Expr::Var(lo), Expr::Var(u1)), false)?;
    let right = update(kb, Expr::add(Expr::Var(hi), Expr::Var(u2)), true)?;
    let tap = vec![
        Stmt::Let { var: w_tap, value: cast_elem(dt, w_value, g.ty(w).dtype) },
        Stmt::Let { var: lo, value: lo_value },
        Stmt::Let { var: hi, value: Expr::max(hi_value, Expr::Var(lo)) },
        Stmt::Loop { var: u0, extent: Expr::Var(lo), kind: LoopKind::Serial, body: vec![left] },
        Stmt::Loop {
            var: u1,
            extent: Expr::sub(Expr::Var(hi), Expr::Var(lo)),
            kind: LoopKind::Vector(4),
            body: vec![interior],
        },
        Stmt::Loop {
            var: u2,
            extent: Expr::sub(Expr::Int(out_len), Expr::Var(hi)),
            kind: LoopKind::Serial,
            body: vec![right],
        },
    ];
    let mut loops = vec![(ci, Expr::Int(cin_g))];
    loops.extend(ks.iter().enumerate().map(|(d, &k)| (k, Expr::Int(ws[2 + d]))));
    let mut stmts = vec![Stmt::Loop {
        var: z,
        extent: Expr::Int(out_len),
        kind: LoopKind::Vector(4),
        body: vec![Stmt::Store { buf: out, index: at(Expr::Var(z)), value: Expr::elem_const(0.0, dt) }],
    }];
    stmts.extend(nest(&loops, tap));
    Ok(Some(stmts))
}

/// `e` (of dtype `from`) as `to`, without a cast when they agree.
pub(crate) fn cast_elem(to: DType, e: Expr, from: DType) -> Expr {
    if to == from {
        e
    } else {
        Expr::Cast(to, Box::new(e))
    }
}

/// The output plane `prefix` (batch and output channel) of convolution `v` without padding,
/// accumulated into buffer `out`: zero the plane, then for each input channel and kernel tap
/// add `w[co, ci, k] * x[n, ci, o*s + k*d]` over every output position, the innermost loop
/// contiguous for stride 1 and vectorizable. Every tap reads inside the input (no padding),
/// so there are no bounds checks; the per-tap work is a whole plane, not a row. Summation order
/// and rounding per element are those of the per-element convolution (channel, then taps in
/// order). `None` for transposed or padded convolutions and dynamic spatial or channel sizes.
pub(crate) fn conv_plane(
    lw: &GraphLowering,
    kb: &mut KernelBuilder,
    v: ValueId,
    out: u32,
    prefix: &[Expr],
    fused: &mut Vec<String>,
) -> Result<Option<Vec<Stmt>>, LowerError> {
    let g = lw.graph();
    let ValueDef::Node(n) = g.value(v).def else { unreachable!("conv is a node") };
    let node = g.node(n);
    let Op::Conv(a) = &node.op else { return Ok(None) };
    let (x, w) = (node.inputs[0], node.inputs[1]);
    let (xs, ws, os) = (static_shape(lw, x), static_shape(lw, w), static_shape(lw, v));
    let padded = a.padding.iter().any(|&p| p != 0);
    if a.transposed || padded || xs[1..].contains(&0) || ws.contains(&0) || os[1..].contains(&0) {
        return Ok(None);
    }
    let dt = g.ty(v).dtype;
    let spatial = xs.len() - 2;
    let (cin_g, cout_g) = (ws[1], ws[0] / a.groups);
    let co = prefix[1].clone();
    let ci = kb.index_var("ci");
    let ks: Vec<VarId> = (0..spatial).map(|_| kb.index_var("k")).collect();
    let cin = Expr::add(Expr::mul(Expr::div(co.clone(), Expr::Int(cout_g)), Expr::Int(cin_g)), Expr::Var(ci));
    let out_shape = &g.ty(v).shape;
    // Loops over the output plane around `body(o)`, the innermost one vectorizable.
    let plane = |kb: &mut KernelBuilder, body: &dyn Fn(&[Expr]) -> Result<Stmt, LowerError>| {
        let vars: Vec<VarId> = (0..spatial).map(|_| kb.index_var("o")).collect();
        let o: Vec<Expr> = vars.iter().map(|&v| Expr::Var(v)).collect();
        let mut stmts = vec![body(&o)?];
        for (d, var) in vars.iter().enumerate().rev() {
            let kind = if d == spatial - 1 { LoopKind::Vector(4) } else { LoopKind::Serial };
            stmts = vec![Stmt::Loop { var: *var, extent: Expr::Int(os[2 + d]), kind, body: stmts }];
        }
        Ok::<_, LowerError>(stmts)
    };
    let at = |o: &[Expr]| {
        let mut i = prefix.to_vec();
        i.extend_from_slice(o);
        linearize(&i, out_shape)
    };
    let mut stmts = plane(kb, &|o| Ok(Stmt::Store { buf: out, index: at(o), value: Expr::elem_const(0.0, dt) }))?;
    let mut wi = vec![co, Expr::Var(ci)];
    wi.extend(ks.iter().map(|&k| Expr::Var(k)));
    let w_tap = kb.var("w", ScalarType::Elem(dt));
    let w_value = lw.value_at(kb, w, &wi, fused)?;
    let x_dtype = g.ty(x).dtype;
    // The input index of output position `o` for the current tap.
    let x_index = |o: &[Expr]| {
        let mut xi = vec![prefix[0].clone(), cin.clone()];
        for d in 0..spatial {
            xi.push(Expr::add(
                Expr::mul(o[d].clone(), Expr::Int(a.stride[d])),
                Expr::mul(Expr::Var(ks[d]), Expr::Int(a.dilation[d])),
            ));
        }
        xi
    };
    // Loads of `x` are plain views of its buffer (the operand rule), so building one per
    // position is cheap; `value_at` is called once with symbolic positions.
    let probe: Vec<VarId> = (0..spatial).map(|_| kb.index_var("o")).collect();
    let probe_idx: Vec<Expr> = probe.iter().map(|&v| Expr::Var(v)).collect();
    let x_probe = lw.value_at(kb, x, &x_index(&probe_idx), fused)?;
    let mut tap = vec![Stmt::Let { var: w_tap, value: cast_elem(dt, w_value, g.ty(w).dtype) }];
    tap.extend(plane(kb, &|o| {
        let xv = x_probe.substitute(&probe, o);
        let index = at(o);
        let term = Expr::binary(BinaryOp::Mul, Expr::Var(w_tap), cast_elem(dt, xv, x_dtype));
        Ok(Stmt::Store {
            buf: out,
            index: index.clone(),
            value: Expr::binary(BinaryOp::Add, Expr::load(out, index), term),
        })
    })?);
    let mut loops = vec![(ci, Expr::Int(cin_g))];
    loops.extend(ks.iter().enumerate().map(|(d, &k)| (k, Expr::Int(ws[2 + d]))));
    stmts.extend(nest(&loops, tap));
    Ok(Some(stmts))
}
