#!/usr/bin/env python3
"""Export real model architectures (random weights, tiny configs) for trying kiln on them.

Not fixtures: the files go outside the repository and are not committed.

Needs:  Python 3 with torch, numpy, torchvision and transformers (CPU only; nothing is
        downloaded: every model is built from a config with random weights).

Run:    python examples/try_real_models.py [--out /tmp/kiln-real] [--only NAME] [--dtype f16|bf16]

Writes, for each model NAME that exports:
    NAME.pt2        torch.export.export(...) saved with torch.export.save (default IR)
    NAME.core.pt2   the same after ep.run_decompositions() (core ATen)
    NAME.in.npz     inputs keyed by the exported program's user input names
    NAME.out.npz    PyTorch eager outputs, positional (arr_0, arr_1, ...)
Models: resnet18, mobilenet_v3_small, efficientnet_b0, convnext_tiny, densenet121,
shufflenet_v2_x0_5, squeezenet1_0, regnet_y_400mf, swin_t (torchvision, input [1,3,64,64]);
gpt2, bert, llama, vit, distilbert, roberta, qwen2, mistral, t5 (encoder) (transformers, 2
layers, hidden 64, 4 heads, vocab 100; ViT image 32, patch 8). A model that
fails to build or export is reported and skipped; a summary is printed at the end.
With --dtype, models and float inputs are converted to f16 or bf16 first and the files are
named NAME.f16.* (or NAME.bf16.*); their outputs are PyTorch's CPU results in that dtype
(bf16 arrays are stored as f32: NumPy has no bfloat16).
"""

import argparse
import os
import traceback

import numpy as np
import torch
import torch.nn as nn


def to_numpy(t):
    """`t` as a NumPy array; bf16 (which NumPy lacks) as f32, which holds every bf16 value
    exactly (kiln reads f32 arrays of bf16 values as bf16 inputs)."""
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


class HfWrap(nn.Module):
    """Calls a Hugging Face model with one keyword input and returns a tuple of tensors."""

    def __init__(self, model, input_name):
        super().__init__()
        self.model = model
        self.input_name = input_name

    def _call(self, x):
        kwargs = {self.input_name: x, "return_dict": False}
        if self.input_name == "input_ids":
            kwargs["use_cache"] = False
        out = self.model(**kwargs)
        if isinstance(out, torch.Tensor):
            return (out,)
        return tuple(o for o in out if isinstance(o, torch.Tensor))


class HfText(HfWrap):
    def __init__(self, model):
        super().__init__(model, "input_ids")

    def forward(self, input_ids):
        return self._call(input_ids)


class HfImage(HfWrap):
    def __init__(self, model):
        super().__init__(model, "pixel_values")

    def forward(self, pixel_values):
        return self._call(pixel_values)


def tv_model(name):
    import torchvision.models as tvm

    def build():
        return getattr(tvm, name)(weights=None), {"x": torch.randn(1, 3, 64, 64)}

    return build


