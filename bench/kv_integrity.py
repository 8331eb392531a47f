"""KV-content integrity of the model-free forward (bench/sched_driver.py, replacement 3)."""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from sglang.srt.managers.schedule_batch import Req, ScheduleBatch
from sglang.srt.managers.scheduler import Scheduler

import workloads


class KVIntegrityError(AssertionError):
    """A request read a KV slot that does not hold what its tokens imply."""


class KVIntegrity:
    """The model-free forward's KV: what it writes into each slot, and the check of what it reads.

    The value of the KV at position i of a request is a 62-bit hash of its tokens 0..i (input,
    then output), so two requests that share a prefix expect the same values there and nothing
    else matches. Before each extend and decode the forward checks that every slot the request
    reads (req_to_token for positions below the ones it computes) holds the expected value, then
    writes the values of the positions it computes into their slots. The value lives in the MLA
    pool's own buffer (the latent of 4 bf16 values is one 64-bit word), so whatever moves KV
    (host copies and their load-back) moves it too. A mismatch raises KVIntegrityError.
    """

    MASK = (1 << 62) - 1

    def __init__(self, s: Scheduler, targets: Dict[str, Tuple[int, int]]) -> None:
        kvcache = s.token_to_kv_pool_allocator.get_kvcache()
        self.words = kvcache.kv_buffer[0].view(torch.int64).view(-1)
        self.req_to_token = s.req_to_token_pool.req_to_token
        self.targets = targets
        self.expected: Dict[str, torch.Tensor] = {}
        self.checked_tokens = 0

    def _values(self, req: Req) -> torch.Tensor:
        vals = self.expected.get(req.rid)
        if vals is None:
            out_len, max_new = self.targets[req.rid]
            tokens = list(req.origin_input_ids)
            tokens += workloads.synthetic_output(req.rid, out_len, max_new)
            h, hashes = 0, []
            for t in tokens:
                h = (h * 1099511628211 + t + 1) & self.MASK
                hashes.append(h)
            vals = self.expected[req.rid] = torch.tensor(hashes, dtype=torch.int64)
        return vals

    def forward(self, batch: ScheduleBatch) -> None:
        """Check every slot the batch reads, then write the slots it computes: one gather, one
        comparison and one scatter for the whole batch (per request only slice views)."""
        if batch.forward_mode.is_extend():
            spans = list(zip(batch.reqs, batch.prefix_lens, batch.extend_lens))
        else:  # decode: the last output token's KV is computed, the rest is read
            spans = [(r, int(n) - 1, 1) for r, n in zip(batch.reqs, batch.seq_lens_cpu)]
        if not spans:
            return
        rows = self.req_to_token
        read_slots, read_vals, new_slots, new_vals = [], [], [], []
        for req, read, new in spans:
            vals = self._values(req)
            row = rows[req.req_pool_idx]
            read_slots.append(row[:read])
            read_vals.append(vals[:read])
            new_slots.append(row[read : read + new])
            new_vals.append(vals[read : read + new])
        slots = torch.cat(read_slots).to(torch.int64)
        expected = torch.cat(read_vals)
        held = self.words[slots]
        if not torch.equal(held, expected):
            self._raise(batch, spans, held, expected, slots)
        self.words[torch.cat(new_slots).to(torch.int64)] = torch.cat(new_vals)
        self.checked_tokens += int(slots.numel())

    def _raise(self, batch: ScheduleBatch, spans: List[Tuple[Req, int, int]],
               held: torch.Tensor, expected: torch.Tensor, slots: torch.Tensor) -> None:
        first = int((held != expected).nonzero()[0])
        for req, read, _ in spans:
            if first < read:
                raise KVIntegrityError(
                    f"request {req.rid} reads slot {int(slots[first])} at position {first} of "
                    f"{read} ({batch.forward_mode.name}, prefix {len(req.prefix_indices)}): "
                    f"it holds the KV of other tokens"
                )
            first -= read
        raise AssertionError("unreachable: a mismatch outside every request's span")
