"""GPU probe 5: does cuBLAS run slower on the two-step buffer's padded row stride than on a dense weight?"""
import statistics
import torch, torch.nn.functional as F
from benchmarks.kernels import time_back_to_back, time_interleaved, paired_ratio
from ternary.kernels.linear import triton as tl_lin
from ternary.state.packing import random_packed

dev = torch.device("cuda")
G = 40
for n, k in [(4096, 4096), (14336, 4096), (4096, 14336), (16384, 16384)]:
    p = random_packed(n, k).to(dev)
    e = torch.randint(-4, 2, (n, -(-k // G))).to(torch.int8).to(dev)
    padded = tl_lin.dequantize(p, e, in_features=k, group_size=G, dtype=torch.bfloat16)
    dense = padded.contiguous()
    alt = torch.empty((n, k + 64), dtype=torch.bfloat16, device=dev)[:, :k]
    alt.copy_(dense)
    for m in [2048, 8192]:
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        assert torch.equal(F.linear(x, padded), F.linear(x, dense))
        fns = {"dense": lambda: F.linear(x, dense), f"padded ld={padded.stride(0)}": lambda: F.linear(x, padded),
               f"ld={alt.stride(0)}": lambda: F.linear(x, alt),
               "two-step fwd": lambda: tl_lin.forward(x, p, e, None, in_features=k, group_size=G, bias_frac_bits=16),
               "decode only": lambda: tl_lin.dequantize(p, e, in_features=k, group_size=G, dtype=torch.bfloat16)}
        times = time_interleaved(fns, rounds=5, timer=lambda f: time_back_to_back(f, calls=4, repeats=5))
        for name, ts in times.items():
            print(f"{n}x{k} M={m} {name:16s} {statistics.median(ts):8.1f} us  dense/this {paired_ratio(times['dense'], ts):.3f}",
                  flush=True)
