"""Where the digit-plane two-step beats the column-order one, one card (bf16).

    python -m benchmarks.planes_threshold        # GPU only

``triton._plane_order`` decides (``triton.PLANES_ROWS_PER_OUTPUT``: planes while ``M * ratio < N``,
never where the run decode takes the layer). For each shape and M, the forward and grad-x with the
plane branch forced and with the column branch forced (CUDA-event medians), against bf16 cuBLAS;
every result checked against the other branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.kernels import GROUP_SIZE, relative_rms, time_with_events, with_constants
from ternary.state.packing import random_packed

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (16384, 16384))
ROWS = (512, 2048, 8192)


def _forced(kernels, planes: bool, call):
    return with_constants(kernels, call, _plane_order=lambda *_: planes)


def main() -> None:
    from ternary.kernels.linear import triton as kernels

    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}")
    gen = torch.Generator().manual_seed(0)
    for n, k in SHAPES:
        packed = random_packed(n, k, generator=gen).to(device)
        exponents = torch.randint(-4, 2, (n, -(-k // GROUP_SIZE)), generator=gen).to(torch.int8).to(device)
        dense = torch.randn(n, k, device=device, dtype=torch.bfloat16)
        for m in ROWS:
            x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            grad_y = torch.randn(m, n, device=device, dtype=torch.bfloat16)
            static = dict(in_features=k, group_size=GROUP_SIZE)
            ops = {
                "forward": (lambda: F.linear(x, dense),
                            lambda: kernels.forward_two_step(x, packed, exponents, None, bias_frac_bits=16, **static)),
                "grad_x": (lambda: grad_y @ dense, lambda: kernels.grad_x_two_step(grad_y, packed, exponents, **static)),
            }
            for op, (base_call, ours) in ops.items():
                base = time_with_events(base_call)
                planes = _forced(kernels, True, lambda: time_with_events(ours))
                columns = _forced(kernels, False, lambda: time_with_events(ours))
                agree = relative_rms(_forced(kernels, True, ours), _forced(kernels, False, ours))
                print(f"{n:>5}x{k:<5} M={m:<5} {op:>7} bf16 {base:8.1f} us  planes {planes:8.1f} ({base / planes:4.2f}x)"
                      f"  columns {columns:8.1f} ({base / columns:4.2f}x)  rel diff {agree:.1e}", flush=True)
        del packed, exponents, dense
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
