//! The printer: [`print`] writes a graph in the text form described in [`crate::text`].

use crate::dim::{Dim, SymbolTable};
use crate::graph::{Graph, Node, ValueDef, ValueId};
use crate::op::{AttentionMask, AttentionScale, Op};
use crate::verify::{is_symbol_name, is_value_name};
use std::fmt::Write;

/// Writes `graph` in the text form. The output is deterministic and [`super::parse`] reads it
/// back into an equal graph. Works on any graph: a broken one (which the verifier would reject)
/// prints as well as it can, marking dangling ids as `%?N`, but may then not parse.
pub fn print(graph: &Graph) -> String {
    let mut out = String::new();
    let _ = write_graph(graph, &mut out);
    out
}

fn write_graph(g: &Graph, out: &mut String) -> std::fmt::Result {
    writeln!(out, "graph {}", graph_name(&g.name))?;
    for (_, sym) in g.symbols.iter() {
        let name = if is_symbol_name(&sym.name) { sym.name.clone() } else { quote(&sym.name) };
        match sym.max {
            Some(max) => writeln!(out, "sym {name} in [{}, {max}]", sym.min)?,
            None => writeln!(out, "sym {name} in [{}, inf]", sym.min)?,
        }
    }
    for i in 0..g.value_count() {
        let v = ValueId(i as u32);
        let data = g.value(v);
        let ty = data.ty.display(&g.symbols);
        match data.def {
            ValueDef::Input(_) => writeln!(out, "input %{}: {ty}", data.name)?,
            ValueDef::Weight(_) => writeln!(out, "weight %{}: {ty}", data.name)?,
            ValueDef::Node(n) if (n.0 as usize) < g.node_count() && g.node(n).output == v => {
                write_node(g, g.node(n), out)?;
            }
            ValueDef::Node(n) => {
                writeln!(out, "# %{}: {ty} is defined by node #{}, which does not define it", data.name, n.0)?
            }
        }
    }
    for (name, v) in g.outputs() {
        writeln!(out, "output {} {}", quote(name), value_ref(g, *v))?;
    }
    Ok(())
}

fn write_node(g: &Graph, node: &Node, out: &mut String) -> std::fmt::Result {
    let data = g.value(node.output);
    write!(out, "%{}: {} = {}", data.name, data.ty.display(&g.symbols), node.op.name())?;
    let attrs = attributes(&node.op, &g.symbols);
    if !attrs.is_empty() {
        let parts: Vec<String> = attrs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(out, "{{{}}}", parts.join(", "))?;
    }
    let operands: Vec<String> = node.inputs.iter().map(|&v| value_ref(g, v)).collect();
    if !operands.is_empty() {
        write!(out, " {}", operands.join(", "))?;
    }
    if let Some(src) = &node.source {
        write!(out, "  @ {}", quote(src))?;
    }
    out.push('\n');
    Ok(())
}

