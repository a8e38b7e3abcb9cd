//! Floating-point helpers built from integer and f32/f64 operations, so that no target needs a
//! library: f16/bf16 rounding and storage conversions, `fmod` and Python's float `//` and `%`,
//! integer `pow`.
//!
//! Why f32 arithmetic rounded to f16/bf16 equals the evaluator's f64 arithmetic rounded to
//! f16/bf16: for `+ - * /` and `sqrt` of p-bit operands, rounding first to a format with at
//! least 2p+2 bits and then to p bits equals rounding once ("innocuous double rounding";
//! f32 has 24 ≥ 2·11+2 bits, f64 53 ≥ 2·24+2). The evaluator's f16 rounding from f64 goes
//! through f32 (the `half` crate uses F16C, which converts from f32), which this reproduces
//! for casts from f64. Its bf16 rounding (`half::bf16::from_f64`) keeps only the upper 32 bits
//! of the f64 (20 fraction bits) and then rounds to nearest even; [`Fx::round_bf16`] and
//! [`Fx::bf16_from_f64`] reproduce that truncation. The unit tests compare all of this with the
//! evaluator on random and special values.

use super::func::Fx;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use kiln_ir::DType;

impl Fx<'_, '_> {
    fn bits32(&mut self, x: Value) -> Value {
        self.b.ins().bitcast(types::I32, MemFlagsData::new(), x)
    }

    fn f32_of(&mut self, bits: Value) -> Value {
        self.b.ins().bitcast(types::F32, MemFlagsData::new(), bits)
    }

    /// Rounds an f32 computation result to dtype `d` (f16/bf16), keeping the f32 register form.
    pub fn round_from_f32(&mut self, d: DType, v: Value) -> Value {
        match d {
            DType::F16 => self.round_f16(v),
            DType::BF16 => self.round_bf16(v),
            _ => v,
        }
    }

    /// Rounds an f64 to dtype `d` (register form).
    pub fn round_from_f64(&mut self, d: DType, v: Value) -> Value {
        match d {
            DType::F64 => v,
            DType::F32 => self.b.ins().fdemote(types::F32, v),
            DType::F16 => {
                let f = self.b.ins().fdemote(types::F32, v);
                self.round_f16(f)
            }
            _ => self.bf16_from_f64(v),
        }
    }

