"""Triton's launch of the wgmma update at 4096^2 M = 2048, split: binder, cache key, the rest, the compiled run."""
import time, torch
from benchmarks.kernels import GROUP_SIZE, with_constants
from ternary.kernels.update import triton as tu, triton_wgmma_ws as ws
from ternary.state.packing import random_packed
from triton import knobs
from triton.runtime import driver
from triton.runtime.jit import compute_cache_key

print(torch.cuda.get_device_name(), flush=True)
n = k = 4096; m = 2048; dev = "cuda"
groups = -(-k // GROUP_SIZE)
packed = random_packed(n, k).to(dev)
E = torch.zeros(n, groups, dtype=torch.int8, device=dev); E_accum = torch.zeros_like(E)
T_accum = torch.zeros(n, k, dtype=torch.int8, device=dev); bias = torch.zeros(n, dtype=torch.int32, device=dev)
x = torch.randn(m, k, device=dev, dtype=torch.bfloat16); grad_y = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
real = ws._ws_vote_kernel
captured = {}
class Capture:
    def __getitem__(self, grid):
        def go(*a, **kw):
            captured.update(kernel=real[grid](*a, **kw), a=a, kw=kw, grid=grid)
        return go
full = lambda: tu.update(packed, E, E_accum, T_accum, bias, x, grad_y, validated=True, **rule)
with_constants(ws, full, _ws_vote_kernel=Capture())
kern, a, kw, grid = captured["kernel"], captured["a"], captured["kw"], captured["grid"]
args = list(a) + [kw[name] for name in real.arg_names[len(a):]]

def per_call(fn, calls=2000):
    fn(); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t) / calls * 1e6
    torch.cuda.synchronize()
    return host
device = driver.active.get_current_device()
kernel_cache, key_cache, target, backend, binder = real.device_caches[device]
kw2 = dict(kw, debug=real.debug or knobs.runtime.debug, instrumentation_mode=knobs.compilation.instrumentation_mode)
bound, spec, opts = binder(*a, **kw2)
print("binder %.1f us" % per_call(lambda: binder(*a, **kw2)))
print("cache key %.1f us" % per_call(lambda: compute_cache_key(key_cache, spec, opts)))
print("device+stream %.1f us" % per_call(lambda: driver.active.get_current_stream(driver.active.get_current_device())))
print("jit launch %.1f us" % per_call(lambda: real[grid](*a, **kw), calls=300))
stream = driver.active.get_current_stream(device)
print("compiled run %.1f us" % per_call(lambda: kern.run(grid[0], 1, 1, stream, kern.function, kern.packed_metadata, None, None, None, *args), calls=300))
