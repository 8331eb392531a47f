"""Radix eviction policies through sched_driver.py: LRU, clairvoyant and bench/policies.py.

Two modes:
  driver  ``policy_bench.py driver -- <sched_driver arguments>``: registers bench/policies.py's
          policies in the imported SGLang (``policies.install``), then runs one
          sched_driver.py run and prints its JSON line, with ``policy_stats`` when one of these
          policies ran. Select a policy with ``--server-arg radix_eviction_policy=reuse``.
  sweep   ``policy_bench.py sweep --workload trace --wl path=... --policy lru --policy reuse
          --policy clairvoyant --seed 0 --seed 1 ...``: one driver run per (policy, seed or
          trace start), two processes at a time, then a table of mean and 95 % interval
          (Student t over the seeds) of token hit rate, modelled TTFT p99 and scheduler CPU per
          step, and the difference to LRU per seed. For the trace, ``--start`` replaces seeds.

    PYTHONPATH=<tree>/python:ci/cpu:bench build/venv/bin/python bench/policy_bench.py --help
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
METRICS = (("token_hit_rate", "hit rate", "{:.4f}"), ("ttft_p99_s", "TTFT p99 s", "{:.1f}"),
           ("sched_cpu_ms_per_step", "sched CPU ms/step", "{:.2f}"))


def driver(argv: Sequence[str], census: bool = False) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    import logging

    import sglang_cpu  # noqa: F401  (before any sglang import)
    import policies

    policies.install()
    if census:
        import evict_study

        evict_study.install_census()
    import sched_driver
    import torch

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("sglang").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    res = sched_driver.run_one(list(argv))
    if policies.BUILT:
        res["policy_stats"] = policies.BUILT[-1].stats()
    if census:
        res["census"] = evict_study.CENSUS[-1].stats()
    print(json.dumps(res), flush=True)
    return 0


def policy_args(policy: str) -> List[str]:
    if policy == "clairvoyant":
        return ["--eviction", "clairvoyant"]
    if policy.startswith("hint"):  # hint[prio][-TPR-FPR]
        name, *rates = policy.split("-")
        rates = rates or ["1", "0"]
        out = ["--eviction", "hint", "--hint-tpr", rates[0], "--hint-fpr", rates[1]]
        if name == "hintprio":  # the hint as request priority, SGLang's `priority` policy
            out += ["--hint-as-priority", "--server-arg", "radix_eviction_policy=priority"]
        return out
    return ["--server-arg", f"radix_eviction_policy={policy}"]


def run_driver(argv: List[str], census: bool = False) -> Dict[str, Any]:
    cmd = [sys.executable, "-W", "ignore", __file__, "driver"] + (["--census"] if census else []) \
        + ["--"] + argv
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"policy_bench: run failed (rc {proc.returncode}): {' '.join(cmd)}")
    return json.loads(lines[-1])


def interval(xs: List[float]) -> Tuple[float, float]:
    """Mean and the half-width of its 95 % Student-t interval (0 for one value)."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, 0.0
    return m, T95.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))


