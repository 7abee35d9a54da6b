"""Adam (Kingma and Ba, 2015, Algorithm 1) for stacked parameters, safe to capture in a CUDA graph.

torch.optim.Adam is the reference; this version keeps the step count and the learning rate as device
tensors and takes gradients as an argument (from ``torch.autograd.grad``), so one update never reads a
value back to the host and the learning rate can follow a schedule inside a captured graph (IQL's
cosine-annealed actor learning rate). Adam is elementwise, so stacked seeds stay independent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


class Adam:
    def __init__(
        self,
        params: Sequence[Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        schedule: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("Adam got no parameters")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Adam betas must lie in [0, 1), got {betas}")
        device = self.params[0].device
        self.base_lr = float(lr)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.schedule = schedule  # multiplier of the base lr as a function of the update index (0-based)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        # float64: exact bias corrections; shape [1], not [], so torch.compile treats it as state, not a constant
        self.t = torch.zeros(1, device=device, dtype=torch.float64)

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor]) -> None:
        # Scalars in the parameters' dtype: compiled, inductor recomputes them for every element of the
        # fused update, and float64 powers there are slow on GPUs (docs/benchmarks-log.md).
        dtype = self.params[0].dtype
        lr = self.base_lr if self.schedule is None else self.base_lr * self.schedule(self.t.to(dtype))
        self.t.add_(1.0)
        t = self.t.to(dtype)  # exact for 2**24 updates in fp32; by then both corrections are 1
        grads = list(grads)
        torch._foreach_lerp_(self.m, grads, 1.0 - self.beta1)  # m <- b1 m + (1 - b1) g
        torch._foreach_mul_(self.v, self.beta2)
        torch._foreach_addcmul_(self.v, grads, grads, value=1.0 - self.beta2)  # v <- b2 v + (1 - b2) g^2
        bc1 = bias_correction(self.beta1, t)
        bc2 = bias_correction(self.beta2, t)
        # theta <- theta - lr / bc1 * m / (sqrt(v / bc2) + eps), written as torch.optim.Adam does it.
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_div_(denom, torch.sqrt(bc2).reshape(()))
        torch._foreach_add_(denom, self.eps)
        update = torch._foreach_div(self.m, denom)
        torch._foreach_mul_(update, (lr / bc1).reshape(()))
        torch._foreach_sub_(self.params, update)

    def state_dict(self) -> dict[str, Tensor]:
        out = {"t": self.t}
        out.update({f"m.{i}": m for i, m in enumerate(self.m)})
        out.update({f"v.{i}": v for i, v in enumerate(self.v)})
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        with torch.no_grad():
            self.t.copy_(state["t"])
            for i in range(len(self.params)):
                self.m[i].copy_(state[f"m.{i}"])
                self.v[i].copy_(state[f"v.{i}"])


def bias_correction(beta: float, t: Tensor) -> Tensor:
    """1 - beta^t, as -expm1(t log beta): accurate for small t, and no float64 power."""
    if beta == 0.0:
        return torch.ones_like(t)
    return -torch.expm1(t * math.log(beta))


def cosine_schedule(total_updates: int) -> Callable[[Tensor], Tensor]:
    """CosineAnnealingLR(T_max=total_updates) to 0, as CORL's IQL anneals its actor: update k uses
    (1 + cos(pi k / T)) / 2 of the base rate."""
    total = max(1, int(total_updates))

    def schedule(t: Tensor) -> Tensor:
        return 0.5 * (1.0 + torch.cos(math.pi * torch.clamp(t, max=total) / total))

    return schedule
