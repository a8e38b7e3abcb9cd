//! The code generator's integration tests, as one test binary with one module per file: built
//! with the `llvm` feature, every test binary links LLVM and MLIR (about 200 MB each), so
//! they share one.

mod cranelift_object;
mod kernel_eval;
mod math;
mod native_vs_eval;
