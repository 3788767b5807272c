"""Where one training step's time goes: steady ms per step, then torch.profiler tables of the
GPU kernels and of the host-side calls over two more steps.

    python -m benchmarks.train_step_profile [--preset small] [--ctx 256] [--batch 8]
        [--dtype float32|bfloat16] [--backend triton]     # GPU only; prints the tables

Random bytes stand in for text (the cost of a step does not depend on them). The first
``--warmup`` steps pay the kernels' compiles and are left out.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from ternary.model.config import preset, preset_rule
from ternary.model.network import init_model
from ternary.training.loop import TrainOptions, train_step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--ctx", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--backend", default="triton")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timed", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device("cuda")
    config = preset(args.preset)
    options = TrainOptions(config=config, ctx=args.ctx, batch=args.batch, device="cuda", backend=args.backend,
                           rule=preset_rule(args.preset), dtype=args.dtype)
    state = init_model(config, seed=0, device=device)
    data = torch.randint(0, 256, (1 << 20,), dtype=torch.uint8)
    step = 0
    for step in range(args.warmup):
        state, _ = train_step(state, options, data, step, device)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(args.warmup, args.warmup + args.timed):
        state, _ = train_step(state, options, data, step, device)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.timed
    print(f"{torch.cuda.get_device_name(0)} | {args.preset} ctx {args.ctx} batch {args.batch} {args.dtype} "
          f"{args.backend}: {seconds * 1000:.1f} ms/step, {args.batch * args.ctx / seconds:.0f} tokens/s")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for step in range(step + 1, step + 3):
            state, _ = train_step(state, options, data, step, device)
        torch.cuda.synchronize()
    for key in ("cuda_time_total", "cpu_time_total"):
        print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))


if __name__ == "__main__":
    main()
