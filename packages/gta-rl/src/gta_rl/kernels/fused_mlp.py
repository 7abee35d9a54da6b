"""Triton kernels for the passes of a stacked two-hidden-layer MLP (``--fused-mlp``): one kernel per forward
pass, one kernel plus two cuBLAS products per backward pass.

TD3+BC's and IQL's networks (actors, twin critics, value nets and their targets) are 256-256 MLPs that these
kernels cover; CQL's critics have three hidden layers and MCQ's are 400 wide, so ``gta-rl train --fused-mlp``
refuses them (gta-rl sac has no bf16 mode). Acting goes through the forward kernel where it runs on the GPU
(not in ``--eval-async`` workers). Through cuBLAS and inductor a forward pass is 8-10 kernels (weight casts, the
padded input, two bf16 products, two bias + ReLU passes, the output layer) and its backward as many again, and
with 8 stacked seeds each of them moves a whole [M, B, 256] activation through DRAM. Fusing every pass is what
let 8 stacked seeds run 5x the throughput of 8 sequential runs (figures: BENCHMARKS.md).

**Forward** (:func:`mlp2_forward`), for one block of rows of one member m (a program per block and member)::

    h1 = relu(x @ W1[m] + b1[m])          bf16 operands, fp32 accumulation, fp32 bias
    h2 = relu(h1 @ W2[m] + b2[m])         h1 rounded to bf16 as the bf16 path rounds it; chunks of columns
    y  = h2 @ W3[m] + b3[m]               fp32 h2 and W3, TF32 products

keeping h1 and h2 in registers and shared memory; nothing is saved for the backward pass but the inputs. The
loops over 64-column chunks of W2 are software-pipelined (the next chunk loads while this one multiplies;
stages and block sizes in :func:`_launch_config`). It is
the ``--bf16`` path's arithmetic (bf16 hidden-layer products accumulated in fp32, fp32 output layer) except
that each hidden product is not rounded to bf16 before its bias is added (one rounding fewer), and the output
layer multiplies in TF32 even without ``--tf32`` (its fp32 products in Triton made the kernel slower than the
kernels it replaces: 33.9 us for the 8-seed critics); the difference is within a bf16 rounding of the
activations (float64 test on the device). ``shared=n`` lets n consecutive members read the same input rows
(the twin critics of a seed), without the copy that expanding the input would make.

**Backward** (registered as the op's autograd formula), from the output gradient dy, per block of rows:
h1 and layer 2's pre-activation are recomputed from x exactly as the forward kernel made them, then::

    g2 = (dy @ W3^T) * [h2 > 0]           TF32 product (dW3 = h2^T dy too); rounded to bf16 (as the bf16
                                          path rounds it)
    g1 = (g2 @ W2^T) * [h1 > 0]           bf16 operands, fp32 accumulation; rounded to bf16
    dx = g1 @ W1^T                        only where x needs a gradient (the actor loss through the critic)

with the bias gradients and dW3 = h2^T dy as per-block partial sums (no atomics: the sums do not depend on the
order of the blocks). The two large weight gradients dW2 = h1^T g2 and dW1 = x^T g1 are cuBLAS bf16 products
with fp32 output (the bf16 path rounds them to bf16); a frozen network (no weight gradient) skips them.

Only what they cover is routed here (:func:`supports`): CUDA tensors, bf16 mixed precision, exactly two
hidden layers of width 256 (the only width verified on the device), fp32 parameters, input width <= 64,
output width <= 32, no dropout. Everything else keeps the ordinary path. Triton is imported when the kernels
are first needed (they live in :mod:`gta_rl.kernels._triton`).
"""

from __future__ import annotations

import functools
import os

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


def supports(x: Tensor, weights: list[Tensor], masks: object, grad: bool = False) -> bool:
    """Whether the fused kernels can run this forward pass (see the module docstring); with gradients only
    where ``grad``; never before :func:`register` has defined them."""
    if not _registered or masks is not None or x.device.type != "cuda":
        return False
    if torch.is_grad_enabled() and not grad:
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


# Triton's CPU interpreter (TRITON_INTERPRET=1, for checking the kernels' indexing without a GPU) gets fp32
# operands: its bf16 products are broken in Triton 3.6. Never set on a GPU run.
_INTERPRET_F32 = os.environ.get("TRITON_INTERPRET") == "1"
_LOW = torch.float32 if _INTERPRET_F32 else torch.bfloat16


