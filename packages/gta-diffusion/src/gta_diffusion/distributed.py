"""torch.distributed plumbing for data-parallel training and sharded augmentation (launched by torchrun).

``torchrun --nproc-per-node N -m gta_diffusion.cli train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK;
:func:`init_distributed` then joins the process group (NCCL on GPUs, gloo on CPU) and pins each rank to
its GPU. Without those variables everything runs as a single process and no group is created.

Data-parallel training averages gradients with :class:`GradientAverage`: every parameter's ``.grad`` is a view
into ONE flat buffer, so that backward accumulates straight into it and the average is one all-reduce of one
tensor. That collective never reads anything back to the host, so the whole training step, the all-reduce
included, can be captured in a CUDA graph (NCCL collectives can be captured); DDP's bucketed, hook-driven
reduction cannot, and its eager step is hundreds of small launches at the paper's batch size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

from gta_data.accel.devices import resolve_device
from gta_diffusion.errors import DiffusionError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the process group. ``group_of_one`` marks a process group of a single rank
    (tests of the collective code paths on one device); torchrun with one process creates no group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group_of_one: bool = False

    @property
    def enabled(self) -> bool:
        """Whether a process group is in use (its collectives are called)."""
        return self.world_size > 1 or self.group_of_one

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> tuple[DistInfo, torch.device]:
    """Join the process group if launched by torchrun; returns the rank facts and this rank's device.
    ``device`` None picks CUDA when available, else CPU."""
    want_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if device is not None:
        resolve_device(device, DiffusionError)  # one-line errors for unknown or unavailable devices
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        dev = torch.device(device) if device is not None else torch.device("cuda" if want_cuda else "cpu")
        return DistInfo(), dev
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if want_cuda else "gloo", device_id=dev if want_cuda else None)
    return DistInfo(rank=rank, world_size=world, local_rank=local), dev


def shutdown(info: DistInfo) -> None:
    if info.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        tdist.barrier()


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (on every rank); [obj] without a process group."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    tdist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def shard_range(n: int, info: DistInfo) -> tuple[int, int]:
    """Contiguous share [lo, hi) of n items for this rank (sizes differ by at most one)."""
    base, extra = divmod(n, info.world_size)
    lo = info.rank * base + min(info.rank, extra)
    return lo, lo + base + (1 if info.rank < extra else 0)


def broadcast_tensors(info: DistInfo, tensors: Sequence[torch.Tensor]) -> None:
    """Overwrite ``tensors`` (in place) with rank 0's values on every rank."""
    if not info.enabled:
        return
    with torch.no_grad():
        for t in tensors:
            tdist.broadcast(t, src=0)


class GradientAverage:
    """The mean over ranks of the gradients of ``params``, and of one scalar, by ONE all-reduce of a flat buffer.

    On construction every parameter's ``.grad`` becomes a view into ``flat`` (the parameters in order, then
    one slot for the loss), so backward accumulates into the buffer itself. The buffer must therefore be zeroed
    in place with :meth:`zero_` before each backward, never by ``optimizer.zero_grad()`` (which would set the
    gradients to None and cut them off from it). :meth:`average` sums the buffer over the ranks and scales it
    by 1 / world size (gloo has no average op): with equal per-rank batches and per-rank mean losses, that is
    the gradient and the loss of the mean over the union of the ranks' batches. The all-reduce gives every rank
    the same sum, so identical optimizer steps keep the replicas equal (bit for bit; the CPU tests check it).

    Nothing here reads back to the host: a step that calls :meth:`zero_` and :meth:`average` can be captured
    in a CUDA graph, the collective included (the communicator must exist before capture, e.g. made by eager
    warm-up steps)."""

    def __init__(self, params: Sequence[torch.Tensor], *, error: type[Exception] = ValueError) -> None:
        params = list(params)
        if not params:
            raise error("no parameters to average")
        if not tdist.is_initialized():
            raise error("gradient averaging needs a process group (launch with torchrun)")
        kinds = {(p.dtype, p.device) for p in params}
        if len(kinds) != 1:
            raise error(f"gradient averaging needs parameters of one dtype and device, got {sorted(map(str, kinds))}")
        dtype, device = kinds.pop()
        sizes = [p.numel() for p in params]
        self.flat = torch.zeros(sum(sizes) + 1, dtype=dtype, device=device)
        self.params = params
        self.grads = [g.view_as(p) for g, p in zip(self.flat[:-1].split(sizes), params, strict=True)]
        for p, g in zip(params, self.grads, strict=True):
            p.grad = g
        self.scale = 1.0 / tdist.get_world_size()
        self.error = error

    def zero_(self) -> None:
        """Zero the gradients (and the loss slot) in place, before a backward."""
        self.flat.zero_()

    def average(self, loss: torch.Tensor) -> torch.Tensor:
        """Average the accumulated gradients and ``loss`` (a scalar) over the ranks; returns the mean loss
        (a new tensor: the buffer is zeroed by the next step)."""
        # A gradient cut off from the buffer (set to None, replaced) would silently miss the average.
        if any(p.grad is None or p.grad.data_ptr() != g.data_ptr() for p, g in zip(self.params, self.grads, strict=True)):
            raise self.error("a parameter's gradient is no longer a view into the averaged buffer "
                             "(zero it with GradientAverage.zero_, not optimizer.zero_grad)")
        self.flat[-1].copy_(loss.detach())
        tdist.all_reduce(self.flat, op=tdist.ReduceOp.SUM)
        self.flat.mul_(self.scale)
        return self.flat[-1].clone()