    /// The f16 nearest to `x` (ties to even, overflow to infinity), as an f32.
    pub fn round_f16(&mut self, x: Value) -> Value {
        let bits = self.bits32(x);
        let sign = self.b.ins().band_imm_s(bits, 0x8000_0000u32 as i64);
        let a = self.b.ins().band_imm_s(bits, 0x7fff_ffff);
        // Normal f16 range: clear the 13 low fraction bits, rounding to nearest even.
        let lsb = self.b.ins().ushr_imm_s(a, 13);
        let lsb = self.b.ins().band_imm_s(lsb, 1);
        let bias = self.b.ins().iadd_imm_s(lsb, 0xfff);
        let r = self.b.ins().iadd(a, bias);
        let r = self.b.ins().band_imm_s(r, !0x1fffi64 & 0xffff_ffff);
        // Above 65504 after rounding: infinity.
        let over = self.b.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, r, 0x477f_e000);
        let inf = self.b.ins().iconst(types::I32, 0x7f80_0000);
        let r = self.b.ins().select(over, inf, r);
        // Below 2^-14 (subnormal f16): (|x| + 0.5) - 0.5 rounds to a multiple of 2^-24.
        let ax = self.b.ins().fabs(x);
        let half = self.b.ins().f32const(0.5);
        let s = self.b.ins().fadd(ax, half);
        let s = self.b.ins().fsub(s, half);
        let s = self.bits32(s);
        let small = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, a, 0x3880_0000);
        let m = self.b.ins().select(small, s, r);
        let m = self.b.ins().bor(m, sign);
        let res = self.f32_of(m);
        let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        self.b.ins().select(nan, x, res)
    }

    /// `half::bf16::from_f64(x as f64)` for an f32 `x`, as an f32: the value truncated to 21
    /// significant bits (what survives in an f64's upper 32 bits), then rounded to nearest
    /// even at bf16's 8 bits.
    pub fn round_bf16(&mut self, x: Value) -> Value {
        let bits = self.bits32(x);
        let sign = self.b.ins().band_imm_s(bits, 0x8000_0000u32 as i64);
        let a = self.b.ins().band_imm_s(bits, 0x7fff_ffff);
        // Normal: drop 3 fraction bits. Subnormal with leading bit p: drop bits below p - 20.
        let lz = self.b.ins().clz(a);
        let c31 = self.b.ins().iconst(types::I32, 31);
        let p = self.b.ins().isub(c31, lz);
        let drop = self.b.ins().iadd_imm_s(p, -20);
        let zero = self.b.ins().iconst(types::I32, 0);
        let pos = self.b.ins().icmp(IntCC::SignedGreaterThan, drop, zero);
        let drop = self.b.ins().select(pos, drop, zero);
        let one = self.b.ins().iconst(types::I32, 1);
        let unit = self.b.ins().ishl(one, drop);
        let low = self.b.ins().iadd_imm_s(unit, -1);
        let sub_mask = self.b.ins().bnot(low);
        let subnormal = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, a, 0x0080_0000);
        let normal_mask = self.b.ins().iconst(types::I32, !7i64 & 0xffff_ffff);
        let mask = self.b.ins().select(subnormal, sub_mask, normal_mask);
        let t = self.b.ins().band(a, mask);
        let r = self.rne_bf16_bits(t);
        let r = self.b.ins().bor(r, sign);
        let res = self.f32_of(r);
        let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        self.b.ins().select(nan, x, res)
    }

    /// Rounds the magnitude bits `a` of an f32 to nearest even at bit 16 (overflow carries into
    /// the exponent, reaching infinity).
    fn rne_bf16_bits(&mut self, a: Value) -> Value {
        let lsb = self.b.ins().ushr_imm_s(a, 16);
        let lsb = self.b.ins().band_imm_s(lsb, 1);
        let bias = self.b.ins().iadd_imm_s(lsb, 0x7fff);
        let r = self.b.ins().iadd(a, bias);
        self.b.ins().band_imm_s(r, 0xffff_0000u32 as i64)
    }

    /// `half::bf16::from_f64(x)` as an f32.
    pub fn bf16_from_f64(&mut self, x: Value) -> Value {
        let bits = self.b.ins().bitcast(types::I64, MemFlagsData::new(), x);
        let t = self.b.ins().band_imm_s(bits, !0xffff_ffffi64);
        let t = self.b.ins().bitcast(types::F64, MemFlagsData::new(), t);
        let at = self.b.ins().fabs(t);
        // Below bf16's normal range: round at 2^-133 in f64 ((|t| + 2^-81) - 2^-81), exact
        // in f32 afterwards.
        let tiny = self.b.ins().f64const(f64::from_bits(((1023 - 126) as u64) << 52));
        let small = self.b.ins().fcmp(FloatCC::LessThan, at, tiny);
        let c = self.b.ins().f64const(f64::from_bits(((1023 - 81) as u64) << 52));
        let s = self.b.ins().fadd(at, c);
        let s = self.b.ins().fsub(s, c);
        let s = self.b.ins().fdemote(types::F32, s);
        let t32 = self.b.ins().fdemote(types::F32, t);
        let s = self.b.ins().fcopysign(s, t32);
        // Otherwise t has at most 21 significant bits: exact in f32 (or infinite), then RNE.
        let tb = self.bits32(t32);
        let sign = self.b.ins().band_imm_s(tb, 0x8000_0000u32 as i64);
        let a = self.b.ins().band_imm_s(tb, 0x7fff_ffff);
        let r = self.rne_bf16_bits(a);
        let r = self.b.ins().bor(r, sign);
        let n = self.f32_of(r);
        let r = self.b.ins().select(small, s, n);
        let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        let q = self.b.ins().f32const(f32::NAN);
        self.b.ins().select(nan, q, r)
    }

    /// f16 bits (i16) to the f32 of the same value.
    pub fn f16_bits_to_f32(&mut self, h: Value) -> Value {
        let h = self.b.ins().uextend(types::I32, h);
        let sign = self.b.ins().band_imm_s(h, 0x8000);
        let sign = self.b.ins().ishl_imm_s(sign, 16);
        let e = self.b.ins().band_imm_s(h, 0x7c00);
        let m = self.b.ins().band_imm_s(h, 0x3ff);
        let mag = self.b.ins().band_imm_s(h, 0x7fff);
        let normal = self.b.ins().ishl_imm_s(mag, 13);
        let normal = self.b.ins().iadd_imm_s(normal, 0x3800_0000);
        let mm = self.b.ins().ishl_imm_s(m, 13);
        let special = self.b.ins().bor_imm_s(mm, 0x7f80_0000);
        let mf = self.b.ins().fcvt_from_sint(types::F32, m);
        let scale = self.b.ins().f32const(2f32.powi(-24));
        let sub = self.b.ins().fmul(mf, scale);
        let sub = self.bits32(sub);
        let is_special = self.b.ins().icmp_imm_s(IntCC::Equal, e, 0x7c00);
        let r = self.b.ins().select(is_special, special, normal);
        let is_sub = self.b.ins().icmp_imm_s(IntCC::Equal, e, 0);
        let r = self.b.ins().select(is_sub, sub, r);
        let r = self.b.ins().bor(r, sign);
        self.f32_of(r)
    }

    /// An f32 holding an f16 value to its bits (i16); NaN becomes a quiet NaN.
    pub fn f32_to_f16_bits(&mut self, x: Value) -> Value {
        let bits = self.bits32(x);
        let sign = self.b.ins().ushr_imm_s(bits, 16);
        let sign = self.b.ins().band_imm_s(sign, 0x8000);
        let a = self.b.ins().band_imm_s(bits, 0x7fff_ffff);
        let normal = self.b.ins().ushr_imm_s(a, 13);
        let normal = self.b.ins().iadd_imm_s(normal, -0x1c000);
        let ax = self.b.ins().fabs(x);
        let scale = self.b.ins().f32const(2f32.powi(24));
        let scaled = self.b.ins().fmul(ax, scale);
        let sub = self.b.ins().fcvt_to_sint_sat(types::I32, scaled);
        let small = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, a, 0x3880_0000);
        let h = self.b.ins().select(small, sub, normal);
        let inf = self.b.ins().icmp_imm_s(IntCC::Equal, a, 0x7f80_0000);
        let c = self.b.ins().iconst(types::I32, 0x7c00);
        let h = self.b.ins().select(inf, c, h);
        let nan = self.b.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, a, 0x7f80_0000);
        let c = self.b.ins().iconst(types::I32, 0x7e00);
        let h = self.b.ins().select(nan, c, h);
        let h = self.b.ins().bor(h, sign);
        self.b.ins().ireduce(types::I16, h)
    }

    /// An f32 holding a bf16 value to its bits (i16); a NaN stays a NaN.
    pub fn f32_to_bf16_bits(&mut self, x: Value) -> Value {
        let bits = self.bits32(x);
        let h = self.b.ins().ushr_imm_s(bits, 16);
        let q = self.b.ins().bor_imm_s(h, 0x40);
        let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        let h = self.b.ins().select(nan, q, h);
        self.b.ins().ireduce(types::I16, h)
    }

    /// C's `fmod` on f64 (exact), by musl's integer long division.
    pub fn fmod(&mut self, x: Value, y: Value) -> Value {
        let i64t = types::I64;
        let result = self.b.declare_var(types::F64);
        let mx_var = self.b.declare_var(i64t);
        let ex_var = self.b.declare_var(i64t);
        let done = self.b.create_block();

        let ux = self.b.ins().bitcast(i64t, MemFlagsData::new(), x);
        let uy = self.b.ins().bitcast(i64t, MemFlagsData::new(), y);
        let ex = self.b.ins().ushr_imm_s(ux, 52);
        let ex = self.b.ins().band_imm_s(ex, 0x7ff);
        let ey = self.b.ins().ushr_imm_s(uy, 52);
        let ey = self.b.ins().band_imm_s(ey, 0x7ff);
        let sx = self.b.ins().band_imm_s(ux, i64::MIN);
        let ux2 = self.b.ins().ishl_imm_s(ux, 1);
        let uy2 = self.b.ins().ishl_imm_s(uy, 1);
        // y = ±0, y NaN or x infinite/NaN: NaN.
        let yz = self.b.ins().icmp_imm_s(IntCC::Equal, uy2, 0);
        let ynan = self.b.ins().fcmp(FloatCC::Unordered, y, y);
        let xspecial = self.b.ins().icmp_imm_s(IntCC::Equal, ex, 0x7ff);
        let special = self.b.ins().bor(yz, ynan);
        let special = self.b.ins().bor(special, xspecial);
        let xy = self.b.ins().fmul(x, y);
        let nan = self.b.ins().fdiv(xy, xy);
        // |x| <= |y|: x itself, or a zero with x's sign when equal.
        let le = self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, ux2, uy2);
        let eq = self.b.ins().icmp(IntCC::Equal, ux2, uy2);
        let zero = self.b.ins().f64const(0.0);
        let zx = self.b.ins().fmul(zero, x);
        let early = self.b.ins().select(eq, zx, x);
        let early = self.b.ins().select(special, nan, early);
        let stop = self.b.ins().bor(special, le);
        self.b.def_var(result, early);
        let main = self.b.create_block();
        self.b.ins().brif(stop, done, &[], main, &[]);
        self.b.switch_to_block(main);
        self.b.seal_block(main);

        let (mx, ex) = self.fmod_normalize(ux, ex);
        let (my, ey) = self.fmod_normalize(uy, ey);
        self.b.def_var(mx_var, mx);
        self.b.def_var(ex_var, ex);
        let header = self.b.create_block();
        let body = self.b.create_block();
        let after = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let e = self.b.use_var(ex_var);
        let more = self.b.ins().icmp(IntCC::SignedGreaterThan, e, ey);
        self.b.ins().brif(more, body, &[], after, &[]);
        self.b.switch_to_block(body);
        self.b.seal_block(body);
        let m = self.fmod_step(mx_var, my, result, zx, done);
        let m = self.b.ins().ishl_imm_s(m, 1);
        self.b.def_var(mx_var, m);
        let e = self.b.use_var(ex_var);
        let e = self.b.ins().iadd_imm_s(e, -1);
        self.b.def_var(ex_var, e);
        self.b.ins().jump(header, &[]);
        self.b.seal_block(header);
        self.b.switch_to_block(after);
        self.b.seal_block(after);
        let m = self.fmod_step(mx_var, my, result, zx, done);
        // Renormalize (m != 0 and below 2^53 here) and rebuild the float.
        let lz = self.b.ins().clz(m);
        let sh = self.b.ins().iadd_imm_s(lz, -11);
        let m = self.b.ins().ishl(m, sh);
        let e = self.b.use_var(ex_var);
        let e = self.b.ins().isub(e, sh);
        let normal = self.b.ins().iadd_imm_s(m, -(1i64 << 52));
        let eb = self.b.ins().ishl_imm_s(e, 52);
        let normal = self.b.ins().bor(normal, eb);
        let one = self.b.ins().iconst(types::I64, 1);
        let back = self.b.ins().isub(one, e);
        let subnormal = self.b.ins().ushr(m, back);
        let pos = self.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, e, 0);
        let m = self.b.ins().select(pos, normal, subnormal);
        let r = self.b.ins().bor(m, sx);
        let r = self.b.ins().bitcast(types::F64, MemFlagsData::new(), r);
        self.b.def_var(result, r);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
        self.b.use_var(result)
    }

    /// Mantissa with the implicit bit at 52 and the exponent, subnormals normalized.
    fn fmod_normalize(&mut self, u: Value, e: Value) -> (Value, Value) {
        let sub = self.b.ins().icmp_imm_s(IntCC::Equal, e, 0);
        let shifted = self.b.ins().ishl_imm_s(u, 12);
        let lz = self.b.ins().clz(shifted);
        let e_sub = self.b.ins().ineg(lz);
        let amount = self.b.ins().iadd_imm_s(lz, 1);
        let m_sub = self.b.ins().ishl(u, amount);
        let m = self.b.ins().band_imm_s(u, (1i64 << 52) - 1);
        let m = self.b.ins().bor_imm_s(m, 1i64 << 52);
        let m = self.b.ins().select(sub, m_sub, m);
        let e = self.b.ins().select(sub, e_sub, e);
        (m, e)
    }

    /// One subtraction step of `fmod`: leaves for `done` with a signed zero when the remainder
    /// vanishes; returns the new mantissa.
    fn fmod_step(
        &mut self,
        mx_var: cranelift_frontend::Variable,
        my: Value,
        result: cranelift_frontend::Variable,
        zx: Value,
        done: cranelift_codegen::ir::Block,
    ) -> Value {
        let m = self.b.use_var(mx_var);
        let i = self.b.ins().isub(m, my);
        let nonneg = self.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, i, 0);
        let vanish = self.b.ins().icmp_imm_s(IntCC::Equal, i, 0);
        self.b.def_var(result, zx);
        let cont = self.b.create_block();
        self.b.ins().brif(vanish, done, &[], cont, &[]);
        self.b.switch_to_block(cont);
        self.b.seal_block(cont);
        self.b.ins().select(nonneg, i, m)
    }

    /// Python's float `%` on f64 (the evaluator's `float_rem`).
    pub fn float_rem(&mut self, a: Value, b: Value) -> Value {
        let m = self.fmod(a, b);
        let adjust = self.sign_adjust(m, b);
        let mb = self.b.ins().fadd(m, b);
        self.b.ins().select(adjust, mb, m)
    }

    /// `m != 0 && (b < 0) != (m < 0)`.
    fn sign_adjust(&mut self, m: Value, b: Value) -> Value {
        let zero = self.b.ins().f64const(0.0);
        let nz = self.b.ins().fcmp(FloatCC::NotEqual, m, zero);
        let bn = self.b.ins().fcmp(FloatCC::LessThan, b, zero);
        let mn = self.b.ins().fcmp(FloatCC::LessThan, m, zero);
        let differ = self.b.ins().bxor(bn, mn);
        self.b.ins().band(nz, differ)
    }

    /// Python's float `//` on f64 (the evaluator's `float_floordiv`).
    pub fn float_floordiv(&mut self, a: Value, b: Value) -> Value {
        let m = self.fmod(a, b);
        let zero = self.b.ins().f64const(0.0);
        let one = self.b.ins().f64const(1.0);
        let q = self.b.ins().fdiv(a, b);
        let am = self.b.ins().fsub(a, m);
        let div = self.b.ins().fdiv(am, b);
        let adjust = self.sign_adjust(m, b);
        let dm1 = self.b.ins().fsub(div, one);
        let div = self.b.ins().select(adjust, dm1, div);
        let f = self.b.ins().floor(div);
        let frac = self.b.ins().fsub(div, f);
        let half = self.b.ins().f64const(0.5);
        let up = self.b.ins().fcmp(FloatCC::GreaterThan, frac, half);
        let f1 = self.b.ins().fadd(f, one);
        let f = self.b.ins().select(up, f1, f);
        let dz = self.b.ins().fcmp(FloatCC::Equal, div, zero);
        let signed_zero = self.b.ins().fcopysign(zero, q);
        let r = self.b.ins().select(dz, signed_zero, f);
        let bz = self.b.ins().fcmp(FloatCC::Equal, b, zero);
        self.b.ins().select(bz, q, r)
    }

    /// `a^b` on i64 with wrapping multiplication, by squaring (the exponent's bits read as
    /// unsigned).
    pub fn int_pow(&mut self, a: Value, b: Value) -> Value {
        let i64t = types::I64;
        let acc = self.b.declare_var(i64t);
        let base = self.b.declare_var(i64t);
        let exp = self.b.declare_var(i64t);
        let one = self.b.ins().iconst(i64t, 1);
        self.b.def_var(acc, one);
        self.b.def_var(base, a);
        self.b.def_var(exp, b);
        let header = self.b.create_block();
        let body = self.b.create_block();
        let after = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let e = self.b.use_var(exp);
        self.b.ins().brif(e, body, &[], after, &[]);
        self.b.switch_to_block(body);
        self.b.seal_block(body);
        let e = self.b.use_var(exp);
        let x = self.b.use_var(base);
        let r = self.b.use_var(acc);
        let odd = self.b.ins().band_imm_s(e, 1);
        let rx = self.b.ins().imul(r, x);
        let r = self.b.ins().select(odd, rx, r);
        let xx = self.b.ins().imul(x, x);
        let e = self.b.ins().ushr_imm_s(e, 1);
        self.b.def_var(acc, r);
        self.b.def_var(base, xx);
        self.b.def_var(exp, e);
        self.b.ins().jump(header, &[]);
        self.b.seal_block(header);
        self.b.switch_to_block(after);
        self.b.seal_block(after);
        self.b.use_var(acc)
    }
}
