"""Tile sweep of the Triton direct update at training M, one card (bf16 hooks; ``--dtype float32``).

    python -m benchmarks.update_sweep "(128,64,32,8,4)" "(64,64,32,8,3)" ... [--group-n 4,16]
        [--rows 128,2048] [--dtype float32]   # GPU only

Each argument is ``(BLOCK_M, BLOCK_N, BLOCK_B, warps, stages)`` (the return value of
``ternary.kernels.update.triton._tiles``); ``--group-n`` lists program-order group sizes
(``triton.GROUP_N``; 0 means one group of all row tiles, the order before grouping). Every
combination is first checked bit for bit against the reference update on small-integer hooks
(exact sums), then timed with CUDA events against the bare weight-gradient GEMM (same dtype)
``grad_y.T @ x`` on 4096^2 and 16384^2 at the hook rows ``--rows`` (default 2048 and 8192).
Results: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import argparse
import ast

import torch

from benchmarks.kernels import GROUP_SIZE, ints, time_with_events, with_constants
from ternary.kernels.update import reference
from ternary.kernels.update import triton as triton_update
from ternary.state.packing import random_packed

RULE = dict(group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
FIELDS = ("T_packed", "E", "E_accum", "T_accum", "bias")


def _with_tiles(tiles, group_n, call):
    # 0: one group wider than any layer's row tiles (2^16; GROUP_N * byte blocks must fit int32)
    return with_constants(triton_update, call, _tiles=lambda m, g, fp32: tiles, GROUP_N=group_n or 2**16)


def _layer(n: int, k: int, gen: torch.Generator, device: torch.device):
    groups = -(-k // GROUP_SIZE)
    return (random_packed(n, k, generator=gen).to(device),
            torch.randint(-3, 3, (n, groups), generator=gen).to(torch.int8).to(device),
            torch.randint(-10, 10, (n, groups), generator=gen).to(torch.int8).to(device),
            torch.randint(-3, 4, (n, k), generator=gen).to(torch.int8).to(device),
            torch.randint(-100, 100, (n,), generator=gen).to(torch.int32).to(device))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tiles", nargs="+", type=lambda text: tuple(ast.literal_eval(text)))
    parser.add_argument("--group-n", type=ints, default=[triton_update.GROUP_N])
    parser.add_argument("--rows", type=ints, default=[2048, 8192])
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    runs = [(tile, group_n) for tile in args.tiles for group_n in args.group_n]
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}")
    gen = torch.Generator().manual_seed(0)
    n, k, m = 1024, 2000, 1000
    state = _layer(n, k, gen, device)
    x = torch.randint(-2, 3, (m, k), generator=gen).to(device, dtype)
    grad_y = torch.randint(-2, 3, (m, n), generator=gen).to(device, dtype)
    want = reference.update(*state, x, grad_y, in_features=k, **RULE)
    for tile, group_n in runs:
        try:
            got = _with_tiles(tile, group_n, lambda: triton_update.update(*state, x, grad_y, in_features=k, **RULE))
            exact = all(torch.equal(getattr(got, f), getattr(want, f)) for f in FIELDS)
        except Exception as error:  # a tile that does not fit must not hide the others
            exact = f"{type(error).__name__}: {str(error)[:80]}"
        print(f"exact {n}x{k} M={m} {tile} group_n={group_n}: {exact}", flush=True)
    for n, k in ((4096, 4096), (16384, 16384)):
        for m in args.rows:
            state = _layer(n, k, gen, device)
            x = torch.randn(m, k, device=device, dtype=dtype)
            grad_y = torch.randn(m, n, device=device, dtype=dtype)
            gemm = time_with_events(lambda: grad_y.T @ x)
            print(f"{n:>5}x{k:<5} M={m:<5} {args.dtype} wgrad GEMM {gemm:10.1f} us", flush=True)
            for tile, group_n in runs:
                label = f"{tile} g{group_n}"
                try:
                    us = _with_tiles(tile, group_n, lambda: time_with_events(
                        lambda: triton_update.update(*state, x, grad_y, in_features=k, **RULE)))
                    print(f"{n:>5}x{k:<5} M={m:<5} {label:>26} {us:10.1f} us {us / gemm:6.2f}x GEMM", flush=True)
                except Exception as error:  # noqa: BLE001
                    print(f"{n:>5}x{k:<5} M={m:<5} {label:>26} error {type(error).__name__}", flush=True)
            del state, x, grad_y
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
