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
BENCH = [(4096, 4096), (4096, 14336), (14336, 4096)]
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


def check_correctness(gen: torch.Generator) -> list[dict]:
    from ternary.kernels.linear import tilelang as tl_backend

    rows = []
    for dtype in (torch.bfloat16, torch.float32, torch.float16):
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
    from ternary.model.config import preset
    from ternary.training.loop import TrainOptions, train_step
    from ternary.model.network import init_model
    from ternary.training.data import load_corpus, split_corpus

    os.environ["TERNARY_TILELANG_TRAINING"] = "1"
    results = {}
    for backend in ("tilelang", "triton"):
        config = preset("tiny")
        options = TrainOptions(config=config, steps=steps, device="cuda", backend=backend, dtype=dtype, batch=8)
        corpus = load_corpus(None, max_bytes=200_000)
        train_data, _ = split_corpus(corpus.data, options.context)
        state = init_model(config, seed=0, device="cuda")
        losses = []
        start = time.perf_counter()
        for step in range(steps):
            state, loss = train_step(state, options, train_data, step, torch.device("cuda"))
            losses.append(loss)
        torch.cuda.synchronize()
        results[backend] = dict(losses=losses, seconds=time.perf_counter() - start,
                                finite=all(math.isfinite(v) for v in losses))
    return results


def timed(fn, graph: bool) -> float:
    """Median microseconds of ``fn`` (inside a CUDA graph when possible)."""
    import triton.testing

    if graph:
        try:
            return 1e3 * triton.testing.do_bench_cudagraph(fn, rep=60)
        except Exception:  # noqa: BLE001 - a kernel that cannot be captured is timed with events
            pass
    return 1e3 * triton.testing.do_bench(fn, warmup=20, rep=80)


def benchmark(gen: torch.Generator) -> list[dict]:
    from ternary.kernels.linear import tilelang as tl_backend
    from ternary.kernels.linear import triton as tr_backend

    rows = []
    copies = 4
    for n, k in BENCH:
        layers = [layer_with_band(n, k, 40, (-8, 0), gen) for _ in range(copies)]
        dense = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
        for m in BENCH_M:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            dy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
            counter = [0]

            def rotate():
                counter[0] = (counter[0] + 1) % copies
                return counter[0]

            def run(fn):
                return lambda: fn(rotate())

            kw = dict(in_features=k, group_size=40)
            cases = {
                "cublas_fwd": lambda i: torch.nn.functional.linear(x, dense[i]),
                "tilelang_fwd": lambda i: tl_backend.forward(x, layers[i].T_packed, layers[i].E, None, bias_frac_bits=16, **kw),
                "triton_fwd": lambda i: tr_backend.forward(x, layers[i].T_packed, layers[i].E, None, bias_frac_bits=16, **kw),
                "cublas_gx": lambda i: dy @ dense[i],
                "tilelang_gx": lambda i: tl_backend.grad_x(dy, layers[i].T_packed, layers[i].E, **kw),
                "triton_gx": lambda i: tr_backend.grad_x(dy, layers[i].T_packed, layers[i].E, **kw),
            }
            row = dict(n=n, k=k, m=m)
            for name, fn in cases.items():
                try:
                    fn(0)
                    torch.cuda.synchronize()
                    row[name] = timed(run(fn), graph=m <= 128)
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
        "correctness": lambda: check_correctness(gen),
        "corrupt_byte_poisons": lambda: corrupt_byte_check(gen),
        "training": lambda: training_run(args.steps, "bfloat16"),
        "bench": lambda: benchmark(gen),
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
    (Path(args.out) / "tilelang_check.json").write_text(json.dumps(report, indent=1))
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
        names = ["cublas_fwd", "tilelang_fwd", "triton_fwd", "cublas_gx", "tilelang_gx", "triton_gx"]
        print(f"{'N x K':>13s} {'M':>5s} " + " ".join(f"{n:>12s}" for n in names) + "   (us, median)")
        for row in report["bench"]:
            cells = [f"{row[n]:12.1f}" if isinstance(row[n], float) else f"{'ERR':>12s}" for n in names]
            print(f"{row['n']:>6d}x{row['k']:<6d} {row['m']:>5d} " + " ".join(cells))


if __name__ == "__main__":
    main()
