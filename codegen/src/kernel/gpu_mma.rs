//! f16 and bf16 matrix products and convolutions on GPUs through warp matrix
//! multiply-accumulates (NVIDIA's tensor cores, AMD CDNA's matrix cores, AMD RDNA 3's WMMA).
//!
//! kiln lowers a product or a convolution of f16 or bf16 operands (accumulated in f32) one
//! output element at a time: `var acc: f32 = 0; for k… { acc += f32(X) * f32(Y) }` (one `k`
//! loop for a product; input channels, kernel rows and kernel columns for a convolution), then
//! the element's statements (its rounding to f16 and store, and whatever is fused after it:
//! bias, activation, residual add — and, in a ResNet's downsampling block, a second
//! convolution of its own). [`tensor_core_tiles`] rewrites such a kernel into an implicit GEMM:
//! the output's loop levels split into rows (a product's rows; a convolution's batch and
//! output channels) and columns (a product's columns; a convolution's output pixels), the `k`
//! levels flatten into one reduction, and each 64 × 64 tile of rows × columns is one block of
//! [`BLOCK`] threads: per 32 steps of `k` the block loads the `A` panel (64 rows × 32 steps)
//! and the `B` panel (64 columns × 32 steps) into shared memory as f16/bf16 (each stored row
//! by row with a row stride of 40 elements, so that the 8 rows a warp's fragment loads read
//! fall in different banks; values outside the matrix 0; a convolution's `B` gathered from its
//! input as im2col would lay it out, without writing im2col), barrier; then each warp computes
//! its part of the tile with 2 instructions of 16 steps per instruction tile per panel, the
//! accumulators in registers; barrier. Each dot product of the element gets its own
//! accumulators and panels in turn. At the end each thread runs the element's statements for
//! its 16 elements, written out once per element with its accumulators. The instruction's layout
//! ([`MmaLayout`]) decides the warps' parts: with NVIDIA's (`16 × 8 × 16`, warps of 32) each
//! of the 8 warps computes 16 rows × 32 columns (4 instruction tiles); with AMD CDNA's
//! (`16 × 16 × 16`, wavefronts of 64) each of the 4 wavefronts 32 × 32 (2 × 2 tiles); with AMD
//! RDNA 3's (`16 × 16 × 16`, wavefronts of 32) each of the 8 wavefronts 16 × 32 (2 tiles); with
//! NVIDIA Hopper's `wgmma` (`64 × 32 × 16`, warpgroups of 128 threads) each of the 2
//! warpgroups 64 × 32 (1 tile), its panels unpadded in 8 × 8 core matrices, which the tensor
//! cores read from shared memory themselves ([`MmaLayout::panel_offset`]).
//!
//! On sm_80 and sm_90 each [`Mma`] is one `mma.sync.aligned.m16n8k16` instruction, on sm_90a
//! one `wgmma.mma_async.sync.aligned.m64n32k16` (a panel's two in one group), on gfx90a
//! and gfx942 one `v_mfma_f32_16x16x16f16` (`..bf16_1k`), on gfx1100 one
//! `v_wmma_f32_16x16x16_f16` (`.._bf16`); with `--no-matrix-instructions` every target runs
//! the per-thread form ([`Mma::per_thread`]). The evaluator computes that form, which adds the
//! products in order of `k` as the CPU kernel does, so the tiled kernel's results equal the
//! CPU's bit for bit there; the matrix units' order of summation within 16 steps is the
//! hardware's.
//!
//! Applies when, for some split of the levels into rows and columns (at least one of each,
//! the first split that fits), one factor of every dot product (`A`) does not depend on the
//! columns and the other (`B`) not on the last row level — a `B` that depends on the levels
//! above it makes a batched product (attention's `q @ kᵀ` and `p @ v` per batch and head, a
//! convolution's input per image): then each batch's matrix (the last level's rows) has tiles
//! of its own. Both factors are f16 or both bf16 values widened to f32 (the same type in every
//! dot product), the extents are free of variables and each matrix has at least 16 rows and
//! 8 columns; the element's statements must not read a buffer the kernel writes.

