//! Scalar expressions: constants, loads and stores, the element operations of every dtype, and
//! conversions — each computing what [`crate::kernel::eval`] computes.

use super::func::{dtype_of, reg_ty, Fx, R};
use super::CraneliftError;
use crate::kernel::ir::{BufferParam, Expr, ScalarType};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use kiln_ir::interp::scalar::{self, Num};
use kiln_ir::{BinaryOp, DType, UnaryOp};

/// Integers whose values are never negative (zero-extended when widened).
pub(super) fn is_unsigned(d: DType) -> bool {
    matches!(d, DType::U8 | DType::Bool)
}

/// Bits of an `i64` as the immediate of an `iconst` of `d`'s register type.
fn imm(d: DType, v: i64) -> i64 {
    match reg_ty(ScalarType::Elem(d)).bits() {
        64 => v,
        bits => (v as u64 & ((1u64 << bits) - 1)) as i64,
    }
}

fn transcendental(op: UnaryOp) -> bool {
    crate::kernel::math::is_transcendental(op)
}

impl Fx<'_, '_> {
    pub fn buffer(&self, buf: u32) -> R<&BufferParam> {
        self.k.buffers.get(buf as usize).ok_or_else(|| self.malformed(format!("buffer {buf} does not exist")))
    }

    /// `base(buf) + index * size`.
    pub fn address(&mut self, buf: u32, index: Value) -> R<Value> {
        let size = self.buffer(buf)?.dtype.size_bytes() as i64;
        let base = self.bases[buf as usize];
        let off = match size {
            1 => index,
            _ => self.b.ins().ishl_imm_s(index, size.trailing_zeros() as i64),
        };
        Ok(self.b.ins().iadd(base, off))
    }

    fn flags(&self, buf: u32) -> MemFlagsData {
        let f = MemFlagsData::trusted();
        match self.k.buffers[buf as usize].access {
            crate::kernel::Access::Read => f.with_readonly(),
            crate::kernel::Access::Write | crate::kernel::Access::Shared => f,
        }
    }

    /// Loads one element of `d` at `addr` into its register form.
    pub fn load_elem(&mut self, buf: u32, d: DType, addr: Value) -> Value {
        let flags = self.flags(buf);
        match d {
            DType::F16 => {
                let h = self.b.ins().load(types::I16, flags, addr, 0);
                self.f16_bits_to_f32(h)
            }
            DType::BF16 => {
                let h = self.b.ins().load(types::I16, flags, addr, 0);
                let w = self.b.ins().uextend(types::I32, h);
                let w = self.b.ins().ishl_imm_s(w, 16);
                self.b.ins().bitcast(types::F32, MemFlagsData::new(), w)
            }
            _ => self.b.ins().load(reg_ty(ScalarType::Elem(d)), flags, addr, 0),
        }
    }

    /// Stores `v` (register form of `d`) at `addr`.
    pub fn store_elem(&mut self, d: DType, v: Value, addr: Value) {
        let flags = MemFlagsData::trusted();
        let v = match d {
            DType::F16 => self.f32_to_f16_bits(v),
            DType::BF16 => self.f32_to_bf16_bits(v),
            _ => v,
        };
        self.b.ins().store(flags, v, addr, 0);
    }

    /// A constant of `d` from the evaluator's value.
    pub fn const_num(&mut self, d: DType, n: Num) -> Value {
        let (f, i) = match n {
            Num::F(f) => (f, f as i64),
            Num::I(i) => (i as f64, i),
        };
        match d {
            DType::F64 => self.b.ins().f64const(f),
            DType::F32 | DType::F16 | DType::BF16 => self.b.ins().f32const(f as f32),
            _ => self.b.ins().iconst(reg_ty(ScalarType::Elem(d)), imm(d, i)),
        }
    }

    fn iconst(&mut self, d: DType, v: i64) -> Value {
        self.b.ins().iconst(reg_ty(ScalarType::Elem(d)), imm(d, v))
    }

