//! `kiln run`: loads inputs (or makes random ones), runs the model, writes and checks outputs.

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_codegen::compile::CompileOptions;
use kiln_codegen::kernel::eval::run_program_launched;
use kiln_codegen::kernel::gpu_schedule::{matrix_layout, schedule_for, GpuGrid};
use kiln_codegen::kernel::Program;
use kiln_codegen::plan::dtype_of;
use kiln_codegen::target::GPU_TARGETS;
use kiln_ir::{npz, DType, Tensor};
use kiln_runtime::device::cuda::{CudaDevice, NVIDIA_TARGETS};
use kiln_runtime::device::hip::{HipDevice, AMD_TARGETS};
use kiln_runtime::device::{CpuDevice, Device};
use kiln_runtime::manifest::Signature;
use kiln_runtime::tensor::HostTensor;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct RunArgs {
    /// A `.pt2` archive (run by the reference interpreter) or a compiled `.kiln` artifact.
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
    /// Where a compiled model runs: cpu, cuda (or cuda:N), hip (or hip:N), or auto — a GPU
    /// when the artifact has code for one that is present, else the CPU.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Also run the compiled model on this device, step by step next to `--device`, and
    /// report every step of the plan after which their buffers differ (bit for bit): the
    /// first one's kernel is where the two devices' code parts ways. For artifacts compiled
    /// with `--no-fp-contract` (exact on every target). Exits 1 when any step differs.
    #[arg(long, value_name = "DEVICE")]
    compare_steps: Option<String>,
    /// With a `.pt2`: compile it without generating code and run its kernels as GPU target
    /// TARGET (sm_80, sm_90, sm_90a, gfx90a, gfx942, gfx1100) schedules them — blocks of
    /// threads, shared-memory tiles and panels, matrix instructions in that target's fragment
    /// layout — in kiln's kernel evaluator, block by block and thread by thread, with its
    /// barrier checks. Slow: for small models. Not checked: the instructions themselves (a
    /// matrix instruction runs as its documented per-thread meaning) and the row reductions
    /// the llvm backend spreads over a warp's lanes as it emits them.
    #[arg(long, value_name = "TARGET")]
    simulate: Option<String>,
    /// With a `.pt2`: compile it for GPU target TARGET (sm_80, sm_90, sm_90a, gfx90a, gfx942,
    /// gfx1100) and run that code on a GPU emulated on this CPU, through the runtime's GPU
    /// device: each kernel's optimized LLVM IR — the code the GPU's code generator compiles —
    /// JIT-compiled for the host, its thread ids, barriers, warp exchanges and matrix
    /// instructions emulated as the vendors document them, 256 OS threads per block. Checks
    /// GPU code where there is no GPU (llvm builds only). Slow: for small models.
    #[arg(long, value_name = "TARGET", conflicts_with = "simulate")]
    emulate: Option<String>,
}

/// The device `choice` names (`cpu`, `cuda`, `cuda:N`, `hip`, `hip:N`, `auto`) for the
/// artifact at `path`, with `threads` CPU workers (0: all cores). `auto` prefers a CUDA GPU
/// when the artifact has NVIDIA code and one can be opened, then a HIP GPU for AMD code, then
/// the CPU.
pub fn open_device(choice: &str, path: &Path, threads: usize) -> Result<Arc<dyn Device>> {
    let cpu = || -> Result<Arc<dyn Device>> { Ok(Arc::new(CpuDevice::new(threads)?)) };
    let cuda = |ordinal: usize| -> Result<Arc<dyn Device>> {
        let d = CudaDevice::open(ordinal)?;
        eprintln!("running on {} ({}, {})", d.name(), d.gpu_name(), d.target());
        Ok(Arc::new(d))
    };
    let hip = |ordinal: usize| -> Result<Arc<dyn Device>> {
        let d = HipDevice::open(ordinal)?;
        eprintln!("running on {} ({})", d.name(), d.gpu_name());
        Ok(Arc::new(d))
    };
    let ordinal = |prefix: &str| choice.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok());
    match choice {
        "cpu" => cpu(),
        "cuda" => cuda(0),
        "hip" => hip(0),
        "auto" => {
            let targets: Vec<String> = kiln_runtime::artifact::Artifact::open(path)
                .map(|a| a.targets().map(String::from).collect())
                .unwrap_or_default();
            let has = |names: &[&str]| targets.iter().any(|t| names.contains(&t.as_str()));
            let nvidia: Vec<&str> = NVIDIA_TARGETS.iter().map(|(n, ..)| *n).collect();
            if has(&nvidia) && CudaDevice::open(0).is_ok() {
                return cuda(0);
            }
            if has(AMD_TARGETS) && HipDevice::open(0).is_ok() {
                return hip(0);
            }
            cpu()
        }
        _ => match (ordinal("cuda:"), ordinal("hip:")) {
            (Some(n), _) => cuda(n),
            (_, Some(n)) => hip(n),
            _ => bail!("unknown device `{choice}`; devices: auto, cpu, cuda, cuda:N, hip, hip:N"),
        },
    }
}

