//! The GPU targets of the MLIR→LLVM backend: NVIDIA (NVPTX, PTX text for sm_80, sm_90 and
//! sm_90a) and AMD (AMDGPU, HSA code objects for gfx90a, gfx942 and gfx1100).
//!
//! Kernels are built as `gpu.func`s in a `gpu.module` ([`mlir::KernelAbi::Gpu`](super::mlir)):
//! one GPU thread per iteration of the kernel's parallel loop, so an elementwise kernel's
//! consecutive threads touch consecutive elements (coalesced). The pipeline lowers the module
//! with `convert-gpu-to-nvvm` or `convert-gpu-to-rocdl` (thread and block ids become NVVM /
//! ROCDL intrinsics, kernels get the `ptx_kernel` / `amdgpu_kernel` calling convention), then
//! `convert-math-to-llvm` for the math ops those conversions leave alone.
//!
//! Both conversions turn `floor`, `ceil`, `sqrt`, `fabs` and float `%` into calls of the
//! vendors' device libraries (`__nv_floorf` from libdevice, `__ocml_floor_f32` from ROCm's
//! OCML), which kiln does not need or link: [`device_function`] gives each such declaration a
//! body of its own (the LLVM intrinsic, or `frem`), inlined by LLVM's optimizer. kiln's
//! transcendentals are its own polynomial expansions already, so no other library call
//! appears; any that did would be an error at link time ([`link_hsaco`]) or load time (PTX).
//!
//! The AMD object is linked into a shared HSA code object by `ld.lld` (LLVM's linker, found
//! as [`linker`] says); `llvm-readobj --notes` on the result shows each kernel's metadata.

use super::mlir::KernelAbi;
use crate::kernel::MmaLayout;
use super::{LlvmTarget, ObjectFormat};
use inkwell::targets::{InitializationConfig, Target};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The NVIDIA pipeline: thread ids to NVVM, everything else to the LLVM dialect.
const NVVM_PIPELINE: &str = "builtin.module(gpu.module(arith-expand,convert-scf-to-cf,convert-gpu-to-nvvm{index-bitwidth=64},convert-math-to-llvm),reconcile-unrealized-casts)";

const fn nvidia(name: &'static str, pipeline: &'static str, matrix: MmaLayout) -> LlvmTarget {
    LlvmTarget {
        name,
        pipeline,
        triple: "nvptx64-nvidia-cuda",
        cpu: name,
        // No features: LLVM picks the oldest PTX ISA version the architecture allows
        // (7.0 for sm_80, 7.8 for sm_90, 8.0 for sm_90a), which the most drivers accept.
        features: "",
        cpu_features: &[],
        initialize: || Target::initialize_nvptx(&InitializationConfig::default()),
        abi: KernelAbi::Gpu { private_space: 0, matrix: Some(matrix) },
        format: ObjectFormat::Ptx,
    }
}

const fn amd(name: &'static str, pipeline: &'static str, matrix: Option<MmaLayout>) -> LlvmTarget {
    LlvmTarget {
        name,
        pipeline,
        triple: "amdgcn-amd-amdhsa",
        cpu: name,
        features: "",
        cpu_features: &[],
        initialize: || Target::initialize_amd_gpu(&InitializationConfig::default()),
        // AMDGPU's stack (`alloca`) lives in address space 5.
        abi: KernelAbi::Gpu { private_space: 5, matrix },
        format: ObjectFormat::Hsaco,
    }
}

/// NVIDIA Ampere (A100).
pub const SM_80: LlvmTarget = nvidia("sm_80", NVVM_PIPELINE, MmaLayout::Nvidia16x8);
/// NVIDIA Hopper (H100, H200), and the GPUs after it (the driver compiles sm_90 PTX for them).
pub const SM_90: LlvmTarget = nvidia("sm_90", NVVM_PIPELINE, MmaLayout::Nvidia16x8);
/// NVIDIA Hopper's own instructions (`wgmma`): PTX for sm_90a runs on compute capability 9.0
/// only (H100, H200), never on later GPUs, so an artifact carries it beside sm_90.
pub const SM_90A: LlvmTarget = nvidia("sm_90a", NVVM_PIPELINE, MmaLayout::Hopper64x32);
/// AMD CDNA 2 (MI200): matrix cores (MFMA).
pub const GFX90A: LlvmTarget = amd("gfx90a", "builtin.module(gpu.module(arith-expand,convert-scf-to-cf,convert-gpu-to-rocdl{chipset=gfx90a index-bitwidth=64},convert-math-to-llvm),reconcile-unrealized-casts)", Some(MmaLayout::Cdna16x16));
/// AMD CDNA 3 (MI300): matrix cores (MFMA).
pub const GFX942: LlvmTarget = amd("gfx942", "builtin.module(gpu.module(arith-expand,convert-scf-to-cf,convert-gpu-to-rocdl{chipset=gfx942 index-bitwidth=64},convert-math-to-llvm),reconcile-unrealized-casts)", Some(MmaLayout::Cdna16x16));
/// AMD RDNA 3 (Radeon RX 7900, Radeon PRO W7900): WMMA on wavefronts of 32 (LLVM's default
/// for gfx11).
pub const GFX1100: LlvmTarget = amd("gfx1100", "builtin.module(gpu.module(arith-expand,convert-scf-to-cf,convert-gpu-to-rocdl{chipset=gfx1100 index-bitwidth=64},convert-math-to-llvm),reconcile-unrealized-casts)", Some(MmaLayout::Rdna16x16));

