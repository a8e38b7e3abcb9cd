//! A plain evaluator for the kernel IR: runs a lowered [`Program`] on host buffers with the
//! reference interpreter's elementwise semantics, so that fusion and lowering are tested
//! against the graph interpreter before (and independently of) any backend.

use super::gpu_schedule::GpuGrid;
use super::ir::{Access, Expr, Kernel, LoopKind, ScalarType, Stmt, VarId};
use super::lower::{BufferKind, Program};
use kiln_ir::interp::scalar::{self, Num};
use kiln_ir::{BinaryOp, DType, Dim, Graph, SymId, Tensor, UnaryOp, WeightStore};
use std::collections::BTreeSet;

/// The type of an expression in a kernel.
pub fn expr_type(k: &Kernel, e: &Expr) -> ScalarType {
    match e {
        Expr::Int(_) | Expr::Sym(_) | Expr::ToIndex(_) => ScalarType::Index,
        Expr::Const(_, d) | Expr::Cast(d, _) | Expr::Bitcast(d, _) => ScalarType::Elem(*d),
        Expr::Var(v) => k.vars[v.0 as usize].1,
        Expr::Load { buf, .. } => ScalarType::Elem(k.buffers[*buf as usize].dtype),
        Expr::Unary(UnaryOp::IsNan, _) => ScalarType::Elem(DType::Bool),
        Expr::Unary(_, x) => expr_type(k, x),
        Expr::Binary(op, a, _) if op.is_comparison() => {
            let _ = a;
            ScalarType::Elem(DType::Bool)
        }
        Expr::Binary(_, a, _) => expr_type(k, a),
        Expr::Select(_, a, _) => expr_type(k, a),
    }
}

fn dtype_of(t: ScalarType) -> DType {
    match t {
        ScalarType::Index => DType::I64,
        ScalarType::Elem(d) => d,
    }
}

struct Machine<'a> {
    k: &'a Kernel,
    bufs: Vec<&'a mut Vec<Num>>,
    vars: Vec<Num>,
    syms: &'a [i64],
    /// GPU blocks (`GpuBlocks` / `GpuThreads` loops) run as the GPU would, sequentially.
    simt: Simt,
}

/// The state of the block a GPU-scheduled kernel is running: each thread's own variables
/// (those bound inside `GpuThreads` loops), and what the threads did to shared memory since
/// the last barrier (to report a missing barrier, which sequential execution would hide).
#[derive(Default)]
struct Simt {
    thread_locals: Vec<VarId>,
    threads: Vec<Vec<Num>>,
    in_threads: bool,
    /// Shared buffers the current `GpuThreads` loop read and wrote.
    region_read: BTreeSet<u32>,
    region_wrote: BTreeSet<u32>,
    /// Shared buffers read and written since the last barrier.
    read_since_barrier: BTreeSet<u32>,
    written_since_barrier: BTreeSet<u32>,
}

fn as_i64(n: Num) -> i64 {
    match n {
        Num::I(i) => i,
        Num::F(f) => f as i64,
    }
}

