//! f16 and bf16 matrix products on GPUs through warp matrix multiply-accumulates (NVIDIA's
//! tensor cores, AMD CDNA's matrix cores).
//!
//! kiln lowers a product of f16 or bf16 operands (accumulated in f32) one output element at a
//! time: `var acc: f32 = 0; for k { acc += f32(X) * f32(Y) }`, then the element's statements
//! (its rounding to f16 and store, and whatever is fused after it). [`tensor_core_tiles`]
//! rewrites such a kernel into one block of [`BLOCK`] threads per 64 × 64 tile of the output:
//! per 32 steps of `k` the block loads the `A` panel (64 rows × 32 steps) and the `B` panel
//! (64 columns × 32 steps) into shared memory as f16/bf16 (each stored row by row with a row
//! stride of 40 elements, so that the 8 rows a warp's fragment loads read fall in different
//! banks; values outside the matrix 0), barrier; then each warp computes its part of the tile
//! with 2 × 4 [`Mma`]s per panel, the accumulators in registers; barrier. At the end each
//! thread runs the element's statements for its 16 elements. The instruction's layout
//! ([`MmaLayout`]) decides the warps' parts: with NVIDIA's (`16 × 8 × 16`, warps of 32) each
//! of the 8 warps computes 16 rows × 32 columns; with AMD CDNA's (`16 × 16 × 16`, wavefronts
//! of 64) each of the 4 wavefronts 32 × 32.
//!
//! On NVIDIA targets each [`Mma`] is one `mma.sync.aligned.m16n8k16` instruction, on gfx90a
//! and gfx942 one `v_mfma_f32_16x16x16f16` (`..bf16_1k`); gfx1100 runs its per-thread
//! statements — the same values, from the same shared memory. The evaluator runs the
//! per-thread form, which adds the products in order of `k` as the CPU kernel does, so the
//! tiled kernel's results equal the CPU's bit for bit there; the matrix units' order of
//! summation within 16 steps is the hardware's.
//!
//! Applies when one factor (`A`) does not depend on the column and the other (`B`) on no row
//! level — or only on those above the last, a batched product (attention's `q @ kᵀ` and
//! `p @ v` per batch and head): then each batch's matrix (the last level's rows) has tiles of
//! its own — both are f16 or both bf16 values widened to f32, the extents are free of
//! variables and each matrix has at least 16 rows and 8 columns; the element's statements
//! must not read a buffer the kernel writes.

use super::gpu_schedule::{dim_of, GpuGrid, Scheduled, BLOCK};
use super::gpu_tiles::{int, let_, lt, serial, tiles, uses_any, uses_vars, v, Builder, SMALL};
use super::ir::{Access, Expr, Kernel, LoopKind, Mma, MmaLayout, ScalarType, Stmt, VarId};
use kiln_ir::{BinaryOp, DType, Dim};
use std::collections::BTreeSet;

/// Output rows and columns per block.
pub const TILE: i64 = 64;
/// Steps of `k` per shared-memory panel.
const PANEL_K: i64 = 32;
/// Elements between consecutive rows (columns) of a panel in shared memory.
const STRIDE: i64 = PANEL_K + 8;

/// A product computed one dot product per element (see the module docs).
struct DotProducts<'a> {
    /// The row levels (the parallel loop first) and the column loop.
    rows: Vec<(VarId, &'a Expr)>,
    /// Whether `B` depends on the row levels but the last (a batched product: one matrix
    /// per batch of the last level's rows).
    batched: bool,
    col: VarId,
    columns: &'a Expr,
    acc: VarId,
    k: VarId,
    steps: &'a Expr,
    k_lets: &'a [Stmt],
    /// The f16/bf16 values of the row factor and the column factor.
    a: &'a Expr,
    b: &'a Expr,
    half: DType,
    element: &'a [Stmt],
}