    /// Emits `e`; returns its value and type (the type is [`crate::kernel::eval::expr_type`]'s).
    pub fn expr(&mut self, e: &Expr) -> R<(Value, ScalarType)> {
        Ok(match e {
            Expr::Int(v) => (self.b.ins().iconst(types::I64, *v), ScalarType::Index),
            Expr::Const(v, d) => {
                let n = scalar::cast(DType::F64, *d, Num::F(*v)).map_err(|e| self.malformed(e))?;
                (self.const_num(*d, n), ScalarType::Elem(*d))
            }
            Expr::Var(v) => {
                let t = self.var_type(*v)?;
                let x = self.var(*v)?;
                (self.b.use_var(x), t)
            }
            Expr::Sym(s) => {
                let v = *self.syms.get(&s.0).ok_or_else(|| self.malformed("symbol not preloaded"))?;
                (v, ScalarType::Index)
            }
            Expr::Load { buf, index } => {
                let i = self.index(index)?;
                let d = self.buffer(*buf)?.dtype;
                let addr = self.address(*buf, i)?;
                (self.load_elem(*buf, d, addr), ScalarType::Elem(d))
            }
            Expr::Unary(op, x) => {
                let (v, t) = self.expr(x)?;
                let d = dtype_of(t);
                let r = self.unary(*op, d, v)?;
                let rt = if *op == UnaryOp::IsNan { ScalarType::Elem(DType::Bool) } else { t };
                (r, rt)
            }
            Expr::Binary(op, a, b) => {
                let (x, t) = self.expr(a)?;
                let (y, u) = self.expr(b)?;
                let y = self.convert(y, u, t)?;
                let r = self.binary(*op, dtype_of(t), x, y)?;
                let rt = if op.is_comparison() { ScalarType::Elem(DType::Bool) } else { t };
                (r, rt)
            }
            Expr::Select(c, a, b) => {
                let cond = self.condition(c)?;
                let (x, t) = self.expr(a)?;
                let (y, u) = self.expr(b)?;
                let y = self.convert(y, u, t)?;
                (self.b.ins().select(cond, x, y), t)
            }
            Expr::Cast(d, x) => {
                let (v, t) = self.expr(x)?;
                (self.convert(v, t, ScalarType::Elem(*d))?, ScalarType::Elem(*d))
            }
            Expr::ToIndex(x) => {
                let (v, t) = self.expr(x)?;
                let d = dtype_of(t);
                let r = if d.is_float() { self.b.ins().fcvt_to_sint_sat(types::I64, v) } else { self.widen_i64(d, v) };
                (r, ScalarType::Index)
            }
            Expr::Bitcast(to, x) => {
                let (v, t) = self.expr(x)?;
                let from = dtype_of(t);
                let ty = match (from, *to) {
                    (DType::F32, DType::I32) => types::I32,
                    (DType::I32, DType::F32) => types::F32,
                    (DType::F64, DType::I64) => types::I64,
                    (DType::I64, DType::F64) => types::F64,
                    _ => return Err(self.unsupported(format!("bitcast from {from} to {to}"))),
                };
                let mut r = self.b.ins().bitcast(ty, MemFlagsData::new(), v);
                if from == DType::F32 {
                    // The evaluator holds f32 values as f64, which quiets signaling NaNs.
                    let nan = self.b.ins().fcmp(FloatCC::Unordered, v, v);
                    let quiet = self.b.ins().bor_imm_s(r, 0x0040_0000);
                    r = self.b.ins().select(nan, quiet, r);
                }
                (r, ScalarType::Elem(*to))
            }
        })
    }

    /// A `select` condition: any integer is tested against zero; a float `f` as `f as i64 != 0`.
    pub fn condition(&mut self, c: &Expr) -> R<Value> {
        let (v, t) = self.expr(c)?;
        Ok(if dtype_of(t).is_float() { self.b.ins().fcvt_to_sint_sat(types::I64, v) } else { v })
    }

    /// An integer of `d` as i64 (sign- or zero-extended).
    pub fn widen_i64(&mut self, d: DType, v: Value) -> Value {
        match reg_ty(ScalarType::Elem(d)) {
            types::I64 => v,
            _ if is_unsigned(d) => self.b.ins().uextend(types::I64, v),
            _ => self.b.ins().sextend(types::I64, v),
        }
    }

