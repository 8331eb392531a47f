"""Prototype radix eviction policies for the tree under test, plugged in without a patch.

``install()`` adds each policy here to ``--radix-eviction-policy``'s choices
(``server_args.add_radix_eviction_policy_choices``) and wraps ``RadixCache.__init__`` so that a
cache built with one of these names gets the policy's ``EvictionStrategy`` (the pin picks its
strategy from a fixed if/elif in ``RadixCache.__init__``). The driver then selects it with
``--server-arg radix_eviction_policy=reuse``. Nothing else in SGLang changes.

``reuse`` (``ReuseGapStrategy``): evict first the leaf least likely to be reused within the
cache's current lifetime, judged by the leaf's age and the reuse gaps the cache has seen so far.
The clock is logical: one tick per request cached (an insert from ``cache_finished_req`` /
``cache_unfinished_req``). A leaf is *hit* when a later request's insert walks into it and it was
still a leaf (a conversation's next turn extends or splits the previous turn's state); a leaf
*leaves the risk set* when it is hit or evicted. Per log2 age bucket the strategy keeps hits and
leaves that reached the bucket, i.e. a discrete hazard ``h_b``; the priority of a leaf of age
``a`` is ``P(hit within the next H ticks) = 1 - prod_b (1 - h_b)^(overlap_b / width_b)`` over
``[a, a + H)``, where ``H`` is the cache lifetime (evictable tokens / tokens cached per tick).
Lowest probability is evicted first; equal probabilities fall back to LRU. Until enough leaves
have left the risk set every priority is 0, i.e. plain LRU. The table of priorities by bucket is
recomputed every ``refresh`` events, so ``get_priority`` is a table lookup.

``sample10``, ``sample25``, ``sample50`` (``SampledKeepStrategy``): every 10th / 4th / 2nd
request's new KV is kept, the rest is evicted first (LRU within each class), so that the kept
share outlives reuse gaps longer than the cache's LRU lifetime; bench/evict_sim.py's ``sample``.

``gen``, ``gen512``, ``gen512lfu`` (``DeadTailStrategy``): evict a finished request's *dead
tail* first, LRU (or LFU) within each class. The dead tail is the KV from ``dead_cut`` on: its
generated tokens (``gen``) or also its prompt after the last 512-token boundary (``gen512``: in
the Mooncake replay a conversation's next turn repeats only the previous prompt's whole 512-token
blocks, so that part and the synthetic answer are never hit again). The leaf is split at the cut
when the request finishes, so the tail is a leaf of its own. Owners come from
``track_ownership`` (class-level wraps that tag the nodes each insert creates).

    PYTHONPATH=<tree>/python:ci/cpu build/venv/bin/python bench/policies.py --help
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

NBUCKETS = 24  # age buckets: [0, 1), [1, 2), [2, 4), ... [2^22, inf)


def bucket(age: int) -> int:
    return min(max(age, 0).bit_length(), NBUCKETS - 1)


def bucket_bounds(b: int) -> Tuple[int, int]:
    lo = 0 if b == 0 else 1 << (b - 1)
    hi = 1 if b == 0 else (1 << b)
    return lo, hi if b < NBUCKETS - 1 else 1 << 62


class ReuseGapStrategy:
    """``EvictionStrategy``: ``get_priority(node) = (P(reuse within H | age), last_access)``.

    The cache calls ``on_request(prompt, new_tokens)`` once per finished request (the clock),
    ``on_stamp(node)`` for each node on an inserted path, and nothing else: the reuse gaps are
    learned from the requests' prompts, not from the tree, so what the policy evicts does not
    hide what it would have hit (a ghost cache of one hash per request)."""

    def __init__(self, page: int = 64, chunk: int = 8, min_hits: int = 16, refresh: int = 32,
                 max_anchors: int = 1 << 20) -> None:
        self.page = page
        self.chunk = chunk
        self.tick = 0
        self.anchors: Dict[int, int] = {}  # hash of a request's page-aligned prompt -> tick
        self.order: List[int] = []  # anchors in tick order (for expiry)
        self.expired = 0
        self.max_anchors = max_anchors
        self.created: List[int] = [0]  # created[t] = anchors made at ticks < t
        self.hits = [0] * NBUCKETS
        self.nhits = 0
        self.min_hits = min_hits
        self.refresh = refresh
        self.table: List[float] = [0.0] * NBUCKETS  # priority by age bucket
        self.horizon = 0  # ticks
        self.new_tokens = 0.0  # EWMA of tokens a request adds to the tree
        self.life = 0.0  # EWMA of the age of evicted leaves, ticks (the cache's lifetime)
        self.nevict = 0
        self.evictable_size: Callable[[], int] = lambda: 0
        self._dirty = 0

    # -- events from the cache --
    def on_request(self, prompt: List[int], new_tokens: int) -> None:
        """A request finished: learn from its prompt, then advance the clock. The prompt is cut
        in chunks of ``chunk`` pages; a chunk first seen here becomes an anchor (tick now), and
        a chunk that is an anchor is a reuse at age now - its tick (counted once per chunk)."""
        g = self.page * self.chunk
        h = 0
        for i in range(len(prompt) // g):
            h = hash((h, tuple(prompt[i * g:(i + 1) * g])))
            t = self.anchors.get(h)
            if t is None:
                self.anchors[h] = self.tick
                self.order.append(h)
            elif t >= 0:
                self.hits[bucket(self.tick - t)] += 1
                self.nhits += 1
                self._dirty += 1
                self.anchors[h] = -1
        while len(self.order) - self.expired > self.max_anchors:
            self.anchors.pop(self.order[self.expired], None)
            self.expired += 1
        self.new_tokens = (0.98 * self.new_tokens + 0.02 * new_tokens
                           if self.tick else float(new_tokens))
        self.tick += 1
        self.created.append(len(self.order))
        if self._dirty >= self.refresh and self.nhits >= self.min_hits:
            self._rebuild()

    def on_stamp(self, node: Any) -> None:
        node._rg_tick = self.tick

    def on_evict(self, node: Any) -> None:
        """A leaf (or its tail) is freed: its age is a sample of the cache's lifetime."""
        age = self.tick - getattr(node, "_rg_tick", self.tick)
        self.life = 0.99 * self.life + 0.01 * age if self.nevict else float(age)
        self.nevict += 1

    def _rebuild(self) -> None:
        self._dirty = 0
        now = self.tick
        haz = []
        below = 0  # hits at ages under the bucket's low edge
        for b in range(NBUCKETS):
            lo, _ = bucket_bounds(b)
            reached = (self.created[now - lo] if lo <= now else 0) - below
            haz.append(self.hits[b] / reached if reached > 0 else 0.0)
            below += self.hits[b]
        h = max(1, int(self.life)) if self.nevict else max(
            1, int(self.evictable_size() / max(self.new_tokens, 1.0)))
        self.horizon = h
        table = []
        for b in range(NBUCKETS):
            lo, hi = bucket_bounds(b)
            a0 = (lo + min(hi, lo + h)) // 2 if b else 0  # a leaf in the middle of the bucket
            a1 = a0 + h
            logsurv = 0.0
            for c in range(b, NBUCKETS):
                clo, chi = bucket_bounds(c)
                if clo >= a1:
                    break
                ov = min(a1, chi) - max(a0, clo)
                if ov <= 0:
                    continue
                if haz[c] >= 1.0:
                    logsurv = -math.inf
                    break
                logsurv += math.log1p(-haz[c]) * ov / (chi - clo)
            table.append(1.0 - math.exp(logsurv))
        self.table = table

    # -- EvictionStrategy --
    def get_priority(self, node: Any) -> Tuple[float, float]:
        age = self.tick - getattr(node, "_rg_tick", self.tick)
        return (self.table[min(age.bit_length(), NBUCKETS - 1)], node.last_access_time)

    def stats(self) -> Dict[str, Any]:
        return {"ticks": self.tick, "reuse_hits": self.nhits, "horizon_ticks": self.horizon,
                "evictions": self.nevict,
                "hits_by_bucket": self.hits,
                "priority_by_bucket": [round(x, 4) for x in self.table]}


