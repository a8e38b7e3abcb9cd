//! Fused attention on GPUs: the attention kernel's [`GpuForm`], one block of [`BLOCK`]
//! threads per [`QUERY_TILE`] queries of one batch and head, with keys and values staged in
//! shared memory for all of them.
//!
//! The row kernel ([`super::attention`]) runs one query per thread, each reading every key and
//! value of its head from global memory. Here a block loads its queries once and then, per
//! tile of 32 keys (16 when a head dim exceeds 64), the tile's keys and values (consecutive
//! threads on consecutive elements), and its threads work on that tile together, `8` threads
//! per query, meeting at a barrier between the phases:
//!
//! 1. **scores**: thread `(r, part)` computes the dot products of query `r` with keys
//!    `part, part + 8, ...` of the tile from shared memory, scales and masks them, and
//!    stores them in the score tile;
//! 2. **softmax**: every thread of a query runs the row's running maximum over the tile's
//!    scores in key order, and computes the exponentials of its own keys (`p`) and the rescale
//!    factors (`c`) of the groups its keys start;
//! 3. **output**: thread `(r, part)` keeps columns `part, part + 8, ...` of the query's output
//!    in registers and accumulates `o = o·c + p₁v₁ + p₂v₂ + ...` group by group; every thread
//!    of the query keeps the query's running sum `l` the same way.
//!
//! Finally each thread stores its columns divided by `l`. Keys are grouped exactly as the row
//! kernel groups them (4 keys per online-softmax step, one at a time after the last multiple
//! of 4), and each value is computed by the same operations in the same order — dot products
//! over the head dim from `+0`, the running maximum key by key, `c = exp(m - m')`,
//! `p = exp(s - m')`, the sums left to right — so without FMA contraction the GPU form's
//! results equal the row kernel's (and the CPU's) bit for bit.
//!
//! Shared memory (f32): queries `32 × (d + 1)`, keys `K × (d + 1)`, values `K × dv`, and three
//! `32 × (K + 1)` tiles (scores, probabilities, rescale factors); the `+ 1` spreads the rows
//! that a warp reads at once over different banks. Made for f32 attention with constant head
//! dims of at most 128 whose tiles fit in 48 KiB (the static shared memory every target
//! allows); otherwise GPUs run the row kernel.

use super::attention::{Operands, KEY_TILE};
use super::builder::{delinearize, linearize, KernelBuilder};
use super::gpu_schedule::{GpuGrid, BLOCK};
use super::ir::{Access, BufferParam, Expr, GpuForm, Kernel, LoopKind, ScalarType, Stmt, VarId};
use super::lower::{GraphLowering, LowerError};
use kiln_ir::{BinaryOp, DType, Dim, UnaryOp, ValueId};

/// Queries per block.
pub const QUERY_TILE: i64 = 32;
/// Threads per query.
const SPREAD: i64 = BLOCK / QUERY_TILE;
/// Bytes of shared memory a block may use: the static limit of CUDA (and below AMD's LDS).
const SHARED_LIMIT: i64 = 48 * 1024;

