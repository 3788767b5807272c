"""Sweep the knobs of the vote update (``UpdateRule``) on real text; choose defaults from it.

    python -m benchmarks.sweep_rule --data ../shared/data/tinyshakespeare.txt --workers 2
    python -m benchmarks.sweep_rule --only "theta_t=4,theta_e=8" --seeds 0,1   # extra points
    python -m benchmarks.sweep_rule --table                                    # markdown from the results
    python -m benchmarks.sweep_rule --preset small --device cuda --dtype bfloat16 \
        --only "base;theta_t=8" --workers 0 --budget-s 400 --results runs/sweep_rule_small.jsonl

Each point trains the true-ternary arm of :mod:`benchmarks.train_compare` (model
without VQ and graph, ``--threads`` CPU threads per point) for ``--steps`` updates and
records the held-out bits per byte. The default grid changes one knob at a time around
the rule's current defaults. Results are appended to a JSON-lines file as they finish,
so a cut-short sweep keeps what it measured.

``--budget-s`` replaces ``--steps``: the first wave of points (``--workers`` processes,
0 = every point at once, e.g. all sharing one GPU) warms up, meets at a barrier and
times a few steps and one validation side by side; the slowest point sets one step
count for every point (same tokens for all), with ``BUDGET_EVALS`` validations after
step 0. No step starts after the deadline: a point cut short is recorded with
``"complete": false`` and the step it reached, and a point that fails is logged and skipped.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

import attrs
import click

DEFAULT_RESULTS = Path("benchmarks/results/sweep_rule.jsonl")
ONE_AT_A_TIME = {
    "theta_t": (4, 8, 16, 24, 32),
    "theta_e": (8, 16, 32, 64, 127),
    "bias_step": (0, 16, 64, 256, 1024),
    "e_range": ((-24, 8), (-12, 0), (-8, -2)),
}
BUDGET_EVALS = 3  # --budget-s: validations after step 0 (as the tiny sweep's 0 / 150 / 300 / 450)
PROBE_WARMUP = 2  # steps (and one validation) before the timed probe: kernels compile here
PROBE_STEPS = 5  # timed steps of the probe
SETUP_S = 10.0  # per point of a wave: corpus, model init, process hand-over
SAFETY = 0.85  # share of the time left that the step count may fill


@attrs.frozen(kw_only=True)
class SweepSetup:
    """What every point shares."""

    preset: str = "tiny"
    data: str | None = None
    steps: int = 450
    batch: int = 8
    eval_every: int = 150
    eval_batches: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1


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
    """``"base;theta_t=4,theta_e=8;bias_step=16"`` -> rules (each changes ``base``; ``base`` alone: the defaults)."""
    points = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        if item == "base":
            points.append(dict(base))
            continue
        try:
            change = {key.strip(): int(value) for key, value in (pair.split("=") for pair in item.split(","))}
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected knob=int pairs, e.g. theta_t=4,theta_e=8", param_hint="--only")
        unknown = set(change) - set(base)
        if unknown:
            raise click.BadParameter(f"unknown rule knob(s) {sorted(unknown)}; knobs: {', '.join(base)}", param_hint="--only")
        points.append(base | change)
    return points


def _prepare(setup: SweepSetup, rule_values: dict[str, int], seed: int) -> tuple[Any, Any, list[Any], Any]:
    """``(corpus, training bytes, held-out windows, CompareOptions)`` of one point (in the worker process)."""
    import torch

    from benchmarks.train_compare import CompareOptions
    from benchmarks.train_compare_arms import ArmSettings
    from ternary.functional import UpdateRule
    from ternary.model import preset
    from ternary.training.data import evaluation_windows, load_corpus, split_corpus

    torch.set_num_threads(setup.threads)
    config = preset(setup.preset, vq=False)
    settings = ArmSettings(config=config, batch=setup.batch, context=config.context, seed=seed, dtype=setup.dtype,
                           rule=UpdateRule(**rule_values))
    corpus = load_corpus(setup.data)
    train_data, held_out = split_corpus(corpus.data, config.context)
    eval_batches = evaluation_windows(held_out, setup.batch, config.context, setup.eval_batches)
    options = CompareOptions(settings=settings, arms=("ternary",), eval_every=setup.eval_every, device=setup.device)
    return corpus, train_data, eval_batches, options


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"


def probe_point(setup: SweepSetup, rule_values: dict[str, int], seed: int, barrier: Any = None,
                barrier_timeout: float = 300.0) -> dict[str, Any]:
    """Seconds per step and per validation of one point, timed after a warm-up (kernels compile there).

    With ``barrier`` (shared by the wave) the timing starts when every point of the wave is warm, so
    the points slow each other down as they will in the real runs; a broken or timed-out barrier
    only makes the timing less representative (``synchronised`` False).
    """
    import torch

    from benchmarks.train_compare import _sync
    from benchmarks.train_compare_arms import make_arm
    from ternary.training.evaluation import evaluate_bits_per_byte
    from ternary.training.loop import DTYPES

    try:
        _, train_data, eval_batches, options = _prepare(setup, rule_values, seed)
        s, device = options.settings, torch.device(setup.device)
        arm = make_arm("ternary", s, device)

        def validate() -> float:
            return evaluate_bits_per_byte(arm.state, s.config, eval_batches, backend=s.backend, dtype=DTYPES[s.dtype])

        for step in range(PROBE_WARMUP):
            arm.step(train_data, step)
        validate()
        _sync(device)
    except BaseException:
        if barrier is not None:
            barrier.abort()  # the others of the wave need not wait for this one
        raise
    synchronised = True
    if barrier is not None:
        try:
            barrier.wait(barrier_timeout)
        except Exception:  # BrokenBarrierError through the manager's proxy
            synchronised = False
    began = time.perf_counter()
    for step in range(PROBE_WARMUP, PROBE_WARMUP + PROBE_STEPS):
        arm.step(train_data, step)
    _sync(device)
    per_step = (time.perf_counter() - began) / PROBE_STEPS
    began = time.perf_counter()
    validate()
    _sync(device)
    return {"rule": rule_values, "seconds_per_step": per_step, "seconds_per_eval": time.perf_counter() - began,
            "synchronised": synchronised, "device_name": _device_name(setup.device)}


def train_point(setup: SweepSetup, rule_values: dict[str, int], seed: int, base: dict[str, int],
                stop_at: float | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the ternary arm with ``rule_values`` and ``seed``; returns one result row (``base``: the defaults then).

    ``stop_at``: wall-clock time (``time.time()``) after which no step starts; ``extra``: more fields of the row.
    """
    from benchmarks.train_compare import run_arm

    corpus, train_data, eval_batches, options = _prepare(setup, rule_values, seed)
    s = options.settings
    began = time.perf_counter()
    result = run_arm("ternary", options, setup.steps, train_data, eval_batches, stop_at=stop_at)
    steps_done = result.curve[-1][0]
    return {
        "rule": rule_values,
        "base": base,
        "seed": seed,
        "preset": setup.preset,
        "corpus": corpus.source,
        "steps": setup.steps,
        "steps_done": steps_done,
        "complete": steps_done == setup.steps,
        "tokens": result.curve[-1][1],
        "batch": s.batch,
        "context": s.context,
        "dtype": s.dtype,
        "device": setup.device,
        "device_name": _device_name(setup.device),
        "threads": setup.threads,
        "curve": [list(point) for point in result.curve],
        "final_val_bits_per_byte": result.final_bits_per_byte,
        "tokens_per_second": result.steady_tokens_per_second,
        "seconds": time.perf_counter() - began,
    } | (extra or {})


