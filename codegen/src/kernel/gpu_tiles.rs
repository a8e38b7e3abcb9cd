//! Matrix products on GPUs in shared-memory tiles.
//!
//! [`tile_matmul`] rewrites a matmul row kernel (as kiln lowers `x @ W` and everything fused
//! after it: zero the output row, accumulate `out[r, j] += A(r, k) * B(k, j)` over `k`, then
//! an epilogue per element) into one block of [`BLOCK`] threads per tile of the output
//! ([`SMALL`]: 64 × 64, or [`LARGE`]: 128 × 128 when the matrix has at least 128 rows and
//! columns). For each panel of 16 steps along `k` the block's threads load the `A` and `B`
//! panels into shared memory together (consecutive threads on consecutive elements of each
//! panel), wait at a barrier, and each thread accumulates its 4 × 4 (or 8 × 8) elements from
//! shared memory (rows `ty + 16 i`, columns `tx + 16 j`), in registers; after the last step each thread stores its elements and runs the epilogue
//! for each. A panel element outside the matrix (the last tiles) is 0, read from clamped
//! indices, so nothing is read out of bounds.
//!
//! Each output element still sums its products in the order of `k`, starting from `+0`, as
//! the CPU code does (the padding adds `+0`, which changes no sum that starts at `+0`), so
//! without FMA contraction the tiled kernel's results equal the CPU's bit for bit.
//!
//! `A(r, k)` and `B(k, j)` are the two factors of the update, told apart by what they read:
//! one must not depend on the column, the other not on the row. Applies to `f32` outputs,
//! `k` and column extents free of variables, and at least 16 rows (a matrix–vector product
//! keeps one thread per element); the caller checks that the kernel's elements are
//! independent ([`super::gpu_schedule::fuse_columns`]).

use super::gpu_schedule::{dim_of, GpuGrid, Scheduled, BLOCK};
use super::ir::{Access, BufferParam, Expr, Kernel, LoopKind, ScalarType, Stmt, VarId};
use kiln_ir::{BinaryOp, DType, Dim};
use std::collections::{BTreeMap, BTreeSet};

/// The shape of a tile and of each thread's share of it. Both shapes run 256 threads as a
/// 16 × 16 grid: thread `(ty, tx)` computes rows `ty + 16 i` and columns `tx + 16 j` of its
/// tile for `i, j < micro`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileShape {
    /// Output rows and columns per tile (one block).
    pub rows: i64,
    pub cols: i64,
    /// Steps of the reduction per shared-memory panel.
    pub k: i64,
    /// Each thread computes `micro × micro` elements.
    pub micro: i64,
}

/// 64 × 64 tiles, 4 × 4 elements per thread: for matrices of fewer than 128 rows or columns.
pub const SMALL: TileShape = TileShape { rows: 64, cols: 64, k: 16, micro: 4 };
/// 128 × 128 tiles, 8 × 8 elements per thread (twice the multiply-adds per shared-memory
/// load of `SMALL`).
pub const LARGE: TileShape = TileShape { rows: 128, cols: 128, k: 16, micro: 8 };

/// Threads along a tile's rows and columns.
const SPREAD: i64 = 16;

impl TileShape {
    /// The A panel's leading dimension in shared memory: a tile's rows plus one, so that the
    /// 16 consecutive steps a group of threads stores for one row fall in 16 different banks.
    pub fn a_stride(&self) -> i64 {
        self.rows + 1
    }

    /// Bytes of shared memory a block uses (the A and B panels, f32).
    pub fn shared_bytes(&self) -> i64 {
        4 * self.k * (self.a_stride() + self.cols)
    }
}

/// The pieces of a matrix-product kernel ([`tile_matmul`]): per row `g` (of `rows`, in
/// batches of `batch_rows` rows whose `B` factor is the same), zero the output elements of the
/// nest over `dims` (the columns, row-major), accumulate `out += a * b` over the nest of
/// `k_levels`, then the epilogue. A matmul row has one column dimension and one `k` level; a
/// convolution's output plane has two (height and width) and three (input channels, kernel
/// rows, kernel columns), and its `B` (the input) depends on the row's batch `n`.
struct Gemm<'a> {
    row: VarId,
    rows: &'a Expr,
    /// Rows per batch: `None` when `b` depends on no part of the row (one batch).
    batch_rows: Option<Expr>,
    /// `let`s of the row before the zeroing (its coordinates).
    prefix: &'a [Stmt],
    out: u32,
    dims: Vec<&'a Expr>,
    zero_vars: Vec<VarId>,
    out_index: &'a Expr,
    k_levels: Vec<(VarId, &'a Expr)>,
    /// `let`s of the `k` levels, outer first (operands of the update).
    k_lets: Vec<&'a Stmt>,
    col_vars: Vec<VarId>,
    a: &'a Expr,
    b: &'a Expr,
    epilogue: &'a [Stmt],
}

