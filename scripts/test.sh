#!/usr/bin/env bash
# The whole test suite, as the README's test command runs it on a fresh machine.
#
# Installs what is missing: LLVM 19 and MLIR 19 (Debian packages, for the `llvm` backend and
# its GPU targets; `ld.lld` links AMD code objects) and NVIDIA's `ptxas` (a PyPI wheel, to
# assemble the PTX kiln emits; no GPU or CUDA installation needed).
# Then builds kiln without optional features (the default build needs no system packages),
# runs every test with the `llvm` feature, and runs the code generator's unit tests once more
# without it (the "not built with this feature" path).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; install Rust from https://rustup.rs and re-run" >&2
    exit 1
fi

LLVM_PREFIX=/usr/lib/llvm-19
LLVM_PACKAGES="llvm-19-dev libmlir-19-dev mlir-19-tools libclang-19-dev clang-19 lld-19 libpolly-19-dev libzstd-dev"
if [ ! -e "$LLVM_PREFIX/lib/libMLIR.so" ] || [ ! -x "$LLVM_PREFIX/bin/llvm-config" ] || [ ! -x "$LLVM_PREFIX/bin/mlir-tblgen" ]; then
    echo "installing LLVM 19 and MLIR 19 ($LLVM_PACKAGES)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "error: LLVM 19 / MLIR 19 are missing and this user cannot install packages; run as root or install: $LLVM_PACKAGES" >&2
            exit 1
        fi
    fi
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $LLVM_PACKAGES
fi
export MLIR_SYS_190_PREFIX=$LLVM_PREFIX TABLEGEN_190_PREFIX=$LLVM_PREFIX LLVM_SYS_191_PREFIX=$LLVM_PREFIX

# NVIDIA's PTX assembler, to check every PTX kiln emits without a GPU: from the
# `nvidia-cuda-nvcc-cu12` wheel, in a virtual environment outside the repository.
if [ -z "${KILN_PTXAS:-}" ]; then
    if command -v ptxas >/dev/null 2>&1; then
        KILN_PTXAS=$(command -v ptxas)
    else
        tools=${KILN_TOOLS_DIR:-$HOME/.cache/kiln-tools}
        KILN_PTXAS=$(find "$tools" -path '*nvidia/cuda_nvcc/bin/ptxas' -type f 2>/dev/null | head -n 1 || true)
        if [ -z "$KILN_PTXAS" ]; then
            echo "installing ptxas (pip: nvidia-cuda-nvcc-cu12) into $tools"
            python3 -m venv "$tools"
            "$tools/bin/pip" install --quiet nvidia-cuda-nvcc-cu12
            KILN_PTXAS=$(find "$tools" -path '*nvidia/cuda_nvcc/bin/ptxas' -type f | head -n 1)
        fi
    fi
fi
if [ ! -x "$KILN_PTXAS" ]; then
    echo "error: ptxas was not found or installed; set KILN_PTXAS to NVIDIA's ptxas" >&2
    exit 1
fi
export KILN_PTXAS KILN_LLVM_READOBJ=$LLVM_PREFIX/bin/llvm-readobj KILN_REQUIRE_GPU_TOOLS=1

# Incremental compilation only helps rebuilds, and its caches cost gigabytes of disk.
export CARGO_INCREMENTAL=0

# Snapshots are compared, never rewritten, in the test command (review changes with
# `cargo insta review` or `INSTA_UPDATE=always cargo test` by hand).
export INSTA_UPDATE=no

cargo build --workspace --locked

# Run the tests, then close with one total over every test binary (cargo prints one
# "test result" line per binary, the last of which is often an empty doc-test run).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --features llvm 2>&1 | tee "$log" || status=$?
cargo test --locked -p kiln-codegen --lib 2>&1 | tee -a "$log" || status=$?
echo
awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i ~ /^passed/) p += $(i - 1); if ($i ~ /^failed/) f += $(i - 1) } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
