//! Fusion and lowering: the graph is partitioned into kernels and each kernel is written in
//! the kernel IR.
//!
//! Every value is either *materialized* (it gets a buffer) or *inlined* into the kernel that
//! uses it. Views (reshape, permute, expand, slice, pad, concat, gather) become index
//! arithmetic, never copies; elementwise ops become scalar arithmetic on the consumer's loop
//! indices; loop ops (reductions, matmul, convolution, pooling) are computed by loops hoisted
//! into the consumer's loop nest (see [`super::hoist`]), so a softmax, a layer norm or a matmul
//! with its bias and activation is one kernel.
//!
//! Materialized are: graph inputs, weights and outputs; arg-reductions and cumsum; operands of
//! matmul, convolution and pooling that are not pure views of buffers (their inner loops read
//! each operand element many times, so it must be computed once); and computed values whose
//! users end up in different kernels (so nothing is computed twice across kernels). Each
//! value's *owner* is the materialized value whose kernel computes it; a value inlined in
//! several places of one kernel is recomputed there, which costs arithmetic but no memory
//! traffic. When a hoist does not fit (see [`super::hoist`]) or an inlined expression grows
//! too large, the value is materialized and lowering starts over.

use super::builder::{delinearize, linearize, KernelBuilder};
use super::hoist::{is_loop_op, HoistCtx};
use super::ir::{Access, Expr, Kernel, LoopKind, ScalarType, Stmt};
use kiln_ir::{ArgKind, BinaryOp, DType, Dim, Graph, Op, ReduceKind, UnaryOp, ValueDef, ValueId};
use std::cell::RefCell;
use std::collections::HashMap;

/// Where a materialized value lives at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferKind {
    Input(usize),
    Weight(usize),
    /// A kernel result (a graph output or an intermediate in the scratch arena).
    Computed,
}

/// One materialized value.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanBuffer {
    pub value: ValueId,
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Dim>,
    pub kind: BufferKind,
}

/// One kernel launch: which plan buffers are its arguments and the extent of its parallel loop.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub kernel: usize,
    pub args: Vec<usize>,
    pub range: Dim,
}

/// A lowered program: kernels, the buffers they exchange, and the launch order.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub kernels: Vec<Kernel>,
    pub buffers: Vec<PlanBuffer>,
    pub launches: Vec<Launch>,
    /// Graph outputs as plan buffer indices, in order.
    pub outputs: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// Internal: inlining this value would make a kernel expression too large; the lowering
    /// materializes it and starts over.
    #[error("value #{} is too large to inline", .0.0)]
    TooLarge(ValueId),
    /// Internal: this loop op cannot be hoisted into its consumer's kernel; the lowering
    /// materializes it and starts over.
    #[error("value #{} cannot be computed inside its consumer's kernel", .0.0)]
    Materialize(ValueId),
    #[error("cannot lower node `{node}` ({op}) to kernels: {reason}")]
    Unsupported { node: String, op: String, reason: String },
}

/// Ops whose operands are read many times per output element: an operand that is not a view
/// of buffers gets a buffer of its own.
fn rereads_operands(op: &Op) -> bool {
    matches!(op, Op::MatMul | Op::Attention(_) | Op::Conv(_) | Op::Pool(_) | Op::AdaptivePool { .. })
}

/// Ops with kernels of their own that cannot host hoisted loop ops.
fn has_fixed_kernel(op: &Op) -> bool {
    matches!(op, Op::ArgReduce { .. } | Op::CumSum { .. } | Op::MatMul | Op::Attention(_))
}

fn is_view(op: &Op) -> bool {
    matches!(op, Op::Reshape { .. } | Op::Permute { .. } | Op::Expand { .. } | Op::Slice { .. })
}

fn is_free(op: &Op) -> bool {
    matches!(op, Op::Full { .. } | Op::Iota { .. } | Op::DimValue { .. })
}

