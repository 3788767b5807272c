"""Session 18: how much of each call's host time is Triton's launcher (JITFunction.run, which binds and specialises
the arguments, looks the kernel up and launches it), on a 1024^2 layer where the card is faster than the host."""
import time, torch
from triton.runtime.jit import JITFunction
from benchmarks.kernels import GROUP_SIZE
from ternary.kernels.linear import triton as K
from ternary.kernels.update import triton as U
from ternary.state.packing import random_packed

dev = torch.device("cuda")
original = JITFunction.run
spent = {"run": 0.0, "launches": 0}


def timed_run(self, *args, **kwargs):
    start = time.perf_counter()
    try:
        return original(self, *args, **kwargs)
    finally:
        spent["run"] += time.perf_counter() - start
        spent["launches"] += 1


JITFunction.run = timed_run
n = k = 1024
gen = torch.Generator().manual_seed(0)
packed = random_packed(n, k, generator=gen).to(dev)
E = torch.zeros(n, -(-k // GROUP_SIZE), dtype=torch.int8, device=dev)
E_accum, T_accum = torch.zeros_like(E), torch.zeros(n, k, dtype=torch.int8, device=dev)
bias = torch.zeros(n, dtype=torch.int32, device=dev)
x = torch.randn(256, k, device=dev, dtype=torch.bfloat16)
grad_y = torch.randn(256, n, device=dev, dtype=torch.bfloat16)
rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
kw = dict(in_features=k, group_size=GROUP_SIZE)
calls = {
    "update validated M=256": lambda: U.update(packed, E, E_accum, T_accum, bias, x, grad_y, validated=True, **rule),
    "forward M=256 (two-step)": lambda: K.forward(x, packed, E, bias, bias_frac_bits=16, **kw),
    "forward M=32 (wgmma)": lambda: K.forward(x[:32], packed, E, bias, bias_frac_bits=16, **kw),
    "forward M=16 (mma)": lambda: K.forward(x[:16], packed, E, bias, bias_frac_bits=16, **kw),
    "forward M=1 (table)": lambda: K.forward(x[:1], packed, E, bias, bias_frac_bits=16, **kw),
    "grad_x M=16": lambda: K.grad_x(grad_y[:16], packed, E, **kw),
}
for label, fn in calls.items():
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    spent.update(run=0.0, launches=0)
    count = 200
    start = time.perf_counter()
    for _ in range(count):
        fn()
    total = (time.perf_counter() - start) / count * 1e6
    torch.cuda.synchronize()
    print(f"{label}: host {total:.1f} us per call, of which Triton's launcher {spent['run'] / count * 1e6:.1f} us "
          f"over {spent['launches'] / count:.0f} launches", flush=True)
