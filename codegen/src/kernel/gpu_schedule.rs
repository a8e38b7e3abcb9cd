//! GPU scheduling of the kernel IR: [`flatten_parallel`] turns a kernel's perfect loop nest
//! under its parallel loop into one parallel loop over all of its iterations, so that a GPU
//! runs one thread per output element (consecutive threads on consecutive elements: coalesced
//! memory access) instead of one thread per row.
//!
//! The CPU lowering parallelizes only the outermost loop (a batch of 2 gives 2 work items,
//! which suits a CPU's few cores and keeps inner loops SIMD-friendly); a GPU needs thousands
//! of threads. Flattening applies when the parallel loop's body is a perfect nest — at each
//! level `let`s followed by exactly one (serial or vector) loop, whose extent does not depend
//! on the nest — and when its iterations are provably independent: every store in the
//! innermost body writes an index that depends on every loop of the nest, and a buffer it
//! stores is loaded only at an index it stores (an in-place update of the same element).
//! (kiln's lowering stores at row-major linearized indices, which are injective in the loop
//! variables they depend on). A reduction into memory (`out[i] += ...` inside a loop over
//! `k`) fails the first test and is left alone. Otherwise the kernel is returned unchanged: still correct on a GPU, with one
//! thread per iteration of its parallel loop.
//!
//! **The launch range stays the plan's.** One artifact's launch plan serves every target, so
//! a launch's range `[start, end)` counts iterations of the *lowered* kernel's parallel loop
//! (rows, say). A scheduled kernel whose parallel loop runs `n` of its iterations per
//! original one ([`Scheduled::threads_per_item`], the product of the flattened extents) runs
//! threads `start * n .. end * n` of it; the artifact records `n` per kernel and the GPU
//! devices launch `(end - start) * n` threads. `n` must be a polynomial in the symbols (the
//! manifest's sizes are); a nest whose extents are not (a division) is not flattened.

use super::ir::{Expr, Kernel, LoopKind, ScalarType, Stmt, VarId};
use kiln_ir::{BinaryOp, Dim};
use std::collections::{BTreeMap, BTreeSet};

/// A kernel as the GPU targets run it ([`schedule`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduled {
    pub kernel: Kernel,
    /// How many iterations of `kernel`'s first loop a launch over `n` items of the plan's
    /// range runs (threads, or blocks).
    pub grid: GpuGrid,
}

/// How a GPU runs a scheduled kernel for a launch over `items` items of the plan's range.
#[derive(Clone, Debug, PartialEq)]
pub enum GpuGrid {
    /// One thread per iteration of the parallel loop, `n` iterations per item (1 when nothing
    /// was flattened): item `i` is iterations `i * n .. (i + 1) * n`.
    Threads(Dim),
    /// One block of [`BLOCK`] threads per `row_tile × column_tile` tile of an
    /// `items * rows_per_item` by `columns` matrix, or of each of its batches of `batch_rows`
    /// rows (tiles in row-major order, batch after batch): the kernel's first loop is a
    /// `GpuBlocks` loop over the tiles ([`super::gpu_tiles`]).
    Tiles { rows_per_item: Dim, batch_rows: Option<Dim>, row_tile: i64, columns: Dim, column_tile: i64 },
}

/// Threads per GPU block, as the runtime launches them.
pub const BLOCK: i64 = kiln_runtime::device::gpu_launch::BLOCK_THREADS as i64;

impl GpuGrid {
    /// The threads per item of a `Threads` grid.
    pub fn threads_per_item(&self) -> Option<&Dim> {
        match self {
            GpuGrid::Threads(n) => Some(n),
            GpuGrid::Tiles { .. } => None,
        }
    }

    /// Iterations of the first loop (threads, or blocks) for `items` items of the range.
    pub fn iterations(&self, items: i64, value_of: &dyn Fn(kiln_ir::SymId) -> Option<i64>) -> Option<i64> {
        match self {
            GpuGrid::Threads(n) => items.checked_mul(n.eval(value_of)?),
            GpuGrid::Tiles { rows_per_item, batch_rows, row_tile, columns, column_tile } => {
                let rows = items.checked_mul(rows_per_item.eval(value_of)?)?;
                let tiles = |n: i64, t: i64| n.max(0).checked_add(t - 1).map(|x| x / t);
                let column_tiles = tiles(columns.eval(value_of)?, *column_tile)?;
                match batch_rows {
                    None => tiles(rows, *row_tile)?.checked_mul(column_tiles),
                    Some(b) => {
                        let b = b.eval(value_of)?.max(1);
                        (rows / b).checked_mul(tiles(b, *row_tile)?)?.checked_mul(column_tiles)
                    }
                }
            }
        }
    }
}

/// The kernel with its perfect parallel nest flattened into one parallel loop (see the module
/// docs), or a copy of it when it has none or flattening could be unsound.
pub fn flatten_parallel(k: &Kernel) -> Kernel {
    try_flatten(k).map_or_else(|| k.clone(), |(flat, _)| flat)
}

/// The kernel as the GPU targets run it: its [`super::ir::GpuForm`] when the lowering made
/// one (fused attention); f16/bf16 products in tensor-core tiles
/// ([`super::gpu_mma::tensor_core_tiles`]); else [`flatten_parallel`], then f32 matrix
/// products in shared-memory tiles ([`super::gpu_tiles::tile_matmul`]) where they apply, else
/// [`fuse_columns`]; with the grid a launch of it runs.
pub fn schedule(k: &Kernel) -> Scheduled {
    schedule_for(k, super::ir::MmaLayout::Nvidia16x8)
}

/// The fragment layout of GPU target `target`'s matrix instructions (the llvm backend's GPU
/// targets use these), or `None` for a target kiln does not know as a GPU.
pub fn matrix_layout(target: &str) -> Option<super::ir::MmaLayout> {
    use super::ir::MmaLayout::*;
    match target {
        "sm_80" | "sm_90" => Some(Nvidia16x8),
        "sm_90a" => Some(Hopper64x32),
        "gfx90a" | "gfx942" => Some(Cdna16x16),
        "gfx1100" => Some(Rdna16x16),
        _ => None,
    }
}