/// The kernel in tensor-core tiles of instructions of `layout`, or `None` when it is not a
/// product of that form.
pub fn tensor_core_tiles(k: &Kernel, layout: MmaLayout) -> Option<Scheduled> {
    let p = parse(k)?;
    let row_count = p.rows.iter().fold(int(1), |n, (_, e)| Expr::mul(n, (*e).clone()));
    let (rows, columns) = (dim_of(&row_count)?, dim_of(p.columns)?);
    let small = |d: &Dim, min: i64| d.as_const().is_some_and(|n| n < min);
    if small(&rows, 16) || small(&columns, 8) || k.buffers.iter().any(|b| b.access == Access::Shared) {
        return None;
    }
    let rows_per_item = p.rows[1..].iter().try_fold(Dim::constant(1), |n, (_, e)| Some(n.mul(&dim_of(e)?)))?;
    let batch_rows = match p.batched {
        true => Some(dim_of(p.rows[p.rows.len() - 1].1)?),
        false => None,
    };
    if batch_rows.as_ref().is_some_and(|b| small(b, 16)) {
        return None;
    }
    let mut b = Builder { vars: k.vars.clone(), buffers: k.buffers.clone(), shape: SMALL };
    let body = build(&mut b, &p, &row_count, layout);
    let kernel = b.finish(k, body);
    let grid = GpuGrid::Tiles { rows_per_item, batch_rows, row_tile: TILE, columns, column_tile: TILE };
    Some(Scheduled { kernel, grid })
}

/// `x` when `e` is `f32(x)` with `x` an f16 or bf16 value.
fn widened_half<'a>(k: &Kernel, e: &'a Expr) -> Option<(&'a Expr, DType)> {
    let Expr::Cast(DType::F32, x) = e else { return None };
    match super::eval::expr_type(k, x) {
        ScalarType::Elem(d @ (DType::F16 | DType::BF16)) => Some((&**x, d)),
        _ => None,
    }
}

fn parse(k: &Kernel) -> Option<DotProducts<'_>> {
    let [Stmt::Loop { var: top, extent: top_extent, kind: LoopKind::Parallel, body }] = k.body.as_slice() else {
        return None;
    };
    let mut rows = vec![(*top, top_extent)];
    let mut at = body;
    let (col, columns, column_body) = loop {
        let [Stmt::Loop { var, extent, kind: LoopKind::Serial | LoopKind::Vector(_), body: inner }] = at.as_slice()
        else {
            return None;
        };
        if matches!(inner.first(), Some(Stmt::Decl { .. })) {
            break (*var, extent, inner);
        }
        if rows.len() >= 4 {
            return None;
        }
        rows.push((*var, extent));
        at = inner;
    };
    let [Stmt::Decl { var: acc, init: Expr::Const(z, DType::F32) }, Stmt::Loop { var: kv, extent: steps, kind: LoopKind::Serial, body: kb }, element @ ..] =
        column_body.as_slice()
    else {
        return None;
    };
    if *z != 0.0 || z.is_sign_negative() || k.vars[acc.0 as usize].1 != ScalarType::Elem(DType::F32) {
        return None;
    }
    let (k_lets, x, y) = super::gpu_tiles::dot_update(kb, *acc)?;
    let ((x, hx), (y, hy)) = (widened_half(k, x)?, widened_half(k, y)?);
    if hx != hy {
        return None;
    }
    // What the `k` level's lets depend on: the last row level (`on_last`), any row level
    // (`on_rows`), the column.
    let (mut on_rows, mut on_last) = (BTreeSet::new(), BTreeSet::from([rows[rows.len() - 1].0]));
    on_rows.extend(rows.iter().map(|(r, _)| *r));
    let on_col = BTreeSet::from([col]);
    let acc_set = BTreeSet::from([*acc]);
    for s in k_lets {
        let Stmt::Let { var, value } = s else { return None };
        if uses_any(value, &acc_set) || uses_any(value, &on_col) {
            // What depends on the column is B's, in the update's own expression.
            return None;
        }
        if uses_any(value, &on_rows) {
            on_rows.insert(*var);
        }
        if uses_any(value, &on_last) {
            on_last.insert(*var);
        }
    }
    // A: no column. B: no row level but (for a batched product) those above the last.
    let (a, b) = if !uses_any(x, &on_col) && !uses_any(y, &on_last) {
        (x, y)
    } else if !uses_any(y, &on_col) && !uses_any(x, &on_last) {
        (y, x)
    } else {
        return None;
    };
    let batched = uses_any(b, &on_rows);
    if batched && rows.len() < 2 {
        return None;
    }
    if uses_any(a, &acc_set) || uses_any(b, &acc_set) {
        return None;
    }
    // Extents free of variables; the elements independent: nothing reads a written buffer.
    if rows.iter().any(|(_, e)| uses_vars(e)) || uses_vars(columns) || uses_vars(steps) {
        return None;
    }
    let written: BTreeSet<u32> =
        k.buffers.iter().enumerate().filter(|(_, b)| b.access == Access::Write).map(|(i, _)| i as u32).collect();
    let mut reads_written = false;
    let mut check =
        |e: &Expr| e.visit(&mut |x| reads_written |= matches!(x, Expr::Load { buf, .. } if written.contains(buf)));
    check(a);
    check(b);
    for s in k_lets.iter().chain(element) {
        match s {
            Stmt::Let { value, .. } => check(value),
            Stmt::Store { index, value, .. } => {
                check(index);
                check(value);
            }
            _ => return None,
        }
    }
    if reads_written {
        return None;
    }
    Some(DotProducts { rows, batched, col, columns, acc: *acc, k: *kv, steps, k_lets, a, b, half: hx, element })
}

