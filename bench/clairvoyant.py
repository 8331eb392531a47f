"""Clairvoyant (Belady) eviction for SGLang's RadixCache: an offline reference for eviction.

``bench/sched_driver.py --eviction clairvoyant`` calls ``install(scheduler, trace)`` once the
scheduler is built. It replaces one thing in SGLang: ``RadixCache.eviction_strategy``, the
object whose ``get_priority(node)`` orders the min-heap that ``RadixCache.evict`` builds over
``evictable_leaves`` (LRU on the pin: ``node.last_access_time``); computing a priority may split
the leaf in two with ``RadixCache._split_node`` (below), which changes no cached token.
Everything else is SGLang's: which leaves are evictable, how many tokens an eviction frees, whole
leaves on the pin or the page-aligned tail of the last leaf with the series (0003), when the
scheduler evicts, admission, retraction. The pool, the trace and the admission policy are the
run's own. ``install`` also wraps ``get_next_batch_to_run`` and ``update_running_batch`` on the
scheduler instance, to see admissions and retractions; both pass everything through.

What "clairvoyant" means here
-----------------------------
Every request's prompt is known before the run (``Trace.all_requests`` or ``Trace.requests``),
and so is the trace's arrival order (by ``arrival_s``, ties in listed order). The *next use* of a
radix node is the position, in that order, of the earliest request that has not been admitted
yet and whose prompt has the node's whole path (root to the end of the node's key) as a prefix;
a node no such request has is never used again. The strategy's priority is
``(-next_use, last_access_time)``: ``evict`` pops the leaf whose next use lies furthest ahead
first (never used again = furthest; LRU among equals). This is Belady's MIN rule applied to the
leaves SGLang lets it choose from: since a child's path extends its parent's, a child's next use
is never earlier than its parent's, so the page whose next use is furthest ahead is always in a
leaf, at its end. A leaf can hold pages with different next uses (a conversation's prompt, used
again by its next turn, followed by a partial block and an answer that are not); ``evict`` frees
a whole leaf whenever the demand covers it, so when it computes a leaf's priority the strategy
first splits the leaf at the deepest page boundary (a multiple of 64 tokens and of the page size)
whose prefix is used earlier than the whole path, as ``insert`` splits nodes. The tail keeps the
leaf's priority; the head becomes a leaf with its own, earlier next use once the tail is gone.
Eviction then goes page by page in Belady's order (``--eviction clairvoyant`` always splits;
``install(..., split=False)`` gives the leaf-level rule).

"Admitted" is: the request was in an extend batch that ``get_next_batch_to_run`` returned (from
then on its prefix is locked and not evictable). A retracted request becomes not admitted again
(it will need its prefix at re-admission).

Limits (why this is a reference, not a proven bound)
----------------------------------------------------
* It knows the trace's arrival order, not the order in which the scheduler will admit requests
  (FCFS admits nearly in arrival order; ``lpm`` and retraction reorder), and not when.
* It looks at prompts only: a retracted request's re-admission also needs its output so far,
  and a multi-turn follow-up arrives when its previous round finishes (for ``multiturn`` the
  listed order is not the arrival order; do not read that workload's result as a ceiling).
* Belady's rule is optimal for a fixed sequence of unit-size, demand-paged accesses. Here
  evictions change what the scheduler admits next (a hit shortens prefills, which changes the
  timing and the batch), and the pool is shared with running requests' KV: when admission needs
  more than the free pool it evicts whatever it needs, and no order keeps what the running batch
  takes. So "clairvoyant - LRU" is the headroom a better eviction *order* could find at this pool
  and admission policy, not a theorem; a run where it loses to LRU is possible and is reported as
  measured.
* Pages, not tokens: on the pin and with the series eviction frees whole pages (and whole leaves
  on the pin unless split), and split points are multiples of 64 tokens.
* Granularity: paths are indexed at every ``granule`` (64) tokens with a chained hash; a path
  that ends between two boundaries is checked token by token against each candidate's prompt,
  so matches are exact up to 64-bit hash collisions.

Cost
----
The index is one chained hash per 64 prompt tokens (about 0.6 s for 1,000 requests of the
shared Mooncake trace, 13.7M prompt tokens: ``bench/clairvoyant.py --workload trace --wl
path=... --wl max_requests=1000``); each node caches its path hash and its next use, which stays
valid until that request is admitted, so a priority costs a few attribute reads in the common
case.

    PYTHONPATH=<tree>/python:ci/cpu build/venv/bin/python bench/clairvoyant.py --help
"""