/// [`schedule`] for a target whose matrix instructions have the fragment layout `matrix`
/// (the tensor-core tiles' warps and accumulators follow it; everything else, the grid
/// included, is the same for every target).
pub fn schedule_for(k: &Kernel, matrix: super::ir::MmaLayout) -> Scheduled {
    if let Some(form) = &k.gpu_form {
        return Scheduled { kernel: form.kernel.clone(), grid: form.grid.clone() };
    }
    if let Some(tiled) = super::gpu_mma::tensor_core_tiles(k, matrix) {
        return tiled;
    }
    // A product computed one dot product per element (`x @ Wᵀ` with `W` stored `n × k`) is
    // tiled in its row form, when it tiles.
    if let Some(rows) = super::gpu_tiles::rows_of_dot_products(k) {
        let s = schedule_rows(&rows);
        if matches!(s.grid, GpuGrid::Tiles { .. }) {
            return s;
        }
    }
    schedule_rows(k)
}

fn schedule_rows(k: &Kernel) -> Scheduled {
    let (flat, rows_per_item) = try_flatten(k).unwrap_or_else(|| (k.clone(), Dim::constant(1)));
    if let Some(fused) = fuse_columns(&flat) {
        // Tiles only where every element could also run alone (the same soundness checks).
        if let Some(tiled) = super::gpu_tiles::tile_matmul(&flat, &rows_per_item) {
            return tiled;
        }
        let (kernel, per_row) = fused;
        return Scheduled { kernel, grid: GpuGrid::Threads(rows_per_item.mul(&per_row)) };
    }
    Scheduled { kernel: flat, grid: GpuGrid::Threads(rows_per_item) }
}

/// `e` as a polynomial in the symbols, when it is one (constants, symbols, `+`, `*`).
pub fn dim_of(e: &Expr) -> Option<Dim> {
    Some(match e {
        Expr::Int(v) => Dim::constant(*v),
        Expr::Sym(s) => Dim::symbol(*s),
        Expr::Binary(BinaryOp::Add, a, b) => dim_of(a)?.add(&dim_of(b)?),
        Expr::Binary(BinaryOp::Mul, a, b) => dim_of(a)?.mul(&dim_of(b)?),
        _ => return None,
    })
}

/// A polynomial in the symbols as a kernel expression (the inverse of [`dim_of`]).
pub fn dim_expr(d: &Dim) -> Expr {
    d.monomials().iter().fold(Expr::Int(0), |sum, (mono, c)| {
        let term = mono.iter().fold(Expr::Int(*c), |t, s| Expr::mul(t, Expr::Sym(*s)));
        Expr::add(sum, term)
    })
}

/// One thread per element of a row: when the parallel loop's body computes its row tile by
/// tile — in several loop nests over one shape `dims` (a matmul's zeroing, `k` loop and
/// epilogue, each ending in a vector loop over the row's `n` columns; a convolution's output
/// plane, `h × w`, zeroed, accumulated over input channels and kernel taps, then its
/// epilogue) — the kernel becomes one parallel loop over `rows × dims` whose iteration runs the
/// body for its own element: each of those nests becomes `let`s of the element's coordinates,
/// the other loops stay (a matmul's `k` loop runs in every thread, accumulating one element in
/// a register). `None` unless it is sound: the body's stores and accumulators are all inside
/// such nests, every store's index depends on the row and every coordinate, and a stored
/// buffer is only loaded at an index stored by the same element. Row reductions (softmax,
/// norms: an accumulator outside the nests) are left alone. Also returns the elements per
/// row (the threads each row becomes), which must be a polynomial in the symbols.
pub fn fuse_columns(k: &Kernel) -> Option<(Kernel, Dim)> {
    let [Stmt::Loop { var: row, extent: rows, kind: LoopKind::Parallel, body }] = k.body.as_slice() else {
        return None;
    };
    let dims = tile_dims(body)?;
    let everything = all_vars(k);
    if dims.iter().any(|d| uses_any(d, &everything)) {
        return None;
    }
    let mut vars = k.vars.clone();
    let coords: Vec<VarId> = dims
        .iter()
        .map(|_| {
            let v = VarId(vars.len() as u32);
            vars.push((format!("c{}", v.0), ScalarType::Index));
            v
        })
        .collect();
    let flat = VarId(vars.len() as u32);
    vars.push((format!("g{}", flat.0), ScalarType::Index));
    let mut renamed: Vec<BTreeSet<VarId>> = vec![BTreeSet::new(); dims.len()];
    let new_body = rewrite_tiles(body, &dims, &coords, false, &mut renamed)?;
    // Independence: with every replaced loop variable read as its coordinate, stores depend
    // on the row and every coordinate, and stored buffers are read back only where stored.
    let mut canonical = new_body.clone();
    for (from, to) in renamed.iter().zip(&coords) {
        canonical = canonical.iter().map(|s| rename_stmt(s, from, *to)).collect();
    }
    let mut deps: BTreeMap<VarId, BTreeSet<VarId>> = BTreeMap::from([(*row, BTreeSet::from([*row]))]);
    let mut levels = BTreeSet::from([*row]);
    for c in &coords {
        deps.insert(*c, BTreeSet::from([*c]));
        levels.insert(*c);
    }
    if !independent(&canonical, &mut deps, &levels) {
        return None;
    }
    // Row-major: the last coordinate varies fastest.
    let mut out = Vec::new();
    let mut stride = Expr::Int(1);
    for (c, d) in coords.iter().zip(&dims).rev() {
        out.push(Stmt::Let { var: *c, value: Expr::rem(Expr::div(Expr::var(flat), stride.clone()), d.clone()) });
        stride = Expr::mul(stride, d.clone());
    }
    out.push(Stmt::Let { var: *row, value: Expr::div(Expr::var(flat), stride.clone()) });
    out.reverse();
    out.extend(new_body);
    let per_row = dim_of(&stride)?;
    let fused = Kernel {
        name: k.name.clone(),
        buffers: k.buffers.clone(),
        vars,
        body: vec![Stmt::Loop {
            var: flat,
            extent: Expr::mul(rows.clone(), stride),
            kind: LoopKind::Parallel,
            body: out,
        }],
        fused: k.fused.clone(),
        gpu_form: None,
    };
    Some((fused, per_row))
}

