"""MLA geometries, deployments and the step-time model of bench/sched_driver.py.

Nothing here runs a model: the scheduler runs for real on a tiny KV buffer (only slot indices
matter), and these formulas turn what it scheduled into bytes, FLOPs and modelled seconds.
Every parameter is a documented assumption or a public figure (SOURCES); docs/benchmarks.md
prints them (bench/run.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict


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
    deployment: str  # default deployment for the step-time model

    @property
    def kv_bytes_per_token(self) -> int:
        return self.layers * (self.kv_lora_rank + self.qk_rope_head_dim) * self.kv_dtype_bytes

    @property
    def attn_width(self) -> int:
        """Multiply-adds per (query, key) pair per layer: QK^T over qk_head_dim and AV over
        v_head_dim, for every head (prefill runs MLA as multi-head attention)."""
        return self.heads * (self.qk_head_dim + self.v_head_dim)

    def prefill_flops(self, start: int, n: int) -> float:
        """FLOPs to prefill positions start .. start+n-1 of one sequence: 2*N_active per token
        (every weight one multiply-add) plus causal attention, 2*layers*attn_width*(p+1) for the
        token at position p (it attends to p+1 keys)."""
        if n <= 0:
            return 0.0
        keys = n * start + n * (n + 1) // 2  # sum of (p + 1) for p in [start, start + n)
        return 2.0 * self.active_params * n + 2.0 * self.layers * self.attn_width * keys


_V3 = dict(layers=61, kv_lora_rank=512, qk_rope_head_dim=64, active_params=37e9,
           total_params=671e9, weight_bytes_per_param=1.0, heads=128, qk_head_dim=192,
           v_head_dim=128, deployment="v3-h200x8")
GEOMETRIES: Dict[str, Geometry] = {
    "v3": Geometry(name="v3", kv_dtype_bytes=2, **_V3),
    "v3-fp8": Geometry(name="v3-fp8", kv_dtype_bytes=1, **_V3),
    "v2-lite": Geometry(name="v2-lite", layers=27, kv_lora_rank=512, qk_rope_head_dim=64,
                        kv_dtype_bytes=2, active_params=2.4e9, total_params=15.7e9,
                        weight_bytes_per_param=2.0, heads=16, qk_head_dim=192, v_head_dim=128,
                        deployment="v2lite-h100"),
}


@dataclass(frozen=True)
class Deployment:
    name: str
    gpus: int  # tensor parallel; MLA's single latent "head" is replicated on every rank
    hbm_bytes: float  # per GPU
    hbm_bandwidth: float  # bytes/s per GPU
    peak_flops: float  # dense bf16 FLOP/s per GPU
    mem_fraction_static: float  # share of HBM for weights + KV pool (SGLang's flag)
    reserved_bytes: float  # per GPU, taken out of the static share (activations, CUDA graphs)
    compute_efficiency: float  # achieved / peak FLOP/s, prefill and decode GEMMs
    bandwidth_efficiency: float  # achieved / peak HBM bandwidth, decode
    host_link_bandwidth: float  # bytes/s per GPU per direction, GPU <-> host memory
    host_link_efficiency: float  # achieved / peak, for the pools' blocking pageable copies

    def pool_tokens(self, g: Geometry) -> int:
        """KV pool tokens: per-GPU static memory minus the weight shard and the reserve, over
        the latent bytes per token (every TP rank holds every token's latent)."""
        weights = g.total_params * g.weight_bytes_per_param / self.gpus
        free = self.hbm_bytes * self.mem_fraction_static - weights - self.reserved_bytes
        return max(0, int(free // g.kv_bytes_per_token))

    def step_params(self, g: Geometry) -> Dict[str, float]:
        flops = self.gpus * self.peak_flops * self.compute_efficiency
        bw = self.hbm_bandwidth * self.bandwidth_efficiency
        return {
            # decode step = a + b * batch + c * KV tokens read
            "decode_a_s": g.total_params * g.weight_bytes_per_param / self.gpus / bw,
            "decode_b_s_per_req": 2.0 * g.active_params / flops,
            "decode_c_s_per_kv_token": g.kv_bytes_per_token / bw,
            # prefill step = FLOPs / effective FLOP/s
            "prefill_flops_per_s": flops,
            "prefill_tokens_per_s_at_2k": 2048 * flops / g.prefill_flops(0, 2048),
            # KV copied to or from host memory (retraction offload): every rank copies its
            # own full latent, in parallel with the others, and the scheduler waits for it
            "host_copy_s_per_token": g.kv_bytes_per_token
            / (self.host_link_bandwidth * self.host_link_efficiency),
        }


# H200: 141 GB HBM3e, 4.8 TB/s; H100 SXM: 80 GB HBM3, 3.35 TB/s; both 989 TFLOP/s dense bf16
# (NVIDIA datasheets). compute_efficiency 0.30: DeepSeek's published V3/R1 service figure,
# 73.7k input tokens/s per H800 node (989 TFLOP/s bf16 per GPU, same as H100) with a 56.3 %
# cache hit rate, is ~32.2k computed tokens/s * 2 * 37e9 FLOPs = 2.4 PFLOP/s of 7.9 peak.
# bandwidth_efficiency 0.7 and the 6 GB reserve are assumptions. Host link: PCIe Gen5 x16,
# 64 GB/s per direction (128 GB/s both ways, H100/H200 datasheets); host_link_efficiency 0.25
# (16 GB/s) is an assumption for the pools' copies, which gather per layer into pageable
# memory between two device synchronizations.
DEPLOYMENTS: Dict[str, Deployment] = {
    "v3-h200x8": Deployment("v3-h200x8", gpus=8, hbm_bytes=141e9, hbm_bandwidth=4.8e12,
                            peak_flops=989e12, mem_fraction_static=0.9, reserved_bytes=6e9,
                            compute_efficiency=0.30, bandwidth_efficiency=0.7,
                            host_link_bandwidth=64e9, host_link_efficiency=0.25),
    "v2lite-h100": Deployment("v2lite-h100", gpus=1, hbm_bytes=80e9, hbm_bandwidth=3.35e12,
                              peak_flops=989e12, mem_fraction_static=0.9, reserved_bytes=6e9,
                              compute_efficiency=0.30, bandwidth_efficiency=0.7,
                            host_link_bandwidth=64e9, host_link_efficiency=0.25),
}

SOURCES = [
    "NVIDIA H200 datasheet: 141 GB HBM3e, 4.8 TB/s; NVIDIA H100 SXM datasheet: 80 GB HBM3, "
    "3.35 TB/s, 989 TFLOP/s dense BF16 (H200 has the same tensor-core peak); both: PCIe Gen5 "
    "128 GB/s (64 GB/s per direction).",
    "DeepSeek-V3 technical report / config.json: 61 layers, kv_lora_rank 512, qk_rope_head_dim 64, "
    "128 heads, qk_nope_head_dim 128, v_head_dim 128; 671B total, 37B activated parameters; "
    "fp8 weights.",
    "DeepSeek-V2-Lite config.json / model card: 27 layers, kv_lora_rank 512, qk_rope_head_dim 64, "
    "16 heads; 15.7B total, 2.4B activated parameters; bf16 weights.",
    "DeepSeek open-infra-index, 'Day 6: DeepSeek-V3/R1 Inference System Overview' (2025-03-01): "
    "73.7k input tokens/s per H800 node during prefill including cache hits, 56.3 % of input "
    "tokens hit the cache, 14.8k output tokens/s per node during decode (with large expert "
    "parallelism, which this TP model does not have).",
]


def describe() -> Dict[str, object]:
    """Everything docs/benchmarks.md prints about the model."""
    return {
        "geometries": {k: {**asdict(g), "kv_bytes_per_token": g.kv_bytes_per_token,
                           "attn_width": g.attn_width} for k, g in GEOMETRIES.items()},
        "deployments": {k: {**asdict(d), **{f"pool_tokens[{gk}]": d.pool_tokens(g)
                                            for gk, g in GEOMETRIES.items()
                                            if g.deployment == k}}
                        for k, d in DEPLOYMENTS.items()},
        "step_params": {gk: DEPLOYMENTS[g.deployment].step_params(g)
                        for gk, g in GEOMETRIES.items()},
        "sources": SOURCES,
    }


def main() -> int:
    import argparse
    import json

    argparse.ArgumentParser(description="Print the geometries, deployments, derived step-time "
                                        "parameters and sources as JSON.").parse_args()
    print(json.dumps(describe(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
