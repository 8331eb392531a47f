"""The eviction-policy study tooling (issue 14): bench/evict_study.py, bench/policies.py and
bench/policy_bench.py's driver mode, on small inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import evict_study  # noqa: E402
import policies  # noqa: E402


def _trace(tmp_path: Path) -> Path:
    rows = [
        {"timestamp": 0, "input_length": 1500, "output_length": 4, "hash_ids": [0, 1, 2]},
        {"timestamp": 1, "input_length": 600, "output_length": 4, "hash_ids": [0, 9]},
        {"timestamp": 2, "input_length": 2000, "output_length": 4, "hash_ids": [0, 1, 2, 3]},
        {"timestamp": 3, "input_length": 2500, "output_length": 4, "hash_ids": [0, 1, 2, 3, 4]},
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_study_links_continuations_and_hazard(tmp_path: Path):
    recs = evict_study.load(_trace(tmp_path))
    prev, shared = evict_study.links(recs, 2)
    assert prev == [None, None, 0, 2] and shared[2:] == [3, 4]
    s = evict_study.study(recs, 2, 2, 2, 512)
    assert s["continued_within_horizon"] == 0.5  # request 0 is continued by 2; 1 never
    assert s["hazard_by_age"][0]["continued"] == 1 and s["hazard_by_age"][0]["at_risk"] == 2


def test_reuse_strategy_learns_gaps_and_orders_by_table():
    st = policies.ReuseGapStrategy(page=2, chunk=1, min_hits=1, refresh=1)
    st.evictable_size = lambda: 8
    st.on_request([1, 2, 3, 4], 4)  # tick 0: anchors for [1,2] and [1,2,3,4]
    st.on_request([7, 7], 2)  # tick 1
    st.on_request([1, 2, 3, 4, 5, 6], 2)  # tick 2: two reuses at age 2
    assert st.nhits == 2 and st.hits[policies.bucket(2)] == 2
    assert any(p > 0 for p in st.table)

    class Node:
        last_access_time = 0.0

    young, old = Node(), Node()
    st.on_stamp(young)
    old._rg_tick = st.tick - 2
    assert st.get_priority(old)[0] == st.table[policies.bucket(2)]
    assert st.get_priority(young)[0] == st.table[0]


def test_driver_mode_runs_the_reuse_policy(tmp_path: Path):
    tree = ROOT / "build" / "work" / "tree" / "python"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(ROOT / "ci" / "cpu")]))
    cmd = [sys.executable, "-W", "ignore", str(ROOT / "bench" / "policy_bench.py"), "driver", "--",
           "--workload", "trace", "--wl", f"path={_trace(tmp_path)}", "--wl", "time_scale=0",
           "--pool-tokens", "4096", "--server-arg", "radix_eviction_policy=reuse"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["finished_requests"] == 4 and res["end_free_plus_evictable_eq_pool"]
    assert res["policy_stats"]["ticks"] == 4
