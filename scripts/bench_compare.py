#!/usr/bin/env python3
"""Compare kiln with PyTorch eager and ONNX Runtime on the fixture models, on one machine.

Needs:  Python 3 with torch (2.15; the fixtures are the t215 ones), numpy, onnxruntime, onnx
        and onnxscript, in a virtual environment outside the repository, e.g.
            /work/venvs/t215/bin/pip install onnxruntime onnx onnxscript
        and a Rust toolchain (the script runs `cargo build --release` first).

Run:    /work/venvs/t215/bin/python scripts/bench_compare.py --threads 2 --embed docs/benchmarks.md
        (--embed rewrites the table in the "Results" section; --out FILE writes it to a file;
        --models gpt,mlp for a subset; --rounds/--iters for a shorter or longer run;
        --skip-build to use an existing target/release/kiln, --kiln PATH for another binary)

For every model M it reads tests/fixtures/M.t215.aten.pt2 and the inputs
tests/fixtures/M.t215.in.npz (keys are the input names, in order), and prepares
    kiln          `kiln compile` -> target/bench/M.kiln, timed by
                  `kiln bench M.kiln --inputs IN --iters N --threads T --json` (a new process
                  per round; loading is outside the timed region);
    PyTorch eager torch.export.load(pt2).module() called under torch.inference_mode(), with
                  torch.set_num_threads(T);
    ONNX Runtime  torch.onnx.export(ExportedProgram, dynamo=True) -> target/bench/M.onnx, an
                  InferenceSession with intra_op_num_threads=T, inter_op_num_threads=1,
                  sequential execution and every graph optimization (ORT_ENABLE_ALL).
Before timing, kiln's and ONNX Runtime's outputs are compared with PyTorch's (max abs diff).

Timing is interleaved: R rounds, each round visiting every model and runtime in turn; a visit
warms up (at least 10 runs and 0.2 s, as `kiln bench` does) and then times N runs. `kiln
bench` reports only summary statistics, so every runtime is scored the same way: the median of
its per-round medians (each over N runs). The table gives that value in milliseconds per run,
and kiln / best-other = kiln's time (the faster kiln backend with --llvm) divided by the faster
of the other two (> 1: kiln slower).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The fixtures' own exporter flattens outputs the way their .out.npz files are ordered.
sys.path.insert(0, os.path.join(REPO_ROOT, "examples"))
from export_models import flat_outputs  # noqa: E402
FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures")
MODELS = ["mlp", "resblock", "encoder", "gpt", "mobile", "dynbatch", "views", "dynseq"]
RUNTIMES = ["kiln", "torch", "ort"]
HEADERS = {"kiln": "kiln", "kiln_llvm": "kiln (llvm)", "torch": "PyTorch eager", "ort": "ONNX Runtime"}
# The block of docs/benchmarks.md that --embed replaces.
MARK_START, MARK_END = "<!-- bench_compare:start -->", "<!-- bench_compare:end -->"
# Runtimes whose outputs are compared with PyTorch eager's (the reference).
DIFFED = ["kiln", "ort"]


def short(err, limit=120):
    """One line of an error message, for a table cell."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith("error")]
    text = errors[0] if errors else lines[-1] if lines else type(err).__name__
    text = text.replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def max_abs_diff(got, want):
    """Max |got - want| over all outputs (inf when shapes or counts differ)."""
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            return float("inf")
        if g.size:
            d = np.abs(g.astype(np.float64) - w.astype(np.float64))
            # NaN where both are NaN (or equal infinities) counts as agreement.
            same = (g == w) | (np.isnan(g.astype(np.float64)) & np.isnan(w.astype(np.float64)))
            d[same] = 0.0
            worst = max(worst, float(np.nanmax(np.where(np.isnan(d), np.inf, d))))
    return worst


def time_runs(fn, iters):
    """Warm up (>= 10 runs and >= 0.2 s), then the time of each of `iters` runs, in ms."""
    start, n = time.perf_counter(), 0
    while n < 10 or time.perf_counter() - start < 0.2:
        fn()
        n += 1
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


class Kiln:
    name = "kiln"

    def __init__(self, kiln, model, pt2, inputs_npz, workdir, threads, backend="cranelift"):
        self.kiln, self.inputs_npz, self.threads = kiln, inputs_npz, threads
        self.artifact = os.path.join(workdir, f"{model}.{backend}.kiln")
        self.outputs_npz = os.path.join(workdir, f"{model}.{backend}.kiln.out.npz")
        run([kiln, "compile", pt2, "--backend", backend, "-o", self.artifact])

    def outputs(self):
        run([self.kiln, "run", self.artifact, "--inputs", self.inputs_npz, "--output", self.outputs_npz])
        with np.load(self.outputs_npz) as z:
            return [z[k] for k in z.files]

    def round_median(self, iters):
        out = run([self.kiln, "bench", self.artifact, "--inputs", self.inputs_npz, "--iters", str(iters),
                   "--threads", str(self.threads), "--json"])
        return json.loads(out)["median_ms"]


