"""``ternary smoke``: build the model, time forward (and backward + update), audit the state."""

from __future__ import annotations

import json

import click

from apps.commands.model_options import build_config, model_shape_options, prepare_runtime, runtime_options


@click.command("smoke")
@model_shape_options
@runtime_options
@click.option("--ctx", type=click.IntRange(min=1), default=None, help="Context length (default: the preset's).")
@click.option("--batch", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--backward", is_flag=True, help="Also time backward plus one update (cold and cached).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def smoke(**values) -> None:
    """Build the model, run forward (and backward + one update), report times, memory and the audit."""
    from ternary.training.smoke import SmokeOptions, run_smoke

    config = build_config(values)
    prepare_runtime(values, grad_enabled=values["backward"])
    report = run_smoke(
        SmokeOptions(
            config=config, ctx=values["ctx"], batch=values["batch"], backward=values["backward"],
            device=values["device"], backend=values["backend"], dtype=values["dtype"], seed=values["seed"],
        )
    )
    if values["as_json"]:
        click.echo(json.dumps(report))
        return
    run, audit = report["run"], report["audit"]
    click.echo(f"model: preset {values['preset']}, dim {config.dim}, layers {config.layers}, moe {config.moe}, "
               f"vq {config.vq}, graph {config.graph}; {run['device']} ({run['device_name']}), backend {run['backend']}")
    click.echo(f"loss: {report['loss']:.4f}")
    click.echo(f"forward: cold {report['forward_s']['cold']:.4f} s, cached {report['forward_s']['cached']:.4f} s")
    if report["backward_update_s"]:
        timing = report["backward_update_s"]
        click.echo(f"backward+update: cold {timing['cold']:.4f} s, cached {timing['cached']:.4f} s")
    click.echo(f"peak memory: {report['peak_memory_bytes'] / 2**20:.1f} MiB ({report['peak_memory_kind']})")
    click.echo(f"audit: trainable float parameters {audit['trainable_float_parameters']}, float buffers "
               f"{audit['float_buffers']}, hooks left after update {audit['hooks_left_after_update']}, "
               f"state {audit['state_bytes']} bytes, ok {audit['ok']}")
