"""Breadth matrix: pristine vs patched SGLang over prefix caches, allocators and scheduler modes.

Runs bench/matrix_driver.py once per SGLang tree (pristine and patched, in parallel, each in its
own process with that tree first on PYTHONPATH), compares the two per configuration x scenario,
prints a table and, with ``--out``, writes everything as JSON. What runs for real and what is
replaced is listed in bench/matrix_driver.py; only the non-overlap event loop is driven.
Usage::

    PYTHONPATH=ci/cpu python bench/matrix.py --pristine build/work/pristine/python \
        --patched build/work/tree/python --out bench/out/matrix.json --details

Verdicts per cell (configuration x scenario), asserted by tests/test_breadth_matrix.py:

(a) ``raises``: FAIL when the patched tree raised (bring-up, a step, an idle check, the end
    check) where the pristine one did not. A cell that raises on pristine too is
    ``reported``, not failed.
(b) ``checks``: on the patched tree SGLang's ``self_check_during_idle`` ran and passed at
    every idle point and at the end, and the end check (every lock released, every request
    slot free) passed.
(c) ``schedule``: where the series is meant to change nothing, the fingerprint (per step the
    batch mode and (rid, extend length) list; per request the output ids and finish reason)
    is identical: ChunkCache in every scenario; page 1 without memory pressure, except
    ``priority`` and ``pause`` on tree caches other than Mamba's, where 0007 keeps a
    retracted or preempted request's KV in the tree (so its re-prefill is shorter).
``coverage``: the scenario did what it is for on each tree that ran it (chunked prefill
steps, retractions, evictions, preemptions, the aborts, pause and continue, a decode log line
at every decode step), so that no cell passes vacuously.

When the patched tree raised where the pristine one did not, inside a piece that would hide
the rest of the cell (0006's start-up ``log_kv_cache_geometry``; the decode log line,
``report_decode_stats``), the cell runs again on both trees with that piece isolated
(bench/matrix_driver.py ISOLATIONS ``defer`` / ``quiet``, cumulatively); the last column
shows what, if anything, then fails underneath.

Exit status: 0 when every cell passes, 1 when one fails, 2 on a usage or driver error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "bench" / "matrix_driver.py"


@dataclasses.dataclass(frozen=True)
class Config:
    """One prefix cache / KV pool / allocator combination."""

    name: str
    cache: str  # radix | chunk | swa | mamba | hiradix
    kv: str  # mha | mla (the full-attention pool; swa and mamba use MHA-shaped layers)
    page_size: int


CONFIGS: Tuple[Config, ...] = (
    Config("radix-mha-p1", "radix", "mha", 1),
    Config("radix-mha-p16", "radix", "mha", 16),
    Config("radix-mha-p64", "radix", "mha", 64),
    Config("radix-mla-p1", "radix", "mla", 1),
    Config("radix-mla-p16", "radix", "mla", 16),
    Config("radix-mla-p64", "radix", "mla", 64),
    Config("chunk-mha-p1", "chunk", "mha", 1),
    Config("chunk-mha-p64", "chunk", "mha", 64),
    Config("swa-p1", "swa", "mha", 1),
    Config("swa-p64", "swa", "mha", 64),
    Config("mamba-p1", "mamba", "mha", 1),
    Config("mamba-p64", "mamba", "mha", 64),
    Config("hiradix-mha-p1", "hiradix", "mha", 1),
    Config("hiradix-mha-p64", "hiradix", "mha", 64),
)
CONFIG_BY_NAME: Dict[str, Config] = {c.name: c for c in CONFIGS}

SCENARIOS: Tuple[str, ...] = ("startup", "chunked", "pressure", "priority", "pause", "abort")
SCENARIO_HELP = {
    "startup": "bring-up only, then 3 short requests in two waves (the harness guard)",
    "chunked": "prompts longer than chunked_prefill_size, shared prefixes, ample pool",
    "pressure": "small pool, long outputs: eviction and decode retraction; "
    "a retracted request is aborted while it waits",
    "priority": "enable_priority_scheduling, max 3 running, high-priority late arrivals preempt",
    "pause": "pause_generation(mode='retract') mid-decode, abort a retracted request while "
    "paused, continue_generation",
    "abort": "abort a waiting and a running request (AbortReq through the abort handler)",
}
# Scenarios that retract or preempt without memory pressure (0007 changes what they keep).
RETRACTING = frozenset({"priority", "pause"})


def schedule_must_match(cfg: Config, scenario: str) -> bool:
    """(c): cells where the series is meant to leave the schedule unchanged."""
    if cfg.cache == "chunk":
        return True
    if cfg.page_size != 1 or scenario == "pressure":
        return False
    # 0007 keeps retracted / preempted KV in the tree, except in MambaRadixCache.
    return scenario not in RETRACTING or cfg.cache == "mamba"


@dataclasses.dataclass
class Verdict:
    raises: str  # ok | FAIL | reported | skip
    checks: str  # ok | FAIL | reported | n/a | skip
    schedule: str  # identical | DIFFERS (required) | differs | n/a
    coverage: str  # ok | MISSING ... (the scenario did not do what it is for) | n/a
    notes: List[str]

    @property
    def failed(self) -> bool:
        return ("FAIL" in (self.raises, self.checks) or self.schedule.startswith("DIFFERS")
                or self.coverage.startswith("MISSING"))


def coverage_problems(cfg: Config, scenario: str, res: Dict[str, Any]) -> List[str]:
    """What a run that did not raise failed to exercise (so that no cell passes vacuously)."""
    ex, out = res["exercised"], []
    if not res.get("quiet") and ex["decode_log_lines"] != ex["decode_steps"]:
        out.append(f"{ex['decode_log_lines']} decode log lines for {ex['decode_steps']} "
                   "decode steps")
    if ex["prefill_log_lines"] != ex["extend_steps"]:
        out.append(f"{ex['prefill_log_lines']} prefill log lines for {ex['extend_steps']} "
                   "extend steps")
    if res["idle_checks"] < 3:
        out.append(f"only {res['idle_checks']} idle checks")
    if ex["decode_steps"] == 0:
        out.append("no decode step")
    kinds = [(c["kind"], c.get("where")) for c in res["controls"] if c.get("rid", True)]
    want = {
        "chunked": [("chunked prefill steps", ex["chunked_steps"] > 0)],
        "pressure": [("retractions", ex["retractions"] > 0),
                     ("abort of a retracted request", ("abort", "retracted") in kinds)]
        + ([("evictions", ex["evicted_tokens"] > 0)] if cfg.cache != "chunk" else []),
        "priority": [("preemptions", ex["retractions"] > 0)],
        "pause": [("pause, abort of a retracted request, continue",
                   kinds == [("pause", None), ("abort", "retracted"), ("continue", None)]),
                  ("retractions", ex["retractions"] > 0)],
        "abort": [("abort of a waiting and of a running request",
                   sorted(kinds) == [("abort", "running"), ("abort", "waiting")])],
        "startup": [],
    }[scenario]
    out += [f"no {what}" for what, ok in want if not ok]
    return out


def _first_diff(a: List[Any], b: List[Any]) -> Optional[Tuple[int, Any, Any]]:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i, x, y
    if len(a) != len(b):
        i = min(len(a), len(b))
        return i, a[i] if i < len(a) else None, b[i] if i < len(b) else None
    return None


def judge(cfg: Config, scenario: str, pri: Dict[str, Any], pat: Dict[str, Any]) -> Verdict:
    """Verdicts (a)-(c), and the scenario's coverage, for one cell from both trees' results."""
    notes: List[str] = []
    pri_err, pat_err = pri.get("error"), pat.get("error")
    pri_skip, pat_skip = pri.get("status") == "skip", pat.get("status") == "skip"
    if pri_skip:  # nothing to compare with
        note = "" if pat_skip else (f"; patched: {pat['error']['type']} @{pat['error']['phase']}"
                                    if pat_err else "; patched ran")
        return Verdict("skip", "skip", "n/a", "n/a", [pri["skip_reason"] + note])
    if pat_err and not pri_err:
        raises = "FAIL"
    elif pat_err:
        assert pri_err is not None
        raises = "reported"
        if (pri_err["type"], pri_err["phase"]) != (pat_err["type"], pat_err["phase"]):
            notes.append("both raise, differently")
    else:
        raises = "ok" if not pat_skip else "FAIL"
        if pat_skip:
            notes.append("patched skipped where pristine ran: " + pat["skip_reason"][:300])

    if pat_skip:
        checks = "skip"
    elif pat_err:
        in_check = pat_err["phase"] in ("idle_check", "end_check")
        checks = ("reported" if pri_err else "FAIL") if in_check else "n/a"
    elif pat["idle_checks"] < 1 or not pat["end_check_passed"]:
        checks = "FAIL"
    else:
        checks = "ok"

    if pri_err or pat_err or pri_skip or pat_skip:
        schedule = "n/a"
    else:
        diff = _first_diff(pri["fingerprint"], pat["fingerprint"])
        out_same = pri["outputs"] == pat["outputs"]
        if diff is None and out_same:
            schedule = "identical"
        else:
            required = schedule_must_match(cfg, scenario)
            schedule = "DIFFERS (required)" if required else "differs"
            if diff is not None:
                notes.append(f"first schedule difference at step {diff[0]}: "
                             f"pristine {diff[1]} vs patched {diff[2]}")
            if not out_same:
                changed = sorted(r for r in set(pri["outputs"]) | set(pat["outputs"])
                                 if pri["outputs"].get(r) != pat["outputs"].get(r))
                notes.append(f"outputs differ for {changed[:6]}")

    missing = []
    for tree, res in (("pristine", pri), ("patched", pat)):
        if res.get("status") == "ok":
            missing += [f"{tree}: {m}" for m in coverage_problems(cfg, scenario, res)]
    coverage = ("MISSING: " + "; ".join(missing)) if missing else (
        "ok" if pri.get("status") == "ok" else "n/a")
    return Verdict(raises, checks, schedule, coverage, notes)


def _cell_text(res: Dict[str, Any]) -> str:
    if res.get("status") == "skip":
        return "skip"
    err = res.get("error")
    if err:
        return f"{err['type']} @{err['phase']}"
    ex = res.get("exercised", {})
    bits = [f"{res['steps']} steps", f"{res['idle_checks']} idle chk"]
    for key, short in (("retractions", "retr"), ("evicted_tokens", "evict"),
                       ("aborted", "abort")):
        if ex.get(key):
            bits.append(f"{short} {ex[key]}")
    return "ok (" + ", ".join(bits) + ")"


def _isolated_text(row: Dict[str, Any]) -> str:
    parts = []
    for step in row.get("isolated", []):
        what = "+".join(step["isolate"])
        parts.append(f"{what}: " + ("patched " + _cell_text(step["patched"]) if step["failed"]
                                    else "nothing else"))
    return "; ".join(parts)


def table(rows: List[Dict[str, Any]]) -> str:
    head = ["config", "scenario", "pristine", "patched", "(a)", "(b)", "(c)", "coverage",
            "underneath (isolated reruns)"]
    body = [[r["config"], r["scenario"], _cell_text(r["pristine"]), _cell_text(r["patched"]),
             r["verdict"]["raises"], r["verdict"]["checks"], r["verdict"]["schedule"],
             r["verdict"]["coverage"][:40], _isolated_text(r)] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*b) for b in body]
    return "\n".join(lines)


def failure_details(rows: List[Dict[str, Any]]) -> str:
    out = []
    skipped = set()
    for r in rows:
        views = [("pristine", r["pristine"]), ("patched", r["patched"])]
        for step in r.get("isolated", []):
            what = "+".join(step["isolate"])
            views += [(f"pristine, {what}", step["pristine"]),
                      (f"patched, {what}", step["patched"])]
        for tree, res in views:
            err = res.get("error")
            if err:
                out.append(f"[{r['config']} / {r['scenario']} / {tree}] {err['type']} in "
                           f"{err['phase']} at step {err['step']}: {err['message'][:300]}\n"
                           + "".join("    " + ln + "\n" for ln in err["traceback_tail"]))
            elif res.get("status") == "skip" and (r["config"], tree) not in skipped:
                skipped.add((r["config"], tree))
                out.append(f"[{r['config']} / {tree}] skipped: {res['skip_reason']}\n")
        for n in r["verdict"]["notes"]:
            if r["pristine"].get("status") != "skip":
                out.append(f"[{r['config']} / {r['scenario']}] {n}\n")
    return "".join(out)


def _run_driver(sglang_python: Path, cells: List[str], out: Path) -> "subprocess.Popen[str]":
    env = dict(os.environ)
    inherited = [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x]
    env["PYTHONPATH"] = os.pathsep.join([str(sglang_python), str(ROOT / "ci" / "cpu"),
                                         str(ROOT / "bench")] + inherited)
    cmd = [sys.executable, "-W", "ignore", str(DRIVER), "--out", str(out)]
    for c in cells:
        cmd += ["--cell", c]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _run_both(pristine: Path, patched: Path, cells: List[str], workdir: Path,
              tag: str) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Both trees' results for these cells, keyed tree -> cell."""
    procs = {}
    for tree, path in (("pristine", pristine), ("patched", patched)):
        out = workdir / f"{tree}-{tag}.json"
        procs[tree] = (_run_driver(path, cells, out), out)
    results: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for tree, (proc, out) in procs.items():
        _, stderr = proc.communicate()
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"matrix_driver on the {tree} tree exited with "
                               f"{proc.returncode}:\n{stderr[-4000:]}")
        data = json.loads(out.read_text())
        results[tree] = {f"{r['config']}:{r['scenario']}": r for r in data["results"]}
    return results


