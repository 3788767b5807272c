"""The MoE dispatch benchmark's rows on CPU (Triton interpreter), tiny expert sizes: every way
runs, agrees with the per-expert path and reports positive times."""

from __future__ import annotations

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from benchmarks.moe_dispatch import dispatch_rows  # noqa: E402


def test_dispatch_rows_tiny(one_thread, monkeypatch):
    monkeypatch.setattr("benchmarks.moe_dispatch.REPEATS", 1)
    monkeypatch.setattr("benchmarks.moe_dispatch.WARMUP", 0)
    rows = dispatch_rows(DEVICE, tokens=(9,), sizes=("tiny",), dtypes=("float32",))
    assert [row["dispatch"] for row in rows] == ["fused", "per-expert", "dense"]
    for row in rows:
        assert "error" not in row, row
        assert row["rel_error"] <= 1e-5 and row["forward_s"] > 0 and row["forward_backward_s"] > 0