/// Decides which values get buffers (see the module doc).
fn materialized(g: &Graph) -> Vec<bool> {
    let n = g.value_count();
    // The distinct nodes using each value, by their outputs.
    let mut users: Vec<Vec<ValueId>> = vec![Vec::new(); n];
    for (_, node) in g.nodes() {
        for v in &node.inputs {
            let u = &mut users[v.0 as usize];
            if !u.contains(&node.output) {
                u.push(node.output);
            }
        }
    }
    let mut m = vec![false; n];
    for &v in g.inputs().iter().chain(g.weights()) {
        m[v.0 as usize] = true;
    }
    for (_, v) in g.outputs() {
        m[v.0 as usize] = true;
    }
    // The materialized value whose kernel computes each value (None: several kernels).
    let mut owner: Vec<Option<ValueId>> = vec![None; n];
    // Walk backwards so every user's decision is known before its producer's.
    let nodes: Vec<_> = g.nodes().collect();
    for (_, node) in nodes.iter().rev() {
        let out = node.output;
        let o = out.0 as usize;
        if !m[o] {
            let owners: Vec<Option<ValueId>> =
                users[o].iter().map(|&u| if m[u.0 as usize] { Some(u) } else { owner[u.0 as usize] }).collect();
            let first = owners.first().copied().flatten();
            let common = first.filter(|_| owners.iter().all(|w| *w == first));
            m[o] = match &node.op {
                Op::ArgReduce { .. } | Op::CumSum { .. } => true,
                op if super::hoist::is_loop_op(op) => !common.is_some_and(|c| match g.value(c).def {
                    ValueDef::Node(k) => !has_fixed_kernel(&g.node(k).op),
                    _ => false,
                }),
                op if is_view(op) || is_free(op) => false,
                _ => users[o].len() > 1 && common.is_none(),
            };
            owner[o] = if m[o] { Some(out) } else { common };
        } else {
            owner[o] = Some(out);
        }
        // A materialized pad is a copy with a border; what it copies is computed in a kernel of
        // its own (vectorized, with the producer's epilogue), not inside the copy.
        let copies = matches!(node.op, Op::Pad { .. }) && m[o];
        if rereads_operands(&node.op) || copies {
            for &x in &node.inputs {
                if !is_view_of_buffers(g, x, &m) {
                    m[x.0 as usize] = true;
                }
            }
        }
    }
    m
}

/// True when `v` is a buffer, a free constant, or views of those only.
fn is_view_of_buffers(g: &Graph, v: ValueId, m: &[bool]) -> bool {
    if m[v.0 as usize] {
        return true;
    }
    match g.value(v).def {
        ValueDef::Node(n) => {
            let node = g.node(n);
            (is_view(&node.op) && node.inputs.iter().all(|&x| is_view_of_buffers(g, x, m))) || is_free(&node.op)
        }
        _ => true,
    }
}

pub(crate) struct GraphLowering<'g> {
    g: &'g Graph,
    mat: Vec<bool>,
    buffers: Vec<PlanBuffer>,
    buffer_of: HashMap<ValueId, usize>,
    /// The loop levels of the kernel being built (see [`super::hoist`]).
    pub(crate) hoist: RefCell<Option<HoistCtx>>,
}

/// Lowers a verified graph to kernels.
pub fn lower_graph(g: &Graph) -> Result<Program, LowerError> {
    let mut mat = materialized(g);
    // Inlining long chains of views and concats can grow expressions without bound, and a loop
    // op may not fit its consumer's loops: such a value gets a buffer instead, and lowering
    // starts over (at most once per value).
    loop {
        match lower_with(g, mat.clone()) {
            Err(LowerError::TooLarge(v) | LowerError::Materialize(v)) if !mat[v.0 as usize] => mat[v.0 as usize] = true,
            other => return other,
        }
    }
}

/// The largest expression (in nodes) an inlined value may contribute to a kernel.
const MAX_INLINE_NODES: usize = 400;

/// Counts the nodes of `e`, stopping once past `limit`.
fn expr_size(e: &Expr, limit: usize) -> usize {
    let children: Vec<&Expr> = match e {
        Expr::Load { index, .. } => vec![index],
        Expr::Unary(_, x) | Expr::Cast(_, x) | Expr::ToIndex(x) | Expr::Bitcast(_, x) => vec![x],
        Expr::Binary(_, a, b) => vec![a, b],
        Expr::Select(c, a, b) => vec![c, a, b],
        _ => vec![],
    };
    let mut n = 1;
    for c in children {
        if n > limit {
            break;
        }
        n += expr_size(c, limit);
    }
    n
}