/// The attributes of `op`, in the fixed order of the text form.
pub(super) fn attributes(op: &Op, symbols: &SymbolTable) -> Vec<(&'static str, String)> {
    let dim = |d: &Dim| d.display(symbols).to_string();
    let dims = |ds: &[Dim]| list(ds.iter().map(dim));
    let ints = |xs: &[i64]| list(xs.iter().map(i64::to_string));
    let axes = |xs: &[usize]| list(xs.iter().map(usize::to_string));
    match op {
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::MatMul => vec![],
        Op::Cast(to) => vec![("to", to.name().to_string())],
        Op::Attention(a) => {
            let (how, c) = match a.scale {
                AttentionScale::Mul(c) => ("mul", c),
                AttentionScale::Div(c) => ("div", c),
            };
            let masks = a.masks.iter().map(|m| match m {
                AttentionMask::Add => "add".to_string(),
                AttentionMask::Keep(f) => format!("keep({})", float(*f)),
                AttentionMask::Fill(f) => format!("fill({})", float(*f)),
            });
            vec![("scale", format!("{how}({})", float(c))), ("masks", list(masks))]
        }
        Op::Reduce { axes: a, keepdim, .. } => vec![("axes", axes(a)), ("keepdim", keepdim.to_string())],
        Op::ArgReduce { axis, keepdim, .. } => vec![("axis", axis.to_string()), ("keepdim", keepdim.to_string())],
        Op::Conv(a) => vec![
            ("stride", ints(&a.stride)),
            ("padding", ints(&a.padding)),
            ("dilation", ints(&a.dilation)),
            ("groups", a.groups.to_string()),
            ("transposed", a.transposed.to_string()),
            ("output_padding", ints(&a.output_padding)),
        ],
        Op::Pool(a) => vec![
            ("kind", a.kind.name().to_string()),
            ("kernel", ints(&a.kernel)),
            ("stride", ints(&a.stride)),
            ("padding", ints(&a.padding)),
            ("dilation", ints(&a.dilation)),
            ("ceil_mode", a.ceil_mode.to_string()),
            ("count_include_pad", a.count_include_pad.to_string()),
        ],
        Op::AdaptivePool { kind, output_size } => {
            vec![("kind", kind.name().to_string()), ("output_size", ints(output_size))]
        }
        Op::Reshape { shape } | Op::Expand { shape } => vec![("shape", dims(shape))],
        Op::Permute { perm } => vec![("perm", axes(perm))],
        Op::Slice { axis, start, end, step } => {
            vec![("axis", axis.to_string()), ("start", dim(start)), ("end", dim(end)), ("step", step.to_string())]
        }
        Op::Concat { axis } | Op::Gather { axis } | Op::CumSum { axis } => vec![("axis", axis.to_string())],
        Op::Pad { pads, value } => {
            vec![("pads", list(pads.iter().map(|(lo, hi)| format!("({lo}, {hi})")))), ("value", float(*value))]
        }
        Op::Iota { shape, axis, start, step, dtype } => vec![
            ("shape", dims(shape)),
            ("axis", axis.to_string()),
            ("start", float(*start)),
            ("step", float(*step)),
            ("dtype", dtype.name().to_string()),
        ],
        Op::DimValue { dim, dtype } => {
            vec![("dim", dim.display(symbols).to_string()), ("dtype", dtype.name().to_string())]
        }
        Op::Full { shape, value, dtype } => {
            vec![("shape", dims(shape)), ("value", float(*value)), ("dtype", dtype.name().to_string())]
        }
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

/// `{:?}` writes the shortest text that reads back to the same `f64` (`inf`, `-inf`, `NaN`).
fn float(v: f64) -> String {
    format!("{v:?}")
}

fn value_ref(g: &Graph, v: ValueId) -> String {
    match g.try_value(v) {
        Some(data) => format!("%{}", data.name),
        None => format!("%?{}", v.0),
    }
}

/// A graph name bare when it is an identifier (`[A-Za-z_][A-Za-z0-9_.]*`), quoted otherwise.
fn graph_name(name: &str) -> String {
    if is_bare_graph_name(name) {
        name.to_string()
    } else {
        quote(name)
    }
}

pub(super) fn is_bare_graph_name(name: &str) -> bool {
    is_value_name(name) && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
}

/// A string literal: `\\`, `\"`, `\n`, `\t`, `\r` escaped, other control characters as
/// `\u{HEX}`; everything else (non-ASCII included) as is.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An op with its attributes as one space-free word, `name{key=value,...}` (e.g.
/// `permute{perm=[1,0]}`, `full{shape=[],value=0.5,dtype=f32}`): the op's identity in the
/// e-graph optimizer and in its rule files. [`super::parse_op_key`] reads it back.
pub fn op_key(op: &Op, symbols: &SymbolTable) -> String {
    let attrs = attributes(op, symbols);
    let mut key = op.name().to_string();
    if !attrs.is_empty() {
        let parts: Vec<String> = attrs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        key.push('{');
        key.push_str(&parts.join(","));
        key.push('}');
    }
    key.retain(|c| c != ' ');
    key
}
