//! Building one kernel's function: the entry block (buffer bases and symbol values loaded
//! once), the `[start, end)` range of the outer loop, loops and statements.

use super::CraneliftError;
use crate::kernel::ir::{Expr, Kernel, LoopKind, ScalarType, Stmt, VarId};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, Function, InstBuilder, MemFlagsData, Type, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use kiln_ir::DType;
use std::collections::HashMap;

pub(super) type R<T> = Result<T, CraneliftError>;

/// The register type of a scalar type: integers at their width, index as i64, f16/bf16 as f32.
pub(super) fn reg_ty(t: ScalarType) -> Type {
    match t {
        ScalarType::Index => types::I64,
        ScalarType::Elem(d) => match d {
            DType::F32 | DType::F16 | DType::BF16 => types::F32,
            DType::F64 => types::F64,
            DType::I64 => types::I64,
            DType::I32 => types::I32,
            DType::I16 => types::I16,
            DType::I8 | DType::U8 | DType::Bool => types::I8,
        },
    }
}

/// The dtype the evaluator computes a scalar type in (index is i64).
pub(super) fn dtype_of(t: ScalarType) -> DType {
    match t {
        ScalarType::Index => DType::I64,
        ScalarType::Elem(d) => d,
    }
}

/// The function under construction.
pub(super) struct Fx<'a, 'b> {
    pub b: FunctionBuilder<'b>,
    pub k: &'a Kernel,
    /// Cranelift variables of kernel variables, declared on first use.
    vars: Vec<Option<Variable>>,
    /// Buffer base addresses (entry-block values, so they dominate everything).
    pub bases: Vec<Value>,
    /// Symbol values used by the kernel (entry-block values).
    pub syms: HashMap<u32, Value>,
    /// Values of vector-loop `let`s while a vector body is emitted.
    pub vec_lets: HashMap<VarId, super::vector::VVal>,
}

