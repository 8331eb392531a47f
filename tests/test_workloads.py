"""Synthetic workloads: the heavy-tailed R1 output lengths (issue 13)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import workloads  # noqa: E402

TAIL = {"output_sigma": 1.0, "output_median": 2048, "output_min": 64, "max_new_tokens": 32768}


def _lengths(params, seed=0):
    return sorted(r.output_len for r in workloads.build("r1", params, seed).requests)


def test_r1_default_outputs_stay_uniform():
    out = _lengths({})
    assert 2048 <= out[0] and out[-1] <= 4096


def test_r1_tail_is_heavy_and_clipped_to_its_bounds():
    out = _lengths(dict(TAIL, requests=2000))
    n = len(out)
    assert out[0] >= 64 and out[-1] <= 32768
    median, p99 = out[n // 2], out[int(0.99 * n)]
    assert 1700 < median < 2400  # lognormal median 2,048
    assert p99 > 8 * median  # exp(2.33 * 1.0) ~ 10x the median at the 99th percentile
    assert out.count(32768) >= 1  # the cap binds for the longest chains


def test_r1_every_request_reserves_max_new_tokens():
    trace = workloads.build("r1", TAIL, 3)
    assert {r.max_new_tokens for r in trace.requests} == {32768}


def test_r1_tail_is_seeded():
    assert _lengths(TAIL, 5) == _lengths(TAIL, 5) != _lengths(TAIL, 6)


def test_multiturn_length_jitter_varies_lengths_by_seed_and_zero_keeps_the_fixed_shape():
    build = workloads.build
    fixed = build("multiturn", {"clients": 4, "parallel": 2}, seed=0)
    assert {len(r.input_ids) for r in fixed.all_requests if r.rid.endswith("-t0")} == {512}
    assert {r.output_len for r in fixed.all_requests} == {64}
    a = build("multiturn", {"clients": 4, "parallel": 2, "length_jitter": 0.25}, seed=0)
    b = build("multiturn", {"clients": 4, "parallel": 2, "length_jitter": 0.25}, seed=1)
    firsts = [len(r.input_ids) for r in a.all_requests if r.rid.endswith("-t0")]
    assert all(384 <= n <= 640 for n in firsts) and len(set(firsts)) > 1
    assert all(48 <= r.output_len <= 80 for r in a.all_requests)
    assert [r.output_len for r in a.all_requests] != [r.output_len for r in b.all_requests]
