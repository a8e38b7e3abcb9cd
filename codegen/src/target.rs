//! The `Backend` trait and the registry of backends, looked up by name (like Cranelift's
//! `isa::lookup`). A backend turns kernels (kernel IR, transcendentals already expanded) into
//! one code object for one target. "Not built with this feature" and "does not support this
//! target" are different errors.

use crate::kernel::Kernel;

/// A code object for one target and the listings a user may ask to see.
#[derive(Clone, Debug)]
pub struct CodeObject {
    pub target: String,
    /// `elf-relocatable` for CPU targets.
    pub format: String,
    pub bytes: Vec<u8>,
    /// The exported symbol of each kernel, in kernel order.
    pub symbols: Vec<String>,
    /// CPU features the code needs beyond the target's baseline (checked by the runtime).
    pub cpu_features: Vec<String>,
    /// Texts for `--emit`, by stage name (`clif`, `mlir`, `llvm`, `asm`): the stages this
    /// backend has.
    pub listings: Vec<(&'static str, Listing)>,
}

/// The text of one `--emit` stage from a backend.
#[derive(Clone, Debug)]
pub enum Listing {
    /// One text per kernel, in kernel order.
    PerKernel(Vec<String>),
    /// One text for the whole code object.
    Whole(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("unknown backend `{name}`; available: {available}")]
    UnknownBackend { name: String, available: String },
    #[error("backend `{name}` is not part of this build of kiln: {how}")]
    NotBuilt { name: String, how: String },
    #[error("backend `{backend}` does not support target `{target}`; it supports: {supported}")]
    UnsupportedTarget { backend: String, target: String, supported: String },
    #[error("backend `{backend}` failed on kernel `{kernel}`: {reason}")]
    Kernel { backend: String, kernel: String, reason: String },
    #[error("backend `{backend}`: {reason}")]
    Backend { backend: String, reason: String },
    /// A stage of a backend's lowering failed on one kernel; `module` is the input of that
    /// stage for that kernel (printed by `kiln compile --emit mlir`).
    #[error("backend `{backend}` failed on kernel `{kernel}` in {stage}: {reason}")]
    Stage { backend: String, kernel: String, stage: &'static str, reason: String, module: String },
}

/// Choices a backend's compile honours.
#[derive(Clone, Copy, Debug)]
pub struct CodegenOptions {
    /// Also produce the listings that cost extra work (assembly, LLVM IR).
    pub listings: bool,
    /// Float multiplies and adds may be fused into FMAs (backends whose targets have them;
    /// results then differ from the interpreter's in the last bits). Off: every operation
    /// rounds as the interpreter's does.
    pub fp_contract: bool,
    /// GPU targets run f16/bf16 tensor-core tiles on their matrix instructions (tensor cores,
    /// MFMA, WMMA). Off: each thread computes its share of every instruction itself — the
    /// same tiles and values, without the matrix units.
    pub matrix_instructions: bool,
}

impl Default for CodegenOptions {
    fn default() -> Self {
        CodegenOptions { listings: false, fp_contract: true, matrix_instructions: true }
    }
}

/// A code generator.
pub trait Backend: Sync {
    fn name(&self) -> &'static str;
    /// Target names this backend can compile for.
    fn targets(&self) -> &'static [&'static str];
    fn compile(&self, kernels: &[Kernel], target: &str, opts: &CodegenOptions) -> Result<CodeObject, CodegenError>;
}

/// Backends compiled into this build, by name.
pub fn backends() -> Vec<&'static dyn Backend> {
    #[allow(unused_mut)]
    let mut all: Vec<&'static dyn Backend> = vec![&crate::cranelift_backend::CraneliftBackend];
    #[cfg(feature = "llvm")]
    all.push(&crate::llvm::LlvmBackend);
    all
}

/// Backends kiln knows about but that need a cargo feature, with how to get them.
const OPTIONAL: &[(&str, &str)] = &[("llvm", "rebuild with `--features llvm` (needs LLVM 19 and MLIR 19)")];

/// The exported symbol of each kernel: `kiln_<name>_<n>` with the name's non-alphanumeric
/// characters replaced by `_` and the smallest `n` that keeps symbols unique. Every backend
/// names kernels this way, so one manifest serves every target of an artifact.
pub fn kernel_symbols(kernels: &[Kernel]) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    kernels
        .iter()
        .map(|k| {
            let clean: String = k.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
            let sym = (0..).map(|i| format!("kiln_{clean}_{i}")).find(|s| !taken.contains(s)).expect("a free suffix");
            taken.insert(sym.clone());
            sym
        })
        .collect()
}

