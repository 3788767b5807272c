"""Check the 10-op digit-4 formula for every byte value in every position (PTX prmt semantics)."""
import itertools, random
H = 0x80808080
M = 0xFFFFFFFF

def prmt(a, b, sel):
    src = [(a >> (8 * i)) & 0xFF for i in range(4)] + [(b >> (8 * i)) & 0xFF for i in range(4)]
    out = 0
    for i in range(4):
        n = (sel >> (4 * i)) & 0xF
        v = src[n & 7]
        if n & 8:
            v = 0xFF if v & 0x80 else 0
        out |= v << (8 * i)
    return out

def digit4(w):
    x1 = (w | H) & M
    a = (x1 - 0x51515151) & M
    b = (x1 - 0x22222222) & M
    na = ~(a | w) & H
    bb = b & w & H
    low = na | bb
    lw = prmt(low, low, 0xBA98)
    high = (lw & 0x3F3F3F3F) | na
    return prmt(low, high, 0x5140), prmt(low, high, 0x7362)

BF = {0: 0xBF80, 1: 0, 2: 0x3F80}
def expect(bs):
    p = [BF[b // 81] for b in bs]
    return p[0] | p[1] << 16, p[2] | p[3] << 16

bad = 0
vals = range(243)
for pos in range(4):
    for v in vals:
        for _ in range(20):
            bs = [random.randrange(243) for _ in range(4)]
            bs[pos] = v
            w = sum(b << (8 * i) for i, b in enumerate(bs))
            bad += digit4(w) != expect(bs)
for bs in itertools.product([0, 80, 81, 161, 162, 242], repeat=4):
    w = sum(b << (8 * i) for i, b in enumerate(bs))
    bad += digit4(w) != expect(bs)
print("mismatches", bad)
