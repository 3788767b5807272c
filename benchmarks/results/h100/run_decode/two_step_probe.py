"""Why the two-step forward / grad-x lose more than the decode's time: interleaved rounds of
cuBLAS on the benchmark's dense weights, ours, the decode alone, and cuBLAS on our decoded
buffers; kernel names of each GEMM."""
import statistics, sys, json
import torch, torch.nn.functional as F
from benchmarks.kernels import copies_for, time_in_graph, GROUP_SIZE
from ternary.kernels.linear import triton as tl_lin
from ternary.state.packing import random_packed, unpack

shapes = [tuple(int(v) for v in s.split("x")) for s in sys.argv[1].split(",")]
rows = [int(v) for v in sys.argv[2].split(",")]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
dev = torch.device("cuda")
out = {}

def names(fn):
    from torch.profiler import profile, ProfilerActivity
    fn(); torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        fn(); torch.cuda.synchronize()
    return sorted({e.name[:90] for e in p.events() if e.device_type.name == "CUDA"})

for n, k in shapes:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // GROUP_SIZE)
    count = copies_for(n * -(-k // 5) + n * groups, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    dcount = copies_for(n * k * 2, dev)
    dense = [unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(GROUP_SIZE, 1)[:, :k].bfloat16()
             for p, e in states[:dcount]]
    static = dict(in_features=k, group_size=GROUP_SIZE)
    bufs = [tl_lin.dequantize(p, e, **static) for p, e in states[:dcount]]
    print(f"{n}x{k}: buffer stride {bufs[0].stride()} dense stride {dense[0].stride()} "
          f"equal {bool(torch.equal(bufs[0], dense[0]))}", flush=True)
    for m in rows:
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        gy = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
        fns = {
            "base_fwd": [lambda w=w: F.linear(x, w) for w in dense],
            "ours_fwd": [lambda s=s: tl_lin.forward(x, s[0], s[1], None, bias_frac_bits=16, **static) for s in states],
            "buf_fwd": [lambda w=w: F.linear(x, w) for w in bufs],
            "decode": [lambda s=s: tl_lin.dequantize(s[0], s[1], **static) for s in states[:4]],
            "base_gx": [lambda w=w: gy @ w for w in dense],
            "ours_gx": [lambda s=s: tl_lin.grad_x(gy, s[0], s[1], **static) for s in states],
            "buf_gx": [lambda w=w: gy @ w for w in bufs],
        }
        times = {name: [] for name in fns}
        for _ in range(rounds):
            for name, calls in fns.items():
                times[name].append(time_in_graph(calls))
        med = {name: statistics.median(v) for name, v in times.items()}
        ratio = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))
        line = (f"{n}x{k} M={m}: " + "  ".join(f"{k2}={v:.1f}" for k2, v in med.items())
                + f" | fwd base/ours {ratio('base_fwd','ours_fwd'):.3f} base/buf {ratio('base_fwd','buf_fwd'):.3f}"
                + f" | gx base/ours {ratio('base_gx','ours_gx'):.3f} base/buf {ratio('base_gx','buf_gx'):.3f}")
        print(line, flush=True)
        kn = {name: names(calls[0]) for name, calls in fns.items() if name != "decode"}
        for name, v in kn.items():
            print(f"   {name}: {v}", flush=True)
        out[f"{n}x{k}x{m}"] = dict(times=times, kernels=kn)
        del x, gy
    del states, dense, bufs
    torch.cuda.empty_cache()
json.dump(out, open(sys.argv[4] if len(sys.argv) > 4 else "/tmp/two_step_probe.json", "w"), indent=1)
