"""Self-describing ``.npz`` files: named arrays plus a JSON metadata string, no pickle, written atomically.

The behaviour policy files (``gta_data.policies``) and the replay files (``gta_data.replay``) share this
container: ``__meta__`` (a 0-d string array) holds JSON with at least ``format`` and ``version``.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

META_KEY = "__meta__"


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write ``arrays`` and ``meta`` to ``path`` through a hidden temporary sibling renamed into place, so
    that a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # np.savez appends ".npz" to names without it, so the temporary sibling keeps the suffix.
    tmp = path.parent / f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}.npz"
    try:
        np.savez_compressed(tmp, **arrays, **{META_KEY: np.asarray(json.dumps(meta))})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_npz(path: str | os.PathLike, *, name: str, kind: str, fmt: str, version: int,
             error: type[Exception]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and metadata of a file written by :func:`write_npz` with format ``fmt`` and ``version``;
    any problem raises ``error`` with a one-line message (``name``: "policy file"; ``kind``: what a file
    without metadata is not, e.g. "behaviour policy file")."""
    path = Path(path)
    if not path.is_file():
        raise error(f"no {name} at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {name} {path}: {exc}") from None
    if META_KEY not in arrays:
        raise error(f"{path} is not a {kind} (no {META_KEY})")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except ValueError:
        raise error(f"{path}: unreadable metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt or meta.get("version") != version:
        got = f"{meta.get('format')!r} version {meta.get('version')!r}" if isinstance(meta, dict) else repr(meta)
        raise error(f"{path}: unsupported format {got}")
    return arrays, meta
