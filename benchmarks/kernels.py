"""Kernel benchmark: ternary linear forward, grad-x and update against bf16 cuBLAS on one card.

Everything is timed in one process on one card, with the baseline in the same run:

- small ops run inside CUDA graphs (launch latency on these machines is tens of
  microseconds), replayed for about ``GRAPH_WARM_MS`` (the clock settles under the load) and then
  ``REPEATS`` times; the figure is the median per call;
- the forward and grad-x rows (cuBLAS and each backend) take turns for ``LINEAR_ROUNDS`` rounds
  (:func:`time_against_cublas`): each row is the median, each speedup the median of the rounds'
  ratios, so the clock's drift over a shape's minutes does not favour whichever ran first;
- forward and grad-x weights rotate over enough copies that the set is at least three times
  the L2 cache, so no call is served from L2 (the update rows, ours and the baselines alike,
  reuse one set of inputs);
- the update rows (ours, the weight-gradient GEMM, GEMM + AdamW) are timed as four calls queued
  back to back between CUDA events behind one untimed lead call (:func:`time_back_to_back`), per
  call, with ``update(..., validated=True)`` as a training
  step calls it; the three take turns for ``UPDATE_ROUNDS`` rounds (:func:`time_interleaved`: a millisecond-long
  GEMM moves the card's clock, so a baseline timed once would drift from ours) and each row
  gives the median per call, its ratios the median of the rounds' ratios; the step's ``T_packed``
  check (one reduction and a host sync per step for all layers) is the separate
  ``t_packed_check`` row, timed alone;
- the forward and grad-x rows timed in turns with cuBLAS (cuBLAS's own, each backend's) and our update row record
  ``launches``, the operations one call puts in a CUDA graph (``benchmarks.graph_nodes``; ours printed in angle
  brackets, missing where they cannot be counted), so that per-call work a change adds shows.

Columns per (op, N x K, M): bf16 ``F.linear`` / ``grad_y @ W`` (cuBLAS); ``auto``, i.e.
``ternary.functional.linear(..., backend="auto")`` under ``torch.no_grad()`` (what the
registry picks for inference; the row records which backend that was); our forward and
grad-x per backend the registry can import (``triton``, ``tilelang``); at M = 1 to 64 with Triton,
``triton_tiled``, the forward of a layer prepared for decoding (``DecodeLinearState``: the
row-tiled copy, whose size and one-off build time the row records); a naive PyTorch path
(lookup-table unpack + dequantise + cuBLAS), gemlite's ternary kernel where it imports,
and for the update the STE trainer's per-step cost (bf16 weight-gradient GEMM, and GEMM +
fused AdamW on an fp32 master). Every timed kernel is also checked: forward against the
naive path, grad-x against cuBLAS on the same dense weights, the update against the
reference (share of equal entries); a failed check marks the row ``WRONG?``.

When ``tilelang`` is among the backends, the TileLang kernels the run needs are first
compiled by ``ternary prewarm`` in two fresh processes sharing an empty cache folder:
the first compiles (cold), the second only loads (cached); per-kernel seconds and the
process wall times go to ``compile_times`` in the report, and the benchmark then runs
on that cache.

Results go to ``kernels.csv`` / ``kernels.json`` under the output folder (rewritten after
every shape, so a run cut short keeps what it measured); ``format_table`` gives the printed
summary. ``python -m benchmarks.kernels --help`` has the options of ``ternary bench
kernels`` plus ``--backends``, ``--update-rows none`` and ``--no-compile-times``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import attrs
import torch
import torch.nn.functional as F

from benchmarks.graph_nodes import launches_per_call

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (16384, 16384))
ROWS = (1, 16, 128, 2048, 8192)
QUICK_SHAPES = ((4096, 4096), (16384, 16384))
QUICK_ROWS = (1, 16, 2048)
UPDATE_ROWS = (2048, 8192)
GEMLITE_ROWS = (1, 16)
GROUP_SIZE = 40
REPEATS = 15
GRAPH_MIN_MS = 3.0
GRAPH_WARM_MS = 30.0
# Rounds in turns of the forward and grad-x rows (cuBLAS and each backend; :func:`time_interleaved`).
LINEAR_ROUNDS = 5
# Rounds in turns of the update rows (GEMM, GEMM + AdamW, ours). On an H200 the rounds' ratios of ours to
# the GEMM at 16384^2 M = 8192 spread over 1.16-1.27x within one process and across processes
# (results/h200/twentieth/): six rounds, with the spread in every row.
UPDATE_ROUNDS = 6


@attrs.frozen
class BenchConfig:
    """What to run. ``shapes`` are ``(N, K)`` pairs; ``rows`` the activation rows M."""

    shapes: tuple[tuple[int, int], ...] = SHAPES
    rows: tuple[int, ...] = ROWS
    update_rows: tuple[int, ...] = UPDATE_ROWS
    gemlite: bool = True
    gemlite_shapes: tuple[tuple[int, int], ...] = ((16384, 16384),)
    backends: tuple[str, ...] = ("auto", "triton", "tilelang")
    compile_times: bool = True

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(shapes=QUICK_SHAPES, rows=QUICK_ROWS, update_rows=(8192,), gemlite=False)


# ----------------------------------------------------------------------------- timing


def _event_ms(fn: Callable[[], object]) -> float:
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop)


def time_in_graph(calls: list[Callable[[], object]]) -> float:
    """Median microseconds per call of ``calls`` (cycled) replayed inside one CUDA graph, after
    replaying it for about ``GRAPH_WARM_MS``."""
    for call in calls:
        call()
    torch.cuda.synchronize()
    estimate = _event_ms(lambda: [call() for call in calls]) / len(calls)
    count = len(calls) * max(1, math.ceil(GRAPH_MIN_MS / max(estimate, 1e-3) / len(calls)))
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for call in calls:  # warm the graph pool's allocations on the side stream
            call()
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        for index in range(count):
            calls[index % len(calls)]()
    for _ in range(max(1, math.ceil(GRAPH_WARM_MS / GRAPH_MIN_MS))):  # the clock settles under this load
        graph.replay()
    torch.cuda.synchronize()
    per_call = [_event_ms(graph.replay) * 1000.0 / count for _ in range(REPEATS)]
    del graph
    return statistics.median(per_call)


def time_back_to_back(fn: Callable[[], object], calls: int = 4, repeats: int = 5) -> float:
    """Median microseconds per call of ``calls`` calls of ``fn`` queued back to back between two
    CUDA events, behind one more call that is not timed: the card runs that lead call while the
    host queues the timed ones, so, as in a training step, the host's launch work overlaps the
    card's and shows only where it takes longer than the card's. (Without the lead call a
    window of four calls carried a quarter of one call's host work: the wgmma update at 4096^2
    M = 8192, 593 us back to back against 537 us in a CUDA graph, results/h100/bias_finish/.)"""
    fn()
    torch.cuda.synchronize()

    def window() -> float:
        fn()
        return _event_ms(lambda: [fn() for _ in range(calls)])

    return statistics.median(window() * 1000.0 / calls for _ in range(repeats))


def time_interleaved(fns: dict[str, object], rounds: int = 4, timer: Callable[[object], float] | None = None,
                     failures: dict[str, BaseException] | None = None) -> dict[str, list[float]]:
    """``timer(fns[name])`` (default :func:`time_back_to_back`) of each of ``fns`` in turn, ``rounds``
    times over: microseconds per call, round by round. Kernels that run for milliseconds move the
    card's clock (power and heat), so a baseline timed once before or after the others drifts from
    them; taken in turns, round ``r`` of every call ran under about the same clock (compare them
    with :func:`paired_ratio`).

    With ``failures`` given, a name whose timing raises is recorded there and left out of the later
    rounds (the others go on); the first name, the baseline, still raises."""
    timer = timer or time_back_to_back
    times: dict[str, list[float]] = {name: [] for name in fns}
    baseline = next(iter(fns), None)
    for _ in range(rounds):
        for name, fn in fns.items():
            if failures is not None and name in failures:
                continue
            try:
                times[name].append(timer(fn))
            except Exception as error:
                if failures is None or name == baseline:
                    raise
                traceback.print_exc()
                failures[name] = error
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of ``numerator[r] / denominator[r]`` (times from :func:`time_interleaved`)."""
    return statistics.median(_round_ratios(numerator, denominator))


