"""GPU probe: the run decode's tile on an H200 against fill_ / copy_ of the same buffer (write ceiling)."""
import statistics
import torch
from benchmarks.kernels import time_in_graph, copies_for
from ternary.kernels.linear import triton_run_decode as rd
from ternary.state.packing import random_packed

dev = torch.device("cuda")
G = 40
TILES = [(1, 256, 8), (1, 512, 8), (1, 512, 16), (1, 256, 4), (2, 256, 8), (1, 128, 4), (2, 128, 8), (4, 128, 16),
         (1, 1024, 16)]
for n, k in [(16384, 16384), (14336, 4096), (4096, 14336), (4096, 4096)]:
    gen = torch.Generator().manual_seed(n + k)
    groups = -(-k // G)
    count = min(8, copies_for(n * -(-k // 5), dev))
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    ref = rd.dequantize_runs(*states[0], in_features=k, group_size=G)
    mb = ref.untyped_storage().nbytes()
    rows = {}
    for tile in TILES:
        try:
            w = rd.dequantize_runs(*states[0], in_features=k, group_size=G, tile=tile)
            same = torch.equal(w, ref)
            us = time_in_graph([lambda s=s, tile=tile: rd.dequantize_runs(*s, in_features=k, group_size=G, tile=tile)
                                for s in states])
            rows[str(tile)] = (us, same)
        except Exception as error:  # noqa: BLE001
            rows[str(tile)] = (float("nan"), f"{type(error).__name__}: {error}"[:80])
    bufs = [torch.empty_like(ref) for _ in range(2)]
    rows["fill_"] = (time_in_graph([lambda b=b: b.fill_(1.0) for b in bufs]), "-")
    rows["copy_"] = (time_in_graph([lambda: bufs[0].copy_(bufs[1]), lambda: bufs[1].copy_(bufs[0])]), "-")
    for name, (us, same) in rows.items():
        print(f"{n}x{k} {name:14s} {us:8.1f} us  {mb / us / 1e6:5.2f} TB/s written  same={same}", flush=True)
    del states, bufs, ref
    torch.cuda.empty_cache()
