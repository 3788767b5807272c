"""``ternary diff A B``: what training changed between two snapshots."""

from __future__ import annotations

import json

import click

_LAYER_COLUMNS = ("layer", "weights", "changed", "-1>0", "0>+1", "+1>0", "0>-1", "flips", "E up", "E down",
                  "bias chg", "|T_acc| A>B", "|E_acc| A>B")
_TENSOR_COLUMNS = ("tensor", "elements", "changed", "share", "sum |delta|")


def _layer_row(layer) -> tuple[str, ...]:
    t = layer.trits
    bias = f"{layer.bias_changed}/{layer.biases}" if layer.biases else "-"
    return (
        layer.path, str(layer.weights), f"{100 * layer.changed_share:.2f}%",
        str(t["-1->0"]), str(t["0->+1"]), str(t["+1->0"]), str(t["0->-1"]), str(layer.sign_flips),
        str(layer.e_up), str(layer.e_down), bias,
        f"{layer.t_accum[0].mean_abs:.2f}>{layer.t_accum[1].mean_abs:.2f}",
        f"{layer.e_accum[0].mean_abs:.2f}>{layer.e_accum[1].mean_abs:.2f}",
    )


def _tensor_row(tensor) -> tuple[str, ...]:
    return (tensor.path, str(tensor.elements), str(tensor.changed), f"{100 * tensor.changed_share:.2f}%", str(tensor.abs_change))


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Plain-text table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, rows)])


def render(result) -> str:
    """Text report of a :class:`ternary.io.diff.StateDiff`."""
    parts = []
    if result.layers:
        rows = [_layer_row(layer) for layer in result.layers]
        if len(result.layers) > 1:
            rows.append(_layer_row(result.total))
        parts.append(format_table(_LAYER_COLUMNS, rows))
    if result.tensors:
        parts.append(format_table(_TENSOR_COLUMNS, [_tensor_row(t) for t in result.tensors]))
    total = result.total
    parts.append(
        "no changes" if result.unchanged else
        f"total: {total.trits_changed} trits changed ({total.sign_flips} sign flips), E {total.e_up} up / "
        f"{total.e_down} down, {total.bias_changed} biases changed, "
        f"{sum(t.changed for t in result.tensors)} other elements changed"
    )
    return "\n\n".join(parts)


@click.command("diff")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON.")
@click.option("--layer", "patterns", multiple=True, metavar="GLOB",
              help="Only layers/tensors whose path matches (fnmatch; repeatable), e.g. 'blocks.0.*' or '*attn*'.")
def diff(a: str, b: str, as_json: bool, patterns: tuple[str, ...]) -> None:
    """Show what changed from snapshot A to snapshot B, per layer and in total."""
    from ternary.io.diff import StructureMismatchError, diff as diff_states
    from ternary.io.errors import SnapshotError

    try:
        result = diff_states(a, b, layers=patterns or None)
    except (SnapshotError, StructureMismatchError) as error:
        raise click.ClickException(str(error)) from None
    if patterns and not (result.layers or result.tensors):
        raise click.ClickException(f"--layer {' '.join(patterns)!s}: matches no layer or tensor in {a}")
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else render(result))
