"""A recorded trace (Mooncake format) through SGLang's scheduler: pristine, patched, patched with
clairvoyant eviction, and the unbounded-pool oracle, at the device pool and at a larger pool
(`make bench-trace TRACE=path`).

Each run is one bench/sched_driver.py process (`--workload trace --wl path=...`), two at a time,
pristine from the pinned source tree (--pristine), patched from the installed wheel, exactly as
bench/run.py runs them. Variants, for every page size:
  pristine     the pin, LRU
  patched      the series, LRU
  lpm          the series, LRU, with SGLang's `--schedule-policy lpm` (longest prefix match first)
  clairvoyant  the series, `--eviction clairvoyant` (Belady's rule; bench/clairvoyant.py)
  oracle       the pin with a pool so large nothing is evicted (the hit-rate ceiling)
Pools: the deployment's (costmodel: DeepSeek-V3 on one 8 x H200 instance) and --host-factor x
that, a stand-in for a host tier (see the report). One more patched run at time scale 1 shows
how loaded the instance is at the trace's own pace. Writes bench/out/trace.json, docs/trace.md
and docs/img/trace.png.

    build/venv/bin/python bench/trace_bench.py --help
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import costmodel  # noqa: E402
import workloads  # noqa: E402

DRIVER = ROOT / "bench" / "sched_driver.py"
MODEL = "v3"
VARIANTS = ("pristine", "patched", "lpm", "clairvoyant")
EXTRA = {"lpm": ["--schedule-policy", "lpm"], "clairvoyant": ["--eviction", "clairvoyant"]}
Result = Dict[str, Any]


@dataclass
class Run:
    page: int
    pool: str  # "device", "host" or "oracle"
    variant: str  # pristine, patched, lpm, clairvoyant, oracle
    argv: List[str]
    cost: float  # relative CPU cost, to start the longest first
    tag: str = ""  # "" for the matrix; "load" for the time-scale-1 reference run
    result: Optional[Result] = None
    wall_s: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"page {self.page}, {self.pool}, {self.variant}" + (
            ", time scale 1" if self.tag == "load" else "")

    @property
    def tree(self) -> str:
        return "patched" if self.variant in ("patched", "lpm", "clairvoyant") else "pristine"


def plan(args: argparse.Namespace, host_pool: int) -> List[Run]:
    def base_for(scale: float) -> List[str]:
        out = ["--workload", "trace", "--model", MODEL,
               "--wl", f"path={args.trace}", "--wl", f"time_scale={scale:g}",
               "--wl", f"start={args.start}", "--wl", f"max_requests={args.requests}"]
        if args.max_running_requests:
            out += ["--max-running-requests", str(args.max_running_requests)]
        return out

    base = base_for(args.time_scale)
    runs: List[Run] = []
    if args.time_scale != 1:  # how loaded the instance is at the trace's own pace
        runs.append(Run(args.pages[0], "device", "patched",
                        base_for(1) + ["--page-size", str(args.pages[0])], 1.0, tag="load"))
    for page in args.pages:
        cost = 1.7 if page == 1 else 1.0  # page 1 matches keys token by token
        for pool, pool_args in (("device", []), ("host", ["--pool-tokens", str(host_pool)])):
            for v in VARIANTS:
                extra = EXTRA.get(v, [])
                runs.append(Run(page, pool, v, base + ["--page-size", str(page)] + pool_args + extra,
                                cost * (1.1 if pool == "host" else 1.0)))
        runs.append(Run(page, "oracle", "oracle", base + ["--page-size", str(page), "--oracle"],
                        cost * 1.6))
    return runs


def run_one(run: Run, pristine: Path, patched: Optional[Path]) -> None:
    env = dict(os.environ)
    tree = pristine if run.tree == "pristine" else patched
    paths = ([str(tree)] if tree else []) + [str(ROOT / "ci" / "cpu")]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump([run.argv], f)
        batch = f.name
    cmd = [sys.executable, "-W", "ignore", str(DRIVER), "--batch", batch]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    run.wall_s = time.perf_counter() - t0
    os.unlink(batch)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or len(lines) != 1:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"bench-trace: {run.name} failed (rc {proc.returncode}); "
                         f"PYTHONPATH={env['PYTHONPATH']} {shlex.join(cmd[:-2] + run.argv)}")
    res = json.loads(lines[0])
    where = res["sglang_file"]
    ok = where.startswith(str(tree)) if tree else not where.startswith(str(ROOT / "build" / "work"))
    if not ok:
        raise SystemExit(f"bench-trace: {run.name} imported sglang from {where}")
    run.result = res


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_all(runs: List[Run], pristine: Path, patched: Optional[Path], jobs: int) -> float:
    t0 = time.perf_counter()
    order = sorted(runs, key=lambda r: -r.cost)
    done = 0
    with cf.ThreadPoolExecutor(max_workers=jobs) as ex:
        futs = {ex.submit(run_one, r, pristine, patched): r for r in order}
        for fut in cf.as_completed(futs):
            fut.result()
            done += 1
            r = futs[fut]
            print(f"bench-trace: [{done}/{len(runs)}] {r.name}: hit rate "
                  f"{r.result['token_hit_rate']:.3f} ({r.wall_s:.0f} s)", file=sys.stderr, flush=True)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# Report

COLS: List[Tuple[str, str, str]] = [  # key, label, format
    ("token_hit_rate", "hit rate", "{:.3f}"),
    ("prefill_flops_saved", "prefill PFLOPs saved", "pf"),
    ("prefill_flops_saved_frac", "saved / no cache", "{:.3f}"),
    ("ttft_p50_s", "TTFT p50 s", "{:.1f}"),
    ("ttft_p99_s", "TTFT p99 s", "{:.1f}"),
    ("output_tokens_per_s", "out tok/s", "{:,.0f}"),
    ("retracted_requests", "retracted", "{:,.0f}"),
    ("pool_use_p50_pct", "pool use p50 %", "{:.1f}"),
    ("cached_pct", "cached, not running: mean % of pool", "{:.1f}"),
    ("mean_running_requests", "mean running", "{:.1f}"),
    ("modelled_makespan_s", "makespan s", "{:,.0f}"),
]


def fmt(v: Any, f: str) -> str:
    if v is None:
        return "-"
    return f"{v / 1e15:,.1f}" if f == "pf" else f.format(v)


def get(runs: List[Run], page: int, pool: str, variant: str, tag: str = "") -> Optional[Result]:
    for r in runs:
        if r.page == page and r.pool == pool and r.variant == variant and r.tag == tag:
            return r.result
    return None


def derive(runs: List[Run]) -> None:
    for r in runs:
        res = r.result
        assert res is not None
        res["cached_pct"] = 100.0 * res["mean_evictable_cached_tokens"] / res["config"]["pool_tokens"]
        res["driver_wall_s"] = r.wall_s


def results_table(runs: List[Run], pages: Sequence[int]) -> str:
    head = "| page | pool | variant | " + " | ".join(c[1] for c in COLS) + " |"
    lines = [head, "|" + " --- |" * 3 + " ---: |" * len(COLS)]
    for page in pages:
        for pool in ("device", "host", "oracle"):
            for v in (VARIANTS if pool != "oracle" else ("oracle",)):
                res = get(runs, page, pool, v)
                if res is None:
                    continue
                pool_txt = f"{pool} ({res['config']['pool_tokens']:,})"
                lines.append(f"| {page} | {pool_txt} | {v} | "
                             + " | ".join(fmt(res.get(k), f) for k, _, f in COLS) + " |")
    for r in runs:
        if r.tag == "load" and r.result is not None:
            lines.append(f"| {r.page} | {r.pool} ({r.result['config']['pool_tokens']:,}) | "
                         f"{r.variant}, time scale 1 | "
                         + " | ".join(fmt(r.result.get(k), f) for k, _, f in COLS) + " |")
    return "\n".join(lines)


def headroom_table(runs: List[Run], pages: Sequence[int]) -> str:
    lines = ["| page | pool | pristine | patched | patched + lpm | clairvoyant | oracle | series: "
             "patched - pristine | **eviction headroom: clairvoyant - patched** | clairvoyant / "
             "oracle |", "| --- | --- |" + " ---: |" * 8]
    for page in pages:
        o = get(runs, page, "oracle", "oracle")
        for pool in ("device", "host"):
            a, b, lpm, c = (get(runs, page, pool, v) for v in VARIANTS)
            if a is None or b is None or c is None:
                continue
            h = [x["token_hit_rate"] for x in (a, b, c)]
            hl = fmt(lpm["token_hit_rate"], "{:.3f}") if lpm else "-"
            oh = o["token_hit_rate"] if o else None
            lines.append(f"| {page} | {pool} | {h[0]:.3f} | {h[1]:.3f} | {hl} | {h[2]:.3f} | "
                         f"{fmt(oh, '{:.3f}')} | {h[1] - h[0]:+.3f} | **{h[2] - h[1]:+.3f}** | "
                         f"{(h[2] / oh if oh else float('nan')):.2f} |")
    return "\n".join(lines)


def plot(runs: List[Run], pages: Sequence[int], path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench-trace: matplotlib is not installed; no plot", file=sys.stderr)
        return None
    groups = [(p, pool) for p in pages for pool in ("device", "host")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.2
    for ax, key, label in ((axes[0], "token_hit_rate", "token hit rate"),
                           (axes[1], "ttft_p99_s", "modelled TTFT p99 (s)")):
        for k, v in enumerate(VARIANTS):
            ys = [(get(runs, p, pool, v) or {}).get(key, 0.0) for p, pool in groups]
            ax.bar([i + (k - 1.5) * width for i in range(len(groups))], ys, width, label=v)
        for i, (p, _) in enumerate(groups):
            o = get(runs, p, "oracle", "oracle")
            if o:
                ax.hlines(o[key], i - 2 * width, i + 2 * width, colors="gray", linestyles="--",
                          label="oracle (no eviction)" if i == 0 else None)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"page {p}\n{pool} pool" for p, pool in groups], fontsize=8)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Mooncake-format trace replay, DeepSeek-V3 geometry, one 8 x H200 instance "
                 "(bench/trace_bench.py)", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def module_section(path: Path, title: str) -> str:
    """A section of a module docstring (title line, dashes, text up to the next section)."""
    doc = path.read_text().split('"""')[1]
    m = re.search(re.escape(title) + r"\n-+\n(.*?)(?:\n\n[^\n]+\n-+\n|\n\n    |\Z)", doc, re.S)
    return m.group(1).strip() if m else f"(see {path.relative_to(ROOT)})"


