//! Mark-guided vectorization of innermost loops into f32x4 code plus a scalar remainder.
//!
//! A loop marked [`LoopKind::Vector`](crate::kernel::LoopKind) is vectorized when its body is
//! only `let`s and `store`s and every expression is one of:
//! - *uniform*: independent of the loop variable (computed once per 4 iterations, in scalar
//!   code, and splatted where a vector needs it);
//! - an *index affine* in the loop variable `i` (`base + c*i`, `c` a constant: built from
//!   `+`, `-` and `*` by an integer literal over i64/index values);
//! - an *f32 vector*: a load of an f32 buffer at `base + i` (4 contiguous lanes), at
//!   `base + c*i` (a strided load: 4 scalar loads gathered into lanes) or at an index that
//!   does not change with `i` (`c == 0`: one load, splatted); f32 constants and uniform
//!   values; `neg abs sqrt floor ceil round relu reciprocal sign`, `+ - * / max min` (NaN
//!   semantics kept with compares and bit-selects), `select`, casts to f32 of f32;
//! - a *mask* (bool per lane): a load of a bool buffer at `base + i`, f32 comparisons, `isnan`, `and or xor not` of masks;
//! - an *i32 vector*, the bit manipulation of kiln's transcendental expansions: `i32(x)` and
//!   `bitcast<i32>(x)` of f32 vectors, `+ - * and or xor` with i32 vectors or uniform i32
//!   values, floor division by a power-of-two literal (an arithmetic shift), and back to f32
//!   with `f32(n)` or `bitcast<f32>(n)`. `i32(x)` saturates out-of-range lanes where the
//!   scalar code wraps; PyTorch leaves such casts undefined, and the expansions only convert
//!   clamped values.
//!
//! Stores must write f32 buffers at `base + i`, each buffer at most once, and a buffer the
//! loop stores may be loaded in it only at the store's own index (a read-modify-write of the
//! same lane, as in `out[i] = out[i] + a * b[i]`). Anything else — other dtypes, gathers, index values used
//! as numbers (`f32(i)`), `rsqrt` (computed in f64), accumulators — keeps the scalar loop.

use super::func::{Fx, R};
use crate::kernel::eval::expr_type;
use crate::kernel::ir::{Expr, Kernel, ScalarType, Stmt, VarId};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, Endianness, InstBuilder, MemFlagsData, Value};
use kiln_ir::{BinaryOp, DType, UnaryOp};
use std::collections::HashMap;

/// How an expression varies with the loop variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Uniform,
    /// An index `base + c*i`.
    Affine(i64),
    /// f32 per lane.
    Vec,
    /// bool per lane (all-ones / all-zeros i32 lanes).
    Mask,
    /// i32 per lane.
    IVec,
}

/// A value in a vector body.
#[derive(Clone, Copy, Debug)]
pub(super) enum VVal {
    /// The same scalar in every lane.
    S(Value, ScalarType),
    /// f32x4.
    V(Value),
    /// i32x4 mask.
    M(Value),
    /// i32x4 numbers.
    I(Value),
}

struct Analysis<'k> {
    k: &'k Kernel,
    var: VarId,
    lets: HashMap<VarId, Shape>,
    /// Buffers the loop stores, each with its store index.
    stored: Vec<(u32, &'k Expr)>,
}

const F32: ScalarType = ScalarType::Elem(DType::F32);
const BOOL: ScalarType = ScalarType::Elem(DType::Bool);
const I32: ScalarType = ScalarType::Elem(DType::I32);

/// `k` when `e` is a literal power of two `2^k` (k ≥ 1).
fn power_of_two(e: &Expr) -> Option<u32> {
    let v = match e {
        Expr::Int(v) => *v,
        Expr::Const(v, _) if v.fract() == 0.0 && v.abs() < 9.0e15 => *v as i64,
        _ => return None,
    };
    (v > 1 && (v & (v - 1)) == 0).then(|| v.trailing_zeros())
}

fn is_i64(t: ScalarType) -> bool {
    matches!(t, ScalarType::Index | ScalarType::Elem(DType::I64))
}