/// Lanes of the group that shares one row in [`warp_rows`] (a warp on NVIDIA GPUs; half a
/// wavefront on CDNA, a wavefront on RDNA).
pub const WARP: u32 = 32;

/// How a row kernel runs with one warp of [`WARP`] lanes per row ([`warp_rows`]): the row
/// body's statements by index, the reduction loops with the accumulators they combine across
/// lanes (and how), and the element loops whose iterations the lanes share.
#[derive(Clone, Debug, PartialEq)]
pub struct WarpRows {
    /// (statement index, [(accumulator, combining operation)]).
    pub reductions: Vec<(usize, Vec<(VarId, BinaryOp)>)>,
    /// Statement indices of the element loops.
    pub element_loops: Vec<usize>,
}

/// A row kernel that [`schedule`] leaves at one thread per row because its row reduces (layer
/// norm, RMS norm, softmax, a mean): whether a warp of [`WARP`] lanes can run each row
/// instead — lane `l` takes iterations `l, l + 32, ...` of every reduction and element loop,
/// and after each reduction loop its accumulators are combined across the lanes (butterfly
/// shuffles), so every lane goes on with the row's totals. Memory is then read in
/// consecutive elements by consecutive lanes.
///
/// Sound only for this shape, which is checked: the row body holds `let`s, accumulator
/// declarations (f32, initialized to the identity of their reduction), reduction loops
/// (serial nests whose innermost body holds `let`s and updates `acc = acc ∘ e` with `∘` one of
/// `+ * max min`, `e` reading no accumulator updated in the loop, each accumulator updated in
/// one loop only) and element loops (holding every store of the row; each store's index
/// depends on the loop's variable; a stored buffer is read only in the loop that stores it, at
/// a stored index, so no lane reads what another lane wrote). The combination reassociates the
/// sums: results differ from the sequential order in the last bits, so backends use this only
/// when they may (`fp_contract`).
pub fn warp_rows(k: &Kernel) -> Option<WarpRows> {
    let [Stmt::Loop { kind: LoopKind::Parallel, body, .. }] = k.body.as_slice() else { return None };
    let mut stored = BTreeSet::new();
    collect_stores(body, &mut stored);
    let mut inits: BTreeMap<VarId, Expr> = BTreeMap::new();
    let mut updated: BTreeSet<VarId> = BTreeSet::new();
    let mut plan = WarpRows { reductions: Vec::new(), element_loops: Vec::new() };
    for (i, s) in body.iter().enumerate() {
        match s {
            Stmt::Let { value, .. } => {
                if reads_any(value, &stored) {
                    return None;
                }
            }
            Stmt::Decl { var, init } => {
                if k.vars.get(var.0 as usize)?.1 != ScalarType::Elem(kiln_ir::DType::F32) {
                    return None;
                }
                inits.insert(*var, init.clone());
            }
            Stmt::Loop { var, extent, body: inner, .. } if contains_store(inner) => {
                if reads_any(extent, &stored) || !element_loop_is_lane_local(*var, inner, &stored) {
                    return None;
                }
                plan.element_loops.push(i);
            }
            Stmt::Loop { kind: LoopKind::Serial, extent, body: inner, .. } => {
                if reads_any(extent, &stored) {
                    return None;
                }
                let accs = reduction_updates(inner, &inits, &stored)?;
                if accs.is_empty() || accs.iter().any(|(a, _)| !updated.insert(*a)) {
                    return None;
                }
                plan.reductions.push((i, accs));
            }
            _ => return None,
        }
    }
    (!plan.reductions.is_empty()).then_some(plan)
}

/// One line for `--emit gpu-kernel` saying how [`warp_rows`] runs `k`.
pub fn describe_warp_rows(k: &Kernel, plan: &WarpRows) -> String {
    let [Stmt::Loop { body, .. }] = k.body.as_slice() else { return String::new() };
    let name = |v: VarId| k.vars.get(v.0 as usize).map_or_else(|| format!("v{}", v.0), |(n, _)| n.clone());
    let loop_var = |i: usize| match &body[i] {
        Stmt::Loop { var, .. } => name(*var),
        _ => "?".into(),
    };
    let reductions: Vec<String> = plan
        .reductions
        .iter()
        .map(|(i, accs)| {
            let accs: Vec<String> = accs.iter().map(|(a, op)| format!("{} ({})", name(*a), op.name())).collect();
            format!("{} into {}", loop_var(*i), accs.join(", "))
        })
        .collect();
    let elements: Vec<String> = plan.element_loops.iter().map(|&i| loop_var(i)).collect();
    format!(
        "  # GPU: one warp of {WARP} lanes per row; lanes share the reductions {} (combined by butterfly shuffles) and the element loops {}",
        reductions.join("; "),
        if elements.is_empty() { "(none)".to_string() } else { elements.join(", ") }
    )
}