from __future__ import annotations

import bisect
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

_ROOT_HASH = 0x5EED_C1A1  # chained hash of the empty prefix

# Per node: (parent, key length, path length, hash at the last boundary, tokens after it)
_PathInfo = Tuple[Any, int, int, int, List[int]]


class FutureIndex:
    """Chained hash of every prompt's prefix at each multiple of ``granule`` tokens -> the
    sorted positions (arrival order) of the prompts that have that prefix."""

    def __init__(self, prompts: Sequence[Sequence[int]], granule: int = 64) -> None:
        if granule < 1:
            raise ValueError(f"granule must be >= 1, got {granule}")
        self.prompts = [list(p) for p in prompts]
        self.granule = granule
        self.never = len(self.prompts)  # next use of a path no remaining prompt has
        self.index: Dict[int, List[int]] = {_ROOT_HASH: list(range(len(self.prompts)))}
        g = granule
        for i, toks in enumerate(self.prompts):
            h = _ROOT_HASH
            for b in range(len(toks) // g):
                h = hash((h, tuple(toks[b * g:(b + 1) * g])))
                self.index.setdefault(h, []).append(i)

    def extend_hash(self, h: int, rem: List[int], tokens: Sequence[int]) -> Tuple[int, List[int]]:
        """(hash at the last boundary, tokens after it) of a path, extended by ``tokens``."""
        toks = rem + list(tokens)
        g = self.granule
        full = len(toks) // g
        for b in range(full):
            h = hash((h, tuple(toks[b * g:(b + 1) * g])))
        return h, toks[full * g:]

    def first(self, h: int, path_len: int, rem: List[int], admitted: bytearray,
              start: int) -> int:
        """Position of the first prompt at or after ``start``, not admitted, that has the path
        (``h``: its hash at the last boundary, ``rem``: its tokens after it) as a prefix;
        ``never`` if none has."""
        cands = self.index.get(h)
        if not cands:
            return self.never
        lo = path_len - len(rem)
        for j in range(bisect.bisect_left(cands, start), len(cands)):
            i = cands[j]
            if not admitted[i] and (not rem or self.prompts[i][lo:path_len] == rem):
                return i
        return self.never


class ClairvoyantStrategy:
    """``EvictionStrategy`` duck type: ``get_priority(node) = (-next_use, last_access_time)``."""

    def __init__(self, index: FutureIndex, order: Dict[str, int], tree: Any = None) -> None:
        self.fx = index
        self.order = order  # rid -> position in arrival order
        self.tree = tree  # the RadixCache, to split leaves at page level (None: leaf level)
        self.admitted = bytearray(len(index.prompts) + 1)  # +1: `never` is never admitted
        self.lo = 0  # first position not admitted
        self.epoch = 0  # bumped when a request becomes not admitted again (retraction)
        # Cached on the node itself (TreeNode has no __slots__): ``_cv_path`` (_PathInfo) and
        # ``_cv_next`` (strategy, epoch, next use), so nothing outlives the tree.
        self.calls = self.recomputed = self.splits = 0
        self.cpu_s = 0.0

    # -- admission bookkeeping --
    def admit(self, rid: str) -> None:
        i = self.order.get(rid)
        if i is None or self.admitted[i]:
            return
        self.admitted[i] = 1
        while self.lo < self.fx.never and self.admitted[self.lo]:
            self.lo += 1

    def unadmit(self, rid: str) -> None:
        i = self.order.get(rid)
        if i is None or not self.admitted[i]:
            return
        self.admitted[i] = 0
        self.lo = min(self.lo, i)
        self.epoch += 1

    # -- the path of a node --
    def _path(self, node: Any) -> _PathInfo:
        chain = []
        n = node
        while n.parent is not None:  # up to the first ancestor whose cached path still holds
            info = getattr(n, "_cv_path", None)
            if info is not None and info[0] is n.parent and info[1] == len(n.key):
                break
            chain.append(n)
            n = n.parent
        if n.parent is None:
            info = (None, 0, 0, _ROOT_HASH, [])
        for m in reversed(chain):
            h, rem = self.fx.extend_hash(info[3], info[4], m.key.token_ids)
            info = (m.parent, len(m.key), info[2] + len(m.key), h, rem)
            m._cv_path = info
            m._cv_next = None  # the path changed: so may its next use
        return info

    def next_use(self, node: Any) -> int:
        info = self._path(node)
        cached = getattr(node, "_cv_next", None)
        if cached is not None and cached[0] is self and cached[1] == self.epoch:
            v = cached[2]
            if v == self.fx.never or not self.admitted[v]:
                return v
            start = v + 1
        else:
            start = self.lo
        self.recomputed += 1
        v = self.fx.first(info[3], info[2], info[4], self.admitted, max(start, self.lo))
        node._cv_next = (self, self.epoch, v)
        if self.tree is not None and not node.children:
            self._split_head(node, v)
        return v

    def _split_head(self, node: Any, v: int) -> None:
        """Page-level Belady for a leaf: if a prefix of its key (at a boundary that is a multiple
        of the granule and of the page size) has an earlier next use than the whole path, split
        the leaf at the deepest such boundary (``RadixCache._split_node``, as insert does; what
        is cached does not change). The leaf keeps the tail and its next use ``v``; the new head
        becomes its parent and, once the tail is gone, a leaf with its own, earlier next use."""
        parent = node.parent
        if parent is None:
            return
        pinfo = self._path(parent)
        page = max(1, int(getattr(self.tree, "page_size", 1)))
        g = self.fx.granule
        start = pinfo[2]
        toks = pinfo[4] + list(node.key.token_ids)  # from the parent's last boundary on
        base = start - len(pinfo[4])  # path position of toks[0] (a boundary)
        h = pinfo[3]
        cands: List[Tuple[int, int]] = []  # (path length at a boundary inside the key, hash)
        for b in range(len(toks) // g):
            h = hash((h, tuple(toks[b * g:(b + 1) * g])))
            end = base + (b + 1) * g
            if start < end < start + len(node.key) and (end - start) % page == 0:
                cands.append((end, h))
        lo, hi, best = 0, len(cands) - 1, -1  # next use is monotone along the path
        while lo <= hi:
            mid = (lo + hi) // 2
            if self.fx.first(cands[mid][1], cands[mid][0], [], self.admitted, self.lo) < v:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        if best < 0:
            return
        head = self.tree._split_node(node.key, node, cands[best][0] - start)
        head.last_access_time = node.last_access_time
        self.splits += 1

    def get_priority(self, node: Any) -> Tuple[int, float]:
        t = time.process_time()
        self.calls += 1
        p = (-self.next_use(node), node.last_access_time)
        self.cpu_s += time.process_time() - t
        return p

    def stats(self) -> Dict[str, float]:
        return {"priority_calls": self.calls, "next_use_searches": self.recomputed,
                "leaf_splits": self.splits, "priority_cpu_s": self.cpu_s,
                "requests_admitted": sum(self.admitted)}


def arrival_order(trace: Any) -> List[Any]:
    """The trace's requests in arrival order (arrival_s, ties in listed order)."""
    known = list(trace.all_requests or trace.requests)
    return [r for _, _, r in sorted((r.arrival_s, i, r) for i, r in enumerate(known))]


def strategy_for(trace: Any, granule: int = 64, tree: Any = None) -> ClairvoyantStrategy:
    """The strategy for a trace; with ``tree`` (the RadixCache it goes on) it splits leaves so
    that it works at page level, without at leaf level."""
    reqs = arrival_order(trace)
    return ClairvoyantStrategy(FutureIndex([r.input_ids for r in reqs], granule),
                               {r.rid: i for i, r in enumerate(reqs)}, tree)


def install(s: Any, trace: Any, granule: int = 64, split: bool = True) -> ClairvoyantStrategy:
    """Put the clairvoyant strategy on ``s.tree_cache`` (a RadixCache) and follow admissions
    (``get_next_batch_to_run``'s extend batches) and retractions (``update_running_batch``)
    on the scheduler instance. Returns the strategy (its ``stats()``)."""
    strat = strategy_for(trace, granule, s.tree_cache if split else None)
    s.tree_cache.eviction_strategy = strat
    get_next = s.get_next_batch_to_run
    update_running = s.update_running_batch

    def get_next_batch_to_run() -> Any:
        batch = get_next()
        if batch is not None and batch.forward_mode.is_extend():
            for req in batch.reqs:
                strat.admit(req.rid)
        return batch

    def update_running_batch(batch: Any) -> Any:
        before = [(r, r.retraction_count) for r in batch.reqs]
        out = update_running(batch)
        for r, n in before:
            if r.retraction_count != n:
                strat.unadmit(r.rid)
        return out

    s.get_next_batch_to_run = get_next_batch_to_run
    s.update_running_batch = update_running_batch
    s.clairvoyant = strat
    return strat


class ContinuationHintStrategy:
    """``EvictionStrategy`` duck type: ``get_priority(node) = (kept, last_access_time)``.

    Not Belady: what a server would get from an exact *continuation hint*, a flag per request
    that says whether its conversation sends another turn (which a client or router might know,
    and nothing in the KV cache does). When a request finishes, every node on its cached path is
    marked kept (1) or not (0) by its request's hint, the latest request deciding; not-kept
    leaves go first, LRU within each class. The hint is read from the trace: a request is
    continued when a later request of the run has its prompt through its last whole ``block``
    tokens (at least two blocks: the first is a system prompt every request shares) as a prefix.
    ``tpr`` / ``fpr`` make the hint noisy: a continued request is flagged with probability
    ``tpr``, another with ``fpr`` (a fixed pseudo-random draw per request)."""

    def __init__(self, prompts: Sequence[Sequence[int]], order: Dict[str, int],
                 block: int = 512, tpr: float = 1.0, fpr: float = 0.0) -> None:
        fx = FutureIndex(prompts, block)
        self.continued = bytearray(len(prompts))
        for i, toks in enumerate(prompts):
            whole = len(toks) // block * block
            if whole >= 2 * block:  # the last user of this prefix comes after i
                h, _ = fx.extend_hash(_ROOT_HASH, [], toks[:whole])
                self.continued[i] = fx.index[h][-1] > i
        self.order = order
        self.tpr, self.fpr = tpr, fpr
        self.flagged = 0
        self.finished = 0

    def hint(self, rid: str) -> int:
        i = self.order.get(rid)
        if i is None:
            return 0
        u = (i * 2654435761 % 1000003) / 1000003.0
        return int(u < (self.tpr if self.continued[i] else self.fpr))

    def attach(self, tree: Any) -> None:
        from policies import _walk
        from sglang.srt.mem_cache.radix_cache import RadixKey

        finished = tree.cache_finished_req

        def cache_finished_req(req: Any, *a: Any, **kw: Any) -> Any:
            out = finished(req, *a, **kw)
            kept = self.hint(req.rid)
            self.finished += 1
            self.flagged += kept
            ids = list(req.origin_input_ids) + list(req.output_ids)
            for node in _walk(tree, RadixKey(ids, req.extra_key)):
                node._hint = kept
            return out

        tree.cache_finished_req = cache_finished_req
        tree.eviction_strategy = self

    def get_priority(self, node: Any) -> Tuple[int, float]:
        return (getattr(node, "_hint", 0), node.last_access_time)

    def stats(self) -> Dict[str, float]:
        return {"continued": sum(self.continued), "requests": len(self.continued),
                "finished": self.finished, "flagged": self.flagged,
                "tpr": self.tpr, "fpr": self.fpr}


def hint_for(trace: Any, tpr: float = 1.0, fpr: float = 0.0) -> ContinuationHintStrategy:
    """The continuation hints of a trace (``attach`` it to a RadixCache to evict by them)."""
    reqs = arrival_order(trace)
    return ContinuationHintStrategy([r.input_ids for r in reqs],
                                    {r.rid: i for i, r in enumerate(reqs)}, tpr=tpr, fpr=fpr)


def main(argv: Optional[List[str]] = None) -> int:
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import workloads

    p = argparse.ArgumentParser(description="Build the clairvoyant index for a workload and print "
                                            "its size and build time (the policy itself runs "
                                            "inside sched_driver.py --eviction clairvoyant).")
    p.add_argument("--workload", choices=sorted(workloads.WORKLOADS), default="gsp")
    p.add_argument("--wl", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--granule", type=int, default=64, help="tokens between indexed boundaries")
    a = p.parse_args(argv)
    trace = workloads.build(a.workload, dict(x.split("=", 1) for x in a.wl), a.seed)
    t = time.perf_counter()
    strat = strategy_for(trace, a.granule)
    dt = time.perf_counter() - t
    fx = strat.fx
    print(f"{a.workload}: {len(fx.prompts)} prompts, {sum(map(len, fx.prompts)):,} tokens, "
          f"{len(fx.index):,} distinct prefixes at {fx.granule}-token boundaries, "
          f"{sum(map(len, fx.index.values())):,} entries; built in {dt:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