fn lower_with(g: &Graph, mat: Vec<bool>) -> Result<Program, LowerError> {
    let mut lw = GraphLowering { g, mat, buffers: Vec::new(), buffer_of: HashMap::new(), hoist: RefCell::new(None) };
    for (i, &v) in g.inputs().iter().enumerate() {
        lw.add_buffer(v, BufferKind::Input(i));
    }
    for (i, &v) in g.weights().iter().enumerate() {
        lw.add_buffer(v, BufferKind::Weight(i));
    }
    let mut kernels = Vec::new();
    let mut launches = Vec::new();
    for (_, node) in g.nodes() {
        if !lw.mat[node.output.0 as usize] {
            continue;
        }
        lw.add_buffer(node.output, BufferKind::Computed);
        let (kernel, range) = lw.kernel_for(node.output)?;
        let args = kernel_args(&lw, &kernel);
        launches.push(Launch { kernel: kernels.len(), args, range });
        kernels.push(super::simplify::simplify_kernel(kernel));
    }
    let outputs = g.outputs().iter().map(|(_, v)| lw.buffer_of[v]).collect();
    Ok(Program { kernels, buffers: lw.buffers, launches, outputs })
}

fn kernel_args(lw: &GraphLowering, k: &Kernel) -> Vec<usize> {
    k.buffers
        .iter()
        .map(|b| lw.buffers.iter().position(|p| p.name == b.name).expect("kernel buffer is planned"))
        .collect()
}

impl<'g> GraphLowering<'g> {
    fn add_buffer(&mut self, v: ValueId, kind: BufferKind) {
        let d = self.g.value(v);
        self.buffer_of.insert(v, self.buffers.len());
        self.buffers.push(PlanBuffer {
            value: v,
            name: d.name.clone(),
            dtype: d.ty.dtype,
            shape: d.ty.shape.clone(),
            kind,
        });
    }

    fn shape(&self, v: ValueId) -> &[Dim] {
        &self.g.ty(v).shape
    }

    fn dtype(&self, v: ValueId) -> DType {
        self.g.ty(v).dtype
    }

    fn unsupported<T>(&self, v: ValueId, reason: &str) -> Result<T, LowerError> {
        let op = match self.g.value(v).def {
            ValueDef::Node(n) => self.g.node(n).op.name().to_string(),
            _ => "input".into(),
        };
        Err(LowerError::Unsupported { node: self.g.value(v).name.clone(), op, reason: reason.to_string() })
    }

    /// A buffer argument of kernel `kb` for materialized value `v`.
    fn buf(&self, kb: &mut KernelBuilder, v: ValueId, access: Access) -> u32 {
        let d = self.g.value(v);
        kb.buffer(v.0, &d.name, d.ty.dtype, Dim::product(&d.ty.shape), access)
    }

    /// The kernel computing materialized value `v`, and the extent of its parallel loop.
    fn kernel_for(&self, v: ValueId) -> Result<(Kernel, Dim), LowerError> {
        let name = self.g.value(v).name.clone();
        let mut kb = KernelBuilder::new(&name);
        let out = self.buf(&mut kb, v, Access::Write);
        let shape = self.shape(v).to_vec();
        let ValueDef::Node(n) = self.g.value(v).def else { unreachable!("only node results get kernels") };
        let node = self.g.node(n);
        let mut fused = vec![name.clone()];
        let dt = self.dtype(v);
        let mut gpu_form = None;
        let (body, range) = match &node.op {
            Op::ArgReduce { kind, axis, keepdim } => {
                let body = self.arg_kernel(&mut kb, v, node.inputs[0], *kind, *axis, *keepdim, out, &mut fused)?;
                (body, first_extent(&shape))
            }
            Op::CumSum { axis } => {
                let body = self.cumsum_kernel(&mut kb, v, node.inputs[0], *axis, out, &mut fused)?;
                (body, first_extent(&shape))
            }
            Op::Attention(_) if accumulator(dt) == dt => {
                // One parallel loop over every query row of every batch and head, so that a
                // batch of one still spreads over the threads.
                let rows = Dim::product(&shape[..shape.len() - 1]);
                let row = kb.index_var("row");
                let prefix = delinearize(Expr::Var(row), &shape[..shape.len() - 1]);
                let Some(stmts) = super::attention::attention_rows(self, &mut kb, v, out, &prefix, &mut fused)? else {
                    return self.unsupported(v, "no attention loop nest for this operand layout");
                };
                gpu_form = super::gpu_attention::block_form(self, &kb, v, out)?;
                let body =
                    vec![Stmt::Loop { var: row, extent: Expr::from_dim(&rows), kind: LoopKind::Parallel, body: stmts }];
                (body, rows)
            }
            Op::MatMul | Op::Conv(_) if accumulator(dt) == dt => {
                // Row by row into the output where the op has a row form (see
                // `GraphLowering::op_rows`); otherwise one element at a time.
                let attempt = kb.clone();
                let mut by_rows = true;
                let depth = self.rows_depth(v);
                let rows = self.hoisting_nest(
                    &mut kb,
                    &shape[..shape.len() - depth],
                    LoopKind::Serial,
                    None,
                    |lw, kb, row| {
                        let stmts = lw.op_rows(kb, v, out, row, &mut fused)?;
                        by_rows = stmts.is_some();
                        Ok(stmts.unwrap_or_default())
                    },
                )?;
                if by_rows {
                    rows
                } else {
                    kb = attempt;
                    self.elementwise_nest(&mut kb, v, out, &mut fused)?
                }
            }
            _ => self.elementwise_nest(&mut kb, v, out, &mut fused)?,
        };
        fused.sort();
        fused.dedup();
        let mut kernel = kb.finish(body, fused);
        kernel.gpu_form = gpu_form.map(|mut f: super::ir::GpuForm| {
            f.kernel.fused = kernel.fused.clone();
            Box::new(f)
        });
        Ok((kernel, range))
    }