def ratio_range(numerator: list[float], denominator: list[float]) -> list[float]:
    """``[lowest, highest]`` of the rounds' ratios ``numerator[r] / denominator[r]``: the spread that
    :func:`paired_ratio`'s median hides."""
    ratios = _round_ratios(numerator, denominator)
    return [round(min(ratios), 4), round(max(ratios), 4)]


def _round_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def time_with_events(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median microseconds of ``fn`` timed one call at a time with CUDA events (after a warm-up),
    the host's launch work included."""
    fn()
    torch.cuda.synchronize()
    return statistics.median(_event_ms(fn) * 1000.0 for _ in range(repeats))


def time_graph_or_events(calls: list[Callable[[], object]]) -> tuple[float, str]:
    """:func:`time_in_graph`, or CUDA events per call where a call cannot be captured (one
    that syncs, e.g. the bridge's finite check when ``auto`` picks TileLang)."""
    try:
        return time_in_graph(calls), "graph"
    except Exception:  # noqa: BLE001 - capture failed: time the same calls without a graph
        torch.cuda.synchronize()
        per_call = [time_with_events(call, repeats=3) for call in calls[: max(4, min(len(calls), 8))]]
        return statistics.median(per_call), "events"


def with_constants(module, call: Callable[[], object], **values):
    """``call()`` with the module-level tuning constants ``values`` of ``module`` set (sweeps
    force a branch or a launch this way), restored afterwards."""
    saved = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        return call()
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def copies_for(bytes_per_copy: int, device: torch.device, cap: int = 32) -> int:
    """How many rotating copies make a working set of at least 3x the L2 cache."""
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2**20)
    return max(2, min(cap, math.ceil(3 * l2 / max(bytes_per_copy, 1))))


