"""MLA geometries, deployments and the step-time model of bench/sched_driver.py.

Nothing here runs a model: the scheduler runs for real on a tiny KV buffer (only slot indices
matter), and these formulas turn what it scheduled into bytes, FLOPs and modelled seconds.
Every parameter is a documented assumption or a public figure (SOURCES, and the comments next to
each constant); docs/benchmarks.md prints them (bench/run.py).

What bench/sched_driver.py uses:
  * ``StepModel`` (``Deployment.step_model``), per step, for modelled time: an extend batch takes
    max(floor, FLOPs / effective FLOP/s), where the floor is the weight read of the decode step
    plus the launch overhead of an eager forward, and its attention FLOPs follow the MLA path
    SGLang v0.5.10 dispatches the batch to (``mla_path``); a decode step takes
    a + b * batch + c * KV tokens (``StepModel.extend`` / ``StepModel.decode_s``).
  * ``Geometry.prefill_flops`` (multi-head-form FLOPs of one request's extend): the reported
    prefill-FLOPs metric, a work measure independent of the attention path.
  * ``Deployment.step_params``: the per-token rates StepModel is built from, and the host-copy
    time per token.

File:line references are to the pinned source under python/sglang/srt/ (build/work/pristine);
attention_backend_handler.py lives in models/deepseek_common/, forward_mha.py in
models/deepseek_common/attention_forward_methods/.

    build/venv/bin/python bench/costmodel.py --help
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Dict, List, Optional, Sequence, Tuple

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class Geometry:
    """What the KV pool and the FLOP model need from a DeepSeek MLA config."""

    name: str
    layers: int
    kv_lora_rank: int  # compressed latent per token per layer
    qk_rope_head_dim: int  # decoupled rope key, stored next to the latent
    kv_dtype_bytes: int
    active_params: float  # parameters used per token (MoE: shared + routed experts in use)
    total_params: float
    weight_bytes_per_param: float
    heads: int
    qk_head_dim: int  # qk_nope_head_dim + qk_rope_head_dim
    v_head_dim: int
    context_len: int  # max_position_embeddings; SGLang's default max_running_requests uses it
    deployment: str  # default deployment for the step-time model

    @property
    def kv_bytes_per_token(self) -> int:
        return self.layers * (self.kv_lora_rank + self.qk_rope_head_dim) * self.kv_dtype_bytes

    @property
    def qk_nope_head_dim(self) -> int:
        return self.qk_head_dim - self.qk_rope_head_dim

    @property
    def attn_width(self) -> int:
        """Multi-head attention (SGLang's MHA / MHA_ONE_SHOT / MHA_CHUNKED_KV): multiply-adds per
        (query, key) pair per layer, QK^T over qk_head_dim and AV over v_head_dim for every head
        (``attn_mha`` in deepseek_v2.py:1271-1279)."""
        return self.heads * (self.qk_head_dim + self.v_head_dim)

    @property
    def mla_width(self) -> int:
        """Absorbed MLA (SGLang's MLA path, and every decode): multiply-adds per (query, key)
        pair per layer over the latent, QK^T over kv_lora_rank + rope and AV over kv_lora_rank,
        for every head against one shared latent "head" (``attn_mqa``, deepseek_v2.py:1261-1269)."""
        return self.heads * (2 * self.kv_lora_rank + self.qk_rope_head_dim)

    @property
    def decompress_flops_per_token(self) -> float:
        """MHA over a cached prefix first decompresses its latents: ``kv_b_proj`` (kv_lora_rank
        -> heads x (qk_nope + v)) per prefix token per layer (forward_mha.py:373-380). The
        extended tokens' own kv_b_proj is part of 2 x active_params; in the absorbed path the
        q / output absorptions (w_kc, w_vc) cost the same, so the dense term is path-free."""
        return 2.0 * self.layers * self.kv_lora_rank * self.heads * (
            self.qk_nope_head_dim + self.v_head_dim)

    def prefill_flops(self, start: int, n: int) -> float:
        """FLOPs to prefill positions start .. start+n-1 of one sequence as multi-head
        attention: 2*N_active per token (every weight one multiply-add) plus causal attention,
        2*layers*attn_width*(p+1) for the token at position p (it attends to p+1 keys). The
        driver's "prefill FLOPs" metrics use this (path-free, so pristine and patched compare
        like for like); ``extend_flops`` is the path-aware cost."""
        if n <= 0:
            return 0.0
        return 2.0 * self.active_params * n + 2.0 * self.layers * self.attn_width * _keys(start, n)

    def extend_flops(self, spans: Sequence[Tuple[int, int]], path: str) -> float:
        """FLOPs of one extend batch, spans = [(cached prefix, extended tokens)] per request, on
        the MLA path ``path`` (see ``mla_path``): dense 2*N_active per extended token; attention
        over the latent (mla) or over decompressed K/V plus the decompression of every cached
        prefix token (mha)."""
        dense = 2.0 * self.active_params * sum(n for _, n in spans)
        keys = sum(_keys(p, n) for p, n in spans if n > 0)
        if path == "mla":
            return dense + 2.0 * self.layers * self.mla_width * keys
        prefix = sum(p for p, n in spans if n > 0)
        return (dense + 2.0 * self.layers * self.attn_width * keys
                + self.decompress_flops_per_token * prefix)

    def decode_flops_per_kv_token(self) -> float:
        """Absorbed-MLA attention FLOPs per cached token read by one decode query (all layers)."""
        return 2.0 * self.layers * self.mla_width


def _keys(start: int, n: int) -> int:
    """Sum of (p + 1) for p in [start, start + n): the (query, key) pairs of a causal extend."""
    return n * start + n * (n + 1) // 2


# DeepSeek-V3 config.json: num_hidden_layers 61, kv_lora_rank 512, qk_rope_head_dim 64,
# num_attention_heads 128, qk_nope_head_dim 128, v_head_dim 128, max_position_embeddings 163840.
_V3 = dict(layers=61, kv_lora_rank=512, qk_rope_head_dim=64, active_params=37e9,
           total_params=671e9, weight_bytes_per_param=1.0, heads=128, qk_head_dim=192,
           v_head_dim=128, context_len=163840, deployment="v3-h200x8")
GEOMETRIES: Dict[str, Geometry] = {
    "v3": Geometry(name="v3", kv_dtype_bytes=2, **_V3),
    "v3-fp8": Geometry(name="v3-fp8", kv_dtype_bytes=1, **_V3),
    "v2-lite": Geometry(name="v2-lite", layers=27, kv_lora_rank=512, qk_rope_head_dim=64,
                        kv_dtype_bytes=2, active_params=2.4e9, total_params=15.7e9,
                        weight_bytes_per_param=2.0, heads=16, qk_head_dim=192, v_head_dim=128,
                        context_len=163840, deployment="v2lite-h100"),
}

# --- SGLang v0.5.10 constants the model follows (pinned source, read-only) -------------------
# Extend batches of at most this many tokens run in the piecewise CUDA graph, which SGLang enables
# by default for DeepSeek V3 (server_args.py:637, disabled only by the conditions of
# _handle_piecewise_cuda_graph, server_args.py:1078-1139) with this cap for MLA models
# (server_args.py:1254-1262; PiecewiseCudaGraphRunner.can_run, piecewise_cuda_graph_runner.py:
# 415-430). Inside the graph every backend runs absorbed MLA (attention_backend_handler.py:73-74
# and 125-126).
PCG_MAX_TOKENS = 2048
# Eager fa3 / flashmla extends run MHA when the batch's cached prefix is empty or at least this
# many tokens (SGLANG_CHUNKED_PREFIX_CACHE_THRESHOLD, environ.py:388; attention_backend_handler.py
# :81-96), absorbed MLA otherwise; trtllm_mla runs MHA_CHUNKED_KV for every eager extend
# (attention_backend_handler.py:124-134; chunked prefix cache on by default, server_args.py:659).
CHUNKED_PREFIX_CACHE_THRESHOLD = 8192
ATTENTION_BACKENDS = ("fa3", "flashmla", "trtllm_mla")


def mla_path(backend: str, spans: Sequence[Tuple[int, int]]) -> str:
    """The attention path SGLang v0.5.10 runs an extend batch on: "mla" (absorbed, over the
    latent) or "mha" (MHA / MHA_ONE_SHOT / MHA_CHUNKED_KV: decompressed K/V; the three cost the
    same FLOPs, they differ in how the prefix is chunked)."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend {backend!r}: the model knows {ATTENTION_BACKENDS}")
    tokens = sum(n for _, n in spans)
    if tokens <= PCG_MAX_TOKENS:
        return "mla"
    if backend == "trtllm_mla":
        return "mha"
    prefix = sum(p for p, _ in spans)
    return "mha" if prefix == 0 or prefix >= CHUNKED_PREFIX_CACHE_THRESHOLD else "mla"


