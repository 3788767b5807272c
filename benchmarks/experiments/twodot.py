"""Scratch: fused forward with two async dots per step: digits 0..3 as one K = 4 BB operand, digit 4 as K = BB."""
import triton
import triton.language as tl
from ternary.kernels.linear.triton import _block_scales, _split_range
from ternary.kernels.linear.triton_base3 import bf16_exp2_bits, weight_tiles_bf16


@triton.jit
def two_kernel(x_ptr, p_ptr, e_ptr, out_ptr, M, N, KB, KBp, NG,
               stride_xm, stride_pn, stride_en, stride_os, stride_om,
               BYTES_PER_GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_B: tl.constexpr, SPLIT_K, GROUP_M: tl.constexpr):
    if GROUP_M > 0:
        pid = tl.program_id(0)
        tiles_m = tl.cdiv(M, BLOCK_M)
        tiles_n = tl.cdiv(N, BLOCK_N)
        in_group = GROUP_M * tiles_n
        first_m = (pid // in_group) * GROUP_M
        size_m = tl.minimum(tiles_m - first_m, GROUP_M)
        pid_m = first_m + (pid % in_group) % size_m
        pid_n = (pid % in_group) // size_m
    else:
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows_p = p_ptr + tl.minimum(rn, N - 1)[:, None] * stride_pn
    rows_e = e_ptr + tl.minimum(rn, N - 1)[:, None] * stride_en
    x_rows = x_ptr + rm[:, None] * stride_xm
    first, count = _split_range(KBp, BLOCK_B, SPLIT_K)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for step in range(0, count):
        block = first + step
        jb = block * BLOCK_B + tl.arange(0, BLOCK_B)
        byte = tl.load(rows_p + tl.minimum(jb, KB - 1)[None, :])
        bits = _block_scales(rows_e, jb, block, NG, BLOCK_N, BLOCK_B, BYTES_PER_GROUP, bf16_exp2_bits)
        w0, w1, w2, w3, w4 = weight_tiles_bf16(byte, bits)
        quad = tl.join(tl.join(w0, w2), tl.join(w1, w3))
        w = tl.reshape(tl.permute(quad, (0, 3, 1, 2)), (BLOCK_N, 4 * BLOCK_B))
        x_block = x_rows + block * 5 * BLOCK_B
        x_low = tl.load(x_block + tl.arange(0, 4 * BLOCK_B)[None, :])
        x_high = tl.load(x_block + 4 * BLOCK_B + tl.arange(0, BLOCK_B)[None, :])
        acc = tl.dot(w, tl.trans(x_low), acc)
        acc = tl.dot(w4, tl.trans(x_high), acc)
    acc = tl.trans(acc)
    out = out_ptr + tl.program_id(2) * stride_os + rm[:, None] * stride_om + rn[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(rm < M)[:, None] & (rn < N)[None, :])


def two_x(x, rows, kbp, bb):
    import torch
    m, k = x.shape
    xp = torch.zeros((rows, kbp * 5), dtype=x.dtype, device=x.device)
    xp[:m, :k] = x
    x5 = xp.view(rows, kbp // bb, bb, 5)
    low = x5[..., :4].reshape(rows, kbp // bb, bb, 2, 2).permute(0, 1, 4, 2, 3).reshape(rows, kbp // bb, 4 * bb)
    return torch.cat([low, x5[..., 4]], dim=2).reshape(rows, -1).contiguous()


def two_forward(x, T_packed, E, *, group_size, tile, xp=None):
    import torch
    bm, bn, bb, warps, stages, group_m = tile
    m, n, kb = x.shape[0], T_packed.shape[0], T_packed.shape[1]
    rows, kbp = -(-m // bm) * bm, -(-kb // bb) * bb
    if xp is None:
        xp = two_x(x, rows, kbp, bb)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(n, bn) * (rows // bm), 1, 1) if group_m else (triton.cdiv(n, bn), rows // bm, 1)
    two_kernel[grid](xp, T_packed, E, out, m, n, kb, kbp, E.shape[1], xp.stride(0), T_packed.stride(0),
                     E.stride(0), 0, out.stride(0), BYTES_PER_GROUP=group_size // 5, BLOCK_M=bm, BLOCK_N=bn,
                     BLOCK_B=bb, SPLIT_K=1, GROUP_M=group_m, num_warps=warps, num_stages=stages)
    return out
