"""PyTorch reference of the vote update; it defines the rule.

With ``g = grad_y.T @ x`` (``[N, K]``, materialised here only) and the old trits ``T``:

1. Votes ``v = -sign(g)`` (descent: a positive gradient pushes a trit toward -1).
2. ``T_accum = sat8(T_accum + v)``. At ``T_accum >= theta_t`` a trit below +1 steps up
   and its accumulator resets to 0; a trit already at +1 keeps ``theta_t - 1``
   (it banks no votes past the threshold). Mirrored for ``<= -theta_t``.
3. Per group, ``score = sum_k sign(g) * T``. A positive score says growing the
   magnitudes raises the loss, so ``E_accum = sat8(E_accum - sign(score))``. At
   ``E_accum >= theta_e``, E steps up one (``E_accum -= theta_e``); at ``<= -theta_e``
   E steps down one (``E_accum += theta_e``). E stays in ``[e_min, e_max]``; a group
   at its limit keeps ``±(theta_e - 1)`` instead of banking further votes.
4. ``bias = sat32(bias - bias_step * sign(sum_m grad_y[m, n]))``.
"""

from __future__ import annotations

import torch

from ternary.kernels.update import UpdatedTensors
from ternary.state.packing import pack, unpack

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def step_trits(
    trits: torch.Tensor, T_accum: torch.Tensor, votes: torch.Tensor, theta_t: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply votes ``[N, K]`` to trits and accumulators; returns ``(trits, T_accum)`` int8."""
    acc = (T_accum.to(torch.int32) + votes).clamp(INT8_MIN, INT8_MAX)
    t = trits.to(torch.int32)
    up, down = acc >= theta_t, acc <= -theta_t
    step_up, step_down = up & (t < 1), down & (t > -1)
    t = t + step_up.to(torch.int32) - step_down.to(torch.int32)
    acc = torch.where(step_up | step_down, torch.zeros_like(acc), acc)
    acc = torch.where(up & ~step_up, torch.full_like(acc, theta_t - 1), acc)
    acc = torch.where(down & ~step_down, torch.full_like(acc, 1 - theta_t), acc)
    return t.to(torch.int8), acc.to(torch.int8)


def step_exponents(
    E: torch.Tensor, E_accum: torch.Tensor, score: torch.Tensor, theta_e: int, e_min: int, e_max: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply group scores ``[N, groups]``; returns ``(E, E_accum)`` int8."""
    acc = (E_accum.to(torch.int32) - torch.sign(score).to(torch.int32)).clamp(INT8_MIN, INT8_MAX)
    e = E.to(torch.int32)
    up, down = acc >= theta_e, acc <= -theta_e
    step_up, step_down = up & (e < e_max), down & (e > e_min)
    e = e + step_up.to(torch.int32) - step_down.to(torch.int32)
    acc = torch.where(step_up, acc - theta_e, acc)
    acc = torch.where(step_down, acc + theta_e, acc)
    acc = torch.where(up & ~step_up, torch.full_like(acc, theta_e - 1), acc)
    acc = torch.where(down & ~step_down, torch.full_like(acc, 1 - theta_e), acc)
    return e.to(torch.int8), acc.to(torch.int8)


def group_sum(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """Sum ``[N, K]`` over groups of ``group_size`` columns -> ``[N, ceil(K/G)]``."""
    n, k = values.shape
    groups = -(-k // group_size)
    padded = values.new_zeros((n, groups * group_size))
    padded[:, :k] = values
    return padded.view(n, groups, group_size).sum(-1)


def votes(x: torch.Tensor, grad_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Votes from hooks: ``-sign(grad_y.T @ x)`` int8 ``[N, K]`` and ``-sign(sum_m grad_y)`` int8 ``[N]``."""
    g = grad_y.to(torch.float32).T @ x.to(torch.float32)
    weight_votes = (-torch.sign(g)).to(torch.int8)
    bias_votes = (-torch.sign(grad_y.to(torch.float32).sum(0))).to(torch.int8)
    return weight_votes, bias_votes


def apply_votes(
    T_packed: torch.Tensor,
    E: torch.Tensor,
    E_accum: torch.Tensor,
    T_accum: torch.Tensor,
    bias: torch.Tensor | None,
    weight_votes: torch.Tensor,
    bias_votes: torch.Tensor,
    *,
    in_features: int,
    group_size: int,
    theta_t: int,
    theta_e: int,
    e_min: int,
    e_max: int,
    bias_step: int,
    validated: bool = False,
) -> UpdatedTensors:
    """Steps 2-4 of the rule from votes in {-1, 0, +1}: ``weight_votes [N, K]``, ``bias_votes [N]``.
    ``validated``: the caller has checked ``T_packed`` (see ``ternary.kernels.update``)."""
    v = weight_votes.to(torch.int32)
    trits = unpack(T_packed, in_features, check=not validated)
    new_trits, new_T_accum = step_trits(trits, T_accum, v, theta_t)
    score = group_sum(-v * trits.to(torch.int32), group_size)
    new_E, new_E_accum = step_exponents(E, E_accum, score, theta_e, e_min, e_max)
    new_bias = None
    if bias is not None:
        step = bias_step * bias_votes.to(torch.int64)
        new_bias = (bias.to(torch.int64) + step).clamp(INT32_MIN, INT32_MAX).to(torch.int32)
    return UpdatedTensors(pack(new_trits), new_E, new_E_accum, new_T_accum, new_bias)


def update(
    T_packed: torch.Tensor,
    E: torch.Tensor,
    E_accum: torch.Tensor,
    T_accum: torch.Tensor,
    bias: torch.Tensor | None,
    x: torch.Tensor,
    grad_y: torch.Tensor,
    *,
    validated: bool = False,
    **static: int,
) -> UpdatedTensors:
    """One vote update from hooks ``x [M, K]`` and ``grad_y [M, N]`` (static: see :func:`apply_votes`)."""
    weight_votes, bias_votes = votes(x, grad_y)
    return apply_votes(T_packed, E, E_accum, T_accum, bias, weight_votes, bias_votes, validated=validated, **static)
