//! The kernel IR's text form: deterministic, for `kiln compile --emit kernel` and snapshots.

use super::ir::{Access, Expr, Kernel, LoopKind, MmaLayout, ScalarType, Stmt};
use kiln_ir::{BinaryOp, SymbolTable};
use std::fmt::Write;

fn ty(t: ScalarType) -> String {
    match t {
        ScalarType::Index => "idx".into(),
        ScalarType::Elem(d) => d.name().into(),
    }
}

fn binop(op: BinaryOp) -> Option<&'static str> {
    Some(match op {
        BinaryOp::Add => "+",
        BinaryOp::Sub => "-",
        BinaryOp::Mul => "*",
        BinaryOp::Div => "/",
        BinaryOp::FloorDiv => "//",
        BinaryOp::Rem => "%",
        BinaryOp::Eq => "==",
        BinaryOp::Ne => "!=",
        BinaryOp::Lt => "<",
        BinaryOp::Le => "<=",
        BinaryOp::Gt => ">",
        BinaryOp::Ge => ">=",
        BinaryOp::And => "&",
        BinaryOp::Or => "|",
        BinaryOp::Xor => "^",
        _ => return None,
    })
}

/// Prints an expression with full parenthesization of nested operators.
pub fn expr(k: &Kernel, e: &Expr, symbols: &SymbolTable) -> String {
    let p = |x: &Expr| expr(k, x, symbols);
    match e {
        Expr::Int(v) => v.to_string(),
        Expr::Const(v, d) => format!("{v:?}{}", d.name()),
        Expr::Var(v) => k.vars[v.0 as usize].0.clone(),
        Expr::Sym(s) => symbols.get(*s).map(|s| s.name.clone()).unwrap_or_else(|| format!("?s{}", s.0)),
        Expr::Load { buf, index } => format!("{}[{}]", k.buffers[*buf as usize].name, p(index)),
        Expr::Unary(op, x) => format!("{}({})", op.name(), p(x)),
        Expr::Binary(op, a, b) => match binop(*op) {
            Some(sym) => format!("({} {sym} {})", p(a), p(b)),
            None => format!("{}({}, {})", op.name(), p(a), p(b)),
        },
        Expr::Select(c, a, b) => format!("select({}, {}, {})", p(c), p(a), p(b)),
        Expr::Cast(d, x) => format!("{}({})", d.name(), p(x)),
        Expr::ToIndex(x) => format!("idx({})", p(x)),
        Expr::Bitcast(d, x) => format!("bitcast<{}>({})", d.name(), p(x)),
    }
}

fn stmts(out: &mut String, k: &Kernel, body: &[Stmt], depth: usize, symbols: &SymbolTable) {
    let pad = "  ".repeat(depth);
    for s in body {
        match s {
            Stmt::Loop { var, extent, kind, body } => {
                let kind = match kind {
                    LoopKind::Serial => String::new(),
                    LoopKind::Parallel => " parallel".into(),
                    LoopKind::Vector(w) => format!(" vector({w})"),
                    LoopKind::GpuBlocks => " gpu-blocks".into(),
                    LoopKind::GpuThreads => " gpu-threads".into(),
                };
                let _ =
                    writeln!(out, "{pad}for {} in 0..{}{kind} {{", k.vars[var.0 as usize].0, expr(k, extent, symbols));
                stmts(out, k, body, depth + 1, symbols);
                let _ = writeln!(out, "{pad}}}");
            }
            Stmt::Let { var, value } => {
                let (n, t) = &k.vars[var.0 as usize];
                let _ = writeln!(out, "{pad}let {n}: {} = {}", ty(*t), expr(k, value, symbols));
            }
            Stmt::Decl { var, init } => {
                let (n, t) = &k.vars[var.0 as usize];
                let _ = writeln!(out, "{pad}var {n}: {} = {}", ty(*t), expr(k, init, symbols));
            }
            Stmt::Assign { var, value } => {
                let _ = writeln!(out, "{pad}{} = {}", k.vars[var.0 as usize].0, expr(k, value, symbols));
            }
            Stmt::Store { buf, index, value } => {
                let _ = writeln!(
                    out,
                    "{pad}{}[{}] = {}",
                    k.buffers[*buf as usize].name,
                    expr(k, index, symbols),
                    expr(k, value, symbols)
                );
            }
            Stmt::Barrier => {
                let _ = writeln!(out, "{pad}barrier");
            }
            Stmt::Mma(m) => {
                let acc: Vec<&str> = m.acc.iter().map(|a| k.vars[a.0 as usize].0.as_str()).collect();
                // Where a line's steps lie in the panels (see `MmaLayout::panel_offset`).
                let (row, col) = match m.layout {
                    MmaLayout::Hopper64x32 => ("cores8x8(row, k)*", "cores8x8(col, k)*"),
                    _ => ("row*", "col*"),
                };
                let _ = writeln!(
                    out,
                    "{pad}mma{}x{}x16 [{}] += {}[{} + {row}{s}] * {}[{} + {col}{s}] (lane {})",
                    m.layout.rows(),
                    m.layout.columns(),
                    acc.join(", "),
                    k.buffers[m.a as usize].name,
                    expr(k, &m.a_at, symbols),
                    k.buffers[m.b as usize].name,
                    expr(k, &m.b_at, symbols),
                    expr(k, &m.lane, symbols),
                    s = m.stride
                );
            }
        }
    }
}

/// Prints one kernel.
pub fn print_kernel(k: &Kernel, symbols: &SymbolTable) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kernel {} (fuses {})", k.name, k.fused.join(", "));
    for b in &k.buffers {
        let access = match b.access {
            Access::Read => "in",
            Access::Write => "out",
            Access::Shared => "shared",
        };
        let _ = writeln!(out, "  {access} {}: {}[{}]", b.name, b.dtype.name(), b.len.display(symbols));
    }
    stmts(&mut out, k, &k.body, 1, symbols);
    out
}
