//! # kiln-codegen: from graphs to machine code
//!
//! Owns the [`kernel`] IR — target-neutral loop nests over buffers, produced from the graph by
//! fusion, printable and executable by a plain evaluator — and will own the `Target` trait with
//! its registry and the backends (Cranelift; MLIR→LLVM for x86-64, NVPTX and AMDGPU). It never
//! opens a device or runs generated code.

pub mod compile;
pub mod cranelift_backend;
pub mod cranelift;
pub mod kernel;
#[cfg(feature = "llvm")]
pub mod llvm;
pub mod plan;
pub mod target;

/// A code-generation target known to kiln, whether or not this build can compile for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub available: bool,
}

/// Every target kiln plans to support, with whether this build implements it.
pub fn targets() -> &'static [TargetInfo] {
    &[
        TargetInfo {
            name: "interp",
            description: "reference interpreter (no code generation)",
            available: true,
        },
        TargetInfo {
            name: "x86_64",
            description: "x86-64 CPUs (Cranelift or LLVM)",
            available: false,
        },
        TargetInfo {
            name: "sm_80",
            description: "NVIDIA Ampere (PTX)",
            available: false,
        },
        TargetInfo {
            name: "sm_90",
            description: "NVIDIA Hopper (PTX)",
            available: false,
        },
        TargetInfo {
            name: "gfx942",
            description: "AMD CDNA3 (AMDGPU code object)",
            available: false,
        },
    ]
}
