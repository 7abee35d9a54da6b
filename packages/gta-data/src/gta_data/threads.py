"""CPU threads of torch for the training commands of gta-diffusion and gta-rl (``--threads``): one rule.

torch's default (one thread per core) suits large matrix products on a quiet machine. The training steps on
a CPU are small (the CPU networks, batches of a few hundred rows) and made of many short operations, each of
which synchronises its threads; when other processes also want the cores, a thread that is descheduled holds
all the others back, and a run slows down several times over. Hence the rule when ``--threads`` is not given
and the device is the CPU: ``OMP_NUM_THREADS`` if it is set (the user's choice for the whole process), else
one thread. On CUDA the setting is left alone (the host threads only launch kernels). No torch here: the
commands apply the count with ``torch.set_num_threads``.
"""

from __future__ import annotations

import os

DEFAULT_CPU_THREADS = 1


def cpu_threads(threads: int | None, device_type: str) -> int | None:
    """The intra-op thread count a command uses on a device of ``device_type`` ("cpu", "cuda"); None: torch's
    own. A ``ValueError`` for a count below 1."""
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    if device_type != "cpu":
        return None
    if threads is not None:
        return threads
    return None if os.environ.get("OMP_NUM_THREADS") else DEFAULT_CPU_THREADS


__all__ = ["DEFAULT_CPU_THREADS", "cpu_threads"]
