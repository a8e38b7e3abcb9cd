#!/usr/bin/env bash
# Runs on the GPU machine, from the folder scripts/gpu_bundle.sh made: every fixture on the
# GPU against PyTorch's outputs (the same artifacts also run on the CPU), then kiln's
# latency on the GPU and PyTorch's (eager, torch.compile, torch.compile with CUDA graphs) on
# the same fixtures, one table. Writes everything to $OUT (or ./out).
set -uo pipefail
cd "$(dirname "$0")"
out=${OUT:-out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
status=0
for f in fixtures/*.kiln; do
    m=$(basename "$f" .kiln)
    for set in in in2; do
        [ -e "fixtures/$m.t215.$set.npz" ] || continue
        ref="fixtures/$m.t215.${set/in/out}.npz"
        for device in cuda cpu; do
            if ./kiln run "$f" --device "$device" --inputs "fixtures/$m.t215.$set.npz" --check "$ref" \
                > "$out/$m.$set.$device.txt" 2>&1; then
                echo "$m ($set) on $device: passed"
            else
                echo "$m ($set) on $device: FAILED: $(tail -n 3 "$out/$m.$set.$device.txt" | tr '\n' ' ')"
                status=1
            fi
        done
    done
done | tee "$out/check.txt"
for f in fixtures/*.kiln; do
    m=$(basename "$f" .kiln)
    ./kiln bench "$f" --device cuda --inputs "fixtures/$m.t215.in.npz" --iters 200 --json 2>/dev/null
done | tee "$out/kiln-bench.jsonl"
python3 gpu_torch_bench.py fixtures | tee "$out/torch-bench.txt"
exit $status