impl Machine<'_> {
    fn eval(&mut self, e: &Expr) -> Result<Num, String> {
        Ok(match e {
            Expr::Int(v) => Num::I(*v),
            Expr::Const(v, d) => scalar::cast(DType::F64, *d, Num::F(*v))?,
            Expr::Var(v) => self.vars[v.0 as usize],
            Expr::Sym(s) => Num::I(*self.syms.get(s.0 as usize).ok_or("unbound symbol")?),
            Expr::Load { buf, index } => {
                if self.k.buffers[*buf as usize].access == Access::Shared {
                    self.simt.region_read.insert(*buf);
                }
                let i = as_i64(self.eval(index)?);
                let b = &self.bufs[*buf as usize];
                *usize::try_from(i)
                    .ok()
                    .and_then(|i| b.get(i))
                    .ok_or_else(|| format!("load of buffer {buf} at {i} is out of bounds ({})", b.len()))?
            }
            Expr::Unary(op, x) => {
                let t = dtype_of(expr_type(self.k, x));
                let v = self.eval(x)?;
                scalar::unary(*op, t, v)?.1
            }
            Expr::Binary(op, a, b) => {
                let t = dtype_of(expr_type(self.k, a));
                let (x, y) = (self.eval(a)?, self.eval(b)?);
                scalar::binary(*op, t, x, y)?.1
            }
            Expr::Select(c, a, b) => {
                let cond = as_i64(self.eval(c)?) != 0;
                let (x, y) = (self.eval(a)?, self.eval(b)?);
                if cond {
                    x
                } else {
                    y
                }
            }
            Expr::Cast(to, x) => {
                let from = dtype_of(expr_type(self.k, x));
                let v = self.eval(x)?;
                scalar::cast(from, *to, v)?
            }
            Expr::ToIndex(x) => Num::I(as_i64(self.eval(x)?)),
            Expr::Bitcast(to, x) => {
                let from = dtype_of(expr_type(self.k, x));
                bitcast(from, *to, self.eval(x)?)?
            }
        })
    }

    /// Runs a kernel body whose parallel loop (its first statement) covers `0..range` of the
    /// loop's extent (`range` iterations: threads, or blocks of a `GpuBlocks` loop).
    fn run_launch(&mut self, body: &[Stmt], range: i64) -> Result<(), String> {
        let Some((
            Stmt::Loop { var, extent, kind: kind @ (LoopKind::Parallel | LoopKind::GpuBlocks), body: inner },
            rest,
        )) = body.split_first()
        else {
            return self.run(body);
        };
        let n = as_i64(self.eval(extent)?).min(range);
        for i in 0..n.max(0) {
            self.vars[var.0 as usize] = Num::I(i);
            if *kind == LoopKind::GpuBlocks {
                self.start_block();
            }
            self.run(inner)?;
        }
        self.run(rest)
    }

    /// A new block: no thread has variables yet, shared memory holds garbage (NaN, so that
    /// reading what no thread of the block wrote shows).
    fn start_block(&mut self) {
        self.simt.threads.clear();
        self.simt.read_since_barrier.clear();
        self.simt.written_since_barrier.clear();
        for (b, p) in self.bufs.iter_mut().zip(&self.k.buffers) {
            if p.access == Access::Shared {
                b.iter_mut().for_each(|x| *x = Num::F(f64::NAN));
            }
        }
    }

    /// A `GpuThreads` loop: every thread of the block runs `body` in turn, with its own
    /// variables; then checks that the threads' use of shared memory needed no barrier inside
    /// the loop, and that one was placed where the previous loops' use needs it.
    fn run_threads(&mut self, var: VarId, n: i64, body: &[Stmt]) -> Result<(), String> {
        if self.simt.in_threads {
            return Err("a gpu-threads loop inside another".into());
        }
        self.simt.in_threads = true;
        self.simt.region_read.clear();
        self.simt.region_wrote.clear();
        let fresh = self.vars.clone();
        while self.simt.threads.len() < n.max(0) as usize {
            self.simt.threads.push(fresh.clone());
        }
        for t in 0..n.max(0) as usize {
            for &v in &self.simt.thread_locals {
                self.vars[v.0 as usize] = self.simt.threads[t][v.0 as usize];
            }
            self.vars[var.0 as usize] = Num::I(t as i64);
            let ran = self.run(body);
            for &v in &self.simt.thread_locals {
                self.simt.threads[t][v.0 as usize] = self.vars[v.0 as usize];
            }
            ran?;
        }
        self.simt.in_threads = false;
        let simt = &mut self.simt;
        let (read, wrote) = (&simt.region_read, &simt.region_wrote);
        // Per buffer: what one thread writes another may read or write (no order between
        // threads without a barrier).
        if let Some(b) = read.intersection(wrote).next() {
            return Err(format!("a gpu-threads loop both reads and writes shared buffer {b} (threads would race)"));
        }
        if let Some(b) = read.intersection(&simt.written_since_barrier).next() {
            return Err(format!("shared buffer {b} is read before a barrier after it was written"));
        }
        if let Some(b) = wrote.intersection(&simt.read_since_barrier).next() {
            return Err(format!("shared buffer {b} is overwritten before a barrier after it was read"));
        }
        let (read, wrote) = (read.clone(), wrote.clone());
        simt.read_since_barrier.extend(read);
        simt.written_since_barrier.extend(wrote);
        Ok(())
    }

    /// This thread's share of [`Stmt::Mma`]: what [`super::ir::Mma::per_thread`]'s statements
    /// compute (each accumulator plus its 16 products in order of `k`, every product and sum
    /// rounded to f32), evaluated directly (the statements' left-leaning sums would cost a
    /// type walk per operation).
    fn mma(&mut self, m: &super::ir::Mma) -> Result<(), String> {
        let index = |s: &mut Self, e: &Expr| -> Result<i64, String> { Ok(as_i64(s.eval(e)?)) };
        let (lane, a_at, b_at) = (index(self, &m.lane)?, index(self, &m.a_at)?, index(self, &m.b_at)?);
        let (ta, tb) = (self.k.buffers[m.a as usize].dtype, self.k.buffers[m.b as usize].dtype);
        for buf in [m.a, m.b] {
            if self.k.buffers[buf as usize].access == Access::Shared {
                self.simt.region_read.insert(buf);
            }
        }
        let load = |s: &Self, buf: u32, at: i64, t: DType| -> Result<Num, String> {
            let b = &s.bufs[buf as usize];
            let v = *usize::try_from(at)
                .ok()
                .and_then(|i| b.get(i))
                .ok_or_else(|| format!("load of buffer {buf} at {at} is out of bounds ({})", b.len()))?;
            scalar::cast(t, DType::F32, v)
        };
        for (e, &acc) in m.acc.iter().enumerate() {
            let (row, col) = m.layout.place(&Expr::Int(lane), &Expr::Int(e as i64));
            let (row, col) = (index(self, &row)?, index(self, &col)?);
            let mut sum = self.vars[acc.0 as usize];
            for k in 0..super::ir::Mma::K {
                // Constant operands fold: the offset comes back as an integer.
                let offset = |line: i64| match m.layout.panel_offset(Expr::Int(line), Expr::Int(k), m.stride) {
                    Expr::Int(n) => Ok(n),
                    e => Err(format!("panel offset {e:?} is not a constant")),
                };
                let x = load(self, m.a, a_at + offset(row)?, ta)?;
                let y = load(self, m.b, b_at + offset(col)?, tb)?;
                let product = scalar::binary(BinaryOp::Mul, DType::F32, x, y)?.1;
                sum = scalar::binary(BinaryOp::Add, DType::F32, sum, product)?.1;
            }
            self.vars[acc.0 as usize] = scalar::cast(DType::F32, DType::F32, sum)?;
        }
        Ok(())
    }

    fn run(&mut self, stmts: &[Stmt]) -> Result<(), String> {
        for s in stmts {
            match s {
                Stmt::Loop { var, extent, kind: LoopKind::GpuThreads, body } => {
                    let n = as_i64(self.eval(extent)?);
                    self.run_threads(*var, n, body)?;
                }
                Stmt::Barrier => {
                    if self.simt.in_threads {
                        return Err("a barrier inside a gpu-threads loop".into());
                    }
                    self.simt.read_since_barrier.clear();
                    self.simt.written_since_barrier.clear();
                }
                Stmt::Mma(m) => {
                    if !self.simt.in_threads {
                        return Err("a warp matrix multiply outside a gpu-threads loop".into());
                    }
                    self.mma(m)?;
                }
                Stmt::Loop { var, extent, body, .. } => {
                    let n = as_i64(self.eval(extent)?);
                    for i in 0..n.max(0) {
                        self.vars[var.0 as usize] = Num::I(i);
                        self.run(body)?;
                    }
                }
                Stmt::Let { var, value } | Stmt::Decl { var, init: value } | Stmt::Assign { var, value } => {
                    let v = self.eval(value)?;
                    let t = dtype_of(self.k.vars[var.0 as usize].1);
                    self.vars[var.0 as usize] = scalar::cast(t, t, v)?;
                }
                Stmt::Store { buf, index, value } => {
                    if self.k.buffers[*buf as usize].access == Access::Shared {
                        self.simt.region_wrote.insert(*buf);
                    }
                    let i = as_i64(self.eval(index)?);
                    let v = self.eval(value)?;
                    let b = &mut self.bufs[*buf as usize];
                    let len = b.len();
                    let slot = usize::try_from(i)
                        .ok()
                        .and_then(|i| b.get_mut(i))
                        .ok_or_else(|| format!("store to buffer {buf} at {i} is out of bounds ({len})"))?;
                    *slot = v;
                }
            }
        }
        Ok(())
    }
}

