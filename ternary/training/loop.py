"""The training loop: vote updates from hooks, held-out bits per byte, snapshots, exact resume.

Each step takes ``accum`` micro-batches; their hooks are concatenated with
:func:`ternary.combine_hooks` into ONE update (the gradient of the combined batch),
then the integer bookkeeping (VQ usage, graph edges) of every micro-batch is applied.
Batches are a pure function of ``(seed, step, micro)`` and the state is all integers,
so a run resumed from a snapshot ends bit for bit where an uninterrupted run ends.
"""

from __future__ import annotations

import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.utils._pytree as pytree

from ternary.functional import NonFiniteError, UpdateRule, combine_hooks, update, value_and_hooks
from ternary.model import ModelConfig, ModelState, init_model, loss, observe
from ternary.training.data import Corpus, evaluation_windows, load_corpus, split_corpus, training_windows
from ternary.training.evaluation import evaluate_bits_per_byte
from ternary.training.parallel import DataParallel

META_KIND = "true-ternary-train"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# options that decide what the run computes; a resumed run takes them from the snapshot
RUN_DEFINING = ("data", "ctx", "batch", "accum", "seed", "dtype", "max_bytes")


class TrainingStopped(RuntimeError):
    """Training stopped before finishing (a non-finite loss); the message says where and why."""


def _positive(record: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"--{attribute.name.replace('_', '-')} must be a positive integer, got {value!r}")


