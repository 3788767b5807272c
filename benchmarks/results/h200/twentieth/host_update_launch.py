"""Where update()'s host time goes beyond its stages (4096^2 M = 2048)."""
import time, torch, triton
from benchmarks.kernels import GROUP_SIZE, with_constants
from ternary.kernels.update import triton as tu, triton_wgmma_ws as ws, triton_wgmma as tw, UpdatedTensors
from ternary.state.packing import random_packed
from triton import knobs

print(torch.cuda.get_device_name(), flush=True)
n = k = 4096; m = 2048; dev = "cuda"
groups = -(-k // GROUP_SIZE)
packed = random_packed(n, k).to(dev)
E = torch.zeros(n, groups, dtype=torch.int8, device=dev); E_accum = torch.zeros_like(E)
T_accum = torch.zeros(n, k, dtype=torch.int8, device=dev); bias = torch.zeros(n, dtype=torch.int32, device=dev)
x = torch.randn(m, k, device=dev, dtype=torch.bfloat16); grad_y = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)

def per_call(fn, calls=300):
    fn(); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t) / calls * 1e6
    torch.cuda.synchronize()
    return host

full = lambda: tu.update(packed, E, E_accum, T_accum, bias, x, grad_y, validated=True, **rule)
real = ws._ws_vote_kernel
class Stub:
    def __getitem__(self, grid):
        return lambda *a, **kw: None
print("full %.1f" % per_call(full), flush=True)
print("full, launch stubbed %.1f" % with_constants(ws, lambda: per_call(full), _ws_vote_kernel=Stub()), flush=True)
# the compiled kernel called directly
captured = {}
class Capture:
    def __getitem__(self, grid):
        def go(*a, **kw):
            captured["kernel"] = real[grid](*a, **kw)
            captured["args"] = list(a) + [kw[name] for name in real.arg_names[len(a):]]
            captured["grid"] = grid
        return go
with_constants(ws, full, _ws_vote_kernel=Capture())
kern, args, grid = captured["kernel"], captured["args"], captured["grid"]
from triton.runtime import driver
def direct():
    device = driver.active.get_current_device()
    stream = driver.active.get_current_stream(device)
    kern.run(grid[0], 1, 1, stream, kern.function, kern.packed_metadata, None, None, None, *args)
try:
    print("direct run (same args) %.1f" % per_call(direct), flush=True)
except Exception as e:
    print("direct failed", type(e).__name__, e)
print("torch.empty x5 %.1f" % per_call(lambda: [torch.empty_like(t) for t in (packed, E, E_accum, T_accum, bias)]))
print("gc enabled:", __import__("gc").isenabled())
import gc; gc.disable()
print("full, gc off %.1f" % per_call(full), flush=True)
