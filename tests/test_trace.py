"""The trace workload (Mooncake format) and the clairvoyant eviction reference (issue 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_TRACE = ROOT.parent / "shared" / "traces" / "mooncake-conversation-first-half.jsonl"
TREES = {"pristine": ROOT / "build" / "work" / "pristine" / "python",
         "patched": ROOT / "build" / "work" / "tree" / "python"}


def _workloads() -> Any:
    sys.path.insert(0, str(ROOT / "bench"))
    import workloads

    return workloads


def _write(path: Path, rows: List[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


ROWS = [
    {"timestamp": 1000, "input_length": 1100, "output_length": 7, "hash_ids": [0, 1, 2]},
    {"timestamp": 3000, "input_length": 600, "output_length": 300, "hash_ids": [0, 3]},
    {"timestamp": 2000, "input_length": 512, "output_length": 0, "hash_ids": [0]},
]


def test_trace_expands_blocks_cuts_prompts_and_scales_time(tmp_path: Path):
    wl = _workloads()
    path = _write(tmp_path / "t.jsonl", ROWS[:1] + [""] + ROWS[1:])  # a blank line is skipped
    t = wl.build("trace", {"path": str(path), "time_scale": "2"}, seed=0)
    # timestamp order (stable), arrival = (ts - first) / 1000 * time_scale; rid = file order
    assert [r.rid for r in t.requests] == ["t0", "t2", "t1"]
    assert [r.arrival_s for r in t.requests] == [0.0, 2.0, 4.0]
    a, c, b = t.requests
    assert [len(r.input_ids) for r in (a, b, c)] == [1100, 600, 512]
    # equal ids at the same position: the same block; different ids: different first page
    assert a.input_ids[:512] == b.input_ids[:512] == c.input_ids
    assert a.input_ids[512:576] != b.input_ids[512:576]
    assert a.input_ids[512:1024] == wl.block_tokens(1, 512)
    assert a.input_ids[1024:] == wl.block_tokens(2, 512)[:76]  # the last block cut to length
    assert all(0 < x < wl.VOCAB_SIZE and x != wl.EOS_ID for x in a.input_ids + b.input_ids)
    # outputs: output_length (0 counts as 1); max_new_tokens = output_length by default
    assert [(r.output_len, r.max_new_tokens) for r in (a, b, c)] == [(7, 7), (300, 300), (1, 1)]
    # closed loop, a window, and a cap on max_new_tokens
    t = wl.build("trace", {"path": str(path), "time_scale": 0, "start": 1, "max_requests": 1,
                           "max_new_tokens": 100}, seed=0)
    assert [(r.rid, r.arrival_s, r.output_len, r.max_new_tokens) for r in t.requests] == [
        ("t2", 0.0, 1, 100)]
    t = wl.build("trace", {"path": str(path), "start": 2, "max_new_tokens": 100}, seed=0)
    assert [(r.rid, r.output_len, r.max_new_tokens) for r in t.requests] == [("t1", 100, 100)]
    # the pool sizing counts each shared block once
    seqs = list(wl.build("trace", {"path": str(path)}, seed=0).sequences())
    assert wl.unique_prefix_tokens(seqs) == 512 + 588 + 88 + 7 + 300 + 1


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 1}', "missing field(s) ['hash_ids']"),
    ('{"timestamp": -1, "input_length": 10, "output_length": 1, "hash_ids": [0]}', "timestamp"),
    ('{"timestamp": 0, "input_length": 0, "output_length": 1, "hash_ids": [0]}', "input_length"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 1.5, "hash_ids": [0]}', "output_length"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": ["a"]}', "hash_ids"),
    ('{"timestamp": 0, "input_length": 1025, "output_length": 1, "hash_ids": [0, 1]}',
     "input_length 1025 needs 3 blocks of 512 tokens, hash_ids has 2"),
])
def test_bad_trace_line_names_file_and_line(tmp_path: Path, line: str, message: str):
    wl = _workloads()
    path = _write(tmp_path / "bad.jsonl", [ROWS[0], ROWS[1], line])
    with pytest.raises(wl.TraceFormatError) as e:
        wl.read_mooncake(str(path))
    assert str(e.value).startswith(f"{path}:3: ") and message in str(e.value)
    with pytest.raises(SystemExit) as e2:  # what sched_driver prints
        wl.build("trace", {"path": str(path)}, seed=0)
    assert f"{path}:3: " in str(e2.value.code)
    with pytest.raises(SystemExit, match="cannot read the trace"):
        wl.build("trace", {"path": str(tmp_path / "missing.jsonl")}, seed=0)
    with pytest.raises(SystemExit, match="--wl path=FILE"):
        wl.build("trace", {}, seed=0)
    with pytest.raises(SystemExit, match="takes a number for time_scale"):
        wl.build("trace", {"path": str(path), "time_scale": "fast"}, seed=0)


# The clairvoyant strategy on a real RadixCache: A is older than B (LRU evicts A) but the trace
# uses A next and B later; C is the newest and never used again. Then one leaf D = H + T whose
# head H is used next and whose tail T never: at page level the strategy splits D and keeps H.
# Run in a subprocess per tree.
SCENARIO = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import sglang_cpu  # noqa: F401
import torch
from sglang.srt.mem_cache.allocator import PagedTokenToKVPoolAllocator, TokenToKVPoolAllocator
from sglang.srt.mem_cache.base_prefix_cache import EvictParams, InsertParams, MatchPrefixParams
from sglang.srt.mem_cache.cache_init_params import CacheInitParams
from sglang.srt.mem_cache.radix_cache import RadixCache, RadixKey
import clairvoyant, workloads

page = int(sys.argv[2])
n = 4 * page
A, B, C = ([base + i for i in range(n)] for base in (1000, 2000, 3000))
x = [9] * page
reqs = [workloads.Request(rid, toks, 1, 1) for rid, toks in
        (("a", A), ("b", B), ("c", C), ("next-a", A + x), ("next-b", B + x), ("other", x))]
trace = workloads.Trace("hand-made", reqs, {})

def new_tree():
    kw = {} if page == 1 else {"page_size": page}
    cls = TokenToKVPoolAllocator if page == 1 else PagedTokenToKVPoolAllocator
    alloc = cls(8 * n, dtype=torch.bfloat16, device="cpu", kvcache=None, need_sort=False, **kw)
    return alloc, RadixCache(CacheInitParams(disable=False, req_to_token_pool=None,
                                             token_to_kv_pool_allocator=alloc, page_size=page))

def match(tree, key):
    return tree.match_prefix(MatchPrefixParams(key=RadixKey(list(key))))

def run(policy):
    alloc, tree = new_tree()
    if policy == "clairvoyant":
        strat = clairvoyant.strategy_for(trace, tree=tree)
        tree.eviction_strategy = strat
        for rid in ("a", "b", "c"):  # admitted: they are the ones that cached A, B, C
            strat.admit(rid)
    for t, key in enumerate((A, B, C)):
        tree.insert(InsertParams(key=RadixKey(list(key)), value=alloc.alloc(n)))
        tree.match_prefix(MatchPrefixParams(key=RadixKey(list(key)))).last_device_node \
            .last_access_time = float(t)  # A oldest, C newest
    out = {}
    for ask in (n, page):  # a whole leaf, then one page
        tree.evict(EvictParams(num_tokens=ask))
        out[ask] = [len(tree.match_prefix(MatchPrefixParams(key=RadixKey(list(k)))).device_indices)
                    for k in (A, B, C)]
    if policy == "clairvoyant":
        out["next_use"] = [strat.next_use(tree.match_prefix(MatchPrefixParams(
            key=RadixKey(list(k)))).last_device_node) for k in (A, B)]
    return out

def run_split(page_level):
    D, E = A, B  # D = H + T, H = its first half
    h = D[:n // 2]
    t2 = workloads.Trace("split", [workloads.Request(rid, toks, 1, 1) for rid, toks in (
        ("d", D), ("e", E), ("x", x), ("next-h", h + x), ("next-e", E + x))], {})
    alloc, tree = new_tree()
    strat = clairvoyant.strategy_for(t2, tree=tree if page_level else None)
    tree.eviction_strategy = strat
    for rid in ("d", "e", "x"):
        strat.admit(rid)
    for key in (D, E):
        tree.insert(InsertParams(key=RadixKey(list(key)), value=alloc.alloc(n)))
    tree.evict(EvictParams(num_tokens=n))
    return [len(match(tree, k).device_indices) for k in (D, E)] + [strat.splits]

out = {p: run(p) for p in ("lru", "clairvoyant")}
out["split"] = {"leaf": run_split(False), "page": run_split(True)}
print(json.dumps(out))
'''


def _scenario(tree: str, page: int) -> Dict[str, Any]:
    if not TREES[tree].is_dir():
        pytest.skip(f"{TREES[tree]} is missing (make apply)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TREES[tree]), str(ROOT / "ci" / "cpu"), str(ROOT / "bench")])}
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", SCENARIO, str(ROOT / "bench"),
                        str(page)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.splitlines()[-1])


def test_clairvoyant_picks_the_victim_lru_gets_wrong_on_the_patched_tree():
    page = 64
    n = 4 * page
    res = _scenario("patched", page)
    # LRU: the oldest leaf (A) goes first, although the trace needs it next
    assert res["lru"][str(n)] == [0, n, n]
    # clairvoyant: C (never used again) first, then the tail page of B (used after A); A stays
    assert res["clairvoyant"][str(n)] == [n, n, 0]
    assert res["clairvoyant"][str(page)] == [n, n - page, 0]  # the series' tail eviction
    assert res["clairvoyant"]["next_use"] == [3, 4]  # positions of next-a, next-b
    # one leaf D = H + T, H used next, T never; E used after H. Asked for a whole leaf:
    assert res["split"]["leaf"] == [0, n, 0]  # leaf level: D goes whole, H with it
    # page level: D is split at H's end, T goes, then (E used after H) E's tail; H stays
    assert res["split"]["page"] == [n // 2, n - n // 2, 1]


def test_clairvoyant_strategy_works_on_the_pristine_tree_at_page_1():
    res = _scenario("pristine", 1)
    n = 4
    assert res["lru"][str(n)] == [0, n, n]
    assert res["clairvoyant"][str(n)] == [n, n, 0]
    assert res["clairvoyant"]["1"] == [n, 0, 0]  # the pin evicts whole leaves: all of B


def _driver_pair(tmp_path: Path, base: List[str]) -> List[Dict[str, Any]]:
    """sched_driver.py on the installed (patched) SGLang: LRU, then clairvoyant, same pool."""
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps([base, base + ["--eviction", "clairvoyant"]]))
    r = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "bench" / "sched_driver.py"),
                        "--batch", str(batch)],
                       env={**os.environ, "PYTHONPATH": str(ROOT / "ci" / "cpu")},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    for res in runs:
        assert res["finished_requests"] == res["config"]["num_requests"]
        assert res["end_free_plus_evictable_eq_pool"] and res["end_req_slots_free"]
        assert res["tokens_evicted"] > 0  # the pool is under pressure
    assert "--eviction" in runs[1]["config"]["argv"] and "--eviction" not in runs[0]["config"]["argv"]
    return runs


def test_trace_end_to_end_clairvoyant_keeps_what_the_trace_reuses(tmp_path: Path):
    """A generated trace where LRU is wrong: 10 conversations open (2 blocks each), 20 one-off
    prompts follow, then every conversation's second turn (its 2 blocks + 1). One request at a
    time (closed loop, one running request, 4 output tokens); the pool holds 16 blocks, about
    6 conversations next to the running request."""
    rows, t = [], 0
    for c in range(10):
        rows.append({"timestamp": t, "input_length": 1024, "output_length": 4,
                     "hash_ids": [10 * c + 1, 10 * c + 2]})
        t += 1000
    for k in range(20):
        rows.append({"timestamp": t, "input_length": 1024, "output_length": 4,
                     "hash_ids": [1000 + 2 * k, 1001 + 2 * k]})
        t += 1000
    for c in range(10):
        rows.append({"timestamp": t, "input_length": 1500, "output_length": 4,
                     "hash_ids": [10 * c + 1, 10 * c + 2, 10 * c + 3]})
        t += 1000
    path = _write(tmp_path / "conv.jsonl", rows)
    lru, cv = _driver_pair(tmp_path, ["--workload", "trace", "--wl", f"path={path}",
                                      "--wl", "time_scale=0", "--max-running-requests", "1",
                                      "--page-size", "64", "--pool-tokens", str(16 * 512)])
    assert lru["token_hit_rate"] < 0.05  # the one-off prompts pushed the conversations out
    # clairvoyant evicts the one-off prompts first: each second turn finds its 1024 tokens
    assert cv["token_hit_rate"] > lru["token_hit_rate"] + 0.1


def test_trace_end_to_end_clairvoyant_hit_rate_at_least_lru(tmp_path: Path):
    if not SHARED_TRACE.is_file():
        pytest.skip(f"no shared trace at {SHARED_TRACE} (../shared/traces/README.md says where "
                    "it comes from)")
    lru, cv = _driver_pair(tmp_path, [
        "--workload", "trace", "--wl", f"path={SHARED_TRACE}", "--wl", "start=1300",
        "--wl", "max_requests=100", "--wl", "time_scale=0", "--page-size", "64",
        "--pool-tokens", "600000"])
    assert cv["token_hit_rate"] >= lru["token_hit_rate"]
