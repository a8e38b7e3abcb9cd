//! Kernel IR → MLIR text (func, scf, arith, math and llvm dialects), the input of the
//! MLIR→LLVM pipeline. Target-neutral: the same module feeds the x86-64 lowering now and the
//! GPU lowerings later (only the final conversion and the target machine differ).
//!
//! Each kernel becomes `func.func @SYMBOL(%bufs: !llvm.ptr, %syms: !llvm.ptr, %start: i64,
//! %end: i64)`, the calling convention shared with the Cranelift kernels (see
//! [`crate::kernel`]). Buffer bases and symbol values are loaded at entry; the first loop
//! runs over `[max(start, 0), min(end, extent))`; loops are `scf.for` over `i64`; `let`s are SSA
//! values; accumulators (`var`) live in `llvm.alloca` slots that LLVM promotes to registers.
//! Values keep the IR's semantics as the Cranelift backend implements them (NaN-propagating
//! `max`/`min` with the evaluator's tie rule, saturating float→int casts, wrapping integer
//! arithmetic, `rsqrt` through f64; f16/bf16 computed in f32 and rounded after every operation).
//! Float `%` uses `arith.remf`, which LLVM lowers to a call of `fmod`: the runtime provides it
//! (the only symbol these objects may reference). Every dtype is supported: 8- and 16-bit
//! integers are computed at their width (`u8` compared and widened unsigned), integer `pow`
//! is a square-and-multiply `scf.while` loop. With `contract`, float `+ - *` carry
//! `fastmath<contract>` so that LLVM may fuse them into FMAs (never across a half-precision
//! rounding).

use crate::kernel::eval::expr_type;
use crate::kernel::gpu_schedule::{dim_expr, warp_rows, WarpRows, WARP};
use crate::kernel::ir::{Access, Expr, Kernel, LoopKind, Mma, MmaLayout, ScalarType, Stmt, VarId};
use kiln_ir::interp::scalar::Num;
use kiln_ir::{BinaryOp, DType, Dim, UnaryOp};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

/// An MLIR scalar type of the emitted code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    I1,
    I8,
    /// `u8`: an `i8` whose comparisons, `max`/`min` and widening are unsigned.
    U8,
    I16,
    I32,
    I64,
    F32,
    F64,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::I1 => "i1",
            Ty::I8 | Ty::U8 => "i8",
            Ty::I16 => "i16",
            Ty::I32 => "i32",
            Ty::I64 => "i64",
            Ty::F32 => "f32",
            Ty::F64 => "f64",
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Ty::F32 | Ty::F64)
    }

    /// Integers whose values are never negative (zero-extended, compared unsigned).
    fn is_unsigned(self) -> bool {
        matches!(self, Ty::I1 | Ty::U8)
    }

    /// `v` wrapped to this integer type's width, as a signed literal MLIR accepts.
    fn wrap_literal(self, v: i64) -> i64 {
        match self {
            Ty::I8 | Ty::U8 => v as i8 as i64,
            Ty::I16 => v as i16 as i64,
            Ty::I32 => v as i32 as i64,
            _ => v,
        }
    }
}

fn ty_of(t: ScalarType) -> Result<Ty, String> {
    Ok(match t {
        ScalarType::Index => Ty::I64,
        ScalarType::Elem(d) => match d {
            // Half precision computes in f32 registers, rounded after every operation.
            DType::F32 | DType::F16 | DType::BF16 => Ty::F32,
            DType::F64 => Ty::F64,
            DType::I64 => Ty::I64,
            DType::I32 => Ty::I32,
            DType::I16 => Ty::I16,
            DType::I8 => Ty::I8,
            DType::U8 => Ty::U8,
            DType::Bool => Ty::I1,
        },
    })
}

struct Emitter<'k> {
    k: &'k Kernel,
    out: String,
    indent: usize,
    next: usize,
    /// SSA name of each `let` / loop variable in scope.
    ssa: HashMap<VarId, String>,
    /// The alloca slot of each accumulator.
    slots: HashMap<VarId, String>,
    bufs: Vec<String>,
    syms: HashMap<kiln_ir::SymId, String>,
    /// Mark float `+ - *` `contract`, letting LLVM fuse them into FMAs.
    contract: bool,
    /// The pointer type of buffers (`!llvm.ptr`, or the global address space on GPUs).
    buf_ptr: &'static str,
    /// The pointer type of accumulator slots (the target's private address space).
    slot_ptr: &'static str,
    /// On GPUs, the index of the parallel loop's iteration this thread runs.
    thread_index: Option<String>,
    /// On GPUs, the block's index (`i64`), for kernels whose first loop is `GpuBlocks`.
    block_index: Option<String>,
    /// On GPUs, for a kernel run one warp per row: the plan, this thread's lane and the first
    /// row of its warp (`i64` values).
    warp: Option<(WarpRows, String, String)>,
    /// The end of the parallel loop's range this call runs: `%end` on CPUs; on GPUs `%end`
    /// times the threads per item of the launch range.
    range_end: String,
    /// The layout of the target's matrix instructions (NVIDIA's `mma.sync`, AMD CDNA's MFMA):
    /// a [`Stmt::Mma`] of that layout becomes the instruction; elsewhere, its per-thread
    /// statements.
    matrix: Option<MmaLayout>,
}

type R<T> = Result<T, String>;

impl Emitter<'_> {
    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("%t{}", self.next)
    }

    fn line(&mut self, s: &str) {
        let _ = writeln!(self.out, "{}{s}", "  ".repeat(self.indent));
    }

    /// Emits `%x = <rhs>` and returns `%x`.
    fn op(&mut self, rhs: &str) -> String {
        let v = self.fresh();
        self.line(&format!("{v} = {rhs}"));
        v
    }

    fn int_const(&mut self, v: i64, t: Ty) -> String {
        match t {
            Ty::I1 => self.op(&format!("arith.constant {}", v != 0)),
            _ => self.op(&format!("arith.constant {} : {}", t.wrap_literal(v), t.name())),
        }
    }

    fn float_const(&mut self, v: f64, t: Ty) -> String {
        match t {
            Ty::F32 => self.op(&format!("arith.constant 0x{:08X} : f32", (v as f32).to_bits())),
            _ => self.op(&format!("arith.constant 0x{:016X} : f64", v.to_bits())),
        }
    }
}

/// The name of a half-precision dtype's MLIR type (`None` for other dtypes).
fn half_name(d: DType) -> Option<&'static str> {
    match d {
        DType::F16 => Some("f16"),
        DType::BF16 => Some("bf16"),
        _ => None,
    }
}

