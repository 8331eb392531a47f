"""Pristine vs patched SGLang on the same traces, in one invocation (`make bench`, `make bench-quick`,
`make bench-series`).

Each configuration runs bench/sched_driver.py once per variant, in fresh processes of the CPU
environment (several configurations of one variant share a process, `--batch`; two processes run
at a time). Variants:
  pristine  the pinned, unpatched source tree first on PYTHONPATH (--pristine)
  patched   the wheel built from the series, installed in this environment
  pN        the series' first N patches: commit N of `pristine..HEAD` in build/work/tree,
            exported with `git archive` to build/work/variants/pN (re-exported when the commit moves)
  oracle    pristine with a pool so large nothing is evicted (the hit-rate ceiling)
Writes bench/out/<mode>.json, docs/benchmarks.md (or docs/bench-series.md) and docs/img/*.png,
and prints the tables, the summary last.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import costmodel  # noqa: E402

DRIVER = ROOT / "bench" / "sched_driver.py"
TREE = ROOT / "build" / "work" / "tree"
VARIANTS_DIR = ROOT / "build" / "work" / "variants"

Config = Dict[str, Any]  # name, args (driver argv), variants, sweep (optional)

# Relative CPU cost of one run of each workload at its default size (this machine), used only to
# pack runs into processes.
COST = {"gsp": 6, "gsp-zipf": 5, "fewshot": 3, "multiturn": 9, "random": 13, "r1": 30}

PRESSURE = 0.3  # pool = 30 % of the trace's unique prefix-tree tokens: pool use > 80 % everywhere
SWEEP = (0.15, 0.2, 0.4)  # extra pressures for the plots (PRESSURE is the fourth point)
R1_SWEEP = (0.15, 0.2)  # r1 retracts in earnest only below 0.2 (4 of 256 requests at 0.3)


def cfg(workload: str, page: int, running: int, variants: Sequence[str], model: str = "v3",
        pressure: float = PRESSURE, extra: Sequence[str] = (), tag: str = "") -> Config:
    name = f"{workload}-page{page}-run{running}" + (f"-{model}" if model != "v3" else "") + tag
    args = ["--workload", workload, "--page-size", str(page), "--max-running-requests",
            str(running), "--model", model, "--pressure", str(pressure), *extra]
    return dict(name=name, workload=workload, page_size=page, max_running_requests=running,
                model=model, pressure=pressure, args=args, variants=list(variants))


def full_matrix() -> List[Config]:
    pp = ("pristine", "patched")
    out: List[Config] = []
    for page in (64, 1):
        for running in (128, 512):
            out.append(cfg("gsp", page, running, pp))
    out += [cfg("gsp", 64, 128, pp, model="v2-lite"), cfg("gsp", 64, 128, pp, model="v3-fp8")]
    for wl in ("gsp-zipf", "fewshot", "multiturn", "random"):
        out += [cfg(wl, 64, 128, pp), cfg(wl, 1, 128, pp)]
    for page in (64, 1):
        for running in (128, 512):
            out.append(cfg("r1", page, running, pp))
    # Oracle: once per workload and page size (the pool does not depend on pressure).
    for wl in ("gsp", "gsp-zipf", "fewshot", "multiturn", "random", "r1"):
        for page in (64, 1):
            c = cfg(wl, page, 128, ("oracle",), tag="-oracle")
            c["args"] = c["args"][:-2] + ["--oracle"]  # drop --pressure
            c["oracle_for"] = True
            out.append(c)
    # Pressure sweep for the plots (page 64, 128 running).
    for wl, pressures in (("gsp", SWEEP), ("multiturn", SWEEP), ("r1", R1_SWEEP)):
        for pr in pressures:
            c = cfg(wl, 64, 128, pp, pressure=pr, tag=f"-pressure{pr:g}")
            c["sweep"] = True
            out.append(c)
    return out


def quick_matrix() -> List[Config]:
    c = cfg("gsp", 64, 64, ("pristine", "patched"), pressure=0.4,
            extra=["--wl", "groups=16", "--wl", "prompts_per_group=8", "--wl", "system_len=1024",
                   "--wl", "question_len=64", "--wl", "output_len=64"], tag="-quick")
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


class Job:
    def __init__(self, variant: str, path: Optional[Path], runs: List[Tuple[Config, List[str]]]):
        self.variant, self.path, self.runs = variant, path, runs
        self.cost = sum(COST.get(c["workload"], 10) for c, _ in runs) + 12  # + import


def pack(variant: str, path: Optional[Path], runs: List[Tuple[Config, List[str]]],
         budget: float = 60.0) -> List[Job]:
    """Split one variant's runs into processes of about `budget` cost (longest first)."""
    runs = sorted(runs, key=lambda r: -COST.get(r[0]["workload"], 10))
    total = sum(COST.get(c["workload"], 10) for c, _ in runs)
    n = max(1, min(len(runs), round(total / budget)))
    bins: List[List[Tuple[Config, List[str]]]] = [[] for _ in range(n)]
    loads = [0.0] * n
    for r in runs:
        i = loads.index(min(loads))
        bins[i].append(r)
        loads[i] += COST.get(r[0]["workload"], 10)
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