/// A model to run: read from a `.pt2` (reference interpreter, or its kernels as a GPU
/// schedules them in the kernel evaluator) or a compiled `.kiln`.
enum Runnable {
    Interpreted(kiln_frontend::Model),
    Compiled(kiln_runtime::exec::Model),
    Simulated { graph: kiln_ir::Graph, weights: kiln_ir::WeightStore, program: Program, grids: Vec<GpuGrid> },
}

/// On a GPU, says which of the artifact's targets the device runs (an H100 runs `sm_90a` code
/// when the artifact has it, else `sm_90`).
pub fn announce_code(m: &kiln_runtime::exec::Model) {
    if m.device().name() != "cpu" {
        eprintln!("loaded the {} code", m.code_target());
    }
}

/// Whether `path` holds a `.kiln` artifact (by its magic bytes).
pub fn is_artifact(path: &Path) -> bool {
    let mut magic = [0u8; 8];
    std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
        && &magic == b"KILNART\0"
}

impl Runnable {
    fn load(path: &Path, device: &str, simulate: Option<&str>, emulate: Option<&str>) -> Result<Runnable> {
        if let Some(target) = simulate {
            return Runnable::simulated(path, target);
        }
        if let Some(target) = emulate {
            return Runnable::emulated(path, target);
        }
        if is_artifact(path) {
            let device = open_device(device, path, 0)?;
            let m = kiln_runtime::exec::Model::load_on(path, device)
                .with_context(|| format!("cannot load {}", path.display()))?;
            announce_code(&m);
            Ok(Runnable::Compiled(m))
        } else {
            let m = kiln_frontend::load(path).with_context(|| format!("cannot load {}", path.display()))?;
            Ok(Runnable::Interpreted(m))
        }
    }

    /// The kernels of the `.pt2` at `path` as GPU target `target` schedules them, with the
    /// grids their launches run.
    fn simulated(path: &Path, target: &str) -> Result<Runnable> {
        if is_artifact(path) {
            bail!("--simulate runs a `.pt2` (it needs the kernels, which an artifact holds as machine code)");
        }
        let Some(layout) = matrix_layout(target) else {
            bail!("--simulate: `{target}` is not a GPU target; GPU targets: {}", GPU_TARGETS.join(", "));
        };
        let m = kiln_frontend::load(path).with_context(|| format!("cannot load {}", path.display()))?;
        let opts = CompileOptions { targets: vec![target.to_string()], ..CompileOptions::default() };
        let (graph, weights, mut program) = kiln_codegen::compile::kernels(&m.graph, &m.weights, &opts, &mut |_| {})
            .with_context(|| format!("cannot compile {}", path.display()))?;
        let scheduled: Vec<_> = program.kernels.iter().map(|k| schedule_for(k, layout)).collect();
        let grids = scheduled.iter().map(|s| s.grid.clone()).collect();
        program.kernels = scheduled.into_iter().map(|s| s.kernel).collect();
        eprintln!(
            "simulating the {target} schedule of {} kernels in the kernel evaluator (slow)",
            program.kernels.len()
        );
        Ok(Runnable::Simulated { graph, weights, program, grids })
    }