impl Gemm<'_> {
    fn columns(&self) -> Expr {
        self.dims.iter().fold(int(1), |acc, d| Expr::mul(acc, (*d).clone()))
    }

    fn k_total(&self) -> Expr {
        self.k_levels.iter().fold(int(1), |acc, (_, e)| Expr::mul(acc, (*e).clone()))
    }

    fn per_batch(&self) -> Expr {
        self.batch_rows.clone().unwrap_or_else(|| self.rows.clone())
    }
}

/// The kernel in shared-memory tiles (see the module docs), or `None` when it is not a
/// matrix-product kernel of the supported form. `flat` has one parallel loop over all rows
/// (`rows_per_item` per item of the plan's launch range).
pub fn tile_matmul(flat: &Kernel, rows_per_item: &Dim) -> Option<Scheduled> {
    let m = parse(flat)?;
    let vars_free = |e: &Expr| !uses_vars(e);
    if !vars_free(m.rows) || m.dims.iter().any(|d| !vars_free(d)) || m.k_levels.iter().any(|(_, e)| !vars_free(e)) {
        return None;
    }
    if flat.buffers.iter().any(|b| b.access == Access::Shared) || flat.buffers[m.out as usize].dtype != DType::F32 {
        return None;
    }
    let per_batch = dim_of(&m.per_batch())?;
    if let Some(b) = &m.batch_rows {
        // Whole batches: the rows are `batches * b`.
        dim_of(m.rows)?.div_exact(&dim_of(b)?)?;
    }
    if per_batch.as_const().is_some_and(|r| r < 16) {
        return None;
    }
    let columns = dim_of(&m.columns())?;
    let big = |n: Option<i64>| n.is_none_or(|n| n >= LARGE.rows);
    let shape = if big(per_batch.as_const()) && big(columns.as_const()) { LARGE } else { SMALL };
    let mut b = Builder { vars: flat.vars.clone(), buffers: flat.buffers.clone(), shape };
    let body = b.tiled(&m);
    let kernel = b.finish(flat, body);
    let grid = GpuGrid::Tiles {
        rows_per_item: rows_per_item.clone(),
        batch_rows: m.batch_rows.as_ref().and_then(dim_of),
        row_tile: shape.rows,
        columns,
        column_tile: shape.cols,
    };
    Some(Scheduled { kernel, grid })
}

/// A kernel that computes each output element as one dot product — `var acc = 0; for k
/// { acc += X * Y }` inside the loop over the row's columns, then `let`s and one store of the
/// element (as kiln lowers `x @ Wᵀ` when `W` is stored `n × k`, e.g. a language model's head
/// tied to its embedding) — rewritten into the row form [`tile_matmul`] takes: zero the row's
/// elements in the output, accumulate `out += X * Y` over `k` for every column, then per
/// column `var acc = out[...]` and the original statements. The same values in the same
/// order; `None` when the kernel is not of that form (a `let` of the `k` loop that reads the
/// column, a statement that reads the output, more than one store).
pub fn rows_of_dot_products(k: &Kernel) -> Option<Kernel> {
    let [Stmt::Loop { var: top, extent: top_extent, kind: LoopKind::Parallel, body }] = k.body.as_slice() else {
        return None;
    };
    let mut vars = k.vars.clone();
    let new_body = rewrite_dot_level(body, &mut vars, &k.buffers, 0)?;
    Some(Kernel {
        name: k.name.clone(),
        buffers: k.buffers.clone(),
        vars,
        body: vec![Stmt::Loop { var: *top, extent: top_extent.clone(), kind: LoopKind::Parallel, body: new_body }],
        fused: k.fused.clone(),
        gpu_form: None,
    })
}

