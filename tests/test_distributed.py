"""Data-parallel vote all-reduce on CPU with gloo, two processes (one spawn for all cases)."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.utils._pytree as pytree

from ternary import LinearState, UpdateRule, linear, update, value_and_hooks
from ternary.distributed import StateDivergedError, check_ranks_agree, vote_dtype, vote_update
from ternary.kernels.update import reference
from ternary.state import CorruptStateError

RULE = UpdateRule(theta_t=1, theta_e=1, bias_step=3)
CASES = ("different", "identical", "perturbed")
VOTE_WORLD_SIZES = (1, 127, 128, 32767, 32768, 10**7)


def make_state() -> dict:
    g = torch.Generator().manual_seed(7)
    return {"a": LinearState.random(13, 6, generator=g), "b": LinearState.random(6, 3, bias=False, generator=g)}


def shard(rank: int, identical: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Small-integer inputs and loss weights, so every gradient sum is exact."""
    g = torch.Generator().manual_seed(100 + (0 if identical else rank))
    return torch.randint(-2, 3, (5, 13), generator=g).float(), torch.randint(-2, 3, (5, 3), generator=g).float()


def loss_fn(state: dict, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (linear(state["b"], linear(state["a"], x)) * c).sum()


def corrupt_layer_verdict(rank: int) -> str:
    """What vote_update says when a layer the votes would change holds a corrupt packed byte."""
    state = make_state()
    _, hooks = value_and_hooks(loss_fn)(state, *shard(rank, True))
    packed = state["b"].T_packed.clone()
    packed[1, 0] = 250
    try:
        vote_update({**state, "b": attrs.evolve(state["b"], T_packed=packed)}, hooks, RULE)
    except CorruptStateError as error:
        return str(error)
    return "no error"


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        for case in CASES:
            state = make_state()
            _, hooks = value_and_hooks(loss_fn)(state, *shard(rank, case == "identical"))
            new, nbytes = vote_update(state, hooks, RULE)
            if case == "perturbed" and rank == 1:
                bumped = new["a"].T_accum.clone()
                bumped[0, 0] += 1
                new = {**new, "a": attrs.evolve(new["a"], T_accum=bumped)}
            try:
                check_ranks_agree(new)
                verdict = "agree"
            except StateDivergedError as error:
                verdict = str(error)
            results[case] = {"leaves": pytree.tree_leaves(new), "bytes": nbytes, "verdict": verdict}
        results["corrupt"] = corrupt_layer_verdict(rank)
        results["reduced"] = {}
        for size in VOTE_WORLD_SIZES:
            votes = torch.ones(3, dtype=vote_dtype(size))
            dist.all_reduce(votes)
            results["reduced"][size] = votes.tolist()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(2)]


def leaves_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_ranks_stay_identical_and_follow_majority_rule(ranks: list[dict]) -> None:
    first, second = ranks[0]["different"], ranks[1]["different"]
    assert leaves_equal(first["leaves"], second["leaves"]) and first["verdict"] == "agree"
    state = make_state()
    hooks = [value_and_hooks(loss_fn)(state, *shard(r, False))[1] for r in range(2)]
    expected = []
    for name in ("a", "b"):
        layer = state[name]
        votes = [reference.votes(h[name].x, h[name].grad_y) for h in hooks]
        weight = torch.sign(votes[0][0].int() + votes[1][0].int()).to(torch.int8)
        bias = torch.sign(votes[0][1].int() + votes[1][1].int()).to(torch.int8)
        new = reference.apply_votes(
            layer.T_packed, layer.E, layer.E_accum, layer.T_accum, layer.bias, weight, bias,
            in_features=layer.in_features, group_size=layer.group_size, **RULE.kernel_args(),
        )
        expected += [t for t in new if t is not None]
    assert leaves_equal(first["leaves"], expected)
    assert first["bytes"] == 6 * (13 + 1) + 3 * (6 + 1)  # one int8 per weight and bias: 1/4 of fp32


def test_identical_shards_equal_the_single_process_big_batch(ranks: list[dict]) -> None:
    state = make_state()
    x, c = shard(0, True)
    _, big = value_and_hooks(loss_fn)(state, torch.cat([x, x]), torch.cat([c, c]))
    assert leaves_equal(ranks[0]["identical"]["leaves"], pytree.tree_leaves(update(state, big, RULE)))


def test_divergence_check_fires_on_every_rank(ranks: list[dict]) -> None:
    for rank in ranks:
        verdict = rank["perturbed"]["verdict"]
        assert "differs across ranks" in verdict and "['a'].T_accum" in verdict


def test_corrupt_layer_is_named_on_every_rank(ranks: list[dict]) -> None:
    for rank in ranks:
        assert rank["corrupt"].startswith("['b'].T_packed: byte 250 at index (1, 0)"), rank["corrupt"]


def test_vote_dtype_holds_the_world_and_all_reduces(ranks: list[dict]) -> None:
    """Each dtype ``vote_dtype`` picks holds a sum of that many votes, and gloo all-reduces it."""
    for size in VOTE_WORLD_SIZES:
        assert torch.iinfo(vote_dtype(size)).max >= size
        assert all(rank["reduced"][size] == [2, 2, 2] for rank in ranks), size


def test_blocked_votes_equal_dense_votes(monkeypatch: pytest.MonkeyPatch, gen: torch.Generator) -> None:
    """Forming the gradient a few rows at a time gives exactly the dense votes."""
    from ternary.distributed import votes as module

    monkeypatch.setattr(module, "VOTE_BLOCK_ELEMENTS", 3 * 13)
    x, grad_y = torch.randint(-2, 3, (7, 13), generator=gen).float(), torch.randint(-2, 3, (7, 8), generator=gen).float()
    weight, bias = reference.votes(x, grad_y)
    assert torch.equal(module.blocked_votes(x, grad_y, reference), torch.cat([weight.reshape(-1), bias]))
