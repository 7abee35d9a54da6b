"""torch.distributed plumbing for data-parallel training and sharded augmentation (launched by torchrun).

``torchrun --nproc-per-node N -m gta_diffusion.cli train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK;
:func:`init_distributed` then joins the process group (NCCL on GPUs, gloo on CPU) and pins each rank to
its GPU. Without those variables everything runs as a single process and no group is created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

from gta_data.accel.devices import resolve_device
from gta_diffusion.errors import DiffusionError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

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
