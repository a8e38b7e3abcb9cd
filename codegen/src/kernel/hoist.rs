//! Loop nests with hoisting: values that need loops of their own — reductions, matmuls,
//! convolutions and pools ("loop ops") — computed inside the kernel of the value that consumes
//! them, at the outermost loop level where their index is fixed.
//!
//! This is how a softmax, a layer norm or an RMS norm becomes one kernel: the kernel loops over
//! the rows of its output; each row's max / mean / variance is accumulated once, in the body of
//! the row loop, and the innermost (vectorizable) loop computes the row's elements from those
//! scalars. A matmul feeding an elementwise epilogue (bias, activation, residual add, scale)
//! accumulates one output row at a time into the kernel's output buffer
//! (`out[i, j] += a[i, k] * b[k, j]`, with the `j` loop contiguous and vectorizable), and the
//! epilogue loop then rewrites that row in place. A convolution or pool feeding an epilogue is
//! computed per output element, right before its use.
//!
//! Hoisting never repeats work silently: a hoisted value's index — simplified for the loops'
//! ranges first, so that a view's index arithmetic does not name a loop it does not depend on —
//! must use the loop variable of every level from the outermost down to the level it is
//! placed at, so each of its elements is computed once per iteration that needs it. When that does not hold, or when the index
//! depends on a loop that is not one of the kernel's own (the inner loop of another
//! reduction), lowering fails with [`LowerError::Materialize`] and the driver gives the value
//! a buffer of its own.

use super::builder::{linearize, KernelBuilder};
use super::ir::{Expr, LoopKind, ScalarType, Stmt, VarId};
use super::lower::{accumulator, broadcast, GraphLowering, LowerError};
use super::window::{cast_elem, conv_plane, conv_rows};
use kiln_ir::{BinaryOp, Dim, Op, ReduceKind, ValueDef, ValueId};

/// The loop levels of the kernel being built and what has been hoisted into them.
pub(crate) struct HoistCtx {
    /// The loop variable of each level, outermost first.
    level_vars: Vec<VarId>,
    /// The iteration-space dimension each level loops over.
    level_dims: Vec<usize>,
    /// The kernel's full index: a loop variable per dimension, `0` for unit dimensions.
    idx: Vec<Expr>,
    /// Statements at the start of each level's body, ahead of the next inner loop.
    pre: Vec<Vec<Stmt>>,
    /// Values already computed: (value, index, the expression that reads it).
    done: Vec<(ValueId, Vec<Expr>, Expr)>,
    /// The kernel's output (value, buffer) while no matmul accumulates into it yet.
    out: Option<(ValueId, u32)>,
    /// `[0, extent - 1]` of each level variable whose extent is a constant.
    ranges: std::collections::HashMap<VarId, (i64, i64)>,
}

/// True for ops computed by loops of their own, which are hoisted rather than inlined.
pub(crate) fn is_loop_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Reduce { .. } | Op::MatMul | Op::Attention(_) | Op::Conv(_) | Op::Pool(_) | Op::AdaptivePool { .. }
    )
}

/// Every variable that occurs in `e`.
fn collect_vars(e: &Expr, out: &mut Vec<VarId>) {
    e.visit(&mut |x| {
        if let Expr::Var(v) = x {
            if !out.contains(v) {
                out.push(*v)
            }
        }
    });
}

/// The constant step of index expression `e` when `var` grows by one, if `e` is affine in it.
fn step_in(e: &Expr, var: VarId) -> Option<i64> {
    let mentions = |x: &Expr| {
        let mut vs = Vec::new();
        collect_vars(x, &mut vs);
        vs.contains(&var)
    };
    match e {
        Expr::Var(v) => Some(i64::from(*v == var)),
        Expr::Int(_) | Expr::Const(..) | Expr::Sym(_) => Some(0),
        Expr::Binary(BinaryOp::Add, a, b) => step_in(a, var)?.checked_add(step_in(b, var)?),
        Expr::Binary(BinaryOp::Sub, a, b) => step_in(a, var)?.checked_sub(step_in(b, var)?),
        Expr::Binary(BinaryOp::Mul, a, b) => match (a.as_ref(), b.as_ref()) {
            (x, Expr::Int(k)) | (Expr::Int(k), x) => step_in(x, var)?.checked_mul(*k),
            _ if !mentions(e) => Some(0),
            _ => None,
        },
        _ if !mentions(e) => Some(0),
        _ => None,
    }
}

