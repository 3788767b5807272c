"""Variant of the run decode that stores each run's 20 words as one masked [runs, 32] tile and lets
Triton's layout conversion (through shared memory) make the stores coalesced; plain column words."""
import re, sys
from ternary.kernels.linear import triton_base3 as b
asm = b.RUN_COLUMNS_ASM
lines = [l for l in asm.splitlines() if not l.startswith(("shfl", "selp", "setp", ".reg .pred"))]
text = "\n".join(lines) + "\n"
for i in range(20):
    text = re.sub(rf"prmt\.b32 c{i},", f"prmt.b32 ${i},", text)
open("scratch/plain_columns_asm.txt", "w").write(text)
src = open("ternary/kernels/linear/triton_run_decode.py").read()
src = src.replace("_ASM = tl.constexpr(RUN_COLUMNS_ASM)", "_ASM = tl.constexpr(open('/work/main/scratch/plain_columns_asm.txt').read() if False else PLAIN)")
start = src.index("    parity = runs % 2")
end = src.index("def takes(")
body = '''    words = tl.inline_asm_elementwise(
        _ASM, _CONSTRAINTS,
        [_run_byte(row_bytes, first, 0, KB), _run_byte(row_bytes, first, 1, KB), _run_byte(row_bytes, first, 2, KB),
         _run_byte(row_bytes, first, 3, KB), _run_byte(row_bytes, first, 4, KB), _run_byte(row_bytes, first, 5, KB),
         _run_byte(row_bytes, first, 6, KB), _run_byte(row_bytes, first, 7, KB), low, high],
        dtype=(tl.int32,) * 20, is_pure=True, pack=1)
    zero = tl.zeros_like(low)
    t = [words[0], words[1], words[2], words[3], words[4], words[5], words[6], words[7], words[8], words[9],
         words[10], words[11], words[12], words[13], words[14], words[15], words[16], words[17], words[18], words[19],
         zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero]
    u0 = tl.join(t[0], t[16]); u1 = tl.join(t[1], t[17]); u2 = tl.join(t[2], t[18]); u3 = tl.join(t[3], t[19])
    u4 = tl.join(t[4], t[20]); u5 = tl.join(t[5], t[21]); u6 = tl.join(t[6], t[22]); u7 = tl.join(t[7], t[23])
    u8 = tl.join(t[8], t[24]); u9 = tl.join(t[9], t[25]); u10 = tl.join(t[10], t[26]); u11 = tl.join(t[11], t[27])
    u12 = tl.join(t[12], t[28]); u13 = tl.join(t[13], t[29]); u14 = tl.join(t[14], t[30]); u15 = tl.join(t[15], t[31])
    v0 = tl.join(u0, u8); v1 = tl.join(u1, u9); v2 = tl.join(u2, u10); v3 = tl.join(u3, u11)
    v4 = tl.join(u4, u12); v5 = tl.join(u5, u13); v6 = tl.join(u6, u14); v7 = tl.join(u7, u15)
    x0 = tl.join(v0, v4); x1 = tl.join(v1, v5); x2 = tl.join(v2, v6); x3 = tl.join(v3, v7)
    y0 = tl.join(x0, x2); y1 = tl.join(x1, x3)
    z = tl.reshape(tl.join(y0, y1), (BLOCK_N * BLOCK_R, 32))
    slot = tl.arange(0, 32)
    keep = ((rn < N) & (runs < RUNS))[:, None] & (slot < 20)[None, :]
    out = w_ptr + (rn.to(tl.int64) * (stride_w16 * 4) + _HALF_RUN_COLUMNS * runs)[:, None] + slot[None, :]
    tl.store(out, z, mask=keep)


'''
src = src[:start] + body + src[end:]
src = src.replace('_CONSTRAINTS = tl.constexpr(",".join(["=r"] * 20 + ["r"] * 11))', '_CONSTRAINTS = tl.constexpr(",".join(["=r"] * 20 + ["r"] * 10))')
src = src.replace("from ternary.kernels.linear.triton_base3 import RUN_COLUMNS_ASM, bf16_exp2_bits",
                  "from ternary.kernels.linear.triton_base3 import RUN_COLUMNS_ASM, bf16_exp2_bits\nPLAIN = " + repr(text))
open("scratch/run_decode_coalesced.py", "w").write(src)