# ----------------------------------------------------------------------------- competitors


def naive_forward(x: torch.Tensor, table: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, k: int,
                  g: int) -> torch.Tensor:
    """Reference-style path: lookup-table unpack, dequantise to ``x.dtype``, cuBLAS."""
    trits = table[T_packed.long()].reshape(T_packed.shape[0], -1)[:, :k]
    scale = torch.exp2(E.to(torch.float32)).repeat_interleave(g, dim=1)[:, :k]
    return F.linear(x, trits.to(x.dtype) * scale.to(x.dtype))


def gemlite_layer(trits: torch.Tensor, dtype: torch.dtype):
    """gemlite's 2-bit ternary layer (A16W158 recipe, with the scales placed on the GPU)."""
    from gemlite.core import TORCH_TO_DTYPE, GemLiteLinearTriton

    n, k = trits.shape
    layer = GemLiteLinearTriton(2, group_size=k, in_features=k, out_features=n, input_dtype=TORCH_TO_DTYPE[dtype],
                                output_dtype=TORCH_TO_DTYPE[dtype], scaled_activations=False)
    scales = torch.ones((n, 1), dtype=torch.float32, device=trits.device)
    layer.pack((trits + 1).to(torch.uint8), scales=scales, zeros=1, bias=None)
    layer.W_group_mode = 1
    layer.channel_scale_mode = 1
    return layer


def available_backends(names: tuple[str, ...]) -> dict[str, object]:
    """Linear modules the registry can import, by backend name."""
    from ternary.kernels.registry import BackendError, implementation, unavailable_reason

    found = {}
    for name in names:
        if name == "auto" or unavailable_reason(name, torch.device("cuda")) is not None:
            continue
        try:
            found[name] = implementation("linear", name)
        except (BackendError, ImportError):
            continue
    return found


# ----------------------------------------------------------------------------- the run


@attrs.define
class Results:
    rows: list[dict] = attrs.field(factory=list)

    def add(self, op: str, n: int, k: int, m: int, impl: str, us: float, **extra: object) -> None:
        self.rows.append({"op": op, "N": n, "K": k, "M": m, "impl": impl, "us": round(us, 2), **extra})
        print(f"  {op:8s} {n}x{k} M={m:<5d} {impl:14s} {us:10.1f} us", flush=True)

    def error(self, op: str, n: int, k: int, m: int, impl: str, error: BaseException) -> None:
        """An error row: ``impl`` failed for this (op, shape, M); the run goes on."""
        self.rows.append({"op": op, "N": n, "K": k, "M": m, "impl": impl, "error": repr(error)[:300]})

    def measure(self, op: str, n: int, k: int, m: int, impl: str,
                fn: Callable[[], tuple[float, dict]]) -> float | None:
        """Record ``fn() -> (us, extra)``; a failure becomes an error row, not a failed run."""
        try:
            us, extra = fn()
        except Exception as error:
            traceback.print_exc()
            self.error(op, n, k, m, impl, error)
            return None
        self.add(op, n, k, m, impl, us, **extra)
        return us


def relative_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def layer_of(T_packed: torch.Tensor, E: torch.Tensor, k: int):
    """A :class:`LinearState` around ``T_packed`` / ``E`` for the ``auto`` rows (the vote
    accumulators, which inference never reads, are expanded zeros: no memory)."""
    from ternary.state.linear_state import LinearState

    n = T_packed.shape[0]
    zero = torch.zeros((), dtype=torch.int8, device=T_packed.device)
    return LinearState(T_packed=T_packed, E=E, E_accum=zero.expand(E.shape), T_accum=zero.expand(n, k),
                       in_features=k, out_features=n, group_size=GROUP_SIZE)


def _rounded(times: list[float]) -> list[float]:
    return [round(t, 2) for t in times]


