"""make bench-quick as a smoke test: asserts on numbers measured in this run, never on constants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

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
    (res,) = json.loads((out / "quick.json").read_text())["results"]
    a, b = res["pristine"], res["patched"]
    assert res["config"]["page_size"] == 64 and res["config"]["workload"] == "gsp"
    for run in (a, b):
        assert run["finished_requests"] == run["config"]["num_requests"] > 0
        assert run["end_free_plus_evictable_eq_pool"] and run["end_req_slots_free"]
        assert run["pool_use_p50_pct"] > 80  # the pool really is under pressure
        assert run["tokens_needed"] <= run["tokens_evicted"]
        assert run["prefill_flops_computed"] < run["prefill_flops_nocache"]
        assert run["ttft_p99_s"] >= run["ttft_mean_s"] > 0
    assert a["config"]["pool_tokens"] == b["config"]["pool_tokens"]
    assert b["token_hit_rate"] >= a["token_hit_rate"]
    assert abs(1 - b["evicted_per_asked"]) < abs(1 - a["evicted_per_asked"])
    assert b["over_evicted_tokens"] <= a["over_evicted_tokens"]
    assert b["mean_idle_free_tokens"] <= a["mean_idle_free_tokens"]


def _workloads():
    sys.path.insert(0, str(ROOT / "bench"))
    import workloads

    return workloads


def test_unique_prefix_tokens_counts_trie_nodes():
    wl = _workloads()
    seqs = [[1, 2, 3], [1, 2, 4, 5], [1, 2, 3], [7], [1, 2]]
    trie: dict = {}
    nodes = 0
    for s in seqs:
        node = trie
        for t in s:
            if t not in node:
                node[t] = {}
                nodes += 1
            node = node[t]
    assert wl.unique_prefix_tokens(seqs) == nodes


def test_multiturn_rounds_extend_the_previous_round_verbatim():
    wl = _workloads()
    trace = wl.build("multiturn", {"clients": 3, "parallel": 2, "rounds": 3, "turn_len": 5,
                                   "output_len": 4}, seed=1)
    expected = {r.rid: r for r in trace.all_requests}
    assert [r.rid for r in trace.requests] == ["c0-t0", "c1-t0"]
    pending, seen = list(trace.requests), []
    while pending:  # finish requests in arrival order with the synthetic outputs
        r = pending.pop(0)
        seen.append(r.rid)
        assert r.input_ids == expected[r.rid].input_ids
        out = wl.synthetic_output(r.rid, r.output_len, r.max_new_tokens)
        for nxt in trace.follow_up(r, out, 0.0):
            if nxt.rid.endswith("-t0"):
                assert nxt.rid == "c2-t0"  # a new client only when one finished all its rounds
            else:
                assert nxt.input_ids[:len(r.input_ids) + len(out)] == r.input_ids + out
            pending.append(nxt)
    assert sorted(seen) == sorted(expected)


def _driver(tmp_path: Path, sglang_python: Optional[Path], *args: str) -> dict:
    out = tmp_path / "run.json"
    path = ([str(sglang_python)] if sglang_python else []) + [str(ROOT / "ci" / "cpu")]
    r = subprocess.run(
        [sys.executable, "-W", "ignore", str(ROOT / "bench" / "sched_driver.py"), *args,
         "--out", str(out)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path)}, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


SMALL_R1 = ["--workload", "r1", "--wl", "groups=2", "--wl", "requests=24", "--wl", "system_len=256",
            "--wl", "question_len=32", "--wl", "output_min=256", "--wl", "output_max=512",
            "--wl", "max_new_tokens=512", "--pool-tokens", "4096", "--page-size", "16",
            # The reservation decays to its floor in 50 steps instead of 600: these outputs are
            # short, and the pin only over-commits (and so retracts) once it has decayed.
            "--env", "SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS=50"]


def test_every_retracted_token_is_either_found_in_the_cache_or_prefilled_again(tmp_path: Path):
    pristine = ROOT / "build" / "work" / "pristine" / "python"
    for tree in (pristine, None):  # None: the installed, patched wheel
        run = _driver(tmp_path, tree, *SMALL_R1)
        assert run["finished_requests"] == run["config"]["num_requests"]
        assert run["retract_events"] > 0  # the pool really forces retraction
        assert run["retracted_distinct_requests"] <= run["retracted_requests"]
        assert run["reprefilled_tokens"] == (
            run["retracted_kv_tokens"] - run["readmitted_cached_tokens"])
        assert run["stall_max_s"] >= run["stall_p99_s"] > 0
        assert run["retraction_wait_mean_s"] > 0


def test_env_option_sets_sglang_variables_for_one_run_only(tmp_path: Path):
    # Two runs in one process (--batch): the first with a strict reservation floor, the second
    # without it must not inherit it.
    runs = tmp_path / "runs.json"
    strict_args = SMALL_R1 + ["--env", "SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR=1.4"]
    runs.write_text(json.dumps([strict_args, SMALL_R1]))
    r = subprocess.run(
        [sys.executable, "-W", "ignore", str(ROOT / "bench" / "sched_driver.py"), "--batch",
         str(runs)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "ci" / "cpu")}, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    strict, base = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert strict["config"]["env"] == {"SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS": "50",
                                       "SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR": "1.4"}
    assert base["config"]["env"] == {"SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS": "50"}
    # A floor of 0.7 x 1.4 = 0.98 reserves almost every remaining token: fewer retractions.
    assert strict["retract_events"] < base["retract_events"]


def test_paired_ratio_is_the_geometric_mean_of_per_seed_ratios():
    sys.path.insert(0, str(ROOT / "bench"))
    import hicache_bench

    g, lo, hi = hicache_bench.gmean_ratio([(10.0, 20.0), (10.0, 5.0)])
    assert (round(g, 9), lo, hi) == (1.0, 0.5, 2.0)
    assert hicache_bench.gmean_ratio([(0.0, 0.0)]) is None
    assert hicache_bench.fmt_ratio(None, [(0.0, 0.0)]) == "0 -> 0"


def test_retraction_variants_name_a_tree_a_hicache_policy_and_server_args():
    sys.path.insert(0, str(ROOT / "bench"))
    import retraction

    assert retraction.parse_variant("pristine") == ("pristine", [])
    tree, argv = retraction.parse_variant("p9+wt:schedule_retracted_first=true")
    assert tree == "p9"
    assert argv[:2] == ["--hicache", "write_through"]
    assert argv[-2:] == ["--server-arg", "schedule_retracted_first=true"]
    with pytest.raises(SystemExit, match="unknown HiCache policy"):
        retraction.parse_variant("p9+lru")


_CORRUPT = r"""
import sys
import sched_driver

