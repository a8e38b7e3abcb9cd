//! # kiln-codegen: from graphs to machine code
//!
//! Owns the [`kernel`] IR — target-neutral loop nests over buffers, produced from the graph by
//! fusion, printable and executable by a plain evaluator — the [`target::Backend`] trait with
//! its registry, and the backends (Cranelift; MLIR→LLVM for x86-64, NVPTX and AMDGPU, with
//! the `llvm` feature). It never opens a device or runs generated code.

pub mod compile;
pub mod cranelift_backend;
pub mod cranelift;
pub mod kernel;
#[cfg(feature = "llvm")]
pub mod llvm;
pub mod plan;
pub mod target;
