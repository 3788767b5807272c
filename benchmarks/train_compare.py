"""Does it learn? The same model and tokens trained three ways, side by side.

    python -m benchmarks.train_compare --preset tiny --steps 200 --data ../shared/data/tinyshakespeare.txt
    ternary bench train ...                       # the same command

Arms (see :mod:`benchmarks.train_compare_arms`): ``ternary`` (this project),
``ste`` (BitNet b1.58-style absmean ternarisation with a straight-through gradient,
fp32 master weights, AdamW) and ``float`` (full precision, AdamW). All arms start
from the same function (the float weights are ``to_float()`` of the seeded ternary
init), see the same training windows and are scored on the same held-out windows in
bits per byte. The model runs without VQ and graph in every arm: their integer
bookkeeping has no float counterpart.

Writes ``train_compare.csv`` (validation curve per arm), ``train_compare.json``
(summary: tokens/s, peak memory, persistent training-state bytes per weight, device,
versions) and ``train_compare.png`` (when matplotlib is installed); prints a table.
"""

from __future__ import annotations

import gc
import platform
import time
from pathlib import Path
from typing import Any

import attrs
import click

DEFAULT_OUT = Path("runs/train-compare")
PROBE_STEPS = 4


@attrs.frozen(kw_only=True)
class CompareOptions:
    """One comparison. ``steps`` None: chosen so the whole run fits ``budget_s`` (measured per arm)."""

    settings: Any  # ArmSettings
    arms: tuple[str, ...] = ("ternary", "ste", "float")
    data: str | None = None
    max_bytes: int | None = None
    steps: int | None = 200
    budget_s: float | None = None
    eval_every: int = 50
    eval_batches: int = 4
    device: str = "cpu"
    out: Path = DEFAULT_OUT
    keep_going: bool = False


@attrs.frozen(kw_only=True)
class ArmResult:
    """Outcome of one arm: validation curve ``[(step, tokens, bits/byte)]``, speed, memory, state size."""

    arm: str
    curve: tuple[tuple[int, int, float], ...]
    train_losses: tuple[float, ...]
    steady_tokens_per_second: float | None
    peak_memory_bytes: int | None
    state_bytes: int
    logical_weights: int
    validation_seconds: float

    @property
    def state_bytes_per_weight(self) -> float:
        return self.state_bytes / self.logical_weights

    @property
    def final_bits_per_byte(self) -> float:
        return self.curve[-1][2]


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fresh_memory(device: Any) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_arm(
    name: str, options: CompareOptions, steps: int, train_data: Any, eval_batches: list[Any], *, stop_at: float | None = None
) -> ArmResult:
    """Train arm ``name`` for ``steps`` updates, validating at step 0, every ``eval_every`` and at the end.

    ``stop_at``: a wall-clock time (``time.time()``); no step starts after it, and the run ends
    with a validation at the step reached (``curve[-1][0]`` then tells how many steps were done).
    """
    import torch

    from benchmarks.train_compare_arms import make_arm
    from ternary.training.evaluation import evaluate_bits_per_byte
    from ternary.training.loop import DTYPES

    s = options.settings
    device = torch.device(options.device)
    _fresh_memory(device)
    torch.manual_seed(s.seed)
    arm = make_arm(name, s, device)
    tokens_per_step = s.batch * s.context * s.accum

    validating = [0.0]

    def validate() -> float:
        began = time.perf_counter()
        bits = evaluate_bits_per_byte(arm.state, s.config, eval_batches, backend=s.backend, dtype=DTYPES[s.dtype])
        _sync(device)
        validating[0] += time.perf_counter() - began
        return bits

    curve, losses, busy_after_first = [(0, 0, validate())], [], 0.0
    for step in range(steps):
        if stop_at is not None and time.time() >= stop_at:
            if curve[-1][0] != step:
                curve.append((step, step * tokens_per_step, validate()))
            break
        _sync(device)
        began = time.perf_counter()
        losses.append(arm.step(train_data, step))
        _sync(device)
        if step:
            busy_after_first += time.perf_counter() - began
        done = step + 1
        if done % options.eval_every == 0 or done == steps:
            curve.append((done, done * tokens_per_step, validate()))
    return ArmResult(
        arm=name,
        curve=tuple(curve),
        train_losses=tuple(losses),
        steady_tokens_per_second=(len(losses) - 1) * tokens_per_step / busy_after_first if busy_after_first else None,
        peak_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        state_bytes=arm.state_bytes(),
        logical_weights=arm.weights(),
        validation_seconds=validating[0],
    )


