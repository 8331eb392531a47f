"""Pristine vs patched SGLang on the same traces, in one invocation (`make bench`, `make bench-quick`,
`make bench-series`).

Each configuration runs bench/sched_driver.py once per variant and seed, in fresh processes of the
CPU environment (several runs of one variant share a process, `--batch`; two processes run at a
time). Variants:
  pristine  the pinned, unpatched source tree first on PYTHONPATH (--pristine)
  patched   the wheel built from the series, installed in this environment
  pN        the series' first N patches: commit N of `pristine..HEAD` in build/work/tree,
            exported with `git archive` to build/work/variants/pN (re-exported when the commit moves)
  oracle    pristine with a pool so large nothing is evicted (the hit-rate ceiling)

Matrices (--matrix): `default` (make bench) runs the deployment headline (8 x H200 at SGLang's
Hopper default fa3 / page 1, 8 x B200 at its Blackwell default trtllm_mla / page 64) and
flashmla / page 64 on H200 as an opt-in row, 5 seeds each; multi-turn chat and the pool-size
sensitivity sweep, 3 seeds each. `full` adds the other workloads, the fp8 KV cache and a denser
sweep. Pools come from each deployment's memory budget and the traffic is sized to fill them; only
the sensitivity sweep shrinks the pool (--pressure).

Statistics: per configuration and metric, the paired ratio patched / pristine is the geometric
mean over seeds of the per-seed ratios (same seed = same trace and arrival times), with a 95 %
Student-t interval on the mean of the log ratios; an interval that contains 1 is labelled noise.
Writes bench/out/<mode>.json (every seed's full result), docs/benchmarks.md (or
docs/bench-series.md) and docs/img/*.png, and prints the tables, the summary last.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import costmodel  # noqa: E402

DRIVER = ROOT / "bench" / "sched_driver.py"
TREE = ROOT / "build" / "work" / "tree"
VARIANTS_DIR = ROOT / "build" / "work" / "variants"

Config = Dict[str, Any]  # name, args (driver argv without --seed), variants, seeds, ...
Result = Dict[str, Any]

# Relative CPU cost of one run of each workload at its default size (this machine), used only to
# pack runs into processes when a configuration gives no "cost" of its own.
COST = {"gsp": 6, "gsp-zipf": 5, "fewshot": 3, "multiturn": 9, "random": 13, "r1": 30}

PRESSURE = 0.3  # series / quick matrices: pool = 30 % of the trace's unique prefix-tree tokens
H200, B200, FLASHMLA = "v3-h200x8", "v3-b200x8", "v3-h200x8-flashmla"
HEADLINE_SEEDS = 5
SEEDS = 3

# Traffic for the deployment pools: bench_serving's generated-shared-prefix shape (2048-token
# system prompts, 128-token questions, 256-token outputs) with as many groups as make the system
# prompts alone about 3/4 of the pool (256 x 2048 = 0.74 x 707K on H200, 384 x 2048 = 0.70 x
# 1.12M on B200), 4 prompts per group, Poisson arrivals at a rate that keeps a few hundred
# requests running (about 300 on H200, 480 on B200) without an unbounded queue.
GSP_H200 = {"groups": 256, "prompts_per_group": 4}
GSP_B200 = {"groups": 384, "prompts_per_group": 4}
RATE_H200, RATE_B200 = 18.0, 40.0
# Multi-turn chat (bench_multiturn's shape: 5 rounds, 512-token turns, 64-token answers) with 256
# clients active of 512 (bench_multiturn's default is 128 of 256): the active conversations'
# histories (up to 2.9K tokens each) about fill the 707K-token H200 pool. Its arrivals are
# closed-loop (a client's next round arrives when its previous round ends), as in bench_multiturn.
MULTITURN_H200 = {"clients": 512, "parallel": 256}
MULTITURN_B200 = {"clients": 1024, "parallel": 512}
# Sensitivity sweep: bench_serving's gsp defaults (64 x 16 prompts) on pools of F x the trace's
# unique tokens, B200 step times, Poisson arrivals.
SWEEP = (0.15, 0.2, 0.3, 0.4)
SWEEP_FULL = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
RATE_SWEEP = 8.0
# R1-like outputs: lognormal lengths, median 2,048 tokens and log-sd 1.0 (mean ~3.2K, p99 ~24K in
# 256 draws), at least 64, capped by max_new_tokens 32,768 (an assumption shaped to be
# heavy-tailed, not fitted to a published distribution; bench/workloads.py r1).
R1_TAIL = {"output_sigma": 1.0, "output_median": 2048, "output_min": 64, "max_new_tokens": 32768}


def _wl(params: Dict[str, float]) -> List[str]:
    return [x for k, v in params.items() for x in ("--wl", f"{k}={v:g}")]


def cfg(workload: str, page: int, running: int, variants: Sequence[str], model: str = "v3",
        pressure: float = PRESSURE, extra: Sequence[str] = (), tag: str = "",
        seeds: Sequence[int] = (0,)) -> Config:
    """A configuration on a pool of `pressure` x the trace's unique tokens (series, quick)."""
    name = f"{workload}-page{page}-run{running}" + (f"-{model}" if model != "v3" else "") + tag
    args = ["--workload", workload, "--page-size", str(page), "--max-running-requests",
            str(running), "--model", model, "--pressure", str(pressure), *extra]
    return dict(name=name, workload=workload, page_size=page, max_running_requests=running,
                model=model, pressure=pressure, args=args, variants=list(variants),
                seeds=list(seeds), group="series")


def deployed(name: str, group: str, label: str, workload: str, deployment: str,
             wl: Dict[str, float], rate: float, seeds: int, variants: Sequence[str] = (
                 "pristine", "patched"), model: str = "v3", pressure: float = 0.0,
             oracle: bool = True, cost: float = 40.0) -> List[Config]:
    """A configuration at a deployment's defaults (attention backend, page size, chunked prefill
    size, max running requests, pool from its memory budget), plus its oracle (same traces,
    unbounded pool) unless oracle=False. pressure > 0: pool = pressure x unique tokens instead."""
    dep, geom = costmodel.DEPLOYMENTS[deployment], costmodel.GEOMETRIES[model]
    args = ["--workload", workload, *_wl(wl), "--model", model, "--deployment", deployment,
            "--page-size", str(dep.page_size), "--chunked-prefill-size",
            str(dep.chunked_prefill_size), "--max-running-requests",
            str(dep.max_running_requests(geom))]
    if rate:
        args += ["--request-rate", f"{rate:g}"]
    pool = ["--pressure", f"{pressure:g}"] if pressure else []
    c = dict(name=name, group=group, label=label, workload=workload, deployment=deployment,
             page_size=dep.page_size, max_running_requests=dep.max_running_requests(geom),
             model=model, pressure=pressure, rate=rate, args=args + pool,
             variants=list(variants), seeds=list(range(seeds)), cost=cost)
    out = [c]
    if oracle:
        o = dict(c, name=f"{name}-oracle", group="oracle", args=args + ["--oracle"],
                 variants=["oracle"], seeds=list(range(min(seeds, SEEDS))), oracle_for=name)
        c["oracle"] = o["name"]
        out.append(o)
    return out


