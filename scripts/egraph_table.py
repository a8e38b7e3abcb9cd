#!/usr/bin/env python3
"""The e-graph optimizer's effect, as the markdown table of docs/egraph.md.

For each MODEL.pt2 given (with MODEL.in.npz beside it, or tests/fixtures/NAME.t215.in.npz for
a fixture), compiles it twice with `kiln compile --report` (e-graph on, and `--no-egraph`, or
the flags of --baseline, e.g. `--disable-rule recognize-attention`)
and runs `kiln bench --json` on both artifacts, interleaved, taking the best median of
--rounds rounds (once when the two artifacts are byte-identical: the e-graph changed nothing). Prints one row per model: ops before/after the e-graph, kernels with/without
it, estimated FLOPs and bytes (the cost model's, whole graph) without/with it, e-graph size,
iterations, saturation+extraction time, stop reason, the rules that fired, and the latency.

Run:  python3 scripts/egraph_table.py [--kiln target/release/kiln] [--threads 1] [--iters 200]
          [--rounds 3] [--baseline FLAGS] [--backend cranelift|llvm] MODEL.pt2 ...
"""

import argparse
import json
import os
import subprocess
import tempfile


def inputs_for(pt2):
    base = pt2[: -len(".pt2")]
    for cand in (base + ".in.npz", base.replace(".aten", "").replace(".core", "") + ".in.npz"):
        if os.path.exists(cand):
            return cand
    stem = os.path.basename(base).split(".")[0]
    cand = os.path.join(os.path.dirname(pt2), f"{stem}.t215.in.npz")
    return cand if os.path.exists(cand) else None


def compile_once(kiln, pt2, out, report, extra):
    subprocess.run([kiln, "compile", pt2, "-o", out, "--report", report] + extra, check=True, capture_output=True)
    with open(report) as f:
        return json.load(f)


def bench(kiln, art, inputs, threads, iters):
    cmd = [kiln, "bench", art, "--iters", str(iters), "--threads", str(threads), "--json"]
    if inputs:
        cmd += ["--inputs", inputs]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["median_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", default="--no-egraph",
                    help="the flags of the 'off' compilation, e.g. '--disable-rule recognize-attention' "
                         "to measure one rule (default: --no-egraph)")
    ap.add_argument("--backend", default="cranelift")
    args = ap.parse_args()
    print("| model | ops in → out | kernels (off → on) | est. MFLOP (off → on) | est. MB (off → on) "
          "| e-nodes | e-classes | iters | ms | stop | rules fired | latency ms (off → on) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for pt2 in args.models:
            name = os.path.basename(pt2)[: -len(".pt2")]
            backend = ["--backend", args.backend]
            on = compile_once(args.kiln, pt2, f"{tmp}/on.kiln", f"{tmp}/on.json", backend)
            off = compile_once(args.kiln, pt2, f"{tmp}/off.kiln", f"{tmp}/off.json", backend + args.baseline.split())
            inputs = inputs_for(pt2)
            with open(f"{tmp}/on.kiln", "rb") as a, open(f"{tmp}/off.kiln", "rb") as b:
                same = a.read() == b.read()
            t_on, t_off = [], []
            for _ in range(args.rounds):
                t_off.append(bench(args.kiln, f"{tmp}/off.kiln", inputs, args.threads, args.iters))
                if not same:
                    t_on.append(bench(args.kiln, f"{tmp}/on.kiln", inputs, args.threads, args.iters))
            latency = f"same artifact ({min(t_off):.3f})" if same else f"{min(t_off):.3f} → {min(t_on):.3f}"
            e = on["egraph"]
            rules = ", ".join(f"{r} ×{n}" for r, n in sorted(e["rules_applied"].items())) or "none"
            print(
                f"| {name} | {e['ops_in']} → {e['ops_out']} | {off['kernels']} → {on['kernels']} "
                f"| {off['estimated']['flops'] / 1e6:.2f} → {on['estimated']['flops'] / 1e6:.2f} "
                f"| {off['estimated']['bytes'] / 1e6:.2f} → {on['estimated']['bytes'] / 1e6:.2f} "
                f"| {e['nodes']} | {e['classes']} | {e['iterations']} | {e['seconds'] * 1e3:.1f} | {e['stop_reason']} "
                f"| {rules} | {latency} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
