"""The compiled-kernel launch path (ternary.kernels.launch) on the card: every launch site's outputs with the
direct run equal to Triton's own launch, then host time per call with and without it."""
import time, torch
from ternary.kernels import launch as L
from ternary.kernels.linear import triton as T, triton_grouped as TG, triton_run_decode as RD
from ternary.kernels.update import triton as U
from ternary.state.packing import random_packed

print(torch.cuda.get_device_name(), flush=True)
dev = "cuda"

def equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b) if a.dtype != torch.float32 or not a.isnan().any() else torch.equal(a.nan_to_num(), b.nan_to_num())
    return all((u is None and v is None) or equal(u, v) for u, v in zip(a, b))

def check(name, fn):
    try:
        L.ENABLED = False
        plain = fn(); torch.cuda.synchronize()
        L.ENABLED = True
        entries = sum(len(t[1]) for t in L._TABLES.values())
        first = fn()
        added = sum(len(t[1]) for t in L._TABLES.values()) - entries
        runs = counter[0]
        second = fn(); torch.cuda.synchronize()
        print(f"{name}: equal to Triton's launch {equal(plain, first)} (1st call) / {equal(plain, second)} (2nd); "
              f"direct runs in the 2nd call {counter[0] - runs}; table entries added {added}", flush=True)
    except Exception as e:
        print(f"{name}: ERROR {type(e).__name__}: {str(e)[:200]}", flush=True)

counter = [0]
# count direct runs: _current_stream is called only on the direct path
real_stream = L._current_stream
def stream(device):
    counter[0] += 1
    return real_stream(device)
L._current_stream = stream

n, k, g = 1024, 1030, 40
kb, groups = -(-k // 5), -(-k // g)
gen = torch.Generator().manual_seed(0)
P = random_packed(n, k, generator=gen).to(dev)
E = torch.randint(-6, 2, (n, groups), dtype=torch.int8, generator=gen).to(dev)
bias = torch.randint(-1000, 1000, (n,), dtype=torch.int32, generator=gen).to(dev)
kw = dict(in_features=k, group_size=g, bias_frac_bits=8)
rule = dict(in_features=k, group_size=g, theta_t=2, theta_e=4, e_min=-24, e_max=8, bias_step=64)
T_accum = torch.randint(-3, 4, (n, k), dtype=torch.int8, generator=gen).to(dev)
E_accum = torch.randint(-5, 5, (n, groups), dtype=torch.int8, generator=gen).to(dev)
hooks = {m: (torch.randn(m, k, generator=gen).to(dev, torch.bfloat16), torch.randn(m, n, generator=gen).to(dev, torch.bfloat16))
         for m in (1, 16, 2048)}
for m, (x, gy) in hooks.items():  # the dispatch's own paths first
    check(f"forward M={m}", lambda: T.forward(x, P, E, bias, **kw))
    check(f"grad_x M={m}", lambda: T.grad_x(gy, P, E, in_features=k, group_size=g))
    if m > 1:
        check(f"update M={m} bf16", lambda: U.update(P, E, E_accum, T_accum, bias, x, gy, **rule))
x, gy = hooks[16]
check("update M=16 fp32", lambda: U.update(P, E, E_accum, T_accum, bias, x.float(), gy.float(), **rule))

def host(fn, calls=300):
    fn(); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    h = (time.perf_counter() - t) / calls * 1e6
    torch.cuda.synchronize()
    return h
L._current_stream = real_stream
n4 = k4 = 4096
P4 = random_packed(n4, k4).to(dev); E4 = torch.zeros(n4, -(-k4 // g), dtype=torch.int8, device=dev)
bias4 = torch.zeros(n4, dtype=torch.int32, device=dev); T_accum4 = torch.zeros(n4, k4, dtype=torch.int8, device=dev)
rule4 = dict(rule, in_features=k4)
cases = []
for m in (1, 16, 2048):
    x4 = torch.randn(m, k4, device=dev, dtype=torch.bfloat16); gy4 = torch.randn(m, n4, device=dev, dtype=torch.bfloat16)
    cases += [(f"forward M={m}", lambda x4=x4: T.forward(x4, P4, E4, bias4, in_features=k4, group_size=g, bias_frac_bits=8)),
              (f"grad_x M={m}", lambda gy4=gy4: T.grad_x(gy4, P4, E4, in_features=k4, group_size=g))]
    if m == 2048:
        cases.append((f"update M={m}", lambda x4=x4, gy4=gy4: U.update(P4, E4, E4, T_accum4, bias4, x4, gy4, validated=True,
                                                                      **rule4)))
for name, fn in cases:
    times = {}
    for rnd in range(2):
        for on in (False, True):
            L.ENABLED = on
            times.setdefault(on, []).append(host(fn))
    print(f"host us per call, 4096^2 {name}: Triton's launch {min(times[False]):.1f}, direct {min(times[True]):.1f}", flush=True)

L._current_stream = stream
x, gy = hooks[1]
check("forward_gemv M=1", lambda: T.forward_gemv(x, P, E, bias, **kw))
check("grad_x_gemv M=1", lambda: T.grad_x_gemv(gy, P, E, in_features=k, group_size=g))
x, gy = hooks[16]
check("forward M=16 fp32 (fused)", lambda: T.forward(x.float(), P, E, bias, **kw))
check("grad_x M=16 fp32", lambda: T.grad_x(gy.float(), P, E, in_features=k, group_size=g))
check("dequantize bf16 (runs)", lambda: T.dequantize(P, E, in_features=k, group_size=g, dtype=torch.bfloat16))
check("dequantize fp32", lambda: T.dequantize(P, E, in_features=k, group_size=g, dtype=torch.float32))
check("dequantize_planes fp32", lambda: T.dequantize_planes(P, E, group_size=g, dtype=torch.float32))
experts = 4
Pe = torch.stack([random_packed(n // 4, k, generator=gen) for _ in range(experts)]).to(dev)
Ee = torch.randint(-6, 2, (experts, n // 4, groups), dtype=torch.int8, generator=gen).to(dev)
offsets = torch.tensor([0, 100, 100, 400, 512], dtype=torch.int32, device=dev)
xs = torch.randn(512, k, generator=gen).to(dev, torch.bfloat16)
gys = torch.randn(512, n // 4, generator=gen).to(dev, torch.bfloat16)
check("grouped forward", lambda: TG.forward(xs, Pe, Ee, None, offsets, **kw))
check("grouped grad_x", lambda: TG.grad_x(gys, Pe, Ee, offsets, in_features=k, group_size=g))
print("compiled kernels in the table:", sum(len(t[1]) for t in L._TABLES.values()), "kernels:", len(L._TABLES), flush=True)