def default_matrix() -> List[Config]:
    out = deployed("h200-fa3-page1", "headline", "8 x H200, fa3, page 1 (Hopper default)", "gsp",
                   H200, GSP_H200, RATE_H200, HEADLINE_SEEDS, cost=42)
    out += deployed("b200-trtllm-page64", "headline", "8 x B200, trtllm_mla, page 64 "
                    "(Blackwell default)", "gsp", B200, GSP_B200, RATE_B200, HEADLINE_SEEDS,
                    cost=58)
    out += deployed("h200-flashmla-page64", "opt-in", "8 x H200, flashmla, page 64 (opt-in)",
                    "gsp", FLASHMLA, GSP_H200, RATE_H200, HEADLINE_SEEDS, oracle=False, cost=42)
    out += deployed("multiturn-h200-fa3-page1", "breadth", "multi-turn chat, 8 x H200, fa3, "
                    "page 1", "multiturn", H200, MULTITURN_H200, 0.0, SEEDS, cost=30)
    out += sweep(SWEEP)
    return out


def sweep(pressures: Sequence[float]) -> List[Config]:
    out: List[Config] = []
    for i, pr in enumerate(pressures):
        rows = deployed(f"sweep-gsp-b200-page64-pressure{pr:g}", "sensitivity",
                        f"gsp 64 x 16, pool {pr:g} x unique tokens, B200 page 64", "gsp", B200,
                        {}, RATE_SWEEP, SEEDS, pressure=pr, oracle=(i == 0), cost=18)
        if i:
            rows[0]["oracle"] = f"sweep-gsp-b200-page64-pressure{pressures[0]:g}-oracle"
        out += rows
    return out


def full_matrix() -> List[Config]:
    out = [c for c in default_matrix() if not c["name"].startswith("sweep-")]
    out += deployed("multiturn-b200-trtllm-page64", "breadth", "multi-turn chat, 8 x B200, "
                    "trtllm_mla, page 64", "multiturn", B200, MULTITURN_B200, 0.0, SEEDS, cost=45)
    # Zipf over groups concentrates the traffic on a few system prompts: 4x the groups (each
    # drawn ~ 1/rank^1.1), 2 prompts per group, so that the cold tail still fills the pool.
    for dep, groups, rate, tag in ((H200, 1024, RATE_H200, "h200-fa3-page1"),
                                   (B200, 1536, RATE_B200, "b200-trtllm-page64")):
        out += deployed(f"gsp-zipf-{tag}", "breadth", f"gsp, Zipf 1.1 over groups, {tag}",
                        "gsp-zipf", dep, {"groups": groups, "prompts_per_group": 2, "zipf": 1.1},
                        rate, SEEDS, cost=60 if dep == H200 else 90)
    out += deployed("fewshot-h200-fa3-page1", "breadth", "few-shot, 384 tasks, 8 x H200, fa3, "
                    "page 1", "fewshot", H200, {"tasks": 384, "requests": 1536}, RATE_H200,
                    SEEDS, cost=20)
    out += deployed("random-h200-fa3-page1", "breadth", "no shared prefixes, 8 x H200, fa3, "
                    "page 1", "random", H200, {}, RATE_H200, SEEDS, cost=45)
    # R1-like long outputs: 256 requests, all at t = 0 (at Poisson rates the 707K-token pool is
    # not filled by 256 of them; make bench-retraction sweeps rates on a smaller pool), with
    # heavy-tailed output lengths (R1_TAIL) and max_new_tokens 32K.
    out += deployed("r1-h200-fa3-page1", "breadth", "long heavy-tailed outputs (R1-like), all at "
                    "t = 0, 8 x H200, fa3, page 1", "r1", H200, R1_TAIL, 0.0, SEEDS, cost=240)
    out += deployed("gsp-h200-fa3-page1-v3-fp8", "breadth", "fp8 KV cache, 8 x H200, fa3, page 1",
                    "gsp", H200, {"groups": 512, "prompts_per_group": 4}, 2 * RATE_H200, SEEDS,
                    model="v3-fp8", cost=80)
    out += sweep(SWEEP_FULL)
    return out


def quick_matrix() -> List[Config]:
    c = cfg("gsp", 64, 64, ("pristine", "patched"), pressure=0.4,
            extra=["--wl", "groups=16", "--wl", "prompts_per_group=8", "--wl", "system_len=1024",
                   "--wl", "question_len=64", "--wl", "output_len=64"], tag="-quick")
    c["group"] = "quick"
    return [c]


def series_matrix(n_patches: int) -> List[Config]:
    vs = ["pristine"] + [f"p{k}" for k in range(1, n_patches + 1)] + ["patched"]
    # r1 at pressure 0.15: enough retraction (tens of requests) for the retraction patches to act.
    return [cfg("gsp", 64, 128, vs), cfg("gsp", 1, 128, vs),
            cfg("r1", 64, 128, vs, pressure=0.15, tag="-pressure0.15")]


# ---------------------------------------------------------------------------------------------
# Variants


def series_commits() -> List[str]:
    out = subprocess.run(["git", "-C", str(TREE), "rev-list", "--reverse", "pristine..HEAD"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench: cannot list the series commits in {TREE} (run make apply): "
                         f"{out.stderr.strip()}")
    return out.stdout.split()


def prefix_tree(k: int, commits: List[str]) -> Path:
    """build/work/variants/pK: the tree at commit K of the series (python/ only)."""
    if not 1 <= k <= len(commits):
        raise SystemExit(f"bench: variant p{k}: the series has {len(commits)} commits")
    dest = VARIANTS_DIR / f"p{k}"
    stamp = dest / ".commit"
    if stamp.exists() and stamp.read_text().strip() == commits[k - 1]:
        return dest / "python"
    subprocess.run(["rm", "-rf", str(dest)], check=True)
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(TREE), "archive", commits[k - 1], "python"],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit(f"bench: git archive {commits[k - 1]} failed")
    stamp.write_text(commits[k - 1] + "\n")
    return dest / "python"


def variant_path(variant: str, pristine: Path, commits: Optional[List[str]]) -> Optional[Path]:
    """The python/ folder to put first on PYTHONPATH (None: the installed wheel)."""
    if variant in ("pristine", "oracle"):
        return pristine
    if variant == "patched":
        return None
    if variant.startswith("p") and variant[1:].isdigit():
        return prefix_tree(int(variant[1:]), commits or series_commits())
    raise SystemExit(f"bench: unknown variant {variant!r}")


# ---------------------------------------------------------------------------------------------
# Running


def run_cost(c: Dict[str, Any]) -> float:
    return float(c.get("cost") or COST.get(c["workload"], 10))


class Job:
    def __init__(self, variant: str, path: Optional[Path], runs: List[Tuple[Config, List[str]]]):
        self.variant, self.path, self.runs = variant, path, runs
        self.cost = sum(run_cost(c) for c, _ in runs) + 12  # + import


def pack(variant: str, path: Optional[Path], runs: List[Tuple[Config, List[str]]],
         budget: float = 60.0) -> List[Job]:
    """Split one variant's runs into processes of about `budget` cost (longest first)."""
    runs = sorted(runs, key=lambda r: -run_cost(r[0]))
    total = sum(run_cost(c) for c, _ in runs)
    n = max(1, min(len(runs), round(total / budget)))
    bins: List[List[Tuple[Config, List[str]]]] = [[] for _ in range(n)]
    loads = [0.0] * n
    for r in runs:
        i = loads.index(min(loads))
        bins[i].append(r)
        loads[i] += run_cost(r[0])
    return [Job(variant, path, b) for b in bins if b]


def run_job(job: Job, on_result: Any) -> None:
    env = dict(os.environ)
    paths = ([str(job.path)] if job.path else []) + [str(ROOT / "ci" / "cpu")]
    env["PYTHONPATH"] = ":".join(paths)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump([argv for _, argv in job.runs], f)
        batch = f.name
    cmd = [sys.executable, "-W", "ignore", str(DRIVER), "--batch", batch]
    err = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    i = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        if not line.startswith("{"):
            continue
        res = json.loads(line)
        check_origin(job, res)
        on_result(job.runs[i][0], job.variant, res)
        i += 1
    rc = proc.wait()
    os.unlink(batch)
    if rc != 0 or i != len(job.runs):
        err.seek(0)
        sys.stderr.write(err.read()[-4000:])
        names = ", ".join(c["name"] for c, _ in job.runs[i:i + 1])
        raise SystemExit(f"bench: {job.variant} failed at {names} (rc {rc}); "
                         f"PYTHONPATH={env['PYTHONPATH']} {shlex.join(cmd)}")


