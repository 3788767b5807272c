"""``ternary generate``: sample bytes from a trained snapshot."""

from __future__ import annotations

import math
import sys

import click

from apps.commands.model_options import prepare_runtime, runtime_options


def _finite(context, parameter, value: float) -> float:
    """Refuse ``nan`` and ``inf`` (``FloatRange`` lets them through)."""
    if not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}", ctx=context, param=parameter)
    return value


@click.command("generate")
@click.option("--snapshot", type=click.Path(exists=True, dir_okay=True, path_type=str), required=True,
              help="Snapshot file written by `ternary train` (or its folder: the newest one).")
@click.option("--prompt", default="", help="Text to continue (UTF-8; bytes that are not UTF-8 are passed through).")
@click.option("--tokens", type=click.IntRange(min=0), default=200, show_default=True, help="Bytes to generate.")
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.8, show_default=True, callback=_finite,
              help="Sampling temperature (0: most likely byte).")
@runtime_options
def generate(**values) -> None:
    """Write ``--tokens`` sampled bytes continuing ``--prompt`` to standard output."""
    import torch.utils._pytree as pytree

    from ternary.io import SnapshotError, resume_from
    from ternary.model import ModelConfig
    from ternary.training import sample_bytes
    from ternary.training.loop import DTYPES

    prepare_runtime(values, grad_enabled=False)
    try:
        _, state, meta = resume_from(values["snapshot"])
        config = ModelConfig.from_dict(meta["config"])
    except KeyError as missing:
        raise click.ClickException(f"--snapshot {values['snapshot']}: its metadata has no {missing} "
                                   "(not a snapshot written by `ternary train`)") from None
    except (SnapshotError, TypeError, ValueError) as error:
        raise click.ClickException(f"--snapshot {values['snapshot']}: cannot use it ({error})") from None
    state = pytree.tree_map(lambda t: t.to(values["device"]), state)
    produced = sample_bytes(
        state, config, values["prompt"].encode("utf-8", "surrogateescape"), values["tokens"],
        temperature=values["temperature"],
        seed=values["seed"], backend=values["backend"], dtype=DTYPES[values["dtype"]],
    )
    sys.stdout.flush()
    sys.stdout.buffer.write(produced)
    sys.stdout.buffer.flush()
