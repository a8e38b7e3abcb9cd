//! Fusion and lowering: the graph is partitioned into kernels and each kernel is written in
//! the kernel IR.
//!
//! Every value is either *materialized* (it gets a buffer) or *inlined* into the kernels that
//! use it, where it becomes scalar arithmetic on the consumer's loop indices. Views (reshape,
//! permute, expand, slice, pad, concat, gather) become index arithmetic, never copies.
//! Materialized are: graph inputs, weights and outputs; the *anchors* — matmul, conv, pool,
//! adaptive pool, reductions, arg-reductions and cumsum — which need loops of their own;
//! operands of anchors that are not pure views of buffers (so a matmul's inner loop only does
//! index arithmetic and loads); and computed values with more than one user (so nothing is
//! computed twice). Each materialized non-input value is computed by one kernel whose loops
//! cover its shape, with all its inlined producers fused in. Reductions fuse their elementwise
//! producers; softmax/normalization rows and matmul epilogues are future work (see the issue
//! notes).

use super::builder::{delinearize, linearize, KernelBuilder};
use super::ir::{Access, Expr, Kernel, LoopKind, ScalarType, Stmt};
use kiln_ir::{ArgKind, BinaryOp, DType, Dim, Graph, Op, ReduceKind, UnaryOp, ValueDef, ValueId};
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
    #[error("cannot lower node `{node}` ({op}) to kernels: {reason}")]
    Unsupported {
        node: String,
        op: String,
        reason: String,
    },
}

fn is_anchor(op: &Op) -> bool {
    matches!(
        op,
        Op::MatMul
            | Op::Conv(_)
            | Op::Pool(_)
            | Op::AdaptivePool { .. }
            | Op::Reduce { .. }
            | Op::ArgReduce { .. }
            | Op::CumSum { .. }
    )
}

fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. } | Op::Permute { .. } | Op::Expand { .. } | Op::Slice { .. }
    )
}

fn is_free(op: &Op) -> bool {
    matches!(op, Op::Full { .. } | Op::Iota { .. } | Op::DimValue { .. })
}

/// Decides which values get buffers.
fn materialized(g: &Graph) -> Vec<bool> {
    let n = g.value_count();
    let mut users = vec![0usize; n];
    for (_, node) in g.nodes() {
        for v in &node.inputs {
            users[v.0 as usize] += 1;
        }
    }
    let mut m = vec![false; n];
    for &v in g.inputs().iter().chain(g.weights()) {
        m[v.0 as usize] = true;
    }
    for (_, v) in g.outputs() {
        m[v.0 as usize] = true;
    }
    // Walk backwards so a decision on a consumer is known before its producers.
    let nodes: Vec<_> = g.nodes().collect();
    for (_, node) in nodes.iter().rev() {
        let out = node.output.0 as usize;
        if is_anchor(&node.op) {
            m[out] = true;
            for &x in &node.inputs {
                if !is_view_of_buffers(g, x, &m) {
                    m[x.0 as usize] = true;
                }
            }
        } else if users[out] > 1 && !is_view(&node.op) && !is_free(&node.op) {
            m[out] = true;
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
            (is_view(&node.op) && node.inputs.iter().all(|&x| is_view_of_buffers(g, x, m)))
                || is_free(&node.op)
        }
        _ => true,
    }
}

pub(crate) struct GraphLowering<'g> {
    g: &'g Graph,
    mat: Vec<bool>,
    buffers: Vec<PlanBuffer>,
    buffer_of: HashMap<ValueId, usize>,
}