def run_jobs_keep_going(work: List[Job], on_result: Any, jobs: int, results: List[Result],
                        tag: str) -> List[Dict[str, Any]]:
    """Runs the jobs `jobs` at a time, longest first. A job that fails is reported and recorded
    (its first run without a result in `results`, which on_result fills) and the others go on.
    Returns the failures: scenario, variant, seed, error."""
    failures: List[Dict[str, Any]] = []
    with cf.ThreadPoolExecutor(max_workers=jobs) as ex:
        futures = {ex.submit(run_job, j, on_result): j for j in sorted(work, key=lambda j: -j.cost)}
        for f, job in futures.items():
            try:
                f.result()
            except BaseException as e:  # noqa: BLE001  (a failed run is a result too)
                done = {(r["scenario"], r["variant"], r["seed"]) for r in results}
                first = next((r for r, _ in job.runs
                              if (r["scenario"], job.variant, r["seed"]) not in done), None)
                failures.append(dict(scenario=first["scenario"] if first else "?",
                                     variant=job.variant, seed=first["seed"] if first else -1,
                                     error=str(e)[-300:]))
                print(f"{tag}: {job.variant} failed: {str(e)[-300:]}", flush=True)
    return failures


def check_origin(job: Job, res: Dict[str, Any]) -> None:
    where = res["sglang_file"]
    inside = job.path is not None and where.startswith(str(job.path))
    if (job.path is not None) != inside or (job.path is None and where.startswith(str(ROOT / "build" / "work"))):
        raise SystemExit(f"bench: {job.variant} run imported sglang from {where}")


def derive(res: Result) -> None:
    res["evicted_per_asked"] = res["tokens_evicted"] / max(1, res["evict_tokens_requested"])
    res["evicted_per_needed"] = res["tokens_evicted"] / max(1, res["tokens_needed"])
    running = max(1.0, res["mean_running_requests"])
    res["idle_free_pages_per_running_req"] = (
        res["mean_idle_free_tokens"] / res["config"]["page_size"] / running)
    res["page_tail_lost"] = res["page_tail_lost_at_insert"] + res["page_tail_lost_at_match"]
    # SGLang's own scheduling work on this CPU: building the batch (get_next_batch_to_run) and
    # processing its result; the driver's model-free forward (KV check) is not SGLang's.
    res["scheduler_cpu_s"] = (res["get_next_batch_cpu_ms_per_step"]
                              + res["process_result_cpu_ms_per_step"]) * res["steps"] / 1000.0
    res["scheduler_cpu_frac"] = res["scheduler_cpu_s"] / max(1e-9, res["modelled_makespan_s"])


def run_all(configs: List[Config], pristine: Path, jobs: int,
            budget: float = 200.0) -> Tuple[List[Dict[str, Any]], float]:
    from tqdm import tqdm

    commits = series_commits() if any(v[1:].isdigit() for c in configs for v in c["variants"]) else None
    per_variant: Dict[str, List[Tuple[Config, List[str]]]] = {}
    for c in configs:
        for v in c["variants"]:
            for seed in c["seeds"]:
                per_variant.setdefault(v, []).append(
                    (dict(c, seed=seed), c["args"] + ["--seed", str(seed)]))
    work: List[Job] = []
    for v, runs in per_variant.items():
        work += pack(v, variant_path(v, pristine, commits), runs, budget)
    work.sort(key=lambda j: -j.cost)
    results: Dict[str, Dict[str, Any]] = {
        c["name"]: {"config": c, "runs": {v: [None] * len(c["seeds"]) for v in c["variants"]}}
        for c in configs}
    lock = threading.Lock()
    total = sum(len(j.runs) for j in work)
    t0 = time.time()
    with tqdm(total=total, desc="bench runs", unit="run", file=sys.stderr) as bar:
        def on_result(c: Config, variant: str, res: Result) -> None:
            derive(res)
            res["seed"] = c["seed"]
            with lock:
                slot = results[c["name"]]["runs"][variant]
                slot[c["seeds"].index(c["seed"])] = res
                bar.set_postfix_str(f"{c['name']} {variant} seed {c['seed']}", refresh=False)
                bar.update(1)

        with cf.ThreadPoolExecutor(max_workers=jobs) as ex:
            for fut in cf.as_completed([ex.submit(run_job, j, on_result) for j in work]):
                fut.result()
    out = []
    for c in configs:
        r = results[c["name"]]
        for v, runs in r["runs"].items():
            r[v] = runs[0]  # the first seed's run, for single-seed readers (quick, series)
        out.append(r)
    return out, time.time() - t0


# ---------------------------------------------------------------------------------------------
# Statistics


@lru_cache(maxsize=None)
def t_quantile(df: int, p: float = 0.975) -> float:
    """Student-t quantile, by bisection on the CDF (Simpson's rule on the density)."""
    lg = math.lgamma((df + 1) / 2) - math.lgamma(df / 2)
    norm = math.exp(lg) / math.sqrt(df * math.pi)

    def cdf(x: float, steps: int = 2000) -> float:
        h = x / steps
        acc = 0.0
        for i in range(steps + 1):
            f = norm * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2)
            acc += f * (1 if i in (0, steps) else 4 if i % 2 else 2)
        return 0.5 + acc * h / 3

    lo, hi = 0.0, 100.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Paired:
    """patched / pristine over seeds: geometric mean of the per-seed ratios and its 95 % t-interval
    (on the log ratios; seeds where both are 0 are left out). kind: "ratio" (interval valid),
    "identical" (equal at every seed), "constant" (the same ratio at every seed: the seeds did
    not vary the run, so there is no spread to test), "zeros" (0 on one side only at some seed:
    ratio of the means, no interval), "single" (1 seed)."""

    ratio: Optional[float]
    lo: Optional[float]
    hi: Optional[float]
    kind: str
    n: int
    per_seed: Tuple[Optional[float], ...]

    @property
    def noise(self) -> bool:
        return self.kind == "ratio" and self.lo is not None and self.lo <= 1.0 <= self.hi


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    n = len(a)
    per = tuple((y / x) if x else None for x, y in zip(a, b))
    if all(x == y for x, y in zip(a, b)):
        return Paired(1.0, 1.0, 1.0, "identical", n, per)
    both = [(x, y) for x, y in zip(a, b) if x or y]  # a seed with 0 on both sides is equal
    if any(x <= 0 or y <= 0 for x, y in both):
        ma, mb = sum(a) / n, sum(b) / n
        return Paired(mb / ma if ma else None, None, None, "zeros", n, per)
    n = len(both)
    logs = [math.log(y / x) for x, y in both]
    m = sum(logs) / n
    if n < 2:
        return Paired(math.exp(m), None, None, "single", n, per)
    if max(logs) - min(logs) < 1e-12:  # the seeds did not vary this metric: one sample, not n
        return Paired(math.exp(m), None, None, "constant", n, per)
    half = t_quantile(n - 1) * statistics.stdev(logs) / math.sqrt(n)
    return Paired(math.exp(m), math.exp(m - half), math.exp(m + half), "ratio", n, per)


