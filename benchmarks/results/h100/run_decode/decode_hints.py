"""Store cache hints for the run decode, the card's write bandwidth (fill_), and the bias epilogue."""
import importlib.util, statistics, sys, re, torch
from benchmarks.kernels import copies_for, time_in_graph, time_interleaved
from ternary.kernels.linear import triton_run_decode as R
from ternary.kernels.linear import triton as K
from ternary.state.packing import random_packed

src = open(R.__file__).read()
variants = {}
for name, hint in [("cs", 'cache_modifier=".cs"'), ("wt", 'cache_modifier=".wt"'), ("evict_first", 'eviction_policy="evict_first"'),
                   ("evict_last", 'eviction_policy="evict_last"')]:
    text = re.sub(r"tl\.store\((out[^\n]*?), mask=", lambda m: f"tl.store({m.group(1)}, {hint}, mask=", src)
    path = f"/tmp/rd_{name}.py"
    open(path, "w").write(text)
    spec = importlib.util.spec_from_file_location(f"rd_{name}", path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    variants[name] = mod
    print(name, text.count(hint), flush=True)
dev = torch.device("cuda")
for n, k in [(16384, 16384), (4096, 4096)]:
    gen = torch.Generator().manual_seed(n)
    st = [(random_packed(n, k, generator=gen).to(dev), torch.randint(-8, 8, (n, -(-k // 40)), generator=gen).to(torch.int8).to(dev))
          for _ in range(copies_for(n * k // 5, dev))]
    ref = R.dequantize_runs(*st[0], in_features=k, group_size=40)
    for name, mod in variants.items():
        assert torch.equal(mod.dequantize_runs(*st[0], in_features=k, group_size=40), ref), name
    bufs = [torch.empty(n, k, dtype=torch.bfloat16, device=dev) for _ in range(4)]
    fns = {"shipped": [lambda s=s: R.dequantize_runs(*s, in_features=k, group_size=40) for s in st[:4]]}
    for name, mod in variants.items():
        fns[name] = [lambda s=s, mod=mod: mod.dequantize_runs(*s, in_features=k, group_size=40) for s in st[:4]]
    fns["fill_"] = [lambda b=b: b.fill_(1.0) for b in bufs]
    fns["copy_packed_to_bf16"] = [lambda b=b: b.copy_(bufs[0]) for b in bufs[1:]]
    times = time_interleaved(fns, rounds=3, timer=time_in_graph)
    for name, t in times.items():
        us = statistics.median(t)
        print(f"{n}x{k} {name:22s} {us:8.1f} us {n * k * 2 / us / 1e6:5.2f} TB/s written", flush=True)
    del st, bufs
    torch.cuda.empty_cache()

# bias epilogue at M = 2048
n = k = 16384
m = 2048
x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.01
bias = torch.randint(-2**20, 2**20, (n,), device=dev, dtype=torch.int32)
value = bias.double() * 2.0**-16
ref = (x.double() @ w.double().T + value)
def current():
    return (torch.nn.functional.linear(x, w).to(torch.float32) + value.float()).to(torch.bfloat16)
try:
    def addmm():
        return torch.addmm(value.float(), x, w.T, out_dtype=torch.float32).to(torch.bfloat16)
    addmm()
except Exception as e:
    print("addmm out_dtype:", type(e).__name__, str(e)[:200]); addmm = None
try:
    def mm32():
        return (torch.mm(x, w.T, out_dtype=torch.float32) + value.float()).to(torch.bfloat16)
    mm32()
except Exception as e:
    print("mm out_dtype:", type(e).__name__, str(e)[:200]); mm32 = None
fns = {"no_bias": [lambda: torch.nn.functional.linear(x, w)], "current": [current]}
if addmm: fns["addmm_out_fp32"] = [addmm]
if mm32: fns["mm_out_fp32"] = [mm32]
times = time_interleaved(fns, rounds=3, timer=time_in_graph)
for name, t in times.items():
    err = "" if name == "no_bias" else f" rel err {float((fns[name][0]().double() - ref).norm() / ref.norm()):.3e}"
    print(f"bias M={m} {name:16s} {statistics.median(t):8.1f} us{err}", flush=True)
