"""How fast can the card write a two-step buffer? fill_, zero_, the driver's memset, a plain Triton store
kernel, a Triton TMA-store kernel, against the run decode, on the 14336 x 4096 bf16 buffer (117 MB), rotating
three buffers; then cuBLAS grad-x in the NN layout (gy @ W, the baseline and our two-step) against TN
(F.linear(gy, W^T contiguous)) at M = 2048. Times: time_in_graph, in turns, 5 rounds."""
import ctypes
import statistics

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from benchmarks.kernels import time_in_graph, time_interleaved
from ternary.kernels.linear.triton_run_decode import dequantize_runs
from ternary.state.packing import random_packed

cuda = ctypes.CDLL("libcuda.so.1")
cuda.cuMemsetD16Async.argtypes = [ctypes.c_uint64, ctypes.c_ushort, ctypes.c_size_t, ctypes.c_void_p]


@triton.jit
def plain_store(out, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out + offs, tl.full([BLOCK], 1.0, tl.float32).to(tl.bfloat16), mask=offs < n)


@triton.jit
def tma_store(desc, rows, cols, BM: tl.constexpr, BN: tl.constexpr, PROGRAMS: tl.constexpr):
    tiles_n = tl.cdiv(cols, BN)
    tiles = tl.cdiv(rows, BM) * tiles_n
    tile = tl.full([BM, BN], 1.0, tl.float32).to(tl.bfloat16)
    for t in range(tl.program_id(0), tiles, PROGRAMS):
        desc.store([(t // tiles_n) * BM, (t % tiles_n) * BN], tile)


def main():
    n, k, G = 14336, 4096, 40
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    bufs = [torch.empty(n, k, dtype=torch.bfloat16, device="cuda") for _ in range(3)]
    gen = torch.Generator().manual_seed(1)
    states = [(random_packed(n, k, generator=gen).cuda(),
               torch.randint(-4, 2, (n, -(-k // G)), generator=gen).to(torch.int8).cuda()) for _ in range(3)]
    stream = lambda: ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
    calls = {
        "fill_": [lambda b=b: b.fill_(1.0) for b in bufs],
        "zero_": [lambda b=b: b.zero_() for b in bufs],
        "cuMemsetD16": [lambda b=b: cuda.cuMemsetD16Async(b.data_ptr(), 0x3F80, b.numel(), stream()) for b in bufs],
        "run_decode": [lambda s=s: dequantize_runs(s[0], s[1], in_features=k, group_size=G) for s in states],
    }
    for block in (2048, 8192):
        calls[f"triton_store_{block}"] = [
            lambda b=b, block=block: plain_store[(triton.cdiv(b.numel(), block),)](b, b.numel(), BLOCK=block,
                                                                                  num_warps=8) for b in bufs]
    for bm, bn, per_sm in ((64, 256, 1), (128, 128, 1), (128, 256, 1), (64, 256, 2), (32, 256, 4)):
        descs = [TensorDescriptor.from_tensor(b, [bm, bn]) for b in bufs]
        programs = sms * per_sm
        calls[f"tma_{bm}x{bn}x{per_sm}"] = [
            lambda d=d, bm=bm, bn=bn, programs=programs: tma_store[(programs,)](d, n, k, BM=bm, BN=bn,
                                                                               PROGRAMS=programs, num_warps=4)
            for d in descs]
    times = time_interleaved(calls, rounds=5, timer=time_in_graph)
    for name, t in times.items():
        us = statistics.median(t)
        print(f"{name:>20} {us:8.1f} us  {n * k * 2 / us / 1e6:6.2f} TB/s written  rounds {[round(x, 1) for x in t]}")
    del bufs, states
    torch.cuda.empty_cache()
    for (n, k) in ((14336, 4096), (4096, 14336), (4096, 4096), (16384, 16384)):
        m = 2048
        gy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        count = max(2, -(-3 * 60_000_000 // (n * k * 2)))
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(count)]
        wts = [w.t().contiguous() for w in ws]
        ref = gy @ ws[0]
        err = ((F.linear(gy, wts[0]).float() - ref.float()).norm() / ref.float().norm()).item()
        t = time_interleaved({"NN": [lambda w=w: gy @ w for w in ws], "TN": [lambda w=w: F.linear(gy, w) for w in wts]},
                             rounds=5, timer=time_in_graph)
        ratios = sorted(a / b for a, b in zip(t["NN"], t["TN"]))
        print(f"grad-x M={m} {n}x{k}: NN {statistics.median(t['NN']):.1f} us, TN {statistics.median(t['TN']):.1f} us, "
              f"NN/TN median {ratios[len(ratios) // 2]:.3f} [{ratios[0]:.3f}-{ratios[-1]:.3f}] diff {err:.1e}")
        del ws, wts
        torch.cuda.empty_cache()


main()
