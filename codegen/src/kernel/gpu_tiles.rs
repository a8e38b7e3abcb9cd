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
use std::collections::BTreeSet;

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

/// The pieces of a matmul row kernel ([`tile_matmul`]).
struct MatmulRow<'a> {
    row: VarId,
    rows: &'a Expr,
    /// `let`s of the row before the zeroing (its coordinates).
    prefix: &'a [Stmt],
    out: u32,
    zero_var: VarId,
    out_index: &'a Expr,
    k_var: VarId,
    k_extent: &'a Expr,
    cols: &'a Expr,
    /// `let`s of the `k` loop body (operands of the update).
    k_lets: &'a [Stmt],
    col_var: VarId,
    a: &'a Expr,
    b: &'a Expr,
    epilogue: &'a [Stmt],
}

/// The kernel in shared-memory tiles (see the module docs), or `None` when it is not a
/// matmul row kernel of the supported form. `flat` has one parallel loop over all rows
/// (`rows_per_item` per item of the plan's launch range).
pub fn tile_matmul(flat: &Kernel, rows_per_item: &Dim) -> Option<Scheduled> {
    let m = parse(flat)?;
    let vars_free = |e: &Expr| !uses_vars(e);
    if !vars_free(m.rows) || !vars_free(m.k_extent) || !vars_free(m.cols) {
        return None;
    }
    if flat.buffers.iter().any(|b| b.access == Access::Shared) || flat.buffers[m.out as usize].dtype != DType::F32 {
        return None;
    }
    let rows = dim_of(m.rows)?.as_const();
    if rows.is_some_and(|r| r < 16) {
        return None;
    }
    let columns = dim_of(m.cols)?;
    let big = |n: Option<i64>| n.is_none_or(|n| n >= LARGE.rows);
    let shape = if big(rows) && big(columns.as_const()) { LARGE } else { SMALL };
    let mut b = Builder { vars: flat.vars.clone(), buffers: flat.buffers.clone(), shape };
    let body = b.tiled(&m)?;
    let kernel = Kernel {
        name: flat.name.clone(),
        buffers: b.buffers,
        vars: b.vars,
        body: vec![body],
        fused: flat.fused.clone(),
    };
    let grid =
        GpuGrid::Tiles { rows_per_item: rows_per_item.clone(), row_tile: shape.rows, columns, column_tile: shape.cols };
    Some(Scheduled { kernel, grid })
}

