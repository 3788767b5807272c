"""benchmarks/train_compare: the STE and float baselines, the three arms, state-bytes accounting."""

from __future__ import annotations

import csv
import importlib.util
import json
import math

import attrs
import pytest
import torch
from click.testing import CliRunner

import ternary
from benchmarks.train_compare import CompareOptions, command, compare
from benchmarks.train_compare_arms import ArmSettings, make_arm
from benchmarks.train_compare_float import (
    FloatLinear,
    absmean_ternary,
    float_state,
    float_training_state_bytes,
    logical_weights,
    parameters,
)
from ternary.model import forward, init_model, preset

# fp32 products of the same numbers in a different order: relative RMS error budget
FP32_BUDGET = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


def relative_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30))


def ternarised_by_hand(w: torch.Tensor, group: int | None) -> torch.Tensor:
    """Independent oracle: per tensor, or per group of ``group`` columns (loop over groups)."""
    out = torch.empty_like(w)
    spans = [(0, w.shape[1])] if group is None else [(c, min(c + group, w.shape[1])) for c in range(0, w.shape[1], group)]
    for row in range(w.shape[0]) if group is not None else [slice(None)]:
        for start, stop in spans:
            block = w[row, start:stop]
            scale = block.abs().mean()
            out[row, start:stop] = torch.clamp(torch.round(block / scale), -1, 1) * scale
    return out


def float_layer(n: int, k: int, *, ste: bool, group: int | None, gen: torch.Generator, bias: bool = True) -> FloatLinear:
    return FloatLinear(
        weight=torch.randn(n, k, generator=gen).requires_grad_(True),
        bias=torch.randn(n, generator=gen).requires_grad_(True) if bias else None,
        ste=ste,
        scale_group=group,
    )


@pytest.mark.parametrize("n, k, m", [(3, 7, 1), (1, 13, 4), (6, 45, 2), (5, 40, 3)])
@pytest.mark.parametrize("group", [None, 5, 20])
def test_ste_forward_is_the_ternarised_dense_product(gen, n, k, m, group):
    layer = float_layer(n, k, ste=True, group=group, gen=gen)
    x = torch.randn(m, k, generator=gen)
    expected = x @ ternarised_by_hand(layer.weight.detach(), group).T + layer.bias.detach()
    assert relative_rms(ternary.linear(layer, x).detach(), expected) < FP32_BUDGET


@pytest.mark.parametrize("group", [None, 10])
def test_ternarised_weight_has_three_values_per_scale_group(gen, group):
    w = torch.randn(4, 30, generator=gen)
    q = absmean_ternary(w, group)
    for row in range(4):
        for start in range(0, 30, group or 30):
            cols = slice(start, start + (group or 30))
            values = (q if group is None else q[row : row + 1])[:, cols].unique()
            assert len(values) <= 3 and torch.allclose(values, -values.flip(0))


@pytest.mark.parametrize("group", [None, 20])
def test_ste_gradient_is_straight_through(gen, group):
    """d loss / d W of the STE layer equals the dense gradient ``grad_y.T @ x``, zeros of W_q included."""
    layer = float_layer(5, 23, ste=True, group=group, gen=gen)
    x, grad_y = torch.randn(3, 23, generator=gen), torch.randn(3, 5, generator=gen)
    (ternary.linear(layer, x) * grad_y).sum().backward()
    assert relative_rms(layer.weight.grad, grad_y.T @ x) < FP32_BUDGET
    assert torch.allclose(layer.bias.grad, grad_y.sum(0))
    zeros = absmean_ternary(layer.weight, group) == 0
    assert zeros.any() and (layer.weight.grad[zeros] != 0).all()


def test_ste_embedding_rows_and_gradient(gen):
    table = float_layer(11, 6, ste=True, group=None, gen=gen, bias=False)
    tokens = torch.tensor([[3, 3, 10], [0, 4, 3]])
    rows = ternary.embedding(table, tokens)
    assert torch.equal(rows.detach(), ternarised_by_hand(table.weight.detach(), None)[tokens])
    grad = torch.randn(rows.shape, generator=gen)
    (rows * grad).sum().backward()
    expected = torch.zeros(11, 6).index_add_(0, tokens.reshape(-1), grad.reshape(-1, 6))
    assert torch.allclose(table.weight.grad, expected)


def test_full_precision_layer_is_plain_linear(gen):
    layer = float_layer(4, 9, ste=False, group=None, gen=gen)
    x = torch.randn(2, 9, generator=gen)
    expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
    assert torch.equal(ternary.linear(layer, x), expected)


def tiny_config(**overrides):
    return preset("tiny", **({"dim": 20, "heads": 2, "hidden": 24, "experts": 3, "vq": False} | overrides))


def test_float_state_starts_from_the_same_function():
    config = tiny_config()
    state = init_model(config, seed=3)
    floats = float_state(state, ste=False)
    tokens = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, _ = forward(state, tokens, config)
        got, _ = forward(floats, tokens, config)
    assert relative_rms(got, expected) < FP32_BUDGET
    assert logical_weights(floats) == logical_weights(state)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in parameters(floats))


