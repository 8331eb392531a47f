"""Retraction under long outputs, with HiCache, over seeds and arrival rates (`make bench-retraction`).

Runs bench/sched_driver.py on the r1 workload (DeepSeek-R1-like: 8 shared 2048-token system
prompts, 2-4K-token outputs, max_new_tokens 4096) with a device pool small enough to retract,
for each variant, seed and cell:
  - with HiCache (the host tier, write-through, host pool 2 x the device pool: SGLang's
    defaults): r1 at pages 64 and 1, all requests at t=0 and Poisson 0.7 / 1.0 req/s, against
    the pin with the same HiCache (`--variants`; the first is the baseline);
  - without HiCache: r1 at 1.0 req/s, pages 64 and 1, against the pin (`--plain-variants`);
  - short outputs (gsp, 256-token outputs) and multi-turn chat at five pool sizes, with HiCache,
    which must not change: bench_multiturn's fixed lengths (one seed: the seed changes token ids
    only) and lengths jittered by +-25 % (3 seeds);
  - optionally (`--floors`) SGLang's own floor on the decode reservation
    (SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR, default 0.14) swept for the first and last variant.
A variant is `TREE[+POLICY][:KEY=VALUE,...]`: TREE is pristine or pN (the series' first N
patches), +wt / +wts / +wb turn HiCache on with write_through / write_through_selective /
write_back, and KEY=VALUE are ServerArgs fields. Every variant sees the same traces (same
seeds). Ratios are paired by seed: the geometric mean of variant / baseline and its 95 %
Student-t interval (bench/run.py `paired`). Writes bench/out/retraction.json,
docs/retraction.md and, with --floors, docs/img/retraction-tradeoff.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import costmodel  # noqa: E402
import run as bench_run  # noqa: E402

Result = Dict[str, Any]

R1 = ["--workload", "r1", "--model", "v3", "--pressure", "0.15", "--max-running-requests", "128"]
CELLS = ((64, 0.0), (64, 0.7), (64, 1.0), (1, 0.0), (1, 0.7), (1, 1.0))  # (page, req/s); 0: t=0
QUICK_CELLS = ((64, 0.0), (1, 0.7))
PLAIN_RATE = 1.0  # the cells without HiCache
FLOORS = (0.14, 0.2, 0.3, 0.5)  # SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR; 0.14 is SGLang's default
TRADEOFF_RATE = 0.7
POLICIES = {"wt": "write_through", "wts": "write_through_selective", "wb": "write_back"}
HOST_RATIO = 2.0  # --hicache-ratio: SGLang's default host pool, 2 x the device pool
SHORT = ["--model", "v3", "--pressure", "0.3", "--max-running-requests", "128"]
MULTITURN_POOLS = (0.2, 0.25, 0.3, 0.35, 0.4)  # pool / unique tokens of the multiturn trace
MULTITURN_JITTER = 0.25  # bench_multiturn's lengths are fixed: +-25 % lets the seed vary the run
# The targets for the series + HiCache against the pin + HiCache, per r1 cell.
TARGETS = {"reprefilled_tokens": 0.05, "output_tokens_per_s": 0.98, "ttft_p99_s": 1.01}

METRICS: List[Tuple[str, str, str]] = [  # key (hicache.K: the HiCache block), column, format
    ("retracted_requests", "retracted", ".1f"),
    ("reprefilled_tokens", "re-prefilled tokens", ",.0f"),
    ("stall_p99_s", "stall p99 s", ".1f"),
    ("output_tokens_per_s", "out tok/s", ",.1f"),
    ("ttft_p99_s", "TTFT p99 s", ".1f"),
    ("token_hit_rate", "hit rate", ".3f"),
    ("modelled_prefill_s", "prefill s", ".1f"),
    ("hicache.host_loaded_tokens", "host loaded tokens", ",.0f"),
    ("hicache.blocked_s", "host wait s", ".2f"),
    ("modelled_makespan_s", "run s", ".0f"),
]


def parse_variant(spec: str) -> Tuple[str, List[str]]:
    """`TREE[+POLICY][:KEY=VALUE,...]` -> (tree, driver arguments)."""
    head, _, kvs = spec.partition(":")
    tree, _, policy = head.partition("+")
    argv: List[str] = []
    if policy:
        if policy not in POLICIES:
            raise SystemExit(f"bench/retraction.py: variant {spec!r}: unknown HiCache policy "
                             f"{policy!r} (one of {', '.join(POLICIES)})")
        argv += ["--hicache", POLICIES[policy], "--hicache-ratio", f"{HOST_RATIO:g}"]
    argv += [x for kv in kvs.split(",") if kv for x in ("--server-arg", kv)]
    return tree, argv


def value(r: Result, key: str) -> float:
    if key.startswith("hicache."):
        return float((r.get("hicache") or {}).get(key.split(".", 1)[1], 0.0))
    return float(r[key])


def scenarios(variants: Sequence[str], plain: Sequence[str], seeds: int, quick: bool,
              floors: bool) -> List[Dict[str, Any]]:
    """One entry per driver run: scenario, its baseline, variant, seed, argv."""
    out: List[Dict[str, Any]] = []

    def add(name: str, args: List[str], vs: Sequence[str], cost: float = 60.0,
            n_seeds: Optional[int] = None) -> None:
        for v in vs:
            for seed in range(seeds if n_seeds is None else n_seeds):
                out.append(dict(scenario=name, baseline=vs[0], variant=v, seed=seed, cost=cost,
                                argv=args + ["--seed", str(seed)]))

    for page, rate in QUICK_CELLS if quick else CELLS:
        add(f"r1 page {page}, rate {rate:g}, HiCache",
            R1 + ["--page-size", str(page), "--request-rate", f"{rate:g}"], variants)
    if plain and not quick:
        for page in (64, 1):
            add(f"r1 page {page}, rate {PLAIN_RATE:g}, no HiCache",
                R1 + ["--page-size", str(page), "--request-rate", f"{PLAIN_RATE:g}"], plain)
    if floors and not quick:
        for floor in FLOORS[1:]:
            add(f"floor {floor:g}: r1 page 64, rate {TRADEOFF_RATE:g}, HiCache",
                R1 + ["--page-size", "64", "--request-rate", f"{TRADEOFF_RATE:g}",
                      "--env", f"SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR={floor}"],
                (variants[0], variants[-1]))
    short = list(variants[:2])  # the pin and the series, with HiCache
    for page in (64, 1):
        add(f"gsp page {page}, rate 0, HiCache (short outputs)",
            ["--workload", "gsp", "--page-size", str(page)] + SHORT, short, cost=8.0)
    for pressure in MULTITURN_POOLS:
        mt = ["--workload", "multiturn", "--page-size", "64", "--model", "v3", "--pressure",
              f"{pressure:g}", "--max-running-requests", "128"]
        add(f"multiturn page 64, pool {pressure:g}, HiCache (chat)", mt, short, cost=12.0,
            n_seeds=1)
        add(f"multiturn page 64, pool {pressure:g}, lengths +-{MULTITURN_JITTER:.0%}, HiCache",
            mt + ["--wl", f"length_jitter={MULTITURN_JITTER:g}"], short, cost=12.0)
    return out


def execute(runs: List[Dict[str, Any]], pristine: Path, jobs: int,
            stream: Path) -> Tuple[List[Result], List[Dict[str, Any]], float]:
    """Runs every job; each result is also appended to `stream` (JSON lines) as it arrives. A
    job that fails is reported and recorded (its first run not done), and the others go on."""
    stream.parent.mkdir(parents=True, exist_ok=True)
    stream.write_text("")
    commits = bench_run.series_commits()
    by_variant: Dict[str, List[Tuple[Dict[str, Any], List[str]]]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], []).append((r, r["argv"]))
    work: List[bench_run.Job] = []
    for v, rs in by_variant.items():
        tree, extra = parse_variant(v)
        rs = [(r, argv + extra) for r, argv in rs]
        work += bench_run.pack(v, bench_run.variant_path(tree, pristine, commits), rs,
                               budget=240.0)
    results: List[Result] = []
    lock = threading.Lock()
    total, t0 = len(runs), time.time()

    def on_result(r: Dict[str, Any], variant: str, res: Result) -> None:
        res.update(scenario=r["scenario"], baseline=r["baseline"], variant=variant,
                   seed=r["seed"])
        hc = res.get("hicache") or {}
        with lock:
            results.append(res)
            print(f"[{len(results)}/{total} {time.time() - t0:.0f}s] {variant} {r['scenario']} "
                  f"seed {r['seed']}: retracted {res['retracted_requests']}, re-prefilled "
                  f"{res['reprefilled_tokens']}, {res['output_tokens_per_s']:.1f} tok/s",
                  flush=True)
            with stream.open("a") as f:
                f.write(json.dumps(res) + "\n")
            if hc and (hc["end_host_slots_leaked"] or hc["end_host_protected_nodes"]
                       or hc["end_ongoing_write_through"] or hc["end_ongoing_load_back"]):
                raise SystemExit(f"bench/retraction.py: {variant} {r['scenario']} seed "
                                 f"{r['seed']} ended with host slots held: {hc}")

    failures = bench_run.run_jobs_keep_going(work, on_result, jobs, results, "bench/retraction.py")
    return results, failures, time.time() - t0


def cell(rows: Dict[Tuple[str, int], Result], seeds: List[int], v: str, base: str,
         key: str, f: str) -> str:
    vals = [value(rows[(v, s)], key) for s in seeds if (v, s) in rows]
    text = format(sum(vals) / len(vals), f)
    if v == base:
        return text
    pairs = [(value(rows[(base, s)], key), value(rows[(v, s)], key)) for s in seeds
             if (v, s) in rows and (base, s) in rows]
    p = bench_run.paired([a for a, _ in pairs], [b for _, b in pairs])
    return f"{text} {bench_run.fmt_paired(p)}"


def table(results: List[Result], scenario: str) -> str:
    rows = [r for r in results if r["scenario"] == scenario]
    base = rows[0]["baseline"]
    variants = sorted({r["variant"] for r in rows}, key=lambda v: (v != base, v))
    seeds = sorted({r["seed"] for r in rows})
    get = {(r["variant"], r["seed"]): r for r in rows}
    metrics = [m for m in METRICS if not m[0].startswith("hicache.") or "HiCache" in scenario
               and "no HiCache" not in scenario]
    lines = ["| variant | " + " | ".join(c for _, c, _ in metrics) + " |",
             "|" + " --- |" * (len(metrics) + 1)]
    for v in variants:
        lines.append(f"| {v} | " + " | ".join(cell(get, seeds, v, base, k, f)
                                               for k, _, f in metrics) + " |")
    return "\n".join(lines)


def targets(results: List[Result], variant: str) -> Tuple[str, bool]:
    """The issue's targets for `variant` against its scenario's baseline, per HiCache r1 cell:
    re-prefilled tokens as a ratio of the means over seeds (a seed may retract nothing), output
    tokens/s and TTFT p99 as paired geometric means with 95 % intervals."""
    names = [n for n in dict.fromkeys(r["scenario"] for r in results)
             if n.startswith("r1 page") and n.endswith(", HiCache")]
    lines = ["| r1 cell | re-prefilled tokens (target x0.05 or less) | output tok/s (within 2 %) "
             "| TTFT p99 (at most x1.01) | met |", "| --- | --- | --- | --- | --- |"]
    ok_all = True
    for n in names:
        rows = [r for r in results if r["scenario"] == n]
        base = rows[0]["baseline"]
        get = {(r["variant"], r["seed"]): r for r in rows}
        seeds = sorted(s for (v, s) in get if v == variant and (base, s) in get)
        if not seeds:
            continue
        a = {k: [get[(base, s)][k] for s in seeds] for k in TARGETS}
        b = {k: [get[(variant, s)][k] for s in seeds] for k in TARGETS}
        re_a, re_b = sum(a["reprefilled_tokens"]), sum(b["reprefilled_tokens"])
        re = re_b / re_a if re_a else None
        tok = bench_run.paired(a["output_tokens_per_s"], b["output_tokens_per_s"])
        ttft = bench_run.paired(a["ttft_p99_s"], b["ttft_p99_s"])
        ok = ((re is None or re <= TARGETS["reprefilled_tokens"])
              and tok.ratio is not None and tok.ratio >= TARGETS["output_tokens_per_s"]
              and ttft.ratio is not None and ttft.ratio <= TARGETS["ttft_p99_s"])
        ok_all &= ok
        re_txt = (f"{re_a / len(seeds):,.0f} -> {re_b / len(seeds):,.0f} (x{re:.3f})"
                  if re is not None else "0 -> 0")
        lines.append(f"| {n.removesuffix(', HiCache')} | {re_txt} | {bench_run.fmt_paired(tok)} "
                     f"| {bench_run.fmt_paired(ttft)} | {'yes' if ok else 'no'} |")
    return "\n".join(lines), ok_all


def multiturn_pooled(results: List[Result], variant: str, jittered: bool) -> Optional[str]:
    """`variant` against the pin over every multiturn pool size and seed (one pair each), with
    fixed or jittered lengths: paired ratios with 95 % intervals."""
    rows = [r for r in results if r["scenario"].startswith("multiturn")
            and ("lengths +-" in r["scenario"]) == jittered]
    get = {(r["scenario"], r["variant"], r["seed"]): r for r in rows}
    keys = sorted({(r["scenario"], r["seed"]) for r in rows})
    base = rows[0]["baseline"] if rows else ""
    pairs = [(get[(n, base, sd)], get[(n, variant, sd)]) for n, sd in keys
             if (n, base, sd) in get and (n, variant, sd) in get]
    if len(pairs) < 2:
        return None
    cells = []
    for key, label in (("output_tokens_per_s", "output tok/s"), ("ttft_p99_s", "TTFT p99"),
                       ("stall_p99_s", "stall p99"),
                       ("prefill_tokens_computed", "prefill tokens")):
        p = bench_run.paired([a[key] for a, _ in pairs], [b[key] for _, b in pairs])
        cells.append(f"{label} {bench_run.fmt_paired(p)}"
                     + (" (noise)" if p.noise else ""))
    what = "lengths +-25 %, pool sizes x seeds" if jittered else "fixed lengths, pool sizes"
    retracted = [sum(x["retracted_requests"] for x in side) for side in zip(*pairs)]
    return (f"Multiturn ({what}), {variant} against {base} over {len(pairs)} runs, one pair "
            f"each: " + "; ".join(cells) + f"; retracted requests {retracted[0]:.0f} -> "
            f"{retracted[1]:.0f} in all.")


def tradeoff_points(results: List[Result], variant: str) -> List[Tuple[float, float, float, float]]:
    """(floor, mean out tok/s, mean re-prefilled tokens, mean stall p99) per floor."""
    pts = []
    for floor in FLOORS:
        name = (f"r1 page 64, rate {TRADEOFF_RATE:g}, HiCache" if floor == FLOORS[0]
                else f"floor {floor:g}: r1 page 64, rate {TRADEOFF_RATE:g}, HiCache")
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
    ax.set_title(f"r1, page 64, Poisson {TRADEOFF_RATE:g} req/s, HiCache: reservation floor",
                 fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_doc(path: Path, results: List[Result], variants: Sequence[str], seeds: int,
              wall: float, cmd: str, img: Optional[Path],
              failures: Sequence[Dict[str, Any]] = ()) -> None:
    names = list(dict.fromkeys(r["scenario"] for r in results))
    order = sorted(names, key=lambda n: (n.startswith("floor"), not n.startswith("r1"),
                                         "no HiCache" in n, n))
    geom, dep = costmodel.GEOMETRIES["v3"], costmodel.DEPLOYMENTS["v3-h200x8"]
    host = [r["hicache"] for r in results if r.get("hicache")]
    leaked = sum(h["end_host_slots_leaked"] + h["end_host_protected_nodes"] for h in host)
    tgt, ok = targets(results, variants[1])
    parts = [
        "# Retraction under long outputs, with HiCache: seeds and arrival rates",
        "",
        f"Generated by `{cmd}` in {wall / 60:.1f} min on {platform.machine()}, Python "
        f"{platform.python_version()}, two driver processes at a time; {seeds} seeds per cell. "
        "Same traces for every variant (same seed). Times are modelled (bench/costmodel.py, "
        "DeepSeek-V3 on 8 x H200), not measured; see docs/benchmarks.md for the driver and the "
        "model, and docs/hicache.md for HiCache on CPU.",
        "",
        "Variants: `TREE[+POLICY][:KEY=VALUE,...]`; pN is the series' first N patches (p"
        f"{len(bench_run.series_commits())} the whole series), `+wt` turns on HiCache "
        "(`--enable-hierarchical-cache`, write-through, the pin's default policy) with a host "
        f"pool of {HOST_RATIO:g} x the device pool (`--hicache-ratio`, the pin's default), "
        "`:KEY=VALUE` sets a ServerArgs field. HiCache's host copies are timed on its own "
        "write and load streams (bench/hicache_cpu.py) at "
        f"{dep.host_link_bandwidth * dep.host_link_efficiency / 1e9:g} GB/s effective per GPU "
        f"({geom.kv_bytes_per_token:,} bytes of MLA latent per token per rank; an assumption "
        "until measured on a GPU), and host memory is the pool's preallocated size.",
        "",
        "Cells: mean over seeds; for a variant other than the table's first, the paired ratio "
        "to it over seeds: `xG [lo, hi]` is the geometric mean of the per-seed ratios and its "
        "95 % Student-t interval, `(every seed)` the same ratio at every seed, `(ratio of "
        "means)` where a seed has 0 on one side. `stall p99`: per request, the longest "
        "modelled wait between two of its output tokens, p99 over requests. `host loaded "
        "tokens`: KV loaded back from the host pool; `host wait s`: modelled time the "
        "scheduler waited on HiCache's events (for the series: the retracted request's "
        "write-through, which 0009 waits for before evicting); `prefill s` / `run s`: modelled "
        "time in prefill batches / the whole run. Rate 0: all 256 requests at t=0; otherwise "
        "Poisson arrivals per modelled second (the unretracted r1 run sustains about 0.5 "
        "req/s).",
        "",
        "r1: `" + " ".join(R1) + "`; gsp: `" + " ".join(SHORT) + "`; multiturn: the same "
        "with pools of " + ", ".join(f"{x:g}" for x in MULTITURN_POOLS) + " x its unique "
        "tokens, with bench_multiturn's fixed lengths (512 new tokens, 64 output tokens per "
        "turn; one seed, since the seed changes token ids only) and with "
        f"`--wl length_jitter={MULTITURN_JITTER:g}` (each drawn within +-25 %, 3 seeds). "
        "`hit rate` "
        "counts every admission, re-admissions after retraction included (a re-admitted request "
        "finds most of its prompt cached), so a variant that retracts less can show a lower hit "
        "rate without computing more prefill (`prefill s`).",
        "",
        f"Host slots or protections left at the end of a HiCache run: {leaked} over "
        f"{len(host)} runs.",
        "",
        f"## Targets: {variants[1]} against {variants[0]}",
        "",
        tgt,
        "",
        f"All met: {'yes' if ok else 'no'}.",
        "",
    ]
    for f in failures:
        parts += [f"Failed (its cell is missing runs): {f['variant']} {f['scenario']} seed "
                  f"{f['seed']}: `{f['error'].strip().splitlines()[-1][:200]}`", ""]
    for jittered in (False, True):
        pooled = multiturn_pooled(results, variants[1], jittered)
        if pooled:
            parts += [pooled, ""]
    for n in order:
        parts += [f"## {n}", "", table(results, n), ""]
    for v in (variants[0], variants[-1]):
        pts = tradeoff_points(results, v)
        if len(pts) > 1:
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
                   help="semicolon-separated, with HiCache; the first is the baseline, the "
                        "second is checked against the targets. Default: pristine+wt, the "
                        "whole series +wt, and the same with schedule_retracted_first=true")
    p.add_argument("--plain-variants", default=None,
                   help="semicolon-separated, without HiCache ('' for none). Default: "
                        "pristine, the whole series, the same with schedule_retracted_first")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--quick", action="store_true",
                   help="two r1 cells only (page 64 at t=0, page 1 at 0.7 req/s)")
    p.add_argument("--floors", action="store_true",
                   help="also sweep the reservation floor for the first and last variant")
    p.add_argument("--jobs", type=int, default=2, help="driver processes at a time")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "retraction.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "retraction.md")
    p.add_argument("--render", action="store_true",
                   help="run nothing: rewrite the doc from --out's results")
    p.add_argument("--resume", action="store_true",
                   help="keep --out's results and run only the runs they lack (after a failed "
                        "or interrupted run, or new scenarios)")
    args = sys.argv[1:] if argv is None else argv
    a = p.parse_args(args)
    tip = f"p{len(bench_run.series_commits())}"
    if a.variants is None:
        a.variants = f"pristine+wt;{tip}+wt;{tip}+wt:schedule_retracted_first=true"
    if a.plain_variants is None:
        a.plain_variants = f"pristine;{tip};{tip}:schedule_retracted_first=true"
    variants = [v for v in a.variants.split(";") if v]
    plain = [v for v in a.plain_variants.split(";") if v]
    if len(variants) < 2:
        raise SystemExit("bench/retraction.py: --variants needs a baseline and at least one more")
    for v in variants + plain:
        parse_variant(v)
    if not a.render and a.pristine is None:
        p.error("--pristine is required unless --render")
    if a.render:
        saved = json.loads(a.out.read_text())
        results, wall, cmd = saved["results"], saved["wall_s"], saved["command"]
        failures = saved.get("failures", [])
    else:
        runs = scenarios(variants, plain, a.seeds, a.quick, a.floors)
        kept: List[Result] = []
        prior_cmd, prior_wall = "", 0.0
        if a.resume and a.out.exists():
            saved = json.loads(a.out.read_text())
            wanted = {(r["scenario"], r["variant"], r["seed"]) for r in runs}
            kept = [r for r in saved["results"]
                    if (r["scenario"], r["variant"], r["seed"]) in wanted]
            have = {(r["scenario"], r["variant"], r["seed"]) for r in kept}
            runs = [r for r in runs if (r["scenario"], r["variant"], r["seed"]) not in have]
            prior_cmd, prior_wall = saved["command"] + "`, then `", saved["wall_s"]
        results, failures, wall = execute(runs, a.pristine, a.jobs, a.out.with_suffix(".jsonl"))
        results, wall = kept + results, prior_wall + wall
        extra = [x for i, x in enumerate(args)
                 if x != "--pristine" and (i == 0 or args[i - 1] != "--pristine")]
        cmd = prior_cmd + "make bench-retraction" + (
            f" BENCH_ARGS='{' '.join(extra)}'" if extra else "")
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(dict(command=cmd, wall_s=wall, results=results,
                                         failures=failures), indent=1))
    img = (plot(results, (variants[0], variants[-1]), a.doc.parent / "img" /
                "retraction-tradeoff.png") if a.floors else None)
    write_doc(a.doc, results, variants, a.seeds, wall, cmd, img, failures)
    print(a.doc.read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
