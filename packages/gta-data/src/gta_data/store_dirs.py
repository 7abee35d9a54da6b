"""The on-disk discipline every store format of the project shares (STORE_FORMAT.md, "Atomic writes"): a store
is written in a hidden temporary directory beside its path and renamed into place only when complete;
``overwrite`` replaces an empty folder or a store of the same format, nothing else; temporaries that killed
writers left are removed when provably stale; a writer is a context manager that commits on a clean exit and
leaves nothing behind on an exception (:class:`AtomicStoreWriter`). Each format (gta-data's trajectory store,
gta-pixel's pixel store) passes its format name, its error class and the words its messages use."""

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
from typing import Any, ClassVar, TypeVar

import numpy as np
import zarr


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


# -- reading ------------------------------------------------------------------------------------------


def open_complete_group(path: Path, *, format_name: str, format_version: int, error: type[Exception], kind: str,
                        noun: str, reader: str,
                        hints: Mapping[str, str] | None = None) -> tuple[zarr.Group, dict[str, Any]]:
    """The Zarr group at ``path`` and its attributes, once they say a complete store of ``format_name`` in
    ``format_version``; otherwise a one-line ``error`` (nothing there, not a Zarr group, another format, another
    version, incomplete). ``hints`` add a word for other formats found there (format name -> text)."""
    if not path.exists():
        raise error(f"no {noun} at {path}")
    try:
        group = zarr.open_group(store=str(path), mode="r")
    except Exception as exc:  # zarr raises several types for non-groups
        raise error(f"{path} is not a Zarr group ({type(exc).__name__})") from None
    attrs = dict(group.attrs)
    if attrs.get("format") != format_name:
        hint = dict(hints or {}).get(str(attrs.get("format")), "")
        raise error(f"{path} is not a GTA {kind} (format attribute missing or wrong){hint}")
    if attrs.get("format_version") != format_version:
        raise error(f"{path} has {noun} format version {attrs.get('format_version')}; "
                    f"this {reader} reads version {format_version}")
    if attrs.get("complete") is not True:
        raise error(f"{path} is incomplete (an interrupted write?)")
    return group, attrs


def check_episode_ends(ends: np.ndarray, n: int, *, where: str, error: type[Exception], unit: str) -> None:
    """Raise ``error`` unless ``ends`` (exclusive ends of the episodes, int) is a non-empty, strictly increasing
    1-d array from a positive first end to ``n`` (the number of rows, which the message calls ``unit``)."""
    if ends.ndim != 1 or len(ends) == 0:
        raise error(f"{where} is empty")
    if ends[0] <= 0 or np.any(np.diff(ends) <= 0):
        raise error(f"{where} is not strictly increasing from a positive first end")
    if ends[-1] != n:
        raise error(f"{where} ends at {int(ends[-1])} but there are {n} {unit} (out of range)")