def _walk(tree: Any, key: Any) -> List[Any]:
    """Nodes on the cached path of ``key`` (read-only; the last may match partially)."""
    out = []
    node = tree.root_node
    while len(key) > 0:
        child = node.children.get(tree.get_child_key_fn(key))
        if child is None:
            break
        out.append(child)
        n = tree.key_match_fn(child.key, key)
        if n < len(child.key):
            break
        key = key[n:]
        node = child
    return out


def attach(tree: Any, strat: ReuseGapStrategy) -> None:
    """Route the cache's inserts and finished requests on ``tree`` (a RadixCache) to ``strat``."""
    tree.eviction_strategy = strat
    strat.page = max(1, int(tree.page_size))
    strat.evictable_size = tree.evictable_size
    insert, finished = tree.insert, tree.cache_finished_req
    added = [0]

    def insert_w(params: Any) -> Any:
        res = insert(params)
        added[0] += len(params.key) - res.prefix_len
        for n in _walk(tree, params.key):
            strat.on_stamp(n)
        return res

    def finished_w(req: Any, *a: Any, **kw: Any) -> Any:
        out = finished(req, *a, **kw)
        strat.on_request(list(req.origin_input_ids), added[0])  # tokens cached since the last
        added[0] = 0
        return out

    delete_leaf, evict_tail = tree._delete_leaf, tree._evict_tail

    def delete_leaf_w(node: Any) -> Any:
        strat.on_evict(node)
        return delete_leaf(node)

    def evict_tail_w(node: Any, num_tokens: int) -> int:
        if num_tokens < len(node.key):  # a whole-leaf tail comes back through _delete_leaf
            strat.on_evict(node)
        return evict_tail(node, num_tokens)

    tree.insert = insert_w
    tree.cache_finished_req = finished_w
    tree._delete_leaf = delete_leaf_w
    tree._evict_tail = evict_tail_w


