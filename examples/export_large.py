#!/usr/bin/env python3
"""Export two full-size models (random weights) for measuring kiln's optimizer on large graphs.

Not fixtures: the files are hundreds of megabytes and go outside the repository.

Needs:  Python 3 with torch, numpy, torchvision and transformers (CPU only; nothing is
        downloaded: both models are built from configs with random weights).

Run:    python examples/export_large.py [--out /tmp/kiln-large] [--only NAME] [--compressible]

Writes, for each model NAME:
    NAME.pt2        torch.export.export(...) (default IR)
    NAME.in.npz     inputs keyed by the exported program's user input names
    NAME.out.npz    PyTorch eager outputs, positional (arr_0, ...)
Models: bert_base (BertModel with bert-base-uncased's sizes: 12 layers, hidden 768, 12 heads,
intermediate 3072, vocab 30522; input_ids [1, 128], eager attention) and resnet50
(torchvision, input [1, 3, 224, 224]), and attention_1k (one GPT-style causal self-attention block,
hidden 512, 8 heads, sequence 1024: the score matrices alone would be 32 MiB); for the GPU
benchmarks (only with --only): resnet50_b32 (input [32, 3, 224, 224]), gpt2_small_b4
(GPT2LMHeadModel with GPT-2 small's sizes, 124M parameters; input_ids [4, 512]; logits out)
and gpt2_small_b4_f16 (the same in f16: its matmuls run on tensor cores), resnet50_b32_f16
(resnet50_b32 in f16: its convolutions run on tensor cores); gpt2_tiny_f16 (2 layers, hidden
128, 4 heads, vocab 100; input_ids [2, 64]; f16), gpt2_tiny_bf16 (the same in bf16: outputs
saved as f32) and resnet18_tiny_f16 (torchvision resnet18 in f16, input [2, 3, 64, 64]),
small enough to check a GPU's tensor-core results against PyTorch's outputs.

--compressible replaces every float parameter, buffer and input by a periodic pattern with the
same mean and standard deviation (97 normal values repeated), so that the archives and the
compiled artifacts compress to almost nothing: latency does not depend on the values, and
full-size models can then be carried to a GPU machine (scripts/gpu_bundle.sh).
"""

import argparse
import os

import numpy as np
import torch


class Bert(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids, return_dict=False)[0]


def bert_base():
    import transformers as tf

    cfg = tf.BertConfig(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = Bert(tf.BertModel(cfg).eval())
    x = torch.randint(0, 30522, (1, 128))
    return model, (x,)


def resnet50():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    return model, (torch.randn(1, 3, 224, 224),)


class CausalSelfAttention(torch.nn.Module):
    """One GPT-style attention block: a fused QKV projection, causal SDPA, an output projection."""

    def __init__(self, d=512, heads=8):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.out = torch.nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (y.view(b, t, self.heads, d // self.heads).transpose(1, 2) for y in (q, k, v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


def attention_1k():
    torch.manual_seed(0)
    return CausalSelfAttention().eval(), (torch.randn(1, 1024, 512),)


def resnet50_b32():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    return model, (torch.randn(32, 3, 224, 224),)


class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids, use_cache=False, return_dict=False)[0]


def gpt2_small_b4():
    import transformers as tf

    torch.manual_seed(0)
    model = Logits(tf.GPT2LMHeadModel(tf.GPT2Config(attn_implementation="sdpa")).eval())
    return model, (torch.randint(0, 50257, (4, 512)),)


def gpt2_small_b4_f16():
    model, inputs = gpt2_small_b4()
    return model.half(), inputs


def gpt2_tiny_f16():
    import transformers as tf

    torch.manual_seed(0)
    config = tf.GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=100, n_positions=64, bos_token_id=0,
                           eos_token_id=0, attn_implementation="sdpa")
    model = Logits(tf.GPT2LMHeadModel(config).eval()).half()
    return model, (torch.randint(0, 100, (2, 64)),)


def gpt2_tiny_bf16():
    model, inputs = gpt2_tiny_f16()
    return model.to(torch.bfloat16), inputs


def resnet50_b32_f16():
    model, (x,) = resnet50_b32()
    return model.half(), (x.half(),)


def resnet18_tiny_f16():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval().half()
    return model, (torch.randn(2, 3, 64, 64).half(),)


def periodic_like(t, generator):
    """A tensor shaped like `t` repeating 97 normal values, with `t`'s mean and deviation."""
    table = torch.randn(97, generator=generator, dtype=torch.float64)
    n = t.numel()
    values = table.repeat(n // 97 + 1)[:n].reshape(t.shape)
    std = float(t.double().std()) if n > 1 else 0.0
    return (float(t.double().mean()) + std * values).to(t.dtype)


def make_compressible(model, inputs):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.dtype.is_floating_point:
                t.copy_(periodic_like(t, generator))
    return tuple(periodic_like(x, generator) if x.dtype.is_floating_point else x for x in inputs)


MODELS = {"bert_base": bert_base, "resnet50": resnet50, "attention_1k": attention_1k}
ON_REQUEST = {
    "resnet50_b32": resnet50_b32,
    "gpt2_small_b4": gpt2_small_b4,
    "gpt2_small_b4_f16": gpt2_small_b4_f16,
    "gpt2_tiny_f16": gpt2_tiny_f16,
    "gpt2_tiny_bf16": gpt2_tiny_bf16,
    "resnet50_b32_f16": resnet50_b32_f16,
    "resnet18_tiny_f16": resnet18_tiny_f16,
}


def to_numpy(t):
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/kiln-large")
    ap.add_argument("--only")
    ap.add_argument("--compressible", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, build in {**MODELS, **ON_REQUEST}.items():
        if (args.only and name != args.only) or (not args.only and name in ON_REQUEST):
            continue
        model, inputs = build()
        if args.compressible:
            inputs = make_compressible(model, inputs)
        with torch.no_grad():
            ep = torch.export.export(model, inputs)
            out = model(*inputs)
        torch.export.save(ep, os.path.join(args.out, f"{name}.pt2"))
        names = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        np.savez(os.path.join(args.out, f"{name}.in.npz"), **{n: to_numpy(t) for n, t in zip(names, inputs)})
        outs = out if isinstance(out, tuple) else (out,)
        # NumPy has no bfloat16: bf16 outputs are saved as the f32 values they equal (kiln
        # checks a bf16 output against them).
        np.savez(os.path.join(args.out, f"{name}.out.npz"), *[to_numpy(o) for o in outs])
        print(f"{name}: {sum(1 for _ in ep.graph.nodes)} FX nodes -> {args.out}/{name}.pt2")


if __name__ == "__main__":
    main()