def test_float_state_refuses_vq_leaves():
    with pytest.raises(ValueError, match="without VQ and graph"):
        float_state(init_model(tiny_config(vq=True, graph=True)), ste=True)


def test_state_bytes_match_hand_computation(gen):
    """One layer, N=3, K=7, G=5, with bias: ternary and AdamW bytes counted by hand."""
    layer = ternary.LinearState.random(7, 3, group_size=5, generator=gen)
    # T_packed 3*ceil(7/5)=6, E 3*2=6, E_accum 6, T_accum 21, bias int32 3*4=12
    assert ternary.audit({"w": layer}).total_bytes == 6 + 6 + 6 + 21 + 12
    floats = float_state({"w": layer}, ste=True)
    optimizer = torch.optim.AdamW(parameters(floats), lr=1e-3)
    (ternary.linear(floats["w"], torch.randn(2, 7, generator=gen)).sum()).backward()
    optimizer.step()
    params = (21 + 3) * 4
    # master weights + exp_avg + exp_avg_sq (fp32 each) + one fp32 step counter per parameter tensor
    assert float_training_state_bytes(floats, optimizer) == 3 * params + 2 * 4
    assert logical_weights(floats) == 21


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes(b"to be or not to be, that is the question; " * 60)
    return path


def test_three_arms_train_on_the_same_tokens(tmp_path, text_file):
    settings = ArmSettings(config=tiny_config(context=16), batch=2, context=16, warmup=0)
    options = CompareOptions(settings=settings, data=str(text_file), steps=3, eval_every=2, eval_batches=1, out=tmp_path / "out")
    summary = compare(options)
    arms = summary["arms"]
    assert set(arms) == {"ternary", "ste", "float"}
    curves = {name: v["curve"] for name, v in arms.items()}
    assert {tuple((s, t) for s, t, _ in c) for c in curves.values()} == {((0, 0), (2, 64), (3, 96))}
    assert all(math.isfinite(b) for c in curves.values() for _, _, b in c)
    # same starting function for ternary and full precision; the float arm moved
    assert curves["float"][0][2] == pytest.approx(curves["ternary"][0][2], rel=1e-5)
    assert curves["float"][-1][2] != curves["float"][0][2]
    assert arms["ternary"]["state_bytes_per_weight"] < arms["ste"]["state_bytes_per_weight"] / 5
    rows = list(csv.DictReader(open(tmp_path / "out" / "train_compare.csv")))
    assert len(rows) == 9 and {r["arm"] for r in rows} == {"ternary", "ste", "float"}
    assert json.loads((tmp_path / "out" / "train_compare.json").read_text())["steps"] == 3
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert (tmp_path / "out" / "train_compare.png").exists() == has_matplotlib


def test_ternary_arm_state_stays_integer(text_file):
    from ternary.training.data import load_corpus

    settings = ArmSettings(config=tiny_config(context=8), batch=2, context=8)
    arm = make_arm("ternary", settings, torch.device("cpu"))
    before = arm.state
    arm.step(load_corpus(str(text_file)).data, 0)
    assert arm.state is not before and ternary.audit(arm.state).ok


def test_cli_rejects_unknown_arm(text_file):
    result = CliRunner().invoke(command, ["--arms", "ternary,adam", "--data", str(text_file)])
    assert result.exit_code != 0 and "--arms" in result.output and "adam" in result.output


def test_sweep_grid_changes_one_knob_at_a_time():
    from benchmarks.sweep_rule import ONE_AT_A_TIME, one_at_a_time

    base = attrs.asdict(ternary.UpdateRule())
    points = one_at_a_time(base)
    assert points[0] == base and len(points) == len({json.dumps(p, sort_keys=True) for p in points})
    for point in points[1:]:
        changed = {k for k in base if point[k] != base[k]}
        assert changed and (len(changed) == 1 or changed <= {"e_min", "e_max"})
        ternary.UpdateRule(**point)
    assert len(points) <= 1 + sum(len(v) for v in ONE_AT_A_TIME.values())


def test_sweep_points_parse_and_reject_unknown_knobs():
    import click

    from benchmarks.sweep_rule import parse_points

    base = attrs.asdict(ternary.UpdateRule())
    assert parse_points("theta_t=3,theta_e=9; bias_step=0", base) == [
        base | {"theta_t": 3, "theta_e": 9}, base | {"bias_step": 0}
    ]
    with pytest.raises(click.BadParameter, match="theta_x"):
        parse_points("theta_x=3", base)
    with pytest.raises(click.BadParameter, match="knob=int"):
        parse_points("theta_t=three", base)


def test_budget_counts_steps_and_validations_of_every_arm():
    from benchmarks.train_compare import steps_for_budget

    options = CompareOptions(settings=None, budget_s=100.0, eval_every=10)
    # 0.3 s per step of all arms, 2 s per validation round; (100 - 2) / (0.3 + 2 / 10) = 196 -> 190
    assert steps_for_budget(options, [(0.1, 1.0), (0.2, 1.0)]) == 190
    assert steps_for_budget(options, [(50.0, 1.0)]) == 10


