//! Fused attention ([`Op::Attention`]) as a flash-attention loop nest: each query row streams
//! the keys once with an *online softmax*, so the `[m, n]` score matrix never exists in memory.
//!
//! For output row `o = out[..., i, :]` (the row of the kernel's output buffer, which is the
//! accumulator), with `m` the running maximum and `l` the running sum of exponentials, keys
//! are taken [`KEY_TILE`] at a time (then one at a time for the remainder):
//!
//! ```text
//! m = -inf; l = 0; o[:] = 0
//! for each tile of keys j1..jT:
//!     s_t = masks(scale(q[i, :] · k[j_t, :]))       (T dot products in one pass over q[i, :])
//!     m' = max(m, s_1, ..., s_T)
//!     c = exp(m - m'); p_t = exp(s_t - m')            (m' = -inf counts as 0 here)
//!     l = l * c + p_1 + ... + p_T
//!     o[:] = o[:] * c + p_1 * v[j_1, :] + ... + p_T * v[j_T, :]     (vectorizable)
//!     m = m'
//! o[:] = o[:] / l
//! ```
//!
//! Each score is computed once, in registers; memory traffic is `q`, `k`, `v`, the masks and
//! the output (K and V are re-read per query row, from cache for the sequence lengths of
//! typical models). A tile rescales the output row once and reads and writes it once, for
//! all its keys. The parallel loop runs over the query rows of every batch and head. The
//! result equals the decomposed softmax up to rounding: the normalization happens once at the
//! end instead of per element, and earlier partial sums are rescaled by `c` as the maximum
//! grows. Leading masked keys (scores `-inf`) contribute nothing; a fully masked row gives
//! `0 / 0` = NaN, as the decomposed form does.

use super::builder::{linearize, KernelBuilder};
use super::ir::{Expr, LoopKind, ScalarType, Stmt, VarId};
use super::lower::{accumulator, broadcast, GraphLowering, LowerError};
use kiln_ir::{AttentionAttrs, AttentionMask, AttentionScale, BinaryOp, DType, Dim, Op, UnaryOp, ValueDef, ValueId};

/// Keys per tile: scores computed together, one rescale and one pass over the output row.
pub const KEY_TILE: i64 = 4;

/// What every form of an attention kernel reads: the op's operands and how a score is made.
pub(crate) struct Operands<'a> {
    pub attrs: &'a AttentionAttrs,
    /// q, k, v and the masks.
    pub inputs: &'a [ValueId],
    pub dt: DType,
    /// The output shape `[..., m, dv]`.
    pub out_shape: Vec<Dim>,
    /// The scores' shape `[..., m, n]` (batch dims of q and k broadcast).
    pub scores: Vec<Dim>,
}

impl Operands<'_> {
    /// The operands of attention `v`, or `None` when `v` is not an attention or its dtype is
    /// not its own accumulator (f16 and bf16 are not fused).
    pub fn of(g: &kiln_ir::Graph, v: ValueId) -> Option<Operands<'_>> {
        let ValueDef::Node(n) = g.value(v).def else { return None };
        let node = g.node(n);
        let Op::Attention(attrs) = &node.op else { return None };
        let dt = g.ty(v).dtype;
        if accumulator(dt) != dt {
            return None;
        }
        let (q, k) = (node.inputs[0], node.inputs[1]);
        let scores = kiln_ir::infer::infer(&Op::MatMul, &[g.ty(q), &swap_last(g.ty(k))], &g.symbols).ok()?;
        Some(Operands { attrs, inputs: &node.inputs, dt, out_shape: g.ty(v).shape.clone(), scores: scores.shape })
    }

    /// The index of `x` (one of q, k, v) at `[batch..., a, b]`, `batch` the index of the
    /// output's batch dims.
    pub fn operand_index(&self, lw: &GraphLowering, x: ValueId, batch: &[Expr], a: Expr, b: Expr) -> Vec<Expr> {
        let r = self.out_shape.len();
        let sx = &lw.graph().ty(x).shape;
        let mut idx = broadcast(batch, &self.out_shape[..r - 2], &sx[..sx.len() - 2]);
        idx.extend([a, b]);
        idx
    }

    /// The score of query `i` and key `key` of batch `batch` from their dot product: scaled,
    /// then masked in order.
    #[allow(clippy::too_many_arguments)]
    pub fn score(
        &self,
        lw: &GraphLowering,
        kb: &mut KernelBuilder,
        dot: Expr,
        batch: &[Expr],
        i: Expr,
        key: Expr,
        fused: &mut Vec<String>,
    ) -> Result<Expr, LowerError> {
        let dt = self.dt;
        let mut s = match self.attrs.scale {
            AttentionScale::Mul(c) => Expr::binary(BinaryOp::Mul, dot, Expr::elem_const(c, dt)),
            AttentionScale::Div(c) => Expr::binary(BinaryOp::Div, dot, Expr::elem_const(c, dt)),
        };
        let r = self.out_shape.len();
        let mut si = broadcast(batch, &self.out_shape[..r - 2], &self.scores[..self.scores.len() - 2]);
        si.extend([i, key]);
        for (mask, &mv) in self.attrs.masks.iter().zip(&self.inputs[3..]) {
            let x = lw.value_at(kb, mv, &broadcast(&si, &self.scores, &lw.graph().ty(mv).shape), fused)?;
            s = match mask {
                AttentionMask::Add => Expr::binary(BinaryOp::Add, s, x),
                AttentionMask::Keep(fill) => Expr::select(x, s, Expr::elem_const(*fill, dt)),
                AttentionMask::Fill(fill) => Expr::select(x, Expr::elem_const(*fill, dt), s),
            };
        }
        Ok(s)
    }

    /// The keys' and queries' shared dim (q's last), and the value dim (v's last).
    pub fn head_dims(&self, lw: &GraphLowering) -> (Dim, Dim) {
        let g = lw.graph();
        let last = |x: ValueId| g.ty(x).shape.last().cloned().unwrap_or_else(|| Dim::constant(1));
        (last(self.inputs[0]), last(self.inputs[2]))
    }
}

