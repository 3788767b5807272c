"""``kept_tensors.kept``: a tensor is built once per key and kept, except inside a CUDA graph capture, where one
not yet kept is built and not kept (the capture is simulated on the CPU by patching the capture query)."""

from __future__ import annotations

import pytest
import torch

from ternary.kernels import kept_tensors

CUDA = torch.device("cuda", 0)


def _counting_build(calls: list[int], value: int):
    def build() -> torch.Tensor:
        calls.append(value)
        return torch.full((3,), value, dtype=torch.int32)
    return build


def test_a_key_is_built_once_and_the_same_tensor_returned_after():
    store, calls = {}, []
    first = kept_tensors.kept(store, ("a", 1), torch.device("cpu"), _counting_build(calls, 7))
    again = kept_tensors.kept(store, ("a", 1), torch.device("cpu"), _counting_build(calls, 8))
    other = kept_tensors.kept(store, ("a", 2), torch.device("cpu"), _counting_build(calls, 9))
    assert calls == [7, 9]
    assert again is first and store[("a", 1)] is first
    assert other.tolist() == [9, 9, 9] and len(store) == 2


def test_inside_a_capture_a_missing_key_is_built_and_not_kept_and_a_kept_one_is_read(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: pytest.fail("no stream wait inside a capture"))
    store, calls = {}, []
    built = kept_tensors.kept(store, "order", CUDA, _counting_build(calls, 1))
    assert calls == [1] and built.tolist() == [1, 1, 1] and store == {}
    store["order"] = kept_one = torch.zeros(3, dtype=torch.int32)
    assert kept_tensors.kept(store, "order", CUDA, _counting_build(calls, 2)) is kept_one
    assert calls == [1]


def test_outside_a_capture_a_cuda_build_waits_for_its_stream_before_it_is_kept(monkeypatch):
    events = []

    class Stream:
        def synchronize(self):
            events.append("synchronize")

    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: events.append(("stream", device)) or Stream())
    store = {}

    def build():
        events.append("build")
        return torch.ones(2)

    kept_tensors.kept(store, "table", CUDA, build)
    assert events == ["build", ("stream", CUDA), "synchronize"]
    assert "table" in store


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_device_without_streams_is_kept_without_a_wait(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: pytest.fail("no stream on a CPU build"))
    store = {}
    kept_tensors.kept(store, 0, torch.device(device), lambda: torch.empty(1, device=device))
    assert 0 in store
