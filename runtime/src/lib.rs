//! # kiln-runtime: loading and running compiled artifacts
//!
//! Owns the `.kiln` artifact format (the [`manifest`] and the [`artifact`] container with its
//! sections and checksums), loading it, the [`device::Device`] trait (CPU now; CUDA and HIP
//! later) and executing a launch plan ([`exec`]); the C API over it is the `kiln-capi` crate.
//! It must never depend on the compiler crates or on LLVM, so that a deployment links only
//! this crate.

pub mod artifact;
pub mod device;
pub mod exec;
pub mod loader;
pub mod manifest;
mod resident;
pub mod tensor;

pub use artifact::{describe, write_artifact, Artifact, ArtifactError, ArtifactWriter, CodeObjectData, WeightData};
pub use device::{CpuDevice, Device, DeviceError};
pub use manifest::Manifest;

/// The artifact format version this runtime reads and the compiler writes.
pub const ARTIFACT_FORMAT_VERSION: u32 = 1;