/// `body` (a row level of the nest) with its column loop rewritten (see
/// [`rows_of_dot_products`]); descends through levels that hold one loop.
fn rewrite_dot_level(
    body: &[Stmt],
    vars: &mut Vec<(String, ScalarType)>,
    buffers: &[BufferParam],
    depth: usize,
) -> Option<Vec<Stmt>> {
    let [Stmt::Loop { var: col, extent: cols, kind: col_kind @ (LoopKind::Serial | LoopKind::Vector(_)), body: cb }] =
        body
    else {
        return None;
    };
    let Some((Stmt::Decl { var: acc, init: Expr::Const(z, DType::F32) }, after)) = cb.split_first() else {
        // Not the column loop yet: a row level.
        if depth >= 4 {
            return None;
        }
        let inner = rewrite_dot_level(cb, vars, buffers, depth + 1)?;
        return Some(vec![Stmt::Loop { var: *col, extent: cols.clone(), kind: *col_kind, body: inner }]);
    };
    if *z != 0.0 || z.is_sign_negative() {
        return None;
    }
    let [Stmt::Loop { var: kv, extent: k_extent, kind: LoopKind::Serial, body: kb }, rest @ ..] = after else {
        return None;
    };
    let (k_lets, x, y) = dot_update(kb, *acc)?;
    let col_set = BTreeSet::from([*col]);
    let acc_set = BTreeSet::from([*acc]);
    if k_lets
        .iter()
        .any(|s| !matches!(s, Stmt::Let { value, .. } if !uses_any(value, &col_set) && !uses_any(value, &acc_set)))
        || uses_any(x, &acc_set)
        || uses_any(y, &acc_set)
    {
        return None;
    }
    // The element's one store, of a buffer nothing in the element reads.
    let stores: Vec<(u32, &Expr)> = rest
        .iter()
        .filter_map(|s| match s {
            Stmt::Store { buf, index, .. } => Some((*buf, index)),
            _ => None,
        })
        .collect();
    let [(out, index)] = stores.as_slice() else { return None };
    let reads_out = |e: &Expr| {
        let mut found = false;
        e.visit(&mut |x| found |= matches!(x, Expr::Load { buf, .. } if buf == out));
        found
    };
    let element_reads_out = rest.iter().any(|s| match s {
        Stmt::Let { value, .. } => reads_out(value),
        Stmt::Store { index, value, .. } => reads_out(index) || reads_out(value),
        _ => true,
    });
    if element_reads_out || reads_out(x) || reads_out(y) || buffers[*out as usize].dtype != DType::F32 {
        return None;
    }
    let fresh = |vars: &mut Vec<(String, ScalarType)>, name: &str| {
        let id = VarId(vars.len() as u32);
        vars.push((format!("{name}{}", id.0), ScalarType::Index));
        id
    };
    let (zero_col, update_col) = (fresh(vars, "jz"), fresh(vars, "ju"));
    let at = |c: VarId| rename(index, *col, c);
    // The column loops are vector loops: that marks a row's tile nests (a hint otherwise;
    // only GPU code is made from this form).
    let zero = Stmt::Loop {
        var: zero_col,
        extent: cols.clone(),
        kind: LoopKind::Vector(4),
        body: vec![Stmt::Store { buf: *out, index: at(zero_col), value: Expr::Const(0.0, DType::F32) }],
    };
    let renamed = |e: &Expr| rename(e, *col, update_col);
    let accumulate = Stmt::Store {
        buf: *out,
        index: at(update_col),
        value: Expr::binary(
            BinaryOp::Add,
            Expr::load(*out, at(update_col)),
            Expr::binary(BinaryOp::Mul, renamed(x), renamed(y)),
        ),
    };
    let mut k_body: Vec<Stmt> = k_lets.to_vec();
    k_body.push(Stmt::Loop {
        var: update_col,
        extent: cols.clone(),
        kind: LoopKind::Vector(4),
        body: vec![accumulate],
    });
    let k_loop = Stmt::Loop { var: *kv, extent: k_extent.clone(), kind: LoopKind::Serial, body: k_body };
    let mut element = vec![Stmt::Decl { var: *acc, init: Expr::load(*out, (*index).clone()) }];
    element.extend(rest.iter().cloned());
    let finish = Stmt::Loop { var: *col, extent: cols.clone(), kind: LoopKind::Vector(4), body: element };
    Some(vec![zero, k_loop, finish])
}

/// The body of a dot product's `k` loop — `let`s, then `acc = acc + x * y` — as its `let`s
/// and the two factors.
pub(super) fn dot_update(body: &[Stmt], acc: VarId) -> Option<(&[Stmt], &Expr, &Expr)> {
    let (update, lets) = body.split_last()?;
    let Stmt::Assign { var: target, value: Expr::Binary(BinaryOp::Add, sum, product) } = update else { return None };
    let Expr::Binary(BinaryOp::Mul, x, y) = &**product else { return None };
    (*target == acc && **sum == Expr::Var(acc)).then_some((lets, &**x, &**y))
}

/// The levels of the perfect nest of `depth` serial or vector loops at `s` (each level's
/// body the next loop alone), and the innermost body.
pub(super) fn nest(s: &Stmt, depth: usize) -> Option<(Vec<(VarId, &Expr)>, &[Stmt])> {
    let mut levels = Vec::new();
    let mut at = s;
    loop {
        let Stmt::Loop { var, extent, kind: LoopKind::Serial | LoopKind::Vector(_), body } = at else { return None };
        levels.push((*var, extent));
        if levels.len() == depth {
            return Some((levels, body));
        }
        let [inner] = body.as_slice() else { return None };
        at = inner;
    }
}

/// The depth of the perfect nest at `s` whose innermost body is not a single loop.
pub(super) fn nest_depth(s: &Stmt) -> usize {
    match s {
        Stmt::Loop { body, .. } => match body.as_slice() {
            [inner @ Stmt::Loop { .. }] => 1 + nest_depth(inner),
            _ => 1,
        },
        _ => 0,
    }
}

/// What a row-side variable depends on: the row's batch (`g / batch_rows`) or other parts.
#[derive(Clone, Copy, Default)]
struct RowDeps {
    batch: bool,
    other: bool,
}

