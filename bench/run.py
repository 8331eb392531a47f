"""Pristine vs patched SGLang on the same traces, in one invocation: `make bench` / `make bench-quick`.

Each configuration runs bench/sched_driver.py twice in fresh processes of the CPU environment:
"pristine" with the pinned, unpatched source tree first on PYTHONPATH, "patched" with the wheel
built from the series (installed in that environment). Every figure is reported for both and as
a ratio patched/pristine. Writes bench/out/results.json and docs/benchmarks.md, prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "bench" / "sched_driver.py"

# Shared system prompts at SGLang's generated-shared-prefix defaults
# (bench_serving: 64 groups x 16 prompts, 2048-token system prompt, 128-token question,
# 256 output tokens); the pool is set below the trace's unique tokens so it stays under pressure.
FULL: List[Dict[str, Any]] = [
    dict(name=f"gsp-page{p}-run{r}", page_size=p, max_running_requests=r, groups=64,
         prompts_per_group=16, system_len=2048, question_len=128, output_len=256,
         pool_tokens=150_000, chunked_prefill_size=8192)
    for p in (64, 1) for r in (128, 512)
]
QUICK: List[Dict[str, Any]] = [
    dict(name="gsp-quick-page64", page_size=64, max_running_requests=64, groups=16,
         prompts_per_group=8, system_len=1024, question_len=64, output_len=64,
         pool_tokens=24_000, chunked_prefill_size=8192),
]

ROWS = [  # (key, label, format)
    ("token_hit_rate", "token hit rate", "{:.3f}"),
    ("prefill_tokens_computed", "prefill tokens computed", "{:,.0f}"),
    ("evict_tokens_requested", "tokens asked of evict()", "{:,.0f}"),
    ("tokens_evicted", "tokens evicted", "{:,.0f}"),
    ("evicted_per_asked", "evicted / asked", "{:.3f}"),
    ("mean_idle_free_tokens", "mean idle free pool (tokens)", "{:,.0f}"),
    ("mean_idle_free_pct", "mean idle free pool (% of pool)", "{:.2f}"),
    ("idle_free_pages_per_running_req", "idle free pool per running request (pages)", "{:.2f}"),
    ("pool_use_p50_pct", "pool use p50 (%)", "{:.1f}"),
    ("pool_use_p99_pct", "pool use p99 (%)", "{:.1f}"),
    ("retracted_requests", "retracted requests", "{:,.0f}"),
    ("reprefilled_tokens", "re-prefilled tokens", "{:,.0f}"),
    ("steps", "scheduler steps", "{:,.0f}"),
    ("sched_cpu_ms_per_step", "scheduler CPU per step (ms)", "{:.2f}"),
    ("wall_s", "scheduler loop wall time (s)", "{:.1f}"),
]


def run_driver(cfg: Dict[str, Any], variant: str, pristine: Path) -> Dict[str, Any]:
    args = [sys.executable, "-W", "ignore", str(DRIVER)]
    for k, v in cfg.items():
        if k != "name":
            args += [f"--{k.replace('_', '-')}", str(v)]
    env = dict(os.environ)
    paths = [str(ROOT / "ci" / "cpu")] + ([str(pristine)] if variant == "pristine" else [])
    env["PYTHONPATH"] = ":".join(paths[::-1] if variant == "pristine" else paths)
    out = subprocess.run(args, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"bench: {cfg['name']} ({variant}) failed")
    res = json.loads(out.stdout[out.stdout.index("{"):])
    where = res["sglang_file"]
    if (variant == "pristine") != where.startswith(str(pristine)):
        raise SystemExit(f"bench: {variant} run imported sglang from {where}")
    res["evicted_per_asked"] = res["tokens_evicted"] / max(1, res["evict_tokens_requested"])
    running = max(1.0, res.get("mean_running_requests", cfg["max_running_requests"]))
    res["idle_free_pages_per_running_req"] = res["mean_idle_free_tokens"] / cfg["page_size"] / running
    return res


def table(name: str, a: Dict[str, Any], b: Dict[str, Any]) -> str:
    lines = [f"### {name}", "", "| metric | pristine | patched | patched / pristine |", "| --- | ---: | ---: | ---: |"]
    for key, label, fmt in ROWS:
        x, y = a.get(key), b.get(key)
        if x is None or y is None:
            continue
        ratio = f"{y / x:.3f}" if x else "n/a"
        lines.append(f"| {label} | {fmt.format(x)} | {fmt.format(y)} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pristine", type=Path, required=True, help="pristine tree's python/ folder")
    p.add_argument("--quick", action="store_true", help="one small configuration (make bench-quick)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="results folder")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md",
                   help="markdown report to write ('' for none); bench-quick writes none")
    args = p.parse_args()
    configs = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    t0 = time.time()
    for i, cfg in enumerate(configs, 1):
        pair = {}
        for variant in ("pristine", "patched"):
            print(f"[{i}/{len(configs)}] {cfg['name']}: {variant} ...", file=sys.stderr, flush=True)
            pair[variant] = run_driver(cfg, variant, args.pristine)
        results.append({"config": cfg, **pair})
    (args.out / ("quick.json" if args.quick else "results.json")).write_text(json.dumps(results, indent=2))
    cmd = "make bench-quick" if args.quick else "make bench"
    body = [table(r["config"]["name"], r["pristine"], r["patched"]) for r in results]
    print("\n\n".join(body))
    if not args.quick and str(args.doc):
        machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, no GPU"
        settings = "\n".join(f"- `{r['config']['name']}`: " + ", ".join(
            f"{k}={v}" for k, v in r["config"].items() if k != "name") for r in results)
        args.doc.write_text(
            "# Benchmarks: pristine vs patched, same traces, same run\n\n"
            f"Written by `{cmd}` (bench/run.py driving bench/sched_driver.py through SGLang's own "
            "scheduler, batch, allocator and radix-cache code on CPU, with a model-free forward; "
            "replacements are listed in bench/sched_driver.py's docstring and docs/cpu-environment.md). "
            f"Machine: {machine}. Total time: {time.time() - t0:.0f} s.\n\n"
            f"Settings (workload: shared system prompts, seeded, shuffled):\n{settings}\n\n"
            + "\n\n".join(body) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
