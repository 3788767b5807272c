"""Training package: corpora, deterministic batches, accumulation, evaluation, sampling, resume, NaN stop."""

from __future__ import annotations

import math

import attrs
import pytest
import torch

import ternary
from ternary.model import init_model, loss, preset
from ternary.state.audit import leaf_paths
from ternary.training import (
    DataError,
    TrainingStopped,
    TrainOptions,
    evaluate_bits_per_byte,
    load_corpus,
    sample_bytes,
    split_corpus,
    train,
    training_windows,
)
from ternary.training import loop as loop_module
from ternary.training.data import DEFAULT_CORPUS_BYTES

TEXT = b"the quick brown fox jumps over the lazy dog; " * 40


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes(TEXT)
    return path


def tiny(**overrides):
    return preset("tiny", **({"dim": 20, "heads": 2, "hidden": 24, "experts": 3, "codebook": 8} | overrides))


def test_default_corpus_is_deterministic_and_capped():
    first, second = load_corpus(), load_corpus()
    assert first.data.numel() == DEFAULT_CORPUS_BYTES and first.files > 10
    assert torch.equal(first.data, second.data)
    assert "stdlib" in first.source


def test_folder_corpus_reads_visible_files_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"BBB")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_bytes(b"AAA")
    (tmp_path / "a.txt").write_bytes(b"aaa")
    (tmp_path / ".hidden").write_bytes(b"secret")
    corpus = load_corpus(tmp_path)
    assert bytes(corpus.data.tolist()) == b"aaa\nBBB\nAAA" and corpus.files == 3
    assert bytes(load_corpus(tmp_path, max_bytes=5).data.tolist()) == b"aaa\nB"