/// Recognizes a matrix product in `flat`'s parallel loop.
fn parse(flat: &Kernel) -> Option<Gemm<'_>> {
    let [Stmt::Loop { var: row, extent: rows, kind: LoopKind::Parallel, body }] = flat.body.as_slice() else {
        return None;
    };
    let lets = body.iter().take_while(|s| matches!(s, Stmt::Let { .. })).count();
    let (prefix, rest) = body.split_at(lets);
    let [zero, k_loop, epilogue @ ..] = rest else { return None };
    // Zero the output elements of the row.
    let depth = nest_depth(zero);
    if !(1..=3).contains(&depth) {
        return None;
    }
    let (zero_levels, zb) = nest(zero, depth)?;
    let [Stmt::Store { buf: out, index: out_index, value: Expr::Const(z, DType::F32) }] = zb else { return None };
    if *z != 0.0 || z.is_sign_negative() {
        return None;
    }
    let dims: Vec<&Expr> = zero_levels.iter().map(|(_, e)| *e).collect();
    let zero_vars: Vec<VarId> = zero_levels.iter().map(|(v, _)| *v).collect();
    // The `k` levels, each `let`s then the next level, down to the update nest over `dims`.
    let (mut k_levels, mut k_lets) = (Vec::new(), Vec::new());
    let mut at = k_loop;
    let (col_vars, update) = loop {
        let Stmt::Loop { var, extent, kind: LoopKind::Serial, body: kb } = at else { return None };
        k_levels.push((*var, extent));
        let (last, lets) = kb.split_last()?;
        if !lets.iter().all(|s| matches!(s, Stmt::Let { .. })) || k_levels.len() > 4 {
            return None;
        }
        k_lets.extend(lets);
        if let Some((levels, [update])) = nest(last, depth) {
            if levels.iter().map(|(_, e)| *e).eq(dims.iter().copied()) {
                break (levels.iter().map(|(v, _)| *v).collect::<Vec<_>>(), update);
            }
        }
        at = last;
    };
    let Stmt::Store { buf: out2, index: update_index, value: Expr::Binary(BinaryOp::Add, acc, product) } = update
    else {
        return None;
    };
    let renamed = zero_vars.iter().zip(&col_vars).fold(out_index.clone(), |e, (z, c)| rename(&e, *z, *c));
    if out2 != out || *update_index != renamed {
        return None;
    }
    let Expr::Load { buf: acc_buf, index: acc_index } = &**acc else { return None };
    if acc_buf != out || **acc_index != *update_index {
        return None;
    }
    let Expr::Binary(BinaryOp::Mul, x, y) = &**product else { return None };
    // What each row-side variable depends on; `g / M` is the batch (one `M` for all).
    let mut deps: BTreeMap<VarId, RowDeps> = BTreeMap::from([(*row, RowDeps { batch: false, other: true })]);
    let mut batch_rows: Option<&Expr> = None;
    let expr_deps = |e: &Expr, deps: &BTreeMap<VarId, RowDeps>| {
        let mut d = RowDeps::default();
        e.visit(&mut |x| {
            if let Expr::Var(v) = x {
                if let Some(vd) = deps.get(v) {
                    d.batch |= vd.batch;
                    d.other |= vd.other;
                }
            }
        });
        d
    };
    for s in prefix.iter().chain(k_lets.iter().copied()) {
        let Stmt::Let { var, value } = s else { continue };
        let d = match value {
            Expr::Binary(BinaryOp::FloorDiv, g, m) if **g == Expr::Var(*row) && !uses_vars(m) => {
                if batch_rows.is_some_and(|b| b != &**m) {
                    return None;
                }
                batch_rows = Some(m);
                RowDeps { batch: true, other: false }
            }
            _ => expr_deps(value, &deps),
        };
        deps.insert(*var, d);
    }
    let cols = col_vars.iter().copied().collect::<BTreeSet<_>>();
    let reads_out = |e: &Expr| {
        let mut found = false;
        e.visit(&mut |x| found |= matches!(x, Expr::Load { buf, .. } if buf == out));
        found
    };
    // A: no column; B: no part of the row but its batch.
    let fits = |a: &Expr, b: &Expr| !uses_any(a, &cols) && !expr_deps(b, &deps).other;
    let (a, b) = if fits(x, y) {
        (&**x, &**y)
    } else if fits(y, x) {
        (&**y, &**x)
    } else {
        return None;
    };
    let k_reads_out = k_lets.iter().any(|s| matches!(s, Stmt::Let { value, .. } if reads_out(value)));
    if reads_out(a) || reads_out(b) || k_reads_out {
        return None;
    }
    let batch_rows = if expr_deps(b, &deps).batch { Some(batch_rows?.clone()) } else { None };
    // The epilogue: `let`s, and nests over the columns.
    for s in epilogue {
        match s {
            Stmt::Let { .. } => {}
            s => {
                let (levels, _) = nest(s, depth)?;
                if !levels.iter().map(|(_, e)| *e).eq(dims.iter().copied()) {
                    return None;
                }
            }
        }
    }
    Some(Gemm {
        row: *row,
        rows,
        batch_rows,
        prefix,
        out: *out,
        dims,
        zero_vars,
        out_index,
        k_levels,
        k_lets,
        col_vars,
        a,
        b,
        epilogue,
    })
}