use super::gpu_schedule::{dim_of, GpuGrid, Scheduled, BLOCK};
use super::gpu_tiles::{int, let_, lt, nest, nest_depth, serial, tiles, uses_any, uses_vars, v, Builder, SMALL};
use super::ir::{Access, Expr, Kernel, LoopKind, Mma, MmaLayout, ScalarType, Stmt, VarId};
use kiln_ir::{BinaryOp, DType, Dim};
use std::collections::BTreeSet;

/// Output rows and columns per block.
pub const TILE: i64 = 64;
/// Steps of `k` per shared-memory panel.
const PANEL_K: i64 = 32;
/// Elements between consecutive rows (columns) of a panel in shared memory.
const STRIDE: i64 = PANEL_K + 8;
/// Loop levels of the output at most (a convolution's batch, channels, height and width, and
/// one more).
const MAX_LEVELS: usize = 5;
/// Dot products per element at most (each holds 16 accumulators per thread).
const MAX_PRODUCTS: usize = 4;

/// One dot product of the element: `var acc = 0; for k… { lets; acc += f32(a) * f32(b) }`.
struct DotProduct<'a> {
    acc: VarId,
    /// The `k` levels, outer first, flattened into one reduction of `steps` steps.
    k_levels: Vec<(VarId, &'a Expr)>,
    steps: Expr,
    k_lets: &'a [Stmt],
    /// The f16/bf16 values of the row factor and the column factor (0 where the kernel's
    /// update adds 0 instead of the product: a convolution's padding).
    a: Expr,
    b: Expr,
}