class Torch:
    name = "torch"

    def __init__(self, pt2, args):
        self.module = torch.export.load(pt2).module()
        self.args = [torch.from_numpy(a) for a in args]

    def call(self):
        with torch.inference_mode():
            return self.module(*self.args)

    def outputs(self):
        return [t.detach().numpy() for t in flat_outputs(self.call())]

    def round_median(self, iters):
        return statistics.median(time_runs(self.call, iters))


class Ort:
    name = "ort"

    def __init__(self, pt2, model, names, args, workdir, threads):
        import onnxruntime as ort

        path = os.path.join(workdir, f"{model}.onnx")
        ep = torch.export.load(pt2)
        torch.onnx.export(ep, tuple(torch.from_numpy(a) for a in args), path, dynamo=True, verbose=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        by_name = dict(zip(names, args))
        feeds = {}
        for i, inp in enumerate(self.session.get_inputs()):
            feeds[inp.name] = by_name[inp.name] if inp.name in by_name else args[i]
        self.feeds = feeds

    def call(self):
        return self.session.run(None, self.feeds)

    def outputs(self):
        return self.call()

    def round_median(self, iters):
        return statistics.median(time_runs(self.call, iters))


def run(cmd):
    """Runs a command; its stdout, or RuntimeError with the last line of its stderr."""
    p = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip() or p.stdout.strip() or f"exit {p.returncode}")
    return p.stdout


def machine(threads, kiln_binary=None):
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:
        ort_version = "not installed"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "kiln": (commit.stdout.strip() or "unknown")
        + (f" (the repository's commit; binary {kiln_binary})" if kiln_binary else ""),
        "date": datetime.date.today().isoformat(),
    }


def fmt_ms(v):
    return f"{v:.3f}" if isinstance(v, float) else v


def spread(meds):
    return f"{min(meds):.3f}-{max(meds):.3f}" if meds else "n/a"


def row(cells):
    return "| " + " | ".join(cells) + " |"


