"""Append-only JSON Lines metric logs that a resumed run rewinds to its checkpoint.

The training commands of gta-rl and gta-diffusion log one JSON object per line, each with the training
``step`` it belongs to; these files are the source of truth that resume, summaries and reports read. A run
resumed from the checkpoint of step s has already logged lines past s (written after that checkpoint, before
the run stopped): it writes them again, so :meth:`JsonlLog.truncate_after` first drops them, and the log then
reads as if the run had never stopped. The truncated file is written to a temporary sibling and renamed over
the old one, so a kill during the rewind leaves one of the two complete files.

A process killed while appending can leave a torn last line; readers skip it (:func:`read_jsonl`) and a
rewind drops it. A torn line anywhere else is corruption and raises :class:`JsonlError`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["JsonlError", "JsonlLog", "read_jsonl"]


class JsonlError(ValueError):
    """A JSONL log that cannot be read (one-line message)."""


def _parse(path: Path) -> list[tuple[str, dict[str, Any]]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break  # a torn last line: the writer was killed mid-append
            raise JsonlError(f"{path}, line {i + 1}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise JsonlError(f"{path}, line {i + 1}: not a JSON object")
        records.append((line, record))
    return records


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSONL file in order ([] when it does not exist; a torn last line is skipped)."""
    return [record for _, record in _parse(Path(path))]


class JsonlLog:
    """One append-only JSONL file of step-stamped records."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, record: Mapping[str, Any]) -> None:
        self.extend([record])

    def extend(self, records: Iterable[Mapping[str, Any]]) -> None:
        text = "".join(json.dumps(dict(r)) + "\n" for r in records)
        if text:
            with self.path.open("a") as f:
                f.write(text)

    def read(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)

    def truncate_after(self, step: int, drop: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """Keep the records of steps <= ``step`` (and not ``drop(record)``), atomically; nothing to do when the
        file does not exist. The kept lines are copied as they were written, not re-serialised."""
        if not self.path.is_file():
            return
        records = _parse(self.path)
        unstamped = next((i for i, (_, r) in enumerate(records) if not isinstance(r.get("step"), int)), None)
        if unstamped is not None:
            raise JsonlError(f"{self.path}: record {unstamped + 1} has no integer 'step'")
        keep = [line for line, r in records if r["step"] <= step and not (drop is not None and drop(r))]
        tmp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, self.path)