/// A kernel whose elements are dot products (see the module docs).
struct DotProducts<'a> {
    /// The row levels (the parallel loop first) and the column levels.
    rows: Vec<(VarId, &'a Expr)>,
    cols: Vec<(VarId, &'a Expr)>,
    /// Whether some `B` depends on the row levels but the last (a batched product: one matrix
    /// per batch of the last level's rows).
    batched: bool,
    products: Vec<DotProduct<'a>>,
    half: DType,
    /// The element's other statements, in order (they read the accumulators).
    element: Vec<&'a Stmt>,
}

fn product_of(levels: &[(VarId, &Expr)]) -> Expr {
    levels.iter().fold(int(1), |n, (_, e)| Expr::mul(n, (*e).clone()))
}

/// The kernel in tensor-core tiles of instructions of `layout`, or `None` when it is not a
/// product of that form — also when its matrices are interleaved by a view, with its levels
/// split and reordered ([`super::gpu_levels`]).
pub fn tensor_core_tiles(k: &Kernel, layout: MmaLayout) -> Option<Scheduled> {
    if let Some(tiled) = tiles_of(k, layout, None) {
        return Some(tiled);
    }
    let [Stmt::Loop { extent: Expr::Int(items), .. }] = k.body.as_slice() else { return None };
    let (variants, top) = super::gpu_levels::interleaved(k, MAX_LEVELS)?;
    variants.iter().find_map(|v| tiles_of(v, layout, Some((*items, &top))))
}

/// [`tensor_core_tiles`] of `k` as its levels come. `original`: `k` is a variant of a kernel
/// whose parallel loop had that many iterations and became those levels, which must be rows.
fn tiles_of(k: &Kernel, layout: MmaLayout, original: Option<(i64, &BTreeSet<VarId>)>) -> Option<Scheduled> {
    let p = parse(k)?;
    let (rows, columns) = (dim_of(&product_of(&p.rows))?, dim_of(&product_of(&p.cols))?);
    let small = |d: &Dim, min: i64| d.as_const().is_some_and(|n| n < min);
    if small(&rows, 16) || small(&columns, 8) || k.buffers.iter().any(|b| b.access == Access::Shared) {
        return None;
    }
    let rows_per_item = match original {
        None => p.rows[1..].iter().try_fold(Dim::constant(1), |n, (_, e)| Some(n.mul(&dim_of(e)?)))?,
        // Every iteration of the original parallel loop is a whole number of rows.
        Some((items, top)) => {
            let total = rows.as_const()?;
            let row_vars: BTreeSet<VarId> = p.rows.iter().map(|(v, _)| *v).collect();
            if !top.is_subset(&row_vars) || total % items != 0 {
                return None;
            }
            Dim::constant(total / items)
        }
    };
    let batch_rows = match p.batched {
        true => Some(dim_of(p.rows[p.rows.len() - 1].1)?),
        false => None,
    };
    if batch_rows.as_ref().is_some_and(|b| small(b, 16)) {
        return None;
    }
    let mut b = Builder { vars: k.vars.clone(), buffers: k.buffers.clone(), shape: SMALL };
    let body = build(&mut b, &p, layout);
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

/// A dot product's pieces as they come, before its factors are told apart.
struct Found<'a> {
    acc: VarId,
    k_levels: Vec<(VarId, &'a Expr)>,
    k_lets: &'a [Stmt],
    x: &'a Expr,
    y: &'a Expr,
    /// The condition under which the update adds the product (else 0).
    mask: Option<&'a Expr>,
}

/// The body of a dot product's `k` loop — `let`s, then `acc = acc + x * y` or, where a
/// convolution pads in the kernel, `acc = acc + select(mask, x * y, 0)` — as its `let`s, the
/// two factors and the mask.
fn masked_dot_update(body: &[Stmt], acc: VarId) -> Option<(&[Stmt], &Expr, &Expr, Option<&Expr>)> {
    if let Some((lets, x, y)) = super::gpu_tiles::dot_update(body, acc) {
        return Some((lets, x, y, None));
    }
    let (update, lets) = body.split_last()?;
    let Stmt::Assign { var: target, value: Expr::Binary(BinaryOp::Add, sum, masked) } = update else { return None };
    let Expr::Select(mask, product, zero) = &**masked else { return None };
    let (Expr::Binary(BinaryOp::Mul, x, y), Expr::Const(z, DType::F32)) = (&**product, &**zero) else { return None };
    (*target == acc && **sum == Expr::Var(acc) && *z == 0.0).then_some((lets, &**x, &**y, Some(&**mask)))
}

fn parse(k: &Kernel) -> Option<DotProducts<'_>> {
    // The output's loop levels, down to the element's body (which starts with a dot product).
    let (levels, at) = super::gpu_levels::output_levels(k)?;
    if levels.len() > MAX_LEVELS {
        return None;
    }
    // The element: dot products (each a `Decl` and its `k` nest) and other statements.
    let (mut found, mut element, mut half) = (Vec::new(), Vec::new(), None);
    // Variables the dot products must not read: the accumulators and the element's lets.
    let mut element_vars = BTreeSet::new();
    let mut stmts = at.iter();
    while let Some(s) = stmts.next() {
        match s {
            Stmt::Decl { var: acc, init: Expr::Const(z, DType::F32) } => {
                if *z != 0.0 || z.is_sign_negative() || k.vars[acc.0 as usize].1 != ScalarType::Elem(DType::F32) {
                    return None;
                }
                let k_loop = stmts.next()?;
                let (k_levels, kb) = nest(k_loop, nest_depth(k_loop))?;
                let (k_lets, x, y, mask) = masked_dot_update(kb, *acc)?;
                let ((x, hx), (y, hy)) = (widened_half(k, x)?, widened_half(k, y)?);
                if hx != hy || *half.get_or_insert(hx) != hx {
                    return None;
                }
                let reads_element = |e: &Expr| uses_any(e, &element_vars) || uses_any(e, &BTreeSet::from([*acc]));
                if k_lets.iter().any(|s| !matches!(s, Stmt::Let { value, .. } if !reads_element(value)))
                    || reads_element(x)
                    || reads_element(y)
                    || mask.is_some_and(reads_element)
                {
                    return None;
                }
                element_vars.insert(*acc);
                found.push(Found { acc: *acc, k_levels, k_lets, x, y, mask });
            }
            Stmt::Let { var, .. } => {
                element_vars.insert(*var);
                element.push(s);
            }
            Stmt::Store { .. } => element.push(s),
            _ => return None,
        }
    }
    if found.is_empty() || found.len() > MAX_PRODUCTS {
        return None;
    }
    // Extents free of variables; the elements independent: nothing reads a written buffer.
    if levels.iter().chain(found.iter().flat_map(|f| f.k_levels.iter())).any(|(_, e)| uses_vars(e)) {
        return None;
    }
    let written: BTreeSet<u32> =
        k.buffers.iter().enumerate().filter(|(_, b)| b.access == Access::Write).map(|(i, _)| i as u32).collect();
    let mut reads_written = false;
    let mut check =
        |e: &Expr| e.visit(&mut |x| reads_written |= matches!(x, Expr::Load { buf, .. } if written.contains(buf)));
    for f in &found {
        check(f.x);
        check(f.y);
        f.mask.into_iter().for_each(&mut check);
    }
    for s in found.iter().flat_map(|f| f.k_lets.iter()).chain(element.iter().copied()) {
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
    // The first split into rows and columns that every dot product fits.
    (1..levels.len()).find_map(|split| {
        let (rows, cols) = levels.split_at(split);
        let mut batched = false;
        let products = found
            .iter()
            .map(|f| {
                let (a, b, on_rows) = factors(f, rows, cols, half?)?;
                batched |= on_rows;
                let steps = product_of(&f.k_levels);
                Some(DotProduct { acc: f.acc, k_levels: f.k_levels.clone(), steps, k_lets: f.k_lets, a, b })
            })
            .collect::<Option<Vec<_>>>()?;
        if batched && rows.len() < 2 {
            return None;
        }
        Some(DotProducts {
            rows: rows.to_vec(),
            cols: cols.to_vec(),
            batched,
            products,
            half: half?,
            element: element.clone(),
        })
    })
}

/// The factors of `f` as `A` (not on the columns) and `B` (not on the last row level), and
/// whether `B` depends on the rows above the last (the product is batched); `None` when
/// neither factor fits. A mask goes with the factor whose dependencies it shares: the
/// masked-out elements of that factor's panel are 0 (which adds `0 · y = ±0` where the
/// kernel adds `+0`: the same sum for finite `y`).
fn factors(f: &Found, rows: &[(VarId, &Expr)], cols: &[(VarId, &Expr)], half: DType) -> Option<(Expr, Expr, bool)> {
    // What the `k` levels' lets depend on: the last row level, any row level, the columns.
    let mut on_rows: BTreeSet<VarId> = rows.iter().map(|(r, _)| *r).collect();
    let mut on_last = BTreeSet::from([rows[rows.len() - 1].0]);
    let mut on_cols: BTreeSet<VarId> = cols.iter().map(|(c, _)| *c).collect();
    for s in f.k_lets {
        let Stmt::Let { var, value } = s else { return None };
        for set in [&mut on_rows, &mut on_last, &mut on_cols] {
            if uses_any(value, set) {
                set.insert(*var);
            }
        }
    }
    let (a, b) = if !uses_any(f.x, &on_cols) && !uses_any(f.y, &on_last) {
        (f.x, f.y)
    } else if !uses_any(f.y, &on_cols) && !uses_any(f.x, &on_last) {
        (f.y, f.x)
    } else {
        return None;
    };
    let masked = |m: &Expr, e: &Expr| Expr::select(m.clone(), e.clone(), Expr::Const(0.0, half));
    let (a, b) = match f.mask {
        None => (a.clone(), b.clone()),
        Some(m) if !uses_any(m, &on_cols) => (masked(m, a), b.clone()),
        Some(m) if !uses_any(m, &on_last) => (a.clone(), masked(m, b)),
        Some(_) => return None,
    };
    let batched = uses_any(&b, &on_rows);
    Some((a, b, batched))
}

/// `let`s binding the row levels to row `r` of the flattened rows.
fn bind_rows(p: &DotProducts, r: Expr, out: &mut Vec<Stmt>) {
    bind(&p.rows, r, out);
}

/// `let`s binding `levels` to the coordinates of flat index `at` in them.
fn bind(levels: &[(VarId, &Expr)], at: Expr, out: &mut Vec<Stmt>) {
    let dims: Vec<&Expr> = levels.iter().map(|(_, e)| *e).collect();
    let vars: Vec<VarId> = levels.iter().map(|(v, _)| *v).collect();
    Builder::coordinates(at, &dims, &vars, out);
}

/// Where warp `w`'s part of the 64 × 64 tile starts (row, column), and instruction tile `j`'s
/// offset in it ([`tiles_per_warp`] instruction tiles per warp).
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
        // 8 wavefronts of 16 × 32: 2 tiles of 16 × 16 side by side.
        MmaLayout::Rdna16x16 => {
            (Expr::mul(rem(w, 4), int(16)), Expr::add(Expr::mul(div(w, 4), int(32)), Expr::mul(j.clone(), int(16))))
        }
        // 2 warpgroups of 64 × 32: one tile each.
        MmaLayout::Hopper64x32 => (int(0), Expr::mul(w.clone(), int(32))),
    }
}