/// Lowers a verified graph to kernels.
pub fn lower_graph(g: &Graph) -> Result<Program, LowerError> {
    let mut mat = materialized(g);
    // Inlining long chains of views and concats can grow expressions without bound; a value
    // whose inlined expression passes MAX_INLINE_NODES gets a buffer instead, and lowering
    // starts over (at most once per value).
    loop {
        match lower_with(g, mat.clone()) {
            Err(LowerError::TooLarge(v)) if !mat[v.0 as usize] => mat[v.0 as usize] = true,
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
    let mut lw = GraphLowering {
        g,
        mat,
        buffers: Vec::new(),
        buffer_of: HashMap::new(),
    };
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
        launches.push(Launch {
            kernel: kernels.len(),
            args,
            range,
        });
        kernels.push(kernel);
    }
    let outputs = g.outputs().iter().map(|(_, v)| lw.buffer_of[v]).collect();
    Ok(Program {
        kernels,
        buffers: lw.buffers,
        launches,
        outputs,
    })
}

fn kernel_args(lw: &GraphLowering, k: &Kernel) -> Vec<usize> {
    k.buffers
        .iter()
        .map(|b| {
            lw.buffers
                .iter()
                .position(|p| p.name == b.name)
                .expect("kernel buffer is planned")
        })
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
        Err(LowerError::Unsupported {
            node: self.g.value(v).name.clone(),
            op,
            reason: reason.to_string(),
        })
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
        let ValueDef::Node(n) = self.g.value(v).def else {
            unreachable!("only node results get kernels")
        };
        let node = self.g.node(n);
        let mut fused = vec![name.clone()];
        let range = shape.first().cloned().unwrap_or(Dim::constant(1));
        let body = match &node.op {
            Op::Reduce {
                kind,
                axes,
                keepdim,
            } => self.reduce_kernel(
                &mut kb,
                v,
                node.inputs[0],
                *kind,
                axes,
                *keepdim,
                out,
                &mut fused,
            )?,
            Op::ArgReduce {
                kind,
                axis,
                keepdim,
            } => self.arg_kernel(
                &mut kb,
                v,
                node.inputs[0],
                *kind,
                *axis,
                *keepdim,
                out,
                &mut fused,
            )?,
            Op::MatMul => {
                self.matmul_kernel(&mut kb, v, node.inputs[0], node.inputs[1], out, &mut fused)?
            }
            Op::CumSum { axis } => {
                self.cumsum_kernel(&mut kb, v, node.inputs[0], *axis, out, &mut fused)?
            }
            Op::Conv(_) | Op::Pool(_) | Op::AdaptivePool { .. } => {
                super::window::window_kernel(self, &mut kb, v, out, &mut fused)?
            }
            _ => {
                let dims: Vec<Expr> = shape.iter().map(Expr::from_dim).collect();
                let vector = if self.dtype(v) == DType::F32 {
                    LoopKind::Vector(4)
                } else {
                    LoopKind::Serial
                };
                let mut err = None;
                let body = kb.nest(&dims, vector, |kb, idx| {
                    let value = match self.expand(kb, v, idx, &mut fused) {
                        Ok(e) => e,
                        Err(e) => {
                            err = Some(e);
                            Expr::Int(0)
                        }
                    };
                    vec![Stmt::Store {
                        buf: out,
                        index: linearize(idx, &shape),
                        value,
                    }]
                });
                if let Some(e) = err {
                    return Err(e);
                }
                body
            }
        };
        fused.sort();
        fused.dedup();
        Ok((kb.finish(body, fused), range))
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
            Op::Unary(u) => Expr::unary(
                *u,
                self.value_at(
                    kb,
                    ins[0],
                    &broadcast(idx, &out_shape, self.shape(ins[0])),
                    fused,
                )?,
            ),
            Op::Binary(b) => {
                let a = self.value_at(
                    kb,
                    ins[0],
                    &broadcast(idx, &out_shape, self.shape(ins[0])),
                    fused,
                )?;
                let c = self.value_at(
                    kb,
                    ins[1],
                    &broadcast(idx, &out_shape, self.shape(ins[1])),
                    fused,
                )?;
                Expr::binary(*b, a, c)
            }
            Op::Where => {
                let c = self.value_at(
                    kb,
                    ins[0],
                    &broadcast(idx, &out_shape, self.shape(ins[0])),
                    fused,
                )?;
                let a = self.value_at(
                    kb,
                    ins[1],
                    &broadcast(idx, &out_shape, self.shape(ins[1])),
                    fused,
                )?;
                let b = self.value_at(
                    kb,
                    ins[2],
                    &broadcast(idx, &out_shape, self.shape(ins[2])),
                    fused,
                )?;
                Expr::select(c, a, b)
            }
            Op::Cast(to) => Expr::Cast(*to, Box::new(self.value_at(kb, ins[0], idx, fused)?)),
            Op::Full { value, dtype, .. } => Expr::elem_const(*value, *dtype),
            Op::DimValue { dim, dtype } => Expr::Cast(*dtype, Box::new(Expr::from_dim(dim))),
            Op::Iota {
                axis,
                start,
                step,
                dtype,
                ..
            } => {
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
            Op::Expand { .. } => self.value_at(
                kb,
                ins[0],
                &broadcast(idx, &out_shape, self.shape(ins[0])),
                fused,
            )?,
            Op::Slice {
                axis, start, step, ..
            } => {
                let mut src = idx.to_vec();
                src[*axis] = Expr::add(
                    Expr::from_dim(start),
                    Expr::mul(idx[*axis].clone(), Expr::Int(*step)),
                );
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
                    acc = Expr::select(
                        Expr::binary(BinaryOp::Lt, idx[*axis].clone(), end),
                        val,
                        acc,
                    );
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
    fn reduce_kernel(
        &self,
        kb: &mut KernelBuilder,
        v: ValueId,
        x: ValueId,
        kind: ReduceKind,
        axes: &[usize],
        keepdim: bool,
        out: u32,
        fused: &mut Vec<String>,
    ) -> Result<Vec<Stmt>, LowerError> {
        let in_shape = self.shape(x).to_vec();
        let out_shape = self.shape(v).to_vec();
        let dt = self.dtype(v);
        let acc_ty = accumulator(dt);
        let dims: Vec<Expr> = out_shape.iter().map(Expr::from_dim).collect();
        let mut err = None;
        let body = kb.nest(&dims, LoopKind::Serial, |kb, oidx| {
            let acc = kb.var("acc", ScalarType::Elem(acc_ty));
            let rvars: Vec<_> = axes.iter().map(|_| kb.index_var("r")).collect();
            let src = reduce_source_index(oidx, axes, &rvars, in_shape.len(), keepdim);
            let value = match self.value_at(kb, x, &src, fused) {
                Ok(e) => Expr::Cast(acc_ty, Box::new(e)),
                Err(e) => {
                    err = Some(e);
                    Expr::Int(0)
                }
            };
            let (init, update) = match kind {
                ReduceKind::Sum | ReduceKind::Mean => {
                    (0.0, Expr::binary(BinaryOp::Add, Expr::Var(acc), value))
                }
                ReduceKind::Prod => (1.0, Expr::binary(BinaryOp::Mul, Expr::Var(acc), value)),
                ReduceKind::Max => (
                    f64::NEG_INFINITY,
                    Expr::binary(BinaryOp::Max, Expr::Var(acc), value),
                ),
                ReduceKind::Min => (
                    f64::INFINITY,
                    Expr::binary(BinaryOp::Min, Expr::Var(acc), value),
                ),
            };
            let init = if acc_ty.is_float() {
                init
            } else {
                int_identity(kind, acc_ty)
            };
            let mut inner = vec![Stmt::Assign {
                var: acc,
                value: update,
            }];
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
                result = Expr::binary(
                    BinaryOp::Div,
                    result,
                    Expr::Cast(acc_ty, Box::new(Expr::from_dim(&count))),
                );
            }
            let mut stmts = vec![Stmt::Decl {
                var: acc,
                init: Expr::elem_const(init, acc_ty),
            }];
            stmts.extend(inner);
            stmts.push(Stmt::Store {
                buf: out,
                index: linearize(oidx, &out_shape),
                value: Expr::Cast(dt, Box::new(result)),
            });
            stmts
        });
        match err {
            Some(e) => Err(e),
            None => Ok(body),
        }
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
            let cmp = if kind == ArgKind::ArgMax {
                BinaryOp::Gt
            } else {
                BinaryOp::Lt
            };
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
                Stmt::Let {
                    var: take,
                    value: Expr::binary(BinaryOp::Or, first, better),
                },
                Stmt::Assign {
                    var: best,
                    value: Expr::select(Expr::Var(take), Expr::Var(cur), Expr::Var(best)),
                },
                Stmt::Assign {
                    var: at,
                    value: Expr::select(Expr::Var(take), Expr::Var(r), Expr::Var(at)),
                },
            ];
            vec![
                Stmt::Decl {
                    var: best,
                    init: Expr::elem_const(0.0, xdt),
                },
                Stmt::Decl {
                    var: at,
                    init: Expr::Int(0),
                },
                Stmt::Loop {
                    var: r,
                    extent: Expr::from_dim(&in_shape[axis]),
                    kind: LoopKind::Serial,
                    body,
                },
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

    fn matmul_kernel(
        &self,
        kb: &mut KernelBuilder,
        v: ValueId,
        a: ValueId,
        b: ValueId,
        out: u32,
        fused: &mut Vec<String>,
    ) -> Result<Vec<Stmt>, LowerError> {
        let out_shape = self.shape(v).to_vec();
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        let dt = self.dtype(v);
        let acc_ty = accumulator(dt);
        let r = out_shape.len();
        let kdim = sa[sa.len() - 1].clone();
        let dims: Vec<Expr> = out_shape.iter().map(Expr::from_dim).collect();
        let mut err = None;
        let body = kb.nest(&dims, LoopKind::Serial, |kb, oidx| {
            let acc = kb.var("acc", ScalarType::Elem(acc_ty));
            let k = kb.index_var("k");
            let batch = &oidx[..r - 2];
            let mut ia = broadcast(batch, &out_shape[..r - 2], &sa[..sa.len() - 2]);
            ia.extend([oidx[r - 2].clone(), Expr::Var(k)]);
            let mut ib = broadcast(batch, &out_shape[..r - 2], &sb[..sb.len() - 2]);
            ib.extend([Expr::Var(k), oidx[r - 1].clone()]);
            let (x, y) = match (
                self.value_at(kb, a, &ia, fused),
                self.value_at(kb, b, &ib, fused),
            ) {
                (Ok(x), Ok(y)) => (x, y),
                (Err(e), _) | (_, Err(e)) => {
                    err = Some(e);
                    (Expr::Int(0), Expr::Int(0))
                }
            };
            let prod = Expr::binary(
                BinaryOp::Mul,
                Expr::Cast(acc_ty, Box::new(x)),
                Expr::Cast(acc_ty, Box::new(y)),
            );
            vec![
                Stmt::Decl {
                    var: acc,
                    init: Expr::elem_const(0.0, acc_ty),
                },
                Stmt::Loop {
                    var: k,
                    extent: Expr::from_dim(&kdim),
                    kind: LoopKind::Serial,
                    body: vec![Stmt::Assign {
                        var: acc,
                        value: Expr::binary(BinaryOp::Add, Expr::Var(acc), prod),
                    }],
                },
                Stmt::Store {
                    buf: out,
                    index: linearize(oidx, &out_shape),
                    value: Expr::Cast(dt, Box::new(Expr::Var(acc))),
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
        let outer: Vec<Expr> = shape
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != axis)
            .map(|(_, d)| Expr::from_dim(d))
            .collect();
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
            let add = Expr::binary(
                BinaryOp::Add,
                Expr::Var(acc),
                Expr::Cast(acc_ty, Box::new(value)),
            );
            vec![
                Stmt::Decl {
                    var: acc,
                    init: Expr::elem_const(0.0, acc_ty),
                },
                Stmt::Loop {
                    var: i,
                    extent: Expr::from_dim(&shape[axis]),
                    kind: LoopKind::Serial,
                    body: vec![
                        Stmt::Assign {
                            var: acc,
                            value: add,
                        },
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
        .map(|(i, d)| {
            if d.is_const(1) && !to[lead + i].is_const(1) {
                Expr::Int(0)
            } else {
                idx[lead + i].clone()
            }
        })
        .collect()
}

/// `min(max(i, 0), n - 1)`.
pub(crate) fn clamp_index(i: Expr, n: Expr) -> Expr {
    Expr::max(Expr::min(i, Expr::sub(n, Expr::Int(1))), Expr::Int(0))
}

/// The input index of a reduction: output dims for kept axes, loop vars for reduced ones.
fn reduce_source_index(
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

fn int_identity(kind: ReduceKind, dt: DType) -> f64 {
    match (kind, dt) {
        (ReduceKind::Sum | ReduceKind::Mean, _) => 0.0,
        (ReduceKind::Prod, _) => 1.0,
        (ReduceKind::Max, DType::Bool) => 0.0,
        (ReduceKind::Min, DType::Bool) => 1.0,
        (ReduceKind::Max, _) => i64::MIN as f64,
        (ReduceKind::Min, _) => i64::MAX as f64,
    }
}