def check_origin(job: Job, res: Dict[str, Any]) -> None:
    where = res["sglang_file"]
    inside = job.path is not None and where.startswith(str(job.path))
    if (job.path is not None) != inside or (job.path is None and where.startswith(str(ROOT / "build" / "work"))):
        raise SystemExit(f"bench: {job.variant} run imported sglang from {where}")


def derive(res: Dict[str, Any]) -> None:
    res["evicted_per_asked"] = res["tokens_evicted"] / max(1, res["evict_tokens_requested"])
    res["evicted_per_needed"] = res["tokens_evicted"] / max(1, res["tokens_needed"])
    running = max(1.0, res["mean_running_requests"])
    res["idle_free_pages_per_running_req"] = (
        res["mean_idle_free_tokens"] / res["config"]["page_size"] / running)
    res["page_tail_lost"] = res["page_tail_lost_at_insert"] + res["page_tail_lost_at_match"]


def run_all(configs: List[Config], pristine: Path, jobs: int) -> Tuple[List[Dict[str, Any]], float]:
    from tqdm import tqdm

    commits = series_commits() if any(v[1:].isdigit() for c in configs for v in c["variants"]) else None
    per_variant: Dict[str, List[Tuple[Config, List[str]]]] = {}
    for c in configs:
        for v in c["variants"]:
            per_variant.setdefault(v, []).append((c, c["args"]))
    work: List[Job] = []
    for v, runs in per_variant.items():
        work += pack(v, variant_path(v, pristine, commits), runs)
    work.sort(key=lambda j: -j.cost)
    results: Dict[str, Dict[str, Any]] = {c["name"]: {"config": c} for c in configs}
    lock = threading.Lock()
    total = sum(len(j.runs) for j in work)
    t0 = time.time()
    with tqdm(total=total, desc="bench runs", unit="run", file=sys.stderr) as bar:
        def on_result(c: Config, variant: str, res: Dict[str, Any]) -> None:
            derive(res)
            with lock:
                results[c["name"]][variant] = res
                bar.set_postfix_str(f"{c['name']} {variant}", refresh=False)
                bar.update(1)

        with cf.ThreadPoolExecutor(max_workers=jobs) as ex:
            for fut in cf.as_completed([ex.submit(run_job, j, on_result) for j in work]):
                fut.result()
    return [results[c["name"]] for c in configs], time.time() - t0


# ---------------------------------------------------------------------------------------------
# Reporting

