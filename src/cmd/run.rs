//! `kiln run`: loads inputs (or makes random ones), runs the model, writes and checks outputs.

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_ir::{npz, DType, Graph, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct RunArgs {
    /// A `.pt2` archive written by `torch.export.save`.
    model: PathBuf,
    /// Inputs, matched by input name, else by position (`arr_0`, `arr_1`, ...).
    #[arg(long)]
    inputs: Option<PathBuf>,
    /// Write the outputs here (keys are the output names).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Compare the outputs with these reference arrays (by output name, else by position).
    #[arg(long)]
    check: Option<PathBuf>,
    /// Relative tolerance for --check.
    #[arg(long, default_value_t = 1e-4)]
    rtol: f64,
    /// Absolute tolerance for --check.
    #[arg(long, default_value_t = 1e-5)]
    atol: f64,
    /// Seed for random inputs (used when --inputs is absent).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let model = kiln_frontend::load(&args.model).with_context(|| format!("cannot load {}", args.model.display()))?;
    let g = &model.graph;
    let inputs = match &args.inputs {
        Some(p) => match_inputs(g, npz::read_npz(p)?)?,
        None => random_inputs(g, args.seed)?,
    };
    let outputs = kiln_ir::interp::run(g, &model.weights, &inputs)?;
    let named: Vec<(String, Tensor)> = g.outputs().iter().map(|(n, _)| n.clone()).zip(outputs).collect();
    for (name, t) in &named {
        println!("output {name}: {}{:?}", t.dtype, t.shape);
    }
    if let Some(p) = &args.output {
        npz::write_npz(p, &named)?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = &args.check {
        let reference = npz::read_npz(p)?;
        if !check(&named, &reference, args.rtol, args.atol)? {
            eprintln!("error: outputs differ from {} beyond atol {} + rtol {} * |ref|", p.display(), args.atol, args.rtol);
            return Ok(ExitCode::FAILURE);
        }
        println!("check passed (rtol {}, atol {})", args.rtol, args.atol);
    }
    Ok(ExitCode::SUCCESS)
}

/// Orders the arrays of an `.npz` as the graph's inputs: by name, else by position.
fn match_inputs(g: &Graph, arrays: Vec<(String, Tensor)>) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    for (i, &v) in g.inputs().iter().enumerate() {
        let name = &g.value(v).name;
        let found = arrays.iter().find(|(k, _)| k == name).or_else(|| arrays.iter().find(|(k, _)| *k == format!("arr_{i}")));
        let Some((key, t)) = found else {
            let keys: Vec<&str> = arrays.iter().map(|(k, _)| k.as_str()).collect();
            bail!("no array for input `{name}` (looked for `{name}` and `arr_{i}`; the file has {keys:?})");
        };
        let want = g.value(v).ty.dtype;
        if t.dtype != want {
            bail!("array `{key}` for input `{name}` is {}, the model expects {want}", t.dtype);
        }
        out.push(t.clone());
    }
    Ok(out)
}

/// Random inputs: floats uniform in [-1, 1), integers in [0, 10), bools; symbolic dims take
/// their smallest allowed value that is at least 2.
fn random_inputs(g: &Graph, seed: u64) -> Result<Vec<Tensor>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let pick = |s: kiln_ir::SymId| -> Option<i64> {
        let sym = g.symbols.get(s)?;
        let v = sym.min.max(2);
        Some(sym.max.map_or(v, |m| v.min(m)))
    };
    let mut out = Vec::new();
    for &v in g.inputs() {
        let ty = &g.value(v).ty;
        let shape: Vec<usize> = ty
            .shape
            .iter()
            .map(|d| d.eval(&pick).filter(|&x| x >= 0).map(|x| x as usize))
            .collect::<Option<_>>()
            .with_context(|| format!("cannot choose a size for input `{}`", g.value(v).name))?;
        let n: usize = shape.iter().product();
        let t = match ty.dtype {
            d if d.is_float() => Tensor::from_f64(d, shape, &(0..n).map(|_| rng.gen_range(-1.0..1.0)).collect::<Vec<_>>()),
            DType::Bool => Tensor::from_i64(DType::Bool, shape, &(0..n).map(|_| rng.gen_range(0..2)).collect::<Vec<_>>()),
            d => Tensor::from_i64(d, shape, &(0..n).map(|_| rng.gen_range(0..10)).collect::<Vec<_>>()),
        };
        out.push(t);
    }
    Ok(out)
}

/// Compares outputs with references; prints one line per output; true when all are within
/// `atol + rtol * |ref|` (NaN matches only NaN).
fn check(outputs: &[(String, Tensor)], reference: &[(String, Tensor)], rtol: f64, atol: f64) -> Result<bool> {
    let mut ok = true;
    println!("{:<24} {:>12} {:>12} {:>10}  status", "output", "max_abs", "max_rel", "bad");
    for (i, (name, got)) in outputs.iter().enumerate() {
        let found = reference.iter().find(|(k, _)| k == name).or_else(|| reference.iter().find(|(k, _)| *k == format!("arr_{i}")));
        let Some((_, want)) = found else {
            bail!("the reference has no array for output `{name}` (looked for `{name}` and `arr_{i}`)");
        };
        let Some(c) = kiln_ir::tensor::compare(got, want, rtol, atol) else {
            println!("{name:<24} shape {:?} but reference is {:?}", got.shape, want.shape);
            ok = false;
            continue;
        };
        let (max_abs, max_rel, bad) = (c.max_abs, c.max_rel, c.bad);
        let status = if bad == 0 { "ok" } else { "MISMATCH" };
        println!("{name:<24} {max_abs:>12.3e} {max_rel:>12.3e} {bad:>10}  {status}");
        ok &= bad == 0;
    }
    Ok(ok)
}
