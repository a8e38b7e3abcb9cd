//! # The kernel IR
//!
//! The target-neutral description of the code kiln generates: each [`Kernel`] is a loop nest
//! over flat buffers with scalar expressions ([`ir`]), produced from the graph by fusion
//! ([`lower`]), printed as text for snapshots ([`text`]) and executable by a plain evaluator
//! ([`eval`]) that tests lowering without any backend.
//!
//! Calling convention shared by every backend: a kernel receives its buffers (base addresses,
//! in [`Kernel::buffers`] order), the values of the graph's symbols, and a range
//! `[start, end)` of its first loop, which is parallel; running all ranges that cover the
//! loop's extent, in any order or concurrently, computes the kernel.

mod attention;
pub mod builder;
pub mod eval;
pub mod gpu_attention;
mod gpu_levels;
pub mod gpu_mma;
pub mod gpu_schedule;
pub mod gpu_tiles;
mod hoist;
pub mod ir;
pub mod lower;
pub mod math;
pub mod simplify;
pub mod text;
mod window;

pub use ir::{Access, BufferParam, Expr, GpuForm, Kernel, Mma, MmaLayout, LoopKind, ScalarType, Stmt, VarId};
pub use lower::{lower_graph, BufferKind, Launch, LowerError, PlanBuffer, Program};