    /// An i64 wrapped to integer dtype `d` (bool: `!= 0`).
    pub fn wrap_i64(&mut self, d: DType, v: Value) -> Value {
        if d == DType::Bool {
            return self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0);
        }
        match reg_ty(ScalarType::Elem(d)) {
            types::I64 => v,
            ty => self.b.ins().ireduce(ty, v),
        }
    }

    /// A float register value as f64 (exact).
    pub fn promote_f64(&mut self, d: DType, v: Value) -> Value {
        match d {
            DType::F64 => v,
            _ => self.b.ins().fpromote(types::F64, v),
        }
    }

    /// Converts between scalar types with the IR's cast rules (the evaluator's `cast`).
    pub fn convert(&mut self, v: Value, from: ScalarType, to: ScalarType) -> R<Value> {
        let (f, t) = (dtype_of(from), dtype_of(to));
        if f == t {
            return Ok(v);
        }
        Ok(match (f.is_float(), t.is_float()) {
            (true, true) => match (f, t) {
                (DType::F64, _) => self.round_from_f64(t, v),
                (_, DType::F64) => self.b.ins().fpromote(types::F64, v),
                // f32, f16, bf16 among themselves: the value is an exact f32.
                _ => self.round_from_f32(t, v),
            },
            (true, false) if t == DType::Bool => {
                let zero = self.zero_float(f);
                self.b.ins().fcmp(FloatCC::NotEqual, v, zero)
            }
            (true, false) => {
                let i = self.b.ins().fcvt_to_sint_sat(types::I64, v);
                self.wrap_i64(t, i)
            }
            (false, true) => {
                let i = self.widen_i64(f, v);
                let x = self.b.ins().fcvt_from_sint(types::F64, i);
                self.round_from_f64(t, x)
            }
            (false, false) => {
                let i = self.widen_i64(f, v);
                self.wrap_i64(t, i)
            }
        })
    }

    pub fn zero_float(&mut self, d: DType) -> Value {
        match d {
            DType::F64 => self.b.ins().f64const(0.0),
            _ => self.b.ins().f32const(0.0),
        }
    }

    fn float_const(&mut self, d: DType, x: f64) -> Value {
        match d {
            DType::F64 => self.b.ins().f64const(x),
            _ => self.b.ins().f32const(x as f32),
        }
    }

    fn unary(&mut self, op: UnaryOp, d: DType, x: Value) -> R<Value> {
        if transcendental(op) {
            return Err(CraneliftError::Unexpanded { kernel: self.k.name.clone(), op: op.name().to_string() });
        }
        if d.is_float() {
            self.float_unary(op, d, x)
        } else {
            self.int_unary(op, d, x)
        }
    }

    fn float_unary(&mut self, op: UnaryOp, d: DType, x: Value) -> R<Value> {
        Ok(match op {
            UnaryOp::Neg => self.b.ins().fneg(x),
            UnaryOp::Abs => self.b.ins().fabs(x),
            UnaryOp::Floor => self.b.ins().floor(x),
            UnaryOp::Ceil => self.b.ins().ceil(x),
            UnaryOp::Round => self.b.ins().nearest(x),
            UnaryOp::Sqrt => {
                let r = self.b.ins().sqrt(x);
                self.round_from_f32(d, r)
            }
            UnaryOp::Reciprocal => {
                let one = self.float_const(d, 1.0);
                let r = self.b.ins().fdiv(one, x);
                self.round_from_f32(d, r)
            }
            UnaryOp::Rsqrt => {
                // 1 / sqrt(x) in f64, rounded once to d (two f64 roundings, like the evaluator).
                let w = self.promote_f64(d, x);
                let s = self.b.ins().sqrt(w);
                let one = self.b.ins().f64const(1.0);
                let r = self.b.ins().fdiv(one, s);
                self.round_from_f64(d, r)
            }
            UnaryOp::Relu => {
                // x > 0 or NaN keeps x; everything else (negatives, -0) is +0.
                let zero = self.zero_float(d);
                let keep = self.b.ins().fcmp(FloatCC::UnorderedOrGreaterThan, x, zero);
                self.b.ins().select(keep, x, zero)
            }
            UnaryOp::Sign => {
                let zero = self.zero_float(d);
                let one = self.float_const(d, 1.0);
                let m1 = self.float_const(d, -1.0);
                let pos = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                let neg = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
                let r = self.b.ins().select(neg, m1, zero);
                self.b.ins().select(pos, one, r)
            }
            UnaryOp::IsNan => self.b.ins().fcmp(FloatCC::Unordered, x, x),
            UnaryOp::Not => return Err(self.unsupported(format!("`not` of {d}"))),
            _ => return Err(CraneliftError::Unexpanded { kernel: self.k.name.clone(), op: op.name().to_string() }),
        })
    }

    fn int_unary(&mut self, op: UnaryOp, d: DType, x: Value) -> R<Value> {
        if op.float_only() {
            return Err(self.unsupported(format!("`{}` of {d}", op.name())));
        }
        let unsigned = is_unsigned(d);
        let zero = self.iconst(d, 0);
        Ok(match op {
            // Bool: -1 and 1 both wrap to true.
            UnaryOp::Neg if d == DType::Bool => x,
            UnaryOp::Neg => self.b.ins().ineg(x),
            UnaryOp::Abs | UnaryOp::Relu if unsigned => x,
            UnaryOp::Abs => {
                let neg = self.b.ins().icmp(IntCC::SignedLessThan, x, zero);
                let n = self.b.ins().ineg(x);
                self.b.ins().select(neg, n, x)
            }
            UnaryOp::Relu => {
                let pos = self.b.ins().icmp(IntCC::SignedGreaterThan, x, zero);
                self.b.ins().select(pos, x, zero)
            }
            UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => x,
            UnaryOp::Sign if unsigned => {
                let nz = self.b.ins().icmp(IntCC::NotEqual, x, zero);
                self.bool_as(d, nz)
            }
            UnaryOp::Sign => {
                let one = self.iconst(d, 1);
                let m1 = self.iconst(d, -1);
                let pos = self.b.ins().icmp(IntCC::SignedGreaterThan, x, zero);
                let neg = self.b.ins().icmp(IntCC::SignedLessThan, x, zero);
                let r = self.b.ins().select(neg, m1, zero);
                self.b.ins().select(pos, one, r)
            }
            UnaryOp::Not if d == DType::Bool => self.b.ins().icmp(IntCC::Equal, x, zero),
            UnaryOp::Not => self.b.ins().bnot(x),
            UnaryOp::IsNan => self.b.ins().iconst(types::I8, 0),
            _ => return Err(self.unsupported(format!("`{}` of {d}", op.name()))),
        })
    }

    /// A comparison result (i8 0/1) as a value of integer dtype `d`.
    fn bool_as(&mut self, d: DType, c: Value) -> Value {
        match reg_ty(ScalarType::Elem(d)) {
            types::I8 => c,
            ty => self.b.ins().uextend(ty, c),
        }
    }

    pub fn binary(&mut self, op: BinaryOp, d: DType, x: Value, y: Value) -> R<Value> {
        if d.is_float() {
            self.float_binary(op, d, x, y)
        } else {
            self.int_binary(op, d, x, y)
        }
    }

    fn float_binary(&mut self, op: BinaryOp, d: DType, x: Value, y: Value) -> R<Value> {
        if let Some(cc) = float_cc(op) {
            return Ok(self.b.ins().fcmp(cc, x, y));
        }
        Ok(match op {
            BinaryOp::Add => {
                let r = self.b.ins().fadd(x, y);
                self.round_from_f32(d, r)
            }
            BinaryOp::Sub => {
                let r = self.b.ins().fsub(x, y);
                self.round_from_f32(d, r)
            }
            BinaryOp::Mul => {
                let r = self.b.ins().fmul(x, y);
                self.round_from_f32(d, r)
            }
            BinaryOp::Div => {
                let r = self.b.ins().fdiv(x, y);
                self.round_from_f32(d, r)
            }
            BinaryOp::Max | BinaryOp::Min => {
                // NaN if either is NaN; else the evaluator's `if b > a { b } else { a }`.
                let cc = if op == BinaryOp::Max { FloatCC::GreaterThan } else { FloatCC::LessThan };
                let take_y = self.b.ins().fcmp(cc, y, x);
                let r = self.b.ins().select(take_y, y, x);
                let nan = self.b.ins().fcmp(FloatCC::Unordered, x, y);
                let q = self.float_const(d, f64::NAN);
                self.b.ins().select(nan, q, r)
            }
            BinaryOp::FloorDiv | BinaryOp::Rem => {
                let a = self.promote_f64(d, x);
                let b = self.promote_f64(d, y);
                let r = if op == BinaryOp::Rem { self.float_rem(a, b) } else { self.float_floordiv(a, b) };
                self.round_from_f64(d, r)
            }
            BinaryOp::Pow => {
                return Err(CraneliftError::Unexpanded { kernel: self.k.name.clone(), op: format!("pow of {d}") })
            }
            _ => return Err(self.unsupported(format!("`{}` of {d}", op.name()))),
        })
    }

    fn int_binary(&mut self, op: BinaryOp, d: DType, x: Value, y: Value) -> R<Value> {
        let unsigned = is_unsigned(d);
        if let Some((s, u)) = int_cc(op) {
            return Ok(self.b.ins().icmp(if unsigned { u } else { s }, x, y));
        }
        let r = match op {
            BinaryOp::Add => self.b.ins().iadd(x, y),
            BinaryOp::Sub => self.b.ins().isub(x, y),
            BinaryOp::Mul => self.b.ins().imul(x, y),
            BinaryOp::And => self.b.ins().band(x, y),
            BinaryOp::Or => self.b.ins().bor(x, y),
            BinaryOp::Xor => self.b.ins().bxor(x, y),
            BinaryOp::Max | BinaryOp::Min => {
                let cc = match (op == BinaryOp::Max, unsigned) {
                    (true, false) => IntCC::SignedGreaterThan,
                    (true, true) => IntCC::UnsignedGreaterThan,
                    (false, false) => IntCC::SignedLessThan,
                    (false, true) => IntCC::UnsignedLessThan,
                };
                let take_y = self.b.ins().icmp(cc, y, x);
                return Ok(self.b.ins().select(take_y, y, x));
            }
            BinaryOp::Div | BinaryOp::FloorDiv | BinaryOp::Rem | BinaryOp::Pow => {
                let a = self.widen_i64(d, x);
                let b = self.widen_i64(d, y);
                let r = if op == BinaryOp::Pow { self.int_pow(a, b) } else { self.int_divlike(op, a, b) };
                return Ok(self.wrap_i64(d, r));
            }
            _ => return Err(self.unsupported(format!("`{}` of {d}", op.name()))),
        };
        // Arithmetic on bools wraps to `!= 0`.
        Ok(if d == DType::Bool { self.b.ins().icmp_imm_s(IntCC::NotEqual, r, 0) } else { r })
    }

    /// Integer `/` (truncating), `//` and `%` (Python's) on i64; division by zero gives 0 and
    /// `MIN / -1` wraps, as `wrapping_div` does.
    fn int_divlike(&mut self, op: BinaryOp, a: Value, b: Value) -> Value {
        if let Some(c) = self.const_i64(b).filter(|c| *c > 0) {
            return self.divlike_by_positive(op, a, c);
        }
        let zero = self.b.ins().iconst(types::I64, 0);
        let one = self.b.ins().iconst(types::I64, 1);
        let bz = self.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
        let bm1 = self.b.ins().icmp_imm_s(IntCC::Equal, b, -1);
        let bad = self.b.ins().bor(bz, bm1);
        let safe = self.b.ins().select(bad, one, b);
        let q0 = self.b.ins().sdiv(a, safe);
        let r0 = self.b.ins().srem(a, safe);
        let na = self.b.ins().ineg(a);
        let q = self.b.ins().select(bm1, na, q0);
        let r = self.b.ins().select(bm1, zero, r0);
        let r_nz = self.b.ins().icmp_imm_s(IntCC::NotEqual, r, 0);
        let res = match op {
            BinaryOp::Div => q,
            BinaryOp::FloorDiv => {
                let an = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, a, 0);
                let bn = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, b, 0);
                let differ = self.b.ins().bxor(an, bn);
                let adjust = self.b.ins().band(r_nz, differ);
                let adjust = self.b.ins().uextend(types::I64, adjust);
                self.b.ins().isub(q, adjust)
            }
            _ => {
                let rn = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0);
                let bn = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, b, 0);
                let differ = self.b.ins().bxor(rn, bn);
                let adjust = self.b.ins().band(r_nz, differ);
                let rb = self.b.ins().iadd(r, b);
                self.b.ins().select(adjust, rb, r)
            }
        };
        self.b.ins().select(bz, zero, res)
    }

    /// The same with a constant positive divisor: shifts and masks for powers of two.
    fn divlike_by_positive(&mut self, op: BinaryOp, a: Value, c: i64) -> Value {
        if c.count_ones() == 1 {
            let k = c.trailing_zeros() as i64;
            return match op {
                BinaryOp::FloorDiv => self.b.ins().sshr_imm_s(a, k),
                BinaryOp::Rem => self.b.ins().band_imm_s(a, c - 1),
                _ => {
                    // Truncation: add c-1 to negative dividends first.
                    let sign = self.b.ins().sshr_imm_s(a, 63);
                    let bias = self.b.ins().band_imm_s(sign, c - 1);
                    let t = self.b.ins().iadd(a, bias);
                    self.b.ins().sshr_imm_s(t, k)
                }
            };
        }
        let cv = self.b.ins().iconst(types::I64, c);
        let q = self.b.ins().sdiv(a, cv);
        match op {
            BinaryOp::Div => q,
            BinaryOp::FloorDiv => {
                let r = self.b.ins().srem(a, cv);
                let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0);
                let neg = self.b.ins().uextend(types::I64, neg);
                self.b.ins().isub(q, neg)
            }
            _ => {
                let r = self.b.ins().srem(a, cv);
                let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0);
                let rc = self.b.ins().iadd(r, cv);
                self.b.ins().select(neg, rc, r)
            }
        }
    }

    /// The value of an `iconst` instruction, if `v` is one.
    fn const_i64(&self, v: Value) -> Option<i64> {
        use cranelift_codegen::ir::InstructionData;
        let inst = self.b.func.dfg.value_def(v).inst()?;
        match self.b.func.dfg.insts[inst] {
            InstructionData::UnaryImm { opcode: cranelift_codegen::ir::Opcode::Iconst, imm }
                if self.b.func.dfg.value_type(v) == types::I64 =>
            {
                Some(imm.bits())
            }
            _ => None,
        }
    }
}

