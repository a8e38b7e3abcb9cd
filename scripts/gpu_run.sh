#!/usr/bin/env bash
# Runs on the GPU machine, from the folder scripts/gpu_bundle.sh made. Writes its logs under
# ./results and, when $OUT is set, packs them into $OUT/results.tgz (a device run brings back
# at most 8 files). Each step has a time limit; the whole run aims to end within
# $KILN_GPU_SECONDS (default 480) seconds, by giving PyTorch's compiled modes what is left.
#   1. every fixture on the GPU against PyTorch's outputs (and the same artifact on the CPU),
#      and the f16 models that carry their outputs (tensor cores);
#   2. every model's `.exact.kiln` (no FMAs) on the GPU against its CPU code, bit for bit;
#   3. every exact artifact step by step on the GPU and the CPU (`--compare-steps`: the first
#      kernel whose results differ), and compute-sanitizer memcheck on two fixtures;
#   4. kiln's GPU latency (`kiln bench --device cuda`, with and without CUDA graphs;
#      `--profile` for the full-size models);
#   5. PyTorch's: eager, torch.compile, torch.compile with CUDA graphs (gpu_torch_bench.py).
set -uo pipefail
cd "$(dirname "$0")"
began=$SECONDS
budget=${KILN_GPU_SECONDS:-480}
res=results
rm -rf "$res" && mkdir -p "$res/logs"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$res/gpu.txt"
for gz in large/*.gz; do
    [ -e "$gz" ] && gunzip -k -f "$gz"
done
# check NAME ARGS...: runs `kiln run ARGS...` (at most 120 s), logs to logs/NAME.txt, reports.
check() {
    local name=$1
    shift
    if timeout 120 ./kiln run "$@" > "$res/logs/$name.txt" 2>&1; then
        echo "$name: passed"
    else
        echo "$name: FAILED: $(tail -n 3 "$res/logs/$name.txt" | tr '\n' ' ' | cut -c1-400)"
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
            ./kiln run "$f" --device cpu --inputs "$inputs" --output "$res/cpu.npz" > /dev/null 2>&1
            check "$m.$set.cuda.vs-cpu-exact" "$f" --device cuda --inputs "$inputs" --check "$res/cpu.npz" --rtol 0 --atol 0
        done
    done
    # Models that carry PyTorch's outputs (the f16 one: tensor cores, f16 tolerance).
    for ref in large/*.out.npz; do
        [ -e "$ref" ] || continue
        m=$(basename "$ref" .out.npz)
        for device in cuda cpu; do
            check "$m.$device.vs-pytorch" "large/$m.kiln" --device "$device" --inputs "large/$m.in.npz" --check "$ref" \
                --rtol 1e-2 --atol 1e-2
        done
        # Hopper's mma.sync instead of wgmma, and the same tiles without matrix instructions,
        # where the bundle has them.
        for twin in sm_90 no-matrix; do
            [ -e "large/$m.$twin.kiln" ] || continue
            check "$m.$twin.cuda.vs-pytorch" "large/$m.$twin.kiln" --device cuda --inputs "large/$m.in.npz" \
                --check "$ref" --rtol 1e-2 --atol 1e-2
        done
    done
    for f in large/*.exact.kiln; do
        [ -e "$f" ] || continue
        m=$(basename "$f" .exact.kiln)
        timeout 150 ./kiln run "$f" --device cpu --inputs "large/$m.in.npz" --output "$res/cpu.npz" > "$res/logs/$m.cpu.txt" 2>&1
        check "$m.cuda.vs-cpu-exact" "$f" --device cuda --inputs "large/$m.in.npz" --check "$res/cpu.npz" --rtol 0 --atol 0
    done
    rm -f "$res/cpu.npz"
} 2>&1 | tee "$res/check.txt"
echo "checks took $((SECONDS - began)) s"
# Where the GPU code parts ways with the CPU code: every exact artifact step by step (the first
# differing step's kernel is the one to look at).
for f in fixtures/*.exact.kiln large/*.exact.kiln; do
    [ -e "$f" ] || continue
    m=$(basename "$f" .exact.kiln)
    inputs=fixtures/$m.t215.in.npz
    [ -e "$inputs" ] || inputs=large/${m%%.*}.in.npz
    echo "== $m"
    timeout 150 ./kiln run "$f" --device cuda --compare-steps cpu --inputs "$inputs" 2>&1 | tail -n 25
done > "$res/compare-steps.txt" 2>&1
grep -E "^== |steps of the plan match|steps differ" "$res/compare-steps.txt"
if command -v compute-sanitizer > /dev/null; then
    for m in gpt resblock; do
        timeout 90 compute-sanitizer --tool memcheck --print-limit 20 ./kiln run "fixtures/$m.kiln" --device cuda \
            --inputs "fixtures/$m.t215.in.npz" > "$res/logs/$m.memcheck.txt" 2>&1
        echo "memcheck $m: exit $? — $(grep -E 'ERROR SUMMARY' "$res/logs/$m.memcheck.txt" | head -1)"
    done 2>&1 | tee "$res/memcheck.txt"
fi
for f in fixtures/*.kiln large/*.kiln; do
    case "$f" in *.exact.kiln) continue ;; esac
    [ -e "$f" ] || continue
    m=$(basename "$f" .kiln)
    inputs=fixtures/$m.t215.in.npz
    [ -e "$inputs" ] || inputs=large/${m%%.*}.in.npz
    # With the plan replayed as a CUDA graph (the default), then with every launch issued.
    timeout 60 ./kiln bench "$f" --device cuda --inputs "$inputs" --iters 50 --json 2> "$res/logs/$m.bench.err"
    timeout 60 ./kiln bench "$f" --device cuda --inputs "$inputs" --iters 50 --json --no-graphs \
        2> "$res/logs/$m.bench-no-graphs.err"
done | tee "$res/kiln-bench.jsonl"
# Time per kernel (for the achieved bandwidth of the largest elementwise kernels).
for f in large/*.kiln fixtures/gpt.kiln; do
    case "$f" in *.exact.kiln) continue ;; esac
    [ -e "$f" ] || continue
    m=$(basename "$f" .kiln)
    inputs=fixtures/$m.t215.in.npz
    [ -e "$inputs" ] || inputs=large/${m%%.*}.in.npz
    timeout 60 ./kiln bench "$f" --device cuda --inputs "$inputs" --iters 20 --profile > "$res/$m.profile.txt" 2>&1
    ./kiln inspect "$f" > "$res/logs/$m.inspect.txt" 2>&1
done
echo "kiln benchmarks done at $((SECONDS - began)) s"
left=$((budget - (SECONDS - began) - 60))
PYTHONUNBUFFERED=1 timeout $((left > 30 ? left + 45 : 75)) python3 gpu_torch_bench.py large fixtures --budget "$left" 2>&1 \
    | grep -v Warning | tee "$res/torch-bench.txt"
echo "done at $((SECONDS - began)) s"
if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/results.tgz" "$res"
fi
! grep -q FAILED "$res/check.txt"
