"""Seeded synthetic traces, and replays of recorded ones, for bench/sched_driver.py (token ids
only, no tokenizer, no model).

Every workload is a function ``(params, seed) -> Trace``; ``WORKLOADS`` maps its name to the
function and its default parameters (override any with ``--wl KEY=VALUE``; a parameter whose
default is a string, such as the ``trace`` workload's ``path``, takes the value as given, the
others are numbers). ``trace`` replays a file in Mooncake's trace format (``read_mooncake``);
the others are generated from the seed. Output tokens are
the driver's synthetic tokens (``synthetic_output``): a request's output is a pure function of
its id, so a trace's full token sequences (inputs and outputs, used to size the pool) are known
before it runs. Multi-turn follow-up prompts are still built from the tokens the run actually
produced (``Trace.follow_up``).
"""

from __future__ import annotations

import bisect
import json
import math
import random
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

Param = Union[float, str]

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
    params: Dict[str, Param]
    # Called when a request finishes: (request, its output ids, modelled time) -> new requests.
    on_finish: Optional[Callable[[Request, List[int], float], List[Request]]] = None
    all_requests: List[Request] = field(default_factory=list)  # every request the run will see

    def follow_up(self, req: Request, output_ids: List[int], now: float) -> List[Request]:
        return self.on_finish(req, output_ids, now) if self.on_finish else []

    def sequences(self) -> Iterable[List[int]]:
        """Input + synthetic output of every request of the trace."""
        for r in self.all_requests or self.requests:
            yield r.input_ids + synthetic_output(r.rid, r.output_len, r.max_new_tokens)


