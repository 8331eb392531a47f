"""Observation-only wrappers around SGLang's cache, allocator and retraction calls
(bench/sched_driver.py, replacement 9): they count, and never change a result."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from sglang.srt.managers.schedule_batch import Req, ScheduleBatch
from sglang.srt.managers.scheduler import Scheduler
from sglang.srt.server_args import ServerArgs

from workloads import lcp


class Counters:
    def __init__(self) -> None:
        self.evict_calls = 0
        self.evict_requested = 0
        self.evicted = 0
        self.needed = 0
        self.pending: Optional[Tuple[int, int]] = None  # (free before eviction, evicted)
        self.alloc_failures = 0
        self.retract_events = 0
        self.retracted_kv = 0  # tokens of KV the retracted requests held when retracted
        self.retracted: List[Req] = []  # retracted since the driver last looked
        self.tail_lost_insert = 0
        self.match_tail: Dict[str, int] = {}


def observe(s: Scheduler, c: Counters) -> None:
    """Replacement 9: wrappers that count and pass everything through unchanged."""
    tree, alloc, page = s.tree_cache, s.token_to_kv_pool_allocator, s.page_size
    tree_evict = tree.evict

    def evict(params: Any) -> Any:
        free_before = alloc.available_size()
        res = tree_evict(params)
        c.evict_calls += 1
        c.evict_requested += params.num_tokens
        c.evicted += res.num_tokens_evicted
        c.pending = (free_before, res.num_tokens_evicted)
        return res

    tree.evict = evict

    def wrap_alloc(name: str) -> None:
        orig = getattr(alloc, name)

        def wrapped(*a: Any, **kw: Any) -> Any:
            before = alloc.available_size()
            out = orig(*a, **kw)
            if out is None:
                c.alloc_failures += 1
            if c.pending is not None:
                free_at_evict, evicted = c.pending
                c.pending = None
                consumed = before - alloc.available_size() if out is not None else 0
                c.needed += min(evicted, max(0, consumed - free_at_evict))
            return out

        setattr(alloc, name, wrapped)

    for name in ("alloc", "alloc_extend", "alloc_decode"):
        if hasattr(alloc, name):
            wrap_alloc(name)

    orig_finished = tree.cache_finished_req

    def cache_finished_req(req: Req, *a: Any, **kw: Any) -> Any:
        is_insert = kw.get("is_insert", a[0] if a else True)
        if is_insert and page > 1 and req.finished():
            c.tail_lost_insert += getattr(req, "kv_committed_len", 0) % page
        return orig_finished(req, *a, **kw)

    tree.cache_finished_req = cache_finished_req

    if page > 1:
        orig_match = tree.match_prefix

        def match_prefix(params: Any) -> Any:
            res = orig_match(params)
            req = getattr(params, "req", None)
            if req is not None:
                m = len(res.device_indices)
                rest = params.key.token_ids[m:m + page]
                best = 0
                if rest:
                    for child in res.last_device_node.children.values():
                        if child.key is not None:
                            best = max(best, lcp(child.key.token_ids[:len(rest)], rest))
                c.match_tail[req.rid] = best
            return res

        tree.match_prefix = match_prefix

    orig_retract = getattr(
        ScheduleBatch.retract_decode, "__wrapped__", ScheduleBatch.retract_decode
    )

    def retract_decode(self: ScheduleBatch, server_args: ServerArgs, *a: Any) -> Any:
        held = {id(r): len(r.origin_input_ids) + len(r.output_ids) for r in self.reqs}
        out = orig_retract(self, server_args, *a)
        if out[0] or out[2]:
            c.retract_events += 1
        for r in out[0]:
            c.retracted_kv += held[id(r)]
            c.retracted.append(r)
        return out

    retract_decode.__wrapped__ = orig_retract  # type: ignore[attr-defined]
    ScheduleBatch.retract_decode = retract_decode  # type: ignore[method-assign]
