"""One Triton kernel for the gradient-free forward pass of a stacked two-hidden-layer MLP (``--fused-mlp``).

Every algorithm here runs its target networks (and acting) without gradients. TD3+BC's target actor and
twin target critics, and IQL's target critics, are 256-256 networks that this kernel covers; CQL's critics
have three hidden layers and MCQ's are 400 wide, so ``gta-rl train --fused-mlp`` refuses them (gta-rl sac has
no bf16 mode). Acting goes through the kernel where it runs on the GPU (not in ``--eval-async`` workers).
Through cuBLAS and inductor such a pass is 8-10 kernels (weight casts, the padded input, two bf16 products,
two bias + ReLU passes, the output layer), and with 8 stacked seeds each of them moves the whole [M, B, 256]
activation through DRAM: on an H100 the 8-seed TD3+BC target critics took 31.0 us, the fused kernel 12.7 us
(BENCHMARKS.md, ninth session).

The kernel computes, for one block of rows of one member m (a program per block and member)::

    h1 = relu(x @ W1[m] + b1[m])          bf16 operands, fp32 accumulation, fp32 bias
    h2 = relu(h1 @ W2[m] + b2[m])         h1 rounded to bf16 as the bf16 path rounds it; chunks of columns
    y  = h2 @ W3[m] + b3[m]               fp32 h2 and W3, TF32 products

keeping h1 and h2 in registers and shared memory. It is the ``--bf16`` path's arithmetic (bf16 hidden-layer
products accumulated in fp32, fp32 output layer) except that each hidden product is not rounded to bf16
before its bias is added (one rounding fewer), and the output layer multiplies in TF32 even without
``--tf32`` (its fp32 products in Triton made the kernel slower than the kernels it replaces: 33.9 us for the
8-seed critics); the difference is within a bf16 rounding of the activations (float64 test on the device).
``shared=n`` lets n consecutive members read the same input rows (the twin critics of a seed), without the
copy that expanding the input would make.

Only what it covers is routed here (:func:`supports`): CUDA tensors, bf16 mixed precision, exactly two
hidden layers of width 256 (the only width verified on the device), fp32 parameters, input width <= 64,
output width <= 32, no dropout, gradients off. Everything else keeps the ordinary path. Triton is imported
when the kernel is first needed.
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_IN, MAX_OUT, HIDDEN = 64, 32, 256


def available() -> bool:
    """A torch with ``torch.library.triton_op`` (2.6+), a CUDA device with bf16 tensor cores (compute capability
    8.0 or newer) and an importable Triton (torch's CUDA builds bring it; ``pip install gta-rl[fused]``)."""
    if not hasattr(torch.library, "triton_op"):  # torch >= 2.6
        return False
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def supports(x: Tensor, weights: list[Tensor], masks: object) -> bool:
    """Whether the fused kernel can run this forward pass (see the module docstring); never before
    :func:`register` has defined it."""
    if not _registered or masks is not None or x.device.type != "cuda" or torch.is_grad_enabled():
        return False
    return fits(weights)


def fits(weights: list[Tensor]) -> bool:
    """Whether a network with these layer weights ([M, in, out] each) has the kernel's shape and dtype."""
    if len(weights) != 3 or any(w.dtype != torch.float32 for w in weights):
        return False
    k0, h1 = weights[0].shape[1:]
    h2, out = weights[2].shape[1:]
    return h1 == h2 == HIDDEN and weights[1].shape[1:] == (h1, h2) and k0 <= MAX_IN and out <= MAX_OUT


def mlp2_forward(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, w3: Tensor, b3: Tensor,
                 shared: int = 1) -> Tensor:
    """y [M, B, out] (fp32) of the stacked MLP with weights [M, in, out] and biases [M, 1, out], for x
    [M / shared, B, in] (fp32 or bf16; member m reads x[m // shared])."""
    if not _registered:
        register()
        if not _registered:
            raise RuntimeError("the fused MLP kernel needs a CUDA device and Triton")
    return torch.ops.gta_rl.mlp2_forward(x, w1, b1, w2, b2, w3, b3, int(shared))


def _pow2(n: int, least: int = 16) -> int:
    return max(least, 1 << (int(n) - 1).bit_length())


_registered = False


def register() -> None:
    """Define the custom op ``torch.ops.gta_rl.mlp2_forward`` (a Triton op that torch.compile and CUDA graphs
    take in) once, before any step that uses it is traced (:func:`gta_rl.nets.set_fused_mlp` does). Without
    CUDA or Triton nothing is defined and :func:`supports` stays false."""
    global _registered
    if not _registered and available():
        _define()
        _registered = True


def _define() -> None:
    import triton
    import triton.language as tl
    from torch.library import triton_op, wrap_triton

    @triton.jit
    def _mlp2_forward_kernel(
        x_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, y_ptr,
        B, K0, NO, SHARED,
        sxm, sxb, sxk, sw1, sb1, sw2, sb2, sw3, sb3,
        K0P: tl.constexpr, H1: tl.constexpr, H2: tl.constexpr, OP: tl.constexpr,
        BM: tl.constexpr, BN: tl.constexpr,
    ):
        block = tl.program_id(0)
        m = tl.program_id(1).to(tl.int64)
        rows = block * BM + tl.arange(0, BM)
        row_ok = rows < B
        k0 = tl.arange(0, K0P)
        x = tl.load(x_ptr + (m // SHARED) * sxm + rows[:, None] * sxb + k0[None, :] * sxk,
                    mask=row_ok[:, None] & (k0[None, :] < K0), other=0.0)
        c1 = tl.arange(0, H1)
        w1 = tl.load(w1_ptr + m * sw1 + k0[:, None] * H1 + c1[None, :], mask=k0[:, None] < K0, other=0.0)
        acc1 = tl.dot(x.to(tl.bfloat16), w1.to(tl.bfloat16))
        h1 = tl.maximum(acc1 + tl.load(b1_ptr + m * sb1 + c1)[None, :], 0.0).to(tl.bfloat16)
        oc = tl.arange(0, OP)
        y = tl.zeros([BM, OP], dtype=tl.float32)
        for n0 in tl.static_range(0, H2, BN):
            nc = n0 + tl.arange(0, BN)
            w2 = tl.load(w2_ptr + m * sw2 + c1[:, None] * H2 + nc[None, :])
            h2 = tl.maximum(tl.dot(h1, w2.to(tl.bfloat16)) + tl.load(b2_ptr + m * sb2 + nc)[None, :], 0.0)
            w3 = tl.load(w3_ptr + m * sw3 + nc[:, None] * NO + oc[None, :], mask=oc[None, :] < NO, other=0.0)
            y += tl.dot(h2, w3, input_precision="tf32")
        y += tl.load(b3_ptr + m * sb3 + oc, mask=oc < NO, other=0.0)[None, :]
        tl.store(y_ptr + m * B * NO + rows[:, None] * NO + oc[None, :], y, mask=row_ok[:, None] & (oc[None, :] < NO))

    @triton_op("gta_rl::mlp2_forward", mutates_args=())
    def mlp2(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, w3: Tensor, b3: Tensor,
             shared: int) -> Tensor:
        m, k0, h1 = w1.shape
        h2, out = w3.shape[1:]
        b = x.shape[1]
        if x.shape[0] * shared != m or x.shape[2] != k0:
            raise ValueError(f"mlp2_forward: x {tuple(x.shape)} does not match {m} members of input {k0} "
                             f"(shared by {shared})")
        # Each weight and bias is read with its own member stride (a first_of view is not contiguous) and
        # contiguous rows within a member.
        w1, w2, w3, b1, b2, b3 = (t if t.stride(-1) == 1 and t.stride(-2) == t.shape[-1] else t.contiguous()
                                  for t in (w1, w2, w3, b1, b2, b3))
        y = torch.empty(m, b, out, device=x.device, dtype=torch.float32)
        # 128-row blocks with 8 warps where they still give about one program per SM (and only for the
        # one-output, input <= 32 networks they were tested with: critics), otherwise 64-row blocks with 4
        # warps; 64-column chunks of layer 2. H100, batch 1024 (GPU time per call): 8-seed twin critics 12.8 us
        # (64-row blocks: 15.0), 8 actors 9.1 (128-row blocks: 12.7), one seed's critics 11.5, one actor 8.3.
        # Four warps per 64 rows: 64-row blocks with 8 warps gave wrong results or illegal memory accesses on
        # the H100 (torch 2.11, Triton 3.6), as did bf16 products for the output layer.
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        wide = out == 1 and k0 <= 32 and m * triton.cdiv(b, 128) >= 0.9 * sms
        bm, bn, warps = (128, 64, 8) if wide else (64, 64, 4)
        bn = min(bn, h2)
        grid = (triton.cdiv(b, bm), m)
        wrap_triton(_mlp2_forward_kernel)[grid](
            x, w1, b1, w2, b2, w3, b3, y, b, k0, out, shared,
            x.stride(0), x.stride(1), x.stride(2), w1.stride(0), b1.stride(0), w2.stride(0), b2.stride(0),
            w3.stride(0), b3.stride(0),
            K0P=_pow2(k0), H1=h1, H2=h2, OP=_pow2(out), BM=bm, BN=bn, num_warps=warps, num_stages=1,
        )
        return y