/// The (accumulator, operation) pairs a reduction nest updates, or `None` when `body` is not
/// a reduction nest (see [`warp_rows`]).
fn reduction_updates(
    body: &[Stmt],
    inits: &BTreeMap<VarId, Expr>,
    stored: &BTreeSet<u32>,
) -> Option<Vec<(VarId, BinaryOp)>> {
    if let [Stmt::Loop { kind: LoopKind::Serial, extent, body: inner, .. }] = body {
        return if reads_any(extent, stored) { None } else { reduction_updates(inner, inits, stored) };
    }
    let mut updates: Vec<(VarId, BinaryOp, &Expr)> = Vec::new();
    for s in body {
        match s {
            Stmt::Let { value, .. } if !reads_any(value, stored) => {}
            Stmt::Assign { var, value: Expr::Binary(op, a, b) } => {
                let e = match (&**a, &**b) {
                    (Expr::Var(v), e) | (e, Expr::Var(v)) if v == var => e,
                    _ => return None,
                };
                let identity = match op {
                    BinaryOp::Add => 0.0,
                    BinaryOp::Mul => 1.0,
                    BinaryOp::Max => f64::NEG_INFINITY,
                    BinaryOp::Min => f64::INFINITY,
                    _ => return None,
                };
                match inits.get(var) {
                    Some(Expr::Const(c, _)) if *c == identity => {}
                    _ => return None,
                }
                if reads_any(e, stored) || updates.iter().any(|(v, ..)| v == var) {
                    return None;
                }
                updates.push((*var, *op, e));
            }
            _ => return None,
        }
    }
    let assigned: BTreeSet<VarId> = updates.iter().map(|(v, ..)| *v).collect();
    if updates.iter().any(|(_, _, e)| uses_any(e, &assigned)) {
        return None;
    }
    // `let`s must not read the accumulators either (they would see a lane's partial value).
    if body.iter().any(|s| matches!(s, Stmt::Let { value, .. } if uses_any(value, &assigned))) {
        return None;
    }
    Some(updates.into_iter().map(|(v, op, _)| (v, op)).collect())
}

/// Whether the element loop over `var` with body `body` touches only its own elements: every
/// store's index depends on `var`, and every load of a buffer the row stores (`stored`)
/// reads an index this loop stores; no accumulator of the row is updated.
fn element_loop_is_lane_local(var: VarId, body: &[Stmt], stored: &BTreeSet<u32>) -> bool {
    let mut own = BTreeSet::new();
    collect_stores(body, &mut own);
    let mut reads_others = false;
    visit_stmts(body, &mut |s| {
        let exprs: Vec<&Expr> = match s {
            Stmt::Loop { extent, .. } => vec![extent],
            Stmt::Let { value, .. } | Stmt::Decl { init: value, .. } | Stmt::Assign { value, .. } => vec![value],
            Stmt::Store { index, value, .. } => vec![index, value],
            Stmt::Barrier => vec![],
            Stmt::Mma(m) => vec![&m.a_at, &m.b_at, &m.lane],
        };
        for e in exprs {
            e.visit(&mut |x| {
                if let Expr::Load { buf, .. } = x {
                    reads_others |= stored.contains(buf) && !own.contains(buf);
                }
            });
        }
    });
    if reads_others {
        return false;
    }
    let mut deps: BTreeMap<VarId, BTreeSet<VarId>> = BTreeMap::from([(var, BTreeSet::from([var]))]);
    let mut declared = BTreeSet::new();
    collect_decls(body, &mut declared);
    let mut assigns_outer = false;
    visit_stmts(body, &mut |s| {
        if let Stmt::Assign { var, .. } = s {
            assigns_outer |= !declared.contains(var);
        }
    });
    !assigns_outer && independent(body, &mut deps, &BTreeSet::from([var]))
}

fn collect_stores(body: &[Stmt], out: &mut BTreeSet<u32>) {
    visit_stmts(body, &mut |s| {
        if let Stmt::Store { buf, .. } = s {
            out.insert(*buf);
        }
    });
}

fn collect_decls(body: &[Stmt], out: &mut BTreeSet<VarId>) {
    visit_stmts(body, &mut |s| {
        if let Stmt::Decl { var, .. } = s {
            out.insert(*var);
        }
    });
}

fn contains_store(body: &[Stmt]) -> bool {
    let mut found = false;
    visit_stmts(body, &mut |s| found |= matches!(s, Stmt::Store { .. }));
    found
}

/// Calls `f` on every statement of `body`, loops' bodies included.
fn visit_stmts(body: &[Stmt], f: &mut dyn FnMut(&Stmt)) {
    for s in body {
        f(s);
        if let Stmt::Loop { body, .. } = s {
            visit_stmts(body, f);
        }
    }
}

/// Whether `e` loads from any buffer of `bufs`.
fn reads_any(e: &Expr, bufs: &BTreeSet<u32>) -> bool {
    let mut found = false;
    e.visit(&mut |x| found |= matches!(x, Expr::Load { buf, .. } if bufs.contains(buf)));
    found
}

/// The shape of the row's tiles: the extents of the first vector loop in `body` (depth first)
/// and of the loops around it that hold nothing but `let`s and it (a perfect nest).
fn tile_dims(body: &[Stmt]) -> Option<Vec<Expr>> {
    for s in body {
        let Stmt::Loop { extent, kind, body: inner, .. } = s else { continue };
        if matches!(kind, LoopKind::Vector(_)) {
            return Some(vec![extent.clone()]);
        }
        if let Some(mut dims) = tile_dims(inner) {
            let perfect = matches!(inner.split_last(), Some((Stmt::Loop { .. }, lets))
                if lets.iter().all(|l| matches!(l, Stmt::Let { .. })));
            let innermost_is_next = dims.len() == chain_len(inner);
            if perfect && innermost_is_next && *kind == LoopKind::Serial {
                dims.insert(0, extent.clone());
            }
            return Some(dims);
        }
    }
    None
}

/// The number of loops in the perfect chain that `body` ends with, down to a vector loop
/// (0 when `body` does not end in one).
fn chain_len(body: &[Stmt]) -> usize {
    match body.split_last() {
        Some((Stmt::Loop { kind: LoopKind::Vector(_), .. }, lets))
            if lets.iter().all(|l| matches!(l, Stmt::Let { .. })) =>
        {
            1
        }
        Some((Stmt::Loop { kind: LoopKind::Serial, body, .. }, lets))
            if lets.iter().all(|l| matches!(l, Stmt::Let { .. })) =>
        {
            match chain_len(body) {
                0 => 0,
                n => n + 1,
            }
        }
        _ => 0,
    }
}