# Where a patched-only exception can hide the rest of a cell, and the isolation
# (bench/matrix_driver.py ISOLATIONS) that looks past it: traceback marker -> isolation.
MASKING = (("log_kv_cache_geometry", "defer"), ("report_decode_stats", "quiet"))


def _isolation_for(res: Dict[str, Any], have: Tuple[str, ...]) -> Optional[str]:
    err = res.get("error")
    if not err:
        return None
    for marker, isolation in MASKING:
        if isolation not in have and any(marker in ln for ln in err["traceback_tail"]):
            return isolation
    return None


def run_matrix(pristine: Path, patched: Path, configs: Sequence[str],
               scenarios: Sequence[str], workdir: Path) -> List[Dict[str, Any]]:
    """Every cell on both trees. Then, while the patched tree raised where the pristine one did
    not, inside a piece that can hide the rest (MASKING), both trees again with that piece
    isolated, to show what, if anything, fails underneath."""
    cells = [f"{c}:{s}" for c in configs for s in scenarios]
    first = _run_both(pristine, patched, cells, workdir, "main")
    latest: Dict[str, Tuple[Dict[str, Any], Dict[str, Any], Tuple[str, ...]]] = {
        k: (first["pristine"][k], first["patched"][k], ()) for k in cells}
    chains: Dict[str, List[Dict[str, Any]]] = {k: [] for k in cells}
    for level in range(len(MASKING)):
        todo: Dict[str, Tuple[str, ...]] = {}
        for key, (pri, pat, have) in latest.items():
            iso = None if pri.get("error") or pri.get("status") == "skip" else (
                _isolation_for(pat, have))
            if iso:
                todo[key] = have + (iso,)
        if not todo:
            break
        again = _run_both(pristine, patched, [f"{k}:{'+'.join(v)}" for k, v in todo.items()],
                          workdir, f"isolated{level}")
        for key, have in todo.items():
            name, scenario = key.split(":")
            pri, pat = again["pristine"][key], again["patched"][key]
            v = judge(CONFIG_BY_NAME[name], scenario, pri, pat)
            chains[key].append({"isolate": list(have), "pristine": pri, "patched": pat,
                                "verdict": dataclasses.asdict(v), "failed": v.failed})
            latest[key] = (pri, pat, have)
    rows = []
    for key in cells:
        name, scenario = key.split(":")
        cfg = CONFIG_BY_NAME[name]
        pri, pat = first["pristine"][key], first["patched"][key]
        v = judge(cfg, scenario, pri, pat)
        rows.append({"config": name, "scenario": scenario, "pristine": pri, "patched": pat,
                     "verdict": dataclasses.asdict(v), "failed": v.failed,
                     "schedule_must_match": schedule_must_match(cfg, scenario),
                     "isolated": chains[key]})
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Configurations: " + ", ".join(c.name for c in CONFIGS) + ". Scenarios: "
        + "; ".join(f"{k}: {v}" for k, v in SCENARIO_HELP.items()) + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pristine", type=Path, required=True,
                   help="the pristine tree's python/ folder (holding sglang/)")
    p.add_argument("--patched", type=Path, required=True,
                   help="the patched tree's python/ folder (holding sglang/)")
    p.add_argument("--config", action="append", choices=[c.name for c in CONFIGS], metavar="NAME",
                   help="run only this configuration (repeatable; default: all)")
    p.add_argument("--scenario", action="append", choices=list(SCENARIOS), metavar="NAME",
                   help="run only this scenario (repeatable; default: all)")
    p.add_argument("--out", type=Path, help="write the results (both trees, verdicts) as JSON")
    p.add_argument("--details", action="store_true",
                   help="also print every exception with its traceback tail, skip reason and "
                        "schedule difference")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    for tree in (args.pristine, args.patched):
        if not (tree / "sglang" / "__init__.py").exists():
            print(f"matrix: {tree} holds no sglang/ package", file=sys.stderr)
            return 2
    configs = args.config or [c.name for c in CONFIGS]
    scenarios = args.scenario or list(SCENARIOS)
    with tempfile.TemporaryDirectory(prefix="matrix-") as tmp:
        try:
            rows = run_matrix(args.pristine, args.patched, configs, scenarios, Path(tmp))
        except RuntimeError as e:
            print(f"matrix: {e}", file=sys.stderr)
            return 2
    print(table(rows))
    failed = [r for r in rows if r["failed"]]
    print(f"\n{len(rows)} cells, {len(failed)} failed"
          + (": " + ", ".join(f"{r['config']}/{r['scenario']}" for r in failed) if failed else ""))
    if args.details:
        print("\n" + failure_details(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"pristine": str(args.pristine),
                                        "patched": str(args.patched), "rows": rows},
                                       indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
