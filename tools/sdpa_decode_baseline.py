#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""torch SDPA decode attention on the shapes of bench/cuda_decode_attention_bench, for the ratio table.

One query token per sequence against contiguous K/V (torch.nn.functional.scaled_dot_product_attention
with enable_gqa, whichever backend torch picks), Llama-3-8B heads (32 q, 8 KV, d128), bf16, random
data. Timing matches our bench: CUDA events around each call, L2 flushed (a 512 MiB memset) before
every sample unless --warm, median of --iters samples. Bandwidth = K/V bytes / time, and "% of copy"
against a device-to-device copy of the same bytes measured here (read + written bytes / time).

Then, with --ours PATH (the JSON of cuda_decode_attention_bench from the same device call), prints
one table: ours µs, ours % of copy, SDPA µs, SDPA % of copy, ours speed / SDPA.

Usage (GPU machine, in the same call as the bench):
  .gpu/bundle/bin/cuda_decode_attention_bench --json $OUT/ours.json
  python3 tools/sdpa_decode_baseline.py --ours $OUT/ours.json --json $OUT/sdpa.json
"""

import argparse
import json
import statistics


def time_it(torch, fn, iters, flush, warm):
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    fn()  # warm-up (kernel selection)
    samples = []
    for i in range(iters):
        if not warm:
            flush.fill_(i & 0xFF)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        samples.append(start.elapsed_time(stop) * 1e3)  # µs
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--contexts", default="4096,32768,131072")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warm", action="store_true")
    ap.add_argument("--ours", help="cuda_decode_attention_bench JSON to compare against")
    ap.add_argument("--json", help="write the SDPA results (and the comparison) here")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda")
    flush = torch.empty(512 << 20, dtype=torch.uint8, device=dev)
    rows = []
    for bs in [int(x) for x in args.batches.split(",")]:
        for ctx in [int(x) for x in args.contexts.split(",")]:
            g = torch.Generator(device=dev).manual_seed(bs * 1000003 + ctx)
            q = torch.randn(bs, args.heads, 1, args.head_dim, device=dev, dtype=torch.bfloat16, generator=g)
            k = torch.randn(bs, args.kv_heads, ctx, args.head_dim, device=dev, dtype=torch.bfloat16, generator=g)
            v = torch.randn_like(k)
            kv_bytes = 2 * k.numel() * k.element_size()
            sdpa_us = time_it(torch, lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                              args.iters, flush, args.warm)
            src = torch.empty(kv_bytes, dtype=torch.uint8, device=dev)
            dst = torch.empty_like(src)
            copy_us = time_it(torch, lambda: dst.copy_(src), args.iters, flush, args.warm)
            rows.append(dict(batch=bs, context=ctx, kv_bytes=kv_bytes, sdpa_us=sdpa_us, copy_us=copy_us,
                             sdpa_gbs=kv_bytes / sdpa_us * 1e-3, copy_gbs=2 * kv_bytes / copy_us * 1e-3))
            del q, k, v, src, dst
            torch.cuda.empty_cache()

    print(f"\ntorch {torch.__version__}, {torch.cuda.get_device_name()}, "
          f"{'warm' if args.warm else 'cold'} L2, median of {args.iters}")
    print("| batch x context | SDPA µs | SDPA GB/s | copy GB/s | SDPA % of copy |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['batch']} x {r['context'] // 1024}K | {r['sdpa_us']:.1f} | {r['sdpa_gbs']:.0f} | "
              f"{r['copy_gbs']:.0f} | {100 * r['sdpa_gbs'] / r['copy_gbs']:.0f}% |")

    out = dict(bench="sdpa_decode", torch=torch.__version__, gpu=torch.cuda.get_device_name(),
               l2="warm" if args.warm else "cold", iters=args.iters, results=rows)
    if args.ours:
        ours = {(r["batch"], r["context"]): r for r in json.load(open(args.ours))["results"]}
        print("\n| batch x context | ours µs | ours % of copy | SDPA µs | SDPA % of copy | ours speed / SDPA |")
        print("| --- | --- | --- | --- | --- | --- |")
        compare = []
        for r in rows:
            o = ours.get((r["batch"], r["context"]))
            if o is None:
                continue
            # Both "% of copy" against our bench's copy (same bytes, same call), so they compare.
            ratio = r["sdpa_us"] / o["attention_us"]
            compare.append(dict(batch=r["batch"], context=r["context"], ours_us=o["attention_us"], sdpa_us=r["sdpa_us"],
                                ours_frac=o["attention_gb_per_s"] / o["copy_gb_per_s"], sdpa_frac=r["sdpa_gbs"] / o["copy_gb_per_s"],
                                speedup=ratio))
            print(f"| {r['batch']} x {r['context'] // 1024}K | {o['attention_us']:.1f} | "
                  f"{100 * o['attention_gb_per_s'] / o['copy_gb_per_s']:.0f}% | {r['sdpa_us']:.1f} | "
                  f"{100 * r['sdpa_gbs'] / o['copy_gb_per_s']:.0f}% | {ratio:.2f}x |")
        out["compare"] = compare
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
