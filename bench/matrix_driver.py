"""Breadth-matrix worker: SGLang's real Scheduler over many prefix caches, pools and modes, on CPU.

Runs configuration x scenario cells of bench/matrix.py against the SGLang tree that comes first
on PYTHONPATH and writes one JSON record per cell: the schedule fingerprint (per step: batch
mode and (rid, extend length) list), every request's output ids and finish reason, the
exception (type, message, phase, step, traceback tail) if one was raised, the idle checks run,
and what the scenario exercised. bench/matrix.py runs it once per tree and compares. Run with a
SGLang source tree, ``ci/cpu`` and ``bench`` on PYTHONPATH::

    PYTHONPATH=<tree>/python:ci/cpu:bench python bench/matrix_driver.py --help

What runs for real (SGLang code, unmodified)
--------------------------------------------
* ``ServerArgs`` (with ``__post_init__``) and ``set_global_server_args_for_scheduler``; the
  distributed state of one CPU rank as ``ModelRunner.init_torch_distributed`` sets it up
  (``init_distributed_environment`` with the CPU backend, gloo, world size 1;
  ``initialize_model_parallel``; ``initialize_dp_attention``).
* The pools, by ``ModelRunner._init_pools`` itself after ``_resolve_token_capacity``,
  ``_resolve_hybrid_swa_tokens`` (hybrid SWA) and ``_resolve_max_num_reqs``:
  ``ReqToTokenPool`` or ``HybridReqToTokenPool`` + ``MambaPool``; ``MHATokenToKVPool`` /
  ``MLATokenToKVPool`` / ``SWAKVPool`` / ``HybridLinearKVPool``; ``TokenToKVPoolAllocator`` /
  ``PagedTokenToKVPoolAllocator`` / ``SWATokenToKVPoolAllocator``. The Mamba model is a real,
  tiny ``NemotronHConfig`` (layers ``M*``), so ``ModelRunner.mambaish_config`` and
  ``mamba2_cache_params`` are SGLang's.
* The prefix cache, chosen and built by ``Scheduler.init_cache_with_memory_pool`` itself
  (``RadixCache``, ``ChunkCache`` for ``disable_radix_cache``, ``SWARadixCache``,
  ``MambaRadixCache``, ``HiRadixCache`` for ``enable_hierarchical_cache``) from a
  ``TpModelWorker`` whose ``get_memory_pool`` / ``is_hybrid_swa`` / ``sliding_window_size`` /
  ``get_tokens_per_layer_info`` / ``get_worker_info`` are real.
* ``init_metrics`` with ``enable_metrics=True`` (``SchedulerMetricsCollector``; Prometheus in
  multiprocess mode, set up by SGLang's ``set_prometheus_multiproc_dir`` as the engine does),
  ``init_model_worker`` (handed the TpModelWorker below instead of building one: worker
  info, process groups, start-up log lines incl. 0006's ``log_kv_cache_geometry`` where the
  tree calls it, ``emit_cache_config_info``), ``init_running_status``,
  ``init_chunked_prefill``, ``init_diffusion_llm``, ``init_schedule_policy``,
  ``init_deterministic_inference_config``, ``init_request_dispatcher``, ``GrammarManager``.
* Every step, as ``event_loop_normal``: ``process_input_requests`` with real io_struct
  objects (``TokenizedGenerateReqInput`` -> ``handle_generate_request``; ``AbortReq`` ->
  ``abort_request``; ``PauseGenerationReqInput(mode="retract")`` -> ``pause_generation``;
  ``ContinueGenerationReqInput`` -> ``continue_generation``; while paused the loop goes on to
  the next step as the real one does), ``get_next_batch_to_run``, ``process_batch_result``
  (``stream_output`` into a sink, ``report_prefill_stats``, ``report_decode_stats`` with
  ``decode_log_interval=1``, ``log_batch_result_stats``), and ``self_check_during_idle``
  whenever there is no batch, then once more after the last request finished.
  ``SGLANG_ENABLE_STRICT_MEM_CHECK_DURING_IDLE`` is 1 (the pin's default): a leaked KV slot
  or request slot makes ``check_memory`` raise ``ValueError``; the SWA and Mamba trees'
  ``sanity_check`` (via ``check_tree_cache``) raises on a lock held while idle. At the pin
  ``check_tree_cache`` checks only those two trees, and ``check_memory`` counts a locked
  RadixCache node as protected, so a harness-level end check follows: every lock released
  (``protected_size``, or ``full_`` / ``swa_`` / ``mamba_protected_size``, is 0), every
  request slot free, nothing left queued, and in ``hiradix`` cells no host slot held by no
  tree node and no host copy left protected (phase ``end_check``). ``--inject`` shows both
  live.

Replaced or stubbed (each needs a model, a GPU or IPC), and observation only
------------------------------------------------------------------------------
1. ``Scheduler.__init__``, ``TpModelWorker.__init__`` and ``ModelRunner.__init__`` do not run
   (``object.__new__``; the Scheduler's "Parse args" block is
   ``sched_shell.scheduler_shell``); ``init_model_worker`` gets the TpModelWorker from
   stand-ins for ``init_tp_model_worker`` / ``maybe_init_draft_worker`` (no draft worker);
   ``init_model_config`` / ``init_ipc_channels`` / ``init_tokenizer`` /
   ``init_moe_gemm_config`` / ``init_disaggregation`` / ``init_overlap`` are replaced by the
   attributes they set (non-disaggregated, no overlap); ``init_mamba_backend`` (a kernel
   choice), ``init_watch_dog_memory_saver_input_blocker`` (a watchdog thread) and
   ``init_profiler`` are not called. The ModelRunner gets the attributes
   ``_init_pools`` reads, with the pool size from the scenario instead of a memory profile
   (bf16 KV, 1 or 2 layers, one KV head of dim 8, MLA rank 4 + rope 2, sliding window 128,
   ``max_mamba_cache_size`` 3 x max running, no model); the TpModelWorker gets what its
   ``__init__`` computes for ``get_worker_info`` (tp_worker.py:292-308).
2. ``model_config``: sched_shell's namespace plus head / layer / SWA / MLA fields;
   ``hf_config`` is a ``transformers.PretrainedConfig`` (the NemotronHConfig for Mamba).
3. ``run_batch``: no forward; one deterministic token per request (the stop token where the
   scenario says), ``batch.output_ids`` set as the non-overlap path does.
4. ``send_to_tokenizer`` / ``send_to_detokenizer``: sinks that record what was sent.
5. The event loop is ``event_loop_normal`` as a bounded loop; requests and control messages
   come from the scenario instead of ``recv_requests``. The overlap loop
   (``event_loop_overlap``) is not driven; ``self_check_during_busy`` stays off, as by default.
6. Between cells every collector is unregistered from ``prometheus_client.REGISTRY``: each
   cell builds a new Scheduler in the same process, whose collectors register the same metric
   names again (a server process builds one).
7. Isolation ``defer`` (reruns only): ``log_kv_cache_geometry`` (0006) is a no-op while
   ``init_model_worker`` runs and is called once the cache is built, so that a start-up
   failure there does not hide what fails later.
8. Isolation ``quiet`` (reruns only): ``decode_log_interval`` is 10**9, so the decode log line
   and its metrics never run, so that a failure there does not hide what fails after it.
9. Observation only: ``tree_cache.evict`` is wrapped to count calls and evicted tokens.
10. ``hiradix`` cells: bench/hicache_cpu.py's substitutions for HiCache (host buffer without
   ``cudaHostRegister``; ``sgl_kernel.kvcacheio`` copies as torch index copies of the same
   slots; CUDA streams and events on a modelled clock that never advances here, so every copy
   is complete when it is enqueued, which the controller only observes at its next
   ``writing_check`` / ``loading_check``, as on a GPU whose copy has finished by then).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import random
import socket
import sys
import time
import traceback
import zlib
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Tuple

import sglang_cpu  # noqa: F401  (must precede every sglang import)
import torch
from transformers import PretrainedConfig

from sglang.srt.configs.model_config import AttentionArch
from sglang.srt.constrained.grammar_manager import GrammarManager
from sglang.srt.configs.nemotron_h import NemotronHConfig
from sglang.srt.disaggregation.utils import DisaggregationMode
from sglang.srt.distributed.parallel_state import (
    get_default_distributed_backend,
    init_distributed_environment,
    initialize_model_parallel,
)
from sglang.srt.layers.dp_attention import initialize_dp_attention
from sglang.srt.managers.io_struct import (
    AbortReq,
    ContinueGenerationReqInput,
    PauseGenerationReqInput,
    TokenizedGenerateReqInput,
)
from sglang.srt.managers.schedule_batch import Req, ScheduleBatch
from sglang.srt.managers.scheduler import Scheduler
from sglang.srt.managers.tp_worker import TpModelWorker
from sglang.srt.managers.utils import GenerationBatchResult
from sglang.srt.model_executor.model_runner import ModelRunner
from sglang.srt.sampling.sampling_params import SamplingParams
from sglang.srt.server_args import ServerArgs, set_global_server_args_for_scheduler
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
from sglang.srt.utils import require_mlp_sync
from sglang.srt.utils.common import set_prometheus_multiproc_dir

import matrix
import hicache_cpu
import sched_shell
from matrix import Config

VOCAB = 1024
EOS = 1
CONTEXT_LEN = 4096
MAX_STEPS = 3000
SLIDING_WINDOW = 128
# Isolations (replacements 7 and 8), for reruns that look past a failure.
ISOLATIONS = {
    "defer": "0006's log_kv_cache_geometry runs after init_cache_with_memory_pool instead of "
             "where the tree calls it",
    "quiet": "decode_log_interval 10**9: the decode log line and its metrics never run",
}
QUIET_LOG_INTERVAL = 10**9
STATS_LOGGER = "sglang.srt.observability.scheduler_metrics_mixin"

# Configurations that cannot be brought up on CPU at the pin, with the reason (file:line on
# the pin): skipped without trying.
SKIP: Dict[str, str] = {
    "mamba-p64": (
        "MambaRadixCache takes page_size > 1 only with mamba_scheduler_strategy='extra_buffer' "
        "(otherwise it asserts page_size == 1, mem_cache/mamba_radix_cache.py:435-438), and the "
        "pin allows 'extra_buffer' on CUDA only: ServerArgs._handle_mamba_radix_cache asserts "
        "is_cuda() ('Mamba extra_buffer is only supported on CUDA devices with FLA backend', "
        "server_args.py:2165-2175), which ServerArgs.__post_init__ runs for the hybrid Mamba "
        "architectures (_handle_model_specific_adjustments)"
    ),
}
# Skipped only if the bring-up fails with one of these messages (checked at run time, so a
# machine where it does come up runs the cells).
SKIP_IF_BRINGUP_FAILS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "hiradix": (
        "HiRadixCache's host pool refuses to start unless 10 GB of host memory stay free beyond "
        "the host pool (HostKVCache.__init__, memory_pool_host.py:186-199); its CUDA-only "
        "pieces (cudaHostRegister, sgl_kernel.kvcacheio copies, CUDA streams and events) are "
        "substituted by bench/hicache_cpu.py",
        ("Not enough host memory available",),
    ),
}


# ---------------------------------------------------------------------------------------------
# Scenarios: deterministic request waves and control messages
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ReqSpec:
    rid: str
    input_ids: List[int]
    max_new_tokens: int
    stop_at: Optional[int]  # emit the stop token at this output position (None: length only)
    wave: int
    delay: int  # steps after the wave starts
    priority: Optional[int] = None


@dataclasses.dataclass
class Plan:
    requests: List[ReqSpec]
    pool_tokens: int
    max_running: int
    chunked_prefill_size: int
    max_prefill_tokens: int
    priority_scheduling: bool = False
    conservativeness: float = 1.0  # ServerArgs.schedule_conservativeness
    env: Dict[str, str] = dataclasses.field(default_factory=dict)
    # (scheduler, wave, steps since the wave started, log) -> control messages to send now
    control: Optional[Callable[[Scheduler, int, int, List[Dict[str, Any]]], List[Any]]] = None


def _tokens(rng: random.Random, n: int) -> List[int]:
    return [rng.randrange(10, VOCAB) for _ in range(n)]


def _reqs(rng: random.Random, prefix: str, prefixes: List[List[int]], n: int, wave: int,
          suffix: Tuple[int, int], out: Tuple[int, int], delays: Optional[List[int]] = None,
          start: int = 0) -> List[ReqSpec]:
    specs = []
    for i in range(n):
        shared = prefixes[i % len(prefixes)]
        max_new = rng.randint(*out)
        stop = rng.randint(max_new // 2, max_new - 1) if i % 3 == 2 else None
        ids = shared + _tokens(rng, rng.randint(*suffix))
        specs.append(ReqSpec(f"{prefix}{start + i:03d}", ids,
                             max_new, stop, wave, delays[i] if delays else 0))
    return specs


def _waiting_retracted(s: Scheduler) -> Optional[Req]:
    for r in s.waiting_queue:
        if r.retraction_count > 0:
            return r
    return None


def plan_chunked(cfg: Config) -> Plan:
    rng = random.Random(11)
    pre = [_tokens(rng, 200), _tokens(rng, 136)]
    reqs = _reqs(rng, "c", pre, 4, 0, (100, 360), (6, 16), [0, 0, 1, 3])
    reqs += _reqs(rng, "c", pre, 3, 1, (40, 300), (6, 16), [0, 1, 1], start=4)
    return Plan(reqs, pool_tokens=16384, max_running=8, chunked_prefill_size=128,
                max_prefill_tokens=256)


def plan_pressure(cfg: Config) -> Plan:
    rng = random.Random(12)
    pre = [_tokens(rng, 32) for _ in range(4)]
    reqs = _reqs(rng, "m", pre, 24, 0, (4, 16), (128, 256))
    reqs += _reqs(rng, "m", pre, 4, 1, (16, 48), (48, 96), start=24)
    pool = {1: 1024, 16: 1024}.get(cfg.page_size, 24 * cfg.page_size)

    def control(s: Scheduler, wave: int, t: int, log: List[Dict[str, Any]]) -> List[Any]:
        if any(e["kind"] == "abort" for e in log):
            return []
        req = _waiting_retracted(s)
        if req is None:
            return []
        log.append({"kind": "abort", "rid": req.rid, "where": "retracted", "step_in_wave": t})
        return [AbortReq(rid=req.rid)]

    # Over-commit as a long-output workload does: a low reservation (conservativeness 0.3)
    # that decays to its floor in 10 steps instead of 600, so decode runs out and retracts.
    return Plan(reqs, pool_tokens=pool, max_running=24, chunked_prefill_size=256,
                max_prefill_tokens=512, conservativeness=0.3,
                env={"SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS": "10"}, control=control)


def plan_priority(cfg: Config) -> Plan:
    rng = random.Random(13)
    pre = [_tokens(rng, 80)]
    low = _reqs(rng, "p", pre, 3, 0, (20, 40), (40, 60))
    high = _reqs(rng, "p", pre, 2, 0, (20, 40), (8, 12), [4, 9], start=3)
    mid = _reqs(rng, "p", pre, 1, 0, (20, 40), (8, 12), [6], start=5)
    for r in low:
        r.priority = 0
    for r in high:
        r.priority = 100
    mid[0].priority = 5  # within the preemption threshold of the low ones: waits
    reqs = low + high + mid + _reqs(rng, "p", pre, 2, 1, (10, 20), (8, 12), start=6)
    for r in reqs[-2:]:
        r.priority = 0
    return Plan(reqs, pool_tokens=16384, max_running=3, chunked_prefill_size=256,
                max_prefill_tokens=512, priority_scheduling=True)


def plan_pause(cfg: Config) -> Plan:
    rng = random.Random(14)
    pre = [_tokens(rng, 72), _tokens(rng, 40)]
    reqs = _reqs(rng, "q", pre, 6, 0, (20, 60), (30, 40), [0, 0, 0, 1, 1, 2])
    reqs += _reqs(rng, "q", pre, 3, 1, (20, 40), (10, 16), start=6)

    def control(s: Scheduler, wave: int, t: int, log: List[Dict[str, Any]]) -> List[Any]:
        if wave != 0:
            return []
        kinds = [e["kind"] for e in log]
        if not kinds and t >= 8 and len(s.running_batch.reqs) >= 2:
            log.append({"kind": "pause", "step_in_wave": t,
                        "running": len(s.running_batch.reqs)})
            return [PauseGenerationReqInput(mode="retract")]
        if kinds == ["pause"]:
            req = _waiting_retracted(s)
            log.append({"kind": "abort", "rid": req.rid if req else None, "where": "retracted",
                        "step_in_wave": t})
            return [AbortReq(rid=req.rid)] if req else []
        if kinds == ["pause", "abort"]:
            log.append({"kind": "continue", "step_in_wave": t})
            return [ContinueGenerationReqInput()]
        return []

    return Plan(reqs, pool_tokens=16384, max_running=8, chunked_prefill_size=256,
                max_prefill_tokens=512, control=control)


def plan_abort(cfg: Config) -> Plan:
    rng = random.Random(15)
    pre = [_tokens(rng, 64)]
    reqs = _reqs(rng, "a", pre, 5, 0, (20, 60), (20, 30))
    reqs += _reqs(rng, "a", pre, 2, 1, (10, 30), (8, 12), start=5)

    def control(s: Scheduler, wave: int, t: int, log: List[Dict[str, Any]]) -> List[Any]:
        if wave != 0:
            return []
        done = {e["where"] for e in log}
        if "waiting" not in done and t >= 2 and s.waiting_queue:
            req = s.waiting_queue[-1]
            log.append({"kind": "abort", "rid": req.rid, "where": "waiting", "step_in_wave": t})
            return [AbortReq(rid=req.rid)]
        if "running" not in done and t >= 5:
            for req in s.running_batch.reqs:
                if not req.finished() and req.output_ids:
                    log.append({"kind": "abort", "rid": req.rid, "where": "running",
                                "step_in_wave": t})
                    return [AbortReq(rid=req.rid)]
        return []

    return Plan(reqs, pool_tokens=16384, max_running=3, chunked_prefill_size=256,
                max_prefill_tokens=512, control=control)


def plan_startup(cfg: Config) -> Plan:
    rng = random.Random(10)
    pre = [_tokens(rng, 48)]
    reqs = _reqs(rng, "s", pre, 2, 0, (8, 24), (4, 8)) + _reqs(rng, "s", pre, 1, 1, (8, 24),
                                                                (4, 8), start=2)
    return Plan(reqs, pool_tokens=4096, max_running=4, chunked_prefill_size=256,
                max_prefill_tokens=512)


PLANS: Dict[str, Callable[[Config], Plan]] = {
    "startup": plan_startup,
    "chunked": plan_chunked,
    "pressure": plan_pressure,
    "priority": plan_priority,
    "pause": plan_pause,
    "abort": plan_abort,
}
assert set(PLANS) == set(matrix.SCENARIOS)


# ---------------------------------------------------------------------------------------------
# Bring-up
# ---------------------------------------------------------------------------------------------


class _RecordingSink:
    """Stands in for a ZMQ sender; keeps the type and rid of what is sent."""

    def __init__(self) -> None:
        self.sent: List[Tuple[str, Any]] = []

    def send_output(self, obj: Any, *args: Any, **kwargs: Any) -> None:
        self.sent.append((type(obj).__name__, getattr(obj, "rid", None)))


_DIST_READY = False


def init_single_rank(server_args: ServerArgs) -> None:
    """The distributed state of one CPU rank, as ModelRunner.init_torch_distributed sets it."""
    global _DIST_READY
    if _DIST_READY:
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    init_distributed_environment(backend=get_default_distributed_backend("cpu"), world_size=1,
                                 rank=0, local_rank=0,
                                 distributed_init_method=f"tcp://127.0.0.1:{port}")
    initialize_model_parallel(tensor_model_parallel_size=1)
    initialize_dp_attention(server_args=server_args,
                            model_config=SimpleNamespace(hidden_size=16, dtype=torch.bfloat16))
    _DIST_READY = True


def _hf_config(cfg: Config) -> PretrainedConfig:
    if cfg.cache == "mamba":
        return NemotronHConfig(
            hybrid_override_pattern="M*", hidden_size=16, intermediate_size=32,
            num_attention_heads=2, head_dim=8, num_key_value_heads=1, vocab_size=VOCAB,
            ssm_state_size=4, mamba_num_heads=2, mamba_head_dim=4, mamba_n_groups=1,
            mamba_d_conv=4, mamba_expand=1, n_routed_experts=1,
            moe_intermediate_size=8, moe_shared_expert_intermediate_size=8,
            n_groups=1,  # read by mamba2_cache_params; checkpoints' config.json carry it
        )
    return PretrainedConfig()


def model_config(cfg: Config) -> SimpleNamespace:
    mc = sched_shell.model_config_stub(CONTEXT_LEN)
    mc.vocab_size = VOCAB
    mc.is_generation = True
    mc.hf_config = _hf_config(cfg)
    mc.hf_text_config = mc.hf_config
    mc.dtype = torch.bfloat16
    mc.head_dim = mc.v_head_dim = mc.swa_head_dim = mc.swa_v_head_dim = 8
    mc.num_key_value_heads = 1
    mc.get_num_kv_heads = lambda tp_size: 1
    mc.get_swa_num_kv_heads = lambda tp_size: 1
    mc.num_attention_heads = 2
    mc.is_hybrid_swa = cfg.cache == "swa"
    mc.is_hybrid_swa_compress = False
    mc.sliding_window_size = SLIDING_WINDOW if cfg.cache == "swa" else None
    mc.swa_attention_layer_ids = [0] if cfg.cache == "swa" else []
    mc.full_attention_layer_ids = [1] if cfg.cache == "swa" else [0]
    if cfg.cache == "mamba":
        mc.full_attention_layer_ids = list(mc.hf_config.full_attention_layer_ids)
    mc.num_hidden_layers = 2 if cfg.cache in ("swa", "mamba") else 1
    mc.num_attention_layers = len(mc.full_attention_layer_ids) + len(mc.swa_attention_layer_ids)
    if cfg.kv == "mla":
        mc.attention_arch = AttentionArch.MLA
        mc.kv_lora_rank, mc.qk_rope_head_dim, mc.qk_nope_head_dim = 4, 2, 6
    else:
        mc.attention_arch = AttentionArch.MHA
    return mc


def build_scheduler(cfg: Config, plan: Plan, quiet: bool = False,
                    defer_geometry: bool = False) -> Scheduler:
    server_args = ServerArgs(
        model_path="dummy",
        device="cpu",
        attention_backend="torch_native",
        page_size=cfg.page_size,
        max_running_requests=plan.max_running,
        chunked_prefill_size=plan.chunked_prefill_size,
        max_prefill_tokens=plan.max_prefill_tokens,
        disable_overlap_schedule=True,
        skip_tokenizer_init=True,
        random_seed=0,
        enable_metrics=True,
        decode_log_interval=QUIET_LOG_INTERVAL if quiet else 1,
        disable_radix_cache=cfg.cache == "chunk",
        enable_priority_scheduling=plan.priority_scheduling,
        schedule_conservativeness=plan.conservativeness,
        enable_hierarchical_cache=cfg.cache == "hiradix",
        max_mamba_cache_size=3 * plan.max_running if cfg.cache == "mamba" else None,
    )
    set_global_server_args_for_scheduler(server_args)
    init_single_rank(server_args)
    if cfg.cache == "hiradix":  # replacement 10: HiCache's CUDA-only pieces
        hicache_cpu.install(hicache_cpu.Clock())
    mc = model_config(cfg)

    # -- ModelRunner: the attributes _init_pools reads; then the real pool construction --
    r: ModelRunner = object.__new__(ModelRunner)
    r.server_args = server_args
    r.model_config = mc
    r.device = "cpu"
    r.gpu_id = 0
    r.dp_size = r.pp_size = r.tp_size = 1
    r.page_size = cfg.page_size
    r.spec_algorithm = SpeculativeAlgorithm.from_string(None)
    r.is_draft_worker = False
    r.enable_hisparse = False
    r.kv_cache_dtype = torch.bfloat16
    r.use_mla_backend = cfg.kv == "mla"
    r.num_effective_layers = mc.num_attention_layers
    r.start_layer, r.end_layer = 0, mc.num_hidden_layers
    r.is_hybrid_swa = mc.is_hybrid_swa
    r.is_hybrid_swa_compress = False
    r.sliding_window_size = mc.sliding_window_size
    r.req_to_token_pool = None
    r.token_to_kv_pool_allocator = None
    r.forward_stream = None
    r.model = None  # no model: get_pad_input_ids_func() is None
    capacity = r._resolve_token_capacity(plan.pool_tokens)
    r.full_max_total_num_tokens = r.swa_max_total_num_tokens = None
    if r.is_hybrid_swa:
        capacity, r.full_max_total_num_tokens, r.swa_max_total_num_tokens = (
            r._resolve_hybrid_swa_tokens(capacity))
    r.max_total_num_tokens = capacity
    r.max_running_requests = r._resolve_max_num_reqs(capacity)
    r._init_pools()

    # -- TpModelWorker: what its __init__ computes for get_worker_info (tp_worker.py:292-308) --
    w: TpModelWorker = object.__new__(TpModelWorker)
    w._model_runner = r  # what _init_model_runner sets
    w.model_config = mc
    w.device = "cpu"
    w.random_seed = server_args.random_seed
    w.max_total_num_tokens = r.max_total_num_tokens
    w.max_prefill_tokens = server_args.max_prefill_tokens
    w.max_running_requests = r.max_running_requests
    w.max_queued_requests = server_args.max_queued_requests
    w.max_req_len = min(mc.context_len - 1, r.max_token_pool_size - 1)
    w.max_req_input_len = w.max_req_len - 5

    s = sched_shell.scheduler_shell(server_args)
    s.model_config = mc  # init_model_config (replacement 2)
    s.is_generation = True
    s.init_metrics(0, 0, None)
    s.send_to_tokenizer = _RecordingSink()  # init_ipc_channels (replacement 4)
    s.send_to_detokenizer = _RecordingSink()
    s.idle_sleeper = None
    s.recv_from_rpc = None
    s.tokenizer = s.processor = None  # init_tokenizer with skip_tokenizer_init
    s._mm_processor = None
    s._think_end_id = None
    s.require_mlp_sync = require_mlp_sync(server_args)

    # -- init_model_worker itself, handed the worker above (replacement 1) --
    s.init_tp_model_worker = lambda: setattr(s, "tp_worker", w)  # type: ignore[method-assign]
    s.maybe_init_draft_worker = (  # type: ignore[method-assign]
        lambda: setattr(s, "draft_worker", None))
    if defer_geometry and hasattr(s, "log_kv_cache_geometry"):
        s.log_kv_cache_geometry = lambda: None  # type: ignore[method-assign]
    s.init_model_worker()
    s.init_cache_with_memory_pool()
    if defer_geometry and "log_kv_cache_geometry" in vars(s):
        del s.log_kv_cache_geometry  # replacement 7: once the cache and its pools exist
        s.log_kv_cache_geometry()
    s.init_running_status()
    s.init_chunked_prefill()
    s.init_diffusion_llm()
    s.init_schedule_policy()
    # -- init_disaggregation / init_overlap / ngram (non-disaggregated, no overlap) --
    s.disaggregation_mode = DisaggregationMode.NULL
    s.future_map = None
    s.use_ngram_embedding = False
    s.init_deterministic_inference_config()
    s.init_request_dispatcher()
    s.grammar_manager = GrammarManager(s)
    s.is_initializing = False
    return s


def _run_batch(s: Scheduler, batch: ScheduleBatch,
               specs: Dict[str, ReqSpec]) -> GenerationBatchResult:
    """run_batch without a forward (replacement 3)."""
    s.forward_ct += 1
    toks = []
    for req in batch.reqs:
        pos = len(req.output_ids)
        spec = specs[req.rid]
        if spec.stop_at is not None and pos == spec.stop_at:
            toks.append(EOS)
        else:
            toks.append(10 + zlib.crc32(f"{req.rid}:{pos}".encode()) % (VOCAB - 10))
    next_token_ids = torch.tensor(toks, dtype=torch.int64)
    batch.output_ids = next_token_ids
    return GenerationBatchResult(next_token_ids=next_token_ids)


def _generate_input(spec: ReqSpec) -> TokenizedGenerateReqInput:
    sp = SamplingParams(max_new_tokens=spec.max_new_tokens, temperature=0.0,
                        ignore_eos=spec.stop_at is None,
                        stop_token_ids=[EOS] if spec.stop_at is not None else None)
    sp.normalize(None)
    sp.verify(VOCAB)
    return TokenizedGenerateReqInput(
        input_text="", input_ids=list(spec.input_ids), mm_inputs=None, sampling_params=sp,
        return_logprob=False, logprob_start_len=-1, top_logprobs_num=0,
        token_ids_logprob=None, stream=False, priority=spec.priority, rid=spec.rid)


# ---------------------------------------------------------------------------------------------
# One cell
# ---------------------------------------------------------------------------------------------


class _LineCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.decode = self.prefill = 0

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Decode batch"):
            self.decode += 1
        elif msg.startswith("Prefill batch"):
            self.prefill += 1


class _ErrorTail(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines = (self.lines + [f"{record.name}: {record.getMessage()[:400]}"])[-5:]


def _reset_prometheus() -> None:
    """Replacement 6: a fresh registry for the next cell's collectors."""
    if "prometheus_client" in sys.modules:
        from prometheus_client import REGISTRY

        for collector in list(REGISTRY._collector_to_names):
            REGISTRY.unregister(collector)


