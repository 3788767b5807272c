"""``ternary bench``: benchmarks on the GPU (one small function per subcommand)."""

from __future__ import annotations

from pathlib import Path

import click


def _pairs(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple(tuple(int(v) for v in item.lower().split("x")) for item in text.split(","))  # type: ignore[misc]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected a comma list of NxK, e.g. 4096x4096,16384x16384",
                                 param_hint="--shapes") from None


def _ints(text: str, flag: str, allow_none: bool = False) -> tuple[int, ...]:
    if allow_none and text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected a comma list of integers, e.g. 1,16,2048"
                                 + (", or none" if allow_none else ""), param_hint=flag) from None


@click.group("bench")
def bench() -> None:
    """Benchmarks (need a CUDA device)."""


@bench.command("kernels")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/bench-kernels"),
              show_default=True, help="Folder for kernels.csv and kernels.json.")
@click.option("--quick", is_flag=True, help="A subset: 4096x4096 and 16384x16384, M in 1,16,2048, update at 8192.")
@click.option("--shapes", default=None, help="Comma list of NxK (default: the four issue shapes).")
@click.option("--rows", default=None, help="Comma list of activation rows M (default 1,16,128,2048,8192).")
@click.option("--update-rows", default=None,
              help="Comma list of hook rows M for the update (default 2048,8192), or none to skip it.")
@click.option("--gemlite/--no-gemlite", default=None,
              help="Time gemlite's ternary kernel at M=1,16 on 16384x16384 where it imports (tunes 10-23 s per "
                   "shape; default: on, off with --quick).")
def kernels(out: Path, quick: bool, shapes: str | None, rows: str | None, update_rows: str | None,
            gemlite: bool | None) -> None:
    """Forward, grad-x and update of the ternary linear against bf16 cuBLAS, on one card."""
    import attrs

    try:
        from benchmarks.kernels import BenchConfig, format_table, run
    except ImportError as error:
        raise click.ClickException(f"benchmarks package not importable (run from the repository root): {error}")
    config = BenchConfig.quick() if quick else BenchConfig()
    changes: dict = {} if gemlite is None else {"gemlite": gemlite}
    if shapes:
        changes["shapes"] = _pairs(shapes)
    if rows:
        changes["rows"] = _ints(rows, "--rows")
    if update_rows:
        changes["update_rows"] = _ints(update_rows, "--update-rows", allow_none=True)
    try:
        report = run(attrs.evolve(config, **changes), out)
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None
    click.echo(format_table(report))
    click.echo(f"wrote {out / 'kernels.csv'} and {out / 'kernels.json'}")


@bench.command("train", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                           "help_option_names": []})
@click.pass_context
def train(ctx: click.Context) -> None:
    """True-ternary vs STE + AdamW vs full precision (options: ternary bench train --help)."""
    try:
        from benchmarks.train_compare import command
    except ImportError as error:
        raise click.ClickException(f"benchmarks package not importable (run from the repository root): {error}")
    command.main(args=ctx.args, prog_name="ternary bench train")
