"""HiCache (HiRadixCache + MLATokenToKVPoolHost + HiCacheController) on CPU in bench/sched_driver.py,
with bench/hicache_cpu.py's substitutions: on the pristine tree and the patched one (the installed
wheel, as tests/test_bench_quick.py), no host slot leaks, KV content survives a host load-back
(sched_driver's KV-integrity check reads every loaded slot), and tokens really come back from
host memory. Asserts on numbers measured in these runs only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRISTINE = ROOT / "build" / "work" / "pristine" / "python"

# A small r1 (as tests/test_bench_quick.py's SMALL_R1): 24 requests on 2 shared 256-token
# prompts, 256-512 output tokens, a 4096-token device pool: it evicts, retracts and re-admits.
SMALL_R1 = ["--workload", "r1", "--wl", "groups=2", "--wl", "requests=24", "--wl", "system_len=256",
            "--wl", "question_len=32", "--wl", "output_min=256", "--wl", "output_max=512",
            "--wl", "max_new_tokens=512", "--pool-tokens", "4096", "--page-size", "16",
            "--env", "SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS=50"]


def _env(sglang_python: Optional[Path]) -> dict:
    path = ([str(sglang_python)] if sglang_python else []) + [str(ROOT / "ci" / "cpu"),
                                                              str(ROOT / "bench")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def _driver(tmp_path: Path, sglang_python: Optional[Path], *args: str) -> dict:
    out = tmp_path / "run.json"
    r = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "bench" / "sched_driver.py"),
                        *SMALL_R1, *args, "--out", str(out)],
                       env=_env(sglang_python), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("tree,policy", [(PRISTINE, "write_through"), (None, "write_through"),
                                         (None, "write_back")],
                         ids=["pristine-write_through", "patched-write_through",
                              "patched-write_back"])
def test_hicache_runs_loads_back_and_leaks_nothing(tmp_path: Path, tree, policy):
    run = _driver(tmp_path, tree, "--hicache", policy)
    hc = run["hicache"]
    assert run["sglang_file"].startswith(str(tree)) if tree else True
    assert hc["write_policy"] == policy and hc["io_backend"] == "kernel"
    assert hc["mem_layout"] == "layer_first"  # the pin's defaults
    assert run["finished_requests"] == run["config"]["num_requests"] > 0
    assert run["retracted_requests"] > 0 and run["evict_calls"] > 0
    assert hc["host_written_tokens"] > 0
    assert hc["host_loaded_tokens"] > 0  # some KV really came back from host memory ...
    assert run["kv_tokens_checked"] > 0  # ... and every slot read was checked
    assert hc["end_host_slots_leaked"] == 0
    assert hc["end_ongoing_write_through"] == hc["end_ongoing_load_back"] == 0
    assert hc["end_host_protected_nodes"] == 0
    assert 0 < hc["host_pool_peak_tokens"] <= hc["host_pool_tokens"]
    assert run["end_free_plus_evictable_eq_pool"] and run["end_req_slots_free"]
    if policy == "write_back":
        assert hc["blocked_s"] > 0  # eviction waits for its write-back
    elif tree is PRISTINE:
        assert hc["blocked_s"] == 0  # write-through runs on its own stream
    else:  # the series waits for a retracted request's backup before evicting it (0009)
        assert hc["blocked_s"] > 0


def test_series_keeps_retracted_kv_on_the_host_until_readmission(tmp_path: Path):
    pin = _driver(tmp_path, PRISTINE, "--hicache", "write_through")
    series = _driver(tmp_path, None, "--hicache", "write_through")
    page = series["config"]["page_size"]
    for run in (pin, series):
        assert run["finished_requests"] == run["config"]["num_requests"] > 0
        assert run["retracted_requests"] > 0
        assert run["reprefilled_tokens"] == (
            run["retracted_kv_tokens"] - run["readmitted_cached_tokens"])
    # The pin backs up only what a finished or prefilled request inserted: a retracted
    # request's generated tokens are freed and computed again at re-admission.
    assert pin["reprefilled_tokens"] > page * pin["retracted_requests"]
    # The series keeps them on the host: each re-admission computes at most its partial last
    # page again (plus the last sampled token, whose KV was never written).
    assert series["reprefilled_tokens"] <= page * series["retracted_requests"]
    assert series["hicache"]["host_loaded_tokens"] > pin["hicache"]["host_loaded_tokens"]
    hc = series["hicache"]
    assert hc["end_host_slots_leaked"] == hc["end_host_protected_nodes"] == 0


def test_idle_steps_let_hicache_copies_finish(tmp_path: Path):
    # gsp at page 1 on a tight pool: at some point every node is locked by a write-through not
    # yet acked and nothing runs. The real loop spins until the copies finish; the driver's
    # idle step moves its clock to the next one (without that it stopped with "no progress").
    out = tmp_path / "run.json"
    r = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "bench" / "sched_driver.py"),
                        "--workload", "gsp", "--page-size", "1", "--model", "v3", "--pressure",
                        "0.3", "--max-running-requests", "128", "--hicache", "write_through",
                        "--out", str(out)], env=_env(PRISTINE), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    run = json.loads(out.read_text())
    assert run["finished_requests"] == run["config"]["num_requests"]
    assert run["idle_steps"] > 0 and run["hicache"]["end_host_slots_leaked"] == 0


_SCRIPT = textwrap.dedent("""
    import sys, torch
    import sglang_cpu
    import hicache_cpu, kv_integrity, sched_driver
    from sglang.srt.mem_cache.memory_pool import MLATokenToKVPool
    from sglang.srt.mem_cache.memory_pool_host import MLATokenToKVPoolHost

    hicache_cpu.install(hicache_cpu.Clock(1e-6))
    # 1. Every layout / io backend: a backup then a load-back moves the same token slots.
    for layout, io in (("layer_first", "kernel"), ("layer_first", "direct"),
                       ("page_first", "kernel"), ("page_first_direct", "direct")):
        dev = MLATokenToKVPool(256, page_size=16, dtype=torch.bfloat16, kv_lora_rank=3,
                               qk_rope_head_dim=1, layer_num=3, device="cpu",
                               enable_memory_saver=False)
        for buf in dev.kv_buffer:
            buf.copy_(torch.randn(buf.shape))
        host = MLATokenToKVPoolHost(dev, 2.0, 0, 16, layout)
        src = torch.arange(32, 64)
        dst = torch.arange(160, 192)
        h = host.alloc(32)
        host.backup_from_device_all_layer(dev, h, src, io)
        for layer in range(3):
            host.load_to_device_per_layer(dev, h, dst, layer, io)
        for layer in range(3):
            assert torch.equal(dev.kv_buffer[layer][dst], dev.kv_buffer[layer][src]), (layout, io)
    # 2. A load-back that brings back wrong content is caught by the driver's KV check.
    orig = hicache_cpu._TRANSFERS["transfer_kv_per_layer_mla"]
    def corrupt(src, dst, src_indices, dst_indices, **kw):
        orig(src, dst, src_indices, dst_indices, **kw)
        dst.view(torch.int16)[dst_indices[:1].long()] ^= 1  # one loaded slot: other KV
    hicache_cpu._TRANSFERS["transfer_kv_per_layer_mla"] = corrupt
    try:
        sched_driver.run_one(sys.argv[1:])
    except kv_integrity.KVIntegrityError as e:
        print("caught:", e)
        sys.exit(0)
    sys.exit("a corrupted load-back went unnoticed")
""")


def test_substituted_copies_move_the_same_slots_and_a_bad_load_back_is_caught(tmp_path: Path):
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", _SCRIPT, *SMALL_R1,
                        "--hicache", "write_through"],
                       env=_env(PRISTINE), capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "caught:" in r.stdout
