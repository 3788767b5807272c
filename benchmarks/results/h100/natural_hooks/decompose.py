"""Where natural-order hooks lose: the regrouping (skipped: wrong signs, timing only) and x's row stride."""
import statistics, types, torch
from triton.experimental import gluon
from benchmarks.kernels import time_interleaved, paired_ratio, GROUP_SIZE
from ternary.kernels.update import triton as triton_update, triton_wgmma_ws as ws, UpdatedTensors
from ternary.state.packing import random_packed
from ternary.kernels.update.triton_rule import hook_planes

@gluon.jit
def _skip(signs_low, signs_high):
    pass

g = dict(ws.__dict__)
for name in ["_fetch_next", "_accumulate", "_step_tile_bias", "_product", "_load_part", "_rule", "_ws_vote_kernel"]:
    fn = getattr(ws, name).fn
    copy = types.FunctionType(fn.__code__, g, name, fn.__defaults__, fn.__closure__)
    copy.__annotations__ = fn.__annotations__
    copy.__kwdefaults__ = fn.__kwdefaults__
    g[name] = gluon.jit(copy)
g["natural_to_planes"] = _skip
g_pre = dict(ws.__dict__)
_made = {}


def _cached_descriptors(x, grad_y, blocks, block_m, block_n, block_b, natural):
    key = (x.data_ptr(), grad_y.data_ptr())
    if key not in _made:
        _made.clear()
        _made[key] = ws.hook_descriptors(x, grad_y, blocks, block_m, block_n, block_b, False)
    return _made[key]


g_pre["hook_descriptors"] = _cached_descriptors
pre_update = types.FunctionType(ws.ws_update.__code__, g_pre, "ws_update", ws.ws_update.__defaults__)
pre_update.__kwdefaults__ = ws.ws_update.__kwdefaults__
skip_update = types.FunctionType(ws.ws_update.__code__, g, "ws_update", ws.ws_update.__defaults__)
skip_update.__kwdefaults__ = ws.ws_update.__kwdefaults__

def main():
    print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", flush=True)
    for n, k in [(16384, 16384), (14336, 4096)]:
        m = 8192
        gen = torch.Generator().manual_seed(n + k + m)
        groups = -(-k // GROUP_SIZE)
        dev = "cuda"
        packed = random_packed(n, k, generator=gen).to(dev)
        E = torch.randint(-20, 5, (n, groups), dtype=torch.int8, generator=gen).to(dev)
        E_accum = torch.randint(-100, 100, (n, groups), dtype=torch.int8, generator=gen).to(dev)
        T_accum = torch.randint(-3, 4, (n, k), dtype=torch.int8, generator=gen).to(dev)
        bias = torch.randint(-1000, 1000, (n,), dtype=torch.int32, generator=gen).to(dev)
        x = torch.randn(m, k, generator=gen).to(dev, torch.bfloat16)
        x_wide = torch.zeros(m, k + 64, device=dev, dtype=torch.bfloat16)
        x_wide[:, :k] = x
        x_strided = x_wide[:, :k]
        grad_y = torch.randn(m, n, generator=gen).to(dev, torch.bfloat16)
        rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
        new = UpdatedTensors(torch.empty_like(packed), torch.empty_like(E), torch.empty_like(E), torch.empty_like(T_accum),
                             torch.empty_like(bias))

        def direct(natural, hooks, fn=ws.ws_update):
            ws.WS_NATURAL_MIN_ROWS = 0 if natural else 1 << 30
            g["WS_NATURAL_MIN_ROWS"] = ws.WS_NATURAL_MIN_ROWS
            return fn(packed, E, E_accum, T_accum, bias, hooks, grad_y, new, **rule)
        a = [t.clone() for t in direct(False, x)]
        b = [t.clone() for t in direct(True, x_strided)]
        print("strided natural equal:", all(torch.equal(u, v) for u, v in zip(a, b)), flush=True)
        times = time_interleaved({
            "gemm": lambda: grad_y.T @ x,
            "planes": lambda: direct(False, x),
            "natural": lambda: direct(True, x),
            "planes_kernel": lambda: direct(False, x, pre_update),
            "planes_pass": lambda: hook_planes(x, 64, 64, -(-packed.shape[1] // 64), x.dtype),
            "skip": lambda: direct(True, x, skip_update),
        }, rounds=12)
        med = {key: statistics.median(v) for key, v in times.items()}
        print(f"n={n} k={k} m={m}: " + " ".join(f"{key} {med[key]:.1f} ({paired_ratio(times[key], times['gemm']):.3f}x)"
                                               for key in times), flush=True)
        del packed, E, E_accum, T_accum, bias, x, grad_y, x_wide, x_strided, new
        torch.cuda.empty_cache()


if __name__ == '__main__':
    main()
