#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes one random fp32 Llama twice: as a Hugging Face folder (config.json + model.safetensors,
what lychee loads) and as a GGUF file (what llama.cpp loads), from the same numpy arrays.

The shape is bench/synthetic_llama.h's: hidden 768, 12 layers, 12 heads of 64, 3 KV heads,
SwiGLU 2112, vocab 32000, untied LM head (~125M parameters). Weights are uniform in
[-0.05, 0.05], norms 1, seeded. Q and K rows are permuted for GGUF exactly as llama.cpp's
convert_hf_to_gguf.py does for Llama (its RoPE pairs adjacent dims; HF rotates halves), so the
two files are the same model. The GGUF vocabulary is a placeholder (the benches feed token ids).

Needs numpy and llama.cpp's gguf-py (PYTHONPATH=<llama.cpp>/gguf-py).
Usage: make_random_llama.py OUT_DIR [--layers 12] [--hidden 768] [--context 8192]
"""
import argparse
import json
import os
import struct

import numpy as np
import gguf


def permute(w, n_head, n_head_kv):
    # convert_hf_to_gguf.py LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def write_safetensors(path, tensors):
    header = {}
    offset = 0
    for name, arr in tensors.items():
        nbytes = arr.size * 4
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in tensors.values():
            f.write(np.ascontiguousarray(arr, dtype="<f4").tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--context", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    hidden, layers = a.hidden, a.layers
    head_dim = 64
    n_head = hidden // head_dim
    n_kv = max(1, n_head // 4)
    inter = hidden * 11 // 4
    vocab = 32000
    eps = 1e-5
    theta = 10000.0
    rng = np.random.default_rng(a.seed)

    def rnd(*shape):
        return rng.uniform(-0.05, 0.05, size=shape).astype(np.float32)

    t = {}
    t["model.embed_tokens.weight"] = rnd(vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = np.ones(hidden, np.float32)
        t[p + "self_attn.q_proj.weight"] = rnd(n_head * head_dim, hidden)
        t[p + "self_attn.k_proj.weight"] = rnd(n_kv * head_dim, hidden)
        t[p + "self_attn.v_proj.weight"] = rnd(n_kv * head_dim, hidden)
        t[p + "self_attn.o_proj.weight"] = rnd(hidden, n_head * head_dim)
        t[p + "post_attention_layernorm.weight"] = np.ones(hidden, np.float32)
        t[p + "mlp.gate_proj.weight"] = rnd(inter, hidden)
        t[p + "mlp.up_proj.weight"] = rnd(inter, hidden)
        t[p + "mlp.down_proj.weight"] = rnd(hidden, inter)
    t["model.norm.weight"] = np.ones(hidden, np.float32)
    t["lm_head.weight"] = rnd(vocab, hidden)

    hf = os.path.join(a.out_dir, "hf")
    os.makedirs(hf, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": n_head, "num_key_value_heads": n_kv, "head_dim": head_dim,
        "vocab_size": vocab, "max_position_embeddings": a.context, "rms_norm_eps": eps,
        "rope_theta": theta, "hidden_act": "silu", "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    }
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_safetensors(os.path.join(hf, "model.safetensors"), t)

    w = gguf.GGUFWriter(os.path.join(a.out_dir, "model-f32.gguf"), "llama")
    w.add_name("random-llama-f32")
    w.add_context_length(a.context)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(inter)
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_freq_base(theta)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [
        gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(gguf.TokenType.BYTE)
    while len(tokens) < vocab:
        tokens.append(f"\u2581t{len(tokens)}")
        scores.append(-float(len(tokens)))
        types.append(gguf.TokenType.NORMAL)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    w.add_tensor("token_embd.weight", t["model.embed_tokens.weight"])
    for i in range(layers):
        p = f"model.layers.{i}."
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", t[p + "input_layernorm.weight"])
        w.add_tensor(b + "attn_q.weight", permute(t[p + "self_attn.q_proj.weight"], n_head, n_head))
        w.add_tensor(b + "attn_k.weight", permute(t[p + "self_attn.k_proj.weight"], n_head, n_kv))
        w.add_tensor(b + "attn_v.weight", t[p + "self_attn.v_proj.weight"])
        w.add_tensor(b + "attn_output.weight", t[p + "self_attn.o_proj.weight"])
        w.add_tensor(b + "ffn_norm.weight", t[p + "post_attention_layernorm.weight"])
        w.add_tensor(b + "ffn_gate.weight", t[p + "mlp.gate_proj.weight"])
        w.add_tensor(b + "ffn_up.weight", t[p + "mlp.up_proj.weight"])
        w.add_tensor(b + "ffn_down.weight", t[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", t["model.norm.weight"])
    w.add_tensor("output.weight", t["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    params = sum(x.size for x in t.values())
    print(f"random Llama: {params / 1e6:.1f}M parameters -> {hf} and "
          f"{os.path.join(a.out_dir, 'model-f32.gguf')}")


if __name__ == "__main__":
    main()
