//! A small builder for kernels: declares buffers and variables and assembles loop nests.

use super::ir::{Access, BufferParam, Expr, Kernel, LoopKind, ScalarType, Stmt, VarId};
use kiln_ir::{DType, Dim};

#[derive(Clone)]
pub(crate) struct KernelBuilder {
    pub name: String,
    pub buffers: Vec<BufferParam>,
    /// Graph value name of each buffer, to deduplicate.
    pub buffer_values: Vec<u32>,
    pub vars: Vec<(String, ScalarType)>,
}

impl KernelBuilder {
    pub fn new(name: &str) -> Self {
        KernelBuilder { name: name.to_string(), buffers: Vec::new(), buffer_values: Vec::new(), vars: Vec::new() }
    }

    /// The buffer for graph value `value` (added on first use).
    pub fn buffer(&mut self, value: u32, name: &str, dtype: DType, len: Dim, access: Access) -> u32 {
        if let Some(i) = self.buffer_values.iter().position(|&v| v == value) {
            if access == Access::Write {
                self.buffers[i].access = Access::Write;
            }
            return i as u32;
        }
        self.buffer_values.push(value);
        self.buffers.push(BufferParam { name: name.to_string(), dtype, access, len });
        self.buffers.len() as u32 - 1
    }

    pub fn var(&mut self, name: &str, ty: ScalarType) -> VarId {
        self.vars.push((format!("{name}{}", self.vars.len()), ty));
        VarId(self.vars.len() as u32 - 1)
    }

    pub fn index_var(&mut self, name: &str) -> VarId {
        self.var(name, ScalarType::Index)
    }

    /// Loops over `extents` (outermost first) around `body(vars)`; the outermost loop is
    /// parallel, the innermost gets `inner`. A rank-0 space is one iteration.
    pub fn nest(
        &mut self,
        extents: &[Expr],
        inner: LoopKind,
        body: impl FnOnce(&mut Self, &[Expr]) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        let (extents, unit) = if extents.is_empty() { (vec![Expr::Int(1)], true) } else { (extents.to_vec(), false) };
        let vars: Vec<VarId> = extents.iter().map(|_| self.index_var("i")).collect();
        let idx: Vec<Expr> = if unit { vec![] } else { vars.iter().map(|&v| Expr::Var(v)).collect() };
        let mut stmts = body(self, &idx);
        let n = extents.len();
        for (k, (v, e)) in vars.iter().zip(extents).enumerate().rev() {
            let kind = if k == 0 {
                LoopKind::Parallel
            } else if k == n - 1 {
                inner
            } else {
                LoopKind::Serial
            };
            stmts = vec![Stmt::Loop { var: *v, extent: e, kind, body: stmts }];
        }
        stmts
    }

    pub fn finish(self, body: Vec<Stmt>, fused: Vec<String>) -> Kernel {
        Kernel { name: self.name, buffers: self.buffers, vars: self.vars, body, fused, gpu_form: None }
    }
}

/// Row-major linear index of `idx` in a tensor of `shape`.
pub(crate) fn linearize(idx: &[Expr], shape: &[Dim]) -> Expr {
    let mut acc = Expr::Int(0);
    for (i, d) in idx.iter().zip(shape) {
        acc = Expr::add(Expr::mul(acc, Expr::from_dim(d)), i.clone());
    }
    acc
}

/// The multi-index of row-major position `linear` in a tensor of `shape`.
pub(crate) fn delinearize(linear: Expr, shape: &[Dim]) -> Vec<Expr> {
    let mut out = vec![Expr::Int(0); shape.len()];
    let mut rest = linear;
    for k in (0..shape.len()).rev() {
        let d = Expr::from_dim(&shape[k]);
        if k == 0 {
            out[k] = rest.clone();
        } else {
            out[k] = Expr::rem(rest.clone(), d.clone());
            rest = Expr::div(rest, d);
        }
    }
    out
}