@dataclass(frozen=True)
class Deployment:
    name: str
    gpus: int  # tensor parallel; MLA's single latent "head" is replicated on every rank
    hbm_bytes: float  # per GPU, as nvidia-smi reports memory.total (what SGLang sizes from)
    hbm_bandwidth: float  # bytes/s per GPU
    peak_flops: float  # dense bf16 FLOP/s per GPU
    compute_efficiency: float  # achieved / peak FLOP/s, prefill and decode GEMMs
    bandwidth_efficiency: float  # achieved / peak HBM bandwidth, decode
    host_link_bandwidth: float  # bytes/s per GPU per direction, GPU <-> host memory
    host_link_efficiency: float  # achieved / peak for KV copies to and from host memory
    attention_backend: str  # SGLang's default for this hardware, or an explicit opt-in
    page_size: int  # what SGLang uses with that backend
    chunked_prefill_size: int  # SGLang's default for this GPU's memory (server_args.py:1196-1222)
    cuda_graph_max_bs: int  # SGLang's default for this GPU's memory and TP (same lines)
    eager_launch_s_per_layer: float  # CPU launch overhead of an eager (non-graph) forward

    @property
    def reserved_bytes(self) -> float:
        """SGLang's reserve for activations and CUDA graphs when mem_fraction_static is not
        given (server_args.py:1281-1314), for an MLA model with the piecewise CUDA graph on and
        no DP attention / speculative decoding; MiB there."""
        mib = 512 + max(self.chunked_prefill_size, 2048) * 1.5 + self.cuda_graph_max_bs * 2
        mib += self.gpus / 8 * 1024 + 1.5 * 1024  # TP size (pp 1); piecewise graph with MLA
        if self.hbm_bytes > 60 * 1024 * MIB:
            mib = max(mib, 10 * 1024)
        return mib * MIB

    @property
    def mem_fraction_static(self) -> float:
        """SGLang's default: round((total - reserved) / total, 3) (server_args.py:1324-1328)."""
        return round((self.hbm_bytes - self.reserved_bytes) / self.hbm_bytes, 3)

    def pool_tokens(self, g: Geometry) -> int:
        """KV pool tokens as ModelRunner sizes them (model_runner_kv_cache_mixin.py:171-177):
        memory before loading x mem_fraction_static - the weight shard, over the latent bytes per
        token (every TP rank holds every token's latent). Memory before loading is taken as the
        whole HBM: the CUDA context and NCCL buffers allocated before the weights are not
        subtracted, so this is an upper bound by a few GB."""
        weights = g.total_params * g.weight_bytes_per_param / self.gpus
        free = self.hbm_bytes * self.mem_fraction_static - weights
        return max(0, int(free // g.kv_bytes_per_token))

    def max_running_requests(self, g: Geometry) -> int:
        """SGLang's default when --max-running-requests is not given
        (model_runner_kv_cache_mixin.py:840-851): min(clamp(pool / context_len * 512, 2048,
        4096), pool // 2)."""
        pool = self.pool_tokens(g)
        estimated = max(min(int(pool / g.context_len * 512), 4096), 2048)
        return min(estimated, pool // 2)

    def step_params(self, g: Geometry) -> Dict[str, float]:
        flops = self.gpus * self.peak_flops * self.compute_efficiency
        bw = self.hbm_bandwidth * self.bandwidth_efficiency
        # Decode attention reads every cached latent once per query (bandwidth) and runs
        # absorbed MLA over it (compute, heads split over the TP ranks); the slower one bounds it.
        c_bytes = g.kv_bytes_per_token / bw
        c_flops = g.decode_flops_per_kv_token() / flops
        return {
            # decode step = a + b * batch + c * KV tokens read
            "decode_a_s": g.total_params * g.weight_bytes_per_param / self.gpus / bw,
            "decode_b_s_per_req": 2.0 * g.active_params / flops,
            "decode_c_s_per_kv_token": max(c_bytes, c_flops),
            "decode_c_flops_s_per_kv_token": c_flops,
            # prefill step = FLOPs / effective FLOP/s (StepModel adds the floor and the paths)
            "prefill_flops_per_s": flops,
            "prefill_tokens_per_s_at_2k": 2048 * flops / g.prefill_flops(0, 2048),
            # KV copied to or from HiCache's host pool: every rank copies its own full
            # latent, in parallel with the others
            "host_copy_s_per_token": g.kv_bytes_per_token
            / (self.host_link_bandwidth * self.host_link_efficiency),
        }

    def step_model(self, g: Geometry) -> "StepModel":
        return StepModel(g, self)


@dataclass(frozen=True)
class ExtendCost:
    flops: float  # path-aware FLOPs of the batch
    seconds: float  # max(floor_s, compute_s)
    compute_s: float
    floor_s: float  # weight read + (eager only) launch overhead
    path: str  # "mla" or "mha"
    graph: bool  # ran in the piecewise CUDA graph


@dataclass(frozen=True)
class StepModel:
    """Per-step modelled time for one geometry on one deployment."""

    geometry: Geometry
    deployment: Deployment

    @cached_property
    def params(self) -> Dict[str, float]:
        return self.deployment.step_params(self.geometry)

    def extend(self, spans: Sequence[Tuple[int, int]]) -> ExtendCost:
        """An extend (prefill) batch, spans = [(cached prefix, extended tokens)] per request.

        Floor: a forward reads every weight once, like a decode step (decode_a_s), whatever the
        batch size; an eager forward (more than PCG_MAX_TOKENS tokens) also pays the CPU launch
        of every kernel (eager_launch_s_per_layer x layers). Weight reads and launches overlap the GEMMs, so the
        step takes max(floor, FLOPs / effective FLOP/s)."""
        g, d, sp = self.geometry, self.deployment, self.params
        spans = [(int(p), int(n)) for p, n in spans]
        path = mla_path(d.attention_backend, spans)
        graph = sum(n for _, n in spans) <= PCG_MAX_TOKENS
        flops = g.extend_flops(spans, path)
        compute = flops / sp["prefill_flops_per_s"]
        floor = sp["decode_a_s"] + (0.0 if graph else d.eager_launch_s_per_layer * g.layers)
        return ExtendCost(flops, max(floor, compute), compute, floor, path, graph)

    def decode_s(self, batch_size: int, kv_tokens: int) -> float:
        """A decode batch (CUDA graph; absorbed MLA): a + b * batch + c * KV tokens read."""
        sp = self.params
        return (sp["decode_a_s"] + sp["decode_b_s_per_req"] * batch_size
                + sp["decode_c_s_per_kv_token"] * kv_tokens)


# sgl-project/sglang PR #12160: a DeepSeek-V3 prefill of 1 new token took 82.6 ms eager and
# 23.1 ms in a prefill CUDA graph; the 59.5 ms difference is the launch of its 61 layers' kernels.
EAGER_LAUNCH_S_PER_LAYER = (0.0826 - 0.0231) / 61
_HOPPER = dict(peak_flops=989e12, compute_efficiency=0.30, bandwidth_efficiency=0.7,
               host_link_bandwidth=64e9, host_link_efficiency=0.25,
               eager_launch_s_per_layer=EAGER_LAUNCH_S_PER_LAYER)
DEPLOYMENTS: Dict[str, Deployment] = {
    # SGLang's defaults for DeepSeek V3 on 8 x H200: fa3 (server_args.py:2259-2262, Hopper with
    # an MLA model), page 1; chunked prefill 8192 and CUDA-graph batch 512 (server_args.py:
    # 1206-1215, 90-160 GiB, TP >= 4).
    "v3-h200x8": Deployment("v3-h200x8", gpus=8, hbm_bytes=143771 * MIB, hbm_bandwidth=4.8e12,
                            attention_backend="fa3", page_size=1, chunked_prefill_size=8192,
                            cuda_graph_max_bs=512, **_HOPPER),
    # The same machine with --attention-backend flashmla (opt-in; SGLang forces page 64 for it,
    # server_args.py:2324-2331).
    "v3-h200x8-flashmla": Deployment("v3-h200x8-flashmla", gpus=8, hbm_bytes=143771 * MIB,
                                     hbm_bandwidth=4.8e12, attention_backend="flashmla",
                                     page_size=64, chunked_prefill_size=8192,
                                     cuda_graph_max_bs=512, **_HOPPER),
    # SGLang's defaults for DeepSeek V3 on 8 x B200: trtllm_mla (server_args.py:1602-1611, sm100),
    # page 64 (server_args.py:2342-2353 allows 32 or 64 and picks 64); chunked prefill 16384 and
    # CUDA-graph batch 512 (server_args.py:1216-1222, > 160 GiB).
    "v3-b200x8": Deployment("v3-b200x8", gpus=8, hbm_bytes=183359 * MIB, hbm_bandwidth=8.0e12,
                            peak_flops=2.25e15, compute_efficiency=0.30, bandwidth_efficiency=0.7,
                            host_link_bandwidth=64e9, host_link_efficiency=0.25,
                            attention_backend="trtllm_mla", page_size=64,
                            chunked_prefill_size=16384, cuda_graph_max_bs=512,
                            eager_launch_s_per_layer=EAGER_LAUNCH_S_PER_LAYER),
    "v2lite-h100": Deployment("v2lite-h100", gpus=1, hbm_bytes=81559 * MIB, hbm_bandwidth=3.35e12,
                              attention_backend="fa3", page_size=1, chunked_prefill_size=8192,
                              cuda_graph_max_bs=256, **_HOPPER),
}

SOURCES = [
    "H200: NVIDIA H200 datasheet, 141 GB HBM3e at 4.8 TB/s, 989 TFLOP/s dense BF16 (the H100 "
    "SXM figure; the datasheet's 1,979 is with sparsity). Memory as SGLang sees it: nvidia-smi "
    "memory.total of an H200 is 143771 MiB (= 141 GiB), which get_nvgpu_memory_capacity reads "
    "(utils/common.py:1514-1518).",
    "B200: NVIDIA HGX B200 datasheet, 4.5 PFLOP/s FP16/BF16 tensor core per GPU with sparsity, so "
    "2.25 PFLOP/s dense; 192 GB HBM3e at 8 TB/s (Blackwell B200 figures; NVIDIA's HGX B200 page "
    "lists 180 GB and 7.7 TB/s per GPU, and pytorch/ao PR #4002 reads a 7680-bit bus, "
    "7.67 TB/s, and 178.35 GiB from the device). Memory as SGLang sees it: nvidia-smi "
    "memory.total of a B200 is 183359 MiB (192.3 GB).",
    "H100 SXM (v2lite-h100): datasheet 80 GB HBM3 at 3.35 TB/s, 989 TFLOP/s dense BF16; "
    "nvidia-smi memory.total 81559 MiB. PCIe Gen5 x16 on all three: 128 GB/s, 64 GB/s per "
    "direction.",
    "DeepSeek-V3 technical report / config.json: 61 layers, kv_lora_rank 512, qk_rope_head_dim 64, "
    "128 heads, qk_nope_head_dim 128, v_head_dim 128, max_position_embeddings 163840; 671B total, "
    "37B activated parameters; fp8 weights.",
    "DeepSeek-V2-Lite config.json / model card: 27 layers, kv_lora_rank 512, qk_rope_head_dim 64, "
    "16 heads; 15.7B total, 2.4B activated parameters; bf16 weights.",
    "compute_efficiency 0.30: DeepSeek open-infra-index, 'Day 6: DeepSeek-V3/R1 Inference System "
    "Overview' (2025-03-01): 73.7k input tokens/s per H800 node during prefill including cache "
    "hits, 56.3 % of them hits, i.e. ~32.2k computed tokens/s x 2 x 37e9 FLOPs = 2.4 PFLOP/s of "
    "8 x 989 (with large expert parallelism, which this TP model does not have). The same 0.30 "
    "is assumed on B200. bandwidth_efficiency 0.7 and host_link_efficiency 0.25 are assumptions.",
    "eager launch 0.975 ms per layer: sgl-project/sglang PR #12160 logs a DeepSeek-V3 prefill of "
    "1 new token (1 cached) at 82.6 ms eager and 23.1 ms inside a prefill CUDA graph; the 59.5 ms "
    "difference, over 61 layers, is the launch overhead of the eager forward. The 23.1 ms graph "
    "figure is this model's weight-read floor to within 10 % (decode_a_s, 25.0 ms on 8 x H200). "
    "The PR names no GPU or CPU; launch overhead is host-CPU bound and the same figure is used on "
    "every deployment.",
]


def describe() -> Dict[str, object]:
    """Everything docs/benchmarks.md prints about the model."""
    return {
        "geometries": {k: {**asdict(g), "kv_bytes_per_token": g.kv_bytes_per_token,
                           "attn_width": g.attn_width, "mla_width": g.mla_width,
                           "decompress_flops_per_token": g.decompress_flops_per_token}
                       for k, g in GEOMETRIES.items()},
        "deployments": {k: {**asdict(d), "reserved_bytes": d.reserved_bytes,
                            "mem_fraction_static": d.mem_fraction_static,
                            **{f"pool_tokens[{gk}]": d.pool_tokens(g)
                               for gk, g in GEOMETRIES.items() if _fits(d, g)},
                            **{f"max_running_requests[{gk}]": d.max_running_requests(g)
                               for gk, g in GEOMETRIES.items() if _fits(d, g)}}
                        for k, d in DEPLOYMENTS.items()},
        "step_params": {f"{gk}@{dk}": {**d.step_params(g), **_floors(d, g)}
                        for dk, d in DEPLOYMENTS.items() for gk, g in GEOMETRIES.items()
                        if _fits(d, g)},
        "sglang_constants": {"pcg_max_tokens": PCG_MAX_TOKENS,
                             "chunked_prefix_cache_threshold": CHUNKED_PREFIX_CACHE_THRESHOLD},
        "sources": SOURCES,
    }


def _fits(d: Deployment, g: Geometry) -> bool:
    """The geometries a deployment serves: V3 on the 8-GPU nodes, V2-Lite on one H100."""
    return (d.gpus == 1) == (g.name == "v2-lite")


def _floors(d: Deployment, g: Geometry) -> Dict[str, float]:
    m = d.step_model(g)
    return {"extend_floor_graph_s": m.extend([(1, 1)]).floor_s,
            "extend_floor_eager_s": m.extend([(0, PCG_MAX_TOKENS + 1)]).floor_s}


def _spans(text: str) -> List[Tuple[int, int]]:
    out = []
    for item in text.split(","):
        pre, _, ext = item.partition(":")
        if not ext:
            raise SystemExit(f"costmodel: span {item!r}: expected PREFIX:EXTEND")
        out.append((int(pre), int(ext)))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description="Print the geometries, deployments, derived step-time parameters and sources "
                    "as JSON; with --extend, the modelled cost of one extend batch.")
    p.add_argument("--model", choices=sorted(GEOMETRIES), default="v3")
    p.add_argument("--deployment", choices=sorted(DEPLOYMENTS),
                   help="default: the model's own (v3 -> v3-h200x8)")
    p.add_argument("--extend", metavar="PREFIX:EXTEND[,...]",
                   help="an extend batch, one cached-prefix:extended-tokens pair per request, "
                        "e.g. 2048:128,0:2176")
    a = p.parse_args(argv)
    if a.extend:
        g = GEOMETRIES[a.model]
        cost = DEPLOYMENTS[a.deployment or g.deployment].step_model(g).extend(_spans(a.extend))
        print(json.dumps(asdict(cost), indent=2))
    else:
        print(json.dumps(describe(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
