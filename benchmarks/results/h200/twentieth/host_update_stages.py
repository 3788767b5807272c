"""Host time per call of the wgmma update at 4096^2 M = 2048 (card idle between calls), by stage."""
import cProfile, pstats, time, torch, triton
from benchmarks.kernels import GROUP_SIZE
from ternary.kernels.update import triton as tu, triton_wgmma_ws as ws, triton_wgmma as tw, UpdatedTensors
from ternary.kernels.linear.triton_launch import sm_count
from ternary.state.packing import random_packed

print(torch.cuda.get_device_name(), flush=True)
n = k = 4096; m = 2048; dev = "cuda"
groups = -(-k // GROUP_SIZE)
packed = random_packed(n, k).to(dev)
E = torch.zeros(n, groups, dtype=torch.int8, device=dev); E_accum = torch.zeros_like(E)
T_accum = torch.zeros(n, k, dtype=torch.int8, device=dev); bias = torch.zeros(n, dtype=torch.int32, device=dev)
x = torch.randn(m, k, device=dev, dtype=torch.bfloat16); grad_y = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)

def per_call(fn, calls=200):
    fn(); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t) / calls * 1e6
    torch.cuda.synchronize()
    total = (time.perf_counter() - t) / calls * 1e6
    return host, total

full = lambda: tu.update(packed, E, E_accum, T_accum, bias, x, grad_y, validated=True, **rule)
print("update() host %.1f us, with card %.1f us" % per_call(full), flush=True)
print("_check %.1f" % per_call(lambda: tu._check(packed, E, E_accum, T_accum, bias, x, grad_y, k, GROUP_SIZE))[0])
print("5 x empty_like %.1f" % per_call(lambda: [tu._new_like(t) for t in (packed, E, E_accum, T_accum, bias)])[0])
new = UpdatedTensors(*[tu._new_like(t) for t in (packed, E, E_accum, T_accum, bias)])
print("takes %.1f" % per_call(lambda: tu.wgmma_runs(x) and tw.takes(x, grad_y, T_accum, GROUP_SIZE))[0])
print("check_outputs %.1f" % per_call(lambda: tw.check_outputs(UpdatedTensors(packed, E, E_accum, T_accum, bias), new, GROUP_SIZE))[0])
block_m, block_n, block_b, stages, warps = ws.WS_UPDATE_TILE
print("hook_descriptors %.1f" % per_call(lambda: tw.hook_descriptors(x, grad_y, block_m, block_n, block_b))[0])
print("sm_count %.1f" % per_call(lambda: sm_count(x.device))[0])
g, gd, xld, xhd = tw.hook_descriptors(x, grad_y, block_m, block_n, block_b)
blocks = triton.cdiv(packed.shape[1], block_b)
def launch():
    ws._ws_vote_kernel[(min(triton.cdiv(n, block_n) * blocks, 132),)](
        gd, xld, xhd, packed, T_accum, E, E_accum, bias, new.T_packed, new.T_accum, new.E, new.E_accum, new.bias,
        m, n, k, packed.shape[1], E.shape[1], packed.stride(0), T_accum.stride(0), E.stride(0), 4, 16, -24, 8, 64,
        BYTES_PER_GROUP=GROUP_SIZE // 5, HAS_BIAS=True, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_B=block_b,
        STAGES=stages, GROUP_N=8, RULE_ROWS=ws.WS_RULE_ROWS, PRODUCT_REGISTERS=ws.WS_PRODUCT_REGISTERS, num_warps=warps)
print("bare launch host %.1f us, with card %.1f us" % per_call(launch), flush=True)
print("torch add host %.1f" % per_call(lambda: x.add(1))[0])
cProfile.run("for _ in range(200): full()", "/tmp/prof")
pstats.Stats("/tmp/prof").sort_stats("tottime").print_stats(30)
