//! # kiln-passes: graph-to-graph transformations
//!
//! Owns the passes that rewrite kiln's graph IR. Each pass is a free function from a graph
//! (and, where it changes weights, a [`kiln_ir::WeightStore`]) to a new graph; each one's doc says what
//! it does and does not do. [`optimize`] runs them in order:
//!
//! 1. [`canonicalize()`]: bit-exact local simplifications (no-op casts, reshapes, permutes,
//!    expands and slices; `x * 1`, `x / 1`, `x - 0`; `neg (neg x)`; `where c, a, a`).
//! 2. [`fold_constants()`]: computes constant subgraphs (weights, `full`, `iota`) at compile time
//!    into new weights; this is also the *layout* pass (a `permute` of a weight becomes a
//!    weight stored transposed).
//! 3. [`cse()`]: merges equal nodes.
//! 4. [`optimize_egraph`] (unless turned off): equality saturation with `egg` — rule tables,
//!    a roofline cost model per target, DAG-aware extraction (see [`egraph`]).
//! 5. [`canonicalize()`] again, for what folding, merging and the e-graph exposed, and
//!    [`fold_constants()`] again when the e-graph ran (it may move work onto weights).
//! 6. [`explicit_conv_padding`]: a convolution's zero padding becomes a `pad` of its input, so
//!    convolution kernels read their interiors without bounds checks.
//! 7. [`dead_code_elimination`]: drops unused nodes and weights.
//!
//! Every pass requires a verified graph (it checks, returning [`PassError::InvalidInput`]),
//! keeps value names and output names, and is deterministic: the same input gives the same
//! bytes from [`kiln_ir::text::print`]. Fusion into kernels and memory planning live in
//! `kiln-codegen`, which works on the lowered program. The crate does not emit code
//! (`kiln-codegen`) or read archives (`kiln-frontend`).

pub mod canonicalize;
pub mod conv_padding;
pub mod cse;
pub mod dce;
pub mod egraph;
pub mod error;
pub mod fold;
pub mod pipeline;
mod rebuild;

pub use canonicalize::canonicalize;
pub use conv_padding::explicit_conv_padding;
pub use cse::cse;
pub use dce::dead_code_elimination;
pub use egraph::{optimize_egraph, EgraphOptions, EgraphReport};
pub use error::PassError;
pub use fold::{fold_constants, fold_constants_with, FoldLimits};
pub use pipeline::{optimize, Options, PassReport, PassStat};
