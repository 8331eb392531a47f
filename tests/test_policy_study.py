"""The eviction-policy study tooling (issue 14): bench/evict_study.py (trace study and the
eviction census), bench/policies.py (reuse, dead-tail-first) and bench/policy_bench.py's driver
mode, on small inputs."""

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


class _Key:
    def __init__(self, n: int) -> None:
        self.token_ids = list(range(n))

    def __len__(self) -> int:
        return len(self.token_ids)


class _Node:
    def __init__(self, parent, n: int, own=None, t: float = 0.0, hits: int = 0) -> None:
        self.parent, self.key, self.children = parent, _Key(n), {}
        self.last_access_time, self.hit_count = t, hits
        if own is not None:
            self._own = own


def test_dead_cut_and_dead_tail_first_order():
    assert policies.dead_cut(1500, 64, 0) == 1472  # generated from the page-aligned prompt end
    assert policies.dead_cut(1500, 64, 512) == 1024  # + the partial 512-token block
    assert policies.dead_cut(300, 64, 512) == 0
    root = _Node(None, 0)
    head = _Node(root, 1024, own=("a", 1500), t=1.0)  # prompt blocks, older
    tail = _Node(head, 576, own=("a", 1500), t=5.0)  # partial block + answer, newer
    other = _Node(root, 2048, own=("b", 2100), t=3.0)
    st = policies.DeadTailStrategy(align=512)
    st.page = 64
    assert policies.is_dead_tail(tail, 64, 512) and not policies.is_dead_tail(head, 64, 512)
    order = sorted([head, tail, other], key=st.get_priority)
    assert order == [tail, head, other]  # the dead tail first although it is the newest
    assert not policies.is_dead_tail(tail, 64, 0) or policies.path_start(tail) >= 1472
    lfu = policies.DeadTailStrategy(align=512, inner="lfu")
    lfu.page = 64
    head.hit_count = 9
    assert sorted([head, other], key=lfu.get_priority) == [other, head]


def test_census_splits_a_range_by_kind_and_reuse():
    c = evict_study.Census(trace=None, block=512)
    c.turn = {"a": 2}
    node = _Node(_Node(None, 0), 1600, own=("a", 1500))
    # reused up to path position 1024 (pretend the index says so)
    c._boundaries = lambda n: (0, [])  # type: ignore[method-assign]
    c._reused_upto = lambda bounds, a, b: 1024  # type: ignore[method-assign]
    parts = c._split(node, 0, 1600)
    assert parts == [("prompt_block", 1024, 0, 2), ("prompt_tail", 0, 476, 2),
                     ("generated", 0, 100, 2)]


