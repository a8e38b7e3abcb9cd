//! A plain evaluator for the kernel IR: runs a lowered [`Program`] on host buffers with the
//! reference interpreter's elementwise semantics, so that fusion and lowering are tested
//! against the graph interpreter before (and independently of) any backend.

use super::ir::{Expr, Kernel, ScalarType, Stmt};
use super::lower::{BufferKind, Program};
use kiln_ir::interp::scalar::{self, Num};
use kiln_ir::{DType, Graph, SymId, Tensor, UnaryOp, WeightStore};

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

    fn run(&mut self, stmts: &[Stmt]) -> Result<(), String> {
        for s in stmts {
            match s {
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
        {
            let bufs: Vec<&mut Vec<Num>> = taken.iter_mut().collect();
            let mut m = Machine { k, bufs, vars: vec![Num::I(0); k.vars.len()], syms: &syms };
            m.run(&k.body).map_err(|e| format!("kernel `{}`: {e}", k.name))?;
        }
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