# key, label, format, direction (+1: higher is better, -1: lower is better, 0: neither)
ROWS: List[Tuple[str, str, str, int]] = [
    ("token_hit_rate", "token hit rate", "{:.3f}", 1),
    ("prefill_tokens_computed", "prefill tokens computed", "{:,.0f}", -1),
    ("prefill_flops_computed", "prefill PFLOPs computed", "pf", -1),
    ("prefill_flops_saved_frac", "prefill FLOPs saved vs no cache", "{:.3f}", 1),
    ("evict_tokens_requested", "tokens asked of evict()", "{:,.0f}", 0),
    ("tokens_evicted", "tokens evicted", "{:,.0f}", -1),
    ("tokens_needed", "tokens needed (allocation shortfall)", "{:,.0f}", 0),
    ("over_evicted_tokens", "over-evicted tokens (evicted - needed)", "{:,.0f}", -1),
    ("evicted_per_asked", "evicted / asked", "{:.3f}", 0),
    ("page_tail_lost_at_insert", "tokens lost to page rounding at insert", "{:,.0f}", -1),
    ("page_tail_lost_at_match", "tokens lost to page rounding at match", "{:,.0f}", -1),
    ("mean_idle_free_pct", "mean idle free pool (% of pool)", "{:.2f}", -1),
    ("idle_free_pages_per_running_req", "idle free pool per running request (pages)", "{:.2f}", -1),
    ("pool_use_p50_pct", "pool use p50 (%)", "{:.1f}", 0),
    ("pool_use_p99_pct", "pool use p99 (%)", "{:.1f}", 0),
    ("mean_running_requests", "mean running requests", "{:.1f}", 0),
    ("retracted_requests", "retracted requests", "{:,.1f}", -1),
    ("reprefilled_tokens", "re-prefilled tokens", "{:,.0f}", -1),
    ("ttft_mean_s", "modelled TTFT mean (s)", "{:.3f}", -1),
    ("ttft_p50_s", "modelled TTFT p50 (s)", "{:.3f}", -1),
    ("ttft_p99_s", "modelled TTFT p99 (s)", "{:.3f}", -1),
    ("output_tokens_per_s", "modelled output tokens/s", "{:,.0f}", 1),
    ("modelled_makespan_s", "modelled makespan (s)", "{:.1f}", -1),
    ("modelled_prefill_s", "modelled prefill time (s)", "{:.1f}", -1),
    ("steps", "scheduler steps", "{:,.0f}", 0),
    ("scheduler_cpu_s", "SGLang scheduler CPU, this machine (s)", "{:.1f}", -1),
    ("scheduler_cpu_frac", "scheduler CPU / modelled makespan", "{:.3f}", -1),
]
ROW_BY_KEY = {k: (lab, f, d) for k, lab, f, d in ROWS}


def fmt(v: Any, f: str) -> str:
    if v is None:
        return "-"
    if f == "pf":
        return f"{v / 1e15:,.1f}"
    return f.format(v)


def verdict(p: Paired, direction: int) -> str:
    if p.kind == "identical":
        return "identical"
    if p.kind == "zeros":
        return "zeros: no interval"
    if p.kind == "single":
        return "1 seed"
    if p.kind == "constant":
        return "same at every seed"
    if p.noise:
        return "noise"
    if direction == 0:
        return "differs"
    return "better" if (p.ratio > 1) == (direction > 0) else "worse"


def fmt_paired(p: Paired, digits: int = 3) -> str:
    if p.ratio is None:
        return "n/a"
    if p.kind == "identical":
        return "x1 (identical)"
    if p.kind == "zeros":
        return f"x{p.ratio:.{digits}f} (ratio of means)"
    if p.kind == "constant":
        return f"x{p.ratio:.{digits}f} (every seed)"
    if p.lo is None:
        return f"x{p.ratio:.{digits}f}"
    return f"x{p.ratio:.{digits}f} [{p.lo:.{digits}f}, {p.hi:.{digits}f}]"


def values(r: Dict[str, Any], variant: str, key: str) -> List[float]:
    return [float(x[key]) for x in r["runs"].get(variant, []) if x is not None]