impl Analysis<'_> {
    fn ty(&self, e: &Expr) -> ScalarType {
        expr_type(self.k, e)
    }

    fn shape(&self, e: &Expr) -> Option<Shape> {
        use Shape::*;
        Some(match e {
            Expr::Int(_) | Expr::Const(..) | Expr::Sym(_) => Uniform,
            Expr::Var(u) if *u == self.var => Affine(1),
            Expr::Var(u) => self.lets.get(u).copied().unwrap_or(Uniform),
            Expr::Load { buf, index } => {
                if let Some((_, at)) = self.stored.iter().find(|(b, _)| b == buf) {
                    // A stored buffer may be read only where the same lane writes it.
                    if *at != index.as_ref() || self.shape(index)? != Affine(1) {
                        return None;
                    }
                    return Some(Vec);
                }
                let dtype = self.k.buffers.get(*buf as usize)?.dtype;
                match (self.shape(index)?, dtype) {
                    (Uniform, _) => Uniform,
                    (Affine(_), DType::F32) => Vec,
                    (Affine(1), DType::Bool) => Mask,
                    _ => return None,
                }
            }
            Expr::Unary(op, x) => match (self.shape(x)?, op) {
                (Uniform, _) => Uniform,
                (
                    Vec,
                    UnaryOp::Neg
                    | UnaryOp::Abs
                    | UnaryOp::Sqrt
                    | UnaryOp::Floor
                    | UnaryOp::Ceil
                    | UnaryOp::Round
                    | UnaryOp::Relu
                    | UnaryOp::Reciprocal
                    | UnaryOp::Sign,
                ) => Vec,
                (Vec, UnaryOp::IsNan) | (Mask, UnaryOp::Not) => Mask,
                _ => return None,
            },
            Expr::Binary(op, a, b) => {
                let (sa, sb) = (self.shape(a)?, self.shape(b)?);
                match (sa, sb) {
                    (Uniform, Uniform) => Uniform,
                    (Uniform | Affine(_), Uniform | Affine(_)) => {
                        if !is_i64(self.ty(a)) || !is_i64(self.ty(b)) {
                            return None;
                        }
                        let c = |s: Shape| if let Affine(c) = s { c } else { 0 };
                        Affine(match (op, a.as_ref(), b.as_ref()) {
                            (BinaryOp::Add, _, _) => c(sa).checked_add(c(sb))?,
                            (BinaryOp::Sub, _, _) => c(sa).checked_sub(c(sb))?,
                            (BinaryOp::Mul, _, Expr::Int(k)) => c(sa).checked_mul(*k)?,
                            (BinaryOp::Mul, Expr::Int(k), _) => c(sb).checked_mul(*k)?,
                            _ => return None,
                        })
                    }
                    _ if [sa, sb].contains(&IVec) => {
                        let ok = |s: Shape, e: &Expr| s == IVec || (s == Uniform && self.ty(e) == I32);
                        match op {
                            BinaryOp::Add
                            | BinaryOp::Sub
                            | BinaryOp::Mul
                            | BinaryOp::And
                            | BinaryOp::Or
                            | BinaryOp::Xor
                                if ok(sa, a) && ok(sb, b) =>
                            {
                                IVec
                            }
                            BinaryOp::FloorDiv if sa == IVec && sb == Uniform && power_of_two(b).is_some() => IVec,
                            _ => return None,
                        }
                    }
                    _ if [sa, sb].contains(&Vec) => {
                        let ok = |s: Shape, e: &Expr| s == Vec || (s == Uniform && self.ty(e) == F32);
                        if !ok(sa, a) || !ok(sb, b) {
                            return None;
                        }
                        match op {
                            BinaryOp::Add
                            | BinaryOp::Sub
                            | BinaryOp::Mul
                            | BinaryOp::Div
                            | BinaryOp::Max
                            | BinaryOp::Min => Vec,
                            _ if op.is_comparison() => Mask,
                            _ => return None,
                        }
                    }
                    _ => {
                        let ok = |s: Shape, e: &Expr| s == Mask || (s == Uniform && self.ty(e) == BOOL);
                        if !ok(sa, a) || !ok(sb, b) {
                            return None;
                        }
                        match op {
                            BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => Mask,
                            _ => return None,
                        }
                    }
                }
            }
            Expr::Select(c, a, b) => {
                let (sc, sa, sb) = (self.shape(c)?, self.shape(a)?, self.shape(b)?);
                if (sc, sa, sb) == (Uniform, Uniform, Uniform) {
                    return Some(Uniform);
                }
                let ok = |s: Shape, e: &Expr| s == Vec || (s == Uniform && self.ty(e) == F32);
                if !matches!(sc, Uniform | Mask) || !ok(sa, a) || !ok(sb, b) {
                    return None;
                }
                Vec
            }
            Expr::Cast(d, x) => match (self.shape(x)?, *d) {
                (Uniform, _) => Uniform,
                (Vec | IVec, DType::F32) => Vec,
                (Vec, DType::I32) => IVec,
                _ => return None,
            },
            Expr::Bitcast(d, x) => match (self.shape(x)?, *d) {
                (Uniform, _) => Uniform,
                (IVec, DType::F32) => Vec,
                (Vec, DType::I32) => IVec,
                _ => return None,
            },
            Expr::ToIndex(x) => match self.shape(x)? {
                Uniform => Uniform,
                _ => return None,
            },
        })
    }

    /// Checks one statement and records a `let`'s shape.
    fn statement(&mut self, s: &Stmt) -> Option<()> {
        match s {
            Stmt::Let { var, value } => {
                let sh = self.shape(value)?;
                let t = self.k.vars.get(var.0 as usize)?.1;
                let fits = match sh {
                    Shape::Uniform => true,
                    Shape::Affine(_) => is_i64(t) && is_i64(self.ty(value)),
                    Shape::Vec => t == F32,
                    Shape::Mask => t == BOOL,
                    Shape::IVec => t == I32,
                };
                if !fits {
                    return None;
                }
                self.lets.insert(*var, sh);
                Some(())
            }
            Stmt::Store { buf, index, value } => {
                if self.k.buffers.get(*buf as usize)?.dtype != DType::F32 || self.shape(index)? != Shape::Affine(1) {
                    return None;
                }
                match self.shape(value)? {
                    Shape::Vec => Some(()),
                    Shape::Uniform if self.ty(value) == F32 => Some(()),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

fn analysis<'k>(k: &'k Kernel, var: VarId, body: &'k [Stmt]) -> Option<Analysis<'k>> {
    let mut stored = Vec::new();
    for s in body {
        if let Stmt::Store { buf, index, .. } = s {
            if stored.iter().any(|(b, _)| b == buf) {
                return None;
            }
            stored.push((*buf, index));
        }
    }
    Some(Analysis { k, var, lets: HashMap::new(), stored })
}

/// Whether the loop over `var` with `body` can be vectorized.
pub(super) fn eligible(k: &Kernel, var: VarId, body: &[Stmt]) -> bool {
    let Some(mut an) = analysis(k, var, body) else {
        return false;
    };
    body.iter().all(|s| an.statement(s).is_some())
}

fn vflags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl Fx<'_, '_> {
    /// `for var in lo..hi`: 4 iterations at a time while 4 remain, then one at a time.
    pub fn vector_loop(&mut self, var: VarId, lo: Value, hi: Value, body: &[Stmt]) -> R<()> {
        let x = self.var(var)?;
        let n = self.b.ins().isub(hi, lo);
        let zero = self.b.ins().iconst(types::I64, 0);
        let pos = self.b.ins().icmp(cranelift_codegen::ir::condcodes::IntCC::SignedGreaterThan, n, zero);
        let n = self.b.ins().select(pos, n, zero);
        let n4 = self.b.ins().band_imm_s(n, !3);
        let vhi = self.b.ins().iadd(lo, n4);
        self.counted_loop(x, lo, vhi, 4, |fx| fx.vector_body(var, body))?;
        self.counted_loop(x, vhi, hi, 1, |fx| fx.stmts(body))
    }

    fn vector_body(&mut self, var: VarId, body: &[Stmt]) -> R<()> {
        let mut an = analysis(self.k, var, body).ok_or_else(|| self.malformed("vector loop"))?;
        self.vec_lets.clear();
        for s in body {
            match s {
                Stmt::Let { var: x, value } => {
                    let sh = an.shape(value).ok_or_else(|| self.malformed("vector let"))?;
                    match sh {
                        Shape::Uniform | Shape::Affine(_) => self.stmts(std::slice::from_ref(s))?,
                        Shape::Vec | Shape::Mask | Shape::IVec => {
                            let v = self.vexpr(&an, value)?;
                            self.vec_lets.insert(*x, v);
                        }
                    }
                    an.lets.insert(*x, sh);
                }
                Stmt::Store { buf, index, value } => {
                    let i = self.index(index)?;
                    let addr = self.address(*buf, i)?;
                    let v = self.vexpr(&an, value)?;
                    let v = self.as_vec(v)?;
                    self.b.ins().store(vflags(), v, addr, 0);
                }
                _ => return Err(self.malformed("vector loop statement")),
            }
        }
        self.vec_lets.clear();
        Ok(())
    }

    fn as_vec(&mut self, v: VVal) -> R<Value> {
        match v {
            VVal::V(v) => Ok(v),
            VVal::S(s, t) if t == F32 => Ok(self.b.ins().splat(types::F32X4, s)),
            _ => Err(self.malformed("vector operand is not f32")),
        }
    }

    fn as_ivec(&mut self, v: VVal) -> R<Value> {
        match v {
            VVal::I(n) => Ok(n),
            VVal::S(s, t) if t == I32 => Ok(self.b.ins().splat(types::I32X4, s)),
            _ => Err(self.malformed("vector operand is not i32")),
        }
    }

    fn as_mask(&mut self, v: VVal) -> R<Value> {
        match v {
            VVal::M(m) => Ok(m),
            VVal::S(s, t) if t == BOOL => {
                let w = self.b.ins().uextend(types::I32, s);
                let w = self.b.ins().ineg(w);
                Ok(self.b.ins().splat(types::I32X4, w))
            }
            _ => Err(self.malformed("vector operand is not a mask")),
        }
    }

    /// `mask ? x : y` lane-wise.
    fn blend(&mut self, mask: Value, x: Value, y: Value) -> Value {
        let flags = MemFlagsData::new().with_endianness(Endianness::Little);
        let m = self.b.ins().bitcast(types::F32X4, flags, mask);
        self.b.ins().bitselect(m, x, y)
    }

    fn splat_f32(&mut self, x: f32) -> Value {
        let c = self.b.ins().f32const(x);
        self.b.ins().splat(types::F32X4, c)
    }

    fn vexpr(&mut self, an: &Analysis, e: &Expr) -> R<VVal> {
        let bad = |fx: &Self| fx.malformed("expression in a vector loop");
        let sh = an.shape(e).ok_or_else(|| bad(self))?;
        if matches!(sh, Shape::Uniform | Shape::Affine(_)) {
            let (v, t) = self.expr(e)?;
            return Ok(VVal::S(v, t));
        }
        Ok(match e {
            Expr::Var(u) => *self.vec_lets.get(u).ok_or_else(|| bad(self))?,
            Expr::Load { buf, index } => {
                let contiguous = an.shape(index) == Some(Shape::Affine(1));
                let i = self.index(index)?;
                let addr = self.address(*buf, i)?;
                if self.k.buffers[*buf as usize].dtype == DType::Bool {
                    // Four bytes, widened to i32 lanes and compared with zero.
                    let w = self.b.ins().load(types::I32, vflags().with_readonly(), addr, 0);
                    let v = self.b.ins().scalar_to_vector(types::I32X4, w);
                    let flags = MemFlagsData::new().with_endianness(Endianness::Little);
                    let bytes = self.b.ins().bitcast(types::I8X16, flags, v);
                    let half = self.b.ins().uwiden_low(bytes);
                    let lanes = self.b.ins().uwiden_low(half);
                    let zero = self.b.ins().iconst(types::I32, 0);
                    let zero = self.b.ins().splat(types::I32X4, zero);
                    return Ok(VVal::M(self.b.ins().icmp(IntCC::NotEqual, lanes, zero)));
                }
                match an.shape(index) {
                    _ if contiguous => {
                        let flags = match self.k.buffers[*buf as usize].access {
                            crate::kernel::Access::Read => vflags().with_readonly(),
                            crate::kernel::Access::Write | crate::kernel::Access::Shared => vflags(),
                        };
                        VVal::V(self.b.ins().load(types::F32X4, flags, addr, 0))
                    }
                    Some(Shape::Affine(step)) if step != 0 => {
                        // A strided load: four scalar loads gathered into lanes.
                        let first = self.load_elem(*buf, DType::F32, addr);
                        let mut v = self.b.ins().splat(types::F32X4, first);
                        for lane in 1..4u8 {
                            let at = self.b.ins().iadd_imm_s(i, step * i64::from(lane));
                            let a = self.address(*buf, at)?;
                            let x = self.load_elem(*buf, DType::F32, a);
                            v = self.b.ins().insertlane(v, x, lane);
                        }
                        VVal::V(v)
                    }
                    _ => {
                        let s = self.load_elem(*buf, DType::F32, addr);
                        VVal::V(self.b.ins().splat(types::F32X4, s))
                    }
                }
            }
            Expr::Unary(op, x) => {
                let xv = self.vexpr(an, x)?;
                if let VVal::M(m) = xv {
                    return Ok(VVal::M(self.b.ins().bnot(m)));
                }
                let v = self.as_vec(xv)?;
                VVal::V(match op {
                    UnaryOp::Neg => self.b.ins().fneg(v),
                    UnaryOp::Abs => self.b.ins().fabs(v),
                    UnaryOp::Sqrt => self.b.ins().sqrt(v),
                    UnaryOp::Floor => self.b.ins().floor(v),
                    UnaryOp::Ceil => self.b.ins().ceil(v),
                    UnaryOp::Round => self.b.ins().nearest(v),
                    UnaryOp::Reciprocal => {
                        let one = self.splat_f32(1.0);
                        self.b.ins().fdiv(one, v)
                    }
                    UnaryOp::Relu => {
                        let zero = self.splat_f32(0.0);
                        // `x > 0 || isnan(x)`: conditions every target compares vectors with.
                        let pos = self.b.ins().fcmp(FloatCC::GreaterThan, v, zero);
                        let nan = self.b.ins().fcmp(FloatCC::Unordered, v, v);
                        let keep = self.b.ins().bor(pos, nan);
                        self.blend(keep, v, zero)
                    }
                    UnaryOp::Sign => {
                        let zero = self.splat_f32(0.0);
                        let one = self.splat_f32(1.0);
                        let m1 = self.splat_f32(-1.0);
                        let pos = self.b.ins().fcmp(FloatCC::GreaterThan, v, zero);
                        let neg = self.b.ins().fcmp(FloatCC::LessThan, v, zero);
                        let r = self.blend(neg, m1, zero);
                        self.blend(pos, one, r)
                    }
                    UnaryOp::IsNan => return Ok(VVal::M(self.b.ins().fcmp(FloatCC::Unordered, v, v))),
                    _ => return Err(bad(self)),
                })
            }
            Expr::Binary(op, a, b) => {
                if sh == Shape::IVec {
                    let x = self.vexpr(an, a)?;
                    let x = self.as_ivec(x)?;
                    if *op == BinaryOp::FloorDiv {
                        let k = power_of_two(b).ok_or_else(|| bad(self))?;
                        return Ok(VVal::I(self.b.ins().sshr_imm_s(x, i64::from(k))));
                    }
                    let y = self.vexpr(an, b)?;
                    let y = self.as_ivec(y)?;
                    return Ok(VVal::I(match op {
                        BinaryOp::Add => self.b.ins().iadd(x, y),
                        BinaryOp::Sub => self.b.ins().isub(x, y),
                        BinaryOp::Mul => self.b.ins().imul(x, y),
                        BinaryOp::And => self.b.ins().band(x, y),
                        BinaryOp::Or => self.b.ins().bor(x, y),
                        BinaryOp::Xor => self.b.ins().bxor(x, y),
                        _ => return Err(bad(self)),
                    }));
                }
                let (av, bv) = (self.vexpr(an, a)?, self.vexpr(an, b)?);
                if sh == Shape::Mask && !op.is_comparison() {
                    let (x, y) = (self.as_mask(av)?, self.as_mask(bv)?);
                    return Ok(VVal::M(match op {
                        BinaryOp::And => self.b.ins().band(x, y),
                        BinaryOp::Or => self.b.ins().bor(x, y),
                        BinaryOp::Xor => self.b.ins().bxor(x, y),
                        _ => return Err(bad(self)),
                    }));
                }
                let (x, y) = (self.as_vec(av)?, self.as_vec(bv)?);
                let cc = match op {
                    BinaryOp::Eq => Some(FloatCC::Equal),
                    BinaryOp::Ne => Some(FloatCC::NotEqual),
                    BinaryOp::Lt => Some(FloatCC::LessThan),
                    BinaryOp::Le => Some(FloatCC::LessThanOrEqual),
                    BinaryOp::Gt => Some(FloatCC::GreaterThan),
                    BinaryOp::Ge => Some(FloatCC::GreaterThanOrEqual),
                    _ => None,
                };
                if let Some(cc) = cc {
                    return Ok(VVal::M(self.b.ins().fcmp(cc, x, y)));
                }
                VVal::V(match op {
                    BinaryOp::Add => self.b.ins().fadd(x, y),
                    BinaryOp::Sub => self.b.ins().fsub(x, y),
                    BinaryOp::Mul => self.b.ins().fmul(x, y),
                    BinaryOp::Div => self.b.ins().fdiv(x, y),
                    BinaryOp::Max | BinaryOp::Min => {
                        let cc = if *op == BinaryOp::Max { FloatCC::LessThan } else { FloatCC::GreaterThan };
                        // x cc y ? y : x, i.e. `if b > a { b } else { a }` for max; then NaN.
                        let take_y = self.b.ins().fcmp(cc, x, y);
                        let r = self.blend(take_y, y, x);
                        let nan = self.b.ins().fcmp(FloatCC::Unordered, x, y);
                        let q = self.splat_f32(f32::NAN);
                        self.blend(nan, q, r)
                    }
                    _ => return Err(bad(self)),
                })
            }
            Expr::Select(c, a, b) => {
                let x = self.vexpr(an, a)?;
                let x = self.as_vec(x)?;
                let y = self.vexpr(an, b)?;
                let y = self.as_vec(y)?;
                if an.shape(c) == Some(Shape::Uniform) {
                    let cond = self.condition(c)?;
                    VVal::V(self.b.ins().select(cond, x, y))
                } else {
                    let m = self.vexpr(an, c)?;
                    let m = self.as_mask(m)?;
                    VVal::V(self.blend(m, x, y))
                }
            }
            Expr::Cast(d, x) => {
                let xv = self.vexpr(an, x)?;
                match (xv, *d) {
                    (VVal::I(n), DType::F32) => VVal::V(self.b.ins().fcvt_from_sint(types::F32X4, n)),
                    (VVal::V(v), DType::I32) => VVal::I(self.b.ins().fcvt_to_sint_sat(types::I32X4, v)),
                    (xv, _) => xv,
                }
            }
            Expr::Bitcast(d, x) => {
                let xv = self.vexpr(an, x)?;
                let flags = MemFlagsData::new().with_endianness(Endianness::Little);
                match (xv, *d) {
                    (VVal::I(n), DType::F32) => VVal::V(self.b.ins().bitcast(types::F32X4, flags, n)),
                    (xv, DType::I32) => {
                        let v = self.as_vec(xv)?;
                        let bits = self.b.ins().bitcast(types::I32X4, flags, v);
                        // Like the scalar code: signaling NaNs read as quiet ones.
                        let nan = self.b.ins().fcmp(FloatCC::Unordered, v, v);
                        let q = self.b.ins().iconst(types::I32, 0x0040_0000);
                        let q = self.b.ins().splat(types::I32X4, q);
                        let quiet = self.b.ins().bor(bits, q);
                        VVal::I(self.b.ins().bitselect(nan, quiet, bits))
                    }
                    _ => return Err(bad(self)),
                }
            }
            _ => return Err(bad(self)),
        })
    }
}