def test_keep_going_records_a_failing_arm(tmp_path, text_file, monkeypatch):
    import benchmarks.train_compare_arms as arms_module

    real = arms_module.make_arm

    def failing(name, settings, device):
        if name == "ste":
            raise RuntimeError("injected failure")
        return real(name, settings, device)

    monkeypatch.setattr(arms_module, "make_arm", failing)
    settings = ArmSettings(config=tiny_config(context=8), batch=2, context=8)
    options = CompareOptions(settings=settings, data=str(text_file), steps=1, eval_every=1, eval_batches=1,
                             out=tmp_path, keep_going=True)
    summary = compare(options)
    assert set(summary["arms"]) == {"ternary", "float"}
    assert summary["failed"] == {"ste": "RuntimeError: injected failure"}
    with pytest.raises(RuntimeError, match="injected"):
        compare(attrs.evolve(options, keep_going=False))


def test_sweep_budget_sizes_one_step_count_for_every_wave():
    from benchmarks.sweep_rule import BUDGET_EVALS, SAFETY, SETUP_S, steps_for_budget

    assert (SAFETY, SETUP_S, BUDGET_EVALS) == (0.85, 10.0, 3)
    # 0.85 * 100 - 10 - 4 validations * 2 s = 67 s at 0.5 s/step: 134 steps -> 132 (multiple of 3)
    assert steps_for_budget(100.0, 0.5, 2.0, waves=1) == 132
    # two waves share the time: 42.5 - 10 - 8 = 24.5 s -> 49 -> 48
    assert steps_for_budget(100.0, 0.5, 2.0, waves=2) == 48
    assert steps_for_budget(10.0, 0.5, 2.0, waves=1) == 0


def test_sweep_points_accept_base():
    from benchmarks.sweep_rule import parse_points

    base = attrs.asdict(ternary.UpdateRule())
    assert parse_points("base; theta_t=8", base) == [base, base | {"theta_t": 8}]


def test_sweep_point_stops_at_the_deadline_and_is_marked_cut(tmp_path, text_file, monkeypatch):
    """No step starts after ``stop_at``: the row says how far it got, and the table marks it."""
    import time

    import benchmarks.sweep_rule as sweep

    clock = iter([0.0, 0.0] + [10.0] * 100)  # the deadline (1.0) passes before the third step
    monkeypatch.setattr(time, "time", lambda: next(clock))
    setup = sweep.SweepSetup(data=str(text_file), steps=5, batch=2, eval_every=10, eval_batches=1)
    base = attrs.asdict(ternary.UpdateRule())
    row = sweep.train_point(setup, base | {"theta_t": 8}, 0, base, stop_at=1.0, extra={"concurrent": 2})
    monkeypatch.undo()
    assert (row["steps"], row["steps_done"], row["complete"], row["concurrent"]) == (5, 2, False, 2)
    assert [point[0] for point in row["curve"]] == [0, 2] and row["tokens"] == 2 * 2 * 64
    full = sweep.train_point(setup, base, 0, base)
    assert full["complete"] and [point[0] for point in full["curve"]] == [0, 5]
    results = tmp_path / "rows.jsonl"
    old = {k: full[k] for k in ("rule", "base", "seed", "preset", "corpus", "steps", "tokens", "curve",
                                "final_val_bits_per_byte")}  # a row from before --device
    results.write_text("\n".join(json.dumps(r) for r in (row, full, old)) + "\n")
    table = sweep.markdown_table(results).splitlines()
    assert table[0] == "preset tiny; text.txt; 5 steps of 128 / 2 x 64 bytes; float32 on cpu; 2 points at once"
    cut = [line for line in table if line.startswith("| **8** |")]
    assert len(cut) == 1 and "0: " in cut[0] and "(cut at step 2)" in cut[0]
    assert sum("cut at" in line for line in table) == 1


def _fake_train_point(setup, rule_values, seed, base, stop_at=None, extra=None):
    if rule_values["theta_t"] == 8:
        raise RuntimeError("injected failure")
    return {"rule": rule_values, "base": base, "seed": seed, "final_val_bits_per_byte": 1.0, "seconds": 0.0}


def test_sweep_keeps_going_past_a_failing_point(tmp_path, monkeypatch):
    import benchmarks.sweep_rule as sweep

    monkeypatch.setattr(sweep, "train_point", _fake_train_point)
    base = attrs.asdict(ternary.UpdateRule())
    lines = []
    results = tmp_path / "rows.jsonl"
    failed = sweep.run_sweep(sweep.SweepSetup(), [base, base | {"theta_t": 8}], [0], results, 1, base, log=lines.append)
    assert failed == 1 and any("FAILED" in line and "injected failure" in line for line in lines)
    assert [json.loads(line)["rule"] for line in results.read_text().splitlines()] == [base]
