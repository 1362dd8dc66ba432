#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Pivot lychee-eval JSON files into docs/FIDELITY.md's tables.

usage: scripts/fidelity_pivot.py TASK FILE.json [FILE.json ...]

One row per (policy, budget), one column per context length; each cell is
"accuracy / agreement with dense / KV read fraction", then the prompts per cell.
"""
import json
import sys


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    task, files = argv[1], argv[2:]
    rows, lengths, prompts = {}, [], {}
    for name in files:
        with open(name, encoding="utf-8") as f:
            table = json.load(f)["table"]
        for r in table:
            if r.get("task", "needle") != task:
                continue
            if r["context"] not in lengths:
                lengths.append(r["context"])
            rows.setdefault((r["policy"], r["budget"]), {})[r["context"]] = r
            if r["policy"] == "dense":
                prompts[r["context"]] = r["prompts"]
    if not rows:
        print(f"no rows for task {task}", file=sys.stderr)
        return 1
    lengths.sort()
    policies = ["dense", "streaming", "quest", "lychee", "prhs"]
    policies += sorted({p for p, _ in rows} - set(policies))
    print("| policy | budget | " + " | ".join(f"{round(n / 1024)}K" for n in lengths) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in lengths) + " |")
    for p in policies:
        for key in sorted(k for k in rows if k[0] == p):
            cells = []
            for n in lengths:
                r = rows[key].get(n)
                cells.append("not run" if r is None else
                             f"{r['accuracy']:.2f} / {r['agreement']:.2f} / "
                             f"{r['kv_read_fraction']:.2f}")
            budget = "—" if p == "dense" else str(key[1])
            print(f"| {p} | {budget} | " + " | ".join(cells) + " |")
    print()
    print("Prompts per cell: " +
          ", ".join(f"{round(n / 1024)}K: {prompts.get(n, '?')}" for n in lengths) + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
