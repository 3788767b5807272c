"""Small constant tensors that kernels read (lookup tables, work orders), built by device operations and
kept per key, shared by the launchers that need one (``pair_rule.trit_table``, the decode-in-GEMM unit order).

A kept tensor costs a call nothing: no kernel rebuilds it, eagerly or inside a CUDA graph capture. The first
build outside a capture waits for its stream before it is kept, so that a kernel queued on another stream
never reads it unfinished. Inside a capture a tensor not yet kept is built into the graph and not kept: a
tensor made in a capture is written only when the graph replays."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch


def kept(store: dict, key: Hashable, device: torch.device, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``store[key]`` if kept, else ``build()`` on ``device``, kept in ``store`` unless a CUDA graph capture is
    under way on the current stream (of the current device: callers build on the device they launch on). Entries
    are never evicted: a graph or a queued kernel may still read them. ``key`` should name ``device`` with its
    index (a tensor's ``.device``), so that one device never reads another's tensor."""
    if key in store:
        return store[key]
    tensor = build()
    if device.type == "cuda":
        if torch.cuda.is_current_stream_capturing():
            return tensor
        torch.cuda.current_stream(device).synchronize()
    store[key] = tensor
    return tensor