impl HoistCtx {
    /// The level a value with index `idx` is computed at: the deepest level whose variable
    /// `idx` uses, provided it uses every level's variable down to there and no other
    /// variable.
    fn level_for(&self, idx: &[Expr]) -> Option<usize> {
        let mut vars = Vec::new();
        for e in idx {
            collect_vars(e, &mut vars);
        }
        let mut deepest = None;
        for v in &vars {
            let l = self.level_vars.iter().position(|x| x == v)?;
            deepest = Some(deepest.map_or(l, |d: usize| d.max(l)));
        }
        let deepest = deepest?;
        self.level_vars[..=deepest].iter().all(|v| vars.contains(v)).then_some(deepest)
    }
}

impl GraphLowering<'_> {
    /// Loops over `shape` (outermost parallel, innermost `inner`; unit dimensions get no loop)
    /// around `body(idx)`, with values hoisted by [`GraphLowering::loop_value`] placed at their
    /// levels. `out` is the kernel's output, which a matmul may accumulate into. Returns the
    /// statements and the extent of the parallel loop.
    pub(crate) fn hoisting_nest(
        &self,
        kb: &mut KernelBuilder,
        shape: &[Dim],
        inner: LoopKind,
        out: Option<(ValueId, u32)>,
        body: impl FnOnce(&Self, &mut KernelBuilder, &[Expr]) -> Result<Vec<Stmt>, LowerError>,
    ) -> Result<(Vec<Stmt>, Dim), LowerError> {
        let mut dims: Vec<usize> = (0..shape.len()).filter(|&d| !shape[d].is_const(1)).collect();
        if dims.is_empty() && !shape.is_empty() {
            dims.push(0);
        }
        let mut idx = vec![Expr::Int(0); shape.len()];
        let mut level_vars = Vec::new();
        let mut extents = Vec::new();
        for &d in &dims {
            let v = kb.index_var("i");
            idx[d] = Expr::Var(v);
            level_vars.push(v);
            extents.push(shape[d].clone());
        }
        if level_vars.is_empty() {
            // A rank-0 space: one iteration.
            level_vars.push(kb.index_var("i"));
            extents.push(Dim::constant(1));
        }
        let n = level_vars.len();
        let ranges = level_vars
            .iter()
            .zip(&extents)
            .filter_map(|(v, d)| d.as_const().filter(|&n| n > 0).map(|n| (*v, (0, n - 1))))
            .collect();
        let ctx = HoistCtx {
            level_vars: level_vars.clone(),
            level_dims: dims,
            idx: idx.clone(),
            pre: vec![Vec::new(); n],
            done: Vec::new(),
            out,
            ranges,
        };
        let outer = self.hoist.replace(Some(ctx));
        let result = body(self, kb, &idx);
        let ctx = self.hoist.replace(outer).expect("installed above");
        let mut stmts = result?;
        for (l, pre) in ctx.pre.into_iter().enumerate().rev() {
            let kind = match l {
                0 => LoopKind::Parallel,
                l if l == n - 1 => inner,
                _ => LoopKind::Serial,
            };
            let mut b = pre;
            b.extend(stmts);
            stmts = vec![Stmt::Loop { var: level_vars[l], extent: Expr::from_dim(&extents[l]), kind, body: b }];
        }
        Ok((stmts, extents.swap_remove(0)))
    }

    /// Loop op `v` at `idx`, computed by statements hoisted into the enclosing
    /// [`GraphLowering::hoisting_nest`]; returns the expression of its value there. `own` is
    /// set when `v` is the kernel's own result (computed in the innermost loop body).
    pub(crate) fn loop_value(
        &self,
        kb: &mut KernelBuilder,
        v: ValueId,
        idx: &[Expr],
        fused: &mut Vec<String>,
        own: bool,
    ) -> Result<Expr, LowerError> {
        // The index as the loops' ranges simplify it: a view's index arithmetic may name a
        // loop variable it does not depend on (a layer norm's row, read through a view that
        // flattens the batch, as `(768*i0 + i1) // 393216` for `i1 < 768`: `i0 // 512`), which
        // would put the value in that loop and compute it once per iteration.
        let simplified: Vec<Expr>;
        let idx = match self.hoist.borrow().as_ref() {
            Some(ctx) => {
                simplified = idx.iter().map(|e| super::simplify::simplify_index(e, &ctx.ranges)).collect();
                &simplified[..]
            }
            None => idx,
        };
        let level = {
            let ctx = self.hoist.borrow();
            let Some(ctx) = ctx.as_ref() else {
                return Err(LowerError::Materialize(v));
            };
            if let Some((_, _, e)) = ctx.done.iter().find(|(w, i, _)| *w == v && i == idx) {
                return Ok(e.clone());
            }
            if own {
                ctx.level_vars.len() - 1
            } else {
                ctx.level_for(idx).ok_or(LowerError::Materialize(v))?
            }
        };
        let ValueDef::Node(n) = self.graph().value(v).def else { unreachable!("loop ops are node results") };
        let node = self.graph().node(n);
        if matches!(node.op, Op::MatMul | Op::Attention(_) | Op::Conv(_)) && !own {
            if let Some(e) = self.epilogue_rows(kb, v, idx, fused)? {
                return Ok(e);
            }
            // A matmul or convolution that could go row by row but does not fit this kernel
            // is better off in a kernel of its own than computed one element at a time. One
            // accumulated in a wider type (f16, bf16, integers) goes element by element in a
            // kernel of its own too, so it stays here, with its epilogue.
            let dt = self.graph().ty(v).dtype;
            if accumulator(dt) == dt && self.has_rows(kb, v)? {
                return Err(LowerError::Materialize(v));
            }
        }
        let (mut stmts, value) = match &node.op {
            Op::Reduce { kind, axes, keepdim } => {
                self.reduce_value(kb, v, node.inputs[0], *kind, axes, *keepdim, idx, fused)?
            }
            Op::MatMul => self.dot_value(kb, v, node.inputs[0], node.inputs[1], idx, fused)?,
            Op::Attention(_) => {
                return Err(LowerError::Unsupported {
                    node: self.graph().value(v).name.clone(),
                    op: "attention".into(),
                    reason: format!("fused attention is computed in f32 or f64, not {}", self.graph().ty(v).dtype),
                })
            }
            _ => super::window::window_value(self, kb, v, idx, fused)?,
        };
        let var = kb.var("t", ScalarType::Elem(self.graph().ty(v).dtype));
        stmts.push(Stmt::Let { var, value });
        let mut ctx = self.hoist.borrow_mut();
        let ctx = ctx.as_mut().expect("checked above");
        ctx.pre[level].extend(stmts);
        ctx.done.push((v, idx.to_vec(), Expr::Var(var)));
        Ok(Expr::Var(var))
    }

    /// Matmul or convolution `v` as the input of its kernel's epilogue: its rows are
    /// accumulated into the kernel's output buffer ahead of the innermost loop, which reads
    /// them back. `None` when this does not apply (the index is not the kernel's own, the
    /// output is taken or of another type, or `v` has no row form, see
    /// [`GraphLowering::op_rows`]).
    fn epilogue_rows(
        &self,
        kb: &mut KernelBuilder,
        v: ValueId,
        idx: &[Expr],
        fused: &mut Vec<String>,
    ) -> Result<Option<Expr>, LowerError> {
        let g = self.graph();
        let ty = g.ty(v);
        let rank = ty.shape.len();
        let depth = self.rows_depth(v);
        let (row_level, out) = {
            let ctx = self.hoist.borrow();
            let ctx = ctx.as_ref().expect("inside a hoisting nest");
            let Some((o, out)) = ctx.out else {
                return Ok(None);
            };
            let n = ctx.level_vars.len();
            // The innermost `depth` loops must be the dims the row form covers, in order.
            let fits = g.ty(o) == ty
                && ctx.idx == idx
                && n > depth
                && ctx.level_dims[n - depth..].iter().copied().eq(rank - depth..rank)
                && accumulator(ty.dtype) == ty.dtype;
            if !fits {
                return Ok(None);
            }
            (n - depth - 1, out)
        };
        let Some(stmts) = self.op_rows(kb, v, out, &idx[..rank - depth], fused)? else {
            return Ok(None);
        };
        let mut ctx = self.hoist.borrow_mut();
        let ctx = ctx.as_mut().expect("inside a hoisting nest");
        ctx.pre[row_level].extend(stmts);
        ctx.out = None;
        let e = Expr::load(out, linearize(idx, &ty.shape));
        ctx.done.push((v, idx.to_vec(), e.clone()));
        Ok(Some(e))
    }

    /// The statements that write row `row` (the output index without its last dimension) of
    /// matmul `v` into buffer `out`: zero the row, then for each `k` add `a[row, k] * b[k, :]`
    /// to it, the inner loop vectorizable. Summation order and rounding are those of a dot
    /// product over `k` in order. `None` when `b` is not contiguous along the row.
    pub(crate) fn matmul_rows(
        &self,
        kb: &mut KernelBuilder,
        v: ValueId,
        out: u32,
        row: &[Expr],
        fused: &mut Vec<String>,
    ) -> Result<Option<Vec<Stmt>>, LowerError> {
        let g = self.graph();
        let ValueDef::Node(n) = g.value(v).def else { unreachable!("matmul is a node") };
        let (a, b) = (g.node(n).inputs[0], g.node(n).inputs[1]);
        let so = g.ty(v).shape.clone();
        let (sa, sb) = (g.ty(a).shape.clone(), g.ty(b).shape.clone());
        let dt = g.ty(v).dtype;
        let r = so.len();
        let (j0, j, k) = (kb.index_var("j"), kb.index_var("j"), kb.index_var("k"));
        let batch = &row[..r - 2];
        let mut ib = broadcast(batch, &so[..r - 2], &sb[..sb.len() - 2]);
        ib.extend([Expr::Var(k), Expr::Var(j)]);
        let bv = self.value_at(kb, b, &ib, fused)?;
        let Expr::Load { index, .. } = &bv else { return Ok(None) };
        if step_in(index, j) != Some(1) {
            return Ok(None);
        }
        let mut ia = broadcast(batch, &so[..r - 2], &sa[..sa.len() - 2]);
        ia.extend([row[r - 2].clone(), Expr::Var(k)]);
        let av = self.value_at(kb, a, &ia, fused)?;
        let at = |j: VarId| {
            let mut i = row.to_vec();
            i.push(Expr::Var(j));
            linearize(&i, &so)
        };
        let n_extent = Expr::from_dim(&so[r - 1]);
        let a_k = kb.var("a", ScalarType::Elem(dt));
        let update = Expr::binary(
            BinaryOp::Add,
            Expr::load(out, at(j)),
            Expr::binary(BinaryOp::Mul, Expr::Var(a_k), cast_elem(dt, bv, g.ty(b).dtype)),
        );
        Ok(Some(vec![
            Stmt::Loop {
                var: j0,
                extent: n_extent.clone(),
                kind: LoopKind::Vector(4),
                body: vec![Stmt::Store { buf: out, index: at(j0), value: Expr::elem_const(0.0, dt) }],
            },
            Stmt::Loop {
                var: k,
                extent: Expr::from_dim(&sa[sa.len() - 1]),
                kind: LoopKind::Serial,
                body: vec![
                    Stmt::Let { var: a_k, value: cast_elem(dt, av, g.ty(a).dtype) },
                    Stmt::Loop {
                        var: j,
                        extent: n_extent,
                        kind: LoopKind::Vector(4),
                        body: vec![Stmt::Store { buf: out, index: at(j), value: update }],
                    },
                ],
            },
        ]))
    }

    /// How many trailing dimensions of `v`'s output one call of [`GraphLowering::op_rows`]
    /// covers: a row (1), or for a convolution without padding its whole output plane.
    pub(crate) fn rows_depth(&self, v: ValueId) -> usize {
        let g = self.graph();
        match g.value(v).def {
            ValueDef::Node(n) => match &g.node(n).op {
                Op::Conv(a) if !a.transposed && a.padding.iter().all(|&p| p == 0) => a.padding.len(),
                _ => 1,
            },
            _ => 1,
        }
    }

    /// The statements that compute, into buffer `out`, the part of matmul or convolution `v`
    /// whose output index starts with `prefix` ([`GraphLowering::rows_depth`] dims shorter than
    /// the output: see [`GraphLowering::matmul_rows`], [`conv_plane`] and [`conv_rows`]), or
    /// `None` when `v` has no such form.
    pub(crate) fn op_rows(
        &self,
        kb: &mut KernelBuilder,
        v: ValueId,
        out: u32,
        prefix: &[Expr],
        fused: &mut Vec<String>,
    ) -> Result<Option<Vec<Stmt>>, LowerError> {
        let ValueDef::Node(n) = self.graph().value(v).def else { return Ok(None) };
        match self.graph().node(n).op {
            Op::MatMul => self.matmul_rows(kb, v, out, prefix, fused),
            Op::Attention(_) => super::attention::attention_rows(self, kb, v, out, prefix, fused),
            // Unpadded: whole planes (`prefix` is batch and channel); padded: rows.
            Op::Conv(_) => match conv_plane(self, kb, v, out, prefix, fused)? {
                Some(stmts) => Ok(Some(stmts)),
                None => conv_rows(self, kb, v, out, prefix, fused),
            },
            _ => Ok(None),
        }
    }

    /// Whether `v` has a row form. (Builds it in a scratch copy of the kernel, then drops it.)
    fn has_rows(&self, kb: &KernelBuilder, v: ValueId) -> Result<bool, LowerError> {
        let mut scratch = kb.clone();
        let rank = self.graph().ty(v).shape.len();
        let row: Vec<Expr> = (self.rows_depth(v)..rank).map(|_| Expr::Var(scratch.index_var("i"))).collect();
        Ok(self.op_rows(&mut scratch, v, 0, &row, &mut Vec::new())?.is_some())
    }

    /// One element of matmul `v` as a dot product over `k`.
    fn dot_value(
        &self,
        kb: &mut KernelBuilder,
        v: ValueId,
        a: ValueId,
        b: ValueId,
        oidx: &[Expr],
        fused: &mut Vec<String>,
    ) -> Result<(Vec<Stmt>, Expr), LowerError> {
        let g = self.graph();
        let out_shape = g.ty(v).shape.clone();
        let (sa, sb) = (g.ty(a).shape.clone(), g.ty(b).shape.clone());
        let dt = g.ty(v).dtype;
        let acc_ty = accumulator(dt);
        let r = out_shape.len();
        let acc = kb.var("acc", ScalarType::Elem(acc_ty));
        let k = kb.index_var("k");
        let batch = &oidx[..r - 2];
        let mut ia = broadcast(batch, &out_shape[..r - 2], &sa[..sa.len() - 2]);
        ia.extend([oidx[r - 2].clone(), Expr::Var(k)]);
        let mut ib = broadcast(batch, &out_shape[..r - 2], &sb[..sb.len() - 2]);
        ib.extend([Expr::Var(k), oidx[r - 1].clone()]);
        let x = self.value_at(kb, a, &ia, fused)?;
        let y = self.value_at(kb, b, &ib, fused)?;
        let prod = Expr::binary(BinaryOp::Mul, Expr::Cast(acc_ty, Box::new(x)), Expr::Cast(acc_ty, Box::new(y)));
        let stmts = vec![
            Stmt::Decl { var: acc, init: Expr::elem_const(0.0, acc_ty) },
            Stmt::Loop {
                var: k,
                extent: Expr::from_dim(&sa[sa.len() - 1]),
                kind: LoopKind::Serial,
                body: vec![Stmt::Assign { var: acc, value: Expr::binary(BinaryOp::Add, Expr::Var(acc), prod) }],
            },
        ];
        Ok((stmts, Expr::Cast(dt, Box::new(Expr::Var(acc)))))
    }

    /// One element of reduction `v` of `x` at output index `oidx`.
    #[allow(clippy::too_many_arguments)]
    fn reduce_value(
        &self,
        kb: &mut KernelBuilder,
        v: ValueId,
        x: ValueId,
        kind: ReduceKind,
        axes: &[usize],
        keepdim: bool,
        oidx: &[Expr],
        fused: &mut Vec<String>,
    ) -> Result<(Vec<Stmt>, Expr), LowerError> {
        let g = self.graph();
        let in_shape = g.ty(x).shape.clone();
        let dt = g.ty(v).dtype;
        let acc_ty = accumulator(dt);
        let acc = kb.var("acc", ScalarType::Elem(acc_ty));
        let rvars: Vec<VarId> = axes.iter().map(|_| kb.index_var("r")).collect();
        let src = super::lower::reduce_source_index(oidx, axes, &rvars, in_shape.len(), keepdim);
        let value = Expr::Cast(acc_ty, Box::new(self.value_at(kb, x, &src, fused)?));
        let (init, update) = match kind {
            ReduceKind::Sum | ReduceKind::Mean => (0.0, Expr::binary(BinaryOp::Add, Expr::Var(acc), value)),
            ReduceKind::Prod => (1.0, Expr::binary(BinaryOp::Mul, Expr::Var(acc), value)),
            ReduceKind::Max => (f64::NEG_INFINITY, Expr::binary(BinaryOp::Max, Expr::Var(acc), value)),
            ReduceKind::Min => (f64::INFINITY, Expr::binary(BinaryOp::Min, Expr::Var(acc), value)),
        };
        let init = if acc_ty.is_float() { init } else { super::lower::int_identity(kind, acc_ty) };
        let mut inner = vec![Stmt::Assign { var: acc, value: update }];
        for (k, &a) in axes.iter().enumerate().rev() {
            inner = vec![Stmt::Loop {
                var: rvars[k],
                extent: Expr::from_dim(&in_shape[a]),
                kind: LoopKind::Serial,
                body: inner,
            }];
        }
        let mut result = Expr::Var(acc);
        if kind == ReduceKind::Mean {
            let count = Dim::product(axes.iter().map(|&a| &in_shape[a]));
            result = Expr::binary(BinaryOp::Div, result, Expr::Cast(acc_ty, Box::new(Expr::from_dim(&count))));
        }
        let mut stmts = vec![Stmt::Decl { var: acc, init: Expr::elem_const(init, acc_ty) }];
        stmts.extend(inner);
        Ok((stmts, Expr::Cast(dt, Box::new(result))))
    }
}
