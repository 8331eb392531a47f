"""Model-free driver for SGLang's real scheduler and KV-memory code on CPU.

Runs SGLang's own ``Scheduler`` methods (prefill admission, decode memory check,
retraction, batch filter/merge, radix caching, allocators) against a seeded synthetic
workload (bench/workloads.py); only the model forward and the process plumbing around the
scheduler are replaced. Time is modelled (bench/costmodel.py), never measured on a GPU.
Run with a SGLang source tree and ``ci/cpu`` on PYTHONPATH::

    PYTHONPATH=<tree>/python:ci/cpu python bench/sched_driver.py --help

One module per concern: this file is the event loop, the scheduler's construction and the
command line; bench/sched_shell.py the Scheduler object without its constructor and the
stand-ins for IPC and the model config; bench/kv_integrity.py the KV-content check;
bench/observers.py the counting wrappers; bench/hicache_cpu.py HiCache's CPU substitutions;
bench/costmodel.py the time model; bench/workloads.py the traces; bench/clairvoyant.py Belady's
rule.

What runs for real (SGLang code, unmodified)
--------------------------------------------
* ``Scheduler.get_next_batch_to_run`` -> ``get_new_batch_prefill`` ->
  ``_get_new_batch_prefill_raw`` (``SchedulePolicy.calc_priority``, ``PrefillAdder``,
  ``Req.init_next_round_input`` / radix ``match_prefix``, ``ScheduleBatch.init_new``,
  ``ScheduleBatch.prepare_for_extend`` -> ``alloc_for_extend``), ``stash_chunked_request``,
  ``ScheduleBatch.filter_batch`` / ``merge_batch``, ``Scheduler.update_running_batch``
  (``check_decode_mem``, ``retract_decode``, ``prepare_for_decode``).
* ``Scheduler.process_batch_result`` -> ``process_batch_result_prefill`` /
  ``process_batch_result_decode`` (``Req.check_finished`` incl. stop tokens,
  ``release_kv_cache`` -> ``RadixCache.cache_finished_req``, ``RadixCache.cache_unfinished_req``).
* ``Scheduler._add_request_to_queue`` and ``init_req_max_new_tokens`` for arrivals;
  ``init_metrics``, ``init_running_status``, ``init_chunked_prefill``,
  ``init_diffusion_llm``, ``init_schedule_policy``,
  ``init_deterministic_inference_config`` to set the scheduler's state.
* ``ServerArgs`` (with its ``__post_init__``), including any ``--server-arg KEY=VALUE``.
* ``RadixCache``, ``ReqToTokenPool``, ``MLATokenToKVPool`` (tiny dims: 1 layer,
  kv_lora_rank 1, rope dim 1) and ``TokenToKVPoolAllocator`` (page 1) /
  ``PagedTokenToKVPoolAllocator`` (page > 1), built with the arguments
  ``ModelRunner._init_pools`` uses.

Replacements and stubs (each is the smallest piece that needs a model, a GPU, or IPC)
------------------------------------------------------------------------------------
1. ``Scheduler.__init__`` is not run (``object.__new__``): it loads a model, starts a
   TP worker, opens ZMQ sockets and NCCL/gloo groups. ``scheduler_shell`` does
   ``object.__new__`` and the constructor's "Parse args" block (single rank, non-overlap;
   bench/matrix_driver.py reuses it), and ``_build_scheduler`` sets the
   attributes its ``init_model_config`` / ``init_ipc_channels`` / ``init_model_worker``
   / ``init_cache_with_memory_pool`` / ``init_disaggregation`` / ``init_overlap`` /
   ``maybe_init_ngram_embedding`` would set, and calls the other init_* methods for real.
   ``max_total_num_tokens`` (the pool) comes from --pool-tokens / --pressure /
   --deployment instead of a GPU memory profile. ``CacheInitParams`` gets what
   ``init_cache_with_memory_pool`` passes a RadixCache: page size, chunked prefill size,
   and every ``ServerArgs.radix_<name>`` that CacheInitParams has a ``<name>`` field for
   (eviction_policy, and any other a variant adds). The capacity is rounded down to whole
   pages as ModelRunner rounds it.
2. ``model_config``: a namespace with the few fields the scheduling path reads
   (vocab_size, context_len, is_multimodal, is_encoder_decoder, is_matryoshka, ...).
3. ``Scheduler.run_batch`` -> ``_synthetic_run_batch``: no ``get_model_worker_batch``
   and no forward; bumps ``forward_ct``, makes one deterministic next token per request
   (``workloads.synthetic_token``; the stop token at a request's target length when its
   max_new_tokens is larger) and sets ``batch.output_ids`` like the non-overlap path.
   KV content (``KVIntegrity``): the MLA pool's latent is 4 bf16 values, one 64-bit word
   per slot; the forward writes into each slot it computes a hash of the request's tokens up
   to that position and, before every extend and decode, checks that every slot the request
   reads holds the hash its own tokens imply. A mismatch (a reused prefix served from the
   wrong slots, a slot freed while still in use and overwritten, a wrong host load-back)
   stops the run with KVIntegrityError. kv_tokens_checked counts the slots read.
4. ``stream_output``, ``report_prefill_stats``, ``report_decode_stats``,
   ``log_batch_result_stats``: no-ops (detokenizer IPC and metrics/log lines only).
5. ``send_to_tokenizer`` / ``send_to_detokenizer``: a sink that counts sends
   (only aborts reach it here).
6. ``grammar_manager``: a stub with no waiting grammars (the real one needs a
   distributed group; the workload has no grammars).
7. Request intake: ``Req`` objects are built as in the non-session branch of
   ``handle_generate_request`` (max_new_tokens, ignore_eos unless the workload ends
   requests with a stop token, logprob_start_len -1) instead of receiving
   ``TokenizedGenerateReqInput`` over ZMQ; multi-turn follow-ups are built from the
   finished request's ``output_ids``.
8. The event loop is ``event_loop_normal`` (non-overlap) rewritten as a bounded
   loop: arrivals by modelled time instead of ``recv_requests``. As in the real loop, a step
   without a batch calls SGLang's ``self_check_during_idle`` (``check_memory`` and
   ``check_tree_cache`` with SGLang's default strict idle check, which raises on a leaked
   KV or request slot, and the reset of ``new_token_ratio`` to its initial value), and so
   does the wait for the next arrival when nothing is queued or running (the real loop spins
   through idle steps there). The overlap loop (``event_loop_overlap``, SGLang's default)
   is not driven. It makes the same scheduling calls, but builds step t+1's batch before
   processing step t's result, so a request that finishes at step t releases its KV (and
   inserts it into the tree) one step later, and each running request holds one more decode
   slot. Per step that is at most the finishing requests' KV plus one slot per running
   request held a step longer: pool pressure one step later than here, not a different
   eviction rule (the series changes only how much eviction frees).
9. Observation only (results unchanged): ``tree_cache.evict``, ``tree_cache.match_prefix``,
   ``tree_cache.cache_finished_req``, the allocator's ``alloc`` / ``alloc_extend`` /
   ``alloc_decode`` and ``ScheduleBatch.retract_decode`` are wrapped to count tokens
   asked/evicted/needed, page-rounding losses and retraction events.
10. ``--eviction clairvoyant`` only: ``RadixCache.eviction_strategy`` is Belady's rule, which may split a leaf (bench/clairvoyant.py).
   ``--eviction hint``: the strategy is "continued conversations last", read from the trace, and
   ``cache_finished_req`` is wrapped to mark the finished request's path
   (clairvoyant.ContinuationHintStrategy); with ``--hint-as-priority`` nothing is replaced:
   each request's ``priority`` is its hint, for SGLang's own ``priority`` eviction policy.
11. ``--hicache POLICY`` only (enable_hierarchical_cache, hicache_write_policy=POLICY,
   hicache_ratio=--hicache-ratio; other hicache_* through --server-arg):
   ``Scheduler.init_cache_with_memory_pool`` itself builds ``HiRadixCache`` (with its
   ``MLATokenToKVPoolHost`` and ``HiCacheController``) from a ``TpModelWorker``
   (``object.__new__``) whose ``get_memory_pool`` returns the pools above, after
   bench/hicache_cpu.py's substitutions (no cudaHostRegister; kvcacheio copies as torch index
   copies of the same slots; CUDA streams/events on a modelled clock; one gloo rank). Timing
   (modelled): a load-back overlaps the step's forward layer by layer, a write-through runs on
   its own stream (its ack waits for it), a wait on an event (write-back eviction) is added to
   the step.

Metrics (JSON on stdout)
------------------------
token_hit_rate: radix-cached prefix tokens / input tokens (origin + output so far) at every
admission, re-admissions after retraction included; token_hit_rate_first_admission:
SGLang's own ``req.cached_tokens`` / input tokens. prefill_tokens_computed: extend tokens
over all extend batches; reprefilled_tokens: the part of them for retracted requests.
retracted_kv_tokens: KV (input + output so far) the retracted requests held when retracted;
readmitted_cached_tokens: of that, the prefix found in the radix cache at re-admission;
retraction_wait_mean_s: retraction to re-admission. stall_p99_s / stall_max_s: per request,
the longest modelled wait between two of its output tokens (a retracted request stalls until
it is re-admitted and re-prefilled); p99 and max over requests.
prefill_flops_*: costmodel.Geometry.prefill_flops over what was computed, and over every
request's whole prompt once (no cache); saved = no-cache - computed.
evict_*: calls to ``RadixCache.evict``, tokens asked, tokens freed. tokens_needed: for each
eviction, the part of the allocation that followed it which the free pool at the eviction
could not cover; over_evicted_tokens = evicted - needed. page_tail_lost_at_insert: tokens
of a finished request's last, partial page, which ``cache_finished_req`` frees instead of
inserting in the tree;
page_tail_lost_at_match: tokens past a page-aligned match that agree with a cached child's
key (a token-level cache would have reused them). mean_idle_free_*:
``allocator.available_size()`` sampled after every step; pool_use_p50/p99_pct from the same
samples. Modelled time (costmodel): ttft_* = first token time - arrival (queue wait +
prefill), output_tokens_per_s = generated tokens / modelled makespan. sched_cpu_ms_per_step:
process CPU time of the loop body per step. The final step (which finds nothing to do) is
counted in ``steps``. hicache (``--hicache`` only, else null): host_written_tokens /
host_loaded_tokens (device -> host backups, host -> device load-backs), host_pool_tokens /
host_pool_peak_tokens (_gb: at the modelled geometry), write/load_stream_busy_s, blocked_s
(scheduler waits on copies, in the makespan), load_not_overlapped_s (load-back the forward could
not hide, in the makespan), drain_after_last_token_s (copies still running after the last
token: not in the makespan), end_host_slots_leaked (host slots held by no tree node) and
end_ongoing_write_through / _load_back after the final idle check.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import logging
import math
import os
import resource
import sys
import time
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import sglang_cpu  # noqa: F401  (must precede every sglang import)
import torch

from sglang.srt.disaggregation.utils import DisaggregationMode
from sglang.srt.managers.schedule_batch import Req, ScheduleBatch
from sglang.srt.managers.scheduler import Scheduler
from sglang.srt.managers.utils import GenerationBatchResult
from sglang.srt.mem_cache.allocator import (
    PagedTokenToKVPoolAllocator,
    TokenToKVPoolAllocator,
)
from sglang.srt.mem_cache.cache_init_params import CacheInitParams
from sglang.srt.mem_cache.memory_pool import MLATokenToKVPool, ReqToTokenPool
from sglang.srt.mem_cache.radix_cache import RadixCache
from sglang.srt.sampling.sampling_params import SamplingParams
from sglang.srt.server_args import ServerArgs, set_global_server_args_for_scheduler
from sglang.srt.utils import require_mlp_sync

import clairvoyant
import costmodel
import hicache_cpu
import workloads
from kv_integrity import KVIntegrity
from observers import Counters, observe
from sched_shell import NoGrammar, Sink, model_config_stub, noop, scheduler_shell
from workloads import EOS_ID, VOCAB_SIZE, Request, Trace

def _build_scheduler(
    args: argparse.Namespace, context_len: int, pool_tokens: int,
    targets: Dict[str, Tuple[int, int]],
) -> Scheduler:
    server_args = ServerArgs(
        model_path="dummy",
        device="cpu",
        attention_backend="torch_native",
        page_size=args.page_size,
        max_running_requests=args.max_running_requests,
        chunked_prefill_size=args.chunked_prefill_size,
        max_prefill_tokens=args.max_prefill_tokens,
        disable_overlap_schedule=True,
        skip_tokenizer_init=True,
        schedule_policy=args.schedule_policy,
        random_seed=args.seed,
        **_hicache_server_kwargs(args),  # --hicache (HiCache block)
        **args.server_kwargs,
    )
    set_global_server_args_for_scheduler(server_args)

    s = scheduler_shell(server_args)

    # -- init_model_config (replacement 2) --
    s.model_config = model_config_stub(context_len)
    s.is_generation = True
    s.init_metrics(0, 0, None)

    # -- init_ipc_channels (replacement 5) / init_tokenizer --
    s.send_to_tokenizer = Sink()
    s.send_to_detokenizer = Sink()
    s.tokenizer = None
    s._think_end_id = None

    # -- init_model_worker: the values get_worker_info() would return --
    # ModelRunner rounds the KV capacity down to whole pages (model_runner_kv_cache_mixin.py:826).
    pool_tokens = pool_tokens // server_args.page_size * server_args.page_size
    s.max_total_num_tokens = pool_tokens
    s.max_prefill_tokens = server_args.max_prefill_tokens
    s.max_running_requests = args.max_running_requests
    s.max_queued_requests = server_args.max_queued_requests
    s.max_req_len = context_len - 1
    s.max_req_input_len = s.max_req_len - 5
    s.random_seed = args.seed
    s.device = "cpu"
    s.forward_stream = None
    if server_args.pp_max_micro_batch_size is None:
        server_args.pp_max_micro_batch_size = max(s.max_running_requests // s.pp_size, 1)
    s.require_mlp_sync = require_mlp_sync(server_args)

    # -- init_cache_with_memory_pool: pools as ModelRunner._init_pools builds them --
    s.is_hybrid_swa = False
    s.is_hybrid_ssm = False
    s.sliding_window_size = None
    s.req_to_token_pool = ReqToTokenPool(
        size=s.max_running_requests,
        max_context_len=context_len + 4,
        device="cpu",
        enable_memory_saver=False,
    )
    kv_pool = MLATokenToKVPool(
        pool_tokens,
        page_size=s.page_size,
        dtype=torch.bfloat16,
        kv_lora_rank=3,  # 3 + 1 bf16 values: one 64-bit word per slot (KVIntegrity)
        qk_rope_head_dim=1,
        layer_num=1,
        device="cpu",
        enable_memory_saver=False,
    )
    alloc_cls = TokenToKVPoolAllocator if s.page_size == 1 else PagedTokenToKVPoolAllocator
    alloc_kwargs = {} if s.page_size == 1 else {"page_size": s.page_size}
    s.token_to_kv_pool_allocator = alloc_cls(
        pool_tokens,
        dtype=torch.bfloat16,
        device="cpu",
        kvcache=kv_pool,
        need_sort=False,
        **alloc_kwargs,
    )
    s.disable_radix_cache = False
    if server_args.enable_hierarchical_cache:  # -- HiCache block: the pin builds the cache --
        _init_hicache(s, args)
    else:
        _init_radix_cache(s, server_args)
    s.decode_offload_manager = None

    s.init_running_status()
    s.init_chunked_prefill()
    s.init_diffusion_llm()
    s.init_schedule_policy()
    # -- init_disaggregation / init_overlap / ngram (non-disaggregated, no overlap) --
    s.disaggregation_mode = DisaggregationMode.NULL
    s.future_map = None
    s.use_ngram_embedding = False
    s.init_deterministic_inference_config()
    s.grammar_manager = NoGrammar()  # replacement 6
    s.idle_sleeper = None  # no --sleep-on-idle

    # -- replacements 3 and 4 --
    s.bench_kv_integrity = integrity = KVIntegrity(s, targets)
    s.run_batch = lambda batch: _synthetic_run_batch(s, batch, targets, integrity)
    s.stream_output = noop
    s.report_prefill_stats = noop
    s.report_decode_stats = noop
    s.log_batch_result_stats = noop
    s.is_initializing = False
    return s


def _init_radix_cache(s: Scheduler, server_args: ServerArgs) -> None:
    cache_kwargs: Dict[str, Any] = dict(
        disable=False,
        req_to_token_pool=s.req_to_token_pool,
        token_to_kv_pool_allocator=s.token_to_kv_pool_allocator,
        page_size=s.page_size,
        eviction_policy=server_args.radix_eviction_policy,
        chunked_prefill_size=server_args.chunked_prefill_size,
    )
    # Any other radix option the tree has (CacheInitParams.<name> <- ServerArgs.radix_<name>,
    # as eviction_policy above), so --server-arg reaches the cache in every variant.
    for f in dataclasses.fields(CacheInitParams):
        if f.name not in cache_kwargs and hasattr(server_args, f"radix_{f.name}"):
            cache_kwargs[f.name] = getattr(server_args, f"radix_{f.name}")
    s.tree_cache = RadixCache(CacheInitParams(**cache_kwargs))


# ---- HiCache block (--hicache; substitutions in bench/hicache_cpu.py) -----------------------
def _hicache_server_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    if getattr(args, "hicache", "off") == "off":
        return {}
    return dict(enable_hierarchical_cache=True, hicache_write_policy=args.hicache,
                hicache_ratio=args.hicache_ratio)


def _init_hicache(s: Scheduler, args: argparse.Namespace) -> None:
    """Scheduler.init_cache_with_memory_pool itself builds the HiRadixCache, from a TpModelWorker
    (object.__new__) whose get_memory_pool returns the pools above."""
    from sglang.srt.managers.tp_worker import TpModelWorker

    s.bench_hicache = hc = hicache_cpu.Clock(args.hicache_copy_s_per_token)
    hicache_cpu.install(hc)
    s.tp_cpu_group = s.attn_tp_cpu_group = hicache_cpu.init_single_rank(s.server_args)
    w: TpModelWorker = object.__new__(TpModelWorker)
    w.hicache_layer_transfer_counter = None
    w._model_runner = SimpleNamespace(
        is_hybrid_swa=False, hybrid_gdn_config=None, mamba2_config=None, req_to_token_pool=s.req_to_token_pool,
        token_to_kv_pool_allocator=s.token_to_kv_pool_allocator)
    s.tp_worker = w
    s.enable_metrics = False
    s.init_cache_with_memory_pool()
# ---- end HiCache block ------------------------------------------------------------------------


def _synthetic_run_batch(
    s: Scheduler, batch: ScheduleBatch, targets: Dict[str, Tuple[int, int]],
    integrity: KVIntegrity,
) -> GenerationBatchResult:
    """run_batch without get_model_worker_batch and forward (replacement 3)."""
    s.forward_ct += 1
    integrity.forward(batch)
    toks = []
    for r in batch.reqs:
        pos = len(r.output_ids)
        out_len, max_new = targets[r.rid]
        if pos == out_len - 1 and out_len < max_new:
            toks.append(EOS_ID)
        else:
            toks.append(workloads.synthetic_token(r.rid, pos))
    next_token_ids = torch.tensor(toks, dtype=torch.int64)
    batch.output_ids = next_token_ids
    return GenerationBatchResult(next_token_ids=next_token_ids)


def _percentile(sorted_vals: List[float], q: float) -> float:
    if not sorted_vals:
        return 0.0
    k = min(len(sorted_vals) - 1, max(0, int(round(q / 100 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def _make_req(w: Request) -> Req:
    stop = w.max_new_tokens > w.output_len
    sp = SamplingParams(max_new_tokens=w.max_new_tokens, ignore_eos=not stop, temperature=0.0,
                        stop_token_ids=[EOS_ID] if stop else None)
    sp.normalize(None)
    req = Req(w.rid, "", list(w.input_ids), sp, vocab_size=VOCAB_SIZE)
    req.tokenizer = None
    req.logprob_start_len = -1
    return req


def _hicache_result(s: Scheduler, args: argparse.Namespace, hc: Any, now: float,
                    busy: Any, geom: costmodel.Geometry, hc_pool_peak: int,
                    hc_overlap_extra: float) -> Dict[str, Any]:
    """HiCache's end of run: the idle loop acks the last copies once they finish; then what was
    copied, how long the copy streams were busy, and what is left on the host."""
    tc = s.tree_cache
    cc = tc.cache_controller
    hc.now = max(now, cc.write_stream.busy_until, cc.load_stream.busy_until)
    drain_s = hc.now - now
    if not busy():  # (not after --max-steps)
        assert s.get_next_batch_to_run() is None
        s.self_check_during_idle()
    host = tc.token_to_kv_pool_host
    return {
        "write_policy": s.server_args.hicache_write_policy,
        "io_backend": s.server_args.hicache_io_backend,
        "mem_layout": s.server_args.hicache_mem_layout,
        "ratio": s.server_args.hicache_ratio,
        "host_pool_tokens": host.size,
        "host_written_tokens": hc.d2h_tokens,
        "host_loaded_tokens": hc.h2d_tokens,
        "host_pool_peak_tokens": hc_pool_peak,
        "host_pool_peak_gb": hc_pool_peak * geom.kv_bytes_per_token / 1e9,
        "write_stream_busy_s": hc.d2h_busy_s,
        "load_stream_busy_s": hc.h2d_busy_s,
        "blocked_s": hc.blocked_s,
        "load_not_overlapped_s": hc_overlap_extra,
        "drain_after_last_token_s": drain_s,
        "end_host_slots_leaked": hicache_cpu.host_slots_leaked(tc),
        "end_host_protected_nodes": hicache_cpu.host_protected_nodes(tc),
        "end_ongoing_write_through": len(tc.ongoing_write_through),
        "end_ongoing_load_back": len(tc.ongoing_load_back),
    }


def run(args: argparse.Namespace, trace: Trace, pool_tokens: int,
        geom: costmodel.Geometry, dep: costmodel.Deployment) -> Dict[str, Any]:
    known = trace.all_requests or trace.requests
    context_len = max(len(r.input_ids) + r.max_new_tokens for r in known) + 64
    targets: Dict[str, Tuple[int, int]] = {}  # rid -> (output_len, max_new_tokens)
    args.hicache_copy_s_per_token = dep.step_params(geom)["host_copy_s_per_token"]  # HiCache
    s = _build_scheduler(args, context_len, pool_tokens, targets)
    c = Counters()
    observe(s, c)
    if args.eviction == "clairvoyant":
        clairvoyant.install(s, trace)
    hint = None
    if args.hint_as_priority and (args.eviction != "hint"
                                  or getattr(s.tree_cache, "eviction_policy", "") != "priority"):
        raise SystemExit("sched_driver: --hint-as-priority needs --eviction hint and "
                         "--server-arg radix_eviction_policy=priority")
    if args.eviction == "hint":
        hint = clairvoyant.hint_for(trace, args.hint_tpr, args.hint_fpr)
        if not args.hint_as_priority:
            hint.attach(s.tree_cache)
    allocator = s.token_to_kv_pool_allocator
    pool = allocator.available_size()  # usable capacity (whole pages for page_size > 1)
    step_model = dep.step_model(geom)  # per-step time: extend floor and MLA paths (costmodel)
    floor_steps = 0

    heap: List[Tuple[float, int, Request]] = [(r.arrival_s, i, r) for i, r in enumerate(trace.requests)]
    heapq.heapify(heap)
    seq = len(heap)
    by_rid: Dict[str, Request] = {}
    all_reqs: List[Req] = []
    arrival: Dict[str, float] = {}
    first_token: Dict[str, float] = {}
    finished_at: Dict[str, float] = {}
    now = prefill_time = decode_time = 0.0
    hc: Optional[hicache_cpu.Clock] = getattr(s, "bench_hicache", None)  # HiCache block
    hc_overlap_extra = 0.0  # load-back time the forward could not hide
    hc_pool_peak = 0  # host pool slots in use, peak
    step = 0
    in_prefill: set = set()  # rids with a chunked prefill under way
    seen: set = set()  # rids admitted at least once
    admitted = admitted_input = admitted_cached = tail_lost_match = 0
    prefill_tokens = reprefill_tokens = 0
    readmit_cached = 0  # prefix found in the cache when a retracted request is re-admitted
    retracted_at: Dict[str, float] = {}
    waits: List[float] = []  # retraction -> re-admission, modelled seconds
    last_token: Dict[str, float] = {}
    worst_gap: Dict[str, float] = {}  # longest wait between two output tokens, per request
    flops_computed = flops_nocache = 0.0
    extend_steps = decode_steps = idle_steps = idle_run = idle_checks = 0
    free_samples: List[int] = []
    evictable_samples: List[int] = []
    running_samples: List[int] = []
    sched_cpu = get_batch_cpu = process_cpu = 0.0
    wall0 = time.perf_counter()
    cpu0 = time.process_time()

    def busy() -> bool:
        # An extend batch that just ran joins running_batch in the next get_next_batch_to_run.
        just_prefilled = s.last_batch is not None and s.last_batch.forward_mode.is_extend()
        return (bool(s.waiting_queue) or not s.running_batch.is_empty()
                or s.chunked_req is not None or just_prefilled)

    while True:
        # -- recv_requests / process_input_requests (replacement 7), by modelled time --
        if heap and heap[0][0] > now and not busy():
            # Idle until the next arrival: the real loop finds no batch and self-checks.
            s.self_check_during_idle()
            idle_checks += 1
            now = heap[0][0]
        while heap and heap[0][0] <= now:
            _, _, w = heapq.heappop(heap)
            req = _make_req(w)
            if hint is not None and args.hint_as_priority:
                req.priority = hint.hint(w.rid)
            s.init_req_max_new_tokens(req)
            targets[w.rid] = (w.output_len, w.max_new_tokens)
            by_rid[w.rid] = w
            arrival[w.rid] = w.arrival_s
            s._add_request_to_queue(req)
            all_reqs.append(req)

        t0 = time.process_time()
        if hc is not None:  # HiCache: the copy streams' clock starts the step at `now`
            hc.now, hc.step_load_s = now, 0.0
        batch = s.get_next_batch_to_run()
        s.cur_batch = batch
        t1 = time.process_time()
        get_batch_cpu += t1 - t0
        if batch is not None:
            idle_run = 0
            if batch.forward_mode.is_extend():
                extend_steps += 1
                step_flops = 0.0
                for req, pre, ext in zip(batch.reqs, batch.prefix_lens, batch.extend_lens):
                    prefill_tokens += ext
                    step_flops += geom.prefill_flops(pre, ext)
                    if req.retraction_count > 0:
                        reprefill_tokens += ext
                    if req.rid not in in_prefill:  # admission (first chunk)
                        admitted += 1
                        admitted_input += len(req.origin_input_ids) + len(req.output_ids)
                        admitted_cached += pre
                        tail_lost_match += c.match_tail.pop(req.rid, 0)
                        if req.rid in retracted_at:
                            readmit_cached += pre
                            waits.append(now - retracted_at.pop(req.rid))
                        if req.rid not in seen:
                            seen.add(req.rid)
                            flops_nocache += geom.prefill_flops(0, len(req.origin_input_ids))
                    if req is s.chunked_req:
                        in_prefill.add(req.rid)
                    else:
                        in_prefill.discard(req.rid)
                flops_computed += step_flops
                cost = step_model.extend(list(zip(batch.prefix_lens, batch.extend_lens)))
                dt = cost.seconds
                floor_steps += cost.floor_s > cost.compute_s
                prefill_time += dt
            else:
                decode_steps += 1
                kv = int(batch.seq_lens_cpu.sum()) if batch.seq_lens_cpu is not None else 0
                dt = step_model.decode_s(batch.batch_size(), kv)
                decode_time += dt
            if hc is not None:  # HiCache: waits while building the batch, then the forward,
                # overlapped layer by layer with this step's load-back (L over the model's layers)
                n, load = geom.layers, hc.step_load_s
                fwd = max(dt + load / n, load + dt / n) if load > 0 else dt
                hc_overlap_extra += fwd - dt
                hc.now += fwd
            result = s.run_batch(batch)
            t2 = time.process_time()
            s.process_batch_result(batch, result)
            process_cpu += time.process_time() - t2
            if hc is not None:  # process_batch_result's inserts start writes (and may wait)
                dt = hc.now - now
            now += dt
            for req in c.retracted:
                retracted_at[req.rid] = now
            c.retracted.clear()
            for req in batch.reqs:
                rid = req.rid
                if rid not in first_token and req.output_ids:
                    first_token[rid] = now
                if req.output_ids and not (batch.forward_mode.is_extend() and req is s.chunked_req):
                    if rid in last_token:
                        worst_gap[rid] = max(worst_gap.get(rid, 0.0), now - last_token[rid])
                    last_token[rid] = now
                if rid not in finished_at and req.finished():
                    finished_at[rid] = now
                    for nxt in trace.follow_up(by_rid[rid], list(req.output_ids), now):
                        heapq.heappush(heap, (nxt.arrival_s, seq, nxt))
                        seq += 1
        else:
            # event_loop_normal: no batch -> self_check_during_idle (leak checks, ratio reset)
            s.self_check_during_idle()
            idle_checks += 1
            if hc is not None:
                # The real loop spins while HiCache's copies run: time passes until the next
                # one finishes (its ack may unlock what the scheduler is waiting for).
                cc = s.tree_cache.cache_controller
                pending = [e.t for _, e, _ in cc.ack_write_queue + cc.ack_load_queue
                           if e.t > hc.now]
                now = max(now, hc.now, min(pending, default=0.0))
            idle_steps += 1
            idle_run += 1
            if os.environ.get("SCHED_DRIVER_DEBUG"):
                print(f"idle step {step}: waiting={len(s.waiting_queue)} running="
                      f"{s.running_batch.batch_size()} free={allocator.available_size()}"
                      f" evictable={s.tree_cache.evictable_size()}", file=sys.stderr)
            if idle_run > 1000:
                raise SystemExit(f"sched_driver: no progress for {idle_run} steps at step {step} "
                                 f"(waiting={len(s.waiting_queue)}, pool={pool})")
        s.last_batch = batch
        sched_cpu += time.process_time() - t0
        free_samples.append(allocator.available_size())
        evictable_samples.append(s.tree_cache.evictable_size())
        running_samples.append(s.running_batch.batch_size() if s.running_batch else 0)
        if hc is not None:
            host = s.tree_cache.token_to_kv_pool_host
            hc_pool_peak = max(hc_pool_peak, host.size - host.available_size())
        step += 1

        if batch is None and not heap and not busy():
            break
        if args.max_steps and step >= args.max_steps:
            break

    hicache = (None if hc is None else
               _hicache_result(s, args, hc, now, busy, geom, hc_pool_peak, hc_overlap_extra))
    wall = time.perf_counter() - wall0
    finished = [r for r in all_reqs if r.finished()]
    input_tokens = sum(len(r.origin_input_ids) for r in all_reqs)
    output_tokens = sum(len(r.output_ids) for r in finished)
    used_pct = sorted(100.0 * (pool - f) / pool for f in free_samples)
    mean_free = sum(free_samples) / max(1, len(free_samples))
    ttft = sorted(first_token[r] - arrival[r] for r in first_token)
    return {
        "sglang_file": sys.modules["sglang"].__file__,
        "config": {
            "workload": trace.name,
            "workload_params": trace.params,
            "model": geom.name,
            "deployment": dep.name,
            "page_size": args.page_size,
            "max_running_requests": args.max_running_requests,
            "chunked_prefill_size": args.chunked_prefill_size,
            "request_rate": args.request_rate,
            "server_args": args.server_kwargs,
            "env": _kv_pairs(args.env, "--env"),
            "pool_tokens": pool,
            "num_requests": len(all_reqs),
            "input_tokens": input_tokens,
        },
        "finished_requests": len(finished),
        "aborted_requests": sum(1 for r in finished if r.finished_reason is not None
                                and type(r.finished_reason).__name__ == "FINISH_ABORT"),
        "output_tokens": output_tokens,
        "token_hit_rate": admitted_cached / max(1, admitted_input),
        "token_hit_rate_first_admission": sum(r.cached_tokens for r in all_reqs) / max(1, input_tokens),
        "admissions": admitted,
        "prefill_tokens_computed": prefill_tokens,
        "prefill_flops_computed": flops_computed,
        "prefill_flops_nocache": flops_nocache,
        "prefill_flops_saved": flops_nocache - flops_computed,
        "prefill_flops_saved_frac": (flops_nocache - flops_computed) / max(1.0, flops_nocache),
        "evict_calls": c.evict_calls,
        "evict_tokens_requested": c.evict_requested,
        "tokens_evicted": c.evicted,
        "tokens_needed": c.needed,
        "over_evicted_tokens": c.evicted - c.needed,
        "alloc_failures": c.alloc_failures,
        "page_tail_lost_at_insert": c.tail_lost_insert,
        "page_tail_lost_at_match": tail_lost_match,
        "retract_events": c.retract_events,
        "retracted_requests": sum(r.retraction_count for r in all_reqs),
        "retracted_distinct_requests": sum(1 for r in all_reqs if r.retraction_count > 0),
        "reprefilled_tokens": reprefill_tokens,
        "retracted_kv_tokens": c.retracted_kv,
        "readmitted_cached_tokens": readmit_cached,
        "retraction_wait_mean_s": sum(waits) / max(1, len(waits)),
        "stall_p99_s": _percentile(sorted(worst_gap.values()), 99),
        "stall_max_s": max(worst_gap.values(), default=0.0),
        "mean_idle_free_tokens": mean_free,
        "mean_idle_free_pct": 100.0 * mean_free / pool,
        "mean_running_requests": sum(running_samples) / max(1, len(running_samples)),
        "mean_evictable_cached_tokens": sum(evictable_samples) / max(1, len(evictable_samples)),
        "pool_use_p50_pct": _percentile(used_pct, 50),
        "pool_use_p99_pct": _percentile(used_pct, 99),
        "kv_bytes_per_token": geom.kv_bytes_per_token,
        "pool_gb": pool * geom.kv_bytes_per_token / 1e9,
        "modelled_makespan_s": now,
        "modelled_prefill_s": prefill_time,
        "modelled_decode_s": decode_time,
        "ttft_mean_s": sum(ttft) / max(1, len(ttft)),
        "ttft_p50_s": _percentile(ttft, 50),
        "ttft_p99_s": _percentile(ttft, 99),
        "output_tokens_per_s": output_tokens / now if now else 0.0,
        "steps": step,
        "extend_steps": extend_steps,
        "extend_floor_steps": floor_steps,
        "step_model": "costmodel.StepModel (extend floor, MLA paths)",
        "decode_steps": decode_steps,
        "idle_steps": idle_steps,
        "idle_checks": idle_checks,
        "kv_tokens_checked": s.bench_kv_integrity.checked_tokens,
        "wall_s": wall,
        "process_cpu_s": time.process_time() - cpu0,
        "sched_cpu_ms_per_step": 1000.0 * sched_cpu / max(1, step),
        "get_next_batch_cpu_ms_per_step": 1000.0 * get_batch_cpu / max(1, step),
        "process_result_cpu_ms_per_step": 1000.0 * process_cpu / max(1, step),
        # All requests done: every slot must be free or held by the radix tree (no leak).
        "end_free_plus_evictable_eq_pool": allocator.available_size()
        + s.tree_cache.evictable_size() == pool and s.tree_cache.protected_size() == 0,
        "end_req_slots_free": s.req_to_token_pool.available_size() == s.req_to_token_pool.size,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "hicache": hicache,
    }


def _kv_pairs(items: List[str], flag: str) -> Dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"{flag} {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out


def _typed(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise SystemExit(f"expected a boolean, got {value!r}")
        return value.lower() in ("1", "true", "yes")
    for t in ((int, float) if like is None else (type(like),)):
        try:
            return t(value)
        except (TypeError, ValueError):
            continue
    return value


def server_kwargs(items: List[str]) -> Dict[str, Any]:
    """--server-arg KEY=VALUE -> ServerArgs keyword arguments, typed like the field's default;
    a key this SGLang's ServerArgs does not have is an error naming the tree."""
    fields = {f.name: f for f in dataclasses.fields(ServerArgs)}
    out = {}
    for k, v in _kv_pairs(items, "--server-arg").items():
        if k not in fields:
            raise SystemExit(f"--server-arg {k}: ServerArgs in {sys.modules['sglang'].__file__} "
                             f"has no attribute {k!r} (this variant lacks it)")
        f = fields[k]
        default = f.default if f.default is not dataclasses.MISSING else None
        out[k] = _typed(v, default)
    return out


