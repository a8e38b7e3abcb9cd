//! # kiln-runtime: loading and running compiled artifacts
//!
//! Owns the `.kiln` artifact format (the [`manifest`] and the [`artifact`] container with its
//! sections and checksums), loading it, the `Device` trait (CPU now; CUDA and HIP later),
//! executing a launch plan and the C API. It must never depend on the compiler crates or on
//! LLVM, so that a deployment links only this crate.

pub mod artifact;
pub mod exec;
pub mod loader;
pub mod manifest;
pub mod tensor;

pub use artifact::{describe, write_artifact, Artifact, ArtifactError, ArtifactWriter, CodeObjectData, WeightData};
pub use manifest::Manifest;

/// The artifact format version this runtime reads and the compiler writes.
pub const ARTIFACT_FORMAT_VERSION: u32 = 1;
