"""The three arms of ``train_compare``: one training step each, on the same batches.

- ``ternary``: :func:`ternary.training.loop.train_step` (``value_and_hooks`` + ``update``).
- ``ste``: float master weights ternarised on the fly (absmean), straight-through, AdamW.
- ``float``: the same model in full precision, AdamW.

Every arm sees ``training_windows(train, batch, ctx, seed=, step=, micro=)``, so the
tokens are identical; every arm is evaluated by ``evaluate_bits_per_byte``.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from benchmarks.train_compare_float import (
    float_state,
    float_training_state_bytes,
    logical_weights,
    parameters,
)
from ternary.functional import NonFiniteError, UpdateRule
from ternary.model import ModelConfig, init_model, loss
from ternary.state.audit import audit
from ternary.training.data import training_windows
from ternary.training.loop import DTYPES, TrainOptions, train_step

ARMS = ("ternary", "ste", "float")


@attrs.frozen(kw_only=True)
class ArmSettings:
    """What every arm shares (model, batches, dtype) and the knobs of each arm.

    ``lr``, ``betas``, ``weight_decay``, ``warmup``: AdamW of the float arms (linear
    warm-up over ``warmup`` steps, then constant). ``ste_scale_group``: None for one
    absmean scale per tensor (BitNet b1.58), else a group size along K.
    """

    config: ModelConfig
    batch: int
    context: int
    accum: int = 1
    seed: int = 0
    dtype: str = "float32"
    backend: str | None = None
    rule: UpdateRule = UpdateRule()
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    warmup: int = 20
    ste_scale_group: int | None = None


class Arm:
    """One way of training: ``step(train_data, step) -> mean cross-entropy``, ``state``, ``state_bytes()``."""

    name: str
    state: Any

    def step(self, train_data: torch.Tensor, step: int) -> float:
        raise NotImplementedError

    def state_bytes(self) -> int:
        raise NotImplementedError

    def weights(self) -> int:
        return logical_weights(self.state)


class TernaryArm(Arm):
    """True-ternary: vote updates from hooks; state is integers only."""

    name = "ternary"

    def __init__(self, settings: ArmSettings, device: torch.device) -> None:
        self.device = device
        self.options = TrainOptions(
            config=settings.config, batch=settings.batch, ctx=settings.context, accum=settings.accum,
            seed=settings.seed, backend=settings.backend, rule=settings.rule, dtype=settings.dtype,
            device=str(device), progress=False,
        )
        self.state = init_model(settings.config, seed=settings.seed, device=device)

    def step(self, train_data: torch.Tensor, step: int) -> float:
        self.state, cross_entropy = train_step(self.state, self.options, train_data, step, self.device)
        return cross_entropy

    def state_bytes(self) -> int:
        report = audit(self.state)
        if not report.ok:
            raise RuntimeError(f"ternary arm: state holds float or non-tensor leaves {report.float_leaves}")
        return report.total_bytes


class FloatArm(Arm):
    """STE (``ste=True``) or full precision: fp32 master weights from the ternary init's ``to_float()``, AdamW."""

    def __init__(self, settings: ArmSettings, device: torch.device, *, ste: bool) -> None:
        self.name = "ste" if ste else "float"
        self.settings = settings
        self.device = device
        ternary_init = init_model(settings.config, seed=settings.seed, device=device)
        self.state = float_state(ternary_init, ste=ste, scale_group=settings.ste_scale_group if ste else None)
        self.optimizer = torch.optim.AdamW(
            parameters(self.state), lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay
        )

    def learning_rate(self, step: int) -> float:
        warmup = self.settings.warmup
        return self.settings.lr * min(1.0, (step + 1) / warmup) if warmup else self.settings.lr

    def step(self, train_data: torch.Tensor, step: int) -> float:
        s = self.settings
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(step)
        self.optimizer.zero_grad(set_to_none=True)
        losses = []
        for micro in range(s.accum):
            window = training_windows(train_data, s.batch, s.context, seed=s.seed, step=step, micro=micro)
            total, aux = loss(self.state, window.to(self.device), s.config, dtype=DTYPES[s.dtype])
            if not bool(torch.isfinite(total)):
                raise NonFiniteError(f"{self.name} arm, step {step + 1}: the loss is not finite")
            (total / s.accum).backward()
            losses.append(aux.cross_entropy)
        self.optimizer.step()
        return float(torch.stack(losses).mean())

    def state_bytes(self) -> int:
        return float_training_state_bytes(self.state, self.optimizer)


def make_arm(name: str, settings: ArmSettings, device: torch.device) -> Arm:
    if name == "ternary":
        return TernaryArm(settings, device)
    if name in ("ste", "float"):
        return FloatArm(settings, device, ste=name == "ste")
    raise ValueError(f"--arms: unknown arm {name!r}; choices: {', '.join(ARMS)}")