def time_against_cublas(results: Results, op: str, shape: tuple[int, int, int], cublas: list[Callable[[], object]],
                        ours: dict[str, tuple[Callable[[], dict], list[Callable[[], object]]]], flops: int,
                        packed_bytes: int | None) -> float:
    """Time bf16 cuBLAS (``cublas``: calls over rotating weights) and each backend of ``ours``
    (``name -> (check, calls)``; ``check()`` runs the backend once and returns its error columns) in
    turns, ``LINEAR_ROUNDS`` rounds of :func:`time_in_graph` (:func:`time_interleaved`), and record a
    row each: medians, with speedups paired by round (:func:`paired_ratio`). A backend whose check
    raises, or whose timing raises in any round, gets an error row and no timings (cuBLAS failing
    fails the call). Returns cuBLAS's median microseconds."""
    n, k, m = shape
    checks, calls, failures = {}, {"bf16_cublas": cublas}, {}
    for name, (check, backend_calls) in ours.items():
        try:
            checks[name] = check()
        except Exception as error:
            traceback.print_exc()
            results.error(op, n, k, m, name, error)
            continue
        calls[name] = backend_calls
    launches = {name: launches_per_call(name_calls[0]) for name, name_calls in calls.items()}
    times = time_interleaved(calls, rounds=LINEAR_ROUNDS, timer=time_in_graph, failures=failures)
    base_times = times.pop("bf16_cublas")
    base = statistics.median(base_times)
    results.add(op, n, k, m, "bf16_cublas", base, tflops=flops / base / 1e6, rounds_us=_rounded(base_times),
                launches=launches["bf16_cublas"])
    for name, backend_times in times.items():
        if name in failures:
            results.error(op, n, k, m, name, failures[name])
            continue
        us = statistics.median(backend_times)
        fields = {**checks[name], **(dict(packed_tbps=packed_bytes / us / 1e6) if packed_bytes else {})}
        fields.update(speedup=paired_ratio(base_times, backend_times), rounds_us=_rounded(backend_times),
                      launches=launches[name])
        results.add(op, n, k, m, name, us, **fields)
    return base


def tiled_forward_calls(x: torch.Tensor, states: list, reference_y: torch.Tensor, k: int):
    """``(check, calls)`` of the forward over the decode layout (``DecodeLinearState``'s tiles, built here
    for every rotating copy): for one row the one-lookup-per-byte kernel (``G / 5`` a multiple of 8, as
    here) or the shuffle-table GEMV, the table-decoded ``mma.sync`` kernel for 2 to 64; the check also
    reports the tiles' size and the time to build them once, which a decoding run pays once per layer,
    not per call."""
    from ternary.kernels.linear import triton as triton_linear
    from ternary.state.decode_state import tile_rows

    tiles = [tile_rows(p, e, GROUP_SIZE) for p, e in states]
    static = dict(in_features=k, group_size=GROUP_SIZE, bias_frac_bits=16)

    def check() -> dict:
        y = triton_linear.forward_decode(x, *states[0], *tiles[0], None, **static)
        tiles_mb = sum(t.untyped_storage().nbytes() for t in tiles[0]) / 1e6
        build_us = time_with_events(lambda: tile_rows(*states[0], GROUP_SIZE), repeats=3)
        return dict(rel_err_vs_naive=relative_rms(y, reference_y), tiles_mb=round(tiles_mb, 2),
                    tiles_build_us=round(build_us, 1))

    return check, [lambda s=s, t=t: triton_linear.forward_decode(x, *s, *t, None, **static)
                   for s, t in zip(states, tiles)]


