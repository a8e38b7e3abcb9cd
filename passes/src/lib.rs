//! # kiln-passes: graph-to-graph transformations
//!
//! Owns the passes that rewrite kiln's graph IR: today only dead-code elimination, the first
//! member of the pipeline; canonicalization, constant folding, CSE, the e-graph optimizer,
//! fusion into kernels and memory planning come with the CPU compilation issue. Every pass
//! keeps the graph verifiable. It does not emit code (`kiln-codegen`) or read archives.

pub mod dce;

pub use dce::dead_code_elimination;