/// Builds `func`'s body from `kernel`.
pub(super) fn build(
    func: &mut Function,
    fctx: &mut FunctionBuilderContext,
    kernel: &Kernel,
    config: TargetFrontendConfig,
) -> R<()> {
    let malformed =
        |reason: &str| CraneliftError::Malformed { kernel: kernel.name.clone(), reason: reason.to_string() };
    let (var, extent, kind, body) = match kernel.body.as_slice() {
        [Stmt::Loop { var, extent, kind, body }] => (*var, extent, *kind, body),
        _ => return Err(malformed("its body must be exactly one loop (the parallel loop the caller splits)")),
    };
    let ptr = config.pointer_type();
    let mut b = FunctionBuilder::new(func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let params = b.block_params(entry).to_vec();
    let (bufs, syms_ptr, start, end) = (params[0], params[1], params[2], params[3]);
    let table = MemFlagsData::trusted().with_readonly();
    let bases = (0..kernel.buffers.len()).map(|i| b.ins().load(ptr, table, bufs, (8 * i) as i32)).collect();
    let mut used = Vec::new();
    for s in &kernel.body {
        stmt_syms(s, &mut used);
    }
    used.sort_unstable();
    used.dedup();
    let syms = used
        .into_iter()
        .map(|j| {
            let off = i32::try_from(8 * j as i64).map_err(|_| malformed("symbol id too large"))?;
            Ok((j, b.ins().load(types::I64, table, syms_ptr, off)))
        })
        .collect::<R<_>>()?;
    let mut fx = Fx { b, k: kernel, vars: vec![None; kernel.vars.len()], bases, syms, vec_lets: HashMap::new() };
    // The outer loop runs max(start, 0) .. min(end, extent).
    let n = fx.index(extent)?;
    let zero = fx.b.ins().iconst(types::I64, 0);
    let pos = fx.b.ins().icmp(IntCC::SignedGreaterThan, start, zero);
    let lo = fx.b.ins().select(pos, start, zero);
    let small = fx.b.ins().icmp(IntCC::SignedLessThan, end, n);
    let hi = fx.b.ins().select(small, end, n);
    fx.loop_range(var, kind, lo, hi, body)?;
    fx.b.ins().return_(&[]);
    fx.b.seal_all_blocks();
    fx.b.finalize(config);
    Ok(())
}

fn stmt_syms(s: &Stmt, out: &mut Vec<u32>) {
    match s {
        Stmt::Loop { extent, body, .. } => {
            expr_syms(extent, out);
            body.iter().for_each(|s| stmt_syms(s, out));
        }
        Stmt::Let { value, .. } | Stmt::Decl { init: value, .. } | Stmt::Assign { value, .. } => expr_syms(value, out),
        Stmt::Barrier => {}
        Stmt::Mma(m) => [&m.a_at, &m.b_at, &m.lane].into_iter().for_each(|e| expr_syms(e, out)),
        Stmt::Store { index, value, .. } => {
            expr_syms(index, out);
            expr_syms(value, out);
        }
    }
}

fn expr_syms(e: &Expr, out: &mut Vec<u32>) {
    match e {
        Expr::Sym(s) => out.push(s.0),
        Expr::Int(_) | Expr::Const(..) | Expr::Var(_) => {}
        Expr::Load { index: x, .. } | Expr::Unary(_, x) | Expr::Cast(_, x) | Expr::ToIndex(x) | Expr::Bitcast(_, x) => {
            expr_syms(x, out)
        }
        Expr::Binary(_, a, b) => {
            expr_syms(a, out);
            expr_syms(b, out);
        }
        Expr::Select(c, a, b) => {
            expr_syms(c, out);
            expr_syms(a, out);
            expr_syms(b, out);
        }
    }
}

impl Fx<'_, '_> {
    pub fn malformed(&self, reason: impl Into<String>) -> CraneliftError {
        CraneliftError::Malformed { kernel: self.k.name.clone(), reason: reason.into() }
    }

    pub fn unsupported(&self, what: impl Into<String>) -> CraneliftError {
        CraneliftError::Unsupported { kernel: self.k.name.clone(), what: what.into() }
    }

    /// The type of kernel variable `v`.
    pub fn var_type(&self, v: VarId) -> R<ScalarType> {
        self.k
            .vars
            .get(v.0 as usize)
            .map(|x| x.1)
            .ok_or_else(|| self.malformed(format!("variable {} is not declared", v.0)))
    }

    /// The Cranelift variable of kernel variable `v`.
    pub fn var(&mut self, v: VarId) -> R<Variable> {
        let t = self.var_type(v)?;
        let slot = &mut self.vars[v.0 as usize];
        Ok(match slot {
            Some(x) => *x,
            None => {
                let x = self.b.declare_var(reg_ty(t));
                *slot = Some(x);
                x
            }
        })
    }

    /// Evaluates an index expression (any integer is widened to i64).
    pub fn index(&mut self, e: &Expr) -> R<Value> {
        let (v, t) = self.expr(e)?;
        self.convert(v, t, ScalarType::Index)
    }

    pub fn stmts(&mut self, body: &[Stmt]) -> R<()> {
        body.iter().try_for_each(|s| self.stmt(s))
    }

    fn stmt(&mut self, s: &Stmt) -> R<()> {
        match s {
            Stmt::Loop { var, extent, kind, body } => {
                let n = self.index(extent)?;
                let lo = self.b.ins().iconst(types::I64, 0);
                self.loop_range(*var, *kind, lo, n, body)
            }
            Stmt::Let { var, value } | Stmt::Decl { var, init: value } | Stmt::Assign { var, value } => {
                let (v, t) = self.expr(value)?;
                let want = self.var_type(*var)?;
                let v = self.convert(v, t, want)?;
                let x = self.var(*var)?;
                self.b.def_var(x, v);
                Ok(())
            }
            Stmt::Store { buf, index, value } => {
                let i = self.index(index)?;
                let (v, t) = self.expr(value)?;
                let d = self.buffer(*buf)?.dtype;
                let v = self.convert(v, t, ScalarType::Elem(d))?;
                let addr = self.address(*buf, i)?;
                self.store_elem(d, v, addr);
                Ok(())
            }
            Stmt::Barrier => Err(self.unsupported("a GPU barrier")),
            Stmt::Mma(_) => Err(self.unsupported("a GPU warp matrix multiply")),
        }
    }

    /// `for var in lo..hi { body }`, vectorized when marked and eligible.
    fn loop_range(&mut self, var: VarId, kind: LoopKind, lo: Value, hi: Value, body: &[Stmt]) -> R<()> {
        if matches!(kind, LoopKind::Vector(_)) && super::vector::eligible(self.k, var, body) {
            return self.vector_loop(var, lo, hi, body);
        }
        let x = self.var(var)?;
        self.counted_loop(x, lo, hi, 1, |fx| fx.stmts(body))
    }

    /// A rotated loop: `if lo < hi { i = lo; do { body; i += step } while i < hi }`, with the
    /// counter in `x`.
    pub fn counted_loop(
        &mut self,
        x: Variable,
        lo: Value,
        hi: Value,
        step: i64,
        body: impl FnOnce(&mut Self) -> R<()>,
    ) -> R<()> {
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        self.b.def_var(x, lo);
        let go = self.b.ins().icmp(IntCC::SignedLessThan, lo, hi);
        self.b.ins().brif(go, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        body(self)?;
        let i = self.b.use_var(x);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(x, next);
        let again = self.b.ins().icmp(IntCC::SignedLessThan, next, hi);
        self.b.ins().brif(again, body_block, &[], exit, &[]);
        self.b.seal_block(body_block);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }
}