# -- ownership: which request's KV a cached token is, and where that request's prompt ends --
#
# ``install()`` wraps ``RadixCache.cache_finished_req`` / ``cache_unfinished_req`` (to know the
# request being inserted), ``insert`` (to tag the nodes it creates: ``node._own = (rid, prompt
# length)``, the first request that cached those tokens) and ``_split_node`` (the new head keeps
# the tag). Observation only: nothing the cache does changes.

_CURRENT: List[Any] = [None]  # (rid, prompt length) of the request being inserted


def path_start(node: Any) -> int:
    """Tokens on the path above ``node`` (root to its parent)."""
    n, total = node.parent, 0
    while n is not None:
        total += len(n.key) if n.key is not None else 0
        n = n.parent
    return total


def dead_cut(prompt_len: int, page: int, align: int) -> int:
    """Path position from which a request's cached KV is its *dead tail*: the generated tokens
    (``align`` = page) or also the prompt after its last ``align``-token boundary (``align`` =
    512: a Mooncake trace's partial last block, which no later prompt of the trace repeats).
    A multiple of the page size."""
    a = max(align, page)
    return prompt_len // a * a // page * page


def is_dead_tail(node: Any, page: int, align: int) -> bool:
    own = getattr(node, "_own", None)
    return own is not None and path_start(node) >= dead_cut(own[1], page, align)


