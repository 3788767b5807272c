"""Session 18: L2 bulk prefetch of the weight rows in the M = 1 table GEMV and the M = 2-16 mma forward.
Same process, in turns, rotating weight copies (every call reads from DRAM); bf16 cuBLAS as the baseline."""
import statistics, torch, torch.nn.functional as F
from benchmarks.kernels import copies_for, time_in_graph, time_interleaved, with_constants, GROUP_SIZE
from ternary.kernels.linear import triton as K, triton_mma_forward as mma, triton_table_gemv as tg
from ternary.state.packing import random_packed

dev = torch.device("cuda")
TABLE = {"off": (0, 1), "a2e1": (2, 1), "a4e2": (4, 2), "a8e4": (8, 4), "a16e8": (16, 8), "all": (64, 64)}
MMA = {"off": (0, 1), "a4e2": (4, 2), "a8e4": (8, 4), "a16e4": (16, 4), "a16e8": (16, 8), "all": (64, 64)}
for n, k in [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]:
    gen = torch.Generator().manual_seed(n + k)
    st = [(random_packed(n, k, generator=gen).to(dev), torch.randint(-4, 2, (n, -(-k // GROUP_SIZE)), generator=gen)
           .to(torch.int8).to(dev)) for _ in range(copies_for(n * k // 5, dev))]
    dense = K.dequantize(*st[0], in_features=k, group_size=GROUP_SIZE)
    kw = dict(in_features=k, group_size=GROUP_SIZE, bias_frac_bits=16)
    for m in (1, 2, 16):
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        want = F.linear(x.float(), dense.float())
        module, name, variants = (tg, "TABLE_PREFETCH", TABLE) if m == 1 else (mma, "MMA_PREFETCH", MMA)
        fns = {"cublas": [lambda: F.linear(x, dense)]}
        for label, value in variants.items():
            got = with_constants(module, lambda: K.forward(x, *st[0], None, **kw), **{name: value})
            err = float((got.float() - want).norm() / want.norm())
            assert err < 1e-2, (n, k, m, label, err)
            fns[label] = [lambda s=s, v=value: with_constants(module, lambda: K.forward(x, *s, None, **kw), **{name: v})
                          for s in st]
        fns["off_l2_warm"] = [lambda: with_constants(module, lambda: K.forward(x, *st[0], None, **kw),
                                                     **{name: (0, 1)})]
        t = time_interleaved(fns, rounds=3, timer=time_in_graph)
        base = t["cublas"]
        print(f"{n}x{k} M={m} " + "  ".join(
            f"{a}={statistics.median(v):.1f}({statistics.median(b / u for b, u in zip(base, v)):.2f}x)"
            for a, v in t.items()), flush=True)
    del st, dense
    torch.cuda.empty_cache()
