//! Running a loaded artifact: [`Model::load`] maps the artifact and its code, [`Model::run`]
//! executes the launch plan on the CPU.
//!
//! The plan is data: each `Launch` calls one kernel over `0..range` of its outermost parallel
//! loop, which the executor splits into chunks run on a thread pool; `Copy` steps move bytes.
//! A model is `Send + Sync`: every `run` gets its own scratch arena and output tensors, while
//! the code and the weights (read in place from the memory-mapped file) are shared.

use crate::artifact::{Artifact, ArtifactError};
use crate::loader::{LoadError, LoadedCode};
use crate::manifest::{BufferRef, Manifest, Signature, SizeExpr, Step};
use crate::tensor::HostTensor;
use std::path::Path;

/// The host target name of this machine's code objects.
pub const HOST_TARGET: &str = if cfg!(target_arch = "x86_64") { "x86_64" } else { "aarch64" };

/// The kernel calling convention shared with every CPU backend.
type KernelFn = unsafe extern "C" fn(bufs: *const *mut u8, syms: *const i64, start: i64, end: i64);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("loading the {target} code of the artifact: {source}")]
    Load { target: String, source: LoadError },
    #[error("the artifact has no code for this machine ({HOST_TARGET}); it was compiled for: {available}. Recompile with `--target {HOST_TARGET}`")]
    NoCodeForHost { available: String },
    #[error("kernel `{0}` is missing from the code object")]
    MissingKernel(String),
    #[error("expected {expected} inputs, got {got}")]
    InputCount { expected: usize, got: usize },
    #[error("input `{name}`: {reason}")]
    Input { name: String, reason: String },
    #[error("the plan is invalid: {0}")]
    Plan(String),
}

/// A compiled model ready to run.
pub struct Model {
    artifact: Artifact,
    // Kept alive for the kernel pointers below.
    _code: LoadedCode,
    kernels: Vec<usize>,
    pool: rayon::ThreadPool,
    threads: usize,
}

// SAFETY: kernel pointers point into `_code`, which lives as long as the model and is
// immutable executable memory; the artifact is a read-only mapping.
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

/// Options of [`Model::load_with`].
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Worker threads for parallel loops (0: all cores).
    pub threads: usize,
}

