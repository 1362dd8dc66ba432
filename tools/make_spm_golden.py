#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the differential golden file for our SentencePiece BPE encoder (model/tokenizer/spm_*).

Needs the Python package `sentencepiece` (Debian: python3-sentencepiece, which also ships
`sentencepiece_model_pb2`); the C++ tests only read what this writes.

It writes
  tests/data/spm-variants/<name>.model   small BPE models cut from Llama 2's tokenizer.model, each
                                         switching on what Llama 2 leaves off (see VARIANTS)
  tests/golden/tokenizer/spm-differential.json
      {"models": [{"name", "model", "bos_id", "eos_id", "unk_id", "pad_id", "size",
                   "cases": [{"text", "ids"}]}]}
with `ids` = SentencePieceProcessor.encode(text) (no BOS/EOS: that is the tokenizer's job) for
random strings (fixed seed) mixing ASCII words, space runs, tabs/newlines, digits, accents, CJK,
emoji, rare characters (byte fallback / unk) and the variants' user-defined symbols.

Usage:
  /usr/bin/python3 tools/make_spm_golden.py \\
      --llama2-model tests/data/llama2-tokenizer/tokenizer.model \\
      --variants-dir tests/data/spm-variants --out tests/golden/tokenizer/spm-differential.json
"""

import argparse
import json
import os
import random

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
USER_SYMBOLS = ["<|im_start|>", "<|im_end|>", "[INST]", "ab", "\u2581the\u2581cat"]

# name -> how the cut-down model differs from Llama 2's (which has identity normalization,
# add_dummy_prefix, no remove_extra_whitespaces, byte fallback, no user-defined/unused pieces).
VARIANTS = {
    # Ties everywhere (scores rounded), unused pieces, user-defined symbols, collapsed spaces.
    "ties-unused-user": dict(keep=4000, byte_fallback=True, round_scores=25.0, unused_every=5,
                             user=True, remove_extra_whitespaces=True),
    # No byte fallback (unknown characters become <unk>), no dummy prefix, spaces not escaped.
    "unk-noprefix-noescape": dict(keep=2500, byte_fallback=False, add_dummy_prefix=False,
                                  escape_whitespaces=False),
    # Byte fallback with a small vocabulary, no dummy prefix, collapsed spaces.
    "bytes-small": dict(keep=600, byte_fallback=True, add_dummy_prefix=False,
                        remove_extra_whitespaces=True),
}


def make_variant(base, keep, byte_fallback, round_scores=None, unused_every=0, user=False,
                 add_dummy_prefix=True, remove_extra_whitespaces=False, escape_whitespaces=True):
    m = pb.ModelProto()
    m.CopyFrom(base)
    del m.pieces[:]
    normal = [p for p in base.pieces if p.type == NORMAL][:keep]
    if user:  # A user-defined symbol replaces the normal piece of the same text.
        normal = [p for p in normal if p.piece not in USER_SYMBOLS]
    for p in base.pieces:
        if p.type in (UNKNOWN, CONTROL) or (p.type == BYTE and byte_fallback):
            m.pieces.add().CopyFrom(p)
    if user:
        for s in USER_SYMBOLS:
            m.pieces.add(piece=s, score=0.0, type=USER_DEFINED)
    for i, p in enumerate(normal):
        q = m.pieces.add()
        q.CopyFrom(p)
        if round_scores:
            q.score = round(p.score / round_scores) * round_scores
        # Single characters stay normal so that every string still segments.
        if unused_every and i % unused_every == 0 and len(p.piece) > 1:
            q.type = UNUSED
    m.trainer_spec.byte_fallback = byte_fallback
    m.trainer_spec.vocab_size = len(m.pieces)
    m.normalizer_spec.add_dummy_prefix = add_dummy_prefix
    m.normalizer_spec.remove_extra_whitespaces = remove_extra_whitespaces
    m.normalizer_spec.escape_whitespaces = escape_whitespaces
    return m


def random_text(rng):
    words = ["the", "cat", "Hello", "world", "ab", "abc", "<|im_start|>", "[INST]", "don't",
             "naïve", "café", "Übermaß", "日本語", "中文", "한국어", "😀", "👍🏽", "🦙", "Привет",
             "مرحبا", "𝔘𝔫𝔦", "\u2581", "<s>", "</s>", "x" * 20, "1234567", "3.14", "foo_bar()",
             "\u00a0", "\u200b", "\U0001F9EC"]
    parts = []
    for _ in range(rng.randint(0, 12)):
        r = rng.random()
        if r < 0.5:
            parts.append(rng.choice(words))
        elif r < 0.7:
            parts.append(" " * rng.randint(1, 4))
        elif r < 0.8:
            parts.append(rng.choice(["\n", "\t", "\r\n", " \n ", "\n\n"]))
        elif r < 0.9:
            parts.append("".join(chr(rng.randint(0x20, 0x7e)) for _ in range(rng.randint(1, 6))))
        else:
            # Any code point outside the surrogates: mostly out of vocabulary.
            cp = rng.randint(0xa0, 0x10ffff)
            while 0xd800 <= cp <= 0xdfff:
                cp = rng.randint(0xa0, 0x10ffff)
            parts.append(chr(cp))
    return "".join(parts)


def processor(model):
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(model.SerializeToString())
    return sp


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama2-model", default="tests/data/llama2-tokenizer/tokenizer.model")
    ap.add_argument("--variants-dir", default="tests/data/spm-variants")
    ap.add_argument("--out", default="tests/golden/tokenizer/spm-differential.json")
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=20261123)
    args = ap.parse_args()

    base = pb.ModelProto()
    with open(args.llama2_model, "rb") as f:
        base.ParseFromString(f.read())
    models = [("llama2", args.llama2_model, base)]
    os.makedirs(args.variants_dir, exist_ok=True)
    for name, options in VARIANTS.items():
        path = os.path.join(args.variants_dir, name + ".model")
        variant = make_variant(base, **options)
        with open(path, "wb") as f:
            f.write(variant.SerializeToString())
        models.append((name, path, variant))

    rng = random.Random(args.seed)
    texts = ["", " ", "  ", " a", "a ", "  a  b  ", "\u2581", "ab", "abab", "the cat the  cat"]
    texts += [random_text(rng) for _ in range(args.cases)]
    out = {"generator": "tools/make_spm_golden.py", "sentencepiece": spm.__version__,
           "seed": args.seed, "models": []}
    for name, path, model in models:
        sp = processor(model)
        out["models"].append({
            "name": name, "model": path, "size": sp.get_piece_size(),
            "bos_id": sp.bos_id(), "eos_id": sp.eos_id(), "unk_id": sp.unk_id(),
            "pad_id": sp.pad_id(),
            "cases": [{"text": t, "ids": sp.encode(t)} for t in texts],
        })
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out}: {len(models)} models x {len(texts)} strings")


if __name__ == "__main__":
    main()