/// If `s` starts a tile nest — loops with the extents `dims`, each holding only `let`s and
/// the next, the last a vector loop — its statements with each loop replaced by `let var =
/// coordinate` (the loop variables recorded in `renamed`).
fn as_tile(s: &Stmt, dims: &[Expr], coords: &[VarId], renamed: &mut [BTreeSet<VarId>]) -> Option<Vec<Stmt>> {
    let Stmt::Loop { var, extent, kind, body } = s else { return None };
    let last = dims.len() == 1;
    let kind_fits = if last { matches!(kind, LoopKind::Vector(_)) } else { *kind == LoopKind::Serial };
    if extent != &dims[0] || !kind_fits {
        return None;
    }
    let mut out = vec![Stmt::Let { var: *var, value: Expr::var(coords[0]) }];
    if last {
        renamed[0].insert(*var);
        out.extend(body.iter().cloned());
        return Some(out);
    }
    let (next, lets) = body.split_last()?;
    if !lets.iter().all(|l| matches!(l, Stmt::Let { .. })) {
        return None;
    }
    let inner = as_tile(next, &dims[1..], &coords[1..], &mut renamed[1..])?;
    renamed[0].insert(*var);
    out.extend(lets.iter().cloned());
    out.extend(inner);
    Some(out)
}

/// Every variable of `k`.
fn all_vars(k: &Kernel) -> BTreeSet<VarId> {
    (0..k.vars.len() as u32).map(VarId).collect()
}

/// `body` with each tile nest ([`as_tile`]) replaced by its element's statements; `None` when
/// a store or an accumulator sits outside one, or a tile nest inside another.
fn rewrite_tiles(
    body: &[Stmt],
    dims: &[Expr],
    coords: &[VarId],
    in_tile: bool,
    renamed: &mut [BTreeSet<VarId>],
) -> Option<Vec<Stmt>> {
    let mut out = Vec::new();
    for s in body {
        if let Some(element) = as_tile(s, dims, coords, renamed) {
            if in_tile {
                return None;
            }
            out.extend(rewrite_tiles(&element, dims, coords, true, renamed)?);
            continue;
        }
        match s {
            Stmt::Loop { var, extent, kind, body } => {
                let inner = rewrite_tiles(body, dims, coords, in_tile, renamed)?;
                out.push(Stmt::Loop { var: *var, extent: extent.clone(), kind: *kind, body: inner });
            }
            Stmt::Store { .. } | Stmt::Decl { .. } | Stmt::Assign { .. } if !in_tile => return None,
            other => out.push(other.clone()),
        }
    }
    Some(out)
}

/// `s` with every read of a variable in `from` replaced by `to` (for comparing indices).
pub(super) fn rename_stmt(s: &Stmt, from: &BTreeSet<VarId>, to: VarId) -> Stmt {
    let e = |x: &Expr| rename(x, from, to);
    match s {
        Stmt::Loop { var, extent, kind, body } => Stmt::Loop {
            var: *var,
            extent: e(extent),
            kind: *kind,
            body: body.iter().map(|b| rename_stmt(b, from, to)).collect(),
        },
        Stmt::Let { var, value } if from.contains(var) => Stmt::Let { var: to, value: e(value) },
        Stmt::Let { var, value } => Stmt::Let { var: *var, value: e(value) },
        Stmt::Decl { var, init } => Stmt::Decl { var: *var, init: e(init) },
        Stmt::Assign { var, value } => Stmt::Assign { var: *var, value: e(value) },
        Stmt::Store { buf, index, value } => Stmt::Store { buf: *buf, index: e(index), value: e(value) },
        Stmt::Barrier => Stmt::Barrier,
        Stmt::Mma(m) => Stmt::Mma(Box::new(super::ir::Mma { a_at: e(&m.a_at), b_at: e(&m.b_at), lane: e(&m.lane), ..(**m).clone() })),
    }
}

/// `x` with every read of a variable in `from` replaced by `to`.
pub(super) fn rename(x: &Expr, from: &BTreeSet<VarId>, to: VarId) -> Expr {
    match x {
        Expr::Var(v) if from.contains(v) => Expr::Var(to),
        _ => x.map_children(&|y| rename(y, from, to)),
    }
}

fn try_flatten(k: &Kernel) -> Option<(Kernel, Dim)> {
    let [Stmt::Loop { var, extent, kind: LoopKind::Parallel, body }] = k.body.as_slice() else { return None };
    let mut levels: Vec<(VarId, Expr)> = vec![(*var, extent.clone())];
    let mut lets: Vec<Stmt> = Vec::new();
    let mut bound: BTreeSet<VarId> = BTreeSet::from([*var]);
    let mut inner: &[Stmt] = body;
    while let Some((Stmt::Loop { var, extent, kind, body }, before)) = inner.split_last() {
        if *kind == LoopKind::Parallel || !before.iter().all(|s| matches!(s, Stmt::Let { .. })) {
            break;
        }
        for s in before {
            if let Stmt::Let { var, .. } = s {
                bound.insert(*var);
            }
        }
        if uses_any(extent, &bound) {
            break;
        }
        lets.extend(before.iter().cloned());
        levels.push((*var, extent.clone()));
        bound.insert(*var);
        inner = body;
        if matches!(kind, LoopKind::Vector(_)) {
            break; // vector loops are innermost
        }
    }
    if levels.len() < 2 {
        return None;
    }
    let level_vars: BTreeSet<VarId> = levels.iter().map(|(v, _)| *v).collect();
    // What each `let` of the nest depends on, among the nest's loop variables.
    let mut deps: BTreeMap<VarId, BTreeSet<VarId>> = level_vars.iter().map(|v| (*v, BTreeSet::from([*v]))).collect();
    for s in &lets {
        if let Stmt::Let { var, value } = s {
            let d = depends_on(value, &deps);
            deps.insert(*var, d);
        }
    }
    if !independent(inner, &mut deps, &level_vars) {
        return None;
    }

    // One parallel loop over the product of the extents; each level's index is recovered
    // from the flat one (row-major: the innermost level varies fastest).
    let mut vars = k.vars.clone();
    let flat = VarId(vars.len() as u32);
    vars.push((format!("g{}", flat.0), ScalarType::Index));
    let mut new_body = Vec::new();
    let mut stride = Expr::Int(1);
    for (i, (v, e)) in levels.iter().enumerate().rev() {
        let q = Expr::div(Expr::var(flat), stride.clone());
        let value = if i == 0 { q } else { Expr::rem(q, e.clone()) };
        new_body.push(Stmt::Let { var: *v, value });
        stride = Expr::mul(stride, e.clone());
    }
    new_body.reverse();
    new_body.extend(lets);
    new_body.extend(inner.iter().cloned());
    let total = levels.iter().fold(Expr::Int(1), |acc, (_, e)| Expr::mul(acc, e.clone()));
    let per_item = levels[1..].iter().try_fold(Dim::constant(1), |acc, (_, e)| Some(acc.mul(&dim_of(e)?)))?;
    let flattened = Kernel {
        name: k.name.clone(),
        buffers: k.buffers.clone(),
        vars,
        body: vec![Stmt::Loop { var: flat, extent: total, kind: LoopKind::Parallel, body: new_body }],
        fused: k.fused.clone(),
        gpu_form: None,
    };
    Some((flattened, per_item))
}

