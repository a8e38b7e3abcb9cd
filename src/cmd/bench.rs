//! `kiln bench`: latency and throughput of a compiled model, as text or (`--json`) as one JSON
//! object for scripts (`scripts/bench_compare.py`); `--profile` adds the time of each step of
//! the launch plan (which kernels the time goes to).

use anyhow::{Context, Result};
use clap::Args;
use kiln_ir::npz;
use kiln_runtime::exec::Model;
use kiln_runtime::manifest::Step;
use kiln_runtime::tensor::HostTensor;
use serde_json::json;
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
    /// Print one JSON object (model, threads, iters, median_ms, p90_ms, min_ms, mean_ms,
    /// throughput_per_s, device, graphs) instead of text.
    #[arg(long)]
    json: bool,
    /// Also time every step of the launch plan (the device is synchronized after each step)
    /// and print the median time per kernel, slowest first.
    #[arg(long)]
    profile: bool,
    /// Where to run: cpu, cuda (or cuda:N), hip (or hip:N), or auto (as for `kiln run`).
    #[arg(long, default_value = "auto")]
    device: String,
    /// On a GPU, issue every launch of every run (by default the second run records the plan
    /// into a CUDA/HIP graph and later runs replay it: one submission per run).
    #[arg(long)]
    no_graphs: bool,
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let device = super::run::open_device(&args.device, &args.model, args.threads)?;
    let model = Model::load_on(&args.model, device)
        .with_context(|| format!("cannot load {}", args.model.display()))?
        .with_graphs(!args.no_graphs);
    super::run::announce_code(&model);
    let sig = model.signature().clone();
    let inputs = match &args.inputs {
        Some(p) => super::run::match_inputs(&sig, npz::read_npz(p)?)?,
        None => super::run::random_inputs(&sig, 0)?,
    };
    let host = super::run::host_tensors(&inputs);
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
    let (median, p90, min) = (pct(0.5), pct(0.9), times[0]);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let throughput = times.len() as f64 / total;
    if args.json {
        let threads = match args.threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            t => t,
        };
        let report = json!({
            "model": args.model.display().to_string(),
            "threads": threads,
            "iters": times.len(),
            "median_ms": median,
            "p90_ms": p90,
            "min_ms": min,
            "mean_ms": mean,
            "throughput_per_s": throughput,
            "device": model.device().name(),
            "graphs": model.graph_note(),
        });
        println!("{report}");
    } else {
        println!("model       {}", args.model.display());
        println!("iterations  {} (after {n} warm-up runs)", times.len());
        println!("latency ms  median {median:.4}  p90 {p90:.4}  min {min:.4}  mean {mean:.4}");
        println!("throughput  {throughput:.1} runs/s");
        println!("device      {}", model.device().name());
        if let Some(note) = model.graph_note() {
            println!("graph       {note}");
        }
    }
    if args.profile {
        print_profile(&model, &host, args.iters.max(1))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `iters` profiled runs and prints each plan step's median time, slowest first.
fn print_profile(model: &Model, host: &[HostTensor], iters: usize) -> Result<()> {
    let refs: Vec<_> = host.iter().map(HostTensor::view).collect();
    let mut per_step: Vec<Vec<Duration>> = vec![Vec::with_capacity(iters); model.manifest().plan.len()];
    let mut times = Vec::new();
    for _ in 0..iters {
        model.run_profiled(&refs, &mut times)?;
        for (all, t) in per_step.iter_mut().zip(&times) {
            all.push(*t);
        }
    }
    let m = model.manifest();
    let bytes = model.step_bytes(&refs)?;
    let mut rows: Vec<(f64, u64, String)> = per_step
        .iter_mut()
        .zip(&m.plan)
        .zip(&bytes)
        .enumerate()
        .map(|(i, ((ts, step), &b))| {
            ts.sort();
            let median = ts[ts.len() / 2].as_secs_f64() * 1e6;
            let what = match step {
                Step::Launch { kernel, .. } => format!("kernel `{}`", m.kernels[*kernel as usize].name),
                Step::Copy { .. } => "copy".to_string(),
            };
            (median, b, format!("{i:>5}  {what}"))
        })
        .collect();
    let total: f64 = rows.iter().map(|r| r.0).sum();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("\nprofile: median per plan step over {iters} runs (synchronized after each step);");
    println!("MB: the sizes of the step's buffers, GB/s: MB over the step's time (the bandwidth it achieves if it reads or writes each buffer once)");
    println!("{:>10}  {:>6}  {:>10}  {:>8}  {:>5}  what", "us", "share", "MB", "GB/s", "step");
    for (us, b, what) in rows {
        let share = 100.0 * us / total.max(f64::MIN_POSITIVE);
        let gbs = b as f64 / (us * 1e3).max(f64::MIN_POSITIVE);
        println!("{us:>10.1}  {share:>5.1}%  {:>10.3}  {gbs:>8.2}  {what}", b as f64 / 1e6);
    }
    println!("{total:>10.1}  total");
    Ok(())
}
