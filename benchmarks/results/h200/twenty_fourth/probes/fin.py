import torch, triton, triton.language as tl


@triton.jit
def finish_kernel(ws_ptr, bias_ptr, out_ptr, M, C, stride_ws, stride_wm, stride_om, stride_b, bias_scale, SPLITS,
                  HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr, AHEAD: tl.constexpr):
    m = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = c < C
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    rows = ws_ptr + m * stride_wm + c
    whole = SPLITS // AHEAD * AHEAD
    for s in range(0, whole, AHEAD):
        parts = ()
        for j in tl.static_range(AHEAD):
            parts = parts + (tl.load(rows + (s + j) * stride_ws, mask=mask, other=0.0),)
        for j in tl.static_range(AHEAD):
            total += parts[j]
    for s in range(whole, SPLITS):
        total += tl.load(rows + s * stride_ws, mask=mask, other=0.0)
    if HAS_BIAS:
        total += tl.load(bias_ptr + c * stride_b, mask=mask, other=0).to(tl.float32) * bias_scale
    tl.store(out_ptr + m * stride_om + c, total.to(out_ptr.dtype.element_ty), mask=mask)


def finish(ws, bias, bias_frac_bits, dtype, block=256, ahead=8):
    splits, m, c = ws.shape
    out = torch.empty((m, c), dtype=dtype, device=ws.device)
    finish_kernel[(m, triton.cdiv(c, block))](
        ws, bias if bias is not None else ws, out, m, c, ws.stride(0), ws.stride(1), out.stride(0),
        bias.stride(0) if bias is not None else 0, 2.0**-bias_frac_bits, splits, HAS_BIAS=bias is not None,
        BLOCK=block, AHEAD=ahead)
    return out