impl Emitter<'_> {
    /// `v` (f32) rounded to half-precision dtype `d` and back, as the evaluator rounds after
    /// every half-precision operation. f16 uses LLVM's conversions (F16C on x86-64); bf16 is
    /// integer code (LLVM would call a compiler-rt routine), reproducing the evaluator's
    /// `half::bf16::from_f64` exactly (see `cranelift::float` for why it truncates first).
    fn round_half(&mut self, v: String, d: DType) -> String {
        match d {
            DType::F16 => {
                let r = self.op(&format!("arith.truncf {v} : f32 to f16"));
                self.op(&format!("arith.extf {r} : f16 to f32"))
            }
            DType::BF16 => self.round_bf16(v),
            _ => v,
        }
    }

    fn i32_op(&mut self, op: &str, a: &str, b: i64) -> String {
        let c = self.int_const(b, Ty::I32);
        self.op(&format!("arith.{op} {a}, {c} : i32"))
    }

    /// Rounds the magnitude bits `a` (i32) of an f32 to nearest even at bit 16.
    fn rne_bf16_bits(&mut self, a: &str) -> String {
        let lsb = self.i32_op("shrui", a, 16);
        let lsb = self.i32_op("andi", &lsb, 1);
        let bias = self.i32_op("addi", &lsb, 0x7fff);
        let r = self.op(&format!("arith.addi {a}, {bias} : i32"));
        self.i32_op("andi", &r, 0xffff_0000)
    }

    /// `half::bf16::from_f64(x as f64)` for an f32 `x`, as an f32: truncated to 21 significant
    /// bits, then rounded to nearest even at bf16's 8.
    fn round_bf16(&mut self, x: String) -> String {
        let bits = self.op(&format!("arith.bitcast {x} : f32 to i32"));
        let sign = self.i32_op("andi", &bits, 0x8000_0000);
        let a = self.i32_op("andi", &bits, 0x7fff_ffff);
        let lz = self.op(&format!("math.ctlz {a} : i32"));
        let c31 = self.int_const(31, Ty::I32);
        let p = self.op(&format!("arith.subi {c31}, {lz} : i32"));
        let drop = self.i32_op("addi", &p, -20);
        let drop = self.i32_op("maxsi", &drop, 0);
        let one = self.int_const(1, Ty::I32);
        let unit = self.op(&format!("arith.shli {one}, {drop} : i32"));
        let low = self.i32_op("addi", &unit, -1);
        let sub_mask = self.i32_op("xori", &low, -1);
        let tiny = self.int_const(0x0080_0000, Ty::I32);
        let subnormal = self.op(&format!("arith.cmpi ult, {a}, {tiny} : i32"));
        let normal_mask = self.int_const(!7, Ty::I32);
        let mask = self.op(&format!("arith.select {subnormal}, {sub_mask}, {normal_mask} : i32"));
        let t = self.op(&format!("arith.andi {a}, {mask} : i32"));
        let r = self.rne_bf16_bits(&t);
        let r = self.op(&format!("arith.ori {r}, {sign} : i32"));
        let res = self.op(&format!("arith.bitcast {r} : i32 to f32"));
        let nan = self.op(&format!("arith.cmpf uno, {x}, {x} : f32"));
        self.op(&format!("arith.select {nan}, {x}, {res} : f32"))
    }

    /// `half::bf16::from_f64(x)` as an f32.
    fn bf16_from_f64(&mut self, x: String) -> String {
        let bits = self.op(&format!("arith.bitcast {x} : f64 to i64"));
        let hi = self.int_const(!0xffff_ffff, Ty::I64);
        let t = self.op(&format!("arith.andi {bits}, {hi} : i64"));
        let t = self.op(&format!("arith.bitcast {t} : i64 to f64"));
        let at = self.op(&format!("math.absf {t} : f64"));
        // Below bf16's normal range: round at 2^-133 in f64, exact in f32 afterwards.
        let tiny = self.float_const(f64::from_bits(((1023 - 126) as u64) << 52), Ty::F64);
        let small = self.op(&format!("arith.cmpf olt, {at}, {tiny} : f64"));
        let c = self.float_const(f64::from_bits(((1023 - 81) as u64) << 52), Ty::F64);
        let s = self.op(&format!("arith.addf {at}, {c} : f64"));
        let s = self.op(&format!("arith.subf {s}, {c} : f64"));
        let s = self.op(&format!("arith.truncf {s} : f64 to f32"));
        let t32 = self.op(&format!("arith.truncf {t} : f64 to f32"));
        let s = self.op(&format!("math.copysign {s}, {t32} : f32"));
        // Otherwise t has at most 21 significant bits: exact in f32 (or infinite), then RNE.
        let tb = self.op(&format!("arith.bitcast {t32} : f32 to i32"));
        let sign = self.i32_op("andi", &tb, 0x8000_0000);
        let a = self.i32_op("andi", &tb, 0x7fff_ffff);
        let r = self.rne_bf16_bits(&a);
        let r = self.op(&format!("arith.ori {r}, {sign} : i32"));
        let n = self.op(&format!("arith.bitcast {r} : i32 to f32"));
        let r = self.op(&format!("arith.select {small}, {s}, {n} : f32"));
        let nan = self.op(&format!("arith.cmpf uno, {x}, {x} : f64"));
        let q = self.float_const(f64::NAN, Ty::F32);
        self.op(&format!("arith.select {nan}, {q}, {r} : f32"))
    }

    /// An f64 narrowed to the register form of `d` (f32 for the half types), rounded as the
    /// evaluator rounds.
    fn narrow_f64(&mut self, v: String, d: ScalarType) -> R<String> {
        match d {
            ScalarType::Elem(DType::BF16) => Ok(self.bf16_from_f64(v)),
            _ => {
                let t = ty_of(d)?;
                self.convert(v, Ty::F64, t)
            }
        }
    }

    /// The address of element `index` of buffer `buf`.
    fn address(&mut self, buf: u32, index: &Expr) -> R<(String, Ty, bool)> {
        let param = self.k.buffers.get(buf as usize).ok_or("buffer out of range")?;
        let (mem, is_bool) = match param.dtype {
            DType::Bool => ("i8", true),
            d => (half_name(d).unwrap_or(ty_of(ScalarType::Elem(d))?.name()), false),
        };
        let (i, _) = self.expr(index)?;
        let base = self.bufs[buf as usize].clone();
        let a = self.op(&format!("llvm.getelementptr {base}[{i}] : ({bp}, i64) -> {bp}, {mem}", bp = self.ptr_ty(buf)));
        let t = if is_bool { Ty::I1 } else { ty_of(ScalarType::Elem(param.dtype))? };
        Ok((a, t, is_bool))
    }

    fn expr(&mut self, e: &Expr) -> R<(String, Ty)> {
        let t = ty_of(expr_type(self.k, e))?;
        let v = match e {
            Expr::Int(v) => self.int_const(*v, Ty::I64),
            Expr::Const(v, d) => match kiln_ir::interp::scalar::cast(DType::F64, *d, Num::F(*v))? {
                Num::F(f) => self.float_const(f, t),
                Num::I(i) => self.int_const(i, t),
            },
            Expr::Var(v) => match self.slots.get(v).cloned() {
                Some(slot) => self.op(&format!("llvm.load {slot} : {} -> {}", self.slot_ptr, t.name())),
                None => self.ssa.get(v).cloned().ok_or_else(|| format!("variable {} used out of scope", v.0))?,
            },
            Expr::Sym(s) => self.syms.get(s).cloned().ok_or("symbol not loaded")?,
            Expr::Load { buf, index } => {
                let (a, t, is_bool) = self.address(*buf, index)?;
                let bp = self.ptr_ty(*buf);
                if is_bool {
                    let b = self.op(&format!("llvm.load {a} : {bp} -> i8"));
                    let z = self.int_const(0, Ty::I64);
                    let z8 = self.op(&format!("arith.trunci {z} : i64 to i8"));
                    self.op(&format!("arith.cmpi ne, {b}, {z8} : i8"))
                } else if self.k.buffers[*buf as usize].dtype == DType::BF16 {
                    let h = self.op(&format!("llvm.load {a} : {bp} -> i16"));
                    let w = self.op(&format!("arith.extui {h} : i16 to i32"));
                    let w = self.i32_op("shli", &w, 16);
                    self.op(&format!("arith.bitcast {w} : i32 to f32"))
                } else if let Some(h) = half_name(self.k.buffers[*buf as usize].dtype) {
                    let x = self.op(&format!("llvm.load {a} : {bp} -> {h}"));
                    self.op(&format!("arith.extf {x} : {h} to f32"))
                } else {
                    self.op(&format!("llvm.load {a} : {bp} -> {}", t.name()))
                }
            }
            Expr::Unary(op, x) => {
                let (x, xt) = self.expr(x)?;
                let r = self.unary(*op, x, xt, expr_type(self.k, e))?;
                self.round_if_half(r, e)
            }
            Expr::Binary(op, a, b) => {
                // Multiplies and adds may contract into FMAs, except where half precision
                // rounds between them.
                let contract =
                    self.contract && !matches!(expr_type(self.k, e), ScalarType::Elem(d) if half_name(d).is_some());
                let (a, at) = self.expr(a)?;
                let (b, bt) = self.expr(b)?;
                let b = self.convert(b, bt, at)?;
                let r = self.binary(*op, a, b, at, contract, expr_type(self.k, e))?;
                self.round_if_half(r, e)
            }
            Expr::Select(c, a, b) => {
                let c = self.condition(c)?;
                let (a, at) = self.expr(a)?;
                let (b, bt) = self.expr(b)?;
                let b = self.convert(b, bt, at)?;
                self.op(&format!("arith.select {c}, {a}, {b} : {}", at.name()))
            }
            Expr::Cast(_, x) => {
                let (x, xt) = self.expr(x)?;
                let r = if xt == Ty::F64 && t.is_float() {
                    self.narrow_f64(x, expr_type(self.k, e))?
                } else {
                    self.convert(x, xt, t)?
                };
                self.round_if_half(r, e)
            }
            Expr::ToIndex(x) => {
                let (x, xt) = self.expr(x)?;
                self.convert(x, xt, Ty::I64)?
            }
            Expr::Bitcast(_, x) => {
                let (x, xt) = self.expr(x)?;
                let bits = self.op(&format!("arith.bitcast {x} : {} to {}", xt.name(), t.name()));
                if xt == Ty::F32 {
                    // Like the evaluator (f32 held as f64): a signaling NaN reads as quiet.
                    let nan = self.op(&format!("arith.cmpf uno, {x}, {x} : f32"));
                    let q = self.int_const(0x0040_0000, Ty::I32);
                    let quiet = self.op(&format!("arith.ori {bits}, {q} : i32"));
                    self.op(&format!("arith.select {nan}, {quiet}, {bits} : i32"))
                } else {
                    bits
                }
            }
        };
        Ok((v, t))
    }

    /// `v`, the value of `e`, rounded when `e`'s dtype is half precision.
    fn round_if_half(&mut self, v: String, e: &Expr) -> String {
        match expr_type(self.k, e) {
            ScalarType::Elem(d) if half_name(d).is_some() => self.round_half(v, d),
            _ => v,
        }
    }

    /// A `select` condition as i1: integers against zero, floats as `f as i64 != 0`.
    fn condition(&mut self, c: &Expr) -> R<String> {
        let (v, t) = self.expr(c)?;
        Ok(match t {
            Ty::I1 => v,
            _ => {
                let i = self.convert(v, t, Ty::I64)?;
                let z = self.int_const(0, Ty::I64);
                self.op(&format!("arith.cmpi ne, {i}, {z} : i64"))
            }
        })
    }

    /// The IR's cast rules between the supported types.
    fn convert(&mut self, v: String, from: Ty, to: Ty) -> R<String> {
        if from == to {
            return Ok(v);
        }
        Ok(match (from.is_float(), to.is_float()) {
            (true, true) => match to {
                Ty::F64 => self.op(&format!("arith.extf {v} : f32 to f64")),
                _ => self.op(&format!("arith.truncf {v} : f64 to f32")),
            },
            (true, false) if to == Ty::I1 => {
                let z = self.float_const(0.0, from);
                self.op(&format!("arith.cmpf une, {v}, {z} : {}", from.name()))
            }
            (true, false) => {
                let i = self.float_to_i64_saturating(v, from);
                self.wrap_i64(i, to)
            }
            (false, true) => {
                let i = self.widen_i64(v, from);
                let f = self.op(&format!("arith.sitofp {i} : i64 to f64"));
                if to == Ty::F32 {
                    self.op(&format!("arith.truncf {f} : f64 to f32"))
                } else {
                    f
                }
            }
            (false, false) => {
                let i = self.widen_i64(v, from);
                self.wrap_i64(i, to)
            }
        })
    }

    /// `x as i64` with Rust's rules: NaN is 0, out-of-range values saturate.
    fn float_to_i64_saturating(&mut self, x: String, t: Ty) -> String {
        let n = t.name();
        let two63 = 2f64.powi(63);
        let (hi, lo) = (self.float_const(two63, t), self.float_const(-two63, t));
        let nan = self.op(&format!("arith.cmpf uno, {x}, {x} : {n}"));
        let big = self.op(&format!("arith.cmpf oge, {x}, {hi} : {n}"));
        let small = self.op(&format!("arith.cmpf olt, {x}, {lo} : {n}"));
        let out = self.op(&format!("arith.ori {big}, {small} : i1"));
        let bad = self.op(&format!("arith.ori {out}, {nan} : i1"));
        let z = self.float_const(0.0, t);
        let safe = self.op(&format!("arith.select {bad}, {z}, {x} : {n}"));
        let i = self.op(&format!("arith.fptosi {safe} : {n} to i64"));
        let (max, min, zero) =
            (self.int_const(i64::MAX, Ty::I64), self.int_const(i64::MIN, Ty::I64), self.int_const(0, Ty::I64));
        let r = self.op(&format!("arith.select {nan}, {zero}, {i} : i64"));
        let r = self.op(&format!("arith.select {small}, {min}, {r} : i64"));
        self.op(&format!("arith.select {big}, {max}, {r} : i64"))
    }

    fn widen_i64(&mut self, v: String, from: Ty) -> String {
        match from {
            Ty::I64 => v,
            t if t.is_unsigned() => self.op(&format!("arith.extui {v} : {} to i64", t.name())),
            t => self.op(&format!("arith.extsi {v} : {} to i64", t.name())),
        }
    }

    fn wrap_i64(&mut self, v: String, to: Ty) -> String {
        match to {
            Ty::I64 => v,
            Ty::I1 => {
                let z = self.int_const(0, Ty::I64);
                self.op(&format!("arith.cmpi ne, {v}, {z} : i64"))
            }
            t => self.op(&format!("arith.trunci {v} : i64 to {}", t.name())),
        }
    }

    /// `d`: the dtype of the result (for rounding what is computed in f64).
    fn unary(&mut self, op: UnaryOp, x: String, t: Ty, d: ScalarType) -> R<String> {
        let n = t.name();
        if t.is_float() {
            return Ok(match op {
                UnaryOp::Neg => self.op(&format!("arith.negf {x} : {n}")),
                UnaryOp::Abs => self.op(&format!("math.absf {x} : {n}")),
                UnaryOp::Floor => self.op(&format!("math.floor {x} : {n}")),
                UnaryOp::Ceil => self.op(&format!("math.ceil {x} : {n}")),
                UnaryOp::Round => self.op(&format!("math.roundeven {x} : {n}")),
                UnaryOp::Sqrt => self.op(&format!("math.sqrt {x} : {n}")),
                UnaryOp::Reciprocal => {
                    let one = self.float_const(1.0, t);
                    self.op(&format!("arith.divf {one}, {x} : {n}"))
                }
                UnaryOp::Rsqrt => {
                    let w = self.convert(x, t, Ty::F64)?;
                    let s = self.op(&format!("math.sqrt {w} : f64"));
                    let one = self.float_const(1.0, Ty::F64);
                    let r = self.op(&format!("arith.divf {one}, {s} : f64"));
                    self.narrow_f64(r, d)?
                }
                UnaryOp::Relu => {
                    let z = self.float_const(0.0, t);
                    let keep = self.op(&format!("arith.cmpf ugt, {x}, {z} : {n}"));
                    self.op(&format!("arith.select {keep}, {x}, {z} : {n}"))
                }
                UnaryOp::Sign => {
                    let (z, one, m1) = (self.float_const(0.0, t), self.float_const(1.0, t), self.float_const(-1.0, t));
                    let pos = self.op(&format!("arith.cmpf ogt, {x}, {z} : {n}"));
                    let neg = self.op(&format!("arith.cmpf olt, {x}, {z} : {n}"));
                    let r = self.op(&format!("arith.select {neg}, {m1}, {z} : {n}"));
                    self.op(&format!("arith.select {pos}, {one}, {r} : {n}"))
                }
                UnaryOp::IsNan => self.op(&format!("arith.cmpf uno, {x}, {x} : {n}")),
                other => return Err(format!("`{}` must be expanded before code generation", other.name())),
            });
        }
        Ok(match op {
            UnaryOp::Neg if t == Ty::I1 => x,
            UnaryOp::Neg => {
                let z = self.int_const(0, t);
                self.op(&format!("arith.subi {z}, {x} : {n}"))
            }
            UnaryOp::Abs | UnaryOp::Relu if t.is_unsigned() => x,
            UnaryOp::Abs => {
                let z = self.int_const(0, t);
                let neg = self.op(&format!("arith.cmpi slt, {x}, {z} : {n}"));
                let m = self.op(&format!("arith.subi {z}, {x} : {n}"));
                self.op(&format!("arith.select {neg}, {m}, {x} : {n}"))
            }
            UnaryOp::Relu => {
                let z = self.int_const(0, t);
                self.op(&format!("arith.maxsi {x}, {z} : {n}"))
            }
            UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => x,
            UnaryOp::Sign if t == Ty::I1 => x,
            UnaryOp::Sign if t == Ty::U8 => {
                let (z, one) = (self.int_const(0, t), self.int_const(1, t));
                let pos = self.op(&format!("arith.cmpi ne, {x}, {z} : {n}"));
                self.op(&format!("arith.select {pos}, {one}, {z} : {n}"))
            }
            UnaryOp::Sign => {
                let (z, one, m1) = (self.int_const(0, t), self.int_const(1, t), self.int_const(-1, t));
                let pos = self.op(&format!("arith.cmpi sgt, {x}, {z} : {n}"));
                let neg = self.op(&format!("arith.cmpi slt, {x}, {z} : {n}"));
                let r = self.op(&format!("arith.select {neg}, {m1}, {z} : {n}"));
                self.op(&format!("arith.select {pos}, {one}, {r} : {n}"))
            }
            UnaryOp::Not => {
                let all = self.int_const(-1, t);
                self.op(&format!("arith.xori {x}, {all} : {n}"))
            }
            UnaryOp::IsNan => self.int_const(0, Ty::I1),
            other => return Err(format!("`{}` of {n} is not supported by the llvm backend", other.name())),
        })
    }

    /// `d`: the dtype of the result (for rounding what is computed in f64).
    fn binary(&mut self, op: BinaryOp, x: String, y: String, t: Ty, contract: bool, d: ScalarType) -> R<String> {
        let n = t.name();
        let fm = if contract { " fastmath<contract>" } else { "" };
        if t.is_float() {
            let cmp = match op {
                BinaryOp::Eq => Some("oeq"),
                BinaryOp::Ne => Some("une"),
                BinaryOp::Lt => Some("olt"),
                BinaryOp::Le => Some("ole"),
                BinaryOp::Gt => Some("ogt"),
                BinaryOp::Ge => Some("oge"),
                _ => None,
            };
            if let Some(p) = cmp {
                return Ok(self.op(&format!("arith.cmpf {p}, {x}, {y} : {n}")));
            }
            return Ok(match op {
                BinaryOp::Add => self.op(&format!("arith.addf {x}, {y}{fm} : {n}")),
                BinaryOp::Sub => self.op(&format!("arith.subf {x}, {y}{fm} : {n}")),
                BinaryOp::Mul => self.op(&format!("arith.mulf {x}, {y}{fm} : {n}")),
                BinaryOp::Div => self.op(&format!("arith.divf {x}, {y} : {n}")),
                BinaryOp::Max | BinaryOp::Min => {
                    // NaN if either is NaN; else the evaluator's `if b > a { b } else { a }`.
                    let p = if op == BinaryOp::Max { "ogt" } else { "olt" };
                    let take_y = self.op(&format!("arith.cmpf {p}, {y}, {x} : {n}"));
                    let r = self.op(&format!("arith.select {take_y}, {y}, {x} : {n}"));
                    let nan = self.op(&format!("arith.cmpf uno, {x}, {y} : {n}"));
                    let q = self.float_const(f64::NAN, t);
                    self.op(&format!("arith.select {nan}, {q}, {r} : {n}"))
                }
                BinaryOp::FloorDiv | BinaryOp::Rem => {
                    // Python's `//` and `%`, computed in f64 like the evaluator; `fmod` is exact
                    // (LLVM calls the runtime's `fmod` for it).
                    let a = self.convert(x, t, Ty::F64)?;
                    let b = self.convert(y, t, Ty::F64)?;
                    let r = if op == BinaryOp::Rem { self.float_rem(a, b) } else { self.float_floordiv(a, b) };
                    self.narrow_f64(r, d)?
                }
                other => return Err(format!("float `{}` is not supported by the llvm backend yet", other.name())),
            });
        }
        let cmp = match op {
            BinaryOp::Eq => Some("eq"),
            BinaryOp::Ne => Some("ne"),
            BinaryOp::Lt => Some(if t.is_unsigned() { "ult" } else { "slt" }),
            BinaryOp::Le => Some(if t.is_unsigned() { "ule" } else { "sle" }),
            BinaryOp::Gt => Some(if t.is_unsigned() { "ugt" } else { "sgt" }),
            BinaryOp::Ge => Some(if t.is_unsigned() { "uge" } else { "sge" }),
            _ => None,
        };
        if let Some(p) = cmp {
            return Ok(self.op(&format!("arith.cmpi {p}, {x}, {y} : {n}")));
        }
        Ok(match op {
            // Arithmetic on bools wraps to `!= 0`, as in the evaluator.
            BinaryOp::Add if t == Ty::I1 => self.op(&format!("arith.ori {x}, {y} : {n}")),
            BinaryOp::Sub if t == Ty::I1 => self.op(&format!("arith.xori {x}, {y} : {n}")),
            BinaryOp::Mul if t == Ty::I1 => self.op(&format!("arith.andi {x}, {y} : {n}")),
            BinaryOp::Add => self.op(&format!("arith.addi {x}, {y} : {n}")),
            BinaryOp::Sub => self.op(&format!("arith.subi {x}, {y} : {n}")),
            BinaryOp::Mul => self.op(&format!("arith.muli {x}, {y} : {n}")),
            BinaryOp::And => self.op(&format!("arith.andi {x}, {y} : {n}")),
            BinaryOp::Or => self.op(&format!("arith.ori {x}, {y} : {n}")),
            BinaryOp::Xor => self.op(&format!("arith.xori {x}, {y} : {n}")),
            BinaryOp::Max if t == Ty::I1 => self.op(&format!("arith.ori {x}, {y} : {n}")),
            BinaryOp::Min if t == Ty::I1 => self.op(&format!("arith.andi {x}, {y} : {n}")),
            BinaryOp::Max if t == Ty::U8 => self.op(&format!("arith.maxui {x}, {y} : {n}")),
            BinaryOp::Min if t == Ty::U8 => self.op(&format!("arith.minui {x}, {y} : {n}")),
            BinaryOp::Max => self.op(&format!("arith.maxsi {x}, {y} : {n}")),
            BinaryOp::Min => self.op(&format!("arith.minsi {x}, {y} : {n}")),
            BinaryOp::Div | BinaryOp::FloorDiv | BinaryOp::Rem | BinaryOp::Pow => {
                let a = self.widen_i64(x, t);
                let b = self.widen_i64(y, t);
                let r = if op == BinaryOp::Pow { self.int_pow(a, b) } else { self.int_divlike(op, a, b) };
                self.wrap_i64(r, t)
            }
            other => return Err(format!("integer `{}` of {n} is not supported by the llvm backend yet", other.name())),
        })
    }

    /// `m != 0 && (b < 0) != (m < 0)` on f64.
    fn sign_adjust(&mut self, m: &str, b: &str) -> String {
        let zero = self.float_const(0.0, Ty::F64);
        let nz = self.op(&format!("arith.cmpf une, {m}, {zero} : f64"));
        let bn = self.op(&format!("arith.cmpf olt, {b}, {zero} : f64"));
        let mn = self.op(&format!("arith.cmpf olt, {m}, {zero} : f64"));
        let differ = self.op(&format!("arith.xori {bn}, {mn} : i1"));
        self.op(&format!("arith.andi {nz}, {differ} : i1"))
    }

    /// Python's float `%` on f64 (the evaluator's `float_rem`).
    fn float_rem(&mut self, a: String, b: String) -> String {
        let m = self.op(&format!("arith.remf {a}, {b} : f64"));
        let adjust = self.sign_adjust(&m, &b);
        let mb = self.op(&format!("arith.addf {m}, {b} : f64"));
        self.op(&format!("arith.select {adjust}, {mb}, {m} : f64"))
    }

    /// Python's float `//` on f64 (the evaluator's `float_floordiv`).
    fn float_floordiv(&mut self, a: String, b: String) -> String {
        let m = self.op(&format!("arith.remf {a}, {b} : f64"));
        let (zero, one, half) =
            (self.float_const(0.0, Ty::F64), self.float_const(1.0, Ty::F64), self.float_const(0.5, Ty::F64));
        let q = self.op(&format!("arith.divf {a}, {b} : f64"));
        let am = self.op(&format!("arith.subf {a}, {m} : f64"));
        let div = self.op(&format!("arith.divf {am}, {b} : f64"));
        let adjust = self.sign_adjust(&m, &b);
        let dm1 = self.op(&format!("arith.subf {div}, {one} : f64"));
        let div = self.op(&format!("arith.select {adjust}, {dm1}, {div} : f64"));
        let f = self.op(&format!("math.floor {div} : f64"));
        let frac = self.op(&format!("arith.subf {div}, {f} : f64"));
        let up = self.op(&format!("arith.cmpf ogt, {frac}, {half} : f64"));
        let f1 = self.op(&format!("arith.addf {f}, {one} : f64"));
        let f = self.op(&format!("arith.select {up}, {f1}, {f} : f64"));
        let dz = self.op(&format!("arith.cmpf oeq, {div}, {zero} : f64"));
        let signed_zero = self.op(&format!("math.copysign {zero}, {q} : f64"));
        let r = self.op(&format!("arith.select {dz}, {signed_zero}, {f} : f64"));
        let bz = self.op(&format!("arith.cmpf oeq, {b}, {zero} : f64"));
        self.op(&format!("arith.select {bz}, {q}, {r} : f64"))
    }

    /// `a^b` on i64 by squaring with wrapping products; the exponent is shifted right
    /// logically, as the Cranelift backend does (a negative exponent ends after 64 steps).
    fn int_pow(&mut self, a: String, b: String) -> String {
        let (zero, one) = (self.int_const(0, Ty::I64), self.int_const(1, Ty::I64));
        let r = self.fresh();
        let (acc, base, exp) = (self.fresh(), self.fresh(), self.fresh());
        self.line(&format!(
            "{r}:3 = scf.while ({acc} = {one}, {base} = {a}, {exp} = {b}) : (i64, i64, i64) -> (i64, i64, i64) {{"
        ));
        self.indent += 1;
        let more = self.op(&format!("arith.cmpi ne, {exp}, {zero} : i64"));
        self.line(&format!("scf.condition({more}) {acc}, {base}, {exp} : i64, i64, i64"));
        self.indent -= 1;
        let (acc, base, exp) = (self.fresh(), self.fresh(), self.fresh());
        self.line("} do {");
        self.line(&format!("^bb0({acc}: i64, {base}: i64, {exp}: i64):"));
        self.indent += 1;
        let bit = self.op(&format!("arith.andi {exp}, {one} : i64"));
        let odd = self.op(&format!("arith.cmpi ne, {bit}, {zero} : i64"));
        let times = self.op(&format!("arith.muli {acc}, {base} : i64"));
        let next_acc = self.op(&format!("arith.select {odd}, {times}, {acc} : i64"));
        let square = self.op(&format!("arith.muli {base}, {base} : i64"));
        let next_exp = self.op(&format!("arith.shrui {exp}, {one} : i64"));
        self.line(&format!("scf.yield {next_acc}, {square}, {next_exp} : i64, i64, i64"));
        self.indent -= 1;
        self.line("}");
        format!("{r}#0")
    }

    /// Integer `/` (truncating), `//` and `%` (Python's) on i64; division by zero gives 0 and
    /// `MIN / -1` wraps, like the evaluator's `wrapping_div`.
    fn int_divlike(&mut self, op: BinaryOp, a: String, b: String) -> String {
        let (zero, one, m1) = (self.int_const(0, Ty::I64), self.int_const(1, Ty::I64), self.int_const(-1, Ty::I64));
        let bz = self.op(&format!("arith.cmpi eq, {b}, {zero} : i64"));
        let bm1 = self.op(&format!("arith.cmpi eq, {b}, {m1} : i64"));
        let bad = self.op(&format!("arith.ori {bz}, {bm1} : i1"));
        let safe = self.op(&format!("arith.select {bad}, {one}, {b} : i64"));
        let q0 = self.op(&format!("arith.divsi {a}, {safe} : i64"));
        let r0 = self.op(&format!("arith.remsi {a}, {safe} : i64"));
        let na = self.op(&format!("arith.subi {zero}, {a} : i64"));
        let q = self.op(&format!("arith.select {bm1}, {na}, {q0} : i64"));
        let r = self.op(&format!("arith.select {bm1}, {zero}, {r0} : i64"));
        let r_nz = self.op(&format!("arith.cmpi ne, {r}, {zero} : i64"));
        let bn = self.op(&format!("arith.cmpi slt, {b}, {zero} : i64"));
        let res = match op {
            BinaryOp::Div => q,
            BinaryOp::FloorDiv => {
                let an = self.op(&format!("arith.cmpi slt, {a}, {zero} : i64"));
                let differ = self.op(&format!("arith.xori {an}, {bn} : i1"));
                let adjust = self.op(&format!("arith.andi {r_nz}, {differ} : i1"));
                let adj = self.op(&format!("arith.extui {adjust} : i1 to i64"));
                self.op(&format!("arith.subi {q}, {adj} : i64"))
            }
            _ => {
                let rn = self.op(&format!("arith.cmpi slt, {r}, {zero} : i64"));
                let differ = self.op(&format!("arith.xori {rn}, {bn} : i1"));
                let adjust = self.op(&format!("arith.andi {r_nz}, {differ} : i1"));
                let rb = self.op(&format!("arith.addi {r}, {b} : i64"));
                self.op(&format!("arith.select {adjust}, {rb}, {r} : i64"))
            }
        };
        self.op(&format!("arith.select {bz}, {zero}, {res} : i64"))
    }

    /// The parallel loop of a kernel run one warp per row ([`warp_rows`]): the warp's
    /// [`WARP`] rows from `base`, one after the other; in each, lane `lane` takes every
    /// `WARP`-th iteration of the reduction and element loops, and the accumulators of each
    /// reduction loop are combined across the lanes by butterfly shuffles after it.
    fn warp_rows(&mut self, row: VarId, ext: &str, body: &[Stmt], plan: &WarpRows, lane: &str, base: &str) -> R<()> {
        let z = self.int_const(0, Ty::I64);
        let lanes = self.int_const(WARP as i64, Ty::I64);
        let one = self.int_const(1, Ty::I64);
        let q = self.fresh();
        self.line(&format!("scf.for {q} = {z} to {lanes} step {one} : i64 {{"));
        self.indent += 1;
        let r = self.op(&format!("arith.addi {base}, {q} : i64"));
        self.if_in_range(&r, ext);
        self.ssa.insert(row, r);
        for (i, s) in body.iter().enumerate() {
            let reduction = plan.reductions.iter().find(|(at, _)| *at == i);
            let (true, Stmt::Loop { var, extent, body: inner, .. }) =
                (reduction.is_some() || plan.element_loops.contains(&i), s)
            else {
                self.stmts(std::slice::from_ref(s), false)?;
                continue;
            };
            let (n, _) = self.expr(extent)?;
            self.for_loop(*var, lane, &n, &lanes, inner)?;
            for (acc, op) in reduction.map(|(_, accs)| accs.as_slice()).unwrap_or_default() {
                let slot = self.slots.get(acc).cloned().ok_or("accumulator without a slot")?;
                let mut v = self.op(&format!("llvm.load {slot} : {} -> f32", self.slot_ptr));
                let width = self.op(&format!("arith.constant {WARP} : i32"));
                let mut offset = WARP / 2;
                while offset > 0 {
                    let o = self.op(&format!("arith.constant {offset} : i32"));
                    let (other, _valid) = (self.fresh(), self.fresh());
                    self.line(&format!("{other}, {_valid} = gpu.shuffle xor {v}, {o}, {width} : f32"));
                    v = self.binary(*op, v, other, Ty::F32, self.contract, ScalarType::Elem(DType::F32))?;
                    offset /= 2;
                }
                self.line(&format!("llvm.store {v}, {slot} : f32, {}", self.slot_ptr));
            }
        }
        self.indent -= 1;
        self.line("}");
        self.indent -= 1;
        self.line("}");
        Ok(())
    }

    /// Opens `scf.if` (and indents) for iteration `iv` of the parallel loop being inside the
    /// launch's range and the loop's extent `ext`: `0 <= iv < min(%end, ext)`.
    fn if_in_range(&mut self, iv: &str, ext: &str) {
        let z = self.int_const(0, Ty::I64);
        let hi = self.op(&format!("arith.minsi {}, {ext} : i64", self.range_end));
        let below = self.op(&format!("arith.cmpi slt, {iv}, {hi} : i64"));
        let above = self.op(&format!("arith.cmpi sge, {iv}, {z} : i64"));
        let inside = self.op(&format!("arith.andi {below}, {above} : i1"));
        self.line(&format!("scf.if {inside} {{"));
        self.indent += 1;
    }

    /// `scf.for %v<var> = lo to hi step step : i64 { body }`.
    fn for_loop(&mut self, var: VarId, lo: &str, hi: &str, step: &str, body: &[Stmt]) -> R<()> {
        let iv = format!("%v{}", var.0);
        self.line(&format!("scf.for {iv} = {lo} to {hi} step {step} : i64 {{"));
        self.ssa.insert(var, iv);
        self.indent += 1;
        self.stmts(body, false)?;
        self.indent -= 1;
        self.line("}");
        Ok(())
    }

    fn stmts(&mut self, body: &[Stmt], first: bool) -> R<()> {
        for (i, s) in body.iter().enumerate() {
            match s {
                Stmt::Loop { var, extent, kind: LoopKind::GpuBlocks, body } => {
                    // One block per iteration: block `blockIdx.x`, when below the extent.
                    let (ext, _) = self.expr(extent)?;
                    let block = self.block_index.clone().ok_or("a gpu-blocks loop outside a GPU kernel")?;
                    let z = self.int_const(0, Ty::I64);
                    let below = self.op(&format!("arith.cmpi slt, {block}, {ext} : i64"));
                    let above = self.op(&format!("arith.cmpi sge, {block}, {z} : i64"));
                    let inside = self.op(&format!("arith.andi {below}, {above} : i1"));
                    self.line(&format!("scf.if {inside} {{"));
                    self.indent += 1;
                    self.ssa.insert(*var, block);
                    self.stmts(body, false)?;
                    self.indent -= 1;
                    self.line("}");
                }
                Stmt::Loop { var, kind: LoopKind::GpuThreads, body, .. } => {
                    // Every thread of the block: the variable is the thread's index.
                    let t = self.op("gpu.thread_id x");
                    let t = self.op(&format!("arith.index_cast {t} : index to i64"));
                    self.ssa.insert(*var, t);
                    self.stmts(body, false)?;
                }
                Stmt::Loop { var, extent, body, .. } => {
                    let (ext, _) = self.expr(extent)?;
                    if let (true, 0, Some((plan, lane, base))) = (first, i, self.warp.clone()) {
                        self.warp_rows(*var, &ext, body, &plan, &lane, &base)?;
                        continue;
                    }
                    if let (true, 0, Some(iv)) = (first, i, self.thread_index.clone()) {
                        // GPU: this thread runs iteration `iv` of the parallel loop, if it is
                        // inside the launch's range and the extent.
                        self.if_in_range(&iv, &ext);
                        self.ssa.insert(*var, iv);
                        self.stmts(body, false)?;
                        self.indent -= 1;
                        self.line("}");
                        continue;
                    }
                    let (lo, hi) = if first && i == 0 {
                        // The parallel loop: the caller's range, clamped to the extent.
                        let z = self.int_const(0, Ty::I64);
                        let lo = self.op(&format!("arith.maxsi %start, {z} : i64"));
                        let hi = self.op(&format!("arith.minsi %end, {ext} : i64"));
                        (lo, hi)
                    } else {
                        (self.int_const(0, Ty::I64), ext)
                    };
                    let one = self.int_const(1, Ty::I64);
                    self.for_loop(*var, &lo, &hi, &one, body)?;
                }
                Stmt::Let { var, value } => {
                    let (v, vt) = self.expr(value)?;
                    let want = ty_of(self.k.vars[var.0 as usize].1)?;
                    let v = self.convert(v, vt, want)?;
                    self.ssa.insert(*var, v);
                }
                Stmt::Decl { var, init: value } | Stmt::Assign { var, value } => {
                    let (v, vt) = self.expr(value)?;
                    let want = ty_of(self.k.vars[var.0 as usize].1)?;
                    let v = self.convert(v, vt, want)?;
                    let slot = self.slots.get(var).cloned().ok_or("accumulator without a slot")?;
                    self.line(&format!("llvm.store {v}, {slot} : {}, {}", want.name(), self.slot_ptr));
                }
                Stmt::Store { buf, index, value } => {
                    let (a, t, is_bool) = self.address(*buf, index)?;
                    let bp = self.ptr_ty(*buf);
                    let (v, vt) = self.expr(value)?;
                    let v = self.convert(v, vt, t)?;
                    if is_bool {
                        let b = self.op(&format!("arith.extui {v} : i1 to i8"));
                        self.line(&format!("llvm.store {b}, {a} : i8, {bp}"));
                    } else if self.k.buffers[*buf as usize].dtype == DType::BF16 {
                        // The value is a bf16 already: its upper half; a NaN stays a NaN.
                        let bits = self.op(&format!("arith.bitcast {v} : f32 to i32"));
                        let h = self.i32_op("shrui", &bits, 16);
                        let q = self.i32_op("ori", &h, 0x40);
                        let nan = self.op(&format!("arith.cmpf uno, {v}, {v} : f32"));
                        let h = self.op(&format!("arith.select {nan}, {q}, {h} : i32"));
                        let h = self.op(&format!("arith.trunci {h} : i32 to i16"));
                        self.line(&format!("llvm.store {h}, {a} : i16, {bp}"));
                    } else if let Some(h) = half_name(self.k.buffers[*buf as usize].dtype) {
                        let x = self.op(&format!("arith.truncf {v} : f32 to {h}"));
                        self.line(&format!("llvm.store {x}, {a} : {h}, {bp}"));
                    } else {
                        self.line(&format!("llvm.store {v}, {a} : {}, {bp}", t.name()));
                    }
                }
                Stmt::Barrier => {
                    if self.matrix == Some(MmaLayout::Hopper64x32) && self.k.matrix_operands().is_some() {
                        // The tensor cores read the panels through the async proxy: each
                        // thread's ordinary stores to shared memory must be made visible to
                        // it before the barrier that hands the panels over.
                        self.asm("fence.proxy.async.shared::cta;", "~{memory}", &[], None);
                    }
                    self.line("gpu.barrier")
                }
                Stmt::Mma(m) if self.matrix == Some(m.layout) => match m.layout {
                    MmaLayout::Nvidia16x8 => self.mma_sync(m)?,
                    MmaLayout::Cdna16x16 => self.mfma(m)?,
                    MmaLayout::Rdna16x16 => self.wmma(m)?,
                    // A run of them on the same accumulators (a panel's steps) is one
                    // group of asynchronous instructions, waited for once.
                    MmaLayout::Hopper64x32 => {
                        let same = |s: &Stmt| matches!(s, Stmt::Mma(n) if n.layout == m.layout && n.acc == m.acc);
                        if i == 0 || !same(&body[i - 1]) {
                            let run: Vec<&Mma> = body[i..]
                                .iter()
                                .map_while(|s| match s {
                                    Stmt::Mma(n) if same(s) => Some(&**n),
                                    _ => None,
                                })
                                .collect();
                            self.wgmma(&run)?
                        }
                    }
                },
                Stmt::Mma(m) => self.stmts(&m.per_thread(), false)?,
            }
        }
        Ok(())
    }

    /// [`Stmt::Mma`] as NVIDIA's `mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}`: each
    /// register of the thread's `A` and `B` fragments is a pair of consecutive steps of one
    /// row (column), loaded from shared memory as one 32-bit word; the accumulators go in and
    /// come back in the fragment order of [`Mma::place`].
    fn mma_sync(&mut self, m: &Mma) -> R<()> {
        let half = self.half_operands(m)?;
        let g = Expr::div(m.lane.clone(), Expr::Int(4));
        let q2 = Expr::mul(Expr::rem(m.lane.clone(), Expr::Int(4)), Expr::Int(2));
        let word = |e: &mut Self, buf: u32, at: &Expr, line: Expr, k: i64| -> R<String> {
            let index = Expr::add(at.clone(), Expr::add(Expr::mul(line, Expr::Int(m.stride)), Expr::add(q2.clone(), Expr::Int(k))));
            let (a, _, _) = e.address(buf, &index)?;
            let bp = e.ptr_ty(buf);
            let w = e.op(&format!("llvm.load {a} : {bp} -> i32"));
            Ok(if half == DType::F16 { e.op(&format!("llvm.bitcast {w} : i32 to vector<2xf16>")) } else { w })
        };
        let row8 = Expr::add(g.clone(), Expr::Int(8));
        let a = [
            word(self, m.a, &m.a_at, g.clone(), 0)?,
            word(self, m.a, &m.a_at, row8.clone(), 0)?,
            word(self, m.a, &m.a_at, g.clone(), 8)?,
            word(self, m.a, &m.a_at, row8, 8)?,
        ];
        let b = [word(self, m.b, &m.b_at, g.clone(), 0)?, word(self, m.b, &m.b_at, g, 8)?];
        let mut c = Vec::new();
        for acc in &m.acc {
            let slot = self.slots.get(acc).cloned().ok_or("accumulator without a slot")?;
            c.push(self.op(&format!("llvm.load {slot} : {} -> f32", self.slot_ptr)));
        }
        let (name, reg) = match half {
            DType::F16 => ("llvm.nvvm.mma.m16n8k16.row.col.f32.f32", "vector<2xf16>"),
            _ => ("llvm.nvvm.mma.m16n8k16.row.col.bf16", "i32"),
        };
        let args: Vec<&str> = a.iter().chain(&b).chain(&c).map(String::as_str).collect();
        let types = [reg; 6].into_iter().chain(["f32"; 4]).collect::<Vec<_>>().join(", ");
        let result = "!llvm.struct<(f32, f32, f32, f32)>";
        let d = self.op(&format!("llvm.call_intrinsic \"{name}\"({}) : ({types}) -> {result}", args.join(", ")));
        for (i, acc) in m.acc.iter().enumerate() {
            let x = self.op(&format!("llvm.extractvalue {d}[{i}] : {result}"));
            let slot = self.slots.get(acc).cloned().ok_or("accumulator without a slot")?;
            self.line(&format!("llvm.store {x}, {slot} : f32, {}", self.slot_ptr));
        }
        Ok(())
    }

    /// [`Stmt::Mma`] as AMD CDNA's `v_mfma_f32_16x16x16f16` (`..bf16_1k` for bf16): lane `l`'s
    /// `A` operand is steps `4(l/16) .. +4` of row `l%16` (one 64-bit load), its `B` operand
    /// the same steps of column `l%16`, and its accumulators rows `4(l/16) .. +4` of column
    /// `l%16` ([`MmaLayout::place`]).
    fn mfma(&mut self, m: &Mma) -> R<()> {
        let half = self.half_operands(m)?;
        let operand = if half == DType::F16 { "vector<4xf16>" } else { "vector<4xi16>" };
        let line = Expr::rem(m.lane.clone(), Expr::Int(16));
        let steps = Expr::mul(Expr::div(m.lane.clone(), Expr::Int(16)), Expr::Int(4));
        let load = |e: &mut Self, buf: u32, at: &Expr| -> R<String> {
            let index = Expr::add(at.clone(), Expr::add(Expr::mul(line.clone(), Expr::Int(m.stride)), steps.clone()));
            let (a, _, _) = e.address(buf, &index)?;
            let bp = e.ptr_ty(buf);
            Ok(e.op(&format!("llvm.load {a} : {bp} -> {operand}")))
        };
        let a = load(self, m.a, &m.a_at)?;
        let b = load(self, m.b, &m.b_at)?;
        let (c, accumulators) = self.accumulator_vector(&m.acc)?;
        let zero = self.int_const(0, Ty::I32);
        let name = if half == DType::F16 { "rocdl.mfma.f32.16x16x16f16" } else { "rocdl.mfma.f32.16x16x16bf16.1k" };
        let d = self.op(&format!(
            "{name} {a}, {b}, {c}, {zero}, {zero}, {zero} : ({operand}, {operand}, {accumulators}, i32, i32, i32) -> {accumulators}"
        ));
        self.store_accumulators(&d, &accumulators, &m.acc)
    }

    /// The operand type of a matrix multiply-accumulate: both operands f16, or both bf16.
    fn half_operands(&self, m: &Mma) -> R<DType> {
        let half = self.k.buffers[m.a as usize].dtype;
        if self.k.buffers[m.b as usize].dtype != half || !matches!(half, DType::F16 | DType::BF16) {
            return Err("a matrix multiply of operands that are not both f16 or both bf16".into());
        }
        Ok(half)
    }

    /// The accumulators' current values as one `vector<Nxf32>`, and that type.
    fn accumulator_vector(&mut self, acc: &[VarId]) -> R<(String, String)> {
        let ty = format!("vector<{}xf32>", acc.len());
        let mut c = self.op(&format!("llvm.mlir.undef : {ty}"));
        for (i, a) in acc.iter().enumerate() {
            let slot = self.slots.get(a).cloned().ok_or("accumulator without a slot")?;
            let x = self.op(&format!("llvm.load {slot} : {} -> f32", self.slot_ptr));
            let at = self.int_const(i as i64, Ty::I32);
            c = self.op(&format!("llvm.insertelement {x}, {c}[{at} : i32] : {ty}"));
        }
        Ok((c, ty))
    }

    /// Stores vector `d` (of type `ty`) back into the accumulators, element by element.
    fn store_accumulators(&mut self, d: &str, ty: &str, acc: &[VarId]) -> R<()> {
        for (i, a) in acc.iter().enumerate() {
            let at = self.int_const(i as i64, Ty::I32);
            let x = self.op(&format!("llvm.extractelement {d}[{at} : i32] : {ty}"));
            let slot = self.slots.get(a).cloned().ok_or("accumulator without a slot")?;
            self.line(&format!("llvm.store {x}, {slot} : f32, {}", self.slot_ptr));
        }
        Ok(())
    }

    /// [`Stmt::Mma`] as AMD RDNA 3's `v_wmma_f32_16x16x16_f16` (`.._bf16`) on a wavefront of
    /// 32: lane `l`'s `A` operand is the 16 steps of row `l%16` (lanes `l` and `l + 16` hold
    /// the same), its `B` operand the 16 steps of column `l%16`, each one 32-byte load from
    /// shared memory (16-byte aligned: the panels' rows are 80 bytes apart), and its 8
    /// accumulators rows `2i + l/16` of column `l%16` ([`MmaLayout::place`]).
    fn wmma(&mut self, m: &Mma) -> R<()> {
        let half = self.half_operands(m)?;
        let operand = if half == DType::F16 { "vector<16xf16>" } else { "vector<16xi16>" };
        let line = Expr::rem(m.lane.clone(), Expr::Int(16));
        let load = |e: &mut Self, buf: u32, at: &Expr| -> R<String> {
            let index = Expr::add(at.clone(), Expr::mul(line.clone(), Expr::Int(m.stride)));
            let (a, _, _) = e.address(buf, &index)?;
            let bp = e.ptr_ty(buf);
            Ok(e.op(&format!("llvm.load {a} {{alignment = 16 : i64}} : {bp} -> {operand}")))
        };
        let a = load(self, m.a, &m.a_at)?;
        let b = load(self, m.b, &m.b_at)?;
        let (c, accumulators) = self.accumulator_vector(&m.acc)?;
        let name = if half == DType::F16 { "rocdl.wmma.f32.16x16x16.f16" } else { "rocdl.wmma.f32.16x16x16.bf16" };
        let d = self.op(&format!("{name} {a}, {b}, {c} : ({operand}, {operand}, {accumulators}) -> {accumulators}"));
        self.store_accumulators(&d, &accumulators, &m.acc)
    }

    /// A run of [`Stmt::Mma`]s on the same accumulators as NVIDIA Hopper's
    /// `wgmma.mma_async.sync.aligned.m64n32k16.f32.{f16,bf16}` (sm_90a), one per statement, for
    /// the thread's warpgroup: `A` (64 rows) and `B` (32 columns) are read by the tensor cores
    /// from shared memory through matrix descriptors (start address; the leading-dimension
    /// byte offset between core matrices along `k`, 128 bytes; the stride byte offset between
    /// groups of 8 lines, `16 · stride` bytes; no swizzling: the layout of
    /// [`MmaLayout::panel_offset`]); the 16 accumulators go in and come back in the order of
    /// [`MmaLayout::place`]. The instructions are asynchronous: fenced, committed as one
    /// group and waited for at once, so the accumulators are the thread's again after them.
    fn wgmma(&mut self, run: &[&Mma]) -> R<()> {
        let m = run[0];
        let half = self.half_operands(m)?;
        let descriptor = |e: &mut Self, buf: u32, at: &Expr| -> R<String> {
            let (p, _, _) = e.address(buf, at)?;
            let addr = e.op(&format!("llvm.ptrtoint {p} : !llvm.ptr<3> to i64"));
            let mask = e.int_const(0x3FFFF, Ty::I64);
            let addr = e.op(&format!("arith.andi {addr}, {mask} : i64"));
            let four = e.int_const(4, Ty::I64);
            let start = e.op(&format!("arith.shrui {addr}, {four} : i64"));
            let (leading, stride) = (128_i64 >> 4, (16 * m.stride) >> 4);
            let offsets = e.int_const((stride << 32) | (leading << 16), Ty::I64);
            Ok(e.op(&format!("arith.ori {start}, {offsets} : i64")))
        };
        let mut descriptors = Vec::new();
        for mma in run {
            descriptors.push(descriptor(self, mma.a, &mma.a_at)?);
            descriptors.push(descriptor(self, mma.b, &mma.b_at)?);
        }
        let mut c = Vec::new();
        for acc in &m.acc {
            let slot = self.slots.get(acc).cloned().ok_or("accumulator without a slot")?;
            c.push(self.op(&format!("llvm.load {slot} : {} -> f32", self.slot_ptr)));
        }
        // Operands: the accumulators out ($0 ..), the descriptors, the accumulators in (tied).
        let n = m.acc.len();
        let registers: Vec<String> = (0..n).map(|i| format!("${i}")).collect();
        let operand = if half == DType::F16 { "f16" } else { "bf16" };
        let mut text = String::from("{\\0A\\09wgmma.fence.sync.aligned;");
        for step in 0..run.len() {
            // Scale D by 1 (accumulate), A and B by 1, neither transposed (both K-major).
            text += &format!(
                "\\0A\\09wgmma.mma_async.sync.aligned.m64n{}k16.f32.{operand}.{operand} {{{}}}, ${}, ${}, 1, 1, 1, 0, 0;",
                m.layout.columns(),
                registers.join(", "),
                n + 2 * step,
                n + 2 * step + 1
            );
        }
        text += "\\0A\\09wgmma.commit_group.sync.aligned;\\0A\\09wgmma.wait_group.sync.aligned 0;\\0A}";
        let tied: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let constraints = format!("{},{},{},~{{memory}}", vec!["=f"; n].join(","), vec!["l"; descriptors.len()].join(","), tied.join(","));
        let operands: Vec<(&str, &str)> = descriptors
            .iter()
            .map(|d| (d.as_str(), "i64"))
            .chain(c.iter().map(|x| (x.as_str(), "f32")))
            .collect();
        let result = format!("!llvm.struct<({})>", vec!["f32"; n].join(", "));
        let d = self.asm(&text, &constraints, &operands, Some(&result));
        for (i, acc) in m.acc.iter().enumerate() {
            let x = self.op(&format!("llvm.extractvalue {d}[{i}] : {result}"));
            let slot = self.slots.get(acc).cloned().ok_or("accumulator without a slot")?;
            self.line(&format!("llvm.store {x}, {slot} : f32, {}", self.slot_ptr));
        }
        Ok(())
    }

    /// Inline PTX `text` with side effects, under `constraints`, of `operands` (value, type),
    /// with a result of type `result` (its SSA name returned) or none.
    fn asm(&mut self, text: &str, constraints: &str, operands: &[(&str, &str)], result: Option<&str>) -> String {
        let values: Vec<&str> = operands.iter().map(|(v, _)| *v).collect();
        let types: Vec<&str> = operands.iter().map(|(_, t)| *t).collect();
        let op = format!(
            "llvm.inline_asm has_side_effects asm_dialect = att \"{text}\", \"{constraints}\" {} : ({}) -> {}",
            values.join(", "),
            types.join(", "),
            result.unwrap_or("()")
        );
        match result {
            Some(_) => self.op(&op),
            None => {
                self.line(&op);
                String::new()
            }
        }
    }

    /// The pointer type of buffer `buf`: shared memory is address space 3 on both GPU targets.
    fn ptr_ty(&self, buf: u32) -> &'static str {
        match self.k.buffers.get(buf as usize).map(|b| b.access) {
            Some(Access::Shared) => "!llvm.ptr<3>",
            _ => self.buf_ptr,
        }
    }
}