class DeadTailStrategy:
    """``EvictionStrategy``: evict the *dead tails* first (``is_dead_tail``: the part of a finished
    request's KV at or after ``dead_cut``: its generated tokens, with ``align`` 512 also the
    unaligned rest of its prompt), then the rest; LRU (``inner="lru"``) or LFU (``"lfu"``) within
    each class. After each ``cache_finished_req`` the leaf is split at the cut
    (``RadixCache._split_node``, as insert splits) so that the tail is a leaf of its own.

    The rule is written for the Mooncake replay, where a conversation's next turn repeats only
    the previous turn's whole prompt blocks. In real chat the next turn's prompt carries the
    previous answer (except reasoning tokens that the chat template drops), so the generated
    tokens are the *most* reusable part of a conversation's state there."""

    def __init__(self, align: int = 0, inner: str = "lru") -> None:
        self.align = align
        self.inner = inner
        self.page = 1
        self.splits = 0
        self.finished = 0

    def attach(self, tree: Any) -> None:
        from sglang.srt.mem_cache.radix_cache import RadixKey

        tree.eviction_strategy = self
        self.page = max(1, int(tree.page_size))
        finished = tree.cache_finished_req

        def finished_w(req: Any, *a: Any, **kw: Any) -> Any:
            out = finished(req, *a, **kw)
            self.finished += 1
            prompt = list(req.origin_input_ids)
            cut = dead_cut(len(prompt), self.page, self.align)
            if cut <= 0:
                return out
            nodes = _walk(tree, RadixKey(prompt[:cut], req.extra_key))
            if nodes:
                last = nodes[-1]
                start = path_start(last)
                if start < cut < start + len(last.key) and getattr(last, "_own", None):
                    tree._split_node(last.key, last, cut - start)
                    self.splits += 1
            return out

        tree.cache_finished_req = finished_w

    def get_priority(self, node: Any) -> Tuple:
        live = 0 if is_dead_tail(node, self.page, self.align) else 1
        if self.inner == "lfu":
            return (live, node.hit_count, node.last_access_time)
        return (live, node.last_access_time)

    def stats(self) -> Dict[str, Any]:
        return {"align": self.align, "inner": self.inner, "leaf_splits": self.splits,
                "finished": self.finished}


class SampledKeepStrategy:
    """``EvictionStrategy``: keep a sample of the cached states long enough to see their reuse.

    Each request's new KV is *kept* with probability ``p`` (a deterministic stratified sampler:
    every 1/p-th request) and *transient* otherwise; KV that a different request walks through on
    insert (a reuse) becomes kept. Transient leaves are evicted before kept ones, LRU within each
    class. When reuse gaps are longer than the LRU lifetime of the cache, LRU evicts every state
    before its reuse; the kept class lives about 1/p times longer."""

    def __init__(self, p: float = 0.25, promote: bool = True) -> None:
        self.p = p
        self.promote = promote
        self.acc = 0.0
        self.by_rid: Dict[Any, int] = {}
        self.kept_requests = 0
        self.requests = 0
        self.promoted = 0

    def decide(self, rid: Any) -> int:
        k = self.by_rid.get(rid)
        if k is None:
            self.acc += self.p
            k = 1 if self.acc >= 1.0 else 0
            self.acc -= k
            self.by_rid[rid] = k
            self.requests += 1
            self.kept_requests += k
        return k

    def attach(self, tree: Any) -> None:
        tree.eviction_strategy = self
        insert, split, finished = tree.insert, tree._split_node, tree.cache_finished_req

        def insert_w(params: Any) -> Any:
            res = insert(params)
            own = _CURRENT[0]
            if own is None:
                return res
            k = self.decide(own[0])
            for n in _walk(tree, params.key):
                if getattr(n, "_keep", None) is None:
                    n._keep = k
                elif (self.promote and not n._keep
                      and getattr(n, "_own", (own[0],))[0] != own[0]):
                    n._keep = 1
                    self.promoted += 1
            return res

        def split_w(key: Any, child: Any, split_len: int) -> Any:
            head = split(key, child, split_len)
            if getattr(child, "_keep", None) is not None:
                head._keep = child._keep
            return head

        def finished_w(req: Any, *a: Any, **kw: Any) -> Any:
            out = finished(req, *a, **kw)
            self.by_rid.pop(req.rid, None)
            return out

        tree.insert = insert_w
        tree._split_node = split_w
        tree.cache_finished_req = finished_w

    def get_priority(self, node: Any) -> Tuple:
        return (getattr(node, "_keep", 0) or 0, node.last_access_time)

    def stats(self) -> Dict[str, Any]:
        return {"p": self.p, "requests": self.requests, "kept_requests": self.kept_requests,
                "promoted_nodes": self.promoted}


