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
    /// Print these stages' text (comma-separated): ir, opt, fusion, kernel, clif (cranelift),
    /// mlir and llvm (llvm backend), asm.
    #[arg(long, value_delimiter = ',')]
    emit: Vec<String>,
    /// Skip the graph optimization passes.
    #[arg(long)]
    no_opt: bool,
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