def test_bad_corpora_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_corpus(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no files"):
        load_corpus(tmp_path / "empty")
    with pytest.raises(DataError, match=r"corpus of 100 bytes is too small for a context of 64 bytes \(--ctx\)"):
        split_corpus(torch.zeros(100, dtype=torch.uint8), 64)
    with pytest.raises(DataError, match="corpus notes.txt of 100 bytes is too small"):
        split_corpus(torch.zeros(100, dtype=torch.uint8), 64, "notes.txt")


def test_training_windows_are_a_pure_function_of_seed_step_micro():
    data = torch.arange(200, dtype=torch.uint8)
    a = training_windows(data, 3, 10, seed=1, step=5, micro=1)
    assert a.shape == (3, 11) and a.dtype == torch.long
    assert torch.equal(a, training_windows(data, 3, 10, seed=1, step=5, micro=1))
    assert not torch.equal(a, training_windows(data, 3, 10, seed=1, step=6, micro=1))
    assert bool((a[:, 1:] - a[:, :-1] == 1).all())  # contiguous windows of the data


def test_evaluation_of_a_zero_head_is_eight_bits_per_byte():
    config = tiny(moe=False, vq=False)
    state = init_model(config)
    head = state.head
    zero_head = attrs.evolve(head, T_packed=torch.full_like(head.T_packed, 121), bias=torch.zeros_like(head.bias))
    assert int(zero_head.trits().abs().sum()) == 0
    state = attrs.evolve(state, head=zero_head)
    windows = [torch.randint(0, 256, (2, 9)) for _ in range(2)]
    assert evaluate_bits_per_byte(state, config, windows) == pytest.approx(8.0, abs=1e-5)
    assert math.log2(256) == 8.0


def test_accumulated_micro_batches_equal_one_big_batch(gen):
    """Per-sample model (no MoE / VQ): hooks of 2 micro-batches combined give the update of the joint batch."""
    config = tiny(moe=False, vq=False)
    state = init_model(config, seed=3)
    windows = torch.randint(0, 256, (4, 13), generator=gen)
    step = ternary.value_and_hooks(loss, has_aux=True)
    _, h1 = step(state, windows[:2], config)
    _, h2 = step(state, windows[2:], config)
    _, joint = step(state, windows, config)
    combined = ternary.combine_hooks([h1, h2])
    assert combined.head.rows == joint.head.rows == 4 * 12
    split_state, joint_state = ternary.update(state, combined), ternary.update(state, joint)
    a, b = dict(leaf_paths(split_state)), dict(leaf_paths(joint_state))
    total = sum(t.numel() for t in a.values())
    differing = sum(int((a[p] != b[p]).sum()) for p in a)
    # gradient signs agree except where |g| is at float rounding level
    assert differing <= 1e-3 * total


def test_accumulation_handles_layers_used_in_only_some_micro_batches(gen):
    config = tiny(experts=4, top_k=1, max_moe_iters=1)
    state = init_model(config, seed=0)
    step = ternary.value_and_hooks(loss, has_aux=True)
    trees = [step(state, torch.randint(0, 256, (1, 3), generator=gen), config)[1] for _ in range(3)]
    combined = ternary.combine_hooks(trees)
    for index in range(config.experts):
        rows = [t.blocks[0].ffn.experts[index].up for t in trees]
        assert combined.blocks[0].ffn.experts[index].up.rows == sum(h.rows for h in rows)
    new = ternary.update(state, combined)
    assert ternary.audit(new).ok


def test_sampling_returns_the_requested_bytes():
    config = tiny()
    state = init_model(config)
    out = sample_bytes(state, config, b"abc", 7, temperature=0.0)
    assert isinstance(out, bytes) and len(out) == 7
    assert out == sample_bytes(state, config, b"abc", 7, temperature=0.0)
    assert len(sample_bytes(state, config, b"", 3, temperature=1.0, seed=2)) == 3
    assert sample_bytes(state, config, b"x", 0) == b""


def test_non_finite_loss_stops_before_any_update(text_file, tmp_path, monkeypatch):
    def poisoned(config, *, seed=0, device=None):
        state = init_model(config, seed=seed, device=device)
        return attrs.evolve(state, head=attrs.evolve(state.head, E=torch.full_like(state.head.E, 127)))

    monkeypatch.setattr(loop_module, "init_model", poisoned)
    options = TrainOptions(config=tiny(), data=str(text_file), ctx=16, batch=2, steps=3, out=str(tmp_path / "out"),
                           save_every=1, progress=False, eval_every=100)
    with pytest.raises(TrainingStopped, match="step 1: the loss is not finite.*no update"):
        train(options)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_resumed_run_ends_bit_for_bit_where_an_uninterrupted_run_ends(text_file, tmp_path):
    base = TrainOptions(config=tiny(max_moe_iters=2), data=str(text_file), ctx=12, batch=2, accum=2, steps=5,
                        eval_every=100, save_every=2, out=str(tmp_path / "full"), progress=False, seed=4)
    full = train(base)
    train(attrs.evolve(base, steps=2, out=str(tmp_path / "part")))
    resumed = train(attrs.evolve(base, out=str(tmp_path / "part"), resume=str(tmp_path / "part"), seed=99, batch=7))
    assert resumed.start_step == 2 and resumed.step == 5
    a, b = dict(leaf_paths(full.state)), dict(leaf_paths(resumed.state))
    assert a.keys() == b.keys() and all(torch.equal(a[p], b[p]) for p in a)


def test_resume_refuses_changed_data(text_file, tmp_path):
    base = TrainOptions(config=tiny(), data=str(text_file), ctx=12, batch=2, steps=1, out=str(tmp_path / "o"),
                        progress=False)
    train(base)
    text_file.write_bytes(TEXT[::-1])
    with pytest.raises(ValueError, match="data differs"):
        train(attrs.evolve(base, steps=2, resume=str(tmp_path / "o")))


def test_smoke_hook_count_sees_hooks_that_are_still_referenced(gen):
    """The smoke audit counts hook tensors alive after the update; a kept reference must show up."""
    import gc
    import weakref

    from ternary.training.smoke import hook_tensors

    config = tiny()
    state = init_model(config)
    _, hooks = ternary.value_and_hooks(loss, has_aux=True)(state, torch.randint(0, 256, (2, 7), generator=gen), config)
    refs = [weakref.ref(t) for t in hook_tensors(hooks)]
    assert refs and len(refs) % 2 == 0
    ternary.update(state, hooks)
    gc.collect()
    assert sum(r() is not None for r in refs) == len(refs)
    del hooks
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