/// Elements per line (a row of `A`, a column of `B`) of a panel: padded to [`STRIDE`] where
/// each thread loads its own fragments (so that a warp's 8 lines fall in different banks);
/// [`PANEL_K`] in Hopper's core matrices, which the tensor cores read themselves.
fn panel_stride(layout: MmaLayout) -> i64 {
    match layout {
        MmaLayout::Hopper64x32 => PANEL_K,
        _ => STRIDE,
    }
}

/// Instruction tiles per warp ([`warp_part`]): each thread holds 16 accumulators per dot
/// product (a 64 × 64 tile over 256 threads).
fn tiles_per_warp(layout: MmaLayout) -> usize {
    16 / layout.accumulators()
}

/// Where the block's tile lies in the output, shared by the panel loads and the element phase.
struct Tile {
    /// Rows of one matrix (a batch's, or all of them).
    per_batch: Expr,
    columns: Expr,
    /// The matrix's first row, the tile's first row in it and first column.
    base: VarId,
    row0: VarId,
    col0: VarId,
}

fn build(b: &mut Builder, p: &DotProducts, layout: MmaLayout) -> Stmt {
    let stride = panel_stride(layout);
    let a_panel = b.shared_of("a_panel", TILE * stride, p.half);
    let b_panel = b.shared_of("b_panel", TILE * stride, p.half);
    let row_count = product_of(&p.rows);
    // A batched product tiles each batch's matrix (the last row level's rows) on its own.
    let (per_batch, batches) = match p.batched {
        true => {
            let last = p.rows[p.rows.len() - 1].1.clone();
            (last.clone(), Expr::div(row_count, last))
        }
        false => (row_count, int(1)),
    };
    let columns = product_of(&p.cols);
    let (block, batch_tiles, [base, row0, col0], mut body) = b.tile_place(&per_batch, &columns, TILE, TILE);
    let tile = Tile { per_batch, columns, base, row0, col0 };
    // Each thread's 16 accumulators per dot product: its elements of the warp's instruction
    // tiles.
    let f32 = ScalarType::Elem(DType::F32);
    let (tiles_per_warp, per_tile) = (tiles_per_warp(layout), layout.accumulators());
    let acc: Vec<Vec<Vec<VarId>>> = p
        .products
        .iter()
        .map(|_| (0..tiles_per_warp).map(|_| (0..per_tile).map(|_| b.var("acc", f32)).collect()).collect())
        .collect();
    body.push(b.threads(|_, _| {
        acc.iter().flatten().flatten().map(|&a| Stmt::Decl { var: a, init: Expr::Const(0.0, DType::F32) }).collect()
    }));
    for (d, acc) in p.products.iter().zip(&acc) {
        let kt = b.index("kt");
        let load = load_panels(b, p, d, &tile, kt, [a_panel, b_panel], layout);
        let compute = b.threads(|b, t| {
            let (lane, w) = (b.index("lane"), b.index("w"));
            let lanes = layout.lanes();
            let mut s = vec![let_(lane, Expr::rem(v(t), int(lanes))), let_(w, Expr::div(v(t), int(lanes)))];
            // Warp `w`'s instruction tiles ([`warp_part`]), 2 instructions of 16 steps each
            // per panel.
            for ks in 0..PANEL_K / Mma::K {
                for (j, acc) in acc.iter().enumerate() {
                    let (row, col) = warp_part(layout, &v(w), &int(j as i64));
                    let a_at = layout.panel_offset(row, int(Mma::K * ks), stride);
                    let b_at = layout.panel_offset(col, int(Mma::K * ks), stride);
                    s.push(Stmt::Mma(Box::new(Mma {
                        layout,
                        a: a_panel,
                        a_at,
                        b: b_panel,
                        b_at,
                        stride,
                        lane: v(lane),
                        acc: acc.clone(),
                    })));
                }
            }
            s
        });
        body.push(serial(kt, tiles(&d.steps, PANEL_K), vec![load, Stmt::Barrier, compute, Stmt::Barrier]));
    }
    body.push(store_elements(b, p, &tile, &acc, layout));
    Stmt::Loop { var: block, extent: Expr::mul(batches, batch_tiles), kind: LoopKind::GpuBlocks, body }
}

