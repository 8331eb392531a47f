"""HiCache (HiRadixCache with a host pool) on CPU: retraction on r1 and a Mooncake trace.

Runs bench/sched_driver.py (SGLang's scheduler, HiRadixCache, MLATokenToKVPoolHost and
HiCacheController with the CPU substitutions of bench/hicache_cpu.py) for each variant, seed and
cell, two driver processes at a time, and writes bench/out/hicache.json and the tables of
docs/hicache.md (between its `<!-- tables -->` markers).

Variants (tree, then driver flags):
  pristine          the pin, RadixCache
  pristine+wt       the pin, --hicache write_through (the pin's default policy)
  patched+wt        the series, --hicache write_through
  patched+wb        the series, --hicache write_back
  proto+wt, proto+wb  --proto's tree (a prototype on top of the series), write_through /
                    write_back
Cells: r1 (bench/retraction.py's R1 arguments) at page 64 with all requests at t=0 and Poisson
0.7 / 1.0 req/s, and page 1 at 0.7 req/s; the trace (`--trace`) at page 64 with the
deployment's device pool, HiCache host pool --ratios x the device pool (hicache_ratio).

    build/venv/bin/python bench/hicache_bench.py --help
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import run as bench_run  # noqa: E402
from retraction import R1  # noqa: E402

Result = Dict[str, Any]

VARIANTS: Dict[str, Tuple[str, List[str]]] = {
    "pristine": ("pristine", []),
    "pristine+wt": ("pristine", ["--hicache", "write_through"]),
    "patched+wt": ("patched", ["--hicache", "write_through"]),
    "patched+wb": ("patched", ["--hicache", "write_back"]),
    "proto+wt": ("proto", ["--hicache", "write_through"]),
    "proto+wb": ("proto", ["--hicache", "write_back"]),
    # each request's priority = whether its conversation continues (read from the trace), with
    # SGLang's `priority` eviction policy on the device and the host tier (eviction-study.md)
    "patched+wt+hint": ("patched", ["--hicache", "write_through", "--eviction", "hint",
                                    "--hint-as-priority",
                                    "--server-arg", "radix_eviction_policy=priority"]),
}
DEFAULT_R1 = "pristine;pristine+wt;patched+wt;patched+wb"
DEFAULT_TRACE = "pristine;pristine+wt;patched+wt;patched+wb"

COLUMNS: List[Tuple[str, str, str]] = [  # key (hicache.<k> for the HiCache block), column, format
    ("retracted_requests", "retracted reqs", ".1f"),
    ("reprefilled_tokens", "re-prefilled tokens", ",.0f"),
    ("output_tokens_per_s", "out tok/s", ",.1f"),
    ("ttft_p50_s", "TTFT p50 s", ".1f"),
    ("ttft_p99_s", "TTFT p99 s", ".1f"),
    ("token_hit_rate", "hit rate", ".3f"),
    ("hicache.host_loaded_tokens", "host loaded tokens", ",.0f"),
    ("hicache.host_written_tokens", "host written tokens", ",.0f"),
    ("hicache.host_pool_peak_gb", "host pool peak GB", ".1f"),
    ("hicache.blocked_s", "blocked s", ".2f"),
    ("hicache.load_not_overlapped_s", "load not hidden s", ".3f"),
    ("modelled_makespan_s", "run s", ".0f"),
]


def gmean_ratio(pairs: List[Tuple[float, float]]) -> Optional[Tuple[float, float, float]]:
    """Geometric mean, min and max of b / a over the pairs; None if any side is 0."""
    rs = [b / a for a, b in pairs if a > 0 and b > 0]
    if not rs or len(rs) != len(pairs):
        return None
    return math.exp(sum(math.log(x) for x in rs) / len(rs)), min(rs), max(rs)


def fmt_ratio(g: Optional[Tuple[float, float, float]], pairs: List[Tuple[float, float]]) -> str:
    if g is None:
        return "0 -> 0" if all(a == 0 and b == 0 for a, b in pairs) else "n/a (zero)"
    return f"x{g[0]:.3f} [{g[1]:.2f}, {g[2]:.2f}]"


def value(r: Result, key: str) -> float:
    if key.startswith("hicache."):
        return float((r.get("hicache") or {}).get(key.split(".", 1)[1], 0.0))
    return float(r[key])


def cells(args: argparse.Namespace) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    r1v = [v for v in args.r1_variants.split(";") if v]
    for page, rate in ((64, 0.0), (64, 0.7), (64, 1.0), (1, 0.7)):
        if f"{page}@{rate:g}" not in args.r1_cells.split(","):
            continue
        for v in r1v:
            for seed in range(args.seeds):
                out.append(dict(scenario=f"r1 page {page}, rate {rate:g}", variant=v, seed=seed,
                                argv=R1 + ["--page-size", str(page), "--request-rate", str(rate),
                                           "--seed", str(seed)], cost=60.0))
    if args.trace:
        base = ["--workload", "trace", "--model", "v3", "--wl", f"path={args.trace}",
                "--wl", f"time_scale={args.time_scale:g}", "--wl", f"max_requests={args.requests}",
                "--page-size", "64"]
        for ratio in (float(x) for x in args.ratios.split(",")):
            for v in (x for x in args.trace_variants.split(";") if x):
                if v == "pristine" and ratio != float(args.ratios.split(",")[0]):
                    continue  # no host pool: one run (in the first ratio's table) is enough
                out.append(dict(scenario=f"trace page 64, host {ratio:g}x", variant=v, seed=0, cost=120.0,
                                argv=base + ["--hicache-ratio", f"{ratio:g}"]))
    return out


def execute(runs: List[Dict[str, Any]], pristine: Path, patched: Path, proto: Optional[Path],
            jobs: int, stream: Path) -> Tuple[List[Result], float]:
    """Runs every job; each result is also appended to ``stream`` (JSON lines) as it arrives,
    and a job that fails is reported and recorded (``failures``) without stopping the others."""
    work: List[bench_run.Job] = []
    by_variant: Dict[str, List[Tuple[Dict[str, Any], List[str]]]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], []).append((r, r["argv"] + VARIANTS[r["variant"]][1]))
    for v, rs in by_variant.items():
        path = {"pristine": pristine, "patched": patched, "proto": proto}[VARIANTS[v][0]]
        if path is None:
            raise SystemExit(f"hicache_bench: variant {v} needs --proto")
        work += bench_run.pack(v, path, rs, budget=240.0)
    results: List[Result] = []
    lock = threading.Lock()
    t0 = time.time()

    def on_result(r: Dict[str, Any], variant: str, res: Result) -> None:
        res["scenario"], res["variant"], res["seed"] = r["scenario"], variant, r["seed"]
        hc = res.get("hicache") or {}
        with lock:
            results.append(res)
            print(f"[{len(results)}/{len(runs)} {time.time() - t0:.0f}s] {variant} "
                  f"{r['scenario']} seed {r['seed']}: retracted {res['retracted_requests']}, "
                  f"re-prefilled {res['reprefilled_tokens']}, "
                  f"{res['output_tokens_per_s']:.1f} tok/s, loaded {hc.get('host_loaded_tokens')}"
                  f", leaked {hc.get('end_host_slots_leaked')}", flush=True)
            with stream.open("a") as f:
                f.write(json.dumps(res) + "\n")
            if hc and (hc["end_host_slots_leaked"] or hc["end_ongoing_write_through"]
                       or hc["end_ongoing_load_back"] or hc.get("end_host_protected_nodes")):
                raise SystemExit(f"hicache_bench: {variant} {r['scenario']} leaked host slots")

    FAILURES.extend(bench_run.run_jobs_keep_going(work, on_result, jobs, results, "hicache_bench"))
    return results, time.time() - t0


FAILURES: List[Dict[str, Any]] = []


def table(results: List[Result], scenario: str) -> str:
    rows = [r for r in results if r["scenario"] == scenario]
    order = list(VARIANTS)
    # Variants no longer defined (results saved by an earlier version) go last.
    variants = sorted({r["variant"] for r in rows},
                      key=lambda v: (order.index(v) if v in order else len(order), v))
    base = variants[0]
    seeds = sorted({r["seed"] for r in rows})
    get = {(r["variant"], r["seed"]): r for r in rows}
    lines = ["| variant | " + " | ".join(c for _, c, _ in COLUMNS) + " |",
             "|" + " --- |" * (len(COLUMNS) + 1)]
    for v in variants:
        out = []
        for key, _, f in COLUMNS:
            vals = [value(get[(v, s)], key) for s in seeds if (v, s) in get]
            cell = format(sum(vals) / len(vals), f)
            if v != base and len(seeds) > 1 and not key.startswith("hicache."):
                pairs = [(value(get[(base, s)], key), value(get[(v, s)], key)) for s in seeds
                         if (v, s) in get and (base, s) in get]
                cell += " " + fmt_ratio(gmean_ratio(pairs), pairs)
            out.append(cell)
        lines.append(f"| {v} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def render(results: List[Result], wall: float, cmd: str, seeds: int) -> str:
    names: List[str] = []
    for r in results:
        if r["scenario"] not in names:
            names.append(r["scenario"])
    names.sort(key=lambda n: (n.startswith("trace"), n))
    parts = [f"Generated by `{cmd}` in {wall / 60:.1f} min on {platform.machine()}, Python "
             f"{platform.python_version()}, two driver processes at a time; r1 cells: mean over "
             f"{seeds} seeds, `xG [lo, hi]` = geometric mean over seeds of variant / first row "
             "on the same seed, with the smallest and largest seed ratio. Host-side columns "
             "(loaded, written, peak, blocked, not hidden) are means without ratios. Times are "
             "modelled (bench/costmodel.py: DeepSeek-V3 on 8 x H200; host link 16 GB/s "
             "effective per GPU per direction, an assumption), never measured.", ""]
    for n in names:
        parts += [f"#### {n}", "", table(results, n), ""]
    return "\n".join(parts)


def write_doc(doc: Path, text: str) -> None:
    start, end = "<!-- tables -->", "<!-- /tables -->"
    old = doc.read_text() if doc.exists() else f"{start}\n{end}\n"
    if start not in old:
        old += f"\n{start}\n{end}\n"
    head, _, rest = old.partition(start)
    _, _, tail = rest.partition(end)
    doc.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--pristine", type=Path, default=ROOT / "build/work/pristine/python")
    p.add_argument("--patched", type=Path, default=ROOT / "build/work/tree/python")
    p.add_argument("--proto", type=Path, default=None,
                   help="python/ folder of a prototype tree, for the proto+* variants")
    p.add_argument("--r1-variants", default=DEFAULT_R1, help=f"default {DEFAULT_R1!r}")
    p.add_argument("--r1-cells", default="64@0,64@0.7,64@1,1@0.7",
                   help="page@rate, comma-separated (subset of the default)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trace", default="", help="Mooncake trace (JSON lines); empty: no trace cells")
    p.add_argument("--trace-variants", default=DEFAULT_TRACE)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--time-scale", type=float, default=4.0, help="as bench/trace_bench.py")
    p.add_argument("--ratios", default="2,4", help="hicache_ratio values for the trace cells")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "hicache.json")
    p.add_argument("--doc", default=str(ROOT / "docs" / "hicache.md"),
                   help="markdown file whose <!-- tables --> section is rewritten ('' for none)")
    p.add_argument("--render", action="store_true", help="run nothing: tables from --out")
    raw = sys.argv[1:] if argv is None else argv
    a = p.parse_args(raw)
    if a.render:
        saved = json.loads(a.out.read_text())
        results, wall, cmds = saved["results"], saved["wall_s"], saved["commands"]
        failures = saved.get("failures", [])
    else:
        results, wall = execute(cells(a), a.pristine, a.patched, a.proto, a.jobs,
                                a.out.with_suffix(".jsonl"))
        cmd = "build/venv/bin/python bench/hicache_bench.py " + " ".join(raw)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        saved = (json.loads(a.out.read_text()) if a.out.exists()
                 else dict(results=[], wall_s=0.0, commands=[], failures=[]))
        new = {(x["scenario"], x["variant"], x["seed"]) for x in results}
        results = [r for r in saved["results"]
                   if (r["scenario"], r["variant"], r["seed"]) not in new] + results
        wall, cmds = saved["wall_s"] + wall, saved["commands"] + [cmd]
        failures = saved.get("failures", []) + FAILURES
        a.out.write_text(json.dumps(dict(commands=cmds, wall_s=wall, results=results,
                                         failures=failures), indent=1))
    text = render(results, wall, "`; `".join(cmds), a.seeds)
    for f in failures:
        text += (f"\n\nFailed: {f['variant']} {f['scenario']} seed {f['seed']}: "
                 f"`{f['error'].strip().splitlines()[-1][:200]}`")
    if a.doc:
        write_doc(Path(a.doc), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
