"""Known errors as one line on the command line, for every package's Typer app.

A command wraps its work in :func:`one_line_errors` with the error classes its package raises for bad input
(a missing store, a wrong option, a run directory of another kind). Those become ``error: <first line>`` on
stderr and exit code 1; ``--debug`` (or the environment variable ``GTA_DEBUG``) shows the traceback instead.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import typer

__all__ = ["debug_requested", "fail", "first_line", "one_line_errors"]


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its class name when it has none)."""
    text = str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def debug_requested(debug: bool = False) -> bool:
    """``--debug`` given, or ``GTA_DEBUG`` set to anything but empty or 0."""
    return debug or os.environ.get("GTA_DEBUG", "") not in ("", "0")


def fail(exc: BaseException, debug: bool = False) -> None:
    """Print ``exc`` as one line and exit with code 1, or re-raise it under ``--debug``."""
    if debug_requested(debug):
        raise exc
    typer.echo(f"error: {first_line(exc)}", err=True)
    raise typer.Exit(1) from None


@contextmanager
def one_line_errors(known: tuple[type[BaseException], ...], debug: bool = False) -> Iterator[None]:
    """Errors of the ``known`` classes raised inside the block -> :func:`fail`."""
    try:
        yield
    except known as exc:
        fail(exc, debug)