ROWS = [  # (key, label, format)
    ("token_hit_rate", "token hit rate", "{:.3f}"),
    ("prefill_tokens_computed", "prefill tokens computed", "{:,.0f}"),
    ("prefill_flops_computed", "prefill PFLOPs computed", "pf"),
    ("prefill_flops_saved_frac", "prefill FLOPs saved vs no cache", "{:.3f}"),
    ("evict_tokens_requested", "tokens asked of evict()", "{:,.0f}"),
    ("tokens_evicted", "tokens evicted", "{:,.0f}"),
    ("tokens_needed", "tokens needed (allocation shortfall)", "{:,.0f}"),
    ("over_evicted_tokens", "over-evicted tokens (evicted - needed)", "{:,.0f}"),
    ("evicted_per_asked", "evicted / asked", "{:.3f}"),
    ("page_tail_lost_at_insert", "tokens lost to page rounding at insert", "{:,.0f}"),
    ("page_tail_lost_at_match", "tokens lost to page rounding at match", "{:,.0f}"),
    ("mean_idle_free_pct", "mean idle free pool (% of pool)", "{:.2f}"),
    ("idle_free_pages_per_running_req", "idle free pool per running request (pages)", "{:.2f}"),
    ("pool_use_p50_pct", "pool use p50 (%)", "{:.1f}"),
    ("pool_use_p99_pct", "pool use p99 (%)", "{:.1f}"),
    ("retracted_requests", "retracted requests", "{:,.0f}"),
    ("reprefilled_tokens", "re-prefilled tokens", "{:,.0f}"),
    ("ttft_mean_s", "modelled TTFT mean (s)", "{:.2f}"),
    ("ttft_p99_s", "modelled TTFT p99 (s)", "{:.2f}"),
    ("output_tokens_per_s", "modelled output tokens/s", "{:,.0f}"),
    ("modelled_makespan_s", "modelled makespan (s)", "{:.1f}"),
    ("steps", "scheduler steps", "{:,.0f}"),
    ("sched_cpu_ms_per_step", "scheduler CPU per step (ms)", "{:.2f}"),
    ("wall_s", "scheduler loop wall time (s)", "{:.1f}"),
]


def fmt(v: Any, f: str) -> str:
    if v is None:
        return "-"
    if f == "pf":
        return f"{v / 1e15:,.1f}"
    return f.format(v)


def ratio(a: Any, b: Any) -> str:
    if a is None or b is None:
        return "-"
    return f"{b / a:.3f}" if a else ("1.000" if b == 0 else "n/a")


def oracle_of(results: List[Dict[str, Any]], c: Config) -> Optional[Dict[str, Any]]:
    for r in results:
        oc = r["config"]
        if oc.get("oracle_for") and oc["workload"] == c["workload"] and oc["page_size"] == c["page_size"]:
            return r.get("oracle")
    return None


def table(r: Dict[str, Any], oracle: Optional[Dict[str, Any]]) -> str:
    a, b = r["pristine"], r["patched"]
    head = "| metric | pristine | patched | patched / pristine |"
    sep = "| --- | ---: | ---: | ---: |"
    if oracle:
        head += " oracle (unbounded pool) |"
        sep += " ---: |"
    lines = [f"### {r['config']['name']}", "", head, sep]
    for key, label, f in ROWS:
        row = f"| {label} | {fmt(a.get(key), f)} | {fmt(b.get(key), f)} | {ratio(a.get(key), b.get(key))} |"
        if oracle:
            row += f" {fmt(oracle.get(key), f)} |"
        lines.append(row)
    return "\n".join(lines)


SUMMARY_COLS = [  # (key, label, format)
    ("token_hit_rate", "hit rate", "{:.3f}"),
    ("prefill_flops_computed", "prefill FLOPs", None),
    ("tokens_evicted", "evicted", None),
    ("over_evicted_tokens", "over-evicted", None),
    ("ttft_p99_s", "TTFT p99", None),
    ("output_tokens_per_s", "out tok/s", None),
]