/// The GPU form of attention `v`, whose row kernel `kb` has built (its buffers are the form's
/// arguments), or `None` when it has none (see the module docs).
pub(crate) fn block_form(
    lw: &GraphLowering,
    kb: &KernelBuilder,
    v: ValueId,
    out: u32,
) -> Result<Option<GpuForm>, LowerError> {
    let Some(ops) = Operands::of(lw.graph(), v) else { return Ok(None) };
    let (d, dv) = ops.head_dims(lw);
    let (Some(d), Some(dv)) = (d.as_const(), dv.as_const()) else { return Ok(None) };
    if ops.dt != DType::F32 || !(1..=128).contains(&d) || !(1..=128).contains(&dv) {
        return Ok(None);
    }
    let key_tile = if d.max(dv) <= 64 { 32 } else { 16 };
    let shape = Shape { d, dv, keys: key_tile };
    if 4 * shape.shared_elements() > SHARED_LIMIT {
        return Ok(None);
    }
    let mut b = Form { kb: kb.clone(), ops: &ops, shape, out, fused: Vec::new() };
    let body = b.blocks(lw)?;
    if b.kb.buffers != kb.buffers {
        // Reads the row kernel does not: the launch would not pass them.
        return Ok(None);
    }
    let mut buffers = b.kb.buffers;
    let shared = [
        ("q_tile", QUERY_TILE * (d + 1)),
        ("k_tile", key_tile * (d + 1)),
        ("v_tile", key_tile * dv),
        ("s_tile", QUERY_TILE * (key_tile + 1)),
        ("p_tile", QUERY_TILE * (key_tile + 1)),
        ("c_tile", QUERY_TILE * (key_tile + 1)),
    ];
    for (name, len) in shared {
        buffers.push(BufferParam {
            name: name.into(),
            dtype: DType::F32,
            access: Access::Shared,
            len: Dim::constant(len),
        });
    }
    let r = ops.out_shape.len();
    let kernel =
        Kernel { name: kb.name.clone(), buffers, vars: b.kb.vars, body: vec![body], fused: Vec::new(), gpu_form: None };
    let grid = GpuGrid::Tiles {
        rows_per_item: Dim::constant(1),
        batch_rows: Some(ops.out_shape[r - 2].clone()),
        row_tile: QUERY_TILE,
        columns: Dim::constant(1),
        column_tile: 1,
    };
    Ok(Some(GpuForm { kernel, grid }))
}

/// The head dims and the keys per tile.
#[derive(Clone, Copy)]
struct Shape {
    d: i64,
    dv: i64,
    keys: i64,
}

impl Shape {
    fn shared_elements(&self) -> i64 {
        QUERY_TILE * (self.d + 1) + self.keys * (self.d + 1 + self.dv) + 3 * QUERY_TILE * (self.keys + 1)
    }

    /// Output columns each thread keeps.
    fn columns_per_thread(&self) -> i64 {
        (self.dv + SPREAD - 1) / SPREAD
    }
}

/// Shared buffers, by their place after the kernel's own.
#[derive(Clone, Copy)]
struct Tiles {
    q: u32,
    k: u32,
    v: u32,
    s: u32,
    p: u32,
    c: u32,
}

/// The block-level values of one block and one key tile.
struct Place {
    /// The batch index (of the output's batch dims).
    batch: Vec<Expr>,
    /// The block's first query, and the key tile's first key.
    i0: VarId,
    j0: Option<VarId>,
    /// The tile's groups of `KEY_TILE` keys, and its online-softmax steps (groups, then
    /// single keys).
    groups: Option<VarId>,
    steps: Option<VarId>,
}

struct Form<'a> {
    kb: KernelBuilder,
    ops: &'a Operands<'a>,
    shape: Shape,
    out: u32,
    /// Names the value reads fuse (the row kernel lists them already).
    fused: Vec<String>,
}

fn int(v: i64) -> Expr {
    Expr::Int(v)
}

fn v(x: VarId) -> Expr {
    Expr::Var(x)
}

fn let_(var: VarId, value: Expr) -> Stmt {
    Stmt::Let { var, value }
}

fn serial(var: VarId, extent: Expr, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop { var, extent, kind: LoopKind::Serial, body }
}

fn lt(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryOp::Lt, a, b)
}

fn ceil_div(n: Expr, d: i64) -> Expr {
    Expr::div(Expr::add(n, int(d - 1)), int(d))
}

/// 1 when `cond` holds, else 0: the extent of a loop that runs its body only then.
fn once_if(cond: Expr) -> Expr {
    Expr::select(cond, int(1), int(0))
}

