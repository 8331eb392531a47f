"""make bench-quick as a smoke test: asserts on numbers measured in this run, never on constants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_patched_recovers_reuse_at_page_64(tmp_path: Path):
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out),
         "--pristine", str(ROOT / "build" / "work" / "pristine" / "python")],
        env={**os.environ, "PYTHONPATH": str(ROOT / "ci" / "cpu")},
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (res,) = json.loads((out / "quick.json").read_text())
    a, b = res["pristine"], res["patched"]
    assert res["config"]["page_size"] == 64
    for run in (a, b):
        assert run["finished_requests"] == res["pristine"]["config"]["num_requests"]
        assert run["end_free_plus_evictable_eq_pool"] and run["end_req_slots_free"]
    assert b["token_hit_rate"] >= a["token_hit_rate"]
    assert abs(1 - b["evicted_per_asked"]) < abs(1 - a["evicted_per_asked"])
    assert b["mean_idle_free_tokens"] <= a["mean_idle_free_tokens"]