    /// The kernel body for `v` as one loop nest over its shape, with loop ops hoisted.
    fn elementwise_nest(
        &self,
        kb: &mut KernelBuilder,
        v: ValueId,
        out: u32,
        fused: &mut Vec<String>,
    ) -> Result<(Vec<Stmt>, Dim), LowerError> {
        let shape = self.shape(v).to_vec();
        let ValueDef::Node(n) = self.g.value(v).def else { unreachable!("only node results get kernels") };
        let loop_op = is_loop_op(&self.g.node(n).op);
        let inner = if self.dtype(v) == DType::F32 && !loop_op { LoopKind::Vector(4) } else { LoopKind::Serial };
        let accumulates = !loop_op && accumulator(self.dtype(v)) == self.dtype(v);
        let epilogue_out = accumulates.then_some((v, out));
        self.hoisting_nest(kb, &shape, inner, epilogue_out, |lw, kb, idx| {
            let value = if loop_op { lw.loop_value(kb, v, idx, fused, true)? } else { lw.expand(kb, v, idx, fused)? };
            Ok(vec![Stmt::Store { buf: out, index: linearize(idx, &shape), value }])
        })
    }

    /// The value of `v` at multi-index `idx`: a load when materialized, else its definition
    /// inlined.
    pub(crate) fn value_at(
        &self,
        kb: &mut KernelBuilder,
        v: ValueId,
        idx: &[Expr],
        fused: &mut Vec<String>,
    ) -> Result<Expr, LowerError> {
        if self.mat[v.0 as usize] {
            let b = self.buf(kb, v, Access::Read);
            return Ok(Expr::load(b, linearize(idx, self.shape(v))));
        }
        fused.push(self.g.value(v).name.clone());
        if let ValueDef::Node(n) = self.g.value(v).def {
            if is_loop_op(&self.g.node(n).op) {
                return self.loop_value(kb, v, idx, fused, false);
            }
        }
        let e = self.expand(kb, v, idx, fused)?;
        if expr_size(&e, MAX_INLINE_NODES) > MAX_INLINE_NODES {
            return Err(LowerError::TooLarge(v));
        }
        Ok(e)
    }

