"""Session 18: (A) two-step vs register-decode kernels at M = 64-512 on layers whose bf16 buffer does or does not
fit L2; (B) the update rows timed back to back (host launch work overlapping) against inside a CUDA graph (no
host work), GEMM and GEMM + AdamW alike. Same process, in turns."""
import statistics, torch, torch.nn.functional as F
from benchmarks.kernels import (copies_for, time_back_to_back, time_in_graph, time_interleaved, paired_ratio,
                                GROUP_SIZE)
from ternary.kernels.linear import triton as K
from ternary.kernels.update import triton as U
from ternary.state.packing import random_packed

dev = torch.device("cuda")
print("L2 bytes", torch.cuda.get_device_properties(dev).L2_cache_size, flush=True)
for n, k in [(1024, 1024), (2048, 2048), (2048, 8192), (8192, 2048), (4096, 4096), (4096, 8192), (8192, 4096)]:
    gen = torch.Generator().manual_seed(n + k)
    st = [(random_packed(n, k, generator=gen).to(dev), torch.randint(-4, 2, (n, -(-k // GROUP_SIZE)), generator=gen)
           .to(torch.int8).to(dev)) for _ in range(copies_for(n * k // 5, dev))]
    dense = K.dequantize(*st[0], in_features=k, group_size=GROUP_SIZE)
    kw = dict(in_features=k, group_size=GROUP_SIZE)
    for m in (64, 128, 256, 512):
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        gy = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
        fns = {"cublas_fwd": [lambda: F.linear(x, dense)],
               "dispatch_fwd": [lambda s=s: K.forward(x, *s, None, bias_frac_bits=16, **kw) for s in st],
               "two_step_fwd": [lambda s=s: K.forward_two_step(x, *s, None, bias_frac_bits=16, **kw) for s in st],
               "dispatch_gx": [lambda s=s: K.grad_x(gy, *s, **kw) for s in st],
               "two_step_gx": [lambda s=s: K.grad_x_two_step(gy, *s, **kw) for s in st]}
        t = time_interleaved(fns, rounds=3, timer=time_in_graph)
        print(f"dispatch {n}x{k} bf16 buffer {n * k * 2 / 2**20:.0f} MiB M={m} "
              + "  ".join(f"{a}={statistics.median(v):.1f}" for a, v in t.items()), flush=True)
    del st, dense
    torch.cuda.empty_cache()

for n, k, m in [(4096, 4096, 8192), (4096, 4096, 2048), (16384, 16384, 8192), (14336, 4096, 8192)]:
    gen = torch.Generator().manual_seed(n + k + m)
    groups = -(-k // GROUP_SIZE)
    packed = random_packed(n, k, generator=gen).to(dev)
    E = torch.zeros(n, groups, dtype=torch.int8, device=dev)
    E_accum, T_accum = torch.zeros_like(E), torch.zeros(n, k, dtype=torch.int8, device=dev)
    bias = torch.zeros(n, dtype=torch.int32, device=dev)
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    grad_y = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
    master = torch.nn.Parameter(torch.zeros(n, k, device=dev))
    optimizer = torch.optim.AdamW([master], lr=1e-3, fused=True, capturable=True)
    rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)

    def ste():
        master.grad = (grad_y.T @ x).to(torch.float32)
        optimizer.step()

    def ours():
        return U.update(packed, E, E_accum, T_accum, bias, x, grad_y, validated=True, **rule)

    fns = {"gemm_b2b": lambda: grad_y.T @ x, "ste_b2b": ste, "ours_b2b": ours}
    graphs = {"gemm_graph": [lambda: grad_y.T @ x], "ste_graph": [ste], "ours_graph": [ours]}
    t = time_interleaved(fns, rounds=3)
    g = time_interleaved(graphs, rounds=3, timer=time_in_graph)
    print(f"update {n}x{k} M={m} " + "  ".join(f"{a}={statistics.median(v):.1f}" for a, v in {**t, **g}.items())
          + f"  ours/gemm b2b {paired_ratio(t['ours_b2b'], t['gemm_b2b']):.3f} graph "
          f"{paired_ratio(g['ours_graph'], g['gemm_graph']):.3f}  ours/ste b2b {paired_ratio(t['ours_b2b'], t['ste_b2b']):.3f}"
          f" graph {paired_ratio(g['ours_graph'], g['ste_graph']):.3f}", flush=True)
    del master, optimizer
    torch.cuda.empty_cache()

for n, k, m in [(16384, 16384, 2048), (4096, 4096, 2048)]:
    gen = torch.Generator().manual_seed(n)
    st = [(random_packed(n, k, generator=gen).to(dev), torch.randint(-4, 2, (n, -(-k // GROUP_SIZE)), generator=gen)
           .to(torch.int8).to(dev)) for _ in range(copies_for(n * k // 5, dev))]
    bias = torch.randint(-2**20, 2**20, (n,), device=dev, dtype=torch.int32)
    kw = dict(in_features=k, group_size=GROUP_SIZE, bias_frac_bits=16)
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    fns = {"no_bias": [lambda s=s: K.forward_two_step(x, *s, None, **kw) for s in st],
           "bias": [lambda s=s: K.forward_two_step(x, *s, bias, **kw) for s in st]}
    t = time_interleaved(fns, rounds=3, timer=time_in_graph)
    print(f"two-step bias {n}x{k} M={m} " + "  ".join(f"{a}={statistics.median(v):.1f}" for a, v in t.items()), flush=True)