def steps_for_budget(seconds_left: float, per_step: float, per_eval: float, waves: int,
                     evals: int = BUDGET_EVALS) -> int:
    """Most steps (a multiple of ``evals``; 0 when not even ``evals`` fit) that ``waves`` waves of points can
    each run in ``SAFETY * seconds_left``, counting ``SETUP_S`` and ``evals + 1`` validations per wave."""
    per_wave = SAFETY * seconds_left / waves - SETUP_S - (evals + 1) * per_eval
    return max(0, int(per_wave / per_step) // evals * evals)


def _size_by_probe(pool: ProcessPoolExecutor, context: Any, setup: SweepSetup, wave: list[tuple[dict[str, int], int]],
                   waves: int, deadline: float, log: Callable[[str], None]) -> tuple[SweepSetup, dict[str, Any]]:
    """Probe the first wave side by side; ``setup`` with the step count that fits the deadline, and the probe summary."""
    manager = context.Manager()
    try:
        barrier = manager.Barrier(len(wave))
        timeout = max(30.0, 0.4 * (deadline - time.time()))
        futures = [pool.submit(probe_point, setup, point, seed, barrier, timeout) for point, seed in wave]
        measured = []
        for future in futures:
            try:
                measured.append(future.result())
            except Exception as error:
                log(f"probe FAILED: {type(error).__name__}: {error}")
    finally:
        manager.shutdown()
    if not measured:
        raise click.ClickException("every point failed its timing probe")
    per_step = max(m["seconds_per_step"] for m in measured)
    per_eval = max(m["seconds_per_eval"] for m in measured)
    left = deadline - time.time()
    steps = steps_for_budget(left, per_step, per_eval, waves)
    tokens_per_step = setup.batch * _context(setup)
    log(f"probe: {len(measured)} points side by side on {measured[0]['device_name']}: "
        f"{per_step:.3f} s/step (slowest; fastest {min(m['seconds_per_step'] for m in measured):.3f}), "
        f"{per_eval:.2f} s/validation, {tokens_per_step / per_step:.0f} tok/s per point, "
        f"all synchronised: {all(m['synchronised'] for m in measured)}; {left:.0f} s left for {waves} wave(s)"
        f" -> {steps} steps ({steps * tokens_per_step} tokens) per point")
    if steps < BUDGET_EVALS:
        raise click.ClickException(f"--budget-s: not even {BUDGET_EVALS} steps fit in the {left:.0f} s left")
    summary = {"seconds_per_step": per_step, "seconds_per_eval": per_eval, "concurrent": len(wave),
               "synchronised": all(m["synchronised"] for m in measured)}
    return attrs.evolve(setup, steps=steps, eval_every=steps // BUDGET_EVALS), summary


def _context(setup: SweepSetup) -> int:
    from ternary.model import preset

    return preset(setup.preset, vq=False).context


def run_sweep(
    setup: SweepSetup, points: list[dict[str, int]], seeds: list[int], results: Path, workers: int, base: dict[str, int],
    budget_s: float | None = None, log: Callable[[str], None] = click.echo,
) -> int:
    """Train every (point, seed) in ``workers`` processes (0: all at once); append each row to ``results`` as it
    finishes. ``budget_s``: size the steps by a probe so that everything ends within that many seconds.
    Returns how many points failed (logged, no row)."""
    began = time.time()
    results.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(point, seed) for point in points for seed in seeds]
    workers = min(workers or len(jobs), len(jobs))
    # fresh interpreters for GPU points (CUDA and fork do not mix) and for timed sweeps (the same path on CPU)
    context = multiprocessing.get_context("spawn" if setup.device != "cpu" or budget_s is not None else None)
    failed = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        stop_at, extra = None, {}
        if budget_s is not None:
            deadline = began + budget_s
            setup, probe = _size_by_probe(pool, context, setup, jobs[:workers], math.ceil(len(jobs) / workers),
                                          deadline, log)
            stop_at = deadline - 2 * probe["seconds_per_eval"] - 5.0
            extra = {"probe": probe}
        extra["concurrent"] = workers
        futures = {pool.submit(train_point, setup, point, seed, base, stop_at, extra): (point, seed) for point, seed in jobs}
        for future in as_completed(futures):
            try:
                row = future.result()
            except Exception as error:
                failed += 1
                log(f"FAILED  seed {futures[future][1]}  {futures[future][0]}: {type(error).__name__}: {error}")
                continue
            with open(results, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            cut = "" if row.get("complete", True) else f"  (cut at step {row['steps_done']} of {row['steps']})"
            log(f"{row['final_val_bits_per_byte']:.4f} bpb  seed {row['seed']}  {row['rule']}  ({row['seconds']:.0f} s){cut}")
    return failed


def caption(rows: list[dict[str, Any]]) -> str:
    """One line: what the rows share (preset, corpus, steps and tokens, dtype, device, points run at once)."""

    def shared(key: str, shown: Callable[[Any], str] = str, missing: str = "?") -> str:
        values = sorted({shown(r[key]) if r.get(key) is not None else missing for r in rows})
        return " / ".join(values) if values else missing

    def per_step(row: dict[str, Any]) -> str:
        if "batch" in row:
            return f"{row['batch']} x {row['context']}"
        return str(row["tokens"] // max(1, row.get("steps_done", row["steps"])))

    parts = [f"preset {shared('preset')}", shared("corpus", lambda c: Path(c.split(" (")[0]).name or c),
             f"{shared('steps')} steps of {' / '.join(sorted({per_step(r) for r in rows}))} bytes",
             # rows from before the --device option were all fp32 on CPU
             f"{shared('dtype', missing='float32')} on {shared('device_name', missing='cpu')}"]
    at_once = sorted({r["concurrent"] for r in rows if "concurrent" in r})
    if at_once:
        parts.append(f"{' / '.join(map(str, at_once))} points at once")
    return "; ".join(parts)


def markdown_table(results: Path) -> str:
    """One row per rule: knobs (bold where they differ from the defaults of the sweep), mean final bpb, per-seed bpb,
    curve; a caption line first. A point cut short by the deadline is marked with the step it reached."""
    rows: dict[str, list[dict[str, Any]]] = {}
    every = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    for row in every:
        rows.setdefault(json.dumps(row["rule"], sort_keys=True), []).append(row)
    table = [caption(every), "",
             "| theta_t | theta_e | e_min | e_max | bias_step | val bpb (mean) | seeds | curve (seed 0 or first) |",
             "|---:|---:|---:|---:|---:|---:|---|---|"]
    ordered = sorted(rows.values(), key=lambda rs: sum(r["final_val_bits_per_byte"] for r in rs) / len(rs))
    for group in ordered:
        rule, base = group[0]["rule"], group[0]["base"]
        mean = sum(r["final_val_bits_per_byte"] for r in group) / len(group)

        def seed_cell(r: dict[str, Any]) -> str:
            cut = "" if r.get("complete", True) else f" (cut at step {r['steps_done']})"
            return f"{r['seed']}: {r['final_val_bits_per_byte']:.3f}{cut}"

        seeds = ", ".join(seed_cell(r) for r in sorted(group, key=lambda r: r["seed"]))
        first = min(group, key=lambda r: r["seed"])
        curve = " / ".join(f"{bits:.2f}" for _, _, bits in first["curve"])
        cells = [f"**{rule[k]}**" if rule[k] != base[k] else str(rule[k]) for k in ("theta_t", "theta_e", "e_min", "e_max", "bias_step")]
        table.append(f"| {' | '.join(cells)} | {mean:.4f} | {seeds} | {curve} |")
    return "\n".join(table)


@click.command("sweep-rule")
@click.option("--data", default=None, help="Text file or folder (default: the Python standard library's sources).")
@click.option("--preset", "preset_name", type=click.Choice(["tiny", "small"]), default="tiny", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=450, show_default=True)
@click.option("--budget-s", type=click.FloatRange(min=1), default=None,
              help="Instead of --steps: probe the points side by side and run as many steps (the same for all) as fit.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=150, show_default=True,
              help=f"Ignored with --budget-s ({BUDGET_EVALS} validations after step 0).")
@click.option("--eval-batches", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seeds", default="0", show_default=True, help="Comma list of seeds (model init and batches).")
@click.option("--only", default=None,
              help="Instead of the one-at-a-time grid: ';'-separated knob=int lists ('base': the defaults).")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Points trained at once, one process each (0: all).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="Activations.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="CPU threads per point.")
@click.option("--results", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_RESULTS, show_default=True)
@click.option("--table", is_flag=True, help="Print the markdown table of --results and exit.")
def command(data: str | None, preset_name: str, steps: int, budget_s: float | None, batch: int, eval_every: int,
            eval_batches: int, seeds: str, only: str | None, workers: int, device: str, dtype: str, threads: int,
            results: Path, table: bool) -> None:
    """Train the ternary arm for each rule point and record held-out bits per byte."""
    from ternary.model import preset_rule

    base = attrs.asdict(preset_rule(preset_name))
    if table:
        click.echo(markdown_table(results))
        return
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise click.ClickException("--device cuda: no CUDA device is available")
    points = parse_points(only, base) if only else one_at_a_time(base)
    setup = SweepSetup(preset=preset_name, data=data, steps=steps, batch=batch, eval_every=eval_every,
                       eval_batches=eval_batches, device=device, dtype=dtype, threads=threads)
    failed = run_sweep(setup, points, [int(s) for s in seeds.split(",")], results, workers, base, budget_s)
    if failed:
        click.echo(f"{failed} point(s) failed (see above); the others are in {results}")


if __name__ == "__main__":
    command(prog_name="python -m benchmarks.sweep_rule")
