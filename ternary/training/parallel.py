"""Data parallelism for ``ternary train`` under ``torchrun``.

Rank ``r`` of ``W`` trains on micro-batches ``r * accum .. r * accum + accum - 1`` of
each step (the single-process run with ``--accum W * accum`` sees the same windows).
Votes are combined by :func:`ternary.distributed.vote_update` (an all-reduce of int8
votes, majority per weight); VQ codes are all-gathered so every rank applies the same
integer bookkeeping in rank order. All ranks therefore hold bit-identical state, which
:func:`ternary.distributed.check_ranks_agree` verifies every ``check_every`` steps.
Only rank 0 writes snapshots and logs.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
import torch
import torch.distributed as dist

from ternary.distributed import check_ranks_agree, vote_update
from ternary.functional import UpdateRule


def torchrun_world() -> int:
    """World size announced by ``torchrun`` (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@attrs.frozen
class DataParallel:
    """This process's place among the ranks: ``rank`` of ``world``."""

    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def micro_index(self, micro: int, accum: int) -> int:
        """Global index of this rank's ``micro``-th micro-batch of a step."""
        return self.rank * accum + micro

    def update(self, state: Any, hooks: Any, rule: UpdateRule) -> tuple[Any, int]:
        """Majority-vote update across ranks; returns ``(new_state, bytes all-reduced)``."""
        return vote_update(state, hooks, rule)

    def gather_codes(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's VQ codes ``[B, T]``, in rank order (identical on all ranks)."""
        gathered = [torch.empty_like(codes) for _ in range(self.world)]
        dist.all_gather(gathered, codes.contiguous())
        return gathered

    def check(self, state: Any, device: torch.device) -> None:
        check_ranks_agree(state, device=device if device.type == "cuda" else None)


def start(device: str) -> tuple[DataParallel | None, str]:
    """Join the ``torchrun`` process group if there is one; returns ``(parallel, device)``.

    On CUDA each rank takes ``cuda:LOCAL_RANK`` and NCCL; on CPU, gloo.
    """
    if torchrun_world() <= 1:
        return None, device
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return DataParallel(rank=dist.get_rank(), world=dist.get_world_size()), device


def stop(parallel: DataParallel | None) -> None:
    if parallel is not None and dist.is_initialized():
        dist.destroy_process_group()