impl Form<'_> {
    fn index(&mut self, name: &str) -> VarId {
        self.kb.index_var(name)
    }

    fn elem(&mut self, name: &str) -> VarId {
        self.kb.var(name, ScalarType::Elem(DType::F32))
    }

    fn dims(&self) -> (Expr, Expr) {
        let s = &self.ops.scores;
        (Expr::from_dim(&s[s.len() - 2]), Expr::from_dim(&s[s.len() - 1]))
    }

    /// `for t in 0..BLOCK gpu-threads { let r = t / SPREAD; let part = t % SPREAD; body }`.
    fn threads(
        &mut self,
        body: impl FnOnce(&mut Self, VarId, VarId, VarId) -> Result<Vec<Stmt>, LowerError>,
    ) -> Result<Stmt, LowerError> {
        let (t, r, part) = (self.index("t"), self.index("r"), self.index("part"));
        let mut stmts = vec![let_(r, Expr::div(v(t), int(SPREAD))), let_(part, Expr::rem(v(t), int(SPREAD)))];
        stmts.extend(body(self, t, r, part)?);
        Ok(Stmt::Loop { var: t, extent: int(BLOCK), kind: LoopKind::GpuThreads, body: stmts })
    }

    /// Thread `t`'s share of copying `rows × cols` elements into shared buffer `tile` (row
    /// stride `stride`): element `x` is row `x / cols`, column `x % cols`, read by `value`.
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        t: VarId,
        rows: i64,
        cols: i64,
        tile: u32,
        stride: i64,
        value: &mut dyn FnMut(&mut Self, Expr, Expr) -> Result<Expr, LowerError>,
    ) -> Result<Stmt, LowerError> {
        let total = rows * cols;
        let (e, x, row, col, once) =
            (self.index("e"), self.index("x"), self.index("row"), self.index("col"), self.index("once"));
        let read = value(self, v(row), v(col))?;
        let store = Stmt::Store { buf: tile, index: Expr::add(Expr::mul(v(row), int(stride)), v(col)), value: read };
        let mut body = vec![let_(x, Expr::add(v(t), Expr::mul(v(e), int(BLOCK))))];
        let element = vec![let_(row, Expr::div(v(x), int(cols))), let_(col, Expr::rem(v(x), int(cols))), store];
        if total % BLOCK == 0 {
            body.extend(element);
        } else {
            body.push(serial(once, once_if(lt(v(x), int(total))), element));
        }
        Ok(serial(e, int((total + BLOCK - 1) / BLOCK), body))
    }

    /// The `GpuBlocks` loop.
    fn blocks(&mut self, lw: &GraphLowering) -> Result<Stmt, LowerError> {
        let sh = self.shape;
        let (m, n) = (self.dims().0, self.dims().1);
        let r = self.ops.out_shape.len();
        let batch_dims = self.ops.out_shape[..r - 2].to_vec();
        let n_buffers = self.kb.buffers.len() as u32;
        let tiles = Tiles {
            q: n_buffers,
            k: n_buffers + 1,
            v: n_buffers + 2,
            s: n_buffers + 3,
            p: n_buffers + 4,
            c: n_buffers + 5,
        };
        let (blk, bt, qt, i0) = (self.index("blk"), self.index("bt"), self.index("qt"), self.index("i0"));
        let query_tiles = ceil_div(m.clone(), QUERY_TILE);
        let mut body = vec![
            let_(bt, Expr::div(v(blk), query_tiles.clone())),
            let_(qt, Expr::rem(v(blk), query_tiles.clone())),
            let_(i0, Expr::mul(v(qt), int(QUERY_TILE))),
        ];
        let batch = if batch_dims.is_empty() { Vec::new() } else { delinearize(v(bt), &batch_dims) };
        let mut place = Place { batch, i0, j0: None, groups: None, steps: None };
        let last = |e: &Expr| Expr::sub(e.clone(), int(1));
        // The block's queries (rows past the last query read the last one; never stored).
        let (q, k, vv) = (self.ops.inputs[0], self.ops.inputs[1], self.ops.inputs[2]);
        let load_q = self.threads(|f, t, _, _| {
            let mut read = |f: &mut Self, row: Expr, col: Expr| {
                let i = Expr::min(Expr::add(v(i0), row), last(&m));
                let idx = f.ops.operand_index(lw, q, &place.batch, i, col);
                lw.value_at(&mut f.kb, q, &idx, &mut f.fused)
            };
            Ok(vec![f.copy(t, QUERY_TILE, sh.d, tiles.q, sh.d + 1, &mut read)?])
        })?;
        body.push(load_q);
        // Each thread's running maximum and sum of its query, and its output columns.
        let (mx, l) = (self.elem("m"), self.elem("l"));
        let o: Vec<VarId> = (0..sh.columns_per_thread()).map(|_| self.elem("o")).collect();
        let init = self.threads(|_, _, _, _| {
            let mut s = vec![
                Stmt::Decl { var: mx, init: Expr::elem_const(f64::NEG_INFINITY, DType::F32) },
                Stmt::Decl { var: l, init: Expr::elem_const(0.0, DType::F32) },
            ];
            s.extend(o.iter().map(|&x| Stmt::Decl { var: x, init: Expr::elem_const(0.0, DType::F32) }));
            Ok(s)
        })?;
        body.push(init);

        // The key tiles.
        let (kt, j0, len, groups, steps) =
            (self.index("kt"), self.index("j0"), self.index("len"), self.index("groups"), self.index("steps"));
        let group_tiles = sh.keys / KEY_TILE;
        let mut tile = vec![
            let_(j0, Expr::mul(v(kt), int(sh.keys))),
            let_(len, Expr::min(int(sh.keys), Expr::sub(n.clone(), v(j0)))),
            let_(
                groups,
                Expr::min(
                    int(group_tiles),
                    Expr::sub(Expr::div(n.clone(), int(KEY_TILE)), Expr::mul(v(kt), int(group_tiles))),
                ),
            ),
            let_(steps, Expr::sub(v(len), Expr::mul(v(groups), int(KEY_TILE - 1)))),
        ];
        place.j0 = Some(j0);
        place.groups = Some(groups);
        place.steps = Some(steps);
        let load_kv = self.threads(|f, t, _, _| {
            let key_at = |row: Expr| Expr::min(Expr::add(v(j0), row), last(&n));
            let mut read_k = |f: &mut Self, row: Expr, col: Expr| {
                let idx = f.ops.operand_index(lw, k, &place.batch, key_at(row), col);
                lw.value_at(&mut f.kb, k, &idx, &mut f.fused)
            };
            let load_k = f.copy(t, sh.keys, sh.d, tiles.k, sh.d + 1, &mut read_k)?;
            let mut read_v = |f: &mut Self, row: Expr, col: Expr| {
                let idx = f.ops.operand_index(lw, vv, &place.batch, key_at(row), col);
                lw.value_at(&mut f.kb, vv, &idx, &mut f.fused)
            };
            let load_v = f.copy(t, sh.keys, sh.dv, tiles.v, sh.dv, &mut read_v)?;
            Ok(vec![load_k, load_v])
        })?;
        tile.push(load_kv);
        tile.push(Stmt::Barrier);
        let scores = self.threads(|f, _, r, part| f.scores(lw, &place, tiles, r, part))?;
        tile.extend([scores, Stmt::Barrier]);
        let softmax = self.threads(|f, _, r, part| Ok(f.softmax(&place, tiles, mx, r, part)))?;
        tile.extend([softmax, Stmt::Barrier]);
        let accumulate = self.threads(|f, _, r, part| Ok(f.accumulate(&place, tiles, l, &o, r, part)))?;
        tile.extend([accumulate, Stmt::Barrier]);
        body.push(serial(kt, ceil_div(n.clone(), sh.keys), tile));

        // The output: each thread's columns of its query, divided by the sum.
        let out = self.out;
        let store = self.threads(|f, _, r, part| {
            let i = f.index("i");
            let mut s = vec![let_(i, Expr::add(v(i0), v(r)))];
            for (j, &x) in o.iter().enumerate() {
                let (col, once) = (f.index("col"), f.index("once"));
                let mut idx = place.batch.clone();
                idx.extend([v(i), v(col)]);
                let value = Expr::binary(BinaryOp::Div, v(x), v(l));
                let store = Stmt::Store { buf: out, index: linearize(&idx, &f.ops.out_shape), value };
                s.push(let_(col, Expr::add(v(part), int(SPREAD * j as i64))));
                s.push(serial(
                    once,
                    once_if(Expr::binary(BinaryOp::And, lt(v(i), m.clone()), lt(v(col), int(sh.dv)))),
                    vec![store],
                ));
            }
            Ok(s)
        })?;
        body.push(store);
        let batches = Expr::from_dim(&Dim::product(&batch_dims));
        Ok(Stmt::Loop { var: blk, extent: Expr::mul(batches, query_tiles), kind: LoopKind::GpuBlocks, body })
    }

    /// Phase 1: the scores of query `r` and keys `part + SPREAD u` of the tile.
    fn scores(
        &mut self,
        lw: &GraphLowering,
        at: &Place,
        tiles: Tiles,
        r: VarId,
        part: VarId,
    ) -> Result<Vec<Stmt>, LowerError> {
        let sh = self.shape;
        let (m, n) = self.dims();
        let j0 = at.j0.expect("inside a key tile");
        let per_thread = sh.keys / SPREAD;
        let (i, d, qd) = (self.index("i"), self.index("d"), self.elem("q"));
        let dots: Vec<VarId> = (0..per_thread).map(|_| self.elem("dot")).collect();
        let local = |u: usize| Expr::add(v(part), int(SPREAD * u as i64));
        let mut s = vec![let_(i, Expr::min(Expr::add(v(at.i0), v(r)), Expr::sub(m, int(1))))];
        s.extend(dots.iter().map(|&t| Stmt::Decl { var: t, init: Expr::elem_const(0.0, DType::F32) }));
        let mut step = vec![let_(qd, Expr::load(tiles.q, Expr::add(Expr::mul(v(r), int(sh.d + 1)), v(d))))];
        for (u, &t) in dots.iter().enumerate() {
            let kv = Expr::load(tiles.k, Expr::add(Expr::mul(local(u), int(sh.d + 1)), v(d)));
            let value = Expr::binary(BinaryOp::Add, v(t), Expr::binary(BinaryOp::Mul, v(qd), kv));
            step.push(Stmt::Assign { var: t, value });
        }
        s.push(serial(d, int(sh.d), step));
        for (u, &t) in dots.iter().enumerate() {
            let key = Expr::min(Expr::add(v(j0), local(u)), Expr::sub(n.clone(), int(1)));
            let score = self.ops.score(lw, &mut self.kb, v(t), &at.batch, v(i), key, &mut self.fused)?;
            s.push(Stmt::Store {
                buf: tiles.s,
                index: Expr::add(Expr::mul(v(r), int(sh.keys + 1)), local(u)),
                value: score,
            });
        }
        Ok(s)
    }

    /// `let`s of online-softmax step `step`'s first key in the tile and its keys (a group of
    /// `KEY_TILE`, or one key after the tile's groups).
    fn step_keys(&mut self, at: &Place, step: VarId) -> (VarId, VarId, Vec<Stmt>) {
        let groups = at.groups.expect("inside a key tile");
        let (first, len) = (self.index("first"), self.index("len"));
        let done = |s: Expr| Expr::min(s, v(groups));
        let lets = vec![
            let_(first, Expr::add(v(step), Expr::mul(int(KEY_TILE - 1), done(v(step))))),
            let_(
                len,
                Expr::add(
                    int(1),
                    Expr::mul(int(KEY_TILE - 1), Expr::sub(done(Expr::add(v(step), int(1))), done(v(step)))),
                ),
            ),
        ];
        (first, len, lets)
    }

    /// Phase 2: the running maximum of query `r` over the tile, step by step, the rescale
    /// factor of each step that starts among this thread's keys, and the exponentials of its
    /// keys.
    fn softmax(&mut self, at: &Place, tiles: Tiles, mx: VarId, r: VarId, part: VarId) -> Vec<Stmt> {
        let sh = self.shape;
        let per_thread = sh.keys / SPREAD;
        let f32 = |x: f64| Expr::elem_const(x, DType::F32);
        let (own_lo, own_hi, step, u, once, u2) = (
            self.index("lo"),
            self.index("hi"),
            self.index("step"),
            self.index("u"),
            self.index("once"),
            self.index("u"),
        );
        let (running, prev, safe) = (self.elem("run"), self.elem("prev"), self.elem("ms"));
        let (lo, hi) = (self.index("a"), self.index("b"));
        let row = |e: Expr| Expr::add(Expr::mul(v(r), int(sh.keys + 1)), e);
        let (first, len, mut per_step) = self.step_keys(at, step);
        per_step.push(let_(prev, v(running)));
        let max = Expr::binary(BinaryOp::Max, v(running), Expr::load(tiles.s, row(Expr::add(v(first), v(u)))));
        per_step.push(serial(u, v(len), vec![Stmt::Assign { var: running, value: max }]));
        // While every score so far is -inf, exponentiate against 0 (as the row kernel does).
        let is_neg_inf = Expr::binary(BinaryOp::Eq, v(running), f32(f64::NEG_INFINITY));
        per_step.push(let_(safe, Expr::select(is_neg_inf, f32(0.0), v(running))));
        let exp_minus = |a: Expr| Expr::unary(UnaryOp::Exp, Expr::binary(BinaryOp::Sub, a, v(safe)));
        let starts_here =
            Expr::binary(BinaryOp::And, Expr::binary(BinaryOp::Le, v(own_lo), v(first)), lt(v(first), v(own_hi)));
        let rescale = Stmt::Store { buf: tiles.c, index: row(v(step)), value: exp_minus(v(prev)) };
        per_step.push(serial(once, once_if(starts_here), vec![rescale]));
        // This thread's keys of the step: [max(first, lo), min(first + len, hi)).
        per_step.push(let_(lo, Expr::max(v(first), v(own_lo))));
        per_step.push(let_(hi, Expr::min(Expr::add(v(first), v(len)), v(own_hi))));
        let key = Expr::add(v(lo), v(u2));
        let p = Stmt::Store { buf: tiles.p, index: row(key.clone()), value: exp_minus(Expr::load(tiles.s, row(key))) };
        per_step.push(serial(u2, Expr::max(Expr::sub(v(hi), v(lo)), int(0)), vec![p]));
        vec![
            let_(own_lo, Expr::mul(v(part), int(per_thread))),
            let_(own_hi, Expr::add(v(own_lo), int(per_thread))),
            Stmt::Decl { var: running, init: v(mx) },
            serial(step, v(at.steps.expect("inside a key tile")), per_step),
            Stmt::Assign { var: mx, value: v(running) },
        ]
    }

    /// Phase 3: step by step, rescale the sum and this thread's output columns, then add the
    /// step's probabilities and their values, in key order.
    fn accumulate(&mut self, at: &Place, tiles: Tiles, l: VarId, o: &[VarId], r: VarId, part: VarId) -> Vec<Stmt> {
        let sh = self.shape;
        let (step, u) = (self.index("step"), self.index("u"));
        let (c, p) = (self.elem("c"), self.elem("p"));
        let row = |e: Expr| Expr::add(Expr::mul(v(r), int(sh.keys + 1)), e);
        let mul = |a: Expr, b: Expr| Expr::binary(BinaryOp::Mul, a, b);
        let add = |a: Expr, b: Expr| Expr::binary(BinaryOp::Add, a, b);
        let (first, len, mut per_step) = self.step_keys(at, step);
        per_step.push(let_(c, Expr::load(tiles.c, row(v(step)))));
        per_step.push(Stmt::Assign { var: l, value: mul(v(l), v(c)) });
        per_step.extend(o.iter().map(|&x| Stmt::Assign { var: x, value: mul(v(x), v(c)) }));
        let key = Expr::add(v(first), v(u));
        let mut per_key =
            vec![let_(p, Expr::load(tiles.p, row(key.clone()))), Stmt::Assign { var: l, value: add(v(l), v(p)) }];
        for (j, &x) in o.iter().enumerate() {
            // Columns past the value dim (when 8 does not divide it) read the last; never stored.
            let col = Expr::min(Expr::add(v(part), int(SPREAD * j as i64)), int(sh.dv - 1));
            let value = Expr::load(tiles.v, Expr::add(Expr::mul(key.clone(), int(sh.dv)), col));
            per_key.push(Stmt::Assign { var: x, value: add(v(x), mul(v(p), value)) });
        }
        per_step.push(serial(u, v(len), per_key));
        vec![serial(step, v(at.steps.expect("inside a key tile")), per_step)]
    }
}
