//! The kernel IR's data structures.
//!
//! A [`Kernel`] is a loop nest over flat buffers. Values are scalars: loop variables and `let`
//! bindings are `i64` or one of the IR dtypes; buffers are contiguous arrays of one dtype that
//! the kernel reads or writes through index expressions. Nothing here assumes a CPU: loops carry
//! hints (parallel, vector width) that each backend maps to threads, SIMD lanes or GPU grids.

use kiln_ir::{BinaryOp, DType, Dim, SymId, UnaryOp};

/// A scalar variable of a kernel (loop index, `let`, or mutable accumulator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarId(pub u32);

/// The type of a scalar: an index (`i64` arithmetic on positions and sizes) or an element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalarType {
    Index,
    Elem(DType),
}

/// How a buffer is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
    /// Not an argument: memory shared by the threads of one GPU block (CUDA's `__shared__`,
    /// AMD's LDS), of a constant length, which only GPU-scheduled kernels have. They come
    /// after every argument buffer.
    Shared,
}

/// A buffer argument: a flat, contiguous array.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferParam {
    pub name: String,
    pub dtype: DType,
    pub access: Access,
    /// Number of elements (for bounds reasoning and launch sizing; may be symbolic).
    pub len: Dim,
}

/// A scalar expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// An index constant.
    Int(i64),
    /// An element constant of a dtype (integers and bools stored exactly in the f64 when small,
    /// see [`Expr::elem_const`]).
    Const(f64, DType),
    Var(VarId),
    /// The run-time value of a symbolic dim (an index).
    Sym(SymId),
    /// `buffer[index]`.
    Load {
        buf: u32,
        index: Box<Expr>,
    },
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `cond ? a : b`; both branches are safe to evaluate (indices inside are kept in bounds).
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Converts an element value (or an index) to `dtype`, with the IR's cast rules.
    Cast(DType, Box<Expr>),
    /// Converts an element value to an index (integers only).
    ToIndex(Box<Expr>),
    /// Reinterprets the bits of a value as another dtype of the same width (`f32` ↔ `i32`,
    /// `f64` ↔ `i64`); used by kiln's own transcendental approximations.
    Bitcast(DType, Box<Expr>),
}

/// Loop scheduling hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoopKind {
    Serial,
    /// Iterations are independent; the outermost parallel loop's range is what the runtime
    /// splits across threads (the kernel receives `[start, end)` of it).
    Parallel,
    /// Innermost loop whose iterations a backend may map onto SIMD lanes of this width.
    Vector(u32),
    /// GPU only: the kernel's first loop, one iteration per block of threads (the block's
    /// index); the body runs once per block, its `GpuThreads` loops once per thread.
    GpuBlocks,
    /// GPU only, directly inside a `GpuBlocks` loop: every thread of the block runs the body
    /// with the loop variable its index in the block (the extent is the block size). Variables
    /// it binds are the thread's own and keep their values into the next such loop; the
    /// threads of a block meet only at [`Stmt::Barrier`]s between these loops.
    GpuThreads,
}

/// A statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `for var in 0..extent { body }`.
    Loop { var: VarId, extent: Expr, kind: LoopKind, body: Vec<Stmt> },
    /// Binds an immutable scalar.
    Let { var: VarId, value: Expr },
    /// Declares a mutable scalar (an accumulator) with its initial value.
    Decl { var: VarId, init: Expr },
    /// Updates a mutable scalar.
    Assign { var: VarId, value: Expr },
    /// `buffer[index] = value`.
    Store { buf: u32, index: Expr, value: Expr },
    /// GPU only, between the `GpuThreads` loops of a block: every thread of the block waits
    /// here until all have arrived, and sees the shared memory they wrote before it.
    Barrier,
    /// GPU only, inside a `GpuThreads` loop run by every thread of a warp alike: this thread's
    /// share of the warp's (or, on Hopper, the warpgroup's) matrix multiply-accumulate on an
    /// `m × n` tile, 16 steps (see [`Mma`]).
    Mma(Box<Mma>),
}