def probe(name: str, options: CompareOptions, train_data: Any, eval_batches: list[Any]) -> tuple[float, float]:
    """``(seconds per step, seconds per validation)`` of arm ``name`` from a short run (which also compiles kernels)."""
    result = run_arm(name, attrs.evolve(options, eval_every=10**9), PROBE_STEPS, train_data, eval_batches)
    tokens_per_step = options.settings.batch * options.settings.context * options.settings.accum
    return tokens_per_step / result.steady_tokens_per_second, result.validation_seconds / len(result.curve)


def steps_for_budget(options: CompareOptions, rates: list[tuple[float, float]]) -> int:
    """Most steps (a multiple of ``eval_every``, at least ``eval_every``) whose runs of all arms fit ``budget_s``.

    ``rates``: :func:`probe` of each arm. The probes themselves are not counted in the budget.
    """
    per_step = sum(step for step, _ in rates)
    per_eval = sum(evaluation for _, evaluation in rates)
    fit = (options.budget_s - per_eval) / (per_step + per_eval / options.eval_every)
    return max(options.eval_every, int(fit) // options.eval_every * options.eval_every)


def environment(device: str) -> dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device, "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name()
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    return info


def compare(options: CompareOptions) -> dict[str, Any]:
    """Run every arm; write CSV, JSON and PNG under ``options.out`` after each arm; return the summary.

    With ``keep_going`` an arm that raises is recorded under ``failed`` and the others still run.
    """
    from benchmarks.train_compare_report import write_outputs
    from ternary.training.data import evaluation_windows, load_corpus, split_corpus

    s = options.settings
    corpus = load_corpus(options.data, max_bytes=options.max_bytes)
    train_data, held_out = split_corpus(corpus.data, s.context)
    eval_batches = evaluation_windows(held_out, s.batch, s.context, options.eval_batches)
    failed: dict[str, str] = {}

    def attempt(name: str, work: Any) -> Any:
        try:
            return work()
        except Exception as error:
            if not options.keep_going:
                raise
            failed[name] = f"{type(error).__name__}: {error}"
            return None

    arms, steps = list(options.arms), options.steps
    if options.budget_s is not None:
        rates = {name: attempt(name, lambda: probe(name, options, train_data, eval_batches)) for name in arms}
        arms = [name for name in arms if rates[name] is not None]
        if not arms:
            raise RuntimeError(f"every arm failed its timing probe: {failed}")
        steps = steps_for_budget(options, [rates[name] for name in arms])
    results: list[ArmResult] = []

    def summarise() -> dict[str, Any]:
        return {
            "corpus": corpus.source,
            "steps": steps,
            "tokens_per_step": s.batch * s.context * s.accum,
            "config": s.config.to_dict(),
            "rule": attrs.asdict(s.rule),
            "adamw": {"lr": s.lr, "betas": list(s.betas), "weight_decay": s.weight_decay, "warmup": s.warmup},
            "ste_scale_group": s.ste_scale_group,
            "dtype": s.dtype,
            "environment": environment(options.device),
            "arms": {r.arm: arm_summary(r) for r in results},
            "failed": dict(failed),
        }

    for name in arms:
        result = attempt(name, lambda: run_arm(name, options, steps, train_data, eval_batches))
        results += [result] if result is not None else []
        write_outputs(options.out, results, summarise())
    summary = summarise()
    write_outputs(options.out, results, summary)
    return summary


def arm_summary(result: ArmResult) -> dict[str, Any]:
    return {
        "final_val_bits_per_byte": result.final_bits_per_byte,
        "curve": [list(point) for point in result.curve],
        "steady_tokens_per_second": result.steady_tokens_per_second,
        "peak_memory_bytes": result.peak_memory_bytes,
        "state_bytes": result.state_bytes,
        "logical_weights": result.logical_weights,
        "state_bytes_per_weight": result.state_bytes_per_weight,
        "final_train_loss_nats": result.train_losses[-1] if result.train_losses else None,
    }


@click.command("train")
@click.option("--preset", "preset_name", type=click.Choice(["tiny", "small", "base"]), default="tiny", show_default=True)
@click.option("--data", default=None, help="Text file or folder (default: the Python standard library's sources).")
@click.option("--max-bytes", type=click.IntRange(min=1), default=None, help="Cut the corpus at this many bytes.")
@click.option("--arms", default="ternary,ste,float", show_default=True, help="Comma list of ternary, ste, float.")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--budget-s", type=click.FloatRange(min=1), default=None,
              help="Instead of --steps: measure each arm and run as many steps as fit this many seconds in all.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--ctx", type=click.IntRange(min=1), default=None, help="Context length (default: the preset's).")