/// Whether the iterations of the nest whose innermost body is `body` are independent: every
/// store's index depends on every variable of `levels`, and every load of a stored buffer
/// reads an index some store of it writes. `deps` maps variables to the nest variables they
/// depend on and grows with the `let`s of `body`.
fn independent(body: &[Stmt], deps: &mut BTreeMap<VarId, BTreeSet<VarId>>, levels: &BTreeSet<VarId>) -> bool {
    let mut stores: BTreeMap<u32, Vec<Expr>> = BTreeMap::new();
    let mut loads: Vec<(u32, Expr)> = Vec::new();
    if !walk(body, deps, levels, &mut stores, &mut loads) {
        return false;
    }
    loads.iter().all(|(b, index)| stores.get(b).is_none_or(|written| written.contains(index)))
}

fn walk(
    body: &[Stmt],
    deps: &mut BTreeMap<VarId, BTreeSet<VarId>>,
    levels: &BTreeSet<VarId>,
    stores: &mut BTreeMap<u32, Vec<Expr>>,
    loads: &mut Vec<(u32, Expr)>,
) -> bool {
    for s in body {
        match s {
            Stmt::Loop { var, extent, body, .. } => {
                collect_loads(extent, loads);
                deps.insert(*var, BTreeSet::new());
                if !walk(body, deps, levels, stores, loads) {
                    return false;
                }
            }
            Stmt::Let { var, value } | Stmt::Decl { var, init: value } | Stmt::Assign { var, value } => {
                collect_loads(value, loads);
                let d = depends_on(value, deps);
                // An accumulator depends on everything ever assigned to it.
                deps.entry(*var).or_default().extend(d);
            }
            Stmt::Store { buf, index, value } => {
                collect_loads(index, loads);
                collect_loads(value, loads);
                if !levels.is_subset(&depends_on(index, deps)) {
                    return false;
                }
                stores.entry(*buf).or_default().push(index.clone());
            }
            // Threads that wait for each other are not independent iterations.
            Stmt::Barrier | Stmt::Mma(_) => return false,
        }
    }
    true
}

/// The nest variables `e` depends on, through `deps`.
fn depends_on(e: &Expr, deps: &BTreeMap<VarId, BTreeSet<VarId>>) -> BTreeSet<VarId> {
    let mut out = BTreeSet::new();
    e.visit(&mut |x| {
        if let Expr::Var(v) = x {
            if let Some(d) = deps.get(v) {
                out.extend(d.iter().copied());
            }
        }
    });
    out
}

fn uses_any(e: &Expr, vars: &BTreeSet<VarId>) -> bool {
    let mut found = false;
    e.visit(&mut |x| found |= matches!(x, Expr::Var(v) if vars.contains(v)));
    found
}

