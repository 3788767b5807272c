"""Decode-in-GEMM: flags zeroed by their own fill launch (the old call) against zeroed by the pre-decode launch (new),
under the benchmark's conditions: weights rotating over copies_for() layers, cuBLAS and both in turns for 7 rounds of
time_in_graph, ratios paired by round. Outputs equal bit for bit."""
import statistics
import torch
import torch.nn.functional as F
from benchmarks.kernels import copies_for, time_in_graph, time_interleaved, paired_ratio, ratio_range
from ternary.kernels.linear import triton_decode_gemm as dg
from ternary.kernels.linear import triton_run_decode as rd
from ternary.state.packing import random_packed, unpack

G = 40
new_launch = rd.launch


def fill_launch(*args, clear=None, **kwargs):
    if clear is not None:
        clear.zero_()
    new_launch(*args, **kwargs)


def old(call):
    def run():
        rd.launch = fill_launch
        try:
            return call()
        finally:
            rd.launch = new_launch
    return run


for (n, k) in [(4096, 4096), (4096, 14336), (14336, 4096), (16384, 16384)]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, torch.device("cuda"))
    states = [(random_packed(n, k, generator=gen).cuda(),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).cuda()) for _ in range(count)]
    dense = [unpack(p, k).to(torch.bfloat16).cuda() * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16()
             for p, e in states[:copies_for(n * k * 2, torch.device("cuda"))]]
    for m in (2048, 4096):
        for grad in ((False, True) if n * k >= (1 << 27) else (False, )):
            a = torch.randn(m, n if grad else k, device="cuda", dtype=torch.bfloat16)
            if grad:
                f = lambda s: dg.grad_x(a, s[0], s[1], in_features=k, group_size=G)
                base = [lambda w=w: a @ w for w in dense]
            else:
                f = lambda s: dg.forward(a, s[0], s[1], None, in_features=k, group_size=G, bias_frac_bits=16)
                base = [lambda w=w: F.linear(a, w) for w in dense]
            same = torch.equal(f(states[0]).view(torch.int16), old(lambda: f(states[0]))().view(torch.int16))
            calls = {"cublas": base, "fill": [old(lambda s=s: f(s)) for s in states],
                     "clear": [lambda s=s: f(s) for s in states]}
            times = time_interleaved(calls, rounds=7, timer=time_in_graph)
            b = times["cublas"]
            cells = [f"cublas {statistics.median(b):.1f}us"] + [
                f"{name} {statistics.median(t):.1f}us {paired_ratio(b, t):.3f}x "
                f"[{ratio_range(b, t)[0]:.3f}-{ratio_range(b, t)[1]:.3f}]" for name, t in times.items() if name != "cublas"]
            print(f"{'grad_x' if grad else 'forward'} M={m} {n}x{k} equal={same}: " + "  ".join(cells), flush=True)
    del states, dense
    torch.cuda.empty_cache()