/// The threads' loads of panel `kt` of dot product `d` into shared memory: thread `t` loads
/// elements `t + 256 i` of each (A: row-major over steps, so consecutive threads read
/// consecutive steps of a row; B: consecutive columns). Every level is bound before the
/// `k` levels' lets run: A's to its row and column 0, B's to its batch's first row and its
/// column (neither factor reads the levels it is not bound to).
fn load_panels(
    b: &mut Builder,
    p: &DotProducts,
    d: &DotProduct,
    tile: &Tile,
    kt: VarId,
    panels: [u32; 2],
    layout: MmaLayout,
) -> Stmt {
    let zero = Expr::Const(0.0, p.half);
    let stride = panel_stride(layout);
    let last = |e: &Expr| Expr::sub(e.clone(), int(1));
    b.threads(|b, t| {
        let [i, e, r, kk, kq, j, e2, kk2, c, kq2, cc] =
            ["i", "e", "r", "kk", "kq", "j", "e", "kk", "c", "kq", "cc"].map(|n| b.index(n));
        let mut a_load = vec![
            let_(e, Expr::add(v(t), Expr::mul(v(i), int(BLOCK)))),
            let_(r, Expr::div(v(e), int(PANEL_K))),
            let_(kk, Expr::rem(v(e), int(PANEL_K))),
            let_(kq, Expr::add(Expr::mul(v(kt), int(PANEL_K)), v(kk))),
        ];
        let row = Expr::add(v(tile.row0), v(r));
        bind_rows(p, Expr::add(v(tile.base), Expr::min(row.clone(), last(&tile.per_batch))), &mut a_load);
        bind(&p.cols, int(0), &mut a_load);
        bind(&d.k_levels, Expr::min(v(kq), last(&d.steps)), &mut a_load);
        a_load.extend(d.k_lets.iter().cloned());
        let inside = Expr::binary(BinaryOp::And, lt(row, tile.per_batch.clone()), lt(v(kq), d.steps.clone()));
        a_load.push(Stmt::Store {
            buf: panels[0],
            index: layout.panel_offset(v(r), v(kk), stride),
            value: Expr::select(inside, d.a.clone(), zero.clone()),
        });
        let mut b_load = vec![
            let_(e2, Expr::add(v(t), Expr::mul(v(j), int(BLOCK)))),
            let_(kk2, Expr::div(v(e2), int(TILE))),
            let_(cc, Expr::rem(v(e2), int(TILE))),
            let_(c, Expr::add(v(tile.col0), v(cc))),
            let_(kq2, Expr::add(Expr::mul(v(kt), int(PANEL_K)), v(kk2))),
        ];
        bind_rows(p, v(tile.base), &mut b_load);
        bind(&p.cols, Expr::min(v(c), last(&tile.columns)), &mut b_load);
        bind(&d.k_levels, Expr::min(v(kq2), last(&d.steps)), &mut b_load);
        b_load.extend(d.k_lets.iter().cloned());
        let inside = Expr::binary(BinaryOp::And, lt(v(c), tile.columns.clone()), lt(v(kq2), d.steps.clone()));
        b_load.push(Stmt::Store {
            buf: panels[1],
            index: layout.panel_offset(v(cc), v(kk2), stride),
            value: Expr::select(inside, d.b.clone(), zero),
        });
        let per_thread = TILE * PANEL_K / BLOCK;
        vec![serial(i, int(per_thread), a_load), serial(j, int(per_thread), b_load)]
    })
}