def shown(path: str) -> str:
    """A path as the report shows it: relative to the repository (machine-independent)."""
    return os.path.relpath(path, ROOT)


def where(res: Optional[Result]) -> str:
    """The sglang package a run imported, relative to the repository where it is inside."""
    path = Path(res["sglang_path"]) if res else Path("?")
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_text(runs: List[Run], args: argparse.Namespace, cfg: Dict[str, Any], ref: Result,
              span: float, trace_info: Dict[str, Any]) -> str:
    """What the run says about how busy the instance is, from the measured numbers."""
    def busy(res: Result, arrivals: float) -> str:
        late = res["modelled_makespan_s"] - arrivals
        return (f"the last request finishes {late:,.0f} s after the last arrival (makespan "
                f"{res['modelled_makespan_s']:,.0f} s for arrivals over {arrivals:,.0f} s), "
                f"{res['mean_running_requests']:.1f} requests run on average, TTFT p50 "
                f"{res['ttft_p50_s']:.1f} s, p99 {res['ttft_p99_s']:.1f} s, pool use p50 "
                f"{res['pool_use_p50_pct']:.0f} %")

    page = args.pages[0]
    scaled = (f"time scale {args.time_scale:g} {cfg['num_requests'] / max(span, 1e-9):.2f} "
              "requests/s" if args.time_scale else "time scale 0 sends them all at t=0")
    out = [f"{cfg['num_requests']:,} requests; their timestamps give "
           f"{trace_info['trace_rate']:.2f} requests/s, {scaled} (mean prompt "
           f"{cfg['input_tokens'] / cfg['num_requests']:,.0f} tokens). Patched, device pool, "
           f"page {page}: " + busy(ref, span) + "."]
    one = get(runs, page, "device", "patched", tag="load")
    if one is not None:
        out.append("The same run at time scale 1 (the trace's own pace, which a cluster served): "
                   + busy(one, trace_info["trace_span_s"]) + ".")
    cores = min(args.jobs, os.cpu_count() or 1)
    cpu = trace_info["driver_cpu_s"]
    out.append("The default (1,000 requests, time scale 4) is chosen so that one modelled "
               "instance is busy but keeps up with the arrivals (at time scale 1 its queue grows "
               "through the run; compare the two sentences above) and `make bench-trace` with the "
               "shared trace stays under 15 minutes on this 2-core machine: the driver processes "
               f"used {cpu:,.0f} CPU-seconds, {cpu / cores / 60:.1f} minutes of {cores} cores "
               f"(this run's wall time: {trace_info['wall_s'] / 60:.1f} minutes; more means "
               "other work shared the machine). Change them with "
               "`BENCH_ARGS='--requests N --time-scale X'`.")
    return " ".join(out)


