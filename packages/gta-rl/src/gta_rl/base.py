"""What every offline RL agent of gta-rl shares: stacked seeds, the step counter, random streams,
state dicts that include optimizer state, and one training step (sample + update) that a runner can
compile or capture in a CUDA graph (GTA paper section 5.1: every cell is trained over 8 seeds)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gta_rl.buffer import Batch, OfflineData
from gta_rl.nets import FP32, Arithmetic
from gta_rl.optim import Adam
from gta_rl.rng import SeedStreams


class Agent(nn.Module):
    """Base class. Subclasses set ``name``, build their stacked networks and Adam optimizers, and
    implement :meth:`update` and :meth:`act`."""

    name = "agent"
    update_period = 1  # actor (and target) updates happen on every ``update_period``-th step
    policy_prefixes: tuple[str, ...] = ("actor.",)  # the state that :meth:`act` reads (see policy_state)

    def __init__(self, seeds: Sequence[int], max_action: float, device: torch.device | str,
                 arithmetic: Arithmetic = FP32) -> None:
        super().__init__()
        if len(seeds) == 0:
            raise ValueError("at least one seed is needed")
        self.seed_list = [int(s) for s in seeds]
        self.num_seeds = len(self.seed_list)
        self.max_action = float(max_action)
        self.device_ = torch.device(device)
        self.register_buffer("seeds", torch.tensor(self.seed_list, dtype=torch.int64))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.optimizers: dict[str, Adam] = {}
        self.arithmetic = arithmetic  # of every network, given to each when it is built (nets.Arithmetic)

    @property
    def matmul_dtype(self) -> torch.dtype | None:
        """bf16 where the networks multiply in bf16 (``gta-rl train --bf16``), else None (fp32)."""
        return self.arithmetic.matmul_dtype

    def rng(self) -> SeedStreams:
        return SeedStreams(self.seeds, self.step)

    def is_actor_step(self, step: int) -> bool:
        """CORL's TD3 counts updates from 1 and trains the actor when the count divides by the period."""
        return (step + 1) % self.update_period == 0

    def update(self, batch: Batch, *, actor_step: bool = True) -> dict[str, Tensor]:
        """One gradient update of every seed; returns per-seed metrics [S] (losses before the update)."""
        raise NotImplementedError

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """Deterministic actions for z-scored observations, [S, N, obs] -> [S, N, act]."""
        raise NotImplementedError

    def policy_state(self) -> dict[str, Tensor]:
        """The tensors :meth:`act` reads, and the observation statistics if registered: what an evaluation
        worker process needs to act (``Evaluator(policy_factory=...)``); views, not copies."""
        return {k: v for k, v in self.state_dict().items()
                if k.startswith(self.policy_prefixes) or k in ("obs_mean", "obs_std")}

    def train_step(self, data: OfflineData, batch_size: int, *, actor_step: bool) -> dict[str, Tensor]:
        """Sample a batch per seed, update, advance the step counter; no host synchronisation."""
        batch = data.sample(self.rng(), batch_size)
        metrics = self.update(batch, actor_step=actor_step)
        self.step.add_(1)
        return metrics

    # -- checkpoints ---------------------------------------------------------------------------------

    def full_state_dict(self) -> dict[str, Tensor]:
        """Parameters, target networks, buffers and optimizer moments, flat (for safetensors)."""
        out = {f"model.{k}": v for k, v in self.state_dict().items()}
        for name, opt in self.optimizers.items():
            out.update({f"optim.{name}.{k}": v for k, v in opt.state_dict().items()})
        return out

    def load_full_state_dict(self, state: dict[str, Tensor]) -> None:
        model = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        self.load_state_dict(model)
        for name, opt in self.optimizers.items():
            prefix = f"optim.{name}."
            opt.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def grads(loss: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Gradients of a summed per-seed loss; seeds share no parameters, so each seed gets its own."""
    return torch.autograd.grad(loss, list(params))


def step_jointly(pairs: Sequence[tuple[Tensor, Adam]]) -> None:
    """Step several optimizers from one backward pass of the sum of their per-seed losses.

    Each loss must reach only its own optimizer's parameters (cross terms detached, e.g. a critic run
    with ``frozen=True`` inside the actor loss), so the gradient of the sum is each loss's own gradient.
    One pass is cheaper than one per loss, and torch.compile fuses the losses into one graph whose
    backward can run only once."""
    params = [p for _, opt in pairs for p in opt.params]
    total = sum(loss.sum() for loss, _ in pairs)
    flat = torch.autograd.grad(total, params)
    start = 0
    for _, opt in pairs:
        opt.step(flat[start:start + len(opt.params)])
        start += len(opt.params)


def repeat_rows(x: Tensor, n: int) -> Tensor:
    """[S, B, D] -> [S, B*n, D], each row repeated n times consecutively (CORL's extend_and_repeat)."""
    s, b, d = x.shape
    return x.unsqueeze(2).expand(s, b, n, d).reshape(s, b * n, d)