/// Each thread's 16 elements inside the matrix: the element's statements, once per element,
/// with each dot product's accumulator for that element (written out element by element: no
/// run-time choice among the thread's accumulators).
fn store_elements(b: &mut Builder, p: &DotProducts, tile: &Tile, acc: &[Vec<Vec<VarId>>], layout: MmaLayout) -> Stmt {
    b.threads(|b, t| {
        let [lane, w] = ["lane", "w"].map(|n| b.index(n));
        let lanes = layout.lanes();
        let mut s = vec![let_(lane, Expr::rem(v(t), int(lanes))), let_(w, Expr::div(v(t), int(lanes)))];
        for tile_index in 0..tiles_per_warp(layout) {
            for e in 0..layout.accumulators() {
                // Element `e` of instruction tile `tile_index`.
                let [r, c, once] = ["r", "c", "once"].map(|n| b.index(n));
                let (tile_row, tile_col) = warp_part(layout, &v(w), &int(tile_index as i64));
                let (in_row, in_col) = layout.place(&v(lane), &int(e as i64));
                s.push(let_(r, Expr::add(v(tile.row0), Expr::add(tile_row, in_row))));
                s.push(let_(c, Expr::add(v(tile.col0), Expr::add(tile_col, in_col))));
                let mut element = Vec::new();
                bind_rows(p, Expr::add(v(tile.base), v(r)), &mut element);
                bind(&p.cols, v(c), &mut element);
                for (d, acc) in p.products.iter().zip(acc) {
                    element.push(let_(d.acc, v(acc[tile_index][e])));
                }
                element.extend(p.element.iter().map(|s| (*s).clone()));
                let inside =
                    Expr::binary(BinaryOp::And, lt(v(r), tile.per_batch.clone()), lt(v(c), tile.columns.clone()));
                s.push(serial(once, Expr::select(inside, int(1), int(0)), element));
            }
        }
        s
    })
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

    fn constant(e: Expr) -> i64 {
        match e {
            Expr::Int(n) => n,
            e => panic!("not a constant: {e:?}"),
        }
    }

    /// Hopper's `wgmma` accumulators (m64nNk16, f32; PTX ISA "Matrix Fragments for
    /// wgmma.mma_async.m64nNk16", CUTLASS's `CLayout_64xN`) are, per warp of the warpgroup, its
    /// 16 rows as `mma.sync`'s 16 × 8 fragments side by side; together they cover the 64 × 32
    /// tile once, 16 per thread.
    #[test]
    fn hopper_accumulators_are_each_warps_mma_sync_tiles() {
        let (hopper, ampere) = (MmaLayout::Hopper64x32, MmaLayout::Nvidia16x8);
        assert_eq!((hopper.lanes(), hopper.rows(), hopper.columns(), hopper.accumulators()), (128, 64, 32, 16));
        let mut seen = BTreeSet::new();
        for lane in 0..128 {
            for e in 0..16 {
                let (r, c) = hopper.place(&Expr::Int(lane), &Expr::Int(e));
                let (r0, c0) = ampere.place(&Expr::Int(lane % 32), &Expr::Int(e % 4));
                let (r, c) = (constant(r), constant(c));
                assert_eq!((r, c), (16 * (lane / 32) + constant(r0), 8 * (e / 4) + constant(c0)), "lane {lane}, {e}");
                assert!(seen.insert((r, c)), "({r}, {c}) twice");
            }
        }
        assert_eq!(seen.len(), 64 * 32);
    }

    /// The Hopper panels hold every element once, in 8 × 8 core matrices of 64 consecutive
    /// elements (8 lines of 8 steps), 64 elements (128 bytes: the descriptors' leading
    /// dimension byte offset) from the next along `k` and `8 · stride` elements (`16 · stride`
    /// bytes: their stride byte offset) from the next 8 lines — what `mlir::wgmma` encodes.
    #[test]
    fn hopper_panels_are_unswizzled_k_major_core_matrices() {
        let layout = MmaLayout::Hopper64x32;
        let stride = panel_stride(layout);
        let at = |line: i64, k: i64| constant(layout.panel_offset(Expr::Int(line), Expr::Int(k), stride));
        let mut seen = BTreeSet::new();
        for line in 0..TILE {
            for k in 0..PANEL_K {
                let o = at(line, k);
                assert!(seen.insert(o) && (0..TILE * stride).contains(&o), "line {line}, step {k}: {o}");
                let core = at(line - line % 8, k - k % 8);
                assert_eq!(o - core, (line % 8) * 8 + k % 8, "inside a core matrix");
            }
        }
        assert_eq!((at(0, 8), at(8, 0)), (64, 8 * stride));
        // The other layouts keep a row (column) per line.
        assert_eq!(constant(MmaLayout::Nvidia16x8.panel_offset(Expr::Int(3), Expr::Int(5), STRIDE)), 3 * STRIDE + 5);
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
