"""The wgmma update at small and middle M, this tree's code against the tree in $TERNARY_TREE (run once each)."""
import os, statistics, sys, torch
sys.path.insert(0, os.environ["TERNARY_TREE"])
import ternary
from benchmarks.kernels import time_back_to_back, GROUP_SIZE
from ternary.kernels.update import triton as triton_update
from ternary.state.packing import random_packed
print(os.environ["TERNARY_TREE"], ternary.__file__, torch.cuda.get_device_name(), flush=True)
for n, k in [(4096, 4096), (16384, 16384)]:
    for m in (64, 256, 1024, 8192):
        gen = torch.Generator().manual_seed(n + k + m)
        groups = -(-k // GROUP_SIZE)
        packed = random_packed(n, k, generator=gen).cuda()
        E = torch.zeros(n, groups, dtype=torch.int8, device="cuda")
        T_accum = torch.zeros(n, k, dtype=torch.int8, device="cuda")
        bias = torch.zeros(n, dtype=torch.int32, device="cuda")
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        grad_y = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
        call = lambda: triton_update.update(packed, E, E, T_accum, bias, x, grad_y, validated=True, **rule)
        graph = torch.cuda.CUDAGraph()
        call(); torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            call()
        times = [time_back_to_back(call) for _ in range(3)]
        gtimes = [time_back_to_back(graph.replay) for _ in range(3)]
        print(f"n={n} k={k} m={m}: back-to-back {statistics.median(times):.1f} us, in a graph {statistics.median(gtimes):.1f} us", flush=True)
