#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Hugging Face transformers baseline for lychee-serve's end-to-end decode and prefill speed.

Builds a random-initialised, Llama-3-8B-shaped `LlamaForCausalLM` (hidden 4096, intermediate 14336,
32 layers, 32 heads / 8 KV heads, head_dim 128, vocab 128256, llama3 rope scaling, bf16) directly on
the GPU -- nothing is downloaded, random weights are fine because only speed is measured -- and times:

  * decode: for each batch x context, a KV cache (`DynamicCache` by default) is filled by a chunked
    prefill of `context` random tokens (untimed), then `--decode-steps` single-token greedy steps
    (argmax of the last logits fed back) are timed with CUDA events -> tokens/s = batch*steps/s and
    ms/step. Cells that cannot fit (KV estimate vs torch.cuda.mem_get_info) or hit an OOM are
    recorded as skipped, as are cells not started before `--time-budget-s`.
  * prefill: batch 1, `--prefill-lengths` tokens through a chunked prefill (one forward per
    `--prefill-chunk` tokens) plus the first greedy token -> tokens/s and TTFT seconds.
  * machine roofs on the same GPU, so ratios can be formed: device-to-device copy bandwidth
    (2 GiB `copy_`, read+write bytes/s, median of 10) and bf16 dense GEMM throughput
    (8192^3 `torch.matmul`, median of 10, TFLOP/s).

Prints markdown tables to stdout and writes JSON (rewritten after every cell, so a killed run still
leaves partial results) to `--json`.

Needs python3 with torch (CUDA) and transformers (4.4x or 5.x); torch/transformers are imported
inside main() so `--help` works without them.

Usage (on the GPU machine):
  python3 tools/hf_decode_baseline.py --json .gpu/hf_baseline.json
  python3 tools/hf_decode_baseline.py --quick --json .gpu/hf_baseline_quick.json   # smoke run
  python3 tools/hf_decode_baseline.py --attn eager --batches 1 --contexts 4096,32768
