#!/usr/bin/env bash
# Prepares `gpu-bundle/` (git-ignored) for checking and timing kiln on an NVIDIA GPU machine
# that has PyTorch and a driver but no Rust toolchain or LLVM: a `kiln` runner built without
# the llvm feature (it needs neither LLVM nor CUDA to start; it loads libcuda.so.1 at run
# time), every fixture compiled into one artifact for x86_64, sm_80 and sm_90, the fixtures'
# inputs, PyTorch outputs and archives, and the scripts that run there (scripts/gpu_run.sh,
# scripts/gpu_torch_bench.py). Run it here, carry `gpu-bundle` to the GPU machine, and run
# `bash gpu-bundle/gpu_run.sh` there.
#
# Needs the llvm build prerequisites (see scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export MLIR_SYS_190_PREFIX=/usr/lib/llvm-19 TABLEGEN_190_PREFIX=/usr/lib/llvm-19 LLVM_SYS_191_PREFIX=/usr/lib/llvm-19
out=gpu-bundle
rm -rf "$out" && mkdir -p "$out/fixtures"
cargo build --release --locked --features llvm
cp target/release/kiln "$out/kiln-compiler"  # for --emit listings here; needs LLVM, not carried
cargo build --release --locked --bin kiln --target-dir target/runner
cp target/runner/release/kiln "$out/kiln"
for model in mlp resblock encoder gpt mobile dynbatch views dynseq; do
    src=tests/fixtures/$model.t215.aten.pt2
    "$out/kiln-compiler" compile "$src" --target x86_64,sm_80,sm_90 -o "$out/fixtures/$model.kiln" 2>/dev/null
    cp tests/fixtures/$model.t215.in*.npz tests/fixtures/$model.t215.out*.npz "$src" "$out/fixtures/"
done
rm "$out/kiln-compiler"
cp scripts/gpu_run.sh scripts/gpu_torch_bench.py "$out/"
du -sh "$out"