impl Model {
    pub fn load(path: &Path) -> Result<Model, RuntimeError> {
        Model::load_with(path, &LoadOptions::default())
    }

    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Model, RuntimeError> {
        let artifact = Artifact::open(path)?;
        let bytes = artifact.code_object(HOST_TARGET).ok_or_else(|| RuntimeError::NoCodeForHost { available: artifact.targets().collect::<Vec<_>>().join(", ") })?;
        let code = LoadedCode::load(bytes, &|_| None).map_err(|source| RuntimeError::Load { target: HOST_TARGET.into(), source })?;
        let mut kernels = Vec::new();
        for k in &artifact.manifest().kernels {
            let p = code.symbol(&k.symbol).ok_or_else(|| RuntimeError::MissingKernel(k.symbol.clone()))?;
            kernels.push(p as usize);
        }
        let threads = if opts.threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { opts.threads };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| RuntimeError::Plan(e.to_string()))?;
        Ok(Model { artifact, _code: code, kernels, pool, threads })
    }

    pub fn manifest(&self) -> &Manifest {
        self.artifact.manifest()
    }

    pub fn signature(&self) -> &Signature {
        &self.manifest().signature
    }

    /// Binds the symbols from the input shapes and checks every input.
    fn bind(&self, inputs: &[HostTensor]) -> Result<Vec<i64>, RuntimeError> {
        let sig = self.signature();
        if inputs.len() != sig.inputs.len() {
            return Err(RuntimeError::InputCount { expected: sig.inputs.len(), got: inputs.len() });
        }
        let mut syms: Vec<Option<i64>> = vec![None; sig.symbols.len()];
        for (spec, t) in sig.inputs.iter().zip(inputs) {
            let bad = |reason: String| RuntimeError::Input { name: spec.name.clone(), reason };
            if t.dtype != spec.dtype {
                return Err(bad(format!("dtype {:?}, expected {:?}", t.dtype, spec.dtype)));
            }
            if t.shape.len() != spec.shape.len() {
                return Err(bad(format!("rank {}, expected {}", t.shape.len(), spec.shape.len())));
            }
            for (d, &n) in spec.shape.iter().zip(&t.shape) {
                if let [(m, 1)] = d.terms.as_slice() {
                    if let [s] = m.as_slice() {
                        let slot = &mut syms[*s as usize];
                        if slot.is_some_and(|v| v != n as i64) {
                            return Err(bad(format!("size {n} conflicts with another input's {}", sig.symbols[*s as usize].name)));
                        }
                        *slot = Some(n as i64);
                    }
                }
            }
        }
        let syms: Vec<i64> = syms.into_iter().enumerate().map(|(i, v)| v.unwrap_or(sig.symbols[i].min)).collect();
        for (s, &v) in sig.symbols.iter().zip(&syms) {
            if v < s.min || s.max.is_some_and(|m| v > m) {
                let range = format!("[{}, {}]", s.min, s.max.map(|m| m.to_string()).unwrap_or("inf".into()));
                return Err(RuntimeError::Input { name: s.name.clone(), reason: format!("size {v} is outside the exported range {range}") });
            }
        }
        for (spec, t) in sig.inputs.iter().zip(inputs) {
            let want: Option<Vec<usize>> = spec.shape.iter().map(|d| d.eval(&syms).map(|v| v as usize)).collect();
            if want.as_deref() != Some(t.shape.as_slice()) {
                return Err(RuntimeError::Input { name: spec.name.clone(), reason: format!("shape {:?}, expected {want:?}", t.shape) });
            }
            if t.data.len() != t.numel() * t.dtype.size_bytes() {
                return Err(RuntimeError::Input { name: spec.name.clone(), reason: "byte count does not match the shape".into() });
            }
        }
        Ok(syms)
    }

    /// Runs the model on one set of inputs.
    pub fn run(&self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>, RuntimeError> {
        let syms = self.bind(inputs)?;
        let m = self.manifest();
        let eval = |e: &SizeExpr| e.eval(&syms).filter(|&v| v >= 0).ok_or_else(|| RuntimeError::Plan("size does not evaluate".into()));
        let mut outputs = Vec::new();
        for spec in &m.signature.outputs {
            let shape: Vec<usize> = spec.shape.iter().map(|d| eval(d).map(|v| v as usize)).collect::<Result<_, _>>()?;
            outputs.push(HostTensor::zeros(spec.dtype, shape));
        }
        // The arena as u128s keeps it 16-byte aligned; kernels need element alignment only.
        let arena_bytes = eval(&m.arena_bytes)? as usize;
        let mut arena: Vec<u128> = vec![0; arena_bytes.div_ceil(16)];
        let arena_ptr = arena.as_mut_ptr() as *mut u8;
        let out_ptrs: Vec<*mut u8> = outputs.iter_mut().map(|t| t.data.as_mut_ptr()).collect();
        let ptr = |r: &BufferRef| -> Result<*mut u8, RuntimeError> {
            Ok(match r {
                BufferRef::Input(i) => inputs[*i as usize].data.as_ptr() as *mut u8,
                BufferRef::Output(i) => out_ptrs[*i as usize],
                BufferRef::Weight(i) => self.artifact.weight_bytes(*i as usize).ok_or_else(|| RuntimeError::Plan(format!("weight {i}")))?.as_ptr() as *mut u8,
                BufferRef::Scratch { offset, bytes } => {
                    let (o, b) = (eval(offset)? as usize, eval(bytes)? as usize);
                    if o + b > arena_bytes {
                        return Err(RuntimeError::Plan(format!("scratch [{o}, {}) outside the arena of {arena_bytes} bytes", o + b)));
                    }
                    // SAFETY: in bounds of the arena, checked above.
                    unsafe { arena_ptr.add(o) }
                }
            })
        };
        for step in &m.plan {
            match step {
                Step::Launch { kernel, buffers, range } => {
                    let bufs: Vec<*mut u8> = buffers.iter().map(ptr).collect::<Result<_, _>>()?;
                    let f = self.kernels[*kernel as usize];
                    self.launch(f, &bufs, &syms, eval(range)?);
                }
                Step::Copy { from, to, bytes } => {
                    let (src, dst, n) = (ptr(from)?, ptr(to)?, eval(bytes)? as usize);
                    // SAFETY: the plan sizes both buffers for `bytes`; they never overlap.
                    unsafe { std::ptr::copy_nonoverlapping(src, dst, n) };
                }
            }
        }
        drop(arena);
        Ok(outputs)
    }

    /// Calls a kernel over `0..range`, split into chunks across the pool.
    fn launch(&self, f: usize, bufs: &[*mut u8], syms: &[i64], range: i64) {
        // SAFETY: `f` is a kernel of this model's code with the shared calling convention.
        let kernel: KernelFn = unsafe { std::mem::transmute::<usize, KernelFn>(f) };
        let (bp, sp) = (bufs.as_ptr() as usize, syms.as_ptr() as usize);
        let chunks = (self.threads as i64).min(range).max(1);
        if chunks == 1 {
            unsafe { kernel(bp as *const *mut u8, sp as *const i64, 0, range) };
            return;
        }
        self.pool.scope(|s| {
            for c in 0..chunks {
                let (start, end) = (range * c / chunks, range * (c + 1) / chunks);
                // SAFETY: chunks cover disjoint iterations of the parallel loop, which write
                // disjoint elements; `bufs` and `syms` outlive the scope.
                s.spawn(move |_| unsafe { kernel(bp as *const *mut u8, sp as *const i64, start, end) });
            }
        });
    }
}