fn collect_loads(e: &Expr, loads: &mut Vec<(u32, Expr)>) {
    e.visit(&mut |x| {
        if let Expr::Load { buf, index } = x {
            loads.push((*buf, (**index).clone()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Access, BufferParam};
    use kiln_ir::{DType, Dim};

    fn buffer(name: &str, access: Access, len: i64) -> BufferParam {
        BufferParam { name: name.into(), dtype: DType::F32, access, len: Dim::constant(len) }
    }

    fn kernel(body: Vec<Stmt>, vars: usize) -> Kernel {
        Kernel {
            name: "k".into(),
            buffers: vec![buffer("out", Access::Write, 12), buffer("x", Access::Read, 12)],
            vars: (0..vars).map(|i| (format!("v{i}"), ScalarType::Index)).collect(),
            body,
            fused: vec![],
            gpu_form: None,
        }
    }

    fn lp(var: u32, extent: i64, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
        Stmt::Loop { var: VarId(var), extent: Expr::Int(extent), kind, body }
    }

    fn index(i: u32, j: u32) -> Expr {
        Expr::add(Expr::mul(Expr::var(VarId(i)), Expr::Int(4)), Expr::var(VarId(j)))
    }

    #[test]
    fn an_elementwise_nest_becomes_one_parallel_loop() {
        let store = Stmt::Store {
            buf: 0,
            index: index(0, 1),
            value: Expr::binary(BinaryOp::Mul, Expr::load(1, index(0, 1)), Expr::Const(2.0, DType::F32)),
        };
        let k = kernel(vec![lp(0, 3, LoopKind::Parallel, vec![lp(1, 4, LoopKind::Vector(4), vec![store.clone()])])], 2);
        let f = flatten_parallel(&k);
        let [Stmt::Loop { var, extent, kind: LoopKind::Parallel, body }] = f.body.as_slice() else { panic!("{f:?}") };
        assert_eq!((*var, extent), (VarId(2), &Expr::Int(12)));
        assert_eq!(body.len(), 3);
        assert_eq!(body[0], Stmt::Let { var: VarId(0), value: Expr::div(Expr::var(VarId(2)), Expr::Int(4)) });
        assert_eq!(body[1], Stmt::Let { var: VarId(1), value: Expr::rem(Expr::var(VarId(2)), Expr::Int(4)) });
        assert_eq!(body[2], store);
    }

    /// The threads per launch-range item are the flattened extents, symbolic ones too; an
    /// extent that is not a polynomial in the symbols (the manifest could not say how many
    /// threads to launch) keeps the kernel as it is.
    #[test]
    fn flattening_reports_the_threads_per_item_and_needs_polynomial_extents() {
        let n = kiln_ir::SymId(0);
        let store = |extent: Expr| {
            let index = Expr::add(Expr::mul(Expr::var(VarId(0)), extent.clone()), Expr::var(VarId(1)));
            let body = vec![Stmt::Store { buf: 0, index: index.clone(), value: Expr::load(1, index) }];
            let inner = Stmt::Loop { var: VarId(1), extent, kind: LoopKind::Vector(4), body };
            kernel(vec![lp(0, 3, LoopKind::Parallel, vec![inner])], 2)
        };
        let s = schedule(&store(Expr::mul(Expr::Sym(n), Expr::Int(2))));
        assert_eq!(s.grid, GpuGrid::Threads(Dim::symbol(n).scale(2)));
        assert_eq!(dim_expr(s.grid.threads_per_item().unwrap()), Expr::mul(Expr::Int(2), Expr::Sym(n)));
        let halved = store(Expr::div(Expr::Sym(n), Expr::Int(2)));
        let s = schedule(&halved);
        assert_eq!((s.kernel, s.grid), (halved, GpuGrid::Threads(Dim::constant(1))));
    }

    /// A matmul row as kiln lowers it: zero the row, accumulate over `k`, then an epilogue.
    fn matmul_row(epilogue_reads_other_column: bool) -> Kernel {
        let out = |j: u32| index(0, j);
        let zero = Stmt::Store { buf: 0, index: out(1), value: Expr::Const(0.0, DType::F32) };
        let a = Stmt::Let { var: VarId(3), value: Expr::load(1, index(0, 2)) };
        let update = Stmt::Store {
            buf: 0,
            index: out(4),
            value: Expr::binary(
                BinaryOp::Add,
                Expr::load(0, out(4)),
                Expr::binary(BinaryOp::Mul, Expr::var(VarId(3)), Expr::load(1, index(2, 4))),
            ),
        };
        // The other column: out[i * 4 + (3 - j)].
        let mirrored =
            Expr::add(Expr::mul(Expr::var(VarId(0)), Expr::Int(4)), Expr::sub(Expr::Int(3), Expr::var(VarId(5))));
        let read = if epilogue_reads_other_column { mirrored } else { out(5) };
        let epilogue =
            Stmt::Store { buf: 0, index: out(5), value: Expr::unary(kiln_ir::UnaryOp::Neg, Expr::load(0, read)) };
        kernel(
            vec![lp(
                0,
                3,
                LoopKind::Parallel,
                vec![
                    lp(1, 4, LoopKind::Vector(4), vec![zero]),
                    lp(2, 3, LoopKind::Serial, vec![a, lp(4, 4, LoopKind::Vector(4), vec![update])]),
                    lp(5, 4, LoopKind::Vector(4), vec![epilogue]),
                ],
            )],
            6,
        )
    }

    #[test]
    fn a_matmul_row_runs_one_thread_per_column() {
        let k = matmul_row(false);
        let s = schedule(&k);
        assert_eq!(s.grid, GpuGrid::Threads(Dim::constant(4)), "each row of the launch range is 4 threads");
        let s = s.kernel;
        let [Stmt::Loop { extent, kind: LoopKind::Parallel, body, .. }] = s.body.as_slice() else { panic!("{s:?}") };
        assert_eq!(extent, &Expr::Int(12));
        // row, column, then `let j1 = column; zero`, the k loop with `let j4 = column`, and
        // `let j5 = column; epilogue`.
        assert_eq!(body.len(), 7, "{body:?}");
        let Stmt::Loop { var: VarId(2), body: k_body, .. } = &body[4] else { panic!("{:?}", body[4]) };
        assert_eq!(k_body[1], Stmt::Let { var: VarId(4), value: Expr::var(VarId(6)) });
    }

    /// A convolution's plane as kiln lowers it: zero the 2×4 plane, accumulate it over 3 taps,
    /// then an epilogue; every step a (row, column) nest.
    #[test]
    fn a_convolution_plane_runs_one_thread_per_output_element() {
        // out[p*8 + h*4 + w]
        let at = |h: u32, w: u32| {
            Expr::add(
                Expr::add(Expr::mul(Expr::var(VarId(0)), Expr::Int(8)), Expr::mul(Expr::var(VarId(h)), Expr::Int(4))),
                Expr::var(VarId(w)),
            )
        };
        let plane =
            |h: u32, w: u32, body: Stmt| lp(h, 2, LoopKind::Serial, vec![lp(w, 4, LoopKind::Vector(4), vec![body])]);
        let zero = Stmt::Store { buf: 0, index: at(1, 2), value: Expr::Const(0.0, DType::F32) };
        let tap = Stmt::Store {
            buf: 0,
            index: at(4, 5),
            value: Expr::binary(BinaryOp::Add, Expr::load(0, at(4, 5)), Expr::load(1, Expr::var(VarId(3)))),
        };
        let relu = Stmt::Store {
            buf: 0,
            index: at(6, 7),
            value: Expr::unary(kiln_ir::UnaryOp::Relu, Expr::load(0, at(6, 7))),
        };
        let mut k = kernel(
            vec![lp(
                0,
                3,
                LoopKind::Parallel,
                vec![plane(1, 2, zero), lp(3, 3, LoopKind::Serial, vec![plane(4, 5, tap)]), plane(6, 7, relu)],
            )],
            8,
        );
        k.buffers[0].len = Dim::constant(24);
        let s = schedule(&k);
        assert_eq!(s.grid, GpuGrid::Threads(Dim::constant(8)));
        let s = s.kernel;
        let [Stmt::Loop { extent, kind: LoopKind::Parallel, body, .. }] = s.body.as_slice() else { panic!("{s:?}") };
        assert_eq!(extent, &Expr::Int(24), "one thread per output element");
        // row, h, w coordinates; then the zeroing, the tap loop and the epilogue per element.
        assert!(matches!(body[3], Stmt::Let { var: VarId(1), .. }), "{:?}", body[3]);
        assert!(body.iter().any(|b| matches!(b, Stmt::Loop { var: VarId(3), .. })), "{body:?}");
    }

    /// A layer-norm row of 4 elements as kiln lowers it: a mean, a variance, then the
    /// normalized elements. `twice`: the variance accumulates into the mean's accumulator
    /// (which one warp per row would count 32 times); `reread`: the element loop reads the
    /// output of another element loop.
    fn norm_row(twice: bool, reread: bool, dtype: DType) -> Kernel {
        let x = |v: u32| Expr::load(1, index(0, v));
        let (mean, var) = (VarId(2), if twice { VarId(2) } else { VarId(4) });
        let acc = |a: VarId, e: Expr| Stmt::Assign { var: a, value: Expr::binary(BinaryOp::Add, Expr::var(a), e) };
        let t = |v: u32, a: VarId| Stmt::Let {
            var: VarId(v),
            value: Expr::binary(BinaryOp::Div, Expr::var(a), Expr::Const(4.0, DType::F32)),
        };
        let centered = Expr::binary(BinaryOp::Sub, x(8), Expr::var(VarId(5)));
        let mut body = vec![
            Stmt::Decl { var: mean, init: Expr::Const(0.0, DType::F32) },
            lp(3, 4, LoopKind::Serial, vec![acc(mean, x(3))]),
            t(5, mean),
        ];
        if !twice {
            body.push(Stmt::Decl { var, init: Expr::Const(0.0, DType::F32) });
        }
        let d = Expr::binary(BinaryOp::Sub, x(6), Expr::var(VarId(5)));
        body.push(lp(6, 4, LoopKind::Serial, vec![acc(var, Expr::binary(BinaryOp::Mul, d.clone(), d))]));
        body.push(t(7, var));
        body.push(lp(8, 4, LoopKind::Vector(4), vec![Stmt::Store { buf: 0, index: index(0, 8), value: centered }]));
        if reread {
            let other = Expr::load(0, Expr::add(Expr::mul(Expr::var(VarId(0)), Expr::Int(4)), Expr::Int(0)));
            body.push(lp(9, 4, LoopKind::Vector(4), vec![Stmt::Store { buf: 0, index: index(0, 9), value: other }]));
        }
        let mut k = kernel(vec![lp(0, 3, LoopKind::Parallel, body)], 10);
        for v in [2, 4, 5, 7] {
            k.vars[v].1 = ScalarType::Elem(dtype);
        }
        k
    }

    #[test]
    fn a_norm_row_runs_one_warp_per_row() {
        let k = norm_row(false, false, DType::F32);
        assert_eq!(schedule(&k).kernel, k, "rows with reductions keep one thread per row");
        assert_eq!(schedule(&k).grid, GpuGrid::Threads(Dim::constant(1)));
        let plan = warp_rows(&k).expect("one warp per row");
        assert_eq!(plan.reductions, vec![(1, vec![(VarId(2), BinaryOp::Add)]), (4, vec![(VarId(4), BinaryOp::Add)])]);
        assert_eq!(plan.element_loops, vec![6]);
    }

    #[test]
    fn warp_rows_refuse_what_lanes_cannot_share() {
        assert_eq!(warp_rows(&norm_row(true, false, DType::F32)), None, "an accumulator updated by two loops");
        assert_eq!(warp_rows(&norm_row(false, true, DType::F32)), None, "reading another loop's output");
        assert_eq!(warp_rows(&norm_row(false, false, DType::F64)), None, "f64 accumulators");
        assert_eq!(warp_rows(&matmul_row(false)), None, "no reduction into an accumulator");
    }

    #[test]
    fn an_epilogue_reading_another_column_is_left_alone() {
        let k = matmul_row(true);
        assert_eq!(schedule(&k).kernel, k);
    }

    #[test]
    fn a_reduction_into_memory_is_left_alone() {
        // for i parallel { for k { for j vector { out[i*4+j] = out[i*4+j] + x[k*4+j] } } }
        let update = Stmt::Store {
            buf: 0,
            index: index(0, 2),
            value: Expr::binary(BinaryOp::Add, Expr::load(0, index(0, 2)), Expr::load(1, index(1, 2))),
        };
        let k = kernel(
            vec![lp(
                0,
                3,
                LoopKind::Parallel,
                vec![lp(1, 3, LoopKind::Serial, vec![lp(2, 4, LoopKind::Vector(4), vec![update])])],
            )],
            3,
        );
        assert_eq!(flatten_parallel(&k), k);
    }

    #[test]
    fn reading_another_element_of_a_stored_buffer_is_left_alone() {
        let store = Stmt::Store { buf: 0, index: index(0, 1), value: Expr::load(0, Expr::Int(0)) };
        let k = kernel(vec![lp(0, 3, LoopKind::Parallel, vec![lp(1, 4, LoopKind::Vector(4), vec![store])])], 2);
        assert_eq!(flatten_parallel(&k), k);
    }

    #[test]
    fn a_body_with_more_than_one_loop_is_left_alone() {
        let store = |j| Stmt::Store { buf: 0, index: index(0, j), value: Expr::Const(0.0, DType::F32) };
        let k = kernel(
            vec![lp(
                0,
                3,
                LoopKind::Parallel,
                vec![lp(1, 4, LoopKind::Vector(4), vec![store(1)]), lp(2, 4, LoopKind::Vector(4), vec![store(2)])],
            )],
            3,
        );
        assert_eq!(flatten_parallel(&k), k);
    }
}
