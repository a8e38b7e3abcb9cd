#!/usr/bin/env bash
# Prepares `gpu-bundle/` (git-ignored) for checking and timing kiln on an NVIDIA GPU machine
# that has PyTorch and a driver but no Rust toolchain or LLVM. Run it here, carry
# `gpu-bundle` to the GPU machine, run `bash gpu-bundle/gpu_run.sh` there (its results come
# back as `$OUT/results.tgz`).
#
# The bundle holds a `kiln` runner built without the llvm feature (it needs neither LLVM nor
# CUDA to start; it loads libcuda.so.1 at run time), and every model compiled for x86_64,
# sm_80 and sm_90 twice: as usual (`NAME.kiln`: checked against PyTorch and timed), and with
# `--no-fp-contract` (`NAME.exact.kiln`: no FMAs, so its GPU code must give the CPU code's
# outputs bit for bit: same operations in the same order, IEEE rounding on both). Models:
# the fixtures (with their inputs, PyTorch outputs and archives), and the full-size
# benchmark models when they were exported, with compressible weights, by
#   python examples/export_large.py --out /tmp/kiln-bench --only resnet50_b32 --compressible
#   python examples/export_large.py --out /tmp/kiln-bench --only gpt2_small_b4 --compressible
#   python examples/export_large.py --out /tmp/kiln-bench --only gpt2_small_b4_f16 --compressible
#   python examples/export_large.py --out /tmp/kiln-bench --only resnet50_b32_f16 --compressible
#   python examples/export_large.py --out /tmp/kiln-bench --only gpt2_tiny_f16
#   python examples/export_large.py --out /tmp/kiln-bench --only gpt2_tiny_bf16
# (carried gzipped: a few MB instead of 100 and 500). f16 models get no `.exact.kiln` (tensor
# cores sum in their own order) but are compiled for sm_90a as well (`NAME.kiln`: an H100 or
# H200 runs Hopper's `wgmma`) and without it (`NAME.sm_90.kiln`: `mma.sync`), to check and time
# both; gpt2_tiny_f16, gpt2_tiny_bf16 and the `half` fixture carry PyTorch's
# outputs, to check the tensor cores' f16 and bf16 products and convolutions against. (resnet18_tiny_f16's
# random weights do not compress: 43 MB would not fit the 64 MiB a device run carries.)
#
# Needs the llvm build prerequisites (see scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export MLIR_SYS_190_PREFIX=/usr/lib/llvm-19 TABLEGEN_190_PREFIX=/usr/lib/llvm-19 LLVM_SYS_191_PREFIX=/usr/lib/llvm-19
out=gpu-bundle
rm -rf "$out" && mkdir -p "$out/fixtures" "$out/large"
cargo build --release --locked --features llvm
compiler=target/release/kiln
cargo build --release --locked --bin kiln --target-dir target/runner
cp target/runner/release/kiln "$out/kiln"
# compile_both SOURCE OUT_STEM: OUT_STEM.kiln and OUT_STEM.exact.kiln
compile_both() {
    "$compiler" compile "$1" --target x86_64,sm_80,sm_90 -o "$2.kiln" 2>/dev/null
    "$compiler" compile "$1" --target x86_64,sm_80,sm_90 --no-fp-contract -o "$2.exact.kiln" 2>/dev/null
}
for model in mlp resblock encoder gpt mobile dynbatch views dynseq; do
    src=tests/fixtures/$model.t215.aten.pt2
    compile_both "$src" "$out/fixtures/$model"
    cp tests/fixtures/$model.t215.in*.npz tests/fixtures/$model.t215.out*.npz "$src" "$out/fixtures/"
    # The exports of older PyTorch versions too: gpu_torch_bench.py times the one its
    # PyTorch can load.
    cp tests/fixtures/$model.t2*.aten.pt2 tests/fixtures/$model.t2*.in.npz "$out/fixtures/"
done
large=${KILN_BENCH_MODELS:-/tmp/kiln-bench}
for model in resnet50_b32 gpt2_small_b4 gpt2_small_b4_f16 resnet50_b32_f16 gpt2_tiny_f16 gpt2_tiny_bf16; do
    if [ ! -e "$large/$model.pt2" ]; then
        echo "skipping $model: $large/$model.pt2 not found (see examples/export_large.py)"
        continue
    fi
    case "$model" in
        *_f16 | *_bf16)
            "$compiler" compile "$large/$model.pt2" --target x86_64,sm_80,sm_90,sm_90a -o "$out/large/$model.kiln" 2>/dev/null
            "$compiler" compile "$large/$model.pt2" --target x86_64,sm_80,sm_90 -o "$out/large/$model.sm_90.kiln" 2>/dev/null
            ;;
        *) compile_both "$large/$model.pt2" "$out/large/$model" ;;
    esac
    gzip -9 -f "$out/large/$model".*kiln
    gzip -9 -c "$large/$model.pt2" > "$out/large/$model.pt2.gz"
    gzip -9 -c "$large/$model.in.npz" > "$out/large/$model.in.npz.gz"
    if [[ "$model" == *_tiny_* ]]; then
        cp "$large/$model.out.npz" "$out/large/"
    fi
done
# The f16 fixture, checked like the tiny f16 models (PyTorch's outputs at f16 tolerance; no
# exact artifact): its convolutions and linear layer run on tensor cores — Hopper's `wgmma`
# in `half.kiln`, `mma.sync` in `half.sm_90.kiln` — and, in `half.no-matrix.kiln`, the same
# tiles without them (`--no-matrix-instructions`), which tells a wrong fragment layout or
# matrix descriptor from anything else.
# The same for gpt_half (the gpt fixture's model in f16: linear layers and attention's
# products per batch and head on tensor cores).
for model in half gpt_half; do
    src=tests/fixtures/$model.t215.aten.pt2
    "$compiler" compile "$src" --target x86_64,sm_80,sm_90,sm_90a -o "$out/large/$model.kiln" 2>/dev/null
    "$compiler" compile "$src" --target x86_64,sm_80,sm_90 -o "$out/large/$model.sm_90.kiln" 2>/dev/null
    "$compiler" compile "$src" --target x86_64,sm_80,sm_90,sm_90a --no-matrix-instructions \
        -o "$out/large/$model.no-matrix.kiln" 2>/dev/null
    cp tests/fixtures/$model.t215.in.npz "$out/large/$model.in.npz"
    cp tests/fixtures/$model.t215.out.npz "$out/large/$model.out.npz"
done
cp scripts/gpu_run.sh scripts/gpu_torch_bench.py examples/export_large.py "$out/"
du -sh "$out"
