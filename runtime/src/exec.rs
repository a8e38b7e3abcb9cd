//! # Running a loaded artifact
//!
//! Owns [`Model`]: [`Model::load`] opens the artifact, picks the code object for the device's
//! target, loads it and looks up every kernel, and makes the weights available on the device
//! once; [`Model::run`] binds the symbols from the input shapes, checks the inputs, and
//! executes the launch plan. Every access to memory and code goes through the [`Device`]
//! trait (the CPU by default, [`Model::load_on`] for another device), so the executor neither
//! dereferences device memory nor calls kernels.
//!
//! The plan is data: each `Launch` runs one kernel over `0..range` of its outermost parallel
//! loop (the device splits it: threads on the CPU); `Copy` steps move bytes on the device.
//! A model is `Send + Sync`: every `run` gets its own scratch arena and output tensors, while
//! the code and the weights (on the CPU, read in place from the memory-mapped file) are shared.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::artifact::{Artifact, ArtifactError};
use crate::device::{
    CodeModule, CpuDevice, Device, DeviceAllocation, DeviceError, DevicePtr, KernelHandle, LaunchHints,
};
use crate::loader::LoadError;
use crate::manifest::{BufferRef, Manifest, Signature, SizeExpr, Step};
use crate::resident::{self, Resident, RunBuffers};
use crate::tensor::{byte_len, HostTensor, TensorRef};

/// The host target name of this machine's code objects.
pub use crate::device::cpu::HOST_TARGET;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("loading the {target} code of the artifact: {source}")]
    Load { target: String, source: LoadError },
    #[error("loading the {target} code of the artifact: {source}")]
    DeviceLoad { target: String, source: DeviceError },
    #[error("no code of the artifact loads on this device: {0}")]
    NothingLoads(String),
    #[error("the artifact has no code for this machine ({target}); it was compiled for: {available}. Recompile with `--target {wanted}`")]
    NoCodeForHost { target: String, available: String, wanted: String },
    #[error("the artifact's {target} code needs CPU features this machine lacks: {missing}; recompile with `--backend cranelift`, whose code runs on every {target} CPU")]
    CpuFeatures { target: String, missing: String },
    #[error("kernel `{0}` is missing from the code object")]
    MissingKernel(String),
    #[error("expected {expected} inputs, got {got}")]
    InputCount { expected: usize, got: usize },
    #[error("input `{name}`: {reason}")]
    Input { name: String, reason: String },
    #[error("the plan is invalid: {0}")]
    Plan(String),
    #[error(transparent)]
    Device(DeviceError),
}

/// A compiled model ready to run. Fields drop in order: the code before the weights, both
/// before the artifact they may borrow from, the device last.
pub struct Model {
    /// Buffers (and a recorded graph) kept on a GPU between runs; dropped first.
    resident: Mutex<Option<Resident>>,
    /// Whether runs on a GPU may record and replay a graph ([`Model::with_graphs`]).
    graphs: bool,
    kernels: Vec<KernelHandle>,
    _code: Box<dyn CodeModule>,
    /// The whole weight section as the device sees it.
    weights: DeviceAllocation,
    artifact: Artifact,
    device: Arc<dyn Device>,
    /// The target whose code was loaded (`sm_90a` on an H100 when the artifact has it).
    code_target: String,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>()
};

/// Options of [`Model::load_with`].
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Worker threads for parallel loops (0: all cores).
    pub threads: usize,
}

impl Model {
    /// Loads the artifact at `path` for the CPU, with one worker thread per core.
    pub fn load(path: &Path) -> Result<Model, RuntimeError> {
        Model::load_with(path, &LoadOptions::default())
    }

    /// Loads the artifact at `path` for the CPU.
    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Model, RuntimeError> {
        let device = CpuDevice::new(opts.threads).map_err(RuntimeError::Device)?;
        Model::load_on(path, Arc::new(device))
    }

