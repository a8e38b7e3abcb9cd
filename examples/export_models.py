#!/usr/bin/env python3
"""Export kiln's fixture zoo of small models with torch.export.

Needs:  Python 3 with `torch` (2.11 or newer; fixtures are committed for 2.11 and 2.15) and
        `numpy`. CPU only; no GPU, no network, no downloaded weights.

Run:    python examples/export_models.py                # all models into tests/fixtures/
        python examples/export_models.py --only gpt     # one model
        python examples/export_models.py --out /tmp/fx  # somewhere else
        Run it once per torch version (e.g. with each virtual environment); the files of one
        version never overwrite another's.

Writes, for every model NAME and VER = torch's major+minor digits (torch 2.15.0 -> "215"):
    NAME.tVER.aten.pt2   torch.export.export(model, args[, dynamic_shapes=...]) saved with
                         torch.export.save (export's default IR)
    NAME.tVER.core.pt2   the same ExportedProgram after ep.run_decompositions() (core ATen)
    NAME.tVER.in.npz     the inputs, keyed by forward()'s argument names, which are the
                         exported program's user input names (e.g. `x`, `idx`)
    NAME.tVER.out.npz    PyTorch eager outputs, positional keys arr_0, arr_1, ...
    dynbatch and dynseq additionally NAME.tVER.in2.npz / NAME.tVER.out2.npz at a second size.

Every model is built under a fixed torch.manual_seed and put in eval() mode, so the files are
reproducible for a given torch version. The script also checks that both exported programs
reproduce the eager outputs before writing anything.

Models: mlp, resblock, encoder, gpt, mobile, dynbatch, views, dynseq, half, gpt_half (see the
classes below; half and gpt_half — the gpt model in float16, at 32 tokens, with 16 rows and
columns per head: enough for tensor-core tiles — are committed for torch 2.15 only). Besides the
main layers they cover: slice with a step, cat, permute, mean(keepdim), comparison + where,
avg_pool2d, dtype casts, a lifted tensor constant, a non-persistent bool buffer,
persistent BN buffers, tied weights, multiple outputs, int64 inputs, a dynamic batch
dimension, weights stored as non-contiguous views and with storage offsets, float16, integer
% and //, argmax and cumsum.
"""

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torch_ver_tag():
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return f"{major}{minor}"


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    """Linear-ReLU-Linear-Tanh, plus a tensor constant, strided slice, cat, comparison/where
    and a bool->float cast."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 8)
        # a plain tensor attribute (neither parameter nor buffer): export lifts it as a tensor
        # constant, stored under data/constants/ rather than data/weights/
        self.col_scale = torch.linspace(0.5, 1.5, 32)

    def forward(self, x):
        h = torch.relu(self.fc1(x)) * self.col_scale
        # slice with a step + cat: de-interleave the hidden units
        h = torch.cat([h[:, ::2], h[:, 1::2]], dim=1)
        # comparison + where (leaky-style), and a bool -> float cast
        h = torch.where(x.sum(dim=1, keepdim=True) > 0, h, h * 0.5)
        h = h + (h > 1.0).float()
        return torch.tanh(self.fc2(h))


def randomize_bn(bn):
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)


class BasicBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        randomize_bn(self.bn1)
        randomize_bn(self.bn2)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


class ResBlock(nn.Module):
    """conv3x3+BN+ReLU+MaxPool, a ResNet basic block, global avg pool, linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        randomize_bn(self.bn)
        self.pool = nn.MaxPool2d(2)
        self.block = BasicBlock(8)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn(self.stem(x))))
        x = self.block(x)
        x = torch.flatten(self.gap(x), 1)
        return self.fc(x)


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h = heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def forward(self, x, is_causal=False, attn_mask=None):
        b, t, d = x.shape
        hd = d // self.h
        q = self.q(x).view(b, t, self.h, hd).transpose(1, 2)
        k = self.k(x).view(b, t, self.h, hd).transpose(1, 2)
        # permute instead of transpose for v
        v = self.v(x).view(b, t, self.h, hd).permute(0, 2, 1, 3)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        y = y.transpose(1, 2).contiguous().view(b, t, d)
        return self.o(y)