def pool_size(args: argparse.Namespace, trace: Trace, unique: int, geom: costmodel.Geometry,
              dep: costmodel.Deployment) -> int:
    if args.oracle:  # nothing evicted: every unique token + a page per request + running tails
        known = trace.all_requests or trace.requests
        longest = max(len(r.input_ids) + r.max_new_tokens for r in known)
        return unique + (len(known) + args.max_running_requests) * args.page_size + longest
    if args.pressure:
        return int(math.ceil(args.pressure * unique))
    if args.pool_tokens:
        return args.pool_tokens
    return dep.pool_tokens(geom)


def parser() -> argparse.ArgumentParser:
    wl_help = "; ".join(f"{k}: " + ", ".join(f"{p}={workloads.param_text(v)}" for p, v in d.items())
                        for k, (_, d) in workloads.WORKLOADS.items())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Workload parameters (defaults): " + wl_help)
    p.add_argument("--workload", choices=sorted(workloads.WORKLOADS), default="gsp")
    p.add_argument("--wl", action="append", default=[], metavar="KEY=VALUE",
                   help="override a workload parameter (repeatable; see the list below)")
    p.add_argument("--model", choices=sorted(costmodel.GEOMETRIES), default="v3",
                   help="MLA geometry: KV bytes per token and the FLOP / step-time model")
    p.add_argument("--deployment", choices=sorted(costmodel.DEPLOYMENTS),
                   help="hardware of the step-time model and the default pool "
                        "(default: the model's own, v3 -> v3-h200x8, v2-lite -> v2lite-h100)")
    pool = p.add_mutually_exclusive_group()
    pool.add_argument("--pool-tokens", type=int, default=0,
                      help="KV pool size in tokens (default: from --deployment's memory budget)")
    pool.add_argument("--pressure", type=float, default=0.0,
                      help="pool = F x the trace's unique prefix-tree tokens (inputs + outputs)")
    pool.add_argument("--oracle", action="store_true",
                      help="pool large enough that nothing is ever evicted (hit-rate ceiling)")
    p.add_argument("--page-size", type=int, default=64)
    p.add_argument("--max-running-requests", type=int, default=128)
    p.add_argument("--chunked-prefill-size", type=int, default=8192)
    p.add_argument("--max-prefill-tokens", type=int, default=16384)
    p.add_argument("--schedule-policy", default="fcfs", help="SGLang schedule policy (fcfs, lpm, ...)")
    p.add_argument("--eviction", choices=("sglang", "clairvoyant", "hint"), default="sglang",
                   help="radix eviction order: SGLang's (radix_eviction_policy, LRU by default), "
                        "clairvoyant (Belady: furthest next use in the trace first; bench/clairvoyant.py) "
                        "or hint (continued conversations' KV last, from the trace; "
                        "clairvoyant.ContinuationHintStrategy)")
    p.add_argument("--hint-tpr", type=float, default=1.0,
                   help="--eviction hint: probability a continued request is flagged")
    p.add_argument("--hint-fpr", type=float, default=0.0,
                   help="--eviction hint: probability another request is flagged")
    p.add_argument("--hint-as-priority", action="store_true",
                   help="--eviction hint: give each request priority = its hint (0 or 1) and "
                        "leave the order to SGLang (with --server-arg radix_eviction_policy=priority)")
    p.add_argument("--server-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="set a ServerArgs field (repeatable); fails if this SGLang lacks it")
    p.add_argument("--request-rate", type=float, default=0.0,
                   help="Poisson arrivals per modelled second (0: all at t=0)")
    p.add_argument("--env", action="append", default=[], metavar="SGLANG_KEY=VALUE",
                   help="set an SGLANG_* environment variable for this run only (repeatable), "
                        "e.g. SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR=0.3")
    p.add_argument("--hicache", choices=("off", "write_through", "write_through_selective",
                                          "write_back"), default="off",
                   help="HiRadixCache with this hicache_write_policy (enable_hierarchical_cache; "
                        "CPU substitutions in bench/hicache_cpu.py); other hicache_* options "
                        "through --server-arg")
    p.add_argument("--hicache-ratio", type=float, default=2.0,
                   help="host pool / device pool (hicache_ratio; the pin's default is 2.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0: run to completion)")
    p.add_argument("--batch", help="JSON file: a list of argument lists; runs each in this process "
                                   "and prints one JSON line per run")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--verbose", action="store_true", help="keep SGLang's log lines")
    return p


def run_one(argv: List[str]) -> Dict[str, Any]:
    args = parser().parse_args(argv)
    env = _kv_pairs(args.env, "--env")
    bad = [k for k in env if not k.startswith("SGLANG_")]
    if bad:
        raise SystemExit(f"sched_driver: --env takes SGLANG_* variables only, not {bad}")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return _run_one(args, argv)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_one(args: argparse.Namespace, argv: List[str]) -> Dict[str, Any]:
    args.server_kwargs = server_kwargs(args.server_arg)
    geom = costmodel.GEOMETRIES[args.model]
    dep = costmodel.DEPLOYMENTS[args.deployment or geom.deployment]
    trace = workloads.build(args.workload, _kv_pairs(args.wl, "--wl"), args.seed)
    workloads.with_arrivals(trace, args.request_rate, args.seed)
    unique = workloads.unique_prefix_tokens(trace.sequences())
    pool = pool_size(args, trace, unique, geom, dep)
    res = run(args, trace, pool, geom, dep)
    res["config"]["unique_tokens"] = unique
    res["config"]["pressure"] = res["config"]["pool_tokens"] / unique
    res["config"]["oracle"] = args.oracle
    res["config"]["argv"] = argv
    import sglang

    res["sglang_path"] = os.path.dirname(sglang.__file__)
    res["sglang_version"] = getattr(sglang, "__version__", "?")
    return res


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR)
    if not args.verbose:
        logging.getLogger("sglang").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    if args.batch:
        with open(args.batch) as f:
            runs = json.load(f)
        for one in runs:
            print(json.dumps(run_one([str(x) for x in one])), flush=True)
        return 0
    res = run_one(argv)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
