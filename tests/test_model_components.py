"""Unit tests of the model's components: shapes, causality, routing, halting, VQ, graph, update."""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.utils._pytree as pytree

import ternary
from ternary.functional import LinearHooks
from ternary.model import ModelConfig, forward, init_model, loss, observe, preset
from ternary.model.attention import AttentionState, attention
from ternary.model.graph import EDGE_MAX, GraphState, grow_edges, keep_strongest
from ternary.model.mlp import mlp
from ternary.model.moe import MoeState, dispatch, moe, route
from ternary.model.norm import rms_norm
from ternary.model.rotary import rotate
from ternary.model.vq import VqState, code_vectors, nearest_codes, quantize, record_usage
from ternary.state.audit import leaf_paths

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


# float budgets: reference paths compute the same sums in another order (float32)
ATOL = 1e-4

VARIANTS = {
    "full": dict(),
    "no_moe": dict(moe=False),
    "no_vq": dict(vq=False),
    "no_graph": dict(graph=False),
    "iters1": dict(max_moe_iters=1),
    "iters3": dict(max_moe_iters=3),
}


def small_config(**overrides) -> ModelConfig:
    """Tiny preset with odd widths: dim 30 is not a multiple of 5*8 (G=40) nor of 40, hidden 22."""
    base = dict(dim=30, heads=3, hidden=22, experts=3, top_k=2, codebook=7, max_edges=9)
    return preset("tiny", **(base | overrides))


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("batch,length", [(1, 1), (2, 7)])
def test_forward_shapes_and_aux(name, batch, length, gen):
    config = small_config(**VARIANTS[name])
    state = init_model(config, seed=3)
    tokens = torch.randint(0, 256, (batch, length), generator=gen)
    logits, aux = forward(state, tokens, config)
    assert logits.shape == (batch, length, 256) and logits.dtype == torch.float32
    assert bool(torch.isfinite(logits).all())
    if config.vq:
        assert aux.codes.shape == (batch, length) and int(aux.codes.max()) < config.codebook
    else:
        assert aux.codes is None
    if config.moe:
        assert aux.iterations.shape == (config.layers, batch, length)
    else:
        assert aux.iterations is None and float(aux.balance) == 0.0


@pytest.mark.parametrize("name", ["full", "no_moe", "iters3"])
def test_future_tokens_do_not_change_past_logits(name, gen):
    config = small_config(**VARIANTS[name])
    state = init_model(config, seed=5)
    tokens = torch.randint(0, 256, (2, 12), generator=gen)
    changed = tokens.clone()
    cut = 6
    changed[:, cut:] = torch.randint(0, 256, (2, 12 - cut), generator=gen)
    before, _ = forward(state, tokens, config)
    after, _ = forward(state, changed, config)
    torch.testing.assert_close(after[:, :cut], before[:, :cut], atol=ATOL, rtol=0)
    assert not torch.allclose(after[:, cut:], before[:, cut:])


def test_attention_is_causal_and_rotary_keeps_norms(gen):
    state = AttentionState.random(12, group_size=10, generator=gen)
    x = torch.randn(1, 9, 12, generator=gen)
    y = attention(state, x, heads=2)
    x2 = x.clone()
    x2[:, 5:] += 1.0
    torch.testing.assert_close(attention(state, x2, heads=2)[:, :5], y[:, :5], atol=ATOL, rtol=0)
    q = torch.randn(1, 2, 9, 6, generator=gen)
    torch.testing.assert_close(rotate(q).norm(dim=-1), q.norm(dim=-1), atol=1e-5, rtol=1e-5)


def test_rotary_scores_depend_on_offset_only(gen):
    q, k = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    qs = rotate(q.expand(1, 1, 8, 6).contiguous())[0, 0]
    ks = rotate(k.expand(1, 1, 8, 6).contiguous())[0, 0]
    scores = qs @ ks.T
    torch.testing.assert_close(scores.diagonal(2)[:-1], scores.diagonal(2)[1:], atol=1e-5, rtol=1e-5)


def test_norm_has_unit_rms_and_no_state(gen):
    x = torch.randn(4, 17, generator=gen) * 7
    torch.testing.assert_close(rms_norm(x).pow(2).mean(-1), torch.ones(4), atol=1e-4, rtol=0)


def dense_moe_step(state: MoeState, x: torch.Tensor, top_k: int) -> torch.Tensor:
    """Every expert on every row, weighted by the renormalised top-k router probabilities."""
    probs = torch.softmax(ternary.linear(state.router, x), -1)
    top = probs.topk(top_k, -1)
    weights = torch.zeros_like(probs).scatter(1, top.indices, top.values / top.values.sum(-1, keepdim=True))
    every = torch.stack([mlp(expert, x) for expert in state.experts], 1)
    return (weights[..., None] * every).sum(1)


