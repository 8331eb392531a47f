"""Seeded synthetic traces for bench/sched_driver.py (token ids only, no tokenizer, no model).

Every workload is a function ``(params, seed) -> Trace``; ``WORKLOADS`` maps its name to the
function and its default parameters (override any with ``--wl KEY=VALUE``). Output tokens are
the driver's synthetic tokens (``synthetic_output``): a request's output is a pure function of
its id, so a trace's full token sequences (inputs and outputs, used to size the pool) are known
before it runs. Multi-turn follow-up prompts are still built from the tokens the run actually
produced (``Trace.follow_up``).
"""

from __future__ import annotations

import bisect
import random
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

VOCAB_SIZE = 32000
EOS_ID = 0  # never produced by synthetic_token; ends a request early when max_new_tokens > output_len


def synthetic_token(rid: str, pos: int) -> int:
    """Deterministic in (request id, output position): retract + re-prefill reproduces it."""
    return 1 + (zlib.crc32(rid.encode()) * 7919 + pos * 104729) % (VOCAB_SIZE - 1)


def synthetic_output(rid: str, output_len: int, max_new_tokens: int) -> List[int]:
    out = [synthetic_token(rid, p) for p in range(output_len)]
    if output_len < max_new_tokens and out:
        out[-1] = EOS_ID
    return out


@dataclass
class Request:
    rid: str
    input_ids: List[int]
    output_len: int  # tokens the synthetic model generates
    max_new_tokens: int  # what the scheduler is told (>= output_len; EOS ends it earlier)
    arrival_s: float = 0.0


@dataclass
class Trace:
    name: str
    requests: List[Request]  # known up front (multi-turn: the first round of the first clients)
    params: Dict[str, float]
    # Called when a request finishes: (request, its output ids, modelled time) -> new requests.
    on_finish: Optional[Callable[[Request, List[int], float], List[Request]]] = None
    all_requests: List[Request] = field(default_factory=list)  # every request the run will see

    def follow_up(self, req: Request, output_ids: List[int], now: float) -> List[Request]:
        return self.on_finish(req, output_ids, now) if self.on_finish else []

    def sequences(self) -> Iterable[List[int]]:
        """Input + synthetic output of every request of the trace."""
        for r in self.all_requests or self.requests:
            yield r.input_ids + synthetic_output(r.rid, r.output_len, r.max_new_tokens)


def unique_prefix_tokens(seqs: Iterable[List[int]]) -> int:
    """Tokens in a token-level prefix tree (trie) holding every sequence: the KV a cache with
    unbounded memory would hold. Sorted order: each sequence adds its length minus its longest
    common prefix with the previous one."""
    ordered = sorted(seqs)
    total = 0
    prev: List[int] = []
    for s in ordered:
        lo, hi = 0, min(len(s), len(prev))  # binary search on slice equality (runs in C)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if s[:mid] == prev[:mid]:
                lo = mid
            else:
                hi = mid - 1
        lcp = lo
        total += len(s) - lcp
        prev = s
    return total


def _tokens(rng: random.Random, n: int) -> List[int]:
    return [rng.randrange(1, VOCAB_SIZE) for _ in range(n)]


def _zipf_choice(rng: random.Random, n: int, s: float) -> Callable[[], int]:
    cum: List[float] = []
    acc = 0.0
    for k in range(1, n + 1):
        acc += 1.0 / k**s
        cum.append(acc)
    return lambda: min(n - 1, bisect.bisect_left(cum, rng.random() * acc))


def gsp(p: Dict[str, float], seed: int) -> Trace:
    """Shared system prompts (bench_serving generated-shared-prefix shape): G groups, each an
    S-token system prompt; G*P requests of system + Q-token question, O output tokens, shuffled.
    zipf > 0: each request's group is drawn with probability ~ 1/rank^zipf instead of P per group."""
    rng = random.Random(seed)
    g, per = int(p["groups"]), int(p["prompts_per_group"])
    systems = [_tokens(rng, int(p["system_len"])) for _ in range(g)]
    if p.get("zipf", 0) > 0:
        pick = _zipf_choice(rng, g, p["zipf"])
        groups = [pick() for _ in range(g * per)]
    else:
        groups = [i for i in range(g) for _ in range(per)]
    reqs = []
    for i, gi in enumerate(groups):
        q = _tokens(rng, int(p["question_len"]))
        o = int(p["output_len"])
        reqs.append(Request(f"r{i}", systems[gi] + q, o, o))
    rng.shuffle(reqs)
    return Trace("gsp", reqs, p)


def fewshot(p: Dict[str, float], seed: int) -> Trace:
    """T tasks, each a few-shot exemplar block of uniform [exemplar_min, exemplar_max] tokens
    (not page-aligned); N requests pick a task uniformly and add a question of uniform
    [question_min, question_max] tokens; O output tokens."""
    rng = random.Random(seed)
    blocks = [_tokens(rng, rng.randint(int(p["exemplar_min"]), int(p["exemplar_max"])))
              for _ in range(int(p["tasks"]))]
    reqs = []
    for i in range(int(p["requests"])):
        q = _tokens(rng, rng.randint(int(p["question_min"]), int(p["question_max"])))
        o = int(p["output_len"])
        reqs.append(Request(f"r{i}", rng.choice(blocks) + q, o, o))
    return Trace("fewshot", reqs, p)


def random_wl(p: Dict[str, float], seed: int) -> Trace:
    """N independent prompts (no sharing): input uniform [input_min, input_max], output uniform
    [output_min, output_max]."""
    rng = random.Random(seed)
    reqs = []
    for i in range(int(p["requests"])):
        n = rng.randint(int(p["input_min"]), int(p["input_max"]))
        o = rng.randint(int(p["output_min"]), int(p["output_max"]))
        reqs.append(Request(f"r{i}", _tokens(rng, n), o, o))
    return Trace("random", reqs, p)


