"""Stacked networks: one set of weights per (seed, member) trained in one batched matmul.

Section 5.1 of the GTA paper reports every cell over 8 seeds. Training them one after another wastes a
GPU on 256-wide MLPs, so every layer here holds its parameters with a leading member dimension
(``weight [M, in, out]``) and runs as one batched matmul (:func:`stacked_affine`). Members are seeds
(actors, value nets) or seed x critic pairs (twin critics). Each member is initialised from its own CPU
generator keyed by (seed, name, member), so seed k gets the same initial weights whether it is trained
alone or stacked with others.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gta_rl.kernels import fused_mlp


def member_generator(seed: int, name: str, member: int = 0) -> torch.Generator:
    """CPU generator for one member's initial weights, independent of how many seeds are stacked."""
    key = (int(seed) * 1_000_003 + zlib.crc32(name.encode()) * 7919 + member) % (2**63 - 1)
    return torch.Generator().manual_seed(key)


def stacked_affine(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x [M, B, in] @ weight [M, in, out] + bias [M, 1, out].

    Written as ``bmm`` + add rather than ``torch.baddbmm(bias, x, weight)``: baddbmm first copies the
    broadcast bias into its [M, B, out] output (one extra full-size copy kernel per layer, a sixth of a
    compiled 8-seed TD3+BC step's GPU time when measured), while torch.compile fuses the add into the
    activation that follows.

    Under torch.compile any layer with one output (the Q and value heads of every algorithm here, SAC's
    included) is a multiply-and-sum over ``in`` instead: inductor fuses it with the ReLU that produces x (and
    its backward with the ReLU's), where a bmm is a separate cuBLAS gemv reading the whole activation again;
    it made the compiled TD3+BC and IQL steps about 10% faster (docs/benchmarks-log.md). Not being a matmul,
    the head escapes TF32 and bf16 autocast: it is computed in x's dtype (fp32 after the fp32 bias add)
    where the eager bmm would use TF32 / bf16. Eager keeps the bmm (its gemv is the faster kernel there)."""
    if weight.shape[-1] == 1 and torch.compiler.is_compiling():
        if x.shape[0] != weight.shape[0] or x.shape[-1] != weight.shape[1]:  # what bmm would refuse (trace time)
            raise ValueError(f"stacked_affine: x {tuple(x.shape)} does not match weight {tuple(weight.shape)}")
        return (x * weight.transpose(1, 2)).sum(-1, keepdim=True) + bias
    return torch.bmm(x, weight) + bias


LOWP_ALIGN = 8  # bf16 tensor-core GEMMs want K a multiple of 8 elements (16 bytes)


def lowp_affine(x: Tensor, weight: Tensor, bias: Tensor, dtype: torch.dtype) -> Tensor:
    """``stacked_affine`` with the matmul in a low-precision dtype (bf16): x and weight are rounded to
    ``dtype``, the product is accumulated in fp32 by the tensor cores and returned in ``dtype``, and the
    fp32 bias is added in fp32 (the result is fp32). The backward products (gradients of x and of the
    weight) run in ``dtype`` as well, from the output gradient rounded to ``dtype``; the bias gradient is
    that same rounded gradient summed over the batch in fp32. The gradients reach the fp32 parameters, and
    the optimizer, as fp32. (cuBLAS may still reduce split-K partial sums in bf16 under PyTorch's default
    ``torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction``.)

    An input width that is not a multiple of 8 (17 observations, 23 = observations + actions) is padded
    with zero columns of x and zero rows of the weight, which leaves the product unchanged: unpadded, cuBLAS
    falls back to slow align-1 / align-2 bf16 kernels for these skinny products (the first-layer products
    then took a seventh of the 8-seed TD3+BC step). The padding is made at use time, so the
    parameters (and checkpoints) keep their shapes."""
    if not torch.is_grad_enabled():  # acting and evaluation: the same product, without the autograd function
        return _lowp_product(x, weight, dtype)[0] + bias
    return _LowpAffine.apply(x, weight, bias, dtype)


def _lowp_product(x: Tensor, weight: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """(x @ weight in ``dtype`` with fp32 accumulation, x and weight padded to a multiple of 8 and rounded)."""
    pad = -x.shape[-1] % LOWP_ALIGN
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
        weight = torch.nn.functional.pad(weight, (0, 0, 0, pad))
    x_low, w_low = x.to(dtype), weight.to(dtype)
    if x.device.type == "cpu":
        # The same product (products of bf16 numbers are exact in fp32, the sum is accumulated in fp32, the
        # result rounded to bf16) through the fp32 kernel: CPU bf16 bmm was 3x slower on the device's Xeon.
        return torch.bmm(x_low.float(), w_low.float()).to(dtype), x_low, w_low
    return torch.bmm(x_low, w_low), x_low, w_low


class _LowpAffine(torch.autograd.Function):
    """:func:`lowp_affine` with its backward written out. It is what autograd derives for
    ``bmm(x.to(dtype), weight.to(dtype)) + bias`` except for the bias gradient, summed here from the
    bf16-rounded output gradient that the weight gradient uses, not from the fp32 one: compiled, the
    derived version had inductor write each hidden layer's [M, B, out] fp32 output gradient to memory only
    to sum it over the batch (docs/benchmarks-log.md)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, dtype: torch.dtype) -> Tensor:
        if bias.dim() != 3 or bias.shape[1] != 1:
            raise ValueError(f"lowp_affine: bias must be [M, 1, out], not {tuple(bias.shape)}")
        ctx.k, ctx.dtypes = x.shape[-1], (x.dtype, weight.dtype, bias.dtype)
        product, x_low, w_low = _lowp_product(x, weight, dtype)
        ctx.save_for_backward(x_low, w_low)
        return product + bias

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x_low, w_low = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        g = grad.to(x_low.dtype)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.bmm(g, w_low.transpose(1, 2))[..., :ctx.k].to(x_dtype)
        if ctx.needs_input_grad[1]:
            gw = torch.bmm(x_low.transpose(1, 2), g)[:, :ctx.k].to(w_dtype)
        if ctx.needs_input_grad[2]:
            gb = g.sum(1, keepdim=True, dtype=b_dtype)
        return gx, gw, gb, None


@dataclass(frozen=True)
class Arithmetic:
    """How a network multiplies, chosen once when it is built (``gta-rl train --bf16``, ``--fused-mlp``).

    - fp32 (:data:`FP32`, the reference): every product in fp32 (TF32 where ``--tf32`` allows it).
    - bf16 mixed precision (:data:`BF16`): hidden layers multiply in bf16 with fp32 accumulation, their backward
      products too (:func:`lowp_affine`); output layers (actions, Q-values, values, log-stds: not rounded to 8
      bits of mantissa), losses, parameters, stored gradients and Adam stay fp32.
    - fused (:data:`FUSED`): the bf16 arithmetic with every pass that the Triton kernels cover
      (:mod:`gta_rl.kernels.fused_mlp`: CUDA tensors, two hidden layers of 256) run through them; with
      ``fused_grad`` False only the gradient-free passes (acting, targets). Other passes take the bf16 path.
    """

    matmul_dtype: torch.dtype | None = None  # of the hidden layers' products; None: fp32
    fused: bool = False
    fused_grad: bool = True

    def __post_init__(self) -> None:
        if self.matmul_dtype not in (None, torch.bfloat16):  # fp16 would need loss scaling for its gradients
            raise ValueError(f"matmul dtype must be torch.bfloat16 or None, not {self.matmul_dtype}")
        if self.fused and self.matmul_dtype != torch.bfloat16:
            raise ValueError("the fused kernels compute the bf16 arithmetic: give matmul_dtype=torch.bfloat16")

    @classmethod
    def of(cls, bf16: bool = False, fused: bool = False) -> Arithmetic:
        """The arithmetic of the run flags ``--bf16`` and ``--fused-mlp``."""
        return FUSED if fused else BF16 if bf16 else FP32


FP32 = Arithmetic()
BF16 = Arithmetic(torch.bfloat16)
FUSED = Arithmetic(torch.bfloat16, fused=True)


def fused_mlp_networks(module: nn.Module) -> list[str]:
    """Names of the :class:`StackedMLP` in ``module`` whose shape the fused kernels cover."""
    return [name for name, m in module.named_modules()
            if isinstance(m, StackedMLP) and fused_mlp.fits([layer.weight for layer in m.layers])]


class StackedLinear(nn.Module):
    """M independent affine maps, x [M, B, in] -> [M, B, out]."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)  # [M, in, out]
        self.bias = nn.Parameter(bias)  # [M, 1, out]

    def forward(self, x: Tensor) -> Tensor:
        return stacked_affine(x, self.weight, self.bias)


def _init_layer(
    fan_in: int, fan_out: int, gens: Sequence[torch.Generator], init: str, gain: float
) -> tuple[Tensor, Tensor]:
    weights, biases = [], []
    for g in gens:
        if init == "default":
            # nn.Linear's default: kaiming_uniform(a=sqrt(5)) on the weight = U(+-1/sqrt(fan_in)), same for
            # the bias (what CORL and OfflineRL-Kit get from plain nn.Linear).
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(fan_out, fan_in, generator=g) * 2 - 1) * bound
            b = (torch.rand(fan_out, generator=g) * 2 - 1) * bound
        elif init == "orthogonal":
            w = nn.init.orthogonal_(torch.empty(fan_out, fan_in), gain=gain, generator=g)
            b = torch.zeros(fan_out)
        elif init == "xavier":
            w = nn.init.xavier_uniform_(torch.empty(fan_out, fan_in), gain=gain, generator=g)
            b = torch.zeros(fan_out)
        elif init == "uniform":
            # CORL's IQL/TD3 never use it; SAC-style last layers in some references do (+-gain).
            w = (torch.rand(fan_out, fan_in, generator=g) * 2 - 1) * gain
            b = (torch.rand(fan_out, generator=g) * 2 - 1) * gain
        else:
            raise ValueError(f"unknown init {init!r}")
        weights.append(w.t())
        biases.append(b[None, :])
    return torch.stack(weights), torch.stack(biases)


class StackedMLP(nn.Module):
    """An MLP per member: Linear-ReLU-...-Linear with ``hidden`` widths, x [M, B, in] -> [M, B, out].

    ``init``/``last_init`` choose the initialisation of the hidden and last layers ("default" is
    nn.Linear's; "orthogonal" with ``gain`` sqrt(2) hidden / ``last_gain`` for the last layer is CORL's
    CQL). ``dropout`` (MCQ's actor, OfflineRL-Kit) takes its masks from the caller's random source.
    ``arithmetic``: fp32, bf16 mixed precision or the fused kernels (:class:`Arithmetic`).
    """

    def __init__(
        self,
        gens: Sequence[Sequence[torch.Generator]] | Sequence[torch.Generator],
        sizes: Sequence[int],
        *,
        init: str = "default",
        last_init: str | None = None,
        last_gain: float = 1.0,
        dropout: float = 0.0,
        arithmetic: Arithmetic = FP32,
    ) -> None:
        super().__init__()
        gens = list(gens)
        self.layers = nn.ModuleList()
        n = len(sizes) - 1
        for i in range(n):
            last = i == n - 1
            kind = (last_init or init) if last else init
            gain = last_gain if last else math.sqrt(2.0)
            w, b = _init_layer(sizes[i], sizes[i + 1], gens, kind, gain)
            self.layers.append(StackedLinear(w, b))
        self.dropout = float(dropout)
        self.arithmetic = arithmetic
        if arithmetic.fused:
            fused_mlp.register()  # the kernels' ops exist before any pass that uses them is traced

    @property
    def matmul_dtype(self) -> torch.dtype | None:
        return self.arithmetic.matmul_dtype

    @property
    def num_members(self) -> int:
        return int(self.layers[0].weight.shape[0])

    def forward(
        self,
        x: Tensor,
        masks: Sequence[Tensor] | None = None,
        first_of: int = 1,
        frozen: bool = False,
        shared: int = 1,
    ) -> Tensor:
        """``masks`` (one per hidden layer, [M, B, width] of 0/1 scaled by 1/(1-p)) apply dropout after
        each hidden activation, as nn.Dropout does in training mode. ``first_of=n`` runs only the first
        member of each group of n (e.g. critic 1 of each seed's twin pair) on x [M/n, B, in].
        ``frozen`` uses detached weights: gradients reach x but not this network. ``shared=n``: x is
        [M/n, B, in], the input of each group of n consecutive members (a seed's twin critics)."""
        params = []
        for layer in self.layers:
            w, b = layer.weight, layer.bias
            if frozen:
                w, b = w.detach(), b.detach()
            if first_of != 1:
                w = w.view(-1, first_of, *w.shape[1:])[:, 0]
                b = b.view(-1, first_of, *b.shape[1:])[:, 0]
            params.append((w, b))
        arith = self.arithmetic
        if arith.fused and fused_mlp.supports(x, [w for w, _ in params], masks, grad=arith.fused_grad):
            return fused_mlp.mlp2_forward(x, *(t for pair in params for t in pair), shared=shared)
        if shared != 1:
            x = twin_input(x, shared)
        for i, (w, b) in enumerate(params):
            hidden = i < len(self.layers) - 1
            if hidden and arith.matmul_dtype is not None:
                x = lowp_affine(x, w, b, arith.matmul_dtype)
            else:
                x = stacked_affine(x, w, b)
            if hidden:
                x = torch.relu(x)
                if masks is not None:
                    x = x * masks[i]
        return x

    def hidden_widths(self) -> list[int]:
        return [int(layer.weight.shape[2]) for layer in self.layers[:-1]]


def mlp_generators(seeds: Sequence[int], name: str, members_per_seed: int = 1) -> list[torch.Generator]:
    """One generator per member, ordered seed-major: (seed 0, member 0), (seed 0, member 1), ..."""
    return [member_generator(s, name, j) for s in seeds for j in range(members_per_seed)]


def twin_input(x: Tensor, n: int = 2) -> Tensor:
    """[S, B, D] -> [S*n, B, D]: the same input for the n critics of each seed (seed-major members)."""
    s, b, d = x.shape
    return x.unsqueeze(1).expand(s, n, b, d).reshape(s * n, b, d)


def soft_update_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Polyak averaging theta' <- (1 - tau) theta' + tau theta (TD3, SAC), one fused foreach kernel."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)
