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
  and its output length.

The driver side (what LRU, clairvoyant and bench/policies.py achieve on the same requests) is
bench/policy_bench.py sweep; ``--results FILE`` prints the hit-rate gaps from its JSON.

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

BINS = (0, 25, 50, 100, 200, 400, 800, 1600, 3200)


def load(path: Path) -> List[Dict[str, Any]]:
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [r for _, r in sorted(((r["timestamp"], i), r) for i, r in enumerate(rows))]


def lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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

    in_edges = (2048, 8192, 32768)
    out_edges = (128, 512, 2048)
    return {
        "requests": n, "horizon": horizon, "min_blocks": min_blocks,
        "prompt_tokens": total,
        "any_prefix_hit_share": any_hit / total,
        "continuation_hit_share": cont_hit / total,
        "continued_within_horizon": len(gaps) / n,
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


def gaps_from_results(path: Path) -> str:
    res = json.loads(path.read_text())["results"]
    if "lru" not in res or "clairvoyant" not in res:
        return "(results need lru and clairvoyant)"
    out = []
    for r in sorted(res["lru"]):
        lru, cv = res["lru"][r]["token_hit_rate"], res["clairvoyant"][r]["token_hit_rate"]
        row = f"{r}: LRU {lru:.4f}, clairvoyant {cv:.4f}"
        for p in res:
            if p not in ("lru", "clairvoyant") and r in res[p]:
                x = res[p][r]["token_hit_rate"]
                row += f", {p} {x:.4f} (closes {(x - lru) / (cv - lru):+.0%} of the gap)"
        out.append(row)
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
    p.add_argument("--results", type=Path, help="a policy_bench.py sweep --out JSON to summarise")
    a = p.parse_args(argv)
    recs = load(a.trace)[a.start:]
    if not recs:
        raise SystemExit(f"evict_study: no requests at start {a.start} in {a.trace}")
    n = min(a.requests, len(recs))
    s = study(recs, n, a.horizon, a.min_blocks, a.block)
    print(json.dumps(s, indent=1) if a.json else report(s))
    if a.results:
        print()
        print(gaps_from_results(a.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