def _non_negative(record: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"--{attribute.name.replace('_', '-')} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class TrainOptions:
    """Everything one run needs. ``ctx`` None means ``config.context``; ``save_every`` 0 saves only at the end."""

    config: ModelConfig
    data: str | None = None
    ctx: int | None = None
    batch: int = attrs.field(default=8, validator=_positive)
    accum: int = attrs.field(default=1, validator=_positive)
    steps: int = attrs.field(default=200, validator=_non_negative)
    eval_every: int = attrs.field(default=50, validator=_positive)
    eval_batches: int = attrs.field(default=4, validator=_positive)
    save_every: int = attrs.field(default=0, validator=_non_negative)
    keep: int = attrs.field(default=3, validator=_positive)
    out: str | None = None
    device: str = "cpu"
    backend: str | None = None
    seed: int = attrs.field(default=0, validator=_non_negative)
    resume: str | None = None
    check_every: int = attrs.field(default=50, validator=_positive)
    rule: UpdateRule = UpdateRule()
    dtype: str = attrs.field(default="float32", validator=attrs.validators.in_(tuple(DTYPES)))
    max_bytes: int | None = None
    progress: bool = True

    @property
    def context(self) -> int:
        return self.ctx if self.ctx is not None else self.config.context

    def flags(self) -> dict[str, Any]:
        """The options as plain values (for snapshot metadata)."""
        values = attrs.asdict(self, recurse=False)
        values.update(config=self.config.to_dict(), rule=attrs.asdict(self.rule), ctx=self.context)
        return values


@attrs.frozen(eq=False)
class TrainSummary:
    """Outcome of :func:`train`: final ``state``, steps, losses, validation history, speed, snapshots.

    ``tokens_per_second`` counts every training step (not evaluation or saving);
    ``steady_tokens_per_second`` leaves out the run's first step (kernel compilation,
    allocator warm-up), None when the run had fewer than two steps.
    """

    state: ModelState
    start_step: int
    step: int
    last_loss: float | None
    validation: tuple[tuple[int, float], ...]
    tokens_per_second: float
    steady_tokens_per_second: float | None
    snapshots: tuple[str, ...]
    corpus: str
    rule: UpdateRule


def corpus_fingerprint(corpus: Corpus) -> dict[str, Any]:
    return {"bytes": int(corpus.data.numel()), "crc32": zlib.crc32(corpus.data.numpy().tobytes())}


def snapshot_meta(options: TrainOptions, step: int, corpus: Corpus) -> dict[str, Any]:
    """Everything a resume needs: step, data position, RNG state, rule, config, flags."""
    return {
        "kind": META_KIND,
        "step": step,
        "data_position": {"next_step": step, "scheme": "training_windows(seed, step, micro)"},
        "corpus": corpus_fingerprint(corpus),
        "torch_rng_state": torch.get_rng_state(),
        "rule": attrs.asdict(options.rule),
        "config": options.config.to_dict(),
        "options": {k: v for k, v in options.flags().items() if k not in ("config", "rule")},
    }


def resumed_options(options: TrainOptions, meta: dict[str, Any], source: Path) -> TrainOptions:
    """``options`` with the model, rule and run-defining flags of the snapshot's metadata; an explicit
    ``options.data`` is kept (the same data at a new place: the corpus fingerprint is checked after)."""
    if meta.get("kind") != META_KIND:
        raise ValueError(f"--resume {source}: not a training snapshot (meta kind {meta.get('kind')!r})")
    try:
        saved = {name: meta["options"][name] for name in RUN_DEFINING}
        config, rule = ModelConfig.from_dict(meta["config"]), UpdateRule(**meta["rule"])
    except KeyError as missing:
        raise ValueError(f"--resume {source}: its training metadata has no {missing}") from None
    except (TypeError, ValueError) as error:
        raise ValueError(f"--resume {source}: its training metadata does not describe a run ({error})") from None
    if options.data is not None:
        saved["data"] = options.data
    elif saved["data"] is not None and not Path(saved["data"]).exists():
        raise ValueError(f"--resume {source}: the data it was trained on, {saved['data']}, is gone; pass --data with "
                         "the same data where it is now")
    return attrs.evolve(options, config=config, rule=rule, **saved)


@attrs.frozen(eq=False)
class Resumed:
    """Where a resumed run starts: ``state`` after ``step`` updates, trained on data ``corpus``."""

    state: ModelState
    step: int
    corpus: dict[str, Any]


def prepare_out(out: str, *, fresh: bool) -> None:
    """Make sure snapshots can be written to ``out`` before any step runs (raises ``ValueError`` naming it): the
    folder exists or is created, a file can be written there, and a fresh run (not a resume) does not start in
    a folder that already holds numbered snapshots, which it would mix with its own."""
    from ternary.io import list_snapshots

    root = Path(out)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as error:
        raise ValueError(f"--out {out}: cannot write snapshots there ({error.strerror or error})") from None
    found = list_snapshots(root)
    if fresh and found:
        raise ValueError(f"--out {out}: already holds snapshots (newest {found[-1][1].name}); continue that run with "
                         f"--resume {out}, or give a new run an empty folder")


def load_resume(options: TrainOptions) -> tuple[TrainOptions, Resumed | None]:
    """Read ``options.resume`` (a snapshot file or a folder of them); restores the torch RNG state."""
    if options.resume is None:
        return options, None
    from ternary.io import resume_from

    source, state, meta = resume_from(options.resume)
    options = resumed_options(options, meta, source)
    torch.set_rng_state(meta["torch_rng_state"])
    return options, Resumed(state=state, step=int(meta["step"]), corpus=meta["corpus"])


def train_step(
    state: ModelState,
    options: TrainOptions,
    train_data: torch.Tensor,
    step: int,
    device: torch.device,
    parallel: DataParallel | None = None,
) -> tuple[ModelState, float]:
    """One update from ``accum`` micro-batches (per rank); returns the new state and the mean cross-entropy (nats)."""
    step_fn = value_and_hooks(loss, has_aux=True)
    dtype = DTYPES[options.dtype]
    hooks, auxes = [], []
    for micro in range(options.accum):
        index = parallel.micro_index(micro, options.accum) if parallel is not None else micro
        window = training_windows(
            train_data, options.batch, options.context, seed=options.seed, step=step, micro=index
        ).to(device)
        try:
            (_, aux), micro_hooks = step_fn(state, window, options.config, backend=options.backend, dtype=dtype)
        except NonFiniteError as error:
            raise TrainingStopped(
                f"step {step + 1}: the loss is not finite; stopped before backward and applied no update ({error})"
            ) from None
        hooks.append(micro_hooks)
        auxes.append(aux)
    combined = combine_hooks(hooks)
    observed = [aux.model for aux in auxes]
    if parallel is None:
        new = update(state, combined, options.rule, backend=options.backend)
    else:
        new, _ = parallel.update(state, combined, options.rule)
        observed = [
            attrs.evolve(model, codes=codes)
            for model in observed
            if model.codes is not None
            for codes in parallel.gather_codes(model.codes)
        ]
    for model_aux in observed:
        new = observe(new, model_aux, options.config)
    return new, float(torch.stack([a.cross_entropy for a in auxes]).mean())


def train(options: TrainOptions, parallel: DataParallel | None = None) -> TrainSummary:
    """Train as ``options`` says; raises :class:`TrainingStopped` on a non-finite loss.

    With ``parallel`` (a ``torchrun`` rank), each rank trains on its share of every
    step, votes are combined across ranks, state equality is checked every
    ``check_every`` steps and at the end, and only rank 0 logs and writes snapshots.
    Token counts and rates are for all ranks together.
    """
    from tqdm.auto import tqdm

    main = parallel is None or parallel.is_main
    per_step = options.batch * options.context * options.accum * (1 if parallel is None else parallel.world)
    options, resumed = load_resume(options)
    if main and options.out is not None:
        prepare_out(options.out, fresh=resumed is None)
    device = torch.device(options.device)
    corpus = load_corpus(options.data, max_bytes=options.max_bytes)
    if resumed is not None and corpus_fingerprint(corpus) != resumed.corpus:
        raise ValueError(f"--resume {options.resume}: the training data differs from the data the snapshot was trained on")
    train_data, held_out = split_corpus(corpus.data, options.context, corpus.source)
    eval_batches = evaluation_windows(held_out, options.batch, options.context, options.eval_batches)
    if resumed is None:
        torch.manual_seed(options.seed)
        state, start = init_model(options.config, seed=options.seed, device=device), 0
    else:
        state, start = pytree.tree_map(lambda t: t.to(device), resumed.state), resumed.step

    def validate() -> float:
        return evaluate_bits_per_byte(
            state, options.config, eval_batches, backend=options.backend, dtype=DTYPES[options.dtype]
        )

    validation, snapshots = [], []
    last_loss, busy, tokens, first_step_seconds = None, 0.0, 0, None
    bar = tqdm(
        total=options.steps, initial=min(start, options.steps), disable=not (options.progress and main), unit="step"
    )
    with bar:
        if start == 0 and options.steps > 0:
            validation.append((0, validate()))
            if main:
                bar.write(f"step 0: validation {validation[-1][1]:.4f} bits/byte", file=sys.stderr)
        for step in range(start, options.steps):
            began = time.perf_counter()
            state, last_loss = train_step(state, options, train_data, step, device, parallel)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            busy += time.perf_counter() - began
            first_step_seconds = busy if first_step_seconds is None else first_step_seconds
            tokens += per_step
            done = step + 1
            if parallel is not None and (done % options.check_every == 0 or done == options.steps):
                parallel.check(state, device)
            postfix = {"loss": f"{last_loss:.3f}", "tok/s": f"{tokens / busy:.0f}"}
            if done % options.eval_every == 0 or done == options.steps:
                validation.append((done, validate()))
                if main:
                    bar.write(f"step {done}: validation {validation[-1][1]:.4f} bits/byte", file=sys.stderr)
                postfix["val_bpb"] = f"{validation[-1][1]:.3f}"
            bar.set_postfix(postfix)
            bar.update(1)
            if main and options.out is not None and (
                (options.save_every and done % options.save_every == 0) or done == options.steps
            ):
                snapshots.append(str(save_snapshot(options, state, done, corpus)))
    return TrainSummary(
        state=state,
        start_step=start,
        step=max(start, options.steps),
        last_loss=last_loss,
        validation=tuple(validation),
        tokens_per_second=tokens / busy if busy else 0.0,
        steady_tokens_per_second=_steady_rate(tokens, busy, first_step_seconds, per_step),
        snapshots=tuple(snapshots),
        corpus=corpus.source,
        rule=options.rule,
    )


def _steady_rate(tokens: int, busy: float, first: float | None, per_step: int) -> float | None:
    if first is None or tokens <= per_step or busy <= first:
        return None
    return (tokens - per_step) / (busy - first)


def save_snapshot(options: TrainOptions, state: ModelState, step: int, corpus: Corpus) -> Path:
    """``options.out/step-<step>.safetensors`` with resume metadata; keeps the newest ``options.keep``."""
    from ternary.io import save_numbered

    return save_numbered(options.out, state, step=step, meta=snapshot_meta(options, step, corpus), keep=options.keep)
