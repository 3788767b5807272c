"""Where the run decode's time goes at 14336 x 4096 (117 MB of bf16): the shipped decode against
- the same without the evict_last hint (variant module made by text substitution),
- its store pattern alone (constant words, the shipped index math and five 16-byte stores, with / without the hint),
- other tiles (2 and 4 rows a program),
- a plain coalesced constant store (the card's write ceiling in the first probe: 4.45 TB/s).
time_in_graph in turns, 5 rounds, three rotating layers; outputs of the variants compared with the shipped decode."""
import importlib.util
import pathlib
import statistics
import sys

import torch
import triton
import triton.language as tl

from benchmarks.kernels import time_in_graph, time_interleaved
from ternary.kernels.linear import triton_run_decode as shipped
from ternary.kernels.linear.triton_launch import round_up
from ternary.state.packing import random_packed

HERE = pathlib.Path(__file__).parent
TAIL = '    words = tl.inline_asm_elementwise(\n        _ASM_IN_ORDER, _CONSTRAINTS_IN_ORDER,\n        [_run_byte(row_bytes, first, 0, KB), _run_byte(row_bytes, first, 1, KB), _run_byte(row_bytes, first, 2, KB),\n         _run_byte(row_bytes, first, 3, KB), _run_byte(row_bytes, first, 4, KB), _run_byte(row_bytes, first, 5, KB),\n         _run_byte(row_bytes, first, 6, KB), _run_byte(row_bytes, first, 7, KB), low, high],\n        dtype=(tl.int32,) * 20, is_pure=True, pack=1)\n    zero = tl.zeros_like(words[0])\n    pad = _quad(zero, zero, zero, zero)\n    line = _cat(_cat(_cat(_quad(words[0], words[1], words[2], words[3]), _quad(words[4], words[5], words[6], words[7])),\n                     _cat(_quad(words[8], words[9], words[10], words[11]),\n                          _quad(words[12], words[13], words[14], words[15]))),\n                _cat(_cat(_quad(words[16], words[17], words[18], words[19]), pad), _cat(pad, pad)))\n    slot = tl.arange(0, 32)\n    ok = (rn < N) & (runs < RUNS)\n    out = w_ptr + (rn.to(tl.int64) * (stride_w16 * 4) + _HALF_RUN_COLUMNS * runs)[:, None] + slot[None, :]\n    tl.store(out, line, mask=ok[:, None] & (slot < _HALF_RUN_COLUMNS)[None, :], eviction_policy="evict_last")\n\n\n@triton.jit\ndef _cat(p, q):\n    """``[R, 2 n]``: ``p [R, n]`` then ``q [R, n]`` along the last axis."""\n    return tl.reshape(tl.permute(tl.join(p, q), (0, 2, 1)), (p.shape[0], 2 * p.shape[1]))\n\n\ndef takes('


def variant(name, replacements):
    source = pathlib.Path(shipped.__file__).read_text()
    for old, new in replacements:
        if new is None:
            start, stop = source.index("    parity = runs % 2\n"), source.index("def takes(")
            source = source[:start] + TAIL + source[stop + len("def takes("):]
            continue
        assert old in source, old
        source = source.replace(old, new)
    path = HERE / f"v_{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"v_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


noevict = variant("noevict", [(', eviction_policy="evict_last"', "")])

coalesced = variant("coalesced", [
    ("from ternary.kernels.linear.triton_base3 import RUN_COLUMNS_ASM,",
     "from ternary.kernels.linear.triton_base3 import RUN_COLUMNS_IN_ORDER_ASM, RUN_COLUMNS_ASM,"),
    ('_CONSTRAINTS = tl.constexpr(",".join(["=r"] * 20 + ["r"] * 11))',
     '_CONSTRAINTS = tl.constexpr(",".join(["=r"] * 20 + ["r"] * 11))\n_ASM_IN_ORDER = tl.constexpr(RUN_COLUMNS_IN_ORDER_ASM)\n'
     '_CONSTRAINTS_IN_ORDER = tl.constexpr(",".join(["=r"] * 20 + ["r"] * 10))'),
    ("CUT_FROM_HERE", None),
])