/// Which matrix instruction's fragment layout a [`Mma`] has: the tile one instruction
/// computes and which of its elements each lane holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MmaLayout {
    /// NVIDIA's `mma.sync.m16n8k16` (sm_80 and later): warps of 32 lanes, `16 × 8` tiles;
    /// lane `l` holds rows `l/4` and `l/4 + 8`, columns `2(l%4)` and `2(l%4) + 1`.
    Nvidia16x8,
    /// AMD CDNA's `v_mfma_f32_16x16x16{f16,bf16_1k}` (gfx90a, gfx942): wavefronts of 64
    /// lanes, `16 × 16` tiles; lane `l` holds rows `4(l/16) .. 4(l/16) + 4` of column `l%16`.
    Cdna16x16,
    /// AMD RDNA 3's `v_wmma_f32_16x16x16_{f16,bf16}` (gfx1100) on wavefronts of 32: `16 × 16`
    /// tiles; lane `l` holds the 8 rows `2i + l/16` of column `l%16`.
    Rdna16x16,
    /// NVIDIA Hopper's `wgmma.mma_async.m64n32k16` (sm_90a): warpgroups of 128 threads (4
    /// warps), `64 × 32` tiles, both operands read from shared memory in 8 × 8 core matrices
    /// ([`MmaLayout::panel_offset`]); warp `l/32` holds rows `16(l/32) ..` of the tile, each
    /// warp's 16 × 32 laid out as 4 of [`MmaLayout::Nvidia16x8`]'s tiles side by side.
    Hopper64x32,
}

impl MmaLayout {
    /// Lanes that run one instruction together.
    pub fn lanes(self) -> i64 {
        match self {
            MmaLayout::Nvidia16x8 | MmaLayout::Rdna16x16 => 32,
            MmaLayout::Cdna16x16 => 64,
            MmaLayout::Hopper64x32 => 128,
        }
    }

    /// Rows of one instruction's tile.
    pub fn rows(self) -> i64 {
        match self {
            MmaLayout::Hopper64x32 => 64,
            _ => 16,
        }
    }

    /// Columns of one instruction's tile (it has [`MmaLayout::rows`] rows and 16 steps).
    pub fn columns(self) -> i64 {
        match self {
            MmaLayout::Nvidia16x8 => 8,
            MmaLayout::Cdna16x16 | MmaLayout::Rdna16x16 => 16,
            MmaLayout::Hopper64x32 => 32,
        }
    }

    /// Accumulators each lane holds: the tile's elements over the lanes.
    pub fn accumulators(self) -> usize {
        (self.rows() * self.columns() / self.lanes()) as usize
    }

    /// Where step `k` of line `line` (a row of `A`, a column of `B`) lies in a shared-memory
    /// panel of `stride` elements per line, in elements from the panel's start. Line by line
    /// for the warp-level instructions (`line · stride + k`); for Hopper's, whose operands
    /// the tensor cores read from shared memory themselves, in NVIDIA's "K-major, no
    /// swizzle" layout of 8 × 8 core matrices: each core matrix (8 lines × 8 steps) is 64
    /// consecutive elements, line after line; a group of 8 lines is `stride / 8` core
    /// matrices in order of `k` (128 bytes apart for 2-byte elements: the descriptors'
    /// leading-dimension byte offset), groups `8 · stride` elements apart (the stride
    /// byte offset). A panel's 8-aligned sub-matrix has the same layout from its first element.
    pub fn panel_offset(self, line: Expr, k: Expr, stride: i64) -> Expr {
        match self {
            MmaLayout::Hopper64x32 => {
                let (div, rem) = (|a: &Expr, n: i64| Expr::div(a.clone(), Expr::Int(n)), |a: &Expr, n: i64| Expr::rem(a.clone(), Expr::Int(n)));
                let groups = Expr::add(Expr::mul(div(&line, 8), Expr::Int(8 * stride)), Expr::mul(div(&k, 8), Expr::Int(64)));
                Expr::add(groups, Expr::add(Expr::mul(rem(&line, 8), Expr::Int(8)), rem(&k, 8)))
            }
            _ => Expr::add(Expr::mul(line, Expr::Int(stride)), k),
        }
    }