/// Adds variables and shared buffers to the kernel being built.
pub(super) struct Builder {
    pub(super) vars: Vec<(String, ScalarType)>,
    pub(super) buffers: Vec<BufferParam>,
    pub(super) shape: TileShape,
}

pub(super) fn int(v: i64) -> Expr {
    Expr::Int(v)
}

pub(super) fn v(x: VarId) -> Expr {
    Expr::Var(x)
}

pub(super) fn lt(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryOp::Lt, a, b)
}

pub(super) fn and(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryOp::And, a, b)
}

pub(super) fn let_(var: VarId, value: Expr) -> Stmt {
    Stmt::Let { var, value }
}

pub(super) fn serial(var: VarId, extent: Expr, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop { var, extent, kind: LoopKind::Serial, body }
}

/// `ceil(n / d)` of non-negative indices.
pub(super) fn tiles(n: &Expr, d: i64) -> Expr {
    Expr::div(Expr::add(n.clone(), int(d - 1)), int(d))
}

impl Builder {
    pub(super) fn var(&mut self, prefix: &str, t: ScalarType) -> VarId {
        let id = VarId(self.vars.len() as u32);
        self.vars.push((format!("{prefix}{}", id.0), t));
        id
    }

    /// The block's place for tiles of `rows × cols` of matrices of `per_batch` rows and
    /// `columns` columns, one matrix after the other (tiles in row-major order): the block
    /// variable, the tiles per matrix, the variables of the matrix's first row (`base`) and
    /// of the tile's first row and column in it, and the `let`s that bind them.
    pub(super) fn tile_place(
        &mut self,
        per_batch: &Expr,
        columns: &Expr,
        rows: i64,
        cols: i64,
    ) -> (VarId, Expr, [VarId; 3], Vec<Stmt>) {
        let [block, batch, within, tr, tc, base, row0, col0] =
            ["blk", "batch", "within", "tr", "tc", "base", "row0", "col0"].map(|n| self.index(n));
        let col_tiles = tiles(columns, cols);
        let batch_tiles = Expr::mul(tiles(per_batch, rows), col_tiles.clone());
        let lets = vec![
            let_(batch, Expr::div(v(block), batch_tiles.clone())),
            let_(within, Expr::rem(v(block), batch_tiles.clone())),
            let_(tr, Expr::div(v(within), col_tiles.clone())),
            let_(tc, Expr::rem(v(within), col_tiles)),
            let_(base, Expr::mul(v(batch), per_batch.clone())),
            let_(row0, Expr::mul(v(tr), int(rows))),
            let_(col0, Expr::mul(v(tc), int(cols))),
        ];
        (block, batch_tiles, [base, row0, col0], lets)
    }

    /// The kernel `from` (its name and fused nodes) as `body` with this builder's variables
    /// and buffers.
    pub(super) fn finish(self, from: &Kernel, body: Stmt) -> Kernel {
        Kernel {
            name: from.name.clone(),
            buffers: self.buffers,
            vars: self.vars,
            body: vec![body],
            fused: from.fused.clone(),
            gpu_form: None,
        }
    }

    pub(super) fn index(&mut self, prefix: &str) -> VarId {
        self.var(prefix, ScalarType::Index)
    }

    fn shared(&mut self, name: &str, len: i64) -> u32 {
        self.shared_of(name, len, DType::F32)
    }

    /// A shared buffer of `len` elements of `dtype`.
    pub(super) fn shared_of(&mut self, name: &str, len: i64, dtype: DType) -> u32 {
        self.buffers.push(BufferParam { name: name.into(), dtype, access: Access::Shared, len: Dim::constant(len) });
        self.buffers.len() as u32 - 1
    }

    /// `for t in 0..BLOCK gpu-threads { body(t) }`.
    pub(super) fn threads(&mut self, body: impl FnOnce(&mut Self, VarId) -> Vec<Stmt>) -> Stmt {
        let t = self.index("t");
        let body = body(self, t);
        Stmt::Loop { var: t, extent: int(BLOCK), kind: LoopKind::GpuThreads, body }
    }

    /// `let ty = t / SPREAD; let tx = t % SPREAD`: the thread's place in the tile.
    fn thread_place(&mut self, t: VarId, out: &mut Vec<Stmt>) -> (VarId, VarId) {
        let (ty, tx) = (self.index("ty"), self.index("tx"));
        out.push(let_(ty, Expr::div(v(t), int(SPREAD))));
        out.push(let_(tx, Expr::rem(v(t), int(SPREAD))));
        (ty, tx)
    }

