"""``smoke``: build the model, time forward (and backward + one update), audit the state.

Timings are wall-clock around each call (CUDA synchronised); "cold" is the first
call in the process, "cached" the second with the same shapes. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and the process's peak resident set
size (``ru_maxrss``) on CPU. Hooks left after the update are counted with weak
references to every hook tensor: after ``update`` returns and the caller drops
its hooks tree, the number of those tensors still alive (something kept them) is
reported; it must be 0.
"""

from __future__ import annotations

import gc
import platform
import resource
import time
import weakref
from typing import Any, Callable

import attrs
import torch
import torch.utils._pytree as pytree

from ternary.functional import LinearHooks, update, value_and_hooks
from ternary.kernels.registry import resolve
from ternary.model import ModelConfig, ModelState, init_model, loss, observe
from ternary.state.audit import audit
from ternary.state.linear_state import LinearState
from ternary.training.loop import DTYPES


@attrs.frozen(kw_only=True)
class SmokeOptions:
    config: ModelConfig
    ctx: int | None = None
    batch: int = 2
    backward: bool = False
    device: str = "cpu"
    backend: str | None = None
    dtype: str = "float32"
    seed: int = 0

    @property
    def context(self) -> int:
        return self.ctx if self.ctx is not None else self.config.context


def _timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - began


def float_counts(state: ModelState) -> dict[str, int]:
    """Float elements inside layer records (trainable) and float tensor leaves elsewhere (buffers)."""
    layers = [n for n in pytree.tree_leaves(state, is_leaf=lambda n: isinstance(n, LinearState)) if isinstance(n, LinearState)]
    trainable = [t for layer in layers for t in pytree.tree_leaves(layer) if t.dtype.is_floating_point]
    return {
        "trainable_float_parameters": sum(t.numel() for t in trainable),
        "float_buffers": len(audit(state).float_leaves) - len(trainable),
    }


def hook_tensors(hooks: Any) -> list[torch.Tensor]:
    leaves = pytree.tree_leaves(hooks, is_leaf=lambda n: n is None or isinstance(n, LinearHooks))
    return [t for h in leaves if isinstance(h, LinearHooks) for t in (h.x, h.grad_y)]


def _peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)), "peak_memory_kind": "cuda_max_allocated"}
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_memory_kind": "cpu_max_rss"}


def run_smoke(options: SmokeOptions) -> dict[str, Any]:
    """Build, time and audit; returns a JSON-ready dict (see the module docstring for what is measured)."""
    device = torch.device(options.device)
    dtype = DTYPES[options.dtype]
    config, backend = options.config, options.backend
    state = init_model(config, seed=options.seed, device=device)
    generator = torch.Generator().manual_seed(options.seed)
    window = torch.randint(0, 256, (options.batch, options.context + 1), generator=generator).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def forward_loss() -> torch.Tensor:
        with torch.no_grad():
            return loss(state, window, config, backend=backend, dtype=dtype)[0]

    value, forward_cold = _timed(device, forward_loss)
    value, forward_cached = _timed(device, forward_loss)
    report: dict[str, Any] = {
        "loss": float(value),
        "forward_s": {"cold": forward_cold, "cached": forward_cached},
        "backward_update_s": None,
    }
    hooks_left, new_state = 0, state
    if options.backward:
        step = value_and_hooks(loss, has_aux=True)
        times = []
        for _ in range(2):
            def backward_and_update() -> tuple[ModelState, list[weakref.ref], float]:
                (total, aux), hooks = step(state, window, config, backend=backend, dtype=dtype)
                refs = [weakref.ref(t) for t in hook_tensors(hooks)]
                new = observe(update(state, hooks, backend=backend), aux.model, config)
                return new, refs, float(total)

            (new_state, refs, total), seconds = _timed(device, backward_and_update)
            gc.collect()
            hooks_left = sum(ref() is not None for ref in refs)
            times.append(seconds)
        report["loss"] = total
        report["backward_update_s"] = {"cold": times[0], "cached": times[1]}
    counts = float_counts(new_state)
    state_audit = audit(new_state)
    report.update(_peak_memory(device))
    report["audit"] = counts | {
        "hooks_left_after_update": hooks_left,
        "state_bytes": state_audit.total_bytes,
        "leaves_by_dtype": state_audit.leaves_by_dtype,
        "ok": state_audit.ok and hooks_left == 0 and not any(counts.values()),
    }
    report["run"] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "backend": resolve(backend, device, grad_enabled=options.backward),
        "ctx": options.context,
        "batch": options.batch,
        "backward": options.backward,
        "dtype": options.dtype,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "config": config.to_dict(),
    }
    return report
