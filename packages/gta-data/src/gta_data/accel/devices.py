"""Device names of the command lines (``--device``) as torch devices, with one-line errors."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


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