    /// `let`s binding `vars` to the row-major coordinates of flat index `flat` in `dims`.
    pub(super) fn coordinates(flat: Expr, dims: &[&Expr], vars: &[VarId], out: &mut Vec<Stmt>) {
        let mut stride = int(1);
        let mut lets = Vec::new();
        for (i, (d, v)) in dims.iter().zip(vars).enumerate().rev() {
            let q = Expr::div(flat.clone(), stride.clone());
            lets.push(let_(*v, if i == 0 { q } else { Expr::rem(q, (*d).clone()) }));
            stride = Expr::mul(stride, (*d).clone());
        }
        out.extend(lets.into_iter().rev());
    }

    fn tiled(&mut self, m: &Gemm) -> Stmt {
        let f32 = ScalarType::Elem(DType::F32);
        let zero = Expr::Const(0.0, DType::F32);
        let sh = self.shape;
        let a_tile = self.shared("a_tile", sh.k * sh.a_stride());
        let b_tile = self.shared("b_tile", sh.k * sh.cols);
        let (per_batch, columns) = (m.per_batch(), m.columns());
        let (block, batch_tiles, [base, row0, col0], mut body) =
            self.tile_place(&per_batch, &columns, sh.rows, sh.cols);
        // Each thread's accumulators, in registers.
        let acc: Vec<Vec<VarId>> =
            (0..sh.micro).map(|_| (0..sh.micro).map(|_| self.var("acc", f32)).collect()).collect();
        body.push(
            self.threads(|_, _| acc.iter().flatten().map(|&a| Stmt::Decl { var: a, init: zero.clone() }).collect()),
        );
        // The reduction, one panel of `k` steps at a time.
        let kt = self.index("kt");
        let load = self.threads(|b, t| b.load_panels(m, t, kt, [base, row0, col0], a_tile, b_tile));
        let compute = self.threads(|b, t| {
            let mut out = Vec::new();
            let (ty, tx) = b.thread_place(t, &mut out);
            let kk = b.index("kk");
            let mut step = Vec::new();
            let a: Vec<VarId> = (0..sh.micro).map(|_| b.var("a", f32)).collect();
            let bv: Vec<VarId> = (0..sh.micro).map(|_| b.var("b", f32)).collect();
            for (i, &ai) in a.iter().enumerate() {
                let at = Expr::add(Expr::mul(v(kk), int(sh.a_stride())), Expr::add(v(ty), int(SPREAD * i as i64)));
                step.push(let_(ai, Expr::load(a_tile, at)));
            }
            for (j, &bj) in bv.iter().enumerate() {
                let at = Expr::add(Expr::mul(v(kk), int(sh.cols)), Expr::add(v(tx), int(SPREAD * j as i64)));
                step.push(let_(bj, Expr::load(b_tile, at)));
            }
            for (i, row) in acc.iter().enumerate() {
                for (j, &c) in row.iter().enumerate() {
                    let product = Expr::binary(BinaryOp::Mul, v(a[i]), v(bv[j]));
                    step.push(Stmt::Assign { var: c, value: Expr::binary(BinaryOp::Add, v(c), product) });
                }
            }
            out.push(serial(kk, int(sh.k), step));
            out
        });
        body.push(serial(kt, tiles(&m.k_total(), sh.k), vec![load, Stmt::Barrier, compute, Stmt::Barrier]));
        // Each element inside the matrix: its value (one store per accumulator, unrolled),
        // then the epilogue, which reads the value back: written once, in loops over the
        // thread's elements, so that a long epilogue is not copied per element.
        let store = self.threads(|b, t| {
            let mut out = Vec::new();
            let (ty, tx) = b.thread_place(t, &mut out);
            // Row `i` and column `j` of the thread's elements: `let`s of the element's place,
            // and whether it is inside the matrix.
            let place = |b: &mut Self, i: Expr, j: Expr, out: &mut Vec<Stmt>| {
                let (r, col) = (b.index("r"), b.index("c"));
                out.push(let_(r, Expr::add(v(row0), Expr::add(v(ty), Expr::mul(int(SPREAD), i)))));
                out.push(let_(col, Expr::add(v(col0), Expr::add(v(tx), Expr::mul(int(SPREAD), j)))));
                let inside = and(lt(v(r), per_batch.clone()), lt(v(col), columns.clone()));
                let mut element = vec![let_(m.row, Expr::add(v(base), v(r)))];
                element.extend(m.prefix.iter().cloned());
                (col, Expr::select(inside, int(1), int(0)), element)
            };
            for (i, row) in acc.iter().enumerate() {
                for (j, &c) in row.iter().enumerate() {
                    let (col, inside, mut element) = place(b, int(i as i64), int(j as i64), &mut out);
                    Self::coordinates(v(col), &m.dims, &m.zero_vars, &mut element);
                    element.push(Stmt::Store { buf: m.out, index: m.out_index.clone(), value: v(c) });
                    let once = b.index("once");
                    out.push(serial(once, inside, element));
                }
            }
            if !m.epilogue.is_empty() {
                let (i, j, once) = (b.index("i"), b.index("j"), b.index("once"));
                let mut per_element = Vec::new();
                let (col, inside, mut element) = place(b, v(i), v(j), &mut per_element);
                for s in m.epilogue {
                    match nest(s, m.dims.len()) {
                        Some((levels, inner)) => {
                            let vars: Vec<VarId> = levels.iter().map(|(v, _)| *v).collect();
                            Self::coordinates(v(col), &m.dims, &vars, &mut element);
                            element.extend(inner.iter().cloned());
                        }
                        None => element.push(s.clone()),
                    }
                }
                per_element.push(serial(once, inside, element));
                out.push(serial(i, int(sh.micro), vec![serial(j, int(sh.micro), per_element)]));
            }
            out
        });
        body.push(store);
        let batches = match &m.batch_rows {
            Some(b) => Expr::div(m.rows.clone(), b.clone()),
            None => int(1),
        };
        Stmt::Loop { var: block, extent: Expr::mul(batches, batch_tiles), kind: LoopKind::GpuBlocks, body }
    }

