#!/usr/bin/env bash
# The whole test suite, as the README's test command runs it on a fresh machine.
#
# kiln needs no system packages yet: a Rust toolchain (cargo) is enough. When the LLVM/MLIR
# backends land, this script installs LLVM 19 and MLIR 19 here when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; install Rust from https://rustup.rs and re-run" >&2
    exit 1
fi

# Snapshots are compared, never rewritten, in the test command (review changes with
# `cargo insta review` or `INSTA_UPDATE=always cargo test` by hand).
export INSTA_UPDATE=no

cargo build --workspace --locked

# Run the tests, then close with one total over every test binary (cargo prints one
# "test result" line per binary, the last of which is often an empty doc-test run).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
echo
awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i ~ /^passed/) p += $(i - 1); if ($i ~ /^failed/) f += $(i - 1) } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