/// Recognizes the matmul row form in `flat`'s parallel loop.
fn parse(flat: &Kernel) -> Option<MatmulRow<'_>> {
    let [Stmt::Loop { var: row, extent: rows, kind: LoopKind::Parallel, body }] = flat.body.as_slice() else {
        return None;
    };
    let lets = body.iter().take_while(|s| matches!(s, Stmt::Let { .. })).count();
    let (prefix, rest) = body.split_at(lets);
    let [zero, k_loop, epilogue @ ..] = rest else { return None };
    let Stmt::Loop { var: zero_var, extent: cols, kind: LoopKind::Vector(_) | LoopKind::Serial, body: zb } = zero
    else {
        return None;
    };
    let [Stmt::Store { buf: out, index: out_index, value: Expr::Const(z, DType::F32) }] = zb.as_slice() else {
        return None;
    };
    if *z != 0.0 || z.is_sign_negative() {
        return None;
    }
    let Stmt::Loop { var: k_var, extent: k_extent, kind: LoopKind::Serial, body: kb } = k_loop else { return None };
    let (update_loop, k_lets) = kb.split_last()?;
    if !k_lets.iter().all(|s| matches!(s, Stmt::Let { .. })) {
        return None;
    }
    let Stmt::Loop { var: col_var, extent: cols2, kind: LoopKind::Vector(_) | LoopKind::Serial, body: ub } =
        update_loop
    else {
        return None;
    };
    let [Stmt::Store { buf: out2, index: update_index, value: Expr::Binary(BinaryOp::Add, acc, product) }] =
        ub.as_slice()
    else {
        return None;
    };
    if cols2 != cols || out2 != out || *update_index != rename(out_index, *zero_var, *col_var) {
        return None;
    }
    let Expr::Load { buf: acc_buf, index: acc_index } = &**acc else { return None };
    if acc_buf != out || **acc_index != *update_index {
        return None;
    }
    let Expr::Binary(BinaryOp::Mul, x, y) = &**product else { return None };
    // Which factor is A (no column) and which B (no row).
    let mut row_side: BTreeSet<VarId> = BTreeSet::from([*row]);
    for s in prefix.iter().chain(k_lets) {
        if let Stmt::Let { var, value } = s {
            if uses_any(value, &row_side) || prefix.contains(s) {
                row_side.insert(*var);
            }
        }
    }
    let col = BTreeSet::from([*col_var]);
    let reads_out = |e: &Expr| {
        let mut found = false;
        e.visit(&mut |x| found |= matches!(x, Expr::Load { buf, .. } if buf == out));
        found
    };
    let (a, b) = if !uses_any(x, &col) && !uses_any(y, &row_side) {
        (&**x, &**y)
    } else if !uses_any(y, &col) && !uses_any(x, &row_side) {
        (&**y, &**x)
    } else {
        return None;
    };
    if reads_out(a) || reads_out(b) || k_lets.iter().any(|s| matches!(s, Stmt::Let { value, .. } if reads_out(value))) {
        return None;
    }
    // The epilogue: `let`s, and loops over the columns.
    for s in epilogue {
        match s {
            Stmt::Let { .. } => {}
            Stmt::Loop { extent, .. } if extent == cols => {}
            _ => return None,
        }
    }
    Some(MatmulRow {
        row: *row,
        rows,
        prefix,
        out: *out,
        zero_var: *zero_var,
        out_index,
        k_var: *k_var,
        k_extent,
        cols,
        k_lets,
        col_var: *col_var,
        a,
        b,
        epilogue,
    })
}

/// Adds variables and shared buffers to the kernel being built.
struct Builder {
    vars: Vec<(String, ScalarType)>,
    buffers: Vec<BufferParam>,
    shape: TileShape,
}

fn int(v: i64) -> Expr {
    Expr::Int(v)
}

fn v(x: VarId) -> Expr {
    Expr::Var(x)
}

fn lt(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryOp::Lt, a, b)
}

fn and(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryOp::And, a, b)
}

fn let_(var: VarId, value: Expr) -> Stmt {
    Stmt::Let { var, value }
}

fn serial(var: VarId, extent: Expr, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop { var, extent, kind: LoopKind::Serial, body }
}

/// `ceil(n / d)` of non-negative indices.
fn tiles(n: &Expr, d: i64) -> Expr {
    Expr::div(Expr::add(n.clone(), int(d - 1)), int(d))
}

impl Builder {
    fn var(&mut self, prefix: &str, t: ScalarType) -> VarId {
        let id = VarId(self.vars.len() as u32);
        self.vars.push((format!("{prefix}{}", id.0), t));
        id
    }

    fn index(&mut self, prefix: &str) -> VarId {
        self.var(prefix, ScalarType::Index)
    }

    fn shared(&mut self, name: &str, len: i64) -> u32 {
        self.buffers.push(BufferParam {
            name: name.into(),
            dtype: DType::F32,
            access: Access::Shared,
            len: Dim::constant(len),
        });
        self.buffers.len() as u32 - 1
    }