def write_doc(doc: Path, img: Optional[Path], runs: List[Run], args: argparse.Namespace,
              wall: float, trace_info: Dict[str, Any], cmd: str) -> None:
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} "
               f"{platform.release()}, Python {platform.python_version()}, no GPU")
    ref = get(runs, args.pages[0], "device", "patched")
    host = get(runs, args.pages[0], "host", "patched")
    assert ref is not None and host is not None
    cfg = ref["config"]
    geom = costmodel.GEOMETRIES[MODEL]
    span = trace_info["span_s"]
    settings = "\n".join(
        f"- {r.name}: `{shlex.join(r.argv).replace(args.trace, shown(args.trace))}` "
        f"({r.wall_s:.0f} s)" for r in runs)
    lines = [
        "# A recorded trace: pristine, patched, clairvoyant eviction, oracle",
        "",
        f"Written by `{cmd}` (bench/trace_bench.py, {args.jobs} driver processes at a time). "
        f"Machine: {machine}. Wall time: **{wall:.0f} s** ({len(runs)} runs, "
        f"{trace_info['driver_cpu_s']:,.0f} CPU-seconds of driver processes). All figures come "
        "from that command; times are *modelled* (docs/benchmarks.md, Method), never measured "
        "on a GPU.",
        "",
        f"Pristine = `{where(get(runs, args.pages[0], 'device', 'pristine'))}`; patched and "
        f"clairvoyant = `{where(ref)}` (sglang {ref.get('sglang_version', '?')}); oracle = "
        "pristine with an unbounded pool.",
        "",
        f"Trace: `{shown(args.trace)}` ({trace_info['requests_in_file']:,} requests), sha256 "
        f"`{trace_info['sha256']}`. Replayed: {cfg['num_requests']:,} requests from position "
        f"{args.start} in timestamp order, {cfg['input_tokens']:,} prompt tokens, "
        f"{cfg['unique_tokens']:,} unique prefix-tree tokens (prompts and outputs). Their "
        f"timestamps span {trace_info['trace_span_s']:,.0f} s; "
        + (f"time scale {args.time_scale:g} spreads the arrivals over {span:,.0f} modelled "
           f"seconds ({cfg['num_requests'] / max(span, 1e-9):.2f} requests/s)."
           if args.time_scale else "time scale 0: all arrive at t=0 (closed loop)."),
        "",
        f"Settings: DeepSeek-V3 geometry ({geom.kv_bytes_per_token:,} KV bytes per token), "
        f"deployment `{cfg['deployment']}` (one 8 x H200 instance, TP 8); device pool "
        f"{cfg['pool_tokens']:,} tokens (costmodel's deployment sizing, sched_driver's default "
        f"pool); host pool {host['config']['pool_tokens']:,} tokens = {args.host_factor:g} x the "
        f"deployment's; page sizes {', '.join(map(str, args.pages))}; max running requests "
        f"{cfg['max_running_requests']}, chunked prefill {cfg['chunked_prefill_size']}; FCFS. "
        "Outputs: each request generates the trace's output_length tokens (0 counts as 1) and the "
        "scheduler is told max_new_tokens = output_length (`--wl max_new_tokens=0`).",
        "",
        "## Eviction headroom",
        "",
        headroom_table(runs, args.pages),
        "",
        "Hit rate = radix-cached prefix tokens / prompt tokens at admission. *Eviction headroom* = "
        "clairvoyant - patched at the same pool, page size and admission order: what a better "
        "eviction order could still find. The oracle has an unbounded pool.",
        "",
        "## All metrics",
        "",
        results_table(runs, args.pages),
        "",
        "*cached, not running* = the tree's evictable tokens (cached KV no running request holds), "
        "mean over scheduler steps, as a share of the pool. Prefill PFLOPs saved = no-cache "
        "prefill FLOPs - computed (costmodel). Makespan: first arrival to last token.",
        "",
    ]
    if img is not None:
        lines += [f"![hit rate and TTFT p99 per variant](img/{img.name})", ""]
    lines += [
        "## Load: request count and time scale",
        "",
        load_text(runs, args, cfg, ref, span, trace_info),
        "",
        "## The host-tier stand-in",
        "",
        f"The *host* rows give the same scheduler a device pool {args.host_factor:g} x larger. "
        "That stands in for a host-memory tier (HiCache) with free, instant transfers: an "
        "upper bound on what such a tier adds at this eviction order, not a model of HiCache "
        "(SGLang's HiCache itself, with modelled copy times, is run on this trace by "
        "bench/hicache_bench.py: docs/hicache.md). Running requests may use the larger pool "
        "too, which a host tier does not allow.",
        "",
        "## What clairvoyant means here (bench/clairvoyant.py)",
        "",
        module_section(ROOT / "bench" / "clairvoyant.py", "What \"clairvoyant\" means here"),
        "",
        "Limits:",
        "",
        module_section(ROOT / "bench" / "clairvoyant.py",
                       "Limits (why this is a reference, not a proven bound)"),
        "",
        "## The replay",
        "",
        "`--workload trace` (bench/workloads.py) turns each hash id into a fixed 512-token block "
        "(the same id gives the same tokens, different ids differ in their first page) and cuts "
        "the prompt to input_length; outputs are the driver's synthetic tokens. Reuse is what the "
        "trace marks as shared (equal ids at the same positions). A follow-up turn's prompt "
        "covers the previous answer with new ids, so the replay does not reuse the previous "
        "turn's partial last block or its output, which a real radix cache could: hit rates "
        "here are lower than a live service's by up to one block plus one answer per turn.",
        "",
        "## Runs (driver arguments, wall time of each)",
        "",
        settings,
        "",
    ]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines))


