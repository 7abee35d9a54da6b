"""Device names of the command lines (``--device``) as torch devices, with one-line errors; and the strict
fp32 arithmetic that equivalence checks of a fast path against its fp32 reference need on a GPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["resolve_device", "strict_fp32"]


def resolve_device(name: str | torch.device | None = None, error: type[Exception] = ValueError) -> torch.device:
    """``None`` or ``"auto"`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a
    torch.device. An unknown name or a CUDA device this machine does not have raises ``error`` (the calling
    package's error class, so that its CLI prints one line)."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise error(f"unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise error(f"device {str(name)!r} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise error(f"device {str(name)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Full fp32 on CUDA inside the block, the previous settings restored after it: no TF32 in matmuls or cuDNN
    convolutions (torch enables TF32 for convolutions by default) and deterministic cuDNN algorithms. Two
    executions of the same fp32 step (eager vs CUDA graph, eager vs compiled) then differ only by the order of
    their float operations, not by a 10-bit mantissa or by cuDNN choosing another algorithm for each."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic = saved