def r1(p: Dict[str, float], seed: int) -> Trace:
    """Long-output reasoning: G shared S-token system prompts, N requests of system + Q-token
    question, output uniform [output_min, output_max] ended by EOS, max_new_tokens fixed (the
    scheduler reserves for max_new_tokens, as for a real reasoning model)."""
    rng = random.Random(seed)
    systems = [_tokens(rng, int(p["system_len"])) for _ in range(int(p["groups"]))]
    reqs = []
    for i in range(int(p["requests"])):
        q = _tokens(rng, int(p["question_len"]))
        o = rng.randint(int(p["output_min"]), int(p["output_max"]))
        reqs.append(Request(f"r{i}", rng.choice(systems) + q, o, int(p["max_new_tokens"])))
    return Trace("r1", reqs, p)


def multiturn(p: Dict[str, float], seed: int) -> Trace:
    """bench_multiturn shape: C clients, at most `parallel` active; R rounds each; a round's prompt
    is the previous round's prompt + that round's generated tokens (as produced by the run) +
    `turn_len` new tokens; O output tokens. A client's next round arrives when its previous round
    finishes; a new client starts when one finishes all its rounds."""
    rng = random.Random(seed)
    clients, rounds = int(p["clients"]), int(p["rounds"])
    turn, o = int(p["turn_len"]), int(p["output_len"])
    # All new-turn tokens are drawn up front, so the trace does not depend on finish order.
    turns = [[_tokens(rng, turn) for _ in range(rounds)] for _ in range(clients)]
    state = {"next_client": min(clients, int(p["parallel"]))}

    def rid(c: int, k: int) -> str:
        return f"c{c}-t{k}"

    def first(c: int, now: float) -> Request:
        return Request(rid(c, 0), list(turns[c][0]), o, o, now)

    def on_finish(req: Request, output_ids: List[int], now: float) -> List[Request]:
        c, k = (int(x[1:]) for x in req.rid.split("-"))
        if k + 1 < rounds:
            return [Request(rid(c, k + 1), req.input_ids + list(output_ids) + turns[c][k + 1],
                            o, o, now)]
        if state["next_client"] < clients:
            state["next_client"] += 1
            return [first(state["next_client"] - 1, now)]
        return []

    # The whole trace with synthetic outputs (what on_finish will build), for pool sizing.
    everything: List[Request] = []
    for c in range(clients):
        prompt: List[int] = []
        for k in range(rounds):
            if k:
                prompt = prompt + synthetic_output(rid(c, k - 1), o, o)
            prompt = prompt + turns[c][k]
            everything.append(Request(rid(c, k), prompt, o, o))
    initial = [first(c, 0.0) for c in range(state["next_client"])]
    return Trace("multiturn", initial, p, on_finish, everything)


# name -> (generator, default parameters). Sizes are scaled down from the upstream defaults
# where a full run would not fit the CPU budget; bench/run.py records what it used.
WORKLOADS: Dict[str, Tuple[Callable[[Dict[str, float], int], Trace], Dict[str, float]]] = {
    "gsp": (gsp, dict(groups=64, prompts_per_group=16, system_len=2048, question_len=128,
                      output_len=256, zipf=0)),
    "gsp-zipf": (gsp, dict(groups=64, prompts_per_group=16, system_len=2048, question_len=128,
                           output_len=256, zipf=1.1)),
    "fewshot": (fewshot, dict(tasks=16, requests=1024, exemplar_min=1400, exemplar_max=1600,
                              question_min=64, question_max=128, output_len=64)),
    "multiturn": (multiturn, dict(clients=256, parallel=128, rounds=5, turn_len=512,
                                  output_len=64)),
    "random": (random_wl, dict(requests=1024, input_min=1024, input_max=2048, output_min=128,
                               output_max=256)),
    "r1": (r1, dict(groups=8, requests=256, system_len=2048, question_len=128,
                    output_min=2048, output_max=4096, max_new_tokens=4096)),
}


def build(name: str, overrides: Dict[str, float], seed: int) -> Trace:
    fn, defaults = WORKLOADS[name]
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise SystemExit(f"--wl: workload {name!r} has no parameter(s) {sorted(unknown)}; "
                         f"it has {sorted(defaults)}")
    params = {**defaults, **overrides}
    trace = fn(params, seed)
    trace.name = name
    return trace


def with_arrivals(trace: Trace, request_rate: float, seed: int) -> None:
    """Poisson arrivals at `request_rate` requests per modelled second (0: all at t=0) for the
    requests known up front. Multi-turn follow-ups arrive when their previous round finishes."""
    if request_rate <= 0 or trace.on_finish is not None:
        return
    rng = random.Random(seed + 1)
    t = 0.0
    for r in trace.requests:
        r.arrival_s = t
        t += rng.expovariate(request_rate)


def main() -> int:
    import argparse

    p = argparse.ArgumentParser(description="Build a workload and print its size: requests, "
                                            "input tokens, unique prefix-tree tokens.")
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="gsp")
    p.add_argument("--wl", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    trace = build(a.workload, {k: float(v) for k, v in (x.split("=", 1) for x in a.wl)}, a.seed)
    reqs = trace.all_requests or trace.requests
    print(f"{a.workload}: {len(reqs)} requests, {sum(len(r.input_ids) for r in reqs):,} input "
          f"tokens, {sum(r.output_len for r in reqs):,} output tokens, "
          f"{unique_prefix_tokens(trace.sequences()):,} unique prefix-tree tokens")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