    /// The definition of node value `v` at `idx`, with its operands fetched by `value_at`.
    fn expand(
        &self,
        kb: &mut KernelBuilder,
        v: ValueId,
        idx: &[Expr],
        fused: &mut Vec<String>,
    ) -> Result<Expr, LowerError> {
        let ValueDef::Node(n) = self.g.value(v).def else {
            return self.unsupported(v, "inputs are buffers");
        };
        let node = self.g.node(n);
        let ins = &node.inputs;
        let out_shape = self.shape(v).to_vec();
        Ok(match &node.op {
            Op::Unary(u) => {
                Expr::unary(*u, self.value_at(kb, ins[0], &broadcast(idx, &out_shape, self.shape(ins[0])), fused)?)
            }
            Op::Binary(b) => {
                let a = self.value_at(kb, ins[0], &broadcast(idx, &out_shape, self.shape(ins[0])), fused)?;
                let c = self.value_at(kb, ins[1], &broadcast(idx, &out_shape, self.shape(ins[1])), fused)?;
                Expr::binary(*b, a, c)
            }
            Op::Where => {
                let c = self.value_at(kb, ins[0], &broadcast(idx, &out_shape, self.shape(ins[0])), fused)?;
                let a = self.value_at(kb, ins[1], &broadcast(idx, &out_shape, self.shape(ins[1])), fused)?;
                let b = self.value_at(kb, ins[2], &broadcast(idx, &out_shape, self.shape(ins[2])), fused)?;
                Expr::select(c, a, b)
            }
            Op::Cast(to) => Expr::Cast(*to, Box::new(self.value_at(kb, ins[0], idx, fused)?)),
            Op::Full { value, dtype, .. } => Expr::elem_const(*value, *dtype),
            Op::DimValue { dim, dtype } => Expr::Cast(*dtype, Box::new(Expr::from_dim(dim))),
            Op::Iota { axis, start, step, dtype, .. } => {
                // start + step * i, computed in f64 and converted like the interpreter does.
                let i = Expr::Cast(DType::F64, Box::new(idx[*axis].clone()));
                let val = Expr::binary(
                    BinaryOp::Add,
                    Expr::elem_const(*start, DType::F64),
                    Expr::binary(BinaryOp::Mul, Expr::elem_const(*step, DType::F64), i),
                );
                Expr::Cast(*dtype, Box::new(val))
            }
            Op::Reshape { .. } => {
                let lin = linearize(idx, &out_shape);
                let src = delinearize(lin, self.shape(ins[0]));
                self.value_at(kb, ins[0], &src, fused)?
            }
            Op::Permute { perm } => {
                let mut src = vec![Expr::Int(0); perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    src[p] = idx[i].clone();
                }
                self.value_at(kb, ins[0], &src, fused)?
            }
            Op::Expand { .. } => self.value_at(kb, ins[0], &broadcast(idx, &out_shape, self.shape(ins[0])), fused)?,
            Op::Slice { axis, start, step, .. } => {
                let mut src = idx.to_vec();
                src[*axis] = Expr::add(Expr::from_dim(start), Expr::mul(idx[*axis].clone(), Expr::Int(*step)));
                self.value_at(kb, ins[0], &src, fused)?
            }
            Op::Pad { pads, value } => {
                let in_shape = self.shape(ins[0]).to_vec();
                let mut inside: Option<Expr> = None;
                let mut src = Vec::new();
                for (k, ((lo, _), d)) in pads.iter().zip(&in_shape).enumerate() {
                    let raw = Expr::sub(idx[k].clone(), Expr::Int(*lo));
                    if *lo == 0 && pads[k].1 <= 0 {
                        src.push(raw);
                        continue;
                    }
                    let dim = Expr::from_dim(d);
                    let ok = Expr::binary(
                        BinaryOp::And,
                        Expr::binary(BinaryOp::Ge, raw.clone(), Expr::Int(0)),
                        Expr::binary(BinaryOp::Lt, raw.clone(), dim.clone()),
                    );
                    inside = Some(match inside {
                        None => ok,
                        Some(p) => Expr::binary(BinaryOp::And, p, ok),
                    });
                    src.push(clamp_index(raw, dim));
                }
                let x = self.value_at(kb, ins[0], &src, fused)?;
                match inside {
                    None => x,
                    Some(c) => Expr::select(c, x, Expr::elem_const(*value, self.dtype(v))),
                }
            }
            Op::Concat { axis } => {
                // Select chain over pieces; every piece's index is clamped into its bounds.
                let mut offset = Dim::constant(0);
                let mut pieces = Vec::new();
                for &x in ins {
                    let len = self.shape(x)[*axis].clone();
                    let mut src = idx.to_vec();
                    let local = Expr::sub(idx[*axis].clone(), Expr::from_dim(&offset));
                    src[*axis] = clamp_index(local, Expr::from_dim(&len));
                    let end = offset.add(&len);
                    pieces.push((Expr::from_dim(&end), self.value_at(kb, x, &src, fused)?));
                    offset = end;
                }
                let (_, mut acc) = pieces.pop().expect("concat has operands");
                while let Some((end, val)) = pieces.pop() {
                    acc = Expr::select(Expr::binary(BinaryOp::Lt, idx[*axis].clone(), end), val, acc);
                }
                acc
            }
            Op::Gather { axis } => {
                let data_shape = self.shape(ins[0]).to_vec();
                let k = self.shape(ins[1]).len();
                let pos = self.value_at(kb, ins[1], &idx[*axis..*axis + k], fused)?;
                let dim = Expr::from_dim(&data_shape[*axis]);
                let raw = Expr::ToIndex(Box::new(pos));
                // Negative indices count from the end; out-of-range ones are clamped (the
                // interpreter reports them; compiled code cannot fail mid-kernel).
                let wrapped = Expr::select(
                    Expr::binary(BinaryOp::Lt, raw.clone(), Expr::Int(0)),
                    Expr::add(raw.clone(), dim.clone()),
                    raw,
                );
                let mut src = idx[..*axis].to_vec();
                src.push(clamp_index(wrapped, dim));
                src.extend_from_slice(&idx[*axis + k..]);
                self.value_at(kb, ins[0], &src, fused)?
            }
            _ => return self.unsupported(v, "not an inlinable op"),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn arg_kernel(
        &self,
        kb: &mut KernelBuilder,
        v: ValueId,
        x: ValueId,
        kind: ArgKind,
        axis: usize,
        keepdim: bool,
        out: u32,
        fused: &mut Vec<String>,
    ) -> Result<Vec<Stmt>, LowerError> {
        let in_shape = self.shape(x).to_vec();
        let out_shape = self.shape(v).to_vec();
        let xdt = self.dtype(x);
        let dims: Vec<Expr> = out_shape.iter().map(Expr::from_dim).collect();
        let mut err = None;
        let body = kb.nest(&dims, LoopKind::Serial, |kb, oidx| {
            let best = kb.var("best", ScalarType::Elem(xdt));
            let at = kb.var("at", ScalarType::Index);
            let cur = kb.var("cur", ScalarType::Elem(xdt));
            let r = kb.index_var("r");
            let src = reduce_source_index(oidx, &[axis], &[r], in_shape.len(), keepdim);
            let value = self.value_at(kb, x, &src, fused).unwrap_or_else(|e| {
                err = Some(e);
                Expr::Int(0)
            });
            let cmp = if kind == ArgKind::ArgMax { BinaryOp::Gt } else { BinaryOp::Lt };
            // Take the first extremum; a NaN wins over any number and the first NaN is kept.
            let better = Expr::binary(
                BinaryOp::Or,
                Expr::binary(cmp, Expr::Var(cur), Expr::Var(best)),
                Expr::binary(
                    BinaryOp::And,
                    Expr::unary(UnaryOp::IsNan, Expr::Var(cur)),
                    Expr::unary(UnaryOp::Not, Expr::unary(UnaryOp::IsNan, Expr::Var(best))),
                ),
            );
            let first = Expr::binary(BinaryOp::Eq, Expr::Var(r), Expr::Int(0));
            let take = kb.var("take", ScalarType::Elem(DType::Bool));
            let body = vec![
                Stmt::Let { var: cur, value },
                Stmt::Let { var: take, value: Expr::binary(BinaryOp::Or, first, better) },
                Stmt::Assign { var: best, value: Expr::select(Expr::Var(take), Expr::Var(cur), Expr::Var(best)) },
                Stmt::Assign { var: at, value: Expr::select(Expr::Var(take), Expr::Var(r), Expr::Var(at)) },
            ];
            vec![
                Stmt::Decl { var: best, init: Expr::elem_const(0.0, xdt) },
                Stmt::Decl { var: at, init: Expr::Int(0) },
                Stmt::Loop { var: r, extent: Expr::from_dim(&in_shape[axis]), kind: LoopKind::Serial, body },
                Stmt::Store {
                    buf: out,
                    index: linearize(oidx, &out_shape),
                    value: Expr::Cast(DType::I64, Box::new(Expr::Var(at))),
                },
            ]
        });
        match err {
            Some(e) => Err(e),
            None => Ok(body),
        }
    }

    fn cumsum_kernel(
        &self,
        kb: &mut KernelBuilder,
        v: ValueId,
        x: ValueId,
        axis: usize,
        out: u32,
        fused: &mut Vec<String>,
    ) -> Result<Vec<Stmt>, LowerError> {
        let shape = self.shape(v).to_vec();
        let dt = self.dtype(v);
        let acc_ty = accumulator(dt);
        let outer: Vec<Expr> =
            shape.iter().enumerate().filter(|(i, _)| *i != axis).map(|(_, d)| Expr::from_dim(d)).collect();
        let mut err = None;
        let body = kb.nest(&outer, LoopKind::Serial, |kb, oidx| {
            let acc = kb.var("acc", ScalarType::Elem(acc_ty));
            let i = kb.index_var("c");
            let mut idx = oidx.to_vec();
            idx.insert(axis, Expr::Var(i));
            let value = self.value_at(kb, x, &idx, fused).unwrap_or_else(|e| {
                err = Some(e);
                Expr::Int(0)
            });
            let add = Expr::binary(BinaryOp::Add, Expr::Var(acc), Expr::Cast(acc_ty, Box::new(value)));
            vec![
                Stmt::Decl { var: acc, init: Expr::elem_const(0.0, acc_ty) },
                Stmt::Loop {
                    var: i,
                    extent: Expr::from_dim(&shape[axis]),
                    kind: LoopKind::Serial,
                    body: vec![
                        Stmt::Assign { var: acc, value: add },
                        Stmt::Store {
                            buf: out,
                            index: linearize(&idx, &shape),
                            value: Expr::Cast(dt, Box::new(Expr::Var(acc))),
                        },
                    ],
                },
            ]
        });
        match err {
            Some(e) => Err(e),
            None => Ok(body),
        }
    }

    pub(crate) fn graph(&self) -> &Graph {
        self.g
    }
}

/// The operand index for a broadcast operand of shape `from` at output index `idx` of `to`.
pub(crate) fn broadcast(idx: &[Expr], to: &[Dim], from: &[Dim]) -> Vec<Expr> {
    let lead = to.len() - from.len();
    from.iter()
        .enumerate()
        .map(|(i, d)| if d.is_const(1) && !to[lead + i].is_const(1) { Expr::Int(0) } else { idx[lead + i].clone() })
        .collect()
}

/// `min(max(i, 0), n - 1)`.
pub(crate) fn clamp_index(i: Expr, n: Expr) -> Expr {
    Expr::max(Expr::min(i, Expr::sub(n, Expr::Int(1))), Expr::Int(0))
}

/// The input index of a reduction: output dims for kept axes, loop vars for reduced ones.
pub(crate) fn reduce_source_index(
    oidx: &[Expr],
    axes: &[usize],
    rvars: &[super::ir::VarId],
    rank: usize,
    keepdim: bool,
) -> Vec<Expr> {
    let mut src = Vec::with_capacity(rank);
    let mut o = 0;
    for d in 0..rank {
        if let Some(k) = axes.iter().position(|&a| a == d) {
            src.push(Expr::Var(rvars[k]));
            if keepdim {
                o += 1;
            }
        } else {
            src.push(oidx[o].clone());
            o += 1;
        }
    }
    src
}

/// Accumulation type: half precision accumulates in f32, integers in i64.
pub(crate) fn accumulator(dt: DType) -> DType {
    match dt {
        DType::F16 | DType::BF16 => DType::F32,
        d if d.is_float() => d,
        DType::Bool => DType::Bool,
        _ => DType::I64,
    }
}

pub(crate) fn int_identity(kind: ReduceKind, dt: DType) -> f64 {
    match (kind, dt) {
        (ReduceKind::Sum | ReduceKind::Mean, _) => 0.0,
        (ReduceKind::Prod, _) => 1.0,
        (ReduceKind::Max, DType::Bool) => 0.0,
        (ReduceKind::Min, DType::Bool) => 1.0,
        (ReduceKind::Max, _) => i64::MIN as f64,
        (ReduceKind::Min, _) => i64::MAX as f64,
    }
}

/// The extent of the first (parallel) loop of a plain nest over `shape`.
fn first_extent(shape: &[Dim]) -> Dim {
    shape.first().cloned().unwrap_or(Dim::constant(1))
}