def _attach_reuse(strat: ReuseGapStrategy, tree: Any) -> None:
    attach(tree, strat)


ReuseGapStrategy.attach = _attach_reuse  # type: ignore[attr-defined]

POLICIES: Dict[str, Callable[[], Any]] = {
    "reuse": ReuseGapStrategy,
    "gen": lambda: DeadTailStrategy(align=0),  # generated tokens first, then LRU
    "gen512": lambda: DeadTailStrategy(align=512),  # + the prompt's partial 512-token block
    "gen512lfu": lambda: DeadTailStrategy(align=512, inner="lfu"),
    "sample10": lambda: SampledKeepStrategy(0.10),
    "sample25": lambda: SampledKeepStrategy(0.25),
    "sample50": lambda: SampledKeepStrategy(0.50),
}
BUILT: List[ReuseGapStrategy] = []  # strategies built since install(), newest last
_installed = False


def track_ownership(cls: Any) -> None:
    """Tag the nodes each insert creates with ``(rid, prompt length)`` of the request being
    cached (class-level wraps on ``cls``, a RadixCache class; idempotent)."""
    if getattr(cls, "_own_tracked", False):
        return
    fin, unfin, ins, split = (cls.cache_finished_req, cls.cache_unfinished_req, cls.insert,
                              cls._split_node)

    def with_owner(fn: Callable) -> Callable:
        def wrapped(self: Any, req: Any, *a: Any, **kw: Any) -> Any:
            prev = _CURRENT[0]
            _CURRENT[0] = (req.rid, len(req.origin_input_ids))
            try:
                return fn(self, req, *a, **kw)
            finally:
                _CURRENT[0] = prev
        return wrapped

    def insert(self: Any, params: Any) -> Any:
        res = ins(self, params)
        own = _CURRENT[0]
        if own is not None:
            for n in _walk(self, params.key):
                if getattr(n, "_own", None) is None:
                    n._own = own
        return res

    def _split_node(self: Any, key: Any, child: Any, split_len: int) -> Any:
        head = split(self, key, child, split_len)
        own = getattr(child, "_own", None)
        if own is not None:
            head._own = own
        return head

    cls.cache_finished_req = with_owner(fin)
    cls.cache_unfinished_req = with_owner(unfin)
    cls.insert = insert
    cls._split_node = _split_node
    cls._own_tracked = True


def install() -> None:
    """Make ``radix_eviction_policy=<name>`` build these policies in the imported SGLang."""
    global _installed
    if _installed:
        return
    from sglang.srt import server_args
    from sglang.srt.mem_cache import radix_cache

    track_ownership(radix_cache.RadixCache)

    server_args.add_radix_eviction_policy_choices(
        [n for n in POLICIES if n not in server_args.RADIX_EVICTION_POLICY_CHOICES])
    orig_init = radix_cache.RadixCache.__init__

    def __init__(self: Any, params: Any) -> None:
        name = params.eviction_policy.lower()
        if name not in POLICIES:
            return orig_init(self, params)
        params.eviction_policy = "lru"
        try:
            orig_init(self, params)
        finally:
            params.eviction_policy = name
        self.eviction_policy = name
        strat = POLICIES[name]()
        strat.attach(self)
        BUILT.append(strat)

    radix_cache.RadixCache.__init__ = __init__
    _installed = True


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="list the policies and exit")
    a = p.parse_args(argv)
    for name, make in POLICIES.items():
        print(f"{name}: {type(make()).__name__}")
    del a
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