/// What every tile of one output row needs.
struct RowNest<'a> {
    ops: &'a Operands<'a>,
    out: u32,
    /// The output row's index (without the last dim).
    row: &'a [Expr],
    /// The running maximum and sum.
    m: VarId,
    l: VarId,
}

impl RowNest<'_> {
    /// The row's batch index.
    fn batch(&self) -> &[Expr] {
        &self.row[..self.row.len() - 1]
    }

    /// The output row's element `e`, linearized.
    fn at(&self, e: Expr) -> Expr {
        let mut idx = self.row.to_vec();
        idx.push(e);
        linearize(&idx, &self.ops.out_shape)
    }

    /// The statements for the keys `keys` (index expressions): their scores, the online
    /// softmax update, and the output row's rescale-and-accumulate.
    fn tile(
        &self,
        lw: &GraphLowering,
        kb: &mut KernelBuilder,
        keys: &[Expr],
        fused: &mut Vec<String>,
    ) -> Result<Vec<Stmt>, LowerError> {
        let ops = self.ops;
        let (q, k, v) = (ops.inputs[0], ops.inputs[1], ops.inputs[2]);
        let dt = ops.dt;
        let elem = ScalarType::Elem(dt);
        let i = self.row[self.row.len() - 1].clone();
        let head = &lw.graph().ty(q).shape;
        let d = kb.index_var("d");
        let qd = kb.var("q", elem);
        let dots: Vec<VarId> = keys.iter().map(|_| kb.var("dot", elem)).collect();
        let mut stmts: Vec<Stmt> =
            dots.iter().map(|&t| Stmt::Decl { var: t, init: Expr::elem_const(0.0, dt) }).collect();
        let mut dot_body = vec![Stmt::Let {
            var: qd,
            value: lw.value_at(kb, q, &ops.operand_index(lw, q, self.batch(), i.clone(), Expr::Var(d)), fused)?,
        }];
        for (key, &t) in keys.iter().zip(&dots) {
            let kv = lw.value_at(kb, k, &ops.operand_index(lw, k, self.batch(), key.clone(), Expr::Var(d)), fused)?;
            let value = Expr::binary(BinaryOp::Add, Expr::Var(t), Expr::binary(BinaryOp::Mul, Expr::Var(qd), kv));
            dot_body.push(Stmt::Assign { var: t, value });
        }
        stmts.push(Stmt::Loop {
            var: d,
            extent: Expr::from_dim(&head[head.len() - 1]),
            kind: LoopKind::Serial,
            body: dot_body,
        });

        // Scores: scaled, then masked in order.
        let mut scores = Vec::new();
        let mut tile_max = Expr::Var(self.m);
        for (key, &t) in keys.iter().zip(&dots) {
            let s = ops.score(lw, kb, Expr::Var(t), self.batch(), i.clone(), key.clone(), fused)?;
            let sv = kb.var("s", elem);
            stmts.push(Stmt::Let { var: sv, value: s });
            tile_max = Expr::binary(BinaryOp::Max, tile_max, Expr::Var(sv));
            scores.push(sv);
        }
        let (mx, safe, c) = (kb.var("mx", elem), kb.var("ms", elem), kb.var("c", elem));
        let exp = |x: Expr| Expr::unary(UnaryOp::Exp, x);
        let sub = |a: Expr, b: Expr| Expr::binary(BinaryOp::Sub, a, b);
        let (mul, add) = (|a, b| Expr::binary(BinaryOp::Mul, a, b), |a, b| Expr::binary(BinaryOp::Add, a, b));
        stmts.push(Stmt::Let { var: mx, value: tile_max });
        // While every score so far is -inf (leading masked keys), exponentiate against 0
        // instead of -inf, whose difference with itself would be NaN: `c` and `p` are 0 then.
        let neg_inf = Expr::elem_const(f64::NEG_INFINITY, dt);
        let is_neg_inf = Expr::binary(BinaryOp::Eq, Expr::Var(mx), neg_inf);
        stmts.push(Stmt::Let { var: safe, value: Expr::select(is_neg_inf, Expr::elem_const(0.0, dt), Expr::Var(mx)) });
        stmts.push(Stmt::Let { var: c, value: exp(sub(Expr::Var(self.m), Expr::Var(safe))) });
        let mut sum = mul(Expr::Var(self.l), Expr::Var(c));
        let e = kb.index_var("e");
        let mut row = mul(Expr::load(self.out, self.at(Expr::Var(e))), Expr::Var(c));
        for (key, &sv) in keys.iter().zip(&scores) {
            let p = kb.var("p", elem);
            stmts.push(Stmt::Let { var: p, value: exp(sub(Expr::Var(sv), Expr::Var(safe))) });
            sum = add(sum, Expr::Var(p));
            let vv = lw.value_at(kb, v, &ops.operand_index(lw, v, self.batch(), key.clone(), Expr::Var(e)), fused)?;
            row = add(row, mul(Expr::Var(p), vv));
        }
        stmts.push(Stmt::Assign { var: self.l, value: sum });
        let width = Expr::from_dim(&ops.out_shape[ops.out_shape.len() - 1]);
        stmts.push(Stmt::Loop {
            var: e,
            extent: width,
            kind: LoopKind::Vector(4),
            body: vec![Stmt::Store { buf: self.out, index: self.at(Expr::Var(e)), value: row }],
        });
        stmts.push(Stmt::Assign { var: self.m, value: Expr::Var(mx) });
        Ok(stmts)
    }
}

