"""CPU threads of torch for the diffusion commands (``--threads``).

torch's default (one thread per core) suits large matrix products on a quiet machine. The diffusion steps on
a CPU are small (the CPU networks, batches of 64 windows) and made of many short operations, each of which
synchronises its threads; when other processes also want the cores, a thread that is descheduled holds all
the others back, and a run slows down several times over. Hence the rule when ``--threads`` is not given
and the device is the CPU: ``OMP_NUM_THREADS`` if it is set (the user's choice for the whole process),
else one thread. On CUDA the setting is left alone (the host threads only launch kernels).
"""

from __future__ import annotations

import os

import torch

from gta_diffusion.errors import DiffusionError

DEFAULT_CPU_THREADS = 1


def cpu_threads(threads: int | None, device: torch.device) -> int | None:
    """The intra-op thread count a command uses on ``device`` (module docstring); None: torch's own."""
    if threads is not None and threads < 1:
        raise DiffusionError(f"--threads must be >= 1, got {threads}")
    if device.type != "cpu":
        return None
    if threads is not None:
        return threads
    return None if os.environ.get("OMP_NUM_THREADS") else DEFAULT_CPU_THREADS


def set_cpu_threads(threads: int | None, device: torch.device) -> int | None:
    """Apply :func:`cpu_threads` with ``torch.set_num_threads``; returns the count set (None: unchanged)."""
    chosen = cpu_threads(threads, torch.device(device))
    if chosen is not None:
        torch.set_num_threads(chosen)
    return chosen


__all__ = ["DEFAULT_CPU_THREADS", "cpu_threads", "set_cpu_threads"]
