"""Block-level replay of a Mooncake trace for eviction policies: seconds per run, no SGLang.

What bench/sched_driver.py does with SGLang's scheduler and RadixCache in minutes, this does
at the trace's own granularity in a fraction of a second, so that a policy idea can be tried
on many windows before it is run through the real scheduler (bench/policy_bench.py):

* A prompt is its whole 512-token hash blocks (shared by id, as the driver's
  ``trace_prompt`` shares them) followed by a *tail*: the partial last block and the answer,
  which no later prompt of a Mooncake trace repeats.
* Closed loop: ``--running`` requests at a time, admitted in trace order; a request takes
  ``output_length`` steps plus its uncached prompt tokens / 2,048 steps. On admission it
  matches the longest cached block prefix (its hit), locks its path and reserves its missing
  blocks, its tail and its whole answer; when the pool is short it evicts leaves (a block no
  cached block extends, unlocked) in the policy's order, and waits for a finish when eviction
  cannot make room. On finish the path is unlocked and the tail is cached as a leaf.
* Policies (``--policy NAME[:KEY=VALUE...]``):
  ``lru``; ``lfu`` (fewest reuses by other requests, then LRU); ``belady`` (furthest next use
  in admission order first; tails first); ``sample:p=P`` (every 1/P-th request's new blocks are
  kept, the rest go first; blocks another request reuses become kept; LRU within each class);
  ``turn`` (the new blocks of a conversation's second or later turn are kept);
  ``hint:tpr=T:fpr=F[:sticky=1][:horizon=H]`` (the whole path of a finished request is kept
  when its conversation continues in the window, or within the next H requests: the trace-read hint of
  clairvoyant.ContinuationHintStrategy, flagged with probability T when continued and F when
  not; ``sticky``: once kept, kept for good, as SGLang's ``priority`` policy takes the max).

It leaves out what the driver has: page-granular tails (0003), chunked prefill, retraction,
decode-time allocation, the modelled step time. Its hit rates are checked against the driver's
in docs/eviction-study.md.

    python3 bench/evict_sim.py --help
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import evict_study

BLOCK = 512
_SEQ = itertools.count()
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def load(path: str, start: int, n: int) -> List[Dict[str, Any]]:
    recs = []
    with open(path) as f:
        for i, line in enumerate(f):
            if i >= start + n:
                break
            if i >= start:
                try:
                    rec = json.loads(line)
                    rec = {k: rec[k] for k in ("input_length", "output_length", "hash_ids")}
                except (ValueError, KeyError, TypeError) as e:
                    raise SystemExit(f"evict_sim: {path} line {i + 1} is not a Mooncake "
                                     f"request ({type(e).__name__}: {e})") from None
                recs.append(rec)
    if not recs:
        raise SystemExit(f"evict_sim: no request at line {start} of {path}")
    return recs


def continued(recs: Sequence[Dict[str, Any]], horizon: int = 0) -> List[int]:
    """1 for a request whose whole-block prompt (>= 2 blocks) a later request repeats (within
    ``horizon`` requests; 0: anywhere later)."""
    first_after: Dict[Any, int] = {}  # block id -> the earliest later request that has it
    out = [0] * len(recs)
    for i in range(len(recs) - 1, -1, -1):
        ids = recs[i]["hash_ids"][: recs[i]["input_length"] // BLOCK]
        j = first_after.get(ids[-1]) if len(ids) >= 2 else None
        if j is not None and (not horizon or j - i <= horizon):
            out[i] = 1
        for b in ids:
            first_after[b] = i
    return out


def turns(recs: Sequence[Dict[str, Any]]) -> List[int]:
    """A request's turn: 1 + the turn of the request it continues (evict_study.links: the
    longest shared block prefix of >= 2 blocks, latest on ties), 1 if none (what a server can
    know when it caches it)."""
    prev, _ = evict_study.links(list(recs), 2)
    out: List[int] = []
    for p in prev:
        out.append(out[p] + 1 if p is not None else 1)
    return out


def feature_roc(recs: Sequence[Dict[str, Any]]) -> List[Tuple[int, float, float]]:
    """(k, TPR, FPR) of "turn >= k" as a predictor of ``continued``."""
    lab, t = continued(recs), turns(recs)
    pos = max(1, sum(lab))
    neg = max(1, len(lab) - sum(lab))
    return [(k, sum(1 for x, y in zip(lab, t) if x and y >= k) / pos,
             sum(1 for x, y in zip(lab, t) if not x and y >= k) / neg) for k in (2, 3, 4)]


class Block:
    __slots__ = ("key", "parent", "nchild", "lock", "last", "size", "reuses", "kept", "owner",
                 "seq")

    def __init__(self, key: Any, parent: Optional["Block"], size: int, now: float,
                 owner: int) -> None:
        self.key, self.parent, self.size, self.last, self.owner = key, parent, size, now, owner
        self.nchild = self.lock = self.reuses = self.kept = 0
        self.seq = next(_SEQ)  # creation order: breaks ties between equal priorities


def parse_policy(spec: str) -> Tuple[str, Dict[str, float]]:
    name, *rest = spec.split(":")
    if name not in ("lru", "lfu", "belady", "sample", "turn", "hint"):
        raise SystemExit(f"evict_sim: unknown policy {name!r} in {spec!r}")
    kw = {}
    for kv in rest:
        k, _, v = kv.partition("=")
        kw[k] = float(v)
    return name, kw


def replay(recs: Sequence[Dict[str, Any]], pool: int, spec: str, running: int = 128) -> float:
    """Token hit rate of one closed-loop replay of ``recs`` with ``pool`` tokens."""
    policy, kw = parse_policy(spec)
    paths = [r["hash_ids"][: r["input_length"] // BLOCK] for r in recs]
    uses: Dict[Any, List[int]] = {}
    for i, p in enumerate(paths):
        for b in p:
            uses.setdefault(b, []).append(i)
    labels = continued(recs, int(kw.get("horizon", 0))) if policy == "hint" else []
    cache: Dict[Any, Block] = {}
    turn: Dict[int, int] = {}
    used = hit = total = 0
    now, acc, nxt = 0.0, 0.0, 0
    finishing: List[Tuple[float, int]] = []
    active: Dict[int, Block] = {}  # request -> its tail

    def priority(b: Block) -> Tuple[float, ...]:
        if policy == "lfu":
            return (b.reuses, b.last)
        if policy == "belady":
            if isinstance(b.key, tuple):  # a tail: never used again
                return (-float("inf"),)
            u = uses[b.key]
            k = bisect.bisect_left(u, nxt)
            return (-(u[k] if k < len(u) else float("inf")),)
        if policy in ("sample", "turn", "hint"):
            return (b.kept, b.last)
        return (b.last,)

    def evict(need: int) -> None:
        nonlocal used
        heap = [(priority(b), b.seq, b) for b in cache.values() if not b.nchild and not b.lock]
        heapq.heapify(heap)
        while need > 0 and heap:
            _, _, b = heapq.heappop(heap)
            del cache[b.key]
            used -= b.size
            need -= b.size
            par = b.parent
            if par is not None:
                par.nchild -= 1
                if not par.nchild and not par.lock:
                    heapq.heappush(heap, (priority(par), par.seq, par))

    while nxt < len(recs) or finishing:
        while nxt < len(recs) and len(active) < running:
            r, p = recs[nxt], paths[nxt]
            m = 0
            while m < len(p) and p[m] in cache:
                m += 1
            tail = r["input_length"] - len(p) * BLOCK + r["output_length"]
            need = (len(p) - m) * BLOCK + tail
            if pool - used < need:
                evict(need - (pool - used))
            if pool - used < need:
                break
            i = nxt
            nxt += 1
            total += r["input_length"]
            hit += m * BLOCK
            parent: Optional[Block] = None
            prev_owner = None
            for j, key in enumerate(p):
                b = cache.get(key)
                if b is None:
                    b = cache[key] = Block(key, parent, BLOCK, now, i)
                    used += BLOCK
                    if parent is not None:
                        parent.nchild += 1
                elif b.owner != i:
                    b.reuses += 1
                    if j:
                        prev_owner = b.owner
                b.last = now
                b.lock += 1
                parent = b
            turn[i] = turn.get(prev_owner, 1) + 1 if prev_owner is not None else 1
            active[i] = Block(("tail", i), parent, tail, now, i)
            used += tail
            steps = r["output_length"] + (len(p) - m) * BLOCK / 2048.0
            heapq.heappush(finishing, (now + steps, i))
        if not finishing:
            break
        now, i = heapq.heappop(finishing)
        tail_block = active.pop(i)
        kept = 0
        if policy == "sample":
            acc += kw.get("p", 0.25)
            kept = int(acc >= 1.0)
            acc -= kept
        elif policy == "turn":
            kept = int(turn[i] >= 2)
        elif policy == "hint":
            u = (i * 2654435761 % 1000003) / 1000003.0
            kept = int(u < (kw.get("tpr", 1.0) if labels[i] else kw.get("fpr", 0.0)))
        for key in paths[i]:
            b = cache[key]
            b.lock -= 1
            b.last = now
            if policy == "hint":
                b.kept = max(b.kept, kept) if kw.get("sticky") else kept
            elif b.owner == i:
                b.kept = kept
            elif policy == "sample" and b.reuses:
                b.kept = 1
        tail_block.last = now
        if tail_block.parent is not None:
            cache[tail_block.key] = tail_block
            tail_block.parent.nchild += 1
        else:
            used -= tail_block.size
    return hit / total


def interval(xs: List[float]) -> Tuple[float, float]:
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, 0.0
    return m, T95.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / len(xs) ** 0.5


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--trace", required=True, help="Mooncake-format JSONL")
    ap.add_argument("--requests", type=int, default=600, help="requests per window")
    ap.add_argument("--start", type=int, action="append", default=[],
                    help="window start (line of the trace; repeatable; default 0)")
    ap.add_argument("--pool-tokens", type=int, required=True)
    ap.add_argument("--running", type=int, default=128)
    ap.add_argument("--policy", action="append", default=[], help="see above (repeatable)")
    ap.add_argument("--out", help="write the per-window hit rates as JSON here")
    ap.add_argument("--roc", action="store_true",
                    help="also print how well 'turn >= k' predicts a continuation (per window)")
    a = ap.parse_args(argv)
    if not Path(a.trace).is_file():
        raise SystemExit(f"evict_sim: no trace at {a.trace}")
    for spec in a.policy:
        parse_policy(spec)
    starts = a.start or [0]
    rows: Dict[str, Dict[int, float]] = {}
    for s in starts:
        recs = load(a.trace, s, a.requests)
        for spec in ["lru", "belady"] + [p for p in a.policy if p not in ("lru", "belady")]:
            rows.setdefault(spec, {})[s] = replay(recs, a.pool_tokens, spec, a.running)
    print(f"{a.trace}: {a.requests} requests from {starts}, pool {a.pool_tokens:,} tokens, "
          f"{a.running} running ({len(starts)} windows; mean +- 95 % t-interval)")
    print("| policy | hit rate | - LRU | share of the LRU-to-Belady gap |")
    print("| --- | ---: | ---: | ---: |")
    for spec, by in rows.items():
        h = interval([by[s] for s in starts])
        d = interval([by[s] - rows["lru"][s] for s in starts])
        gaps = [rows["belady"][s] - rows["lru"][s] for s in starts]
        if min(gaps) > 1e-9:
            sh = interval([(by[s] - rows["lru"][s]) / g for s, g in zip(starts, gaps)])
            share = f"{sh[0]:+.1%} +- {sh[1]:.1%}"
        else:
            share = "- (no gap in a window)"
        print(f"| {spec} | {h[0]:.4f} +- {h[1]:.4f} | {d[0]:+.4f} +- {d[1]:.4f} | {share} |")
    if a.roc:
        for s in starts:
            recs = load(a.trace, s, a.requests)
            lab = continued(recs)
            pts = ", ".join(f"turn >= {k}: TPR {tp:.2f} FPR {fp:.2f}"
                            for k, tp, fp in feature_roc(recs))
            print(f"window {s}: {sum(lab) / len(lab):.2f} of the requests are continued; {pts}")
    if a.out:
        Path(a.out).write_text(json.dumps({"argv": sys.argv[1:], "hit_rate": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