/// The statements that compute row `row` (the output index without its last dimension) of
/// attention `v` into buffer `out`, or `None` when `v` is not an attention or its dtype is not
/// its own accumulator (f16 and bf16 are not fused).
pub(crate) fn attention_rows(
    lw: &GraphLowering,
    kb: &mut KernelBuilder,
    v: ValueId,
    out: u32,
    row: &[Expr],
    fused: &mut Vec<String>,
) -> Result<Option<Vec<Stmt>>, LowerError> {
    let Some(ops) = Operands::of(lw.graph(), v) else { return Ok(None) };
    let elem = ScalarType::Elem(ops.dt);
    let dt = ops.dt;
    let nest = RowNest { ops: &ops, out, row, m: kb.var("m", elem), l: kb.var("l", elem) };
    let sk = &lw.graph().ty(ops.inputs[1]).shape;
    let keys = Expr::from_dim(&sk[sk.len() - 2]);
    let tiles = Expr::div(keys.clone(), Expr::Int(KEY_TILE));
    let done = Expr::mul(tiles.clone(), Expr::Int(KEY_TILE));
    let (jt, jr, e0, e1) = (kb.index_var("jt"), kb.index_var("jr"), kb.index_var("e"), kb.index_var("e"));
    let tile_keys: Vec<Expr> =
        (0..KEY_TILE).map(|u| Expr::add(Expr::mul(Expr::Var(jt), Expr::Int(KEY_TILE)), Expr::Int(u))).collect();
    let full_tiles = nest.tile(lw, kb, &tile_keys, fused)?;
    let remainder = nest.tile(lw, kb, &[Expr::add(done.clone(), Expr::Var(jr))], fused)?;
    let zero_row = Stmt::Store { buf: out, index: nest.at(Expr::Var(e0)), value: Expr::elem_const(0.0, dt) };
    let normalize = Stmt::Store {
        buf: out,
        index: nest.at(Expr::Var(e1)),
        value: Expr::binary(BinaryOp::Div, Expr::load(out, nest.at(Expr::Var(e1))), Expr::Var(nest.l)),
    };
    let width = Expr::from_dim(&ops.out_shape[ops.out_shape.len() - 1]);
    Ok(Some(vec![
        Stmt::Decl { var: nest.m, init: Expr::elem_const(f64::NEG_INFINITY, dt) },
        Stmt::Decl { var: nest.l, init: Expr::elem_const(0.0, dt) },
        Stmt::Loop { var: e0, extent: width.clone(), kind: LoopKind::Vector(4), body: vec![zero_row] },
        Stmt::Loop { var: jt, extent: tiles, kind: LoopKind::Serial, body: full_tiles },
        Stmt::Loop { var: jr, extent: Expr::sub(keys, done), kind: LoopKind::Serial, body: remainder },
        Stmt::Loop { var: e1, extent: width, kind: LoopKind::Vector(4), body: vec![normalize] },
    ]))
}

/// `t` with its last two dims swapped (the type of `kᵀ`).
fn swap_last(t: &kiln_ir::TensorType) -> kiln_ir::TensorType {
    let mut t = t.clone();
    let r = t.shape.len();
    t.shape.swap(r - 2, r - 1);
    t
}