    /// Thread `t`'s share of loading panel `kt`: `k × rows` values of `A` (element `e`: row
    /// `e / k`, step `e % k`, so consecutive threads read consecutive steps of a row; stored
    /// at `step * a_stride + row`) and `k × cols` of `B` (step `e / cols`, column `e % cols`).
    /// Rows are `base + row0 + ...` (the tile's batch and place); the `B` factor is read with
    /// the row bound to the batch's first row (it depends on the batch alone).
    fn load_panels(
        &mut self,
        m: &Gemm,
        t: VarId,
        kt: VarId,
        [base, row0, col0]: [VarId; 3],
        a_tile: u32,
        b_tile: u32,
    ) -> Vec<Stmt> {
        let sh = self.shape;
        let zero = Expr::Const(0.0, DType::F32);
        let last = |e: &Expr| Expr::sub(e.clone(), int(1));
        let (per_batch, columns, k_total) = (m.per_batch(), m.columns(), m.k_total());
        let k_dims: Vec<&Expr> = m.k_levels.iter().map(|(_, e)| *e).collect();
        let k_vars: Vec<VarId> = m.k_levels.iter().map(|(v, _)| *v).collect();
        let [q, e, mi, ka, r, kq, kb, n, c, kq2] =
            ["q", "e", "m", "ka", "r", "kq", "kb", "n", "c", "kq"].map(|x| self.index(x));
        let mut body = vec![let_(e, Expr::add(v(t), Expr::mul(v(q), int(BLOCK))))];
        // A: this element's row and step, clamped into the matrix for the reads.
        body.push(let_(mi, Expr::div(v(e), int(sh.k))));
        body.push(let_(ka, Expr::rem(v(e), int(sh.k))));
        body.push(let_(r, Expr::add(v(row0), v(mi))));
        body.push(let_(kq, Expr::add(Expr::mul(v(kt), int(sh.k)), v(ka))));
        body.push(let_(m.row, Expr::add(v(base), Expr::min(v(r), last(&per_batch)))));
        body.extend(m.prefix.iter().cloned());
        Self::coordinates(Expr::min(v(kq), last(&k_total)), &k_dims, &k_vars, &mut body);
        body.extend(m.k_lets.iter().map(|s| (*s).clone()));
        let inside = and(lt(v(r), per_batch.clone()), lt(v(kq), k_total.clone()));
        let at = Expr::add(Expr::mul(v(ka), int(sh.a_stride())), v(mi));
        body.push(Stmt::Store { buf: a_tile, index: at, value: Expr::select(inside, m.a.clone(), zero.clone()) });
        // B: this element's step and column.
        body.push(let_(kb, Expr::div(v(e), int(sh.cols))));
        body.push(let_(n, Expr::rem(v(e), int(sh.cols))));
        body.push(let_(c, Expr::add(v(col0), v(n))));
        body.push(let_(kq2, Expr::add(Expr::mul(v(kt), int(sh.k)), v(kb))));
        body.push(let_(m.row, v(base)));
        body.extend(m.prefix.iter().cloned());
        Self::coordinates(Expr::min(v(kq2), last(&k_total)), &k_dims, &k_vars, &mut body);
        body.extend(m.k_lets.iter().map(|s| (*s).clone()));
        Self::coordinates(Expr::min(v(c), last(&columns)), &m.dims, &m.col_vars, &mut body);
        let inside = and(lt(v(c), columns.clone()), lt(v(kq2), k_total.clone()));
        let at = Expr::add(Expr::mul(v(kb), int(sh.cols)), v(n));
        body.push(Stmt::Store { buf: b_tile, index: at, value: Expr::select(inside, m.b.clone(), zero) });
        // Both panels have `k × rows` elements (square tiles), a multiple of the block.
        debug_assert!(sh.rows == sh.cols && (sh.k * sh.rows) % BLOCK == 0);
        vec![serial(q, int(sh.k * sh.rows / BLOCK), body)]
    }
}

