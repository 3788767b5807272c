"""Timing-only ablation (outputs wrong by design): the word decode without its first bf16 FMA
(what a one-FMA decode would cost), at 16384^2."""
import torch, warnings
warnings.filterwarnings("ignore")
import torch.nn.functional as F
from triton.experimental.gluon import language as gl
from benchmarks.kernels import copies_for, time_in_graph
from ternary.kernels.linear import triton as kernels, triton_mma_forward as mma
from ternary.kernels.linear.triton_base3 import WORD_WEIGHTS_ASM
from ternary.state.packing import random_packed
dev = torch.device("cuda"); gen = torch.Generator().manual_seed(0)
n = k = 16384; g = 40
count = copies_for(n * -(-k // 5) + n * -(-k // g), dev)
states = [(random_packed(n, k, generator=gen).to(dev), torch.randint(-4, 2, (n, -(-k // g)), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
dense = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(copies_for(n * k * 2, dev))]
one_fma = "\n".join(l for l in WORD_WEIGHTS_ASM.splitlines() if l.strip() != "fma.rn.bf16x2 v, v, o, k;") + "\n"
for m in (16, 8):
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    base = time_in_graph([lambda w=w: F.linear(x, w) for w in dense])
    line = f"16384^2 M={m} cublas {base:.1f}"
    for name, text in (("shipped", WORD_WEIGHTS_ASM), ("one_fma", one_fma)):
        mma._WORD_ASM = gl.constexpr(text)
        us = time_in_graph([lambda s=s: kernels.forward_mma(x, *s, None, in_features=k, group_size=g, bias_frac_bits=0) for s in states])
        line += f" | {name} {us:.1f} ({base / us:.2f}x)"
    print(line, flush=True)
