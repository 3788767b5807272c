import importlib, importlib.util, re, statistics, torch
from benchmarks.kernels import copies_for, time_in_graph, time_interleaved
from ternary.kernels.linear import triton_run_decode as R
from ternary.state.packing import random_packed
C = importlib.import_module("scratch.run_decode_coalesced")

def with_hint(module_file, name, hint):
    text = open(module_file).read()
    text = re.sub(r"tl\.store\((out[^\n]*?), mask=", lambda m: f"tl.store({m.group(1)}, {hint}, mask=", text)
    path = f"/tmp/{name}.py"; open(path, "w").write(text)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); return mod

mods = {"shipped": R, "shipped_evict_last": with_hint(R.__file__, "se", 'eviction_policy="evict_last"'),
        "coalesced": C, "coalesced_evict_last": with_hint(C.__file__, "ce", 'eviction_policy="evict_last"')}
dev = torch.device("cuda")
for n, k in [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]:
    gen = torch.Generator().manual_seed(n + k)
    st = [(random_packed(n, k, generator=gen).to(dev), torch.randint(-8, 8, (n, -(-k // 40)), generator=gen).to(torch.int8).to(dev))
          for _ in range(copies_for(n * k // 5, dev))]
    ref = R.dequantize_runs(*st[0], in_features=k, group_size=40)
    fns = {}
    for name, mod in mods.items():
        for tile in ([(1, 256, 8), (2, 128, 8), (1, 128, 4)] if name.startswith("coalesced") else [(1, 256, 8)]):
            same = torch.equal(mod.dequantize_runs(*st[0], in_features=k, group_size=40, tile=tile), ref)
            fns[f"{name}{tile}"] = [lambda s=s, mod=mod, tile=tile: mod.dequantize_runs(*s, in_features=k, group_size=40, tile=tile) for s in st[:4]]
            print(f"{n}x{k} {name}{tile} exact {same}", flush=True)
    times = time_interleaved(fns, rounds=3, timer=time_in_graph)
    for name, t in times.items():
        us = statistics.median(t)
        print(f"{n}x{k} {name:36s} {us:8.1f} us {n * k * 2 / us / 1e6:5.2f} TB/s", flush=True)
    del st; torch.cuda.empty_cache()