    /// The row and column (in the instruction's tile) of accumulator `e` (below
    /// [`MmaLayout::accumulators`]) of lane `lane`.
    pub fn place(self, lane: &Expr, e: &Expr) -> (Expr, Expr) {
        let (div, rem) = (|a: &Expr, n: i64| Expr::div(a.clone(), Expr::Int(n)), |a: &Expr, n: i64| Expr::rem(a.clone(), Expr::Int(n)));
        match self {
            MmaLayout::Nvidia16x8 => (
                Expr::add(div(lane, 4), Expr::mul(div(e, 2), Expr::Int(8))),
                Expr::add(Expr::mul(rem(lane, 4), Expr::Int(2)), rem(e, 2)),
            ),
            MmaLayout::Cdna16x16 => (Expr::add(Expr::mul(div(lane, 16), Expr::Int(4)), e.clone()), rem(lane, 16)),
            MmaLayout::Rdna16x16 => (Expr::add(Expr::mul(e.clone(), Expr::Int(2)), div(lane, 16)), rem(lane, 16)),
            // Warp `l/32`'s 16 rows; in them, accumulators `4j ..` are tile `j` of 16 × 8 in
            // mma.sync's layout (rows `l%32/4` and `+8`, columns `8j + 2(l%4)` and `+1`).
            MmaLayout::Hopper64x32 => (
                Expr::add(
                    Expr::add(Expr::mul(div(lane, 32), Expr::Int(16)), div(&rem(lane, 32), 4)),
                    Expr::mul(rem(&div(e, 2), 2), Expr::Int(8)),
                ),
                Expr::add(Expr::add(Expr::mul(div(e, 4), Expr::Int(8)), Expr::mul(rem(lane, 4), Expr::Int(2))), rem(e, 2)),
            ),
        }
    }
}

/// One warp's (wavefront's, warpgroup's) `D = A·B + C` on an `m × n` tile with `k = 16`, in
/// the fragment layout of `layout`'s instruction: `A` is `m` rows of 16 f16 or bf16 values in
/// shared buffer `a` (row `r`, step `k` at `a_at + layout.panel_offset(r, k, stride)`), `B`
/// `n` columns of 16 values in `b` (column `c`, step `k` at `b_at + panel_offset(c, k,
/// stride)`), products and sums in f32. The thread of
/// lane `lane` holds the accumulators at [`MmaLayout::place`]: `acc[e] += Σₖ A[row, k] ·
/// B[col, k]`. Its value depends only on the thread's accumulators and shared memory, so it
/// has a per-thread meaning ([`Mma::per_thread`]), which the evaluator and targets without
/// the instruction run; targets with it run the instruction (whose order of summation within
/// the 16 steps is the hardware's).
#[derive(Clone, Debug, PartialEq)]
pub struct Mma {
    pub layout: MmaLayout,
    pub a: u32,
    pub a_at: Expr,
    pub b: u32,
    pub b_at: Expr,
    /// Elements per row of `A` and column of `B` in their panels ([`MmaLayout::panel_offset`];
    /// even, so that each thread's pairs of steps are 4-byte aligned).
    pub stride: i64,
    pub lane: Expr,
    /// The thread's accumulators, [`MmaLayout::accumulators`] of them.
    pub acc: Vec<VarId>,
}

impl Mma {
    /// Steps of `k` per instruction.
    pub const K: i64 = 16;

    /// The same update as plain statements of this thread: each accumulator plus its 16
    /// products in order of `k`.
    pub fn per_thread(&self) -> Vec<Stmt> {
        let mut out = Vec::new();
        for (e, &acc) in self.acc.iter().enumerate() {
            let (row, col) = self.layout.place(&self.lane, &Expr::Int(e as i64));
            let mut sum = Expr::Var(acc);
            for k in 0..Mma::K {
                let at = |base: &Expr, line: &Expr| {
                    Expr::add(base.clone(), self.layout.panel_offset(line.clone(), Expr::Int(k), self.stride))
                };
                let x = Expr::Cast(DType::F32, Box::new(Expr::load(self.a, at(&self.a_at, &row))));
                let y = Expr::Cast(DType::F32, Box::new(Expr::load(self.b, at(&self.b_at, &col))));
                sum = Expr::binary(BinaryOp::Add, sum, Expr::binary(BinaryOp::Mul, x, y));
            }
            out.push(Stmt::Assign { var: acc, value: sum });
        }
        out
    }
}

/// One kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub buffers: Vec<BufferParam>,
    /// Types of every variable, indexed by `VarId`.
    pub vars: Vec<(String, ScalarType)>,
    /// The body: its first statement is the outermost parallel loop (see [`LoopKind::Parallel`]).
    pub body: Vec<Stmt>,
    /// The IR nodes (value names) this kernel computes, for `--emit fusion`.
    pub fused: Vec<String>,
    /// The kernel's form in blocks of threads, when the lowering made one (fused attention,
    /// see [`super::attention`]): GPU targets run it instead of scheduling `body`.
    pub gpu_form: Option<Box<GpuForm>>,
}

impl Kernel {
    /// The operand type of the kernel's warp matrix multiply-accumulates ([`Stmt::Mma`]),
    /// when it has any.
    pub fn matrix_operands(&self) -> Option<DType> {
        fn find(body: &[Stmt]) -> Option<&Mma> {
            body.iter().find_map(|s| match s {
                Stmt::Mma(m) => Some(&**m),
                Stmt::Loop { body, .. } => find(body),
                _ => None,
            })
        }
        find(&self.body).map(|m| self.buffers[m.a as usize].dtype)
    }
}