def measure(p: argparse.ArgumentParser, args: argparse.Namespace
            ) -> Tuple[List[Run], Dict[str, Any], float, str]:
    """Run the matrix; save bench/out/trace.json. Returns (runs, trace info, wall s, command)."""
    try:  # fail here, with the file and line, rather than in 15 driver processes
        recs = workloads.read_mooncake(args.trace)
    except workloads.TraceFormatError as e:
        raise SystemExit(f"bench-trace: {e}") from None
    ts = sorted(r.timestamp_ms for r in recs)[args.start:][:args.requests or None]
    if not ts:
        raise SystemExit(f"bench-trace: --start {args.start} is past the trace's {len(recs)} requests")
    trace_span = (ts[-1] - ts[0]) / 1000.0
    trace_info = {"requests_in_file": len(recs), "sha256": sha256(args.trace),
                  "trace_span_s": trace_span, "span_s": trace_span * args.time_scale,
                  "trace_rate": len(ts) / max(trace_span, 1e-9)}
    geom = costmodel.GEOMETRIES[MODEL]
    host_pool = int(args.host_factor * costmodel.DEPLOYMENTS[geom.deployment].pool_tokens(geom))
    runs = plan(args, host_pool)
    cpu0 = children_cpu_s()
    wall = run_all(runs, args.pristine.resolve(), args.patched.resolve() if args.patched else None,
                   args.jobs)
    trace_info["driver_cpu_s"] = children_cpu_s() - cpu0
    trace_info["wall_s"] = wall
    derive(runs)
    cmd = f"make bench-trace TRACE={shlex.quote(shown(args.trace))}"
    defaults = p.parse_args(["--trace", "x", "--pristine", "x"])
    changed = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k in
               ("requests", "start", "time_scale", "host_factor", "max_running_requests", "jobs")
               if getattr(args, k) != getattr(defaults, k)]
    if args.patched:
        changed.append(f"--patched {args.patched}")
    if args.pages != [64, 1]:
        changed.append(f"--pages {','.join(map(str, args.pages))}")
    if changed:
        cmd += f" BENCH_ARGS='{' '.join(changed)}'"
    args.out.mkdir(parents=True, exist_ok=True)
    keep = ("requests", "start", "time_scale", "host_factor", "pages", "max_running_requests",
            "jobs", "trace")
    (args.out / "trace.json").write_text(json.dumps({
        "meta": {"command": cmd, "argv": sys.argv, "wall_s": wall, "trace": trace_info,
                 "args": {k: getattr(args, k) for k in keep},
                 "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                             "python": platform.python_version()}},
        "runs": [{"page": r.page, "pool": r.pool, "variant": r.variant, "tag": r.tag,
                  "argv": r.argv, "wall_s": r.wall_s, "result": r.result} for r in runs]},
        indent=2))
    return runs, trace_info, wall, cmd


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", required=True, help="trace file in Mooncake's format (JSON lines)")
    p.add_argument("--pristine", type=Path, required=True, help="pristine tree's python/ folder")
    p.add_argument("--patched", type=Path, default=None,
                   help="a patched tree's python/ folder (default: the installed wheel)")
    p.add_argument("--requests", type=int, default=1000, help="requests to replay (default 1000)")
    p.add_argument("--start", type=int, default=0, help="first request (timestamp order)")
    p.add_argument("--time-scale", type=float, default=4.0,
                   help="multiply inter-arrival gaps (default 4; 0: all at t=0)")
    p.add_argument("--host-factor", type=float, default=4.0,
                   help="the host-tier stand-in pool = F x the device pool (default 4)")
    p.add_argument("--pages", default="64,1", help="page sizes, comma-separated (default 64,1)")
    p.add_argument("--max-running-requests", type=int, default=0,
                   help="passed to the driver (default: the driver's own)")
    p.add_argument("--jobs", type=int, default=2, help="driver processes at a time")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="results folder")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the report from --out/trace.json (the last run's results) "
                        "without running anything")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "trace.md",
                   help="markdown report (default docs/trace.md; '' for none); the plot goes to "
                        "img/trace.png next to it")
    args = p.parse_args(argv)
    args.pages = [int(x) for x in args.pages.split(",") if x]
    args.trace = str(Path(args.trace).resolve())
    if args.report_only:
        saved = json.loads((args.out / "trace.json").read_text())
        meta = saved["meta"]
        for k, v in meta["args"].items():  # the settings of the run that wrote the results
            setattr(args, k, v)
        runs = [Run(r["page"], r["pool"], r["variant"], r["argv"], 0.0, r.get("tag", ""),
                    r["result"], r["wall_s"]) for r in saved["runs"]]
        trace_info, wall, cmd = meta["trace"], meta["wall_s"], meta["command"]
    else:
        runs, trace_info, wall, cmd = measure(p, args)
    print(headroom_table(runs, args.pages) + "\n\n" + results_table(runs, args.pages))
    if str(args.doc) not in ("", "."):
        img = plot(runs, args.pages, args.doc.parent / "img" / "trace.png")
        write_doc(args.doc, img, runs, args, wall, trace_info, cmd)
        print(f"bench-trace: wrote {args.doc}" + (f" and {img}" if img else ""), file=sys.stderr)
    print(f"bench-trace: {len(runs)} runs in {wall:.0f} s ({args.jobs} at a time)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
