"""Scratch: small-M fused forward with one dot per step (digits interleaved into 8 slots)."""
import triton
import triton.language as tl
from ternary.kernels.linear.triton import _block_scales, _split_range
from ternary.kernels.linear.triton_base3 import bf16_exp2_bits, weight_tiles_bf16, interleave_digits


@triton.jit
def one_kernel(x_ptr, p_ptr, e_ptr, out_ptr, M, N, KB, KBp, NG,
               stride_xm, stride_pn, stride_en, stride_os, stride_om,
               BYTES_PER_GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_B: tl.constexpr, SPLIT_K, SWAP: tl.constexpr):
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows_p = p_ptr + tl.minimum(rn, N - 1)[:, None] * stride_pn
    rows_e = e_ptr + tl.minimum(rn, N - 1)[:, None] * stride_en
    x_rows = x_ptr + rm[:, None] * stride_xm
    first, count = _split_range(KBp, BLOCK_B, SPLIT_K)
    if SWAP:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(0, count):
        block = first + step
        jb = block * BLOCK_B + tl.arange(0, BLOCK_B)
        byte = tl.load(rows_p + tl.minimum(jb, KB - 1)[None, :])
        bits = _block_scales(rows_e, jb, block, NG, BLOCK_N, BLOCK_B, BYTES_PER_GROUP, bf16_exp2_bits)
        w0, w1, w2, w3, w4 = weight_tiles_bf16(byte, bits)
        zero = tl.zeros_like(w0)
        quad = tl.join(tl.join(tl.join(w0, w1), tl.join(w2, w3)), tl.join(tl.join(w4, zero), tl.join(zero, zero)))
        w = tl.reshape(tl.permute(quad, (0, 3, 2, 1, 4)), (BLOCK_N, 8 * BLOCK_B))
        xt = tl.load(x_rows + block * 8 * BLOCK_B + tl.arange(0, 8 * BLOCK_B)[None, :])
        if SWAP:
            acc = tl.dot(w, tl.trans(xt), acc)
        else:
            acc = tl.dot(xt, tl.trans(w), acc)
    if SWAP:
        acc = tl.trans(acc)
    out = out_ptr + tl.program_id(2) * stride_os + rm[:, None] * stride_om + rn[None, :]
    tl.store(out, acc, mask=(rm < M)[:, None] & (rn < N)[None, :])


def permuted_x(x, rows, kbp, bb):
    """x [M, K] -> [rows, kbp/bb * 8 * bb]: per block, p (4), byte j (bb), u (2): x[5(b bb + j) + p + 4u]."""
    import torch
    m, k = x.shape
    full = torch.zeros((rows, kbp * 8), dtype=x.dtype, device=x.device)
    xp = torch.zeros((rows, kbp * 5), dtype=x.dtype, device=x.device)
    xp[:m, :k] = x
    wide = torch.zeros((rows, kbp, 8), dtype=x.dtype, device=x.device)
    wide[:, :, :5] = xp.view(rows, kbp, 5)
    blocks = kbp // bb
    full = wide.view(rows, blocks, bb, 2, 4).permute(0, 1, 4, 2, 3).contiguous().view(rows, -1)
    return full


def one_forward(x, T_packed, E, *, in_features, group_size, tile, xp=None):
    import torch
    from ternary.kernels.linear import triton as kernels
    bm, bn, bb, warps, stages, per_sm = tile
    m, n, kb = x.shape[0], T_packed.shape[0], T_packed.shape[1]
    rows, kbp = -(-m // bm) * bm, -(-kb // bb) * bb
    if xp is None:
        xp = permuted_x(x, rows, kbp, bb)
    tiles = triton.cdiv(n, bn) * (rows // bm)
    saved = kernels.PROGRAMS_PER_SM
    kernels.PROGRAMS_PER_SM = per_sm
    try:
        splits = kernels._splits(tiles, kbp // bb, x.device)
    finally:
        kernels.PROGRAMS_PER_SM = saved
    ws = torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
    one_kernel[(triton.cdiv(n, bn), rows // bm, splits)](
        xp, T_packed, E, ws, m, n, kb, kbp, E.shape[1], xp.stride(0), T_packed.stride(0), E.stride(0),
        ws.stride(0), ws.stride(1), BYTES_PER_GROUP=group_size // 5, BLOCK_M=bm, BLOCK_N=bn, BLOCK_B=bb,
        SPLIT_K=splits, SWAP=True, num_warps=warps, num_stages=stages)
    return kernels._finish(ws, None, 16, x.dtype)
