"""Side-by-side TTFT and throughput from bench_serving's --output-file JSON lines (bench/gpu).

Each line bench_serving appends carries the --tag it was run with ("<variant> <workload>"); the
last line per tag wins. Prints one table per workload, patched / pristine ratios included.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

KEYS = [
    ("mean_ttft_ms", "TTFT mean (ms)"),
    ("median_ttft_ms", "TTFT median (ms)"),
    ("p99_ttft_ms", "TTFT p99 (ms)"),
    ("output_throughput", "output tokens/s"),
    ("input_throughput", "input tokens/s"),
    ("mean_e2e_latency_ms", "E2E latency mean (ms)"),
    ("duration", "duration (s)"),
    ("completed", "completed requests"),
]


def load(path: Path) -> Dict[str, Dict[str, dict]]:
    runs: Dict[str, Dict[str, dict]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        variant, _, workload = str(rec.get("tag", "")).partition(" ")
        runs.setdefault(workload or "?", {})[variant] = rec
    return runs


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="bench_serving --output-file (JSON lines)")
    p.add_argument("--base", default="pristine")
    p.add_argument("--other", default="patched")
    args = p.parse_args(argv)
    for workload, by_variant in load(args.results).items():
        a, b = by_variant.get(args.base), by_variant.get(args.other)
        print(f"\n## {workload}\n\n| metric | {args.base} | {args.other} | ratio |\n| --- | ---: | ---: | ---: |")
        for key, label in KEYS:
            x = a.get(key) if a else None
            y = b.get(key) if b else None
            r = f"{y / x:.3f}" if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x else "-"
            f = lambda v: f"{v:,.2f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
            print(f"| {label} | {f(x)} | {f(y)} | {r} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
