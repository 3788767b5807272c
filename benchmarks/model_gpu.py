"""GPU figures of the byte-level model, in one call on the GPU machine.

    python benchmarks/model_gpu.py            # writes under $OUT (or benchmarks/out)

1. ``ternary smoke --backward`` on the ``small`` preset, one fresh process per row
   (so "cold" really is the first call of a process): forward and backward+update,
   cold and cached, peak CUDA memory, audit. Rows: backend auto, triton and torch
   (the PyTorch reference on the same card is the baseline), float32 and bfloat16.
2. ``ternary train`` on the small preset with the default corpus: tokens/s over all
   steps and after the first step, for the same backends.
3. MoE dispatch micro-benchmark (``benchmarks/moe_dispatch.py``, quick token counts,
   small-preset expert sizes): fused grouped launch, per-expert calls and dense
   dispatch, forward and forward + backward medians.

Every row goes to ``results.json`` and ``results.csv``; a short table is printed last.
A row that fails keeps its error message instead of figures.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.moe_dispatch import QUICK_TOKENS, dispatch_rows
from benchmarks.moe_dispatch import print_table as print_dispatch_table

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("OUT") or ROOT / "benchmarks" / "out")
CLI = [sys.executable, "-m", "apps.cli"]
SMOKE = ["smoke", "--device", "cuda", "--preset", "small", "--ctx", "256", "--batch", "8", "--backward", "--json"]
TRAIN = ["train", "--device", "cuda", "--preset", "small", "--ctx", "256", "--batch", "8", "--steps", "12",
         "--eval-every", "100000", "--eval-batches", "1", "--no-progress", "--json"]
ROWS = [("auto", "float32"), ("triton", "float32"), ("torch", "float32"), ("auto", "bfloat16")]


def run_cli(name: str, args: list[str], timeout: int) -> dict:
    """Run one CLI command in a fresh process; its last stdout line is a JSON object."""
    began = time.perf_counter()
    try:
        done = subprocess.run(CLI + args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    (OUT / f"{name}.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {done.returncode}: {tail}"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - began
    return result


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    import torch

    if not torch.cuda.is_available():
        sys.exit("model_gpu.py: no CUDA device")
    info = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    results = {"info": info, "smoke": [], "train": [], "dispatch": []}
    for backend, dtype in ROWS:
        flags = ["--backend", backend, "--dtype", dtype]
        smoke = run_cli(f"smoke_{backend}_{dtype}", SMOKE + flags, timeout=300)
        results["smoke"].append({"backend": backend, "dtype": dtype, **smoke})
        train = run_cli(f"train_{backend}_{dtype}", TRAIN + flags, timeout=300)
        results["train"].append({"backend": backend, "dtype": dtype, **train})
        (OUT / "results.json").write_text(json.dumps(results, indent=1))
    try:
        results["dispatch"] = dispatch_rows(tokens=QUICK_TOKENS, sizes=("small",), dtypes=("float32",))
    except Exception as error:  # a failing micro-benchmark must not lose the rows above
        results["dispatch"] = [{"error": f"{type(error).__name__}: {error}"}]
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    write_csv(results)
    print_table(results)


def write_csv(results: dict) -> None:
    with open(OUT / "results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "backend", "dtype", "fwd_cold_s", "fwd_cached_s", "bwd_upd_cold_s",
                         "bwd_upd_cached_s", "peak_mib", "tokens_per_s", "steady_tokens_per_s", "error"])
        for smoke, train in zip(results["smoke"], results["train"]):
            fwd, bwd = smoke.get("forward_s") or {}, smoke.get("backward_update_s") or {}
            writer.writerow(["smoke+train", smoke["backend"], smoke["dtype"], fwd.get("cold"), fwd.get("cached"),
                             bwd.get("cold"), bwd.get("cached"),
                             (smoke.get("peak_memory_bytes") or 0) / 2**20 or None,
                             train.get("tokens_per_second"), train.get("steady_tokens_per_second"),
                             smoke.get("error") or train.get("error")])
        for row in results["dispatch"]:
            writer.writerow(["dispatch", row.get("dispatch"), row.get("tokens"), row.get("forward_s"), "",
                             row.get("forward_backward_s"), "", "", "", "", row.get("error")])


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def print_table(results: dict) -> None:
    info = results["info"]
    print(f"\ndevice: {info['device']}  torch {info['torch']}  cuda {info['cuda']}  triton {info['triton']}")
    print("small preset, ctx 256, batch 8 (2048 tokens/step)")
    print(f"{'backend':8} {'dtype':9} {'fwd cold':>9} {'fwd hot':>8} {'b+u cold':>9} {'b+u hot':>8} "
          f"{'peak MiB':>9} {'tok/s':>8} {'tok/s*':>8}  audit")
    for smoke, train in zip(results["smoke"], results["train"]):
        fwd, bwd = smoke.get("forward_s") or {}, smoke.get("backward_update_s") or {}
        peak = smoke.get("peak_memory_bytes")
        audit = smoke.get("audit", {}).get("ok")
        print(f"{smoke['backend']:8} {smoke['dtype']:9} {_fmt(fwd.get('cold'), '9.3f')} {_fmt(fwd.get('cached'), '8.3f')} "
              f"{_fmt(bwd.get('cold'), '9.3f')} {_fmt(bwd.get('cached'), '8.3f')} "
              f"{_fmt(peak / 2**20 if peak else None, '9.1f')} {_fmt(train.get('tokens_per_second'), '8.0f')} "
              f"{_fmt(train.get('steady_tokens_per_second'), '8.0f')}  {audit}")
        for error in {smoke.get("error"), train.get("error")} - {None}:
            print(f"    error: {error}")
    print("(times in s; tok/s* leaves out the first training step; b+u = backward + update)")
    print("\nMoE dispatch (8 experts 512->1024->512, top-2, fp32):")
    print_dispatch_table(results["dispatch"])


if __name__ == "__main__":
    main()