    /// Loads the artifact at `path` for `device` (which several models may share).
    pub fn load_on(path: &Path, device: Arc<dyn Device>) -> Result<Model, RuntimeError> {
        let artifact = Artifact::open(path)?;
        // The device's targets the artifact has code for, in the device's order; the first
        // that loads is used (a HIP GPU refuses code for another ISA).
        let candidates: Vec<String> =
            device.code_targets().into_iter().filter(|t| artifact.code_object(t).is_some()).collect();
        if candidates.is_empty() {
            return Err(RuntimeError::NoCodeForHost {
                target: device.target().to_string(),
                available: artifact.targets().collect::<Vec<_>>().join(", "),
                wanted: device.code_targets().first().cloned().unwrap_or_else(|| device.target().to_string()),
            });
        }
        // Why each candidate was refused (a CPU without the features, a driver refusing PTX
        // of a newer ISA): the next is tried.
        let mut refused = Vec::new();
        let mut loaded = None;
        let mut code_target = String::new();
        for target in candidates {
            if let Some(spec) = artifact.manifest().code_objects.iter().find(|c| c.target == target) {
                let missing: Vec<&str> = spec.cpu_features.iter().map(String::as_str).filter(|f| !cpu_has(f)).collect();
                if !missing.is_empty() {
                    refused.push(RuntimeError::CpuFeatures { target, missing: missing.join(", ") });
                    continue;
                }
            }
            let bytes = artifact.code_object(&target).expect("a candidate has code");
            match device.load_code(bytes) {
                Ok(code) => {
                    loaded = Some(code);
                    code_target = target;
                    break;
                }
                Err(DeviceError::Code(source)) => refused.push(RuntimeError::Load { target, source }),
                Err(source) => refused.push(RuntimeError::DeviceLoad { target, source }),
            }
        }
        let Some(code) = loaded else {
            return Err(match refused.len() {
                1 => refused.remove(0),
                _ => RuntimeError::NothingLoads(refused.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")),
            });
        };
        let kernels = artifact
            .manifest()
            .kernels
            .iter()
            .map(|k| code.kernel(&k.symbol).ok_or_else(|| RuntimeError::MissingKernel(k.symbol.clone())))
            .collect::<Result<_, _>>()?;
        let weights = DeviceAllocation::of_host(&device, artifact.weights_section()).map_err(RuntimeError::Device)?;
        Ok(Model {
            resident: Mutex::new(None),
            graphs: true,
            kernels,
            _code: code,
            weights,
            artifact,
            device,
            code_target,
        })
    }

    /// The target whose code the device runs: the first of the device's targets the artifact
    /// has code for and the device loaded.
    pub fn code_target(&self) -> &str {
        &self.code_target
    }

    /// Whether runs on a GPU record the plan into a graph and replay it (CUDA/HIP graphs; on
    /// by default): the second run with given input sizes records it, later ones replay it.
    /// Off, every run issues each launch.
    pub fn with_graphs(mut self, on: bool) -> Model {
        self.graphs = on;
        self
    }

    /// Whether the runs so far replay a recorded graph, or why not; `None` when graphs do not
    /// apply (the CPU) or fewer than two runs have had the same sizes.
    pub fn graph_note(&self) -> Option<String> {
        let resident = self.resident.lock().ok()?;
        resident.as_ref()?.graph_note().map(str::to_string)
    }

    pub fn manifest(&self) -> &Manifest {
        self.artifact.manifest()
    }

    pub fn signature(&self) -> &Signature {
        &self.manifest().signature
    }

    /// The device the model runs on.
    pub fn device(&self) -> &dyn Device {
        &*self.device
    }

    /// Binds the symbols from the input shapes and checks every input.
    fn bind(&self, inputs: &[TensorRef]) -> Result<Vec<i64>, RuntimeError> {
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
            for (d, &n) in spec.shape.iter().zip(t.shape) {
                if let [(m, 1)] = d.terms.as_slice() {
                    if let [s] = m.as_slice() {
                        let slot = &mut syms[*s as usize];
                        if slot.is_some_and(|v| v != n as i64) {
                            return Err(bad(format!(
                                "size {n} conflicts with another input's {}",
                                sig.symbols[*s as usize].name
                            )));
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
                return Err(RuntimeError::Input {
                    name: s.name.clone(),
                    reason: format!("size {v} is outside the exported range {range}"),
                });
            }
        }
        for (spec, t) in sig.inputs.iter().zip(inputs) {
            let want: Option<Vec<usize>> = spec.shape.iter().map(|d| d.eval(&syms).map(|v| v as usize)).collect();
            if want.as_deref() != Some(t.shape) {
                let dims: Vec<String> = spec.shape.iter().map(|d| d.to_text(&sig.symbols)).collect();
                let want = want.map_or_else(String::new, |w| format!(" = {w:?}"));
                return Err(RuntimeError::Input {
                    name: spec.name.clone(),
                    reason: format!("shape {:?}, expected [{}]{want}", t.shape, dims.join(", ")),
                });
            }
            if t.byte_len() != Some(t.data.len()) {
                return Err(RuntimeError::Input {
                    name: spec.name.clone(),
                    reason: "byte count does not match the shape".into(),
                });
            }
        }
        Ok(syms)
    }

    /// For each step of the plan, the bytes of memory it touches with these inputs: the sizes
    /// of a launch's buffers added up, twice the length of a copy. A lower bound of the traffic
    /// when every buffer is read or written once; `kiln bench --profile` divides it by the
    /// step's time to show the bandwidth a kernel achieves.
    pub fn step_bytes(&self, inputs: &[TensorRef]) -> Result<Vec<u64>, RuntimeError> {
        let syms = self.bind(inputs)?;
        let m = self.manifest();
        let eval = |e: &SizeExpr| e.eval(&syms).filter(|&v| v >= 0).map(|v| v as u64);
        let size = |r: &BufferRef| -> Option<u64> {
            match r {
                BufferRef::Input(i) => inputs.get(*i as usize).map(|t| t.data.len() as u64),
                BufferRef::Output(i) => {
                    let spec = m.signature.outputs.get(*i as usize)?;
                    let shape: Option<Vec<usize>> = spec.shape.iter().map(|d| eval(d).map(|v| v as usize)).collect();
                    byte_len(spec.dtype, &shape?).map(|b| b as u64)
                }
                BufferRef::Weight(i) => m.weights.get(*i as usize).map(|w| w.bytes),
                BufferRef::Scratch { bytes, .. } => eval(bytes),
            }
        };
        m.plan
            .iter()
            .map(|step| match step {
                Step::Launch { buffers, .. } => buffers.iter().map(size).sum::<Option<u64>>(),
                Step::Copy { bytes, .. } => eval(bytes).map(|b| 2 * b),
            })
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| RuntimeError::Plan("a buffer size does not evaluate".into()))
    }

    /// Runs the model on one set of inputs.
    pub fn run(&self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>, RuntimeError> {
        let refs: Vec<TensorRef> = inputs.iter().map(HostTensor::view).collect();
        self.run_refs(&refs)
    }

    /// Runs the model on inputs whose bytes are borrowed (not copied on the CPU).
    pub fn run_refs(&self, inputs: &[TensorRef]) -> Result<Vec<HostTensor>, RuntimeError> {
        self.run_impl(inputs, Observe::Nothing)
    }

    /// Runs the model like [`Model::run_refs`], waiting for the device after every step of the
    /// plan and passing `each_step` the step's index and what the buffers it used (other than
    /// inputs and weights) hold after it. For finding the first kernel whose results differ
    /// between two devices (`kiln run --compare-steps`): slow, every buffer is copied back.
    pub fn run_traced(
        &self,
        inputs: &[TensorRef],
        each_step: &mut dyn FnMut(usize, StepBuffers),
    ) -> Result<Vec<HostTensor>, RuntimeError> {
        self.run_impl(inputs, Observe::Buffers(each_step))
    }

    /// Runs the model like [`Model::run_refs`], waiting for the device after every step of the
    /// plan and recording each step's wall time into `step_times` (one entry per
    /// [`Manifest::plan`] step, in order). For profiling: the waits make the run slower.
    pub fn run_profiled(
        &self,
        inputs: &[TensorRef],
        step_times: &mut Vec<Duration>,
    ) -> Result<Vec<HostTensor>, RuntimeError> {
        step_times.clear();
        self.run_impl(inputs, Observe::Times(step_times))
    }

    fn run_impl(&self, inputs: &[TensorRef], mut observe: Observe) -> Result<Vec<HostTensor>, RuntimeError> {
        let syms = self.bind(inputs)?;
        let m = self.manifest();
        let dev = &self.device;
        let eval = |e: &SizeExpr| {
            e.eval(&syms).filter(|&v| v >= 0).ok_or_else(|| RuntimeError::Plan("size does not evaluate".into()))
        };
        let mut outputs = Vec::new();
        for spec in &m.signature.outputs {
            let shape: Vec<usize> = spec.shape.iter().map(|d| eval(d).map(|v| v as usize)).collect::<Result<_, _>>()?;
            if byte_len(spec.dtype, &shape).is_none() {
                return Err(RuntimeError::Plan(format!(
                    "output `{}` of shape {shape:?} does not fit in memory",
                    spec.name
                )));
            }
            outputs.push(HostTensor::zeros(spec.dtype, shape));
        }
        let arena_bytes = eval(&m.arena_bytes)? as usize;
        // Devices with their own memory (GPUs) keep the run's buffers between runs, and replay
        // a recorded graph of the plan once the same sizes come again.
        if self.weights.is_device_memory() {
            if let Ok(mut resident) = self.resident.try_lock() {
                let input_bytes: Vec<usize> = inputs.iter().map(|t| t.data.len()).collect();
                let output_bytes: Vec<usize> = outputs.iter().map(|t| t.data.len()).collect();
                let state = resident::buffers_for(&mut resident, dev, &syms, arena_bytes, &input_bytes, &output_bytes)
                    .map_err(RuntimeError::Device)?;
                for (t, a) in inputs.iter().zip(&state.buffers.inputs) {
                    // SAFETY: the allocation has the input's size.
                    unsafe { dev.copy_to_device(a.ptr(), t.data) }.map_err(RuntimeError::Device)?;
                }
                let issue = |b: &RunBuffers, observe: &mut Observe| {
                    let view = Buffers { arena: &b.arena, inputs: &b.inputs, outputs: &b.outputs };
                    self.run_plan(&syms, &view, arena_bytes, observe)
                };
                // Observed runs wait after every step: no graph.
                let ran = if !matches!(observe, Observe::Nothing) || !self.graphs {
                    issue(&state.buffers, &mut observe)
                } else {
                    state.run_recorded(dev, &syms, |b| issue(b, &mut Observe::Nothing))
                };
                let synced = dev.synchronize().map_err(RuntimeError::Device);
                ran?;
                synced?;
                for (t, a) in outputs.iter_mut().zip(&state.buffers.outputs) {
                    // SAFETY: the allocation has the output's size.
                    unsafe { dev.copy_to_host(&mut t.data, a.ptr()) }.map_err(RuntimeError::Device)?;
                }
                return Ok(outputs);
            }
        }
        let arena = DeviceAllocation::new(dev, arena_bytes).map_err(RuntimeError::Device)?;
        let ins: Vec<DeviceAllocation> = inputs
            .iter()
            .map(|t| DeviceAllocation::of_host(dev, t.data))
            .collect::<Result<_, _>>()
            .map_err(RuntimeError::Device)?;
        let outs: Vec<DeviceAllocation> = outputs
            .iter_mut()
            .map(|t| DeviceAllocation::for_host_output(dev, &mut t.data))
            .collect::<Result<_, _>>()
            .map_err(RuntimeError::Device)?;
        let buffers = Buffers { arena: &arena, inputs: &ins, outputs: &outs };
        // Wait for the device even when a step failed: the memory below is freed on return.
        let ran = self.run_plan(&syms, &buffers, arena_bytes, &mut observe);
        let synced = dev.synchronize().map_err(RuntimeError::Device);
        ran?;
        synced?;
        for (t, a) in outputs.iter_mut().zip(&outs) {
            if a.is_device_memory() {
                // SAFETY: the allocation has the output's size.
                unsafe { dev.copy_to_host(&mut t.data, a.ptr()) }.map_err(RuntimeError::Device)?;
            }
        }
        drop((arena, ins, outs));
        Ok(outputs)
    }

    /// Issues every step of the plan on the device (without waiting for it, unless observed:
    /// then after each step, recording its wall time or its buffers).
    fn run_plan(
        &self,
        syms: &[i64],
        b: &Buffers,
        arena_bytes: usize,
        observe: &mut Observe,
    ) -> Result<(), RuntimeError> {
        let m = self.manifest();
        let dev = &self.device;
        let eval = |e: &SizeExpr| {
            e.eval(syms).filter(|&v| v >= 0).ok_or_else(|| RuntimeError::Plan("size does not evaluate".into()))
        };
        let ptr = |r: &BufferRef| -> Result<DevicePtr, RuntimeError> {
            let missing = || RuntimeError::Plan(format!("{r:?} is not a buffer of this run"));
            Ok(match r {
                BufferRef::Input(i) => b.inputs.get(*i as usize).ok_or_else(missing)?.ptr(),
                BufferRef::Output(i) => b.outputs.get(*i as usize).ok_or_else(missing)?.ptr(),
                BufferRef::Weight(i) => {
                    let w = m.weights.get(*i as usize).ok_or_else(|| RuntimeError::Plan(format!("weight {i}")))?;
                    self.weights.ptr().offset(w.offset as usize)
                }
                BufferRef::Scratch { offset, bytes } => {
                    let (o, n) = (eval(offset)? as usize, eval(bytes)? as usize);
                    if o.checked_add(n).is_none_or(|end| end > arena_bytes) {
                        return Err(RuntimeError::Plan(format!(
                            "scratch [{o}, {o} + {n}) outside the arena of {arena_bytes} bytes"
                        )));
                    }
                    b.arena.ptr().offset(o)
                }
            })
        };
        for (index, step) in m.plan.iter().enumerate() {
            let started = Instant::now();
            match step {
                Step::Launch { kernel, buffers, range } => {
                    let bufs: Vec<DevicePtr> = buffers.iter().map(ptr).collect::<Result<_, _>>()?;
                    let range = eval(range)?;
                    let spec = &m.kernels[*kernel as usize];
                    let work = spec.work_per_item.saturating_mul(range.max(0) as u64);
                    let threads_per_item = match &spec.gpu_threads_per_item {
                        Some(n) => u64::try_from(eval(n)?).unwrap_or(1),
                        None => 1,
                    };
                    let gpu_blocks = match &spec.gpu_tiles {
                        Some(t) => Some(
                            t.blocks(range, syms)
                                .ok_or_else(|| RuntimeError::Plan(format!("the tiles of kernel `{}`", spec.name)))?,
                        ),
                        None => None,
                    };
                    let hints = LaunchHints { work, threads_per_item, gpu_blocks };
                    // SAFETY: the kernel belongs to this model's loaded code; the manifest
                    // (validated when the artifact was opened) gives it its buffers in
                    // order, sized by the memory plan for these symbols.
                    unsafe { dev.launch(self.kernels[*kernel as usize], &bufs, syms, 0..range, hints) }
                        .map_err(RuntimeError::Device)?;
                }
                Step::Copy { from, to, bytes } => {
                    let (src, dst, n) = (ptr(from)?, ptr(to)?, eval(bytes)? as usize);
                    // SAFETY: the plan sizes both buffers for `bytes`; they never overlap.
                    unsafe { dev.copy_on_device(dst, src, n) }.map_err(RuntimeError::Device)?;
                }
            }
            match observe {
                Observe::Nothing => {}
                Observe::Times(times) => {
                    dev.synchronize().map_err(RuntimeError::Device)?;
                    times.push(started.elapsed());
                }
                Observe::Buffers(each_step) => {
                    dev.synchronize().map_err(RuntimeError::Device)?;
                    let used: Vec<&BufferRef> = match step {
                        Step::Launch { buffers, .. } => buffers.iter().collect(),
                        Step::Copy { from, to, .. } => vec![from, to],
                    };
                    let mut held = Vec::new();
                    for (position, r) in used.into_iter().enumerate() {
                        let bytes = match r {
                            BufferRef::Output(i) => b.outputs.get(*i as usize).map_or(0, DeviceAllocation::bytes),
                            BufferRef::Scratch { bytes, .. } => eval(bytes)? as usize,
                            BufferRef::Input(_) | BufferRef::Weight(_) => continue,
                        };
                        let mut host = vec![0u8; bytes];
                        // SAFETY: `ptr(r)` addresses `bytes` bytes of this run's memory.
                        unsafe { dev.copy_to_host(&mut host, ptr(r)?) }.map_err(RuntimeError::Device)?;
                        held.push((position, host));
                    }
                    each_step(index, held);
                }
            }
        }
        Ok(())
    }
}

/// What the buffers one step of the plan used hold after it, other than inputs and weights:
/// (the buffer's position among the step's buffers, its bytes). See [`Model::run_traced`].
pub type StepBuffers = Vec<(usize, Vec<u8>)>;

/// What a run reports after each step of the plan (the device waits after each step).
enum Observe<'a> {
    Nothing,
    Times(&'a mut Vec<Duration>),
    Buffers(&'a mut dyn FnMut(usize, StepBuffers)),
}

/// The memory one run uses besides the weights.
struct Buffers<'a> {
    arena: &'a DeviceAllocation,
    inputs: &'a [DeviceAllocation],
    outputs: &'a [DeviceAllocation],
}

/// Whether this CPU has feature `name` (names as in `CodeObjectSpec::cpu_features`); unknown
/// names count as missing.
fn cpu_has(name: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match name {
            "sse4.1" => std::arch::is_x86_feature_detected!("sse4.1"),
            "sse4.2" => std::arch::is_x86_feature_detected!("sse4.2"),
            "popcnt" => std::arch::is_x86_feature_detected!("popcnt"),
            "avx" => std::arch::is_x86_feature_detected!("avx"),
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        false
    }
}

#[cfg(test)]
mod cpu_feature_tests {
    use super::cpu_has;

    #[test]
    fn unknown_features_count_as_missing() {
        assert!(!cpu_has("warp-drive"));
        #[cfg(target_arch = "x86_64")]
        assert!(cpu_has("sse4.1"), "every x86-64 machine kiln runs on has SSE4.1");
    }
}
