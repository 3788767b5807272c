"""Session 18, after the review: finish_splits with rows on the first grid axis, timed as before (probe18a)."""
import statistics, torch, torch.nn.functional as F
from benchmarks.kernels import copies_for, time_in_graph, time_interleaved, GROUP_SIZE
from ternary.kernels.linear import triton as K, triton_launch as L
from ternary.state.packing import random_packed

dev = torch.device("cuda")
for n, k, m in [(16384, 16384, 2048), (4096, 4096, 2048)]:
    gen = torch.Generator().manual_seed(n)
    st = [(random_packed(n, k, generator=gen).to(dev), torch.randint(-4, 2, (n, -(-k // GROUP_SIZE)), generator=gen)
           .to(torch.int8).to(dev)) for _ in range(copies_for(n * k // 5, dev))]
    bias = torch.randint(-2**20, 2**20, (n,), device=dev, dtype=torch.int32)
    kw = dict(in_features=k, group_size=GROUP_SIZE, bias_frac_bits=16)
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    y = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
    fns = {"no_bias": [lambda s=s: K.forward_two_step(x, *s, None, **kw) for s in st],
           "bias": [lambda s=s: K.forward_two_step(x, *s, bias, **kw) for s in st],
           "finish_alone": [lambda: L.finish_splits(y[None], bias, 16, torch.bfloat16)]}
    t = time_interleaved(fns, rounds=3, timer=time_in_graph)
    print(f"{n}x{k} M={m} " + "  ".join(f"{a}={statistics.median(v):.1f}" for a, v in t.items()), flush=True)
