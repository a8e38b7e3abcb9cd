#!/usr/bin/env python3
"""PyTorch's latency on the GPU for the fixtures kiln is timed on (scripts/gpu_run.sh).

Usage: python3 gpu_torch_bench.py DIR... [--iters N]

For each `NAME.t215.aten.pt2` with its `NAME.t215.in.npz`, and each `NAME.pt2` with its
`NAME.in.npz`, in the folders given: the exported program's module on
CUDA, timed eager, with `torch.compile`, and with `torch.compile(mode="reduce-overhead")`
(CUDA graphs); median milliseconds over N timed runs after warm-up, synchronized, one line
per model and mode. A mode that fails prints its error instead of a time.
"""

import argparse
import glob
import os
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+")
    parser.add_argument("--iters", type=int, default=50)
    args = parser.parse_args()
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
    # The GPU's copy bandwidth (device to device, 1 GiB read + 1 GiB written), the yardstick
    # for kiln's memory-bound kernels.
    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), 20)
    print(f"copy bandwidth {2 * src.numel() * 4 / ms / 1e6:.0f} GB/s ({ms:.3f} ms for 1 GiB)")
    del src, dst
    paths = [p for d in args.dirs for p in sorted(glob.glob(os.path.join(d, "*.pt2")))]
    for path in paths:
        name = os.path.basename(path).split(".")[0]
        inputs_path = path.replace(".aten.pt2", ".in.npz") if path.endswith(".aten.pt2") else path[:-4] + ".in.npz"
        if not os.path.exists(inputs_path) or path.endswith(".core.pt2"):
            continue
        module = torch.export.load(path).module().to("cuda")
        arrays = np.load(inputs_path)
        inputs = [torch.from_numpy(arrays[k]).to("cuda") for k in arrays.files]
        modes = {
            "eager": lambda: module,
            "compile": lambda: torch.compile(module),
            "reduce-overhead": lambda: torch.compile(module, mode="reduce-overhead"),
        }
        for mode, make in modes.items():
            try:
                fn = make()
                with torch.no_grad():
                    ms = median_ms(lambda: fn(*inputs), args.iters)
                print(f"{name:10} {mode:16} {ms:9.4f} ms")
            except Exception as e:  # a mode that fails is reported, the others still run
                print(f"{name:10} {mode:16} failed: {type(e).__name__}: {str(e)[:120]}")


if __name__ == "__main__":
    main()
