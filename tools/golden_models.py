# SPDX-License-Identifier: Apache-2.0
"""The golden model architectures, shared by tools/make_reference.py (transformers, authoritative)
and tools/numpy_reference.py (interim numpy transcription), so both write the same folders.

name -> (hub-style config.json, storage dtype "F32"|"BF16", max shard bytes or None, prompt lengths)
"""

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=1024, max_position_embeddings=512,
              rms_norm_eps=1e-6, hidden_act="silu", bos_token_id=1, eos_token_id=2)

# Weights are drawn N(0, INIT_STD) (norm weights U(0.5, 1.5), biases N(0, INIT_STD)) so that the
# logits are far from uniform and greedy choices have clear margins.
INIT_STD = 0.2

GREEDY_STEPS = 16

MODELS = {
    "llama3_rope": (dict(COMMON, architectures=["LlamaForCausalLM"], model_type="llama",
                         num_attention_heads=8, rope_theta=500000.0, tie_word_embeddings=False,
                         attention_bias=False, mlp_bias=False,
                         rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0,
                                           original_max_position_embeddings=32)),
                    "F32", None, [3, 9, 33]),
    "qwen3_tiny": (dict(COMMON, architectures=["Qwen3ForCausalLM"], model_type="qwen3",
                        head_dim=32, rope_theta=1000000.0, tie_word_embeddings=True,
                        attention_bias=False, use_sliding_window=False, sliding_window=None,
                        rope_scaling=None),
                   "F32", None, [5, 30]),
    "qwen2_tiny": (dict(COMMON, architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                        rope_theta=10000.0, tie_word_embeddings=False, use_sliding_window=False,
                        sliding_window=None, rope_scaling=dict(type="linear", factor=2.0)),
                   "BF16", None, [4, 25]),
    "mistral_tiny": (dict(COMMON, architectures=["MistralForCausalLM"], model_type="mistral",
                          head_dim=16, rope_theta=10000.0, tie_word_embeddings=False,
                          sliding_window=8),
                     "F32", 400_000, [6, 21]),
}
