//! `kiln inspect` and `kiln ir`.

use anyhow::{Context, Result};
use kiln_frontend::Summary;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

fn shape_text(s: &kiln_frontend::SignatureEntry, symbols: &kiln_ir::SymbolTable) -> String {
    s.ty.display(symbols)
}

fn symbol_ranges(symbols: &kiln_ir::SymbolTable) -> Vec<(String, i64, Option<i64>)> {
    symbols.iter().map(|(_, s)| (s.name.clone(), s.min, s.max)).collect()
}

pub fn run(path: &Path, as_json: bool) -> Result<ExitCode> {
    if super::run::is_artifact(path) {
        let a = kiln_runtime::artifact::Artifact::open(path)?;
        if as_json {
            println!("{}", serde_json::to_string_pretty(a.manifest())?);
        } else {
            print!("{}", kiln_runtime::artifact::describe(&a));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut pt2 = kiln_frontend::open(path).with_context(|| format!("cannot load {}", path.display()))?;
    let s = pt2.summary()?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&to_json(&s))?);
    } else {
        print_text(path, &s);
    }
    Ok(ExitCode::SUCCESS)
}

fn to_json(s: &Summary) -> serde_json::Value {
    let sig = |list: &[kiln_frontend::SignatureEntry]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|e| {
                let dims: Vec<String> = e.ty.shape.iter().map(|d| d.display(&s.symbols).to_string()).collect();
                json!({"name": e.name, "dtype": e.ty.dtype.name(), "shape": dims})
            })
            .collect()
    };
    let symbols: Vec<serde_json::Value> = symbol_ranges(&s.symbols).into_iter().map(|(n, lo, hi)| json!({"name": n, "min": lo, "max": hi})).collect();
    let unsupported: Vec<serde_json::Value> =
        s.unsupported.iter().map(|u| json!({"target": u.target, "node": u.node, "source": u.source, "reason": u.reason})).collect();
    json!({
        "schema_version": format!("{}.{}", s.info.schema.0, s.info.schema.1),
        "torch_version": s.info.torch_version,
        "inputs": sig(&s.inputs),
        "outputs": sig(&s.outputs),
        "symbols": symbols,
        "weights": {"count": s.weight_count, "bytes": s.weight_bytes},
        "ops": s.op_histogram,
        "unsupported": unsupported,
    })
}

fn print_text(path: &Path, s: &Summary) {
    println!("model      {}", path.display());
    println!("exported   by torch {} (schema {}.{})", s.info.torch_version.as_deref().unwrap_or("?"), s.info.schema.0, s.info.schema.1);
    println!("inputs");
    for e in &s.inputs {
        println!("  {:<24} {}", e.name, shape_text(e, &s.symbols));
    }
    println!("outputs");
    for e in &s.outputs {
        println!("  {:<24} {}", e.name, shape_text(e, &s.symbols));
    }
    let ranges = symbol_ranges(&s.symbols);
    if !ranges.is_empty() {
        println!("symbols");
        for (n, lo, hi) in ranges {
            println!("  {n:<24} [{lo}, {}]", hi.map(|h| h.to_string()).unwrap_or_else(|| "inf".into()));
        }
    }
    println!("weights    {} tensors, {} bytes", s.weight_count, s.weight_bytes);
    println!("ops        {} nodes", s.op_histogram.values().sum::<usize>());
    for (op, count) in &s.op_histogram {
        println!("  {count:>5}  {op}");
    }
    if s.unsupported.is_empty() {
        println!("unsupported ops: none");
    } else {
        println!("unsupported ops: {}", s.unsupported.len());
        for u in &s.unsupported {
            println!("  - {u}");
        }
    }
}

pub fn print_ir(path: &Path) -> Result<ExitCode> {
    let model = kiln_frontend::load(path).with_context(|| format!("cannot load {}", path.display()))?;
    print!("{}", kiln_ir::text::print(&model.graph));
    Ok(ExitCode::SUCCESS)
}