/// The variables bound (or assigned) inside `GpuThreads` loops: each thread's own.
fn thread_locals(body: &[Stmt]) -> Vec<VarId> {
    fn bound(body: &[Stmt], inside: bool, out: &mut Vec<VarId>) {
        for s in body {
            match s {
                Stmt::Loop { var, kind, body, .. } => {
                    let inside = inside || *kind == LoopKind::GpuThreads;
                    if inside {
                        out.push(*var);
                    }
                    bound(body, inside, out);
                }
                Stmt::Let { var, .. } | Stmt::Decl { var, .. } | Stmt::Assign { var, .. } if inside => out.push(*var),
                Stmt::Mma(m) if inside => out.extend(&m.acc),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    bound(body, false, &mut out);
    out.sort();
    out.dedup();
    out
}

/// Reinterprets the bits of one element (same width only).
fn bitcast(from: DType, to: DType, x: Num) -> Result<Num, String> {
    Ok(match (from, to, x) {
        (DType::F32, DType::I32, Num::F(f)) => Num::I((f as f32).to_bits() as i32 as i64),
        (DType::I32, DType::F32, Num::I(i)) => Num::F(f32::from_bits(i as i32 as u32) as f64),
        (DType::F64, DType::I64, Num::F(f)) => Num::I(f.to_bits() as i64),
        (DType::I64, DType::F64, Num::I(i)) => Num::F(f64::from_bits(i as u64)),
        _ => return Err(format!("bitcast from {from} to {to} is not supported")),
    })
}

fn to_nums(t: &Tensor) -> Vec<Num> {
    if t.dtype.is_float() {
        t.to_f64().into_iter().map(Num::F).collect()
    } else {
        t.to_i64().into_iter().map(Num::I).collect()
    }
}

/// Runs a lowered program of `graph` on inputs; returns the outputs in order.
pub fn run_program(
    graph: &Graph,
    prog: &Program,
    weights: &WeightStore,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>, String> {
    run_program_launched(graph, prog, weights, inputs, &[])
}

/// [`run_program`] with each launch's range as a GPU runs it: kernel `k`'s parallel loop runs
/// the iterations `grids[k]` gives for the plan's range (threads, or blocks), clamped to its
/// extent (one per item for kernels past the slice's end). GPU-scheduled kernels run several
/// threads per item of the plan's range, or blocks of tiles; this checks that the grid the
/// artifact records covers them. Blocks run as a GPU runs them (see [`LoopKind::GpuThreads`]),
/// one thread after the other, with checks that the barriers are where the threads' use of
/// shared memory needs them.
pub fn run_program_launched(
    graph: &Graph,
    prog: &Program,
    weights: &WeightStore,
    inputs: &[Tensor],
    grids: &[GpuGrid],
) -> Result<Vec<Tensor>, String> {
    // Bind symbols from input dims that are bare symbols.
    let mut syms = vec![0i64; graph.symbols.len()];
    for (&v, t) in graph.inputs().iter().zip(inputs) {
        for (d, &n) in graph.ty(v).shape.iter().zip(&t.shape) {
            if let Some(s) = d.as_symbol() {
                syms[s.0 as usize] = n as i64;
            }
        }
    }
    let value_of = |s: SymId| syms.get(s.0 as usize).copied();
    let mut data: Vec<Vec<Num>> = Vec::new();
    let mut shapes: Vec<Vec<usize>> = Vec::new();
    for b in &prog.buffers {
        let shape: Vec<usize> = b
            .shape
            .iter()
            .map(|d| d.eval(&value_of).map(|x| x as usize).ok_or("unbound size"))
            .collect::<Result<_, _>>()?;
        let n: usize = shape.iter().product();
        let init = match b.kind {
            BufferKind::Input(i) => to_nums(inputs.get(i).ok_or("missing input")?),
            BufferKind::Weight(_) => to_nums(weights.get(&b.name).ok_or_else(|| format!("missing weight {}", b.name))?),
            BufferKind::Computed => vec![if b.dtype.is_float() { Num::F(f64::NAN) } else { Num::I(0) }; n],
        };
        data.push(init);
        shapes.push(shape);
    }
    for launch in &prog.launches {
        let k = &prog.kernels[launch.kernel];
        // Take the argument buffers out, run, put them back (a buffer appears once per kernel).
        let mut taken: Vec<Vec<Num>> = launch.args.iter().map(|&a| std::mem::take(&mut data[a])).collect();
        // Shared memory (GPU-scheduled kernels) after the arguments.
        for b in &k.buffers[launch.args.len().min(k.buffers.len())..] {
            let n = b.len.eval(&value_of).ok_or("unbound shared memory size")?;
            taken.push(vec![Num::F(f64::NAN); n.max(0) as usize]);
        }
        {
            let bufs: Vec<&mut Vec<Num>> = taken.iter_mut().collect();
            let mut m = Machine { k, bufs, vars: vec![Num::I(0); k.vars.len()], syms: &syms, simt: Simt::default() };
            m.simt.thread_locals = thread_locals(&k.body);
            let items = launch.range.eval(&value_of).ok_or("unbound launch range")?;
            let grid = grids.get(launch.kernel).cloned().unwrap_or(GpuGrid::Threads(Dim::constant(1)));
            let range = grid.iterations(items, &value_of).ok_or("the launch's grid does not evaluate")?;
            m.run_launch(&k.body, range).map_err(|e| format!("kernel `{}`: {e}", k.name))?;
        }
        taken.truncate(launch.args.len());
        for (&a, buf) in launch.args.iter().zip(taken) {
            data[a] = buf;
        }
    }
    Ok(prog
        .outputs
        .iter()
        .map(|&o| {
            let b = &prog.buffers[o];
            let shape = shapes[o].clone();
            if b.dtype.is_float() {
                let v: Vec<f64> = data[o].iter().map(|n| if let Num::F(f) = n { *f } else { f64::NAN }).collect();
                Tensor::from_f64(b.dtype, shape, &v)
            } else {
                let v: Vec<i64> = data[o].iter().map(|n| as_i64(*n)).collect();
                Tensor::from_i64(b.dtype, shape, &v)
            }
        })
        .collect())
}
