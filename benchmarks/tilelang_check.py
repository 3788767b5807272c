"""GPU check of the TileLang linear backend, in one run (prints a short table last).

1. Correctness of ``forward`` and ``grad_x`` against a float64 truth (and the torch
   reference) over the whole int8 E range, in bands of 16 exponents (so E >= 15 and
   E <= -15, which broke the earlier fp16 path, are all covered), for bf16, fp16 and
   fp32 activations and odd shapes. Budget: relative RMS error per output row.
   Activations are scaled by 2^-centre of the band so outputs stay near 1: in the band
   112..127 the fp32 inputs are near 2^-120, where the three-piece bf16 split needs the
   kernel's row shift (``tilelang_programs``) to stay exact.
1b. fp32 domain (``fp32_domain``): rows of one batch at every fp32 magnitude from 2^-149
   (subnormal inputs) to fp32's maximum, against weights that keep the outputs normal;
   budget as above. One more case, outside the stated domain and not budgeted, records
   the error when a row mixes elements more than 2^70 apart (only there can the split
   still lose bits).
2. A short training run of the tiny model with TileLang allowed in training
   (``TERNARY_TILELANG_TRAINING=1``); every loss must be finite.
3. Speed against bf16 ``F.linear`` (cuBLAS) and the Triton backend on the bench shapes,
   with rotating weight buffers, CUDA-graph timing where the kernel allows it.

The kernels the correctness part needs are compiled up front, in parallel. Compile time
(cold vs cached) is measured by ``ternary prewarm`` (``ternary bench kernels`` reports it).
Usage on the GPU machine: ``python benchmarks/tilelang_check.py --out $OUT`` (or
``benchmarks/tilelang_gpu.sh``, which runs the correctness part and the kernel benchmark);
``--summarize DIR`` prints the short table of a finished run from its JSON files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import attrs
import torch

from ternary.kernels.linear import reference
from ternary.state.linear_state import LinearState

BUDGET = {torch.bfloat16: 8e-3, torch.float16: 2e-3, torch.float32: 2e-5}
# E bands and the activation scale 2^-centre that keeps outputs near 1 (fp16 can only scale by 2^+-14).
WIDE_BANDS = [(lo, lo + 15) for lo in range(-128, 128, 16)]
FP16_BANDS = [(-20, -5), (-5, 5), (5, 20)]
SHAPES = [(1, 1, 7, 5), (3, 19, 37, 40), (65, 130, 333, 40), (128, 256, 512, 40), (200, 96, 1000, 80)]
BENCH = [(4096, 4096), (4096, 14336)]
BENCH_M = [1, 16, 128, 2048, 8192]


def layer_with_band(n: int, k: int, g: int, band: tuple[int, int], gen: torch.Generator) -> LinearState:
    layer = LinearState.random(k, n, bias=True, group_size=g, generator=gen, device="cuda")
    exponents = torch.randint(band[0], band[1] + 1, tuple(layer.E.shape), generator=gen, dtype=torch.int8)
    return attrs.evolve(layer, E=exponents.cuda())


def row_errors(got: torch.Tensor, truth: torch.Tensor) -> tuple[float, bool]:
    """Worst per-row relative RMS error over rows, and whether the NaN/Inf positions agree."""
    finite = torch.isfinite(truth)
    same_mask = bool(torch.equal(finite, torch.isfinite(got)))
    diff = torch.where(finite, got.double() - truth, torch.zeros_like(truth))
    scale = torch.where(finite, truth, torch.zeros_like(truth)).norm(dim=1).clamp_min(1e-300)
    return float((diff.norm(dim=1) / scale).max()), same_mask


def correctness_cases(dtypes: tuple[torch.dtype, ...]) -> list[tuple[torch.dtype, tuple[int, int], tuple]]:
    """``(dtype, E band, (M, N, K, G))`` of every correctness case: all shapes in the middle band,
    two shapes in every other band."""
    cases = []
    for dtype in dtypes:
        bands = FP16_BANDS if dtype == torch.float16 else WIDE_BANDS
        for band in bands:
            shapes = SHAPES if band == bands[len(bands) // 2] else SHAPES[2:4]
            cases += [(dtype, band, shape) for shape in shapes]
    return cases


def precompile(cases, arch: str | None = None) -> float:
    """Compile the forward (+bias) and grad_x programs of ``cases`` in parallel; seconds of wall time."""
    from ternary.kernels.linear import tilelang as tl_backend
    from ternary.state.linear_state import DEFAULT_BIAS_FRAC_BITS

    arch = arch or tl_backend.device_arch(torch.cuda.current_device())
    specs = []
    for dtype, _, (m, n, k, g) in cases:
        name, bucket = tl_backend.DTYPE_NAMES[dtype], tl_backend.m_bucket(m)
        specs += [tl_backend.KernelSpec("forward", n, k, g, name, True, DEFAULT_BIAS_FRAC_BITS, bucket, arch),
                  tl_backend.KernelSpec("grad_x", n, k, g, name, False, 0, bucket, arch)]
    specs.append(tl_backend.KernelSpec("forward", 8, 50, 40, "bfloat16", False, 0, "small", arch))  # corrupt byte
    start = time.perf_counter()
    tl_backend.compile_specs(list(dict.fromkeys(specs)), workers=os.cpu_count())
    return time.perf_counter() - start


def check_case(dtype: torch.dtype, band: tuple[int, int], shape: tuple, x: torch.Tensor, dy: torch.Tensor,
               layer: LinearState, budget: float | None) -> dict:
    """Forward and grad_x of ``layer`` on ``x`` / ``dy`` against the float64 truth (rounded to ``dtype``)."""
    from ternary.kernels.linear import tilelang as tl_backend

    m, n, k, g = shape
    w = reference.dequantize(layer.T_packed, layer.E, in_features=k, group_size=g).double()
    bias = layer.bias.double() * 2.0**-layer.bias_frac_bits
    kw = dict(in_features=k, group_size=g)
    y = tl_backend.forward(x, layer.T_packed, layer.E, layer.bias, bias_frac_bits=layer.bias_frac_bits, **kw)
    y_ref = reference.forward(x, layer.T_packed, layer.E, layer.bias, bias_frac_bits=layer.bias_frac_bits, **kw)
    dx = tl_backend.grad_x(dy, layer.T_packed, layer.E, **kw)
    # rounding the float64 truth to the output dtype is part of the contract
    y_true = (x.double() @ w.T + bias).to(dtype).double()
    dx_true = (dy.double() @ w).to(dtype).double()
    fwd_err, fwd_mask = row_errors(y, y_true)
    ref_err, _ = row_errors(y_ref, y_true)
    bwd_err, bwd_mask = row_errors(dx, dx_true)
    ok = fwd_mask and bwd_mask and (budget is None or (fwd_err <= budget and bwd_err <= budget))
    return dict(
        dtype=str(dtype).removeprefix("torch."), band=list(band), shape=list(shape),
        forward_err=fwd_err, reference_err=ref_err, grad_x_err=bwd_err,
        finite_pattern_ok=fwd_mask and bwd_mask, ok=ok,
    )


def failed_case(dtype: torch.dtype, band, shape, error: Exception) -> dict:
    return dict(dtype=str(dtype).removeprefix("torch."), band=list(band), shape=list(shape),
                forward_err=math.inf, reference_err=math.inf, grad_x_err=math.inf,
                finite_pattern_ok=False, ok=False, error=f"{type(error).__name__}: {error}"[:300])


def check_correctness(gen: torch.Generator, dtypes: tuple[torch.dtype, ...]) -> list[dict]:
    rows = []
    for dtype, band, (m, n, k, g) in correctness_cases(dtypes):
        centre = (band[0] + band[1]) // 2
        try:
            layer = layer_with_band(n, k, g, band, gen)
            x = (torch.randn(m, k, generator=gen) * 2.0**-centre).to(dtype).cuda()
            dy = (torch.randn(m, n, generator=gen) * 2.0**-centre).to(dtype).cuda()
            rows.append(check_case(dtype, band, (m, n, k, g), x, dy, layer, BUDGET[dtype]))
        except Exception as error:  # noqa: BLE001 - record the failure and go on
            rows.append(failed_case(dtype, band, (m, n, k, g), error))
    return rows


# fp32 rows at these magnitudes 2^a go into one batch (so rows of one tile get different shifts).
SMALL_ROW_EXPONENTS = list(range(-149, -19, 8))  # with E in 100..127: outputs 2^-49 .. 2^107
LARGE_ROW_EXPONENTS = list(range(40, 127, 6))  # with E in -128..-100: outputs 2^-88 .. 2^12
DOMAIN_SHAPE = (65, 130, 333, 40)  # a shape the middle band compiles already (fp32, large bucket)


def fp32_domain_check(gen: torch.Generator) -> list[dict]:
    """fp32 rows of mixed magnitudes in one batch (subnormal inputs to fp32's maximum) against the
    budget, plus one row mixing elements 2^120 apart (outside the stated domain; error recorded)."""
    m, n, k, g = DOMAIN_SHAPE
    rows = []
    for name, exponents, band in (("small rows", SMALL_ROW_EXPONENTS, (100, 127)),
                                  ("large rows", LARGE_ROW_EXPONENTS, (-128, -100))):
        try:
            layer = layer_with_band(n, k, g, band, gen)
            layer = attrs.evolve(layer, bias=torch.zeros_like(layer.bias))  # a bias would swamp the tiny rows
            scale = torch.tensor([2.0 ** exponents[i % len(exponents)] for i in range(m)], dtype=torch.float64)
            x = (torch.randn(m, k, generator=gen, dtype=torch.float64) * scale[:, None]).float()
            dy = (torch.randn(m, n, generator=gen, dtype=torch.float64) * scale[:, None]).float()
            if name == "large rows":
                x[-1, :4] = dy[-1, :4] = torch.finfo(torch.float32).max  # bf16 rounding alone would give Inf
            rows.append(dict(case=name, **check_case(torch.float32, band, (m, n, k, g), x.cuda(), dy.cuda(), layer,
                                                     BUDGET[torch.float32])))
        except Exception as error:  # noqa: BLE001
            rows.append(dict(case=name, **failed_case(torch.float32, band, (m, n, k, g), error)))
    # Outside the domain: the first group of each row is ~1 against weights 2^-128, the rest ~2^-120
    # against weights 2^120, so the output comes from elements 2^120 below the row's peak.
    try:
        layer = layer_with_band(n, k, g, (120, 120), gen)
        E = layer.E.clone()
        E[:, 0] = -128
        layer = attrs.evolve(layer, E=E, bias=torch.zeros_like(layer.bias))
        x = torch.randn(m, k, generator=gen) * 2.0**-120
        x[:, :g] = torch.randn(m, g, generator=gen)
        row = check_case(torch.float32, (-128, 120), (m, n, k, g), x.cuda(), torch.randn(m, n).cuda(), layer, None)
        rows.append(dict(case="mixed row, outside the domain (not budgeted)", **row))
    except Exception as error:  # noqa: BLE001
        rows.append(dict(case="mixed row, outside the domain (not budgeted)",
                         **failed_case(torch.float32, (-128, 120), (m, n, k, g), error)))
    return rows


def corrupt_byte_check(gen: torch.Generator) -> bool:
    """A byte > 242 must poison the outputs it feeds (NaN), never decode silently."""
    from ternary.kernels.linear import tilelang as tl_backend

    layer = layer_with_band(8, 50, 40, (-2, 2), gen)
    packed = layer.T_packed.clone()
    packed[3, 4] = 250
    y = tl_backend.forward(torch.zeros(4, 50, device="cuda", dtype=torch.bfloat16), packed, layer.E, None,
                           in_features=50, group_size=40, bias_frac_bits=16)
    return bool(torch.isnan(y[:, 3]).all()) and bool(torch.isfinite(y[:, [0, 1, 2, 4, 5, 6, 7]]).all())


def training_run(steps: int, dtype: str) -> dict:
    """Tiny model, ``steps`` updates with the linear layers on ``tilelang`` (forward and grad_x,
    ``TERNARY_TILELANG_TRAINING=1``) vs ``torch``; the vote update itself runs on the torch
    reference in both runs, so only the linear backend differs."""
    from ternary.functional import UpdateRule, update, value_and_hooks
    from ternary.model import init_model, loss, observe
    from ternary.model.config import preset
    from ternary.training.data import load_corpus, split_corpus, training_windows

    os.environ["TERNARY_TILELANG_TRAINING"] = "1"
    config = preset("tiny")
    corpus = load_corpus(None, max_bytes=200_000)
    train_data, _ = split_corpus(corpus.data, config.context)
    step_fn = value_and_hooks(loss, has_aux=True)
    results = {}
    for backend in ("tilelang", "torch"):
        state = init_model(config, seed=0, device="cuda")
        losses = []
        start = time.perf_counter()
        for step in range(steps):
            window = training_windows(train_data, 8, config.context, seed=0, step=step).cuda()
            (_, aux), hooks = step_fn(state, window, config, backend=backend, dtype=getattr(torch, dtype))
            state = observe(update(state, hooks, UpdateRule(), backend="torch"), aux.model, config)
            losses.append(float(aux.cross_entropy))
        torch.cuda.synchronize()
        results[backend] = dict(losses=losses, seconds=time.perf_counter() - start,
                                finite=all(math.isfinite(v) for v in losses))
    return results


def timed(fn, graph: bool) -> tuple[float, str]:
    """Median microseconds of ``fn`` and how it was timed (CUDA graph when possible, else events)."""
    import triton.testing

    if graph:
        try:
            return 1e3 * triton.testing.do_bench_cudagraph(fn, rep=60), "graph"
        except Exception:  # noqa: BLE001 - a kernel that cannot be captured is timed with events
            torch.cuda.synchronize()
    return 1e3 * triton.testing.do_bench(fn, warmup=20, rep=80), "events"


SMALL_TILES = {"n16": (64, 16, 80, 3, 128), "n32": (64, 32, 80, 4, 128), "n64k160": (64, 64, 160, 3, 128)}
LARGE_TILES = {"n256": (128, 256, 80, 3, 256), "k160": (128, 128, 160, 3, 256)}


def tile_variants(n: int, k: int) -> dict:
    """Compiled bf16 forward programs with other tiles (no bias), keyed by (bucket, name)."""
    from concurrent.futures import ThreadPoolExecutor

    from ternary.kernels.linear import tilelang_programs as programs

    wanted = [("small", name, t) for name, t in SMALL_TILES.items()] + [("large", name, t) for name, t in LARGE_TILES.items()]
    traced = [(b, name, programs.forward_program(n, k, 40, "bfloat16", False, 0, programs.Tile(*t))) for b, name, t in wanted]
    with ThreadPoolExecutor(len(traced)) as pool:
        kernels = list(pool.map(lambda item: programs.compile_program(item[2], "sm_90a"), traced))
    return {(b, name): kernel for (b, name, _), kernel in zip(traced, kernels)}


def benchmark(gen: torch.Generator, backends: tuple[str, ...]) -> list[dict]:
    from ternary.kernels.linear import tilelang as tl_backend
    from ternary.kernels.registry import implementation

    rows = []
    copies = 4
    for n, k in BENCH:
        layers = [layer_with_band(n, k, 40, (-8, 0), gen) for _ in range(copies)]
        dense = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
        variants = tile_variants(n, k) if "tilelang" in backends else {}
        no_bias = torch.zeros(1, dtype=torch.int32, device="cuda")
        for m in BENCH_M:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            dy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
            y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            counter = [0]

            def rotate():
                counter[0] = (counter[0] + 1) % copies
                return counter[0]

            kw = dict(in_features=k, group_size=40)
            cases = {}
            if "cublas" in backends:
                cases["cublas_fwd"] = lambda i: torch.nn.functional.linear(x, dense[i])
                cases["cublas_gx"] = lambda i: dy @ dense[i]
            for name in ("tilelang", "triton"):
                if name in backends:
                    impl = tl_backend if name == "tilelang" else implementation("linear", "triton")
                    cases[f"{name}_fwd"] = lambda i, impl=impl: impl.forward(
                        x, layers[i].T_packed, layers[i].E, None, bias_frac_bits=16, **kw)
                    cases[f"{name}_gx"] = lambda i, impl=impl: impl.grad_x(dy, layers[i].T_packed, layers[i].E, **kw)
            for (bucket, tile), kernel in variants.items():
                if bucket == tl_backend.m_bucket(m):
                    cases[f"tl_{tile}_fwd"] = lambda i, kernel=kernel: kernel(
                        x, layers[i].T_packed, layers[i].E, no_bias, y)
            row = dict(n=n, k=k, m=m)
            for name, fn in cases.items():
                try:
                    fn(0)
                    torch.cuda.synchronize()
                    row[name], row[name + "_timing"] = timed(lambda fn=fn: fn(rotate()), graph=m <= 128)
                except Exception as error:  # noqa: BLE001 - report and go on
                    row[name] = f"error: {type(error).__name__}: {str(error)[:200]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--parts", default="correct,train,bench")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--backends", default="cublas,tilelang", help="bench: cublas, tilelang, triton")
    parser.add_argument("--dtypes", default="bfloat16,float32,float16", help="correctness: activation dtypes")
    parser.add_argument("--tag", default="", help="suffix of the JSON file name")
    parser.add_argument("--summarize", metavar="DIR", default=None,
                        help="only print the short table of the tilelang_check*.json and kernels.json in DIR")
    args = parser.parse_args(argv)
    if args.summarize is not None:
        print(summarize(Path(args.summarize)))
        return
    parts = set(args.parts.split(","))
    gen = torch.Generator().manual_seed(0)
    report: dict = dict(
        device=torch.cuda.get_device_name(), torch=torch.__version__, python=platform.python_version(),
    )
    try:
        import tilelang

        report["tilelang"] = tilelang.__version__
    except ImportError:
        report["tilelang"] = None
    dtypes = tuple(getattr(torch, d) for d in args.dtypes.split(","))
    steps = {
        "precompile": lambda: precompile(correctness_cases(dtypes)),
        "correctness": lambda: check_correctness(gen, dtypes),
        "fp32_domain": lambda: fp32_domain_check(gen),
        "corrupt_byte_poisons": lambda: corrupt_byte_check(gen),
        "training": lambda: training_run(args.steps, "bfloat16"),
        "bench": lambda: benchmark(gen, tuple(args.backends.split(","))),
    }
    wanted = {"precompile": "correct", "correctness": "correct", "fp32_domain": "correct",
              "corrupt_byte_poisons": "correct", "training": "train", "bench": "bench"}
    path = Path(args.out) / f"tilelang_check{args.tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    for key, step in steps.items():
        if wanted[key] in parts:
            start = time.perf_counter()
            try:
                report[key] = step()
            except Exception as error:  # noqa: BLE001 - keep the other parts
                report[key + "_error"] = f"{type(error).__name__}: {error}"[:2000]
                print(key, "failed:", report[key + "_error"], flush=True)
            report[key + "_seconds"] = time.perf_counter() - start
            print(f"{key}: {report[key + '_seconds']:.1f} s", flush=True)
            path.write_text(json.dumps(report, indent=1))  # after every part: a cut-short run keeps its results
    print("\n".join(check_summary(report)))


def print_summary(report: dict) -> None:
    print("\n".join(check_summary(report)))


def check_summary(report: dict) -> list[str]:
    """Short text summary of a ``tilelang_check`` report."""
    lines = [f"== {report['device']}  torch {report['torch']}  tilelang {report['tilelang']}"]
    for key in [k for k in report if k.endswith("_error")]:
        lines.append(f"{key}: {report[key][:300]}")
    if "precompile" in report:
        lines.append(f"precompiled the correctness kernels in {report['precompile']:.1f} s (parallel)")
    if "correctness" in report:
        bad = [r for r in report["correctness"] if not r["ok"]]
        for dtype in ("bfloat16", "float32", "float16"):
            mine = [r for r in report["correctness"] if r["dtype"] == dtype]
            if mine:
                lines.append(
                    f"{dtype:9s} cases {len(mine):3d}  worst fwd {max(r['forward_err'] for r in mine):.2e}  "
                    f"(reference {max(r['reference_err'] for r in mine):.2e})  "
                    f"worst grad_x {max(r['grad_x_err'] for r in mine):.2e}  "
                    f"budget {BUDGET[getattr(torch, dtype)]:.0e}")
        lines.append(f"correctness: {len(report['correctness']) - len(bad)} ok, {len(bad)} failing; "
                     f"corrupt byte poisons: {report.get('corrupt_byte_poisons')}")
        lines += [f"  FAIL {r}" for r in bad[:10]]
    for r in report.get("fp32_domain", []):
        verdict = "ok" if r["ok"] else "FAIL"
        if "not budgeted" in r["case"]:
            verdict = "recorded" if r["finite_pattern_ok"] else "FAIL (non-finite)"
        lines.append(f"fp32 domain, {r['case']}: fwd {r['forward_err']:.2e} grad_x {r['grad_x_err']:.2e} "
                     f"(reference {r['reference_err']:.2e}) {verdict}" + (f" {r['error']}" if "error" in r else ""))
    if "training" in report:
        for backend, result in report["training"].items():
            losses = result["losses"]
            lines.append(f"train {backend:8s} finite={result['finite']} loss {losses[0]:.3f} -> {losses[-1]:.3f} "
                         f"({result['seconds']:.1f}s for {len(losses)} steps)")
    if "bench" in report:
        for row in report["bench"]:
            cells = [f"{name}={value:.1f}" if isinstance(value, float) else f"{name}=ERR"
                     for name, value in row.items() if name not in ("n", "k", "m") and not name.endswith("_timing")]
            lines.append(f"{row['n']}x{row['k']} M={row['m']}: " + " ".join(cells))
    return lines


BENCH_COLUMNS = ("bf16_cublas", "auto", "triton", "tilelang")


def bench_summary(report: dict) -> list[str]:
    """Forward and grad-x of a ``kernels.json``: microseconds and x (= cuBLAS time / ours) for
    cuBLAS, auto (with the backend it picked), Triton and TileLang; then the compile times."""
    from benchmarks.kernels import format_compile_times, suspicious

    env = report["environment"]
    lines = [f"== kernels on {env['device']} (torch {env['torch']}, triton {env['triton']}): us (x vs bf16 cuBLAS)",
             f"{'op':8s} {'N x K':>11s} {'M':>5s} " + " ".join(f"{c:>20s}" for c in BENCH_COLUMNS)]
    groups: dict[tuple, dict[str, dict]] = {}
    for row in report["rows"]:
        if row["op"] in ("forward", "grad_x"):
            groups.setdefault((row["op"], row["N"], row["K"], row["M"]), {})[row["impl"]] = row
    for (op, n, k, m), impls in groups.items():
        base = impls.get("bf16_cublas", {}).get("us")
        cells = []
        for column in BENCH_COLUMNS:
            row = impls.get(column)
            if row is None:
                cells.append(f"{'-':>20s}")
                continue
            if "us" not in row:
                cells.append(f"{'ERROR':>20s}")
                continue
            text = f"{row['us']:.1f}"
            if base and column != "bf16_cublas":
                text += f" ({base / row['us']:.2f}x)"
            if "picks" in row:
                text = f"[{row['picks']}] " + text
            if suspicious(row):
                text += "!"
            cells.append(f"{text:>20s}")
        lines.append(f"{op:8s} {f'{n}x{k}':>11s} {m:5d} " + " ".join(cells))
    errors = [r for r in report["rows"] if "error" in r]
    lines += [f"  error: {r['op']} {r['N']}x{r['K']} M={r['M']} {r['impl']}: {r['error'][:200]}" for r in errors[:5]]
    lines += format_compile_times(report)
    return lines


def summarize(folder: Path) -> str:
    """The short table of a finished GPU run: check summary, kernel table, compile times."""
    lines = []
    for path in sorted(folder.glob("tilelang_check*.json")):
        lines += check_summary(json.loads(path.read_text()))
    kernels = folder / "kernels.json"
    if kernels.exists():
        lines += bench_summary(json.loads(kernels.read_text()))
    return "\n".join(lines) if lines else f"nothing to summarize in {folder}"


if __name__ == "__main__":
    main()
