"""Atomic run files: safetensors checkpoints (tensors + JSON metadata in one file) and JSON documents.

A file is written to a hidden temporary sibling and renamed into place, so an interrupted write leaves
the previous version intact. Checkpoints are loaded with safetensors (no pickle, nothing executes).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file


def _tmp(path: Path) -> Path:
    return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    tmp = _tmp(path)
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    path = Path(path)
    tmp = _tmp(path)
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    try:
        save_file(flat, str(tmp), metadata={"meta": json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                    keys: tuple[str, ...] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a checkpoint; only the tensors named in ``keys`` when given (the rest of
    the file, e.g. a SAC replay buffer, is not read)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            if keys is not None:
                return {k: f.get_tensor(k) for k in keys}, meta
        return load_file(str(path), device=str(device)), meta
    except (SafetensorError, OSError, ValueError) as exc:  # a truncated or foreign file
        raise ValueError(f"cannot read checkpoint {path} ({type(exc).__name__}: {exc})".splitlines()[0]) from None