@triton.jit
def pattern_store(w_ptr, N, RUNS, stride_w16, BLOCK_R: tl.constexpr, EVICT: tl.constexpr):
    index = tl.arange(0, BLOCK_R)
    rn = tl.program_id(0) + 0 * index
    runs = tl.program_id(1) * BLOCK_R + index
    parity = runs % 2
    own = (rn < N) & (runs < RUNS)
    partner = (rn < N) & ((runs ^ 1) < RUNS)
    first_two = tl.where(parity == 0, own, partner)[:, None]
    last_two = tl.where(parity == 0, partner, own)[:, None]
    pair_base = rn.to(tl.int64) * (stride_w16 * 4) + 20 * (runs - parity) + 4 * parity
    out = w_ptr + pair_base[:, None] + tl.arange(0, 4)[None, :]
    words = (runs[:, None] + tl.arange(0, 4)[None, :]) | 0x3F803F80
    _put(out, words, first_two, EVICT)
    _put(out + 8, words, first_two, EVICT)
    _put(out + 16, words, own[:, None], EVICT)
    _put(out + 24, words, last_two, EVICT)
    _put(out + 32, words, last_two, EVICT)


@triton.jit
def _put(p, words, m, EVICT: tl.constexpr):
    if EVICT:
        tl.store(p, words, mask=m, eviction_policy="evict_last")
    else:
        tl.store(p, words, mask=m)


@triton.jit
def plain_store(out, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out + offs, tl.full([BLOCK], 0x3F803F80, tl.int32), mask=offs < n)


def main():
    G = 40
    for n, k in ((14336, 4096), (4096, 14336), (16384, 16384)):
        gen = torch.Generator().manual_seed(n + k)
        states = [(random_packed(n, k, generator=gen).cuda(),
                   torch.randint(-4, 2, (n, -(-k // G)), generator=gen).to(torch.int8).cuda()) for _ in range(3)]
        kb = states[0][0].shape[1]
        runs = triton.cdiv(kb, 8)
        columns = round_up(round_up(k, 40), 64)
        bufs = [torch.empty(n, columns, dtype=torch.bfloat16, device="cuda") for _ in range(3)]
        ref = shipped.dequantize_runs(*states[0], in_features=k, group_size=G)
        for mod in (noevict, coalesced):
            assert torch.equal(mod.dequantize_runs(*states[0], in_features=k, group_size=G).view(torch.int16),
                               ref.view(torch.int16)), mod.__name__
        _, block_r, warps = shipped.launch_tile(runs)
        calls = {
            "shipped": [lambda s=s: shipped.dequantize_runs(*s, in_features=k, group_size=G) for s in states],
            "noevict": [lambda s=s: noevict.dequantize_runs(*s, in_features=k, group_size=G) for s in states],
            "coalesced": [lambda s=s: coalesced.dequantize_runs(*s, in_features=k, group_size=G) for s in states],
            "rows2": [lambda s=s: shipped.dequantize_runs(*s, in_features=k, group_size=G,
                                                          tile=(2, block_r, 2 * warps)) for s in states],
            "rows4": [lambda s=s: shipped.dequantize_runs(*s, in_features=k, group_size=G,
                                                          tile=(4, block_r, min(32, 4 * warps))) for s in states],
        }
        for evict in (1, 0):
            calls[f"pattern_evict{evict}"] = [
                lambda b=b, evict=evict: pattern_store[(n, triton.cdiv(runs, block_r))](
                    b.view(torch.int32), n, runs, b.stride(0) // 8, BLOCK_R=block_r, EVICT=evict, num_warps=warps)
                for b in bufs]
        calls["plain"] = [lambda b=b: plain_store[(triton.cdiv(b.numel() // 2, 1024),)](
            b.view(torch.int32), b.numel() // 2, BLOCK=1024, num_warps=8) for b in bufs]
        times = time_interleaved(calls, rounds=5, timer=time_in_graph)
        for name, t in times.items():
            us = statistics.median(t)
            print(f"{n}x{k} {name:>15} {us:8.1f} us  {n * columns * 2 / us / 1e6:5.2f} TB/s  "
                  f"rounds {[round(x, 1) for x in t]}", flush=True)
        del states, bufs
        torch.cuda.empty_cache()


main()
