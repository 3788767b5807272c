"""Click options shared by ``smoke``, ``train`` and ``generate`` (model shape and runtime).

Only click is imported here; commands import torch and the library inside their body.
"""

from __future__ import annotations

from typing import Any, Callable

import click

PRESET_NAMES = ("tiny", "small", "base")
BACKEND_CHOICES = ("auto", "torch", "triton", "tilelang")
DTYPE_CHOICES = ("float32", "bfloat16")

_POSITIVE = click.IntRange(min=1)


def _stack(options: list[Callable]) -> Callable:
    def apply(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


# Parameter names of the shape overrides in model_shape_options, with the flags that switch parts off.
SHAPE_OVERRIDES = ("dim", "layers", "heads", "experts", "top_k", "codebook", "max_moe_iters")
SHAPE_FLAGS = ("preset", *SHAPE_OVERRIDES, "no_moe", "no_vq", "no_graph")

model_shape_options = _stack([
    click.option("--preset", type=click.Choice(PRESET_NAMES), default="tiny", show_default=True, help="Size preset."),
    click.option("--dim", type=_POSITIVE, default=None, help="Override the model width."),
    click.option("--layers", type=_POSITIVE, default=None, help="Override the number of blocks."),
    click.option("--heads", type=_POSITIVE, default=None, help="Override the number of attention heads."),
    click.option("--experts", type=_POSITIVE, default=None, help="Override the number of MoE experts."),
    click.option("--top-k", "top_k", type=_POSITIVE, default=None, help="Override experts per token."),
    click.option("--codebook", type=click.IntRange(min=2), default=None, help="Override the number of VQ codes."),
    click.option("--max-moe-iters", type=_POSITIVE, default=None, help="Most adaptive MoE iterations per token."),
    click.option("--no-moe", is_flag=True, help="Dense ternary MLP instead of the mixture of experts."),
    click.option("--no-vq", is_flag=True, help="No VQ bottleneck (and so no graph)."),
    click.option("--no-graph", is_flag=True, help="No graph over VQ codes."),
])

runtime_options = _stack([
    click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
    click.option("--backend", type=click.Choice(BACKEND_CHOICES), default=None,
                 help="Kernel backend for every call (default: TERNARY_BACKEND, else auto)."),
    click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="float32", show_default=True,
                 help="Activation dtype."),
    click.option("--threads", type=_POSITIVE, default=None, help="CPU threads for torch (default: torch's choice)."),
    click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True),
])


def build_config(values: dict[str, Any]) -> Any:
    """:class:`ternary.model.ModelConfig` from the parsed shape options (bad combinations -> UsageError)."""
    from ternary.model import preset

    overrides = {name: values[name] for name in SHAPE_OVERRIDES}
    overrides.update(
        moe=False if values["no_moe"] else None,
        vq=False if values["no_vq"] else None,
        graph=False if values["no_graph"] else None,
    )
    try:
        return preset(values["preset"], **overrides)
    except ValueError as error:
        raise click.UsageError(str(error)) from None


def prepare_runtime(values: dict[str, Any], *, grad_enabled: bool) -> None:
    """Check device and backend before any work (clear one-line errors), and set CPU threads."""
    import torch

    from ternary.kernels.registry import BackendError, resolve

    if values["device"] == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine", param_hint="'--device'")
    try:
        resolve(values["backend"], torch.device(values["device"]), grad_enabled=grad_enabled)
    except BackendError as error:
        raise click.BadParameter(str(error), param_hint="'--backend'") from None
    if values["threads"] is not None:
        torch.set_num_threads(values["threads"])