"""

import argparse
import contextlib
import gc
import json
import math
import os
import statistics
import sys
import time

GIB = 1 << 30

LLAMA3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    hidden_act="silu",
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    attention_bias=False,
    mlp_bias=False,
    bos_token_id=128000,
    eos_token_id=128001,
)
ROPE_THETA = 500000.0
ROPE_SCALING = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=8192)

# Bytes reserved beyond the KV cache for activations, masks, logits and allocator slack.
WORKSPACE_BYTES = 4 * GIB


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Hugging Face transformers decode/prefill baseline on a random Llama-3-8B-shaped "
                    "model (bf16, CUDA).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batches", type=int_list, default=[1, 8, 32], help="decode batch sizes")
    p.add_argument("--contexts", type=int_list, default=[4096, 32768, 131072],
                   help="decode context lengths (tokens already in the KV cache)")
    p.add_argument("--decode-steps", type=int, default=32, help="timed decode steps per cell")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed decode steps per cell")
    p.add_argument("--prefill-lengths", type=int_list, default=[4096, 32768],
                   help="batch-1 prefill lengths to time")
    p.add_argument("--prefill-chunk", type=int, default=4096,
                   help="tokens per forward in chunked prefill (per row; decode cache builds at "
                        "batch B use max(64, chunk/B) per row to bound activation memory)")
    p.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa",
                   help="transformers attention implementation")
    p.add_argument("--cache", choices=["dynamic", "static"], default="dynamic",
                   help="KV cache class: DynamicCache (default, torch.cat growth) or StaticCache "
                        "(preallocated; best effort across transformers versions)")
    p.add_argument("--time-budget-s", type=float, default=420.0,
                   help="stop starting new cells once this many seconds have elapsed since start")
    p.add_argument("--json", default="hf_decode_baseline.json", help="where to write JSON results")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: batch 1, context 4096, 8 decode steps, prefill 4096 only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-roofs", action="store_true",
                   help="skip the copy-bandwidth and GEMM measurements")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.contexts, args.decode_steps, args.prefill_lengths = [1], [4096], 8, [4096]
    if args.decode_steps < 1 or args.prefill_chunk < 1 or args.warmup_steps < 0:
        p.error("--decode-steps and --prefill-chunk must be >= 1, --warmup-steps >= 0")
    if not args.batches or not args.contexts:
        p.error("--batches and --contexts must not be empty")
    if any(x < 1 for x in args.batches + args.contexts + args.prefill_lengths):
        p.error("batches, contexts and prefill lengths must be positive")
    return args


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def kv_bytes(batch, tokens, cfg=LLAMA3_8B, elem_bytes=2):
    return (batch * tokens * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * cfg["head_dim"]
            * 2 * elem_bytes)


def expected_llama3_inv_freq(torch):
    dim = LLAMA3_8B["head_dim"]
    inv = 1.0 / (ROPE_THETA ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    factor, low, high = ROPE_SCALING["factor"], ROPE_SCALING["low_freq_factor"], ROPE_SCALING["high_freq_factor"]
    orig = ROPE_SCALING["original_max_position_embeddings"]
    low_wl, high_wl = orig / low, orig / high
    wl = 2 * math.pi / inv
    inv_l = torch.where(wl > low_wl, inv / factor, inv)
    smooth = (orig / wl - low) / (high - low)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    medium = ~(wl < high_wl) & ~(wl > low_wl)
    return torch.where(medium, smoothed, inv_l)


class Bench:
    def __init__(self, args):
        self.args = args
        self.t0 = time.monotonic()
        import torch
        import transformers
        self.torch = torch
        self.transformers = transformers
        self.oom_types = tuple(t for t in (getattr(torch.cuda, "OutOfMemoryError", None),
                                           getattr(torch, "OutOfMemoryError", None)) if t)
        self.result = {
            "tool": "tools/hf_decode_baseline.py",
            "device": torch.cuda.get_device_name(0),
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
            "cuda_version": torch.version.cuda,
            "args": {k: v for k, v in vars(args).items()},
            "attn_implementation": args.attn,
            "cache": args.cache,
            "dtype": "bfloat16",
            "config": dict(LLAMA3_8B, rope_theta=ROPE_THETA, rope_scaling=ROPE_SCALING),
            "copy_bandwidth_bytes_per_s": None,
            "bf16_gemm_tflops": None,
            "decode": [],
            "prefill": [],
            "notes": [],
        }

    # ---------------------------------------------------------------- helpers
    def elapsed(self):
        return time.monotonic() - self.t0

    def over_budget(self):
        return self.elapsed() > self.args.time_budget_s

    def hard_over_budget(self):
        # Abort a cell already running well past the budget (device commands are hard-killed).
        return self.elapsed() > self.args.time_budget_s + 90.0

    def is_oom(self, e):
        if self.oom_types and isinstance(e, self.oom_types):
            return True
        return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()

    def free_memory(self):
        gc.collect()
        self.torch.cuda.empty_cache()

    def save(self):
        path = self.args.json
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        self.result["elapsed_s"] = round(self.elapsed(), 2)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.result, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)

    def time_events(self, fn, iters, warmup):
        torch = self.torch
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
        return statistics.median(times)

    # ---------------------------------------------------------------- roofs
    def measure_roofs(self):
        torch = self.torch
        try:
            n = 2 * GIB
            src = torch.empty(n, dtype=torch.uint8, device="cuda")
            src.fill_(1)
            dst = torch.empty_like(src)
            sec = self.time_events(lambda: dst.copy_(src), iters=10, warmup=3)
            self.result["copy_bandwidth_bytes_per_s"] = 2 * n / sec
            del src, dst
        except Exception as e:  # noqa: BLE001
            self.result["notes"].append(f"copy bandwidth failed: {e!r}")
        self.free_memory()
        try:
            m = 8192
            a = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
            b = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
            out = torch.empty(m, m, dtype=torch.bfloat16, device="cuda")
            sec = self.time_events(lambda: torch.matmul(a, b, out=out), iters=10, warmup=5)
            self.result["bf16_gemm_tflops"] = 2 * m ** 3 / sec / 1e12
            del a, b, out
        except Exception as e:  # noqa: BLE001
            self.result["notes"].append(f"bf16 gemm failed: {e!r}")
        self.free_memory()
        log(f"[roofs] copy {fmt_num(self.result['copy_bandwidth_bytes_per_s'], 1e9)} GB/s, "
            f"bf16 gemm {fmt_num(self.result['bf16_gemm_tflops'])} TFLOP/s")

    # ---------------------------------------------------------------- model
    def config_attempts(self):
        """Ways to spell the llama3 rope config; transformers 5 uses rope_parameters, 4.x
        rope_theta + rope_scaling. Returns [(name, make)] in the order to try."""
        from transformers import LlamaConfig
        major = int(self.transformers.__version__.split(".")[0])
        rope_params = dict(ROPE_SCALING, rope_theta=ROPE_THETA)
        attempts = [
            ("rope_parameters", lambda: LlamaConfig(**LLAMA3_8B, rope_parameters=dict(rope_params))),
            ("rope_scaling", lambda: LlamaConfig(**LLAMA3_8B, rope_theta=ROPE_THETA,
                                                 rope_scaling=dict(ROPE_SCALING))),
            ("from_dict", lambda: LlamaConfig.from_dict(dict(LLAMA3_8B, rope_theta=ROPE_THETA,
                                                             rope_scaling=dict(ROPE_SCALING)))),
        ]
        if major < 5:
            attempts = [attempts[1], attempts[2], attempts[0]]
        return attempts

    def no_init_context(self):
        for modname in ("transformers.initialization", "transformers.modeling_utils"):
            try:
                mod = __import__(modname, fromlist=["no_init_weights"])
                fn = getattr(mod, "no_init_weights", None)
                if fn is not None:
                    return fn(), modname
            except Exception:  # noqa: BLE001
                continue
        return contextlib.nullcontext(), None

    def build_model(self, cfg, skip_init):
        torch = self.torch
        from transformers import LlamaForCausalLM
        try:
            cfg._attn_implementation = self.args.attn
        except Exception:  # noqa: BLE001
            pass
        old_dtype = torch.get_default_dtype()
        ctx, how = (self.no_init_context() if skip_init else (contextlib.nullcontext(), None))
        try:
            torch.set_default_dtype(torch.bfloat16)
            with torch.device("cuda"), ctx:
                model = LlamaForCausalLM(cfg)
        finally:
            torch.set_default_dtype(old_dtype)
        with torch.no_grad():
            for p in model.parameters():
                if p.dtype != torch.bfloat16:
                    p.data = p.data.to(torch.bfloat16)
                if p.device.type != "cuda":
                    p.data = p.data.cuda()
                # Cheap on-GPU random fill either way: well-scaled values, never uninitialised memory.
                if p.dim() == 1:
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, 0.02)
            for name, b in model.named_buffers():
                if b.device.type != "cuda":
                    raise RuntimeError(f"buffer {name} not on cuda")
                if b.is_floating_point() and not torch.isfinite(b).all():
                    raise RuntimeError(f"buffer {name} not finite (skipped init?)")
        model.eval()
        impl = getattr(model.config, "_attn_implementation", None)
        if impl != self.args.attn and hasattr(model, "set_attn_implementation"):
            try:
                model.set_attn_implementation(self.args.attn)
            except Exception as e:  # noqa: BLE001
                self.result["notes"].append(f"set_attn_implementation failed: {e!r}"[:300])
        return model, how

    def rope_check(self, model):
        """True/False whether the rotary inv_freq matches llama3 scaling; None if not checkable."""
        torch = self.torch
        try:
            for name, b in model.named_buffers():
                if name.endswith("inv_freq") and "original" not in name:
                    exp = expected_llama3_inv_freq(torch).to(b.device)
                    return bool(torch.allclose(b.float(), exp, rtol=1e-3, atol=1e-9))
        except Exception as e:  # noqa: BLE001
            self.result["notes"].append(f"rope check failed: {e!r}"[:300])
        return None

    def load_model(self):
        """Builds the model, trying config spellings x (no-init, normal init) until the llama3
        rope is verified; falls back to the first model that built, with a warning."""
        t = time.monotonic()
        errors = []
        fallback = None  # (model, how, cfg_name, rope_ok)
        chosen = None
        for cfg_name, make in self.config_attempts():
            try:
                cfg = make()
            except Exception as e:  # noqa: BLE001
                errors.append(f"config {cfg_name}: {e!r}"[:300])
                continue
            for skip_init in (True, False):
                try:
                    model, how = self.build_model(cfg, skip_init=skip_init)
                except Exception as e:  # noqa: BLE001
                    errors.append(f"build ({cfg_name}, skip_init={skip_init}): {e!r}"[:300])
                    self.free_memory()
                    continue
                rope_ok = self.rope_check(model)
                if rope_ok is not False:
                    chosen = (model, how, cfg_name, rope_ok)
                    break
                errors.append(f"rope mismatch ({cfg_name}, skip_init={skip_init})")
                if fallback is None:
                    fallback = (model, how, cfg_name, rope_ok)
                else:
                    del model
                    self.free_memory()
            if chosen:
                break
        if chosen is None:
            chosen = fallback
        if chosen is None:
            raise RuntimeError("could not build the model: " + "; ".join(errors))
        if fallback is not None and fallback is not chosen:
            fallback = None
            self.free_memory()
        model, how, cfg_name, rope_ok = chosen
        self.model = model
        self.result["model_build_s"] = round(time.monotonic() - t, 2)
        self.result["config_built_via"] = cfg_name
        if errors:
            self.result["notes"].append("model build attempts: " + "; ".join(errors))
        self.result["no_init_weights"] = how
        self.result["attn_implementation"] = getattr(model.config, "_attn_implementation", self.args.attn)
        try:
            self.result["config_hf"] = model.config.to_dict()
        except Exception:  # noqa: BLE001
            pass
        self.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        self.result["weight_bytes"] = self.weight_bytes
        self.result["num_parameters"] = sum(p.numel() for p in model.parameters())
        self.result["rope_llama3_verified"] = rope_ok
        if rope_ok is False:
            self.result["notes"].append("WARNING: rotary inv_freq does not match llama3 scaling")
        import inspect
        params = inspect.signature(model.forward).parameters
        self.logits_kw = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
        log(f"[model] built in {self.result['model_build_s']} s, {self.weight_bytes / GIB:.2f} GiB weights, "
            f"attn={self.result['attn_implementation']}, no_init={how}, rope_ok={rope_ok}, "
            f"logits kw={self.logits_kw}")

    # ---------------------------------------------------------------- cache + forward
    def new_cache(self, batch, max_len):
        if self.args.cache == "static":
            from transformers import StaticCache
            cfg = self.model.config
            torch = self.torch
            tries = [
                lambda: StaticCache(config=cfg, max_cache_len=max_len, max_batch_size=batch,
                                    device="cuda", dtype=torch.bfloat16),
                lambda: StaticCache(config=cfg, max_cache_len=max_len),
                lambda: StaticCache(cfg, batch, max_len, "cuda", torch.bfloat16),
            ]
        else:
            from transformers import DynamicCache
            cfg = self.model.config
            tries = [lambda: DynamicCache(config=cfg), lambda: DynamicCache()]
        err = None
        for t in tries:
            try:
                return t()
            except Exception as e:  # noqa: BLE001
                err = e
        raise RuntimeError(f"could not construct {self.args.cache} cache: {err!r}")

    def forward(self, ids, cache, pos):
        torch = self.torch
        kw = dict(input_ids=ids, past_key_values=cache, use_cache=True)
        if self.logits_kw:
            kw[self.logits_kw] = 1
        if self.args.cache == "static":
            kw["cache_position"] = torch.arange(pos, pos + ids.shape[1], device="cuda")
        out = self.model(**kw)
        cache = out.past_key_values if getattr(out, "past_key_values", None) is not None else cache
        return out.logits[:, -1, :], cache

    def chunk_len(self, batch, context, per_row_chunk):
        c = per_row_chunk
        # SDPA with a prefix cache materialises a [B, 1, q, kv] mask; eager materialises
        # [B, heads, q, kv] scores (+ fp32 softmax). Bound both.
        c = min(c, max(16, int(2 * GIB // max(1, batch * context * 2))))
        if self.args.attn == "eager":
            c = min(c, max(16, int(4 * GIB // max(1, batch * LLAMA3_8B["num_attention_heads"] * context * 6))))
        return max(1, min(c, context))

    def prefill(self, batch, length, chunk, cache, gen):
        torch = self.torch
        pos = 0
        logits = None
        while pos < length:
            n = min(chunk, length - pos)
            ids = torch.randint(0, LLAMA3_8B["vocab_size"], (batch, n), device="cuda", generator=gen)
            logits, cache = self.forward(ids, cache, pos)
            pos += n
            if self.hard_over_budget():
                raise TimeoutError("time budget exceeded mid-prefill")
        return logits, cache

    # ---------------------------------------------------------------- cells
    def fits(self, batch, context):
        torch = self.torch
        self.free_memory()
        free, total = torch.cuda.mem_get_info()
        extra = self.args.warmup_steps + self.args.decode_steps + 1
        need = kv_bytes(batch, context + extra)
        if self.args.cache == "dynamic":
            need += kv_bytes(batch, context + extra) // LLAMA3_8B["num_hidden_layers"]  # torch.cat transient
        need += WORKSPACE_BYTES
        return need <= free, need, free, total

    def warmup(self):
        torch = self.torch
        gen = torch.Generator(device="cuda")
        gen.manual_seed(self.args.seed + 12345)
        length = min(2 * self.args.prefill_chunk, 8192)
        cache = self.new_cache(1, length + 4)
        chunk = self.chunk_len(1, length, self.args.prefill_chunk)
        with torch.inference_mode():
            logits, cache = self.prefill(1, length, chunk, cache, gen)
            tok = logits.argmax(-1, keepdim=True)
            for i in range(2):
                logits, cache = self.forward(tok, cache, length + i)
                tok = logits.argmax(-1, keepdim=True)
        torch.cuda.synchronize()
        del cache, logits, tok

    def decode_cell(self, batch, context):
        torch = self.torch
        args = self.args
        gen = torch.Generator(device="cuda")
        gen.manual_seed(args.seed + batch * 1000003 + context)
        chunk = self.chunk_len(batch, context, max(64, args.prefill_chunk // batch))
        total_len = context + args.warmup_steps + args.decode_steps + 1
        cache = self.new_cache(batch, total_len)
        t_build = time.monotonic()
        with torch.inference_mode():
            logits, cache = self.prefill(batch, context, chunk, cache, gen)
            tok = logits.argmax(-1, keepdim=True)
            pos = context
            for _ in range(args.warmup_steps):
                logits, cache = self.forward(tok, cache, pos)
                tok = logits.argmax(-1, keepdim=True)
                pos += 1
            torch.cuda.synchronize()
            build_s = time.monotonic() - t_build
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(args.decode_steps):
                logits, cache = self.forward(tok, cache, pos)
                tok = logits.argmax(-1, keepdim=True)
                pos += 1
            end.record()
            torch.cuda.synchronize()
        sec = start.elapsed_time(end) / 1e3
        peak = torch.cuda.max_memory_allocated()
        del cache, logits, tok
        return {
            "batch": batch, "context": context,
            "tokens_per_s": batch * args.decode_steps / sec,
            "ms_per_step": sec * 1e3 / args.decode_steps,
            "decode_steps": args.decode_steps,
            "cache_build_s": round(build_s, 2),
            "cache_build_chunk": chunk,
            "peak_allocated_bytes": peak,
        }

    def prefill_cell(self, length):
        torch = self.torch
        args = self.args
        gen = torch.Generator(device="cuda")
        gen.manual_seed(args.seed + 777 + length)
        chunk = self.chunk_len(1, length, args.prefill_chunk)
        cache = self.new_cache(1, length + 1)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.inference_mode():
            start.record()
            logits, cache = self.prefill(1, length, chunk, cache, gen)
            tok = logits.argmax(-1, keepdim=True)
            end.record()
            torch.cuda.synchronize()
        sec = start.elapsed_time(end) / 1e3
        del cache, logits, tok
        return {"batch": 1, "length": length, "chunk": chunk, "forwards": math.ceil(length / chunk),
                "tokens_per_s": length / sec, "ttft_s": sec,
                "peak_allocated_bytes": torch.cuda.max_memory_allocated()}

    def run_guarded(self, fn, base):
        """Runs fn(); on OOM/timeout frees memory and returns base + skipped."""
        self.torch.cuda.reset_peak_memory_stats()
        reason = None
        try:
            return fn()
        except TimeoutError as e:
            reason = f"time budget ({e})"
        except Exception as e:  # noqa: BLE001
            if self.is_oom(e):
                reason = "out of memory: " + str(e).splitlines()[0][:200]
            else:
                reason = f"error: {e!r}"[:400]
        # Exception (and its frames holding tensors) is released here.
        self.free_memory()
        return dict(base, skipped=reason)

    def run(self):
        args = self.args
        torch = self.torch
        torch.manual_seed(args.seed)
        if not args.skip_roofs:
            self.measure_roofs()
        self.save()
        self.load_model()
        self.save()
        try:
            self.warmup()
        except Exception as e:  # noqa: BLE001
            self.result["notes"].append(f"warmup failed: {e!r}"[:400])
        self.free_memory()

        for length in args.prefill_lengths:
            base = {"batch": 1, "length": length}
            if self.over_budget():
                cell = dict(base, skipped="time budget")
            else:
                ok, need, free, _ = self.fits(1, length)
                if not ok:
                    cell = dict(base, skipped=f"would not fit: need ~{need / GIB:.1f} GiB, free {free / GIB:.1f} GiB")
                else:
                    cell = self.run_guarded(lambda: self.prefill_cell(length), base)
            self.result["prefill"].append(cell)
            log(f"[prefill] {fmt_cell(cell)}  (t={self.elapsed():.0f}s)")
            self.save()
            self.free_memory()

        for context in args.contexts:
            for batch in args.batches:
                base = {"batch": batch, "context": context,
                        "kv_bytes_estimate": kv_bytes(batch, context)}
                if self.over_budget():
                    cell = dict(base, skipped="time budget")
                else:
                    ok, need, free, _ = self.fits(batch, context)
                    if not ok:
                        cell = dict(base, skipped=(f"would not fit: need ~{need / GIB:.1f} GiB "
                                                   f"(KV {kv_bytes(batch, context) / GIB:.1f} GiB + workspace) "
                                                   f"beyond {self.weight_bytes / GIB:.1f} GiB weights, "
                                                   f"free {free / GIB:.1f} GiB"))
                    else:
                        cell = self.run_guarded(lambda: dict(base, **self.decode_cell(batch, context)), base)
                self.result["decode"].append(cell)
                log(f"[decode] {fmt_cell(cell)}  (t={self.elapsed():.0f}s)")
                self.save()
                self.free_memory()
        self.save()
        print_tables(self.result)


def fmt_num(x, scale=1.0, digits=1):
    return "-" if x is None else f"{x / scale:.{digits}f}"


def fmt_cell(c):
    if "skipped" in c:
        return f"{c} "
    keys = [k for k in ("batch", "context", "length", "tokens_per_s", "ms_per_step", "ttft_s") if k in c]
    return ", ".join(f"{k}={c[k]:.3f}" if isinstance(c[k], float) else f"{k}={c[k]}" for k in keys)


def print_tables(r):
    print(f"## Hugging Face transformers baseline ({r['attn_implementation']}, {r['cache']} cache, bf16)")
    print()
    print(f"- device: {r['device']}; torch {r['torch_version']}; transformers {r['transformers_version']}")
    print(f"- copy bandwidth (D2D, read+write): {fmt_num(r['copy_bandwidth_bytes_per_s'], 1e9)} GB/s; "
          f"bf16 GEMM 8192^3: {fmt_num(r['bf16_gemm_tflops'])} TFLOP/s")
    print(f"- rope llama3 verified: {r.get('rope_llama3_verified')}; model build {r.get('model_build_s')} s; "
          f"total {r.get('elapsed_s')} s")
    for n in r["notes"]:
        print(f"- note: {n}")
    print()
    print("| batch | context | decode tok/s | ms/step | note |")
    print("|---:|---:|---:|---:|---|")
    for c in r["decode"]:
        if "skipped" in c:
            print(f"| {c['batch']} | {c['context']} | - | - | skipped: {c['skipped']} |")
        else:
            print(f"| {c['batch']} | {c['context']} | {c['tokens_per_s']:.1f} | {c['ms_per_step']:.2f} | "
                  f"cache build {c['cache_build_s']} s |")
    print()
    print("| prefill tokens (batch 1) | chunk | tok/s | TTFT s | note |")
    print("|---:|---:|---:|---:|---|")
    for c in r["prefill"]:
        if "skipped" in c:
            print(f"| {c['length']} | - | - | - | skipped: {c['skipped']} |")
        else:
            print(f"| {c['length']} | {c['chunk']} | {c['tokens_per_s']:.1f} | {c['ttft_s']:.3f} | |")
    sys.stdout.flush()


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"error: needs torch and transformers: {e}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: CUDA is not available", file=sys.stderr)
        return 2
    bench = Bench(args)
    bench.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
