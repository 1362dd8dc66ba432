#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Where a kernel's warps wait, from Nsight Compute's source page (SASS, CSV).

Reads the output of
  ncu --section SourceCounters --section WarpStateStats --warp-sampling-interval 0 \
      -k regex:KERNEL --launch-count 1 -o REPORT BINARY ...
  ncu -i REPORT.ncu-rep --page source --csv --print-source sass > SOURCE.csv
(or --print-source cuda: the same per line of CUDA source, when the kernels carry -lineinfo)
and prints the sample count, the stall reasons over the whole kernel, and every instruction that
holds at least --min-percent of the samples with its two largest stall reasons and its index in
the listing, so runs of hot instructions show which phase of the kernel they belong to. The
default sampling interval gives too few samples for a kernel of ~20 µs (135 for SelectKernel):
pass --warp-sampling-interval 0 (ncu 2025 has no --sampling-interval).

Usage: python3 tools/ncu_source_hotspots.py SOURCE.csv [--min-percent 0.6] [--top 40]
"""

import argparse
import csv
import sys

SAMPLES = "Warp Stall Sampling (All Samples)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source_csv")
    ap.add_argument("--min-percent", type=float, default=0.6,
                    help="list instructions holding at least this share of the samples")
    ap.add_argument("--top", type=int, default=40, help="list at most this many instructions")
    args = ap.parse_args()

    with open(args.source_csv, newline="") as f:
        rows = list(csv.reader(f))
    # Row 0 names the kernel; row 1 is the header; then one row per SASS instruction.
    header_at = next((i for i, r in enumerate(rows) if SAMPLES in r), None)
    if header_at is None:
        print(f"{args.source_csv}: no '{SAMPLES}' column (was the report sampled?)", file=sys.stderr)
        return 1
    header, data = rows[header_at], rows[header_at + 1:]
    source = header.index("Source")
    samples = header.index(SAMPLES)
    stalls = [i for i, h in enumerate(header) if h.startswith("stall_") and "Not Issued" not in h]
    reason = {i: header[i][len("stall_"):] for i in stalls}
    data = [r for r in data if len(r) > samples]

    def count(r, i):
        try:
            return int(r[i] or 0)
        except ValueError:
            return 0

    total = sum(count(r, samples) for r in data)
    if header_at > 0 and rows[0]:
        print(rows[0][1] if len(rows[0]) > 1 else rows[0][0])
    print(f"{total} samples over {len(data)} instructions")
    if total == 0:
        return 0
    by_reason = {name: sum(count(r, i) for r in data) for i, name in reason.items()}
    print("stall reasons: " + ", ".join(
        f"{name} {100.0 * n / total:.1f}%" for name, n in sorted(by_reason.items(), key=lambda x: -x[1])
        if n > 0))
    hot = [(k, r) for k, r in enumerate(data) if count(r, samples) >= total * args.min_percent / 100.0]
    hot = sorted(hot, key=lambda kr: -count(kr[1], samples))[:args.top]
    print(f"{'index':>6} {'share':>6}  {'instruction':<56} top stalls")
    for k, r in sorted(hot, key=lambda kr: kr[0]):
        top = sorted(((count(r, i), reason[i]) for i in stalls), reverse=True)[:2]
        reasons = ", ".join(f"{name} {n}" for n, name in top if n > 0)
        print(f"{k:6d} {100.0 * count(r, samples) / total:5.1f}%  {r[source].strip()[:56]:<56} {reasons}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