/// The operations kiln defines for the device-library functions the GPU conversions call:
/// (name fragment, LLVM dialect operation, operand count).
const DEVICE_FUNCTIONS: &[(&str, &str, usize)] = &[
    ("floor", "llvm.intr.floor", 1),
    ("ceil", "llvm.intr.ceil", 1),
    ("sqrt", "llvm.intr.sqrt", 1),
    ("fabs", "llvm.intr.fabs", 1),
    ("fmod", "llvm.frem", 2),
];

/// The MLIR definition kiln gives the device-library function `name` (`__nv_floorf`,
/// `__nv_floor`, `__ocml_floor_f32`, `__ocml_floor_f64`, ...), or `None` when `name` is not one
/// of them. Internal linkage: after inlining nothing of it is left in the code object.
pub fn device_function(name: &str) -> Option<String> {
    let (stem, ty) = if let Some(rest) = name.strip_prefix("__nv_") {
        match rest.strip_suffix('f') {
            Some(stem) if DEVICE_FUNCTIONS.iter().any(|(n, ..)| *n == stem) => (stem, "f32"),
            _ => (rest, "f64"),
        }
    } else if let Some(rest) = name.strip_prefix("__ocml_") {
        let (stem, bits) = rest.rsplit_once("_f")?;
        (
            stem,
            if bits == "32" {
                "f32"
            } else if bits == "64" {
                "f64"
            } else {
                return None;
            },
        )
    } else {
        return None;
    };
    let &(_, op, arity) = DEVICE_FUNCTIONS.iter().find(|(n, ..)| *n == stem)?;
    let params: Vec<String> = (0..arity).map(|i| format!("%a{i}: {ty}")).collect();
    let args: Vec<String> = (0..arity).map(|i| format!("%a{i}")).collect();
    let body = if arity == 1 {
        format!("%r = {op}(%a0) : ({ty}) -> {ty}")
    } else {
        format!("%r = {op} {} : {ty}", args.join(", "))
    };
    Some(format!(
        "llvm.func internal @{name}({}) -> {ty} attributes {{always_inline}} {{\n  {body}\n  llvm.return %r : {ty}\n}}",
        params.join(", ")
    ))
}

/// The `ld.lld` kiln links AMD code objects with: `$KILN_LD_LLD`, else `ld.lld-19` or `ld.lld`
/// on the `PATH`, else LLVM 19's own (`/usr/lib/llvm-19/bin/ld.lld`).
pub fn linker() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_LD_LLD") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["ld.lld-19", "ld.lld"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let debian = PathBuf::from("/usr/lib/llvm-19/bin/ld.lld");
    debian.is_file().then_some(debian)
}

/// Links an AMDGPU relocatable object into a shared HSA code object with `ld.lld -shared`.
pub fn link_hsaco(object: &[u8]) -> Result<Vec<u8>, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let lld = linker().ok_or(
        "AMD GPU code objects are linked with `ld.lld` (LLVM's linker), which was not found: install it \
         (Debian: `apt-get install lld-19`) or name it with KILN_LD_LLD",
    )?;
    let stem = format!("kiln-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let dir = std::env::temp_dir();
    let (input, output) = (dir.join(format!("{stem}.o")), dir.join(format!("{stem}.hsaco")));
    let result = (|| {
        std::fs::write(&input, object).map_err(|e| format!("cannot write {}: {e}", input.display()))?;
        let run = Command::new(&lld)
            .arg("-shared")
            .arg("--no-undefined")
            .arg("-o")
            .arg(&output)
            .arg(&input)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", lld.display()))?;
        if !run.status.success() {
            return Err(format!("{} failed: {}", lld.display(), String::from_utf8_lossy(&run.stderr).trim()));
        }
        std::fs::read(&output).map_err(|e| format!("cannot read {}: {e}", output.display()))
    })();
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each GPU target's kernels are scheduled for the layout `kiln run --simulate` uses.
    #[test]
    fn every_gpu_target_has_its_schedules_matrix_layout() {
        for t in super::super::TARGETS.iter().filter(|t| matches!(t.abi, KernelAbi::Gpu { .. })) {
            let KernelAbi::Gpu { matrix, .. } = t.abi else { unreachable!() };
            assert_eq!(matrix, crate::kernel::gpu_schedule::matrix_layout(t.name), "{}", t.name);
        }
        assert_eq!(crate::kernel::gpu_schedule::matrix_layout("x86_64"), None);
    }

    #[test]
    fn device_functions_are_named_as_the_conversions_call_them() {
        for (name, ty, op) in [
            ("__nv_floorf", "f32", "llvm.intr.floor"),
            ("__nv_floor", "f64", "llvm.intr.floor"),
            ("__nv_fmodf", "f32", "llvm.frem"),
            ("__nv_sqrt", "f64", "llvm.intr.sqrt"),
            ("__ocml_ceil_f32", "f32", "llvm.intr.ceil"),
            ("__ocml_fabs_f64", "f64", "llvm.intr.fabs"),
            ("__ocml_fmod_f64", "f64", "llvm.frem"),
        ] {
            let f = device_function(name).unwrap_or_else(|| panic!("{name}"));
            assert!(f.contains(&format!("@{name}(")) && f.contains(op) && f.contains(&format!("-> {ty}")), "{f}");
        }
        for name in ["__nv_expf", "__ocml_exp_f32", "__ocml_floor_f16", "floorf", "__nv_"] {
            assert_eq!(device_function(name), None, "{name}");
        }
    }
}