def _end_check(s: Scheduler, cfg: Config) -> List[str]:
    problems = []
    tree = s.tree_cache
    if cfg.cache == "swa":
        locked = {"full": tree.full_protected_size(), "swa": tree.swa_protected_size()}
    elif cfg.cache == "mamba":
        locked = {"full": tree.full_protected_size(), "mamba": tree.mamba_protected_size()}
    else:
        locked = {"tokens": tree.protected_size()}
    for k, v in locked.items():
        if v != 0:
            problems.append(f"{k} protected size {v} after every request finished (lock held)")
    if cfg.cache == "hiradix":  # host copies: none held by no node, none left protected
        for what, n in (("host slots held by no tree node", hicache_cpu.host_slots_leaked(tree)),
                        ("tree nodes with a protected host copy",
                         hicache_cpu.host_protected_nodes(tree))):
            if n:
                problems.append(f"{n} {what} after every request finished")
    pool = s.req_to_token_pool
    if pool.available_size() != pool.size:
        problems.append(f"req_to_token_pool: {pool.available_size()} of {pool.size} slots free")
    if s.waiting_queue or not s.running_batch.is_empty() or s.chunked_req is not None:
        problems.append("requests left in the scheduler")
    return problems


class CheckFailed(Exception):
    pass


def _inject(s: Scheduler, what: str) -> None:
    """--inject: break the state on purpose before the final checks (shows they are live)."""
    if what == "leak":  # a KV slot (page) that no request or tree node holds
        alloc = s.token_to_kv_pool_allocator
        if s.is_hybrid_swa and s.page_size > 1:  # SWATokenToKVPoolAllocator.alloc is page-1 only
            alloc = alloc.full_attn_allocator
        if alloc.alloc(s.page_size) is None:
            raise RuntimeError("--inject leak: the allocator had no free page")
    elif what == "lock":  # a tree node whose lock is never released
        root = getattr(s.tree_cache, "root_node", None)
        if root is None:
            raise RuntimeError(f"--inject lock: {type(s.tree_cache).__name__} has no tree")
        node = next(iter(root.children.values()), None)
        if node is None:
            raise RuntimeError("--inject lock: the tree is empty")
        s.tree_cache.inc_lock_ref(node)
    elif what == "protect":  # a host copy whose protection is never released (HiCache)
        root = getattr(s.tree_cache, "root_node", None)
        stack = list(root.children.values()) if root is not None else []
        while stack and not getattr(stack[-1], "backuped", False):
            stack.extend(stack.pop().children.values())
        if not stack:
            raise RuntimeError("--inject protect: no node with a host copy")
        stack[-1].protect_host()
    else:
        raise ValueError(f"unknown --inject {what!r}")


