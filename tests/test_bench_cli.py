"""``ternary bench kernels``: option parsing, timing in turns and the table (the benchmark itself needs a GPU:
``run`` is replaced)."""

from __future__ import annotations

import statistics

import pytest
import torch
from click.testing import CliRunner

import benchmarks.graph_nodes
import benchmarks.kernels
from apps.cli import main


def _invoke(monkeypatch, args):
    seen = {}

    def fake_run(config, out):
        seen["config"] = config
        return {}

    monkeypatch.setattr(benchmarks.kernels, "run", fake_run)
    monkeypatch.setattr(benchmarks.kernels, "format_table", lambda report: "table")
    return CliRunner().invoke(main, ["bench", "kernels", *args]), seen


def test_update_rows_none_skips_the_update_and_rows_parse(monkeypatch, tmp_path):
    result, seen = _invoke(monkeypatch, ["--rows", "16,128", "--update-rows", "none", "--shapes", "4096x14336",
                                         "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert config.update_rows == () and config.rows == (16, 128) and config.shapes == ((4096, 14336),)


def test_bad_row_lists_name_the_option_and_what_was_given(monkeypatch, tmp_path):
    result, seen = _invoke(monkeypatch, ["--rows", "none", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "'none': expected a comma list of integers" in result.output
    assert "--rows" in result.output and "config" not in seen
    result, _ = _invoke(monkeypatch, ["--update-rows", "8k", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "'8k'" in result.output and "or none" in result.output
    assert "--update-rows" in result.output
    result, _ = _invoke(monkeypatch, ["--shapes", "4096by4096", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--shapes" in result.output


def test_interleaved_timing_takes_turns_and_pairs_the_ratios_by_round(monkeypatch):
    """Each round times every call once, in the given order, and a ratio is the median of the
    rounds' own ratios (not the ratio of the medians), so a clock that drifts between rounds
    moves both sides of each pair alike."""
    order = []
    clock = iter([100.0, 120.0, 200.0, 250.0, 150.0, 165.0])  # gemm, ours per round; the card slows
    monkeypatch.setattr(benchmarks.kernels, "time_back_to_back", lambda fn: (order.append(fn()), next(clock))[1])
    times = benchmarks.kernels.time_interleaved({"gemm": lambda: "gemm", "ours": lambda: "ours"}, rounds=3)
    assert order == ["gemm", "ours"] * 3
    assert times == {"gemm": [100.0, 200.0, 150.0], "ours": [120.0, 250.0, 165.0]}
    ratio = benchmarks.kernels.paired_ratio(times["ours"], times["gemm"])
    assert ratio == 1.2  # the rounds' ratios are 1.2, 1.25 and 1.1
    assert ratio != sorted(times["ours"])[1] / sorted(times["gemm"])[1]  # 165 / 150 = 1.1 across rounds


def test_back_to_back_timing_queues_a_lead_call_before_each_window(monkeypatch):
    """One warm-up call, then per repeat one untimed lead call and ``calls`` calls inside the event
    window (so the host has queued the window's first call by the time the card reaches it); the
    time is the median window divided by ``calls``."""
    log, windows = [], iter([8.0, 4.0, 6.0])

    def fake_event_ms(work):
        log.append("start")
        work()
        log.append("stop")
        return next(windows)

    monkeypatch.setattr(benchmarks.kernels, "_event_ms", fake_event_ms)
    monkeypatch.setattr(benchmarks.kernels.torch.cuda, "synchronize", lambda: log.append("sync"))
    us = benchmarks.kernels.time_back_to_back(lambda: log.append("call"), calls=2, repeats=3)
    assert us == 3000.0  # median window 6 ms over 2 calls
    window = ["call", "start", "call", "call", "stop"]
    assert log == ["call", "sync"] + window * 3


def test_linear_rows_time_cublas_and_each_backend_in_turns(monkeypatch):
    """The forward / grad-x rows: cuBLAS and every backend whose check passes take turns for
    ``LINEAR_ROUNDS`` rounds; a row gets its median and a speedup paired by round; a backend whose
    check raises gets an error row and is never timed."""
    order = []
    times = {"cublas": iter([100.0, 130.0, 110.0, 90.0, 140.0]), "triton": iter([120.0, 130.0, 100.0, 95.0, 160.0])}

    def fake_timer(calls):
        order.append(calls[0]())
        return next(times[calls[0]()])

    def broken():
        raise RuntimeError("no kernel")

    monkeypatch.setattr(benchmarks.kernels, "launches_per_call", lambda call: None)  # fake calls: nothing to capture
    monkeypatch.setattr(benchmarks.kernels, "time_in_graph", fake_timer)
    monkeypatch.setattr(benchmarks.kernels, "LINEAR_ROUNDS", 5)
    results = benchmarks.kernels.Results()
    ours = {"triton": (lambda: {"rel_err_vs_naive": 0.0}, [lambda: "triton"]),
            "tilelang": (broken, [lambda: "tilelang"])}
    base = benchmarks.kernels.time_against_cublas(results, "forward", (8, 16, 2), [lambda: "cublas"], ours,
                                                  flops=512, packed_bytes=40)
    assert order == ["cublas", "triton"] * 5
    assert base == 110.0
    rows = {row["impl"]: row for row in results.rows}
    assert rows["bf16_cublas"]["us"] == 110.0 and rows["bf16_cublas"]["rounds_us"] == [100.0, 130.0, 110.0, 90.0, 140.0]
    assert rows["triton"]["us"] == 120.0 and rows["triton"]["rel_err_vs_naive"] == 0.0
    # rounds: 100/120, 130/130, 110/100, 90/95, 140/160 -> median 0.947 (the medians give 110/120 = 0.917)
    assert abs(rows["triton"]["speedup"] - 90 / 95) < 1e-12
    assert "no kernel" in rows["tilelang"]["error"] and "us" not in rows["tilelang"]


def test_linear_rows_record_each_calls_launches_and_the_table_shows_ours(monkeypatch):
    """Every row records what one of its calls puts in a CUDA graph (``launches``, counted before the turns
    from the row's first call); the table shows ours in angle brackets, not cuBLAS's, and nothing where the
    count is missing."""
    counted = []

    def fake_launches(call):
        counted.append(call())
        return {"cublas": 1, "triton": 3, "tilelang": None}[call()]

    monkeypatch.setattr(benchmarks.kernels, "launches_per_call", fake_launches)
    monkeypatch.setattr(benchmarks.kernels, "time_in_graph", lambda calls: {"cublas": 10.0, "triton": 20.0,
                                                                             "tilelang": 40.0}[calls[0]()])
    monkeypatch.setattr(benchmarks.kernels, "LINEAR_ROUNDS", 2)
    results = benchmarks.kernels.Results()
    ours = {name: (dict, [lambda name=name: name, lambda: "second call"]) for name in ("triton", "tilelang")}
    benchmarks.kernels.time_against_cublas(results, "forward", (8, 16, 2), [lambda: "cublas"], ours, 512, None)
    assert counted == ["cublas", "triton", "tilelang"]
    rows = {row["impl"]: row for row in results.rows}
    assert [rows[name]["launches"] for name in ("bf16_cublas", "triton", "tilelang")] == [1, 3, None]
    env = dict(device="fake GPU", torch="2", triton="3")
    table = benchmarks.kernels.format_table(dict(environment=env, rows=results.rows))
    assert "triton=20.0 (0.50x) <3 launches>" in table and "tilelang=40.0 (0.25x)\n" in table + "\n"
    assert table.count("launches>") == 1


def test_a_backend_whose_timing_fails_gets_an_error_row_and_the_others_their_rows(monkeypatch):
    """A backend that times once and then raises (a graph that cannot be captured, an out-of-memory)
    is left out of the later rounds and recorded as an error; cuBLAS and the other backends keep
    their medians and paired speedups."""
    calls = {"cublas": 0, "triton": 0, "tilelang": 0}

    def fake_timer(timed):
        name = timed[0]()
        calls[name] += 1
        if name == "tilelang" and calls[name] == 2:
            raise RuntimeError("capture failed")
        return {"cublas": 100.0, "triton": 125.0, "tilelang": 50.0}[name]

    monkeypatch.setattr(benchmarks.kernels, "launches_per_call", lambda call: None)  # fake calls: nothing to capture
    monkeypatch.setattr(benchmarks.kernels, "time_in_graph", fake_timer)
    monkeypatch.setattr(benchmarks.kernels, "LINEAR_ROUNDS", 3)
    results = benchmarks.kernels.Results()
    ours = {name: (dict, [lambda name=name: name]) for name in ("triton", "tilelang")}
    benchmarks.kernels.time_against_cublas(results, "grad_x", (8, 16, 2), [lambda: "cublas"], ours, 512, None)
    assert calls == {"cublas": 3, "triton": 3, "tilelang": 2}
    rows = {row["impl"]: row for row in results.rows}
    assert rows["triton"]["us"] == 125.0 and rows["triton"]["speedup"] == 0.8
    assert "capture failed" in rows["tilelang"]["error"] and "us" not in rows["tilelang"]
    assert rows["bf16_cublas"]["us"] == 100.0


def test_update_rows_pair_every_ratio_with_the_gemm_by_round_and_show_the_spread():
    """An update row's speedup and its time over the GEMM are medians of the rounds' own ratios, its
    range the lowest and highest round, and the table shows both; rows without a range (forward
    rows) print no brackets."""
    gemm = [100.0, 200.0, 150.0, 120.0]
    ours = [120.0, 250.0, 165.0, 150.0]  # ratios 1.2, 1.25, 1.1, 1.25
    fields = benchmarks.kernels._versus_gemm(ours, gemm)
    assert fields["vs_gemm"] == statistics.median([1.2, 1.25, 1.1, 1.25])
    assert fields["vs_gemm_range"] == [1.1, 1.25]
    assert fields["speedup"] == statistics.median([100 / 120, 200 / 250, 150 / 165, 120 / 150])
    assert fields["rounds_us"] == ours
    env = dict(device="fake GPU", torch="2", triton="3")
    rows = [dict(op="update", N=64, K=80, M=8, impl="bf16_wgrad_gemm", us=135.0),
            dict(op="update", N=64, K=80, M=8, impl="triton", us=157.5, **fields),
            dict(op="forward", N=64, K=80, M=8, impl="bf16_cublas", us=10.0),
            dict(op="forward", N=64, K=80, M=8, impl="triton", us=20.0, speedup=0.5)]
    table = benchmarks.kernels.format_table(dict(environment=env, rows=rows))
    assert f"triton=157.5 ({fields['speedup']:.2f}x) [1.10-1.25x the GEMM]" in table
    assert "triton=20.0 (0.50x)\n" in table + "\n" and table.count("the GEMM]") == 1


class _Done:
    def __init__(self, stdout: str, returncode: int = 0):
        self.stdout, self.returncode = stdout, returncode


def test_card_state_reads_clock_temperature_and_power_or_gives_none(monkeypatch):
    """``nvidia-smi``'s line becomes numbers; a missing tool, a failed call or an unreadable line give
    ``None``, never an exception (the benchmark goes on without them)."""
    class Properties:
        uuid = "1234"

    monkeypatch.setattr(benchmarks.kernels.torch.cuda, "get_device_properties", lambda device: Properties())
    device = benchmarks.kernels.torch.device("cuda", 0)
    asked = []

    def smi(args, **kwargs):
        asked.append(args)
        return _Done("1755, 48, 612.30\n")

    assert benchmarks.kernels.card_state(device, run=smi) == {"sm_clock_mhz": 1755.0, "temperature_c": 48.0,
                                                              "power_w": 612.3}
    assert "--id=GPU-1234" in asked[0]

    def missing(args, **kwargs):
        raise FileNotFoundError("nvidia-smi")

    assert benchmarks.kernels.card_state(device, run=missing) is None
    assert benchmarks.kernels.card_state(device, run=lambda args, **kw: _Done("", returncode=9)) is None
    assert benchmarks.kernels.card_state(device, run=lambda args, **kw: _Done("[N/A], 40, 80\n")) is None
    assert benchmarks.kernels.card_state(device, run=lambda args, **kw: _Done("1, 2, 3\n", returncode=6)) is None


def test_update_rows_show_the_card_state_around_their_rounds():
    """An update row with readings before and after its rounds shows temperature and clock in braces; a row
    whose readings are missing shows none."""
    env = dict(device="fake GPU", torch="2", triton="3")
    before = dict(sm_clock_mhz=1980.0, temperature_c=41.0, power_w=90.0)
    after = dict(sm_clock_mhz=1515.0, temperature_c=67.0, power_w=699.0)
    rows = [dict(op="update", N=64, K=80, M=8, impl="bf16_wgrad_gemm", us=100.0),
            dict(op="update", N=64, K=80, M=8, impl="triton", us=120.0, card_before=before, card_after=after),
            dict(op="update", N=64, K=80, M=16, impl="bf16_wgrad_gemm", us=100.0),
            dict(op="update", N=64, K=80, M=16, impl="triton", us=120.0, card_before=None, card_after=after)]
    table = benchmarks.kernels.format_table(dict(environment=env, rows=rows))
    assert "triton=120.0 (0.83x) {card 41->67 C, 1980->1515 MHz}" in table
    assert table.count("{card") == 1


def test_launches_are_none_without_a_card(monkeypatch):
    """Without CUDA the benchmark's launch count is missing (``None``), not an error, and the call is not made."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert benchmarks.graph_nodes.launches_per_call(lambda: pytest.fail("no call without a card")) is None


def test_graph_nodes_are_counted_by_kind_with_kernel_names_dropped():
    nodes = ["kernel:_decode_gemm_kernel", "kernel:?", "memset", "kernel:fill"]
    assert benchmarks.graph_nodes.node_kinds(nodes) == {"kernel": 3, "memset": 1}


def test_a_call_that_cannot_be_captured_has_no_launch_count_and_the_row_goes_on(monkeypatch, capsys):
    """A capture that fails (a call reading a value on the host, a torch without ``keep_graph``) gives ``None``
    with its traceback printed, not an error that would stop the benchmark."""
    def refuse(call, calls=1):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(benchmarks.graph_nodes, "_driver", lambda: None)
    monkeypatch.setattr(benchmarks.graph_nodes, "nodes_per_call", refuse)
    assert benchmarks.graph_nodes.launches_per_call(lambda: None) is None
    assert "not permitted when stream is capturing" in capsys.readouterr().err
