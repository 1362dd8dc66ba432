#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Interim golden models: an independent numpy forward pass written after HF transformers' code.

tools/make_reference.py makes the golden models with transformers itself and is the authority; it
needs torch + transformers, which only the GPU machine has. Until it has run there, this script
writes the same folders (same architectures, same file format) with weights drawn by numpy and
reference logits from a float64 numpy transcription of transformers' Llama / Mistral / Qwen2 /
Qwen3 modelling code (RMSNorm, rotate-half RoPE with `linear` and `llama3` scaling, GQA, causal
and sliding-window masks, Qwen2 q/k/v bias, Qwen3 per-head q/k RMSNorm, tied embeddings).
The transcription is itself checked against the transformers-verified stories260K logits
(models/stories260K/reference/logits_greedy64.npy) before anything is written.

Each folder gets reference.safetensors with prompt{i}.ids, prompt{i}.logits, prompt{i}.greedy and
prompt{i}.decode_logits (see make_reference.py) and a `generator` entry in README.json.
Usage (Debian python3-numpy): /usr/bin/python3 tools/numpy_reference.py --out tests/golden/models --stories models/stories260K
"""
import argparse
import json
import math
import os
import shutil
import struct
import zlib

import numpy as np

from golden_models import GREEDY_STEPS, INIT_STD, MODELS


# ---------------------------------------------------------------- safetensors I/O (numpy only)

def to_bf16_bits(x):
    """fp32 -> bf16 bit patterns, round to nearest even (what torch's .to(bfloat16) does)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16_bits(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def save_safetensors(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def load_safetensors_f32(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = np.frombuffer(data[a:b], dtype={"F32": np.float32, "BF16": np.uint16}[info["dtype"]])
        arr = from_bf16_bits(raw) if info["dtype"] == "BF16" else raw
        out[name] = arr.reshape(info["shape"]).astype(np.float64)
    return out


# ---------------------------------------------------------------- the forward pass

def rope_inv_freq(cfg, head_dim):
    theta = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        inv = inv / rs["factor"]
    elif kind == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / lo, old / hi
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = np.where(medium, smoothed, scaled)
    elif kind is not None:
        raise ValueError(f"unsupported rope scaling {kind}")
    return inv


def rms_norm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def apply_rope(x, pos, inv):  # x [T, H, D], rotate-half pairs (i, i + D/2)
    freqs = np.outer(pos, inv)  # [T, D/2]
    cos = np.concatenate([np.cos(freqs)] * 2, axis=-1)[:, None, :]
    sin = np.concatenate([np.sin(freqs)] * 2, axis=-1)[:, None, :]
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rot * sin


def forward(cfg, w, ids):
    """Logits [T, V] for the whole sequence (float64)."""
    hidden, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim") or hidden // heads
    eps = cfg["rms_norm_eps"]
    arch = cfg["model_type"]
    window = cfg.get("sliding_window") if arch == "mistral" else None
    t = len(ids)
    pos = np.arange(t, dtype=np.float64)
    inv = rope_inv_freq(cfg, d)
    mask = np.tril(np.ones((t, t), dtype=bool))
    if window:
        qi, ki = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
        mask &= (qi - ki) < window
    x = w["model.embed_tokens.weight"][np.array(ids)]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        proj = {}
        for name in ("q", "k", "v"):
            y = h @ w[p + f"self_attn.{name}_proj.weight"].T
            bias = w.get(p + f"self_attn.{name}_proj.bias")
            proj[name] = y + bias if bias is not None else y
        q = proj["q"].reshape(t, heads, d)
        k = proj["k"].reshape(t, kv, d)
        v = proj["v"].reshape(t, kv, d)
        if arch == "qwen3":
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q, k = apply_rope(q, pos, inv), apply_rope(k, pos, inv)
        group = heads // kv
        out = np.empty((t, heads, d))
        for hh in range(heads):
            s = (q[:, hh, :] @ k[:, hh // group, :].T) / math.sqrt(d)
            s = np.where(mask, s, -np.inf)
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            out[:, hh, :] = s @ v[:, hh // group, :]
        x = x + out.reshape(t, heads * d) @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + ((gate / (1 + np.exp(-gate))) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def reference_for(cfg, w, prompts):
    tensors, min_margin = {}, float("inf")
    for i, ids in enumerate(prompts):
        logits = forward(cfg, w, ids)
        seq, greedy, steps = list(ids), [], []
        last = logits[-1]
        for _ in range(GREEDY_STEPS):
            top2 = np.sort(last)[-2:]
            min_margin = min(min_margin, float(top2[1] - top2[0]))
            nxt = int(np.argmax(last))
            steps.append(last)
            greedy.append(nxt)
            seq.append(nxt)
            last = forward(cfg, w, seq)[-1]
        tensors[f"prompt{i}.ids"] = ("I64", np.array(ids, dtype=np.int64))
        tensors[f"prompt{i}.logits"] = ("F32", logits.astype(np.float32))
        tensors[f"prompt{i}.greedy"] = ("I64", np.array(greedy, dtype=np.int64))
        tensors[f"prompt{i}.decode_logits"] = ("F32", np.stack(steps).astype(np.float32))
    return tensors, min_margin


# ---------------------------------------------------------------- random models

def random_weights(cfg, rng):
    hidden, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim") or hidden // heads
    inter, vocab = cfg["intermediate_size"], cfg["vocab_size"]
    arch = cfg["model_type"]
    std = INIT_STD
    w = {"model.embed_tokens.weight": rng.normal(0, std, (vocab, hidden)),
         "model.norm.weight": rng.uniform(0.5, 1.5, hidden)}
    if not cfg.get("tie_word_embeddings"):
        w["lm_head.weight"] = rng.normal(0, std, (vocab, hidden))
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        w[p + "input_layernorm.weight"] = rng.uniform(0.5, 1.5, hidden)
        w[p + "post_attention_layernorm.weight"] = rng.uniform(0.5, 1.5, hidden)
        for name, rows in (("q", heads * d), ("k", kv * d), ("v", kv * d)):
            w[p + f"self_attn.{name}_proj.weight"] = rng.normal(0, std, (rows, hidden))
            if arch == "qwen2":
                w[p + f"self_attn.{name}_proj.bias"] = rng.normal(0, std, rows)
        w[p + "self_attn.o_proj.weight"] = rng.normal(0, std, (hidden, heads * d))
        if arch == "qwen3":
            w[p + "self_attn.q_norm.weight"] = rng.uniform(0.5, 1.5, d)
            w[p + "self_attn.k_norm.weight"] = rng.uniform(0.5, 1.5, d)
        w[p + "mlp.gate_proj.weight"] = rng.normal(0, std, (inter, hidden))
        w[p + "mlp.up_proj.weight"] = rng.normal(0, std, (inter, hidden))
        w[p + "mlp.down_proj.weight"] = rng.normal(0, std, (hidden, inter))
    return w


def write_weights(out, w, dtype, max_shard_bytes):
    """Stores weights as F32 or BF16; returns the float64 values the reference must use."""
    stored, used = {}, {}
    for name, arr in w.items():
        if dtype == "BF16":
            bits = to_bf16_bits(arr)
            stored[name] = ("BF16", bits)
            used[name] = from_bf16_bits(bits).astype(np.float64)
        else:
            stored[name] = ("F32", arr.astype(np.float32))
            used[name] = arr.astype(np.float32).astype(np.float64)
    if max_shard_bytes is None:
        save_safetensors(os.path.join(out, "model.safetensors"), stored, {"format": "pt"})
        return used
    parts, size = [{}], 0  # fill shards in name order up to max_shard_bytes, as HF does
    for n in sorted(stored):
        nbytes = stored[n][1].nbytes
        if parts[-1] and size + nbytes > max_shard_bytes:
            parts.append({})
            size = 0
        parts[-1][n] = stored[n]
        size += nbytes
    weight_map, total = {}, 0
    for i, part in enumerate(parts):
        fname = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        save_safetensors(os.path.join(out, fname), part, {"format": "pt"})
        for n, (_, a) in part.items():
            weight_map[n] = fname
            total += a.nbytes
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return used


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def check_against_stories(stories):
    cfg = json.load(open(os.path.join(stories, "config.json")))
    w = load_safetensors_f32(os.path.join(stories, "model.safetensors"))
    ref = json.load(open(os.path.join(stories, "reference", "greedy_bos.json")))
    want = np.load(os.path.join(stories, "reference", "logits_greedy64.npy"))
    got = forward(cfg, w, ref["greedy_ids"][:64])
    err = float(np.abs(got - want).max())
    print(f"numpy forward vs transformers-verified stories260K logits: max abs diff {err:.2e}")
    assert err < 1e-3, "the numpy transcription disagrees with the stories260K reference"
    return cfg, w


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/golden/models")
    ap.add_argument("--stories", default="models/stories260K")
    args = ap.parse_args()
    stories_cfg, stories_w = check_against_stories(args.stories)
    generator = "tools/numpy_reference.py (interim; tools/make_reference.py with transformers owed)"
    for name, (cfg, dtype, max_shard_bytes, lengths) in MODELS.items():
        out = os.path.join(args.out, name)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        cfg = dict(cfg, torch_dtype={"F32": "float32", "BF16": "bfloat16"}[dtype])
        write_json(os.path.join(out, "config.json"), cfg)
        used = write_weights(out, random_weights(cfg, rng), dtype, max_shard_bytes)
        prompts = [rng.integers(3, cfg["vocab_size"], n).tolist() for n in lengths]
        tensors, margin = reference_for(cfg, used, prompts)
        save_safetensors(os.path.join(out, "reference.safetensors"), tensors)
        write_json(os.path.join(out, "README.json"), {"generator": generator})
        shards = "sharded" if max_shard_bytes else "1 file"
        print(f"{name}: {dtype}, {shards}, prompts {lengths}, min margin {margin:.4f}")
    out = os.path.join(args.out, "stories260k")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(args.stories, f), out)
    # BOS alone and the opening of the reference greedy story as prompts.
    prompts = [[1], [1, 403, 407, 261, 378], [1, 403, 407, 261, 378, 432, 383, 286, 261, 376]]
    tensors, margin = reference_for(stories_cfg, stories_w, prompts)
    save_safetensors(os.path.join(out, "reference.safetensors"), tensors)
    write_json(os.path.join(out, "README.json"), {"generator": generator})
    print(f"stories260k: prompts {[len(p) for p in prompts]}, min margin {margin:.4f}")


if __name__ == "__main__":
    main()