/// Whether `e` reads any variable.
pub(super) fn uses_vars(e: &Expr) -> bool {
    let mut found = false;
    e.visit(&mut |x| found |= matches!(x, Expr::Var(_)));
    found
}

pub(super) fn uses_any(e: &Expr, vars: &BTreeSet<VarId>) -> bool {
    let mut found = false;
    e.visit(&mut |x| found |= matches!(x, Expr::Var(v) if vars.contains(v)));
    found
}

/// `e` with variable `from` read as `to`.
pub(super) fn rename(e: &Expr, from: VarId, to: VarId) -> Expr {
    super::gpu_schedule::rename(e, &BTreeSet::from([from]), to)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `out[r, j] = sum_k x[r, k] * w[k, j]` for `rows` rows of 4 columns, `k` in 0..3, as
    /// kiln lowers it (already flattened): `b_factor` gives the update's second factor.
    fn matmul_rows(rows: i64, b_factor: impl Fn(Expr, Expr, Expr) -> Expr, dtype: DType) -> Kernel {
        let (r, jz, k, a, ju) = (VarId(0), VarId(1), VarId(2), VarId(3), VarId(4));
        let out = |j: VarId| Expr::add(Expr::mul(v(r), int(4)), v(j));
        let update = Expr::binary(
            BinaryOp::Add,
            Expr::load(0, out(ju)),
            Expr::binary(BinaryOp::Mul, v(a), b_factor(v(r), v(k), v(ju))),
        );
        let body = vec![
            Stmt::Loop {
                var: jz,
                extent: int(4),
                kind: LoopKind::Vector(4),
                body: vec![Stmt::Store { buf: 0, index: out(jz), value: Expr::Const(0.0, dtype) }],
            },
            serial(
                k,
                int(3),
                vec![
                    let_(a, Expr::load(1, Expr::add(Expr::mul(v(r), int(3)), v(k)))),
                    Stmt::Loop {
                        var: ju,
                        extent: int(4),
                        kind: LoopKind::Vector(4),
                        body: vec![Stmt::Store { buf: 0, index: out(ju), value: update }],
                    },
                ],
            ),
        ];
        let buffer =
            |name: &str, access, len| BufferParam { name: name.into(), dtype, access, len: Dim::constant(len) };
        Kernel {
            name: "mm".into(),
            buffers: vec![
                buffer("out", Access::Write, rows * 4),
                buffer("x", Access::Read, rows * 3),
                buffer("w", Access::Read, 12),
            ],
            vars: (0..5)
                .map(|i| (format!("v{i}"), if i == 3 { ScalarType::Elem(dtype) } else { ScalarType::Index }))
                .collect(),
            body: vec![Stmt::Loop { var: r, extent: int(rows), kind: LoopKind::Parallel, body }],
            fused: vec![],
            gpu_form: None,
        }
    }

    fn weight(_row: Expr, k: Expr, j: Expr) -> Expr {
        Expr::load(2, Expr::add(Expr::mul(k, int(4)), j))
    }

    #[test]
    fn a_matmul_of_enough_rows_runs_in_tiles_of_shared_memory() {
        let k = matmul_rows(32, weight, DType::F32);
        let s = tile_matmul(&k, &Dim::constant(1)).expect("tiled");
        let grid = GpuGrid::Tiles {
            rows_per_item: Dim::constant(1),
            batch_rows: None,
            row_tile: 64,
            columns: Dim::constant(4),
            column_tile: 64,
        };
        assert_eq!(s.grid, grid);
        assert_eq!(s.grid.iterations(32, &|_| None), Some(1));
        let shared: Vec<_> = s.kernel.buffers.iter().filter(|b| b.access == Access::Shared).collect();
        assert_eq!(shared.len(), 2);
        let [Stmt::Loop { kind: LoopKind::GpuBlocks, body, .. }] = s.kernel.body.as_slice() else { panic!() };
        let barriers = |b: &[Stmt]| {
            let mut n = 0;
            for s in b {
                if let Stmt::Loop { body, .. } = s {
                    n += body.iter().filter(|s| matches!(s, Stmt::Barrier)).count();
                }
            }
            n
        };
        assert_eq!(barriers(body), 2, "a barrier after loading the panels and one after using them");
    }

    #[test]
    fn what_tiles_cannot_compute_is_left_alone() {
        // Too few rows (a matrix-vector product keeps one thread per element).
        assert!(tile_matmul(&matmul_rows(8, weight, DType::F32), &Dim::constant(1)).is_none());
        // The second factor depends on the row: neither factor is B.
        let by_row = |r: Expr, k: Expr, j: Expr| {
            Expr::load(2, Expr::add(Expr::mul(k, int(4)), Expr::rem(Expr::add(j, r), int(4))))
        };
        assert!(tile_matmul(&matmul_rows(32, by_row, DType::F32), &Dim::constant(1)).is_none());
        // Not f32.
        assert!(tile_matmul(&matmul_rows(32, weight, DType::F64), &Dim::constant(1)).is_none());
    }
}