def summary(results: List[Dict[str, Any]]) -> str:
    head = ("| config | pool (tokens, pressure) | pool use p50 % | hit rate pristine -> patched "
            "(oracle) | " + " | ".join(f"{lab} ratio" for _, lab, f in SUMMARY_COLS if f is None)
            + " | retracted pristine -> patched |")
    n = head.count("|") - 1
    lines = [head, "|" + " --- |" * n]
    for r in results:
        c = r["config"]
        if c.get("oracle_for") or "patched" not in r:
            continue
        a, b, o = r["pristine"], r["patched"], oracle_of(results, c)
        cells = [c["name"], f"{a['config']['pool_tokens']:,} ({a['config']['pressure']:.2f})",
                 f"{a['pool_use_p50_pct']:.1f} / {b['pool_use_p50_pct']:.1f}",
                 f"{a['token_hit_rate']:.3f} -> {b['token_hit_rate']:.3f}"
                 + (f" ({o['token_hit_rate']:.3f})" if o else "")]
        cells += [ratio(a[k], b[k]) for k, _, f in SUMMARY_COLS if f is None]
        cells.append(f"{a['retracted_requests']} -> {b['retracted_requests']}")
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
    img.mkdir(parents=True, exist_ok=True)
    written = []
    for wl in sorted({r["config"]["workload"] for r in results if r["config"].get("sweep")}):
        pts = sorted((r for r in results if r["config"]["workload"] == wl
                      and r["config"]["page_size"] == 64 and r["config"]["max_running_requests"] == 128
                      and r["config"]["model"] == "v3" and "patched" in r),
                     key=lambda r: r["config"]["pressure"])
        oracle = oracle_of(results, pts[0]["config"])
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        x = [r["pristine"]["config"]["pressure"] for r in pts]
        for ax, key, label in ((axes[0], "token_hit_rate", "token hit rate"),
                               (axes[1], "ttft_p99_s", "modelled TTFT p99 (s)")):
            for v, style in (("pristine", "o-"), ("patched", "s-")):
                ax.plot(x, [r[v][key] for r in pts], style, label=v)
            if oracle:
                ax.axhline(oracle[key], color="gray", ls="--", label="oracle (no eviction)")
                lo, hi = ax.get_ylim()  # keep the oracle line inside the axes
                pad = 0.05 * (max(hi, oracle[key]) - min(lo, oracle[key]))
                ax.set_ylim(min(lo, oracle[key] - pad), max(hi, oracle[key] + pad))
            ax.set_xlabel("pool / unique prefix-tree tokens")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{wl}, page 64, 128 running, DeepSeek-V3 geometry (bench/run.py)")
        fig.tight_layout()
        path = img / f"pressure-{wl}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def replacements_text() -> str:
    import re

    doc = DRIVER.read_text().split('"""')[1]
    m = re.search(r"Replacements and stubs.*?\n-+\n(.*?)\n\n", doc, re.S)
    return m.group(1) if m else "(see bench/sched_driver.py)"


def model_text() -> str:
    d = costmodel.describe()
    lines = ["Geometries (KV pool bytes and FLOPs):", "",
             "| model | layers | latent + rope | KV bytes/token | active params | total params | "
             "heads x (qk + v) dims | default deployment |", "|" + " --- |" * 8]
    for k, g in d["geometries"].items():
        lines.append(f"| {k} | {g['layers']} | {g['kv_lora_rank']} + {g['qk_rope_head_dim']} | "
                     f"{g['kv_bytes_per_token']:,} | {g['active_params'] / 1e9:g}B | "
                     f"{g['total_params'] / 1e9:g}B | {g['heads']} x ({g['qk_head_dim']} + "
                     f"{g['v_head_dim']}) | {g['deployment']} |")
    lines += ["", "Deployments (used by `--deployment` for the pool, and by the step-time model):", "",
              "| deployment | GPUs (TP) | HBM/GPU | bandwidth/GPU | bf16 peak/GPU | "
              "mem_fraction_static | reserve/GPU | compute eff. | bandwidth eff. | "
              "host link/GPU (eff.) | pool tokens |",
              "|" + " --- |" * 11]
    for k, dp in d["deployments"].items():
        pools = ", ".join(f"{kk[12:-1]}: {v:,}" for kk, v in dp.items() if kk.startswith("pool_tokens["))
        lines.append(f"| {k} | {dp['gpus']} | {dp['hbm_bytes'] / 1e9:g} GB | "
                     f"{dp['hbm_bandwidth'] / 1e12:g} TB/s | {dp['peak_flops'] / 1e12:g} TFLOP/s | "
                     f"{dp['mem_fraction_static']} | {dp['reserved_bytes'] / 1e9:g} GB | "
                     f"{dp['compute_efficiency']} | {dp['bandwidth_efficiency']} | "
                     f"{dp['host_link_bandwidth'] / 1e9:g} GB/s ({dp['host_link_efficiency']}) | "
                     f"{pools} |")
    lines += ["", "Step-time parameters derived from them:", "",
              "| model | decode a (ms) | decode b (us/request) | decode c (ns/KV token) | "
              "prefill effective PFLOP/s | prefill tokens/s for a 2K prompt | "
              "host copy (us/token) |", "|" + " --- |" * 7]
    for k, p in d["step_params"].items():
        lines.append(f"| {k} | {p['decode_a_s'] * 1e3:.2f} | {p['decode_b_s_per_req'] * 1e6:.1f} | "
                     f"{p['decode_c_s_per_kv_token'] * 1e9:.2f} | {p['prefill_flops_per_s'] / 1e15:.3f} | "
                     f"{p['prefill_tokens_per_s_at_2k']:,.0f} | "
                     f"{p['host_copy_s_per_token'] * 1e6:.2f} |")
    lines += ["", "Sources:", ""] + [f"- {s}" for s in d["sources"]]
    return "\n".join(lines)


