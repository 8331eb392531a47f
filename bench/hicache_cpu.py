"""CPU substitutions that let SGLang's HiCache (``HiRadixCache``, ``MLATokenToKVPoolHost``,
``HiCacheController``) run unmodified inside bench/sched_driver.py and bench/matrix_driver.py.

Only what needs CUDA is replaced; everything else (the host pool's allocator and layouts, the
controller's write/load queues, ``CacheOperation.merge_ops``, the ack queues, ``writing_check`` /
``loading_check``, ``LayerDoneCounter``, ``HiRadixCache``'s insert / evict / evict_host /
load_back) is SGLang's own code. ``install(clock)`` applies the substitutions (idempotent, for
the tree on ``sys.path``) and must run before the scheduler's cache is built.

1. Registered host memory. ``alloc_with_host_register`` (memory_pool_host.py:110-126) allocates
   the host buffer with the storage allocator and then calls
   ``torch.cuda.cudart().cudaHostRegister`` on it. Here the same allocator allocates the same
   plain CPU tensor and nothing is registered: page-locking only lets the GPU's copy engine DMA
   from it; the copy time is modelled (5 below), not measured.
2. ``sgl_kernel.kvcacheio`` transfer kernels. ``memory_pool_host`` imports them by name
   (memory_pool_host.py:47-61); the MLA ones the pool's dispatch reaches
   (``MLATokenToKVPoolHost.load_to_device_per_layer`` / ``backup_from_device_all_layer``,
   :923-1089) are replaced by torch index copies that move the same token slots of the same
   buffers: ``dst[dst_indices] = src[src_indices]`` per layer, for layouts ``layer_first``
   (io backends ``kernel`` and ``direct``), ``page_first`` (``kernel``) and
   ``page_first_direct`` (``direct``). The all-layer kernels take tensors of buffer addresses
   (``data_ptrs``); the replacement maps each address back to the tensor that owns it (the
   device pool's per-layer ``kv_buffer`` and the host pool's ``data_refs`` / ``kv_buffer``,
   registered when ``MLATokenToKVPoolHost`` is built) and refuses an unknown address. Each copy
   moves whole token rows, so the KV-integrity words sched_driver writes into the MLA latent
   travel with them.
3. CUDA streams and events. ``cache_controller.device_module`` (``torch.get_device_module()``,
   which is ``torch.cpu`` here: events that are always complete) is replaced by ``ModelledCuda``:
   streams and events with the CUDA semantics the controller relies on, on a modelled clock.
   Work enqueued on a stream runs in order after what was already enqueued there and after any
   event the stream waits on; ``Event.record`` captures the stream's completion time so far;
   ``Event.query`` is True once the clock has reached it; ``Event.synchronize`` blocks the
   host (the scheduler) until then, which advances the clock (time the driver adds to the step).
   The data itself moves synchronously when the copy is enqueued, which is as early as the GPU
   could have moved it, and nothing reads it earlier: the controller reads host copies only
   after the finish event (``writing_check``), and the forward reads loaded slots after
   ``start_loading``. So the scheduler sees each write-through ack and each load-back ack at the
   step where the modelled copy has finished, as on the GPU.
4. The TP all-reduces in ``writing_check`` / ``can_terminate_prefetch`` run only when the TP
   group has more than one rank; ``init_single_rank`` sets up one CPU rank (gloo, world size 1)
   with SGLang's own ``init_distributed_environment`` / ``initialize_model_parallel``, as
   ``ModelRunner.init_torch_distributed`` does, and HiRadixCache gets its TP CPU group.
5. Copy time (modelled, never measured): every transfer costs tokens x
   ``host_copy_s_per_token`` (bench/costmodel.py: the geometry's KV bytes per token over the
   deployment's host link, 64 GB/s x 0.25 = 16 GB/s effective per GPU per direction, an
   assumption); a per-layer load of the tiny one-layer pool stands for all layers of the
   modelled geometry. Device-to-host and host-to-device copies use separate streams (separate
   directions of the link). sched_driver folds it into the step time: a load-back overlaps the
   forward layer by layer (the forward of layer i waits for the load of layer i), a write runs
   on its own stream and costs the step nothing unless something synchronizes on it
   (``write_back`` eviction, ``writing_check(write_back=True)``), and blocking waits are added.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any, Dict, List, Optional

import torch


class Clock:
    """The modelled time the substituted streams and events run on (seconds)."""

    def __init__(self, copy_s_per_token: float = 0.0) -> None:
        self.now = 0.0
        self.copy_s_per_token = copy_s_per_token
        self.blocked_s = 0.0  # total time the host waited on an event
        self.d2h_tokens = 0  # tokens backed up to host (all layers)
        self.h2d_tokens = 0  # tokens loaded back from host (all layers)
        self.d2h_busy_s = 0.0
        self.h2d_busy_s = 0.0
        self.step_load_s = 0.0  # load-back time issued in the current step (from its start)

    def block_until(self, t: float) -> None:
        if t > self.now:
            self.blocked_s += t - self.now
            self.now = t


class _Stream:
    def __init__(self, clock: Clock, name: str) -> None:
        self.clock = clock
        self.name = name
        self.busy_until = 0.0

    def enqueue(self, seconds: float) -> float:
        start = max(self.busy_until, self.clock.now)
        self.busy_until = start + seconds
        return self.busy_until

    def wait_event(self, event: "_Event") -> None:
        if event.t is not None:
            self.busy_until = max(self.busy_until, event.t)

    def wait_stream(self, stream: "_Stream") -> None:
        self.busy_until = max(self.busy_until, stream.busy_until)

    def synchronize(self) -> None:
        self.clock.block_until(self.busy_until)


class _Event:
    def __init__(self, module: "ModelledCuda") -> None:
        self.module = module
        self.t: Optional[float] = None  # never recorded: complete, as a CUDA event

    def record(self, stream: Optional[_Stream] = None) -> None:
        s = stream or self.module.current_stream()
        self.t = max(s.busy_until, self.module.clock.now)

    def query(self) -> bool:
        return self.t is None or self.module.clock.now >= self.t - 1e-12

    def synchronize(self) -> None:
        if self.t is not None:
            self.module.clock.block_until(self.t)

    def wait(self, stream: Optional[_Stream] = None) -> None:
        (stream or self.module.current_stream()).wait_event(self)


class ModelledCuda:
    """The subset of ``torch.cuda`` that cache_controller.py uses, on a modelled clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        # The compute (default) stream: in the non-overlap loop the forward has finished
        # whenever the scheduler runs, so its work is done at the clock.
        self.default = _Stream(clock, "compute")
        self._current: List[_Stream] = [self.default]
        module = self

        self.streams: List[_Stream] = [self.default]

        class Stream(_Stream):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(module.clock, "copy")
                module.streams.append(self)

        class Event(_Event):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(module)

        self.Stream = Stream
        self.Event = Event

    def current_stream(self, device: Any = None) -> _Stream:
        s = self._current[-1]
        if s is self.default:
            s.busy_until = self.clock.now
        return s

    @contextlib.contextmanager
    def stream(self, s: _Stream):
        self._current.append(s)
        try:
            yield
        finally:
            self._current.pop()

    def synchronize(self, device: Any = None) -> None:
        self.clock.block_until(max(s.busy_until for s in self.streams))

    def charge(self, tokens: int, direction: str, fraction: float = 1.0) -> None:
        """Enqueue a copy of ``tokens`` tokens (x fraction of the layers) on the current stream."""
        clock = self.clock
        s = self.current_stream()
        seconds = tokens * clock.copy_s_per_token * fraction
        end = s.enqueue(seconds)
        if direction == "d2h":
            clock.d2h_busy_s += seconds
        else:
            clock.h2d_busy_s += seconds
            clock.step_load_s = max(clock.step_load_s, end - clock.now)


