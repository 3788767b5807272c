"""M = 16-64: the mma kernel against what forward() took before it (fused kernel below 64 rows,
two-step at 64), bf16 cuBLAS in the same process."""
import torch, warnings
warnings.filterwarnings("ignore")
import torch.nn.functional as F
from benchmarks.kernels import copies_for, naive_forward, relative_rms, time_in_graph
from ternary.kernels.linear import triton as kernels
from ternary.state.packing import byte_to_trits_table, random_packed
dev = torch.device("cuda"); gen = torch.Generator().manual_seed(0); table = byte_to_trits_table(dev)
print(torch.cuda.get_device_name(0))
for n, k in ((16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)):
    g = 40
    count = copies_for(n * -(-k // 5) + n * -(-k // g), dev)
    states = [(random_packed(n, k, generator=gen).to(dev), torch.randint(-4, 2, (n, -(-k // g)), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    dense = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(copies_for(n * k * 2, dev))]
    static = dict(in_features=k, group_size=g, bias_frac_bits=16)
    for m in (16, 24, 32, 48, 64):
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        base = time_in_graph([lambda w=w: F.linear(x, w) for w in dense])
        want = naive_forward(x, table, *states[0], k, g)
        line = f"{n}x{k} M={m} cublas {base:6.1f}"
        for name, takes in (("before", False), ("mma", True)):
            original = kernels.mma_forward_takes
            if not takes:
                kernels.mma_forward_takes = lambda *a, **kw: False
            try:
                err = relative_rms(kernels.forward(x, *states[0], None, **static), want)
                us = time_in_graph([lambda s=s: kernels.forward(x, *s, None, **static) for s in states])
            finally:
                kernels.mma_forward_takes = original
            line += f" | {name} {us:6.1f} ({base / us:.2f}x, err {err:.0e})"
        print(line, flush=True)