def get_array(group: zarr.Group, name: str, path: Path, error: type[Exception]) -> zarr.Array:
    """The array ``name`` of a store's group, or a one-line ``error`` (missing, damaged metadata, a group)."""
    try:
        arr = group[name]
    except KeyError:
        raise error(f"{path} is missing the array {name}") from None
    except Exception as exc:  # damaged array metadata
        raise error(f"{path}: cannot open {name} ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if not isinstance(arr, zarr.Array):
        raise error(f"{path}: {name} is not an array")
    return arr


def read_array(group: zarr.Group, key: str, path: Path, error: type[Exception], *, every_chunk_written: bool,
               selection: Any = slice(None)) -> np.ndarray:
    """``group[key][selection]`` as numpy, with one-line errors for damaged files: a missing chunk of a store
    that wrote every chunk (``every_chunk_written``), an undecodable chunk."""
    arr = group[key]
    if every_chunk_written and arr.nchunks_initialized != arr.nchunks:
        raise error(f"{path}: {key} lacks {arr.nchunks - arr.nchunks_initialized} of its {arr.nchunks} chunk files "
                    "(a damaged or partial copy)")
    try:
        return np.asarray(arr[selection])
    except Exception as exc:  # codecs and zarr raise many types for damaged chunks
        raise error(f"{path}: cannot read {key} ({type(exc).__name__}: {exc})".splitlines()[0]) from None


_W = TypeVar("_W", bound="AtomicStoreWriter")


class AtomicStoreWriter:
    """The life of a store writer, shared by every format: a hidden temporary Zarr group beside ``path`` that
    says ``complete: false`` (and which process writes it) from its first byte; :meth:`commit` writes the
    format's last arrays, then the final attributes with ``complete: true``, then renames the group into
    place; :meth:`abort` removes the temporary. As a context manager it commits on a clean exit and aborts on
    an exception (a failed commit too), so nothing half-written is ever left at ``path`` or beside it. A
    committed or aborted writer refuses further use with a one-line error.

    A format subclasses it: sets the class attributes, calls :meth:`_begin` in its constructor once its
    arguments are checked, writes its arrays into ``self._group``, and implements :meth:`_finish` (write what
    is pending and the index; return the final attributes) and :meth:`_open` (the committed store, opened)."""

    format_name: ClassVar[str]  # the ``format`` attribute of the stores it writes
    error: ClassVar[type[Exception]]  # the format's error class
    kind: ClassVar[str]  # the format in messages ("trajectory store")
    noun: ClassVar[str]  # what the warning about a killed writer's leftover calls it ("store")
    log: ClassVar[logging.Logger]  # where that warning goes

    path: Path
    overwrite: bool
    _tmp: Path
    _group: zarr.Group
    _state: str = "open"  # then "committed" or "aborted"

    def _begin(self, path: str | os.PathLike, attrs: Mapping[str, Any], *, overwrite: bool) -> zarr.Group:
        """Remove the stale temporaries of ``path``, create this writer's temporary group and mark it
        incomplete with ``attrs``; returns the group."""
        self.path, self.overwrite = Path(path), overwrite
        remove_stale_temporaries(self.path, format_name=self.format_name, noun=self.noun, log=self.log)
        self._tmp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        self._group = zarr.open_group(store=str(self._tmp), mode="w-", zarr_format=3)
        # Who is writing it: a later writer of the same path removes it once that process is gone.
        self._group.attrs.put(clean_meta({**attrs, "complete": False,
                                          "writer": {"host": socket.gethostname(), "pid": os.getpid()}}))
        self._state = "open"
        return self._group

    def _finish(self) -> Mapping[str, Any]:
        """Write everything still pending and the episode index into ``self._group``; return the final
        attributes (``complete`` is added); raise the format's error to refuse the commit (the writer stays
        open)."""
        raise NotImplementedError

    def _open(self) -> Any:
        """The committed store at ``self.path``, opened."""
        raise NotImplementedError

    def commit(self) -> Any:
        """Write the last arrays and the final attributes (``complete: true`` last), then rename the store
        into place (replacing what ``overwrite`` allows); returns the store, opened."""
        self._check_open()
        attrs = self._finish()
        self._group.attrs.put(clean_meta({**attrs, "complete": True}))
        self._state = "committed"
        try:
            replace_dir(self._tmp, self.path, overwrite=self.overwrite, format_name=self.format_name,
                        error=self.error, kind=self.kind)
        except BaseException:
            self._state = "aborted"
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        return self._open()

    def abort(self) -> None:
        """Remove the temporary store; nothing appears at ``path`` (aborting a closed writer does nothing)."""
        if self._state == "open":
            self._state = "aborted"
            shutil.rmtree(self._tmp, ignore_errors=True)

    @property
    def closed(self) -> bool:
        return self._state != "open"

    def _check_open(self) -> None:
        if self._state != "open":
            raise self.error(f"the writer of {self.path} is closed (already {self._state})")

    def __enter__(self: _W) -> _W:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._state != "open":
            return
        if exc_type is not None:
            self.abort()
            return
        try:
            self.commit()
        except BaseException:
            self.abort()
            raise