fn float_cc(op: BinaryOp) -> Option<FloatCC> {
    Some(match op {
        BinaryOp::Eq => FloatCC::Equal,
        // Unordered or unequal: `NaN != x` is true, as in Rust.
        BinaryOp::Ne => FloatCC::NotEqual,
        BinaryOp::Lt => FloatCC::LessThan,
        BinaryOp::Le => FloatCC::LessThanOrEqual,
        BinaryOp::Gt => FloatCC::GreaterThan,
        BinaryOp::Ge => FloatCC::GreaterThanOrEqual,
        _ => return None,
    })
}

/// (signed, unsigned) condition codes of a comparison.
fn int_cc(op: BinaryOp) -> Option<(IntCC, IntCC)> {
    Some(match op {
        BinaryOp::Eq => (IntCC::Equal, IntCC::Equal),
        BinaryOp::Ne => (IntCC::NotEqual, IntCC::NotEqual),
        BinaryOp::Lt => (IntCC::SignedLessThan, IntCC::UnsignedLessThan),
        BinaryOp::Le => (IntCC::SignedLessThanOrEqual, IntCC::UnsignedLessThanOrEqual),
        BinaryOp::Gt => (IntCC::SignedGreaterThan, IntCC::UnsignedGreaterThan),
        BinaryOp::Ge => (IntCC::SignedGreaterThanOrEqual, IntCC::UnsignedGreaterThanOrEqual),
        _ => return None,
    })
}