/// A kernel as GPU targets run it in blocks of threads, made by the lowering of an op whose
/// fast GPU algorithm is not a schedule of its loops (the attention kernel's blocks stage keys
/// and values in shared memory for many queries at once). Its buffers are the kernel's own,
/// then its shared memory; its first loop is a `GpuBlocks` loop of `grid`'s blocks; it
/// computes what the kernel computes, in the same order of operations.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuForm {
    pub kernel: Kernel,
    pub grid: super::gpu_schedule::GpuGrid,
}

impl Stmt {
    /// The statement with variables `vars[i]` replaced by `by[i]` where they are read (not
    /// where they are bound).
    pub fn substitute(&self, vars: &[VarId], by: &[Expr]) -> Stmt {
        let e = |x: &Expr| x.substitute(vars, by);
        match self {
            Stmt::Loop { var, extent, kind, body } => Stmt::Loop {
                var: *var,
                extent: e(extent),
                kind: *kind,
                body: body.iter().map(|s| s.substitute(vars, by)).collect(),
            },
            Stmt::Let { var, value } => Stmt::Let { var: *var, value: e(value) },
            Stmt::Decl { var, init } => Stmt::Decl { var: *var, init: e(init) },
            Stmt::Assign { var, value } => Stmt::Assign { var: *var, value: e(value) },
            Stmt::Store { buf, index, value } => Stmt::Store { buf: *buf, index: e(index), value: e(value) },
            Stmt::Barrier => Stmt::Barrier,
            Stmt::Mma(m) => Stmt::Mma(Box::new(Mma { a_at: e(&m.a_at), b_at: e(&m.b_at), lane: e(&m.lane), ..(**m).clone() })),
        }
    }
}

impl Expr {
    /// `e` with variables `vars[i]` replaced by `by[i]`.
    pub fn substitute(&self, vars: &[VarId], by: &[Expr]) -> Expr {
        match self {
            Expr::Var(v) => vars.iter().position(|x| x == v).map_or_else(|| self.clone(), |i| by[i].clone()),
            _ => self.map_children(&|x| x.substitute(vars, by)),
        }
    }

    /// This expression's node with `f` applied to each of its children (a leaf is cloned).
    pub fn map_children(&self, f: &dyn Fn(&Expr) -> Expr) -> Expr {
        let c = |x: &Expr| Box::new(f(x));
        match self {
            Expr::Load { buf, index } => Expr::Load { buf: *buf, index: c(index) },
            Expr::Unary(op, x) => Expr::Unary(*op, c(x)),
            Expr::Binary(op, a, b) => Expr::Binary(*op, c(a), c(b)),
            Expr::Select(k, a, b) => Expr::Select(c(k), c(a), c(b)),
            Expr::Cast(d, x) => Expr::Cast(*d, c(x)),
            Expr::ToIndex(x) => Expr::ToIndex(c(x)),
            Expr::Bitcast(d, x) => Expr::Bitcast(*d, c(x)),
            Expr::Int(_) | Expr::Const(..) | Expr::Var(_) | Expr::Sym(_) => self.clone(),
        }
    }

