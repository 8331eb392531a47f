"""What a Mooncake-format trace offers an eviction policy: reuse gaps and what predicts reuse.

Works on the trace file alone (no SGLang), in timestamp order, at the trace's block granularity
(``hash_ids``, 512 tokens). For each request it finds the earlier request with which it shares
the longest block prefix of at least ``--min-blocks`` blocks (block 0 is a system prompt every
request of the Mooncake conversation trace shares; 2 skips it): that is the request it
*continues*, and the distance between the two (in requests) is a *reuse gap*. It prints

* the share of prompt tokens that any cache could hit (block-prefix with any earlier request) and
  the share that comes from continuing an earlier request (>= min-blocks shared);
* reuse gaps: percentiles, in requests and in trace seconds;
* the hazard of a request's state being continued, by its age in requests (continued in this
  age bin / still not continued at its start), over requests with a full ``--horizon`` after them;
* the probability that a state is continued within ``--horizon`` requests, by what is known
  online when it is cached: its turn (how many earlier states it continues), its prompt length
  and its output length;
* how many prompts end in a partial block and how many of those a later request repeats (block
  prefix through the partial block).

The driver side (what LRU, clairvoyant and bench/policies.py achieve on the same requests) is
bench/policy_bench.py sweep. ``Census`` (installed by ``policy_bench.py driver --census``) counts,
inside a driver run, the tokens each eviction frees and the tokens left evictable, by kind
(whole prompt blocks, the prompt's partial last block, generated) and by whether a later request
needs them. ``--results FILE`` (repeatable) summarises sweep JSON: per policy, hit rate minus
LRU's, share of the LRU-to-clairvoyant gap and TTFT p99 change, each with a 95 % interval over
the runs, and the censuses.

    python3 bench/evict_study.py --help
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from policies import path_start
from workloads import lcp

BINS = (0, 25, 50, 100, 200, 400, 800, 1600, 3200)


def load(path: Path) -> List[Dict[str, Any]]:
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [r for _, r in sorted(((r["timestamp"], i), r) for i, r in enumerate(rows))]


def links(recs: List[Dict[str, Any]], min_blocks: int) -> Tuple[List[Optional[int]], List[int]]:
    """prev[i]: the earlier request i continues (longest shared block prefix >= min_blocks,
    latest on ties) or None; shared[i]: that prefix in blocks."""
    by_head: Dict[Tuple[int, ...], List[int]] = defaultdict(list)
    prev: List[Optional[int]] = [None] * len(recs)
    shared = [0] * len(recs)
    for i, r in enumerate(recs):
        h = r["hash_ids"]
        if len(h) < min_blocks:
            continue
        cands = by_head[tuple(h[:min_blocks])]
        best, bl = None, min_blocks - 1
        for j in cands:
            n = lcp(h, recs[j]["hash_ids"])
            if n >= bl:
                best, bl = j, n
        if best is not None:
            prev[i], shared[i] = best, bl
        cands.append(i)
    return prev, shared


def study(recs: List[Dict[str, Any]], n: int, horizon: int, min_blocks: int,
          block: int) -> Dict[str, Any]:
    recs = recs[:n + horizon]
    prev, shared = links(recs, min_blocks)
    nxt: List[Optional[int]] = [None] * len(recs)
    for i, j in enumerate(prev):
        if j is not None and nxt[j] is None:
            nxt[j] = i
    turn = [1] * len(recs)
    for i, j in enumerate(prev):
        if j is not None:
            turn[i] = turn[j] + 1
    win = range(n)
    total = sum(recs[i]["input_length"] for i in win)
    seen: Dict[Tuple[int, ...], bool] = {}
    any_hit = 0
    for i in win:
        h = recs[i]["hash_ids"]
        k = 0
        while k < len(h) and tuple(h[:k + 1]) in seen:
            k += 1
        any_hit += min(k * block, recs[i]["input_length"])
        for m in range(1, len(h) + 1):
            seen[tuple(h[:m])] = True
    cont_hit = sum(min(shared[i] * block, recs[i]["input_length"])
                   for i in win if prev[i] is not None and prev[i] < n)
    gaps = sorted(nxt[i] - i for i in win if nxt[i] is not None and nxt[i] - i <= horizon)
    secs = sorted((recs[nxt[i]]["timestamp"] - recs[i]["timestamp"]) / 1e3
                  for i in win if nxt[i] is not None and nxt[i] - i <= horizon)

    def pct(xs: List[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    hazard = []
    alive = n
    for lo, hi in zip(BINS, BINS[1:]):
        if lo >= horizon:
            break
        hi = min(hi, horizon)
        c = sum(lo < g <= hi for g in gaps)
        hazard.append({"ages": f"({lo}, {hi}]", "continued": c, "at_risk": alive,
                       "per_100_requests": 100.0 * c / (hi - lo) / alive if alive else 0.0})
        alive -= c

    def group(name: str, key: Any) -> List[Dict[str, Any]]:
        rows: Dict[Any, List[int]] = defaultdict(list)
        for i in win:
            rows[key(i)].append(i)
        out = []
        for k in sorted(rows, key=lambda x: (isinstance(x, str) and x.startswith('>='),
                                             str(x).lstrip('[>= ').split(',')[0].zfill(9))):
            idx = rows[k]
            c = [nxt[i] is not None and nxt[i] - i <= horizon for i in idx]
            out.append({name: k, "requests": len(idx), "p_continued": sum(c) / len(idx),
                        "mean_input": statistics.fmean(recs[i]["input_length"] for i in idx)})
        return out

    def size_bin(x: int, edges: Sequence[int]) -> str:
        k = bisect.bisect_right(edges, x)
        lo = edges[k - 1] if k else 0
        return f"[{lo}, {edges[k]})" if k < len(edges) else f">= {lo}"

    # A prompt's partial last block: does a later request (within the horizon) repeat the
    # prompt's block prefix through that block? (If not, it is never a cache hit.)
    later: Dict[int, int] = {}  # chained hash of a block prefix -> latest request with it
    chains: List[List[int]] = []
    for i, r in enumerate(recs):
        h, hs = 0, []
        for b in r["hash_ids"][:-(-r["input_length"] // block)]:
            h = hash((h, b))
            hs.append(h)
        chains.append(hs)
        for x in hs:
            later[x] = i
    partial = partial_rep = 0
    for i in win:
        if recs[i]["input_length"] % block:
            partial += 1
            partial_rep += later.get(chains[i][-1], i) > i
    in_edges = (2048, 8192, 32768)
    out_edges = (128, 512, 2048)
    return {
        "requests": n, "horizon": horizon, "min_blocks": min_blocks,
        "prompt_tokens": total,
        "any_prefix_hit_share": any_hit / total,
        "continuation_hit_share": cont_hit / total,
        "continued_within_horizon": len(gaps) / n,
        "partial_last_block": partial, "partial_last_block_repeated": partial_rep,
        "gap_requests_p10_p50_p90": [pct(gaps, q) for q in (0.1, 0.5, 0.9)],
        "gap_seconds_p10_p50_p90": [pct(secs, q) for q in (0.1, 0.5, 0.9)],
        "hazard_by_age": hazard,
        "by_turn": group("turn", lambda i: min(turn[i], 3)),
        "by_input": group("input", lambda i: size_bin(recs[i]["input_length"], in_edges)),
        "by_output": group("output", lambda i: size_bin(recs[i]["output_length"], out_edges)),
    }


def report(s: Dict[str, Any]) -> str:
    g, t = s["gap_requests_p10_p50_p90"], s["gap_seconds_p10_p50_p90"]
    lines = [
        f"{s['requests']:,} requests ({s['prompt_tokens']:,} prompt tokens), horizon "
        f"{s['horizon']:,} requests, continuation = >= {s['min_blocks']} shared blocks",
        f"prompt tokens in a block prefix of an earlier request: {s['any_prefix_hit_share']:.3f};"
        f" from continuing an earlier request: {s['continuation_hit_share']:.3f}",
        f"prompts with a partial last block: {s['partial_last_block']}; of them repeated (block "
        f"prefix through it) by a later request: {s['partial_last_block_repeated']}",
        f"states continued within the horizon: {s['continued_within_horizon']:.3f}; gap p10 / "
        f"p50 / p90: {g[0]} / {g[1]} / {g[2]} requests, {t[0]:.0f} / {t[1]:.0f} / {t[2]:.0f} s",
        "", "| age, requests | continued | at risk | hazard per 100 requests |",
        "| --- | ---: | ---: | ---: |"]
    for h in s["hazard_by_age"]:
        lines.append(f"| {h['ages']} | {h['continued']} | {h['at_risk']} | "
                     f"{h['per_100_requests']:.3f} |")
    for key, title in (("by_turn", "turn (3 = 3 or more)"), ("by_input", "prompt tokens"),
                       ("by_output", "output tokens")):
        name = key[3:]
        lines += ["", f"| {title} | requests | P(continued within horizon) | mean prompt |",
                  "| --- | ---: | ---: | ---: |"]
        for r in s[key]:
            lines.append(f"| {r[name]} | {r['requests']} | {r['p_continued']:.3f} | "
                         f"{r['mean_input']:,.0f} |")
    return "\n".join(lines)


# -- census of a driver run: what an eviction order drops and keeps, by kind of token --
#
# Installed by ``policy_bench.py driver --census`` before the run builds its scheduler. Each
# cached token has an owner (bench/policies.py ``track_ownership``: the request that first cached
# it, with its prompt length L) and a kind: ``generated`` (path position >= L), ``prompt_tail``
# (the prompt after its last ``block``-token boundary: the trace's partial last block) or
# ``prompt_block`` (whole blocks). A token is ``reused`` if a request not yet admitted has its
# path (root to that token) as a prompt prefix: the clairvoyant's notion of a next use, from the
# same index (bench/clairvoyant.py FutureIndex, 64-token granule, admissions followed like
# clairvoyant.install). The census counts evicted tokens (by kind, by depth of the token, by the
# owner's turn: 1 + the turns of the earlier request whose prompt it continues for >= 2 blocks)
# and, every ``sample_every``-th eviction call, the evictable tokens still cached (unlocked
# nodes: what the order chose to keep so far) by kind. Observation only.

KINDS = ("prompt_block", "prompt_tail", "generated", "unknown")
DEPTH_EDGES = (4096, 16384, 32768)


class Census:
    def __init__(self, trace: Any, block: int = 512, granule: int = 64,
                 sample_every: int = 8) -> None:
        self.trace = trace
        self.block = block
        self.granule = granule
        self.sample_every = sample_every
        self.cv: Any = None  # a ClairvoyantStrategy (tree None), for admissions and path hashes
        self.turn: Dict[str, int] = {}
        self.evicted: Dict[str, List[int]] = {k: [0, 0] for k in KINDS}  # [reused, dead]
        self.by_depth: Dict[str, List[int]] = defaultdict(lambda: [0, 0])
        self.by_turn: Dict[str, List[int]] = defaultdict(lambda: [0, 0])
        self.kept: Dict[str, List[int]] = {k: [0, 0] for k in KINDS}  # summed over snapshots
        self.snapshots = self.calls = 0

    def _setup(self) -> None:
        import clairvoyant

        reqs = clairvoyant.arrival_order(self.trace)
        self.cv = clairvoyant.strategy_for(self.trace, self.granule)
        g = self.granule
        per = max(1, self.block // g)  # granules per block
        latest: Dict[int, int] = {}  # chained hash at a block boundary -> latest request
        turns: List[int] = []
        for i, r in enumerate(reqs):
            toks = r.input_ids
            h, hs = clairvoyant._ROOT_HASH, []
            for b in range(len(toks) // g):
                h = hash((h, tuple(toks[b * g:(b + 1) * g])))
                if (b + 1) % per == 0:
                    hs.append(h)
            prev = None
            for k in range(1, len(hs)):  # >= 2 shared blocks
                j = latest.get(hs[k])
                if j is None:
                    break
                prev = j
            turns.append(turns[prev] + 1 if prev is not None else 1)
            for hb in hs:
                latest[hb] = i
            self.turn[r.rid] = turns[-1]

    # -- admissions (as clairvoyant.install follows them) --
    def admit(self, rid: str) -> None:
        if self.cv is None:  # the trace is complete once the scheduler runs
            self._setup()
        self.cv.admit(rid)

    def unadmit(self, rid: str) -> None:
        if self.cv is None:
            self._setup()
        self.cv.unadmit(rid)

    def _boundaries(self, node: Any) -> Tuple[int, List[Tuple[int, int]]]:
        """(path start, [(path length, hash)] at each granule boundary inside the node's key,
        its end included when it is one)."""
        cached = getattr(node, "_cz", None)
        if cached is not None and cached[0] is node.parent and cached[1] == len(node.key):
            return cached[2], cached[3]
        pinfo = self.cv._path(node.parent)
        g = self.granule
        start = pinfo[2]
        toks = pinfo[4] + list(node.key.token_ids)
        base = start - len(pinfo[4])
        h, out = pinfo[3], []
        for b in range(len(toks) // g):
            h = hash((h, tuple(toks[b * g:(b + 1) * g])))
            end = base + (b + 1) * g
            if start < end <= start + len(node.key):
                out.append((end, h))
        node._cz = (node.parent, len(node.key), start, out)
        return start, out

    def _reused_upto(self, bounds: List[Tuple[int, int]], a: int, b: int) -> int:
        """Largest boundary in (a, b] whose path prefix a request not yet admitted has (next use
        is monotone along a path, so binary search); a if none."""
        cands = [x for x in bounds if a < x[0] <= b]
        lo, hi, best = 0, len(cands) - 1, a
        fx, cv = self.cv.fx, self.cv
        while lo <= hi:
            mid = (lo + hi) // 2
            if fx.first(cands[mid][1], cands[mid][0], [], cv.admitted, cv.lo) < fx.never:
                best, lo = cands[mid][0], mid + 1
            else:
                hi = mid - 1
        return best

    def _split(self, node: Any, a: int, b: int) -> List[Tuple[str, int, int, int]]:
        """(kind, reused tokens, dead tokens, owner turn) for the node's path range [a, b)."""
        own = getattr(node, "_own", None)
        start, bounds = self._boundaries(node)
        q = self._reused_upto(bounds, a, b)
        if own is None:
            return [("unknown", q - a, b - q, 0)]
        plen = own[1]
        cuts = (("prompt_block", plen // self.block * self.block), ("prompt_tail", plen),
                ("generated", b))
        out, lo = [], a
        for kind, hi in cuts:
            hi = min(max(hi, lo), b)
            if hi > lo:
                r = max(0, min(q, hi) - lo)
                out.append((kind, r, hi - lo - r, self.turn.get(own[0], 0)))
            lo = hi
        return out

    def on_free(self, node: Any, keep: int) -> None:
        """The node's key from ``keep`` on is about to be freed."""
        if self.cv is None:
            self._setup()
        start = path_start(node)
        a, b = start + keep, start + len(node.key)
        for kind, r, d, t in self._split(node, a, b):
            self.evicted[kind][0] += r
            self.evicted[kind][1] += d
            depth = depth_label(a)
            self.by_depth[depth][0] += r
            self.by_depth[depth][1] += d
            tk = "unknown" if t == 0 else str(min(t, 3)) if t < 3 else ">= 3"
            self.by_turn[tk][0] += r
            self.by_turn[tk][1] += d

    def on_evict_call(self, tree: Any) -> None:
        if self.cv is None:
            self._setup()
        self.calls += 1
        if (self.calls - 1) % self.sample_every:
            return
        self.snapshots += 1
        stack = list(tree.root_node.children.values())
        while stack:
            n = stack.pop()
            stack.extend(n.children.values())
            if n.lock_ref:
                continue
            start = path_start(n)
            for kind, r, d, _ in self._split(n, start, start + len(n.key)):
                self.kept[kind][0] += r
                self.kept[kind][1] += d

    def stats(self) -> Dict[str, Any]:
        def rd(x: List[float]) -> Dict[str, float]:
            return {"reused": x[0], "dead": x[1]}

        snaps = max(1, self.snapshots)
        return {"evicted": {k: rd(v) for k, v in self.evicted.items()},
                "evicted_by_depth": {k: rd(self.by_depth[k])
                                     for k in sorted(self.by_depth, key=_bin_order)},
                "evicted_by_turn": {k: rd(self.by_turn[k])
                                    for k in sorted(self.by_turn, key=_bin_order)},
                "evictable_mean": {k: rd([v[0] / snaps, v[1] / snaps])
                                   for k, v in self.kept.items()},
                "snapshots": self.snapshots, "evict_calls": self.calls}


def depth_label(pos: int) -> str:
    """The depth bin (path position of the first freed token) as '[lo, hi)' or '>= lo'."""
    lo = 0
    for e in DEPTH_EDGES:
        if pos < e:
            return f"[{lo}, {e})"
        lo = e
    return f">= {lo}"


def _bin_order(label: str) -> Tuple[int, str]:
    digits = "".join(ch if ch.isdigit() else " " for ch in label).split()
    return (int(digits[0]) if digits else 1 << 30, label)


CENSUS: List[Census] = []


def install_census(block: int = 512, sample_every: int = 8) -> None:
    """Count what each eviction frees and, every ``sample_every``-th call, what stays evictable
    (class-level wraps on RadixCache and Scheduler; the trace is the one the driver builds)."""
    import workloads
    from sglang.srt.managers.scheduler import Scheduler
    from sglang.srt.mem_cache.radix_cache import RadixCache

    import policies

    policies.track_ownership(RadixCache)
    build = workloads.build

    def build_w(*a: Any, **kw: Any) -> Any:
        trace = build(*a, **kw)
        CENSUS.append(Census(trace, block, sample_every=sample_every))
        return trace

    workloads.build = build_w
    evict, delete_leaf = RadixCache.evict, RadixCache._delete_leaf
    evict_tail = RadixCache._evict_tail

    def evict_w(self: Any, params: Any) -> Any:
        if CENSUS:
            CENSUS[-1].on_evict_call(self)
        return evict(self, params)

    def delete_leaf_w(self: Any, node: Any) -> Any:
        if CENSUS:
            CENSUS[-1].on_free(node, 0)
        return delete_leaf(self, node)

    def evict_tail_w(self: Any, node: Any, num_tokens: int) -> int:
        page = self.page_size
        tail = -(-num_tokens // page) * page
        keep = len(node.key) - tail
        if CENSUS and 0 < keep and keep % page == 0:  # a whole leaf goes through _delete_leaf
            CENSUS[-1].on_free(node, keep)
        return evict_tail(self, node, num_tokens)

    RadixCache.evict, RadixCache._delete_leaf = evict_w, delete_leaf_w
    RadixCache._evict_tail = evict_tail_w
    get_next, update_running = Scheduler.get_next_batch_to_run, Scheduler.update_running_batch

    def get_next_w(self: Any) -> Any:
        batch = get_next(self)
        if CENSUS and batch is not None and batch.forward_mode.is_extend():
            for req in batch.reqs:
                CENSUS[-1].admit(req.rid)
        return batch

    def update_running_w(self: Any, batch: Any) -> Any:
        before = [(r, r.retraction_count) for r in batch.reqs]
        out = update_running(self, batch)
        for r, n in before:
            if CENSUS and r.retraction_count != n:
                CENSUS[-1].unadmit(r.rid)
        return out

    Scheduler.get_next_batch_to_run = get_next_w
    Scheduler.update_running_batch = update_running_w


def census_table(stats: Dict[str, Any]) -> str:
    """Evicted and mean evictable tokens by kind, with the reused share."""
    lines = ["| tokens | kind | reused later | never reused | total |",
             "| --- | --- | ---: | ---: | ---: |"]
    for what, key in (("evicted", "evicted"), ("evictable (mean)", "evictable_mean"),
                      ("evicted by depth", "evicted_by_depth"),
                      ("evicted by owner turn", "evicted_by_turn")):
        for k in sorted(stats[key], key=_bin_order) if key.startswith("evicted_by") \
                else stats[key]:
            v = stats[key][k]
            if v["reused"] + v["dead"] == 0:
                continue
            lines.append(f"| {what} | {k} | {v['reused']:,.0f} | {v['dead']:,.0f} | "
                         f"{v['reused'] + v['dead']:,.0f} |")
    return "\n".join(lines)


def _mean_ci(xs: List[float]) -> Tuple[float, float]:
    from policy_bench import interval

    return interval(xs)


def gaps_from_results(*paths: Path) -> str:
    """Per policy, over the runs (trace starts or seeds) of a policy_bench.py sweep --out JSON:
    hit rate minus LRU's, the share of the LRU-to-clairvoyant hit-rate gap it closes, and its
    modelled TTFT p99 change against LRU (negative = better), each as mean +- 95 % interval;
    then the census (mean over the runs) of every policy that has one."""
    res: Dict[str, Dict[str, Any]] = {}
    for path in paths:  # several sweeps of the same runs (e.g. one more policy) merge
        for p, runs in json.loads(Path(path).read_text())["results"].items():
            res.setdefault(p, {}).update(runs)
    if "lru" not in res:
        return "(results need lru)"
    reps = sorted(res["lru"])
    out = ["| policy | hit rate | - LRU | share of the LRU-clairvoyant gap | TTFT p99 vs LRU |",
           "| --- | ---: | ---: | ---: | ---: |"]
    for p in res:
        rs = [r for r in reps if r in res[p]]
        if not rs:
            continue
        hit = [res[p][r]["token_hit_rate"] for r in rs]
        d = [res[p][r]["token_hit_rate"] - res["lru"][r]["token_hit_rate"] for r in rs]
        tt = [res[p][r]["ttft_p99_s"] / res["lru"][r]["ttft_p99_s"] - 1 for r in rs]
        share = "-"
        if "clairvoyant" in res and p != "lru":
            sh = [(res[p][r]["token_hit_rate"] - res["lru"][r]["token_hit_rate"])
                  / (res["clairvoyant"][r]["token_hit_rate"] - res["lru"][r]["token_hit_rate"])
                  for r in rs if r in res["clairvoyant"]]
            if sh:
                m, h = _mean_ci(sh)
                share = f"{m:+.1%} +- {h:.1%}"
        (mh, hh), (md, hd), (mt, ht) = _mean_ci(hit), _mean_ci(d), _mean_ci(tt)
        out.append(f"| {p} ({len(rs)} runs) | {mh:.4f} +- {hh:.4f} | {md:+.4f} +- {hd:.4f} | "
                   f"{share} | {mt:+.1%} +- {ht:.1%} |")
    for p in res:
        cen = [res[p][r]["census"] for r in reps if r in res[p] and "census" in res[p][r]]
        if not cen:
            continue
        avg: Dict[str, Any] = {}
        for key in ("evicted", "evictable_mean", "evicted_by_depth", "evicted_by_turn"):
            avg[key] = {}
            for c in cen:
                for k, v in c[key].items():
                    a = avg[key].setdefault(k, {"reused": 0.0, "dead": 0.0})
                    a["reused"] += v["reused"] / len(cen)
                    a["dead"] += v["dead"] / len(cen)
        out += ["", f"census, {p} (mean over {len(cen)} runs):", census_table(avg)]
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--trace", type=Path,
                   default=Path(__file__).resolve().parents[2] / "shared" / "traces"
                   / "mooncake-conversation-first-half.jsonl")
    p.add_argument("--start", type=int, default=0, help="first request (timestamp order)")
    p.add_argument("--requests", type=int, default=1000, help="requests studied")
    p.add_argument("--horizon", type=int, default=3000,
                   help="requests after each one in which a continuation is looked for")
    p.add_argument("--min-blocks", type=int, default=2)
    p.add_argument("--block", type=int, default=512, help="tokens per hash id")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--results", type=Path, action="append",
                   help="summarise policy_bench.py sweep --out JSON files instead (merged; gap "
                        "shares with 95 %% intervals, census tables); repeatable")
    a = p.parse_args(argv)
    if a.results:
        print(gaps_from_results(*a.results))
        return 0
    recs = load(a.trace)[a.start:]
    if not recs:
        raise SystemExit(f"evict_study: no requests at start {a.start} in {a.trace}")
    n = min(a.requests, len(recs))
    s = study(recs, n, a.horizon, a.min_blocks, a.block)
    print(json.dumps(s, indent=1) if a.json else report(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