@pytest.mark.parametrize("rows,experts,top_k", [(1, 1, 1), (13, 3, 2), (40, 5, 3)])
def test_sparse_dispatch_matches_dense_and_hooks_hold_routed_rows(rows, experts, top_k, gen):
    state = MoeState.random(11, 9, experts, group_size=5, generator=gen)
    x = torch.randn(rows, 11, generator=gen)
    routing = route(state.router, x, top_k)
    out, counts = dispatch(state.experts, x, routing)
    torch.testing.assert_close(out, dense_moe_step(state, x, top_k), atol=ATOL, rtol=1e-4)
    assert int(counts.sum()) == rows * top_k

    def objective(s, inputs):
        r = route(s.router, inputs, top_k)
        return dispatch(s.experts, inputs, r)[0].sum() + r.balance

    _, hooks = ternary.value_and_hooks(objective)(state, x)
    for index, expert_hooks in enumerate(hooks.experts):
        routed = int((routing.experts == index).sum())
        if routed == 0:
            assert expert_hooks is None or expert_hooks.up is None
        else:
            assert expert_hooks.up.rows == routed and expert_hooks.down.rows == routed


def test_load_balance_term_reaches_router_hooks(gen):
    state = MoeState.random(10, 8, 4, group_size=5, generator=gen)
    x = torch.randn(16, 10, generator=gen)
    _, hooks = ternary.value_and_hooks(lambda s, v: route(s.router, v, 2).balance)(state, x)
    assert hooks.router is not None and float(hooks.router.grad_y.abs().sum()) > 0


@pytest.mark.parametrize("max_iters", [1, 2, 3])
@pytest.mark.parametrize("threshold", [1e-6, 0.5, 0.99, 1.0])
def test_halting_is_bounded_by_max_iters(max_iters, threshold, gen):
    state = MoeState.random(10, 8, 3, group_size=5, generator=gen)
    x = torch.randn(37, 10, generator=gen)
    out, aux = moe(state, x, 2, max_iters, threshold)
    assert out.shape == x.shape and aux.iterations.dtype == torch.int32
    assert int(aux.iterations.min()) >= 1 and int(aux.iterations.max()) <= max_iters
    if threshold == 1e-6:
        assert bool((aux.iterations == 1).all())
    assert int(aux.expert_rows.sum()) == 2 * int(aux.iterations.sum())


def test_single_iteration_is_one_moe_step(gen):
    state = MoeState.random(10, 8, 3, group_size=5, generator=gen)
    x = torch.randn(9, 10, generator=gen)
    out, _ = moe(state, x, 2, 1, 0.99)
    torch.testing.assert_close(out, dense_moe_step(state, rms_norm(x), 2), atol=ATOL, rtol=1e-4)


def test_vq_picks_the_nearest_code(gen):
    vq = VqState.random(13, 11, group_size=5, generator=gen)
    rows = code_vectors(vq)
    z = torch.randn(50, 13, generator=gen)
    picked = nearest_codes(rows, z)
    distances = torch.cdist(z.double(), rows.double())
    chosen = distances.gather(1, picked[:, None]).squeeze(1)
    assert bool((chosen <= distances.min(1).values + 1e-6).all())
    exact = nearest_codes(rows, rows[[4, 0, 10]])
    assert exact.tolist() == [4, 0, 10] or bool((torch.cdist(rows, rows)[[4, 0, 10], exact] == 0).all())
    picked2, q = quantize(vq, z, rows)
    assert torch.equal(picked2, picked)
    torch.testing.assert_close(q, rows[picked])


def test_vq_usage_counts_are_integer_and_exact(gen):
    vq = VqState.random(5, 6, group_size=5, generator=gen)
    picked = torch.randint(0, 6, (3, 8), generator=gen)
    once = record_usage(vq, picked)
    twice = record_usage(once, picked)
    expected = torch.bincount(picked.reshape(-1), minlength=6)
    assert once.usage.dtype == torch.int32 and once.usage.tolist() == expected.tolist()
    assert twice.usage.tolist() == (2 * expected).tolist()
    saturated = record_usage(attrs.evolve(vq, usage=torch.full((6,), 2**31 - 2, dtype=torch.int32)), picked)
    assert int(saturated.usage.max()) == 2**31 - 1


