#!/usr/bin/env python3
"""PyTorch's latency on the GPU for the models kiln is timed on (scripts/gpu_run.sh).

Usage: python3 gpu_torch_bench.py DIR... [--iters N] [--budget SECONDS] [--modes M,...]

For each model in the folders given: `NAME.tXYZ.aten.pt2` fixtures (the export made by the
running PyTorch's version when the folder has one, else any) with `NAME.tXYZ.in.npz`, and
full-size `NAME.pt2` with `NAME.in.npz`: the exported program's module on CUDA, timed eager,
with `torch.compile`, and with `torch.compile(mode="reduce-overhead")` (CUDA graphs); median
milliseconds over N timed runs after warm-up, synchronized, one line per model and mode. A
full-size export this PyTorch cannot load is rebuilt from `export_large.py` (same
architecture, random weights: latency does not depend on the values). A mode that fails
prints its error instead of a time; once `--budget` seconds have passed, the compiled modes
are skipped (said so) and only eager runs.

Matrix products and convolutions run in full f32 (TF32 off), the arithmetic kiln's code does.
"""

import argparse
import glob
import os
import sys
import time

import numpy as np
import torch


def median_ms(fn, iters):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def fixture_exports(folder):
    """{name: path} of the fixtures in `folder`, preferring this PyTorch's own export."""
    mine = "t" + "".join(torch.__version__.split("+")[0].split(".")[:2])
    found = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.aten.pt2"))):
        name, tag = os.path.basename(path).split(".")[:2]
        if name not in found or tag == mine:
            found[name] = path
    return found


def load_module(path, name):
    """The exported module at `path`, or the model rebuilt by export_large.py."""
    try:
        return torch.export.load(path).module(), "export"
    except Exception as e:  # an export from a newer PyTorch
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import export_large

        if name not in export_large.ON_REQUEST:
            raise
        model, _ = export_large.ON_REQUEST[name]()
        return model, f"rebuilt ({type(e).__name__} loading the export)"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--budget", type=float, default=1e9)
    parser.add_argument("--modes", default="eager,compile,reduce-overhead")
    args = parser.parse_args()
    began = time.time()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()} (TF32 off)", flush=True)
    # The GPU's copy bandwidth (device to device, 1 GiB read + 1 GiB written), the yardstick
    # for kiln's memory-bound kernels.
    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), 20)
    print(f"copy bandwidth {2 * src.numel() * 4 / ms / 1e6:.0f} GB/s ({ms:.3f} ms for 1 GiB)", flush=True)
    del src, dst
    models = []
    for d in args.dirs:
        models += [(n, p, p.replace(".aten.pt2", ".in.npz")) for n, p in fixture_exports(d).items()]
        models += [
            (os.path.basename(p)[:-4], p, p[:-4] + ".in.npz")
            for p in sorted(glob.glob(os.path.join(d, "*.pt2")))
            if not p.endswith((".aten.pt2", ".core.pt2"))
        ]
    modes = args.modes.split(",")
    for name, path, inputs_path in models:
        if not os.path.exists(inputs_path):
            continue
        try:
            module, source = load_module(path, name)
        except Exception as e:
            print(f"{name:14} cannot be loaded: {type(e).__name__}: {str(e)[:160]}", flush=True)
            continue
        module = module.to("cuda")
        arrays = np.load(inputs_path)
        inputs = [torch.from_numpy(arrays[k]).to("cuda") for k in arrays.files]
        print(f"{name:14} from {os.path.basename(path)}: {source}", flush=True)
        makers = {
            "eager": lambda: module,
            "compile": lambda: torch.compile(module),
            "reduce-overhead": lambda: torch.compile(module, mode="reduce-overhead"),
        }
        for mode in modes:
            if mode != "eager" and time.time() - began > args.budget:
                print(f"{name:14} {mode:16} skipped: over the {args.budget:.0f} s budget", flush=True)
                continue
            try:
                t0 = time.time()
                fn = makers[mode]()
                with torch.no_grad():
                    fn(*inputs)
                    ms = median_ms(lambda: fn(*inputs), args.iters)
                print(f"{name:14} {mode:16} {ms:9.4f} ms   (set-up {time.time() - t0:.0f} s)", flush=True)
            except Exception as e:  # a mode that fails is reported, the others still run
                print(f"{name:14} {mode:16} failed: {type(e).__name__}: {str(e)[:160]}", flush=True)
        del module, inputs
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