/// Finds a backend by name.
pub fn lookup(name: &str) -> Result<&'static dyn Backend, CodegenError> {
    if let Some(b) = backends().into_iter().find(|b| b.name() == name) {
        return Ok(b);
    }
    if let Some((_, how)) = OPTIONAL.iter().find(|(n, _)| *n == name) {
        return Err(CodegenError::NotBuilt { name: name.to_string(), how: how.to_string() });
    }
    let available: Vec<&str> = backends().iter().map(|b| b.name()).collect();
    Err(CodegenError::UnknownBackend { name: name.to_string(), available: available.join(", ") })
}

/// The backend used when none is named.
pub const DEFAULT_BACKEND: &str = "cranelift";

/// GPU targets (NVIDIA PTX, then AMD code objects). Only the `llvm` backend compiles them.
pub const GPU_TARGETS: &[&str] = &["sm_80", "sm_90", "sm_90a", "gfx90a", "gfx942", "gfx1100"];

/// The backend that compiles `target` when `requested` is the backend asked for: `requested`
/// when it supports the target, else, for a GPU target, the `llvm` backend (the only one with
/// GPU targets). So `--target x86_64,sm_90` compiles the CPU code with the requested backend
/// (Cranelift by default) and the GPU code with LLVM.
pub fn backend_for(requested: &dyn Backend, target: &str) -> Result<&'static dyn Backend, CodegenError> {
    if requested.targets().contains(&target) {
        return lookup(requested.name());
    }
    if GPU_TARGETS.contains(&target) {
        return lookup("llvm").map_err(|e| match e {
            CodegenError::NotBuilt { name, how } => {
                CodegenError::NotBuilt { name, how: format!("GPU target `{target}` needs it; {how}") }
            }
            e => e,
        });
    }
    check_target(requested, target)?;
    lookup(requested.name())
}

/// Checks that `backend` supports `target`.
pub fn check_target(backend: &dyn Backend, target: &str) -> Result<(), CodegenError> {
    if backend.targets().contains(&target) {
        Ok(())
    } else {
        Err(CodegenError::UnsupportedTarget {
            backend: backend.name().into(),
            target: target.into(),
            supported: backend.targets().join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The e-graph's cost model prices every target by its own machine (a target missing
    /// from its table would be priced as an x86-64 core).
    #[test]
    fn every_target_has_a_machine_in_the_cost_model() {
        let machines = kiln_passes::egraph::cost::MACHINES;
        for t in GPU_TARGETS.iter().chain(&["x86_64", "aarch64"]) {
            assert!(machines.iter().any(|(name, _)| name == t), "{t} has no machine");
        }
    }

    #[cfg(not(feature = "llvm"))]
    #[test]
    fn llvm_without_the_feature_says_how_to_get_it() {
        let e = lookup("llvm").err().expect("llvm is not built by default");
        assert!(matches!(e, CodegenError::NotBuilt { .. }), "{e}");
        assert!(e.to_string().contains("--features llvm"), "{e}");
    }

    #[cfg(feature = "llvm")]
    #[test]
    fn llvm_with_the_feature_is_registered() {
        assert_eq!(lookup("llvm").unwrap().name(), "llvm");
    }

    #[cfg(feature = "llvm")]
    #[test]
    fn gpu_targets_go_to_llvm_and_cpu_targets_to_the_requested_backend() {
        let cranelift = lookup("cranelift").unwrap();
        for t in GPU_TARGETS {
            assert_eq!(backend_for(cranelift, t).unwrap().name(), "llvm", "{t}");
            assert!(lookup("llvm").unwrap().targets().contains(t), "{t}");
        }
        assert_eq!(backend_for(cranelift, "x86_64").unwrap().name(), "cranelift");
        assert!(matches!(backend_for(cranelift, "sm_75"), Err(CodegenError::UnsupportedTarget { .. })));
    }

    #[cfg(not(feature = "llvm"))]
    #[test]
    fn gpu_targets_without_llvm_say_how_to_get_them() {
        let e = backend_for(lookup("cranelift").unwrap(), "sm_90").err().expect("llvm is not built");
        assert!(matches!(e, CodegenError::NotBuilt { .. }), "{e}");
        assert!(e.to_string().contains("sm_90") && e.to_string().contains("--features llvm"), "{e}");
    }

    #[test]
    fn unknown_backends_list_the_available_ones() {
        let e = lookup("tvm").err().expect("no such backend");
        assert!(e.to_string().contains("cranelift"), "{e}");
    }

    #[test]
    fn kernel_symbols_are_unique_and_clean() {
        let k = |name: &str| Kernel { name: name.into(), buffers: vec![], vars: vec![], body: vec![], fused: vec![], gpu_form: None };
        let syms = kernel_symbols(&[k("a.b"), k("a_b"), k("c")]);
        assert_eq!(syms, ["kiln_a_b_0", "kiln_a_b_1", "kiln_c_0"]);
    }
}
