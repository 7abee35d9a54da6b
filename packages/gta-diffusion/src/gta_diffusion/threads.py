"""CPU threads of torch for the diffusion commands (``--threads``): the rule of :mod:`gta_data.threads`."""

from __future__ import annotations

import torch

from gta_data.threads import DEFAULT_CPU_THREADS
from gta_data.threads import cpu_threads as _rule
from gta_diffusion.errors import DiffusionError


def cpu_threads(threads: int | None, device: torch.device) -> int | None:
    """The intra-op thread count a command uses on ``device`` (:mod:`gta_data.threads`); None: torch's own."""
    try:
        return _rule(threads, torch.device(device).type)
    except ValueError as exc:
        raise DiffusionError(str(exc)) from None


def set_cpu_threads(threads: int | None, device: torch.device) -> int | None:
    """Apply :func:`cpu_threads` with ``torch.set_num_threads``; returns the count set (None: unchanged)."""
    chosen = cpu_threads(threads, torch.device(device))
    if chosen is not None:
        torch.set_num_threads(chosen)
    return chosen


__all__ = ["DEFAULT_CPU_THREADS", "cpu_threads", "set_cpu_threads"]
