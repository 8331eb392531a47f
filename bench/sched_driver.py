"""Model-free driver for SGLang's real scheduler and KV-memory code on CPU.

Runs SGLang's own ``Scheduler`` methods (prefill admission, decode memory check,
retraction, batch filter/merge, radix caching, allocators) against a synthetic
workload; only the model forward and the process plumbing around the scheduler
are replaced. Run with a SGLang source tree and ``ci/cpu`` on PYTHONPATH::

    PYTHONPATH=<tree>/python:ci/cpu python bench/sched_driver.py --help

What runs for real (SGLang code, unmodified)
--------------------------------------------
* ``Scheduler.get_next_batch_to_run`` -> ``get_new_batch_prefill`` ->
  ``_get_new_batch_prefill_raw`` (``SchedulePolicy.calc_priority``, ``PrefillAdder``,
  ``Req.init_next_round_input`` / radix ``match_prefix``, ``ScheduleBatch.init_new``,
  ``ScheduleBatch.prepare_for_extend`` -> ``alloc_for_extend``), ``stash_chunked_request``,
  ``ScheduleBatch.filter_batch`` / ``merge_batch``, ``Scheduler.update_running_batch``
  (``check_decode_mem``, ``retract_decode``, ``prepare_for_decode``).
* ``Scheduler.process_batch_result`` -> ``process_batch_result_prefill`` /
  ``process_batch_result_decode`` (``Req.check_finished``, ``release_kv_cache`` ->
  ``RadixCache.cache_finished_req``, ``RadixCache.cache_unfinished_req``).
* ``Scheduler._add_request_to_queue`` and ``init_req_max_new_tokens`` for arrivals;
  ``init_metrics``, ``init_running_status``, ``init_chunked_prefill``,
  ``init_diffusion_llm``, ``init_schedule_policy``,
  ``init_deterministic_inference_config`` to set the scheduler's state.
* ``RadixCache``, ``ReqToTokenPool``, ``MLATokenToKVPool`` (tiny dims: 1 layer,
  kv_lora_rank 1, rope dim 1) and ``TokenToKVPoolAllocator`` (page 1) /
  ``PagedTokenToKVPoolAllocator`` (page > 1), built with the arguments
  ``ModelRunner._init_pools`` uses.

Replacements and stubs (each is the smallest piece that needs a model, a GPU, or IPC)
------------------------------------------------------------------------------------
1. ``Scheduler.__init__`` is not run (``object.__new__``): it loads a model, starts a
   TP worker, opens ZMQ sockets and NCCL/gloo groups. ``_build_scheduler`` sets the
   attributes its ``init_model_config`` / ``init_ipc_channels`` / ``init_model_worker``
   / ``init_cache_with_memory_pool`` / ``init_disaggregation`` / ``init_overlap`` /
   ``maybe_init_ngram_embedding`` would set, and calls the other init_* methods for real.
2. ``model_config``: a namespace with the few fields the scheduling path reads
   (vocab_size, context_len, is_multimodal, is_encoder_decoder, is_matryoshka, ...).
3. ``Scheduler.run_batch`` -> ``_synthetic_run_batch``: no ``get_model_worker_batch``
   and no forward; bumps ``forward_ct``, makes one deterministic next token per request
   and sets ``batch.output_ids`` exactly like the non-overlap path of ``run_batch``.
4. ``stream_output``, ``report_prefill_stats``, ``report_decode_stats``,
   ``log_batch_result_stats``: no-ops (detokenizer IPC and metrics/log lines only).
5. ``send_to_tokenizer`` / ``send_to_detokenizer``: a sink that counts sends
   (only aborts reach it here).
6. ``grammar_manager``: a stub with no waiting grammars (the real one needs a
   distributed group; the workload has no grammars).
7. Request intake: ``Req`` objects are built as in the non-session branch of
   ``handle_generate_request`` (ignore_eos, max_new_tokens = target output length,
   logprob_start_len -1) instead of receiving ``TokenizedGenerateReqInput`` over ZMQ.
8. The event loop is ``event_loop_normal`` (non-overlap) rewritten as a bounded
   loop: arrivals per step instead of ``recv_requests``; no ``self_check_during_idle``.
9. Observation only (results unchanged): ``tree_cache.evict`` and
   ``ScheduleBatch.retract_decode`` are wrapped to count tokens asked/evicted and
   retraction events.

Metrics (JSON on stdout)
------------------------
token_hit_rate: radix-cached prefix tokens / input tokens (origin + output so far) at every
admission, re-admissions after retraction included; token_hit_rate_first_admission:
SGLang's own ``req.cached_tokens`` / input tokens. prefill_tokens_computed: extend tokens
over all extend batches; reprefilled_tokens: the part of them for retracted requests.
evict_*: calls to ``RadixCache.evict``, tokens asked, tokens freed. mean_idle_free_*:
``allocator.available_size()`` sampled after every step; pool_use_p50/p99_pct from the same
samples. sched_cpu_ms_per_step: process CPU time of the loop body (arrival, scheduling,
synthetic forward, result processing) per step. The final step (which finds nothing to do)
is counted in ``steps``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import sys
import time
import zlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import sglang_cpu  # noqa: F401  (must precede every sglang import)
import torch

from sglang.srt.configs.model_config import ModelImpl
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
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
from sglang.srt.utils import require_mlp_sync

VOCAB_SIZE = 32000


@dataclass
class Request:
    input_ids: List[int]
    output_len: int
    arrival_step: int = 0


def generated_shared_prefix(
    groups: int,
    prompts_per_group: int,
    system_len: int,
    question_len: int,
    output_len: int,
    seed: int = 0,
    arrival_rate: int = 0,
) -> List[Request]:
    """G groups x P prompts; each group shares an S-token system prompt, then a Q-token
    question. Shuffled with ``seed``. ``arrival_rate`` requests arrive per step (0: all at
    step 0)."""
    rng = random.Random(seed)
    reqs: List[Request] = []
    for _ in range(groups):
        system = [rng.randrange(1, VOCAB_SIZE) for _ in range(system_len)]
        for _ in range(prompts_per_group):
            question = [rng.randrange(1, VOCAB_SIZE) for _ in range(question_len)]
            reqs.append(Request(system + question, output_len))
    rng.shuffle(reqs)
    for i, r in enumerate(reqs):
        r.arrival_step = i // arrival_rate if arrival_rate > 0 else 0
    return reqs


class _Sink:
    """Stands in for the ZMQ senders; counts what would be sent."""

    def __init__(self) -> None:
        self.sent = 0

    def send_output(self, *args: Any, **kwargs: Any) -> None:
        self.sent += 1


class _NoGrammar:
    def has_waiting_grammars(self) -> bool:
        return False


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _model_config(context_len: int) -> SimpleNamespace:
    return SimpleNamespace(
        vocab_size=VOCAB_SIZE,
        context_len=context_len,
        is_multimodal=False,
        is_encoder_decoder=False,
        is_matryoshka=False,
        hidden_size=16,
        hf_eos_token_id=None,
        use_ngram_embedding=False,
        _resolved_model_impl=ModelImpl.SGLANG,
    )


def _build_scheduler(args: argparse.Namespace, context_len: int) -> Scheduler:
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
    )
    set_global_server_args_for_scheduler(server_args)

    s: Scheduler = object.__new__(Scheduler)
    # -- the "Parse args" block of Scheduler.__init__ (single rank, no TP/PP/DP) --
    s.is_initializing = True
    s.server_args = server_args
    s.tp_rank = s.moe_ep_rank = s.pp_rank = s.attn_cp_rank = s.moe_dp_rank = 0
    s.attn_cp_size = server_args.attn_cp_size
    s.moe_dp_size = server_args.moe_dp_size
    s.dp_rank = None
    s.tp_size = server_args.tp_size
    s.moe_ep_size = server_args.ep_size
    s.pp_size = server_args.pp_size
    s.dp_size = server_args.dp_size
    s.schedule_policy = server_args.schedule_policy
    s.enable_priority_scheduling = server_args.enable_priority_scheduling
    s.abort_on_priority_when_disabled = server_args.abort_on_priority_when_disabled
    s.schedule_low_priority_values_first = (
        server_args.schedule_low_priority_values_first
    )
    s.priority_scheduling_preemption_threshold = (
        server_args.priority_scheduling_preemption_threshold
    )
    s.enable_lora = server_args.enable_lora
    s.enable_lora_overlap_loading = server_args.enable_lora_overlap_loading
    s.enable_overlap = False
    s.enable_pdmux = False
    s.skip_tokenizer_init = True
    s.stream_interval = server_args.stream_interval
    s.spec_algorithm = SpeculativeAlgorithm.from_string(None)
    s.gpu_id = 0
    s.page_size = server_args.page_size
    s.enable_hierarchical_cache = False
    s.enable_hicache_storage = False
    s.enable_hisparse = False
    s.hisparse_coordinator = None
    s.attn_tp_rank, s.attn_tp_size, s.attn_dp_rank = 0, 1, 0
    s.enable_kv_cache_events = False

    # -- init_model_config (replacement 2) --
    s.model_config = _model_config(context_len)
    s.is_generation = True
    s.init_metrics(0, 0, None)

    # -- init_ipc_channels (replacement 5) / init_tokenizer --
    s.send_to_tokenizer = _Sink()
    s.send_to_detokenizer = _Sink()
    s.tokenizer = None
    s._think_end_id = None

    # -- init_model_worker: the values get_worker_info() would return --
    s.max_total_num_tokens = args.pool_tokens
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
        args.pool_tokens,
        page_size=s.page_size,
        dtype=torch.bfloat16,
        kv_lora_rank=1,
        qk_rope_head_dim=1,
        layer_num=1,
        device="cpu",
        enable_memory_saver=False,
    )
    alloc_cls = TokenToKVPoolAllocator if s.page_size == 1 else PagedTokenToKVPoolAllocator
    alloc_kwargs = {} if s.page_size == 1 else {"page_size": s.page_size}
    s.token_to_kv_pool_allocator = alloc_cls(
        args.pool_tokens,
        dtype=torch.bfloat16,
        device="cpu",
        kvcache=kv_pool,
        need_sort=False,
        **alloc_kwargs,
    )
    s.disable_radix_cache = False
    s.tree_cache = RadixCache(
        CacheInitParams(
            disable=False,
            req_to_token_pool=s.req_to_token_pool,
            token_to_kv_pool_allocator=s.token_to_kv_pool_allocator,
            page_size=s.page_size,
            eviction_policy=server_args.radix_eviction_policy,
            chunked_prefill_size=server_args.chunked_prefill_size,
        )
    )
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
    s.grammar_manager = _NoGrammar()  # replacement 6

    # -- replacements 3 and 4 --
    s.run_batch = lambda batch: _synthetic_run_batch(s, batch)
    s.stream_output = _noop
    s.report_prefill_stats = _noop
    s.report_decode_stats = _noop
    s.log_batch_result_stats = _noop
    s.is_initializing = False
    return s


def _synthetic_token(req: Req) -> int:
    # Deterministic in (request, position): retract + re-prefill reproduces it.
    return 1 + (zlib.crc32(req.rid.encode()) * 7919 + len(req.output_ids) * 104729) % (VOCAB_SIZE - 1)


def _synthetic_run_batch(s: Scheduler, batch: ScheduleBatch) -> GenerationBatchResult:
    """run_batch without get_model_worker_batch and forward (replacement 3)."""
    s.forward_ct += 1
    next_token_ids = torch.tensor(
        [_synthetic_token(r) for r in batch.reqs], dtype=torch.int64
    )
    batch.output_ids = next_token_ids
    return GenerationBatchResult(next_token_ids=next_token_ids)


class _Counters:
    def __init__(self) -> None:
        self.evict_calls = 0
        self.evict_requested = 0
        self.evicted = 0
        self.retract_events = 0


def _observe(s: Scheduler, c: _Counters) -> None:
    tree_evict = s.tree_cache.evict

    def evict(params: Any) -> Any:  # replacement 9 (observation only)
        res = tree_evict(params)
        c.evict_calls += 1
        c.evict_requested += params.num_tokens
        c.evicted += res.num_tokens_evicted
        return res

    s.tree_cache.evict = evict

    orig_retract = getattr(
        ScheduleBatch.retract_decode, "__wrapped__", ScheduleBatch.retract_decode
    )

    def retract_decode(self: ScheduleBatch, server_args: ServerArgs) -> Any:
        out = orig_retract(self, server_args)
        if out[0] or out[2]:
            c.retract_events += 1
        return out

    retract_decode.__wrapped__ = orig_retract  # type: ignore[attr-defined]
    ScheduleBatch.retract_decode = retract_decode  # type: ignore[method-assign]


def _percentile(sorted_vals: List[float], q: float) -> float:
    if not sorted_vals:
        return 0.0
    k = min(len(sorted_vals) - 1, max(0, int(round(q / 100 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def run(args: argparse.Namespace, workload: List[Request]) -> Dict[str, Any]:
    context_len = max(len(r.input_ids) + r.output_len for r in workload) + 64
    s = _build_scheduler(args, context_len)
    c = _Counters()
    _observe(s, c)
    allocator = s.token_to_kv_pool_allocator
    pool = allocator.available_size()  # usable capacity (whole pages for page_size > 1)

    pending = sorted(range(len(workload)), key=lambda i: workload[i].arrival_step)
    all_reqs: List[Req] = []
    next_arrival = 0
    step = 0
    in_prefill: set = set()  # rids with a chunked prefill under way
    admitted = admitted_input = admitted_cached = 0
    prefill_tokens = reprefill_tokens = 0
    extend_steps = decode_steps = idle_steps = 0
    free_samples: List[int] = []
    evictable_samples: List[int] = []
    running_samples: List[int] = []
    sched_cpu = get_batch_cpu = process_cpu = 0.0
    wall0 = time.perf_counter()
    cpu0 = time.process_time()

    while True:
        # -- recv_requests / process_input_requests (replacement 7) --
        while next_arrival < len(pending) and workload[pending[next_arrival]].arrival_step <= step:
            i = pending[next_arrival]
            w = workload[i]
            sp = SamplingParams(max_new_tokens=w.output_len, ignore_eos=True, temperature=0.0)
            sp.normalize(None)
            req = Req(f"r{i}", "", list(w.input_ids), sp, vocab_size=VOCAB_SIZE)
            req.tokenizer = None
            s.init_req_max_new_tokens(req)
            req.logprob_start_len = -1
            s._add_request_to_queue(req)
            all_reqs.append(req)
            next_arrival += 1

        t0 = time.process_time()
        batch = s.get_next_batch_to_run()
        s.cur_batch = batch
        t1 = time.process_time()
        get_batch_cpu += t1 - t0
        if batch is not None:
            if batch.forward_mode.is_extend():
                extend_steps += 1
                for req, pre, ext in zip(batch.reqs, batch.prefix_lens, batch.extend_lens):
                    prefill_tokens += ext
                    if req.retraction_count > 0:
                        reprefill_tokens += ext
                    if req.rid not in in_prefill:  # admission (first chunk)
                        admitted += 1
                        admitted_input += len(req.origin_input_ids) + len(req.output_ids)
                        admitted_cached += pre
                    if req is s.chunked_req:
                        in_prefill.add(req.rid)
                    else:
                        in_prefill.discard(req.rid)
            else:
                decode_steps += 1
            result = s.run_batch(batch)
            t2 = time.process_time()
            s.process_batch_result(batch, result)
            process_cpu += time.process_time() - t2
        else:
            idle_steps += 1
            if os.environ.get("SCHED_DRIVER_DEBUG"):
                print(f"idle step {step}: waiting={len(s.waiting_queue)} running="
                      f"{s.running_batch.batch_size()} free={allocator.available_size()}"
                      f" evictable={s.tree_cache.evictable_size()}", file=sys.stderr)
        s.last_batch = batch
        sched_cpu += time.process_time() - t0
        free_samples.append(allocator.available_size())
        evictable_samples.append(s.tree_cache.evictable_size())
        running_samples.append(s.running_batch.batch_size() if s.running_batch else 0)
        step += 1

        if batch is None and next_arrival >= len(pending) and not s.waiting_queue \
                and s.running_batch.is_empty() and s.chunked_req is None:
            break
        if args.max_steps and step >= args.max_steps:
            break

    wall = time.perf_counter() - wall0
    finished = [r for r in all_reqs if r.finished()]
    input_tokens = sum(len(r.origin_input_ids) for r in all_reqs)
    used_pct = sorted(100.0 * (pool - f) / pool for f in free_samples)
    mean_free = sum(free_samples) / max(1, len(free_samples))
    return {
        "sglang_file": sys.modules["sglang"].__file__,
        "config": {
            "page_size": args.page_size,
            "max_running_requests": args.max_running_requests,
            "chunked_prefill_size": args.chunked_prefill_size,
            "pool_tokens": pool,
            "num_requests": len(workload),
            "input_tokens": input_tokens,
        },
        "finished_requests": len(finished),
        "aborted_requests": sum(1 for r in finished if r.finished_reason is not None
                                and type(r.finished_reason).__name__ == "FINISH_ABORT"),
        "token_hit_rate": admitted_cached / max(1, admitted_input),
        "token_hit_rate_first_admission": sum(r.cached_tokens for r in all_reqs) / max(1, input_tokens),
        "admissions": admitted,
        "prefill_tokens_computed": prefill_tokens,
        "evict_calls": c.evict_calls,
        "evict_tokens_requested": c.evict_requested,
        "tokens_evicted": c.evicted,
        "retract_events": c.retract_events,
        "retracted_requests": sum(r.retraction_count for r in all_reqs),
        "reprefilled_tokens": reprefill_tokens,
        "mean_idle_free_tokens": mean_free,
        "mean_idle_free_pct": 100.0 * mean_free / pool,
        "mean_running_requests": sum(running_samples) / max(1, len(running_samples)),
        "mean_evictable_cached_tokens": sum(evictable_samples) / max(1, len(evictable_samples)),
        "pool_use_p50_pct": _percentile(used_pct, 50),
        "pool_use_p99_pct": _percentile(used_pct, 99),
        "steps": step,
        "extend_steps": extend_steps,
        "decode_steps": decode_steps,
        "idle_steps": idle_steps,
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
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--page-size", type=int, default=64)
    p.add_argument("--max-running-requests", type=int, default=128)
    p.add_argument("--chunked-prefill-size", type=int, default=8192)
    p.add_argument("--max-prefill-tokens", type=int, default=16384)
    p.add_argument("--pool-tokens", type=int, default=150_000, help="KV pool size in tokens")
    p.add_argument("--schedule-policy", default="fcfs", help="SGLang schedule policy (fcfs, lpm, ...)")
    p.add_argument("--groups", type=int, default=8, help="G: shared-prefix groups")
    p.add_argument("--prompts-per-group", type=int, default=4, help="P: prompts per group")
    p.add_argument("--system-len", type=int, default=512, help="S: shared system prompt tokens")
    p.add_argument("--question-len", type=int, default=64, help="Q: question tokens")
    p.add_argument("--output-len", type=int, default=32, help="O: output tokens per request")
    p.add_argument("--arrival-rate", type=int, default=0, help="requests arriving per step (0: all at once)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0: run to completion)")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--verbose", action="store_true", help="keep SGLang's log lines")
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR)
    if not args.verbose:
        logging.getLogger("sglang").setLevel(logging.ERROR)
    torch.set_num_threads(1)

    workload = generated_shared_prefix(
        args.groups, args.prompts_per_group, args.system_len, args.question_len,
        args.output_len, args.seed, args.arrival_rate,
    )
    res = run(args, workload)
    import sglang

    res["sglang_path"] = os.path.dirname(sglang.__file__)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