    /// Calls `f` on this expression and on every expression inside it, outermost first.
    pub fn visit(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Load { index, .. } => index.visit(f),
            Expr::Unary(_, x) | Expr::Cast(_, x) | Expr::ToIndex(x) | Expr::Bitcast(_, x) => x.visit(f),
            Expr::Binary(_, a, b) => {
                a.visit(f);
                b.visit(f);
            }
            Expr::Select(c, a, b) => {
                c.visit(f);
                a.visit(f);
                b.visit(f);
            }
            Expr::Int(_) | Expr::Const(..) | Expr::Var(_) | Expr::Sym(_) => {}
        }
    }

    pub fn var(v: VarId) -> Expr {
        Expr::Var(v)
    }

    pub fn elem_const(v: f64, dtype: DType) -> Expr {
        Expr::Const(v, dtype)
    }

    pub fn add(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (Expr::Int(0), _) => b,
            (_, Expr::Int(0)) => a,
            (Expr::Int(x), Expr::Int(y)) => Expr::Int(x.wrapping_add(*y)),
            _ => Expr::Binary(BinaryOp::Add, Box::new(a), Box::new(b)),
        }
    }

    pub fn sub(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (_, Expr::Int(0)) => a,
            (Expr::Int(x), Expr::Int(y)) => Expr::Int(x.wrapping_sub(*y)),
            _ => Expr::Binary(BinaryOp::Sub, Box::new(a), Box::new(b)),
        }
    }

    pub fn mul(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (Expr::Int(0), _) | (_, Expr::Int(0)) => Expr::Int(0),
            (Expr::Int(1), _) => b,
            (_, Expr::Int(1)) => a,
            (Expr::Int(x), Expr::Int(y)) => Expr::Int(x.wrapping_mul(*y)),
            _ => Expr::Binary(BinaryOp::Mul, Box::new(a), Box::new(b)),
        }
    }

    /// Floor division of non-negative indices.
    pub fn div(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (_, Expr::Int(1)) => a,
            (Expr::Int(x), Expr::Int(y)) if *y > 0 => Expr::Int(x.div_euclid(*y)),
            _ => Expr::Binary(BinaryOp::FloorDiv, Box::new(a), Box::new(b)),
        }
    }

    /// Remainder of non-negative indices.
    pub fn rem(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (_, Expr::Int(1)) => Expr::Int(0),
            (Expr::Int(x), Expr::Int(y)) if *y > 0 => Expr::Int(x.rem_euclid(*y)),
            _ => Expr::Binary(BinaryOp::Rem, Box::new(a), Box::new(b)),
        }
    }

    pub fn min(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (Expr::Int(x), Expr::Int(y)) => Expr::Int(*x.min(y)),
            _ => Expr::Binary(BinaryOp::Min, Box::new(a), Box::new(b)),
        }
    }

    pub fn max(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (Expr::Int(x), Expr::Int(y)) => Expr::Int(*x.max(y)),
            _ => Expr::Binary(BinaryOp::Max, Box::new(a), Box::new(b)),
        }
    }

    pub fn binary(op: BinaryOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }

    pub fn unary(op: UnaryOp, a: Expr) -> Expr {
        Expr::Unary(op, Box::new(a))
    }

    pub fn select(c: Expr, a: Expr, b: Expr) -> Expr {
        Expr::Select(Box::new(c), Box::new(a), Box::new(b))
    }

    pub fn load(buf: u32, index: Expr) -> Expr {
        Expr::Load { buf, index: Box::new(index) }
    }

    /// A size polynomial as an index expression.
    pub fn from_dim(d: &Dim) -> Expr {
        if let Some(c) = d.as_const() {
            return Expr::Int(c);
        }
        let mut acc = Expr::Int(0);
        for (mono, coeff) in d.monomials() {
            let mut t = Expr::Int(*coeff);
            for s in mono {
                t = Expr::mul(t, Expr::Sym(*s));
            }
            acc = Expr::add(acc, t);
        }
        acc
    }
}

impl Kernel {
    /// Estimated scalar operations per iteration of the parallel loop: the expression nodes of
    /// every statement times the extents of the loops around it (a loop whose extent is not a
    /// constant counts as 16 iterations). The runtime uses it to keep small launches on one
    /// thread.
    pub fn work_per_item(&self) -> u64 {
        fn expr(e: &Expr) -> u64 {
            1 + match e {
                Expr::Load { index, .. } => expr(index),
                Expr::Unary(_, x) | Expr::Cast(_, x) | Expr::ToIndex(x) | Expr::Bitcast(_, x) => expr(x),
                Expr::Binary(_, a, b) => expr(a) + expr(b),
                Expr::Select(c, a, b) => expr(c) + expr(a) + expr(b),
                Expr::Int(_) | Expr::Const(..) | Expr::Var(_) | Expr::Sym(_) => 0,
            }
        }
        fn stmts(body: &[Stmt]) -> u64 {
            body.iter()
                .map(|s| match s {
                    Stmt::Loop { extent, body, .. } => {
                        let n = match extent {
                            Expr::Int(n) => (*n).max(0) as u64,
                            _ => 16,
                        };
                        n.saturating_mul(1 + stmts(body))
                    }
                    Stmt::Let { value, .. } | Stmt::Assign { value, .. } => expr(value),
                    Stmt::Decl { init, .. } => expr(init),
                    Stmt::Store { index, value, .. } => 1 + expr(index) + expr(value),
                    Stmt::Barrier => 1,
                    Stmt::Mma(m) => stmts(&m.per_thread()),
                })
                .fold(0u64, u64::saturating_add)
        }
        match self.body.as_slice() {
            [Stmt::Loop { body, .. }] => stmts(body).max(1),
            body => stmts(body).max(1),
        }
    }
}
