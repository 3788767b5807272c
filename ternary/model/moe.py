"""Mixture-of-experts feed-forward with sparse dispatch and an adaptive halting loop.

One MoE step: a ternary router scores the experts for each token, the top-k are
kept (weights renormalised over the kept ones), each expert runs only on the rows
routed to it (gather, run as one grouped call, put back), so the hooks of an expert
hold only its rows. The step is re-applied to a token at most ``max_iters`` times; after each
step a ternary halting head gives ``p = sigmoid(halt(norm(h)))`` and the token
stops once its cumulative ``p`` reaches the threshold (or at the last iteration),
as in adaptive computation time: the output is ``sum_i w_i (h_i - x)`` with
``w_i = p_i`` before the halting step and the remainder ``1 - sum p`` at it.
"""

from __future__ import annotations

import attrs
import torch

from ternary.functional import linear
from ternary.functional.grouped import grouped_linear
from ternary.model.mlp import MlpState, activation
from ternary.model.norm import rms_norm
from ternary.state.linear_state import LinearState
from ternary.state.pytree import pytree_record


@pytree_record(child_fields=("router", "experts", "halt"))
@attrs.frozen(eq=False)
class MoeState:
    """``router: [dim -> experts]``, ``experts``: one :class:`MlpState` each, ``halt: [dim -> 1]``."""

    router: LinearState
    experts: tuple[MlpState, ...]
    halt: LinearState

    @classmethod
    def random(
        cls, dim: int, hidden: int, experts: int, *, group_size: int, generator: torch.Generator, device=None
    ) -> "MoeState":
        return cls(
            router=LinearState.random(dim, experts, group_size=group_size, generator=generator, device=device),
            experts=tuple(
                MlpState.random(dim, hidden, group_size=group_size, generator=generator, device=device)
                for _ in range(experts)
            ),
            halt=LinearState.random(dim, 1, group_size=group_size, generator=generator, device=device),
        )


@attrs.frozen(eq=False)
class MoeAux:
    """What one MoE feed-forward reports.

    - ``balance``: differentiable load-balance term (1.0 when the load is even), averaged over iterations.
    - ``iterations``: int32 ``[M]``, MoE steps each token ran (1..max_iters).
    - ``expert_rows``: int64 ``[experts]``, rows each expert computed, summed over iterations.
    """

    balance: torch.Tensor
    iterations: torch.Tensor
    expert_rows: torch.Tensor


@attrs.frozen(eq=False)
class Routing:
    """Top-k choice for ``M`` tokens: ``experts`` long ``[M, k]``, ``weights`` ``[M, k]``, ``balance`` scalar."""

    experts: torch.Tensor
    weights: torch.Tensor
    balance: torch.Tensor


def route(router: LinearState, x: torch.Tensor, top_k: int, *, backend: str | None = None) -> Routing:
    """Score ``x [M, D]`` with the router and keep the top-k experts per token.

    The balance term is ``E * sum_e f_e * P_e`` (``f_e``: share of routed slots, no
    gradient; ``P_e``: mean router probability), so its gradient reaches the router's hooks.
    """
    probs = torch.softmax(linear(router, x, backend=backend).float(), dim=-1)
    top = probs.topk(top_k, dim=-1)
    weights = top.values / top.values.sum(-1, keepdim=True)
    count = router.out_features
    share = torch.bincount(top.indices.reshape(-1), minlength=count).float() / top.indices.numel()
    balance = count * (share * probs.mean(0)).sum()
    return Routing(experts=top.indices, weights=weights.to(x.dtype), balance=balance)


def dispatch(
    experts: tuple[MlpState, ...], x: torch.Tensor, routing: Routing, *, backend: str | None = None,
    fused: bool | None = None,
):
    """Sparse dispatch: ``sum_j weights[m, j] * expert_{experts[m, j]}(x[m])`` for ``x [M, D]``.

    The ``M * k`` slots are sorted by expert once and their rows gathered; each expert
    runs on its own contiguous run of rows only (:func:`grouped_linear`: one fused
    launch per layer on Triton, ``fused`` as there); the results are put back in slot
    order and summed over the k slots of each token. Returns ``(out [M, D], rows [E])``.
    """
    count, top_k = routing.experts.shape
    flat_expert = routing.experts.reshape(-1)
    order = torch.argsort(flat_expert, stable=True)
    rows_per_expert = torch.bincount(flat_expert, minlength=len(experts))
    sorted_rows = x[torch.div(order, top_k, rounding_mode="floor")]
    options = dict(backend=backend, fused=fused)
    hidden = activation(grouped_linear([e.up for e in experts], sorted_rows, rows_per_expert, **options))
    out = grouped_linear([e.down for e in experts], hidden, rows_per_expert, **options)
    slots = out[torch.argsort(order)].view(count, top_k, x.shape[1])
    return (slots * routing.weights[..., None]).sum(1), rows_per_expert


def moe(
    state: MoeState, x: torch.Tensor, top_k: int, max_iters: int, threshold: float, *, backend: str | None = None
) -> tuple[torch.Tensor, MoeAux]:
    """Adaptive MoE feed-forward of ``x [M, D]``; returns the update ``[M, D]`` and :class:`MoeAux`."""
    count = x.shape[0]
    h = x
    out = torch.zeros_like(x)
    cumulative = x.new_zeros(count, dtype=torch.float32)
    iterations = torch.zeros(count, dtype=torch.int32, device=x.device)
    expert_rows = torch.zeros(len(state.experts), dtype=torch.int64, device=x.device)
    balances = []
    active = torch.arange(count, device=x.device)
    for step in range(max_iters):
        if active.numel() == 0:
            break
        h_active = h[active]
        normed = rms_norm(h_active)
        routing = route(state.router, normed, top_k, backend=backend)
        delta, rows = dispatch(state.experts, normed, routing, backend=backend)
        h_next = h_active + delta
        balances.append(routing.balance)
        expert_rows = expert_rows + rows
        iterations = iterations.index_copy(0, active, iterations[active] + 1)
        so_far = cumulative[active]
        if step == max_iters - 1:
            halts = torch.ones_like(active, dtype=torch.bool)
            weight = 1.0 - so_far
        else:
            p = torch.sigmoid(linear(state.halt, rms_norm(h_next), backend=backend).float().squeeze(-1))
            halts = (so_far + p).detach() >= threshold
            weight = torch.where(halts, 1.0 - so_far, p)
        contribution = weight[:, None].to(x.dtype) * (h_next - x[active])
        out = out.index_copy(0, active, out[active] + contribution)
        cumulative = cumulative.index_copy(0, active, so_far + weight)
        h = h.index_copy(0, active, h_next)
        active = active[~halts]
    balance = torch.stack(balances).mean()
    return out, MoeAux(balance=balance, iterations=iterations, expert_rows=expert_rows)
