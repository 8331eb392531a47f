"""Retraction under long outputs, over several seeds and arrival rates (`make bench-retraction`).

Runs bench/sched_driver.py on the r1 workload (DeepSeek-R1-like: 8 shared 2048-token system
prompts, 2-4K-token outputs, max_new_tokens 4096) with a pool small enough to retract, for
each variant, seed and arrival rate, plus:
  - the reservation trade-off: SGLang's own floor on the decode reservation
    (SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR, default 0.14) swept for the first and last variant;
  - short outputs (gsp: 256-token outputs), which must not change;
  - with a host-offload variant, one r1 cell with a host budget small enough to bind.
Every variant sees the same traces (same seeds). Ratios are paired: variant / pristine on the
same seed, then the geometric mean over seeds, with the smallest and largest seed ratio.
Writes bench/out/retraction.json, docs/retraction.md and docs/img/retraction-tradeoff.png.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import run as bench_run  # noqa: E402

Result = Dict[str, Any]

R1 = ["--workload", "r1", "--model", "v3", "--pressure", "0.15", "--max-running-requests", "128"]
RATES = (0.0, 0.55, 0.7, 1.0)  # Poisson arrivals per modelled second; 0: all 256 at t=0
FLOORS = (0.14, 0.2, 0.3, 0.5)  # SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR; 0.14 is SGLang's default
TRADEOFF_RATE = 0.7
OFFLOAD_GB = 64  # --retract-offload-gb of the offload variant: host GB per rank (8 x 64 per node)
SMALL_OFFLOAD_GB = 2  # a budget that binds, for one extra scenario

METRICS: List[Tuple[str, str, str]] = [  # key, column, format
    ("retract_events", "retractions", ".1f"),
    ("reprefilled_tokens", "re-prefilled tokens", ",.0f"),
    ("stall_p99_s", "stall p99 s", ".1f"),
    ("output_tokens_per_s", "out tok/s", ",.1f"),
    ("ttft_p99_s", "TTFT p99 s", ".1f"),
    ("modelled_prefill_s", "prefill s", ".1f"),
    ("host_copy_s", "host copy s", ".2f"),
    ("host_peak_gb", "host peak GB", ".1f"),
    ("modelled_makespan_s", "run s", ".0f"),
    ("mean_running_requests", "mean running", ".1f"),
]


def scenarios(variants: Sequence[str], seeds: int, quick: bool) -> List[Dict[str, Any]]:
    """One entry per driver run: name (scenario), variant, seed, argv."""
    out: List[Dict[str, Any]] = []

    def add(name: str, args: List[str], vs: Sequence[str], workload: str = "r1") -> None:
        for v in vs:
            for seed in range(seeds):
                out.append(dict(name=name, workload=workload, variant=v, seed=seed,
                                argv=args + ["--seed", str(seed)]))

    rates = (0.0, TRADEOFF_RATE) if quick else RATES
    for rate in rates:
        add(f"r1 page 64, rate {rate:g}", R1 + ["--page-size", "64", "--request-rate", str(rate)],
            variants)
    add(f"r1 page 1, rate {TRADEOFF_RATE:g}",
        R1 + ["--page-size", "1", "--request-rate", str(TRADEOFF_RATE)], variants)
    if not quick:
        for floor in FLOORS[1:]:
            add(f"floor {floor:g}: r1 page 64, rate {TRADEOFF_RATE:g}",
                R1 + ["--page-size", "64", "--request-rate", str(TRADEOFF_RATE),
                      "--env", f"SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR={floor}"],
                (variants[0], variants[-1]))
    offload = [v for v in variants if "retract_offload_gb=" in v]
    if offload and not quick:
        # A host budget smaller than the copies the 64 GB runs held at this rate (about 11 GB
        # per rank at peak): requests beyond it are retracted without a copy.
        tree = offload[0].partition(":")[0]
        add(f"host budget {SMALL_OFFLOAD_GB:g} GB: r1 page 64, rate 1",
            R1 + ["--page-size", "64", "--request-rate", "1.0"],
            (variants[0], f"{tree}:retract_offload_gb={SMALL_OFFLOAD_GB:g}"))
    for page in (64, 1):
        add(f"gsp page {page}, rate 0 (short outputs)",
            ["--workload", "gsp", "--model", "v3", "--pressure", "0.3", "--page-size", str(page),
             "--max-running-requests", "128"], variants, workload="gsp")
    return out


def execute(runs: List[Dict[str, Any]], pristine: Path, jobs: int) -> Tuple[List[Result], float]:
    commits = bench_run.series_commits()
    by_variant: Dict[str, List[Tuple[Dict[str, Any], List[str]]]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], []).append((r, r["argv"]))
    work: List[bench_run.Job] = []
    for v, rs in by_variant.items():
        tree, _, args = v.partition(":")
        extra = [x for kv in args.split(",") if kv for x in ("--server-arg", kv)]
        rs = [(r, argv + extra) for r, argv in rs]
        work += bench_run.pack(v, bench_run.variant_path(tree, pristine, commits), rs, budget=90.0)
    results: List[Result] = []
    lock = threading.Lock()
    total, t0 = len(runs), time.time()

    def on_result(r: Dict[str, Any], variant: str, res: Result) -> None:
        res["scenario"], res["variant"], res["seed"] = r["name"], variant, r["seed"]
        with lock:
            results.append(res)
            print(f"[{len(results)}/{total} {time.time() - t0:.0f}s] {variant} {r['name']} "
                  f"seed {r['seed']}: retracted {res['retract_events']}, re-prefilled "
                  f"{res['reprefilled_tokens']}, {res['output_tokens_per_s']:.1f} tok/s",
                  flush=True)

    with cf.ThreadPoolExecutor(max_workers=jobs) as ex:
        for f in [ex.submit(bench_run.run_job, j, on_result)
                  for j in sorted(work, key=lambda j: -j.cost)]:
            f.result()
    return results, time.time() - t0


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


def table(results: List[Result], scenario: str, baseline: str) -> str:
    rows = [r for r in results if r["scenario"] == scenario]
    variants = sorted({r["variant"] for r in rows}, key=lambda v: (v != baseline, v))
    seeds = sorted({r["seed"] for r in rows})
    get = {(r["variant"], r["seed"]): r for r in rows}
    head = "| variant | " + " | ".join(c for _, c, _ in METRICS) + " |"
    lines = [head, "|" + " --- |" * (len(METRICS) + 1)]
    for v in variants:
        cells = []
        for key, _, f in METRICS:
            vals = [get[(v, s)][key] for s in seeds if (v, s) in get]
            mean = sum(vals) / len(vals)
            cell = format(mean, f)
            if v != baseline:
                pairs = [(get[(baseline, s)][key], get[(v, s)][key]) for s in seeds
                         if (v, s) in get and (baseline, s) in get]
                cell += " " + fmt_ratio(gmean_ratio(pairs), pairs)
            cells.append(cell)
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tradeoff_points(results: List[Result], variant: str) -> List[Tuple[float, float, float, float]]:
    """(floor, mean out tok/s, mean re-prefilled tokens, mean stall p99) per floor."""
    pts = []
    for floor in FLOORS:
        name = (f"r1 page 64, rate {TRADEOFF_RATE:g}" if floor == FLOORS[0]
                else f"floor {floor:g}: r1 page 64, rate {TRADEOFF_RATE:g}")
        rows = [r for r in results if r["scenario"] == name and r["variant"] == variant]
        if rows:
            n = len(rows)
            pts.append((floor, sum(r["output_tokens_per_s"] for r in rows) / n,
                        sum(r["reprefilled_tokens"] for r in rows) / n,
                        sum(r["stall_p99_s"] for r in rows) / n))
    return pts


def plot(results: List[Result], variants: Sequence[str], path: Path) -> Optional[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = False
    for v in variants:
        pts = tradeoff_points(results, v)
        if len(pts) < 2:
            continue
        drawn = True
        ax.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", label=v)
        for p in pts:
            ax.annotate(f"{p[0]:g}", (p[1], p[2]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("modelled output tokens/s (mean over seeds)")
    ax.set_ylabel("re-prefilled tokens (mean over seeds)")
    ax.set_title(f"r1, page 64, Poisson {TRADEOFF_RATE:g} req/s: reservation floor sweep",
                 fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_doc(path: Path, results: List[Result], variants: Sequence[str], seeds: int,
              wall: float, cmd: str, img: Optional[Path]) -> None:
    names: List[str] = []
    for r in results:
        if r["scenario"] not in names:
            names.append(r["scenario"])
    order = sorted(names, key=lambda n: (n.startswith("floor"), n.startswith("gsp"), n))
    parts = [
        "# Retraction under long outputs: several seeds and arrival rates",
        "",
        f"Generated by `{cmd}` in {wall / 60:.1f} min on {platform.machine()} "
        f"({platform.processor() or 'cpu'}), Python {platform.python_version()}; "
        f"{seeds} seeds per cell; variants {', '.join(variants)} (pN: the series' first N "
        "patches; `:KEY=VALUE`: a ServerArgs field set for that variant). Same traces for every "
        "variant "
        "(same seed). Times are modelled (bench/costmodel.py, DeepSeek-V3 on 8xH200), not "
        "measured; see docs/benchmarks.md for the driver and the model.",
        "",
        "Cells: mean over seeds; for a variant other than the first, `xG [lo, hi]` is the "
        "geometric mean over seeds of (variant / pristine on the same seed) and the smallest and "
        "largest seed ratio. `stall p99`: per request, the longest modelled wait between two of "
        "its output tokens (a retracted request stalls until it is re-admitted and re-prefilled), "
        "p99 over requests. `prefill s` / `run s`: modelled time spent in prefill batches / the "
        "whole run. `host copy s`: modelled time of the blocking copies of retracted KV to and "
        "from host memory (`retract_offload_gb`, host GB per rank; PCIe Gen5 at 16 GB/s "
        "achieved, bench/costmodel.py), included in `run s`; `host peak GB`: the most host "
        "memory those copies held at once, per rank. Rate 0: all 256 requests at t=0; otherwise "
        "Poisson arrivals per modelled second (the unretracted r1 run sustains about 0.5 req/s).",
        "",
        "r1: " + " ".join(R1) + "; `floor F` sets SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR=F (the "
        "decay floor of the decode reservation is 0.7 x F; SGLang's default F is 0.14).",
        "",
    ]
    for n in order:
        parts += [f"## {n}", "", table(results, n, variants[0]), ""]
    for v in (variants[0], variants[-1]):
        pts = tradeoff_points(results, v)
        if pts:
            parts += [f"### Reservation floor trade-off, {v} (rate {TRADEOFF_RATE:g})", "",
                      "| floor F | out tok/s | re-prefilled tokens | stall p99 s |",
                      "| --- | --- | --- | --- |"]
            parts += [f"| {f:g} | {t:,.1f} | {rp:,.0f} | {st:.1f} |" for f, t, rp, st in pts]
            parts.append("")
    if img is not None:
        parts += [f"![reservation trade-off](img/{img.name})", ""]
    path.write_text("\n".join(parts))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--pristine", type=Path, help="pristine tree's python/ folder (required to run)")
    p.add_argument("--variants", default=None,
                   help="semicolon-separated; the first is the baseline, the last gets the floor "
                        "sweep. A variant is pristine or pN (the series' first N patches), "
                        "optionally followed by ':KEY=VALUE,...' ServerArgs fields. Default: "
                        "pristine, the whole series, the whole series with "
                        "--schedule-retracted-first, with both flags, with "
                        f"--retract-offload-gb {OFFLOAD_GB}; a first variant with "
                        "retract_offload_gb also gets a scenario with a budget of "
                        f"{SMALL_OFFLOAD_GB} GB")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--quick", action="store_true",
                   help="rates 0 and 0.7 only, no floor sweep")
    p.add_argument("--jobs", type=int, default=2, help="driver processes at a time")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "retraction.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "retraction.md")
    p.add_argument("--render", action="store_true",
                   help="run nothing: rewrite the doc from --out's results")
    args = sys.argv[1:] if argv is None else argv
    a = p.parse_args(args)
    if a.variants is None:
        tip = f"p{len(bench_run.series_commits())}"
        a.variants = (f"pristine;{tip};{tip}:schedule_retracted_first=true;"
                      f"{tip}:retract_offload_gb={OFFLOAD_GB:g},schedule_retracted_first=true;"
                      f"{tip}:retract_offload_gb={OFFLOAD_GB:g}")
    variants = [v for v in a.variants.split(";") if v]
    if len(variants) < 2:
        raise SystemExit("bench/retraction.py: --variants needs a baseline and at least one more")
    if not a.render and a.pristine is None:
        p.error("--pristine is required unless --render")
    if a.render:
        saved = json.loads(a.out.read_text())
        results, wall, cmd = saved["results"], saved["wall_s"], saved["command"]
    else:
        results, wall = execute(scenarios(variants, a.seeds, a.quick), a.pristine, a.jobs)
        extra = [x for i, x in enumerate(args)
                 if x != "--pristine" and (i == 0 or args[i - 1] != "--pristine")]
        cmd = "make bench-retraction" + (f" BENCH_ARGS='{' '.join(extra)}'" if extra else "")
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(dict(command=cmd, wall_s=wall, results=results), indent=1))
    img = None if a.quick else plot(results, (variants[0], variants[-1]),
                                    a.doc.parent / "img" / "retraction-tradeoff.png")
    write_doc(a.doc, results, variants, a.seeds, wall, cmd, img)
    print(a.doc.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
