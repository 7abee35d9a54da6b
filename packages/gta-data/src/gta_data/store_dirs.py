"""The on-disk discipline every store format of the project shares (STORE_FORMAT.md, "Atomic writes"): a store
is written in a hidden temporary directory beside its path and renamed into place only when complete;
``overwrite`` replaces an empty folder or a store of the same format, nothing else; temporaries that killed
writers left are removed when provably stale. Each format (gta-data's trajectory store, gta-pixel's pixel store)
passes its format name, its error class and the words its messages use."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def clean_meta(value: Any) -> Any:
    """Make metadata JSON-serialisable (numpy scalars and arrays, paths, tuples; non-finite floats become None)."""
    if isinstance(value, Mapping):
        return {str(k): clean_meta(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_meta(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def read_attrs(path: Path) -> dict[str, Any] | None:
    """The attributes of the Zarr group at ``path``, or None where there is none to read."""
    try:
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return None
    return attrs if isinstance(attrs, dict) else None


def is_replaceable(path: Path, format_name: str) -> bool:
    """Whether ``overwrite`` may replace ``path``: an empty directory or a store of ``format_name`` (complete or
    not), never another file or folder."""
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    attrs = read_attrs(path)
    return attrs is not None and attrs.get("format") == format_name


def replace_dir(src: Path, dst: Path, *, overwrite: bool, format_name: str, error: type[Exception],
                kind: str) -> None:
    """Move ``src`` to ``dst``. An existing ``dst`` is first moved aside, then deleted, so that ``dst`` only ever
    holds a complete store or nothing; ``kind`` names the format in the error (``trajectory store``)."""
    if dst.exists():
        if not overwrite or not is_replaceable(dst, format_name):  # checked again: something may have appeared
            shutil.rmtree(src, ignore_errors=True)
            raise error(f"{dst} already exists" + (" (pass overwrite to replace it)" if not overwrite else
                                                   f" and is not a {kind}: not replaced"))
        aside = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dst, aside)
        os.replace(src, dst)
        if aside.is_dir():
            shutil.rmtree(aside)
        else:
            aside.unlink()
    else:
        os.replace(src, dst)


def remove_stale_temporaries(path: str | os.PathLike, *, format_name: str, noun: str,
                             log: logging.Logger) -> list[Path]:
    """Delete the temporary stores that interrupted writes of ``path`` left behind (a kill or SIGTERM skips the
    writer's cleanup), saying so on ``log``; returns what was removed. Only what is provably one: a directory
    named ``.<name>.tmp-<8 hex digits>`` whose attributes say it is an incomplete store of ``format_name``
    written on this host by a process that no longer runs."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp-[0-9a-f]{{8}}")
    if not path.parent.is_dir():
        return []
    removed = []
    for entry in path.parent.iterdir():
        if not pattern.fullmatch(entry.name) or not entry.is_dir():
            continue
        attrs = read_attrs(entry)
        if attrs is None or attrs.get("format") != format_name or attrs.get("complete") is not False:
            continue
        writer = attrs.get("writer") if isinstance(attrs.get("writer"), dict) else {}
        if writer.get("host") != socket.gethostname() or not process_gone(writer.get("pid")):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
        log.warning("removed %s: an incomplete %s left by an interrupted write (process %s, no longer running)",
                    entry, noun, writer["pid"])
    return removed


def process_gone(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but belongs to someone else, or cannot be asked
        return False
    return False
