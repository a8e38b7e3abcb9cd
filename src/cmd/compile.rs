//! `kiln compile`: `.pt2` → `.kiln`, with `--emit` printing the text of chosen stages.

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_codegen::compile::{compile, CompileError, CompileOptions, Stage};
use kiln_codegen::target::CodegenError;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct CompileArgs {
    /// A `.pt2` archive written by `torch.export.save`.
    model: PathBuf,
    /// Targets, comma-separated (x86_64, aarch64).
    #[arg(long, default_value = "x86_64", value_delimiter = ',')]
    target: Vec<String>,
    /// Code generator.
    #[arg(long, default_value = kiln_codegen::target::DEFAULT_BACKEND)]
    backend: String,
    /// Where to write the artifact (default: MODEL with the extension `.kiln`).
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Print these stages' text (comma-separated): ir, opt, fusion, explain (the e-graph rules
    /// behind each kernel), kernel, clif (cranelift), mlir and llvm (llvm backend), asm.
    #[arg(long, value_delimiter = ',')]
    emit: Vec<String>,
    /// Skip the graph optimization passes.
    #[arg(long)]
    no_opt: bool,
    /// Turn the e-graph optimizer off (for comparison; the other graph passes still run).
    #[arg(long)]
    no_egraph: bool,
    /// Also run the rewrite rules of this file in the e-graph optimizer: one per line,
    /// `name: (searcher pattern) => (applier pattern)` in egg's syntax over kiln's ops.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Leave these e-graph rules out (comma-separated or repeated; names as in
    /// docs/egraph.md), to measure what one rule does.
    #[arg(long, value_name = "RULE", value_delimiter = ',')]
    disable_rule: Vec<String>,
    /// Write a JSON report of the compilation here: ops in and out, kernels, the e-graph's
    /// size, iterations, time and stop reason, and the cost model's estimate.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Never fuse float multiplies and adds into FMAs (llvm backend): every operation then
    /// rounds as in the reference interpreter, and outputs are bit-identical to Cranelift's.
    #[arg(long)]
    no_fp_contract: bool,
}

pub fn run(args: &CompileArgs) -> Result<ExitCode> {
    let mut emit = std::collections::BTreeSet::new();
    for s in &args.emit {
        match Stage::parse(s) {
            Some(st) => {
                emit.insert(st);
            }
            None => bail!("unknown stage `{s}` for --emit; stages: {}", Stage::ALL.map(|s| s.name()).join(", ")),
        }
    }
    let start = Instant::now();
    let step = |msg: &str| eprintln!("[{:>6.2}s] {msg}", start.elapsed().as_secs_f64());
    step(&format!("reading {}", args.model.display()));
    let model = kiln_frontend::load(&args.model).with_context(|| format!("cannot load {}", args.model.display()))?;
    let opts = CompileOptions {
        targets: args.target.clone(),
        backend: args.backend.clone(),
        optimize: !args.no_opt,
        emit,
        fp_contract: !args.no_fp_contract,
        egraph: !args.no_egraph,
        rules: match &args.rules {
            Some(p) => {
                Some(std::fs::read_to_string(p).with_context(|| format!("cannot read the rule file {}", p.display()))?)
            }
            None => None,
        },
        disabled_rules: args.disable_rule.clone(),
    };
    let compiled = match compile(&model.graph, &model.weights, &opts, &mut |m: &str| step(m)) {
        Ok(c) => c,
        Err(e) => {
            // With `--emit mlir`, show the module a backend stage failed on.
            if let CompileError::Codegen(CodegenError::Stage { kernel, stage, module, .. }) = &e {
                if opts.emit.contains(&Stage::Mlir) && !module.is_empty() {
                    println!("=== mlir (kernel `{kernel}`, input of {stage}, which failed) ===\n{}", module.trim_end());
                }
            }
            return Err(e.into());
        }
    };
    for (stage, text) in &compiled.listings {
        println!("=== {} ===\n{}", stage.name(), text.trim_end());
    }
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(&report_json(&compiled, &opts.targets[0]))?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
        step(&format!("wrote the report {}", path.display()));
    }
    let out = args.output.clone().unwrap_or_else(|| args.model.with_extension("kiln"));
    step(&format!("writing {}", out.display()));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    compiled.write(&out).with_context(|| format!("cannot write {}", out.display()))?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    step(&format!(
        "done: {} kernels, {} targets, {} bytes",
        compiled.manifest.kernels.len(),
        compiled.code.len(),
        size
    ));
    Ok(ExitCode::SUCCESS)
}

/// `--report`: what the compilation did, as JSON.
fn report_json(c: &kiln_codegen::compile::Compiled, target: &str) -> serde_json::Value {
    let egraph = c.pass_report.as_ref().and_then(|r| r.egraph.as_ref()).map(|e| {
        serde_json::json!({
            "nodes": e.nodes,
            "classes": e.classes,
            "iterations": e.iterations,
            "seconds": e.seconds,
            "stop_reason": e.stop_reason,
            "ops_in": e.ops_in,
            "ops_out": e.ops_out,
            "rules_applied": e.applied,
            "rewritten_values": e.explain,
            "estimated_before": {"flops": e.estimated_before.flops, "bytes": e.estimated_before.bytes},
        })
    });
    let machine = kiln_passes::egraph::cost::machine(target);
    let work = kiln_passes::egraph::cost::graph_work(&c.graph);
    serde_json::json!({
        "ops_in": c.ops_in,
        "ops_out": c.graph.node_count(),
        "kernels": c.program.kernels.len(),
        "egraph": egraph,
        "estimated": {
            "flops": work.flops,
            "bytes": work.bytes,
            "seconds": work.seconds(&machine),
            "machine": machine.name,
        },
    })
}
