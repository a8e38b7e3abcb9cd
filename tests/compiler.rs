//! The compiler's end-to-end tests, as one test binary with one module per file: built with
//! the `llvm` feature, every test binary links LLVM and MLIR (about 200 MB each), so they
//! share one. `stages`: snapshots of every stage; `compiled`: compiled fixtures against
//! PyTorch; `gpu`: the GPU targets, checked without a GPU; `emulated`: the GPU code run on
//! emulated GPUs against PyTorch.

mod compiled;
mod emulated;
mod gpu;
mod stages;