@click.option("--accum", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--eval-batches", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True)
@click.option("--backend", type=click.Choice(["auto", "torch", "triton", "tilelang"]), default=None)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--no-moe", is_flag=True, help="Dense MLP feed-forward instead of the mixture of experts.")
@click.option("--theta-t", type=click.IntRange(1, 127), default=None, help="Ternary rule override.")
@click.option("--theta-e", type=click.IntRange(1, 127), default=None, help="Ternary rule override.")
@click.option("--bias-step", type=click.IntRange(min=0), default=None, help="Ternary rule override.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True, help="AdamW (ste, float).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.01, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True, help="AdamW warm-up steps.")
@click.option("--ste-scale", type=click.Choice(["tensor", "group"]), default="tensor", show_default=True,
              help="STE absmean scale per tensor (BitNet b1.58) or per group of the ternary group size.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True)
@click.option("--keep-going", is_flag=True, help="Record an arm that fails and run the others.")
def command(preset_name: str, data: str | None, max_bytes: int | None, arms: str, steps: int, budget_s: float | None,
            batch: int, ctx: int | None, accum: int, eval_every: int, eval_batches: int, seed: int, device: str,
            dtype: str, backend: str | None, threads: int | None, no_moe: bool, theta_t: int | None,
            theta_e: int | None, bias_step: int | None, lr: float, weight_decay: float, warmup: int, ste_scale: str,
            out: Path, keep_going: bool) -> None:
    """Train true-ternary, STE + AdamW and full precision side by side; CSV, JSON, PNG and a table."""
    import torch

    from benchmarks.train_compare_arms import ARMS, ArmSettings
    from benchmarks.train_compare_report import format_table
    from ternary.model import preset, preset_rule

    chosen = tuple(a.strip() for a in arms.split(",") if a.strip())
    unknown = [a for a in chosen if a not in ARMS]
    if unknown or not chosen:
        raise click.BadParameter(f"{arms!r}: arms must be a comma list of {', '.join(ARMS)}", param_hint="--arms")
    if device == "cuda" and not torch.cuda.is_available():
        raise click.ClickException("--device cuda: no CUDA device is available")
    if threads:
        torch.set_num_threads(threads)
    config = preset(preset_name, vq=False, moe=False if no_moe else None)
    settings = ArmSettings(
        config=config, batch=batch, context=ctx or config.context, accum=accum, seed=seed, dtype=dtype,
        backend=None if backend == "auto" else backend,
        rule=preset_rule(preset_name, theta_t=theta_t, theta_e=theta_e, bias_step=bias_step), lr=lr,
        weight_decay=weight_decay, warmup=warmup, ste_scale_group=config.group_size if ste_scale == "group" else None,
    )
    options = CompareOptions(
        settings=settings, arms=chosen, data=data, max_bytes=max_bytes, steps=None if budget_s else steps,
        budget_s=budget_s, eval_every=eval_every, eval_batches=eval_batches, device=device, out=out,
        keep_going=keep_going,
    )
    try:
        summary = compare(options)
    except (ValueError, RuntimeError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(format_table(summary))
    click.echo(f"wrote {out / 'train_compare.csv'}, {out / 'train_compare.json'} (and .png when matplotlib is installed)")


if __name__ == "__main__":
    command(prog_name="python -m benchmarks.train_compare")
