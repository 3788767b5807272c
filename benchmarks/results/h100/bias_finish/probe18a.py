"""Session 18 probe: (1) the two-step forward's bias (old three-pass fp32 add vs finish_splits, block 256 / 1024);
(2) the dispatch at M = 64-512 with the run decode (two-step vs wgmma forward / grad-x). Same process, in turns."""
import statistics, torch, torch.nn.functional as F, triton
from benchmarks.kernels import copies_for, time_in_graph, time_interleaved, GROUP_SIZE
from ternary.kernels.linear import triton as K
from ternary.kernels.linear import triton_launch as L
from ternary.state.packing import random_packed

dev = torch.device("cuda")


def finish_1024(y, bias, frac, dtype):
    m, c = y.shape
    out = torch.empty((m, c), dtype=dtype, device=y.device)
    L._finish_kernel[(triton.cdiv(c, 1024), m)](y, bias, out, m, c, 0, y.stride(0), out.stride(0), 2.0**-frac, 1,
                                                HAS_BIAS=True, BLOCK=1024)
    return out


for n, k in [(16384, 16384), (4096, 4096), (14336, 4096)]:
    gen = torch.Generator().manual_seed(n + k)
    st = [(random_packed(n, k, generator=gen).to(dev), torch.randint(-4, 2, (n, -(-k // GROUP_SIZE)), generator=gen)
           .to(torch.int8).to(dev)) for _ in range(copies_for(n * k // 5, dev))]
    bias = torch.randint(-2**20, 2**20, (n,), device=dev, dtype=torch.int32)
    kw = dict(in_features=k, group_size=GROUP_SIZE, bias_frac_bits=16)
    dense = K.dequantize(*st[0], in_features=k, group_size=GROUP_SIZE)
    value = (bias.double() * 2.0**-16).float()
    for m in (2048, 8192):
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        y = F.linear(x, dense)
        old = (y.float() + value).to(torch.bfloat16)
        assert torch.equal(old, L.finish_splits(y[None], bias, 16, torch.bfloat16))
        assert torch.equal(old, finish_1024(y, bias, 16, torch.bfloat16))
        fns = {"cublas_no_bias": [lambda: F.linear(x, dense)],
               "two_step_no_bias": [lambda s=s: K.forward_two_step(x, *s, None, **kw) for s in st],
               "two_step_bias": [lambda s=s: K.forward_two_step(x, *s, bias, **kw) for s in st],
               "old_bias_add": [lambda: (y.float() + value).to(torch.bfloat16)],
               "finish_256": [lambda: L.finish_splits(y[None], bias, 16, torch.bfloat16)],
               "finish_1024": [lambda: finish_1024(y, bias, 16, torch.bfloat16)]}
        t = time_interleaved(fns, rounds=3, timer=time_in_graph)
        print(f"bias {n}x{k} M={m} " + "  ".join(f"{a}={statistics.median(v):.1f}" for a, v in t.items()), flush=True)
    kw = dict(in_features=k, group_size=GROUP_SIZE)
    for m in (64, 128, 256, 512):
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        gy = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
        fns = {"cublas_fwd": [lambda: F.linear(x, dense)],
               "dispatch_fwd": [lambda s=s: K.forward(x, *s, None, bias_frac_bits=16, **kw) for s in st],
               "two_step_fwd": [lambda s=s: K.forward_two_step(x, *s, None, bias_frac_bits=16, **kw) for s in st],
               "cublas_gx": [lambda: gy @ dense],
               "dispatch_gx": [lambda s=s: K.grad_x(gy, *s, **kw) for s in st],
               "two_step_gx": [lambda s=s: K.grad_x_two_step(gy, *s, **kw) for s in st]}
        if m <= K.WGMMA_MAX_ROWS:
            fns["wgmma_fwd"] = [lambda s=s: K.forward_wgmma(x, *s, None, bias_frac_bits=16, **kw) for s in st]
        t = time_interleaved(fns, rounds=3, timer=time_in_graph)
        print(f"dispatch {n}x{k} M={m} " + "  ".join(f"{a}={statistics.median(v):.1f}" for a, v in t.items()),
              flush=True)
    del st, dense
    torch.cuda.empty_cache()
