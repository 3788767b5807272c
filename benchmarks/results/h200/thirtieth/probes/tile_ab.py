"""Run-decode launch tiles: the fixed (1, 256, 8) against launch_tile() (one run a thread, as few threads as cover a
row), in the decode-in-GEMM's pre-decode (forward M = 2048), in the grad-x two-step (M = 2048) and alone; cuBLAS and
both in turns for 7 rounds of time_in_graph, ratios paired by round. Outputs equal bit for bit."""
import statistics
import torch
import torch.nn.functional as F
from benchmarks.kernels import copies_for, time_in_graph, time_interleaved, paired_ratio, ratio_range
from ternary.kernels.linear import triton as kernels
from ternary.kernels.linear import triton_decode_gemm as dg
from ternary.kernels.linear import triton_run_decode as rd
from ternary.state.packing import random_packed, unpack

G = 40
fitted = rd.launch_tile


def fixed(call):
    def run():
        rd.launch_tile = lambda runs: rd.RUN_DECODE_TILE
        try:
            return call()
        finally:
            rd.launch_tile = fitted
    return run


for (n, k) in [(4096, 4096), (14336, 4096), (4096, 14336), (16384, 16384)]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, torch.device("cuda"))
    states = [(random_packed(n, k, generator=gen).cuda(),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).cuda()) for _ in range(count)]
    dense = [unpack(p, k).to(torch.bfloat16).cuda() * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16()
             for p, e in states[:copies_for(n * k * 2, torch.device("cuda"))]]
    x = torch.randn(2048, k, device="cuda", dtype=torch.bfloat16)
    gy = torch.randn(2048, n, device="cuda", dtype=torch.bfloat16)
    paths = {
        "forward": (lambda s: dg.forward(x, s[0], s[1], None, in_features=k, group_size=G, bias_frac_bits=16),
                    [lambda w=w: F.linear(x, w) for w in dense]),
        "grad_x": (lambda s: kernels.grad_x(gy, s[0], s[1], in_features=k, group_size=G),
                   [lambda w=w: gy @ w for w in dense]),
        "decode": (lambda s: rd.dequantize_runs(s[0], s[1], in_features=k, group_size=G),
                   [lambda w=w: w.clone() for w in dense]),
    }
    for name, (f, base) in paths.items():
        same = torch.equal(f(states[0]).view(torch.int16), fixed(lambda: f(states[0]))().view(torch.int16))
        calls = {"base": base, "fixed": [fixed(lambda s=s: f(s)) for s in states],
                 "fitted": [lambda s=s: f(s) for s in states]}
        times = time_interleaved(calls, rounds=7, timer=time_in_graph)
        b = times["base"]
        cells = [f"base {statistics.median(b):.1f}us"] + [
            f"{arm} {statistics.median(t):.1f}us {paired_ratio(b, t):.3f}x "
            f"[{ratio_range(b, t)[0]:.3f}-{ratio_range(b, t)[1]:.3f}]" for arm, t in times.items() if arm != "base"]
        print(f"{name} M=2048 {n}x{k} tile={fitted(-(-(-(-k // 5)) // 8))} equal={same}: " + "  ".join(cells),
              flush=True)
    del states, dense
    torch.cuda.empty_cache()