def hf_model(kind):
    def build(attn):
        import transformers as tf

        common = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                      intermediate_size=128)
        if kind == "gpt2":
            cfg = tf.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64,
                                 bos_token_id=0, eos_token_id=0)
            cls, wrap = tf.GPT2LMHeadModel, HfText
        elif kind == "bert":
            cfg = tf.BertConfig(vocab_size=100, max_position_embeddings=64, **common)
            cls, wrap = tf.BertModel, HfText
        elif kind == "llama":
            cfg = tf.LlamaConfig(vocab_size=100, max_position_embeddings=64,
                                 num_key_value_heads=2, **common)
            cls, wrap = tf.LlamaForCausalLM, HfText
        elif kind == "vit":
            cfg = tf.ViTConfig(image_size=32, patch_size=8, num_channels=3, **common)
            cls, wrap = tf.ViTModel, HfImage
        elif kind == "distilbert":
            cfg = tf.DistilBertConfig(vocab_size=100, max_position_embeddings=64, n_layers=2, dim=64,
                                      n_heads=4, hidden_dim=128)
            cls, wrap = tf.DistilBertModel, HfText
        elif kind == "roberta":
            cfg = tf.RobertaConfig(vocab_size=100, max_position_embeddings=64, pad_token_id=1, **common)
            cls, wrap = tf.RobertaModel, HfText
        elif kind == "qwen2":
            cfg = tf.Qwen2Config(vocab_size=100, max_position_embeddings=64, num_key_value_heads=2, **common)
            cls, wrap = tf.Qwen2ForCausalLM, HfText
        elif kind == "mistral":
            cfg = tf.MistralConfig(vocab_size=100, max_position_embeddings=64, num_key_value_heads=2,
                                   sliding_window=None, **common)
            cls, wrap = tf.MistralForCausalLM, HfText
        elif kind == "t5":
            cfg = tf.T5Config(vocab_size=100, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
            cls, wrap = tf.T5EncoderModel, HfText
        else:
            raise ValueError(kind)
        cfg.use_cache = False
        # not cfg.return_dict = False: transformers 5 then breaks (inner models return tuples
        # where the LM heads expect ModelOutput); return_dict=False is passed per call instead
        cfg._attn_implementation = attn
        model = wrap(cls(cfg))
        if kind == "vit":
            inputs = {"pixel_values": torch.randn(1, 3, 32, 32)}
        else:
            inputs = {"input_ids": torch.randint(0, 100, (1, 8))}
        return model, inputs

    return build


MODELS = {
    "resnet18": (tv_model("resnet18"), None),
    "mobilenet_v3_small": (tv_model("mobilenet_v3_small"), None),
    "gpt2": (hf_model("gpt2"), ["sdpa", "eager"]),
    "bert": (hf_model("bert"), ["sdpa", "eager"]),
    "llama": (hf_model("llama"), ["sdpa", "eager"]),
    "vit": (hf_model("vit"), ["sdpa", "eager"]),
    "efficientnet_b0": (tv_model("efficientnet_b0"), None),
    "convnext_tiny": (tv_model("convnext_tiny"), None),
    "densenet121": (tv_model("densenet121"), None),
    "shufflenet_v2_x0_5": (tv_model("shufflenet_v2_x0_5"), None),
    "squeezenet1_0": (tv_model("squeezenet1_0"), None),
    "regnet_y_400mf": (tv_model("regnet_y_400mf"), None),
    "swin_t": (tv_model("swin_t"), None),
    "distilbert": (hf_model("distilbert"), ["sdpa", "eager"]),
    "roberta": (hf_model("roberta"), ["sdpa", "eager"]),
    "qwen2": (hf_model("qwen2"), ["sdpa", "eager"]),
    "mistral": (hf_model("mistral"), ["sdpa", "eager"]),
    "t5": (hf_model("t5"), ["sdpa", "eager"]),
}


def flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    res = []
    for o in out:
        res.extend(flat(o))
    return res


def export_one(name, build, attn, out_dir, dtype=None):
    torch.manual_seed(0)
    model, inputs = build() if attn is None else build(attn)
    model.eval()
    if dtype is not None:
        model = model.to(dtype)
        inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    args = tuple(inputs.values())
    with torch.no_grad():
        want = flat(model(*args))
    ep = torch.export.export(model, args)
    names = list(ep.graph_signature.user_inputs)
    assert len(names) == len(args), f"user inputs {names} vs {list(inputs)}"
    core = ep.run_decompositions()
    with torch.no_grad():
        for form, prog in (("default", ep), ("core", core)):
            got = flat(prog.module()(*args))
            err = max((g - w).abs().max().item() for g, w in zip(got, want))
            print(f"  {name}: {form} vs eager max abs diff {err:.3g}")
    stem = os.path.join(out_dir, name)
    torch.export.save(ep, stem + ".pt2")
    torch.export.save(core, stem + ".core.pt2")
    np.savez(stem + ".in.npz", **{n: to_numpy(a) for n, a in zip(names, args)})
    np.savez(stem + ".out.npz", *[to_numpy(w) for w in want])
    def ops(prog):
        return {str(n.target) for n in prog.graph.nodes
                if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)}

    default_ops, core_ops = ops(ep), ops(core)
    print(f"  {name}: {len(default_ops)} distinct default ops, {len(core_ops)} core ops")
    return default_ops, core_ops


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="/tmp/kiln-real")
    p.add_argument("--only", default=None)
    p.add_argument("--dtype", choices=["f16", "bf16"], default=None)
    a = p.parse_args()
    dtype = {"f16": torch.float16, "bf16": torch.bfloat16, None: None}[a.dtype]
    os.makedirs(a.out, exist_ok=True)
    print(f"torch {torch.__version__}")
    results = {}
    all_default, all_core = set(), set()
    for name, (build, attns) in MODELS.items():
        if a.only is not None and a.only != name:
            continue
        for attn in attns or [None]:
            label = name if attn is None else f"{name} (attn={attn})"
            print(f"{label}:")
            try:
                stem = name if a.dtype is None else f"{name}.{a.dtype}"
                d, c = export_one(stem, build, attn, a.out, dtype)
                all_default |= d
                all_core |= c
                results[name] = f"ok{'' if attn is None else ' attn=' + attn}"
                break
            except Exception as e:  # report and go on
                traceback.print_exc(limit=3)
                print(f"  {label}: FAILED: {type(e).__name__}: {str(e)[:500]}")
                results[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    print("\nsummary:")
    for k, v in results.items():
        print(f"  {k}: {v}")
    print("default-form ops across exported models:", ", ".join(sorted(all_default)))
    print("core ops across exported models:", ", ".join(sorted(all_core)))


if __name__ == "__main__":
    main()
