"""CPU cost of one ``RadixCache.evict`` call at production tree sizes, pristine vs patched.

``RadixCache.evict`` builds and heapifies a heap over every evictable leaf on each call, so a call
costs O(leaves) before it frees anything. The series evicts the shortfall only (0001, 0002) and
the page-aligned tail of a leaf (0003), so it calls ``evict`` with smaller demands, and possibly
more often, than the pin. This measures the cost of a call of a one-page demand on trees of 1K,
10K and 100K evictable leaves, in the pristine and the patched source tree, in the same run, and
reports the ratio.

Each tree runs in its own process (``--worker``) with the CPU environment; a tree is leaves of
``--leaf-pages`` pages under a shared prefix of ``--prefix-pages`` pages, one group per 16 leaves
(many system prompts, many users), over a real ``PagedTokenToKVPoolAllocator`` (no KV buffers:
only slot indices matter for eviction). Timings are process CPU time, the median of ``--calls``
calls; the tree loses at most one leaf per call, so every call sees nearly the same tree.

    build/venv/bin/python bench/evict_cost.py --help
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
TREES = {
    "pristine": ROOT / "build" / "work" / "pristine" / "python",
    "patched": ROOT / "build" / "work" / "tree" / "python",
}


def worker(leaves: List[int], page: int, leaf_pages: int, prefix_pages: int,
           calls: int, policies: List[str]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """policy -> leaves -> row. With several policies the calls alternate between them on the
    same tree (the strategy of a RadixCache built with each ``eviction_policy``); leaves
    alternate between priority 0 and 1, which only the ``priority`` policy reads."""
    import sglang_cpu  # noqa: F401  (before any sglang import)
    import torch

    from sglang.srt.mem_cache.allocator import PagedTokenToKVPoolAllocator
    from sglang.srt.mem_cache.base_prefix_cache import EvictParams, InsertParams
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams
    from sglang.srt.mem_cache.radix_cache import RadixCache, RadixKey

    out: Dict[str, Dict[str, Dict[str, float]]] = {p: {} for p in policies}
    for n in leaves:
        groups = -(-n // 16)
        # every insert takes the whole key first and hands the shared prefix back
        tokens = ((groups + 1) * prefix_pages + (n + 4) * leaf_pages) * page
        alloc = PagedTokenToKVPoolAllocator(tokens, page_size=page, dtype=torch.bfloat16,
                                            device="cpu", kvcache=None, need_sort=False)
        tree = RadixCache(CacheInitParams(disable=False, req_to_token_pool=None,
                                          token_to_kv_pool_allocator=alloc, page_size=page))
        next_id = [0]

        def insert_leaf(group: int) -> None:
            prefix = [1_000_000 + group] * (prefix_pages * page)
            leaf = [next_id[0] % 999_983 + 1, next_id[0] // 999_983 + 1]
            leaf += [7] * (leaf_pages * page - 2)
            next_id[0] += 1
            key = prefix + leaf
            value = alloc.alloc(len(key))
            res = tree.insert(InsertParams(key=RadixKey(key), value=value,
                                           priority=next_id[0] % 2))
            # the shared prefix was already there: free the duplicate slots, as the cache does
            if res.prefix_len:
                alloc.free(value[: res.prefix_len])

        for i in range(n):
            insert_leaf(i // 16)
        strategies = {p: RadixCache(CacheInitParams(
            disable=False, req_to_token_pool=None, token_to_kv_pool_allocator=alloc,
            page_size=page, eviction_policy=p)).eviction_strategy for p in policies}
        samples: Dict[str, List[float]] = {p: [] for p in policies}
        freed = dict.fromkeys(policies, 0)
        for c in range(calls):
            for p in policies:
                tree.eviction_strategy = strategies[p]
                t0 = time.process_time()
                res = tree.evict(EvictParams(num_tokens=page))
                samples[p].append(time.process_time() - t0)
                freed[p] += res.num_tokens_evicted
        for p in policies:
            out[p][str(n)] = {
                "ms_per_call": 1e3 * statistics.median(samples[p]),
                "tokens_freed_per_call": freed[p] / calls,
                "evictable_leaves": float(len(tree.evictable_leaves)),
            }
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--leaves", default="1000,10000,100000",
                   help="comma-separated numbers of evictable leaves (default %(default)s)")
    p.add_argument("--page-size", type=int, default=64)
    p.add_argument("--leaf-pages", type=int, default=2, help="pages per leaf (default 2)")
    p.add_argument("--prefix-pages", type=int, default=32,
                   help="pages of the prefix shared by each group of 16 leaves (default 32)")
    p.add_argument("--calls", type=int, default=30, help="timed calls per size (median)")
    p.add_argument("--policies", default="lru",
                   help="comma-separated --radix-eviction-policy values; with more than one, "
                        "the calls alternate between them on the same tree and the table adds "
                        "each one's cost relative to the first (default lru)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    leaves = [int(x) for x in args.leaves.split(",")]
    if args.worker:
        json.dump(worker(leaves, args.page_size, args.leaf_pages, args.prefix_pages, args.calls,
                         args.policies.split(",")), sys.stdout)
        return 0

    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    for name, path in TREES.items():
        if not path.is_dir():
            raise SystemExit(f"evict_cost: no {name} tree at {path}: run 'make apply' first")
        env = dict(os.environ, PYTHONPATH=f"{path}:{ROOT / 'ci' / 'cpu'}")
        argv2 = [sys.executable, __file__, "--worker", "--leaves", args.leaves,
                 "--page-size", str(args.page_size), "--leaf-pages", str(args.leaf_pages),
                 "--prefix-pages", str(args.prefix_pages), "--calls", str(args.calls),
                 "--policies", args.policies]
        proc = subprocess.run(argv2, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"evict_cost: the {name} worker failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(proc.stdout)

    first, *others = args.policies.split(",")
    print(f"RadixCache.evict of one page ({args.page_size} tokens), median of {args.calls} "
          f"calls, process CPU time, eviction policy {first}")
    print("| evictable leaves | pristine ms/call | patched ms/call | patched / pristine "
          "| tokens freed per call (pristine / patched) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n in leaves:
        a, b = results["pristine"][first][str(n)], results["patched"][first][str(n)]
        print(f"| {n:,} | {a['ms_per_call']:.2f} | {b['ms_per_call']:.2f} | "
              f"x{b['ms_per_call'] / a['ms_per_call']:.2f} | "
              f"{a['tokens_freed_per_call']:.0f} / {b['tokens_freed_per_call']:.0f} |")
    for p in others:
        print(f"\n{p} against {first}, calls alternating on the same tree (ms per call):")
        print(f"| evictable leaves | pristine {p} / {first} | patched {p} / {first} |")
        print("| ---: | ---: | ---: |")
        for n in leaves:
            r = [results[t][p][str(n)]["ms_per_call"] / results[t][first][str(n)]["ms_per_call"]
                 for t in ("pristine", "patched")]
            print(f"| {n:,} | x{r[0]:.2f} | x{r[1]:.2f} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