/// `let`s binding the row levels to row `r` of the flattened rows.
fn bind_rows(p: &DotProducts, r: Expr, out: &mut Vec<Stmt>) {
    let dims: Vec<&Expr> = p.rows.iter().map(|(_, e)| *e).collect();
    let vars: Vec<VarId> = p.rows.iter().map(|(v, _)| *v).collect();
    Builder::coordinates(r, &dims, &vars, out);
}

/// Where warp `w`'s part of the 64 × 64 tile starts (row, column), and instruction tile `j`'s
/// offset in it: 4 instruction tiles per warp.
fn warp_part(layout: MmaLayout, w: &Expr, j: &Expr) -> (Expr, Expr) {
    let (div, rem) = (|a: &Expr, n: i64| Expr::div(a.clone(), int(n)), |a: &Expr, n: i64| Expr::rem(a.clone(), int(n)));
    match layout {
        // 8 warps of 16 × 32: 4 tiles of 16 × 8 side by side.
        MmaLayout::Nvidia16x8 => {
            (Expr::mul(rem(w, 4), int(16)), Expr::add(Expr::mul(div(w, 4), int(32)), Expr::mul(j.clone(), int(8))))
        }
        // 4 wavefronts of 32 × 32: 2 × 2 tiles of 16 × 16.
        MmaLayout::Cdna16x16 => (
            Expr::add(Expr::mul(rem(w, 2), int(32)), Expr::mul(div(j, 2), int(16))),
            Expr::add(Expr::mul(div(w, 2), int(32)), Expr::mul(rem(j, 2), int(16))),
        ),
    }
}