def table(results: Dict[str, Dict[str, Dict[str, Any]]], reps: List[str]) -> str:
    pols = list(results)
    out = ["| policy | " + " | ".join(f"{t} (mean +- 95 %)" for _, t, _ in METRICS)
           + " | hit rate - LRU (per run, mean +- 95 %) |",
           "| --- |" + " ---: |" * (len(METRICS) + 1)]
    for p in pols:
        cells = []
        for key, _, fmt in METRICS:
            m, h = interval([results[p][r][key] for r in reps])
            cells.append(f"{fmt.format(m)} +- {fmt.format(h)}")
        if "lru" in results:
            m, h = interval([results[p][r]["token_hit_rate"] - results["lru"][r]["token_hit_rate"]
                             for r in reps])
            cells.append(f"{m:+.4f} +- {h:.4f}")
        else:
            cells.append("-")
        out.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def sweep(a: argparse.Namespace) -> int:
    base = ["--workload", a.workload, "--page-size", str(a.page_size),
            "--max-running-requests", str(a.max_running_requests)]
    for w in a.wl:
        base += ["--wl", w]
    base += shlex.split(a.driver_args)
    if a.pool_tokens:
        base += ["--pool-tokens", str(a.pool_tokens)]
    elif a.pressure:
        base += ["--pressure", str(a.pressure)]
    reps = [f"start={s}" for s in a.start] if a.start else [f"seed={s}" for s in a.seed]
    jobs: List[Tuple[str, str, List[str]]] = []
    for p in a.policy:
        for r in reps:
            k, v = r.split("=")
            extra = ["--wl", f"start={v}"] if k == "start" else ["--seed", v]
            jobs.append((p, r, base + extra + policy_args(p)))
    results: Dict[str, Dict[str, Dict[str, Any]]] = {p: {} for p in a.policy}
    with cf.ThreadPoolExecutor(a.jobs) as ex:
        futs = {ex.submit(run_driver, argv, a.census): (p, r) for p, r, argv in jobs}
        for f in cf.as_completed(futs):
            p, r = futs[f]
            results[p][r] = f.result()
            print(f"{p} {r}: hit {results[p][r]['token_hit_rate']:.4f}", file=sys.stderr)
            if a.out:  # after every run, so that a cut-short sweep keeps what it finished
                Path(a.out).write_text(json.dumps({"argv": sys.argv[1:], "results": results},
                                                  indent=1))
    print(f"{a.workload} {' '.join(a.wl)} page {a.page_size}, {a.max_running_requests} running, "
          f"pool {a.pool_tokens or ('pressure %g' % a.pressure if a.pressure else 'deployment')}; "
          f"runs: {', '.join(reps)}")
    print(table(results, reps))
    if a.out:
        Path(a.out).write_text(json.dumps({"argv": sys.argv[1:], "results": results}, indent=1))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("driver", help="one sched_driver.py run with the policies registered")
    d.add_argument("--census", action="store_true",
                   help="count evicted / kept tokens by kind (bench/evict_study.py Census)")
    d.add_argument("args", nargs=argparse.REMAINDER, help="sched_driver.py arguments (after --)")
    s = sub.add_parser("sweep", help="policies x seeds (or trace starts), with 95 %% intervals")
    s.add_argument("--workload", default="trace")
    s.add_argument("--wl", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--policy", action="append", default=[],
                   help="lru, lfu, slru, clairvoyant, hint[-TPR-FPR] / hintprio[-TPR-FPR] "
                        "(sched_driver --eviction hint [--hint-as-priority]), "
                        "or a bench/policies.py name (repeatable)")
    s.add_argument("--seed", action="append", type=int, default=[])
    s.add_argument("--start", action="append", type=int, default=[],
                   help="trace start offsets (instead of seeds)")
    s.add_argument("--pool-tokens", type=int, default=0)
    s.add_argument("--pressure", type=float, default=0.0)
    s.add_argument("--page-size", type=int, default=64)
    s.add_argument("--max-running-requests", type=int, default=128)
    s.add_argument("--jobs", type=int, default=2)
    s.add_argument("--driver-args", default="", metavar="'ARGS'",
                   help="more sched_driver.py arguments for every run, e.g. "
                        "'--hicache write_through --hicache-ratio 4'")
    s.add_argument("--out", help="write all results as JSON here")
    s.add_argument("--census", action="store_true",
                   help="count evicted / kept tokens by kind in every run (evict_study.Census)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    a = parser().parse_args(argv)
    if a.mode == "driver":
        args = a.args[1:] if a.args[:1] == ["--"] else a.args
        return driver(args, a.census)
    if not a.policy:
        a.policy = ["lru", "reuse", "clairvoyant"]
    if not a.seed and not a.start:
        a.seed = [0, 1, 2]
    return sweep(a)


if __name__ == "__main__":
    raise SystemExit(main())
