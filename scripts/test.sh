#!/usr/bin/env bash
# The whole test suite, as the README's test command runs it on a fresh machine.
#
# Installs what is missing: LLVM 19 and MLIR 19 (Debian packages, for the `llvm` backend).
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
