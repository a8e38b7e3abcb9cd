#!/usr/bin/env bash
# Runs on the GPU machine, from the folder scripts/gpu_bundle.sh made; writes to $OUT (./out).
#   1. every fixture on the GPU against PyTorch's outputs (and the same artifact on the CPU);
#   2. every model's `.exact.kiln` (no FMAs) on the GPU against its CPU code, bit for bit;
#   3. kiln's GPU latency (`kiln bench --device cuda`) and PyTorch's (eager, torch.compile,
#      torch.compile with CUDA graphs) on the same models.
set -uo pipefail
cd "$(dirname "$0")"
out=${OUT:-out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
for gz in large/*.gz; do
    [ -e "$gz" ] && gunzip -k -f "$gz"
done
failed=0
# check NAME ARGS...: runs `kiln run ARGS...`, logs to $out/NAME.txt, reports.
check() {
    local name=$1
    shift
    if ./kiln run "$@" > "$out/$name.txt" 2>&1; then
        echo "$name: passed"
    else
        echo "$name: FAILED: $(tail -n 3 "$out/$name.txt" | tr '\n' ' ')"
        failed=1
    fi
}
{
    for f in fixtures/*.exact.kiln; do
        m=$(basename "$f" .exact.kiln)
        for set in in in2; do
            inputs=fixtures/$m.t215.$set.npz
            [ -e "$inputs" ] || continue
            ref=fixtures/$m.t215.${set/in/out}.npz
            for device in cuda cpu; do
                check "$m.$set.$device.vs-pytorch" "fixtures/$m.kiln" --device "$device" --inputs "$inputs" --check "$ref"
            done
            ./kiln run "$f" --device cpu --inputs "$inputs" --output "$out/$m.$set.cpu.npz" > /dev/null 2>&1
            check "$m.$set.cuda.vs-cpu-exact" "$f" --device cuda --inputs "$inputs" --check "$out/$m.$set.cpu.npz" --rtol 0 --atol 0
        done
    done
    for f in large/*.exact.kiln; do
        [ -e "$f" ] || continue
        m=$(basename "$f" .exact.kiln)
        ./kiln run "$f" --device cpu --inputs "large/$m.in.npz" --output "$out/$m.cpu.npz" > "$out/$m.cpu.txt" 2>&1
        check "$m.cuda.vs-cpu-exact" "$f" --device cuda --inputs "large/$m.in.npz" --check "$out/$m.cpu.npz" --rtol 0 --atol 0
        rm -f "$out/$m.cpu.npz"
    done
} | tee "$out/check.txt"
grep -q FAILED "$out/check.txt" && failed=1
for f in fixtures/*.kiln large/*.kiln; do
    case "$f" in *.exact.kiln) continue ;; esac
    [ -e "$f" ] || continue
    m=$(basename "$f" .kiln)
    inputs=fixtures/$m.t215.in.npz
    [ -e "$inputs" ] || inputs=large/$m.in.npz
    ./kiln bench "$f" --device cuda --inputs "$inputs" --iters 50 --json 2>/dev/null
done | tee "$out/kiln-bench.jsonl"
# Time per kernel (for the achieved bandwidth of the largest elementwise kernels).
for f in large/*.kiln; do
    case "$f" in *.exact.kiln) continue ;; esac
    [ -e "$f" ] || continue
    m=$(basename "$f" .kiln)
    ./kiln bench "$f" --device cuda --inputs "large/$m.in.npz" --iters 20 --profile > "$out/$m.profile.txt" 2>&1
    ./kiln inspect "$f" > "$out/$m.inspect.txt" 2>&1
done
python3 gpu_torch_bench.py fixtures large | tee "$out/torch-bench.txt"
exit $failed