# ---------------------------------------------------------------------------------------------
# Substitution 2: kvcacheio transfers as torch index copies
# ---------------------------------------------------------------------------------------------

_BUFFERS: Dict[int, torch.Tensor] = {}  # data_ptr -> the tensor that owns it (substitution 2)
_STATE: Dict[str, Any] = {"module": None, "layers": 1}


def _register(*tensors: torch.Tensor) -> None:
    for t in tensors:
        _BUFFERS[t.data_ptr()] = t


def _by_ptr(ptrs: Any) -> List[torch.Tensor]:
    if isinstance(ptrs, (list, tuple)):
        return list(ptrs)
    out = []
    for p in ptrs.tolist():
        t = _BUFFERS.get(int(p))
        if t is None:
            raise RuntimeError(f"hicache_cpu: no registered KV buffer at address {int(p):#x}")
        out.append(t)
    return out


def _idx(t: torch.Tensor) -> torch.Tensor:
    return t.to(device="cpu", dtype=torch.int64)


def _backup(tokens: int) -> None:
    """An all-layer device -> host copy of ``tokens`` tokens on the current stream."""
    m = _STATE["module"]
    if m is not None:
        m.charge(tokens, "d2h")
        m.clock.d2h_tokens += tokens


def _per_layer_load(n: int, layer_id: int) -> None:
    layers = _STATE["layers"]
    m = _STATE["module"]
    if m is not None:
        m.charge(n, "h2d", 1.0 / layers)
        if layer_id == 0:
            m.clock.h2d_tokens += n


