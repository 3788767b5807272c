"""MoE dispatch benchmark: fused grouped launch vs per-expert calls vs dense dispatch, one card.

    python -m benchmarks.moe_dispatch                 # writes moe_dispatch.{json,csv} under $OUT
    python -m benchmarks.moe_dispatch --quick         # fewer token counts

Three ways to compute the same mixture-of-experts feed-forward (router + top-k + experts),
all on the Triton backend:

- ``fused``: the model's dispatch on Triton; each expert layer of the group is one
  launch (``ternary.functional.grouped``), weights decoded on chip;
- ``per-expert``: the same sorted rows, one ``linear`` call per expert and layer
  (what the model did before the fused path);
- ``dense``: every expert on every token, weighted by the routing (no gather).

Per (preset sizes, dtype, token count): median seconds of the forward alone (no
gradient, as in generation) and of forward + backward with hooks taken
(``value_and_hooks``, as in training). Outputs are checked against ``per-expert``
(relative error of the largest entry) in the same run.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import click

SIZES = {"tiny": (20, 40, 4, 2), "small": (512, 1024, 8, 2), "base": (1024, 2048, 16, 2)}
TOKENS = (512, 2048, 8192, 32768)
QUICK_TOKENS = (2048, 16384)
REPEATS = 7
WARMUP = 2


def _median_seconds(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    times = []
    for repeat in range(WARMUP + REPEATS):
        sync()
        began = time.perf_counter()
        fn()
        sync()
        if repeat >= WARMUP:
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def dispatch_rows(device_name: str = "cuda", tokens: tuple[int, ...] = TOKENS, sizes: tuple[str, ...] = ("small",),
                  dtypes: tuple[str, ...] = ("bfloat16", "float32")) -> list[dict]:
    """One row per (sizes, dtype, tokens, way) with forward and forward+backward medians."""
    import torch

    import ternary
    from ternary.model.mlp import mlp
    from ternary.model.moe import MoeState, dispatch, route

    device = torch.device(device_name)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    rows = []
    for size in sizes:
        dim, hidden, experts, top_k = SIZES[size]
        state = MoeState.random(dim, hidden, experts, group_size=40, generator=torch.Generator().manual_seed(0),
                                device=device)

        def dense(moe_state, x):
            routing = route(moe_state.router, x, top_k, backend="triton")
            weights = torch.zeros(x.shape[0], experts, device=device, dtype=x.dtype)
            weights = weights.scatter(1, routing.experts, routing.weights)
            return sum(weights[:, e : e + 1] * mlp(expert, x, backend="triton")
                       for e, expert in enumerate(moe_state.experts))

        def sparse(fused: bool):
            def run(moe_state, x):
                routing = route(moe_state.router, x, top_k, backend="triton")
                return dispatch(moe_state.experts, x, routing, backend="triton", fused=fused)[0]
            return run

        ways = {"fused": sparse(True), "per-expert": sparse(False), "dense": dense}
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            for count in tokens:
                x = torch.randn(count, dim, generator=torch.Generator().manual_seed(count)).to(device, dtype)
                with torch.no_grad():
                    want = ways["per-expert"](state, x).double()
                for name, way in ways.items():
                    row = {"sizes": size, "dim": dim, "hidden": hidden, "experts": experts, "top_k": top_k,
                           "dtype": dtype_name, "tokens": count, "dispatch": name}
                    try:
                        with torch.no_grad():
                            got = way(state, x).double()
                            row["rel_error"] = float((got - want).abs().max() / want.abs().max())
                            row["forward_s"] = _median_seconds(lambda: way(state, x), sync)
                        step = ternary.value_and_hooks(lambda s, inputs: way(s, inputs).float().pow(2).mean())
                        row["forward_backward_s"] = _median_seconds(lambda: step(state, x), sync)
                    except Exception as error:  # one failing way must not lose the others
                        row["error"] = f"{type(error).__name__}: {error}"
                    rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'sizes':6} {'dtype':9} {'tokens':>7} {'dispatch':11} {'fwd ms':>8} {'fwd+bwd ms':>11} {'rel err':>9}")
    for row in rows:
        if "error" in row:
            print(f"{row['sizes']:6} {row['dtype']:9} {row['tokens']:7} {row['dispatch']:11} error: {row['error']}")
            continue
        print(f"{row['sizes']:6} {row['dtype']:9} {row['tokens']:7} {row['dispatch']:11} "
              f"{row['forward_s'] * 1e3:8.2f} {row['forward_backward_s'] * 1e3:11.2f} {row['rel_error']:9.1e}")


@click.command()
@click.option("--quick", is_flag=True, help=f"token counts {QUICK_TOKENS} only")
@click.option("--sizes", default="small,base", show_default=True, help="expert sizes: small, base (comma list)")
@click.option("--device", "device_name", default="cuda", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=lambda: os.environ.get("OUT") or "benchmarks/out", help="output folder (default: $OUT)")
def main(quick: bool, sizes: str, device_name: str, out_dir: Path) -> None:
    """Time fused vs per-expert vs dense MoE dispatch; write JSON/CSV and print a table."""
    import torch

    chosen = tuple(s.strip() for s in sizes.split(",") if s.strip())
    unknown = set(chosen) - set(SIZES)
    if unknown:
        raise click.BadParameter(f"unknown sizes {sorted(unknown)}; choices: {', '.join(SIZES)}", param_hint="--sizes")
    rows = dispatch_rows(device_name, QUICK_TOKENS if quick else TOKENS, chosen)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "torch": torch.__version__}
    (out_dir / "moe_dispatch.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    with open(out_dir / "moe_dispatch.csv", "w", newline="") as handle:
        fields = ["sizes", "dim", "hidden", "experts", "top_k", "dtype", "tokens", "dispatch", "forward_s",
                  "forward_backward_s", "rel_error", "error"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"device: {info['device']}  torch {info['torch']}")
    print_table(rows)


if __name__ == "__main__":
    main()