class Encoder(nn.Module):
    """Pre-LN transformer encoder block: MHA (sdpa) + erf GELU MLP, residuals.

    Returns two outputs: the sequence and its mean over the sequence (keepdim)."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * d, d)
        with torch.no_grad():
            for ln in (self.ln1, self.ln2):
                ln.weight.uniform_(0.5, 1.5)
                ln.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        x = x + self.fc2(self.act(self.fc1(self.ln2(x))))
        return x, x.mean(dim=1, keepdim=True)


class GptBlock(nn.Module):
    def __init__(self, d, heads, use_mask):
        super().__init__()
        self.use_mask = use_mask
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x, mask):
        if self.use_mask:
            a = self.attn(self.ln1(x), attn_mask=mask)
        else:
            a = self.attn(self.ln1(x), is_causal=True)
        x = x + a
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class Gpt(nn.Module):
    """Tiny GPT: token + learned position embeddings, 2 causal blocks, tied LM head."""

    def __init__(self, vocab=64, d=32, heads=4, max_t=8):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d)
        self.pos_emb = nn.Embedding(max_t, d)
        self.blocks = nn.ModuleList(
            [GptBlock(d, heads, use_mask=False), GptBlock(d, heads, use_mask=True)]
        )
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied
        # explicit boolean causal mask (a non-persistent bool buffer)
        self.register_buffer(
            "causal", torch.tril(torch.ones(max_t, max_t, dtype=torch.bool)), persistent=False
        )

    def forward(self, idx):
        t = idx.shape[1]
        pos = torch.arange(t, dtype=torch.long, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        mask = self.causal[:t, :t]
        for blk in self.blocks:
            x = blk(x, mask)
        return self.lm_head(self.ln_f(x))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, r, 1)
        self.fc2 = nn.Conv2d(r, c, 1)

    def forward(self, x):
        s = self.pool(x)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class Mobile(nn.Module):
    """Depthwise-separable CNN: depthwise + pointwise + BN + Hardswish, SiLU, SE, avg_pool2d."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.pw = nn.Conv2d(8, 16, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.se = SqueezeExcite(16, 4)
        self.head = nn.Linear(16 * 2 * 2, 10)
        randomize_bn(self.bn0)
        randomize_bn(self.bn1)

    def forward(self, x):
        x = F.silu(self.bn0(self.stem(x)))  # [2,8,8,8]
        x = F.hardswish(self.bn1(self.pw(self.dw(x))))  # [2,16,8,8]
        x = self.se(x)
        x = F.avg_pool2d(x, 4)  # [2,16,2,2]
        return self.head(x.flatten(1))


class DynBatch(nn.Module):
    """MLP over [B,4,8] with a batch-dependent view and softmax; exported with dynamic B."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(32, 24)
        self.fc2 = nn.Linear(24, 6)

    def forward(self, x):
        h = x.view(x.shape[0], -1)
        h = F.relu(self.fc1(h))
        return F.softmax(self.fc2(h), dim=-1)


class Views(nn.Module):
    """Buffers stored as views (a transposed one: non-contiguous strides; a slice: a storage
    offset), a float16 round trip, integer arithmetic, argmax and cumsum."""

    def __init__(self):
        super().__init__()
        self.register_buffer("wt", torch.randn(6, 8).t())
        self.register_buffer("off", torch.randn(20)[5:11])

    def forward(self, x):
        y = x @ self.wt + self.off
        y = (y.half() * 2).float() - y
        k = (torch.arange(6) * 7) % 4 + torch.arange(6) // 3
        y = y + k.to(y.dtype)
        return y, torch.argmax(y, dim=1), torch.cumsum(y, dim=1)


class DynSeq(nn.Module):
    """Token model with dynamic batch and sequence length: symbolic sizes used as tensor values
    (t * 0.5), advanced indexing with two broadcast index tensors over symbolic dims, a
    symbolic slice of a buffer, and causal attention."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(32, 16)
        self.register_buffer("pos", torch.randn(64, 16))
        self.register_buffer("tri", torch.tril(torch.ones(64, 64, dtype=torch.bool)))
        self.proj = nn.Linear(16, 16)

    def forward(self, idx):
        b, t = idx.shape
        x = self.emb(idx) + self.pos[:t]
        r = torch.arange(t, device=idx.device)
        mask = self.tri[r[:, None], r[None, :]]
        q = self.proj(x)
        att = (q @ x.transpose(1, 2)) / (t * 0.5)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        return att @ x


