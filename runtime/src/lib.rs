//! # kiln-runtime: loading and running compiled artifacts
//!
//! Will own the `.kiln` artifact format, loading it (mmap), the `Device` trait (CPU, CUDA, HIP),
//! executing a launch plan and the C API (see the CPU compilation issue). It must never depend
//! on the compiler crates or on LLVM, so that a deployment links only this crate. Nothing is
//! implemented yet: until artifacts exist, `kiln run` executes models with the reference
//! interpreter of `kiln-ir`.

/// The artifact format version this runtime will read (none is written yet).
pub const ARTIFACT_FORMAT_VERSION: u32 = 0;
