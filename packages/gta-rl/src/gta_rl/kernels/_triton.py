"""The Triton kernels of :mod:`gta_rl.kernels.fused_mlp` (imported only when the fused ops are defined: Triton is an
optional dependency, ``gta-rl[fused]``)."""

import triton
import triton.language as tl


@triton.jit
def _low(t, F32: tl.constexpr):
    # bf16 operands; fp32 only for the CPU interpreter tests (its bf16 products are broken in Triton 3.6)
    if F32:
        return t.to(tl.float32)
    return t.to(tl.bfloat16)


@triton.jit
def _first_layer(x_ptr, w1_ptr, b1_ptr, m, rows, row_ok, K0, SHARED, sxm, sxb, sxk, sw1, sb1,
                 K0P: tl.constexpr, H1: tl.constexpr, F32: tl.constexpr):
    """(x, h1) of one block of rows: x [BM, K0P] rounded to bf16 (zero past K0 and B), h1 = relu(x W1 + b1)
    [BM, H1] in bf16. The backward kernel recomputes h1 with these same operations: the forward kernel's h1 where
    the blocks have the same shape (a 32-row backward block may sum a product in another order, which can move
    an h1 by an ulp and flip a ReLU mask only for a pre-activation within an ulp of 0)."""
    k0 = tl.arange(0, K0P)
    x = tl.load(x_ptr + (m // SHARED) * sxm + rows[:, None] * sxb + k0[None, :] * sxk,
                mask=row_ok[:, None] & (k0[None, :] < K0), other=0.0)
    x = _low(x, F32)
    c1 = tl.arange(0, H1)
    w1 = tl.load(w1_ptr + m * sw1 + k0[:, None] * H1 + c1[None, :], mask=k0[:, None] < K0, other=0.0)
    h1 = _low(tl.maximum(tl.dot(x, _low(w1, F32)) + tl.load(b1_ptr + m * sb1 + c1)[None, :], 0.0), F32)
    return x, h1


@triton.jit
def _layer2_pre(h1, w2_ptr, b2_ptr, m, sw2, sb2, c1, nc, H2: tl.constexpr, F32: tl.constexpr):
    """Layer 2's pre-activation h1 @ W2[:, nc] + b2[nc] for one chunk of columns nc: one definition for both
    kernels, so the backward's ReLU mask (pre > 0) is the forward's."""
    w2 = tl.load(w2_ptr + m * sw2 + c1[:, None] * H2 + nc[None, :])
    return tl.dot(h1, _low(w2, F32)) + tl.load(b2_ptr + m * sb2 + nc)[None, :]


@triton.jit
def _mlp2_forward_kernel(
    x_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, y_ptr,
    B, K0, NO, SHARED,
    sxm, sxb, sxk, sw1, sb1, sw2, sb2, sw3, sb3,
    K0P: tl.constexpr, H1: tl.constexpr, H2: tl.constexpr, OP: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, F32: tl.constexpr, NS: tl.constexpr,
):
    block = tl.program_id(0)
    m = tl.program_id(1).to(tl.int64)
    rows = block * BM + tl.arange(0, BM)
    row_ok = rows < B
    _, h1 = _first_layer(x_ptr, w1_ptr, b1_ptr, m, rows, row_ok, K0, SHARED, sxm, sxb, sxk, sw1, sb1, K0P, H1, F32)
    c1 = tl.arange(0, H1)
    oc = tl.arange(0, OP)
    y = tl.zeros([BM, OP], dtype=tl.float32)
    for n0 in tl.range(0, H2, BN, num_stages=NS):
        nc = n0 + tl.arange(0, BN)
        h2 = tl.maximum(_layer2_pre(h1, w2_ptr, b2_ptr, m, sw2, sb2, c1, nc, H2, F32), 0.0)
        w3 = tl.load(w3_ptr + m * sw3 + nc[:, None] * NO + oc[None, :], mask=oc[None, :] < NO, other=0.0)
        y += tl.dot(h2, w3, input_precision="tf32")
    y += tl.load(b3_ptr + m * sb3 + oc, mask=oc < NO, other=0.0)[None, :]
    tl.store(y_ptr + m * B * NO + rows[:, None] * NO + oc[None, :], y, mask=row_ok[:, None] & (oc[None, :] < NO))


@triton.jit
def _mlp2_backward_kernel(
    x_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, dy_ptr,
    h1_ptr, g2_ptr, g1_ptr, dx_ptr, pb1_ptr, pb2_ptr, pw3_ptr,
    B, K0, NO, SHARED,
    sxm, sxb, sxk, sw1, sb1, sw2, sb2, sw3,
    K0P: tl.constexpr, H1: tl.constexpr, H2: tl.constexpr, OP: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, NEED_DX: tl.constexpr, NEED_W: tl.constexpr, F32: tl.constexpr,
    NS: tl.constexpr,
):
    block = tl.program_id(0)
    m = tl.program_id(1).to(tl.int64)
    rows = block * BM + tl.arange(0, BM)
    row_ok = rows < B
    x, h1 = _first_layer(x_ptr, w1_ptr, b1_ptr, m, rows, row_ok, K0, SHARED, sxm, sxb, sxk, sw1, sb1, K0P, H1, F32)
    k0 = tl.arange(0, K0P)
    c1 = tl.arange(0, H1)
    if NEED_W:  # for the weight gradient of layer 2 (h1^T g2, a cuBLAS product after this kernel)
        tl.store(h1_ptr + m * B * H1 + rows[:, None] * H1 + c1[None, :], h1, mask=row_ok[:, None])
    oc = tl.arange(0, OP)
    dy = tl.load(dy_ptr + m * B * NO + rows[:, None] * NO + oc[None, :],
                 mask=row_ok[:, None] & (oc[None, :] < NO), other=0.0)  # rows past B: zero gradient
    # Layer 2 and the output layer, in the forward kernel's column chunks: g2 = (dy W3^T) * [h2 > 0].
    for n0 in tl.range(0, H2, BN, num_stages=NS):
        nc = n0 + tl.arange(0, BN)
        pre2 = _layer2_pre(h1, w2_ptr, b2_ptr, m, sw2, sb2, c1, nc, H2, F32)
        w3 = tl.load(w3_ptr + m * sw3 + nc[:, None] * NO + oc[None, :], mask=oc[None, :] < NO, other=0.0)
        g = tl.dot(dy, tl.trans(w3), input_precision="tf32")
        g2 = _low(tl.where(pre2 > 0.0, g, 0.0), F32)
        tl.store(g2_ptr + m * B * H2 + rows[:, None] * H2 + nc[None, :], g2, mask=row_ok[:, None])
        if NEED_W:
            part = (block * tl.num_programs(1) + m)
            tl.store(pb2_ptr + part * H2 + nc, tl.sum(g2.to(tl.float32), axis=0))
            pw3 = tl.dot(tl.trans(tl.maximum(pre2, 0.0)), dy, input_precision="tf32")  # [BN, OP]
            tl.store(pw3_ptr + part * H2 * NO + nc[:, None] * NO + oc[None, :], pw3, mask=oc[None, :] < NO)
    tl.debug_barrier()  # this block's g2 rows, written above by other threads of the program, are read below
    # Layer 1: g1 = (g2 W2^T) * [h1 > 0] in column chunks (h1's chunk recomputed from x); dx = g1 W1^T.
    g2_all = tl.load(g2_ptr + m * B * H2 + rows[:, None] * H2 + tl.arange(0, H2)[None, :],
                     mask=row_ok[:, None], other=0.0)
    c2 = tl.arange(0, H2)
    dx = tl.zeros([BM, K0P], dtype=tl.float32)
    for n0 in tl.range(0, H1, BN, num_stages=NS):
        nc = n0 + tl.arange(0, BN)
        w2r = tl.load(w2_ptr + m * sw2 + nc[:, None] * H2 + c2[None, :])  # W2[nc, :], rows contiguous
        back = tl.dot(g2_all, tl.trans(_low(w2r, F32)))
        w1c = _low(tl.load(w1_ptr + m * sw1 + k0[:, None] * H1 + nc[None, :], mask=k0[:, None] < K0, other=0.0),
                   F32)
        pre1 = tl.dot(x, w1c) + tl.load(b1_ptr + m * sb1 + nc)[None, :]
        g1 = _low(tl.where(pre1 > 0.0, back, 0.0), F32)
        if NEED_W:
            tl.store(g1_ptr + m * B * H1 + rows[:, None] * H1 + nc[None, :], g1, mask=row_ok[:, None])
            part = (block * tl.num_programs(1) + m)
            tl.store(pb1_ptr + part * H1 + nc, tl.sum(g1.to(tl.float32), axis=0))
        if NEED_DX:
            dx += tl.dot(g1, tl.trans(w1c))
    if NEED_DX:
        tl.store(dx_ptr + m * B * K0 + rows[:, None] * K0 + k0[None, :], dx,
                 mask=row_ok[:, None] & (k0[None, :] < K0))
