"""Run SGLang's scheduling and memory code on a CPU-only machine.

Import this module (or load it as a pytest plugin: ``-p sglang_cpu``) before SGLang.
It makes exactly three substitutions, each listed in docs/cpu-environment.md:

1. ``sgl_kernel`` is the raising shim in this folder (the real one needs CUDA).
2. The PyPI torchvision wheel is built against CUDA torch; its ops library cannot load
   on CPU torch, and two of its fake-kernel registrations then fail at import. We declare
   those two op schemas (no kernels) so ``import torchvision`` succeeds; calling them raises.
3. ``PagedTokenToKVPoolAllocator.alloc_extend`` / ``alloc_decode`` launch Triton kernels
   unconditionally. We route the launches to ``alloc_extend_naive`` (SGLang's own reference
   in allocator.py) and to a few lines of torch with the decode kernel's semantics.

Everything else (scheduler, policy, batch, radix cache, allocators, pools) is SGLang's code,
with ``attention_backend="torch_native"`` selecting SGLang's own CPU branches.
"""

from __future__ import annotations

import torch

_TORCHVISION_OPS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _declare_torchvision_ops() -> None:
    for name, schema in _TORCHVISION_OPS.items():
        if not torch._C._dispatch_has_kernel(f"torchvision::{name}"):
            try:
                torch.library.define(f"torchvision::{name}", schema)
            except RuntimeError:
                pass  # already declared (the ops library did load)


class _Launcher:
    """Stands in for ``kernel[grid]``: ignores the grid and calls ``fn``."""

    def __init__(self, fn):
        self.fn = fn

    def __getitem__(self, grid):
        return self.fn


def _alloc_extend(prefix_lens, seq_lens, last_loc, free_pages, out_indices, _bs, page_size):
    from sglang.srt.mem_cache.allocator import alloc_extend_naive

    # Like the kernel, read free pages only when there are enough of them; otherwise
    # alloc_extend sees the shortage right after the launch and returns None.
    new_pages = (seq_lens + page_size - 1) // page_size - (prefix_lens + page_size - 1) // page_size
    if int(new_pages.sum()) <= len(free_pages):
        alloc_extend_naive(
            prefix_lens, seq_lens, last_loc, free_pages, out_indices, page_size, out_indices.device
        )


def _alloc_decode(seq_lens, last_loc, free_pages, out_indices, _bs, page_size):
    # A request whose new token opens a page takes the next free page, in batch order;
    # every other request writes right after its last slot. As in the kernel, free
    # pages are read only for the requests that open one.
    out_indices[:] = last_loc + 1
    opening = torch.nonzero((seq_lens - 1) % page_size == 0).flatten()[: len(free_pages)]
    out_indices[opening] = free_pages[: len(opening)] * page_size


def install() -> None:
    _declare_torchvision_ops()
    from sglang.srt.mem_cache import allocator

    allocator.alloc_extend_kernel = _Launcher(_alloc_extend)
    allocator.alloc_decode_kernel = _Launcher(_alloc_decode)


install()
