//! `kiln bench`: latency and throughput of a compiled model.

use anyhow::{Context, Result};
use clap::Args;
use kiln_ir::npz;
use kiln_runtime::exec::{LoadOptions, Model};
use kiln_runtime::tensor::HostTensor;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchArgs {
    /// A compiled `.kiln` artifact.
    model: PathBuf,
    /// Inputs (by name, else by position); random inputs when absent.
    #[arg(long)]
    inputs: Option<PathBuf>,
    /// Timed iterations (after warm-up).
    #[arg(long, default_value_t = 100)]
    iters: usize,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let model = Model::load_with(&args.model, &LoadOptions { threads: args.threads }).with_context(|| format!("cannot load {}", args.model.display()))?;
    let sig = model.signature().clone();
    let inputs = match &args.inputs {
        Some(p) => super::run::match_inputs(&sig, npz::read_npz(p)?)?,
        None => super::run::random_inputs(&sig, 0)?,
    };
    let host: Vec<HostTensor> = inputs
        .iter()
        .map(|t| HostTensor { dtype: kiln_codegen::plan::elem_type(t.dtype), shape: t.shape.clone(), data: t.bytes.clone() })
        .collect();
    // Warm up for at least 10 runs or 0.2 s.
    let warm = Instant::now();
    let mut n = 0;
    while n < 10 || warm.elapsed() < Duration::from_millis(200) {
        model.run(&host)?;
        n += 1;
    }
    let mut times: Vec<f64> = Vec::with_capacity(args.iters);
    let all = Instant::now();
    for _ in 0..args.iters.max(1) {
        let t = Instant::now();
        model.run(&host)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = all.elapsed().as_secs_f64();
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!("model       {}", args.model.display());
    println!("iterations  {} (after {n} warm-up runs)", times.len());
    println!("latency ms  median {:.4}  p90 {:.4}  min {:.4}", pct(0.5), pct(0.9), times[0]);
    println!("throughput  {:.1} runs/s", times.len() as f64 / total);
    Ok(ExitCode::SUCCESS)
}