def _member_strided(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Each [M, r, c] parameter as the kernels read it: its own member stride (a first_of view is not
    contiguous across members) and contiguous rows within a member."""
    return tuple(t if t.stride(-1) == 1 and t.stride(-2) == t.shape[-1] else t.contiguous() for t in tensors)


# torch.bmm(..., out_dtype=) (bf16 operands, fp32 output) exists from torch 2.8; the fused kernels need 2.6.
_BMM_OUT_DTYPE = torch.torch_version.TorchVersion(torch.__version__) >= (2, 8)


def _bmm_f32(a: Tensor, b: Tensor) -> Tensor:
    """a @ b with fp32 output (bf16 operands: cuBLAS accumulates and writes fp32, no bf16 rounding). Before
    torch 2.8 the same product through fp32 copies of the operands (bf16 numbers are exact in fp32 and TF32)."""
    if a.dtype == torch.float32 or not _BMM_OUT_DTYPE:
        return torch.bmm(a.float(), b.float())
    return torch.bmm(a, b, out_dtype=torch.float32)


def _launch_config(kernel: str, members: int, batch: int, device: torch.device) -> tuple[int, int, int]:
    """(rows per program, warps, software-pipeline stages of the column-chunk loops) of the forward ("fwd") or
    backward ("bwd") kernel for ``members`` x ``batch`` rows, chosen by timing the TD3+BC step with 1 and 8
    seeds (docs/benchmarks-log.md): software-pipelined chunk loops with 3 stages, but 2 for the backward of 8
    seeds' twin critics (3 made that kernel slower); 4 stages, 128-row blocks with 8 warps for the largest
    calls, or 32-row forward blocks were slower. Not tuned for other member counts or cards."""
    if kernel == "fwd":
        return 64, 4, 3
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    blocks = members * -(-batch // 64)  # programs at 64 rows each
    if blocks >= sms:  # a program per SM or more: 8 seeds' twin critics
        return 64, 4, 2
    return (32 if blocks < 0.5 * sms else 64), 4, 3  # 32 rows where 64 would leave most SMs idle (one seed)


def _pow2(n: int, least: int = 16) -> int:
    return max(least, 1 << (int(n) - 1).bit_length())


_registered = False


def register() -> None:
    """Define the custom ops ``torch.ops.gta_rl.mlp2_forward`` and ``mlp2_backward`` (Triton ops that
    torch.compile and CUDA graphs take in) and the forward's autograd formula once, before any step that uses
    them is traced (a :class:`gta_rl.nets.StackedMLP` built with the fused arithmetic does). Without CUDA or Triton nothing is defined and
    :func:`supports` stays false."""
    global _registered
    if not _registered and available():
        _define()
        _registered = True


def _define() -> None:
    import triton
    from torch.library import triton_op, wrap_triton

    from gta_rl.kernels._triton import _mlp2_backward_kernel, _mlp2_forward_kernel

    @triton_op("gta_rl::mlp2_backward", mutates_args=())
    def mlp2_backward(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, w3: Tensor, dy: Tensor,
                      shared: int, need_dx: bool, need_w: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor,
                                                                       Tensor, Tensor]:
        m, k0, h1 = w1.shape
        h2, out = w3.shape[1:]
        b = x.shape[1]
        w1, w2, w3, b1, b2 = _member_strided(w1, w2, w3, b1, b2)
        dy = dy.contiguous()
        w2 = w2.to(_LOW)  # read by every block of rows: half the bytes of fp32 (see the forward op)
        # 64-row blocks with 4 warps; 32-row blocks where 64-row ones would leave most SMs idle (one seed).
        # 128-row blocks with 8 warps made the 8-seed step slower (docs/benchmarks-log.md).
        bm, warps, ns = _launch_config("bwd", m, b, x.device)
        nblk = triton.cdiv(b, bm)
        new = functools.partial(torch.empty, device=x.device)
        h1_out = new((m, b, h1) if need_w else (0,), dtype=_LOW)
        g2 = new((m, b, h2), dtype=_LOW)  # also the kernel's scratch for layer 1 when no weight gradient is wanted
        g1 = new((m, b, h1) if need_w else (0,), dtype=_LOW)
        dx = new((m, b, k0) if need_dx else (0,), dtype=torch.float32)
        pb1 = new((nblk, m, h1) if need_w else (0,), dtype=torch.float32)
        pb2 = new((nblk, m, h2) if need_w else (0,), dtype=torch.float32)
        pw3 = new((nblk, m, h2, out) if need_w else (0,), dtype=torch.float32)
        wrap_triton(_mlp2_backward_kernel)[(nblk, m)](
            x, w1, b1, w2, b2, w3, dy, h1_out, g2, g1, dx, pb1, pb2, pw3, b, k0, out, shared,
            x.stride(0), x.stride(1), x.stride(2), w1.stride(0), b1.stride(0), w2.stride(0), b2.stride(0),
            w3.stride(0),
            K0P=_pow2(k0), H1=h1, H2=h2, OP=_pow2(out), BM=bm, BN=64, NEED_DX=bool(need_dx),
            NEED_W=bool(need_w), F32=_INTERPRET_F32, NS=ns, num_warps=warps, num_stages=ns,
        )
        return dx, h1_out, g2, g1, pb1, pb2, pw3

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
        w1, w2, w3, b1, b2, b3 = _member_strided(w1, w2, w3, b1, b2, b3)
        # Layer 2's weights as bf16 once (a small cast kernel) rather than fp32 loaded and rounded by each
        # block of rows: every block reads all of them, so L2 traffic halves (the largest single gain of the
        # fused step when measured: docs/benchmarks-log.md).
        w2 = w2.to(_LOW)
        y = torch.empty(m, b, out, device=x.device, dtype=torch.float32)
        # 64-row blocks with 4 warps, 64-column chunks of layer 2. With bf16 layer-2 weights, 128-row blocks
        # with 8 warps no longer paid. 64-row blocks with 8 warps gave wrong results or illegal memory
        # accesses (torch 2.11, Triton 3.6), as did bf16 products for the output layer.
        bm, warps, ns = _launch_config("fwd", m, b, x.device)
        grid = (triton.cdiv(b, bm), m)
        wrap_triton(_mlp2_forward_kernel)[grid](
            x, w1, b1, w2, b2, w3, b3, y, b, k0, out, shared,
            x.stride(0), x.stride(1), x.stride(2), w1.stride(0), b1.stride(0), w2.stride(0), b2.stride(0),
            w3.stride(0), b3.stride(0),
            K0P=_pow2(k0), H1=h1, H2=h2, OP=_pow2(out), BM=bm, BN=64, F32=_INTERPRET_F32, NS=ns,
            num_warps=warps, num_stages=ns,
        )
        return y

    def setup_context(ctx, inputs, output):
        x, w1, b1, w2, b2, w3, _b3, shared = inputs
        ctx.save_for_backward(x, w1, b1, w2, b2, w3)
        ctx.shared = shared

    def backward(ctx, gy):
        x, w1, b1, w2, b2, w3 = ctx.saved_tensors
        need = ctx.needs_input_grad
        return (*_backward(x, w1, b1, w2, b2, w3, gy, ctx.shared, need[0], any(need[1:7])), None)

    torch.library.register_autograd("gta_rl::mlp2_forward", backward, setup_context=setup_context)


def _backward(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, w3: Tensor, gy: Tensor, shared: int,
              need_dx: bool, need_w: bool) -> tuple[Tensor | None, ...]:
    """Gradients (x, w1, b1, w2, b2, w3, b3) of :func:`mlp2_forward` from the output gradient ``gy``: one
    Triton kernel for the activations' gradients (the hidden activations recomputed from x, as the forward
    kernel made them), cuBLAS for the two hidden layers' weight gradients, sums for the rest."""
    m, k0, _ = w1.shape
    b = gy.shape[1]
    dx_m, h1, g2, g1, pb1, pb2, pw3 = torch.ops.gta_rl.mlp2_backward(
        x, w1, b1, w2, b2, w3, gy, shared, bool(need_dx), bool(need_w))
    dx = None
    if need_dx:
        dx = (dx_m.view(m // shared, shared, b, k0).sum(1) if shared != 1 else dx_m).to(x.dtype)
    if not need_w:
        return dx, None, None, None, None, None, None
    pad = -k0 % 8  # bf16 products want leading dimensions of 8 elements (see nets.lowp_affine)
    x_low = torch.nn.functional.pad(x, (0, pad)).to(h1.dtype)
    if shared != 1:
        x_low = x_low.unsqueeze(1).expand(m // shared, shared, b, k0 + pad).reshape(m, b, k0 + pad)
    gw1 = _bmm_f32(x_low.transpose(1, 2), g1)[:, :k0]
    gw2 = _bmm_f32(h1.transpose(1, 2), g2)
    return (dx, gw1.to(w1.dtype), pb1.sum(0).unsqueeze(1), gw2.to(w2.dtype), pb2.sum(0).unsqueeze(1),
            pw3.sum(0), gy.sum(1, keepdim=True))