class Half(nn.Module):
    """An f16 CNN and token MLP (built with .half()): a conv stem, a ResNet downsampling block
    (two strided convolutions and a 1x1 shortcut, BN, ReLU), then the 4x4 feature map as 16
    tokens through Linear + GELU, a mean over tokens and a linear head — what kiln runs on
    tensor cores (convolutions as implicit GEMMs, linear layers) in f16."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(32)
        self.conv1 = nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.down = nn.Conv2d(32, 64, 1, stride=2, bias=False)
        self.bn3 = nn.BatchNorm2d(64)
        self.mix = nn.Linear(64, 96)
        self.head = nn.Linear(96, 10)
        for bn in (self.bn0, self.bn1, self.bn2, self.bn3):
            randomize_bn(bn)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))  # [2,32,8,8]
        y = F.relu(self.bn1(self.conv1(x)))  # [2,64,4,4]
        y = F.relu(self.bn2(self.conv2(y)) + self.bn3(self.down(x)))
        tokens = y.flatten(2).transpose(1, 2)  # [2,16,64]
        h = F.gelu(self.mix(tokens))  # [2,16,96]
        return self.head(h.mean(1)), h


# ---------------------------------------------------------------------------------------------
# Zoo: name -> (seed, builder, input builder, dynamic_shapes, second input builder)
# ---------------------------------------------------------------------------------------------


def gpt_half():
    """The gpt model at 32 tokens in float16, its (tied) token embedding scaled down so that the
    logits stay near 1, where float16 rounding differences stay well inside 1e-2."""
    model = Gpt(vocab=64, d=64, heads=4, max_t=32)
    with torch.no_grad():
        model.tok_emb.weight.mul_(0.25)
    return model.half()


def zoo():
    batch = torch.export.Dim("batch", min=1, max=64)
    seq = torch.export.Dim("seq", min=2, max=64)
    return {
        "mlp": dict(seed=1, model=Mlp, inputs=lambda: {"x": torch.randn(4, 16)}),
        "resblock": dict(seed=2, model=ResBlock, inputs=lambda: {"x": torch.randn(2, 3, 16, 16)}),
        "encoder": dict(seed=3, model=Encoder, inputs=lambda: {"x": torch.randn(2, 8, 32)}),
        "gpt": dict(seed=4, model=Gpt, inputs=lambda: {"idx": torch.randint(0, 64, (2, 8))}),
        "mobile": dict(seed=5, model=Mobile, inputs=lambda: {"x": torch.randn(2, 3, 16, 16)}),
        "views": dict(seed=7, model=Views, inputs=lambda: {"x": torch.randn(3, 8)}),
        "half": dict(seed=9, model=lambda: Half().half(), inputs=lambda: {"x": torch.randn(2, 3, 8, 8).half()}),
        "gpt_half": dict(
            seed=10,
            model=gpt_half,
            inputs=lambda: {"idx": torch.randint(0, 64, (2, 32))},
        ),
        "dynseq": dict(
            seed=8,
            model=DynSeq,
            inputs=lambda: {"idx": torch.randint(0, 32, (2, 6))},
            dynamic_shapes={"idx": {0: batch, 1: seq}},
            inputs2=lambda: {"idx": torch.randint(0, 32, (3, 9))},
        ),
        "dynbatch": dict(
            seed=6,
            model=DynBatch,
            inputs=lambda: {"x": torch.randn(3, 4, 8)},
            dynamic_shapes={"x": {0: batch}},
            inputs2=lambda: {"x": torch.randn(5, 4, 8)},
        ),
    }


def flat_outputs(out):
    if isinstance(out, torch.Tensor):
        return [out]
    res = []
    for o in out:
        res.extend(flat_outputs(o))
    return res


def to_np(ts):
    return [t.detach().cpu().numpy() for t in ts]


def check_close(name, what, got, want):
    assert len(got) == len(want), f"{name}: {what}: {len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype, f"{name}: {what}: output {i} mismatch"
        tol = 1e-2 if g.dtype in (torch.float16, torch.bfloat16) else 1e-5
        if not torch.allclose(g, w, rtol=tol, atol=tol):
            diff = (g - w).abs().max().item()
            raise AssertionError(f"{name}: {what}: output {i} differs by {diff}")


def export_one(name, spec, out_dir, ver):
    torch.manual_seed(spec["seed"])
    model = spec["model"]().eval()
    inputs = spec["inputs"]()
    args = tuple(inputs.values())
    with torch.no_grad():
        want = flat_outputs(model(*args))

    ep = torch.export.export(model, args, dynamic_shapes=spec.get("dynamic_shapes"))
    user_inputs = list(ep.graph_signature.user_inputs)
    assert user_inputs == list(inputs), f"{name}: user inputs {user_inputs} != {list(inputs)}"
    core = ep.run_decompositions()

    with torch.no_grad():
        check_close(name, "aten", flat_outputs(ep.module()(*args)), want)
        check_close(name, "core", flat_outputs(core.module()(*args)), want)

    stem = os.path.join(out_dir, f"{name}.t{ver}")
    torch.export.save(ep, stem + ".aten.pt2")
    torch.export.save(core, stem + ".core.pt2")
    np.savez(stem + ".in.npz", **{k: v.numpy() for k, v in inputs.items()})
    np.savez(stem + ".out.npz", *to_np(want))

    if "inputs2" in spec:
        inputs2 = spec["inputs2"]()
        args2 = tuple(inputs2.values())
        with torch.no_grad():
            want2 = flat_outputs(model(*args2))
            check_close(name, "aten@2", flat_outputs(ep.module()(*args2)), want2)
            check_close(name, "core@2", flat_outputs(core.module()(*args2)), want2)
        np.savez(stem + ".in2.npz", **{k: v.numpy() for k, v in inputs2.items()})
        np.savez(stem + ".out2.npz", *to_np(want2))
    print(f"{name}: wrote {stem}.*")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(REPO_ROOT, "tests", "fixtures"))
    p.add_argument("--only", default=None, help="export just this model")
    a = p.parse_args()

    models = zoo()
    if a.only is not None and a.only not in models:
        sys.exit(f"unknown model {a.only!r}; known: {', '.join(models)}")
    os.makedirs(a.out, exist_ok=True)
    ver = torch_ver_tag()
    print(f"torch {torch.__version__} -> t{ver}")
    torch.set_num_threads(1)
    for name, spec in models.items():
        if a.only is None or a.only == name:
            export_one(name, spec, a.out, ver)


if __name__ == "__main__":
    main()
