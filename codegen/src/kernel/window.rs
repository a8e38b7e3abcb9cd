//! Sliding-window kernels: convolution (direct and transposed), pooling and adaptive pooling.
//! Out-of-bounds taps (padding) are masked with a select around an index clamped into range,
//! so every load stays inside its buffer.

use super::builder::KernelBuilder;
use super::ir::{Expr, LoopKind, ScalarType, Stmt, VarId};
use super::lower::{accumulator, clamp_index, GraphLowering, LowerError};
use kiln_ir::{BinaryOp, ConvAttrs, Op, PoolAttrs, PoolKind, ValueDef, ValueId};

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
