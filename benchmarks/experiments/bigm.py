"""Scratch: large-M fused forward (bf16, pair decode), direct epilogue."""
import triton
import triton.language as tl
from ternary.kernels.linear.triton import _block_scales
from ternary.kernels.linear.triton_base3 import bf16_exp2_bits, weight_tiles_bf16


@triton.jit
def _xtile(x_rows, jb, d, stride_xd, rm, M, K, XDIRECT: tl.constexpr):
    if XDIRECT:
        col = 5 * jb + d
        return tl.load(x_rows + col[None, :], mask=(rm < M)[:, None] & (col < K)[None, :], other=0.0)
    else:
        return tl.load(x_rows + d * stride_xd + jb[None, :])


@triton.jit
def big_kernel(x_ptr, p_ptr, e_ptr, bias_ptr, out_ptr, M, N, KB, KBp, NG,
               stride_xd, stride_xm, stride_pn, stride_en, stride_om, bias_scale, K,
               BYTES_PER_GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_B: tl.constexpr, GROUP_M: tl.constexpr, HAS_BIAS: tl.constexpr, SWAP: tl.constexpr,
               XDIRECT: tl.constexpr):
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    in_group = GROUP_M * tiles_n
    group = pid // in_group
    first_m = group * GROUP_M
    size_m = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % size_m
    pid_n = (pid % in_group) // size_m
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows_p = p_ptr + tl.minimum(rn, N - 1)[:, None] * stride_pn
    rows_e = e_ptr + tl.minimum(rn, N - 1)[:, None] * stride_en
    x_rows = x_ptr + rm[:, None] * stride_xm
    if SWAP:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for block in range(0, KBp // BLOCK_B):
        jb = block * BLOCK_B + tl.arange(0, BLOCK_B)
        byte = tl.load(rows_p + tl.minimum(jb, KB - 1)[None, :])
        bits = _block_scales(rows_e, jb, block, NG, BLOCK_N, BLOCK_B, BYTES_PER_GROUP, bf16_exp2_bits)
        w0, w1, w2, w3, w4 = weight_tiles_bf16(byte, bits)
        x0 = _xtile(x_rows, jb, 0, stride_xd, rm, M, K, XDIRECT)
        x1 = _xtile(x_rows, jb, 1, stride_xd, rm, M, K, XDIRECT)
        x2 = _xtile(x_rows, jb, 2, stride_xd, rm, M, K, XDIRECT)
        x3 = _xtile(x_rows, jb, 3, stride_xd, rm, M, K, XDIRECT)
        x4 = _xtile(x_rows, jb, 4, stride_xd, rm, M, K, XDIRECT)
        if SWAP:
            acc = tl.dot(w0, tl.trans(x0), acc)
            acc = tl.dot(w1, tl.trans(x1), acc)
            acc = tl.dot(w2, tl.trans(x2), acc)
            acc = tl.dot(w3, tl.trans(x3), acc)
            acc = tl.dot(w4, tl.trans(x4), acc)
        else:
            acc = tl.dot(x0, tl.trans(w0), acc)
            acc = tl.dot(x1, tl.trans(w1), acc)
            acc = tl.dot(x2, tl.trans(w2), acc)
            acc = tl.dot(x3, tl.trans(w3), acc)
            acc = tl.dot(x4, tl.trans(w4), acc)
    if SWAP:
        acc = tl.trans(acc)
    if HAS_BIAS:
        acc += (tl.load(bias_ptr + rn, mask=rn < N, other=0).to(tl.float32) * bias_scale)[None, :]
    out = out_ptr + rm[:, None] * stride_om + rn[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(rm < M)[:, None] & (rn < N)[None, :])


def big_forward(x, T_packed, E, *, in_features, group_size, tile, xdirect=False, planes=None):
    import torch
    from ternary.kernels.linear.triton_base3 import digit_planes
    bm, bn, bb, warps, stages, swap, group_m = tile
    m, n, kb = x.shape[0], T_packed.shape[0], T_packed.shape[1]
    kbp = -(-kb // bb) * bb
    if xdirect:
        xp, sxd, sxm = x, 0, x.stride(0)
    else:
        xp = planes if planes is not None else digit_planes(x, -(-m // bm) * bm, kbp, bb, z_form=False,
                                                             dtype=torch.bfloat16, blocked=False)
        sxd, sxm = xp.stride(0), xp.stride(1)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    big_kernel[grid](xp, T_packed, E, out, out, m, n, kb, kbp, E.shape[1], sxd, sxm, T_packed.stride(0),
                     E.stride(0), out.stride(0), 1.0, in_features, BYTES_PER_GROUP=group_size // 5, BLOCK_M=bm,
                     BLOCK_N=bn, BLOCK_B=bb, GROUP_M=group_m, HAS_BIAS=False, SWAP=swap, XDIRECT=xdirect,
                     num_warps=warps, num_stages=stages)
    return out