def lcp(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token (or block-hash) sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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
    question, output ended by EOS, max_new_tokens fixed (the scheduler reserves for
    max_new_tokens, as for a real reasoning model). Output lengths: output_sigma = 0 draws them
    uniform in [output_min, output_max]; output_sigma > 0 draws them heavy-tailed, lognormal
    with median output_median and log-sd output_sigma, clipped to [output_min, max_new_tokens]
    (a request that reaches max_new_tokens ends by length, as a capped reasoning chain does)."""
    rng = random.Random(seed)
    systems = [_tokens(rng, int(p["system_len"])) for _ in range(int(p["groups"]))]
    cap, lo, sigma = int(p["max_new_tokens"]), int(p["output_min"]), float(p["output_sigma"])
    reqs = []
    for i in range(int(p["requests"])):
        q = _tokens(rng, int(p["question_len"]))
        if sigma > 0:
            o = min(cap, max(lo, int(rng.lognormvariate(math.log(p["output_median"]), sigma))))
        else:
            o = rng.randint(lo, int(p["output_max"]))
        reqs.append(Request(f"r{i}", rng.choice(systems) + q, o, cap))
    return Trace("r1", reqs, p)


def multiturn(p: Dict[str, float], seed: int) -> Trace:
    """bench_multiturn shape: C clients, at most `parallel` active; R rounds each; a round's prompt
    is the previous round's prompt + that round's generated tokens (as produced by the run) +
    `turn_len` new tokens; O output tokens. A client's next round arrives when its previous round
    finishes; a new client starts when one finishes all its rounds. `length_jitter` J > 0 draws
    each turn's new tokens and output length uniformly within x(1 - J) .. x(1 + J) of theirs
    (bench_multiturn's lengths are fixed, so without it the seed changes token ids only)."""
    rng = random.Random(seed)
    clients, rounds = int(p["clients"]), int(p["rounds"])
    turn, out_len, jit = int(p["turn_len"]), int(p["output_len"]), float(p["length_jitter"])

    def length(n: int) -> int:
        return n if jit <= 0 else max(1, round(n * rng.uniform(1 - jit, 1 + jit)))

    # All new-turn tokens are drawn up front, so the trace does not depend on finish order.
    turns = [[_tokens(rng, length(turn)) for _ in range(rounds)] for _ in range(clients)]
    outs = [[length(out_len) for _ in range(rounds)] for _ in range(clients)]
    state = {"next_client": min(clients, int(p["parallel"]))}

    def rid(c: int, k: int) -> str:
        return f"c{c}-t{k}"

    def first(c: int, now: float) -> Request:
        return Request(rid(c, 0), list(turns[c][0]), outs[c][0], outs[c][0], now)

    def on_finish(req: Request, output_ids: List[int], now: float) -> List[Request]:
        c, k = (int(x[1:]) for x in req.rid.split("-"))
        if k + 1 < rounds:
            o = outs[c][k + 1]
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
                prompt = prompt + synthetic_output(rid(c, k - 1), outs[c][k - 1], outs[c][k - 1])
            prompt = prompt + turns[c][k]
            everything.append(Request(rid(c, k), prompt, outs[c][k], outs[c][k]))
    initial = [first(c, 0.0) for c in range(state["next_client"])]
    return Trace("multiturn", initial, p, on_finish, everything)


# ---------------------------------------------------------------------------------------------
# Recorded traces (Mooncake's format)


class TraceFormatError(ValueError):
    """A trace file that cannot be replayed; the message names the file and the line."""


@dataclass(frozen=True)
class TraceRecord:
    line: int  # 1-based line in the file
    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: Tuple[int, ...]


_BLOCK_BASE_LEN = 1 << 16
_block_base: List[int] = []


def block_tokens(hash_id: int, block_size: int) -> List[int]:
    """The fixed token block a trace's hash id stands for: two tokens that encode the id (so
    distinct ids give blocks that differ in their first token pair, hence in their first page),
    then a slice of a fixed pseudo-random table chosen by the id. Tokens are in [1, VOCAB_SIZE)."""
    if not _block_base:
        rng = random.Random(0x6D6F6F6E)
        _block_base.extend(rng.randrange(1, VOCAB_SIZE) for _ in range(_BLOCK_BASE_LEN))
    v = VOCAB_SIZE - 1
    head = [1 + hash_id % v, 1 + (hash_id // v) % v][:block_size]
    body_len = block_size - len(head)
    off = (hash_id * 2654435761) % (_BLOCK_BASE_LEN - body_len) if body_len else 0
    return head + _block_base[off:off + body_len]


def read_mooncake(path: str, block_size: int = 512) -> List[TraceRecord]:
    """Parse a Mooncake-format trace: one JSON object per line with ``timestamp`` (ms),
    ``input_length``, ``output_length`` and ``hash_ids`` (one id per ``block_size``-token prompt
    block; the last block may be partial). Blank lines are skipped. Anything else raises
    TraceFormatError naming the file and the line."""
    limit = (VOCAB_SIZE - 1) ** 2  # ids the two head tokens of block_tokens can tell apart
    out: List[TraceRecord] = []
    try:
        f = open(path)
    except OSError as e:
        raise TraceFormatError(f"{path}: cannot read the trace: {e.strerror}") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TraceFormatError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise TraceFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            missing = [k for k in ("timestamp", "input_length", "output_length", "hash_ids")
                       if k not in obj]
            if missing:
                raise TraceFormatError(f"{where}: missing field(s) {missing}")
            ts, il, ol, ids = (obj["timestamp"], obj["input_length"], obj["output_length"],
                               obj["hash_ids"])
            if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) \
                    or ts < 0:
                raise TraceFormatError(f"{where}: timestamp must be a number >= 0 (ms), got {ts!r}")
            for name, val, low in (("input_length", il, 1), ("output_length", ol, 0)):
                if isinstance(val, bool) or not isinstance(val, int) or val < low:
                    raise TraceFormatError(f"{where}: {name} must be an integer >= {low}, got {val!r}")
            if not isinstance(ids, list) or not all(
                    isinstance(h, int) and not isinstance(h, bool) and 0 <= h < limit for h in ids):
                raise TraceFormatError(f"{where}: hash_ids must be a list of integers in "
                                       f"[0, {limit}), got {str(ids)[:80]}")
            need = -(-il // block_size)
            if len(ids) < need:
                raise TraceFormatError(f"{where}: input_length {il} needs {need} blocks of "
                                       f"{block_size} tokens, hash_ids has {len(ids)}")
            out.append(TraceRecord(n, float(ts), il, ol, tuple(ids)))
    if not out:
        raise TraceFormatError(f"{path}: no requests in the trace")
    return out


def trace_prompt(rec: TraceRecord, block_size: int, cache: Dict[int, List[int]]) -> List[int]:
    """Each hash id becomes its block (cached per id), cut to input_length."""
    need = -(-rec.input_length // block_size)
    toks: List[int] = []
    for h in rec.hash_ids[:need]:
        blk = cache.get(h)
        if blk is None:
            blk = cache[h] = block_tokens(h, block_size)
        toks += blk
    del toks[rec.input_length:]
    return toks


def trace_wl(p: Dict[str, Any], seed: int) -> Trace:
    """Replay of a recorded trace in Mooncake's format (``path``; see read_mooncake): requests in
    timestamp order from line ``start`` (0-based, over the file's requests), at most
    ``max_requests`` of them (0: all). Arrival = (timestamp - the first replayed request's) x
    ``time_scale``; time_scale 0 is closed loop (every request at t=0, as the synthetic
    workloads). Prompt = the hash ids' fixed blocks (block_tokens) cut to input_length.
    Output = output_length synthetic tokens (0 counts as 1: a prefill always makes one token).
    ``max_new_tokens`` 0 tells the scheduler max_new_tokens = output_length (what a replay with
    ignore_eos sends); N > 0 tells it N for every request and ends the output with the stop
    token after min(output_length, N) tokens (a client's fixed cap; the scheduler then reserves
    for N). The seed is not used: the trace fixes everything."""
    path = str(p["path"])
    if not path:
        raise SystemExit("workload trace: give the trace file with --wl path=FILE "
                         "(Mooncake format: one JSON object per line)")
    bs = int(p["block_size"])
    if bs < 2:
        raise SystemExit(f"workload trace: block_size must be >= 2, got {bs}")
    try:
        recs = read_mooncake(path, bs)
    except TraceFormatError as e:
        raise SystemExit(f"workload trace: {e}") from None
    order = sorted(range(len(recs)), key=lambda i: recs[i].timestamp_ms)  # stable
    start, count = int(p["start"]), int(p["max_requests"])
    if not 0 <= start < len(order):
        raise SystemExit(f"workload trace: start={start} is outside the {len(order)} requests "
                         f"of {path}")
    chosen = order[start:start + count] if count > 0 else order[start:]
    scale, cap = float(p["time_scale"]), int(p["max_new_tokens"])
    if scale < 0 or cap < 0:
        raise SystemExit("workload trace: time_scale and max_new_tokens must be >= 0")
    t0 = recs[chosen[0]].timestamp_ms
    blocks: Dict[int, List[int]] = {}
    reqs = []
    for i in chosen:
        rec = recs[i]
        out = max(1, rec.output_length)
        max_new = out if cap == 0 else cap
        reqs.append(Request(f"t{i}", trace_prompt(rec, bs, blocks), min(out, max_new), max_new,
                            (rec.timestamp_ms - t0) / 1000.0 * scale))
    return Trace("trace", reqs, p)


# name -> (generator, default parameters). Sizes are scaled down from the upstream defaults
# where a full run would not fit the CPU budget; bench/run.py records what it used.
WORKLOADS: Dict[str, Tuple[Callable[[Dict[str, Any], int], Trace], Dict[str, Param]]] = {
    "gsp": (gsp, dict(groups=64, prompts_per_group=16, system_len=2048, question_len=128,
                      output_len=256, zipf=0)),
    "gsp-zipf": (gsp, dict(groups=64, prompts_per_group=16, system_len=2048, question_len=128,
                           output_len=256, zipf=1.1)),
    "fewshot": (fewshot, dict(tasks=16, requests=1024, exemplar_min=1400, exemplar_max=1600,
                              question_min=64, question_max=128, output_len=64)),
    "multiturn": (multiturn, dict(clients=256, parallel=128, rounds=5, turn_len=512,
                                  output_len=64, length_jitter=0.0)),
    "random": (random_wl, dict(requests=1024, input_min=1024, input_max=2048, output_min=128,
                               output_max=256)),
    "r1": (r1, dict(groups=8, requests=256, system_len=2048, question_len=128,
                    output_min=2048, output_max=4096, max_new_tokens=4096, output_sigma=0,
                    output_median=2048)),
    "trace": (trace_wl, dict(path="", time_scale=1.0, start=0, max_requests=0, max_new_tokens=0,
                             block_size=512)),
}


def param_text(value: Param) -> str:
    """A parameter value as --help prints it."""
    return f"{value:g}" if isinstance(value, (int, float)) else repr(value)


def build(name: str, overrides: Dict[str, Any], seed: int) -> Trace:
    """``overrides`` may hold strings (``--wl KEY=VALUE`` as given) or numbers: a parameter
    whose default is a string keeps the string, the others become floats."""
    fn, defaults = WORKLOADS[name]
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise SystemExit(f"--wl: workload {name!r} has no parameter(s) {sorted(unknown)}; "
                         f"it has {sorted(defaults)}")
    params: Dict[str, Any] = dict(defaults)
    for k, v in overrides.items():
        if isinstance(defaults[k], str):
            params[k] = str(v)
            continue
        try:
            params[k] = float(v)
        except (TypeError, ValueError):
            raise SystemExit(f"--wl {k}={v}: workload {name!r} takes a number for {k}") from None
    trace = fn(params, seed)
    trace.name = name
    return trace


def with_arrivals(trace: Trace, request_rate: float, seed: int) -> None:
    """Poisson arrivals at `request_rate` requests per modelled second (0: all at t=0) for the
    requests known up front. Multi-turn follow-ups arrive when their previous round finishes."""
    if request_rate > 0 and trace.name == "trace":
        raise SystemExit("--request-rate: the trace workload arrives at the trace's timestamps; "
                         "scale them with --wl time_scale=X (0: all at t=0)")
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
    trace = build(a.workload, dict(x.split("=", 1) for x in a.wl), a.seed)
    reqs = trace.all_requests or trace.requests
    print(f"{a.workload}: {len(reqs)} requests, {sum(len(r.input_ids) for r in reqs):,} input "
          f"tokens, {sum(r.output_len for r in reqs):,} output tokens, "
          f"{unique_prefix_tokens(trace.sequences()):,} unique prefix-tree tokens")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