def transfer_kv_per_layer_mla(src, dst, src_indices, dst_indices, item_size=None, **_):
    # host layer -> device layer, layer_first: one token row per index
    dst[_idx(dst_indices)] = src[_idx(src_indices)]
    _per_layer_load(len(src_indices), _STATE.get("cur_layer", 0))


def transfer_kv_all_layer_mla(src_layers, dst_layers, src_indices, dst_indices, item_size=None,
                              num_layers=None, **_):
    si, di = _idx(src_indices), _idx(dst_indices)
    for s, d in zip(_by_ptr(src_layers), _by_ptr(dst_layers)):
        d[di] = s[si]
    _backup(len(src_indices))


def transfer_kv_per_layer_mla_pf_lf(src, dst, src_indices, dst_indices, layer_id, item_size=None,
                                    src_layout_dim=None, **_):
    # host page_first [token, layer, 1, dim] -> device layer [token, 1, dim]
    dst[_idx(dst_indices)] = src[_idx(src_indices), layer_id]
    _per_layer_load(len(src_indices), layer_id)


def transfer_kv_all_layer_mla_lf_pf(src_layers, dst, src_indices, dst_indices, item_size=None,
                                    dst_layout_dim=None, num_layers=None, **_):
    si, di = _idx(src_indices), _idx(dst_indices)
    for layer, s in enumerate(_by_ptr(src_layers)):
        dst[di, layer] = s[si]
    _backup(len(src_indices))


def transfer_kv_direct(src_layers, dst_layers, src_indices, dst_indices, page_size=None, **_):
    si, di = _idx(src_indices), _idx(dst_indices)
    src_layers, dst_layers = _by_ptr(src_layers), _by_ptr(dst_layers)
    for s, d in zip(src_layers, dst_layers):
        d[di] = s[si]
    # direct, layer_first: a load is one call per layer from a host layer, a backup one call
    if src_layers and src_layers[0].data_ptr() in _STATE.get("host_ptrs", ()):
        _per_layer_load(len(src_indices), _STATE.get("cur_layer", 0))
    else:
        _backup(len(src_indices))


def _pfd_split(indices: torch.Tensor, page_size: int):
    i = _idx(indices)
    return i // page_size, i % page_size


def transfer_kv_per_layer_direct_pf_lf(src_ptrs, dst_ptrs, src_indices, dst_indices, layer_id,
                                       page_size, **_):
    # host page_first_direct [page, layer, page_size, 1, dim] -> device layer [token, 1, dim]
    src, dst = _by_ptr(src_ptrs)[0], _by_ptr(dst_ptrs)[0]
    page, off = _pfd_split(src_indices, page_size)
    dst[_idx(dst_indices)] = src[page, layer_id, off]
    _per_layer_load(len(src_indices), layer_id)


def transfer_kv_all_layer_direct_lf_pf(src_ptrs, dst_ptrs, src_indices, dst_indices, page_size,
                                       **_):
    dst = _by_ptr(dst_ptrs)[0]
    page, off = _pfd_split(dst_indices, page_size)
    si = _idx(src_indices)
    for layer, s in enumerate(_by_ptr(src_ptrs)):
        dst[page, layer, off] = s[si]
    _backup(len(src_indices))


def transfer_kv_per_layer(src_k, dst_k, src_v, dst_v, src_indices, dst_indices, item_size=None,
                          **_):
    # MHA, layer_first: host layer -> device layer, K and V rows
    si, di = _idx(src_indices), _idx(dst_indices)
    dst_k[di] = src_k[si]
    dst_v[di] = src_v[si]
    _per_layer_load(len(src_indices), _STATE.get("cur_layer", 0))


def transfer_kv_all_layer(src_k_layers, dst_k_layers, src_v_layers, dst_v_layers, src_indices,
                          dst_indices, item_size=None, num_layers=None, **_):
    si, di = _idx(src_indices), _idx(dst_indices)
    for src, dst in ((src_k_layers, dst_k_layers), (src_v_layers, dst_v_layers)):
        for s_, d in zip(_by_ptr(src), _by_ptr(dst)):
            d[di] = s_[si]
    _backup(len(src_indices))