    /// The `.pt2` at `path` compiled for GPU target `target`, loaded on an emulated GPU.
    #[cfg(feature = "llvm")]
    fn emulated(path: &Path, target: &str) -> Result<Runnable> {
        use kiln_codegen::llvm::emulate::EmulatedGpu;
        use kiln_codegen::target::Listing;
        if is_artifact(path) {
            bail!("--emulate runs a `.pt2` (it compiles it: the emulator runs the LLVM IR of the GPU code, which an artifact does not hold)");
        }
        let gpu = EmulatedGpu::new(target).map_err(|e| anyhow::anyhow!("--emulate: {e}"))?;
        let m = kiln_frontend::load(path).with_context(|| format!("cannot load {}", path.display()))?;
        let opts = CompileOptions { targets: vec![target.to_string()], ..CompileOptions::default() };
        let compiled = kiln_codegen::compile::compile(&m.graph, &m.weights, &opts, &mut |_| {})
            .with_context(|| format!("cannot compile {}", path.display()))?;
        for code in &compiled.code {
            if let Some((_, Listing::Whole(ir))) = code.listings.iter().find(|(stage, _)| *stage == "llvm") {
                gpu.add_code(&code.bytes, ir);
            }
        }
        let artifact = std::env::temp_dir().join(format!("kiln-emulate-{}-{target}.kiln", std::process::id()));
        compiled.write(&artifact).with_context(|| format!("cannot write {}", artifact.display()))?;
        let device = gpu.into_device()?;
        let loaded = kiln_runtime::exec::Model::load_on(&artifact, Arc::new(device));
        let _ = std::fs::remove_file(&artifact);
        let m = loaded.with_context(|| format!("cannot load the {target} code on the emulator"))?;
        eprintln!(
            "running the {target} code of {} kernels on a GPU emulated on this CPU (slow)",
            m.manifest().kernels.len()
        );
        Ok(Runnable::Compiled(m))
    }

    #[cfg(not(feature = "llvm"))]
    fn emulated(_path: &Path, _target: &str) -> Result<Runnable> {
        bail!("--emulate needs kiln built with the llvm backend (`cargo build --features llvm`)")
    }

    fn signature(&self) -> Signature {
        match self {
            Runnable::Interpreted(m) => kiln_codegen::plan::signature(&m.graph),
            Runnable::Compiled(m) => m.signature().clone(),
            Runnable::Simulated { graph, .. } => kiln_codegen::plan::signature(graph),
        }
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        match self {
            Runnable::Interpreted(m) => Ok(kiln_ir::interp::run(&m.graph, &m.weights, inputs)?),
            Runnable::Simulated { graph, weights, program, grids } => {
                run_program_launched(graph, program, weights, inputs, grids).map_err(|e| anyhow::anyhow!("{e}"))
            }
            Runnable::Compiled(m) => {
                let out = m.run(&host_tensors(inputs))?;
                Ok(out
                    .into_iter()
                    .map(|h| Tensor { dtype: dtype_of(h.dtype), shape: h.shape, bytes: h.data })
                    .collect())
            }
        }
    }
}