METHOD = """\
## Method

- **Scheduler.** Every run is SGLang's own scheduler, batch, radix-cache and allocator code
  (see the list below for the pieces replaced) on a KV buffer of tiny dimensions: only slot
  indices matter for what is scheduled, cached and evicted.
- **Pool.** `--pressure F`: the pool holds F x the trace's unique tokens, counted in a
  token-level prefix tree of every request's input and (synthetic) output. The oracle runs the
  same trace on the pristine tree with a pool of unique tokens + one page per request + one page
  per running slot + the longest request, so nothing is evicted: its hit rate is the ceiling for
  that page size. `--deployment` instead sizes the pool from a memory budget (table below).
- **Prefill FLOPs** (`costmodel.Geometry.prefill_flops`): a token at position p costs
  2 x N_active + 2 x layers x p' x heads x (qk_head_dim + v_head_dim), p' = p + 1 keys
  (prefill runs MLA as multi-head attention; causal). Computed = over every extend chunk the
  scheduler ran; no-cache = every request's whole prompt once; saved = no-cache - computed.
- **Evicted vs needed.** For each `RadixCache.evict` call, *needed* is the part of the
  allocation that follows it (`alloc` / `alloc_extend` / `alloc_decode`) that the free pool
  before the eviction could not cover; over-evicted = evicted - needed.
- **Page rounding.** *At insert*: a finished request's KV length modulo the page size (the
  partial last page `cache_finished_req` frees instead of caching). *At match*: after a
  page-aligned `match_prefix`, the number of next tokens that agree with a cached child's key
  (a token-granular cache would have reused them).
- **Modelled time.** Requests arrive at t = 0 (`--request-rate` gives Poisson arrivals in
  modelled seconds; multi-turn rounds arrive when the previous round finishes). A prefill step
  takes its FLOPs / (GPUs x bf16 peak x compute efficiency); a decode step takes
  a + b x batch + c x KV tokens read, with a = weight bytes per GPU / effective bandwidth,
  b = 2 x N_active / effective FLOP/s, c = KV bytes per token / effective bandwidth (MLA's
  latent is replicated on every TP rank, so each GPU reads all of it). TTFT = time of the first
  output token - arrival (queue wait + prefill); output tokens/s = generated tokens / modelled
  makespan. Non-overlap scheduling: steps do not overlap. The model ranks variants by the work
  the scheduler makes the GPU do; it is not a latency prediction.
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
    return ", ".join(sorted({r[variant].get("sglang_version", "?") for r in results if variant in r}))


def write_doc(path: Path, results: List[Dict[str, Any]], wall: float, cmd: str,
              images: List[Path], jobs: int) -> None:
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} "
               f"{platform.release()}, Python {platform.python_version()}, no GPU")
    settings = "\n".join(f"- `{r['config']['name']}`: `{shlex.join(r['config']['args'])}`"
                         for r in results)
    wl_params = {}
    for r in results:
        for v in ("pristine", "oracle"):
            if v in r:
                wl_params[r["config"]["workload"]] = r[v]["config"]["workload_params"]
    wl_lines = "\n".join(f"- `{k}`: " + ", ".join(f"{p}={x:g}" for p, x in v.items())
                         for k, v in wl_params.items())
    pics = "\n".join(f"![{p.stem}](img/{p.name})" for p in images)
    tables = "\n\n".join(table(r, oracle_of(results, r["config"])) for r in results
                         if "patched" in r)
    path.write_text(
        "# Benchmarks: pristine vs patched, same traces, same run\n\n"
        f"Written by `{cmd}` (bench/run.py, {jobs} driver processes at a time). Machine: {machine}. "
        f"Wall time of the whole matrix: **{wall:.0f} s** ({len([v for r in results for v in r if v != 'config'])} runs).\n\n"
        f"Pristine = the pinned v0.5.10.post1 source; patched = the wheel built from the whole series "
        f"(sglang {versions(results, 'patched')}); "
        "oracle = pristine with an unbounded pool. All figures below come from that command; "
        "times are *modelled* (see Method), never measured on a GPU.\n\n"
        "## Summary\n\n" + summary(results) + "\n\n"
        "Ratios are patched / pristine (below 1 is better for FLOPs, evictions, TTFT; above 1 "
        "for output tokens/s).\n\n"
        + (f"## Hit rate and modelled p99 TTFT vs pool pressure\n\n{pics}\n\n" if pics else "")
        + METHOD + "\n## Step-time model and parameters\n\n" + model_text() + "\n\n"
        "## Workloads (seeded, synthetic token ids; bench/workloads.py)\n\n" + wl_lines + "\n\n"
        "gsp and gsp-zipf use bench_serving's generated-shared-prefix defaults and multiturn "
        "bench_multiturn's defaults; r1 is scaled to 256 requests (8 system prompts) so that the "
        "whole matrix fits the 15-minute CPU budget; fewshot and random are this benchmark's own "
        "shapes.\n\n"
        "## Settings (driver arguments per configuration)\n\n" + settings + "\n\n"
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


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pristine", type=Path, required=True, help="pristine tree's python/ folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one small configuration (make bench-quick)")
    mode.add_argument("--series", action="store_true",
                      help="pristine, p1..pN, patched on a compact matrix (make bench-series)")
    p.add_argument("--only", default="", help="comma-separated substrings: keep matching configs")
    p.add_argument("--jobs", type=int, default=2, help="driver processes at a time")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="results folder")
    p.add_argument("--doc", type=Path, default=None,
                   help="markdown report (default docs/benchmarks.md, docs/bench-series.md with "
                        "--series; bench-quick writes none); '' for none")
    args = p.parse_args(argv)
    commits: List[str] = []
    if args.quick:
        configs, stem = quick_matrix(), "quick"
    elif args.series:
        commits = series_commits()
        configs, stem = series_matrix(len(commits)), "series"
    else:
        configs, stem = full_matrix(), "results"
    if args.only:
        keep = [s for s in args.only.split(",") if s]
        configs = [c for c in configs if any(s in c["name"] for s in keep)]
    args.out.mkdir(parents=True, exist_ok=True)
    results, wall = run_all(configs, args.pristine.resolve(), args.jobs)
    cmd = "make bench" + ("-quick" if args.quick else "-series" if args.series else "")
    if args.only:
        cmd += f" (bench/run.py --only {args.only})"
    meta = {"command": cmd, "argv": sys.argv, "wall_s": wall, "jobs": args.jobs,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "python": platform.python_version()},
            "model": costmodel.describe()}
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    if args.series:
        doc = args.doc if args.doc is not None else ROOT / "docs" / "bench-series.md"
        text = series_doc(doc, results, wall, commits) if str(doc) else ""
        print(text)
    else:
        body = [table(r, oracle_of(results, r["config"])) for r in results if "patched" in r]
        print("\n\n".join(body))
        doc = args.doc if args.doc is not None else (None if args.quick else ROOT / "docs" / "benchmarks.md")
        if doc is not None and str(doc):
            images = plots(results, doc.parent / "img")
            write_doc(doc, results, wall, cmd, images, args.jobs)
        print("\n" + summary(results))
    print(f"\nbench: {sum(len(c['variants']) for c in configs)} runs in {wall:.0f} s "
          f"({args.jobs} at a time)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