/// Symbols (graph symbol ids) a kernel reads, and its accumulator variables.
fn scan(body: &[Stmt], syms: &mut BTreeSet<u32>, decls: &mut BTreeSet<u32>) {
    fn expr(e: &Expr, syms: &mut BTreeSet<u32>) {
        e.visit(&mut |x| {
            if let Expr::Sym(s) = x {
                syms.insert(s.0);
            }
        });
    }
    for s in body {
        match s {
            Stmt::Loop { extent, body, .. } => {
                expr(extent, syms);
                scan(body, syms, decls);
            }
            Stmt::Let { value, .. } | Stmt::Assign { value, .. } => expr(value, syms),
            Stmt::Decl { var, init } => {
                decls.insert(var.0);
                expr(init, syms);
            }
            Stmt::Barrier => {}
            Stmt::Mma(m) => {
                [&m.a_at, &m.b_at, &m.lane].into_iter().for_each(|e| expr(e, syms));
                decls.extend(m.acc.iter().map(|a| a.0));
            }
            Stmt::Store { index, value, .. } => {
                expr(index, syms);
                expr(value, syms);
            }
        }
    }
}

/// Where a kernel function runs: the host CPU or a GPU (its address spaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelAbi {
    /// `func.func @SYMBOL(%bufs: !llvm.ptr, %syms: !llvm.ptr, %start: i64, %end: i64)`: the
    /// calling convention shared with the Cranelift kernels; the first loop runs over
    /// `[max(start, 0), min(end, extent))`.
    Cpu,
    /// `gpu.func @SYMBOL(%b0: !llvm.ptr<1>, ..., %syms: !llvm.ptr<1>, %start: i64, %end: i64)
    /// kernel`: one pointer per buffer (global address space), the symbol values in device
    /// memory; blocks of `BLOCK_THREADS` threads (`kiln_runtime::device::gpu_launch`, the
    /// runtime's side of this contract); thread `blockIdx.x * BLOCK_THREADS + threadIdx.x`
    /// runs iteration `start * n + thread` of the parallel loop when it is below
    /// `min(end * n, extent)`, where `n` is the kernel's threads per item of the launch range
    /// (the runtime launches `(end - start) * n` threads). Accumulators live in `private_space` (5 on AMDGPU, 0 on NVPTX).
    /// `matrix`: the layout of the target's matrix multiply-accumulate instructions, when it
    /// has them.
    Gpu { private_space: u32, matrix: Option<MmaLayout> },
}

