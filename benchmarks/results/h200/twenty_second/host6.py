"""Host probe 6: where the host time of the two-step forward (4096^2, M = 2048) goes, per call."""
import cProfile, pstats, time
import torch, torch.nn.functional as F
from ternary.kernels.linear import triton as tl_lin
from ternary.kernels.linear import triton_run_decode as rd
from ternary.state.packing import random_packed

dev = torch.device("cuda")
G, n, k, m = 40, 4096, 4096, 2048
p = random_packed(n, k).to(dev)
e = torch.randint(-4, 2, (n, -(-k // G))).to(torch.int8).to(dev)
x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
w = tl_lin.dequantize(p, e, in_features=k, group_size=G, dtype=torch.bfloat16)
words = torch.empty((n, w.stride(0)), dtype=torch.bfloat16, device=dev).view(torch.int32)
pieces = {
    "forward (two-step)": lambda: tl_lin.forward(x, p, e, None, in_features=k, group_size=G, bias_frac_bits=16),
    "dequantize": lambda: tl_lin.dequantize(p, e, in_features=k, group_size=G, dtype=torch.bfloat16),
    "dequantize_runs": lambda: rd.dequantize_runs(p, e, in_features=k, group_size=G),
    "torch.empty buffer": lambda: torch.empty((n, w.stride(0)), dtype=torch.bfloat16, device=dev),
    "rd.launch (Triton launch)": lambda: rd.launch(p, e, words, group_size=G, tile=rd.RUN_DECODE_TILE),
    "F.linear": lambda: F.linear(x, w),
    "x.to(bf16) no-op": lambda: x.to(torch.bfloat16),
}
for name, fn in pieces.items():
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    best = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(50):
            fn()
        best.append((time.perf_counter() - t) / 50 * 1e6)
        torch.cuda.synchronize()
    print(f"{name:28s} host {min(best):7.1f} us/call (min of 5 x 50), median {sorted(best)[2]:7.1f}", flush=True)
prof = cProfile.Profile()
prof.enable()
for _ in range(200):
    rd.launch(p, e, words, group_size=G, tile=rd.RUN_DECODE_TILE)
prof.disable()
torch.cuda.synchronize()
pstats.Stats(prof).sort_stats("tottime").print_stats(14)
prof = cProfile.Profile()
prof.enable()
for _ in range(200):
    tl_lin.forward(x, p, e, None, in_features=k, group_size=G, bias_frac_bits=16)
prof.disable()
torch.cuda.synchronize()
pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