    /// `for t in 0..BLOCK gpu-threads { body(t) }`.
    fn threads(&mut self, body: impl FnOnce(&mut Self, VarId) -> Vec<Stmt>) -> Stmt {
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

    fn tiled(&mut self, m: &MatmulRow) -> Option<Stmt> {
        let f32 = ScalarType::Elem(DType::F32);
        let zero = Expr::Const(0.0, DType::F32);
        let sh = self.shape;
        let a_tile = self.shared("a_tile", sh.k * sh.a_stride());
        let b_tile = self.shared("b_tile", sh.k * sh.cols);
        let (block, tr, tc, row0, col0) =
            (self.index("blk"), self.index("tr"), self.index("tc"), self.index("row0"), self.index("col0"));
        let col_tiles = tiles(m.cols, sh.cols);
        let mut body = vec![
            let_(tr, Expr::div(v(block), col_tiles.clone())),
            let_(tc, Expr::rem(v(block), col_tiles.clone())),
            let_(row0, Expr::mul(v(tr), int(sh.rows))),
            let_(col0, Expr::mul(v(tc), int(sh.cols))),
        ];
        // Each thread's accumulators, in registers.
        let acc: Vec<Vec<VarId>> =
            (0..sh.micro).map(|_| (0..sh.micro).map(|_| self.var("acc", f32)).collect()).collect();
        body.push(
            self.threads(|_, _| acc.iter().flatten().map(|&a| Stmt::Decl { var: a, init: zero.clone() }).collect()),
        );
        // The reduction, one panel of `k` steps at a time.
        let kt = self.index("kt");
        let load = self.threads(|b, t| b.load_panels(m, t, kt, row0, col0, a_tile, b_tile));
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
        body.push(serial(kt, tiles(m.k_extent, sh.k), vec![load, Stmt::Barrier, compute, Stmt::Barrier]));
        // Each element inside the matrix: its value, then the epilogue.
        let store = self.threads(|b, t| {
            let mut out = Vec::new();
            let (ty, tx) = b.thread_place(t, &mut out);
            for (i, row) in acc.iter().enumerate() {
                for (j, &c) in row.iter().enumerate() {
                    let (r, col, once) = (b.index("r"), b.index("c"), b.index("once"));
                    out.push(let_(r, Expr::add(v(row0), Expr::add(v(ty), int(SPREAD * i as i64)))));
                    out.push(let_(col, Expr::add(v(col0), Expr::add(v(tx), int(SPREAD * j as i64)))));
                    let inside = and(lt(v(r), m.rows.clone()), lt(v(col), m.cols.clone()));
                    let mut element = vec![let_(m.row, v(r))];
                    element.extend(m.prefix.iter().cloned());
                    element.push(let_(m.zero_var, v(col)));
                    element.push(Stmt::Store { buf: m.out, index: m.out_index.clone(), value: v(c) });
                    for s in m.epilogue {
                        match s {
                            Stmt::Loop { var, body, .. } => {
                                element.push(let_(*var, v(col)));
                                element.extend(body.iter().cloned());
                            }
                            other => element.push(other.clone()),
                        }
                    }
                    out.push(serial(once, Expr::select(inside, int(1), int(0)), element));
                }
            }
            out
        });
        body.push(store);
        let rows = m.rows.clone();
        let extent = Expr::mul(tiles(&rows, sh.rows), col_tiles);
        Some(Stmt::Loop { var: block, extent, kind: LoopKind::GpuBlocks, body })
    }

    /// Thread `t`'s share of loading panel `kt`: `k × rows` values of `A` (element `e`: row
    /// `e / k`, step `e % k`, so consecutive threads read consecutive steps of a row; stored
    /// at `step * a_stride + row`) and `k × cols` of `B` (step `e / cols`, column `e % cols`).
    #[allow(clippy::too_many_arguments)]
    fn load_panels(
        &mut self,
        m: &MatmulRow,
        t: VarId,
        kt: VarId,
        row0: VarId,
        col0: VarId,
        a_tile: u32,
        b_tile: u32,
    ) -> Vec<Stmt> {
        let sh = self.shape;
        let zero = Expr::Const(0.0, DType::F32);
        let last = |e: &Expr| Expr::sub(e.clone(), int(1));
        let (q, e) = (self.index("q"), self.index("e"));
        let (mi, ka, r, kq) = (self.index("m"), self.index("ka"), self.index("r"), self.index("kq"));
        let (kb, n, c, kq2) = (self.index("kb"), self.index("n"), self.index("c"), self.index("kq"));
        let mut body = vec![let_(e, Expr::add(v(t), Expr::mul(v(q), int(BLOCK))))];
        // A: this element's row and step, clamped into the matrix for the reads.
        body.push(let_(mi, Expr::div(v(e), int(sh.k))));
        body.push(let_(ka, Expr::rem(v(e), int(sh.k))));
        body.push(let_(r, Expr::add(v(row0), v(mi))));
        body.push(let_(kq, Expr::add(Expr::mul(v(kt), int(sh.k)), v(ka))));
        body.push(let_(m.row, Expr::min(v(r), last(m.rows))));
        body.extend(m.prefix.iter().cloned());
        body.push(let_(m.k_var, Expr::min(v(kq), last(m.k_extent))));
        body.extend(m.k_lets.iter().cloned());
        let inside = and(lt(v(r), m.rows.clone()), lt(v(kq), m.k_extent.clone()));
        let at = Expr::add(Expr::mul(v(ka), int(sh.a_stride())), v(mi));
        body.push(Stmt::Store { buf: a_tile, index: at, value: Expr::select(inside, m.a.clone(), zero.clone()) });
        // B: this element's step and column.
        body.push(let_(kb, Expr::div(v(e), int(sh.cols))));
        body.push(let_(n, Expr::rem(v(e), int(sh.cols))));
        body.push(let_(c, Expr::add(v(col0), v(n))));
        body.push(let_(kq2, Expr::add(Expr::mul(v(kt), int(sh.k)), v(kb))));
        body.push(let_(m.k_var, Expr::min(v(kq2), last(m.k_extent))));
        body.push(let_(m.col_var, Expr::min(v(c), last(m.cols))));
        // The `k` loop's `let`s that B may read (those that do not depend on the row).
        let mut row_side: BTreeSet<VarId> = BTreeSet::from([m.row]);
        for s in m.prefix.iter().chain(m.k_lets) {
            if let Stmt::Let { var, value } = s {
                if m.prefix.contains(s) || uses_any(value, &row_side) {
                    row_side.insert(*var);
                } else {
                    body.push(s.clone());
                }
            }
        }
        let inside = and(lt(v(c), m.cols.clone()), lt(v(kq2), m.k_extent.clone()));
        let at = Expr::add(Expr::mul(v(kb), int(sh.cols)), v(n));
        body.push(Stmt::Store { buf: b_tile, index: at, value: Expr::select(inside, m.b.clone(), zero) });
        // Both panels have `k × rows` elements (square tiles), a multiple of the block.
        debug_assert!(sh.rows == sh.cols && (sh.k * sh.rows) % BLOCK == 0);
        vec![serial(q, int(sh.k * sh.rows / BLOCK), body)]
    }
}

/// Whether `e` reads any variable.
fn uses_vars(e: &Expr) -> bool {
    let mut found = false;
    e.visit(&mut |x| found |= matches!(x, Expr::Var(_)));
    found
}

fn uses_any(e: &Expr, vars: &BTreeSet<VarId>) -> bool {
    let mut found = false;
    e.visit(&mut |x| found |= matches!(x, Expr::Var(v) if vars.contains(v)));
    found
}

/// `e` with variable `from` read as `to`.
fn rename(e: &Expr, from: VarId, to: VarId) -> Expr {
    let r = |x: &Expr| Box::new(rename(x, from, to));
    match e {
        Expr::Var(x) if *x == from => Expr::Var(to),
        Expr::Load { buf, index } => Expr::Load { buf: *buf, index: r(index) },
        Expr::Unary(op, x) => Expr::Unary(*op, r(x)),
        Expr::Binary(op, a, b) => Expr::Binary(*op, r(a), r(b)),
        Expr::Select(c, a, b) => Expr::Select(r(c), r(a), r(b)),
        Expr::Cast(d, x) => Expr::Cast(*d, r(x)),
        Expr::ToIndex(x) => Expr::ToIndex(r(x)),
        Expr::Bitcast(d, x) => Expr::Bitcast(*d, r(x)),
        other => other.clone(),
    }
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