pub fn run(args: &RunArgs) -> Result<ExitCode> {
    if let Some(other) = &args.compare_steps {
        if args.simulate.is_some() || args.emulate.is_some() {
            bail!("--compare-steps compares two devices' runs of an artifact; --simulate and --emulate run a `.pt2`");
        }
        return compare(args, other);
    }
    let model = Runnable::load(&args.model, &args.device, args.simulate.as_deref(), args.emulate.as_deref())?;
    let sig = model.signature();
    let inputs = match &args.inputs {
        Some(p) => match_inputs(&sig, npz::read_npz(p)?)?,
        None => random_inputs(&sig, args.seed)?,
    };
    let outputs = model.run(&inputs)?;
    let named: Vec<(String, Tensor)> = sig.outputs.iter().map(|o| o.name.clone()).zip(outputs).collect();
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
            eprintln!(
                "error: outputs differ from {} beyond atol {} + rtol {} * |ref|",
                p.display(),
                args.atol,
                args.rtol
            );
            return Ok(ExitCode::FAILURE);
        }
        println!("check passed (rtol {}, atol {})", args.rtol, args.atol);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--compare-steps`: the model on `--device` and on `other`, step by step.
fn compare(args: &RunArgs, other: &str) -> Result<ExitCode> {
    if !is_artifact(&args.model) {
        bail!("--compare-steps needs a compiled `.kiln` artifact, not {}", args.model.display());
    }
    let load = |device: &str| -> Result<kiln_runtime::exec::Model> {
        let d = open_device(device, &args.model, 0)?;
        let m = kiln_runtime::exec::Model::load_on(&args.model, d)
            .with_context(|| format!("cannot load {} on {device}", args.model.display()))?;
        announce_code(&m);
        Ok(m)
    };
    let (a, b) = (load(&args.device)?, load(other)?);
    let sig = a.signature().clone();
    let inputs = match &args.inputs {
        Some(p) => match_inputs(&sig, npz::read_npz(p)?)?,
        None => random_inputs(&sig, args.seed)?,
    };
    let host = host_tensors(&inputs);
    let names = (a.device().name().to_string(), b.device().name().to_string());
    let same = super::compare::compare_steps(&args.model, (&names.0, a), (&names.1, b), &host, 20)?;
    Ok(if same { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The runtime's host tensors holding copies of `inputs`.
pub fn host_tensors(inputs: &[Tensor]) -> Vec<HostTensor> {
    inputs
        .iter()
        .map(|t| HostTensor {
            dtype: kiln_codegen::plan::elem_type(t.dtype),
            shape: t.shape.clone(),
            data: t.bytes.clone(),
        })
        .collect()
}

/// Orders the arrays of an `.npz` as the model's inputs: by name, else by position.
pub fn match_inputs(sig: &Signature, arrays: Vec<(String, Tensor)>) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    for (i, spec) in sig.inputs.iter().enumerate() {
        let name = &spec.name;
        let found =
            arrays.iter().find(|(k, _)| k == name).or_else(|| arrays.iter().find(|(k, _)| *k == format!("arr_{i}")));
        let Some((key, t)) = found else {
            let keys: Vec<&str> = arrays.iter().map(|(k, _)| k.as_str()).collect();
            bail!("no array for input `{name}` (looked for `{name}` and `arr_{i}`; the file has {keys:?})");
        };
        let want = dtype_of(spec.dtype);
        if want == DType::BF16 && t.dtype == DType::F32 {
            out.push(bf16_of_f32(key, name, t)?);
            continue;
        }
        if t.dtype != want {
            bail!("array `{key}` for input `{name}` is {}, the model expects {want}", t.dtype);
        }
        out.push(t.clone());
    }
    Ok(out)
}

/// A bf16 input from an f32 array (NumPy has no bfloat16, so bf16 values travel as f32): every
/// value must be a bf16 value, so that nothing is rounded on the way in.
fn bf16_of_f32(key: &str, name: &str, t: &Tensor) -> Result<Tensor> {
    let values = t.to_f64();
    let bf16 = Tensor::from_f64(DType::BF16, t.shape.clone(), &values);
    let rounded = bf16.to_f64();
    if let Some(i) =
        values.iter().zip(&rounded).position(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()))
    {
        bail!(
            "array `{key}` for input `{name}` is f32 and the model expects bf16: f32 arrays are taken for bf16 inputs \
             (NumPy has no bfloat16) when every value is a bf16 value, but element {i} ({}) is not (store \
             `tensor.bfloat16().float().numpy()`)",
            values[i]
        );
    }
    Ok(bf16)
}

/// Random inputs: floats uniform in [-1, 1), integers in [0, 10), bools; symbolic dims take
/// their smallest allowed value that is at least 2.
pub fn random_inputs(sig: &Signature, seed: u64) -> Result<Vec<Tensor>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let syms: Vec<i64> = sig.symbols.iter().map(|s| s.max.map_or(s.min.max(2), |m| s.min.max(2).min(m))).collect();
    let mut out = Vec::new();
    for spec in &sig.inputs {
        let shape: Vec<usize> = spec
            .shape
            .iter()
            .map(|d| d.eval(&syms).filter(|&x| x >= 0).map(|x| x as usize))
            .collect::<Option<_>>()
            .with_context(|| format!("cannot choose a size for input `{}`", spec.name))?;
        let n: usize = shape.iter().product();
        let t = match dtype_of(spec.dtype) {
            d if d.is_float() => {
                Tensor::from_f64(d, shape, &(0..n).map(|_| rng.gen_range(-1.0..1.0)).collect::<Vec<_>>())
            }
            DType::Bool => {
                Tensor::from_i64(DType::Bool, shape, &(0..n).map(|_| rng.gen_range(0..2)).collect::<Vec<_>>())
            }
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
        let found = reference
            .iter()
            .find(|(k, _)| k == name)
            .or_else(|| reference.iter().find(|(k, _)| *k == format!("arr_{i}")));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_inputs_come_from_f32_arrays_of_bf16_values() {
        let exact = Tensor::from_f64(DType::F32, vec![3], &[1.0, -0.5, 2f64.powi(100)]);
        let t = bf16_of_f32("x", "x", &exact).unwrap();
        assert_eq!((t.dtype, t.to_f64()), (DType::BF16, exact.to_f64()));
        // 0.1 is not a bf16 value: refused, naming the element, rather than rounded.
        let inexact = Tensor::from_f64(DType::F32, vec![2], &[1.0, 0.1]);
        let err = bf16_of_f32("a", "x", &inexact).unwrap_err().to_string();
        assert!(err.contains("element 1") && err.contains("expects bf16"), "{err}");
    }
}
