"""Writes frontend/data/core_aten_ops.txt: the names of PyTorch's core ATen ops (every op with an
overload tagged torch.Tag.core). docs/ops.md counts kiln's coverage against this list.

Needs: PyTorch (any recent release). Run from the repository root:
    python examples/list_core_aten_ops.py
"""
import torch

names = set()
for opname in dir(torch.ops.aten):
    try:
        packet = getattr(torch.ops.aten, opname)
    except Exception:
        continue
    if not hasattr(packet, "overloads"):
        continue
    for ov in packet.overloads():
        try:
            if torch.Tag.core in getattr(packet, ov).tags:
                names.add(opname)
        except Exception:
            continue

with open("frontend/data/core_aten_ops.txt", "w") as f:
    f.write("# PyTorch's core ATen opset (ops tagged torch.Tag.core), from torch %s.\n" % torch.__version__)
    f.write("# Regenerate: examples/list_core_aten_ops.py\n")
    for n in sorted(names):
        f.write(n + "\n")
print(f"{len(names)} core ATen ops")
