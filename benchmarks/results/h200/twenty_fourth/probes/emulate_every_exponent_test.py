"""CPU emulation of test_lut_gemv_scales_by_every_exponent: fp32 'got' (one FMA chain per group, like the kernel's
order roughly) against the float64 reference; check the new criterion passes and that a wrong exponent fails."""
import sys, torch
sys.path.insert(0, "tests")
from triton_guard import DEVICE  # noqa
from test_triton_tiled_gemv import decode_state
from test_triton_table_gemv import float64_forward
from ternary.kernels.linear import reference
n, k, g = 256, 400, 40
state, gen = decode_state(n, k, g, seed=11)
packed = state.T_packed.cpu()
exponents = torch.arange(-128, 128, dtype=torch.int16).to(torch.int8)[:, None].repeat(1, k // g)
W = reference.dequantize(packed, exponents, in_features=k, group_size=g)
checked = torch.zeros(n, dtype=torch.bool)
worst = 0
for scale in (2.0**-60, 2.0**60):
    x = torch.randn(1, k, generator=gen) * scale
    expected = float64_forward(x, packed, exponents, None, k, g)[0]
    magnitude = (x.double().abs() @ W.double().abs().T)[0]
    got = (x.float() @ W.float().T)[0].double()  # fp32 arithmetic
    normal = (magnitude > 2.0**-100) & (magnitude < 2.0**120)
    err = ((got - expected).abs() / magnitude)[normal]
    worst = max(worst, float(err.max()))
    old = ((got - expected).abs() / expected.abs())[(expected.abs() > 2.0**-100) & (expected.abs() < 2.0**120)]
    print("scale", scale, "new-criterion max", float(err.max()), "old per-row max", float(old.max()))
    # a wrong exponent in one row (e off by one) must fail
    W2 = W.clone(); W2[200] *= 2
    bad = (x.float() @ W2.float().T)[0].double()
    err2 = ((bad - expected).abs() / magnitude)[normal]
    print("  wrong-exponent row detected:", bool(err2.max() >= 1e-5) or not bool(normal[200]))
    checked |= normal
print("all rows checked", bool(checked.all()), "worst", worst)