/// The MLIR function of kernel `k` under `symbol`; `contract`: float multiplies and adds may
/// be fused into FMAs (results then differ from the evaluator's in the last bits).
pub fn kernel_function(k: &Kernel, symbol: &str, contract: bool) -> Result<String, String> {
    kernel_function_for(k, symbol, contract, KernelAbi::Cpu, &Dim::constant(1))
}

/// The MLIR function of kernel `k` under `symbol` for `abi`. On GPUs, `k` is scheduled
/// ([`crate::kernel::gpu_schedule::schedule`]) and runs `threads_per_item` iterations of its
/// parallel loop per item of the launch's range (1 on CPUs).
pub fn kernel_function_for(
    k: &Kernel,
    symbol: &str,
    contract: bool,
    abi: KernelAbi,
    threads_per_item: &Dim,
) -> Result<String, String> {
    let (buf_ptr, slot_ptr) = match abi {
        KernelAbi::Cpu => ("!llvm.ptr", "!llvm.ptr"),
        KernelAbi::Gpu { private_space: 0, .. } => ("!llvm.ptr<1>", "!llvm.ptr"),
        KernelAbi::Gpu { private_space: 5, .. } => ("!llvm.ptr<1>", "!llvm.ptr<5>"),
        KernelAbi::Gpu { private_space, .. } => return Err(format!("unsupported private address space {private_space}")),
    };
    let mut shared = Vec::new();
    let mut e = Emitter {
        contract,
        k,
        out: String::new(),
        indent: 1,
        next: 0,
        ssa: HashMap::new(),
        slots: HashMap::new(),
        bufs: Vec::new(),
        syms: HashMap::new(),
        buf_ptr,
        slot_ptr,
        thread_index: None,
        block_index: None,
        warp: None,
        range_end: "%end".into(),
        matrix: match abi {
            KernelAbi::Gpu { matrix, .. } => matrix,
            KernelAbi::Cpu => None,
        },
    };
    match abi {
        KernelAbi::Cpu => {
            e.line(&format!("func.func @{symbol}(%bufs: !llvm.ptr, %syms: !llvm.ptr, %start: i64, %end: i64) {{"));
            e.indent += 1;
            for i in 0..k.buffers.len() {
                let p = e.op(&format!("llvm.getelementptr %bufs[{i}] : (!llvm.ptr) -> !llvm.ptr, !llvm.ptr"));
                let b = e.op(&format!("llvm.load {p} : !llvm.ptr -> !llvm.ptr"));
                e.bufs.push(b);
            }
        }
        KernelAbi::Gpu { .. } => {
            // `noalias`: a kernel's buffers never overlap (each is one argument, and the memory
            // plan never places two buffers that are live at one launch at the same address),
            // so LLVM may keep an element in a register across loads of other buffers.
            let args = k.buffers.iter().filter(|b| b.access != Access::Shared).count();
            let params: Vec<String> = (0..args).map(|i| format!("%b{i}: {buf_ptr} {{llvm.noalias}}")).collect();
            let block_threads = kiln_runtime::device::gpu_launch::BLOCK_THREADS;
            e.line(&format!(
                "gpu.func @{symbol}({}%syms: {buf_ptr}, %start: i64, %end: i64) kernel attributes {{known_block_size = array<i32: {block_threads}, 1, 1>}} {{",
                params.iter().map(|p| format!("{p}, ")).collect::<String>()
            ));
            e.indent += 1;
            e.bufs = (0..args).map(|i| format!("%b{i}")).collect();
            // Shared memory: a module-level array in address space 3 per shared buffer.
            for (i, b) in k.buffers.iter().enumerate().skip(args) {
                let len = b.len.as_const().ok_or("shared memory of a symbolic size")?;
                // Elements as stored (f16 and bf16 take 2 bytes; they compute in f32).
                let elem = half_name(b.dtype).map_or_else(|| ty_of(ScalarType::Elem(b.dtype)).map(|t| t.name()), Ok)?;
                let name = format!("{symbol}_shared{i}");
                shared.push(format!(
                    "  llvm.mlir.global internal @{name}() {{addr_space = 3 : i32, alignment = 16 : i64}} : !llvm.array<{len} x {elem}>\n"
                ));
                let p = e.op(&format!("llvm.mlir.addressof @{name} : !llvm.ptr<3>"));
                e.bufs.push(p);
            }
        }
    }
    let per_item = dim_expr(threads_per_item);
    let (mut syms, mut decls) = (BTreeSet::new(), BTreeSet::new());
    scan(&k.body, &mut syms, &mut decls);
    per_item.visit(&mut |x| {
        if let Expr::Sym(s) = x {
            syms.insert(s.0);
        }
    });
    for s in syms {
        let p = e.op(&format!("llvm.getelementptr %syms[{s}] : ({buf_ptr}) -> {buf_ptr}, i64"));
        let v = e.op(&format!("llvm.load {p} : {buf_ptr} -> i64"));
        e.syms.insert(kiln_ir::SymId(s), v);
    }
    let one = e.int_const(1, Ty::I64);
    for d in decls {
        let t = ty_of(k.vars[d as usize].1)?;
        let slot = e.op(&format!("llvm.alloca {one} x {} : (i64) -> {slot_ptr}", t.name()));
        e.slots.insert(VarId(d), slot);
    }
    let blocks = matches!(k.body.first(), Some(Stmt::Loop { kind: LoopKind::GpuBlocks, .. }));
    if let (KernelAbi::Gpu { .. }, true) = (abi, blocks) {
        // A kernel of blocks: its first loop runs one iteration per block.
        let block = e.op("gpu.block_id x");
        e.block_index = Some(e.op(&format!("arith.index_cast {block} : index to i64")));
    } else if let KernelAbi::Gpu { .. } = abi {
        // Every launch has blocks of `BLOCK_THREADS` threads (reading the block size would
        // call ROCm's device library on AMD).
        let block_threads = kiln_runtime::device::gpu_launch::BLOCK_THREADS;
        let block = e.op("gpu.block_id x");
        let size = e.op(&format!("arith.constant {block_threads} : index"));
        let thread = e.op("gpu.thread_id x");
        let first = e.op(&format!("arith.muli {block}, {size} : index"));
        let id = e.op(&format!("arith.addi {first}, {thread} : index"));
        let id = e.op(&format!("arith.index_cast {id} : index to i64"));
        // The launch's range counts items of the lowered kernel; this kernel runs
        // `threads_per_item` iterations per item.
        let (n, _) = e.expr(&per_item)?;
        let lo = e.op(&format!("arith.muli %start, {n} : i64"));
        e.range_end = e.op(&format!("arith.muli %end, {n} : i64"));
        let iv = e.op(&format!("arith.addi {lo}, {id} : i64"));
        e.thread_index = Some(iv);
        // Row reductions, where reassociating them is allowed: one warp per row.
        if let Some(plan) = warp_rows(k).filter(|_| contract) {
            let lanes = e.int_const(WARP as i64, Ty::I64);
            let lane = e.op(&format!("arith.remui {id}, {lanes} : i64"));
            let warp = e.op(&format!("arith.divui {id}, {lanes} : i64"));
            let first_row = e.op(&format!("arith.muli {warp}, {lanes} : i64"));
            let base = e.op(&format!("arith.addi {lo}, {first_row} : i64"));
            e.warp = Some((plan, lane, base));
        }
    }
    e.stmts(&k.body, true)?;
    e.line(if abi == KernelAbi::Cpu { "return" } else { "gpu.return" });
    e.indent -= 1;
    e.line("}");
    Ok(shared.concat() + &e.out)
}
