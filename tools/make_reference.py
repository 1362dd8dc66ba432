#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Builds the golden models and reference logits that tests/unit/engine compares against.

Runs where torch + transformers exist (the GPU machine; nothing is downloaded). For each small
random-weight architecture it writes tests/golden/models/<name>/:
  config.json            hub-style config (rope_scaling / rope_theta keys, as real checkpoints have)
  model*.safetensors     weights (fp32, or bf16 where noted; sharded where noted)
  reference.safetensors  prompt{i}.ids [T] I64, prompt{i}.logits [T, V] F32 (full prefill),
                         prompt{i}.greedy [16] I64 (greedy ids after the prompt, KV-cached decode),
                         prompt{i}.decode_logits [16, V] F32 (logits that chose each greedy id)
and the same reference for the real embedded model models/stories260K (weights copied beside it
so that every golden folder is self-contained).

Computation is fp32 on the CPU with eager attention, so the figures do not depend on TF32 or on
the attention backend. Usage:
  python3 tools/make_reference.py --out tests/golden/models --stories models/stories260K
"""
import argparse
import json
import os
import shutil
import zlib

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from golden_models import GREEDY_STEPS, INIT_STD, MODELS

TORCH_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16}


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


@torch.no_grad()
def reference_for(model, prompts):
    tensors = {}
    min_margin = float("inf")
    for i, ids in enumerate(prompts):
        x = torch.tensor([ids], dtype=torch.long)
        out = model(x, use_cache=True)
        logits = out.logits[0].float()
        past = out.past_key_values
        step_logits, greedy = [], []
        last = logits[-1]
        for _ in range(GREEDY_STEPS):
            top2 = torch.topk(last, 2).values
            min_margin = min(min_margin, float(top2[0] - top2[1]))
            nxt = int(torch.argmax(last))
            step_logits.append(last.clone())
            greedy.append(nxt)
            out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            last = out.logits[0, -1].float()
        tensors[f"prompt{i}.ids"] = torch.tensor(ids, dtype=torch.int64)
        tensors[f"prompt{i}.logits"] = logits.contiguous()
        tensors[f"prompt{i}.greedy"] = torch.tensor(greedy, dtype=torch.int64)
        tensors[f"prompt{i}.decode_logits"] = torch.stack(step_logits).contiguous()
    return tensors, min_margin


def make_random_model(name, hub_config, dtype_name, max_shard_bytes, lengths, out_root):
    dtype = TORCH_DTYPES[dtype_name]
    out = os.path.join(out_root, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    hub_config = dict(hub_config, initializer_range=INIT_STD,
                      torch_dtype=str(dtype).removeprefix("torch."))
    write_json(os.path.join(out, "config.json"), hub_config)
    config = AutoConfig.from_pretrained(out)  # transformers' own reading of the hub config
    torch.manual_seed(zlib.crc32(name.encode()))
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    # Norm weights default to 1; randomise them so a missing norm shows up in the logits.
    for pname, p in model.named_parameters():
        if "norm" in pname:
            p.data.uniform_(0.5, 1.5)
        elif "bias" in pname:
            p.data.normal_(0.0, INIT_STD)
    model = model.to(dtype)
    kwargs = dict(max_shard_size=max_shard_bytes) if max_shard_bytes else {}
    model.save_pretrained(out, safe_serialization=True, **kwargs)
    write_json(os.path.join(out, "config.json"), hub_config)  # keep the hub-style keys
    for extra in ("generation_config.json",):
        p = os.path.join(out, extra)
        if os.path.exists(p):
            os.remove(p)
    model = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager",
                                                 dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(1234)
    prompts = [torch.randint(3, hub_config["vocab_size"], (n,), generator=gen).tolist()
               for n in lengths]
    tensors, margin = reference_for(model, prompts)
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    files = sorted(os.listdir(out))
    print(f"{name}: {dtype}, files {files}, prompts {lengths}, min top1-top2 margin {margin:.4f}")


def make_stories(stories_dir, out_root):
    out = os.path.join(out_root, "stories260k")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(stories_dir, f), out)
    tok = AutoTokenizer.from_pretrained(stories_dir)
    model = AutoModelForCausalLM.from_pretrained(stories_dir, attn_implementation="eager",
                                                 dtype=torch.float32).eval()
    texts = ["", "Once upon a time", "Lily and Tom went to the park. They saw a big"]
    prompts = [tok(t)["input_ids"] if t else [tok.bos_token_id] for t in texts]
    tensors, margin = reference_for(model, prompts)
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    write_json(os.path.join(out, "prompts.json"), {"texts": texts, "ids": prompts})
    print(f"stories260k: prompts {[len(p) for p in prompts]}, min margin {margin:.4f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/golden/models")
    ap.add_argument("--stories", default="models/stories260K")
    args = ap.parse_args()
    torch.set_num_threads(8)
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for name, (cfg, dtype_name, max_shard_bytes, lengths) in MODELS.items():
        make_random_model(name, cfg, dtype_name, max_shard_bytes, lengths, args.out)
    make_stories(args.stories, args.out)


if __name__ == "__main__":
    main()
