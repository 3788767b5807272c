"""``ternary prewarm``: compile the TileLang kernels of a model preset or of explicit shapes."""

from __future__ import annotations

import json

import click


@click.command("prewarm")
@click.option("--preset", default=None, help="Model preset (tiny, small, base): every layer of that model.")
@click.option("--shape", "shapes", multiple=True, metavar="M,N,K,G",
              help="A layer N x K with groups of G called with M rows (repeatable; M picks the bucket).")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="With --preset: sequences per step.")
@click.option("--ctx", type=click.IntRange(min=1), default=None,
              help="With --preset: context length (default: the preset's).")
@click.option("--dtype", "dtypes", multiple=True, type=click.Choice(["bfloat16", "float16", "float32"]),
              help="Activation dtype(s) to compile for (repeatable; default bfloat16 and float32).")
@click.option("--training/--inference", default=False, show_default=True,
              help="Also compile grad_x (TileLang in training needs TERNARY_TILELANG_TRAINING=1).")
@click.option("--bias/--no-bias", default=True, show_default=True, help="With --shape: forward with a bias.")
@click.option("--arch", default=None, help="CUDA arch to compile for (default: the local GPU's, else sm_90a).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="TileLang kernel cache (default: $TILELANG_CACHE_DIR or ~/.tilelang/cache).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Parallel compiles (default: CPU count).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def prewarm(preset, shapes, batch, ctx, dtypes, training, bias, arch, cache_dir, workers, as_json) -> None:
    """Compile every TileLang kernel a model preset or --shape list needs, and report the time per kernel.

    A second run finds the kernels in the cache and only loads them.
    """
    from ternary.kernels import prewarm as warm
    from ternary.kernels.registry import installed

    if not installed("tilelang"):
        raise click.ClickException("tilelang is not installed (pip install 'true-ternary[tilelang]')")
    if not preset and not shapes:
        raise click.UsageError("give --preset NAME or at least one --shape M,N,K,G")
    try:
        layers = warm.shape_layers([warm.parse_shape(s) for s in shapes], bias=bias)
        if preset:
            from ternary.model.config import preset as model_preset

            rows = batch * (ctx or model_preset(preset).context)
            layers += warm.model_layers(preset, rows=rows)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    specs = warm.specs_for(layers, tuple(dtypes) or ("bfloat16", "float32"), training=training,
                           arch=arch or warm.default_arch())
    results, wall = warm.prewarm(specs, cache_dir=cache_dir, workers=workers)
    report = {
        "cache_dir": warm.cache_dir(),
        "kernels": [dict(kernel=r.spec.describe(), seconds=round(r.seconds, 3)) for r in results],
        "total_kernel_seconds": round(sum(r.seconds for r in results), 3),
        "wall_seconds": round(wall, 3),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    width = max(len(k["kernel"]) for k in report["kernels"])
    for kernel in report["kernels"]:
        click.echo(f"{kernel['kernel']:<{width}}  {kernel['seconds']:8.2f} s")
    click.echo(f"{len(results)} kernels, {report['total_kernel_seconds']:.1f} s of compiling, "
               f"{report['wall_seconds']:.1f} s wall; cache {report['cache_dir']}")