orig = sched_driver._synthetic_run_batch


def run_batch(s, batch, targets, integrity):
    # After a few steps, overwrite the KV word of one cached slot of the shared system prompt.
    if s.forward_ct == 40:
        node = next(iter(s.tree_cache.root_node.children.values()))
        integrity.words[node.value[0]] ^= 1
    return orig(s, batch, targets, integrity)


sched_driver._synthetic_run_batch = run_batch
sys.exit(sched_driver.main(sys.argv[1:]))
"""


def test_kv_integrity_check_catches_a_corrupted_cached_slot():
    # The driver's model-free forward checks that every slot a request reads holds the KV its
    # tokens imply; one flipped bit in a reused prefix must stop the run.
    args = ["--workload", "gsp", "--page-size", "16", "--max-running-requests", "16",
            "--model", "v3", "--pressure", "0.5", "--wl", "groups=2", "--wl", "prompts_per_group=8",
            "--wl", "system_len=256", "--wl", "question_len=32", "--wl", "output_len=16"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "ci" / "cpu"), str(ROOT / "bench")])}
    clean = subprocess.run([sys.executable, str(ROOT / "bench" / "sched_driver.py"), *args],
                           env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert json.loads(clean.stdout)["kv_tokens_checked"] > 0
    bad = subprocess.run([sys.executable, "-c", _CORRUPT, *args], env=env,
                         capture_output=True, text=True)
    assert bad.returncode != 0
    assert "KVIntegrityError" in bad.stderr and "holds the KV of other tokens" in bad.stderr


def test_sparse_arrivals_keep_the_prefilled_request_busy():
    # One request at a time with long gaps: right after its prefill the request is in the last
    # extend batch, not yet in running_batch. The loop must decode it, not idle-check (SGLang's
    # check would count its request slot as leaked) or jump the clock to the next arrival.
    args = ["--workload", "gsp", "--page-size", "1", "--max-running-requests", "8",
            "--model", "v3", "--pressure", "0.5", "--request-rate", "0.001", "--wl", "groups=2",
            "--wl", "prompts_per_group=2", "--wl", "system_len=64", "--wl", "question_len=16",
            "--wl", "output_len=8"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "ci" / "cpu"), str(ROOT / "bench")])}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "sched_driver.py"), *args],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["finished_requests"] == 4 and res["idle_checks"] >= 3
    # Every request decodes right after its own prefill: its TTFT is its prefill alone.
    assert res["ttft_p99_s"] < 1.0


def test_a_failed_benchmark_job_is_recorded_and_the_others_still_run():
    sys.path.insert(0, str(ROOT / "bench"))
    import run as bench_run

    tiny = ["--workload", "gsp", "--page-size", "1", "--max-running-requests", "8", "--model",
            "v3", "--pressure", "0.5", "--wl", "groups=2", "--wl", "prompts_per_group=2",
            "--wl", "system_len=64", "--wl", "question_len=16", "--wl", "output_len=8"]
    cell = {"scenario": "tiny", "seed": 0, "name": "tiny", "workload": "gsp"}
    work = [bench_run.Job("broken", None, [(cell, ["--workload", "no-such-workload"])]),
            bench_run.Job("fine", None, [(cell, tiny)])]
    results: list = []

    def on_result(c: dict, variant: str, res: dict) -> None:
        results.append(dict(res, scenario=c["scenario"], variant=variant, seed=c["seed"]))

    failures = bench_run.run_jobs_keep_going(work, on_result, 2, results, "test")
    assert [r["variant"] for r in results] == ["fine"]
    assert [(f["variant"], f["scenario"], f["seed"]) for f in failures] == [("broken", "tiny", 0)]
