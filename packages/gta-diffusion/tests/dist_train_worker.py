"""One rank of the data-parallel training checks, launched by torchrun from test_distributed.py.

Each rank writes what it computed to ``--out/rank{r}.pt``; the tests compare those files with references
computed in one process:

* ``average``: a float64 two-layer network whose initial weights rank 0 broadcasts, this rank's share of a
  fixed batch, the gradients and loss after :class:`GradientAverage` (to be equal to the union batch's);
* ``train``: a :class:`Trainer` under the process group, its per-step losses and the weights, EMA and grad-norm
  sum after ``--steps`` steps (a checkpoint at ``--save-at``);
* ``resumed``: the same run resumed from that checkpoint by a new Trainer and run to ``--steps`` again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gta_diffusion.config import TrainConfig, WindowConfig
from gta_diffusion.distributed import GradientAverage, broadcast_tensors, init_distributed, shutdown
from gta_diffusion.training import Trainer

AVERAGE_ROWS = 12  # rows of the float64 batch, split evenly over the ranks


def average_case(rank: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The float64 network (weights seeded by rank: only the broadcast makes them equal) and the full batch."""
    torch.manual_seed(100 + rank)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(AVERAGE_ROWS, 3, dtype=torch.float64, generator=gen)
    y = torch.randn(AVERAGE_ROWS, 2, dtype=torch.float64, generator=gen)
    return net, x, y


def train_config(steps: int, batch_size: int, cuda_graph: bool) -> TrainConfig:
    return TrainConfig(preset="fast-mixer-small", steps=steps, batch_size=batch_size, warmup_steps=2,
                       log_every=steps, checkpoint_every=10 * steps, cuda_graph=cuda_graph)


def run_steps(trainer: Trainer, until: int, save_at: int | None = None) -> dict[str, object]:
    losses = []
    while trainer.step_count < until:
        losses.append(trainer.step().clone())
        if trainer.step_count == save_at:
            trainer.save()
    return {"losses": torch.stack(losses).cpu(), "gnorm_sum": trainer._gnorm_sum.cpu(),
            "params": [p.detach().cpu() for p in trainer.denoiser.parameters()],
            "ema": [e.cpu() for e in trainer.ema], "step": trainer.step_count}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cuda-graph", action="store_true")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--save-at", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    dist, dev = init_distributed(args.device)
    try:
        result: dict[str, object] = {"world_size": dist.world_size}
        net, x, y = average_case(dist.rank)
        net.to(dev)
        broadcast_tensors(dist, list(net.state_dict().values()))
        avg = GradientAverage(list(net.parameters()))
        share = AVERAGE_ROWS // dist.world_size
        rows = slice(dist.rank * share, (dist.rank + 1) * share)
        avg.zero_()
        loss = torch.nn.functional.mse_loss(net(x[rows].to(dev)), y[rows].to(dev))
        loss.backward()
        mean_loss = avg.average(loss)
        result["average"] = {"state": {k: v.cpu() for k, v in net.state_dict().items()},
                             "grads": [p.grad.cpu() for p in net.parameters()], "loss": mean_loss.cpu()}

        cfg, window = train_config(args.steps, args.batch_size, args.cuda_graph), WindowConfig(horizon=4)
        run = args.out / "run"
        trainer = Trainer.create(run, args.data, cfg, window, device=dev, dist=dist)
        result["train"] = run_steps(trainer, args.steps, save_at=args.save_at)
        resumed = Trainer.create(run, None, device=dev, dist=dist)
        result["resumed_from"] = resumed.step_count
        result["resumed"] = run_steps(resumed, args.steps)
        torch.save(result, args.out / f"rank{dist.rank}.pt")
    finally:
        shutdown(dist)


if __name__ == "__main__":
    main()
