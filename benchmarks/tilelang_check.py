"""GPU check of the TileLang linear backend, in one run (prints a short table last).

1. Correctness of ``forward`` and ``grad_x`` against a float64 truth (and the torch
   reference) over the whole int8 E range, in bands of 16 exponents (so E >= 15 and
   E <= -15, which broke the earlier fp16 path, are all covered), for bf16, fp16 and
   fp32 activations and odd shapes. Budget: relative RMS error per output row.
2. A short training run of the tiny model with TileLang allowed in training
   (``TERNARY_TILELANG_TRAINING=1``); every loss must be finite.
3. Speed against bf16 ``F.linear`` (cuBLAS) and the Triton backend on the bench shapes,
   with rotating weight buffers, CUDA-graph timing where the kernel allows it.

Compile time (cold vs cached) is measured by ``ternary prewarm``. Usage on the GPU
machine: ``python benchmarks/tilelang_check.py --out $OUT``.
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


def check_correctness(gen: torch.Generator, dtypes: tuple[torch.dtype, ...]) -> list[dict]:
    from ternary.kernels.linear import tilelang as tl_backend

    rows = []
    for dtype in dtypes:
        bands = FP16_BANDS if dtype == torch.float16 else WIDE_BANDS
        for band in bands:
            centre = (band[0] + band[1]) // 2
            shapes = SHAPES if band == bands[len(bands) // 2] else SHAPES[2:4]
            for m, n, k, g in shapes:
                try:
                    layer = layer_with_band(n, k, g, band, gen)
                    x = (torch.randn(m, k, generator=gen) * 2.0**-centre).to(dtype).cuda()
                    dy = (torch.randn(m, n, generator=gen) * 2.0**-centre).to(dtype).cuda()
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
                    ok = fwd_err <= BUDGET[dtype] and bwd_err <= BUDGET[dtype] and fwd_mask and bwd_mask
                    rows.append(dict(
                        dtype=str(dtype).removeprefix("torch."), band=list(band), shape=[m, n, k, g],
                        forward_err=fwd_err, reference_err=ref_err, grad_x_err=bwd_err,
                        finite_pattern_ok=fwd_mask and bwd_mask, ok=ok,
                    ))
                except Exception as error:  # noqa: BLE001 - record the failure and go on
                    rows.append(dict(dtype=str(dtype).removeprefix("torch."), band=list(band), shape=[m, n, k, g],
                                     forward_err=math.inf, reference_err=math.inf, grad_x_err=math.inf,
                                     finite_pattern_ok=False, ok=False, error=f"{type(error).__name__}: {error}"[:300]))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--parts", default="correct,train,bench")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--backends", default="cublas,tilelang", help="bench: cublas, tilelang, triton")
    parser.add_argument("--dtypes", default="bfloat16,float32,float16", help="correctness: activation dtypes")
    parser.add_argument("--tag", default="", help="suffix of the JSON file name")
    args = parser.parse_args()
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
    steps = {
        "correctness": lambda: check_correctness(gen, tuple(getattr(torch, d) for d in args.dtypes.split(","))),
        "corrupt_byte_poisons": lambda: corrupt_byte_check(gen),
        "training": lambda: training_run(args.steps, "bfloat16"),
        "bench": lambda: benchmark(gen, tuple(args.backends.split(","))),
    }
    wanted = {"correctness": "correct", "corrupt_byte_poisons": "correct", "training": "train", "bench": "bench"}
    for key, step in steps.items():
        if wanted[key] in parts:
            start = time.perf_counter()
            try:
                report[key] = step()
            except Exception as error:  # noqa: BLE001 - keep the other parts
                report[key + "_error"] = f"{type(error).__name__}: {error}"[:2000]
                print(key, "failed:", report[key + "_error"], flush=True)
            report[key + "_seconds"] = time.perf_counter() - start
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"tilelang_check{args.tag}.json").write_text(json.dumps(report, indent=1))
    print_summary(report)


def print_summary(report: dict) -> None:
    print(f"\n== {report['device']}  torch {report['torch']}  tilelang {report['tilelang']}")
    for key in [k for k in report if k.endswith("_error")]:
        print(f"{key}: {report[key][:300]}")
    if "correctness" in report:
        bad = [r for r in report["correctness"] if not r["ok"]]
        for dtype in ("bfloat16", "float32", "float16"):
            mine = [r for r in report["correctness"] if r["dtype"] == dtype]
            if mine:
                print(f"{dtype:9s} cases {len(mine):3d}  worst fwd {max(r['forward_err'] for r in mine):.2e}  "
                      f"(reference {max(r['reference_err'] for r in mine):.2e})  "
                      f"worst grad_x {max(r['grad_x_err'] for r in mine):.2e}  budget {BUDGET[getattr(torch, dtype)]:.0e}")
        print(f"correctness: {len(report['correctness']) - len(bad)} ok, {len(bad)} failing; "
              f"corrupt byte poisons: {report.get('corrupt_byte_poisons')}")
        for r in bad[:10]:
            print("  FAIL", r)
    if "training" in report:
        for backend, result in report["training"].items():
            losses = result["losses"]
            print(f"train {backend:8s} finite={result['finite']} loss {losses[0]:.3f} -> {losses[-1]:.3f} "
                  f"({result['seconds']:.1f}s for {len(losses)} steps)")
    if "bench" in report:
        for row in report["bench"]:
            cells = [f"{name}={value:.1f}" if isinstance(value, float) else f"{name}=ERR"
                     for name, value in row.items() if name not in ("n", "k", "m") and not name.endswith("_timing")]
            print(f"{row['n']}x{row['k']} M={row['m']}: " + " ".join(cells))


if __name__ == "__main__":
    main()
