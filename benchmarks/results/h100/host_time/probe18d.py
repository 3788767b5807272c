"""Session 18: host time per call (no sync inside; the card is faster than the host on these shapes) and a
cProfile of the update's launch path and of small-layer forward / grad-x."""
import cProfile, pstats, time, io, torch
from benchmarks.kernels import GROUP_SIZE
from ternary.kernels.linear import triton as K
from ternary.kernels.update import triton as U
from ternary.state.packing import random_packed

dev = torch.device("cuda")


def host_us(fn, calls=200):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - start) / calls * 1e6
    torch.cuda.synchronize()
    return host


def profile(label, fn, calls=200):
    fn(); torch.cuda.synchronize()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(calls):
        fn()
    pr.disable()
    torch.cuda.synchronize()
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(22)
    print(f"==== {label}\n" + "\n".join(out.getvalue().splitlines()[:45]), flush=True)


n = k = 1024
m = 256
gen = torch.Generator().manual_seed(0)
packed = random_packed(n, k, generator=gen).to(dev)
E = torch.zeros(n, -(-k // GROUP_SIZE), dtype=torch.int8, device=dev)
E_accum, T_accum = torch.zeros_like(E), torch.zeros(n, k, dtype=torch.int8, device=dev)
bias = torch.zeros(n, dtype=torch.int32, device=dev)
x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
grad_y = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
kw = dict(in_features=k, group_size=GROUP_SIZE)
calls = {
    "update validated": lambda: U.update(packed, E, E_accum, T_accum, bias, x, grad_y, validated=True, **rule),
    "update checked": lambda: U.update(packed, E, E_accum, T_accum, bias, x, grad_y, **rule),
    "forward M=256 (two-step)": lambda: K.forward(x, packed, E, bias, bias_frac_bits=16, **kw),
    "forward M=64 (wgmma)": lambda: K.forward(x[:64], packed, E, bias, bias_frac_bits=16, **kw),
    "forward M=16 (mma)": lambda: K.forward(x[:16], packed, E, bias, bias_frac_bits=16, **kw),
    "forward M=1 (table)": lambda: K.forward(x[:1], packed, E, bias, bias_frac_bits=16, **kw),
    "grad_x M=256": lambda: K.grad_x(grad_y, packed, E, **kw),
    "grad_x M=16": lambda: K.grad_x(grad_y[:16], packed, E, **kw),
    "cublas linear": lambda: torch.nn.functional.linear(x, x[:n]),
    "empty launch (torch add)": lambda: x.add(1),
}
for label, fn in calls.items():
    print(f"host {label}: {host_us(fn):.1f} us per call", flush=True)
profile("update validated", calls["update validated"])
profile("forward M=256", calls["forward M=256 (two-step)"])
profile("forward M=16", calls["forward M=16 (mma)"])