def mean(xs: Sequence[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


def stats(r: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per metric: per-seed values of both variants, the paired ratio and its verdict."""
    out: Dict[str, Dict[str, Any]] = {}
    if "pristine" not in r["runs"] or "patched" not in r["runs"]:
        return out
    for key, _, _, d in ROWS:
        a, b = values(r, "pristine", key), values(r, "patched", key)
        if not a or len(a) != len(b):
            continue
        p = paired(a, b)
        out[key] = {"pristine": a, "patched": b, "ratio": p.ratio, "lo": p.lo, "hi": p.hi,
                    "kind": p.kind, "per_seed_ratio": list(p.per_seed),
                    "verdict": verdict(p, d)}
    return out


def paired_of(s: Dict[str, Any]) -> Paired:
    return Paired(s["ratio"], s["lo"], s["hi"], s["kind"], len(s["pristine"]),
                  tuple(s["per_seed_ratio"]))


# ---------------------------------------------------------------------------------------------
# Reporting


def by_name(results: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {r["config"]["name"]: r for r in results}


def oracle_of(results: List[Dict[str, Any]], c: Config) -> Optional[Dict[str, Any]]:
    """The oracle row of a configuration: by name (deployment matrices; none for a row without
    one), else by workload and page size (series, quick)."""
    if c.get("oracle"):
        return by_name(results).get(c["oracle"])
    if c.get("group") not in ("series", "quick"):
        return None
    for r in results:
        oc = r["config"]
        if oc.get("oracle_for") and oc["workload"] == c["workload"] and oc["page_size"] == c["page_size"]:
            return r
    return None


def oracle_mean(o: Optional[Dict[str, Any]], key: str) -> Optional[float]:
    return mean(values(o, "oracle", key)) if o else None


def table(r: Dict[str, Any], oracle: Optional[Dict[str, Any]]) -> str:
    c, st = r["config"], r.get("stats") or stats(r)
    n = len(c["seeds"])
    head = (f"| metric | pristine (mean of {n}) | patched (mean of {n}) | patched / pristine "
            "[95 % CI] | verdict |")
    sep = "| --- | ---: | ---: | ---: | --- |"
    if oracle:
        head += f" oracle (mean of {len(oracle['config']['seeds'])}) |"
        sep += " ---: |"
    lines = [f"### {c['name']}", ""]
    if c.get("label"):
        lines += [f"{c['label']}. `{shlex.join(c['args'])}`, seeds "
                  f"{', '.join(map(str, c['seeds']))}.", ""]
    lines += [head, sep]
    for key, label, f, _ in ROWS:
        s = st.get(key)
        if s is None:
            continue
        row = (f"| {label} | {fmt(mean(s['pristine']), f)} | {fmt(mean(s['patched']), f)} | "
               f"{fmt_paired(paired_of(s))} | {s['verdict']} |")
        if oracle:
            row += f" {fmt(oracle_mean(oracle, key), f)} |"
        lines.append(row)
    return "\n".join(lines)


HEADLINE_KEYS = ["token_hit_rate", "prefill_flops_computed", "tokens_evicted",
                 "over_evicted_tokens", "retracted_requests", "ttft_mean_s", "ttft_p99_s",
                 "output_tokens_per_s", "modelled_makespan_s", "scheduler_cpu_s",
                 "scheduler_cpu_frac"]


def headline(r: Dict[str, Any], oracle: Optional[Dict[str, Any]]) -> str:
    """One deployment row: the key metrics with their interval, verdict and per-seed ratios."""
    c, st = r["config"], r.get("stats") or stats(r)
    a = r["runs"]["pristine"][0]["config"]
    lines = [f"**{c['label']}** (`{c['name']}`): pool {a['pool_tokens']:,} tokens from the "
             f"memory budget, {a['num_requests']:,} requests at {c.get('rate', 0):g} req/s "
             f"(Poisson), {len(c['seeds'])} seeds.", "",
             "| metric | pristine | patched | patched / pristine [95 % CI] | verdict | "
             "per-seed ratios | oracle |", "| --- | ---: | ---: | ---: | --- | --- | ---: |"]
    for key in ["pool_use_p50_pct"] + HEADLINE_KEYS:
        s = st.get(key)
        if s is None:
            continue
        label, f, _ = ROW_BY_KEY[key]
        seeds = " ".join("-" if x is None else f"{x:.3f}" for x in s["per_seed_ratio"])
        lines.append(f"| {label} | {fmt(mean(s['pristine']), f)} | {fmt(mean(s['patched']), f)} | "
                     f"{fmt_paired(paired_of(s))} | {s['verdict']} | {seeds} | "
                     f"{fmt(oracle_mean(oracle, key), f)} |")
    return "\n".join(lines)


SUMMARY_COLS = ["prefill_flops_computed", "over_evicted_tokens", "ttft_mean_s", "ttft_p99_s",
                "output_tokens_per_s"]


def summary_cell(s: Optional[Dict[str, Any]]) -> str:
    if s is None:
        return "-"
    p = paired_of(s)
    if p.kind == "ratio" and p.noise:
        return f"noise ({fmt_paired(p)})"
    return fmt_paired(p)


def summary(results: List[Dict[str, Any]]) -> str:
    head = ("| configuration | seeds | pool tokens | pool use p50 % (pristine) | hit rate pristine "
            "-> patched (oracle) | " + " | ".join(f"{ROW_BY_KEY[k][0]}" for k in SUMMARY_COLS)
            + " | retracted pristine -> patched |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in results:
        c = r["config"]
        if "patched" not in r["runs"] or "pristine" not in r["runs"]:
            continue
        st, o = r.get("stats") or stats(r), oracle_of(results, c)
        a = r["runs"]["pristine"][0]["config"]
        hit = st["token_hit_rate"]
        orc = oracle_mean(o, "token_hit_rate")
        cells = [c["name"], str(len(c["seeds"])), f"{a['pool_tokens']:,}",
                 f"{mean(st['pool_use_p50_pct']['pristine']):.1f}",
                 f"{mean(hit['pristine']):.3f} -> {mean(hit['patched']):.3f}"
                 + (f" ({orc:.3f})" if orc is not None else "")]
        cells += [summary_cell(st.get(k)) for k in SUMMARY_COLS]
        ret = st["retracted_requests"]
        cells.append(f"{mean(ret['pristine']):.1f} -> {mean(ret['patched']):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plots(results: List[Dict[str, Any]], img: Path) -> List[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed; no plots", file=sys.stderr)
        return []
    pts = sorted((r for r in results if r["config"].get("group") == "sensitivity"
                  and "patched" in r["runs"]), key=lambda r: r["config"]["pressure"])
    if not pts:
        return []
    img.mkdir(parents=True, exist_ok=True)
    oracle = oracle_of(results, pts[0]["config"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    x = [r["config"]["pressure"] for r in pts]
    for ax, key, label in ((axes[0], "token_hit_rate", "token hit rate"),
                           (axes[1], "ttft_p99_s", "modelled TTFT p99 (s)")):
        for v, style in (("pristine", "o-"), ("patched", "s-")):
            ys = [values(r, v, key) for r in pts]
            m = [sum(y) / len(y) for y in ys]
            err = [[mm - min(y) for mm, y in zip(m, ys)], [max(y) - mm for mm, y in zip(m, ys)]]
            ax.errorbar(x, m, yerr=err, fmt=style, capsize=3, label=f"{v} (mean, min-max)")
        om = oracle_mean(oracle, key)
        if om is not None:
            ax.axhline(om, color="gray", ls="--", label="oracle (no eviction)")
        ax.set_xlabel("pool / unique prefix-tree tokens")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    n = len(pts[0]["config"]["seeds"])
    fig.suptitle(f"gsp 64 x 16, B200 page 64, {RATE_SWEEP:g} req/s Poisson, {n} seeds "
                 "(bench/run.py)")
    fig.tight_layout()
    path = img / "pressure-gsp.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def replacements_text() -> str:
    import re

    doc = DRIVER.read_text().split('"""')[1]
    m = re.search(r"Replacements and stubs.*?\n-+\n(.*?)\n\n", doc, re.S)
    return m.group(1) if m else "(see bench/sched_driver.py)"


def model_text() -> str:
    d = costmodel.describe()
    lines = ["Geometries (KV pool bytes and FLOPs):", "",
             "| model | layers | latent + rope | KV bytes/token | active params | total params | "
             "MHA heads x (qk + v) | absorbed MLA width | prefix decompression GFLOP/token | "
             "default deployment |", "|" + " --- |" * 10]
    for k, g in d["geometries"].items():
        lines.append(f"| {k} | {g['layers']} | {g['kv_lora_rank']} + {g['qk_rope_head_dim']} | "
                     f"{g['kv_bytes_per_token']:,} | {g['active_params'] / 1e9:g}B | "
                     f"{g['total_params'] / 1e9:g}B | {g['heads']} x ({g['qk_head_dim']} + "
                     f"{g['v_head_dim']}) | {g['mla_width']:,} | "
                     f"{g['decompress_flops_per_token'] / 1e9:.2f} | {g['deployment']} |")
    lines += ["", "Deployments (`--deployment`: pool, defaults and step times):", "",
              "| deployment | GPUs (TP) | memory/GPU (nvidia-smi) | bandwidth/GPU | bf16 peak/GPU | "
              "attention backend, page | chunked prefill | SGLang reserve, mem_fraction_static | "
              "pool tokens (V3) | max running (V3) | compute / bandwidth eff. | eager launch |",
              "|" + " --- |" * 12]
    for k, dp in d["deployments"].items():
        pools = ", ".join(f"{kk[12:-1]}: {v:,}" for kk, v in dp.items() if kk.startswith("pool_tokens["))
        runs = ", ".join(f"{kk[21:-1]}: {v:,}" for kk, v in dp.items()
                         if kk.startswith("max_running_requests["))
        lines.append(f"| {k} | {dp['gpus']} | {dp['hbm_bytes'] / 2**20:,.0f} MiB | "
                     f"{dp['hbm_bandwidth'] / 1e12:g} TB/s | {dp['peak_flops'] / 1e12:g} TFLOP/s | "
                     f"{dp['attention_backend']}, {dp['page_size']} | {dp['chunked_prefill_size']} | "
                     f"{dp['reserved_bytes'] / 2**30:g} GiB, {dp['mem_fraction_static']} | "
                     f"{pools} | {runs} | {dp['compute_efficiency']} / "
                     f"{dp['bandwidth_efficiency']} | {dp['eager_launch_s_per_layer'] * 1e3:.3f} ms/layer |")
    lines += ["", "Step-time parameters derived from them:", "",
              "| model @ deployment | decode a (ms) | decode b (us/request) | decode c (ns/KV token; "
              "compute bound) | prefill effective PFLOP/s | extend floor in graph / eager (ms) | "
              "host copy (us/token) |", "|" + " --- |" * 7]
    for k, p in d["step_params"].items():
        lines.append(f"| {k} | {p['decode_a_s'] * 1e3:.2f} | {p['decode_b_s_per_req'] * 1e6:.1f} | "
                     f"{p['decode_c_s_per_kv_token'] * 1e9:.2f} "
                     f"({p['decode_c_flops_s_per_kv_token'] * 1e9:.2f}) | "
                     f"{p['prefill_flops_per_s'] / 1e15:.3f} | "
                     f"{p['extend_floor_graph_s'] * 1e3:.1f} / {p['extend_floor_eager_s'] * 1e3:.1f} | "
                     f"{p['host_copy_s_per_token'] * 1e6:.2f} |")
    lines += ["", "Sources:", ""] + [f"- {s}" for s in d["sources"]]
    return "\n".join(lines)


def step_model_text(results: List[Dict[str, Any]]) -> str:
    """What time model the driver applied in this run (it reports `step_model` when it calls
    costmodel.StepModel per step)."""
    used = {x.get("step_model") for r in results for runs in r["runs"].values() for x in runs if x}
    if used == {None}:
        return (
            "**Time model applied in this run: the driver's per-token model.** A prefill step "
            "takes its multi-head-attention FLOPs / effective FLOP/s, with no floor: "
            "bench/sched_driver.py calls `Geometry.prefill_flops` per request and "
            "`Deployment.step_params`, not the batch-level `costmodel.StepModel` described below "
            "(extend floor, MLA paths), which needs the whole batch at each step. Decode steps "
            "are the same in both.")
    return f"**Time model applied in this run:** {', '.join(sorted(str(u) for u in used))}."


METHOD = """\
## Method

- **Scheduler.** Every run is SGLang's own scheduler, batch, radix-cache and allocator code
  (see the list below for the pieces replaced) on a KV buffer of tiny dimensions: only slot
  indices matter for what is scheduled, cached and evicted.
- **Deployments and pools.** A row runs at a deployment's SGLang defaults (`--deployment`,
  table below): attention backend and page size, chunked prefill size, and max running requests
  as SGLang derives them, and a KV pool sized as ModelRunner sizes it: memory x
  mem_fraction_static (SGLang's default formula) - the weight shard, over 70,272 bytes per token.
  The pool is never shrunk to create pressure; the traffic is sized to fill it (see the
  configuration's traffic line). Only the sensitivity sweep sets the pool to F x the trace's
  unique prefix-tree tokens (`--pressure`).
- **Seeds and arrivals.** Each seed draws the trace's tokens, its order and (with a request rate)
  Poisson arrival times in modelled seconds; pristine and patched run the same seed, so every
  ratio is paired. Multi-turn rows are closed-loop (a client's next round arrives when its
  previous round finishes, a fixed number of clients at a time) with fixed turn and answer
  lengths, so their seeds vary the token ids only and the runs come out nearly the same (the
  scheduler steps are equal): their intervals are narrow because the seeds barely vary the run,
  not because the effect is known that precisely; read them as one sample.
- **Ratios and intervals.** For each metric, r_s = patched / pristine at seed s; the table gives
  the geometric mean of r_s and a 95 % confidence interval exp(mean(log r) +- t(0.975, n-1) x
  sd(log r) / sqrt(n)) (Student t on the log ratios across the n seeds). An interval that contains
  1 is labelled **noise**; otherwise better / worse by the metric's direction (or "differs" for
  metrics with none). "identical": equal at every seed; "same at every seed": the same ratio at
  every seed (no spread to test). A metric that is 0 on one side at some seed has no log ratio:
  the ratio of the means is shown without an interval. Per-seed values are
  in bench/out/bench.json.
- **Oracle.** The same traces on the pristine tree with a pool of unique tokens + one page per
  request + one page per running slot + the longest request, so nothing is evicted: its hit rate
  is the ceiling for that page size (3 seeds).
- **Prefill FLOPs** (the metric; `costmodel.Geometry.prefill_flops`): a token at position p
  costs 2 x N_active + 2 x layers x (p + 1) x heads x (qk_head_dim + v_head_dim), the
  multi-head form, the same for both variants: a work measure independent of the attention
  path. The modelled *time* of an extend uses the path-aware FLOPs of `costmodel.StepModel`
  instead (absorbed MLA or MHA, as v0.5.10 dispatches the batch). Computed = over every extend
  chunk the scheduler ran; no-cache = every request's whole prompt once; saved = no-cache -
  computed.
- **Evicted vs needed.** For each `RadixCache.evict` call, *needed* is the part of the
  allocation that follows it (`alloc` / `alloc_extend` / `alloc_decode`) that the free pool
  before the eviction could not cover; over-evicted = evicted - needed.
- **Page rounding.** *At insert*: a finished request's KV length modulo the page size (the
  partial last page `cache_finished_req` frees instead of caching). *At match*: after a
  page-aligned `match_prefix`, the number of next tokens that agree with a cached child's key
  (a token-granular cache would have reused them).
- **Modelled time.** Non-overlap scheduling: steps do not overlap. A decode step takes
  a + b x batch + c x KV tokens read: a = weight bytes per GPU / effective bandwidth, b =
  2 x N_active / effective FLOP/s, c = the larger of KV bytes per token / effective bandwidth
  (MLA's latent is replicated on every TP rank, so each GPU reads all of it) and the absorbed-MLA
  FLOPs per cached token / effective FLOP/s. TTFT = time of the first output token - arrival
  (queue wait + prefill); output tokens/s = generated tokens / modelled makespan. The model
  ranks variants by the work the scheduler makes the GPU do; it is not a latency prediction.
- **Extend steps in `costmodel.StepModel`.** (file:line below: the pinned source under
  python/sglang/srt/; attention_backend_handler.py is in models/deepseek_common/, forward_mha.py
  in models/deepseek_common/attention_forward_methods/.) An extend batch takes max(floor, FLOPs /
  effective FLOP/s). Floor: the decode step's weight read a (a forward reads every weight once
  whatever its size), plus, for an eager forward, the CPU launch of its kernels (0.975 ms per
  layer, 59.5 ms for V3, from SGLang PR #12160's DeepSeek-V3 1-token extend: 82.6 ms eager,
  23.1 ms in a CUDA graph). FLOPs
  follow v0.5.10's MLA dispatch for the batch: batches of at most 2,048 tokens run in the
  piecewise CUDA graph (on by default for DeepSeek V3; server_args.py:637 and 1254-1262) and
  there every backend runs absorbed MLA over the latent (attention_backend_handler.py:73-74,
  125-126): 2 x heads x (2 x kv_lora_rank + rope) per (query, key) pair per layer. Larger batches
  on fa3 / flashmla run MHA over decompressed K/V when the batch's cached prefix is 0 or at least
  8,192 tokens (SGLANG_CHUNKED_PREFIX_CACHE_THRESHOLD, environ.py:388;
  attention_backend_handler.py:81-96) and absorbed MLA otherwise; on trtllm_mla they always run
  MHA_CHUNKED_KV (attention_backend_handler.py:124-134). MHA costs 2 x heads x (qk_head_dim +
  v_head_dim) per pair per layer plus the decompression of every cached prefix token by
  kv_b_proj, 2 x kv_lora_rank x heads x (qk_nope + v) per token per layer
  (forward_mha.py:373-380). The dense term 2 x N_active per new token is the same on both paths
  (the absorbed path's w_kc / w_vc products cost what kv_b_proj costs).
- **Scheduler CPU.** `SGLang scheduler CPU` is the process CPU time of SGLang's
  `get_next_batch_to_run` and `process_batch_result` on **this** machine (the driver's model-free
  forward and its KV check are excluded); it is **not** included in the modelled time, and a GPU
  host's CPU would differ. It is reported next to the modelled makespan as a fraction of it:
  under non-overlap scheduling that CPU time would add to each step on a real host.
"""

GPU_TEXT = """\
## GPU runs (not run here)

This machine has no GPU; nothing in this section was run for this document, and no number above
comes from a GPU. `bench/gpu/` holds the scripts for someone with one (see `bench/gpu/README.md`):

- `bench/gpu/run_gpu_bench.sh` installs the pinned upstream `sglang==0.5.10.post1` into one venv,
  launches `python -m sglang.launch_server --model-path deepseek-ai/DeepSeek-V2-Lite
  --trust-remote-code --page-size 64 --attention-backend flashmla --max-running-requests 128
  --max-total-tokens 150000` (the pool cap keeps the cache under pressure, as here), runs
  `python -m sglang.bench_serving --backend sglang --dataset-name generated-shared-prefix` at the
  generated-shared-prefix defaults (64 x 16 prompts, 2048 + 128 tokens in, 256 out) and a
  multi-turn run in bench_multiturn's shape through bench_serving's own multi-turn mode
  (`--backend sglang-oai-chat --gsp-num-groups 256 --gsp-prompts-per-group 1
  --gsp-system-prompt-len 512 --gsp-question-len 512 --gsp-output-len 64 --gsp-num-turns 5
  --max-concurrency 128`), then does the same with `dist/sglang-*+mla.*.whl` installed on top
  (`--no-deps`, same dependencies).
- `bench/gpu/compare.py` prints TTFT mean / median / p99 and input / output throughput per
  workload, patched / pristine, from the JSON lines bench_serving appends (`--output-file`).
"""


def versions(results: List[Dict[str, Any]], variant: str) -> str:
    return ", ".join(sorted({x.get("sglang_version", "?") for r in results
                             for x in r["runs"].get(variant, []) if x}))


def n_runs(results: List[Dict[str, Any]]) -> int:
    return sum(len(runs) for r in results for runs in r["runs"].values())


def traffic_text(results: List[Dict[str, Any]]) -> str:
    lines = []
    for r in results:
        c = r["config"]
        if c.get("group") not in ("headline", "opt-in", "breadth"):
            continue
        a = r["runs"]["pristine"][0]
        cf_ = a["config"]
        lines.append(f"- `{c['name']}`: {cf_['num_requests']:,} requests, {cf_['input_tokens']:,} "
                     f"input tokens, {cf_['unique_tokens']:,} unique prefix-tree tokens = "
                     f"{cf_['unique_tokens'] / cf_['pool_tokens']:.2f} x the pool of "
                     f"{cf_['pool_tokens']:,}; "
                     + (f"Poisson {c['rate']:g} req/s" if c.get("rate") else "closed-loop arrivals")
                     + f"; mean running requests {mean(values(r, 'pristine', 'mean_running_requests')):.0f}"
                     f", pool use p50 {mean(values(r, 'pristine', 'pool_use_p50_pct')):.1f} % "
                     f"(pristine, mean over seeds).")
    return "\n".join(lines)


def write_doc(path: Path, results: List[Dict[str, Any]], wall: float, cmd: str,
              images: List[Path], jobs: int, matrix: str, rendered_from: str = "",
              load: Optional[Sequence[float]] = None) -> None:
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} "
               f"{platform.release()}, Python {platform.python_version()}, no GPU")
    settings = "\n".join(f"- `{r['config']['name']}` (seeds {', '.join(map(str, r['config']['seeds']))}"
                         f"): `{shlex.join(r['config']['args'])}`" for r in results)
    wl_params: Dict[str, Dict[str, Any]] = {}
    for r in results:
        for runs in r["runs"].values():
            for x in runs:
                if x:
                    wl_params.setdefault(r["config"]["name"], x["config"]["workload_params"])
    wl_lines = "\n".join(f"- `{k}` ({by_name(results)[k]['config']['workload']}): " + ", ".join(
        f"{p}={x:g}" if isinstance(x, (int, float)) else f"{p}={x!r}" for p, x in v.items())
        for k, v in wl_params.items() if not k.endswith("-oracle"))
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_s = sum(x["process_cpu_s"] for r in results for runs in r["runs"].values()
                for x in runs if x)
    pics = "\n".join(f"![{p.stem}](img/{p.name})" for p in images)
    heads = [headline(r, oracle_of(results, r["config"])) for r in results
             if r["config"].get("group") in ("headline", "opt-in")]
    tables = "\n\n".join(table(r, oracle_of(results, r["config"])) for r in results
                         if "patched" in r["runs"])
    head_n = {len(r["config"]["seeds"]) for r in results
              if r["config"].get("group") in ("headline", "opt-in")}
    other_n = {len(r["config"]["seeds"]) for r in results
               if r["config"].get("group") not in ("headline", "opt-in")}
    seeds_note = "; ".join(
        f"{'/'.join(map(str, sorted(ns)))} seeds for the {what}"
        for ns, what in ((head_n, "headline and opt-in rows"), (other_n, "others")) if ns)
    path.write_text(
        "# Benchmarks: pristine vs patched, same traces, same run\n\n"
        f"Written by `{cmd}` (bench/run.py --matrix {matrix}, {jobs} driver processes at a time). "
        f"Machine: {machine}. Wall time of the whole matrix: **{wall:.0f} s** ({n_runs(results)} "
        f"runs; {seeds_note})."
        + f" The driver processes used {cpu_s:,.0f} s of CPU in all ({cpu_s / jobs:,.0f} s per "
        f"process slot; the runs themselves, without imports and trace building)."
        + (f" Load average (1 min, sampled every 15 s) {load[0]:.1f} mean, {load[1]:.1f} max "
           f"with {jobs} processes of this run: anything above {jobs} is other work on the "
           "machine, which lengthens the wall time, not the modelled figures." if load else "")
        + (f" Rendered from that run's results ({rendered_from}) by `bench/run.py --render`."
           if rendered_from else "") + "\n\n"
        "Pristine = the pinned v0.5.10.post1 source; patched = the wheel built from the whole series "
        f"(sglang {versions(results, 'patched')}); oracle = pristine with an unbounded pool. All "
        "figures below come from that command; times are *modelled* (see Method), never measured "
        "on a GPU. Ratios are patched / pristine, paired by seed: geometric mean over seeds with a "
        "95 % Student-t interval on the log ratios; **noise** = the interval contains 1.\n\n"
        + step_model_text(results) + "\n\n"
        "## Headline: SGLang's deployment defaults\n\n" + "\n\n".join(heads) + "\n\n"
        "Traffic (how the deployment pools are put under pressure):\n\n" + traffic_text(results)
        + "\n\n## Summary\n\n" + summary(results) + "\n\n"
        "Cells: patched / pristine [95 % CI]; `noise (...)` when the interval contains 1. Below 1 "
        "is better for FLOPs, evictions and TTFT, above 1 for output tokens/s.\n\n"
        + (f"## Hit rate and modelled p99 TTFT vs pool size (sensitivity)\n\n{pics}\n\n" if pics else "")
        + METHOD + "\n## Step-time model and parameters\n\n" + model_text() + "\n\n"
        "## Workloads (seeded, synthetic token ids; bench/workloads.py)\n\n" + wl_lines + "\n\n"
        "gsp uses bench_serving's generated-shared-prefix shape (2048-token system prompts, "
        "128-token questions, 256-token outputs) with more groups on the deployment pools; "
        "multiturn bench_multiturn's shape with twice its clients and twice as many at a time; "
        "the sensitivity sweep bench_serving's gsp defaults (64 groups x 16 prompts).\n\n"
        "## Settings (driver arguments per configuration; each run adds `--seed S`)\n\n"
        + settings + "\n\n"
        "## SGLang replacements and stubs in the driver\n\n" + replacements_text() + "\n\n"
        "CPU substitutions below SGLang (sgl_kernel shim, torchvision op schemas, Triton "
        "allocator kernels routed to SGLang's own reference): docs/cpu-environment.md.\n\n"
        "## Per-configuration tables\n\n" + tables + "\n\n" + GPU_TEXT)


def series_doc(path: Path, results: List[Dict[str, Any]], wall: float, commits: List[str]) -> str:
    subjects = subprocess.run(["git", "-C", str(TREE), "log", "--reverse", "--format=%s",
                               "pristine..HEAD"], capture_output=True, text=True).stdout.splitlines()
    keys = [("token_hit_rate", "hit rate", "{:.3f}"),
            ("prefill_flops_computed", "prefill PFLOPs", "pf"),
            ("tokens_evicted", "evicted", "{:,.0f}"),
            ("over_evicted_tokens", "over-evicted", "{:,.0f}"),
            ("evicted_per_asked", "evicted/asked", "{:.3f}"),
            ("mean_idle_free_pct", "idle free %", "{:.2f}"),
            ("retracted_requests", "retracted", "{:,.0f}"),
            ("reprefilled_tokens", "re-prefilled", "{:,.0f}"),
            ("ttft_p99_s", "TTFT p99 s", "{:.2f}"),
            ("output_tokens_per_s", "out tok/s", "{:,.0f}")]
    out = ["# Per-patch effects (bench series)\n",
           f"Written by `make bench-series` (bench/run.py --series). Wall time: {wall:.0f} s. "
           "Each row is the tree with the first N patches (pN, exported from build/work/tree); the "
           "ratio rows compare pN with p(N-1). `patched` is the installed wheel and must equal the "
           "last prefix.\n", "Patches:\n"]
    out += [f"- p{i}: `{c[:12]}` {s}" for i, (c, s) in enumerate(zip(commits, subjects), 1)]
    for r in results:
        c = r["config"]
        out += ["", f"## {c['name']}", "", f"`{shlex.join(c['args'])}`", "",
                "| variant | " + " | ".join(k[1] for k in keys) + " |", "|" + " --- |" * (len(keys) + 1)]
        prev = None
        for v in c["variants"]:
            res = r[v]
            out.append(f"| {v} | " + " | ".join(fmt(res[k], f) for k, _, f in keys) + " |")
            if prev is not None and v != "patched":
                out.append(f"| {v} / {prev[0]} | " + " | ".join(ratio(prev[1][k], res[k]) for k, _, _ in keys) + " |")
            prev = (v, res)
        if "patched" in r and len(c["variants"]) > 2:
            last = r[c["variants"][-2]]
            same = all(last[k] == r["patched"][k] for k in
                       ("token_hit_rate", "tokens_evicted", "retracted_requests", "steps"))
            out += ["", f"patched (installed wheel) {'equals' if same else 'DIFFERS FROM'} "
                        f"{c['variants'][-2]} on hit rate, evictions, retractions and steps."]
    text = "\n".join(out) + "\n"
    path.write_text(text)
    return text


def ratio(a: Any, b: Any) -> str:
    if a is None or b is None:
        return "-"
    return f"{b / a:.3f}" if a else ("1.000" if b == 0 else "n/a")


MATRICES: Dict[str, Callable[[], List[Config]]] = {"default": default_matrix, "full": full_matrix}


def render(source: Path, doc: Optional[Path]) -> int:
    """--render: the report of an earlier run, from its results file; statistics recomputed."""
    data = json.loads(source.read_text())
    meta, results = data["meta"], data["results"]
    for r in results:
        r["stats"] = stats(r)
    path = doc if doc is not None and doc != Path() else ROOT / "docs" / "benchmarks.md"
    write_doc(path, results, meta["wall_s"], meta["command"], plots(results, path.parent / "img"),
              meta["jobs"], meta.get("matrix", "default"), rendered_from=str(source),
              load=meta.get("load_average_1min_mean_max"))
    print(summary(results))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pristine", type=Path, required=True, help="pristine tree's python/ folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one small configuration (make bench-quick)")
    mode.add_argument("--series", action="store_true",
                      help="pristine, p1..pN, patched on a compact matrix (make bench-series)")
    mode.add_argument("--matrix", choices=sorted(MATRICES), default="default",
                      help="default: make bench (10-20 min on 2 cores); full: every workload and "
                           "a denser sweep (about three times as long)")
    p.add_argument("--only", default="", help="comma-separated substrings: keep matching configs "
                                              "(and their oracles)")
    p.add_argument("--seeds", type=int, default=0,
                   help="override the number of seeds of every configuration (0: the matrix's)")
    p.add_argument("--jobs", type=int, default=2, help="driver processes at a time")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="results folder")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="run nothing: rewrite the report from the results file of an earlier run "
                        "(bench/out/bench.json), e.g. after a change to the report's layout")
    p.add_argument("--doc", default=None,
                   help="markdown report (default docs/benchmarks.md, docs/bench-series.md with "
                        "--series; bench-quick writes none); '' for none")
    args = p.parse_args(argv)
    args.doc = None if args.doc is None else Path(args.doc) if args.doc else Path()
    if args.render:
        return render(args.render, args.doc)
    commits: List[str] = []
    if args.quick:
        configs, stem = quick_matrix(), "quick"
    elif args.series:
        commits = series_commits()
        configs, stem = series_matrix(len(commits)), "series"
    else:
        configs, stem = MATRICES[args.matrix](), ("bench" if args.matrix == "default" else
                                                  f"bench-{args.matrix}")
    if args.only:
        keep = [s for s in args.only.split(",") if s]
        names = {c["name"] for c in configs if any(s in c["name"] for s in keep)}
        names |= {c["oracle"] for c in configs if c["name"] in names and c.get("oracle")}
        configs = [c for c in configs if c["name"] in names]
    if args.seeds:
        for c in configs:
            c["seeds"] = list(range(args.seeds if c.get("group") != "oracle"
                                    else min(args.seeds, SEEDS)))
    args.out.mkdir(parents=True, exist_ok=True)
    loads: List[float] = []
    done = threading.Event()

    def sample_load() -> None:  # other processes on the machine stretch the wall time
        while not done.wait(0 if not loads else 15.0):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    results, wall = run_all(configs, args.pristine.resolve(), args.jobs)
    done.set()
    load = (sum(loads) / len(loads), max(loads)) if loads else None
    for r in results:
        r["stats"] = stats(r)
    cmd = ("make bench-quick" if args.quick else "make bench-series" if args.series
           else "make bench" if args.matrix == "default" else f"bench/run.py --matrix {args.matrix}")
    if args.only or args.seeds:
        cmd += f" (bench/run.py{' --only ' + args.only if args.only else ''}" \
               f"{' --seeds ' + str(args.seeds) if args.seeds else ''})"
    meta = {"command": cmd, "argv": sys.argv, "wall_s": wall, "jobs": args.jobs,
            "matrix": "quick" if args.quick else "series" if args.series else args.matrix,
            "load_average_1min_mean_max": load,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "python": platform.python_version()},
            "statistics": "ratio = geometric mean over seeds of patched/pristine; 95 % Student-t "
                          "interval on the log ratios; noise = interval contains 1",
            "model": costmodel.describe()}
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    if args.series:
        doc = args.doc if args.doc is not None else ROOT / "docs" / "bench-series.md"
        text = series_doc(doc, results, wall, commits) if doc != Path() else ""
        print(text)
    else:
        body = [table(r, oracle_of(results, r["config"])) for r in results if "patched" in r["runs"]]
        print("\n\n".join(body))
        doc = args.doc if args.doc is not None else (None if args.quick else ROOT / "docs" / "benchmarks.md")
        if doc is not None and doc != Path():
            images = plots(results, doc.parent / "img")
            write_doc(doc, results, wall, cmd, images, args.jobs,
                      "quick" if args.quick else args.matrix, load=load)
        print("\n" + summary(results))
    print(f"\nbench: {n_runs(results)} runs in {wall:.0f} s ({args.jobs} at a time)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
