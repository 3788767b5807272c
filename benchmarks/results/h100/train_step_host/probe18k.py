"""Session 18: where a training step's time goes on the card (preset small, bf16, Triton backend): wall time per
step after warm-up, and a cProfile of five steps (host work)."""
import cProfile, io, pstats, time, torch
from ternary.model import preset, preset_rule, init_model
from ternary.training.loop import TrainOptions, train_step
from ternary.training.data import load_corpus, split_corpus

import os
DEVICE = os.environ.get("PROBE_DEVICE", "cuda")
for name in os.environ.get("PROBE_PRESETS", "small,base").split(","):
    options = TrainOptions(config=preset(name), device=DEVICE, backend=os.environ.get("PROBE_BACKEND", "triton"), dtype="bfloat16", steps=10,
                           rule=preset_rule(name), max_bytes=4_000_000, progress=False)
    device = torch.device(DEVICE)
    corpus = load_corpus(None, max_bytes=options.max_bytes)
    train_data, _ = split_corpus(corpus.data, options.context)
    torch.manual_seed(0)
    state = init_model(options.config, seed=0, device=device)
    for step in range(3):
        state, _ = train_step(state, options, train_data, step, device)
    torch.cuda.synchronize() if DEVICE == "cuda" else None
    start = time.perf_counter()
    for step in range(3, 8):
        state, _ = train_step(state, options, train_data, step, device)
    torch.cuda.synchronize() if DEVICE == "cuda" else None
    wall = (time.perf_counter() - start) / 5
    profile = cProfile.Profile()
    profile.enable()
    for step in range(8, 11):
        state, _ = train_step(state, options, train_data, step, device)
    torch.cuda.synchronize() if DEVICE == "cuda" else None
    profile.disable()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        state, _ = train_step(state, options, train_data, 11, device)
        torch.cuda.synchronize() if DEVICE == "cuda" else None if DEVICE == "cuda" else None
    gpu_us = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0) for e in prof.key_averages())
    print(f"==== preset {name}: {wall * 1e3:.1f} ms per step (batch {options.batch} x ctx {options.context}); "
          f"CUDA kernel time of one step {gpu_us / 1e3:.1f} ms", flush=True)
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()), flush=True)
