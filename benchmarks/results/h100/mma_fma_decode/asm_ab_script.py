"""Same-run A/B of the word decode, as run at commit 4e75e59 (where ``_pair_decode_asm`` still took
halves=2; the integer chain was removed after): the integer-chain text against the bf16-FMA text
shipped, at the four benchmark shapes; both checked against the naive path."""
import torch, warnings
warnings.filterwarnings("ignore")
import torch.nn.functional as F
from triton.experimental.gluon import language as gl
from benchmarks.kernels import copies_for, naive_forward, relative_rms, time_in_graph
from ternary.kernels.linear import triton as kernels, triton_mma_forward as mma
from ternary.kernels.linear.triton_base3 import WORD_WEIGHTS_ASM, _pair_decode_asm
from ternary.state.packing import byte_to_trits_table, random_packed
dev = torch.device("cuda"); gen = torch.Generator().manual_seed(0); table = byte_to_trits_table(dev)
print(torch.cuda.get_device_name(0))
TEXTS = (("integer_chain", _pair_decode_asm(halves=2, mark_corrupt=False)), ("bf16_fma", WORD_WEIGHTS_ASM))
for n, k in ((16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)):
    g = 40
    count = copies_for(n * -(-k // 5) + n * -(-k // g), dev)
    states = [(random_packed(n, k, generator=gen).to(dev), torch.randint(-4, 2, (n, -(-k // g)), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    dense = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(copies_for(n * k * 2, dev))]
    for m in (16, 8, 2):
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        base = time_in_graph([lambda w=w: F.linear(x, w) for w in dense])
        want = naive_forward(x, table, *states[0], k, g)
        line = f"{n}x{k} M={m} cublas {base:6.1f}"
        for name, text in TEXTS * 2:
            mma._WORD_ASM = gl.constexpr(text)
            fn = lambda s: kernels.forward_mma(x, *s, None, in_features=k, group_size=g, bias_frac_bits=0)
            err = relative_rms(fn(states[0]), want)
            us = time_in_graph([lambda s=s: fn(s) for s in states])
            line += f" | {name} {us:6.1f} ({base / us:.2f}x, err {err:.0e})"
        print(line, flush=True)