def test_graph_edges_count_transitions_exactly_below_the_bound(gen):
    graph = GraphState.random(6, 5, group_size=5, generator=gen)
    codes = torch.randint(0, 5, (2, 9), generator=gen)
    grown = grow_edges(graph, codes, max_edges=25)
    expected = torch.zeros(5, 5, dtype=torch.int64)
    for row in codes.tolist():
        for a, b in zip(row, row[1:]):
            expected[a, b] += 1
    assert grown.edges.dtype == torch.int8 and torch.equal(grown.edges.long(), expected)


@pytest.mark.parametrize("max_edges", [1, 4, 12])
def test_graph_edges_stay_int8_bounded_and_saturate(max_edges, gen):
    graph = GraphState.random(6, 7, group_size=5, generator=gen)
    repeated = torch.randint(0, 7, (3, 20), generator=gen)
    batches = [torch.randint(0, 7, (3, 20), generator=gen) for _ in range(20)] + [repeated] * 130
    for codes in batches:
        graph = grow_edges(graph, codes, max_edges)
        assert graph.edges.dtype == torch.int8
        assert int(graph.edges.min()) >= 0 and int(graph.edges.max()) <= EDGE_MAX
        assert int((graph.edges > 0).sum()) <= max_edges
    assert int(graph.edges.max()) == EDGE_MAX  # a transition seen in every batch saturates


def test_keep_strongest_keeps_the_largest_edges():
    edges = torch.tensor([[3, 0, 9], [9, 1, 0], [2, 0, 5]], dtype=torch.int8)
    kept = keep_strongest(edges, 3)
    assert kept.tolist() == [[0, 0, 9], [9, 0, 0], [0, 0, 5]]
    assert keep_strongest(edges, 6) is edges


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_update_keeps_structure_dtypes_and_integer_state(name, gen):
    config = small_config(**VARIANTS[name])
    state = init_model(config, seed=1)
    window = torch.randint(0, 256, (2, 9), generator=gen)
    (total, aux), hooks = ternary.value_and_hooks(loss, has_aux=True)(state, window, config)
    new = observe(ternary.update(state, hooks, loss=total), aux.model, config)
    assert pytree.tree_structure(new) == pytree.tree_structure(state)
    before, after = dict(leaf_paths(state)), dict(leaf_paths(new))
    assert before.keys() == after.keys()
    assert all(before[p].dtype == after[p].dtype and before[p].shape == after[p].shape for p in before)
    assert ternary.audit(new).ok and not ternary.audit(new).float_leaves
    assert any(not torch.equal(before[p], after[p]) for p in before if p.endswith("T_accum"))
    if config.graph:
        assert int((new.graph.edges > 0).sum()) >= 1
        assert int(new.vq.usage.sum()) == window[:, :-1].numel()


def test_embedding_votes_only_rows_of_seen_bytes(gen):
    config = small_config(moe=False, vq=False)
    state = init_model(config, seed=2)
    window = torch.tensor([[65, 66, 65, 67, 68]])
    _, hooks = ternary.value_and_hooks(loss, has_aux=True)(state, window, config)
    new = ternary.update(state, hooks)
    moved = (new.embed.T_accum != state.embed.T_accum).any(1).nonzero().flatten().tolist()
    assert set(moved) <= {65, 66, 67} and moved


def test_init_is_deterministic_and_config_is_validated():
    config = small_config()
    a, b = dict(leaf_paths(init_model(config, seed=7))), dict(leaf_paths(init_model(config, seed=7)))
    assert all(torch.equal(a[p], b[p]) for p in a)
    with pytest.raises(ValueError, match="top_k"):
        ModelConfig(experts=2, top_k=3)
    with pytest.raises(ValueError, match="heads"):
        ModelConfig(dim=30, heads=4)
    assert preset("tiny", vq=False).graph is False
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    for name in ("tiny", "small", "base"):
        assert ModelConfig.from_dict(preset(name).to_dict()) == preset(name)
    with pytest.raises(ValueError, match="tokens"):
        forward(init_model(config), torch.zeros(3, dtype=torch.long), config)


def test_hooks_tree_has_rows_for_used_layers_only(gen):
    config = small_config(max_moe_iters=1)
    state = init_model(config, seed=4)
    _, hooks = ternary.value_and_hooks(loss, has_aux=True)(state, torch.randint(0, 256, (1, 6), generator=gen), config)
    assert isinstance(hooks.head, LinearHooks) and hooks.head.rows == 5
    assert hooks.blocks[0].ffn.halt.rows == 0  # one iteration: the halting head is not consulted
