//! The human-readable description of an artifact that `kiln inspect` prints.

use std::fmt::Write;

use super::format::SectionKind;
use super::reader::Artifact;
use crate::manifest::{SizeExpr, Step, SymbolSpec, TensorSpec};

fn tensor(t: &TensorSpec, syms: &[SymbolSpec]) -> String {
    let dims: Vec<String> = t.shape.iter().map(|d| d.to_text(syms)).collect();
    format!("{}: {}[{}]", t.name, format!("{:?}", t.dtype).to_lowercase(), dims.join(", "))
}

/// A multi-line description: format and compiler version, the signature with symbolic dims and
/// their ranges, targets with code-object sizes, the kernels (name, symbol, buffer count, how
/// GPU code runs them),
/// weight count and bytes, arena bytes and plan length.
pub fn describe(a: &Artifact) -> String {
    let m = a.manifest();
    let sig = &m.signature;
    let syms = &sig.symbols;
    let mut o = String::new();
    let _ = writeln!(o, "kiln artifact {}", a.path().display());
    let _ = writeln!(o, "  format version  {}", a.format_version());
    let _ = writeln!(o, "  compiler        {}", a.compiler_version());
    let _ = writeln!(o, "  model           {}", m.model_name);
    let _ = writeln!(o, "  file size       {} bytes, {} sections", a.file_size(), a.sections().len());
    let _ = writeln!(o, "signature");
    for s in syms {
        let max = s.max.map_or_else(|| "inf".to_string(), |v| v.to_string());
        let _ = writeln!(o, "  symbol {} in [{}, {}]", s.name, s.min, max);
    }
    for t in &sig.inputs {
        let _ = writeln!(o, "  input  {}", tensor(t, syms));
    }
    for t in &sig.outputs {
        let _ = writeln!(o, "  output {}", tensor(t, syms));
    }
    let _ = writeln!(o, "targets");
    if m.code_objects.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for c in &m.code_objects {
        let size = a.sections().get(c.section as usize).map_or(0, |s| s.length);
        let needs =
            if c.cpu_features.is_empty() { String::new() } else { format!(", needs {}", c.cpu_features.join(", ")) };
        let _ = writeln!(o, "  {} ({}): {} bytes, section {}{needs}", c.target, c.format, size, c.section);
    }
    let weight_bytes: u64 = m.weights.iter().map(|w| w.bytes).sum();
    let section = a.sections().iter().find(|s| s.kind == SectionKind::Weights).map_or(0, |s| s.length);
    let _ = writeln!(o, "kernels           {}", m.kernels.len());
    for (i, k) in m.kernels.iter().enumerate() {
        // How GPU code runs it, per item of a launch's range.
        let gpu = match (&k.gpu_tiles, &k.gpu_threads_per_item) {
            (Some(t), _) if t.column_tile == 1 && t.columns == SizeExpr::constant(1) => {
                // Rows alone (attention: queries), in blocks per batch of rows.
                let batches = t.batch_rows.as_ref().map_or(String::new(), |b| format!(" of each {}", b.to_text(syms)));
                format!("; GPU: one block per {} rows{batches}, in shared memory", t.row_tile)
            }
            (Some(t), _) => {
                let batches = t.batch_rows.as_ref().map_or(String::new(), |b| format!(" per {} rows", b.to_text(syms)));
                let matrix = t.matrix.as_ref().map_or(String::new(), |m| format!(", {m} matrix instructions"));
                format!(
                    "; GPU: {}x{} tiles of ({}) x {}{batches}, in shared memory{matrix}",
                    t.row_tile,
                    t.column_tile,
                    t.rows_per_item.to_text(syms),
                    t.columns.to_text(syms)
                )
            }
            (None, Some(n)) => format!("; GPU: {} threads per item", n.to_text(syms)),
            (None, None) => String::new(),
        };
        let _ = writeln!(o, "  {i:>3} {} ({}, {} buffers{gpu})", k.name, k.symbol, k.buffers);
    }
    let _ = writeln!(
        o,
        "weights           {} ({} bytes; section of {} bytes with 64-byte alignment)",
        m.weights.len(),
        weight_bytes,
        section
    );
    let _ = writeln!(o, "arena             {} bytes", m.arena_bytes.to_text(syms));
    let launches = m.plan.iter().filter(|s| matches!(s, Step::Launch { .. })).count();
    let copies = m.plan.len() - launches;
    let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let _ = writeln!(
        o,
        "plan              {} ({}, {})",
        plural(m.plan.len(), "step", "steps"),
        plural(launches, "launch", "launches"),
        plural(copies, "copy", "copies")
    );
    o
}