def bench_linear(results: Results, n: int, k: int, config: BenchConfig, device: torch.device) -> None:
    from ternary.functional import linear
    from ternary.kernels.linear import triton as triton_linear
    from ternary.kernels.linear.triton_tiled_mma import TILED_MMA_MAX_ROWS
    from ternary.kernels.registry import resolve
    from ternary.state.packing import byte_to_trits_table, random_packed, unpack

    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // GROUP_SIZE)
    packed_bytes = n * -(-k // 5) + n * groups
    count = copies_for(packed_bytes, device)
    states = [(random_packed(n, k, generator=gen).to(device),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(device)) for _ in range(count)]
    dense_count = copies_for(n * k * 2, device)
    dense = [unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(GROUP_SIZE, 1)[:, :k].bfloat16()
             for p, e in states[:dense_count]]
    table = byte_to_trits_table(device)
    backends = available_backends(config.backends)
    layers = [layer_of(p, e, k) for p, e in states] if "auto" in config.backends else []
    static = dict(in_features=k, group_size=GROUP_SIZE)
    gem = None
    if config.gemlite and (n, k) in config.gemlite_shapes:
        try:
            gem = [gemlite_layer(unpack(p, k), torch.bfloat16) for p, _ in states[: min(count, 4)]]
        except Exception as error:  # gemlite missing or failing is a skipped column, not a failed run
            print(f"  gemlite unavailable: {type(error).__name__}: {error}")
    for m in config.rows:
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        grad_y = torch.randn(m, n, device=device, dtype=torch.bfloat16)
        flops = 2 * m * n * k
        reference_y = naive_forward(x, table, *states[0], k, GROUP_SIZE)
        forward_calls = {
            name: (lambda fwd=module.forward: dict(rel_err_vs_naive=relative_rms(
                       fwd(x, *states[0], None, bias_frac_bits=16, **static), reference_y)),
                   [lambda s=s, fwd=module.forward: fwd(x, s[0], s[1], None, bias_frac_bits=16, **static)
                    for s in states])
            for name, module in backends.items()}
        if m <= TILED_MMA_MAX_ROWS and "triton" in backends and triton_linear.gluon_runs(x):
            forward_calls["triton_tiled"] = tiled_forward_calls(x, states, reference_y, k)
        base = time_against_cublas(results, "forward", (n, k, m), [lambda w=w: F.linear(x, w) for w in dense],
                                   forward_calls, flops, packed_bytes)
        if "auto" in config.backends:
            def auto():
                with torch.no_grad():
                    err = relative_rms(linear(layers[0], x, backend="auto"), reference_y)
                    us, timing = time_graph_or_events(
                        [lambda layer=layer: linear(layer, x, backend="auto") for layer in layers])
                return us, dict(speedup=base / us, packed_tbps=packed_bytes / us / 1e6, rel_err_vs_naive=err,
                                picks=str(resolve("auto", device, grad_enabled=False)), timing=timing)
            results.measure("forward", n, k, m, "auto", auto)

        def naive():
            us = time_in_graph([lambda s=s: naive_forward(x, table, s[0], s[1], k, GROUP_SIZE) for s in states[:4]])
            return us, dict(speedup=base / us)
        results.measure("forward", n, k, m, "naive_torch", naive)
        if gem is not None and m in GEMLITE_ROWS:
            def gemlite():
                start = time.time()
                gem[0](x)
                tune_s = time.time() - start
                us = time_in_graph([lambda layer=layer: layer(x) for layer in gem])
                return us, dict(speedup=base / us, first_call_s=round(tune_s, 1))
            results.measure("forward", n, k, m, "gemlite_2bit", gemlite)
        if m > triton_linear.WGMMA_MAX_ROWS or triton_linear.buffer_stays_in_l2(m, n, k):  # two-step calls
            def decode():
                calls = [lambda s=s: triton_linear.dequantize(s[0], s[1], **static) for s in states[:4]]
                buffer_mb = calls[0]().untyped_storage().nbytes() / 1e6  # the whole buffer, row padding included
                return time_in_graph(calls), dict(buffer_mb=buffer_mb)
            results.measure("decode", n, k, m, "triton_two_step", decode)
        grad_x_calls = {
            name: (lambda gx=module.grad_x: dict(rel_err_vs_bf16=relative_rms(
                       gx(grad_y, *states[0], **static), grad_y @ dense[0])),
                   [lambda s=s, gx=module.grad_x: gx(grad_y, s[0], s[1], **static) for s in states])
            for name, module in backends.items()}
        time_against_cublas(results, "grad_x", (n, k, m), [lambda w=w: grad_y @ w for w in dense], grad_x_calls,
                            flops, None)
    del states, dense, gem, layers
    torch.cuda.empty_cache()


def bench_update(results: Results, n: int, k: int, m: int, device: torch.device) -> None:
    from ternary.kernels.update import triton as triton_update
    from ternary.state.packing import check_packed_all, random_packed

    gen = torch.Generator().manual_seed(n + k + m)
    groups = -(-k // GROUP_SIZE)
    packed = random_packed(n, k, generator=gen).to(device)
    E = torch.zeros(n, groups, dtype=torch.int8, device=device)
    E_accum = torch.zeros_like(E)
    T_accum = torch.zeros(n, k, dtype=torch.int8, device=device)
    bias = torch.zeros(n, dtype=torch.int32, device=device)
    x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    grad_y = torch.randn(m, n, device=device, dtype=torch.bfloat16)
    master = torch.nn.Parameter(torch.zeros(n, k, device=device))
    optimizer = torch.optim.AdamW([master], lr=1e-3, fused=True)

    def ste_step() -> None:
        master.grad = (grad_y.T @ x).to(torch.float32)
        optimizer.step()

    rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
    def ours_step():  # as a training step calls it: T_packed checked once per step for all layers (timed below)
        return triton_update.update(packed, E, E_accum, T_accum, bias, x, grad_y, validated=True, **rule)

    failures: dict[str, BaseException] = {}
    launches = launches_per_call(ours_step)
    card_before = card_state(device)
    times = time_interleaved({"gemm": lambda: grad_y.T @ x, "ste": ste_step, "ours": ours_step},
                             rounds=UPDATE_ROUNDS, failures=failures)
    card = {"card_before": card_before, "card_after": card_state(device)}
    failure = failures.get("ours")
    del master, optimizer
    torch.cuda.empty_cache()
    gemm_times = times["gemm"]
    gemm = statistics.median(gemm_times)
    results.add("update", n, k, m, "bf16_wgrad_gemm", gemm, tflops=2 * m * n * k / gemm / 1e6,
                rounds_us=_rounded(gemm_times))
    results.add("update", n, k, m, "ste_gemm_adamw", statistics.median(times["ste"]),
                **_versus_gemm(times["ste"], gemm_times))

    def ours():
        if failure is not None:
            raise failure
        return statistics.median(times["ours"]), dict(
            **_versus_gemm(times["ours"], gemm_times), vs_ste=paired_ratio(times["ours"], times["ste"]),
            **update_agreement(packed, E, E_accum, T_accum, bias, x, grad_y, rule), **card, launches=launches)
    results.measure("update", n, k, m, "triton", ours)
    results.measure("update", n, k, m, "t_packed_check",
                    lambda: (time_with_events(lambda: check_packed_all([("T_packed", packed)])), {}))


def _versus_gemm(times: list[float], gemm_times: list[float]) -> dict:
    """An update row's fields against the weight-gradient GEMM timed in the same rounds: its rounds, its
    time over the GEMM's (median of the rounds' ratios, and their range) and the table's speedup (the
    GEMM's time over its, paired the same way)."""
    return dict(vs_gemm=paired_ratio(times, gemm_times), vs_gemm_range=ratio_range(times, gemm_times),
                speedup=paired_ratio(gemm_times, times), rounds_us=_rounded(times))


def update_agreement(packed, E, E_accum, T_accum, bias, x, grad_y, rule) -> dict:
    """Share of entries where the Triton update equals the reference on these (bf16) hooks.

    bf16 hooks make the float sums inexact, so a sign may differ where |g| is at rounding
    level; the shares should be within about 1e-4 of 1 (exact equality is tested elsewhere
    with small-integer hooks).
    """
    from ternary.kernels.update import reference, triton as triton_update

    ours = triton_update.update(packed, E, E_accum, T_accum, bias, x, grad_y, **rule)
    expected = reference.update(packed, E, E_accum, T_accum, bias, x, grad_y, **rule)
    shares = {f"agree_{name}": float((getattr(ours, name) == getattr(expected, name)).float().mean())
              for name in ("T_packed", "T_accum", "E_accum", "bias")}
    del ours, expected
    torch.cuda.empty_cache()
    return shares


def card_state(device: torch.device, run: Callable = subprocess.run) -> dict | None:
    """The card's SM clock (MHz), temperature (C) and power draw (W) now, read with ``nvidia-smi`` (``None``
    where it is missing or gives no reading). The update rows carry one before and one after their rounds:
    the card runs the GEMM and the update at its power limit, with its SM clock far below the top one, and
    the update's ratio to the GEMM moves from run to run (``benchmarks/NOTES.md``, "twenty-sixth")."""
    uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
    card = f"GPU-{uuid}" if uuid is not None else str(device.index or 0)
    try:
        done = run(["nvidia-smi", f"--id={card}", "--query-gpu=clocks.sm,temperature.gpu,power.draw",
                    "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            return None
        clock, temperature, power = (float(value) for value in done.stdout.strip().splitlines()[0].split(","))
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None
    return {"sm_clock_mhz": clock, "temperature_c": temperature, "power_w": power}


def environment(device: torch.device) -> dict:
    import triton

    props = torch.cuda.get_device_properties(device)
    return {
        "device": props.name, "sms": props.multi_processor_count,
        "l2_mb": getattr(props, "L2_cache_size", 0) / 2**20, "memory_gb": props.total_memory / 2**30,
        "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


ROOT = Path(__file__).resolve().parents[1]
PREWARM_TIMEOUT_S = 300


def prewarm_shapes(config: BenchConfig) -> list[str]:
    """``--shape M,N,K,G`` arguments of ``ternary prewarm`` for the TileLang kernels this run uses
    (one M per M bucket that ``config.rows`` touches)."""
    from ternary.kernels.linear.tilelang import m_bucket

    per_bucket: dict[str, int] = {}
    for m in config.rows:
        per_bucket.setdefault(m_bucket(m), m)
    return [f"{m},{n},{k},{GROUP_SIZE}" for n, k in config.shapes for m in per_bucket.values()]


def _json_object(text: str) -> dict:
    """The JSON object a command printed (TileLang may log lines around it)."""
    decoder = json.JSONDecoder()
    for index in [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]:
        if text.startswith("{", index):
            try:
                return decoder.raw_decode(text, index)[0]
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON object in the output: {text[-500:]!r}")


def prewarm_process(shapes: list[str], cache_dir: Path, arch: str | None = None) -> dict:
    """Run ``ternary prewarm`` (bf16 forward and grad_x, no bias) in a fresh Python process;
    its JSON report plus ``process_wall_seconds`` (imports included)."""
    args = [sys.executable, "-m", "apps.cli", "prewarm", "--no-bias", "--training", "--dtype", "bfloat16",
            "--cache-dir", str(cache_dir), "--json"]
    if arch:
        args += ["--arch", arch]
    for shape in shapes:
        args += ["--shape", shape]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=PREWARM_TIMEOUT_S)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"ternary prewarm exited {done.returncode}: {(done.stderr or done.stdout)[-1500:]}")
    report = _json_object(done.stdout)
    report["process_wall_seconds"] = round(wall, 3)
    return report


def compile_times(config: BenchConfig, cache_dir: Path | None = None, arch: str | None = None) -> dict:
    """Cold vs cached compile of the run's TileLang kernels: ``ternary prewarm`` twice, each in a
    new process, on one cache folder that starts empty. Also points this process at that cache."""
    cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="ternary-tilelang-cold-"))
    if cache_dir.exists() and any(cache_dir.iterdir()):
        raise ValueError(f"compile_times: cache folder {cache_dir} is not empty (a cold compile needs an empty one)")
    shapes = prewarm_shapes(config)
    cold = prewarm_process(shapes, cache_dir, arch)
    cached = prewarm_process(shapes, cache_dir, arch)
    os.environ["TILELANG_CACHE_DIR"] = str(cache_dir.resolve())  # the benchmark below loads from it
    loaded = {row["kernel"]: row["seconds"] for row in cached["kernels"]}
    summary = {}
    for name, report in (("cold", cold), ("cached", cached)):
        summary[name] = {key: report[key] for key in ("total_kernel_seconds", "wall_seconds", "process_wall_seconds")}
    return {
        "cache_dir": str(cache_dir), "shapes": shapes,
        "kernels": [dict(kernel=row["kernel"], cold_s=row["seconds"], cached_s=loaded.get(row["kernel"]))
                    for row in cold["kernels"]],
        **summary,
    }


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels.json").write_text(json.dumps(report, indent=1))
    rows = report["rows"]
    leading = ["op", "N", "K", "M", "impl", "us"]
    fields = leading + sorted({key for row in rows for key in row} - set(leading))
    with open(out / "kernels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def run(config: BenchConfig, out: Path) -> dict:
    """Run the benchmark on the current CUDA device, write ``kernels.csv`` / ``kernels.json``
    (after every shape)."""
    if not torch.cuda.is_available():
        raise RuntimeError("ternary bench kernels needs a CUDA device")
    from ternary.kernels.registry import installed

    device = torch.device("cuda")
    results = Results()
    report = {"environment": environment(device), "config": attrs.asdict(config), "rows": results.rows}
    if config.compile_times and "tilelang" in config.backends and installed("tilelang"):
        print("TileLang compile times (ternary prewarm, cold then cached, fresh processes)", flush=True)
        try:
            report["compile_times"] = compile_times(config)
        except Exception as error:  # the timings are a column, not a reason to lose the run
            traceback.print_exc()
            report["compile_times_error"] = repr(error)[:2000]
        write_report(report, out)
    for n, k in config.shapes:
        print(f"{n}x{k}", flush=True)
        bench_linear(results, n, k, config, device)
        for m in config.update_rows:
            bench_update(results, n, k, m, device)
        write_report(report, out)
    write_report(report, out)
    return report


def suspicious(row: dict) -> bool:
    """A result row whose correctness check failed (a speedup counts only while it is right)."""
    errors = [row.get(key) for key in ("rel_err_vs_naive", "rel_err_vs_bf16")]
    shares = [value for key, value in row.items() if key.startswith("agree_")]
    return any(e is not None and not e <= 0.05 for e in errors) or any(not v >= 0.999 for v in shares)


def format_table(report: dict) -> str:
    """One line per (op, shape, M): microseconds per implementation and speedup over bf16 (the row's
    own ``speedup`` where it has one, e.g. paired by round; else the ratio of the medians;
    ``auto[triton]``: the auto row and the backend it picked; an update row's time over the GEMM's,
    lowest to highest round, in brackets, and the card's temperature and SM clock before and after its
    rounds, in braces); then the TileLang compile times."""
    env = report["environment"]
    lines = [f"{env['device']} | torch {env['torch']} | triton {env['triton']} | times in us (x = bf16 time / ours)"]
    groups: dict[tuple, dict[str, dict]] = {}
    for row in report["rows"]:
        groups.setdefault((row["op"], row["N"], row["K"], row["M"]), {})[row["impl"]] = row
    for (op, n, k, m), impls in groups.items():
        base = impls.get("bf16_cublas") or impls.get("bf16_wgrad_gemm")
        cells = []
        for impl, row in impls.items():
            label = f"{impl}[{row['picks']}]" if "picks" in row else impl
            if "us" not in row:
                cells.append(f"{label}=ERROR")
                continue
            cell = f"{label}={row['us']:.1f}"
            if base is not None and row is not base and op != "decode" and impl != "t_packed_check":
                cell += f" ({row.get('speedup', base['us'] / row['us']):.2f}x)"
            if "vs_gemm_range" in row:
                low, high = row["vs_gemm_range"]
                cell += f" [{low:.2f}-{high:.2f}x the GEMM]"
            if row.get("card_before") and row.get("card_after"):
                before, after = row["card_before"], row["card_after"]
                cell += (f" {{card {before['temperature_c']:.0f}->{after['temperature_c']:.0f} C, "
                         f"{before['sm_clock_mhz']:.0f}->{after['sm_clock_mhz']:.0f} MHz}}")
            if row.get("launches") is not None and impl != "bf16_cublas":
                cell += f" <{row['launches']} launches>"
            if suspicious(row):
                cell += " WRONG?"
            cells.append(cell)
        lines.append(f"{op:8s} {n:>5d}x{k:<5d} M={m:<5d} " + "  ".join(cells))
    lines += format_compile_times(report)
    return "\n".join(lines)


def format_compile_times(report: dict) -> list[str]:
    """The cold vs cached TileLang compile table of a report (empty if it was not measured)."""
    if "compile_times_error" in report:
        return [f"TileLang compile times: failed: {report['compile_times_error'][:300]}"]
    times = report.get("compile_times")
    if not times:
        return []
    cold, cached = times["cold"], times["cached"]
    width = max(len(row["kernel"]) for row in times["kernels"])
    lines = [
        f"TileLang compile, {len(times['kernels'])} kernels (ternary prewarm in a fresh process, empty cache "
        f"then the same cache): cold {cold['wall_seconds']:.1f} s wall ({cold['total_kernel_seconds']:.1f} s "
        f"summed over kernels, process {cold['process_wall_seconds']:.1f} s); cached {cached['wall_seconds']:.1f} s "
        f"wall (process {cached['process_wall_seconds']:.1f} s)",
        f"  {'kernel':<{width}}  cold s  cached s",
    ]
    for row in times["kernels"]:
        cached_s = "-" if row["cached_s"] is None else f"{row['cached_s']:.2f}"
        lines.append(f"  {row['kernel']:<{width}}  {row['cold_s']:6.2f}  {cached_s:>8s}")
    return lines


def _pairs(text: str) -> tuple[tuple[int, int], ...]:
    return tuple(tuple(int(v) for v in item.lower().split("x")) for item in text.split(","))  # type: ignore[misc]


def ints(text: str) -> tuple[int, ...]:
    """A comma-separated list of integers (``none`` or empty: no values), for argparse."""
    return () if text.strip().lower() in ("", "none") else tuple(int(v) for v in text.split(","))


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, Path]:
    """``python -m benchmarks.kernels`` options -> ``(BenchConfig, output folder)``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/bench-kernels")))
    parser.add_argument("--quick", action="store_true",
                        help="4096x4096 and 16384x16384, M in 1,16,2048, update at 8192")
    parser.add_argument("--shapes", type=_pairs, help="comma list of NxK")
    parser.add_argument("--rows", type=ints, help="comma list of activation rows M")
    parser.add_argument("--update-rows", type=ints, help="comma list of hook rows M for the update, or none")
    parser.add_argument("--backends", type=lambda t: tuple(t.split(",")),
                        help="comma list among auto, triton, tilelang (default: all three)")
    parser.add_argument("--gemlite", action=argparse.BooleanOptionalAction, default=None,
                        help="gemlite's ternary kernel at M=1,16 on 16384x16384 where it imports")
    parser.add_argument("--compile-times", action=argparse.BooleanOptionalAction, default=None,
                        help="cold vs cached TileLang compile via ternary prewarm (default: on)")
    args = parser.parse_args(argv)
    config = BenchConfig.quick() if args.quick else BenchConfig()
    changes = {name: value for name, value in (
        ("shapes", args.shapes), ("rows", args.rows), ("update_rows", args.update_rows), ("backends", args.backends),
        ("gemlite", args.gemlite), ("compile_times", args.compile_times),
    ) if value is not None}
    unknown = set(changes.get("backends", ())) - {"auto", "triton", "tilelang"}
    if unknown:
        parser.error(f"--backends: unknown {sorted(unknown)}; choose among auto, triton, tilelang")
    return attrs.evolve(config, **changes), args.out


def main(argv: list[str] | None = None) -> None:
    config, out = parse_args(argv)
    report = run(config, out)
    print(format_table(report))
    print(f"wrote {out / 'kernels.csv'} and {out / 'kernels.json'}")


if __name__ == "__main__":
    main()
