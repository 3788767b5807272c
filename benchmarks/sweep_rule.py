"""Sweep the knobs of the vote update (``UpdateRule``) on real text; choose defaults from it.

    python -m benchmarks.sweep_rule --data ../shared/data/tinyshakespeare.txt --workers 2
    python -m benchmarks.sweep_rule --only "theta_t=4,theta_e=8" --seeds 0,1   # extra points
    python -m benchmarks.sweep_rule --table                                    # markdown from the results

Each point trains the true-ternary arm of :mod:`benchmarks.train_compare` (model
without VQ and graph, one CPU thread per point) for ``--steps`` updates and records
the held-out bits per byte. The default grid changes one knob at a time around the
rule's current defaults. Results are appended to a JSON-lines file as they finish,
so a cut-short sweep keeps what it measured.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import attrs
import click

DEFAULT_RESULTS = Path("benchmarks/results/sweep_rule.jsonl")
ONE_AT_A_TIME = {
    "theta_t": (4, 8, 16, 24, 32),
    "theta_e": (8, 16, 32, 64, 127),
    "bias_step": (0, 16, 64, 256, 1024),
    "e_range": ((-24, 8), (-12, 0), (-8, -2)),
}


@attrs.frozen(kw_only=True)
class SweepSetup:
    """What every point shares."""

    preset: str = "tiny"
    data: str | None = None
    steps: int = 450
    batch: int = 8
    eval_every: int = 150
    eval_batches: int = 8


def one_at_a_time(base: dict[str, int]) -> list[dict[str, int]]:
    """The base rule plus every single-knob change of :data:`ONE_AT_A_TIME` (no duplicates)."""
    points = [dict(base)]
    for knob, values in ONE_AT_A_TIME.items():
        for value in values:
            change = dict(zip(("e_min", "e_max"), value)) if knob == "e_range" else {knob: value}
            point = base | change
            if point not in points:
                points.append(point)
    return points


def parse_points(text: str, base: dict[str, int]) -> list[dict[str, int]]:
    """``"theta_t=4,theta_e=8;bias_step=16"`` -> rules (each changes ``base``)."""
    points = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        try:
            change = {key.strip(): int(value) for key, value in (pair.split("=") for pair in item.split(","))}
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected knob=int pairs, e.g. theta_t=4,theta_e=8", param_hint="--only")
        unknown = set(change) - set(base)
        if unknown:
            raise click.BadParameter(f"unknown rule knob(s) {sorted(unknown)}; knobs: {', '.join(base)}", param_hint="--only")
        points.append(base | change)
    return points


def train_point(setup: SweepSetup, rule_values: dict[str, int], seed: int, base: dict[str, int]) -> dict[str, Any]:
    """Train the ternary arm with ``rule_values`` and ``seed``; returns one result row (``base``: the defaults then)."""
    import time

    import torch

    from benchmarks.train_compare import CompareOptions, run_arm
    from benchmarks.train_compare_arms import ArmSettings
    from ternary.functional import UpdateRule
    from ternary.model import preset
    from ternary.training.data import evaluation_windows, load_corpus, split_corpus

    torch.set_num_threads(1)
    config = preset(setup.preset, vq=False)
    settings = ArmSettings(config=config, batch=setup.batch, context=config.context, seed=seed, rule=UpdateRule(**rule_values))
    corpus = load_corpus(setup.data)
    train_data, held_out = split_corpus(corpus.data, config.context)
    eval_batches = evaluation_windows(held_out, setup.batch, config.context, setup.eval_batches)
    options = CompareOptions(settings=settings, arms=("ternary",), eval_every=setup.eval_every)
    began = time.perf_counter()
    result = run_arm("ternary", options, setup.steps, train_data, eval_batches)
    return {
        "rule": rule_values,
        "base": base,
        "seed": seed,
        "preset": setup.preset,
        "corpus": corpus.source,
        "steps": setup.steps,
        "tokens": result.curve[-1][1],
        "curve": [list(point) for point in result.curve],
        "final_val_bits_per_byte": result.final_bits_per_byte,
        "seconds": time.perf_counter() - began,
    }


def run_sweep(
    setup: SweepSetup, points: list[dict[str, int]], seeds: list[int], results: Path, workers: int, base: dict[str, int]
) -> None:
    """Train every (point, seed) in ``workers`` processes; append each row to ``results`` as it finishes."""
    results.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(point, seed) for point in points for seed in seeds]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(train_point, setup, point, seed, base) for point, seed in jobs]
        for future in as_completed(futures):
            row = future.result()
            with open(results, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            click.echo(f"{row['final_val_bits_per_byte']:.4f} bpb  seed {row['seed']}  {row['rule']}  ({row['seconds']:.0f} s)")


def markdown_table(results: Path) -> str:
    """One row per rule: knobs (bold where they differ from the defaults of the sweep), mean final bpb, per-seed bpb, curve."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for line in results.read_text().splitlines():
        row = json.loads(line)
        rows.setdefault(json.dumps(row["rule"], sort_keys=True), []).append(row)
    table = ["| theta_t | theta_e | e_min | e_max | bias_step | val bpb (mean) | seeds | curve (seed 0 or first) |",
             "|---:|---:|---:|---:|---:|---:|---|---|"]
    ordered = sorted(rows.values(), key=lambda rs: sum(r["final_val_bits_per_byte"] for r in rs) / len(rs))
    for group in ordered:
        rule, base = group[0]["rule"], group[0]["base"]
        mean = sum(r["final_val_bits_per_byte"] for r in group) / len(group)
        seeds = ", ".join(f"{r['seed']}: {r['final_val_bits_per_byte']:.3f}" for r in sorted(group, key=lambda r: r["seed"]))
        first = min(group, key=lambda r: r["seed"])
        curve = " / ".join(f"{bits:.2f}" for _, _, bits in first["curve"])
        cells = [f"**{rule[k]}**" if rule[k] != base[k] else str(rule[k]) for k in ("theta_t", "theta_e", "e_min", "e_max", "bias_step")]
        table.append(f"| {' | '.join(cells)} | {mean:.4f} | {seeds} | {curve} |")
    return "\n".join(table)


@click.command("sweep-rule")
@click.option("--data", default=None, help="Text file or folder (default: the Python standard library's sources).")
@click.option("--preset", "preset_name", type=click.Choice(["tiny", "small"]), default="tiny", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=450, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=150, show_default=True)
@click.option("--eval-batches", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seeds", default="0", show_default=True, help="Comma list of seeds (model init and batches).")
@click.option("--only", default=None, help="Instead of the one-at-a-time grid: ';'-separated knob=int lists.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--results", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_RESULTS, show_default=True)
@click.option("--table", is_flag=True, help="Print the markdown table of --results and exit.")
def command(data: str | None, preset_name: str, steps: int, batch: int, eval_every: int, eval_batches: int, seeds: str,
            only: str | None, workers: int, results: Path, table: bool) -> None:
    """Train the ternary arm for each rule point and record held-out bits per byte."""
    from ternary.functional import UpdateRule

    base = attrs.asdict(UpdateRule())
    if table:
        click.echo(markdown_table(results))
        return
    points = parse_points(only, base) if only else one_at_a_time(base)
    setup = SweepSetup(preset=preset_name, data=data, steps=steps, batch=batch, eval_every=eval_every, eval_batches=eval_batches)
    run_sweep(setup, points, [int(s) for s in seeds.split(",")], results, workers, base)


if __name__ == "__main__":
    command(prog_name="python -m benchmarks.sweep_rule")