def test_driver_census_with_dead_tail_policy(tmp_path: Path):
    rows = [json.loads(ln) for ln in _trace(tmp_path).read_text().splitlines()]
    rows.append({"timestamp": 4, "input_length": 1800, "output_length": 40,
                 "hash_ids": [0, 9, 5, 6]})  # one more prompt: the pool must evict
    for r in rows:
        r["output_length"] = 40
    path = tmp_path / "t5.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tree = ROOT / "build" / "work" / "tree" / "python"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(ROOT / "ci" / "cpu")]))
    cmd = [sys.executable, "-W", "ignore", str(ROOT / "bench" / "policy_bench.py"), "driver",
           "--census", "--", "--workload", "trace", "--wl", f"path={path}",
           "--wl", "time_scale=0", "--pool-tokens", "3072",
           "--server-arg", "radix_eviction_policy=gen512"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["finished_requests"] == 5 and res["end_free_plus_evictable_eq_pool"]
    assert res["policy_stats"]["finished"] == 5 and res["policy_stats"]["leaf_splits"] >= 1
    cen = res["census"]
    assert cen["evict_calls"] >= 1
    assert sum(v["reused"] + v["dead"] for v in cen["evicted"].values()) > 0
    assert "prompt_block" in evict_study.census_table(cen)


def test_results_summary_gap_shares_and_merge(tmp_path: Path):
    def run(hit: float, ttft: float) -> dict:
        return {"token_hit_rate": hit, "ttft_p99_s": ttft, "sched_cpu_ms_per_step": 1.0}

    a = {"results": {"lru": {"start=0": run(0.10, 100.0), "start=1": run(0.20, 100.0)},
                     "clairvoyant": {"start=0": run(0.20, 90.0), "start=1": run(0.40, 90.0)}}}
    b = {"results": {"x": {"start=0": run(0.15, 95.0), "start=1": run(0.30, 95.0)}}}
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    text = evict_study.gaps_from_results(pa, pb)
    row = next(ln for ln in text.splitlines() if ln.startswith("| x "))
    assert "+50.0% +- 0.0%" in row and "-5.0% +- 0.0%" in row  # half the gap, 5 % better TTFT


# bench/evict_sim.py: one request at a time; C's admission must evict about a thousand tokens.
# LRU evicts the oldest state (A, which A2 continues), Belady and the continuation hint evict
# B (never used again), so A2 hits all of A's four blocks instead of the shared first two.
SIM_ROWS = [
    {"timestamp": 0, "input_length": 2048, "output_length": 1, "hash_ids": [0, 1, 2, 3]},
    {"timestamp": 1, "input_length": 2048, "output_length": 1, "hash_ids": [0, 5, 6, 7]},
    {"timestamp": 2, "input_length": 2048, "output_length": 1, "hash_ids": [0, 8, 9, 10]},
    {"timestamp": 3, "input_length": 2560, "output_length": 1, "hash_ids": [0, 1, 2, 3, 4]},
]


def test_evict_sim_belady_and_hint_keep_the_continued_state():
    import evict_sim

    assert evict_sim.continued(SIM_ROWS) == [1, 0, 0, 0]
    assert evict_sim.continued(SIM_ROWS, horizon=3) == [1, 0, 0, 0]
    assert evict_sim.continued(SIM_ROWS, horizon=2) == [0, 0, 0, 0]  # A2 comes 3 requests later
    assert evict_sim.turns(SIM_ROWS) == [1, 1, 1, 2]
    # "turn >= 2" flags A2 (never continued) and misses A (continued): TPR 0, FPR 1/3
    assert evict_sim.feature_roc(SIM_ROWS)[0] == (2, 0.0, 1 / 3)
    pool = 4123
    hit = {p: evict_sim.replay(SIM_ROWS, pool, p, running=1)
           for p in ("lru", "belady", "hint", "hint:tpr=0", "lfu")}
    total = sum(r["input_length"] for r in SIM_ROWS)
    assert hit["lru"] == (512 + 512 + 1024) / total
    assert hit["belady"] == hit["hint"] == (512 + 512 + 2048) / total
    assert hit["hint:tpr=0"] == hit["lru"]  # a hint that flags nothing is LRU
    big = {p: evict_sim.replay(SIM_ROWS, 1 << 20, p, running=1) for p in ("lru", "belady")}
    assert big["lru"] == big["belady"] == (512 + 512 + 2048) / total  # nothing evicted


def test_evict_sim_cli_rejects_unknown_policy_and_missing_trace(tmp_path: Path):
    import evict_sim
    import pytest

    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in SIM_ROWS))
    with pytest.raises(SystemExit, match="unknown policy 'fifo'"):
        evict_sim.main(["--trace", str(path), "--pool-tokens", "4123", "--policy", "fifo"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input_length": 10}\n')
    with pytest.raises(SystemExit, match="line 1 is not a Mooncake request"):
        evict_sim.main(["--trace", str(bad), "--pool-tokens", "4123"])
    with pytest.raises(SystemExit, match="no trace at"):
        evict_sim.main(["--trace", str(tmp_path / "none"), "--pool-tokens", "4123"])
    out = tmp_path / "o.json"
    assert evict_sim.main(["--trace", str(path), "--pool-tokens", "4123", "--running", "1",
                           "--policy", "hint", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["hit_rate"]["hint"]["0"] > 0


def _kept_last(strategy, attr: str) -> bool:
    """A kept leaf goes after a newer not-kept one; an unmarked leaf counts as not kept."""

    class Node:
        def __init__(self, t: float, kept=None) -> None:
            self.last_access_time = t
            if kept is not None:
                setattr(self, attr, kept)

    old_kept, new_plain, unmarked = Node(1.0, 1), Node(9.0, 0), Node(5.0)
    order = sorted([old_kept, new_plain, unmarked], key=strategy.get_priority)
    return order == [unmarked, new_plain, old_kept]


def test_continuation_hint_labels_and_noise():
    import clairvoyant

    b = 4  # block size for the test
    sys_ = [0] * b
    prompts = [sys_ + [1] * b + [2], sys_ + [3] * b, sys_ + [1] * b + [5] * b, sys_]
    order = {f"r{i}": i for i in range(len(prompts))}
    st = clairvoyant.ContinuationHintStrategy(prompts, order, block=b)
    assert list(st.continued) == [1, 0, 0, 0]  # r3 is one block: never counted as continued
    assert [st.hint(f"r{i}") for i in range(4)] == [1, 0, 0, 0] and st.hint("other") == 0
    none = clairvoyant.ContinuationHintStrategy(prompts, order, block=b, tpr=0.0)
    every = clairvoyant.ContinuationHintStrategy(prompts, order, block=b, fpr=1.0)
    assert [none.hint(f"r{i}") for i in range(4)] == [0, 0, 0, 0]
    assert [every.hint(f"r{i}") for i in range(4)] == [1, 1, 1, 1]

    assert _kept_last(st, "_hint")


def test_driver_hint_keeps_the_continued_state_both_ways(tmp_path: Path):
    # SIM_ROWS through the real scheduler, one request at a time: LRU loses A before A2 comes,
    # the hint keeps it, as ContinuationHintStrategy and as SGLang's `priority` policy.
    tree = ROOT / "build" / "work" / "tree" / "python"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(ROOT / "ci" / "cpu")]))
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in SIM_ROWS))
    hits = {}
    for name, extra in (("lru", []), ("hint", ["--eviction", "hint"]),
                        ("hintprio", ["--eviction", "hint", "--hint-as-priority",
                                      "--server-arg", "radix_eviction_policy=priority"])):
        cmd = [sys.executable, "-W", "ignore", str(ROOT / "bench" / "policy_bench.py"), "driver",
               "--", "--workload", "trace", "--wl", f"path={path}", "--wl", "time_scale=0",
               "--pool-tokens", "4224", "--max-running-requests", "1"] + extra
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        res = json.loads(out.stdout.strip().splitlines()[-1])
        assert res["finished_requests"] == 4 and res["end_free_plus_evictable_eq_pool"]
        hits[name] = res["token_hit_rate"]
    total = sum(r["input_length"] for r in SIM_ROWS)
    assert hits["hint"] == hits["hintprio"] == (512 + 512 + 2048) / total > hits["lru"]
    out = subprocess.run(cmd[:cmd.index("--eviction")] + ["--eviction", "hint",
                                                         "--hint-as-priority"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "radix_eviction_policy=priority" in out.stderr


def test_sampled_keep_decides_once_per_request_and_orders_transient_first():
    st = policies.SampledKeepStrategy(0.25)
    decisions = [st.decide(f"r{i}") for i in range(8)]
    assert decisions == [0, 0, 0, 1, 0, 0, 0, 1]  # every 4th request, deterministic
    assert st.decide("r3") == 1 and st.requests == 8  # the same request keeps its decision

    assert _kept_last(st, "_keep")


def test_sweep_passes_hint_and_driver_args(monkeypatch, capsys):
    import policy_bench

    seen = []

    def fake(argv, census=False):
        seen.append(argv)
        return {"token_hit_rate": 0.1, "ttft_p99_s": 1.0, "sched_cpu_ms_per_step": 1.0}

    monkeypatch.setattr(policy_bench, "run_driver", fake)
    assert policy_bench.main(["sweep", "--wl", "path=t.jsonl", "--start", "0", "--jobs", "1",
                              "--policy", "lru", "--policy", "hintprio-0.8-0.2",
                              "--driver-args", "--hicache write_through --hicache-ratio 4"]) == 0
    lru, hint = sorted(seen, key=len)
    i = lru.index("--hicache")
    assert lru[i:i + 4] == ["--hicache", "write_through", "--hicache-ratio", "4"]
    assert "--eviction" not in lru
    assert hint[hint.index("--eviction"):] == [
        "--eviction", "hint", "--hint-tpr", "0.8", "--hint-fpr", "0.2", "--hint-as-priority",
        "--server-arg", "radix_eviction_policy=priority"]
    assert "--hicache" in hint and "| hintprio-0.8-0.2 |" in capsys.readouterr().out