def table(models, results, info, rounds, iters):
    names = [HEADERS[rt] for rt in RUNTIMES]
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} logical cores; T = {info['threads']} threads for every runtime.",
        f"Versions: kiln {info['kiln']}, PyTorch {info['torch']}, ONNX Runtime {info['onnxruntime']}; "
        f"date {info['date']}.",
        f"Method: {rounds} interleaved rounds x {iters} timed runs after warm-up; median of the per-round "
        "medians, in ms per run.",
        "",
        row(["model"] + [f"{n} ms" for n in names] + ["kiln / best-other"]),
        "|---" + "|---:" * (len(RUNTIMES) + 1) + "|",
    ]
    for m in models:
        r = results[m]
        cells = {rt: r["ms"].get(rt, r["error"].get(rt, "n/a")) for rt in RUNTIMES}
        kilns = [cells[rt] for rt in RUNTIMES if rt.startswith("kiln") and isinstance(cells[rt], float)]
        others = [cells[rt] for rt in RUNTIMES if not rt.startswith("kiln") and isinstance(cells[rt], float)]
        ratio = f"{min(kilns) / min(others):.2f}" if kilns and others else "n/a"
        lines.append(row([m] + [fmt_ms(cells[rt]) for rt in RUNTIMES] + [ratio]))
    lines += [
        "",
        "Agreement with PyTorch eager (max abs diff over all outputs) and the spread of the per-round "
        "medians (min-max, ms):",
        "",
        row(["model"] + [f"{HEADERS[rt]} diff" for rt in DIFFED] + [f"{n} spread" for n in names]),
        "|---" + "|---:" * (len(DIFFED) + len(RUNTIMES)) + "|",
    ]
    for m in models:
        r = results[m]
        diffs = [f"{r['diff'][rt]:.2e}" if rt in r["diff"] else "n/a" for rt in DIFFED]
        lines.append(row([m] + diffs + [spread(r["rounds"].get(rt)) for rt in RUNTIMES]))
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="threads for every runtime (default 2)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    p.add_argument("--iters", type=int, default=200, help="timed runs per round (default 200)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated fixture models")
    p.add_argument("--out", help="also write the Markdown table to this file")
    p.add_argument("--embed", metavar="DOC",
                   help=f"also replace the text between the lines {MARK_START} and {MARK_END} of DOC "
                   "(docs/benchmarks.md) with the table")
    p.add_argument("--note", help="a line to put above the table (e.g. that a run was noisy)")
    p.add_argument("--workdir", default=os.path.join(REPO_ROOT, "target", "bench"),
                   help="where artifacts and ONNX files go (default target/bench, git-ignored)")
    p.add_argument("--skip-build", action="store_true", help="do not run `cargo build --release` first")
    p.add_argument("--kiln", help="use this kiln binary (implies --skip-build; default target/release/kiln)")
    p.add_argument("--llvm", action="store_true",
                   help="also time kiln's llvm backend (builds kiln with --features llvm; needs LLVM 19 / MLIR 19)")
    a = p.parse_args()
    models = [m for m in a.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            p.error(f"unknown model {m}; models: {', '.join(MODELS)}")

    os.makedirs(a.workdir, exist_ok=True)
    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    if a.llvm:
        RUNTIMES.insert(1, "kiln_llvm")
        DIFFED.insert(1, "kiln_llvm")
        HEADERS["kiln"] = "kiln (cranelift)"
    if not (a.skip_build or a.kiln):
        print("building kiln (cargo build --release)...", file=sys.stderr)
        features = ["--features", "llvm"] if a.llvm else []
        subprocess.run(["cargo", "build", "--release", "--bin", "kiln", *features], cwd=REPO_ROOT, check=True)
    kiln = os.path.abspath(a.kiln) if a.kiln else os.path.join(REPO_ROOT, "target", "release", "kiln")

    results, runners = {}, {}
    for m in models:
        pt2 = os.path.join(FIXTURES, f"{m}.t215.aten.pt2")
        inputs_npz = os.path.join(FIXTURES, f"{m}.t215.in.npz")
        with np.load(inputs_npz) as z:
            names = list(z.files)
            args = [z[k] for k in names]
        r = results[m] = {"ms": {}, "error": {}, "diff": {}, "rounds": {}}
        runners[m] = {}
        print(f"{m}: preparing", file=sys.stderr)
        ref = None
        makers = [
            ("torch", "load failed", lambda: Torch(pt2, args)),
            ("kiln", "compile failed", lambda: Kiln(kiln, m, pt2, inputs_npz, a.workdir, a.threads)),
            ("kiln_llvm", "compile failed", lambda: Kiln(kiln, m, pt2, inputs_npz, a.workdir, a.threads, "llvm")),
            ("ort", "export failed", lambda: Ort(pt2, m, names, args, a.workdir, a.threads)),
        ]
        for rt, what, make in makers:
            if rt not in RUNTIMES:
                continue
            try:
                runner = make()
            except Exception as e:  # record any failure in the table rather than stopping
                r["error"][rt] = f"{what}: {short(e)}"
                continue
            try:
                out = runner.outputs()
            except Exception as e:
                r["error"][rt] = f"run failed: {short(e)}"
                continue
            if rt == "torch":
                ref = out
            elif ref is not None:
                r["diff"][rt] = max_abs_diff(out, ref)
            runners[m][rt] = runner
        for rt in DIFFED:
            if rt in r["diff"]:
                print(f"{m}: {rt} max abs diff vs PyTorch {r['diff'][rt]:.3e}", file=sys.stderr)

    for i in range(a.rounds):
        print(f"round {i + 1}/{a.rounds}", file=sys.stderr)
        for m in models:
            for rt in RUNTIMES:
                runner = runners[m].get(rt)
                if runner is None:
                    continue
                # Let the previous runtime's spinning worker threads go idle first.
                time.sleep(0.05)
                try:
                    results[m]["rounds"].setdefault(rt, []).append(runner.round_median(a.iters))
                except Exception as e:
                    results[m]["error"][rt] = f"run failed: {short(e)}"
                    del runners[m][rt]
    for m in models:
        for rt, meds in results[m]["rounds"].items():
            if rt in runners[m]:
                results[m]["ms"][rt] = statistics.median(meds)

    text = table(models, results, machine(a.threads, a.kiln), a.rounds, a.iters)
    if a.note:
        text = f"{a.note}\n\n{text}"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
        print(f"wrote {a.out}", file=sys.stderr)
    if a.embed:
        embed(a.embed, text)
        print(f"updated {a.embed}", file=sys.stderr)


def embed(path, text):
    """Replaces the lines between the start and end markers of `path` with `text`."""
    with open(path) as f:
        doc = f.read()
    start, end = doc.find(MARK_START), doc.find(MARK_END)
    if start < 0 or end < start:
        sys.exit(f"{path}: no {MARK_START} ... {MARK_END} block to replace")
    head = doc[: start + len(MARK_START)]
    with open(path, "w") as f:
        f.write(f"{head}\n{text}{doc[end:]}")


if __name__ == "__main__":
    main()
