"""GPU probe: one-row forwards called eagerly from Python (no CUDA graph): time per call when calls are
queued back to back (host-bound if the host's launch work exceeds the card's), against bf16 F.linear."""
import statistics, time
import torch, torch.nn.functional as F
import torch.utils._pytree as pytree
from ternary import DecodeLinearState, LinearState, linear
from ternary.kernels.linear import triton as tl_lin

dev = torch.device("cuda")
for n, k in [(16384, 16384), (4096, 4096)]:
    layer = LinearState.random(k, n, generator=torch.Generator().manual_seed(0))
    layer = pytree.tree_map(lambda t: t.to(dev), layer)
    decode = DecodeLinearState.from_layer(layer)
    w = layer.to_float().to(torch.bfloat16)
    b = layer.bias_value().to(torch.bfloat16)
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    st = dict(in_features=k, group_size=40, bias_frac_bits=16)
    calls = {
        "F.linear bf16": lambda: F.linear(x, w, b),
        "forward_decode": lambda: tl_lin.forward_decode(x, decode.T_packed, decode.E, decode.T_tiles, decode.E_tiles,
                                                         decode.bias, **st),
        "linear(DecodeLinearState)": lambda: linear(decode, x, backend="triton"),
        "linear(LinearState)": lambda: linear(layer, x, backend="triton"),
    }
    with torch.no_grad():
        for name, fn in calls.items():
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
            per_call = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(200):
                    fn()
                host = (time.perf_counter() - start) / 200 * 1e6
                torch.cuda.synchronize()
                wall = (time.perf_counter() - start) / 200 * 1e6
                per_call.append((host, wall))
            host = statistics.median(p[0] for p in per_call)
            wall = statistics.median(p[1] for p in per_call)
            print(f"{n}x{k} {name:28s} host {host:7.1f} us/call, wall {wall:7.1f} us/call (200 eager calls)", flush=True)