def run_cell(cfg: Config, scenario: str, isolate: Tuple[str, ...] = (),
             inject: str = "") -> Dict[str, Any]:
    """One cell; ``isolate`` holds ISOLATIONS keys (``quiet``, ``defer``)."""
    quiet = "quiet" in isolate
    res: Dict[str, Any] = {"config": cfg.name, "scenario": scenario, "quiet": quiet,
                           "isolate": list(isolate),
                           "status": "ok",
                           "error": None, "steps": 0, "idle_checks": 0,
                           "end_check_passed": False, "fingerprint": [], "outputs": {},
                           "exercised": {}, "controls": [], "logged_errors": []}
    if cfg.name in SKIP:
        res.update(status="skip", skip_reason=SKIP[cfg.name])
        return res
    plan = PLANS[scenario](cfg)
    specs = {sp.rid: sp for sp in plan.requests}
    saved_env = {k: os.environ.get(k) for k in plan.env}
    os.environ.update(plan.env)
    counter, errors = _LineCounter(), _ErrorTail()
    stats_logger = logging.getLogger(STATS_LOGGER)
    stats_logger.addHandler(counter)
    logging.getLogger().addHandler(errors)
    phase, step = "bringup", 0
    evicted = {"calls": 0, "tokens": 0}
    reqs: Dict[str, Req] = {}
    s: Optional[Scheduler] = None
    try:
        _reset_prometheus()
        try:
            s = build_scheduler(cfg, plan, quiet=quiet, defer_geometry="defer" in isolate)
        except Exception as e:
            why, expected = SKIP_IF_BRINGUP_FAILS.get(cfg.cache, ("", ()))
            if any(m in str(e) for m in expected):
                res.update(status="skip", skip_reason=f"{why} [here: {type(e).__name__}: "
                                                      f"{str(e)[:200]}]")
                return res
            raise
        tree_evict = s.tree_cache.evict

        def evict(params: Any) -> Any:  # replacement 7 (observation only)
            out = tree_evict(params)
            evicted["calls"] += 1
            evicted["tokens"] += int(getattr(out, "num_tokens_evicted", 0) or 0)
            return out

        s.tree_cache.evict = evict
        waves = sorted({sp.wave for sp in plan.requests})
        wave_i, wave_start, idle_streak = 0, 0, 0
        pending = [sp for sp in plan.requests if sp.wave == waves[0]]
        extend_steps = decode_steps = chunked_steps = 0
        fp: List[Any] = []

        def busy() -> bool:
            return (bool(s.waiting_queue) or not s.running_batch.is_empty()
                    or s.chunked_req is not None or s._engine_paused)

        for step in range(MAX_STEPS):
            t = step - wave_start
            if not pending and not busy() and idle_streak >= 2 and wave_i + 1 < len(waves):
                wave_i += 1
                wave_start, t, idle_streak = step, 0, 0
                pending = [sp for sp in plan.requests if sp.wave == waves[wave_i]]
            recv: List[Any] = [_generate_input(sp) for sp in pending if sp.delay <= t]
            pending = [sp for sp in pending if sp.delay > t]
            if plan.control is not None:
                recv += plan.control(s, wave_i, t, res["controls"])
            phase = "step"
            s.process_input_requests(recv)
            for r in s.waiting_queue:
                reqs.setdefault(r.rid, r)
            if s._engine_paused:
                s.cancel_bubble_timer()
                fp.append(["paused"])
                continue
            batch = s.get_next_batch_to_run()
            s.cur_batch = batch
            if batch is not None:
                idle_streak = 0
                for r in batch.reqs:
                    reqs.setdefault(r.rid, r)
                if batch.forward_mode.is_extend():
                    extend_steps += 1
                    if s.chunked_req is not None:
                        chunked_steps += 1
                    fp.append(["extend", [[r.rid, int(n)] for r, n in
                                          zip(batch.reqs, batch.extend_lens)]])
                else:
                    decode_steps += 1
                    fp.append(["decode", [r.rid for r in batch.reqs]])
                result = _run_batch(s, batch, specs)
                s.process_batch_result(batch, result)
            else:
                fp.append(["idle"])
                idle_streak += 1
                phase = "idle_check"
                s.self_check_during_idle()
                res["idle_checks"] += 1
            s.last_batch = batch
            if not pending and not busy() and idle_streak >= 2 and wave_i + 1 >= len(waves):
                break
        else:
            raise CheckFailed(f"not finished after {MAX_STEPS} steps")
        step += 1
        if inject:
            phase = "inject"
            _inject(s, inject)
        phase = "idle_check"  # once more at the end, after every request finished
        s.self_check_during_idle()
        res["idle_checks"] += 1
        phase = "end_check"
        problems = _end_check(s, cfg)
        if problems:
            raise CheckFailed("; ".join(problems))
        res["end_check_passed"] = True
        res["fingerprint"] = fp
    except Exception as e:  # recorded, compared across trees by bench/matrix.py
        frames = traceback.extract_tb(e.__traceback__)[-8:]
        tail = [f"{f.filename}:{f.lineno} in {f.name}: {(f.line or '').strip()}" for f in frames]
        first_line = (str(e).strip().splitlines() or [""])[0]
        res["status"] = "error"
        res["error"] = {"type": type(e).__name__, "message": str(e)[:2000], "phase": phase,
                        "step": step,
                        "traceback_tail": tail + [f"{type(e).__name__}: {first_line}"]}
    finally:
        stats_logger.removeHandler(counter)
        logging.getLogger().removeHandler(errors)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    res["steps"] = step
    res["logged_errors"] = errors.lines
    sent = s.send_to_tokenizer.sent if s is not None else []
    aborted_in_queue = {rid for kind, rid in sent if kind == "AbortReq"}
    outputs: Dict[str, Dict[str, Any]] = {}
    for rid in sorted(specs):
        req = reqs.get(rid)
        if req is None:
            outputs[rid] = {"output_ids": [], "finish": "never-admitted"}
        else:
            reason: Optional[str] = (
                type(req.finished_reason).__name__ if req.finished_reason else None)
            if reason is None and rid in aborted_in_queue:
                reason = "aborted-in-queue"
            outputs[rid] = {"output_ids": list(req.output_ids), "finish": reason}
    res["outputs"] = outputs
    if res["status"] == "ok":
        assert s is not None
        res["exercised"] = {
            "extend_steps": extend_steps, "decode_steps": decode_steps,
            "chunked_steps": chunked_steps, "evict_calls": evicted["calls"],
            "evicted_tokens": evicted["tokens"],
            "retractions": sum(r.retraction_count for r in reqs.values()),
            "aborted": len([e for e in res["controls"] if e["kind"] == "abort" and e.get("rid")]),
            "decode_log_lines": counter.decode, "prefill_log_lines": counter.prefill,
            "tree_cache": type(s.tree_cache).__name__,
            "allocator": type(s.token_to_kv_pool_allocator).__name__,
            "kv_pool": type(s.token_to_kv_pool_allocator.get_kvcache()).__name__,
            "req_pool": type(s.req_to_token_pool).__name__,
            "pool_tokens": s.max_total_num_tokens,
        }
    return res


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell", action="append", default=[],
                   metavar="CONFIG:SCENARIO[:ISOLATION[+ISOLATION]]",
                   help="run this cell (repeatable; default: every configuration x scenario "
                        "of bench/matrix.py); isolations: "
                        + "; ".join(f"{k}: {v}" for k, v in ISOLATIONS.items()))
    p.add_argument("--out", required=True, help="write the JSON results here")
    p.add_argument("--inject", choices=["leak", "lock", "protect"], default="",
                   help="after the last step, before the final idle and end checks, leak a KV "
                        "page (leak) or lock a tree node without releasing it (lock), to show "
                        "that the checks catch it")
    p.add_argument("--verbose", action="store_true", help="keep SGLang's log lines")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    cells = args.cell or [f"{c.name}:{sc}" for c in matrix.CONFIGS for sc in matrix.SCENARIOS]
    todo = []
    for cell in cells:
        name, scenario, *mode = cell.split(":")
        isolate = tuple(mode[0].split("+")) if mode else ()
        if (name not in matrix.CONFIG_BY_NAME or scenario not in PLANS or len(mode) > 1
                or not set(isolate) <= set(ISOLATIONS)):
            raise SystemExit(f"matrix_driver: unknown cell {cell!r}")
        todo.append((matrix.CONFIG_BY_NAME[name], scenario, isolate))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR)
    logging.getLogger("sglang").setLevel(logging.INFO if args.verbose else logging.ERROR)
    stats_logger = logging.getLogger(STATS_LOGGER)
    stats_logger.setLevel(logging.INFO)  # the decode / prefill lines, counted per cell
    stats_logger.propagate = args.verbose
    os.environ["SGLANG_ENABLE_STRICT_MEM_CHECK_DURING_IDLE"] = "1"
    torch.set_num_threads(1)
    if importlib.util.find_spec("prometheus_client") is None:
        raise SystemExit("matrix_driver: prometheus_client is not installed (enable_metrics needs "
                         "it; ci/requirements-cpu.txt pins it: rebuild the venv with make venv)")
    set_prometheus_multiproc_dir()
    t0 = time.perf_counter()
    results = []
    for cfg, scenario, isolate in todo:
        t1 = time.perf_counter()
        res = run_cell(cfg, scenario, isolate, args.inject)
        res["wall_s"] = round(time.perf_counter() - t1, 3)
        results.append(res)
    import sglang

    meta = {"sglang_file": sglang.__file__, "wall_s": round(time.perf_counter() - t0, 3)}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
