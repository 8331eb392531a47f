"""Breadth matrix (issue 11): the series must be safe for every prefix cache, allocator and
scheduler mode, not only MLA + RadixCache. Runs bench/matrix.py's cells through SGLang's real
Scheduler on the pristine tree and on the patched tree (build/work/pristine, build/work/tree)
and asserts, per configuration x scenario:

(a) the patched tree raises nowhere the pristine one does not;
(b) SGLang's idle self-check passes at every idle point and at the end, and every lock and
    request slot is released at the end;
(c) the schedule fingerprint is identical where the series is meant to change nothing;
and that the scenario exercised what it is for (on both trees, where it ran).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRISTINE = ROOT / "build" / "work" / "pristine" / "python"
PATCHED = ROOT / "build" / "work" / "tree" / "python"
sys.path.insert(0, str(ROOT / "bench"))
import matrix  # noqa: E402  (bench/matrix.py: pure Python, no SGLang import)

CELLS = [(c.name, s) for c in matrix.CONFIGS for s in matrix.SCENARIOS]


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Dict[Tuple[str, str], Dict[str, Any]]:
    for tree in (PRISTINE, PATCHED):
        assert (tree / "sglang" / "__init__.py").exists(), f"{tree}: run make apply first"
    work = tmp_path_factory.mktemp("matrix")
    result = matrix.run_matrix(PRISTINE, PATCHED, [c.name for c in matrix.CONFIGS],
                               list(matrix.SCENARIOS), work)
    (work / "matrix.json").write_text(json.dumps(result, indent=1))
    print("\n" + matrix.table(result))
    return {(r["config"], r["scenario"]): r for r in result}


def _error(res: Dict[str, Any]) -> str:
    err = res["error"]
    return (f"{err['type']} in {err['phase']} at step {err['step']}: {err['message'][:400]}\n"
            + "\n".join("      " + ln for ln in err["traceback_tail"]))


def test_every_configuration_that_builds_on_cpu_starts_on_the_pristine_tree(rows):
    # Guards the harness itself: if SGLang cannot even start (a missing package, a bring-up
    # that no longer matches the pin), every cell would raise on both trees and be "reported".
    for cfg in matrix.CONFIGS:
        res = rows[(cfg.name, "startup")]["pristine"]
        assert res["status"] in ("ok", "skip"), f"{cfg.name}: {_error(res)}"
        if res["status"] == "skip":
            assert res["skip_reason"], cfg.name


@pytest.mark.parametrize("config,scenario", CELLS, ids=[f"{c}-{s}" for c, s in CELLS])
def test_cell(rows, config: str, scenario: str):
    row = rows[(config, scenario)]
    v, pri, pat = row["verdict"], row["pristine"], row["patched"]
    if pri["status"] == "skip":
        pytest.skip(f"{config} cannot be built on CPU at the pin: {v['notes'][0]}")
    problems: List[str] = []
    if v["raises"] == "FAIL":
        problems.append("(a) patched raises where pristine does not: " + _error(pat))
    if v["checks"] == "FAIL":
        problems.append("(b) idle / end checks: "
                        + (_error(pat) if pat["error"] else
                           f"{pat['idle_checks']} idle checks, end check "
                           f"{'passed' if pat['end_check_passed'] else 'failed'}"))
    if v["schedule"].startswith("DIFFERS"):
        problems.append("(c) the schedule differs where the series should change nothing: "
                        + "; ".join(v["notes"]))
    if v["coverage"].startswith("MISSING"):
        problems.append("scenario coverage: " + v["coverage"])
    for step in row["isolated"]:  # reruns that look past a failure that hides the rest
        what, q = "+".join(step["isolate"]), step["patched"]
        problems.append(f"underneath, isolated ({what}): " + (
            "nothing else" if not step["failed"] else _error(q) if q["error"]
            else "; ".join(step["verdict"]["notes"]) or step["verdict"]["coverage"]))
    if v["raises"] == "reported":
        print(f"reported (raises on pristine too): pristine {_error(pri)}")
    assert not problems, f"{config} / {scenario}:\n" + "\n".join(problems)


def _driver(tree: Path, out: Path, *args: str) -> List[Dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tree), str(ROOT / "ci" / "cpu"), str(ROOT / "bench")]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    r = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "bench" / "matrix_driver.py"),
                        "--out", str(out), *args], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())["results"]


def test_the_idle_and_end_checks_catch_a_leaked_page_and_a_held_lock(tmp_path: Path):
    leak = _driver(PRISTINE, tmp_path / "leak.json", "--inject", "leak",
                   "--cell", "radix-mha-p64:startup", "--cell", "swa-p64:startup",
                   "--cell", "mamba-p1:startup")
    for res in leak:  # SGLang's check_memory, strict (its default): ValueError
        assert res["error"] and res["error"]["phase"] == "idle_check", res
        assert res["error"]["type"] == "ValueError", res["error"]
        assert "memory leak detected" in res["error"]["message"]
    lock = _driver(PRISTINE, tmp_path / "lock.json", "--inject", "lock",
                   "--cell", "radix-mha-p1:startup", "--cell", "swa-p1:startup",
                   "--cell", "mamba-p1:startup")
    radix, swa, mamba = lock
    # RadixCache: the pin's idle check balances locked tokens as protected; the end check
    # (every lock released) catches it.
    assert radix["error"]["phase"] == "end_check", radix
    assert "protected size" in radix["error"]["message"]
    # SWA and Mamba trees: SGLang's own sanity check at the idle point raises.
    for res in (swa, mamba):
        assert res["error"]["phase"] == "idle_check", res
        assert "should not be locked when idle" in res["error"]["message"]


def test_the_end_check_catches_a_host_copy_left_protected(tmp_path: Path):
    (res,) = _driver(PRISTINE, tmp_path / "protect.json", "--inject", "protect",
                     "--cell", "hiradix-mha-p1:startup")
    assert res["error"] and res["error"]["phase"] == "end_check", res
    assert "1 tree nodes with a protected host copy" in res["error"]["message"]


def test_judge_flags_a_patched_only_exception_and_a_required_schedule_change():
    cfg = matrix.CONFIG_BY_NAME["radix-mha-p1"]
    ok = {"status": "ok", "error": None, "idle_checks": 3, "end_check_passed": True,
          "fingerprint": [["extend", [["r0", 5]]], ["idle"]], "outputs": {"r0": [1]},
          "controls": [], "quiet": False,
          "exercised": {"decode_log_lines": 1, "decode_steps": 1, "prefill_log_lines": 1,
                        "extend_steps": 1, "chunked_steps": 1, "retractions": 0,
                        "evicted_tokens": 0}}
    err = dict(ok, status="error", error={"type": "NotImplementedError", "phase": "step",
                                          "step": 3, "message": "", "traceback_tail": []})
    assert matrix.judge(cfg, "chunked", ok, err).raises == "FAIL"
    assert matrix.judge(cfg, "chunked", err, err).raises == "reported"
    moved = dict(ok, fingerprint=[["extend", [["r0", 4]]], ["idle"]])
    assert matrix.judge(cfg, "chunked", ok, ok).schedule == "identical"
    assert matrix.judge(cfg, "chunked", ok, moved).schedule == "DIFFERS (required)"
    assert matrix.judge(cfg, "pressure", ok, moved).schedule == "differs"
    assert matrix.judge(cfg, "chunked", ok, ok).failed is False
    assert matrix.judge(cfg, "chunked", ok, dict(ok, idle_checks=0)).checks == "FAIL"
