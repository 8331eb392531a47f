"""The Scheduler object the driver and the breadth matrix run: ``Scheduler.__init__`` is not run
(it loads a model, starts a TP worker and opens IPC); ``scheduler_shell`` makes the object and
sets what the constructor's argument-parsing block sets, and the stand-ins here replace the
senders, the grammar manager and the model config (bench/sched_driver.py, replacements 1, 2, 5
and 6)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import sglang_cpu  # noqa: F401  (must precede every sglang import)

from sglang.srt.configs.model_config import ModelImpl
from sglang.srt.managers.scheduler import Scheduler
from sglang.srt.server_args import ServerArgs
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

from workloads import VOCAB_SIZE


class Sink:
    """Stands in for the ZMQ senders; counts what would be sent."""

    def __init__(self) -> None:
        self.sent = 0

    def send_output(self, *args: Any, **kwargs: Any) -> None:
        self.sent += 1


class NoGrammar:
    def has_waiting_grammars(self) -> bool:
        return False


def noop(*args: Any, **kwargs: Any) -> None:
    return None


def model_config_stub(context_len: int) -> SimpleNamespace:
    return SimpleNamespace(
        vocab_size=VOCAB_SIZE,
        context_len=context_len,
        is_multimodal=False,
        is_encoder_decoder=False,
        is_matryoshka=False,
        hidden_size=16,
        hf_eos_token_id=None,
        use_ngram_embedding=False,
        _resolved_model_impl=ModelImpl.SGLANG,
    )


def scheduler_shell(server_args: ServerArgs) -> Scheduler:
    """``object.__new__(Scheduler)`` and the "Parse args" block of ``Scheduler.__init__``
    for a single rank (no TP/PP/DP), non-overlap, no speculative decoding."""
    s: Scheduler = object.__new__(Scheduler)
    s.is_initializing = True
    s.server_args = server_args
    s.tp_rank = s.moe_ep_rank = s.pp_rank = s.attn_cp_rank = s.moe_dp_rank = 0
    s.attn_cp_size = server_args.attn_cp_size
    s.moe_dp_size = server_args.moe_dp_size
    s.dp_rank = None
    s.tp_size = server_args.tp_size
    s.moe_ep_size = server_args.ep_size
    s.pp_size = server_args.pp_size
    s.dp_size = server_args.dp_size
    s.schedule_policy = server_args.schedule_policy
    s.enable_priority_scheduling = server_args.enable_priority_scheduling
    s.abort_on_priority_when_disabled = server_args.abort_on_priority_when_disabled
    s.schedule_low_priority_values_first = (
        server_args.schedule_low_priority_values_first
    )
    s.priority_scheduling_preemption_threshold = (
        server_args.priority_scheduling_preemption_threshold
    )
    s.enable_lora = server_args.enable_lora
    s.enable_lora_overlap_loading = server_args.enable_lora_overlap_loading
    s.enable_overlap = False
    s.enable_pdmux = False
    s.skip_tokenizer_init = True
    s.stream_interval = server_args.stream_interval
    s.spec_algorithm = SpeculativeAlgorithm.from_string(None)
    s.gpu_id = 0
    s.page_size = server_args.page_size
    s.enable_hierarchical_cache = server_args.enable_hierarchical_cache
    s.enable_hicache_storage = server_args.hicache_storage_backend is not None
    s.enable_hisparse = server_args.enable_hisparse
    s.hisparse_coordinator = None
    s.attn_tp_rank, s.attn_tp_size, s.attn_dp_rank = 0, 1, 0
    s.enable_kv_cache_events = False
    return s
