"""The byte-level model: state tree, initialisation and the pure ``forward``.

``embed -> blocks of (x + attention(norm x), x + feed_forward(norm x)) ->
z = norm x -> [z + q (VQ code) + graph message] -> head(norm z) -> logits`` (centred,
scaled to a fixed RMS ``config.logit_rms``).
"""

from __future__ import annotations

import attrs
import torch

from ternary.functional import embedding, linear
from ternary.model.attention import AttentionState, attention
from ternary.model.config import VOCAB, ModelConfig
from ternary.model.graph import GraphState, message
from ternary.model.mlp import MlpState, mlp
from ternary.model.moe import MoeState, moe
from ternary.model.norm import rms_norm
from ternary.model.vq import VqState, code_vectors, codebook_term, quantize
from ternary.state.linear_state import LinearState
from ternary.state.pytree import pytree_record


@pytree_record(child_fields=("attn", "ffn"))
@attrs.frozen(eq=False)
class BlockState:
    """One block: attention and a feed-forward (:class:`MoeState`, or :class:`MlpState` without MoE)."""

    attn: AttentionState
    ffn: MoeState | MlpState


@pytree_record(child_fields=("embed", "blocks", "vq", "graph", "head"))
@attrs.frozen(eq=False)
class ModelState:
    """Whole model: ``embed`` (table ``[256, dim]`` as a layer), ``blocks``, optional ``vq`` and ``graph``, ``head [dim -> 256]``."""

    embed: LinearState
    blocks: tuple[BlockState, ...]
    vq: VqState | None
    graph: GraphState | None
    head: LinearState


@attrs.frozen(eq=False)
class ModelAux:
    """Side outputs of :func:`forward`.

    - ``balance``: mean load-balance term over MoE blocks (differentiable; 0 without MoE).
    - ``codebook``: VQ codebook term (differentiable; 0 without VQ).
    - ``codes``: long ``[B, T]`` picked VQ codes, or None.
    - ``iterations``: int32 ``[layers, B, T]`` MoE steps per token, or None without MoE.
    """

    balance: torch.Tensor
    codebook: torch.Tensor
    codes: torch.Tensor | None
    iterations: torch.Tensor | None


def init_model(config: ModelConfig, *, seed: int = 0, device: torch.device | str | None = None) -> ModelState:
    """Random integer state for ``config``; the same seed gives the same state on every device."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    common = dict(group_size=config.group_size, generator=generator, device=device)

    def feed_forward() -> MoeState | MlpState:
        if config.moe:
            return MoeState.random(config.dim, config.hidden, config.experts, **common)
        return MlpState.random(config.dim, config.hidden * config.top_k, **common)

    blocks = tuple(
        BlockState(attn=AttentionState.random(config.dim, **common), ffn=feed_forward()) for _ in range(config.layers)
    )
    return ModelState(
        embed=LinearState.random(config.dim, VOCAB, bias=False, **common),
        blocks=blocks,
        vq=VqState.random(config.dim, config.codebook, **common) if config.vq else None,
        graph=GraphState.random(config.dim, config.codebook, **common) if config.graph else None,
        head=LinearState.random(config.dim, VOCAB, **common),
    )


def check_tokens(tokens: torch.Tensor) -> None:
    if tokens.dim() != 2 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise ValueError(f"forward: tokens must be an integer tensor [B, T], got {tokens.dtype} {list(tokens.shape)}")
    if tokens.shape[1] == 0:
        raise ValueError("forward: tokens must hold at least one position (T >= 1)")


def forward(
    state: ModelState,
    tokens: torch.Tensor,
    config: ModelConfig,
    *,
    backend: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, ModelAux]:
    """Logits ``[B, T, 256]`` (float32) for byte ``tokens [B, T]``, and :class:`ModelAux`.

    Causal: the logits at position ``t`` depend on ``tokens[:, : t + 1]`` only.
    """
    check_tokens(tokens)
    batch, length = tokens.shape
    x = embedding(state.embed, tokens, dtype=dtype)
    zero = x.new_zeros((), dtype=torch.float32)
    balances, iterations = [], []
    for block in state.blocks:
        x = x + attention(block.attn, rms_norm(x), config.heads, backend=backend)
        flat = rms_norm(x).reshape(batch * length, config.dim)
        if isinstance(block.ffn, MoeState):
            update, aux = moe(
                block.ffn, flat, config.top_k, config.max_moe_iters, config.halt_threshold, backend=backend
            )
            balances.append(aux.balance)
            iterations.append(aux.iterations.view(batch, length))
        else:
            update = mlp(block.ffn, flat, backend=backend)
        x = x + update.view(batch, length, config.dim)
    z = rms_norm(x).reshape(batch * length, config.dim)
    codes, codebook = None, zero
    if state.vq is not None:
        code_rows = code_vectors(state.vq)
        picked, q = quantize(state.vq, z, code_rows)
        codebook = codebook_term(q, z)
        codes = picked.view(batch, length)
        z = z + q
        if state.graph is not None:
            z = z + message(state.graph, code_rows, picked, dtype, backend=backend)
    logits = scale_logits(linear(state.head, rms_norm(z), backend=backend).float(), config.logit_rms)
    aux = ModelAux(
        balance=torch.stack(balances).mean() if balances else zero,
        codebook=codebook,
        codes=codes,
        iterations=torch.stack(iterations) if iterations else None,
    )
    return logits.view(batch, length, VOCAB), aux


def scale_logits(logits: torch.Tensor, logit_rms: float) -> torch.Tensor:
    """Centre ``logits [..., 256]`` and scale them to root-mean-square ``logit_rms`` (0: unchanged).

    The vote rule moves a layer's exponents toward larger magnitudes while that
    sharpens predictions on the training batch; on the head that ran away
    (exponents +5 in 300 steps) into over-confident logits and held-out spikes.
    With fixed-RMS logits the head's scale no longer sets the confidence.
    """
    if logit_rms == 0:
        return logits
    return rms_norm(logits - logits.mean(-1, keepdim=True)) * logit_rms
