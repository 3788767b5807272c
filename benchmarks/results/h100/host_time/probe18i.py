"""Session 18: cProfile (cumulative) of the two-step forward and the update on a 1024^2 layer, after the layout cache."""
import cProfile, io, pstats, torch
from benchmarks.kernels import GROUP_SIZE
from ternary.kernels.linear import triton as K
from ternary.kernels.update import triton as U
from ternary.state.packing import random_packed

dev = torch.device("cuda")
n = k = 1024
gen = torch.Generator().manual_seed(0)
packed = random_packed(n, k, generator=gen).to(dev)
E = torch.zeros(n, -(-k // GROUP_SIZE), dtype=torch.int8, device=dev)
E_accum, T_accum = torch.zeros_like(E), torch.zeros(n, k, dtype=torch.int8, device=dev)
bias = torch.zeros(n, dtype=torch.int32, device=dev)
x = torch.randn(256, k, device=dev, dtype=torch.bfloat16)
grad_y = torch.randn(256, n, device=dev, dtype=torch.bfloat16)
rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
for label, fn in {"forward M=256": lambda: K.forward(x, packed, E, bias, bias_frac_bits=16, in_features=k,
                                                        group_size=GROUP_SIZE),
                  "update M=256": lambda: U.update(packed, E, E_accum, T_accum, bias, x, grad_y, validated=True,
                                                   **rule)}.items():
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(300):
        fn()
    profile.disable()
    torch.cuda.synchronize()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(40)
    print(f"==== {label}\n" + "\n".join(out.getvalue().splitlines()[:60]), flush=True)
