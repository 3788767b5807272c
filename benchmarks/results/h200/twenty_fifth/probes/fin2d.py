import torch, triton, triton.language as tl


@triton.jit
def finish2d(ws_ptr, out_ptr, C, stride_ws, SPLITS, SB: tl.constexpr, BLOCK: tl.constexpr):
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)[None, :]
    s = tl.arange(0, SB)[:, None]
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for s0 in range(0, SPLITS, SB):
        part = tl.load(ws_ptr + (s0 + s) * stride_ws + c, mask=(c < C) & (s0 + s < SPLITS), other=0.0)
        total += tl.sum(part, axis=0)
    cc = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + cc, total.to(out_ptr.dtype.element_ty), mask=cc < C)


def fin_2d(ws, sb, block, warps=4):
    splits, m, c = ws.shape
    out = torch.empty((m, c), dtype=torch.bfloat16, device=ws.device)
    finish2d[(triton.cdiv(c, block),)](ws, out, c, ws.stride(0), splits, SB=sb, BLOCK=block, num_warps=warps)
    return out