fn build(b: &mut Builder, p: &DotProducts, row_count: &Expr, layout: MmaLayout) -> Stmt {
    let lanes = layout.lanes();
    let half = p.half;
    let zero = Expr::Const(0.0, half);
    let last = |e: &Expr| Expr::sub(e.clone(), int(1));
    let a_panel = b.shared_of("a_panel", TILE * STRIDE, half);
    let b_panel = b.shared_of("b_panel", TILE * STRIDE, half);
    // A batched product tiles each batch's matrix (the last row level's rows) on its own.
    let (per_batch, batches) = match p.batched {
        true => {
            let last = p.rows[p.rows.len() - 1].1.clone();
            (last.clone(), Expr::div(row_count.clone(), last))
        }
        false => (row_count.clone(), int(1)),
    };
    let (block, batch_tiles, [base, row0, col0], mut body) = b.tile_place(&per_batch, p.columns, TILE, TILE);
    // Each thread's accumulators: 4 tiles of 16 × 8, 4 elements each.
    let f32 = ScalarType::Elem(DType::F32);
    let acc: Vec<[VarId; 4]> = (0..4).map(|_| [0; 4].map(|_| b.var("acc", f32))).collect();
    body.push(b.threads(|_, _| {
        acc.iter().flatten().map(|&a| Stmt::Decl { var: a, init: Expr::Const(0.0, DType::F32) }).collect()
    }));
    // The panels: thread `t` loads elements `t + 256 i` of each (A: row-major over steps,
    // so consecutive threads read consecutive steps of a row; B: consecutive columns).
    let kt = b.index("kt");
    let load = b.threads(|b, t| {
        let [i, e, r, kk, kq, j, e2, kk2, c, kq2, cc] =
            ["i", "e", "r", "kk", "kq", "j", "e", "kk", "c", "kq", "cc"].map(|n| b.index(n));
        let mut a_load = vec![
            let_(e, Expr::add(v(t), Expr::mul(v(i), int(BLOCK)))),
            let_(r, Expr::div(v(e), int(PANEL_K))),
            let_(kk, Expr::rem(v(e), int(PANEL_K))),
            let_(kq, Expr::add(Expr::mul(v(kt), int(PANEL_K)), v(kk))),
        ];
        let row = Expr::add(v(row0), v(r));
        bind_rows(p, Expr::add(v(base), Expr::min(row.clone(), last(&per_batch))), &mut a_load);
        a_load.push(let_(p.k, Expr::min(v(kq), last(p.steps))));
        a_load.extend(p.k_lets.iter().cloned());
        let inside = Expr::binary(BinaryOp::And, lt(row, per_batch.clone()), lt(v(kq), p.steps.clone()));
        a_load.push(Stmt::Store {
            buf: a_panel,
            index: Expr::add(Expr::mul(v(r), int(STRIDE)), v(kk)),
            value: Expr::select(inside, p.a.clone(), zero.clone()),
        });
        let mut b_load = vec![
            let_(e2, Expr::add(v(t), Expr::mul(v(j), int(BLOCK)))),
            let_(kk2, Expr::div(v(e2), int(TILE))),
            let_(cc, Expr::rem(v(e2), int(TILE))),
            let_(c, Expr::add(v(col0), v(cc))),
            let_(kq2, Expr::add(Expr::mul(v(kt), int(PANEL_K)), v(kk2))),
        ];
        // B depends on no row level but the batch: bind them to the batch's first row.
        bind_rows(p, v(base), &mut b_load);
        b_load.push(let_(p.k, Expr::min(v(kq2), last(p.steps))));
        b_load.extend(p.k_lets.iter().cloned());
        b_load.push(let_(p.col, Expr::min(v(c), last(p.columns))));
        let inside = Expr::binary(BinaryOp::And, lt(v(c), p.columns.clone()), lt(v(kq2), p.steps.clone()));
        b_load.push(Stmt::Store {
            buf: b_panel,
            index: Expr::add(Expr::mul(v(cc), int(STRIDE)), v(kk2)),
            value: Expr::select(inside, p.b.clone(), zero.clone()),
        });
        let per_thread = TILE * PANEL_K / BLOCK;
        vec![serial(i, int(per_thread), a_load), serial(j, int(per_thread), b_load)]
    });
    // Warp `w`'s 4 instruction tiles ([`warp_part`]), 2 instructions of 16 steps each per
    // panel.
    let compute = b.threads(|b, t| {
        let (lane, w) = (b.index("lane"), b.index("w"));
        let mut s = vec![let_(lane, Expr::rem(v(t), int(lanes))), let_(w, Expr::div(v(t), int(lanes)))];
        for ks in 0..PANEL_K / Mma::K {
            for (j, acc) in acc.iter().enumerate() {
                let (row, col) = warp_part(layout, &v(w), &int(j as i64));
                let a_at = Expr::add(Expr::mul(row, int(STRIDE)), int(Mma::K * ks));
                let b_at = Expr::add(Expr::mul(col, int(STRIDE)), int(Mma::K * ks));
                s.push(Stmt::Mma(Box::new(Mma {
                    layout,
                    a: a_panel,
                    a_at,
                    b: b_panel,
                    b_at,
                    stride: STRIDE,
                    lane: v(lane),
                    acc: *acc,
                })));
            }
        }
        s
    });
    body.push(serial(kt, tiles(p.steps, PANEL_K), vec![load, Stmt::Barrier, compute, Stmt::Barrier]));
    // Each element inside the matrix: the element's statements, with the accumulator its value
    // (chosen among the thread's 16 by index; the loops have constant trip counts).
    let store = b.threads(|b, t| {
        let [lane, w, j, e, r, c, once] = ["lane", "w", "j", "e", "r", "c", "once"].map(|n| b.index(n));
        let mut s = vec![let_(lane, Expr::rem(v(t), int(lanes))), let_(w, Expr::div(v(t), int(lanes)))];
        // Element `e` of instruction tile `j`.
        let (tile_row, tile_col) = warp_part(layout, &v(w), &v(j));
        let (in_row, in_col) = layout.place(&v(lane), &v(e));
        let row = Expr::add(v(row0), Expr::add(tile_row, in_row));
        let col = Expr::add(v(col0), Expr::add(tile_col, in_col));
        let mut value = Expr::Const(0.0, DType::F32);
        for (jj, tile) in acc.iter().enumerate().rev() {
            for (ee, a) in tile.iter().enumerate().rev() {
                let is = Expr::binary(
                    BinaryOp::Eq,
                    Expr::add(Expr::mul(v(j), int(4)), v(e)),
                    int(4 * jj as i64 + ee as i64),
                );
                value = Expr::select(is, v(*a), value);
            }
        }
        let mut element = Vec::new();
        bind_rows(p, Expr::add(v(base), v(r)), &mut element);
        element.push(let_(p.col, v(c)));
        element.push(let_(p.acc, value));
        element.extend(p.element.iter().cloned());
        let inside = Expr::binary(BinaryOp::And, lt(v(r), per_batch.clone()), lt(v(c), p.columns.clone()));
        let per_element = vec![let_(r, row), let_(c, col), serial(once, Expr::select(inside, int(1), int(0)), element)];
        s.push(serial(j, int(4), vec![serial(e, int(4), per_element)]));
        s
    });
    body.push(store);
    Stmt::Loop { var: block, extent: Expr::mul(batches, batch_tiles), kind: LoopKind::GpuBlocks, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lowered kernel of `%y = matmul %x, %w`.
    fn lowered(x: &str, w: &str, y: &str) -> Kernel {
        let text = format!("graph g\ninput %x: {x}\ninput %w: {w}\n%y: {y} = matmul %x, %w\noutput \"y\" %y");
        let g = kiln_ir::text::parse(&text).unwrap();
        crate::kernel::lower_graph(&g).unwrap().kernels.remove(0)
    }

    /// The product in NVIDIA's tensor-core tiles, or not.
    fn product(x: &str, w: &str, y: &str) -> Option<Scheduled> {
        tensor_core_tiles(&lowered(x, w, y), MmaLayout::Nvidia16x8)
    }

    #[test]
    fn half_precision_products_of_enough_rows_and_columns_use_tensor_cores() {
        let s = product("f16[32, 40]", "f16[40, 24]", "f16[32, 24]").expect("f16");
        assert!(
            tensor_core_tiles(&lowered("f16[32, 40]", "f16[40, 24]", "f16[32, 24]"), MmaLayout::Cdna16x16).is_some()
        );
        let grid = GpuGrid::Tiles {
            rows_per_item: Dim::constant(1),
            batch_rows: None,
            row_tile: 64,
            columns: Dim::constant(24),
            column_tile: 64,
        };
        assert_eq!(s.grid, grid);
        assert!(product("bf16[2, 16, 40]", "bf16[40, 24]", "bf16[2, 16, 24]").is_some(), "bf16, two row levels");
        // f32 products keep f32 arithmetic (tensor cores would round them to TF32).
        assert!(product("f32[32, 40]", "f32[40, 24]", "f32[32, 24]").is_none());
        // Too few rows or columns for a tile.
        assert!(product("f16[8, 40]", "f16[40, 24]", "f16[8, 24]").is_none());
        assert!(product("f16[32, 40]", "f16[40, 4]", "f16[32, 4]").is_none());
        // A second factor per batch: each batch's matrix in its own tiles.
        let s = product("f16[2, 32, 40]", "f16[2, 40, 24]", "f16[2, 32, 24]").expect("batched");
        let GpuGrid::Tiles { batch_rows, .. } = &s.grid else { panic!() };
        assert_eq!(batch_rows, &Some(Dim::constant(32)));
    }
}