_TRANSFERS = {
    "transfer_kv_per_layer": transfer_kv_per_layer,
    "transfer_kv_all_layer": transfer_kv_all_layer,
    "transfer_kv_per_layer_mla": transfer_kv_per_layer_mla,
    "transfer_kv_all_layer_mla": transfer_kv_all_layer_mla,
    "transfer_kv_per_layer_mla_pf_lf": transfer_kv_per_layer_mla_pf_lf,
    "transfer_kv_all_layer_mla_lf_pf": transfer_kv_all_layer_mla_lf_pf,
    "transfer_kv_direct": transfer_kv_direct,
    "transfer_kv_per_layer_direct_pf_lf": transfer_kv_per_layer_direct_pf_lf,
    "transfer_kv_all_layer_direct_lf_pf": transfer_kv_all_layer_direct_lf_pf,
}


def _plain_alloc(dims, dtype, device, pin_memory, allocator):
    """Substitution 1: alloc_with_host_register without cudaHostRegister."""
    return allocator.allocate(dims, dtype=dtype, device=device)


def install(clock: Optional[Clock] = None) -> ModelledCuda:
    """Apply substitutions 1-3 to the SGLang tree on sys.path; returns the modelled device module."""
    from sglang.srt.managers import cache_controller
    from sglang.srt.mem_cache import memory_pool_host as mph

    clock = clock or Clock()
    module = ModelledCuda(clock)
    _STATE["module"] = module
    cache_controller.device_module = module  # substitution 3
    mph.alloc_with_host_register = _plain_alloc  # substitution 1 (ALLOC_MEMORY_FUNCS' default)
    for name, fn in _TRANSFERS.items():  # substitution 2
        setattr(mph, name, fn)

    for cls in (mph.MLATokenToKVPoolHost, mph.MHATokenToKVPoolHost):
        if "_hicache_cpu_wrapped" not in vars(cls):
            _wrap_host_pool(cls)
    return module


def _device_and_host_layers(host: Any, device_pool: Any) -> List[torch.Tensor]:
    if hasattr(host, "k_data_refs"):  # MHA
        return [*device_pool.k_buffer, *device_pool.v_buffer, *host.k_data_refs,
                *host.v_data_refs]
    return [*device_pool.kv_buffer, *host.data_refs]


def _wrap_host_pool(cls: Any) -> None:
    """Registers a new host pool's buffers (observation: address -> tensor for substitution 2)."""
    orig_init = cls.__init__
    orig_load = cls.load_to_device_per_layer

    def __init__(self, device_pool, *a, **kw):
        orig_init(self, device_pool, *a, **kw)
        _BUFFERS.clear()  # one host pool per scheduler (a --batch builds several in turn)
        _register(*_device_and_host_layers(self, device_pool))
        _STATE["layers"] = device_pool.layer_num
        host = [self.kv_buffer] + list(getattr(self, "data_refs", []))
        _STATE["host_ptrs"] = {t.data_ptr() for t in host}

    def load_to_device_per_layer(self, device_pool, host_indices, device_indices, layer_id,
                                 io_backend):
        _STATE["cur_layer"] = layer_id  # which layer a per-layer copy belongs to (timing only)
        return orig_load(self, device_pool, host_indices, device_indices, layer_id, io_backend)

    cls.__init__ = __init__
    cls.load_to_device_per_layer = load_to_device_per_layer
    cls._hicache_cpu_wrapped = True


_DIST_READY = False


def init_single_rank(server_args: Any) -> Any:
    """Substitution 4: one CPU rank, as ModelRunner.init_torch_distributed sets it up; returns
    the TP CPU group."""
    global _DIST_READY
    from sglang.srt.distributed.parallel_state import (
        get_default_distributed_backend,
        get_tp_group,
        init_distributed_environment,
        initialize_model_parallel,
    )

    if not _DIST_READY and not torch.distributed.is_initialized():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        init_distributed_environment(backend=get_default_distributed_backend("cpu"),
                                     world_size=1, rank=0, local_rank=0,
                                     distributed_init_method=f"tcp://127.0.0.1:{port}")
        initialize_model_parallel(tensor_model_parallel_size=1)
    _DIST_READY = True
    return get_tp_group().cpu_group


def host_slots_leaked(tree: Any) -> int:
    """Host slots allocated but held by no tree node (0 when nothing leaked)."""
    host = tree.token_to_kv_pool_host
    held = 0
    stack = [tree.root_node]
    while stack:
        n = stack.pop()
        if n is not tree.root_node and n.host_value is not None:
            held += len(n.host_value)
        stack.extend(n.children.values())
    used = host.size - host.available_size()
    return used - held


def host_protected_nodes(tree: Any) -> int:
    """Tree nodes whose host copy is still protected (host_ref_counter > 0)."""
    count, stack = 0, [tree.root_node]
    while stack:
        n = stack.pop()
        count += n is not tree.root_node and getattr(n, "host_ref_counter", 0) > 0
        stack.extend(n.children.values())
    return count
